use futures::future::join_all;
use shared::tenants::Scope;
use switchboard_tests::TestApp;

const LIST: &str = "api-calls-list";

#[tokio::test]
async fn missing_invalid_revoked_and_underscoped_keys_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("auth").await;

    let none = app.get(LIST, &[], None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.body["error"]["code"], "unauthorized");
    let garbage = app.get(LIST, &[], Some("not-a-key")).await;
    assert_eq!(garbage.status, 401);
    // Well-formed but wrong secret for a real key id.
    let key_id = &tenant.api_key[4..20];
    let forged = format!("sbk_{key_id}_{}", "0".repeat(64));
    assert_eq!(app.get(LIST, &[], Some(&forged)).await.status, 401);

    let recordings_only = app.key(&tenant.id, &[Scope::RecordingsRead], 1000).await;
    let reply = app.get(LIST, &[], Some(&recordings_only)).await;
    assert_eq!(reply.status, 403);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("calls:read"));
    assert_eq!(app.get("api-calls-details", &[], Some(&recordings_only)).await.status, 403);

    let doomed = app.key(&tenant.id, &[Scope::CallsRead], 1000).await;
    assert_eq!(app.get(LIST, &[], Some(&doomed)).await.status, 200);
    let doomed_id = &doomed[4..20];
    assert!(app.ctx.keys.revoke(&tenant.id, doomed_id).await.unwrap());
    let revoked = app.get(LIST, &[], Some(&doomed)).await;
    assert_eq!(revoked.status, 401);
    assert!(revoked.body["error"]["message"].as_str().unwrap().contains("revoked"));
    // Another tenant cannot revoke this tenant's key.
    let other = app.tenant("auth-other").await;
    assert!(!app.ctx.keys.revoke(&other.id, &tenant.api_key[4..20]).await.unwrap());
    assert_eq!(app.get(LIST, &[], Some(&tenant.api_key)).await.status, 200);

    // Secrets never come back in any response.
    for reply in [none, garbage, revoked] {
        assert!(!reply.body.to_string().contains(&doomed[20..]));
    }
}

#[tokio::test]
async fn every_response_carries_cors_including_errors_and_preflight() {
    let app = TestApp::spawn().await;
    let reply = app.get(LIST, &[], None).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert!(reply.header("x-request-id").is_some());

    let preflight = app
        .request(
            app.http
                .request(reqwest::Method::OPTIONS, format!("{}/{LIST}", app.base_url))
                .header("origin", "https://crm.example.com")
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "x-api-key"),
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert!(preflight.header("access-control-allow-headers").unwrap().contains("x-api-key"));
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("GET"));

    let wrong_method = app.request(app.http.delete(format!("{}/{LIST}", app.base_url))).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("access-control-allow-origin"), Some("*"));
    let unknown = app.get("api-nope", &[], None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["success"], false);
}

#[tokio::test]
async fn the_1001st_request_in_an_hour_is_429_even_under_concurrency() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("rate-limit").await;
    let key = app.key(&tenant.id, &[Scope::CallsRead], shared::tenants::DEFAULT_RATE_LIMIT_PER_HOUR).await;

    // 1,100 requests, 50 in flight at a time, racing for the same hourly window.
    let mut statuses = Vec::new();
    let mut limited = Vec::new();
    for wave in 0..22 {
        let replies = join_all((0..50).map(|_| app.get(LIST, &[("limit", "1")], Some(&key)))).await;
        for reply in replies {
            if reply.status == 429 {
                limited.push(reply);
            } else {
                statuses.push((wave, reply.status, reply.header("x-ratelimit-remaining").map(str::to_owned)));
            }
        }
    }
    assert!(statuses.iter().all(|(_, s, _)| *s == 200), "only 200 or 429 expected");
    assert_eq!(statuses.len(), 1000, "exactly the limit is admitted");
    assert_eq!(limited.len(), 100);
    let sample = &limited[0];
    assert_eq!(sample.body["error"]["code"], "rate_limited");
    let retry_after: u64 = sample.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after));
    assert_eq!(sample.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(sample.header("x-ratelimit-remaining"), Some("0"));
    assert!(sample.header("x-ratelimit-reset").unwrap().parse::<i64>().unwrap() > chrono::Utc::now().timestamp());
    // Every admitted request saw a distinct remaining count: no double admission.
    let mut remaining: Vec<u32> = statuses.iter().map(|(_, _, r)| r.as_deref().unwrap().parse().unwrap()).collect();
    remaining.sort();
    assert_eq!(remaining, (0..1000).collect::<Vec<u32>>());

    // Limits are per key: the tenant's other key is unaffected.
    assert_eq!(app.get(LIST, &[("limit", "1")], Some(&tenant.api_key)).await.status, 200);
}

#[tokio::test]
async fn per_key_limits_are_configurable() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("small-limit").await;
    let key = app.key(&tenant.id, &[Scope::CallsRead], 3).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(app.get(LIST, &[], Some(&key)).await.status);
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
}
