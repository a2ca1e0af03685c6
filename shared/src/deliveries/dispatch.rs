//! Delivering one call event to its tenant's CRM, and remembering every attempt.
//!
//! A job is attempted, then retried on the [`SCHEDULE`] until one attempt answers 2xx
//! within [`REQUEST_TIMEOUT`]; after the last it goes to the dead-letter queue. SQS
//! delays a message 15 minutes at most, so a longer wait is a chain of hops: the job is
//! re-sent with `not_before` and re-sent again until that time has come. `410 Gone`
//! turns the tenant's webhook off. The delivery item (`DELIVERY#<tenant>` / event id)
//! keeps the outcome and the last [`KEPT_ATTEMPTS`] attempts.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{CallWebhook, header, signature_header, x_signature};
use crate::{calls::model::ts, outbox::DeliveryJob, tenants::TenantId};

/// The waits before each retry: minutes at first, for a blip, then hours, for an outage.
pub const SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// A CRM that has not answered by then has not received the event.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// SQS's largest `DelaySeconds`.
const MAX_HOP: Duration = Duration::from_secs(900);
/// A `Retry-After` beyond the schedule's longest wait is not believed, so a CRM cannot
/// park a delivery past the queue's retention.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);
const EXCERPT_BYTES: usize = 512;
pub const KEPT_ATTEMPTS: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    Skipped(String),
    Gone,
    /// Try again after `after`; the next hop carries `attempt` (attempts made so far).
    Retry { after: Duration, attempt: u32 },
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    Gone,
    Skipped,
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

/// Where one event's delivery stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub status: DeliveryStatus,
    pub event: String,
    pub call_id: String,
    #[serde(default)]
    pub attempts: Vec<DeliveryAttempt>,
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeliveryStore {
    db: Client,
    table: String,
}

fn key(tenant: &TenantId, event_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("DELIVERY#{tenant}"))),
        ("sk".to_owned(), AttributeValue::S(event_id.to_owned())),
    ])
}

impl DeliveryStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// Strongly consistent: the dedup check must see the last attempt's outcome.
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

    /// Writes the delivery, unless it is already delivered (a duplicate job racing a
    /// successful one must not turn it back to pending).
    async fn save(&self, tenant: &TenantId, event_id: &str, delivery: &Delivery) -> anyhow::Result<()> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(delivery)?;
        item.extend(key(tenant, event_id));
        let result = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#status) OR #status <> :delivered")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":delivered", AttributeValue::S("delivered".into()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(anyhow::Error::from(e).context("saving delivery")),
        }
    }
}

/// The client deliveries are POSTed with: no redirects, since a CRM's redirect would
/// carry the bearer token and signed call data somewhere the tenant did not configure.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build()
}

/// Attempts `job` once (or not at all: already delivered, not yet due, nothing to send).
pub async fn deliver(
    ctx: &crate::AppContext,
    http: &reqwest::Client,
    job: &DeliveryJob,
    now: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    if let Some(remaining) = job.not_before.and_then(|t| (t - now).to_std().ok()).filter(|d| !d.is_zero()) {
        return Ok(Outcome::Retry { after: remaining, attempt: job.attempt });
    }
    let tenant_id = &job.tenant_id;
    let previous = ctx.deliveries.get(tenant_id, &job.event_id).await?;
    // At-least-once queues redeliver: a finished delivery is never POSTed again.
    match previous.as_ref().map(|d| d.status) {
        Some(DeliveryStatus::Delivered) => return Ok(Outcome::Delivered),
        Some(DeliveryStatus::Gone) => return Ok(Outcome::Gone),
        Some(DeliveryStatus::Failed) => return Ok(Outcome::Failed),
        _ => {}
    }
    let mut delivery = previous.unwrap_or_else(|| Delivery {
        status: DeliveryStatus::Pending,
        event: job.kind.clone(),
        call_id: job.call_id.clone(),
        attempts: Vec::new(),
        next_attempt_at: None,
        reason: None,
    });

    let settings = ctx.settings.get_record(tenant_id).await?;
    let webhook_settings = &settings.settings;
    let Some(url) = webhook_settings.crm_webhook_url.as_deref() else {
        return skipped(ctx, job, delivery, "no CRM webhook URL").await;
    };
    if !webhook_settings.crm_webhook_enabled {
        return skipped(ctx, job, delivery, "CRM webhook disabled").await;
    }
    if !webhook_settings.crm_webhook_events.contains(&job.kind) {
        return skipped(ctx, job, delivery, "event not subscribed").await;
    }
    let secrets = settings.signing_secrets(now);
    // Seed 003's receivers compare one value, and during a rotation they still hold the
    // old secret: the oldest valid one signs X-Signature.
    let Some(oldest) = secrets.last() else { return skipped(ctx, job, delivery, "no signing secret").await };
    let (call, event, tenant) = tokio::try_join!(
        ctx.calls.get(tenant_id, &job.call_id),
        ctx.calls.event(tenant_id, &job.call_id, &job.occurred_at, &job.event_id),
        ctx.tenants.get(tenant_id),
    )?;
    let (Some(call), Some(event), Some(tenant)) = (call, event, tenant) else {
        return skipped(ctx, job, delivery, "call, event or tenant not found").await;
    };
    let webhook = match CallWebhook::new(&call, &event, &tenant) {
        Ok(webhook) => webhook,
        Err(e) => return skipped(ctx, job, delivery, &e.to_string()).await,
    };

    let body = webhook.render();
    let timestamp = now.timestamp();
    let mut request = http
        .post(url)
        .timeout(REQUEST_TIMEOUT)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(header::X_WEBHOOK_EVENT, webhook.event().as_str())
        .header(header::X_CALL_ID, webhook.call_id())
        .header(header::X_SIGNATURE, x_signature(oldest.expose_secret().as_bytes(), &body))
        .header(header::WEBHOOK_ID, webhook.event_id())
        .header(header::WEBHOOK_TIMESTAMP, timestamp.to_string())
        .header(header::WEBHOOK_SIGNATURE, signature_header(&secrets, webhook.event_id(), timestamp, &body));
    if let Some(token) = &settings.crm_webhook_token {
        request = request.bearer_auth(token.expose_secret());
    }
    let started = std::time::Instant::now();
    let (status, retry_after, excerpt, error) = match request.body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
            let (excerpt, error) = match read_excerpt(response).await {
                Ok(excerpt) => (excerpt, None),
                Err(e) => (String::new(), Some(format!("reading response: {e}"))),
            };
            (Some(status), retry_after, excerpt, error)
        }
        Err(e) => (None, None, String::new(), Some(if e.is_timeout() { "timed out".to_owned() } else { format!("{e}") })),
    };
    delivery.attempts.push(DeliveryAttempt {
        at: now,
        status_code: status,
        latency_ms: started.elapsed().as_millis() as u64,
        response_excerpt: excerpt,
        error,
    });
    let overflow = delivery.attempts.len().saturating_sub(KEPT_ATTEMPTS);
    delivery.attempts.drain(..overflow);
    (delivery.next_attempt_at, delivery.reason) = (None, None);

    let attempt = job.attempt + 1;
    let outcome = match status {
        Some(200..=299) => {
            delivery.status = DeliveryStatus::Delivered;
            Outcome::Delivered
        }
        Some(410) => {
            ctx.settings.disable_webhook(tenant_id, url).await?;
            delivery.status = DeliveryStatus::Gone;
            Outcome::Gone
        }
        _ => match SCHEDULE.get(job.attempt as usize) {
            Some(wait) => {
                let after = backoff(*wait, ctx.config.delivery_delay_scale).max(retry_after.unwrap_or_default());
                delivery.status = DeliveryStatus::Pending;
                delivery.next_attempt_at = Some(now + after);
                Outcome::Retry { after, attempt }
            }
            None => {
                dead_letter(ctx, &DeliveryJob { attempt, not_before: None, ..job.clone() }).await?;
                delivery.status = DeliveryStatus::Failed;
                Outcome::Failed
            }
        },
    };
    ctx.deliveries.save(tenant_id, &job.event_id, &delivery).await?;
    Ok(outcome)
}

/// Records why `job` is not sent; the queue is done with it.
async fn skipped(ctx: &crate::AppContext, job: &DeliveryJob, mut delivery: Delivery, reason: &str) -> anyhow::Result<Outcome> {
    (delivery.status, delivery.reason, delivery.next_attempt_at) = (DeliveryStatus::Skipped, Some(reason.to_owned()), None);
    ctx.deliveries.save(&job.tenant_id, &job.event_id, &delivery).await?;
    Ok(Outcome::Skipped(reason.to_owned()))
}

/// A schedule step, scaled, with ±10% jitter so retries after a CRM outage spread out
/// instead of arriving together.
fn backoff(wait: Duration, scale: f64) -> Duration {
    wait.mul_f64(scale * rand::rng().random_range(0.9..=1.1))
}

/// Reads at most [`EXCERPT_BYTES`] of the body (a CRM's huge or endless answer is not
/// waited for), as text cut on a character boundary.
async fn read_excerpt(mut response: reqwest::Response) -> reqwest::Result<String> {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES
        && let Some(chunk) = response.chunk().await?
    {
        bytes.extend_from_slice(&chunk);
    }
    Ok(excerpt(&bytes))
}

fn excerpt(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]).into_owned();
    text.truncate(text.floor_char_boundary(EXCERPT_BYTES));
    text
}

/// Sends the next hop of `job`: due `after` from now, delayed by SQS for up to 15 minutes
/// (the receiver re-sends it until `not_before`).
pub async fn schedule(ctx: &crate::AppContext, job: &DeliveryJob, after: Duration) -> anyhow::Result<()> {
    let queue = ctx.config.crm_delivery_queue_url.as_deref().context("CRM_DELIVERY_QUEUE_URL is not set")?;
    let next = DeliveryJob { not_before: Some(Utc::now() + after), ..job.clone() };
    let delay = after.min(MAX_HOP).as_secs_f64().ceil() as i32;
    ctx.aws
        .sqs()
        .send_message()
        .queue_url(queue)
        .message_body(serde_json::to_string(&next)?)
        .delay_seconds(delay)
        .send()
        .await
        .context("scheduling delivery retry")?;
    Ok(())
}

async fn dead_letter(ctx: &crate::AppContext, job: &DeliveryJob) -> anyhow::Result<()> {
    let queue = ctx.config.crm_delivery_dlq_url.as_deref().context("CRM_DELIVERY_DLQ_URL is not set")?;
    ctx.aws
        .sqs()
        .send_message()
        .queue_url(queue)
        .message_body(serde_json::to_string(job)?)
        .send()
        .await
        .context("dead-lettering delivery")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_bounded_and_cut_on_a_character_boundary() {
        let body = "é".repeat(400);
        let cut = excerpt(body.as_bytes());
        assert_eq!(cut.len(), 512);
        assert!(cut.chars().all(|c| c == 'é'));
        let odd = format!("x{body}");
        let cut = excerpt(odd.as_bytes());
        assert!(cut.len() <= 512 && cut.starts_with("xé"));
        assert!(!cut.contains('\u{FFFD}'), "a split character is dropped, not replaced");
        assert_eq!(excerpt(b"ok"), "ok");
    }

    #[test]
    fn backoff_is_scaled_with_ten_percent_jitter() {
        for (wait, scale) in SCHEDULE.iter().zip([1.0, 0.001, 0.5, 1.0, 1.0, 1.0, 0.01]) {
            let got = backoff(*wait, scale).as_secs_f64();
            let expected = wait.as_secs_f64() * scale;
            assert!((expected * 0.9 - 1e-9..=expected * 1.1 + 1e-9).contains(&got), "{got} vs {expected}");
        }
    }
}
