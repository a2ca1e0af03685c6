use futures::{StreamExt, stream};
use rand::SeedableRng;
use shared::{calls::{CallStatus, lifecycle::call_id_for}, providers::twilio::signature};
use switchboard_infra::simulate::{self, CallScript};
use switchboard_tests::TestApp;

const STATUS_EVENT: &str = "call.status_update";

#[tokio::test]
async fn duplicated_and_shuffled_callbacks_leave_every_call_in_its_true_final_state() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("lifecycle").await;
    let account = app.twilio_account(&tenant.id).await;
    let caller = app.caller(&account);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);

    let scripts: Vec<CallScript> = (0..200).map(|_| CallScript::random("+14155550100", &mut rng)).collect();
    let orders: Vec<u64> = (0..200).map(|i| 1000 + i).collect();
    // Calls proceed concurrently; each call's callbacks arrive in their shuffled order.
    let played: Vec<(CallScript, Vec<u16>)> = stream::iter(scripts.into_iter().zip(orders))
        .map(|(script, seed)| {
            let caller = caller.clone();
            let account_sid = account.account_sid.clone();
            async move {
                let script = script.placed_now();
                let mut callbacks = simulate::callbacks(&account_sid, &script);
                callbacks.retain(|c| c.subpath != "recording");
                let plan = simulate::disorder(callbacks, true, true, &mut rand::rngs::StdRng::seed_from_u64(seed));
                let mut codes = Vec::new();
                for callback in &plan {
                    codes.push(caller.deliver(callback).await.expect("deliver").0);
                }
                (script, codes)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(played.iter().flat_map(|(_, c)| c).all(|code| (200..300).contains(code)), "duplicates and late callbacks answer 2xx");
    let scripts: Vec<CallScript> = played.into_iter().map(|(s, _)| s).collect();

    for script in &scripts {
        let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
        let (call, events) = app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().expect("call exists");
        assert_eq!(call.status, script.outcome, "{}", script.call_sid);
        assert!(call.status.is_terminal());
        assert_eq!(call.duration_seconds, Some(script.talk_seconds));
        assert_eq!(call.provider_call_sid.as_deref(), Some(script.call_sid.as_str()));
        assert_eq!(call.from_number.as_str(), script.from);
        // Each distinct status change once; the final status always among them.
        let statuses: Vec<CallStatus> =
            events.iter().filter(|e| e.kind == STATUS_EVENT).map(|e| e.status.unwrap()).collect();
        let mut distinct = statuses.clone();
        distinct.dedup();
        distinct.sort_by_key(|s| s.rank());
        distinct.dedup();
        assert_eq!(statuses.len(), distinct.len(), "duplicate status event: {statuses:?}");
        assert_eq!(statuses.last(), Some(&script.outcome));
        assert_eq!(statuses.first(), Some(&CallStatus::Ringing), "voice opens the timeline");
        // Never backwards: the timeline's ranks only rise.
        assert!(statuses.windows(2).all(|w| w[0].rank() < w[1].rank()), "{statuses:?}");
    }
}

#[tokio::test]
async fn in_order_delivery_records_every_step_exactly_once() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("ordered").await;
    let account = app.twilio_account(&tenant.id).await;
    let caller = app.caller(&account);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut script = CallScript::random("+14155550100", &mut rng);
    script.outcome = CallStatus::Completed;
    script.talk_seconds = 42;
    script.recording_sid = None;
    for callback in simulate::disorder(simulate::callbacks(&account.account_sid, &script), true, false, &mut rng) {
        let (code, _) = caller.deliver(&callback).await.unwrap();
        assert!((200..300).contains(&code));
    }
    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    let reply = app.get("api-calls-details", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let statuses: Vec<&str> = reply.body["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["ringing", "in-progress", "completed"]);
    assert_eq!(reply.body["call"]["duration_seconds"], 42);
    assert_eq!(reply.body["call"]["direction"], "inbound");
    assert!(reply.body["call"]["answered_at"].is_string());
    assert!(reply.body["call"]["ended_at"].is_string());
}

#[tokio::test]
async fn unsigned_tampered_or_misaddressed_callbacks_are_refused_and_store_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("signatures").await;
    let account = app.twilio_account(&tenant.id).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let script = CallScript::random("+14155550100", &mut rng);
    let status = simulate::callbacks(&account.account_sid, &script).into_iter().nth(1).unwrap();
    let url = format!("{}/webhook-twilio/status", app.base_url);
    let post = |signature: Option<String>, params: Vec<(String, String)>, target: String| {
        let mut request = app.http.post(target).form(&params);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        request
    };
    let good = signature::compute(&account.auth_token, &url, &status.params);

    let missing = app.request(post(None, status.params.clone(), url.clone())).await;
    assert_eq!(missing.status, 400);
    let mut tampered = status.params.clone();
    tampered.iter_mut().find(|(k, _)| k == "CallStatus").unwrap().1 = "completed".into();
    assert_eq!(app.request(post(Some(good.clone()), tampered, url.clone())).await.status, 403);
    let wrong_token = signature::compute("not-the-token-at-all-000000000000", &url, &status.params);
    assert_eq!(app.request(post(Some(wrong_token), status.params.clone(), url.clone())).await.status, 403);
    let other_url = signature::compute(&account.auth_token, "https://evil.example.com/status", &status.params);
    assert_eq!(app.request(post(Some(other_url), status.params.clone(), url.clone())).await.status, 403);
    // Signed for /status, replayed at /recording.
    let replayed = app.request(post(Some(good.clone()), status.params.clone(), url.replace("/status", "/recording"))).await;
    assert_eq!(replayed.status, 403);
    let mut unknown_account = status.params.clone();
    unknown_account.iter_mut().find(|(k, _)| k == "AccountSid").unwrap().1 = switchboard_infra::twilio_fake::sid("AC");
    let forged = signature::compute(&account.auth_token, &url, &unknown_account);
    assert_eq!(app.request(post(Some(forged), unknown_account, url.clone())).await.status, 403);

    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    assert!(app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().is_none(), "nothing stored");

    // The genuine request is accepted.
    assert_eq!(app.request(post(Some(good), status.params.clone(), url.clone())).await.status, 204);
    assert!(app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_store_failure_is_a_5xx_so_twilio_retries() {
    // A gateway wired to a DynamoDB endpoint that refuses connections.
    let app = TestApp::spawn().await;
    let tenant = app.tenant("store-down").await;
    let account = app.twilio_account(&tenant.id).await;
    let broken = TestApp::spawn_with_dynamodb("http://127.0.0.1:9").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let script = CallScript::random("+14155550100", &mut rng);
    let status = simulate::callbacks(&account.account_sid, &script).into_iter().nth(1).unwrap();
    let (code, _) = broken.caller(&account).deliver(&status).await.unwrap();
    assert!((500..600).contains(&code), "got {code}");
    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    assert!(app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().is_none());
    // Twilio's retry, once the store is back, lands.
    assert_eq!(app.caller(&account).deliver(&status).await.unwrap().0, 204);
}
