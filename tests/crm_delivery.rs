//! CRM deliveries end to end: committed events → CRM queue → `crm-dispatcher` → a local
//! CRM that verifies every header the way a tenant's receiver would.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use rand::SeedableRng;
use serde_json::json;
use shared::{
    calls::lifecycle::call_id_for,
    deliveries::{
        WebhookSecret,
        dispatch::{Delivery, DeliveryStatus},
        verify_standard_webhooks, x_signature,
    },
    outbox::{self, DeliveryJob},
    tenants::settings::SettingsInput,
};
use switchboard_infra::simulate::{self, CallScript};
use switchboard_tests::{TestApp, TestTenant};

const TOKEN: &str = "crm-bearer-0123456789abcdef";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// How the local CRM answers a delivery that passed verification.
#[derive(Clone, Copy)]
enum Answer {
    /// 500 for each webhook-id's first `n` requests, then 200.
    FailFirst(usize),
    Gone,
}

#[derive(Default)]
struct Seen {
    /// Requests per webhook-id, verified or not.
    requests: HashMap<String, usize>,
    /// 2xx answers per webhook-id.
    accepted: HashMap<String, usize>,
    /// Why a request failed verification.
    refused: Vec<String>,
    /// One accepted body with its X-Signature, for seed 003's own verifier.
    sample: Option<(Vec<u8>, String)>,
}

struct Crm {
    url: String,
    seen: Arc<Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Crm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Crm {
    async fn start(answer: Answer) -> Crm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/calls", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(receive(&state, answer, req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Crm { url, seen, server }
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap())
    }
}

/// Verifies as a tenant's receiver does: bearer token, seed 003's X-Signature, Standard Webhooks.
fn verify(headers: &hyper::HeaderMap, body: &[u8]) -> Result<String, String> {
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

async fn receive(seen: &Mutex<Seen>, answer: Answer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
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
    let status = match answer {
        Answer::Gone => StatusCode::GONE,
        Answer::FailFirst(n) if *requests <= n => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::FailFirst(_) => StatusCode::OK,
    };
    if status.is_success() {
        *seen.accepted.entry(id).or_default() += 1;
        let signature = parts.headers["x-signature"].to_str().unwrap().to_owned();
        seen.sample.get_or_insert((body.to_vec(), signature));
    }
    reply(status)
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{{\"status\":{}}}", status.as_u16()))));
    *response.status_mut() = status;
    response
}

async fn point_webhook_at(app: &TestApp, tenant: &TestTenant, crm: &Crm) {
    let input: SettingsInput = serde_json::from_value(json!({
        "crm_webhook_url": crm.url,
        "crm_webhook_token": TOKEN,
        "crm_webhook_secret": SECRET,
    }))
    .unwrap();
    app.ctx.settings.update(&tenant.id, input.validate(true).unwrap(), chrono::Utc::now()).await.unwrap();
}

/// Plays a call's Twilio callbacks; returns one delivery job per committed event.
async fn call_events(app: &TestApp, tenant: &TestTenant, seed: u64) -> Vec<DeliveryJob> {
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
        })
        .collect()
}

async fn enqueue(app: &TestApp, jobs: &[DeliveryJob]) {
    let queue = app.ctx.config.crm_delivery_queue_url.as_deref().unwrap();
    assert!(outbox::enqueue(app.ctx.aws.sqs(), queue, jobs).await.unwrap().is_empty());
}

/// The delivery of `job` once `done` holds for it, within `patience`.
async fn delivery_when(app: &TestApp, job: &DeliveryJob, patience: Duration, done: impl Fn(&Delivery) -> bool) -> Delivery {
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
fn seed_003_verifies(body: &[u8], signature: &str) -> Option<bool> {
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

#[tokio::test]
async fn failing_crm_gets_each_event_again_on_the_backoff_until_it_accepts_it_once() {
    // 0.001: the schedule's 5 s, 5 min, 30 min become 5 ms, 0.3 s, 1.8 s, through the same hops.
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-retries").await;
    let crm = Crm::start(Answer::FailFirst(3)).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = call_events(&app, &tenant, 11).await;
    assert!(!jobs.is_empty());
    enqueue(&app, &jobs).await;

    for job in &jobs {
        let delivery = delivery_when(&app, job, Duration::from_secs(60), |d| d.status == DeliveryStatus::Delivered).await;
        let codes: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, [Some(500), Some(500), Some(500), Some(200)], "{}", job.event_id);
        assert!(delivery.attempts.iter().all(|a| a.response_excerpt.starts_with("{\"status\"") && a.error.is_none()));
        assert!(delivery.attempts.windows(2).all(|w| w[0].at <= w[1].at));
    }
    // A straggling duplicate would arrive within a poll or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    crm.seen(|seen| {
        assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused);
        for job in &jobs {
            assert_eq!(seen.requests.get(&job.event_id), Some(&4), "one webhook-id across all attempts");
            assert_eq!(seen.accepted.get(&job.event_id), Some(&1), "accepted once");
        }
    });
    let (body, signature) = crm.seen(|seen| seen.sample.clone()).unwrap();
    match seed_003_verifies(&body, &signature) {
        Some(valid) => assert!(valid, "seed 003's receiver refused our X-Signature"),
        None => eprintln!("skipping the seed 003 verifier: python3 is not installed"),
    }
    // Already delivered: a replayed job does not POST again.
    enqueue(&app, &jobs[..1]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(crm.seen(|seen| seen.requests[&jobs[0].event_id]), 4);
}

#[tokio::test]
async fn gone_disables_the_webhook_and_stops_every_delivery() {
    let app = TestApp::spawn_with_crm_dispatcher(0.001).await;
    let tenant = app.tenant("crm-gone").await;
    let crm = Crm::start(Answer::Gone).await;
    point_webhook_at(&app, &tenant, &crm).await;
    let jobs = call_events(&app, &tenant, 12).await;
    assert!(jobs.len() >= 2);

    enqueue(&app, &jobs[..1]).await;
    let gone = delivery_when(&app, &jobs[0], Duration::from_secs(30), |d| d.status == DeliveryStatus::Gone).await;
    assert_eq!(gone.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(410)]);
    let settings = app.get("api-call-settings", &[], Some(&tenant.api_key)).await;
    assert_eq!(settings.body["settings"]["crm_webhook_enabled"], false, "{}", settings.body);

    enqueue(&app, &jobs[1..]).await;
    for job in &jobs[1..] {
        let skipped = delivery_when(&app, job, Duration::from_secs(30), |d| d.status == DeliveryStatus::Skipped).await;
        assert_eq!(skipped.reason.as_deref(), Some("CRM webhook disabled"));
        assert!(skipped.attempts.is_empty());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gone = app.ctx.deliveries.get(&tenant.id, &jobs[0].event_id).await.unwrap().unwrap();
    assert_eq!(gone.attempts.len(), 1, "no retry after 410");
    crm.seen(|seen| {
        assert!(seen.refused.is_empty(), "refused: {:?}", seen.refused);
        assert_eq!(seen.requests.values().sum::<usize>(), 1);
    });
}
