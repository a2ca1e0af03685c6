//! Agents in the tenants table, under the tenant's key:
//!
//! | sk                            | holds                                           |
//! |-------------------------------|-------------------------------------------------|
//! | `AGENT#<agent_id>`            | the agent with its live state and `version`     |
//! | `AGENTLOG#<agent_id>#<uuid7>` | one activity entry (append-only, kept 90 days)  |
//!
//! Every change is one transaction: the agent, put on the condition that its `version`
//! is still the one read, plus the activity entry when the state changes. Two writers
//! racing for the same agent cannot both win, which is what makes reserving an agent
//! for a call safe without locks.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Delete, Put, TransactWriteItem},
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Agent, AgentState};
use crate::{
    calls::model::ts,
    edge::ApiError,
    tenants::{TenantId, tenant_items, tenant_pk},
};

type Item = HashMap<String, AttributeValue>;

const AGENT_PREFIX: &str = "AGENT#";
const LOG_KEPT: Duration = Duration::days(90);
/// Bound on the agents one read returns: a department's staff, not a directory.
pub const MAX_AGENTS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no agent {0}")]
    NotFound(String),
    #[error("the agent was changed by another request; read it again and retry")]
    Changed,
    #[error("agent {0} is on call {1}; its state changes when the call ends")]
    OnCall(String, String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<AgentError> for ApiError {
    fn from(err: AgentError) -> Self {
        match err {
            AgentError::Store(e) => ApiError::Unexpected(e),
            AgentError::NotFound(_) => ApiError::NotFound(err.to_string()),
            AgentError::Changed | AgentError::OnCall(..) => ApiError::Conflict(err.to_string()),
        }
    }
}

/// One entry of an agent's activity log (seeds 000–002 `agent_activity_log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub agent_id: String,
    /// `state_change`, `call_offered`, `call_missed`, `call_ended`.
    pub activity_type: String,
    pub from_state: AgentState,
    pub to_state: AgentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(with = "ts")]
    pub activity_timestamp: DateTime<Utc>,
    /// How long the agent was in `from_state`.
    pub duration_seconds: u64,
}

impl Activity {
    /// The entry for `before` becoming `after`.
    pub fn between(before: &Agent, after: &Agent, activity_type: &str) -> Self {
        Self {
            agent_id: after.agent_id.clone(),
            activity_type: activity_type.to_owned(),
            from_state: before.state,
            to_state: after.state,
            call_id: after.current_call_id.clone().or_else(|| before.current_call_id.clone()),
            activity_timestamp: after.updated_at,
            duration_seconds: (after.updated_at - before.state_since).num_seconds().max(0) as u64,
        }
    }
}

fn agent_sk(agent_id: &str) -> String {
    format!("{AGENT_PREFIX}{agent_id}")
}

fn log_prefix(agent_id: &str) -> String {
    format!("AGENTLOG#{agent_id}#")
}

#[derive(Debug, Clone)]
pub struct AgentStore {
    db: Client,
    table: String,
}

impl AgentStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// Strongly consistent: every change reads, decides and writes under `version`.
    pub async fn get(&self, tenant: &TenantId, agent_id: &str) -> anyhow::Result<Option<Agent>> {
        let Ok(agent_id) = uuid::Uuid::parse_str(agent_id) else { return Ok(None) };
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(agent_sk(&agent_id.to_string())))
            .consistent_read(true)
            .send()
            .await
            .context("reading agent")?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }

    /// Every agent of the tenant (at most [`MAX_AGENTS`]), by name: one consistent Query
    /// per 1 MB page, so routing and the monitor see the live state.
    pub async fn list(&self, tenant: &TenantId) -> anyhow::Result<Vec<Agent>> {
        let mut agents: Vec<Agent> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = tenant_items(&self.db, &self.table, tenant, AGENT_PREFIX)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .context("listing agents")?;
            agents.extend(serde_dynamo::from_items::<_, Agent>(out.items.unwrap_or_default())?);
            start = out.last_evaluated_key;
            if start.is_none() || agents.len() >= MAX_AGENTS {
                break;
            }
        }
        agents.truncate(MAX_AGENTS);
        agents.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.agent_id.cmp(&b.agent_id)));
        Ok(agents)
    }

    /// Writes `agent` as a change of `before` (`None`: a new agent), with the activity
    /// entry when the state changed. Refused with `Changed` if `before` is stale.
    pub async fn save(&self, agent: &Agent, before: Option<&Agent>, activity_type: &str) -> Result<Agent, AgentError> {
        let (items, saved) = self.change(agent, before, activity_type)?;
        let mut tx = self.db.transact_write_items();
        for item in items {
            tx = tx.transact_items(item);
        }
        tx.send().await.map_err(refused)?;
        Ok(saved)
    }

    /// The transaction items of a change: the versioned put and, if the state changed,
    /// the activity entry. Also used by the queue to pair an agent with a call.
    pub(crate) fn change(
        &self,
        agent: &Agent,
        before: Option<&Agent>,
        activity_type: &str,
    ) -> Result<(Vec<TransactWriteItem>, Agent), AgentError> {
        let mut saved = agent.clone();
        saved.version = before.map_or(1, |b| b.version + 1);
        let put = Put::builder().table_name(&self.table).set_item(Some(self.item(&saved)?));
        let put = match before {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(b) => put
                .condition_expression("version = :seen")
                .expression_attribute_values(":seen", AttributeValue::N(b.version.to_string())),
        };
        let mut items = vec![TransactWriteItem::builder().put(put.build().map_err(anyhow::Error::from)?).build()];
        let changed_state = before.is_none_or(|b| b.state != saved.state || b.current_call_id != saved.current_call_id);
        if changed_state {
            let initial = Agent { state: AgentState::Offline, current_call_id: None, ..saved.clone() };
            let activity = Activity::between(before.unwrap_or(&initial), &saved, activity_type);
            items.push(TransactWriteItem::builder().put(self.log_put(&saved.tenant_id, &activity)?).build());
        }
        Ok((items, saved))
    }

    /// Deletes an agent not on a call; its activity log stays until it expires.
    pub async fn delete(&self, tenant: &TenantId, agent_id: &str) -> Result<(), AgentError> {
        let agent = self.get(tenant, agent_id).await?.ok_or_else(|| AgentError::NotFound(agent_id.to_owned()))?;
        if let Some(call) = &agent.current_call_id {
            return Err(AgentError::OnCall(agent.agent_id, call.clone()));
        }
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(agent_sk(&agent.agent_id)))
            .condition_expression("version = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(agent.version.to_string()))
            .build()
            .map_err(anyhow::Error::from)?;
        self.db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .send()
            .await
            .map_err(refused)?;
        Ok(())
    }

    /// The agent's most recent activity, newest first.
    pub async fn activity(&self, tenant: &TenantId, agent_id: &str, limit: i32) -> anyhow::Result<Vec<Activity>> {
        let out = tenant_items(&self.db, &self.table, tenant, log_prefix(agent_id))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .context("reading agent activity")?;
        Ok(serde_dynamo::from_items(out.items.unwrap_or_default())?)
    }

    fn item(&self, agent: &Agent) -> anyhow::Result<Item> {
        let mut item: Item = serde_dynamo::to_item(agent)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(&agent.tenant_id)));
        item.insert("sk".into(), AttributeValue::S(agent_sk(&agent.agent_id)));
        Ok(item)
    }

    fn log_put(&self, tenant: &TenantId, activity: &Activity) -> anyhow::Result<Put> {
        let mut item: Item = serde_dynamo::to_item(activity)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(tenant)));
        let id = uuid::Uuid::now_v7();
        item.insert("sk".into(), AttributeValue::S(format!("{}{id}", log_prefix(&activity.agent_id))));
        let expires = activity.activity_timestamp + LOG_KEPT;
        item.insert("expires_at".into(), AttributeValue::N(expires.timestamp().to_string()));
        Ok(Put::builder().table_name(&self.table).set_item(Some(item)).build()?)
    }
}

/// A transaction refused by a condition, or lost to a concurrent one, is `Changed`:
/// read again and retry. Anything else is a store failure.
pub(crate) fn refused(
    err: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> AgentError {
    if is_conflict(err.as_service_error()) {
        AgentError::Changed
    } else {
        AgentError::Store(anyhow::Error::from(err).context("writing agent"))
    }
}

pub(crate) fn is_conflict(err: Option<&TransactWriteItemsError>) -> bool {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err else { return false };
    cancelled
        .cancellation_reasons()
        .iter()
        .any(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "TransactionConflict")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::tests::{agent, now};

    #[test]
    fn an_agent_reads_back_whole_and_its_keys_do_not_mix_with_the_log() {
        let mut a = agent("5d0c4b8a-1f2e-4a3b-9c8d-7e6f5a4b3c2d");
        a.skills.insert("spanish".into(), 7);
        a.idle_day = Some(now().date_naive());
        let store = AgentStore::new(
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version_latest()
                    .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
                    .build(),
            ),
            "t",
        );
        let item = store.item(&a).unwrap();
        assert_eq!(item["sk"], AttributeValue::S(format!("AGENT#{}", a.agent_id)));
        assert_eq!(serde_dynamo::from_item::<_, Agent>(item).unwrap(), a);
        assert!(!log_prefix(&a.agent_id).starts_with(AGENT_PREFIX));
    }

    #[test]
    fn activity_measures_the_time_spent_in_the_previous_state() {
        let before = agent("a");
        let mut after = before.clone();
        after.transition(AgentState::Busy, Some("call-1"), now());
        let activity = Activity::between(&before, &after, "call_offered");
        assert_eq!((activity.from_state, activity.to_state), (AgentState::Available, AgentState::Busy));
        assert_eq!(activity.duration_seconds, 30 * 86_400);
        assert_eq!(activity.call_id.as_deref(), Some("call-1"));
    }
}
