//! Inbound calls over Twilio: a department's callers queue for its agents, and every
//! pairing the queue makes rings that agent into the caller's conference.
//!
//! The queue is served whenever something could pair a caller with an agent: a caller
//! arrives, an agent's call ends or is missed, an agent becomes available, and on every
//! pass of a caller's wait loop (the safety net for a race lost on the way). Serving is
//! safe from anywhere at any time: the pairing itself is one conditional transaction.

use anyhow::Context;
use chrono::Utc;

use super::{
    client::{CallUpdate, TwilioCredentials, TwilioError},
    webhook::Verified,
};
use crate::{
    AppContext,
    agents::{Left, LegEnded, Pairing, QueueEntry, RouteState},
    calls::AgentRef,
    departments::{Department, agent_leg},
    edge::ApiError,
    phone::Address,
    tenants::{TenantId, providers::WebhookAccount},
};

/// Rounds of pairing after legs Twilio refused (each refusal re-queues the caller).
const MAX_ROUNDS: usize = 3;

/// A caller the voice TwiML put on hold in `department`'s conference: queue the call
/// and serve the queue. A retried voice request finds the call queued and only serves.
pub async fn admit(
    ctx: &AppContext,
    account: &WebhookAccount,
    department: &Department,
    call_id: &str,
    caller: &Address,
    webhook_base: &str,
) -> anyhow::Result<()> {
    let entry = QueueEntry {
        call_id: call_id.to_owned(),
        queue_id: department.queue_id.clone(),
        enqueued_at_ms: Utc::now().timestamp_millis(),
        tried: Vec::new(),
        account_sid: account.account_sid.clone(),
        webhook_base: webhook_base.to_owned(),
        caller: caller.e164().map_or_else(|| "anonymous".to_owned(), |n| n.masked()),
    };
    ctx.queue.enqueue(&account.tenant_id, &entry).await?;
    serve(ctx, &account.tenant_id, department, Some(account)).await?;
    Ok(())
}

/// Pairs the department's waiting callers with its free agents and rings each agent.
/// A leg Twilio refuses counts as a missed call: that caller goes back in line without
/// that agent and the queue is served again. Returns how many agents were rung.
pub async fn serve(
    ctx: &AppContext,
    tenant: &TenantId,
    department: &Department,
    known: Option<&WebhookAccount>,
) -> anyhow::Result<usize> {
    let mut rung = 0;
    for _ in 0..MAX_ROUNDS {
        let pairings = ctx.queue.drain(tenant, department).await?;
        let mut refused = false;
        for pairing in &pairings {
            match ring(ctx, tenant, department, pairing, known).await {
                Ok(()) => rung += 1,
                Err(e) => {
                    tracing::warn!(error = %e, call_id = %pairing.entry.call_id, agent_id = %pairing.agent.agent_id, "ringing the agent failed");
                    ctx.queue.leg_ended(tenant, &pairing.entry.call_id, &pairing.agent.agent_id).await?;
                    refused = true;
                }
            }
        }
        if !refused {
            break;
        }
    }
    Ok(rung)
}

/// Serves each of `queue_ids` (an agent's departments), the one whose caller has waited
/// longest first, so a freed agent takes the oldest call among its departments.
pub async fn serve_queues(
    ctx: &AppContext,
    tenant: &TenantId,
    queue_ids: &[String],
    known: Option<&WebhookAccount>,
) -> anyhow::Result<usize> {
    let mut waiting = Vec::new();
    for queue_id in queue_ids {
        let oldest = ctx.queue.waiting(tenant, queue_id, 1).await?;
        if let Some(entry) = oldest.into_iter().next() {
            waiting.push((entry.enqueued_at_ms, queue_id));
        }
    }
    waiting.sort();
    let mut rung = 0;
    for (_, queue_id) in waiting {
        if let Some(department) = ctx.departments.get(tenant, queue_id).await? {
            rung += serve(ctx, tenant, &department, known).await?;
        }
    }
    Ok(rung)
}

async fn ring(
    ctx: &AppContext,
    tenant: &TenantId,
    department: &Department,
    pairing: &Pairing,
    known: Option<&WebhookAccount>,
) -> anyhow::Result<()> {
    let Pairing { entry, agent } = pairing;
    let fetched;
    let account = match known.filter(|a| a.account_sid == entry.account_sid) {
        Some(account) => account,
        None => {
            fetched = ctx
                .providers
                .credentials(tenant, &entry.account_sid)
                .await?
                .context("the call's Twilio account is no longer configured")?;
            &fetched
        }
    };
    let to = agent.endpoint().context("the agent has neither a phone nor a client identity")?;
    let callback = format!(
        "{}/agent-status?call_id={}&queue_id={}&agent_id={}",
        entry.webhook_base, entry.call_id, entry.queue_id, agent.agent_id
    );
    let leg = agent_leg(department, &entry.call_id, to, callback);
    let created = ctx.twilio()?.create_call(&TwilioCredentials::from(account), &leg.create_call()).await?;
    ctx.queue.leg_placed(tenant, &entry.call_id, &agent.agent_id, &created.sid).await
}

/// `agent-status`: the agent leg's progress. Answered: the customer's call carries the
/// agent (or, if the caller left meanwhile, the leg is dropped). Ended: the agent is
/// free again, a missed caller is back in line, and the queues are served.
pub async fn on_agent_status(ctx: &AppContext, webhook: &Verified) -> Result<(), ApiError> {
    let required = |name: &'static str| {
        webhook.param(name).ok_or_else(|| ApiError::invalid(name, format!("agent-status needs {name}")))
    };
    let (call_id, queue_id, agent_id) = (required("call_id")?, required("queue_id")?, required("agent_id")?);
    let status = required("CallStatus")?;
    let tenant = &webhook.account.tenant_id;
    match status {
        "in-progress" | "answered" => {
            if ctx.queue.answered(tenant, call_id, agent_id).await? {
                if let Some(agent) = ctx.agents.get(tenant, agent_id).await? {
                    let agent = AgentRef { id: agent.agent_id, full_name: agent.name, email: agent.email };
                    ctx.calls.assign(tenant, call_id, None, Some(&agent)).await?;
                }
            } else if let Some(leg) = webhook.param("CallSid") {
                hang_up(ctx, &webhook.account, leg).await?;
            }
        }
        "completed" | "busy" | "no-answer" | "failed" | "canceled" => {
            let (outcome, freed) = ctx.queue.leg_ended(tenant, call_id, agent_id).await?;
            let mut queues = freed.map(|a| a.departments).unwrap_or_default();
            if outcome == LegEnded::Missed && !queues.iter().any(|q| q == queue_id) {
                queues.push(queue_id.to_owned());
            }
            serve_queues(ctx, tenant, &queues, Some(&webhook.account)).await?;
        }
        // queued, initiated, ringing: nothing changes until the agent answers or not.
        _ => {}
    }
    Ok(())
}

/// The caller's call ended: out of the queue, or the agent still being rung is dropped
/// (its end then frees the agent).
pub async fn on_caller_ended(ctx: &AppContext, account: &WebhookAccount, call_id: &str) -> anyhow::Result<()> {
    if let Left::AgentRinging { leg_sid: Some(leg) } = ctx.queue.leave(&account.tenant_id, call_id).await? {
        hang_up(ctx, account, &leg).await?;
    }
    Ok(())
}

/// Whether a caller whose wait is over may be moved to the after-hours action: not
/// while an agent is being rung for them or has them. Takes a waiting caller out of
/// the queue.
pub async fn give_up_waiting(
    ctx: &AppContext,
    account: Option<&WebhookAccount>,
    tenant: &TenantId,
    call_id: &str,
) -> anyhow::Result<bool> {
    if let Some(route) = ctx.queue.route(tenant, call_id).await?
        && matches!(route.route_state, RouteState::Ringing | RouteState::Connected)
    {
        return Ok(false);
    }
    match ctx.queue.leave(tenant, call_id).await? {
        Left::Dequeued | Left::NotRouted => Ok(true),
        Left::WithAgent => Ok(false),
        // Paired just now: that agent is dropped, the caller goes on to the action.
        Left::AgentRinging { leg_sid } => {
            if let (Some(leg), Some(account)) = (leg_sid, account) {
                hang_up(ctx, account, &leg).await?;
            }
            Ok(true)
        }
    }
}

/// Ends a leg; one that has already ended is fine.
async fn hang_up(ctx: &AppContext, account: &WebhookAccount, call_sid: &str) -> anyhow::Result<()> {
    match ctx.twilio()?.update_call(&TwilioCredentials::from(account), call_sid, &CallUpdate::Complete).await {
        Ok(_) | Err(TwilioError::Api { status: 404, .. }) => Ok(()),
        Err(e) => Err(e).context("hanging up the agent leg"),
    }
}
