//! Realistic demo calls, so a CRM developer has something to query in their first
//! minute: four agents, three departments, both directions, every kind of outcome,
//! spread over the last 30 days, each with a plausible timeline.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, seq::IndexedRandom};
use shared::{
    calls::{AgentRef, Call, CallEvent, CallStatus, Consent, ConsentStatus, Direction},
    phone::E164,
    tenants::TenantId,
};

/// The demo agents' ids are fixed so a developer can copy one into `agent_id=`.
pub const AGENTS: [(&str, &str, &str); 4] = [
    ("3f8a1c52-6d0e-4b7a-9c21-0a1b2c3d4e01", "Maya Patel", "maya.patel@example.com"),
    ("3f8a1c52-6d0e-4b7a-9c21-0a1b2c3d4e02", "Jonas Berg", "jonas.berg@example.com"),
    ("3f8a1c52-6d0e-4b7a-9c21-0a1b2c3d4e03", "Aisha Okafor", "aisha.okafor@example.com"),
    ("3f8a1c52-6d0e-4b7a-9c21-0a1b2c3d4e04", "Lucas Moreau", "lucas.moreau@example.com"),
];
pub const DEPARTMENTS: [&str; 3] = ["sales", "support", "billing"];
const CALLERS: [&str; 8] =
    ["John Doe", "Priya Shah", "Carlos Ruiz", "Emma Wilson", "Wei Chen", "Fatima Noor", "Liam Murphy", "Sofia Rossi"];
const COMPANY_LINES: [&str; 3] = ["+14155550100", "+14155550101", "+14155550102"];

/// Outcomes weighted roughly as a contact centre sees them.
const OUTCOMES: [(CallStatus, u32); 6] = [
    (CallStatus::Completed, 62),
    (CallStatus::NoAnswer, 12),
    (CallStatus::Busy, 8),
    (CallStatus::Failed, 5),
    (CallStatus::Canceled, 3),
    (CallStatus::InProgress, 10),
];

pub fn agent(i: usize) -> AgentRef {
    let (id, name, email) = AGENTS[i % AGENTS.len()];
    AgentRef { id: id.into(), full_name: name.into(), email: Some(email.into()) }
}

fn weighted_status(rng: &mut impl Rng) -> CallStatus {
    let total: u32 = OUTCOMES.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    for (status, weight) in OUTCOMES {
        if pick < weight {
            return status;
        }
        pick -= weight;
    }
    CallStatus::Completed
}

fn customer_number(rng: &mut impl Rng) -> E164 {
    E164::parse(&format!("+1{}{:07}", rng.random_range(201..990), rng.random_range(0..10_000_000))).expect("valid E.164")
}

/// One call as the lifecycle would have left it, with its timeline.
pub fn call(tenant: &TenantId, started_at: DateTime<Utc>, rng: &mut impl Rng) -> (Call, Vec<CallEvent>) {
    let id = uuid::Uuid::now_v7().to_string();
    let mut status = weighted_status(rng);
    if status == CallStatus::InProgress && Utc::now() - started_at > Duration::hours(2) {
        status = CallStatus::Completed; // only recent calls can still be live
    }
    let direction = if rng.random_bool(0.6) { Direction::Inbound } else { Direction::Outbound };
    let department = DEPARTMENTS.choose(rng).copied().expect("non-empty");
    let company = E164::parse(COMPANY_LINES.choose(rng).expect("non-empty")).expect("valid E.164");
    let customer = customer_number(rng);
    let (from_number, to_number) = match direction {
        Direction::Inbound => (customer, company),
        Direction::Outbound => (company, customer),
    };
    let answered = matches!(status, CallStatus::Completed | CallStatus::InProgress);
    let ring = Duration::seconds(rng.random_range(3..25));
    let talk = rng.random_range(20..900);
    let answered_at = answered.then(|| started_at + ring);
    let ended_at = status.is_terminal().then(|| started_at + ring + Duration::seconds(if answered { talk } else { 0 }));
    let agent = (answered || rng.random_bool(0.5)).then(|| agent(rng.random_range(0..AGENTS.len())));

    let mut timeline = vec![(CallStatus::Initiated, started_at), (CallStatus::Ringing, started_at + Duration::seconds(1))];
    if let Some(at) = answered_at {
        timeline.push((CallStatus::InProgress, at));
    }
    if let Some(at) = ended_at {
        timeline.push((status, at));
    }
    let events = timeline
        .into_iter()
        .map(|(s, at)| CallEvent {
            id: uuid::Uuid::now_v7().to_string(),
            call_id: id.clone(),
            kind: "call.status_update".into(),
            status: Some(s),
            occurred_at: at,
            source: "demo".into(),
            detail: Default::default(),
        })
        .collect();

    let mut metadata = serde_json::Map::new();
    metadata.insert("crm_contact_id".into(), format!("CRM-{:05}", rng.random_range(0..100_000)).into());
    let call = Call {
        id: id.clone(),
        tenant_id: tenant.clone(),
        provider: "twilio".into(),
        provider_call_sid: Some(format!("CA{}", uuid::Uuid::new_v4().simple())),
        direction,
        from_number: from_number.into(),
        to_number: to_number.into(),
        caller_name: CALLERS.choose(rng).map(|s| s.to_string()),
        status,
        duration_seconds: ended_at.map(|end| (end - answered_at.unwrap_or(end)).num_seconds() as u32),
        recording: None,
        transcript: None,
        started_at,
        answered_at,
        ended_at,
        agent,
        department: Some(department.into()),
        consent: answered.then(|| Consent {
            status: ConsentStatus::Granted,
            recorded_at: started_at + ring,
            method: "ivr-prompt".into(),
        }),
        metadata,
    };
    (call, events)
}

/// The demo's "sales" department: owns the demo line, always open, its agents rung
/// round-robin.
pub fn department(tenant: &TenantId, now: DateTime<Utc>) -> anyhow::Result<shared::departments::Department> {
    let input: shared::departments::DepartmentInput = serde_json::from_value(serde_json::json!({
        "name": "sales",
        "display_name": "Sales Team",
        "phone_number": COMPANY_LINES[0],
        "routing_strategy": "round-robin",
        "timezone": "America/New_York",
        "max_wait_time": 300,
        "after_hours_action": "voicemail",
    }))?;
    input.validate().and_then(|changes| changes.create(tenant.clone(), now)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The demo's agents, all in `department`: Maya on her softphone (client `maya`) and
/// available, the others on their phones, one available, one away, one offline.
pub fn agents(department: &shared::departments::Department, now: DateTime<Utc>) -> anyhow::Result<Vec<shared::agents::Agent>> {
    let states = ["available", "available", "away", "offline"];
    AGENTS
        .iter()
        .zip(states)
        .enumerate()
        .map(|(i, ((id, name, email), state))| {
            let mut body = serde_json::json!({
                "name": name, "email": email, "phone": format!("+1415555{:04}", 201 + i),
                "departments": [department.queue_id], "state": state,
            });
            if i == 0 {
                body["client_identity"] = "maya".into();
            }
            let input: shared::agents::AgentInput = serde_json::from_value(body)?;
            let mut agent = input
                .validate()
                .and_then(|changes| changes.create(department.tenant_id.clone(), now))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            agent.agent_id = (*id).to_owned();
            Ok(agent)
        })
        .collect()
}

/// `count` calls spread over the last 30 days, newest within the last hour.
pub fn calls(tenant: &TenantId, count: usize, now: DateTime<Utc>) -> Vec<(Call, Vec<CallEvent>)> {
    let mut rng = rand::rng();
    (0..count)
        .map(|_| {
            let ago = Duration::seconds(rng.random_range(60..30 * 24 * 3600));
            // Whole milliseconds: what the store's sort key keeps.
            let started = DateTime::from_timestamp_millis((now - ago).timestamp_millis()).expect("in range");
            call(tenant, started, &mut rng)
        })
        .collect()
}
