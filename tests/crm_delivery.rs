//! CRM deliveries end to end: committed events → CRM queue → `crm-dispatcher` → a local
//! CRM that verifies every header the way a tenant's receiver would; and the deliveries
//! API (`api-webhook-deliveries`) that shows and replays them. One tenant's hanging CRM
//! is the `isolation` test binary's (it runs alone, so its timing is its own).

use std::time::Duration;

use serde_json::json;
use shared::{
    deliveries::dispatch::DeliveryStatus,
    outbox::DeliveryJob,
};
use switchboard_tests::{TestApp, crm::*};

#[tokio::test]
async fn failing_crm_gets_each_event_again_on_the_backoff_until_it_accepts_it_once() {
    // 0.001: the schedule's 5 s, 5 min, 30 min become 5 ms, 0.3 s, 1.8 s, through the same hops.
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-retries").await;
    let crm = Crm::start(Answer::FailFirst(3)).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = call_events(&app, &tenant, 11).await;
    assert!(!jobs.is_empty());
    enqueue(&app, &jobs).await;

    for job in &jobs {
        let delivery = delivery_when(&app, job, Duration::from_secs(60), |d| d.status == DeliveryStatus::Delivered).await;
        let codes: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, [Some(500), Some(500), Some(500), Some(200)], "{}", job.event_id);
        assert!(delivery.attempts.iter().all(|a| a.response_excerpt.starts_with("{\"status\"") && a.error.is_none()));
        assert!(delivery.attempts.windows(2).all(|w| w[0].at <= w[1].at));
    }
    // A straggling duplicate would arrive within a poll or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    crm.seen(|seen| {
        assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused);
        for job in &jobs {
            assert_eq!(seen.requests.get(&job.event_id), Some(&4), "one webhook-id across all attempts");
            assert_eq!(seen.accepted.get(&job.event_id), Some(&1), "accepted once");
        }
    });
    let (body, signature) = crm.seen(|seen| seen.sample.clone()).unwrap();
    match seed_003_verifies(&body, &signature) {
        Some(valid) => assert!(valid, "seed 003's receiver refused our X-Signature"),
        None => eprintln!("skipping the seed 003 verifier: python3 is not installed"),
    }
    // Already delivered: a replayed job does not POST again.
    enqueue(&app, &jobs[..1]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(crm.seen(|seen| seen.requests[&jobs[0].event_id]), 4);
}

#[tokio::test]
async fn gone_disables_the_webhook_and_stops_every_delivery() {
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-gone").await;
    let crm = Crm::start(Answer::Gone).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = call_events(&app, &tenant, 12).await;
    assert!(jobs.len() >= 2);

    enqueue(&app, &jobs[..1]).await;
    let gone = delivery_when(&app, &jobs[0], Duration::from_secs(30), |d| d.status == DeliveryStatus::Gone).await;
    assert_eq!(gone.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(410)]);
    let settings = app.get("api-call-settings", &[], Some(&tenant.api_key)).await;
    assert_eq!(settings.body["settings"]["crm_webhook_enabled"], false, "{}", settings.body);

    enqueue(&app, &jobs[1..]).await;
    for job in &jobs[1..] {
        let skipped = delivery_when(&app, job, Duration::from_secs(30), |d| d.status == DeliveryStatus::Skipped).await;
        assert_eq!(skipped.reason.as_deref(), Some("CRM webhook disabled"));
        assert!(skipped.attempts.is_empty());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gone = app.ctx.deliveries.get(&tenant.id, &jobs[0].event_id).await.unwrap().unwrap();
    assert_eq!(gone.attempts.len(), 1, "no retry after 410");
    crm.seen(|seen| {
        assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused);
        assert_eq!(seen.requests.values().sum::<usize>(), 1);
    });
}

/// Commits `calls` calls of two status events each (ringing, completed) straight
/// through the store, 16 at a time; returns their delivery jobs.
#[tokio::test]
async fn deliveries_are_listed_filtered_shown_with_attempts_and_replayed() {
    const API: &str = "api-webhook-deliveries";
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-deliveries-api").await;
    let crm = Crm::start(Answer::FailFirst(1)).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = committed_events(&app, &tenant, 3).await;
    enqueue(&app, &jobs).await;
    for job in &jobs {
        delivery_when(&app, job, Duration::from_secs(30), |d| d.status == DeliveryStatus::Delivered).await;
    }
    let key = Some(tenant.api_key.as_str());

    let all = app.get(API, &[], key).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let listed = all.body["deliveries"].as_array().unwrap();
    assert_eq!(listed.len(), 6);
    let times: Vec<chrono::DateTime<chrono::Utc>> = listed.iter().map(|d| d["occurred_at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    for d in listed {
        assert_eq!(d["status"], "delivered");
        assert_eq!(d["attempt_count"], 2);
        assert_eq!(d["last_attempt"]["status_code"], 200);
        assert_eq!(d["attempts"], json!([]), "a listing carries summaries");
    }

    let one = app.get(API, &[("event_id", &jobs[0].event_id)], key).await;
    assert_eq!(one.status, 200, "{}", one.body);
    let attempts = one.body["delivery"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.iter().map(|a| a["status_code"].as_u64().unwrap()).collect::<Vec<_>>(), [500, 200]);
    assert!(attempts.iter().all(|a| a["latency_ms"].is_u64() && a["response_excerpt"].as_str().unwrap().starts_with("{\"status\"")));

    let count = |reply: &switchboard_tests::Reply| reply.body["deliveries"].as_array().map(Vec::len);
    assert_eq!(count(&app.get(API, &[("status", "delivered")], key).await), Some(6));
    assert_eq!(count(&app.get(API, &[("status", "pending")], key).await), Some(0));
    assert_eq!(count(&app.get(API, &[("event", "call.recording_available")], key).await), Some(0));
    assert_eq!(count(&app.get(API, &[("call_id", &jobs[0].call_id)], key).await), Some(2));
    let first = app.get(API, &[("limit", "4")], key).await;
    assert_eq!(count(&first), Some(4));
    let rest = app.get(API, &[("limit", "4"), ("cursor", first.body["next_cursor"].as_str().unwrap())], key).await;
    assert_eq!(count(&rest), Some(2), "{}", rest.body);

    for (query, field) in [
        (vec![("status", "done")], "status"),
        (vec![("event_id", jobs[0].event_id.as_str()), ("status", "failed")], "status"),
        (vec![("limit", "0")], "limit"),
        (vec![("cursor", "garbage")], "cursor"),
        (vec![("start_date", "2026-02-02"), ("end_date", "2026-02-01")], "end_date"),
        (vec![("event_id", "no spaces")], "event_id"),
    ] {
        let reply = app.get(API, &query, key).await;
        assert_eq!((reply.status, reply.error_field()), (400, Some(field)), "{query:?}: {}", reply.body);
    }
    assert_eq!(app.get(API, &[("event_id", "unknown-event")], key).await.status, 404);
    let stranger = app.tenant("crm-deliveries-stranger").await;
    assert_eq!(app.get(API, &[("event_id", &jobs[0].event_id)], Some(&stranger.api_key)).await.status, 404);
    assert_eq!(count(&app.get(API, &[], Some(&stranger.api_key)).await), Some(0));

    let post = |key: &str, body: serde_json::Value| {
        let request = app.http.post(format!("{}/{API}", app.base_url)).header("x-api-key", key).json(&body);
        app.request(request)
    };
    let read_only = app.key(&tenant.id, &[shared::tenants::Scope::CallsRead], 1000).await;
    assert_eq!(post(&read_only, json!({"event_id": jobs[0].event_id})).await.status, 403);
    for (body, field) in [
        (json!({}), Some("start_date")),
        (json!({"event_id": jobs[0].event_id, "status": "failed"}), Some("status")),
        (json!({"start_date": "2026-01-01", "end_date": "2026-01-02", "status": "done"}), Some("status")),
        (json!({"bogus": 1}), None),
    ] {
        let reply = post(&tenant.api_key, body.clone()).await;
        assert_eq!((reply.status, reply.error_field()), (400, field), "{body}: {}", reply.body);
    }
    assert_eq!(post(&tenant.api_key, json!({"event_id": "unknown-event"})).await.status, 404);

    // One event again: same webhook-id, one more request.
    let replayed = post(&tenant.api_key, json!({"event_id": jobs[0].event_id})).await;
    assert_eq!((replayed.status, &replayed.body["replayed"]), (200, &json!(1)), "{}", replayed.body);
    delivery_when(&app, &jobs[0], Duration::from_secs(30), |d| d.attempt_count == 3 && d.status == DeliveryStatus::Delivered).await;
    assert_eq!(crm.seen(|s| (s.requests[&jobs[0].event_id], s.accepted[&jobs[0].event_id])), (3, 2));

    // A time range: every event in it, oldest first.
    let now = chrono::Utc::now();
    let range = json!({
        "start_date": (now - chrono::TimeDelta::hours(1)).to_rfc3339(),
        "end_date": (now + chrono::TimeDelta::hours(1)).to_rfc3339(),
    });
    let replayed = post(&tenant.api_key, range).await;
    assert_eq!((replayed.status, &replayed.body["replayed"]), (200, &json!(6)), "{}", replayed.body);
    assert!(replayed.body["next_cursor"].is_null());
    for job in &jobs {
        let expected = if job.event_id == jobs[0].event_id { 4 } else { 3 };
        delivery_when(&app, job, Duration::from_secs(30), |d| d.attempt_count == expected && d.status == DeliveryStatus::Delivered).await;
    }
    crm.seen(|seen| assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused));
    let audit = app.ctx.audit.recent(&tenant.id, None, 10).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "webhook.replay").count(), 2);
}

#[tokio::test]
async fn the_last_failed_attempt_dead_letters_the_job_and_marks_the_delivery_failed() {
    // 0.00001: the whole schedule (27.6 h) in about a second, each hop at least SQS's 1 s.
    let app = TestApp::spawn_with_crm_dispatcher(0.00001).await;
    let tenant = app.tenant("crm-dead-letter").await;
    let crm = Crm::start(Answer::FailFirst(usize::MAX)).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = committed_events(&app, &tenant, 1).await;
    enqueue(&app, &jobs[..1]).await;
    let failed = delivery_when(&app, &jobs[0], Duration::from_secs(60), |d| d.status == DeliveryStatus::Failed).await;
    let attempts = shared::deliveries::dispatch::SCHEDULE.len() + 1;
    assert_eq!(failed.attempt_count as usize, attempts);
    assert!(failed.attempts.iter().all(|a| a.status_code == Some(500)));
    assert_eq!(crm.seen(|s| s.requests[&jobs[0].event_id]), attempts);

    let dlq = app.ctx.config.crm_delivery_dlq_url.as_deref().unwrap();
    let received = app.ctx.aws.sqs().receive_message().queue_url(dlq).wait_time_seconds(2).send().await.unwrap();
    let messages = received.messages.unwrap_or_default();
    assert_eq!(messages.len(), 1);
    let dead: DeliveryJob = serde_json::from_str(messages[0].body.as_deref().unwrap()).unwrap();
    assert_eq!((dead.event_id.as_str(), dead.attempt as usize), (jobs[0].event_id.as_str(), attempts));
    let listed = app.get("api-webhook-deliveries", &[("status", "failed")], Some(&tenant.api_key)).await;
    assert_eq!(listed.body["deliveries"][0]["event_id"], json!(jobs[0].event_id), "{}", listed.body);
}

#[tokio::test]
async fn retry_after_and_not_before_hold_a_delivery_back() {
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-waits").await;
    let crm = Crm::start(Answer::RetryAfter(3)).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = committed_events(&app, &tenant, 1).await;

    // The backoff says 5 ms; the CRM's Retry-After says 3 s, and wins.
    enqueue(&app, &jobs[..1]).await;
    let delivered = delivery_when(&app, &jobs[0], Duration::from_secs(30), |d| d.status == DeliveryStatus::Delivered).await;
    let codes: Vec<Option<u16>> = delivered.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(503), Some(200)]);
    let waited = delivered.attempts[1].at - delivered.attempts[0].at;
    assert!(waited >= chrono::TimeDelta::seconds(3), "retried after {waited}");

    // A job not due yet is held (re-sent on a hop) until its time.
    let due = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    enqueue(&app, &[DeliveryJob { not_before: Some(due), ..jobs[1].clone() }]).await;
    let held = delivery_when(&app, &jobs[1], Duration::from_secs(30), |d| d.attempt_count > 0).await;
    assert!(held.attempts[0].at >= due - chrono::TimeDelta::milliseconds(1), "attempted at {} before {due}", held.attempts[0].at);
}
