use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use shared::{
    deliveries::{x_signature, x_signatures},
    tenants::Scope,
};
use switchboard_tests::{Reply, TestApp, TestTenant};

const SETTINGS: &str = "api-call-settings";
const TOKEN: &str = "crm-bearer-0123456789abcdef";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const CRM_URL: &str = "https://crm.example.com/webhooks/calls";

async fn put(app: &TestApp, key: &str, body: Value) -> Reply {
    app.request(app.http.put(format!("{}/{SETTINGS}", app.base_url)).header("x-api-key", key).json(&body)).await
}

async fn get(app: &TestApp, tenant: &TestTenant) -> Reply {
    let reply = app.get(SETTINGS, &[], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}"))).unwrap().into()
}

#[tokio::test]
async fn a_new_tenant_reads_the_defaults() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-defaults").await;
    let settings = &get(&app, &tenant).await.body["settings"];
    assert_eq!(settings["recording_enabled"], true);
    assert_eq!(settings["consent_required"], true);
    assert_eq!(settings["transcription_enabled"], false);
    assert_eq!(settings["retention_days"], 90);
    assert_eq!(settings["crm_webhook_url"], Value::Null);
    assert_eq!(
        settings["crm_webhook_events"],
        json!(["call.status_update", "call.recording_available", "call.supervisor_action"])
    );
    assert_eq!(settings["crm_webhook_enabled"], true);
    assert_eq!(settings["crm_webhook_token_set"], false);
    assert_eq!(settings["crm_webhook_secret_set"], false);
    assert_eq!(settings["previous_secret_valid_until"], Value::Null);
}

#[tokio::test]
async fn settings_round_trip_and_credentials_are_never_returned() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-round-trip").await;
    // Open the key's hourly window first (the first request of each hour costs one write more).
    get(&app, &tenant).await;
    app.store_requests.take();

    let body = json!({
        "recording_enabled": false, "transcription_enabled": true, "retention_days": 30,
        "crm_webhook_url": CRM_URL, "crm_webhook_events": ["call.recording_available"],
        "crm_webhook_token": TOKEN, "crm_webhook_secret": SECRET,
    });
    let updated = put(&app, &tenant.api_key, body.clone()).await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    // One consistent read and one conditional write (plus the auth write).
    let used = app.store_requests.take();
    assert_eq!((used.get("GetItem"), used.get("PutItem")), (Some(&1), Some(&1)), "{used:?}");
    assert_eq!(used.values().sum::<usize>(), 3, "{used:?}");

    let settings = updated.body["settings"].clone();
    assert_eq!(settings["recording_enabled"], false);
    assert_eq!(settings["consent_required"], true, "fields left out keep their value");
    assert_eq!(settings["transcription_enabled"], true);
    assert_eq!(settings["retention_days"], 30);
    assert_eq!(settings["crm_webhook_url"], CRM_URL);
    assert_eq!(settings["crm_webhook_events"], json!(["call.recording_available"]));
    assert_eq!(settings["crm_webhook_token_set"], true);
    assert_eq!(settings["crm_webhook_secret_set"], true);
    assert!(settings["crm_webhook_token_set_at"].is_string() && settings["crm_webhook_secret_set_at"].is_string());
    assert!(updated.body.get("generated_secret").is_none());

    let read = get(&app, &tenant).await;
    assert_eq!(read.body["settings"], settings);
    // Repeating the PUT changes nothing: not the set times, and the secret is not rotated.
    let again = put(&app, &tenant.api_key, body).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(get(&app, &tenant).await.body["settings"], settings);
    for reply in [&updated, &read, &again] {
        let text = reply.body.to_string();
        assert!(!text.contains(TOKEN) && !text.contains(SECRET), "a credential was returned: {text}");
    }

    // The dispatcher's read has them; the public read agrees with the API.
    let record = app.ctx.settings.get_record(&tenant.id).await.unwrap();
    let printed = format!("{record:?}");
    assert!(!printed.contains(TOKEN) && !printed.contains(SECRET), "{printed}");
    assert_eq!(x_signatures(&record.signing_secrets(Utc::now()), b"{}"), [x_signature(SECRET.as_bytes(), b"{}")]);
    assert_eq!(app.ctx.settings.get(&tenant.id).await.unwrap(), record.settings);

    // Another tenant's settings are its own.
    let other = app.tenant("settings-round-trip-other").await;
    let theirs = &get(&app, &other).await.body["settings"];
    assert_eq!(theirs["retention_days"], 90);
    assert_eq!(theirs["crm_webhook_url"], Value::Null);
    assert_eq!(theirs["crm_webhook_token_set"], false);
}

#[tokio::test]
async fn a_generated_secret_is_shown_once_and_the_replaced_one_signs_for_a_day() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-rotation").await;
    assert_eq!(put(&app, &tenant.api_key, json!({"crm_webhook_secret": SECRET})).await.status, 200);

    let rotated = put(&app, &tenant.api_key, json!({"crm_webhook_secret": "generate"})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let generated = rotated.body["generated_secret"].as_str().expect("the generated secret, once").to_owned();
    assert!(generated.starts_with("whsec_") && generated != SECRET);
    let valid_until = time(&rotated.body["settings"]["previous_secret_valid_until"]);
    let expected = Utc::now() + TimeDelta::hours(24);
    assert!((valid_until - expected).abs() < TimeDelta::minutes(1), "{valid_until} vs {expected}");

    let read = get(&app, &tenant).await;
    assert!(read.body.get("generated_secret").is_none());
    assert!(!read.body.to_string().contains(&generated) && !read.body.to_string().contains(SECRET));
    assert_eq!(time(&read.body["settings"]["previous_secret_valid_until"]), valid_until);

    // Both sign, the new one first, until the old one's day is over.
    let record = app.ctx.settings.get_record(&tenant.id).await.unwrap();
    assert!(record.crm_webhook_secret.is_some() && record.previous_secret.is_some());
    let body = br#"{"event":"call.status_update"}"#;
    let expected = [x_signature(generated.as_bytes(), body), x_signature(SECRET.as_bytes(), body)];
    assert_eq!(x_signatures(&record.signing_secrets(Utc::now()), body), expected);
    assert_eq!(record.signing_secrets(valid_until + TimeDelta::seconds(1)).len(), 1);
}

#[tokio::test]
async fn invalid_settings_are_refused_naming_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-invalid").await;
    for (body, field) in [
        (json!({"retention_days": 10}), "retention_days"),
        (json!({"crm_webhook_url": "http://crm.example.com/webhooks/calls"}), "crm_webhook_url"),
        (json!({"crm_webhook_url": "ftp://crm.example.com/"}), "crm_webhook_url"),
        (json!({"crm_webhook_events": ["call.status_update", "call.ended"]}), "crm_webhook_events[1]"),
        (json!({"crm_webhook_token": "short"}), "crm_webhook_token"),
        (json!({"crm_webhook_token": "a token with spaces in it"}), "crm_webhook_token"),
        (json!({"crm_webhook_secret": "C2FVsBQIhrscChlQIMV+b5sSYspob7oD"}), "crm_webhook_secret"),
        (json!({"recording_enabled": false, "retention_days": 400}), "retention_days"),
    ] {
        let reply = put(&app, &tenant.api_key, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.error_field(), Some(field), "{}", reply.body);
    }
    let unknown = put(&app, &tenant.api_key, json!({"crm_webhook_tokn": TOKEN})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert_eq!(get(&app, &tenant).await.body["settings"]["recording_enabled"], true, "nothing was applied");

    // The local stack lets a CRM fake listen on plain http on loopback.
    assert!(app.ctx.config.local, "black-box tests run against the local stack");
    let loopback = put(&app, &tenant.api_key, json!({"crm_webhook_url": "http://127.0.0.1:9/hook"})).await;
    assert_eq!(loopback.status, 200, "{}", loopback.body);

    let no_settings = app.key(&tenant.id, &[Scope::CallsRead, Scope::CallsWrite, Scope::Admin], 100).await;
    assert_eq!(app.get(SETTINGS, &[], Some(&no_settings)).await.status, 403);
    assert_eq!(put(&app, &no_settings, json!({"retention_days": 60})).await.status, 403);
    assert_eq!(get(&app, &tenant).await.body["settings"]["retention_days"], 90);
}

#[tokio::test]
async fn a_gone_endpoint_stays_disabled_until_a_url_is_put_again() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-gone").await;
    assert_eq!(put(&app, &tenant.api_key, json!({"crm_webhook_url": CRM_URL})).await.status, 200);

    assert!(!app.ctx.settings.disable_webhook(&tenant.id, "https://old.example.com/").await.unwrap());
    assert!(app.ctx.settings.disable_webhook(&tenant.id, CRM_URL).await.unwrap());
    let settings = &get(&app, &tenant).await.body["settings"];
    assert_eq!(
        (settings["crm_webhook_enabled"].clone(), settings["crm_webhook_url"].clone()),
        (json!(false), json!(CRM_URL))
    );

    let reenabled = put(&app, &tenant.api_key, json!({"crm_webhook_url": CRM_URL})).await;
    assert_eq!(reenabled.status, 200, "{}", reenabled.body);
    assert_eq!(reenabled.body["settings"]["crm_webhook_enabled"], true);
}

#[tokio::test]
async fn concurrent_puts_never_lose_an_acknowledged_change() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("settings-race").await;
    let changes = [
        ("recording_enabled", json!(false)),
        ("consent_required", json!(false)),
        ("transcription_enabled", json!(true)),
        ("retention_days", json!(45)),
        ("crm_webhook_url", json!(CRM_URL)),
        ("crm_webhook_events", json!(["call.status_update"])),
    ];
    let replies = futures::future::join_all(
        changes.iter().map(|(field, value)| put(&app, &tenant.api_key, json!({ *field: value }))),
    )
    .await;
    let settings = &get(&app, &tenant).await.body["settings"];
    for ((field, value), reply) in changes.iter().zip(&replies) {
        match reply.status {
            200 => assert_eq!(&settings[field], value, "{field} was acknowledged, then lost"),
            409 => assert_eq!(reply.body["error"]["code"], "conflict"),
            other => panic!("{field}: {other} {}", reply.body),
        }
    }
    assert!(replies.iter().any(|r| r.status == 200));
}
