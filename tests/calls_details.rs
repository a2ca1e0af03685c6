use chrono::Duration;
use shared::calls::{CallEvent, CallStatus};
use switchboard_tests::TestApp;

use crate::fixtures;

const DETAILS: &str = "api-calls-details";

#[tokio::test]
async fn details_return_the_call_with_its_ordered_timeline_consent_and_metadata() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("details").await;
    let mut rng = rand::rng();
    let (mut call, _) = switchboard_infra::demo::call(&tenant.id, fixtures::epoch(), &mut rng);
    call.status = CallStatus::Completed;
    call.consent = Some(shared::calls::Consent {
        status: shared::calls::ConsentStatus::Granted,
        recorded_at: fixtures::epoch() + Duration::seconds(4),
        method: "ivr-prompt".into(),
    });
    call.metadata.insert("crm_lead_id".into(), "L-42".into());
    call.metadata.insert("priority".into(), 3.into());
    // Written out of order on purpose: the timeline is ordered by when things happened.
    let event = |status: CallStatus, secs: i64| CallEvent {
        id: uuid::Uuid::now_v7().to_string(),
        call_id: call.id.clone(),
        kind: "call.status_update".into(),
        status: Some(status),
        occurred_at: fixtures::epoch() + Duration::seconds(secs),
        source: "twilio".into(),
        detail: Default::default(),
    };
    let events = vec![
        event(CallStatus::Completed, 95),
        event(CallStatus::Initiated, 0),
        event(CallStatus::InProgress, 6),
        event(CallStatus::Ringing, 1),
    ];
    app.ctx.calls.insert(&call, &events).await.unwrap();
    // Open the key's hourly window first (the first request of each hour costs one write more).
    app.get(DETAILS, &[("call_id", &call.id)], Some(&tenant.api_key)).await;
    app.store_requests.take();

    let reply = app.get(DETAILS, &[("call_id", &call.id)], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["success"], true);
    assert_eq!(reply.body["call"]["id"], call.id.as_str());
    assert_eq!(reply.body["call"]["status"], "completed");
    assert_eq!(reply.body["call"]["consent"]["status"], "granted");
    assert_eq!(reply.body["call"]["consent"]["method"], "ivr-prompt");
    assert_eq!(reply.body["call"]["metadata"]["crm_lead_id"], "L-42");
    assert_eq!(reply.body["call"]["metadata"]["priority"], 3);
    let statuses: Vec<&str> =
        reply.body["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["initiated", "ringing", "in-progress", "completed"]);
    assert_eq!(reply.body["events"][0]["type"], "call.status_update");
    // One Query reads the call and its whole timeline (plus the auth write).
    let used = app.store_requests.take();
    assert_eq!(used.get("Query"), Some(&1), "{used:?}");
    assert_eq!(used.values().sum::<usize>(), 2, "{used:?}");
}

#[tokio::test]
async fn unknown_foreign_and_malformed_call_ids() {
    let app = TestApp::spawn().await;
    let a = app.tenant("details-a").await;
    let b = app.tenant("details-b").await;
    let b_calls = fixtures::calls(&b.id, 1);
    app.ctx.calls.insert_many(&b_calls).await.unwrap();

    let foreign = app.get(DETAILS, &[("call_id", &b_calls[0].0.id)], Some(&a.api_key)).await;
    let unknown = app.get(DETAILS, &[("call_id", &uuid::Uuid::now_v7().to_string())], Some(&a.api_key)).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(unknown.status, 404);
    assert_eq!(foreign.body["error"]["code"], "not_found");
    // A foreign id is indistinguishable from one that never existed.
    assert_eq!(
        foreign.body["error"]["message"].as_str().unwrap().replace(&b_calls[0].0.id, "ID"),
        unknown.body["error"]["message"].as_str().unwrap().replace(
            unknown.body["error"]["message"].as_str().unwrap().rsplit(' ').next().unwrap(),
            "ID"
        )
    );
    let own = app.get(DETAILS, &[("call_id", &b_calls[0].0.id)], Some(&b.api_key)).await;
    assert_eq!(own.status, 200);

    for (query, field) in [(vec![], "call_id"), (vec![("call_id", "123")], "call_id"), (vec![("id", "x")], "id")] {
        let reply = app.get(DETAILS, &query, Some(&a.api_key)).await;
        assert_eq!(reply.status, 400, "{query:?}");
        assert_eq!(reply.error_field(), Some(field), "{query:?}");
    }
}
