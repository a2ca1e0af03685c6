//! `api-agents-manage`: the agents who answer departments' calls.
//!
//! GET lists them (`?department=`, `?state=` filter) or shows one (`?agent_id=`) with its
//! recent activity log; POST creates one; PUT `{agent_id, …}` changes it partially;
//! DELETE `?agent_id=` removes one not on a call. Reading needs `calls:read`; changing
//! the profile (name, contact, skills, departments) needs `settings`; an agent's
//! availability alone (`{"agent_id", "state"}`, what a softphone sends) also `calls:write`.
//! An agent who becomes available takes the longest-waiting caller of its departments.

use chrono::Utc;
use lambda_http::{
    Body, Request, Response,
    http::{Method, StatusCode},
};
use serde::Serialize;
use shared::{
    AppContext,
    agents::{Activity, Agent, AgentError, AgentInput, AgentState},
    audit::AuditEntry,
    edge::{self, ApiError},
    providers::twilio::inbound,
    tenants::{Scope, TenantId},
};

pub const NAME: &str = "api-agents-manage";

const DEFAULT_ACTIVITY: usize = 50;
const MAX_ACTIVITY: usize = 200;

/// An agent as the API shows it: the stored agent plus today's idle total.
#[derive(Serialize)]
struct AgentView<'a> {
    #[serde(flatten)]
    agent: &'a Agent,
    idle_seconds_today: u64,
}

fn view(agent: &Agent) -> AgentView<'_> {
    AgentView { agent, idle_seconds_today: agent.idle_today(Utc::now()) }
}

#[derive(Serialize)]
struct One<'a> {
    agent: AgentView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activity: Option<Vec<Activity>>,
}

#[derive(Serialize)]
struct Many<'a> {
    agents: Vec<AgentView<'a>>,
    count: usize,
}

fn body(req: &Request) -> Result<AgentInput, ApiError> {
    serde_json::from_slice(req.body().as_ref()).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Every department an agent is put in must be one of the tenant's.
async fn check_departments(ctx: &AppContext, tenant: &TenantId, queue_ids: &[String]) -> Result<(), ApiError> {
    for (i, queue_id) in queue_ids.iter().enumerate() {
        if ctx.departments.get(tenant, queue_id).await?.is_none() {
            return Err(ApiError::invalid(format!("departments[{i}]"), format!("no department {queue_id}")));
        }
    }
    Ok(())
}

async fn audit(ctx: &AppContext, tenant: &TenantId, action: &str, actor: &str, agent: &Agent) -> Result<(), ApiError> {
    let mut entry = AuditEntry::new(tenant, action, actor, None);
    entry.detail.insert("agent_id".into(), agent.agent_id.clone().into());
    entry.detail.insert("state".into(), agent.state.as_str().into());
    ctx.audit.record(&entry).await?;
    Ok(())
}

/// An agent now available takes waiting callers; the agent is read back if rung.
async fn offer_calls(ctx: &AppContext, tenant: &TenantId, agent: Agent) -> Result<Agent, ApiError> {
    if agent.state != AgentState::Available {
        return Ok(agent);
    }
    if inbound::serve_queues(ctx, tenant, &agent.departments, None).await? == 0 {
        return Ok(agent);
    }
    Ok(ctx.agents.get(tenant, &agent.agent_id).await?.unwrap_or(agent))
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET, Method::POST, Method::PUT, Method::DELETE])?;
        match *req.method() {
            Method::GET => {
                let principal = ctx.authorize(&req, Scope::CallsRead).await?;
                let tenant = &principal.tenant_id;
                let params = edge::query_params(&req, &["agent_id", "department", "state", "limit"])?;
                if let Some(agent_id) = params.get("agent_id") {
                    let limit = edge::limit_param(&params, DEFAULT_ACTIVITY, MAX_ACTIVITY)?;
                    let agent = ctx
                        .agents
                        .get(tenant, agent_id)
                        .await?
                        .ok_or_else(|| ApiError::NotFound(format!("no agent {agent_id}")))?;
                    let activity = ctx.agents.activity(tenant, &agent.agent_id, limit as i32).await?;
                    return edge::ok(&One { agent: view(&agent), activity: Some(activity) });
                }
                let state = params
                    .get("state")
                    .map(|s| {
                        AgentState::parse(s)
                            .ok_or_else(|| ApiError::invalid("state", "must be one of available, busy, away, offline"))
                    })
                    .transpose()?;
                let agents = ctx.agents.list(tenant).await?;
                let agents: Vec<AgentView> = agents
                    .iter()
                    .filter(|a| params.get("department").is_none_or(|d| a.serves(d)))
                    .filter(|a| state.is_none_or(|s| a.state == s))
                    .map(view)
                    .collect();
                edge::ok(&Many { count: agents.len(), agents })
            }
            Method::POST => {
                let principal = ctx.authorize(&req, Scope::Settings).await?;
                let tenant = &principal.tenant_id;
                let input = body(&req)?;
                if input.agent_id().is_some() {
                    return Err(ApiError::invalid("agent_id", "agent_id is assigned by the server"));
                }
                let changes = input.validate()?;
                let agent = changes.create(tenant.clone(), Utc::now())?;
                check_departments(ctx, tenant, &agent.departments).await?;
                let saved = ctx.agents.save(&agent, None, "state_change").await?;
                audit(ctx, tenant, "agent.create", &principal.key_id, &saved).await?;
                let saved = offer_calls(ctx, tenant, saved).await?;
                let mut response = edge::ok(&One { agent: view(&saved), activity: None })?;
                *response.status_mut() = StatusCode::CREATED;
                Ok(response)
            }
            Method::PUT => {
                let principal = ctx.authorize_any(&req, &[Scope::Settings, Scope::CallsWrite]).await?;
                let tenant = &principal.tenant_id;
                let input = body(&req)?;
                let id =
                    input.agent_id().ok_or_else(|| ApiError::invalid("agent_id", "agent_id is required"))?.to_owned();
                let changes = input.validate()?;
                if changes.changes_profile() && !principal.has(Scope::Settings) {
                    return Err(ApiError::Forbidden("changing an agent's profile needs the 'settings' scope".into()));
                }
                let before =
                    ctx.agents.get(tenant, &id).await?.ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
                if let Some(departments) = &changes.departments {
                    check_departments(ctx, tenant, departments).await?;
                }
                let now = Utc::now();
                let state = changes.state;
                let mut agent = changes.apply_profile(before.clone(), now)?;
                if let Some(state) = state.filter(|s| *s != before.state) {
                    if let Some(call) = &before.current_call_id {
                        return Err(AgentError::OnCall(before.agent_id.clone(), call.clone()).into());
                    }
                    agent.transition(state, None, now);
                }
                let saved = ctx.agents.save(&agent, Some(&before), "state_change").await?;
                audit(ctx, tenant, "agent.update", &principal.key_id, &saved).await?;
                let saved = offer_calls(ctx, tenant, saved).await?;
                edge::ok(&One { agent: view(&saved), activity: None })
            }
            _ => {
                let principal = ctx.authorize(&req, Scope::Settings).await?;
                let tenant = &principal.tenant_id;
                let params = edge::query_params(&req, &["agent_id"])?;
                let id = params.get("agent_id").ok_or_else(|| ApiError::invalid("agent_id", "agent_id is required"))?;
                let agent =
                    ctx.agents.get(tenant, id).await?.ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))?;
                ctx.agents.delete(tenant, &agent.agent_id).await?;
                audit(ctx, tenant, "agent.delete", &principal.key_id, &agent).await?;
                edge::ok(&serde_json::json!({ "deleted": true, "agent_id": agent.agent_id }))
            }
        }
    })
    .await
}
