use rand::SeedableRng;
use shared::{
    agents::AgentInput,
    calls::lifecycle::call_id_for,
    departments::{Department, DepartmentInput},
};
use switchboard_infra::simulate::{self, CallScript, Callback};
use switchboard_tests::{TestApp, TestTenant};

const LINE: &str = "+14155550100";
const AGENT: &str = "3f8a1c52-6d0e-4b7a-9c21-0a1b2c3d4e01";

async fn department(app: &TestApp, tenant: &TestTenant, extra: serde_json::Value) -> Department {
    let mut body = serde_json::json!({
        "name": "sales",
        "phone_number": LINE,
        "timezone": "Europe/Berlin",
        "max_wait_time": 60,
        "after_hours_action": "voicemail",
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let input: DepartmentInput = serde_json::from_value(body).unwrap();
    let department = input.validate().unwrap().create(tenant.id.clone(), chrono::Utc::now()).unwrap();
    app.ctx.departments.put(&department, None).await.unwrap();
    department
}

/// Maya, available in `department`.
async fn hire_maya(app: &TestApp, tenant: &TestTenant, department: &Department) {
    let input: AgentInput = serde_json::from_value(serde_json::json!({
        "name": "Maya Patel",
        "phone": "+14155550123",
        "departments": [department.queue_id],
        "state": "available",
    }))
    .unwrap();
    let mut agent = input.validate().unwrap().create(tenant.id.clone(), chrono::Utc::now()).unwrap();
    agent.agent_id = AGENT.into();
    app.ctx.agents.save(&agent, None, "state_change").await.unwrap();
}

#[tokio::test]
async fn inbound_call_joins_its_departments_conference_and_the_agent_is_rung_once() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("voice").await;
    let account = app.twilio_account(&tenant.id).await;
    let department = department(&app, &tenant, serde_json::json!({})).await;
    hire_maya(&app, &tenant, &department).await;
    let caller = app.caller(&account);
    let script = CallScript::random(LINE, &mut rand::rngs::StdRng::seed_from_u64(1)).placed_now();
    let voice = simulate::callbacks(&account.account_sid, &script).remove(0);

    let (code, twiml) = caller.deliver(&voice).await.unwrap();
    assert_eq!(code, 200, "{twiml}");
    assert!(twiml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"), "{twiml}");
    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    let conference = format!("sales-{call_id}");
    assert!(twiml.contains(&format!(">{conference}</Conference>")), "{twiml}");
    assert!(twiml.contains("startConferenceOnEnter=\"false\""), "{twiml}");
    assert!(twiml.contains(&format!("waitUrl=\"{}/webhook-twilio/wait?queue_id={}", app.base_url, department.queue_id)), "{twiml}");

    // The agent's leg: one CreateCall to the agent, joining the same conference.
    let legs: Vec<_> = app.twilio.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json")).collect();
    assert_eq!(legs.len(), 1);
    assert_eq!(legs[0].param("To"), Some("+14155550123"));
    assert_eq!(legs[0].param("From"), Some(LINE));
    assert!(legs[0].param("Twiml").unwrap().contains(&conference));
    assert!(legs[0].param("Twiml").unwrap().contains("startConferenceOnEnter=\"true\""));
    let agent_status = legs[0].param("StatusCallback").unwrap().to_owned();
    assert!(agent_status.starts_with(&format!("{}/webhook-twilio/agent-status?", app.base_url)), "{agent_status}");

    // Twilio retries the voice request: the call is not re-created, the agent not re-rung.
    assert_eq!(caller.deliver(&voice).await.unwrap().0, 200);
    assert_eq!(app.twilio.requests().iter().filter(|r| r.path.ends_with("/Calls.json")).count(), 1);

    // The agent answers: the customer's call now carries the agent and its department.
    let subpath = agent_status.trim_start_matches(&format!("{}/webhook-twilio/", app.base_url)).to_owned();
    let answered = Callback {
        subpath,
        params: vec![
            ("AccountSid".into(), account.account_sid.clone()),
            ("CallSid".into(), switchboard_infra::twilio_fake::sid("CA")),
            ("CallStatus".into(), "in-progress".into()),
            ("Direction".into(), "outbound-api".into()),
            ("From".into(), LINE.into()),
            ("To".into(), "+14155550123".into()),
        ],
    };
    assert_eq!(caller.deliver(&answered).await.unwrap().0, 204);
    let reply = app.get("api-calls-details", &[("call_id", &call_id)], Some(&tenant.api_key)).await;
    assert_eq!(reply.body["call"]["agent"]["id"], AGENT);
    assert_eq!(reply.body["call"]["agent"]["full_name"], "Maya Patel");
    assert_eq!(reply.body["call"]["department"], "sales");
    // The agent leg is not a call of its own in the CRM's list.
    let list = app.get("api-calls-list", &[], Some(&tenant.api_key)).await;
    assert_eq!(list.body["count"], 1);
}

#[tokio::test]
async fn after_hours_takes_a_voicemail_and_a_long_wait_moves_the_caller_there() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("after-hours").await;
    let account = app.twilio_account(&tenant.id).await;
    // Open only on the day after tomorrow (UTC), which is not today in Berlin either.
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).format("%A").to_string().to_lowercase();
    department(&app, &tenant, serde_json::json!({ "business_hours": { day: { "start": "00:00", "end": "24:00" } } })).await;
    let caller = app.caller(&account);
    let script = CallScript::random(LINE, &mut rand::rngs::StdRng::seed_from_u64(2)).placed_now();
    let (code, twiml) = caller.deliver(&simulate::callbacks(&account.account_sid, &script).remove(0)).await.unwrap();
    assert_eq!(code, 200);
    assert!(twiml.contains("<Record "), "{twiml}");
    assert!(twiml.contains(&format!("recordingStatusCallback=\"{}/webhook-twilio/recording\"", app.base_url)), "{twiml}");
    assert!(!twiml.contains("<Conference"), "{twiml}");
    assert!(app.twilio.requests().iter().all(|r| !r.path.ends_with("/Calls.json")), "no agent is rung after hours");

    // An open department whose caller has waited past max_wait_time.
    let open = app.tenant("long-wait").await;
    let open_account = app.twilio_account(&open.id).await;
    let department = department(&app, &open, serde_json::json!({})).await;
    let waited = chrono::Utc::now().timestamp() - 61;
    let call_sid = switchboard_infra::twilio_fake::sid("CA");
    let wait = Callback {
        subpath: format!("wait?queue_id={}&since={waited}", department.queue_id),
        params: vec![
            ("AccountSid".into(), open_account.account_sid.clone()),
            ("CallSid".into(), call_sid.clone()),
            ("ConferenceSid".into(), switchboard_infra::twilio_fake::sid("CF")),
        ],
    };
    // The fake knows the caller's call, as Twilio would.
    app.twilio.add_inbound_call(&open_account.account_sid, &call_sid, "+12025550143", LINE);
    let (code, body) = app.caller(&open_account).deliver(&wait).await.unwrap();
    let redirects: Vec<_> =
        app.twilio.requests().into_iter().filter(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json"))).collect();
    assert_eq!((code, redirects.len()), (200, 1), "{body}");
    assert!(redirects[0].param("Twiml").unwrap().contains("<Record "), "moved to the voicemail");

    // Still within max wait: hold music and back to the wait URL.
    let fresh = Callback {
        subpath: format!("wait?queue_id={}&since={}", department.queue_id, chrono::Utc::now().timestamp()),
        params: wait.params.clone(),
    };
    let (code, hold) = app.caller(&open_account).deliver(&fresh).await.unwrap();
    assert_eq!(code, 200);
    assert!(hold.contains("<Redirect"), "{hold}");
}
