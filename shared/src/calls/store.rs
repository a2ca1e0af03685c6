//! The calls table: a call (`T#<tenant>#C#<id>` / `CALL`) and its timeline
//! (`… / E#<time>#<event id>`) share one item collection, so a call's details are one
//! Query; the tenant in the partition key makes another tenant's id simply absent.
//! Listing goes through the tenant-scoped GSIs described in `list`.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    types::{AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    lifecycle::{Applied, StatusReport, event_id_for},
    list::{BY_AGENT, BY_DEPARTMENT, BY_DIRECTION, BY_STATUS, BY_TENANT, ListQuery, started_key_prefix},
    model::{Call, CallEvent, CallStatus},
};
use crate::tenants::TenantId;

type Item = HashMap<String, AttributeValue>;

const CALL_SK: &str = "CALL";
/// The tenant's event log: every event item, by commit time.
pub const EVENT_LOG: super::list::Index = super::list::Index { name: "by-tenant-events", key: "tenant_events_pk" };
/// A Query reads at most this many items per request when a filter expression may
/// discard some; enough to fill a page in one request for typical selectivity.
const FILTERED_READ: i32 = 1000;
/// Bound on Queries per page when a sparse filter keeps discarding items: past it, the
/// page is returned short with a cursor that resumes where the reads stopped.
const MAX_QUERIES_PER_PAGE: usize = 8;
/// Bound on a call's timeline read by `details`.
const MAX_TIMELINE_PAGES: usize = 10;

fn call_pk(tenant: &TenantId, call_id: &str) -> String {
    format!("T#{tenant}#C#{call_id}")
}

fn event_sk(event: &CallEvent) -> String {
    event_key(&event.occurred_at, &event.id)
}

fn event_key(occurred_at: &DateTime<Utc>, event_id: &str) -> String {
    format!("E#{}#{event_id}", started_key_prefix(occurred_at))
}

/// Where a page ended: enough to rebuild DynamoDB's ExclusiveStartKey on any index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "i")]
    pub call_id: String,
    #[serde(rename = "k")]
    pub started_key: String,
}

/// Where a reader of the event log stopped: the last event's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogPosition {
    #[serde(rename = "c")]
    pub commit_key: String,
    #[serde(rename = "i")]
    pub call_id: String,
    #[serde(rename = "s")]
    pub sk: String,
}

#[derive(Debug)]
pub struct Page {
    pub calls: Vec<Call>,
    pub next: Option<Position>,
}

#[derive(Debug, Clone)]
pub struct CallStore {
    db: Client,
    table: String,
}

impl CallStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// The call item with the index keys that make each access pattern a Query.
    fn call_item(call: &Call) -> anyhow::Result<Item> {
        let tenant = &call.tenant_id;
        let mut item: Item = serde_dynamo::to_item(call)?;
        let mut key = |name: &str, value: String| item.insert(name.into(), AttributeValue::S(value));
        key("pk", call_pk(tenant, &call.id));
        key("sk", CALL_SK.into());
        key(BY_TENANT.key, tenant.to_string());
        key(BY_STATUS.key, format!("{tenant}#{}", call.status.as_str()));
        item.insert("status_rank".into(), AttributeValue::N(call.status.rank().to_string()));
        let mut key = |name: &str, value: String| item.insert(name.into(), AttributeValue::S(value));
        key(BY_DIRECTION.key, format!("{tenant}#{}", call.direction.as_str()));
        if let Some(agent) = &call.agent {
            key(BY_AGENT.key, format!("{tenant}#{}", agent.id));
        }
        if let Some(department) = &call.department {
            key(BY_DEPARTMENT.key, format!("{tenant}#{department}"));
        }
        key("started_key", format!("{}#{}", started_key_prefix(&call.started_at), call.id));
        Ok(item)
    }

    /// An event item, with the keys of the tenant's event log (`by-tenant-events`):
    /// ordered by commit time, which is when the item is written.
    fn event_item(tenant: &TenantId, event: &CallEvent) -> anyhow::Result<Item> {
        let mut item: Item = serde_dynamo::to_item(event)?;
        item.insert("pk".into(), AttributeValue::S(call_pk(tenant, &event.call_id)));
        item.insert("sk".into(), AttributeValue::S(event_sk(event)));
        item.insert("tenant_id".into(), AttributeValue::S(tenant.to_string()));
        item.insert(EVENT_LOG.key.into(), AttributeValue::S(tenant.to_string()));
        item.insert("commit_key".into(), AttributeValue::S(format!("{}#{}", started_key_prefix(&Utc::now()), event.id)));
        Ok(item)
    }

    /// The tenant's events in commit order after `after`, up to `limit`, committed
    /// before `horizon`: newer events are held back, so a writer whose clock runs a
    /// little behind cannot slip an event in behind a reader's cursor.
    pub async fn event_log(
        &self,
        tenant: &TenantId,
        after: Option<LogPosition>,
        horizon: chrono::DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<(LogPosition, CallEvent)>> {
        let start = after.map(|p| {
            HashMap::from([
                ("pk".to_owned(), AttributeValue::S(call_pk(tenant, &p.call_id))),
                ("sk".to_owned(), AttributeValue::S(p.sk)),
                (EVENT_LOG.key.to_owned(), AttributeValue::S(tenant.to_string())),
                ("commit_key".to_owned(), AttributeValue::S(p.commit_key)),
            ])
        });
        let out = self
            .db
            .query()
            .table_name(&self.table)
            .index_name(EVENT_LOG.name)
            .key_condition_expression("#pk = :pk AND commit_key < :horizon")
            .expression_attribute_names("#pk", EVENT_LOG.key)
            .expression_attribute_values(":pk", AttributeValue::S(tenant.to_string()))
            .expression_attribute_values(":horizon", AttributeValue::S(started_key_prefix(&horizon)))
            .set_exclusive_start_key(start)
            .limit(limit as i32)
            .send()
            .await
            .context("reading the event log")?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().context("event log key missing");
                let position = LogPosition { commit_key: text("commit_key")?, sk: text("sk")?, call_id: String::new() };
                let event: CallEvent = serde_dynamo::from_item(item).context("decoding call event")?;
                Ok((LogPosition { call_id: event.call_id.clone(), ..position }, event))
            })
            .collect()
    }

    /// Creates a call with its first events, atomically; an existing id is an error.
    pub async fn insert(&self, call: &Call, events: &[CallEvent]) -> anyhow::Result<()> {
        anyhow::ensure!(events.len() < 100, "a transaction holds at most 100 items");
        let put = |item: Item| -> anyhow::Result<TransactWriteItem> {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let mut tx = self.db.transact_write_items().transact_items(put(Self::call_item(call)?)?);
        for event in events {
            tx = tx.transact_items(put(Self::event_item(&call.tenant_id, event)?)?);
        }
        tx.send().await.context("inserting call")?;
        Ok(())
    }

    /// Applies a provider's status report: see `lifecycle`. One transaction, no read.
    pub async fn apply_status(&self, report: &StatusReport) -> anyhow::Result<Applied> {
        let tenant = &report.tenant_id;
        let call_id = report.call_id();
        let status = report.status;
        let event = CallEvent {
            id: event_id_for(&call_id, status),
            call_id: call_id.clone(),
            kind: "call.status_update".into(),
            status: Some(status),
            occurred_at: report.occurred_at,
            source: report.provider.into(),
            detail: report
                .sequence
                .map(|n| serde_json::Map::from_iter([("sequence_number".to_owned(), n.into())]))
                .unwrap_or_default(),
        };
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let at = super::model::ts::format(&report.occurred_at);
        let mut values: Item = HashMap::from([
            (":status".into(), s(status.as_str())),
            (":status_pk".into(), s(&format!("{tenant}#{}", status.as_str()))),
            (":rank".into(), AttributeValue::N(status.rank().to_string())),
            (":now".into(), s(&super::model::ts::format(&Utc::now()))),
            (":id".into(), s(&call_id)),
            (":tenant".into(), s(tenant.as_str())),
            (":provider".into(), s(report.provider)),
            (":sid".into(), s(&report.provider_call_sid)),
            (":direction".into(), s(report.direction.as_str())),
            (":direction_pk".into(), s(&format!("{tenant}#{}", report.direction.as_str()))),
            (":from".into(), s(report.from.as_str())),
            (":to".into(), s(report.to.as_str())),
            (":at".into(), s(&at)),
            (":started_key".into(), s(&format!("{}#{call_id}", started_key_prefix(&report.occurred_at)))),
            (":empty".into(), AttributeValue::M(HashMap::new())),
        ]);
        let mut set = vec![
            "#status = :status",
            "status_pk = :status_pk",
            "status_rank = :rank",
            "updated_at = :now",
            "id = if_not_exists(id, :id)",
            "tenant_id = if_not_exists(tenant_id, :tenant)",
            "tenant_pk = if_not_exists(tenant_pk, :tenant)",
            "provider = if_not_exists(provider, :provider)",
            "provider_call_sid = if_not_exists(provider_call_sid, :sid)",
            "direction = if_not_exists(direction, :direction)",
            "direction_pk = if_not_exists(direction_pk, :direction_pk)",
            "from_number = if_not_exists(from_number, :from)",
            "to_number = if_not_exists(to_number, :to)",
            "started_at = if_not_exists(started_at, :at)",
            "started_key = if_not_exists(started_key, :started_key)",
            "metadata = if_not_exists(metadata, :empty)",
        ];
        if let Some(name) = &report.caller_name {
            values.insert(":caller_name".into(), s(name));
            set.push("caller_name = if_not_exists(caller_name, :caller_name)");
        }
        if status == CallStatus::InProgress {
            set.push("answered_at = :at");
        }
        if status.is_terminal() {
            set.push("ended_at = :at");
            if let Some(duration) = report.duration_seconds {
                values.insert(":duration".into(), AttributeValue::N(duration.to_string()));
                set.push("duration_seconds = :duration");
            }
        }
        let pk = call_pk(tenant, &call_id);
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(CALL_SK))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression("attribute_not_exists(pk) OR status_rank < :rank")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .build()?;
        let put_event = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::event_item(tenant, &event)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()?;
        let result = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(put_event).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(Applied::Changed { call_id, event_id: event.id }),
            Err(SdkError::ServiceError(e)) if conditions_failed(e.err()) => Ok(Applied::Unchanged { call_id }),
            Err(e) => Err(anyhow::Error::from(e).context("applying call status")),
        }
    }

    /// Bulk import (demo data, migrations): batches of 25, unprocessed items retried.
    pub async fn insert_many(&self, calls: &[(Call, Vec<CallEvent>)]) -> anyhow::Result<()> {
        let mut requests = Vec::new();
        for (call, events) in calls {
            requests.push(Self::call_item(call)?);
            for event in events {
                requests.push(Self::event_item(&call.tenant_id, event)?);
            }
        }
        for chunk in requests.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item.clone())).build().expect("item set")).build())
                .collect();
            for attempt in 0..8u32 {
                if pending.is_empty() {
                    break;
                }
                let out = self
                    .db
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await
                    .context("batch-writing calls")?;
                pending = out.unprocessed_items.unwrap_or_default().remove(&self.table).unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
            anyhow::ensure!(pending.is_empty(), "batch write left {} items unprocessed", pending.len());
        }
        Ok(())
    }

    /// Files an existing call under its department and/or agent (and their indexes).
    pub async fn assign(
        &self,
        tenant: &TenantId,
        call_id: &str,
        department: Option<&str>,
        agent: Option<&super::model::AgentRef>,
    ) -> anyhow::Result<()> {
        let mut set = Vec::new();
        let mut update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(call_pk(tenant, call_id)))
            .key("sk", AttributeValue::S(CALL_SK.into()))
            .condition_expression("attribute_exists(pk)");
        if let Some(department) = department {
            set.push("#department = :dept, department_pk = :dept_pk");
            update = update
                .expression_attribute_names("#department", "department")
                .expression_attribute_values(":dept", AttributeValue::S(department.to_owned()))
                .expression_attribute_values(":dept_pk", AttributeValue::S(format!("{tenant}#{department}")));
        }
        if let Some(agent) = agent {
            // AGENT is a DynamoDB reserved word.
            set.push("#agent = :agent, agent_pk = :agent_pk");
            update = update
                .expression_attribute_names("#agent", "agent")
                .expression_attribute_values(":agent", AttributeValue::M(serde_dynamo::to_item(agent)?))
                .expression_attribute_values(":agent_pk", AttributeValue::S(format!("{tenant}#{}", agent.id)));
        }
        if set.is_empty() {
            return Ok(());
        }
        update.update_expression(format!("SET {}", set.join(", "))).send().await.context("assigning call")?;
        Ok(())
    }

    /// The read of a batch that wants the call item.
    pub fn read_call(&self, tenant: &TenantId, call_id: &str) -> (&str, Item) {
        let key = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(call_pk(tenant, call_id))),
            ("sk".to_owned(), AttributeValue::S(CALL_SK.into())),
        ]);
        (&self.table, key)
    }

    /// The read of a batch that wants one timeline entry (by what a delivery job carries).
    pub fn read_event(&self, tenant: &TenantId, call_id: &str, occurred_at: &DateTime<Utc>, event_id: &str) -> (&str, Item) {
        let key = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(call_pk(tenant, call_id))),
            ("sk".to_owned(), AttributeValue::S(event_key(occurred_at, event_id))),
        ]);
        (&self.table, key)
    }

    /// Just the call item (no timeline): one GetItem.
    pub async fn get(&self, tenant: &TenantId, call_id: &str) -> anyhow::Result<Option<Call>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(call_pk(tenant, call_id)))
            .key("sk", AttributeValue::S(CALL_SK.into()))
            .send()
            .await
            .context("reading call")?;
        out.item.map(serde_dynamo::from_item).transpose().context("decoding call")
    }

    /// One timeline entry by its key parts (what a delivery job carries): one GetItem.
    pub async fn event(
        &self,
        tenant: &TenantId,
        call_id: &str,
        occurred_at: &DateTime<Utc>,
        event_id: &str,
    ) -> anyhow::Result<Option<CallEvent>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(call_pk(tenant, call_id)))
            .key("sk", AttributeValue::S(event_key(occurred_at, event_id)))
            .send()
            .await
            .context("reading call event")?;
        out.item.map(serde_dynamo::from_item).transpose().context("decoding call event")
    }

    /// Records where a call's recording stands. `available` is written once per
    /// recording (a retried fetch changes nothing) and appends `event` with it; no other
    /// state ever replaces an available recording. Returns false if nothing changed.
    pub async fn set_recording(
        &self,
        tenant: &TenantId,
        call_id: &str,
        recording: &super::model::RecordingRef,
        event: Option<&CallEvent>,
    ) -> anyhow::Result<bool> {
        use super::model::RecordingStatus;
        let available = recording.status == RecordingStatus::Available;
        let condition = if available {
            "attribute_exists(pk) AND NOT (recording.#st = :available AND recording.recording_sid = :sid)"
        } else {
            "attribute_exists(pk) AND (attribute_not_exists(recording) OR recording.#st <> :available)"
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(call_pk(tenant, call_id)))
            .key("sk", AttributeValue::S(CALL_SK.into()))
            .update_expression("SET recording = :r")
            .condition_expression(condition)
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":r", AttributeValue::M(serde_dynamo::to_item(recording)?))
            .expression_attribute_values(":available", AttributeValue::S("available".into()));
        if available {
            let sid = recording.recording_sid.clone().unwrap_or_default();
            update = update.expression_attribute_values(":sid", AttributeValue::S(sid));
        }
        let mut tx = self.db.transact_write_items().transact_items(TransactWriteItem::builder().update(update.build()?).build());
        if let Some(event) = event {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(Self::event_item(tenant, event)?))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            tx = tx.transact_items(TransactWriteItem::builder().put(put).build());
        }
        match tx.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if conditions_failed(e.err()) => {
                anyhow::ensure!(self.get(tenant, call_id).await?.is_some(), "call {call_id} does not exist");
                Ok(false)
            }
            Err(e) => Err(anyhow::Error::from(e).context("recording the recording")),
        }
    }

    /// A call and its whole timeline in order, or `None` if this tenant has no such call.
    pub async fn details(&self, tenant: &TenantId, call_id: &str) -> anyhow::Result<Option<(Call, Vec<CallEvent>)>> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        for _ in 0..MAX_TIMELINE_PAGES {
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(call_pk(tenant, call_id)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("querying call")?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        // "CALL" sorts before "E#…", so the call comes first, then events in time order.
        let mut items = items.into_iter();
        let Some(first) = items.next() else { return Ok(None) };
        if first.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) != Some(CALL_SK) {
            return Ok(None);
        }
        let call: Call = serde_dynamo::from_item(first).context("decoding call")?;
        let events = items
            .map(|item| serde_dynamo::from_item(item).context("decoding call event"))
            .collect::<anyhow::Result<Vec<CallEvent>>>()?;
        Ok(Some((call, events)))
    }

    /// One page of the tenant's calls, newest first. A single-filter page is exactly one
    /// Query (it asks for one item more than the page to know whether another exists).
    pub async fn list(&self, tenant: &TenantId, query: &ListQuery, after: Option<Position>) -> anyhow::Result<Page> {
        let keys = query.key_conditions(tenant);
        let (index, partition) = &keys[0];
        let mut values: Item = HashMap::new();
        let mut names: HashMap<String, String> = HashMap::new();
        names.insert("#pk".into(), index.key.into());
        values.insert(":pk".into(), AttributeValue::S(partition.clone()));
        let mut key_condition = "#pk = :pk".to_owned();
        let lo = query.start.map(|t| started_key_prefix(&t));
        // '~' sorts after every character of a call id, so the end instant is inclusive.
        let hi = query.end.map(|t| format!("{}#~", started_key_prefix(&t)));
        match (lo, hi) {
            (Some(lo), Some(hi)) => {
                key_condition.push_str(" AND started_key BETWEEN :lo AND :hi");
                values.insert(":lo".into(), AttributeValue::S(lo));
                values.insert(":hi".into(), AttributeValue::S(hi));
            }
            (Some(lo), None) => {
                key_condition.push_str(" AND started_key >= :lo");
                values.insert(":lo".into(), AttributeValue::S(lo));
            }
            (None, Some(hi)) => {
                key_condition.push_str(" AND started_key <= :hi");
                values.insert(":hi".into(), AttributeValue::S(hi));
            }
            (None, None) => {}
        }
        let mut filters = Vec::new();
        for (i, (other, value)) in keys.iter().enumerate().skip(1) {
            names.insert(format!("#f{i}"), other.key.into());
            values.insert(format!(":f{i}"), AttributeValue::S(value.clone()));
            filters.push(format!("#f{i} = :f{i}"));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));

        let want = query.limit + 1;
        let mut calls: Vec<Call> = Vec::with_capacity(want);
        let mut start = after.map(|p| self.start_key(tenant, index.key, partition, p));
        let mut resume: Option<Position> = None;
        for _ in 0..MAX_QUERIES_PER_PAGE {
            let read = if filter.is_some() { FILTERED_READ } else { (want - calls.len()) as i32 };
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .index_name(index.name)
                .key_condition_expression(&key_condition)
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(read)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("querying calls")?;
            for item in out.items.unwrap_or_default() {
                calls.push(serde_dynamo::from_item(item).context("decoding call")?);
            }
            let last = out.last_evaluated_key.filter(|k| !k.is_empty());
            if calls.len() >= want {
                break;
            }
            match last {
                Some(key) => {
                    resume = position_of(&key);
                    start = Some(key);
                }
                None => {
                    resume = None;
                    break;
                }
            }
        }
        let next = if calls.len() > query.limit {
            calls.truncate(query.limit);
            calls.last().map(|c| Position {
                call_id: c.id.clone(),
                started_key: format!("{}#{}", started_key_prefix(&c.started_at), c.id),
            })
        } else {
            // Short page: either the end, or the read bound hit (resume where it stopped).
            resume
        };
        Ok(Page { calls, next })
    }

    fn start_key(&self, tenant: &TenantId, index_key: &str, partition: &str, p: Position) -> Item {
        HashMap::from([
            ("pk".into(), AttributeValue::S(call_pk(tenant, &p.call_id))),
            ("sk".into(), AttributeValue::S(CALL_SK.into())),
            (index_key.into(), AttributeValue::S(partition.to_owned())),
            ("started_key".into(), AttributeValue::S(p.started_key)),
        ])
    }

    /// The call with its conference state, or `None` if this tenant has no such call: one
    /// strongly consistent GetItem (a participant may have joined a moment ago).
    pub async fn get_with_conference(
        &self,
        tenant: &TenantId,
        call_id: &str,
    ) -> anyhow::Result<Option<(Call, super::model::ConferenceRef)>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(call_pk(tenant, call_id)))
            .key("sk", AttributeValue::S(CALL_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .context("reading call")?;
        let Some(item) = out.item else { return Ok(None) };
        let conference = serde_dynamo::from_item(item.clone()).context("decoding the call's conference")?;
        let call = serde_dynamo::from_item(item).context("decoding call")?;
        Ok(Some((call, conference)))
    }

    /// Records what a conference status callback says on the customer's call: one
    /// UpdateItem. A leg's join or leave applies only when newer (by Twilio's sequence
    /// number) than the last one applied to that leg, and a leave clears only the
    /// participant that left, so duplicates and late callbacks change nothing; an ended
    /// conference stays ended. Returns false when nothing changed (no such call included).
    pub async fn set_conference(
        &self,
        tenant: &TenantId,
        call_id: &str,
        report: &super::model::ConferenceReport,
    ) -> anyhow::Result<bool> {
        use super::model::ConferenceChange;
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let mut set = vec!["conference_sid = :cf", "conference_name = :name"];
        let mut remove = None;
        let mut condition = vec!["attribute_exists(pk)"];
        let mut names: HashMap<String, String> = HashMap::new();
        let mut values: Item =
            HashMap::from([(":cf".into(), s(&report.conference_sid)), (":name".into(), s(&report.conference_name))]);
        match &report.change {
            ConferenceChange::Started => {}
            ConferenceChange::Ended => set.push("ended_conference_sid = :cf"),
            ConferenceChange::Joined { leg, call_sid } | ConferenceChange::Left { leg, call_sid } => {
                names.insert("#leg".into(), format!("{}_call_sid", leg.label()));
                values.insert(":sid".into(), s(call_sid));
                if let Some(sequence) = report.sequence {
                    names.insert("#seq".into(), format!("{}_seq", leg.label()));
                    values.insert(":seq".into(), AttributeValue::N(sequence.to_string()));
                    set.push("#seq = :seq");
                    condition.push("(attribute_not_exists(#seq) OR #seq < :seq)");
                }
                if matches!(report.change, ConferenceChange::Joined { .. }) {
                    set.push("#leg = :sid");
                } else {
                    remove = Some("#leg");
                    condition.push("(attribute_not_exists(#leg) OR #leg = :sid)");
                }
            }
        }
        let mut expression = format!("SET {}", set.join(", "));
        if let Some(attribute) = remove {
            expression.push_str(&format!(" REMOVE {attribute}"));
        }
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&call_pk(tenant, call_id)))
            .key("sk", s(CALL_SK))
            .update_expression(expression)
            .condition_expression(condition.join(" AND "))
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(anyhow::Error::from(e).context("recording the call's conference")),
        }
    }

    /// Appends one event to a call's timeline (and so, through the outbox, to the CRM's
    /// feed). The same event twice is a no-op; returns false when it was already there.
    pub async fn append_event(&self, tenant: &TenantId, event: &CallEvent) -> anyhow::Result<bool> {
        let result = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::event_item(tenant, event)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(anyhow::Error::from(e).context("appending call event")),
        }
    }
}

/// A transaction cancelled only by failed conditions (not throttling or conflicts).
fn conditions_failed(err: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError) -> bool {
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e) = err
    else {
        return false;
    };
    let reasons = e.cancellation_reasons();
    !reasons.is_empty()
        && reasons.iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
        && reasons.iter().all(|r| matches!(r.code(), Some("ConditionalCheckFailed" | "None") | None))
}

fn position_of(key: &Item) -> Option<Position> {
    let started_key = key.get("started_key")?.as_s().ok()?.clone();
    let call_id = started_key.rsplit_once('#')?.1.to_owned();
    Some(Position { call_id, started_key })
}
