//! `api-agents-manage`: agents, skills, departments, availability and the activity log.

use chrono::Utc;
use serde_json::{Value, json};
use shared::{
    agents::AgentState,
    departments::{Department, DepartmentInput},
    tenants::Scope,
};
use switchboard_tests::{Reply, TestApp, TestTenant};

const AGENTS: &str = "api-agents-manage";

async fn department(app: &TestApp, tenant: &TestTenant, name: &str, line: &str) -> Department {
    let input: DepartmentInput = serde_json::from_value(json!({ "name": name, "phone_number": line })).unwrap();
    let department = input.validate().unwrap().create(tenant.id.clone(), Utc::now()).unwrap();
    app.ctx.departments.put(&department, None).await.unwrap();
    department
}

async fn send(app: &TestApp, method: reqwest::Method, key: &str, body: Value) -> Reply {
    let url = format!("{}/{AGENTS}", app.base_url);
    app.request(app.http.request(method, url).header("x-api-key", key).json(&body)).await
}

#[tokio::test]
async fn agents_are_created_listed_changed_and_deleted_with_their_activity_logged() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("agents").await;
    let sales = department(&app, &tenant, "sales", "+14155550100").await;
    let support = department(&app, &tenant, "support", "+14155550101").await;

    let created = send(
        &app,
        reqwest::Method::POST,
        &tenant.api_key,
        json!({
            "name": "Maya Patel", "email": "maya@example.com", "phone": "+14155550123",
            "client_identity": "maya", "skills": {"spanish": 8, "billing": 5},
            "departments": [sales.queue_id], "state": "available"
        }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let agent = &created.body["agent"];
    let id = agent["agent_id"].as_str().unwrap().to_owned();
    assert_eq!((agent["state"].as_str(), agent["skills"]["spanish"].as_u64()), (Some("available"), Some(8)));
    assert!(agent["idle_since"].is_string() && agent["idle_seconds_today"].is_u64(), "{agent}");
    let other =
        send(&app, reqwest::Method::POST, &tenant.api_key, json!({"name": "Lee", "phone": "+14155550124"})).await;
    assert_eq!((other.status, other.body["agent"]["state"].as_str()), (201, Some("offline")), "offline by default");

    // Listed, filtered by department and state; shown with its activity.
    let list = |query: &'static [(&'static str, &'static str)]| app.get(AGENTS, query, Some(&tenant.api_key));
    assert_eq!(list(&[]).await.body["count"], 2);
    assert_eq!(list(&[("state", "available")]).await.body["agents"][0]["agent_id"], id.as_str());
    let in_sales = app.get(AGENTS, &[("department", &sales.queue_id)], Some(&tenant.api_key)).await;
    assert_eq!(in_sales.body["count"], 1);

    // A softphone (calls:write only) may change availability, not the profile.
    let phone_key = app.key(&tenant.id, &[Scope::CallsWrite], 1000).await;
    let away = send(&app, reqwest::Method::PUT, &phone_key, json!({"agent_id": id, "state": "away"})).await;
    assert_eq!((away.status, away.body["agent"]["state"].as_str()), (200, Some("away")), "{}", away.body);
    assert!(away.body["agent"]["idle_since"].is_null(), "idle only while available");
    let renamed = send(&app, reqwest::Method::PUT, &phone_key, json!({"agent_id": id, "name": "M. Patel"})).await;
    assert_eq!(renamed.status, 403);
    let moved = send(
        &app,
        reqwest::Method::PUT,
        &tenant.api_key,
        json!({"agent_id": id, "departments": [sales.queue_id, support.queue_id], "skills": {"spanish": 9}, "email": null}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["agent"]["departments"].as_array().unwrap().len(), 2);
    assert_eq!(moved.body["agent"]["skills"], json!({"spanish": 9}));
    assert!(moved.body["agent"]["email"].is_null());
    assert_eq!(moved.body["agent"]["state"], "away", "a profile change keeps the state");
    let offline = send(&app, reqwest::Method::PUT, &phone_key, json!({"agent_id": id, "state": "offline"})).await;
    assert_eq!(offline.status, 200);

    // The activity log, newest first: created available, then away, then offline.
    let shown = app.get(AGENTS, &[("agent_id", &id)], Some(&tenant.api_key)).await;
    let activity = shown.body["activity"].as_array().unwrap();
    let steps: Vec<(&str, &str)> =
        activity.iter().map(|a| (a["from_state"].as_str().unwrap(), a["to_state"].as_str().unwrap())).collect();
    assert_eq!(steps, [("away", "offline"), ("available", "away"), ("offline", "available")]);
    assert!(activity.iter().all(|a| a["activity_type"] == "state_change" && a["duration_seconds"].is_u64()));

    // Another tenant sees nothing of it.
    let stranger = app.tenant("agents-other").await;
    assert_eq!(app.get(AGENTS, &[("agent_id", &id)], Some(&stranger.api_key)).await.status, 404);
    assert_eq!(app.get(AGENTS, &[], Some(&stranger.api_key)).await.body["count"], 0);
    let foreign =
        send(&app, reqwest::Method::PUT, &stranger.api_key, json!({"agent_id": id, "state": "available"})).await;
    assert_eq!(foreign.status, 404);

    // Deleted; an agent on a call cannot be.
    let mut busy =
        app.ctx.agents.get(&tenant.id, other.body["agent"]["agent_id"].as_str().unwrap()).await.unwrap().unwrap();
    let before = busy.clone();
    busy.transition(AgentState::Busy, Some("c0ffee00-0000-4000-8000-000000000000"), Utc::now());
    app.ctx.agents.save(&busy, Some(&before), "call_offered").await.unwrap();
    let url = format!("{}/{AGENTS}", app.base_url);
    let refused = app
        .request(app.http.delete(&url).query(&[("agent_id", &busy.agent_id)]).header("x-api-key", &tenant.api_key))
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    let state_on_call =
        send(&app, reqwest::Method::PUT, &tenant.api_key, json!({"agent_id": busy.agent_id, "state": "away"})).await;
    assert_eq!(state_on_call.status, 409, "availability follows the call while on one");
    let deleted =
        app.request(app.http.delete(&url).query(&[("agent_id", &id)]).header("x-api-key", &tenant.api_key)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(app.get(AGENTS, &[("agent_id", &id)], Some(&tenant.api_key)).await.status, 404);
}

#[tokio::test]
async fn bad_agent_input_is_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("agents-input").await;
    let field = |reply: Reply| {
        assert_eq!(reply.status, 400, "{}", reply.body);
        reply.error_field().unwrap_or_default().to_owned()
    };
    let post = |body: Value| send(&app, reqwest::Method::POST, &tenant.api_key, body);
    assert_eq!(field(post(json!({"phone": "+14155550123"})).await), "name");
    assert_eq!(field(post(json!({"name": "Ada"})).await), "phone");
    assert_eq!(field(post(json!({"name": "Ada", "phone": "12345"})).await), "phone");
    assert_eq!(field(post(json!({"name": "Ada", "phone": "+14155550123", "email": "ada"})).await), "email");
    assert_eq!(field(post(json!({"name": "Ada", "client_identity": "a b"})).await), "client_identity");
    assert_eq!(
        field(post(json!({"name": "Ada", "phone": "+14155550123", "skills": {"spanish": 11}})).await),
        "skills.spanish"
    );
    assert_eq!(field(post(json!({"name": "Ada", "phone": "+14155550123", "state": "asleep"})).await), "state");
    let unknown = "9a4e1b2c-3d5f-4a6b-8c7d-0e1f2a3b4c5d";
    assert_eq!(
        field(post(json!({"name": "Ada", "phone": "+14155550123", "departments": [unknown]})).await),
        "departments[0]"
    );
    assert_eq!(field(post(json!({"name": "Ada", "phone": "+14155550123", "agent_id": unknown})).await), "agent_id");
    let put = send(&app, reqwest::Method::PUT, &tenant.api_key, json!({"state": "away"})).await;
    assert_eq!(field(put), "agent_id");
    assert_eq!(app.get(AGENTS, &[("state", "nope")], Some(&tenant.api_key)).await.error_field(), Some("state"));
    assert_eq!(app.get(AGENTS, &[("bogus", "1")], Some(&tenant.api_key)).await.status, 400);
    let garbage = app
        .request(app.http.post(format!("{}/{AGENTS}", app.base_url)).header("x-api-key", &tenant.api_key).body("{nope"))
        .await;
    assert_eq!(garbage.status, 400);
    // Scopes: reading needs calls:read, creating settings.
    let reader = app.key(&tenant.id, &[Scope::CallsRead], 1000).await;
    assert_eq!(
        send(&app, reqwest::Method::POST, &reader, json!({"name": "Ada", "phone": "+14155550123"})).await.status,
        403
    );
    assert_eq!(app.get(AGENTS, &[], None).await.status, 401);
}
