//! CRM delivery benchmark: call events committed to the calls table reach a healthy
//! local CRM through the real path (the table's stream → `crm-fanout` via the local
//! outbox poller → the CRM queue → `crm-dispatcher` → signed POST). Measures events/s
//! from the first commit to the last receipt, and each event's commit-to-receipt
//! latency, split at the moment the dispatcher starts on it (the delivery item's first
//! attempt). Run via `infra/bench/deliveries`; prints a table (and JSON with --json).
//! Exits non-zero when an event is missing at the deadline or a signature is wrong.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Parser;
use futures::{StreamExt, stream};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming};
use shared::{
    AppContext,
    calls::{CallStatus, lifecycle::{Applied, StatusReport}},
    deliveries::{header, x_signature},
    tenants::{TenantId, settings::SettingsInput},
};
use switchboard_infra::{simulate::CallScript, twilio_fake, workers};

const TOKEN: &str = "bench-bearer-0123456789abcdef";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// How long the pipeline may take to deliver its first (warm-up) event.
const WARM_UP: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    /// Calls to commit (each is 3 events: ringing, in-progress, completed).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    calls: u32,
    /// Tenants the calls are spread over (round robin), all pointed at the same CRM:
    /// the dispatcher bounds each tenant's POSTs in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    tenants: u32,
    /// Calls written at once (a call's own events are written in order).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Seconds the writers may take, and then every event to reach the CRM.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    deadline: u64,
    #[arg(long)]
    json: bool,
}

/// What the local CRM has received.
#[derive(Default)]
struct Seen {
    /// Every receipt per webhook-id, in arrival order: (monotonic, wall clock).
    receipts: HashMap<String, Vec<(Instant, DateTime<Utc>)>>,
    /// Requests whose X-Signature or bearer token did not match, or without a webhook-id.
    refused: usize,
}

/// A healthy CRM on loopback: answers every POST 200 at once and records it.
struct Crm {
    url: String,
    seen: Arc<Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl Crm {
    async fn start() -> anyhow::Result<Crm> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/calls", listener.local_addr()?);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = seen.clone();
        let server = tokio::spawn(switchboard_infra::loopback::serve(listener, move |req| {
            let state = state.clone();
            async move { receive(&state, req).await }
        }));
        Ok(Crm { url, seen, server })
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().expect("receiver state"))
    }
}

/// Records the receipt once the whole body is in; still answers 200 to a bad signature
/// (counted, and failing the run) so one bug does not turn into a retry storm.
async fn receive(seen: &Mutex<Seen>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let received = (Instant::now(), Utc::now());
    let header = |name: &http::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let signed = header(&header::X_SIGNATURE) == Some(x_signature(SECRET.as_bytes(), &body).as_str())
        && header(&header::AUTHORIZATION) == Some(format!("Bearer {TOKEN}").as_str());
    let mut seen = seen.lock().expect("receiver state");
    match header(&header::WEBHOOK_ID) {
        Some(id) if signed => seen.receipts.entry(id.to_owned()).or_default().push(received),
        _ => seen.refused += 1,
    }
    Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
}

/// One committed event: its id and when `apply_status` returned.
struct Commit {
    tenant: TenantId,
    event_id: String,
    at: Instant,
    wall: DateTime<Utc>,
}


fn script() -> CallScript {
    let mut s = CallScript::random("+14155550100", &mut rand::rng()).placed_now();
    s.outcome = CallStatus::Completed;
    s.recording_sid = None;
    s
}

/// Commits a call's events in order; one [`Commit`] per event appended.
async fn commit_call(ctx: &AppContext, reports: &[StatusReport]) -> anyhow::Result<Vec<Commit>> {
    let mut commits = Vec::new();
    for report in reports {
        if let Applied::Changed { event_id, .. } = ctx.calls.apply_status(report).await? {
            commits.push(Commit { tenant: report.tenant_id.clone(), event_id, at: Instant::now(), wall: Utc::now() });
        }
    }
    Ok(commits)
}

/// Commits a ringing event at a time until one reaches the CRM: the outbox poller
/// skips what the stream held before its first pass, so the first may never arrive.
async fn warm_up(ctx: &AppContext, crm: &Crm, tenant: &TenantId, account: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < WARM_UP {
        let ringing = script().status_reports(tenant, account).swap_remove(0);
        let commits = commit_call(ctx, std::slice::from_ref(&ringing)).await?;
        let id = &commits.first().context("a new call's ringing event was not appended")?.event_id;
        let attempt = Instant::now();
        while attempt.elapsed() < Duration::from_secs(5) {
            if crm.seen(|s| s.receipts.contains_key(id)) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    anyhow::bail!("no warm-up event reached the CRM within {WARM_UP:?}: is the pipeline broken? (RUST_LOG=info shows the workers)")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank quantiles of `values` (sorted here): (p50, p99, max).
fn quantiles(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    (!values.is_empty()).then(|| (pick(0.5), pick(0.99), pick(1.0)))
}

/// When the dispatcher started on each event: its delivery's first attempt (ms precision).
async fn dispatch_starts(ctx: &AppContext, events: Vec<(&TenantId, &str)>) -> HashMap<String, DateTime<Utc>> {
    stream::iter(events)
        .map(|(tenant, id)| async move {
            // The item is saved after the POST is answered: give the last ones a moment.
            for _ in 0..20 {
                if let Ok(Some(d)) = ctx.deliveries.get(tenant, id).await
                    && let Some(first) = d.attempts.first()
                {
                    return Some((id.to_owned(), first.at));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The workers' warnings (JSON lines, level from RUST_LOG) say why a run stalls.
    shared::telemetry::init();
    let ctx = AppContext::from_env().await.context("source the stack's env file first (infra/bench/deliveries does)")?;
    anyhow::ensure!(ctx.config.crm_delivery_queue_url.is_some(), "CRM_DELIVERY_QUEUE_URL is not set");
    let ctx = Arc::new(ctx);
    let account = twilio_fake::sid("AC");
    let crm = Crm::start().await?;
    let mut tenants = Vec::new();
    for i in 0..args.tenants {
        let tenant = ctx.tenants.create(&format!("bench-deliveries-{i}")).await?.tenant_id;
        let webhook: SettingsInput = serde_json::from_value(
            serde_json::json!({ "crm_webhook_url": crm.url, "crm_webhook_token": TOKEN, "crm_webhook_secret": SECRET }),
        )?;
        let changes = webhook.validate(true).map_err(|e| anyhow::anyhow!("webhook settings: {e:?}"))?;
        ctx.settings.update(&tenant, changes, Utc::now()).await?;
        tenants.push(tenant);
    }

    let workers = [
        tokio::spawn(workers::outbox(ctx.clone(), "bench".into(), workers::Start::Now)),
        tokio::spawn(workers::crm_dispatcher(ctx.clone(), workers::Polling::CRM)),
    ];
    let outcome = run(&args, &ctx, &crm, &tenants, &account).await;
    for task in workers {
        task.abort();
    }
    crm.server.abort();
    outcome
}

async fn run(args: &Args, ctx: &AppContext, crm: &Crm, tenants: &[TenantId], account: &str) -> anyhow::Result<()> {
    let warm = warm_up(ctx, crm, &tenants[0], account).await?;

    let calls: Vec<Vec<StatusReport>> =
        tenants.iter().cycle().take(args.calls as usize).map(|tenant| script().status_reports(tenant, account)).collect();
    let started = Instant::now();
    let writes = stream::iter(calls)
        .map(|call| async move { commit_call(ctx, &call).await })
        .buffer_unordered(args.concurrency as usize)
        .collect::<Vec<_>>();
    let commits: Vec<Commit> = tokio::time::timeout(Duration::from_secs(args.deadline), writes)
        .await
        .context("the writers did not finish within the deadline")?
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let committed = started.elapsed();
    let first_commit = commits.iter().map(|c| c.at).min().context("nothing committed")?;

    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    let expected: HashSet<&str> = commits.iter().map(|c| c.event_id.as_str()).collect();
    let missing = loop {
        let missing = crm.seen(|s| expected.iter().filter(|id| !s.receipts.contains_key(**id)).count());
        if missing == 0 || Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // A redelivery would come within a poll or two.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (receipts, duplicates, refused) = crm.seen(|s| {
        let first: HashMap<String, (Instant, DateTime<Utc>)> =
            expected.iter().filter_map(|id| Some(((*id).to_owned(), *s.receipts.get(*id)?.first()?))).collect();
        let duplicates: usize = expected.iter().filter_map(|id| s.receipts.get(*id)).map(|r| r.len() - 1).sum();
        (first, duplicates, s.refused)
    });
    let last_receipt = receipts.values().map(|(at, _)| *at).max();
    let elapsed = last_receipt.map(|t| t.saturating_duration_since(first_commit)).unwrap_or_default();
    let delivered = receipts.len();
    let latency = quantiles(
        commits.iter().filter_map(|c| Some(ms(receipts.get(&c.event_id)?.0.saturating_duration_since(c.at)))).collect(),
    );
    let arrived = commits.iter().filter(|c| receipts.contains_key(&c.event_id)).map(|c| (&c.tenant, c.event_id.as_str())).collect();
    // Only a breakdown: without it (a stalled store) the figures above still stand.
    let starts = tokio::time::timeout(Duration::from_secs(30), dispatch_starts(ctx, arrived)).await.unwrap_or_default();
    let wall_ms = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).num_microseconds().unwrap_or_default() as f64 / 1000.0;
    let to_dispatch = quantiles(
        commits.iter().filter_map(|c| Some(wall_ms(c.wall, *starts.get(&c.event_id)?))).collect(),
    );
    let dispatch_to_receipt =
        quantiles(starts.iter().filter_map(|(id, at)| Some(wall_ms(*at, receipts.get(id)?.1))).collect());
    let per_sec = delivered as f64 / elapsed.as_secs_f64().max(f64::EPSILON);

    let row = |name: &str, q: Option<(f64, f64, f64)>| match q {
        Some((p50, p99, max)) => println!("{name:<40} {p50:>10.1} {p99:>10.1} {max:>10.1}"),
        None => println!("{name:<40} {:>10} {:>10} {:>10}", "-", "-", "-"),
    };
    println!(
        "CRM deliveries, {} calls ({} events) over {} tenant(s), {} writers, healthy local CRM (warm-up {:.1} s)",
        args.calls,
        commits.len(),
        args.tenants,
        args.concurrency,
        warm.as_secs_f64()
    );
    println!("{:<40} {:>10}", "events delivered", format!("{delivered}/{}", commits.len()));
    println!("{:<40} {:>10.2}", "elapsed s (first commit → last receipt)", elapsed.as_secs_f64());
    println!("{:<40} {:>10.1}", "events/s delivered", per_sec);
    println!("{:<40} {:>10.1}", "events/s committed (beside the pipeline)", commits.len() as f64 / committed.as_secs_f64());
    println!("{:<40} {:>10} {:>10} {:>10}", "latency ms", "p50", "p99", "max");
    row("commit → CRM receipt", latency);
    row("  commit → dispatcher starts on it", to_dispatch);
    row("  dispatcher start → CRM receipt", dispatch_to_receipt);
    println!("{:<40} {:>10}", "duplicates", duplicates);
    println!("{:<40} {:>10}", "signature failures", refused);
    if args.json {
        let triple = |q: Option<(f64, f64, f64)>| q.map(|(p50, p99, max)| serde_json::json!({ "p50_ms": p50, "p99_ms": p99, "max_ms": max }));
        println!(
            "{}",
            serde_json::json!({
                "calls": args.calls,
                "tenants": args.tenants,
                "events": commits.len(),
                "delivered": delivered,
                "missing": missing,
                "elapsed_s": elapsed.as_secs_f64(),
                "events_per_sec": per_sec,
                "latency": triple(latency),
                "commit_to_dispatch": triple(to_dispatch),
                "dispatch_to_receipt": triple(dispatch_to_receipt),
                "duplicates": duplicates,
                "signature_failures": refused,
            })
        );
    }
    anyhow::ensure!(missing == 0, "{missing} of {} events had not reached the CRM {} s after the last commit", commits.len(), args.deadline);
    anyhow::ensure!(refused == 0, "{refused} deliveries failed the CRM's signature or token check");
    Ok(())
}
