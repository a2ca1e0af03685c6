//! Webhook ingest benchmark: signed Twilio status callbacks per second through the
//! gateway (HTTP → signature check → state machine → store), side by side with the raw
//! store write each callback amounts to (the same conditional transaction, called
//! directly), at the same concurrency, against the local stack. Run via
//! `infra/bench/ingest`; prints a table (and JSON with --json).

use std::{sync::Arc, time::{Duration, Instant}};

use anyhow::Context;
use clap::Parser;
use futures::{StreamExt, stream};
use shared::{
    AppContext,
    calls::{CallStatus, lifecycle::StatusReport},
    tenants::providers::{ProviderAccount, ProviderKind},
};
use switchboard_infra::{gateway, simulate::{self, CallScript, Caller}, twilio_fake};

#[derive(Parser)]
struct Args {
    /// Calls per round and path (each is 3 status callbacks: ringing, in-progress, completed).
    #[arg(long, default_value_t = 500)]
    calls: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds per path, interleaved (raw, gateway, raw, gateway, …).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    json: bool,
}

struct Round {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Round {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    Round { per_sec: latencies.len() as f64 / elapsed.as_secs_f64(), p50_ms: pick(0.5), p99_ms: pick(0.99) }
}


fn scripts(n: usize) -> Vec<CallScript> {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            let mut s = CallScript::random("+14155550100", &mut rng);
            s.outcome = CallStatus::Completed;
            s.recording_sid = None;
            s
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut ctx = AppContext::from_env().await.context("source the stack's env file first (infra/bench/ingest does)")?;
    let tenant = ctx.tenants.create("bench-ingest").await?;
    let account_sid = twilio_fake::sid("AC");
    let token = format!("{:032x}", rand::random::<u128>());
    let now = chrono::Utc::now();
    let provider = ProviderAccount {
        provider_id: uuid::Uuid::new_v4().to_string(),
        kind: ProviderKind::Twilio,
        account_sid: account_sid.clone(),
        phone_numbers: Vec::new(),
        priority: 1,
        active: true,
        created_at: now,
        updated_at: now,
        credentials_set_at: now,
    };
    ctx.providers.put(&tenant.tenant_id, &provider, &token.clone().into(), None).await?;

    let listener = gateway::bind("127.0.0.1:0".parse()?).await?;
    let base = format!("http://{}/functions/v1", listener.local_addr()?);
    ctx.config.public_base_url = Some(base.clone());
    let ctx = Arc::new(ctx);
    let server = tokio::spawn(gateway::serve(listener, ctx.clone()));
    let caller = Caller {
        http: reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?,
        webhook_base: format!("{base}/webhook-twilio"),
        auth_token: token,
    };

    let (mut raw, mut via_gateway) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        // Raw: the state machine's transaction, called directly.
        let work: Vec<StatusReport> =
            scripts(args.calls).iter().flat_map(|s| s.status_reports(&tenant.tenant_id, &account_sid)).collect();
        let started = Instant::now();
        let latencies: Vec<Duration> = stream::iter(work)
            .map(|report| {
                let ctx = ctx.clone();
                async move {
                    let t = Instant::now();
                    ctx.calls.apply_status(&report).await.expect("raw write");
                    t.elapsed()
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        raw.push(summarize(latencies, started.elapsed()));

        // Gateway: the same callbacks, signed, over HTTP.
        let work: Vec<simulate::Callback> = scripts(args.calls)
            .iter()
            .flat_map(|s| simulate::callbacks(&account_sid, s).into_iter().filter(|c| c.subpath == "status"))
            .collect();
        let started = Instant::now();
        let latencies: Vec<Duration> = stream::iter(work)
            .map(|callback| {
                let caller = caller.clone();
                async move {
                    let t = Instant::now();
                    let (code, body) = caller.deliver(&callback).await.expect("deliver");
                    assert_eq!(code, 204, "{body}");
                    t.elapsed()
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        via_gateway.push(summarize(latencies, started.elapsed()));
    }
    server.abort();

    let median = |rounds: &[Round], f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_rate, gw_rate) = (median(&raw, |r| r.per_sec), median(&via_gateway, |r| r.per_sec));
    println!("webhook ingest, {} callbacks per round, concurrency {}, {} rounds (median)", args.calls * 3, args.concurrency, args.rounds);
    println!("{:<28} {:>12} {:>10} {:>10}", "path", "callbacks/s", "p50 ms", "p99 ms");
    println!("{:<28} {:>12.0} {:>10.2} {:>10.2}", "raw store write", raw_rate, median(&raw, |r| r.p50_ms), median(&raw, |r| r.p99_ms));
    println!(
        "{:<28} {:>12.0} {:>10.2} {:>10.2}",
        "signed webhook via gateway",
        gw_rate,
        median(&via_gateway, |r| r.p50_ms),
        median(&via_gateway, |r| r.p99_ms)
    );
    println!("ratio (gateway / raw): {:.2}  (target ≥ 0.80)", gw_rate / raw_rate);
    if args.json {
        println!("{}", serde_json::json!({ "raw_per_sec": raw_rate, "gateway_per_sec": gw_rate, "ratio": gw_rate / raw_rate }));
    }
    Ok(())
}
