//! What `api-webhook-deliveries` does: list a tenant's deliveries, show one with its
//! attempts, and replay one event or every event of a time range.
//!
//! A replay marks each delivery pending again and queues a fresh job (attempt 0) with
//! the same event id, so the CRM gets the same `webhook-id` and can deduplicate. Any
//! delivery can be replayed: delivered (the CRM lost it), failed or gone (the endpoint
//! is fixed: PUT the settings first, which turns a disabled webhook back on), skipped
//! (the webhook was not configured yet).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{
    WebhookEvent,
    store::{Delivery, DeliveryStatus, Filter, Order, Position},
};
use crate::{
    AppContext,
    audit::AuditEntry,
    calls::{
        self,
        list::{Bound, parse_date},
    },
    edge::{self, ApiError},
    outbox,
    tenants::TenantId,
};

pub const LIST_PARAMS: &[&str] = &["event_id", "status", "event", "call_id", "start_date", "end_date", "limit", "cursor"];
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Deliveries one replay request reopens at most; `next_cursor` continues.
pub const REPLAY_BATCH: usize = 200;

/// A listing's filters, from the query string or a replay body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub call_id: Option<String>,
}

impl Query {
    fn parse(get: impl Fn(&str) -> Option<String>) -> Result<Self, ApiError> {
        let status = get("status")
            .map(|raw| {
                DeliveryStatus::parse(&raw).ok_or_else(|| {
                    ApiError::invalid("status", "status must be one of pending, delivered, failed, gone, skipped")
                })
            })
            .transpose()?;
        let event = get("event")
            .map(|raw| {
                WebhookEvent::parse(&raw)
                    .map(|e| e.as_str().to_owned())
                    .ok_or_else(|| ApiError::invalid("event", "event must be call.status_update or call.recording_available"))
            })
            .transpose()?;
        let call_id = get("call_id").map(|raw| calls::parse_call_id(Some(&raw))).transpose()?;
        let from = get("start_date").map(|raw| parse_date("start_date", &raw, Bound::Start)).transpose()?;
        // `end_date` is inclusive (a date means its whole day); the store's range is not.
        let to = get("end_date").map(|raw| parse_date("end_date", &raw, Bound::End)).transpose()?.map(|t| t + TimeDelta::milliseconds(1));
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            return Err(ApiError::invalid("end_date", "end_date is before start_date"));
        }
        Ok(Self { filter: Filter { status, event, from, to }, call_id })
    }

    /// What a cursor is bound to: the tenant, the purpose and every filter.
    fn cursor_scope(&self, purpose: &str, tenant: &TenantId) -> String {
        let f = &self.filter;
        let time = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis().to_string()).unwrap_or_default();
        format!(
            "{purpose}|{tenant}|{}|{}|{}|{}",
            f.status.map(DeliveryStatus::as_str).unwrap_or_default(),
            f.event.as_deref().unwrap_or_default(),
            time(f.from),
            time(f.to),
        )
    }

    fn matches(&self, delivery: &Delivery) -> bool {
        let f = &self.filter;
        f.status.is_none_or(|s| s == delivery.status)
            && f.event.as_ref().is_none_or(|e| *e == delivery.event)
            && f.from.is_none_or(|t| delivery.occurred_at >= t)
            && f.to.is_none_or(|t| delivery.occurred_at < t)
    }
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub deliveries: Vec<Delivery>,
    pub count: usize,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct One {
    pub delivery: Delivery,
}

/// `GET`: one delivery with its attempts (`event_id`), or a page of summaries.
pub async fn get(ctx: &AppContext, tenant: &TenantId, params: &HashMap<String, String>) -> Result<serde_json::Value, ApiError> {
    if let Some(event_id) = params.get("event_id") {
        if let Some(other) = LIST_PARAMS.iter().find(|p| **p != "event_id" && params.contains_key(**p)) {
            return Err(ApiError::invalid(*other, format!("{other} cannot be combined with event_id")));
        }
        let delivery = one(ctx, tenant, event_id).await?;
        return Ok(serde_json::to_value(One { delivery }).map_err(anyhow::Error::from)?);
    }
    let query = Query::parse(|name| params.get(name).cloned())?;
    let limit = edge::limit_param(params, DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = list(ctx, tenant, &query, params.get("cursor").map(String::as_str), "deliveries", Order::NewestFirst, limit).await?;
    Ok(serde_json::to_value(page).map_err(anyhow::Error::from)?)
}

/// One page, newest or oldest first; a call's deliveries come in one page.
async fn list(
    ctx: &AppContext,
    tenant: &TenantId,
    query: &Query,
    cursor: Option<&str>,
    purpose: &str,
    order: Order,
    limit: usize,
) -> Result<Page, ApiError> {
    if let Some(call_id) = &query.call_id {
        if cursor.is_some() {
            return Err(ApiError::invalid("cursor", "a call's deliveries come in one page; cursor does not apply"));
        }
        let (_, events) =
            ctx.calls.details(tenant, call_id).await?.ok_or_else(|| ApiError::NotFound(format!("no call {call_id}")))?;
        let ids: Vec<String> = events.into_iter().rev().take(100).map(|e| e.id).collect();
        let mut deliveries: Vec<Delivery> =
            ctx.deliveries.get_many(tenant, &ids).await?.into_iter().filter(|d| query.matches(d)).collect();
        if order == Order::OldestFirst {
            deliveries.reverse();
        }
        deliveries.truncate(limit);
        for d in &mut deliveries {
            d.attempts.clear(); // a listing shows summaries, as the indexes do
        }
        return Ok(Page { count: deliveries.len(), deliveries, next_cursor: None });
    }
    let scope = query.cursor_scope(purpose, tenant);
    let after = cursor
        .map(|c| ctx.cursors.open::<Position>(&scope, c).map_err(|e| ApiError::invalid("cursor", e.to_string())))
        .transpose()?;
    let (deliveries, next) = ctx.deliveries.list(tenant, &query.filter, order, after, limit).await?;
    Ok(Page { count: deliveries.len(), deliveries, next_cursor: next.map(|p| ctx.cursors.seal(&scope, &p)) })
}

/// The delivery of one event, by the id the CRM saw as `webhook-id`.
async fn one(ctx: &AppContext, tenant: &TenantId, raw_event_id: &str) -> Result<Delivery, ApiError> {
    let event_id = parse_event_id(raw_event_id)?;
    ctx.deliveries
        .get(tenant, &event_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no delivery of event {event_id}")))
}

fn parse_event_id(raw: &str) -> Result<String, ApiError> {
    let valid = !raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    valid.then(|| raw.to_owned()).ok_or_else(|| ApiError::invalid("event_id", "event_id is not a valid event id"))
}

/// A replay request: one event, or the deliveries of a time range (optionally only
/// those with one status or event type), [`REPLAY_BATCH`] per request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    event_id: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
    status: Option<String>,
    event: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    pub replayed: usize,
    pub event_ids: Vec<String>,
    /// Set when the range holds more: POST the same body with this cursor.
    pub next_cursor: Option<String>,
}

/// `POST`: reopens the deliveries and queues them again; audited as `webhook.replay`.
pub async fn replay(ctx: &AppContext, tenant: &TenantId, actor: &str, input: ReplayInput) -> Result<Replayed, ApiError> {
    let (deliveries, next_cursor) = match input.event_id.as_deref() {
        Some(event_id) => {
            let others = [("start_date", &input.start_date), ("end_date", &input.end_date), ("status", &input.status), ("event", &input.event), ("cursor", &input.cursor)];
            if let Some((name, _)) = others.iter().find(|(_, v)| v.is_some()) {
                return Err(ApiError::invalid(*name, format!("{name} cannot be combined with event_id")));
            }
            (vec![one(ctx, tenant, event_id).await?], None)
        }
        None => {
            for (name, value) in [("start_date", &input.start_date), ("end_date", &input.end_date)] {
                if value.is_none() {
                    return Err(ApiError::invalid(name, format!("{name} is required (or give event_id)")));
                }
            }
            let fields = HashMap::from([
                ("start_date", input.start_date.clone()),
                ("end_date", input.end_date.clone()),
                ("status", input.status.clone()),
                ("event", input.event.clone()),
            ]);
            let query = Query::parse(|name| fields.get(name).cloned().flatten())?;
            let page = list(ctx, tenant, &query, input.cursor.as_deref(), "replay", Order::OldestFirst, REPLAY_BATCH).await?;
            (page.deliveries, page.next_cursor)
        }
    };

    let mut entry = AuditEntry::new(tenant, "webhook.replay", actor, None);
    entry.detail.insert("event_ids".into(), deliveries.iter().map(|d| d.event_id.clone()).collect());
    ctx.audit.record(&entry).await?;
    let now = Utc::now();
    let mut reopened = Vec::with_capacity(deliveries.len());
    for chunk in deliveries.chunks(16) {
        let done = futures::future::try_join_all(chunk.iter().map(|d| ctx.deliveries.reopen(tenant, &d.event_id, now))).await?;
        reopened.extend(done.into_iter().flatten());
    }
    let jobs: Vec<outbox::DeliveryJob> = reopened.iter().map(|d| d.job(tenant)).collect();
    let queue = ctx.config.crm_delivery_queue_url.as_deref().ok_or_else(|| anyhow::anyhow!("CRM_DELIVERY_QUEUE_URL is not set"))?;
    let refused = outbox::enqueue(ctx.aws.sqs(), queue, &jobs).await?;
    if !refused.is_empty() {
        return Err(anyhow::anyhow!("the queue refused {} of {} replays", refused.len(), jobs.len()).into());
    }
    Ok(Replayed { replayed: jobs.len(), event_ids: jobs.into_iter().map(|j| j.event_id).collect(), next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Query, ApiError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Query::parse(|name| map.get(name).map(|v| v.to_string()))
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn filters_are_validated_by_name() {
        assert_eq!(field(parse(&[("status", "done")]).unwrap_err()), "status");
        assert_eq!(field(parse(&[("event", "call.created")]).unwrap_err()), "event");
        assert_eq!(field(parse(&[("start_date", "monday")]).unwrap_err()), "start_date");
        assert_eq!(field(parse(&[("start_date", "2026-02-02"), ("end_date", "2026-02-01")]).unwrap_err()), "end_date");
        assert_eq!(field(parse_event_id("a b").unwrap_err()), "event_id");
        assert_eq!(field(parse_event_id(&"x".repeat(129)).unwrap_err()), "event_id");
    }

    #[test]
    fn an_end_date_covers_its_whole_day() {
        let q = parse(&[("start_date", "2026-02-01"), ("end_date", "2026-02-01"), ("status", "failed")]).unwrap();
        assert_eq!(q.filter.from.unwrap().to_rfc3339(), "2026-02-01T00:00:00+00:00");
        assert_eq!(q.filter.to.unwrap().to_rfc3339(), "2026-02-02T00:00:00+00:00");
        assert_eq!(q.filter.status, Some(DeliveryStatus::Failed));
    }

    #[test]
    fn cursors_are_bound_to_purpose_tenant_and_filters() {
        let tenant = TenantId::generate();
        let a = parse(&[("status", "failed")]).unwrap();
        let b = parse(&[("status", "pending")]).unwrap();
        assert_ne!(a.cursor_scope("deliveries", &tenant), b.cursor_scope("deliveries", &tenant));
        assert_ne!(a.cursor_scope("deliveries", &tenant), a.cursor_scope("replay", &tenant));
        assert_ne!(a.cursor_scope("deliveries", &tenant), a.cursor_scope("deliveries", &TenantId::generate()));
    }
}
