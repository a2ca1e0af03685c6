//! Agents: who answers a department's calls, whether they can right now, and the idle
//! bookkeeping the routing strategies rank them by.
//!
//! `store` keeps agents and their append-only activity log in the tenants table (every
//! state change is one conditional write of the agent plus its log entry), `queue` keeps
//! waiting callers and pairs them with agents atomically, and [`rank`] is the pure
//! ordering each strategy uses.

mod input;
mod queue;
mod store;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use input::{AgentChanges, AgentInput};
pub use queue::{LegEnded, Left, Pairing, QueueEntry, QueueStore, Route, RouteState};
pub use store::{Activity, AgentError, AgentStore};

use crate::{calls::model::ts, departments::RoutingStrategy, phone::E164, providers::twilio::client::Endpoint, tenants::TenantId};

/// Availability, as seed 004 names it. `Busy` is also what routing sets while an agent is
/// being rung for, or is on, a call (`current_call_id` says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Available,
    Busy,
    Away,
    Offline,
}

impl AgentState {
    pub const ALL: [AgentState; 4] = [AgentState::Available, AgentState::Busy, AgentState::Away, AgentState::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Available => "available",
            AgentState::Busy => "busy",
            AgentState::Away => "away",
            AgentState::Offline => "offline",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One agent, with the live state routing reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_id: String,
    pub tenant_id: TenantId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<E164>,
    /// A Twilio Client (browser softphone) identity, rung before the phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<String>,
    /// Skill name → level, 1 (basic) to 10 (expert).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// The departments (queue ids) whose calls this agent takes.
    #[serde(default)]
    pub departments: Vec<String>,
    pub state: AgentState,
    #[serde(with = "ts")]
    pub state_since: DateTime<Utc>,
    /// The call the agent is being rung for or is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_call_id: Option<String>,
    /// When the agent last became idle (available); set exactly while available.
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<DateTime<Utc>>,
    /// Idle time of `idle_day` (UTC) in closed intervals; the open one is added on read.
    #[serde(default)]
    pub idle_secs_today: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_day: Option<NaiveDate>,
    /// When the agent was last given a call (round-robin's turn order).
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub last_call_at: Option<DateTime<Utc>>,
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "ts")]
    pub updated_at: DateTime<Utc>,
    /// Optimistic concurrency: every write is conditional on the version it read.
    #[serde(default)]
    pub version: u64,
}

impl Agent {
    /// The softphone first (seed 004: browser calling, "with fallback to phone callback").
    pub fn endpoint(&self) -> Option<Endpoint> {
        match (&self.client_identity, &self.phone) {
            (Some(identity), _) => Some(Endpoint::from(format!("client:{identity}"))),
            (None, Some(phone)) => Some(Endpoint::from(phone.clone())),
            (None, None) => None,
        }
    }

    pub fn serves(&self, queue_id: &str) -> bool {
        self.departments.iter().any(|d| d == queue_id)
    }

    /// Idle seconds on `now`'s UTC day: the closed intervals plus the open one.
    pub fn idle_today(&self, now: DateTime<Utc>) -> u64 {
        let today = now.date_naive();
        let closed = if self.idle_day == Some(today) { self.idle_secs_today } else { 0 };
        closed + self.idle_since.map_or(0, |since| seconds_today(since, now))
    }

    /// Moves the agent to `state` at `now`, keeping the idle bookkeeping: leaving
    /// `available` closes the idle interval into today's total, entering it opens one.
    pub fn transition(&mut self, state: AgentState, call_id: Option<&str>, now: DateTime<Utc>) {
        let today = now.date_naive();
        if self.idle_day != Some(today) {
            self.idle_secs_today = 0;
            self.idle_day = Some(today);
        }
        if let Some(since) = self.idle_since.take() {
            self.idle_secs_today += seconds_today(since, now);
        }
        if state == AgentState::Available {
            self.idle_since = Some(now);
        }
        if self.state != state {
            self.state_since = now;
        }
        self.state = state;
        self.current_call_id = call_id.map(str::to_owned);
        self.updated_at = now;
    }
}

/// Seconds from `since` to `now` that fall on `now`'s UTC day.
fn seconds_today(since: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now);
    (now - since.max(midnight)).num_seconds().max(0) as u64
}

/// The order in which a department's available agents are offered a call, best first.
/// Agents not available, not in the department, or in `skip` (already tried for this
/// call) are left out.
///
/// - round-robin: whoever was given a call least recently (never first);
/// - longest-idle: whoever became idle earliest;
/// - most-idle: the most idle time today (UTC), then longest-idle;
/// - skill-based: agents with every required skill, by the sum of their levels in them,
///   then longest-idle; after them (the fallback when none is free) the others, by how
///   many required skills they have and their levels, then longest-idle.
///
/// Remaining ties go to the agent id, so the order is total and repeatable.
pub fn rank<'a>(
    strategy: RoutingStrategy,
    required_skills: &[String],
    queue_id: &str,
    agents: &'a [Agent],
    skip: &[String],
    now: DateTime<Utc>,
) -> Vec<&'a Agent> {
    let mut ranked: Vec<&Agent> = agents
        .iter()
        .filter(|a| a.state == AgentState::Available && a.serves(queue_id) && !skip.contains(&a.agent_id))
        .collect();
    let idle_since = |a: &Agent| a.idle_since.unwrap_or(now);
    let skill = |a: &Agent| {
        let levels: Vec<u32> = required_skills.iter().filter_map(|s| a.skills.get(s).map(|l| u32::from(*l))).collect();
        (levels.len() == required_skills.len(), levels.len(), levels.iter().sum::<u32>())
    };
    ranked.sort_by(|a, b| {
        let order = match strategy {
            RoutingStrategy::RoundRobin => a.last_call_at.cmp(&b.last_call_at),
            RoutingStrategy::LongestIdle => idle_since(a).cmp(&idle_since(b)),
            RoutingStrategy::MostIdle => {
                b.idle_today(now).cmp(&a.idle_today(now)).then_with(|| idle_since(a).cmp(&idle_since(b)))
            }
            RoutingStrategy::SkillBased => skill(b).cmp(&skill(a)).then_with(|| idle_since(a).cmp(&idle_since(b))),
        };
        order.then_with(|| a.agent_id.cmp(&b.agent_id))
    });
    ranked
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    pub(crate) const QUEUE: &str = "0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30";

    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 10, 15, 0, 0).unwrap()
    }

    pub(crate) fn agent(id: &str) -> Agent {
        let created = now() - Duration::days(30);
        Agent {
            agent_id: id.into(),
            tenant_id: TenantId::parse("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f").unwrap(),
            name: format!("Agent {id}"),
            email: None,
            phone: Some(E164::parse("+14155550123").unwrap()),
            client_identity: None,
            skills: BTreeMap::new(),
            departments: vec![QUEUE.into()],
            state: AgentState::Available,
            state_since: created,
            current_call_id: None,
            idle_since: Some(created),
            idle_secs_today: 0,
            idle_day: None,
            last_call_at: None,
            created_at: created,
            updated_at: created,
            version: 1,
        }
    }

    fn idle_for(id: &str, minutes: i64) -> Agent {
        Agent { idle_since: Some(now() - Duration::minutes(minutes)), ..agent(id) }
    }

    fn ids(ranked: Vec<&Agent>) -> Vec<&str> {
        ranked.into_iter().map(|a| a.agent_id.as_str()).collect()
    }

    fn order(strategy: RoutingStrategy, required: &[&str], agents: &[Agent]) -> Vec<String> {
        let required: Vec<String> = required.iter().map(|s| s.to_string()).collect();
        ids(rank(strategy, &required, QUEUE, agents, &[], now())).into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn longest_idle_ranks_by_when_agents_became_idle() {
        let agents = [idle_for("a", 5), idle_for("b", 50), idle_for("c", 20)];
        assert_eq!(order(RoutingStrategy::LongestIdle, &[], &agents), ["b", "c", "a"]);
    }

    #[test]
    fn most_idle_ranks_by_todays_total_including_the_open_interval() {
        let mut a = idle_for("a", 10); // 10 min open + 60 min closed today = 70
        a.idle_day = Some(now().date_naive());
        a.idle_secs_today = 3600;
        let b = idle_for("b", 40); // 40 min
        let mut c = idle_for("c", 1); // 1 min open; yesterday's total does not count
        c.idle_day = Some(now().date_naive() - Duration::days(1));
        c.idle_secs_today = 10 * 3600;
        assert_eq!(order(RoutingStrategy::MostIdle, &[], &[b, a, c]), ["a", "b", "c"]);
    }

    #[test]
    fn round_robin_takes_turns_by_last_call_and_never_called_first() {
        let mut a = agent("a");
        a.last_call_at = Some(now() - Duration::minutes(1));
        let mut b = agent("b");
        b.last_call_at = Some(now() - Duration::minutes(9));
        let c = agent("c");
        assert_eq!(order(RoutingStrategy::RoundRobin, &[], &[a, b, c]), ["c", "b", "a"]);
    }

    #[test]
    fn skill_based_prefers_the_best_level_then_longest_idle_then_falls_back() {
        let skilled = |id: &str, minutes: i64, skills: &[(&str, u8)]| Agent {
            skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
            ..idle_for(id, minutes)
        };
        let agents = [
            skilled("novice", 90, &[("spanish", 2), ("billing", 2)]),
            skilled("expert", 1, &[("spanish", 9), ("billing", 8)]),
            skilled("peer", 30, &[("spanish", 8), ("billing", 9)]),
            skilled("speaks-only", 60, &[("spanish", 10)]),
            skilled("none", 120, &[]),
        ];
        // expert and peer tie on 17: the longer idle (peer) wins.
        assert_eq!(
            order(RoutingStrategy::SkillBased, &["spanish", "billing"], &agents),
            ["peer", "expert", "novice", "speaks-only", "none"]
        );
        // With every fully skilled agent busy, the fallback keeps the same order.
        let mut busy = agents.clone();
        for a in busy.iter_mut().take(3) {
            a.transition(AgentState::Busy, Some("call"), now());
        }
        assert_eq!(order(RoutingStrategy::SkillBased, &["spanish", "billing"], &busy), ["speaks-only", "none"]);
    }

    #[test]
    fn only_available_members_not_yet_tried_are_offered() {
        let mut away = idle_for("away", 99);
        away.transition(AgentState::Away, None, now());
        let mut elsewhere = idle_for("elsewhere", 98);
        elsewhere.departments = vec!["another-queue".into()];
        let agents = [away, elsewhere, idle_for("tried", 97), idle_for("free", 1)];
        let ranked = rank(RoutingStrategy::LongestIdle, &[], QUEUE, &agents, &["tried".to_owned()], now());
        assert_eq!(ids(ranked), ["free"]);
    }

    #[test]
    fn transitions_close_idle_intervals_into_todays_total() {
        let mut a = agent("a");
        a.idle_since = Some(now() - Duration::minutes(30));
        a.transition(AgentState::Busy, Some("call-1"), now());
        assert_eq!((a.idle_since, a.idle_secs_today, a.current_call_id.as_deref()), (None, 1800, Some("call-1")));
        a.transition(AgentState::Available, None, now() + Duration::minutes(10));
        assert_eq!(a.idle_today(now() + Duration::minutes(15)), 1800 + 300);
        // An idle stretch across midnight counts only today's part, and the total resets.
        let tomorrow = (now() + Duration::days(1)).date_naive().and_hms_opt(0, 20, 0).unwrap().and_utc();
        assert_eq!(a.idle_today(tomorrow), 1200);
        a.transition(AgentState::Offline, None, tomorrow);
        assert_eq!((a.idle_secs_today, a.idle_day), (1200, Some(tomorrow.date_naive())));
    }

    #[test]
    fn agents_are_rung_on_their_softphone_first() {
        let mut a = agent("a");
        a.client_identity = Some("ada".into());
        assert_eq!(a.endpoint().unwrap().as_str(), "client:ada");
        a.client_identity = None;
        assert_eq!(a.endpoint().unwrap().as_str(), "+14155550123");
        a.phone = None;
        assert_eq!(a.endpoint(), None);
    }
}
