//! `switchboard simulate call` and `provider set-twilio`: the operator side of the
//! simulator in `switchboard_infra::simulate`.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use chrono::Utc;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::{
    AppContext,
    calls::{RecordingStatus, lifecycle::call_id_for},
    phone::E164,
    tenants::{
        TenantId,
        providers::{ProviderAccount, ProviderKind, valid_account_sid},
    },
};
use switchboard_infra::{
    simulate::{self, CallScript, Caller},
    twilio_fake::{self, TwilioFake},
};

pub struct Options {
    pub calls: usize,
    pub to: String,
    pub duplicates: bool,
    pub shuffle: bool,
    pub gateway: String,
    pub twilio_addr: SocketAddr,
}

pub async fn set_twilio(
    ctx: &AppContext,
    tenant: &TenantId,
    account_sid: &str,
    auth_token: &str,
    numbers: &[String],
) -> anyhow::Result<ProviderAccount> {
    anyhow::ensure!(valid_account_sid(account_sid), "--account-sid must be AC followed by 32 hex digits");
    let phone_numbers =
        numbers.iter().map(|n| E164::parse(n).with_context(|| format!("{n} is not E.164"))).collect::<anyhow::Result<_>>()?;
    let existing = ctx.providers.list(tenant).await?.into_iter().find(|p| p.kind == ProviderKind::Twilio);
    let now = Utc::now();
    let account = ProviderAccount {
        provider_id: existing.as_ref().map_or_else(|| uuid::Uuid::new_v4().to_string(), |p| p.provider_id.clone()),
        kind: ProviderKind::Twilio,
        account_sid: account_sid.to_owned(),
        phone_numbers,
        priority: 1,
        active: true,
        created_at: existing.as_ref().map_or(now, |p| p.created_at),
        updated_at: now,
        credentials_set_at: now,
    };
    let previous = existing.as_ref().map(|p| p.account_sid.as_str());
    ctx.providers.put(tenant, &account, &SecretString::from(auth_token.to_owned()), previous).await?;
    Ok(account)
}

/// The tenant's Twilio account and token; a simulated one is created if it has none.
async fn account(ctx: &AppContext, tenant: &TenantId, to: &str) -> anyhow::Result<(String, String)> {
    if let Some(existing) = ctx.providers.list(tenant).await?.into_iter().find(|p| p.kind == ProviderKind::Twilio) {
        let creds = ctx.providers.credentials(tenant, &existing.account_sid).await?.context("provider without credentials")?;
        return Ok((creds.account_sid, creds.auth_token.expose_secret().to_owned()));
    }
    let account_sid = twilio_fake::sid("AC");
    let token = format!("{:032x}", rand::rng().random::<u128>());
    set_twilio(ctx, tenant, &account_sid, &token, &[to.to_owned()]).await?;
    eprintln!("created a simulated Twilio account {account_sid} for the tenant");
    Ok((account_sid, token))
}

pub async fn run(ctx: &AppContext, tenant: &TenantId, options: &Options) -> anyhow::Result<Value> {
    let (account_sid, token) = account(ctx, tenant, &options.to).await?;
    let fake = TwilioFake::bind(options.twilio_addr, [(account_sid.clone(), token.clone())])
        .await
        .with_context(|| format!("starting the Twilio fake on {} (is another simulation running?)", options.twilio_addr))?;
    let caller = Caller {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        webhook_base: format!("{}/webhook-twilio", options.gateway.trim_end_matches('/')),
        auth_token: token,
    };
    let mut rng = rand::rng();
    let mut calls = Vec::new();
    for _ in 0..options.calls {
        let script = CallScript::random(&options.to, &mut rng);
        if let Some(recording_sid) = &script.recording_sid {
            let millis = (script.talk_seconds * 1000).min(5000);
            fake.add_recording(&account_sid, recording_sid, "audio/x-wav", twilio_fake::tone_wav(millis));
        }
        let plan = simulate::disorder(simulate::callbacks(&account_sid, &script), options.duplicates, options.shuffle, &mut rng);
        let mut delivered = Vec::new();
        for callback in &plan {
            let (code, _) = caller.deliver(callback).await.context("is the gateway running? (./infra/up)")?;
            let label = callback.params.iter().find(|(k, _)| k == "CallStatus" || k == "RecordingStatus").map(|(_, v)| v.as_str());
            delivered.push(json!({ "callback": callback.subpath, "status": label, "http": code }));
            eprintln!("  {:<9} {:<12} → {code}", callback.subpath, label.unwrap_or(""));
        }
        let call_id = call_id_for("twilio", &account_sid, &script.call_sid);
        if script.recording_sid.is_some() {
            wait_for_recording(ctx, tenant, &call_id).await?;
        }
        let (call, events) = ctx.calls.details(tenant, &call_id).await?.context("the call was not recorded")?;
        calls.push(json!({ "call": call.view(), "events": events, "callbacks": delivered }));
    }
    fake.shutdown().await;
    Ok(json!({ "account_sid": account_sid, "calls": calls }))
}

/// The fetcher runs in the gateway; the recording lands within seconds.
async fn wait_for_recording(ctx: &AppContext, tenant: &TenantId, call_id: &str) -> anyhow::Result<()> {
    for _ in 0..150 {
        let status = ctx.calls.get(tenant, call_id).await?.and_then(|c| c.recording).map(|r| r.status);
        if matches!(status, Some(RecordingStatus::Available | RecordingStatus::Failed | RecordingStatus::Absent)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("the recording of call {call_id} did not arrive within 30 s (is the gateway's TWILIO_API_BASE_URL the fake?)")
}
