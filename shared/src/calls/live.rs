//! What is happening now (seed 004 "Monitor Active Calls"): the tenant's calls still in
//! progress, where each agent stands, and who waits in which department's queue.
//!
//! Every fact is read from where it is kept, and independent reads run concurrently:
//! calls from the calls table's `by-status` index (one bounded Query per live status),
//! agents, departments and queue entries from the tenants table with strongly consistent
//! Queries. A GSI can only be read eventually consistently, so a call that changed status
//! a moment ago may still show under its previous one (or, for that moment, not yet show).
//! No Scan; every read is bounded, see [`MAX_CALLS_PER_STATUS`], [`MAX_WAITING_PER_QUEUE`]
//! and [`crate::agents::MAX_AGENTS`].

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use super::{
    list::ListQuery,
    model::{AgentRef, Call, CallStatus, CallView, ts},
    store::CallStore,
};
use crate::{
    AppContext,
    agents::{Agent, AgentState, QueueEntry},
    departments::Department,
    tenants::TenantId,
};

/// The statuses of a call that has not ended.
pub const LIVE_STATUSES: [CallStatus; 4] =
    [CallStatus::Queued, CallStatus::Initiated, CallStatus::Ringing, CallStatus::InProgress];

/// Calls read per live status, newest first. A tenant with more live calls than this in
/// one status sees the newest ones (and the count over them); a warning is logged.
pub const MAX_CALLS_PER_STATUS: usize = 500;

/// Waiting callers read per department, oldest first; `waiting` counts at most this many.
pub const MAX_WAITING_PER_QUEUE: i32 = 500;

impl CallStore {
    /// The tenant's calls in a live status, newest first, at most `per_status` of each:
    /// `list`'s single-filter Query on `by-status` for each status (one request unless
    /// 1 MB pages cut it; eventually consistent, like every GSI read), all four at once.
    /// The flag says whether any status had more than `per_status`.
    pub async fn live(&self, tenant: &TenantId, per_status: usize) -> anyhow::Result<(Vec<Call>, bool)> {
        let pages = futures::future::try_join_all(LIVE_STATUSES.map(|status| {
            let query = ListQuery {
                status: Some(status),
                agent_id: None,
                direction: None,
                department: None,
                start: None,
                end: None,
                limit: per_status,
                cursor: None,
            };
            async move { self.list(tenant, &query, None).await }
        }))
        .await?;
        let truncated = pages.iter().any(|p| p.next.is_some());
        // While the index moves a call between statuses it may show under both: keep the
        // later status.
        let mut by_id: HashMap<String, Call> = HashMap::new();
        for call in pages.into_iter().flat_map(|p| p.calls) {
            match by_id.get(&call.id) {
                Some(seen) if seen.status.rank() >= call.status.rank() => {}
                _ => {
                    by_id.insert(call.id.clone(), call);
                }
            }
        }
        let mut calls: Vec<Call> = by_id.into_values().collect();
        calls.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Ok((calls, truncated))
    }
}

/// The whole dashboard, as `api-calls-monitor` returns it.
#[derive(Debug, Serialize)]
pub struct Dashboard {
    pub metrics: Metrics,
    pub active_calls: Vec<LiveCall>,
    pub agents: Vec<AgentStatus>,
    pub queues: Vec<QueueStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub active_calls: usize,
    pub available_agents: usize,
    pub busy_agents: usize,
    pub total_agents: usize,
    /// Callers waiting in any department's queue.
    pub queued_calls: usize,
}

/// A live call: the CRM's view of it, with its place in a queue while it waits there.
/// `agent` is the agent on the call or, until one answers, the agent being rung for it.
#[derive(Debug)]
pub struct LiveCall {
    pub call: Call,
    pub queue_id: Option<String>,
    pub waiting_seconds: Option<u64>,
}

impl Serialize for LiveCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shape<'a> {
            #[serde(flatten)]
            call: CallView<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            queue_id: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            waiting_seconds: Option<u64>,
        }
        Shape { call: self.call.view(), queue_id: self.queue_id.as_deref(), waiting_seconds: self.waiting_seconds }
            .serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    pub agent_id: String,
    pub name: String,
    pub state: AgentState,
    #[serde(with = "ts")]
    pub state_since: DateTime<Utc>,
    pub current_call_id: Option<String>,
    pub idle_seconds_today: u64,
    pub departments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    pub queue_id: String,
    pub name: String,
    pub display_name: String,
    pub waiting: usize,
    pub longest_wait_seconds: u64,
    pub oldest_call_id: Option<String>,
    /// The department's agents free to take a call now.
    pub available_agents: usize,
    /// Oldest first.
    pub calls: Vec<WaitingCall>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingCall {
    pub call_id: String,
    /// Masked, as queues keep it.
    pub caller: String,
    pub waiting_seconds: u64,
}

/// Reads the tenant's live state: calls, agents and departments at once, then every
/// department's queue at once.
pub async fn dashboard(ctx: &AppContext, tenant: &TenantId, now: DateTime<Utc>) -> anyhow::Result<Dashboard> {
    let ((calls, truncated), agents, departments) = tokio::try_join!(
        ctx.calls.live(tenant, MAX_CALLS_PER_STATUS),
        ctx.agents.list(tenant),
        ctx.departments.list(tenant),
    )?;
    if truncated {
        tracing::warn!(bound = MAX_CALLS_PER_STATUS, "a live status holds more calls than the monitor reads");
    }
    let waiting = futures::future::try_join_all(
        departments.iter().map(|d| ctx.queue.waiting(tenant, &d.queue_id, MAX_WAITING_PER_QUEUE)),
    )
    .await?;
    Ok(Dashboard::assemble(calls, agents, departments.into_iter().zip(waiting).collect(), now))
}

impl Dashboard {
    /// The dashboard of what was read: `calls` newest first, `agents` and `queues` in the
    /// order given (each queue's entries oldest first).
    pub fn assemble(
        calls: Vec<Call>,
        agents: Vec<Agent>,
        queues: Vec<(Department, Vec<QueueEntry>)>,
        now: DateTime<Utc>,
    ) -> Self {
        let waited = |entry: &QueueEntry| (now - entry.enqueued_at()).num_seconds().max(0) as u64;
        let in_queue: HashMap<&str, &QueueEntry> =
            queues.iter().flat_map(|(_, entries)| entries).map(|e| (e.call_id.as_str(), e)).collect();
        let rung_for: HashMap<&str, &Agent> = agents
            .iter()
            .filter(|a| a.state == AgentState::Busy)
            .filter_map(|a| a.current_call_id.as_deref().map(|call| (call, a)))
            .collect();
        let active_calls: Vec<LiveCall> = calls
            .into_iter()
            .map(|mut call| {
                if call.agent.is_none()
                    && let Some(agent) = rung_for.get(call.id.as_str())
                {
                    call.agent = Some(AgentRef {
                        id: agent.agent_id.clone(),
                        full_name: agent.name.clone(),
                        email: agent.email.clone(),
                    });
                }
                let entry = in_queue.get(call.id.as_str());
                LiveCall {
                    queue_id: entry.map(|e| e.queue_id.clone()),
                    waiting_seconds: entry.map(|e| waited(e)),
                    call,
                }
            })
            .collect();
        let queues: Vec<QueueStatus> = queues
            .iter()
            .map(|(department, entries)| {
                let calls: Vec<WaitingCall> = entries
                    .iter()
                    .map(|e| WaitingCall {
                        call_id: e.call_id.clone(),
                        caller: e.caller.clone(),
                        waiting_seconds: waited(e),
                    })
                    .collect();
                let oldest = entries.iter().min_by_key(|e| e.enqueued_at_ms);
                QueueStatus {
                    queue_id: department.queue_id.clone(),
                    name: department.name.clone(),
                    display_name: department.display_name.clone(),
                    waiting: calls.len(),
                    longest_wait_seconds: oldest.map_or(0, waited),
                    oldest_call_id: oldest.map(|e| e.call_id.clone()),
                    available_agents: agents
                        .iter()
                        .filter(|a| a.state == AgentState::Available && a.serves(&department.queue_id))
                        .count(),
                    calls,
                }
            })
            .collect();
        let in_state = |state: AgentState| agents.iter().filter(|a| a.state == state).count();
        let metrics = Metrics {
            active_calls: active_calls.len(),
            available_agents: in_state(AgentState::Available),
            busy_agents: in_state(AgentState::Busy),
            total_agents: agents.len(),
            queued_calls: queues.iter().map(|q| q.waiting).sum(),
        };
        let agents = agents
            .into_iter()
            .map(|a| AgentStatus {
                idle_seconds_today: a.idle_today(now),
                agent_id: a.agent_id,
                name: a.name,
                state: a.state,
                state_since: a.state_since,
                current_call_id: a.current_call_id,
                departments: a.departments,
            })
            .collect();
        Dashboard { metrics, active_calls, agents, queues }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::{
        agents::tests::{QUEUE, agent},
        calls::Direction,
        departments::DepartmentInput,
        phone::Address,
    };

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 10, 15, 0, 0).unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::parse("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f").unwrap()
    }

    fn call(id: &str, status: CallStatus, minutes_ago: i64) -> Call {
        Call {
            id: id.into(),
            tenant_id: tenant(),
            provider: "twilio".into(),
            provider_call_sid: Some(format!("CA{id}")),
            direction: Direction::Inbound,
            from_number: Address::parse("+12025550143").unwrap(),
            to_number: Address::parse("+14155550100").unwrap(),
            caller_name: None,
            status,
            duration_seconds: None,
            recording: None,
            transcript: None,
            started_at: now() - Duration::minutes(minutes_ago),
            answered_at: None,
            ended_at: None,
            agent: None,
            department: None,
            consent: None,
            metadata: Default::default(),
        }
    }

    fn department(queue_id: &str, name: &str) -> Department {
        let input: DepartmentInput = serde_json::from_value(serde_json::json!({
            "name": name, "phone_number": "+14155550100", "max_wait_time": 300, "after_hours_action": "voicemail"
        }))
        .unwrap();
        Department { queue_id: queue_id.into(), ..input.validate().unwrap().create(tenant(), now()).unwrap() }
    }

    fn waiting(call_id: &str, queue_id: &str, seconds_ago: i64) -> QueueEntry {
        QueueEntry {
            call_id: call_id.into(),
            queue_id: queue_id.into(),
            enqueued_at_ms: (now() - Duration::seconds(seconds_ago)).timestamp_millis(),
            tried: Vec::new(),
            account_sid: "AC1".into(),
            webhook_base: "https://example.test".into(),
            caller: "+1********43".into(),
        }
    }

    #[test]
    fn figures_agree_with_the_calls_agents_and_queues_read() {
        let other = "9e0c4d1a-2b3c-4d5e-8f70-112233445566";
        let mut rung = agent("rung");
        rung.transition(AgentState::Busy, Some("ringing-agent"), now() - Duration::minutes(1));
        let mut away = agent("away");
        away.transition(AgentState::Away, None, now() - Duration::minutes(2));
        let mut elsewhere = agent("elsewhere");
        elsewhere.departments = vec![other.into()];
        let agents = vec![agent("free"), rung, away, elsewhere];
        let calls = vec![call("ringing-agent", CallStatus::Ringing, 1), call("waiting", CallStatus::Ringing, 3)];
        let queues = vec![
            (department(QUEUE, "sales"), vec![waiting("waiting", QUEUE, 170)]),
            (department(other, "support"), vec![]),
        ];

        let board = Dashboard::assemble(calls, agents, queues, now());

        let expected =
            Metrics { active_calls: 2, available_agents: 2, busy_agents: 1, total_agents: 4, queued_calls: 1 };
        assert_eq!(board.metrics, expected);
        let [ringing, queued] = &board.active_calls[..] else { panic!("two live calls") };
        assert_eq!(ringing.call.agent.as_ref().map(|a| a.id.as_str()), Some("rung"), "the agent being rung");
        assert_eq!((ringing.queue_id.as_deref(), ringing.waiting_seconds), (None, None));
        assert_eq!((queued.queue_id.as_deref(), queued.waiting_seconds), (Some(QUEUE), Some(170)));
        let sales = &board.queues[0];
        assert_eq!(
            (sales.waiting, sales.longest_wait_seconds, sales.oldest_call_id.as_deref()),
            (1, 170, Some("waiting"))
        );
        assert_eq!(sales.available_agents, 1, "only the free agent of sales");
        let support = &board.queues[1];
        assert_eq!((support.waiting, support.longest_wait_seconds, support.oldest_call_id.as_deref()), (0, 0, None));
        assert_eq!(support.available_agents, 1);
        let rung = board.agents.iter().find(|a| a.agent_id == "rung").unwrap();
        assert_eq!((rung.state, rung.current_call_id.as_deref()), (AgentState::Busy, Some("ringing-agent")));
    }

    #[test]
    fn a_live_call_reads_as_the_crm_view_with_its_wait() {
        let board = Dashboard::assemble(
            vec![call("waiting", CallStatus::Queued, 2)],
            vec![],
            vec![(department(QUEUE, "sales"), vec![waiting("waiting", QUEUE, 42)])],
            now(),
        );
        let json = serde_json::to_value(&board).unwrap();
        let live = &json["active_calls"][0];
        assert_eq!(live["id"], "waiting");
        assert_eq!(live["twilio_call_sid"], "CAwaiting");
        assert_eq!(live["status"], "queued");
        assert_eq!((&live["queue_id"], &live["waiting_seconds"]), (&QUEUE.into(), &42.into()));
        assert_eq!(json["queues"][0]["calls"][0]["caller"], "+1********43");
        assert_eq!(json["metrics"]["queued_calls"], 1);
    }
}
