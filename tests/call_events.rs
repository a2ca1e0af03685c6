use std::{collections::HashSet, time::Duration};

use rand::SeedableRng;
use switchboard_infra::simulate::{self, CallScript};
use switchboard_tests::{TestApp, TestTenant, TwilioAccount};

const EVENTS: &str = "api-call-events";

async fn play(app: &TestApp, account: &TwilioAccount, seed: u64) {
    let mut script = CallScript::random("+14155550100", &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
    script.recording_sid = None;
    for callback in simulate::callbacks(&account.account_sid, &script) {
        assert!((200..300).contains(&app.caller(account).deliver(&callback).await.unwrap().0));
    }
}

/// Reads the log from `after` in pages of 2 until it is caught up; returns event ids and
/// the cursor to resume from.
async fn catch_up(app: &TestApp, tenant: &TestTenant, mut after: Option<String>) -> (Vec<String>, Option<String>) {
    let (events, after) = catch_up_events(app, tenant, after.take()).await;
    (events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect(), after)
}

async fn catch_up_events(app: &TestApp, tenant: &TestTenant, mut after: Option<String>) -> (Vec<serde_json::Value>, Option<String>) {
    let mut ids = Vec::new();
    for _ in 0..50 {
        let mut query = vec![("limit", "2".to_owned())];
        if let Some(cursor) = &after {
            query.push(("after", cursor.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = app.get(EVENTS, &query, Some(&tenant.api_key)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page = reply.body["events"].as_array().unwrap();
        ids.extend(page.iter().cloned());
        after = reply.body["next_cursor"].as_str().map(str::to_owned);
        if page.is_empty() {
            return (ids, after);
        }
    }
    panic!("the event log never caught up");
}

#[tokio::test]
async fn the_event_log_serves_each_committed_event_once_in_order_and_resumes() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("event-log").await;
    let other = app.tenant("event-log-other").await;
    let account = app.twilio_account(&tenant.id).await;
    let other_account = app.twilio_account(&other.id).await;
    play(&app, &account, 1).await;
    play(&app, &other_account, 2).await;
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the settling window

    let (log, cursor) = catch_up_events(&app, &tenant, None).await;
    // Commit order: the call's statuses were committed one after another.
    let statuses: Vec<shared::calls::CallStatus> =
        log.iter().map(|e| shared::calls::CallStatus::parse(e["status"].as_str().unwrap()).unwrap()).collect();
    assert!(statuses.windows(2).all(|w| w[0].rank() < w[1].rank()), "{statuses:?}");
    let first: Vec<String> = log.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    let committed: Vec<String> = {
        let calls = app.ctx.calls.list(&tenant.id, &shared::calls::ListQuery::from_params(&Default::default()).unwrap(), None).await.unwrap();
        let mut ids = Vec::new();
        for call in calls.calls {
            let (_, events) = app.ctx.calls.details(&tenant.id, &call.id).await.unwrap().unwrap();
            ids.extend(events.into_iter().map(|e| e.id));
        }
        ids
    };
    assert_eq!(first.iter().collect::<HashSet<_>>(), committed.iter().collect::<HashSet<_>>(), "exactly the tenant's events");
    assert_eq!(first.len(), committed.len(), "each once");
    assert!(cursor.is_some(), "a cursor to resume from, even when caught up");

    // More happens while the CRM is away; resuming serves only what it missed.
    play(&app, &account, 3).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (missed, _) = catch_up(&app, &tenant, cursor.clone()).await;
    assert!(!missed.is_empty());
    assert!(missed.iter().all(|id| !first.contains(id)), "no replays");

    // Cursors are sealed to the tenant; the other tenant's cannot be used.
    let (_, other_cursor) = catch_up(&app, &other, None).await;
    let reply = app.get(EVENTS, &[("after", other_cursor.as_deref().unwrap())], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_field(), Some("after"));
    assert_eq!(app.get(EVENTS, &[("limit", "0")], Some(&tenant.api_key)).await.error_field(), Some("limit"));
}
