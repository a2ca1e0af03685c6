//! Inbound routing against the real stack and the Twilio fake: each strategy's order,
//! atomic reservation under concurrent calls, the queue served oldest first, and agents
//! who do not answer skipped.

use std::collections::HashSet;

use chrono::{Duration, Utc};
use rand::SeedableRng;
use shared::{
    agents::{Agent, AgentState},
    calls::lifecycle::call_id_for,
    departments::{Department, DepartmentInput},
    phone::E164,
};
use switchboard_infra::{
    simulate::{self, CallScript, Callback},
    twilio_fake::RecordedRequest,
};
use switchboard_tests::{TestApp, TestTenant, TwilioAccount};

const LINE: &str = "+14155550100";

struct Desk {
    app: TestApp,
    tenant: TestTenant,
    account: TwilioAccount,
    department: Department,
}

async fn desk(extra: serde_json::Value) -> Desk {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("routing").await;
    let account = app.twilio_account(&tenant.id).await;
    let mut body = serde_json::json!({
        "name": "support",
        "phone_number": LINE,
        "max_wait_time": 600,
        "after_hours_action": "voicemail",
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let input: DepartmentInput = serde_json::from_value(body).unwrap();
    let department = input.validate().unwrap().create(tenant.id.clone(), Utc::now()).unwrap();
    app.ctx.departments.put(&department, None).await.unwrap();
    Desk { app, tenant, account, department }
}

impl Desk {
    /// An available agent of the department, idle since `idle_minutes` ago, rung at
    /// `+1415555<nnnn>`.
    fn agent(&self, n: u16, idle_minutes: i64) -> Agent {
        let now = Utc::now();
        Agent {
            agent_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: self.tenant.id.clone(),
            name: format!("Agent {n}"),
            email: None,
            phone: Some(E164::parse(&format!("+1415555{n:04}")).unwrap()),
            client_identity: None,
            skills: Default::default(),
            departments: vec![self.department.queue_id.clone()],
            state: AgentState::Available,
            state_since: now - Duration::minutes(idle_minutes),
            current_call_id: None,
            idle_since: Some(now - Duration::minutes(idle_minutes)),
            idle_secs_today: 0,
            idle_day: Some(now.date_naive()),
            last_call_at: None,
            created_at: now - Duration::days(1),
            updated_at: now,
            version: 0,
        }
    }

    async fn hire(&self, agents: &[Agent]) {
        for agent in agents {
            self.app.ctx.agents.save(agent, None, "state_change").await.unwrap();
        }
    }

    /// A new inbound call to the department's line; returns its call id.
    async fn call_in(&self, seed: u64) -> String {
        let script = CallScript::random(LINE, &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
        let voice = simulate::callbacks(&self.account.account_sid, &script).remove(0);
        let (code, twiml) = self.app.caller(&self.account).deliver(&voice).await.unwrap();
        assert_eq!(code, 200, "{twiml}");
        assert!(twiml.contains("<Conference"), "{twiml}");
        call_id_for("twilio", &self.account.account_sid, &script.call_sid)
    }

    /// Every agent leg placed so far, in order.
    fn legs(&self) -> Vec<RecordedRequest> {
        self.app
            .twilio
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/Calls.json"))
            .collect()
    }

    /// The leg's `agent-status` callback reporting `status`.
    async fn agent_status(&self, leg: &RecordedRequest, status: &str) {
        let callback = leg.param("StatusCallback").unwrap();
        let subpath = callback.trim_start_matches(&format!("{}/webhook-twilio/", self.app.base_url)).to_owned();
        let call_id = query_value(callback, "call_id");
        let leg_sid = self.app.ctx.queue.route(&self.tenant.id, &call_id).await.unwrap().and_then(|r| r.leg_sid);
        let callback = Callback {
            subpath,
            params: vec![
                ("AccountSid".into(), self.account.account_sid.clone()),
                ("CallSid".into(), leg_sid.unwrap_or_else(|| switchboard_infra::twilio_fake::sid("CA"))),
                ("CallStatus".into(), status.into()),
                ("Direction".into(), "outbound-api".into()),
                ("From".into(), LINE.into()),
                ("To".into(), leg.param("To").unwrap().into()),
            ],
        };
        let (code, body) = self.app.caller(&self.account).deliver(&callback).await.unwrap();
        assert_eq!(code, 204, "{body}");
    }

    async fn agent_state(&self, agent: &Agent) -> Agent {
        self.app.ctx.agents.get(&self.tenant.id, &agent.agent_id).await.unwrap().unwrap()
    }
}

fn query_value(url: &str, name: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned()
}

/// Calls one at a time; each rings the best agent still free, so the order of the legs'
/// `To` is the strategy's order.
async fn rung_in_order(desk: &Desk, calls: u64) -> Vec<String> {
    for seed in 0..calls {
        desk.call_in(seed).await;
    }
    desk.legs().iter().map(|leg| leg.param("To").unwrap().to_owned()).collect()
}

fn phones(numbers: &[u16]) -> Vec<String> {
    numbers.iter().map(|n| format!("+1415555{n:04}")).collect()
}

#[tokio::test]
async fn longest_idle_rings_whoever_has_waited_longest() {
    let desk = desk(serde_json::json!({ "routing_strategy": "longest-idle" })).await;
    desk.hire(&[desk.agent(1, 5), desk.agent(2, 50), desk.agent(3, 20)]).await;
    assert_eq!(rung_in_order(&desk, 3).await, phones(&[2, 3, 1]));
}

#[tokio::test]
async fn most_idle_rings_the_most_idle_time_today() {
    let desk = desk(serde_json::json!({ "routing_strategy": "most-idle" })).await;
    // 1: idle 5 min now + 2 h earlier today; 2: idle 60 min; 3: idle 30 min + 40 min earlier.
    let mut one = desk.agent(1, 5);
    one.idle_secs_today = 7200;
    let two = desk.agent(2, 60);
    let mut three = desk.agent(3, 30);
    three.idle_secs_today = 2400;
    desk.hire(&[one, two, three]).await;
    assert_eq!(rung_in_order(&desk, 3).await, phones(&[1, 3, 2]));
}

#[tokio::test]
async fn round_robin_rings_whoever_had_a_call_least_recently() {
    let desk = desk(serde_json::json!({ "routing_strategy": "round-robin" })).await;
    let mut one = desk.agent(1, 1);
    one.last_call_at = Some(Utc::now() - Duration::minutes(2));
    let mut two = desk.agent(2, 1);
    two.last_call_at = Some(Utc::now() - Duration::minutes(30));
    let three = desk.agent(3, 1);
    desk.hire(&[one, two, three]).await;
    assert_eq!(rung_in_order(&desk, 3).await, phones(&[3, 2, 1]));
}

#[tokio::test]
async fn skill_based_rings_the_best_level_and_falls_back_to_the_rest() {
    let desk =
        desk(serde_json::json!({ "routing_strategy": "skill-based", "required_skills": ["spanish", "billing"] })).await;
    let skilled = |n: u16, idle: i64, skills: &[(&str, u8)]| Agent {
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        ..desk.agent(n, idle)
    };
    desk.hire(&[
        skilled(1, 90, &[("spanish", 3), ("billing", 3)]),
        skilled(2, 1, &[("spanish", 9), ("billing", 9)]),
        skilled(3, 10, &[("spanish", 10), ("billing", 8)]),
        skilled(4, 120, &[("spanish", 10)]),
        skilled(5, 200, &[]),
    ])
    .await;
    // 2 and 3 tie on 18: 3 has been idle longer. Then 1 (6). Then the fallback: 4 has one
    // of the two skills, 5 none.
    assert_eq!(rung_in_order(&desk, 5).await, phones(&[3, 2, 1, 4, 5]));
}

#[tokio::test]
async fn fifty_concurrent_callers_never_double_book_and_the_queue_is_served_oldest_first() {
    let desk = desk(serde_json::json!({ "routing_strategy": "longest-idle" })).await;
    let agents: Vec<Agent> = (1..=10).map(|n| desk.agent(n, 60 - i64::from(n))).collect();
    desk.hire(&agents).await;

    let calls = futures::future::join_all((0..50).map(|seed| desk.call_in(1000 + seed))).await;
    assert_eq!(calls.iter().collect::<HashSet<_>>().len(), 50);

    // Ten legs, to ten different agents, for ten different calls.
    let legs = desk.legs();
    assert_eq!(legs.len(), 10, "one leg per free agent");
    let rung: HashSet<_> = legs.iter().map(|l| l.param("To").unwrap().to_owned()).collect();
    let served: HashSet<_> = legs.iter().map(|l| query_value(l.param("StatusCallback").unwrap(), "call_id")).collect();
    assert_eq!((rung.len(), served.len()), (10, 10), "no agent twice, no call twice");
    // Each agent holds exactly the call its leg rings for.
    for agent in &agents {
        let now = desk.agent_state(agent).await;
        assert_eq!(now.state, AgentState::Busy);
        let leg = legs.iter().find(|l| l.param("To") == Some(agent.phone.as_ref().unwrap().as_str())).unwrap();
        assert_eq!(
            now.current_call_id.as_deref(),
            Some(query_value(leg.param("StatusCallback").unwrap(), "call_id").as_str())
        );
    }
    let waiting = desk.app.ctx.queue.waiting(&desk.tenant.id, &desk.department.queue_id, 100).await.unwrap();
    assert_eq!(waiting.len(), 40, "everyone else waits");
    assert!(waiting.iter().all(|e| !served.contains(&e.call_id)));

    // Agents answer and hang up one after another; each freed agent takes the oldest caller.
    let queue_order: Vec<String> = waiting.iter().map(|e| e.call_id.clone()).collect();
    let mut next = 0;
    while next < desk.legs().len() {
        let leg = desk.legs()[next].clone();
        desk.agent_status(&leg, "in-progress").await;
        desk.agent_status(&leg, "completed").await;
        next += 1;
    }
    let later: Vec<String> =
        desk.legs()[10..].iter().map(|l| query_value(l.param("StatusCallback").unwrap(), "call_id")).collect();
    assert_eq!(later, queue_order, "queued callers are served oldest first");
    assert!(desk.app.ctx.queue.waiting(&desk.tenant.id, &desk.department.queue_id, 1).await.unwrap().is_empty());
    for agent in &agents {
        assert_eq!(desk.agent_state(agent).await.state, AgentState::Available, "every agent free at the end");
    }
}

#[tokio::test]
async fn an_agent_who_does_not_answer_is_skipped_and_the_next_one_rung() {
    let desk = desk(serde_json::json!({ "routing_strategy": "longest-idle" })).await;
    let (first, second) = (desk.agent(1, 30), desk.agent(2, 10));
    desk.hire(&[first.clone(), second.clone()]).await;
    let call = desk.call_in(7).await;
    assert_eq!(desk.legs().len(), 1);
    assert_eq!(desk.legs()[0].param("To"), Some("+14155550001"));

    desk.agent_status(&desk.legs()[0], "no-answer").await;
    // The second agent is rung for the same call; the first is free but not rung again.
    let legs = desk.legs();
    assert_eq!(legs.len(), 2);
    assert_eq!(legs[1].param("To"), Some("+14155550002"));
    assert_eq!(query_value(legs[1].param("StatusCallback").unwrap(), "call_id"), call);
    assert_eq!(desk.agent_state(&first).await.state, AgentState::Available);
    let activity = desk.app.ctx.agents.activity(&desk.tenant.id, &first.agent_id, 10).await.unwrap();
    assert_eq!(activity[0].activity_type, "call_missed");

    // The caller hangs up while the second agent's phone rings: that leg is dropped.
    let leg_sid = desk.app.ctx.queue.route(&desk.tenant.id, &call).await.unwrap().unwrap().leg_sid.unwrap();
    let hangup = Callback {
        subpath: "status".into(),
        params: vec![
            ("AccountSid".into(), desk.account.account_sid.clone()),
            (
                "CallSid".into(),
                desk.app.ctx.calls.get(&desk.tenant.id, &call).await.unwrap().unwrap().provider_call_sid.unwrap(),
            ),
            ("CallStatus".into(), "completed".into()),
            ("Direction".into(), "inbound".into()),
            ("From".into(), "+12025550143".into()),
            ("To".into(), LINE.into()),
        ],
    };
    assert_eq!(desk.app.caller(&desk.account).deliver(&hangup).await.unwrap().0, 204);
    let dropped: Vec<_> = desk
        .app
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/Calls/{leg_sid}.json")))
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].param("Status"), Some("completed"));
    // Twilio then reports the dropped leg: the agent is free, nobody is queued or rung.
    desk.agent_status(&legs[1], "canceled").await;
    assert_eq!(desk.agent_state(&second).await.state, AgentState::Available);
    assert_eq!(desk.legs().len(), 2);
    assert!(desk.app.ctx.queue.route(&desk.tenant.id, &call).await.unwrap().is_none());
}

#[tokio::test]
async fn an_agent_becoming_available_takes_the_waiting_caller() {
    let desk = desk(serde_json::json!({})).await;
    let mut away = desk.agent(1, 0);
    away.transition(AgentState::Away, None, Utc::now());
    desk.hire(&[away.clone()]).await;
    let call = desk.call_in(3).await;
    assert!(desk.legs().is_empty(), "nobody is available");

    let reply = desk
        .app
        .request(
            desk.app
                .http
                .put(format!("{}/api-agents-manage", desk.app.base_url))
                .header("x-api-key", &desk.tenant.api_key)
                .json(&serde_json::json!({ "agent_id": away.agent_id, "state": "available" })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["agent"]["state"], "busy", "rung at once: {}", reply.body);
    assert_eq!(reply.body["agent"]["current_call_id"], call.as_str());
    assert_eq!(desk.legs().len(), 1);
    // Answered: the CRM sees who took the call.
    desk.agent_status(&desk.legs()[0], "in-progress").await;
    let details = desk.app.get("api-calls-details", &[("call_id", &call)], Some(&desk.tenant.api_key)).await;
    assert_eq!(details.body["call"]["agent"]["id"], away.agent_id.as_str());
    assert_eq!(details.body["call"]["department"], "support");
}

#[tokio::test]
async fn a_caller_past_the_max_wait_leaves_the_queue_for_the_after_hours_action() {
    let desk = desk(serde_json::json!({ "max_wait_time": 10 })).await;
    let call = desk.call_in(11).await;
    let waiting = desk.app.ctx.queue.waiting(&desk.tenant.id, &desk.department.queue_id, 10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    let call_sid = desk.app.ctx.calls.get(&desk.tenant.id, &call).await.unwrap().unwrap().provider_call_sid.unwrap();
    desk.app.twilio.add_inbound_call(&desk.account.account_sid, &call_sid, "+12025550143", LINE);
    let wait = |since: i64| Callback {
        subpath: format!("wait?queue_id={}&since={since}", desk.department.queue_id),
        params: vec![
            ("AccountSid".into(), desk.account.account_sid.clone()),
            ("CallSid".into(), call_sid.clone()),
            ("ConferenceSid".into(), switchboard_infra::twilio_fake::sid("CF")),
        ],
    };
    // Within the wait: held, still queued.
    let (code, hold) = desk.app.caller(&desk.account).deliver(&wait(Utc::now().timestamp())).await.unwrap();
    assert_eq!(code, 200);
    assert!(hold.contains("<Redirect"), "{hold}");
    assert_eq!(desk.app.ctx.queue.waiting(&desk.tenant.id, &desk.department.queue_id, 10).await.unwrap().len(), 1);
    // Past it: out of the queue and on to the voicemail.
    let (code, _) = desk.app.caller(&desk.account).deliver(&wait(Utc::now().timestamp() - 11)).await.unwrap();
    assert_eq!(code, 200);
    let moved: Vec<_> = desk
        .app
        .twilio
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/Calls/{call_sid}.json")))
        .collect();
    assert_eq!(moved.len(), 1);
    assert!(moved[0].param("Twiml").unwrap().contains("<Record "));
    assert!(desk.app.ctx.queue.waiting(&desk.tenant.id, &desk.department.queue_id, 10).await.unwrap().is_empty());
    assert!(desk.app.ctx.queue.route(&desk.tenant.id, &call).await.unwrap().is_none());
}
