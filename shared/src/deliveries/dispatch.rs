//! Delivering one call event to its tenant's CRM, and remembering every attempt.
//!
//! A job is attempted, then retried on the [`SCHEDULE`] until one attempt answers 2xx
//! within [`REQUEST_TIMEOUT`]; after the last it goes to the dead-letter queue. SQS
//! delays a message 15 minutes at most, so a longer wait is a chain of hops: the job is
//! re-sent with `not_before` and re-sent again until that time has come. `410 Gone`
//! turns the tenant's webhook off. Every attempt is recorded (see [`super::store`]).
//!
//! One tenant's slow or silent CRM must not hold up the others' deliveries, which share
//! the queue and the dispatcher's concurrency. Two guards keep it to its own share:
//! - in each dispatcher process, a tenant has at most [`TENANT_IN_FLIGHT`] POSTs in
//!   flight; a job that finds them all outstanding for [`SLOW`] is deferred at once
//!   (re-queued, no attempt spent) instead of waiting beside them;
//! - across processes, a POST that times out pauses the tenant's webhook
//!   ([`WebhookPause`](crate::tenants::settings::WebhookPause)): its jobs are deferred
//!   until one probe gets an answer. Deferrals are bounded by the schedule's length.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::ExposeSecret;

pub use super::store::{Delivery, DeliveryAttempt, DeliveryStatus, DeliveryStore, KEPT_ATTEMPTS};
use super::{CallWebhook, header, signature_header, store::Update, x_signature};
use crate::{
    aws::Item,
    calls::{Call, CallEvent},
    outbox::DeliveryJob,
    tenants::{
        Tenant, TenantId,
        settings::{CallSettingsRecord, SettingsStore},
    },
};

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
pub const MAX_HOP: Duration = Duration::from_secs(900);
/// A `Retry-After` beyond the schedule's longest wait is not believed, so a CRM cannot
/// park a delivery past the queue's retention.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 3600);
const EXCERPT_BYTES: usize = 512;
/// POSTs one dispatcher process has in flight to one tenant's CRM at most.
pub const TENANT_IN_FLIGHT: usize = 4;
/// A POST unanswered this long is slow: jobs stop waiting for its slot.
pub const SLOW: Duration = Duration::from_secs(2);
/// How long a job waits for a slot of its tenant's at most: its batch waits with it.
const SLOT_WAIT: Duration = Duration::from_millis(500);
/// The first pause after a timeout; each failed probe doubles it, up to [`MAX_PAUSE`].
pub const PAUSE: Duration = Duration::from_secs(30);
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    Skipped(String),
    Gone,
    /// Try again after `after`; the next hop carries `attempt` (attempts made so far).
    Retry { after: Duration, attempt: u32 },
    /// Not attempted (the tenant's endpoint is slow or paused): queue it again after
    /// `after`, no attempt spent.
    Deferred { after: Duration, why: &'static str },
    Failed,
}

/// The client deliveries are POSTed with: no redirects, since a CRM's redirect would
/// carry the bearer token and signed call data somewhere the tenant did not configure.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::none()).build()
}

/// Built once per process: the HTTP client and the per-tenant in-flight bookkeeping.
#[derive(Debug)]
pub struct Dispatcher {
    http: reqwest::Client,
    in_flight: InFlight,
}

impl Dispatcher {
    pub fn new() -> reqwest::Result<Self> {
        Ok(Self { http: http_client()?, in_flight: InFlight::default() })
    }

    /// Attempts `job` once (or not at all: already delivered, not yet due, nothing to
    /// send, or deferred).
    pub async fn deliver(&self, ctx: &crate::AppContext, job: &DeliveryJob, now: DateTime<Utc>) -> anyhow::Result<Outcome> {
        self.deliver_all(ctx, std::slice::from_ref(job), now).await.pop().expect("one outcome per job")
    }

    /// Attempts a batch of jobs concurrently, one outcome per job in order. What they
    /// need from the store is read in one request for the whole batch.
    pub async fn deliver_all(&self, ctx: &crate::AppContext, jobs: &[DeliveryJob], now: DateTime<Utc>) -> Vec<anyhow::Result<Outcome>> {
        let wanted: Vec<&DeliveryJob> = jobs.iter().filter(|job| self.early_outcome(job, now).is_none()).collect();
        let mut loaded = match load_all(ctx, &wanted).await {
            Ok(loaded) => wanted.iter().map(|job| job.event_id.clone()).zip(loaded.into_iter().map(Some)).collect(),
            Err(e) => {
                // Each job reads for itself instead, and fails alone if that fails too.
                tracing::warn!(error = format!("{e:#}"), "batch read for deliveries");
                HashMap::new()
            }
        };
        let attempts = jobs.iter().map(|job| {
            let loaded = loaded.get_mut(&job.event_id).and_then(Option::take);
            self.deliver_loaded(ctx, job, loaded, now)
        });
        futures::future::join_all(attempts).await
    }

    /// What a job comes to without reading anything: not due yet, or its tenant's
    /// endpoint known (to this process) to be slow or paused.
    fn early_outcome(&self, job: &DeliveryJob, now: DateTime<Utc>) -> Option<Early> {
        if let Some(remaining) = job.not_before.and_then(|t| (t - now).to_std().ok()).filter(|d| !d.is_zero()) {
            return Some(Early::NotDue(remaining));
        }
        self.in_flight.known_unresponsive(&job.tenant_id).map(Early::Unresponsive)
    }

    async fn deliver_loaded(
        &self,
        ctx: &crate::AppContext,
        job: &DeliveryJob,
        loaded: Option<Loaded>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Outcome> {
        match self.early_outcome(job, now) {
            Some(Early::NotDue(after)) => return Ok(Outcome::Retry { after, attempt: job.attempt }),
            // What this process already knows defers a job before it costs a read.
            Some(Early::Unresponsive(after)) => return defer(ctx, job, None, after, "CRM endpoint slow or paused", now).await,
            None => {}
        }
        let tenant_id = &job.tenant_id;
        let Loaded { previous, settings, call, event, tenant } = match loaded {
            Some(loaded) => loaded,
            None => load_all(ctx, &[job]).await?.pop().expect("one per job"),
        };
        // At-least-once queues redeliver: a finished delivery is never POSTed again.
        match previous.as_ref().map(|d| d.status) {
            Some(DeliveryStatus::Delivered) => return Ok(Outcome::Delivered),
            Some(DeliveryStatus::Gone) => return Ok(Outcome::Gone),
            Some(DeliveryStatus::Failed) => return Ok(Outcome::Failed),
            _ => {}
        }

        let webhook_settings = &settings.settings;
        let skip = |reason: &'static str| skipped(ctx, job, previous.clone(), reason.to_owned(), now);
        let Some(url) = webhook_settings.crm_webhook_url.as_deref() else { return skip("no CRM webhook URL").await };
        if !webhook_settings.crm_webhook_enabled {
            return skip("CRM webhook disabled").await;
        }
        if !webhook_settings.crm_webhook_events.contains(&job.kind) {
            return skip("event not subscribed").await;
        }
        let secrets = settings.signing_secrets(now);
        // Seed 003's receivers compare one value, and during a rotation they still hold
        // the old secret: the oldest valid one signs X-Signature.
        let Some(oldest) = secrets.last() else { return skip("no signing secret").await };

        let pause = settings.pause;
        if let Some(until) = pause.until {
            if let Ok(left) = (until - now).to_std() {
                return defer(ctx, job, previous, left, "CRM endpoint paused", now).await;
            }
            // The pause is over: one delivery probes the endpoint, the rest wait for it.
            if !ctx.settings.claim_probe(tenant_id, until, now, REQUEST_TIMEOUT + SLOW).await? {
                return defer(ctx, job, previous, REQUEST_TIMEOUT, "CRM endpoint being probed", now).await;
            }
        }
        let (Some(call), Some(event), Some(tenant)) = (call, event, tenant) else {
            return skip("call, event or tenant not found").await;
        };
        let webhook = match CallWebhook::new(&call, &event, &tenant) {
            Ok(webhook) => webhook,
            Err(e) => return skipped(ctx, job, previous, e.to_string(), now).await,
        };

        let body = webhook.render();
        let timestamp = now.timestamp();
        let mut request = self
            .http
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
        // The slot covers the POST alone: the store's reads and writes are not the CRM's.
        let slot = match self.in_flight.enter(tenant_id).await {
            Ok(slot) => slot,
            Err(wait) => return defer(ctx, job, previous, wait, "CRM endpoint slow", now).await,
        };
        let started = Instant::now();
        let (status, retry_after, excerpt, error, timed_out) = match request.body(body).send().await {
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
                (Some(status), retry_after, excerpt, error, false)
            }
            Err(e) if e.is_timeout() => (None, None, String::new(), Some("timed out".to_owned()), true),
            // Without the URL: the tenant knows it, and it may carry a token of theirs.
            Err(e) => (None, None, String::new(), Some(error_chain(&e.without_url())), false),
        };
        drop(slot);
        let attempt = DeliveryAttempt {
            at: now,
            status_code: status,
            latency_ms: started.elapsed().as_millis() as u64,
            response_excerpt: excerpt,
            error,
        };

        // The breaker: silence pauses the endpoint (a failed probe, twice as long);
        // any answer ends a pause.
        if timed_out || (pause.until.is_some() && status.is_none()) {
            let window = match pause.window {
                Some(window) if pause.until.is_some() => (window * 2).min(MAX_PAUSE),
                _ => PAUSE,
            };
            let until = Utc::now() + scaled(window, ctx.config.delivery_delay_scale);
            ctx.settings.pause_webhook(tenant_id, url, until, window).await?;
            self.in_flight.paused(tenant_id, Instant::now() + scaled(window, ctx.config.delivery_delay_scale));
            tracing::warn!(tenant = %tenant_id, pause_secs = window.as_secs(), "CRM endpoint paused: no answer");
        } else if status.is_some() && pause.until.is_some() {
            self.in_flight.resumed(tenant_id);
            ctx.settings.resume_webhook(tenant_id).await?;
            tracing::info!(tenant = %tenant_id, "CRM endpoint answered: resumed");
        }

        let attempts_made = job.attempt + 1;
        let (delivery_status, next_attempt_at, outcome) = match status {
            Some(200..=299) => (DeliveryStatus::Delivered, None, Outcome::Delivered),
            Some(410) => {
                ctx.settings.disable_webhook(tenant_id, url).await?;
                (DeliveryStatus::Gone, None, Outcome::Gone)
            }
            _ => match SCHEDULE.get(job.attempt as usize) {
                Some(wait) => {
                    let after = backoff(*wait, ctx.config.delivery_delay_scale).max(retry_after.unwrap_or_default());
                    (DeliveryStatus::Pending, Some(now + after), Outcome::Retry { after, attempt: attempts_made })
                }
                None => {
                    dead_letter(ctx, &DeliveryJob { attempt: attempts_made, not_before: None, ..job.clone() }).await?;
                    (DeliveryStatus::Failed, None, Outcome::Failed)
                }
            },
        };
        let update = Update { status: delivery_status, attempt: Some(attempt), next_attempt_at, reason: None };
        ctx.deliveries.record(job, previous, update, now).await?;
        Ok(outcome)
    }
}

/// Everything one delivery reads, in one strongly consistent batch.
struct Loaded {
    previous: Option<Delivery>,
    settings: CallSettingsRecord,
    call: Option<Call>,
    event: Option<CallEvent>,
    tenant: Option<Tenant>,
}

enum Early {
    NotDue(Duration),
    Unresponsive(Duration),
}

/// What `jobs` need, in one read (a Lambda batch is 10 jobs: 50 keys at most, fewer
/// once a tenant's settings and profile are shared).
async fn load_all(ctx: &crate::AppContext, jobs: &[&DeliveryJob]) -> anyhow::Result<Vec<Loaded>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let reads: Vec<_> = jobs
        .iter()
        .flat_map(|job| {
            let tenant = &job.tenant_id;
            [
                ctx.deliveries.read(tenant, &job.event_id),
                ctx.settings.read(tenant),
                ctx.calls.read_call(tenant, &job.call_id),
                ctx.calls.read_event(tenant, &job.call_id, &job.occurred_at, &job.event_id),
                ctx.tenants.read(tenant),
            ]
        })
        .collect();
    let mut items = crate::aws::batch_get(&ctx.aws.dynamodb, &reads).await.context("reading what deliveries need")?.into_iter();
    let mut next = || items.next().flatten();
    jobs.iter()
        .map(|_| {
            Ok(Loaded {
                previous: decode(next(), "decoding delivery")?,
                settings: SettingsStore::record(next())?,
                call: decode(next(), "decoding call")?,
                event: decode(next(), "decoding call event")?,
                tenant: decode(next(), "decoding tenant")?,
            })
        })
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(item: Option<Item>, what: &'static str) -> anyhow::Result<Option<T>> {
    item.map(serde_dynamo::from_item).transpose().context(what)
}

/// Records why `job` is not sent; the queue is done with it.
async fn skipped(
    ctx: &crate::AppContext,
    job: &DeliveryJob,
    previous: Option<Delivery>,
    reason: String,
    now: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let update = Update { status: DeliveryStatus::Skipped, attempt: None, next_attempt_at: None, reason: Some(reason.clone()) };
    ctx.deliveries.record(job, previous, update, now).await?;
    Ok(Outcome::Skipped(reason))
}

/// Defers `job` by `after` (jittered), unless it has waited longer than the whole
/// retry schedule: then it has failed like a job whose every attempt failed.
async fn defer(
    ctx: &crate::AppContext,
    job: &DeliveryJob,
    previous: Option<Delivery>,
    after: Duration,
    why: &'static str,
    now: DateTime<Utc>,
) -> anyhow::Result<Outcome> {
    let patience = scaled(SCHEDULE.iter().sum(), ctx.config.delivery_delay_scale);
    let waited = job.since.and_then(|since| (now - since).to_std().ok()).unwrap_or_default();
    if waited <= patience {
        return Ok(Outcome::Deferred { after: jitter(after.max(Duration::from_millis(100))), why });
    }
    dead_letter(ctx, job).await?;
    let reason = format!("{why} for longer than the retry schedule");
    let update = Update { status: DeliveryStatus::Failed, attempt: None, next_attempt_at: None, reason: Some(reason) };
    ctx.deliveries.record(job, previous, update, now).await?;
    Ok(Outcome::Failed)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn scaled(wait: Duration, scale: f64) -> Duration {
    wait.mul_f64(scale)
}

/// ±10%, so retries after a CRM outage spread out instead of arriving together.
fn jitter(wait: Duration) -> Duration {
    wait.mul_f64(rand::rng().random_range(0.9..=1.1))
}

/// A schedule step, scaled, with jitter.
fn backoff(wait: Duration, scale: f64) -> Duration {
    jitter(scaled(wait, scale))
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

/// The SQS `DelaySeconds` of a hop towards a wait of `after`.
pub fn hop_delay(after: Duration) -> i32 {
    after.min(MAX_HOP).as_secs_f64().ceil() as i32
}

/// Sends the next hop of `job`: due `after` from now, delayed by SQS for up to 15 minutes
/// (the receiver re-sends it until `not_before`). `since` keeps when the job first
/// waited, which bounds deferrals.
pub async fn schedule(ctx: &crate::AppContext, job: &DeliveryJob, after: Duration) -> anyhow::Result<()> {
    let queue = ctx.config.crm_delivery_queue_url.as_deref().context("CRM_DELIVERY_QUEUE_URL is not set")?;
    let now = Utc::now();
    let next = DeliveryJob { not_before: Some(now + after), since: job.since.or(Some(now)), ..job.clone() };
    ctx.aws
        .sqs()
        .send_message()
        .queue_url(queue)
        .message_body(serde_json::to_string(&next)?)
        .delay_seconds(hop_delay(after))
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

/// Each tenant's POSTs in flight in this process, by start time, and the pauses this
/// process started.
#[derive(Debug, Default)]
struct InFlight {
    requests: Mutex<HashMap<TenantId, Vec<(u64, Instant)>>>,
    pauses: Mutex<HashMap<TenantId, Instant>>,
    released: tokio::sync::Notify,
    ids: AtomicU64,
}

/// A tenant's place in flight, given back on drop.
struct Slot<'a> {
    in_flight: &'a InFlight,
    tenant: TenantId,
    id: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut requests = self.in_flight.requests.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = requests.get_mut(&self.tenant) {
            mine.retain(|(id, _)| *id != self.id);
            if mine.is_empty() {
                requests.remove(&self.tenant);
            }
        }
        drop(requests);
        self.in_flight.released.notify_waiters();
    }
}

impl InFlight {
    /// How long to defer a job for `tenant` without reading anything: while a pause
    /// this process started runs, or while all of the tenant's slots hold slow requests.
    fn known_unresponsive(&self, tenant: &TenantId) -> Option<Duration> {
        let now = Instant::now();
        let mut pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        match pauses.get(tenant) {
            Some(until) if *until > now => return Some(*until - now),
            Some(_) => drop(pauses.remove(tenant)),
            None => {}
        }
        drop(pauses);
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = requests.get(tenant).filter(|r| r.len() >= TENANT_IN_FLIGHT)?;
        let oldest = theirs.iter().map(|(_, started)| *started).min()?;
        theirs.iter().all(|(_, started)| now - *started >= SLOW).then(|| REQUEST_TIMEOUT.saturating_sub(now - oldest).max(Duration::from_secs(1)))
    }

    fn paused(&self, tenant: &TenantId, until: Instant) {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).insert(tenant.clone(), until);
    }

    fn resumed(&self, tenant: &TenantId) {
        self.pauses.lock().unwrap_or_else(|e| e.into_inner()).remove(tenant);
    }

    /// A slot for one POST to `tenant`'s CRM: at once if it has fewer than
    /// [`TENANT_IN_FLIGHT`], else when one frees up, waiting [`SLOT_WAIT`] at most and
    /// not at all once every request in flight is [`SLOW`]. `Err` says how long to
    /// defer: a second while the tenant is merely busy, else until the oldest request
    /// has timed out.
    async fn enter(&self, tenant: &TenantId) -> Result<Slot<'_>, Duration> {
        let deadline = Instant::now() + SLOT_WAIT;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let wait = {
                let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
                let theirs = requests.entry(tenant.clone()).or_default();
                if theirs.len() < TENANT_IN_FLIGHT {
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    theirs.push((id, Instant::now()));
                    return Ok(Slot { in_flight: self, tenant: tenant.clone(), id });
                }
                let ages = theirs.iter().map(|(_, started)| started.elapsed());
                let (youngest, oldest) = ages.fold((Duration::MAX, Duration::ZERO), |(y, o), age| (y.min(age), o.max(age)));
                let slow_in = SLOW.saturating_sub(youngest);
                if slow_in.is_zero() {
                    return Err(REQUEST_TIMEOUT.saturating_sub(oldest).max(Duration::from_secs(1)));
                }
                let wait = slow_in.min(deadline.saturating_duration_since(Instant::now()));
                if wait.is_zero() {
                    return Err(Duration::from_secs(1));
                }
                wait
            };
            let _ = tokio::time::timeout(wait, released).await;
        }
    }
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

    #[test]
    fn waits_beyond_fifteen_minutes_are_chains_of_hops() {
        assert_eq!(hop_delay(Duration::from_millis(4_200)), 5);
        assert_eq!(hop_delay(Duration::from_secs(900)), 900);
        // 2 h: hops of 900 s; each receiver re-sends what is left until `not_before`.
        let mut left = Duration::from_secs(2 * 3600);
        let mut hops = Vec::new();
        while !left.is_zero() {
            let hop = hop_delay(left);
            hops.push(hop);
            left = left.saturating_sub(Duration::from_secs(hop as u64));
        }
        assert_eq!(hops, [900; 8]);
        assert!(SCHEDULE.iter().all(|w| hop_delay(*w) <= 900));
    }

    fn tenant() -> TenantId {
        TenantId::generate()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_gets_a_bounded_share_of_requests_in_flight() {
        let in_flight = InFlight::default();
        let (slow, other) = (tenant(), tenant());
        let mut held = Vec::new();
        for _ in 0..TENANT_IN_FLIGHT {
            held.push(in_flight.enter(&slow).await.expect("a free slot"));
        }
        // Another tenant is not affected.
        drop(in_flight.enter(&other).await.expect("its own slots"));
        // A fifth waits for a slot while the four are young, and gets the one freed.
        let waiter = async { in_flight.enter(&slow).await.map(|s| s.id) };
        let release = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            held.remove(0);
        };
        let (got, ()) = tokio::join!(waiter, release);
        assert!(got.is_ok());
        // Busy (four young requests, none freeing up): deferred a second after SLOT_WAIT.
        let _fourth = in_flight.enter(&slow).await.expect("a slot was free");
        let started = Instant::now();
        assert_eq!(in_flight.enter(&slow).await.err(), Some(Duration::from_secs(1)));
        assert_eq!(started.elapsed(), SLOT_WAIT);
        // Once every request in flight is slow: at once, until the oldest has timed out.
        tokio::time::advance(SLOW).await;
        let started = Instant::now();
        let deferred = in_flight.enter(&slow).await.err().expect("deferred");
        assert_eq!(started.elapsed(), Duration::ZERO);
        let oldest_age = Duration::from_millis(200) + SLOT_WAIT + SLOW;
        assert_eq!(deferred, REQUEST_TIMEOUT - oldest_age);
        assert_eq!(in_flight.known_unresponsive(&slow), Some(deferred), "known without waiting");
        assert_eq!(in_flight.known_unresponsive(&other), None);
        // A pause this process started defers until it ends.
        in_flight.paused(&other, Instant::now() + Duration::from_secs(30));
        assert_eq!(in_flight.known_unresponsive(&other), Some(Duration::from_secs(30)));
        in_flight.resumed(&other);
        assert_eq!(in_flight.known_unresponsive(&other), None);
    }
}
