//! `api-calls-admin-action`: supervisors act on a live call through Twilio's Participants
//! API. A live call is played in as Twilio would report it (voice and status callbacks,
//! then the conference's status callbacks), and each action is checked against exactly
//! what reached the Twilio fake, the audit log and the call's timeline.

use rand::SeedableRng;
use serde_json::{Value, json};
use shared::{
    calls::{CallStatus, lifecycle::call_id_for},
    tenants::Scope,
};
use switchboard_infra::{
    simulate::{self, CallScript, Callback, Caller},
    twilio_fake::{RecordedRequest, sid},
};
use switchboard_tests::{Reply, TestApp, TestTenant, TwilioAccount};

const LINE: &str = "+14155550100";
const SUPERVISOR: &str = "+14155550177";
const EVENT: &str = "call.supervisor_action";

/// A call Twilio reported as answered, sitting in its conference with the agent.
struct LiveCall {
    caller: Caller,
    account_sid: String,
    /// The caller's leg, also the customer participant.
    call_sid: String,
    call_id: String,
    conference_sid: String,
    agent_sid: String,
    script: CallScript,
    /// The next conference callback's SequenceNumber.
    sequence: u32,
}

impl LiveCall {
    /// The next conference callback Twilio would send.
    fn conference_callback(&mut self, event: &str, participant: Option<(&str, &str)>) -> Callback {
        self.sequence += 1;
        self.callback_at(self.sequence - 1, event, participant)
    }

    /// A conference callback with the given SequenceNumber (a late or repeated one).
    fn callback_at(&self, sequence: u32, event: &str, participant: Option<(&str, &str)>) -> Callback {
        let mut params = vec![
            ("AccountSid".to_owned(), self.account_sid.clone()),
            ("ConferenceSid".to_owned(), self.conference_sid.clone()),
            ("FriendlyName".to_owned(), format!("sales-{}", self.call_id)),
            ("StatusCallbackEvent".to_owned(), event.to_owned()),
            ("SequenceNumber".to_owned(), sequence.to_string()),
            ("Timestamp".to_owned(), chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string()),
        ];
        if let Some((label, call_sid)) = participant {
            params.extend([
                ("CallSid".to_owned(), call_sid.to_owned()),
                ("ParticipantLabel".to_owned(), label.to_owned()),
                ("Muted".to_owned(), "false".to_owned()),
                ("Hold".to_owned(), "false".to_owned()),
                ("Coaching".to_owned(), "false".to_owned()),
                ("EndConferenceOnExit".to_owned(), "true".to_owned()),
                ("StartConferenceOnEnter".to_owned(), (label == "agent").to_string()),
            ]);
        }
        Callback { subpath: "conference".into(), params }
    }

    /// Delivers a conference callback; Twilio is answered 204 whatever it reports.
    async fn conference(&mut self, event: &str, participant: Option<(&str, &str)>) {
        let callback = self.conference_callback(event, participant);
        assert_eq!(deliver(&self.caller, &callback).await, 204, "{event}");
    }

    async fn status(&self, status: CallStatus) {
        let callback = simulate::callbacks(&self.account_sid, &self.script)
            .into_iter()
            .find(|c| c.subpath == "status" && c.params.iter().any(|(k, v)| k == "CallStatus" && v == status.as_str()))
            .expect("the script has this status");
        assert_eq!(deliver(&self.caller, &callback).await, 204);
    }
}

async fn deliver(caller: &Caller, callback: &Callback) -> u16 {
    let (code, body) = caller.deliver(callback).await.expect("deliver callback");
    assert!((200..300).contains(&code), "{} answered {code}: {body}", callback.subpath);
    code
}

/// An answered inbound call; `in_conference` adds the customer and the agent to its
/// conference (as Twilio reports them, and as the fake knows them).
async fn live_call(app: &TestApp, account: &TwilioAccount, seed: u64, in_conference: bool) -> LiveCall {
    let mut script = CallScript::random(LINE, &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
    script.outcome = CallStatus::Completed;
    script.talk_seconds = 30;
    script.recording_sid = None;
    let mut call = LiveCall {
        caller: app.caller(account),
        account_sid: account.account_sid.clone(),
        call_sid: script.call_sid.clone(),
        call_id: call_id_for("twilio", &account.account_sid, &script.call_sid),
        conference_sid: sid("CF"),
        agent_sid: sid("CA"),
        script,
        sequence: 1,
    };
    let callbacks = simulate::callbacks(&account.account_sid, &call.script);
    assert_eq!(deliver(&call.caller, &callbacks[0]).await, 200, "voice");
    call.status(CallStatus::Ringing).await;
    call.status(CallStatus::InProgress).await;
    if in_conference {
        let (customer, agent) = (call.call_sid.clone(), call.agent_sid.clone());
        app.twilio.add_participant(&account.account_sid, &call.conference_sid, &customer, Some("customer"));
        app.twilio.add_participant(&account.account_sid, &call.conference_sid, &agent, Some("agent"));
        call.conference("participant-join", Some(("customer", &customer))).await;
        call.conference("participant-join", Some(("agent", &agent))).await;
        call.conference("conference-start", None).await;
    }
    call
}

async fn act(app: &TestApp, key: &str, body: Value) -> Reply {
    let request =
        app.http.post(format!("{}/api-calls-admin-action", app.base_url)).header("x-api-key", key).json(&body);
    app.request(request).await
}

fn body(call: &str, action: &str, supervisor: &str) -> Value {
    json!({ "call_sid": call, "action": action, "supervisor_id": supervisor })
}

fn participant_requests(app: &TestApp) -> Vec<RecordedRequest> {
    app.twilio.requests().into_iter().filter(|r| r.path.contains("/Participants")).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn supervisor_events(app: &TestApp, tenant: &TestTenant, call_id: &str) -> Vec<Value> {
    let reply = app.get("api-calls-details", &[("call_id", call_id)], Some(&tenant.api_key)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["events"].as_array().unwrap().iter().filter(|e| e["type"] == EVENT).cloned().collect()
}

fn key_id(api_key: &str) -> &str {
    api_key.split('_').nth(1).expect("sbk_<key id>_<secret>")
}

#[tokio::test]
async fn monitor_barge_and_whisper_dial_the_supervisor_into_the_calls_conference() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("supervision").await;
    let account = app.twilio_account(&tenant.id).await;
    let call = live_call(&app, &account, 1, true).await;
    let participants =
        format!("/2010-04-01/Accounts/{}/Conferences/{}/Participants.json", account.account_sid, call.conference_sid);
    let common = [("From", LINE), ("Label", "supervisor")];

    let cases = [
        // The call named by its CallSid, or by its Switchboard id.
        ("monitor", call.call_sid.as_str(), SUPERVISOR, vec![("To", SUPERVISOR), ("Muted", "true")]),
        ("barge", call.call_id.as_str(), SUPERVISOR, vec![("To", SUPERVISOR), ("Muted", "false")]),
        (
            "whisper",
            call.call_sid.as_str(),
            "client:sup_7",
            vec![
                ("To", "client:sup_7"),
                ("Muted", "false"),
                ("Coaching", "true"),
                ("CallSidToCoach", call.agent_sid.as_str()),
            ],
        ),
    ];
    for (action, call_ref, supervisor, specific) in cases {
        let before = participant_requests(&app).len();
        let reply = act(&app, &tenant.api_key, body(call_ref, action, supervisor)).await;
        assert_eq!(reply.status, 200, "{action}: {}", reply.body);
        assert_eq!(reply.body["success"], true);
        assert_eq!(reply.body["action"], action);
        assert_eq!(reply.body["call_id"], call.call_id);
        assert_eq!(reply.body["call_sid"], call.call_sid);
        let participant = reply.body["participant_call_sid"].as_str().unwrap();
        assert!(participant.starts_with("CA") && participant.len() == 34, "{participant}");

        let sent = participant_requests(&app);
        assert_eq!(sent.len(), before + 1, "exactly one Participants request per action");
        let request = sent.last().unwrap();
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", participants.as_str()), "{action}");
        assert_eq!(request.auth_user.as_deref(), Some(account.account_sid.as_str()));
        let mut expected = vec![common[0], specific[0], common[1], specific[1]];
        expected.extend(&specific[2..]);
        expected.extend([("Beep", "false"), ("StartConferenceOnEnter", "false")]);
        assert_eq!(request.params, pairs(&expected), "{action}");
    }

    // Audited: who (the key and the supervisor), what, when, which call.
    let audit = app.ctx.audit.recent(&tenant.id, Some(&call.call_id), 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.detail["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["whisper", "barge", "monitor"], "newest first");
    for entry in &audit {
        assert_eq!(entry.action, EVENT);
        assert_eq!(entry.actor, key_id(&tenant.api_key));
        assert_eq!(entry.call_id.as_deref(), Some(call.call_id.as_str()));
        assert_eq!(entry.detail["conference_sid"], call.conference_sid.as_str());
        assert!((chrono::Utc::now() - entry.at).num_seconds() < 60);
    }
    assert_eq!(audit[0].detail["supervisor_id"], "client:sup_7");
    assert_eq!(audit[2].detail["supervisor_id"], SUPERVISOR);

    // On the call's timeline, the supervisor's number masked.
    let events = supervisor_events(&app, &tenant, &call.call_id).await;
    let shown: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["detail"]["action"].as_str().unwrap(), e["detail"]["supervisor"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, [("monitor", "+1********77"), ("barge", "+1********77"), ("whisper", "client:sup_7")]);
    assert!(events.iter().all(|e| e["source"] == "api" && e["call_id"] == call.call_id.as_str()));
}

#[tokio::test]
async fn disconnect_removes_the_caller_which_ends_the_conference() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("disconnect").await;
    let account = app.twilio_account(&tenant.id).await;
    let mut call = live_call(&app, &account, 2, true).await;

    let reply = act(&app, &tenant.api_key, body(&call.call_sid, "disconnect", SUPERVISOR)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["action"], "disconnect");
    assert!(reply.body.get("participant_call_sid").is_none(), "{}", reply.body);
    let [request] = participant_requests(&app).try_into().unwrap();
    let path = format!(
        "/2010-04-01/Accounts/{}/Conferences/{}/Participants/{}.json",
        account.account_sid, call.conference_sid, call.call_sid
    );
    assert_eq!((request.method.as_str(), request.path.as_str(), request.params.len()), ("DELETE", path.as_str(), 0));
    assert_eq!(supervisor_events(&app, &tenant, &call.call_id).await[0]["detail"]["action"], "disconnect");
    assert_eq!(app.ctx.audit.recent(&tenant.id, Some(&call.call_id), 10).await.unwrap().len(), 1);

    // Twilio reports the caller gone and the conference over: nothing more can be done.
    let customer = call.call_sid.clone();
    call.conference("participant-leave", Some(("customer", &customer))).await;
    call.conference("conference-end", None).await;
    let reply = act(&app, &tenant.api_key, body(&call.call_sid, "monitor", SUPERVISOR)).await;
    assert_eq!((reply.status, reply.body["error"]["message"].as_str()), (409, Some("the call is not in a conference")));
}

#[tokio::test]
async fn supervisor_actions_need_an_admin_key() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("scopes").await;
    let account = app.twilio_account(&tenant.id).await;
    let call = live_call(&app, &account, 3, true).await;
    let without_admin: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != Scope::Admin).collect();
    let key = app.key(&tenant.id, &without_admin, 100).await;

    let reply = act(&app, &key, body(&call.call_sid, "monitor", SUPERVISOR)).await;
    assert_eq!((reply.status, reply.body["error"]["code"].as_str()), (403, Some("forbidden")));
    let anonymous = app
        .request(app.http.post(format!("{}/api-calls-admin-action", app.base_url)).json(&body(
            &call.call_sid,
            "monitor",
            SUPERVISOR,
        )))
        .await;
    assert_eq!(anonymous.status, 401);
    assert!(participant_requests(&app).is_empty());
    assert!(app.ctx.audit.recent(&tenant.id, None, 10).await.unwrap().is_empty());
    let admin_only = app.key(&tenant.id, &[Scope::Admin], 100).await;
    assert_eq!(act(&app, &admin_only, body(&call.call_sid, "monitor", SUPERVISOR)).await.status, 200);
}

#[tokio::test]
async fn bad_requests_are_400s_naming_the_field() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("bad-input").await;
    let good_sid = sid("CA");
    for (bad, field) in [
        (json!({ "action": "monitor", "supervisor_id": SUPERVISOR }), "call_sid"),
        (body("CA123", "monitor", SUPERVISOR), "call_sid"),
        (body("not-a-call", "monitor", SUPERVISOR), "call_sid"),
        (json!({ "call_sid": good_sid, "action": 1, "supervisor_id": SUPERVISOR }), "action"),
        (body(&good_sid, "listen", SUPERVISOR), "action"),
        (json!({ "call_sid": good_sid, "action": "barge" }), "supervisor_id"),
        (body(&good_sid, "barge", "4155550177"), "supervisor_id"),
        (body(&good_sid, "barge", "client:"), "supervisor_id"),
        (json!({ "call_sid": good_sid, "action": "barge", "supervisor_id": SUPERVISOR, "mode": "x" }), "mode"),
    ] {
        let reply = act(&app, &tenant.api_key, bad.clone()).await;
        assert_eq!((reply.status, reply.error_field()), (400, Some(field)), "{bad}: {}", reply.body);
        assert_eq!(reply.body["success"], false);
    }
    let not_json = app
        .request(
            app.http
                .post(format!("{}/api-calls-admin-action", app.base_url))
                .header("x-api-key", &tenant.api_key)
                .body("call_sid=CA1"),
        )
        .await;
    assert_eq!((not_json.status, not_json.body["error"]["code"].as_str()), (400, Some("bad_request")));
    let get = app.get("api-calls-admin-action", &[], Some(&tenant.api_key)).await;
    assert_eq!(get.status, 405);
    assert!(participant_requests(&app).is_empty());
}

#[tokio::test]
async fn another_tenants_call_is_not_found() {
    let app = TestApp::spawn().await;
    let owner = app.tenant("owner").await;
    let owner_account = app.twilio_account(&owner.id).await;
    let call = live_call(&app, &owner_account, 4, true).await;
    let other = app.tenant("other").await;
    app.twilio_account(&other.id).await;

    for call_ref in [&call.call_sid, &call.call_id] {
        let reply = act(&app, &other.api_key, body(call_ref, "disconnect", SUPERVISOR)).await;
        assert_eq!((reply.status, reply.body["error"]["code"].as_str()), (404, Some("not_found")), "{}", reply.body);
    }
    let unknown = act(&app, &owner.api_key, body(&sid("CA"), "monitor", SUPERVISOR)).await;
    assert_eq!(unknown.status, 404);
    let no_account = app.tenant("no-twilio").await;
    assert_eq!(act(&app, &no_account.api_key, body(&call.call_sid, "monitor", SUPERVISOR)).await.status, 404);
    assert!(participant_requests(&app).is_empty());
    assert!(app.ctx.audit.recent(&other.id, None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn only_a_live_call_in_a_conference_can_be_supervised() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("not-live").await;
    let account = app.twilio_account(&tenant.id).await;
    let conflict = |reply: Reply| {
        assert_eq!((reply.status, reply.body["error"]["code"].as_str()), (409, Some("conflict")), "{}", reply.body);
        reply.body["error"]["message"].as_str().unwrap().to_owned()
    };

    // Answered, but never put in a conference.
    let outside = live_call(&app, &account, 5, false).await;
    let message = conflict(act(&app, &tenant.api_key, body(&outside.call_sid, "monitor", SUPERVISOR)).await);
    assert_eq!(message, "the call is not in a conference");

    // The agent left: nobody to whisper to.
    let mut call = live_call(&app, &account, 6, true).await;
    let agent = call.agent_sid.clone();
    call.conference("participant-leave", Some(("agent", &agent))).await;
    let message = conflict(act(&app, &tenant.api_key, body(&call.call_sid, "whisper", SUPERVISOR)).await);
    assert!(message.contains("no agent"), "{message}");

    // Completed: final, whatever the conference said.
    call.status(CallStatus::Completed).await;
    for action in ["monitor", "barge", "whisper", "disconnect"] {
        let message = conflict(act(&app, &tenant.api_key, body(&call.call_sid, action, SUPERVISOR)).await);
        assert_eq!(message, "the call has already ended (completed)", "{action}");
    }
    assert!(participant_requests(&app).is_empty());
    assert!(supervisor_events(&app, &tenant, &call.call_id).await.is_empty());
}

#[tokio::test]
async fn conference_callbacks_in_any_order_and_duplicated_leave_the_true_state() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("conference-order").await;
    let account = app.twilio_account(&tenant.id).await;
    let mut call = live_call(&app, &account, 7, true).await;
    let conference = |app: &TestApp, call_id: String| {
        let tenant = tenant.id.clone();
        let calls = app.ctx.calls.clone();
        async move { calls.get_with_conference(&tenant, &call_id).await.unwrap().expect("call").1 }
    };
    let state = conference(&app, call.call_id.clone()).await;
    assert_eq!(state.conference_sid.as_deref(), Some(call.conference_sid.as_str()));
    assert_eq!(state.conference_name, Some(format!("sales-{}", call.call_id)));
    assert_eq!(state.customer_call_sid.as_deref(), Some(call.call_sid.as_str()));
    assert_eq!(state.agent_call_sid.as_deref(), Some(call.agent_sid.as_str()));

    // The first agent leaves, a second joins; Twilio's callbacks arrive reversed and
    // repeated, the first agent's join (sequence 2, see `live_call`) among them.
    let (first, second) = (call.agent_sid.clone(), sid("CA"));
    let join_first = call.callback_at(2, "participant-join", Some(("agent", &first)));
    let leave_first = call.conference_callback("participant-leave", Some(("agent", &first)));
    let join_second = call.conference_callback("participant-join", Some(("agent", &second)));
    for callback in [&join_second, &leave_first, &join_first, &leave_first, &join_second, &join_first] {
        assert_eq!(deliver(&call.caller, callback).await, 204);
    }
    assert_eq!(conference(&app, call.call_id.clone()).await.agent_call_sid.as_deref(), Some(second.as_str()));

    // What Switchboard does not track is acknowledged and changes nothing.
    call.conference("participant-mute", Some(("agent", &second))).await;
    call.conference("participant-join", Some(("supervisor", &sid("CA")))).await;
    let mut foreign = call.conference_callback("conference-end", None);
    foreign.params.iter_mut().find(|(k, _)| k == "FriendlyName").unwrap().1 = "someone-elses-room".into();
    assert_eq!(deliver(&call.caller, &foreign).await, 204);
    let state = conference(&app, call.call_id.clone()).await;
    assert!(state.live_sid().is_some());
    assert_eq!(state.agent_call_sid.as_deref(), Some(second.as_str()));

    // The end is final, even when a join arrives after it.
    let late_join = call.conference_callback("participant-join", Some(("agent", &sid("CA"))));
    call.conference("conference-end", None).await;
    assert_eq!(deliver(&call.caller, &late_join).await, 204);
    assert!(conference(&app, call.call_id.clone()).await.live_sid().is_none());
}

#[tokio::test]
async fn twilio_refusals_are_409_when_the_conference_is_gone_and_502_otherwise() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("refusals").await;
    let account = app.twilio_account(&tenant.id).await;
    let call = live_call(&app, &account, 8, true).await;

    app.twilio.fail_next("/Participants.json", 1, hyper::StatusCode::BAD_REQUEST, None);
    let reply = act(&app, &tenant.api_key, body(&call.call_sid, "monitor", SUPERVISOR)).await;
    assert_eq!((reply.status, reply.body["error"]["code"].as_str()), (502, Some("provider_error")), "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("code 20400") && message.contains("Bad Request"), "{message}");
    assert!(!message.contains(&account.auth_token));

    // The conference is gone at Twilio before its end callback arrived here.
    app.twilio.fail_next(&format!("/Participants/{}.json", call.call_sid), 1, hyper::StatusCode::NOT_FOUND, None);
    let reply = act(&app, &tenant.api_key, body(&call.call_sid, "disconnect", SUPERVISOR)).await;
    assert_eq!(
        (reply.status, reply.body["error"]["message"].as_str()),
        (409, Some("the call is no longer in a conference"))
    );

    // Both attempts are audited; neither happened, so the timeline has neither.
    assert_eq!(app.ctx.audit.recent(&tenant.id, Some(&call.call_id), 10).await.unwrap().len(), 2);
    assert!(supervisor_events(&app, &tenant, &call.call_id).await.is_empty());
}
