//! A tenant's CRM on loopback, verifying every delivery as a receiver would (bearer
//! token, seed 003's X-Signature, Standard Webhooks), and the helpers the delivery
//! tests share: committing events, queueing their jobs, waiting on their records.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming};
use rand::SeedableRng;
use serde_json::json;
use shared::{
    calls::lifecycle::call_id_for,
    deliveries::{WebhookSecret, dispatch::Delivery, verify_standard_webhooks, x_signature},
    outbox::{self, DeliveryJob},
    tenants::settings::SettingsInput,
};
use switchboard_infra::simulate::{self, CallScript};

use crate::{TestApp, TestTenant};

pub const TOKEN: &str = "crm-bearer-0123456789abcdef";
pub const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// How the local CRM answers a delivery that passed verification.
#[derive(Clone, Copy)]
pub enum Answer {
    /// 500 for each webhook-id's first `n` requests, then 200.
    FailFirst(usize),
    Gone,
    /// 503 with `Retry-After: <secs>` for each webhook-id's first request, then 200.
    RetryAfter(u64),
    /// Never answers (the connection stays open).
    Hang,
}

#[derive(Default)]
pub struct Seen {
    /// Requests per webhook-id, verified or not.
    pub requests: HashMap<String, usize>,
    /// 2xx answers per webhook-id.
    pub accepted: HashMap<String, usize>,
    /// Why a request failed verification.
    pub refused: Vec<String>,
    /// One accepted body with its X-Signature, for seed 003's own verifier.
    pub sample: Option<(Vec<u8>, String)>,
    /// When each webhook-id was first accepted.
    pub accepted_at: HashMap<String, tokio::time::Instant>,
}

pub struct Crm {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Crm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Crm {
    pub async fn start(answer: Answer) -> Crm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/calls", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let server = tokio::spawn(switchboard_infra::loopback::serve(listener, move |req| {
            let state = state.clone();
            async move { receive(&state, answer, req).await }
        }));
        Crm { url, seen, server }
    }

    pub fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap())
    }
}

/// Verifies as a tenant's receiver does: bearer token, seed 003's X-Signature, Standard Webhooks.
pub fn verify(headers: &hyper::HeaderMap, body: &[u8]) -> Result<String, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(format!("missing {name}"));
    if header("authorization")? != format!("Bearer {TOKEN}") {
        return Err("wrong bearer token".into());
    }
    if header("x-signature")? != x_signature(SECRET.as_bytes(), body) {
        return Err("X-Signature does not match".into());
    }
    let id = header("webhook-id")?.to_owned();
    let timestamp: i64 = header("webhook-timestamp")?.parse().map_err(|_| "bad webhook-timestamp")?;
    let secret = WebhookSecret::parse(SECRET).unwrap();
    verify_standard_webhooks(&secret, &id, timestamp, body, header("webhook-signature")?, chrono::Utc::now().timestamp())
        .map_err(|e| e.to_string())?;
    let payload: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if payload["event_id"] != id.as_str() || header("x-webhook-event")? != payload["event"] {
        return Err("headers disagree with the body".into());
    }
    Ok(id)
}

pub async fn receive(seen: &Mutex<Seen>, answer: Answer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let response = {
        let mut seen = seen.lock().unwrap();
        let id = match verify(&parts.headers, &body) {
            Ok(id) => id,
            Err(reason) => {
                seen.refused.push(reason);
                return reply(StatusCode::UNAUTHORIZED);
            }
        };
        let requests = seen.requests.entry(id.clone()).or_default();
        *requests += 1;
        let mut response = reply(match answer {
            Answer::Gone => StatusCode::GONE,
            Answer::FailFirst(n) if *requests <= n => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::RetryAfter(_) if *requests == 1 => StatusCode::SERVICE_UNAVAILABLE,
            Answer::FailFirst(_) | Answer::RetryAfter(_) | Answer::Hang => StatusCode::OK,
        });
        if let Answer::RetryAfter(secs) = answer {
            response.headers_mut().insert("retry-after", secs.into());
        }
        if response.status().is_success() && !matches!(answer, Answer::Hang) {
            *seen.accepted.entry(id.clone()).or_default() += 1;
            seen.accepted_at.entry(id).or_insert_with(tokio::time::Instant::now);
            let signature = parts.headers["x-signature"].to_str().unwrap().to_owned();
            seen.sample.get_or_insert((body.to_vec(), signature));
        }
        response
    };
    if let Answer::Hang = answer {
        std::future::pending::<()>().await;
    }
    response
}

pub fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{{\"status\":{}}}", status.as_u16()))));
    *response.status_mut() = status;
    response
}

pub async fn point_webhook_at(app: &TestApp, tenant: &TestTenant, crm: &Crm) {
    let input: SettingsInput = serde_json::from_value(json!({
        "crm_webhook_url": crm.url,
        "crm_webhook_token": TOKEN,
        "crm_webhook_secret": SECRET,
    }))
    .unwrap();
    app.ctx.settings.update(&tenant.id, input.validate(true).unwrap(), chrono::Utc::now()).await.unwrap();
}

/// Plays a call's Twilio callbacks; returns one delivery job per committed event.
pub async fn call_events(app: &TestApp, tenant: &TestTenant, seed: u64) -> Vec<DeliveryJob> {
    let account = app.twilio_account(&tenant.id).await;
    let mut script = CallScript::random("+14155550100", &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
    script.recording_sid = None;
    for callback in simulate::callbacks(&account.account_sid, &script) {
        assert!((200..300).contains(&app.caller(&account).deliver(&callback).await.unwrap().0));
    }
    let call_id = call_id_for("twilio", &account.account_sid, &script.call_sid);
    let (_, events) = app.ctx.calls.details(&tenant.id, &call_id).await.unwrap().unwrap();
    events
        .into_iter()
        .map(|e| DeliveryJob {
            tenant_id: tenant.id.clone(),
            call_id: e.call_id,
            event_id: e.id,
            kind: e.kind,
            occurred_at: e.occurred_at,
            attempt: 0,
            not_before: None,
            since: None,
        })
        .collect()
}

pub async fn enqueue(app: &TestApp, jobs: &[DeliveryJob]) {
    let queue = app.ctx.config.crm_delivery_queue_url.as_deref().unwrap();
    assert!(outbox::enqueue(app.ctx.aws.sqs(), queue, jobs).await.unwrap().is_empty());
}

/// The delivery of `job` once `done` holds for it, within `patience`.
pub async fn delivery_when(app: &TestApp, job: &DeliveryJob, patience: Duration, done: impl Fn(&Delivery) -> bool) -> Delivery {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let delivery = app.ctx.deliveries.get(&job.tenant_id, &job.event_id).await.unwrap();
        match delivery {
            Some(d) if done(&d) => return d,
            other if tokio::time::Instant::now() > deadline => panic!("delivery of {} stuck at {other:?}", job.event_id),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Seed 003's Python `verify_callback_signature`, as the signing unit test runs it;
/// `None` without python3.
pub fn seed_003_verifies(body: &[u8], signature: &str) -> Option<bool> {
    use std::{io::Write, process::{Command, Stdio}};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/src/deliveries/testdata/verify_x_signature.py");
    let mut child = match Command::new("python3").args([script, SECRET, signature]).stdin(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running python3: {e}"),
    };
    child.stdin.take().unwrap().write_all(body).unwrap();
    match child.wait().unwrap().code() {
        Some(0) => Some(true),
        Some(3) => Some(false),
        other => panic!("the seed verifier crashed: exit {other:?}"),
    }
}

pub async fn committed_events(app: &TestApp, tenant: &TestTenant, calls: usize) -> Vec<DeliveryJob> {
    use futures::StreamExt;
    use shared::{
        calls::{CallStatus, Direction, lifecycle::{Applied, StatusReport}},
        phone::Address,
    };
    let started = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    let report = |sid: &str, n: usize, status: CallStatus, secs: i64| StatusReport {
        tenant_id: tenant.id.clone(),
        provider: "twilio",
        account: "ACtest".into(),
        provider_call_sid: sid.to_owned(),
        status,
        occurred_at: started + chrono::TimeDelta::milliseconds(n as i64) + chrono::TimeDelta::seconds(secs),
        direction: Direction::Inbound,
        from: Address::parse("+14155550123").unwrap(),
        to: Address::parse("+14155550100").unwrap(),
        caller_name: None,
        duration_seconds: status.is_terminal().then_some(30),
        sequence: None,
    };
    let calls: Vec<[StatusReport; 2]> = (0..calls)
        .map(|n| {
            let sid = switchboard_infra::twilio_fake::sid("CA");
            [report(&sid, n, CallStatus::Ringing, 0), report(&sid, n, CallStatus::Completed, 30)]
        })
        .collect();
    // A call's reports in order (a later one would make the earlier one stale).
    let per_call: Vec<Vec<DeliveryJob>> = futures::stream::iter(calls)
        .map(|reports| async move {
            let mut jobs = Vec::new();
            for report in reports {
                let Applied::Changed { call_id, event_id } = app.ctx.calls.apply_status(&report).await.unwrap() else {
                    panic!("each report of a new call is a change")
                };
                jobs.push(DeliveryJob {
                    tenant_id: report.tenant_id,
                    call_id,
                    event_id,
                    kind: "call.status_update".into(),
                    occurred_at: report.occurred_at,
                    attempt: 0,
                    not_before: None,
                    since: None,
                });
            }
            jobs
        })
        .buffer_unordered(16)
        .collect()
        .await;
    per_call.into_iter().flatten().collect()
}

