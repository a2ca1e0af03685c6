//! Callers waiting for an agent, and the atomic pairing of a caller with an agent.
//!
//! Two items per routed inbound call, under the tenant's key in the tenants table:
//!
//! | sk                                        | holds                                  |
//! |-------------------------------------------|----------------------------------------|
//! | `QUEUED#<queue_id>#<enqueued ms>#<call>`  | the caller, while waiting (oldest first)|
//! | `ROUTE#<call_id>`                         | where the call is: queued, ringing an agent, connected, ended |
//!
//! Pairing is one transaction: the agent (available → busy, on its version), its activity
//! entry, the queue entry (deleted, on existing) and the route (queued → ringing). Any
//! number of inbound calls, wait loops and freed agents may pair concurrently: an agent
//! or a caller taken by someone else fails the transaction and the pass reads again, so
//! no agent is ever given two calls and no caller two agents.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Delete, Put, TransactWriteItem, Update},
};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use super::{Agent, AgentError, AgentState, AgentStore, rank, store::refused};
use crate::{
    departments::{Department, queued_prefix},
    tenants::{TenantId, tenant_items, tenant_pk},
};

type Item = HashMap<String, AttributeValue>;

/// Entries one pass reads: the oldest callers are the ones served first.
const ENTRIES_PER_PASS: i32 = 25;
/// Passes before a drain gives up on a store that keeps changing under it; each lost
/// race means another drain paired someone, and the wait loop drains again later.
const MAX_PASSES: usize = 12;

/// A caller waiting in a department's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub call_id: String,
    pub queue_id: String,
    pub enqueued_at_ms: i64,
    /// Agents already rung for this call who did not answer.
    #[serde(default)]
    pub tried: Vec<String>,
    /// What placing the agent leg needs later, from any function: the provider account
    /// and the public base of the webhook endpoints the call came in on.
    pub account_sid: String,
    pub webhook_base: String,
    /// The caller's number, masked as logs and dashboards show it.
    pub caller: String,
}

impl QueueEntry {
    pub fn enqueued_at(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.enqueued_at_ms).single().unwrap_or_default()
    }

    fn sk(&self) -> String {
        entry_sk(&self.queue_id, self.enqueued_at_ms, &self.call_id)
    }
}

fn entry_sk(queue_id: &str, enqueued_at_ms: i64, call_id: &str) -> String {
    format!("{}{enqueued_at_ms:013}#{call_id}", queued_prefix(queue_id))
}

fn route_sk(call_id: &str) -> String {
    format!("ROUTE#{call_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteState {
    Queued,
    Ringing,
    Connected,
    /// The caller left while an agent was being rung; the leg is to be dropped.
    Ended,
}

impl RouteState {
    fn as_str(self) -> &'static str {
        match self {
            RouteState::Queued => "queued",
            RouteState::Ringing => "ringing",
            RouteState::Connected => "connected",
            RouteState::Ended => "ended",
        }
    }
}

/// Where a routed call is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub route_state: RouteState,
    pub entry: QueueEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The agent leg's CallSid, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg_sid: Option<String>,
}

/// A caller given an agent: ring `agent` into `entry`'s call.
#[derive(Debug, Clone)]
pub struct Pairing {
    pub entry: QueueEntry,
    pub agent: Agent,
}

/// How a pairing went.
enum Paired {
    Done(Box<Agent>),
    /// The agent's version moved on (taken by another call, or changed).
    AgentTaken,
    /// The caller was paired by someone else, or left.
    CallerTaken,
    /// Lost to a concurrent transaction: nothing is known, read again.
    Conflict,
}

/// The positions whose condition refused a cancelled transaction (empty when it lost
/// to a concurrent transaction instead); `None` when it was not cancelled.
fn failed_items(err: Option<&TransactWriteItemsError>) -> Option<Vec<usize>> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err else { return None };
    let reasons = cancelled.cancellation_reasons();
    Some(
        reasons
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// What became of the agent leg's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEnded {
    /// The agent never answered: the caller is back in the queue (same place in line).
    Missed,
    /// The call the agent took is over, or the caller had left: the route is closed.
    Finished,
    /// Nothing to do (a duplicate, or a leg this store does not know).
    Stale,
}

#[derive(Debug, Clone)]
pub struct QueueStore {
    db: Client,
    table: String,
    agents: AgentStore,
}

impl QueueStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        let table = table.into();
        Self { agents: AgentStore::new(db.clone(), table.clone()), db, table }
    }

    /// Puts a new inbound call in its department's queue. `false` when the call was
    /// routed before (the provider retried the request).
    pub async fn enqueue(&self, tenant: &TenantId, entry: &QueueEntry) -> anyhow::Result<bool> {
        let route = Route { route_state: RouteState::Queued, entry: entry.clone(), agent_id: None, leg_sid: None };
        let result = self
            .db
            .transact_write_items()
            .transact_items(self.put_new(self.item(tenant, &entry.sk(), entry)?)?)
            .transact_items(self.put_new(self.route_item(tenant, &route)?)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if super::store::is_conflict(e.as_service_error()) => Ok(false),
            Err(e) => Err(anyhow::Error::from(e).context("enqueueing call")),
        }
    }

    /// The department's waiting callers, oldest first.
    pub async fn waiting(&self, tenant: &TenantId, queue_id: &str, limit: i32) -> anyhow::Result<Vec<QueueEntry>> {
        let out = tenant_items(&self.db, &self.table, tenant, queued_prefix(queue_id))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .context("reading queue")?;
        Ok(serde_dynamo::from_items(out.items.unwrap_or_default())?)
    }

    pub async fn route(&self, tenant: &TenantId, call_id: &str) -> anyhow::Result<Option<Route>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(route_sk(call_id)))
            .consistent_read(true)
            .send()
            .await
            .context("reading route")?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }

    /// Pairs the department's oldest waiting callers with its best available agents
    /// (the department's strategy), until one of them runs out. A pairing refused
    /// because the agent was taken meanwhile tries the next agent (after re-reading that
    /// one); because the caller was taken, the next caller. Only an ambiguous refusal
    /// re-reads everything.
    pub async fn drain(&self, tenant: &TenantId, department: &Department) -> anyhow::Result<Vec<Pairing>> {
        let mut pairings = Vec::new();
        for _ in 0..MAX_PASSES {
            let entries = self.waiting(tenant, &department.queue_id, ENTRIES_PER_PASS).await?;
            if entries.is_empty() {
                break;
            }
            let mut agents = self.agents.list(tenant).await?;
            let mut reread = false;
            'entries: for entry in entries {
                loop {
                    let now = Utc::now();
                    let Some(agent) = rank(
                        department.routing_strategy,
                        &department.required_skills,
                        &department.queue_id,
                        &agents,
                        &entry.tried,
                        now,
                    )
                    .first()
                    .map(|a| (*a).clone()) else {
                        continue 'entries;
                    };
                    let slot = agents.iter().position(|a| a.agent_id == agent.agent_id).expect("ranked from agents");
                    match self.pair(tenant, &entry, &agent, now).await? {
                        Paired::Done(paired) => {
                            agents[slot] = (*paired).clone();
                            pairings.push(Pairing { entry, agent: *paired });
                            continue 'entries;
                        }
                        Paired::AgentTaken => match self.agents.get(tenant, &agent.agent_id).await? {
                            Some(fresh) => agents[slot] = fresh,
                            None => {
                                agents.remove(slot);
                            }
                        },
                        Paired::CallerTaken => continue 'entries,
                        Paired::Conflict => {
                            reread = true;
                            break 'entries;
                        }
                    }
                }
            }
            if !reread {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(rand::random_range(5..40))).await;
        }
        Ok(pairings)
    }

    async fn pair(
        &self,
        tenant: &TenantId,
        entry: &QueueEntry,
        agent: &Agent,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Paired> {
        let mut busy = agent.clone();
        busy.transition(AgentState::Busy, Some(&entry.call_id), now);
        busy.last_call_at = Some(now);
        let (mut items, saved) = self.agents.change(&busy, Some(agent), "call_offered")?;
        let agent_items = items.len();
        items.push(self.delete_if(tenant, entry.sk(), None)?);
        let route = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(route_sk(&entry.call_id)))
            .update_expression("SET route_state = :ringing, agent_id = :agent")
            .condition_expression("route_state = :queued")
            .expression_attribute_values(":ringing", s(RouteState::Ringing.as_str()))
            .expression_attribute_values(":queued", s(RouteState::Queued.as_str()))
            .expression_attribute_values(":agent", s(&agent.agent_id))
            .build()?;
        items.push(TransactWriteItem::builder().update(route).build());
        let mut tx = self.db.transact_write_items();
        for item in items {
            tx = tx.transact_items(item);
        }
        let Err(err) = tx.send().await else { return Ok(Paired::Done(Box::new(saved))) };
        match failed_items(err.as_service_error()) {
            Some(failed) if failed.iter().any(|i| *i >= agent_items) => Ok(Paired::CallerTaken),
            Some(failed) if !failed.is_empty() => Ok(Paired::AgentTaken),
            Some(_) => Ok(Paired::Conflict),
            None => Err(anyhow::Error::from(err).context("pairing a caller with an agent")),
        }
    }

    /// The agent leg was placed: remembered so it can be dropped if the caller leaves.
    pub async fn leg_placed(
        &self,
        tenant: &TenantId,
        call_id: &str,
        agent_id: &str,
        leg_sid: &str,
    ) -> anyhow::Result<()> {
        self.update_route(
            tenant,
            call_id,
            "SET leg_sid = :leg",
            "agent_id = :agent",
            [(":leg", leg_sid), (":agent", agent_id)],
        )
        .await
        .context("recording agent leg")?;
        Ok(())
    }

    /// The agent answered. `false` if the caller has left meanwhile (drop the leg).
    pub async fn answered(&self, tenant: &TenantId, call_id: &str, agent_id: &str) -> anyhow::Result<bool> {
        let values = [
            (":connected", RouteState::Connected.as_str()),
            (":ringing", RouteState::Ringing.as_str()),
            (":agent", agent_id),
        ];
        let condition = "agent_id = :agent AND route_state IN (:ringing, :connected)";
        self.update_route(tenant, call_id, "SET route_state = :connected", condition, values)
            .await
            .context("recording answer")
    }

    /// One conditional update of a call's route; `false` when the condition did not hold.
    async fn update_route<const N: usize>(
        &self,
        tenant: &TenantId,
        call_id: &str,
        update: &str,
        condition: &str,
        values: [(&str, &str); N],
    ) -> anyhow::Result<bool> {
        let mut request = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(route_sk(call_id)))
            .update_expression(update)
            .condition_expression(condition);
        for (name, value) in values {
            request = request.expression_attribute_values(name, s(value));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The agent leg of `call_id` ended (`answered`: the agent had taken the call). The
    /// agent is freed if this call still holds them; a missed call goes back in line in
    /// its old place, without that agent. One transaction, retried on a lost race.
    pub async fn leg_ended(
        &self,
        tenant: &TenantId,
        call_id: &str,
        agent_id: &str,
    ) -> anyhow::Result<(LegEnded, Option<Agent>)> {
        for _ in 0..MAX_PASSES {
            let (agent, route) = tokio::try_join!(self.agents.get(tenant, agent_id), self.route(tenant, call_id))?;
            let holds_agent = agent.as_ref().is_some_and(|a| a.current_call_id.as_deref() == Some(call_id));
            let route = route.filter(|r| r.agent_id.as_deref() == Some(agent_id));
            let mut items = Vec::new();
            let mut freed = None;
            if let (true, Some(agent)) = (holds_agent, &agent) {
                let mut idle = agent.clone();
                let missed = route.as_ref().is_some_and(|r| r.route_state == RouteState::Ringing);
                idle.transition(AgentState::Available, None, Utc::now());
                let (change, saved) =
                    self.agents.change(&idle, Some(agent), if missed { "call_missed" } else { "call_ended" })?;
                items.extend(change);
                freed = Some(saved);
            }
            let outcome = match &route {
                Some(r) if r.route_state == RouteState::Ringing => {
                    let mut entry = r.entry.clone();
                    entry.tried.push(agent_id.to_owned());
                    let back =
                        Route { route_state: RouteState::Queued, entry: entry.clone(), agent_id: None, leg_sid: None };
                    items.push(self.put_if(
                        self.route_item(tenant, &back)?,
                        "route_state = :ringing",
                        ":ringing",
                        RouteState::Ringing,
                    )?);
                    items.push(
                        TransactWriteItem::builder()
                            .put(
                                Put::builder()
                                    .table_name(&self.table)
                                    .set_item(Some(self.item(tenant, &entry.sk(), &entry)?))
                                    .build()?,
                            )
                            .build(),
                    );
                    LegEnded::Missed
                }
                Some(r) => {
                    items.push(self.delete_if(tenant, route_sk(call_id), Some(r.route_state))?);
                    LegEnded::Finished
                }
                None if freed.is_some() => LegEnded::Finished,
                None => return Ok((LegEnded::Stale, None)),
            };
            match self.transact(items).await {
                Ok(()) => return Ok((outcome, freed)),
                Err(AgentError::Changed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("the agent leg's end kept racing other writes")
    }

    /// The caller hung up (or was moved to the after-hours action). A waiting caller
    /// leaves the queue; a caller whose agent is still ringing marks the route ended and
    /// gets that leg back to drop. `Err` only from the store.
    pub async fn leave(&self, tenant: &TenantId, call_id: &str) -> anyhow::Result<Left> {
        for _ in 0..MAX_PASSES {
            let Some(route) = self.route(tenant, call_id).await? else { return Ok(Left::NotRouted) };
            let result = match route.route_state {
                RouteState::Queued => {
                    let items = vec![
                        self.delete_if(tenant, route.entry.sk(), None)?,
                        self.delete_if(tenant, route_sk(call_id), Some(RouteState::Queued))?,
                    ];
                    self.transact(items).await.map(|()| Left::Dequeued)
                }
                RouteState::Ringing => {
                    let mut ended = route.clone();
                    ended.route_state = RouteState::Ended;
                    let item = self.put_if(
                        self.route_item(tenant, &ended)?,
                        "route_state = :ringing",
                        ":ringing",
                        RouteState::Ringing,
                    )?;
                    self.transact(vec![item]).await.map(|()| Left::AgentRinging { leg_sid: route.leg_sid.clone() })
                }
                RouteState::Connected | RouteState::Ended => return Ok(Left::WithAgent),
            };
            match result {
                Ok(left) => return Ok(left),
                Err(AgentError::Changed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("leaving the queue kept racing other writes")
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), AgentError> {
        let mut tx = self.db.transact_write_items();
        for item in items {
            tx = tx.transact_items(item);
        }
        tx.send().await.map_err(refused)?;
        Ok(())
    }

    fn item<T: Serialize>(&self, tenant: &TenantId, sk: &str, value: &T) -> anyhow::Result<Item> {
        let mut item: Item = serde_dynamo::to_item(value)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(tenant)));
        item.insert("sk".into(), AttributeValue::S(sk.to_owned()));
        Ok(item)
    }

    fn route_item(&self, tenant: &TenantId, route: &Route) -> anyhow::Result<Item> {
        self.item(tenant, &route_sk(&route.entry.call_id), route)
    }

    fn put_new(&self, item: Item) -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    fn put_if(&self, item: Item, condition: &str, name: &str, state: RouteState) -> anyhow::Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_values(name, s(state.as_str()));
        Ok(TransactWriteItem::builder().put(put.build()?).build())
    }

    /// Deletes an item that must exist (`None`) or be a route in `state`.
    fn delete_if(&self, tenant: &TenantId, sk: String, state: Option<RouteState>) -> anyhow::Result<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(sk));
        let delete = match state {
            None => delete.condition_expression("attribute_exists(pk)"),
            Some(state) => delete
                .condition_expression("route_state = :seen")
                .expression_attribute_values(":seen", s(state.as_str())),
        };
        Ok(TransactWriteItem::builder().delete(delete.build()?).build())
    }
}

/// What leaving did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The caller was waiting and is out of the queue.
    Dequeued,
    /// An agent is being rung for the caller: drop that leg (its sid, once known).
    AgentRinging {
        leg_sid: Option<String>,
    },
    /// The caller is (or was) talking to an agent: the agent's leg ends with the call.
    WithAgent,
    NotRouted,
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_enqueue_time_within_their_department() {
        let early = entry_sk("q", 1_700_000_000_000, "b");
        let late = entry_sk("q", 1_700_000_000_001, "a");
        assert!(early < late);
        assert!(early.starts_with(&queued_prefix("q")));
        assert_eq!(early, "QUEUED#q#1700000000000#b");
        // Millisecond epochs keep 13 digits until the year 2286.
        assert_eq!(entry_sk("q", 5, "c"), "QUEUED#q#0000000000005#c");
    }
}
