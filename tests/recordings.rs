use std::time::Duration;

use rand::SeedableRng;
use shared::{
    calls::{CallStatus, ConsentStatus, RecordingStatus, lifecycle::call_id_for},
    tenants::{Scope, settings::CallSettings},
};
use switchboard_infra::{simulate::{self, CallScript}, twilio_fake};
use switchboard_tests::{TestApp, TestTenant, TwilioAccount};

/// Plays a completed, recorded call; returns its call id once the recording is in S3.
async fn recorded_call(app: &TestApp, tenant: &TestTenant, account: &TwilioAccount, media: &[u8]) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut script = CallScript::random("+14155550100", &mut rng);
    script.outcome = CallStatus::Completed;
    script.talk_seconds = 30;
    let recording_sid = twilio_fake::sid("RE");
    script.recording_sid = Some(recording_sid.clone());
    app.twilio.add_recording(&account.account_sid, &recording_sid, "audio/x-wav", media.to_vec());
    let caller = app.caller(account);
    for callback in simulate::callbacks(&account.account_sid, &script) {
        let (code, body) = caller.deliver(&callback).await.unwrap();
        assert!((200..300).contains(&code), "{}: {code} {body}", callback.subpath);
    }
    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    wait_for_recording(app, tenant, &call_id, RecordingStatus::Available).await;
    call_id
}

async fn wait_for_recording(app: &TestApp, tenant: &TestTenant, call_id: &str, want: RecordingStatus) {
    for _ in 0..100 {
        let call = app.ctx.calls.get(&tenant.id, call_id).await.unwrap();
        if call.and_then(|c| c.recording).is_some_and(|r| r.status == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("recording of {call_id} never became {want:?}");
}

#[tokio::test]
async fn recording_round_trip_from_twilio_to_a_signed_s3_url() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("recordings").await;
    let account = app.twilio_account(&tenant.id).await;
    let media = twilio_fake::tone_wav(1500);
    let call_id = recorded_call(&app, &tenant, &account, &media).await;

    let call = app.ctx.calls.get(&tenant.id, &call_id).await.unwrap().unwrap();
    let recording = call.recording.unwrap();
    assert_eq!(recording.size_bytes, Some(media.len() as u64));
    assert_eq!(recording.content_type.as_deref(), Some("audio/x-wav"));
    let key = recording.object_key.unwrap();
    assert!(key.starts_with(&format!("recordings/{}/{call_id}/", tenant.id)), "{key}");
    // Fetched with the tenant's own credentials.
    let fetches: Vec<_> = app.twilio.requests().into_iter().filter(|r| r.path.contains("/Recordings/")).collect();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].auth_user.as_deref(), Some(account.account_sid.as_str()));

    let reply = app.get("api-calls-recording", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["call_id"], call_id.as_str());
    let url = reply.body["recording_url"].as_str().unwrap().to_owned();
    let expires_at = chrono::DateTime::parse_from_rfc3339(reply.body["expires_at"].as_str().unwrap()).unwrap();
    let ttl = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(59) && ttl <= chrono::Duration::minutes(60), "{ttl}");
    assert!(url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=3600"), "{url}");

    // A plain HTTP client gets the bytes; the S3 server checks the signature.
    let plain = reqwest::Client::new();
    let fetched = plain.get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), media.as_slice());
    let tampered = url.replace(&call_id, &uuid::Uuid::now_v7().to_string());
    assert_eq!(plain.get(&tampered).send().await.unwrap().status(), 403);
    let mut forged = url.clone();
    let at = forged.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    forged.replace_range(at..at + 4, if &forged[at..at + 4] == "0000" { "1111" } else { "0000" });
    assert_eq!(plain.get(&forged).send().await.unwrap().status(), 403);

    // One audit entry per URL issued: who, when, which call.
    let second = app.get("api-calls-recording", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(second.status, 200);
    let audit = app.ctx.audit.recent(&tenant.id, Some(&call_id), 50).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|e| e.action == "recording.url_issued" && e.actor == tenant.api_key[4..20]));
}

#[tokio::test]
async fn an_expired_signed_url_is_rejected_by_the_s3_server() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("expiry").await;
    let account = app.twilio_account(&tenant.id).await;
    let call_id = recorded_call(&app, &tenant, &account, &twilio_fake::tone_wav(200)).await;
    let call = app.ctx.calls.get(&tenant.id, &call_id).await.unwrap().unwrap();
    let key = call.recording.unwrap().object_key.unwrap();
    let bucket = app.ctx.config.recordings_bucket.clone().unwrap();
    // Same signer, a three-second lifetime (signatures are stamped to the second), so
    // expiry is observable in a test.
    let (url, _) = shared::recordings::presign_get(app.ctx.aws.s3(), &bucket, &key, Duration::from_secs(3)).await.unwrap();
    let plain = reqwest::Client::new();
    assert_eq!(plain.get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(plain.get(&url).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn recording_access_follows_scope_tenant_consent_and_retention() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("recording-policy").await;
    let other = app.tenant("recording-other").await;
    let account = app.twilio_account(&tenant.id).await;
    let call_id = recorded_call(&app, &tenant, &account, &twilio_fake::tone_wav(200)).await;

    let calls_only = app.key(&tenant.id, &[Scope::CallsRead], 1000).await;
    assert_eq!(app.get("api-calls-recording", &[("call_id", &call_id)], Some(&calls_only)).await.status, 403);
    assert_eq!(app.get("api-calls-recording", &[("call_id", &call_id)], Some(&other.api_key)).await.status, 404);
    let no_recording = app.tenant("no-recording").await;
    let data = crate::fixtures::calls(&no_recording.id, 1);
    app.ctx.calls.insert_many(&data).await.unwrap();
    let reply = app.get("api-calls-recording", &[("call_id", &data[0].0.id)], Some(&no_recording.api_key)).await;
    assert_eq!(reply.status, 404);

    // Retention: a 30-day policy, and a recording stored 31 days ago.
    let mut call = app.ctx.calls.get(&tenant.id, &call_id).await.unwrap().unwrap();
    let mut recording = call.recording.clone().unwrap();
    recording.stored_at = Some(chrono::Utc::now() - chrono::Duration::days(31));
    recording.recording_sid = Some(twilio_fake::sid("RE"));
    app.ctx.calls.set_recording(&tenant.id, &call_id, &recording, None).await.unwrap();
    app.ctx.settings.put(&tenant.id, &CallSettings { retention_days: 30, ..CallSettings::default() }).await.unwrap();
    let expired = app.get("api-calls-recording", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(expired.status, 410);
    assert_eq!(expired.body["error"]["code"], "retention_expired");

    // Consent withdrawn: refused whatever the retention.
    app.ctx.settings.put(&tenant.id, &CallSettings::default()).await.unwrap();
    call.consent = Some(shared::calls::Consent {
        status: ConsentStatus::Withdrawn,
        recorded_at: chrono::Utc::now(),
        method: "crm".into(),
    });
    call.recording = Some(recording);
    app.ctx.calls.insert_many(&[(call.clone(), Vec::new())]).await.unwrap();
    let withdrawn = app.get("api-calls-recording", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(withdrawn.status, 403);
    assert_eq!(withdrawn.body["error"]["code"], "consent_withdrawn");
    // Refusals issue no URL and so leave no audit entry.
    assert!(app.ctx.audit.recent(&tenant.id, Some(&call_id), 50).await.unwrap().is_empty());
}

#[tokio::test]
async fn failed_fetches_are_retried_into_one_object_and_missing_media_is_recorded() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("fetch-retry").await;
    let account = app.twilio_account(&tenant.id).await;
    // Three 500s exhaust the client's own retries once; the queue retries the job.
    app.twilio.fail_next("/Recordings/", 3, reqwest::StatusCode::INTERNAL_SERVER_ERROR, None);
    let media = twilio_fake::tone_wav(300);
    let call_id = recorded_call(&app, &tenant, &account, &media).await;
    let fetches = app.twilio.requests().into_iter().filter(|r| r.path.contains("/Recordings/")).count();
    assert_eq!(fetches, 4, "3 failed attempts, then the retried job");
    let call = app.ctx.calls.get(&tenant.id, &call_id).await.unwrap().unwrap();
    assert_eq!(call.recording.unwrap().size_bytes, Some(media.len() as u64));
    let (_, events) = app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "call.recording_available").count(), 1);

    // A recording Twilio does not have: recorded as failed with Twilio's code.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut script = CallScript::random("+14155550100", &mut rng);
    script.outcome = CallStatus::Completed;
    script.recording_sid = Some(twilio_fake::sid("RE"));
    for callback in simulate::callbacks(&account.account_sid, &script) {
        app.caller(&account).deliver(&callback).await.unwrap();
    }
    let missing = call_id_for("twilio", &account.account_sid, &script.call_sid);
    wait_for_recording(&app, &tenant, &missing, RecordingStatus::Failed).await;
    let call = app.ctx.calls.get(&tenant.id, &missing).await.unwrap().unwrap();
    assert_eq!(call.recording.unwrap().error_code.as_deref(), Some("20404"));
}
