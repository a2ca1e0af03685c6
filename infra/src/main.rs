//! `switchboard`: the operator CLI. Runs against whatever AWS the environment points at
//! (the deployed stack, or the local one via `AWS_ENDPOINT_URL`).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use serde_json::json;
use shared::{
    AppContext,
    tenants::{DEFAULT_RATE_LIMIT_PER_HOUR, Scope, TenantId},
};
use switchboard_infra::{demo, gateway, migrate, workers};

mod simulator;

#[derive(Parser)]
#[command(name = "switchboard", about = "Operate Switchboard: tenants, API keys, migrations, demo data, the local gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys of a tenant.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Apply pending data migrations from a directory.
    Migrate {
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Demo data.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// A tenant's telephony provider accounts.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// The tenant's audit log (recording URLs issued, supervisor actions), newest first.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Play realistic, signed provider traffic into the local gateway.
    Simulate {
        #[command(subcommand)]
        command: SimulateCommand,
    },
    /// Serve every function locally at http://ADDR/functions/v1/<name>, with the
    /// background workers (recording fetcher, CRM dispatcher) polling their queues.
    Gateway {
        #[arg(long, default_value = "127.0.0.1:54321")]
        addr: SocketAddr,
    },
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Set the tenant's Twilio account (the token is read from TWILIO_AUTH_TOKEN, never an argument).
    SetTwilio {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        account_sid: String,
        #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
        auth_token: String,
        /// Comma-separated E.164 numbers of this account.
        #[arg(long, value_delimiter = ',')]
        numbers: Vec<String>,
    },
    /// List the tenant's provider accounts (never credentials).
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List entries: who (key id), what, when, which call.
    List {
        #[arg(long)]
        tenant: String,
        /// Only entries about this call.
        #[arg(long)]
        call: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i32,
    },
}

#[derive(Subcommand)]
enum SimulateCommand {
    /// Inbound Twilio calls: voice → ringing → in-progress → completed → recording, signed
    /// like Twilio, with a local fake of Twilio's media endpoint serving the recording.
    Call {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 1)]
        calls: usize,
        /// The dialled number (a department's number routes the call).
        #[arg(long, default_value = "+14155550100")]
        to: String,
        /// Deliver every callback after `voice` twice.
        #[arg(long)]
        duplicates: bool,
        /// Deliver the callbacks after `voice` in random order.
        #[arg(long)]
        shuffle: bool,
        #[arg(long, default_value = "http://127.0.0.1:54321/functions/v1")]
        gateway: String,
        /// Where the Twilio fake listens (the gateway's TWILIO_API_BASE_URL).
        #[arg(long, default_value = "127.0.0.1:54324")]
        twilio_addr: SocketAddr,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and its first API key; prints {tenant_id, api_key} (the key is shown once).
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issue an API key; prints {key_id, api_key, scopes} (the key is shown once).
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated: calls:read, calls:write, recordings:read, settings, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long, default_value = "operator-issued")]
        name: String,
        #[arg(long, default_value_t = DEFAULT_RATE_LIMIT_PER_HOUR)]
        rate_limit: u32,
    },
    /// Revoke an API key; requests with it get 401 from then on.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key_id: String,
    },
    /// List a tenant's keys (ids, scopes, limits; never secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Write N realistic calls (statuses, agents, departments, directions, dates) for a tenant.
    Seed {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 200)]
        calls: usize,
    },
}

#[derive(Deserialize)]
struct PlatformDefaults {
    first_key_scopes: Vec<Scope>,
    api_key_rate_limit_per_hour: u32,
}

fn tenant_id(raw: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(raw).with_context(|| format!("--tenant must be a tenant id (a UUID), got '{raw}'"))
}

async fn platform_defaults(ctx: &AppContext) -> anyhow::Result<PlatformDefaults> {
    let out = ctx
        .aws
        .dynamodb
        .get_item()
        .table_name(&ctx.config.tenants_table)
        .key("pk", AttributeValue::S("PLATFORM".into()))
        .key("sk", AttributeValue::S("DEFAULTS".into()))
        .send()
        .await?;
    let item = out.item.context("platform defaults are missing: run `switchboard migrate` first")?;
    Ok(serde_dynamo::from_item(item)?)
}

fn print(value: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = AppContext::from_env().await.context("loading configuration (is the stack's env file sourced?)")?;
    match cli.command {
        Command::Tenant { command: TenantCommand::Create { name } } => {
            let defaults = platform_defaults(&ctx).await?;
            let tenant = ctx.tenants.create(&name).await?;
            let key = ctx
                .keys
                .issue(&tenant.tenant_id, "first key", &defaults.first_key_scopes, defaults.api_key_rate_limit_per_hour)
                .await?;
            print(json!({ "tenant_id": tenant.tenant_id, "api_key": key.secret, "key_id": key.key_id }));
        }
        Command::Key { command: KeyCommand::Create { tenant, scopes, name, rate_limit } } => {
            let tenant = tenant_id(&tenant)?;
            ctx.tenants.get(&tenant).await?.with_context(|| format!("no tenant {tenant}"))?;
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s.trim()).with_context(|| format!("unknown scope '{s}'")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if rate_limit == 0 {
                bail!("--rate-limit must be at least 1 request per hour");
            }
            let key = ctx.keys.issue(&tenant, &name, &scopes, rate_limit).await?;
            print(json!({ "key_id": key.key_id, "api_key": key.secret, "scopes": scopes, "rate_limit_per_hour": rate_limit }));
        }
        Command::Key { command: KeyCommand::Revoke { tenant, key_id } } => {
            if !ctx.keys.revoke(&tenant_id(&tenant)?, &key_id).await? {
                bail!("tenant {tenant} has no key {key_id}");
            }
            print(json!({ "revoked": key_id }));
        }
        Command::Key { command: KeyCommand::List { tenant } } => {
            print(json!({ "keys": ctx.keys.list(&tenant_id(&tenant)?).await? }));
        }
        Command::Migrate { dir } => {
            let applied = migrate::run(&ctx.aws.dynamodb, &ctx.config, &dir).await?;
            let applied: Vec<_> = applied.iter().map(|a| json!({"version": a.version, "description": a.description})).collect();
            print(json!({ "applied": applied }));
        }
        Command::Demo { command: DemoCommand::Seed { tenant, calls } } => {
            let tenant = tenant_id(&tenant)?;
            ctx.tenants.get(&tenant).await?.with_context(|| format!("no tenant {tenant}"))?;
            let batch = demo::calls(&tenant, calls, chrono::Utc::now());
            ctx.calls.insert_many(&batch).await?;
            let department = match ctx.departments.by_number(&tenant, &demo::department(&tenant, chrono::Utc::now())?.phone_number).await? {
                Some(existing) => existing,
                None => {
                    let department = demo::department(&tenant, chrono::Utc::now())?;
                    ctx.departments.put(&department, None).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    department
                }
            };
            for agent in demo::agents(&department, chrono::Utc::now())? {
                if ctx.agents.get(&tenant, &agent.agent_id).await?.is_none() {
                    ctx.agents.save(&agent, None, "state_change").await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
            }
            let agents: Vec<_> = demo::AGENTS.iter().map(|(id, name, _)| json!({"id": id, "full_name": name})).collect();
            print(json!({
                "tenant_id": tenant,
                "calls_written": batch.len(),
                "agents": agents,
                "departments": demo::DEPARTMENTS,
                "inbound_line": { "number": department.phone_number, "department": department.name }
            }));
        }
        Command::Provider { command: ProviderCommand::SetTwilio { tenant, account_sid, auth_token, numbers } } => {
            let tenant = tenant_id(&tenant)?;
            let account = simulator::set_twilio(&ctx, &tenant, &account_sid, &auth_token, &numbers).await?;
            print(json!({ "provider": account }));
        }
        Command::Provider { command: ProviderCommand::List { tenant } } => {
            print(json!({ "providers": ctx.providers.list(&tenant_id(&tenant)?).await? }));
        }
        Command::Audit { command: AuditCommand::List { tenant, call, limit } } => {
            let entries = ctx.audit.recent(&tenant_id(&tenant)?, call.as_deref(), limit.clamp(1, 1000)).await?;
            print(json!({ "entries": entries }));
        }
        Command::Simulate { command: SimulateCommand::Call { tenant, calls, to, duplicates, shuffle, gateway, twilio_addr } } => {
            let options = simulator::Options { calls, to, duplicates, shuffle, gateway, twilio_addr };
            let report = simulator::run(&ctx, &tenant_id(&tenant)?, &options).await?;
            print(report);
        }
        Command::Gateway { addr } => {
            shared::telemetry::init();
            let listener = gateway::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            eprintln!("switchboard gateway listening on http://{addr}{}<name>", gateway::PREFIX);
            for name in gateway::FUNCTIONS {
                eprintln!("  http://{addr}{}{name}", gateway::PREFIX);
            }
            let ctx = Arc::new(ctx);
            let fetcher = tokio::spawn(workers::recording_fetcher(ctx.clone(), workers::Polling::default()));
            let outbox = tokio::spawn(workers::outbox(ctx.clone(), "gateway".into(), workers::Start::Oldest));
            let dispatcher = tokio::spawn(workers::crm_dispatcher(ctx.clone(), workers::Polling::CRM));
            tokio::select! {
                result = gateway::serve(listener, ctx) => result?,
                _ = tokio::signal::ctrl_c() => eprintln!("gateway stopped"),
            }
            fetcher.abort();
            outbox.abort();
            dispatcher.abort();
        }
    }
    Ok(())
}
