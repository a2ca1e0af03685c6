//! The calls table: a call (`T#<tenant>#C#<id>` / `CALL`) and its timeline
//! (`… / E#<time>#<event id>`) share one item collection, so a call's details are one
//! Query; the tenant in the partition key makes another tenant's id simply absent.
//! Listing goes through the tenant-scoped GSIs described in `list`.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, PutRequest, TransactWriteItem, WriteRequest},
};
use serde::{Deserialize, Serialize};

use super::{
    list::{BY_AGENT, BY_DEPARTMENT, BY_DIRECTION, BY_STATUS, BY_TENANT, ListQuery, started_key_prefix},
    model::{Call, CallEvent},
};
use crate::tenants::TenantId;

type Item = HashMap<String, AttributeValue>;

const CALL_SK: &str = "CALL";
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
    format!("E#{}#{}", started_key_prefix(&event.occurred_at), event.id)
}

/// Where a page ended: enough to rebuild DynamoDB's ExclusiveStartKey on any index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "i")]
    pub call_id: String,
    #[serde(rename = "k")]
    pub started_key: String,
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

    fn event_item(tenant: &TenantId, event: &CallEvent) -> anyhow::Result<Item> {
        let mut item: Item = serde_dynamo::to_item(event)?;
        item.insert("pk".into(), AttributeValue::S(call_pk(tenant, &event.call_id)));
        item.insert("sk".into(), AttributeValue::S(event_sk(event)));
        item.insert("tenant_id".into(), AttributeValue::S(tenant.to_string()));
        Ok(item)
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
}

fn position_of(key: &Item) -> Option<Position> {
    let started_key = key.get("started_key")?.as_s().ok()?.clone();
    let call_id = started_key.rsplit_once('#')?.1.to_owned();
    Some(Position { call_id, started_key })
}
