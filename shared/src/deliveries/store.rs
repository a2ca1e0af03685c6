//! Delivery records: where each event's delivery to its CRM stands, with its attempts.
//!
//! One item per event in the tenants table: pk `DELIVERY#<tenant>`, sk the event id, so
//! the dispatcher and `GET ?event_id=` read it with one GetItem. Two sparse indexes list
//! them newest first by `delivery_key` (`<occurred_at>#<event id>`):
//! - `deliveries-by-time` (pk, `delivery_key`): every delivery of a tenant;
//! - `deliveries-by-status` (`delivery_status_pk` = `DELIVERY#<tenant>#<status>`,
//!   `delivery_key`): the deliveries that are not delivered. Delivering removes the
//!   key, so the common case (delivered at the first attempt) writes one index entry.
//!
//! Both indexes project the summary, not the attempts: a page is small, and one
//! delivery's attempts are read from the item itself. Records expire after
//! [`KEPT_FOR`] (the table's TTL), like the queue messages they describe.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, ReturnValue},
};
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    calls::{list::started_key_prefix, model::ts},
    outbox::DeliveryJob,
    tenants::TenantId,
};

use crate::aws::Item;

pub const BY_TIME: &str = "deliveries-by-time";
pub const BY_STATUS: &str = "deliveries-by-status";
/// Attempts kept on a record (the count of all of them is kept too).
pub const KEPT_ATTEMPTS: usize = 20;
/// How long a delivery record is kept after its last change.
pub const KEPT_FOR: TimeDelta = TimeDelta::days(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; retried at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every attempt of the schedule failed; the job is in the dead-letter queue.
    Failed,
    /// The CRM answered `410 Gone`; the webhook was turned off.
    Gone,
    /// Not sent, for `reason` (no URL, webhook disabled, event not subscribed, …).
    Skipped,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 5] = [Self::Pending, Self::Delivered, Self::Failed, Self::Gone, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Gone => "gone",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished: the queue is done with it (a replay starts it again).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// One POST to the CRM as it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The response body's first bytes, cut on a character boundary.
    #[serde(default)]
    pub response_excerpt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where one event's delivery stands. In a listing `attempts` is empty (see
/// `last_attempt` and `attempt_count`); `GET ?event_id=` returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    /// `call.status_update`, `call.recording_available`, …
    pub event: String,
    pub call_id: String,
    #[serde(with = "ts")]
    pub occurred_at: DateTime<Utc>,
    pub status: DeliveryStatus,
    /// Every POST ever made for this event, replays included.
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<DeliveryAttempt>,
    /// The last [`KEPT_ATTEMPTS`], oldest first.
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "ts")]
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write: a write is based on the version it read.
    #[serde(default, skip_serializing)]
    pub version: u64,
}

impl Delivery {
    /// The job that delivers this event again from the first attempt.
    pub fn job(&self, tenant: &TenantId) -> DeliveryJob {
        DeliveryJob {
            tenant_id: tenant.clone(),
            call_id: self.call_id.clone(),
            event_id: self.event_id.clone(),
            kind: self.event.clone(),
            occurred_at: self.occurred_at,
            attempt: 0,
            not_before: None,
            since: None,
        }
    }
}

/// A change to one delivery's record.
#[derive(Debug, Clone)]
pub struct Update {
    pub status: DeliveryStatus,
    /// The POST just made, if one was.
    pub attempt: Option<DeliveryAttempt>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

impl Update {
    /// `previous` with this change: the attempt appended (past [`KEPT_ATTEMPTS`] the
    /// oldest goes, the count keeps them all). Delivered stays delivered: a duplicate
    /// job racing a successful one must not turn it back, only add its attempt.
    fn apply(&self, job: &DeliveryJob, previous: Option<Delivery>, now: DateTime<Utc>) -> Delivery {
        let mut d = previous.unwrap_or_else(|| Delivery {
            event_id: job.event_id.clone(),
            event: job.kind.clone(),
            call_id: job.call_id.clone(),
            occurred_at: job.occurred_at,
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            last_attempt: None,
            attempts: Vec::new(),
            next_attempt_at: None,
            reason: None,
            updated_at: now,
            version: 0,
        });
        if let Some(attempt) = &self.attempt {
            d.attempts.push(attempt.clone());
            let overflow = d.attempts.len().saturating_sub(KEPT_ATTEMPTS);
            d.attempts.drain(..overflow);
            d.attempt_count += 1;
            d.last_attempt = Some(attempt.clone());
        }
        if d.status != DeliveryStatus::Delivered {
            (d.status, d.next_attempt_at, d.reason) = (self.status, self.next_attempt_at, self.reason.clone());
        }
        d.updated_at = now;
        d
    }
}

/// Which deliveries a listing returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub status: Option<DeliveryStatus>,
    pub event: Option<String>,
    /// `occurred_at` in `[from, to)`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Where a listing stopped (DynamoDB's last evaluated key, sealed into a cursor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    event_id: String,
    delivery_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

#[derive(Debug, Clone)]
pub struct DeliveryStore {
    db: Client,
    table: String,
}

fn pk(tenant: &TenantId) -> String {
    format!("DELIVERY#{tenant}")
}

fn status_pk(tenant: &TenantId, status: DeliveryStatus) -> String {
    format!("DELIVERY#{tenant}#{}", status.as_str())
}

fn delivery_key(occurred_at: &DateTime<Utc>, event_id: &str) -> String {
    format!("{}#{event_id}", started_key_prefix(occurred_at))
}

fn key(tenant: &TenantId, event_id: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk(tenant))),
        ("sk".to_owned(), AttributeValue::S(event_id.to_owned())),
    ])
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn conditional_check_failed<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.code() == Some("ConditionalCheckFailedException")
}

impl DeliveryStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// Strongly consistent: the dispatcher's dedup check must see the last outcome.
    pub async fn get(&self, tenant: &TenantId, event_id: &str) -> anyhow::Result<Option<Delivery>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, event_id)))
            .consistent_read(true)
            .send()
            .await
            .context("reading delivery")?;
        out.item.map(serde_dynamo::from_item).transpose().context("decoding delivery")
    }

    /// The deliveries of these events (at most 100), newest first; unknown ids are absent.
    pub async fn get_many(&self, tenant: &TenantId, event_ids: &[String]) -> anyhow::Result<Vec<Delivery>> {
        let reads: Vec<(&str, Item)> = event_ids.iter().map(|id| (self.table.as_str(), key(tenant, id))).collect();
        let found = crate::aws::batch_get(&self.db, &reads).await.context("reading deliveries")?;
        let mut deliveries: Vec<Delivery> =
            found.into_iter().flatten().map(serde_dynamo::from_item).collect::<Result<_, _>>().context("decoding delivery")?;
        deliveries.sort_by(|a, b| (b.occurred_at, &b.event_id).cmp(&(a.occurred_at, &a.event_id)));
        Ok(deliveries)
    }

    /// The read of a batch that wants `tenant`'s delivery of `event_id`.
    pub fn read(&self, tenant: &TenantId, event_id: &str) -> (&str, Item) {
        (&self.table, key(tenant, event_id))
    }

    /// One page of the tenant's deliveries: on `deliveries-by-status` when a status other
    /// than delivered is asked for, else on `deliveries-by-time` (delivered and the event
    /// type are a filter, so a page may hold fewer than `limit`; the cursor goes on).
    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: &Filter,
        order: Order,
        after: Option<Position>,
        limit: usize,
    ) -> anyhow::Result<(Vec<Delivery>, Option<Position>)> {
        let indexed_status = filter.status.filter(|s| *s != DeliveryStatus::Delivered);
        let (index, hash_name, hash) = match indexed_status {
            Some(status) => (BY_STATUS, "delivery_status_pk", status_pk(tenant, status)),
            None => (BY_TIME, "pk", pk(tenant)),
        };
        let mut request = self
            .db
            .query()
            .table_name(&self.table)
            .index_name(index)
            .expression_attribute_names("#h", hash_name)
            .expression_attribute_values(":h", s(hash))
            .scan_index_forward(order == Order::OldestFirst)
            .limit(limit as i32);
        // A key is `<time>#<id>`, above its bare time prefix: `BETWEEN from AND to` holds
        // exactly the times in `[from, to)`.
        let range = match (filter.from, filter.to) {
            (Some(_), Some(_)) => Some("delivery_key BETWEEN :from AND :to"),
            (Some(_), None) => Some("delivery_key >= :from"),
            (None, Some(_)) => Some("delivery_key < :to"),
            (None, None) => None,
        };
        if let Some(from) = &filter.from {
            request = request.expression_attribute_values(":from", s(started_key_prefix(from)));
        }
        if let Some(to) = &filter.to {
            request = request.expression_attribute_values(":to", s(started_key_prefix(to)));
        }
        let condition = match range {
            Some(range) => format!("#h = :h AND {range}"),
            None => "#h = :h".to_owned(),
        };
        let mut filters = Vec::new();
        if filter.status == Some(DeliveryStatus::Delivered) {
            filters.push("#status = :status");
            request = request.expression_attribute_names("#status", "status").expression_attribute_values(":status", s("delivered"));
        }
        if let Some(event) = &filter.event {
            filters.push("#event = :event");
            request = request.expression_attribute_names("#event", "event").expression_attribute_values(":event", s(event.clone()));
        }
        if !filters.is_empty() {
            request = request.filter_expression(filters.join(" AND "));
        }
        if let Some(position) = after {
            let mut start = key(tenant, &position.event_id);
            start.insert("delivery_key".into(), s(position.delivery_key));
            if let Some(status) = indexed_status {
                start.insert("delivery_status_pk".into(), s(status_pk(tenant, status)));
            }
            request = request.set_exclusive_start_key(Some(start));
        }
        let out = request.key_condition_expression(condition).send().await.context("listing deliveries")?;
        let next = out.last_evaluated_key.and_then(|key| {
            let text = |name: &str| key.get(name).and_then(|v| v.as_s().ok()).cloned();
            Some(Position { event_id: text("sk")?, delivery_key: text("delivery_key")? })
        });
        let deliveries =
            out.items.unwrap_or_default().into_iter().map(serde_dynamo::from_item).collect::<Result<_, _>>().context("decoding delivery")?;
        Ok((deliveries, next))
    }

    /// Records a change for `job`'s event on top of `previous` (as read), creating the
    /// record on its first. A write based on a stale read (another job of the same
    /// event, or a replay, wrote in between) is refused by its version and redone on a
    /// fresh read, so no attempt is lost. One conditional PutItem when nothing raced.
    pub async fn record(&self, job: &DeliveryJob, mut previous: Option<Delivery>, update: Update, now: DateTime<Utc>) -> anyhow::Result<()> {
        let tenant = &job.tenant_id;
        for _ in 0..5 {
            let seen = previous.as_ref().map(|d| d.version);
            let delivery = update.apply(job, previous, now);
            let mut item: Item = serde_dynamo::to_item(&delivery).context("encoding delivery")?;
            item.extend(key(tenant, &job.event_id));
            item.insert("delivery_key".into(), s(delivery_key(&delivery.occurred_at, &delivery.event_id)));
            if delivery.status != DeliveryStatus::Delivered {
                item.insert("delivery_status_pk".into(), s(status_pk(tenant, delivery.status)));
            }
            item.insert("expires_at".into(), AttributeValue::N((now + KEPT_FOR).timestamp().to_string()));
            item.insert("version".into(), AttributeValue::N((seen.unwrap_or(0) + 1).to_string()));
            let request = self.db.put_item().table_name(&self.table).set_item(Some(item));
            let request = match seen {
                None => request.condition_expression("attribute_not_exists(pk)"),
                Some(version) => request
                    .condition_expression("version = :seen")
                    .expression_attribute_values(":seen", AttributeValue::N(version.to_string())),
            };
            match request.send().await {
                Ok(_) => return Ok(()),
                Err(e) if conditional_check_failed(&e) => previous = self.get(tenant, &job.event_id).await?,
                Err(e) => return Err(anyhow::Error::from(e).context("recording delivery")),
            }
        }
        anyhow::bail!("delivery {} kept changing under its writes", job.event_id)
    }

    /// Marks a known delivery pending again, for a replay; `None` if there is none.
    pub async fn reopen(&self, tenant: &TenantId, event_id: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Delivery>> {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, event_id)))
            .update_expression(
                "SET #status = :pending, delivery_status_pk = :status_pk, updated_at = :now, reason = :reason \
                 ADD version :one REMOVE next_attempt_at",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":status_pk", s(status_pk(tenant, DeliveryStatus::Pending)))
            .expression_attribute_values(":now", s(ts::format(&now)))
            .expression_attribute_values(":reason", s("replay requested"))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out.attributes.map(serde_dynamo::from_item).transpose().context("decoding delivery"),
            Err(e) if conditional_check_failed(&e) => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context("reopening delivery")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_pending_is_open() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.is_final(), status != DeliveryStatus::Pending);
        }
        assert_eq!(DeliveryStatus::parse("Delivered"), None);
    }

    fn attempt(code: u16) -> DeliveryAttempt {
        DeliveryAttempt { at: Utc::now(), status_code: Some(code), latency_ms: 3, response_excerpt: String::new(), error: None }
    }

    #[test]
    fn an_update_appends_its_attempt_keeps_a_window_and_never_undoes_delivered() {
        let job = DeliveryJob {
            tenant_id: TenantId::generate(),
            call_id: "c".into(),
            event_id: "e".into(),
            kind: "call.status_update".into(),
            occurred_at: Utc::now(),
            attempt: 0,
            not_before: None,
            since: None,
        };
        let now = Utc::now();
        let failed = |code| Update { status: DeliveryStatus::Pending, attempt: Some(attempt(code)), next_attempt_at: Some(now), reason: None };
        let mut d = failed(500).apply(&job, None, now);
        assert_eq!((d.status, d.attempt_count, d.attempts.len(), d.event_id.as_str()), (DeliveryStatus::Pending, 1, 1, "e"));
        for _ in 0..KEPT_ATTEMPTS + 5 {
            d = failed(503).apply(&job, Some(d), now);
        }
        assert_eq!((d.attempt_count as usize, d.attempts.len()), (KEPT_ATTEMPTS + 6, KEPT_ATTEMPTS));
        assert!(d.attempts.iter().all(|a| a.status_code == Some(503)), "the oldest went first");
        let delivered = Update { status: DeliveryStatus::Delivered, attempt: Some(attempt(200)), next_attempt_at: None, reason: None };
        d = delivered.apply(&job, Some(d), now);
        assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Delivered, None));
        // A late duplicate's failure adds its attempt and leaves the status alone.
        d = failed(500).apply(&job, Some(d), now);
        assert_eq!((d.status, d.next_attempt_at, d.last_attempt.unwrap().status_code), (DeliveryStatus::Delivered, None, Some(500)));
    }

    fn b_time(t: DateTime<Utc>) -> DateTime<Utc> {
        t + TimeDelta::milliseconds(1)
    }

    #[test]
    fn delivery_keys_sort_by_time_then_id() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let a = delivery_key(&t, "b");
        let b = delivery_key(&(t + TimeDelta::milliseconds(1)), "a");
        assert!(a < b && a.starts_with("2026-03-01T10:00:00.000Z#"));
        // `[from, to)` as `BETWEEN from AND to` on the bare prefixes.
        assert!(a >= started_key_prefix(&t) && a <= started_key_prefix(&b_time(t)));
        assert!(b > started_key_prefix(&b_time(t)), "a key at `to` is outside");
    }
}
