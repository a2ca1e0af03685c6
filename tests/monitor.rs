//! `api-calls-monitor`: the live dashboard, built from state made through the real APIs
//! and Twilio callbacks, agrees with that state figure by figure.

use std::{collections::HashMap, time::Duration};

use rand::SeedableRng;
use serde_json::{Value, json};
use shared::{calls::lifecycle::call_id_for, tenants::Scope};
use switchboard_infra::simulate::{self, CallScript, Callback};
use switchboard_tests::{Reply, TestApp, TwilioAccount};

const MONITOR: &str = "api-calls-monitor";
const SALES_LINE: &str = "+14155550101";
const SUPPORT_LINE: &str = "+14155550102";

async fn post(app: &TestApp, key: &str, function: &str, body: Value) -> Value {
    let reply =
        app.request(app.http.post(format!("{}/{function}", app.base_url)).header("x-api-key", key).json(&body)).await;
    assert_eq!(reply.status, 201, "{function}: {}", reply.body);
    reply.body
}

async fn department(app: &TestApp, key: &str, name: &str, line: &str) -> String {
    let body = json!({
        "name": name,
        "phone_number": line,
        "routing_strategy": "longest-idle",
        "max_wait_time": 600,
        "after_hours_action": "voicemail"
    });
    post(app, key, "api-departments-manage", body).await["department"]["queue_id"].as_str().unwrap().to_owned()
}

async fn agent(app: &TestApp, key: &str, name: &str, phone: &str, queue_id: &str, state: &str) -> String {
    let body = json!({"name": name, "phone": phone, "departments": [queue_id], "state": state});
    post(app, key, "api-agents-manage", body).await["agent"]["agent_id"].as_str().unwrap().to_owned()
}

/// A caller dials `line`: the voice request, as Twilio sends it. Returns the call and
/// its script (for its later callbacks).
async fn dial(app: &TestApp, account: &TwilioAccount, line: &str, seed: u64) -> (String, CallScript) {
    let script = CallScript::random(line, &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
    let voice = simulate::callbacks(&account.account_sid, &script).remove(0);
    let (code, twiml) = app.caller(account).deliver(&voice).await.unwrap();
    assert_eq!(code, 200, "{twiml}");
    assert!(twiml.contains("<Conference"), "the caller waits in the department's conference: {twiml}");
    (call_id_for("twilio", &account.account_sid, &script.call_sid), script)
}

/// The caller hangs up: the script's final status callback.
async fn hang_up(app: &TestApp, account: &TwilioAccount, script: &CallScript) {
    let last: Callback =
        simulate::callbacks(&account.account_sid, script).into_iter().rfind(|c| c.subpath == "status").unwrap();
    let (code, body) = app.caller(account).deliver(&last).await.unwrap();
    assert!((200..300).contains(&code), "{code} {body}");
}

/// The dashboard once it shows `active` live calls: the calls index is eventually
/// consistent, everything else is read consistently.
async fn dashboard_with(app: &TestApp, key: &str, active: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.get(MONITOR, &[], Some(key)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["success"], true);
        let shown = reply.body["active_calls"].as_array().unwrap().len();
        if shown == active || tokio::time::Instant::now() > deadline {
            assert_eq!(reply.body["metrics"]["active_calls"], shown, "{}", reply.body);
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_id<'a>(list: &'a Value, key: &str, id: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|v| v[key] == id).unwrap_or_else(|| panic!("no {key} {id} in {list}"))
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v[key].as_str().unwrap().to_owned()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn the_dashboard_shows_exactly_the_live_calls_agents_and_queues() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("monitor").await;
    let account = app.twilio_account(&tenant.id).await;
    let key = app.key(&tenant.id, &[Scope::Settings, Scope::CallsRead, Scope::CallsWrite], 1000).await;

    let sales = department(&app, &key, "sales", SALES_LINE).await;
    let support = department(&app, &key, "support", SUPPORT_LINE).await;
    let ada = agent(&app, &key, "Ada", "+14155550111", &sales, "available").await;
    let grace = agent(&app, &key, "Grace", "+14155550112", &sales, "available").await;
    let alan = agent(&app, &key, "Alan", "+14155550113", &sales, "away").await;
    let edsger = agent(&app, &key, "Edsger", "+14155550114", &support, "offline").await;

    // Support has nobody available: its three callers wait, the first a little longer.
    let mut waiting = vec![dial(&app, &account, SUPPORT_LINE, 1).await];
    tokio::time::sleep(Duration::from_millis(1100)).await;
    waiting.push(dial(&app, &account, SUPPORT_LINE, 2).await);
    waiting.push(dial(&app, &account, SUPPORT_LINE, 3).await);
    // Each sales caller rings one of the two available sales agents.
    let rung = vec![dial(&app, &account, SALES_LINE, 4).await, dial(&app, &account, SALES_LINE, 5).await];

    let board = dashboard_with(&app, &key, 5).await;
    assert_eq!(
        board["metrics"],
        json!({"active_calls": 5, "available_agents": 0, "busy_agents": 2, "total_agents": 4, "queued_calls": 3}),
        "{board}"
    );

    // Read with Queries only, each bounded: one per live status, the agents, the
    // departments, one per department's queue; plus the key's rate-limit count.
    app.store_requests.take();
    assert_eq!(app.get(MONITOR, &[], Some(&key)).await.status, 200);
    let used = app.store_requests.take();
    assert_eq!(used, HashMap::from([("UpdateItem".to_owned(), 1), ("Query".to_owned(), 4 + 1 + 1 + 2)]));

    // Active calls: all five, newest first; waiting ones carry their queue and wait,
    // rung ones the agent being rung.
    let active = &board["active_calls"];
    let all: Vec<String> = waiting.iter().chain(&rung).map(|(id, _)| id.clone()).collect();
    assert_eq!(sorted(ids(active, "id")), sorted(all));
    let started: Vec<&str> = active.as_array().unwrap().iter().map(|c| c["started_at"].as_str().unwrap()).collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "newest first: {started:?}");
    for (id, _) in &waiting {
        let call = by_id(active, "id", id);
        assert_eq!(call["queue_id"], support.as_str());
        assert!(call["waiting_seconds"].is_u64(), "{call}");
        assert_eq!(call["status"], "ringing");
        assert_eq!(call["department"], "support");
        assert!(call["agent"].is_null(), "{call}");
    }
    let mut rung_agents = Vec::new();
    for (id, _) in &rung {
        let call = by_id(active, "id", id);
        assert!(call.get("queue_id").is_none() && call.get("waiting_seconds").is_none(), "{call}");
        rung_agents.push(call["agent"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(sorted(rung_agents.clone()), sorted(vec![ada.clone(), grace.clone()]), "each sales agent rung once");

    // Agents: by name, each in the state it is in.
    let agents = &board["agents"];
    assert_eq!(ids(agents, "name"), ["Ada", "Alan", "Edsger", "Grace"]);
    for (i, (id, _)) in rung.iter().enumerate() {
        let agent = by_id(agents, "agent_id", &rung_agents[i]);
        assert_eq!((&agent["state"], &agent["current_call_id"]), (&json!("busy"), &json!(id)), "{agent}");
        assert!(agent["state_since"].is_string() && agent["idle_seconds_today"].is_u64(), "{agent}");
        assert_eq!(agent["departments"], json!([sales]));
    }
    for (id, state) in [(&alan, "away"), (&edsger, "offline")] {
        let agent = by_id(agents, "agent_id", id);
        assert_eq!((&agent["state"], &agent["current_call_id"]), (&json!(state), &Value::Null), "{agent}");
    }

    // Queues: one per department; support holds the three callers, oldest first.
    let queues = &board["queues"];
    assert_eq!(ids(queues, "name"), ["sales", "support"]);
    let sales_queue = by_id(queues, "queue_id", &sales);
    assert_eq!(
        (&sales_queue["waiting"], &sales_queue["longest_wait_seconds"], &sales_queue["oldest_call_id"]),
        (&json!(0), &json!(0), &Value::Null)
    );
    assert_eq!((&sales_queue["available_agents"], &sales_queue["calls"]), (&json!(0), &json!([])));
    let support_queue = by_id(queues, "queue_id", &support);
    assert_eq!(support_queue["waiting"], 3);
    assert_eq!(support_queue["available_agents"], 0);
    assert_eq!(support_queue["oldest_call_id"], waiting[0].0.as_str());
    assert_eq!(ids(&support_queue["calls"], "call_id"), waiting.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    let longest = support_queue["longest_wait_seconds"].as_u64().unwrap();
    assert!(longest >= 1, "{support_queue}");
    for entry in support_queue["calls"].as_array().unwrap() {
        let waited = entry["waiting_seconds"].as_u64().unwrap();
        assert!(waited <= longest, "{support_queue}");
        assert_eq!(by_id(active, "id", entry["call_id"].as_str().unwrap())["waiting_seconds"], waited);
        let caller = entry["caller"].as_str().unwrap();
        assert!(caller.contains('*'), "callers are shown masked: {caller}");
    }

    // One waiting and one rung caller hang up: both leave the dashboard.
    hang_up(&app, &account, &waiting[0].1).await;
    hang_up(&app, &account, &rung[0].1).await;
    let board = dashboard_with(&app, &key, 3).await;
    let left = [waiting[0].0.clone(), rung[0].0.clone()];
    assert!(ids(&board["active_calls"], "id").iter().all(|id| !left.contains(id)), "{board}");
    assert_eq!(board["metrics"]["active_calls"], 3);
    assert_eq!(board["metrics"]["queued_calls"], 2);
    let support_queue = by_id(&board["queues"], "queue_id", &support);
    assert_eq!(support_queue["waiting"], 2);
    assert_eq!(support_queue["oldest_call_id"], waiting[1].0.as_str());
}

#[tokio::test]
async fn the_dashboard_needs_a_calls_read_key_takes_no_parameters_and_shows_only_its_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("monitor-busy").await;
    let account = app.twilio_account(&tenant.id).await;
    let key = app.key(&tenant.id, &[Scope::Settings, Scope::CallsRead, Scope::CallsWrite], 1000).await;
    let support = department(&app, &key, "support", SUPPORT_LINE).await;
    agent(&app, &key, "Ada", "+14155550111", &support, "away").await;
    let (call_id, _) = dial(&app, &account, SUPPORT_LINE, 6).await;
    let board = dashboard_with(&app, &key, 1).await;
    assert_eq!(ids(&board["active_calls"], "id"), [call_id]);

    let status = |reply: Reply| (reply.status, reply.body["error"]["code"].as_str().unwrap_or_default().to_owned());
    assert_eq!(status(app.get(MONITOR, &[], None).await), (401, "unauthorized".into()));
    assert_eq!(status(app.get(MONITOR, &[], Some("sk_live_not_a_key")).await), (401, "unauthorized".into()));
    let settings_only = app.key(&tenant.id, &[Scope::Settings, Scope::CallsWrite], 1000).await;
    assert_eq!(status(app.get(MONITOR, &[], Some(&settings_only)).await), (403, "forbidden".into()));
    let filtered = app.get(MONITOR, &[("status", "ringing")], Some(&key)).await;
    assert_eq!((filtered.status, filtered.error_field()), (400, Some("status")), "{}", filtered.body);
    let posted = app.request(app.http.post(format!("{}/{MONITOR}", app.base_url)).header("x-api-key", &key)).await;
    assert_eq!(posted.status, 405);

    // Another tenant, busy or not, sees none of it.
    let other = app.tenant("monitor-quiet").await;
    let quiet = app.get(MONITOR, &[], Some(&other.api_key)).await;
    assert_eq!(quiet.status, 200, "{}", quiet.body);
    assert_eq!(
        quiet.body,
        json!({
            "success": true,
            "metrics": {"active_calls": 0, "available_agents": 0, "busy_agents": 0, "total_agents": 0, "queued_calls": 0},
            "active_calls": [], "agents": [], "queues": []
        })
    );
}
