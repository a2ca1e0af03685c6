//! `api-departments-manage`: a tenant's departments (seed 004 "Department Management APIs").
//!
//! - `GET` (calls:read): every department. `GET ?queue_id=[&at=]`: one, with whether it
//!   is `open` at `at` (an RFC 3339 instant, default now), so a CRM can check business
//!   hours on either side of a daylight-saving change.
//! - `POST` (settings): creates one → 201. `PUT {queue_id, …}` (settings): changes the
//!   fields the body names. `DELETE ?queue_id=` (settings): refused with 409 while calls
//!   wait in its queue.
//!
//! Every write is audited (`department.create`/`.update`/`.delete`, actor = the key id).

use chrono::{DateTime, Utc};
use lambda_http::{
    Body, Request, Response,
    http::{Method, StatusCode},
};
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    AppContext,
    audit::AuditEntry,
    departments::{Department, DepartmentInput},
    edge::{self, ApiError},
    tenants::{Scope, TenantId},
};

pub const NAME: &str = "api-departments-manage";

#[derive(Serialize)]
struct Many {
    departments: Vec<Department>,
    count: usize,
}

#[derive(Serialize)]
struct One<'a> {
    department: &'a Department,
    #[serde(skip_serializing_if = "Option::is_none")]
    open: Option<bool>,
}

#[derive(Serialize)]
struct Deleted<'a> {
    deleted: bool,
    queue_id: &'a str,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET, Method::POST, Method::PUT, Method::DELETE])?;
        let scope = if req.method() == Method::GET { Scope::CallsRead } else { Scope::Settings };
        let principal = ctx.authorize(&req, scope).await?;
        let (tenant, actor) = (&principal.tenant_id, principal.key_id.as_str());
        match *req.method() {
            Method::GET => {
                let params = edge::query_params(&req, &["queue_id", "at"])?;
                let at = params.get("at").map(|raw| instant(raw)).transpose()?;
                let Some(raw_id) = params.get("queue_id") else {
                    if at.is_some() {
                        return Err(ApiError::invalid("at", "applies only with queue_id"));
                    }
                    let departments = ctx.departments.list(tenant).await?;
                    return edge::ok(&Many { count: departments.len(), departments });
                };
                let department = find(ctx, tenant, &queue_id(raw_id)?).await?;
                let open = department.is_open(at.unwrap_or_else(Utc::now));
                edge::ok(&One { department: &department, open: Some(open) })
            }
            Method::POST => {
                edge::query_params(&req, &[])?;
                let input = body(&req)?;
                if input.queue_id().is_some() {
                    return Err(ApiError::invalid("queue_id", "is assigned by the server"));
                }
                let department = input.validate()?.create(tenant.clone(), Utc::now())?;
                ctx.departments.put(&department, None).await?;
                audit(ctx, tenant, "department.create", actor, &department).await?;
                let mut response = edge::ok(&One { department: &department, open: None })?;
                *response.status_mut() = StatusCode::CREATED;
                Ok(response)
            }
            Method::PUT => {
                edge::query_params(&req, &[])?;
                let input = body(&req)?;
                let id = queue_id(input.queue_id().ok_or_else(|| ApiError::invalid("queue_id", "is required"))?)?;
                let changes = input.validate()?;
                let previous = find(ctx, tenant, &id).await?;
                let department = changes.apply(previous.clone(), Utc::now())?;
                ctx.departments.put(&department, Some(&previous)).await?;
                audit(ctx, tenant, "department.update", actor, &department).await?;
                edge::ok(&One { department: &department, open: None })
            }
            _ => {
                let params = edge::query_params(&req, &["queue_id"])?;
                let raw_id = params.get("queue_id").ok_or_else(|| ApiError::invalid("queue_id", "is required"))?;
                let department = find(ctx, tenant, &queue_id(raw_id)?).await?;
                if ctx.departments.has_waiting_calls(tenant, &department.queue_id).await? {
                    return Err(ApiError::Conflict(
                        "calls are waiting in this department's queue; delete it once they have been answered \
                         or have left"
                            .into(),
                    ));
                }
                ctx.departments.delete(tenant, &department.queue_id).await?;
                audit(ctx, tenant, "department.delete", actor, &department).await?;
                edge::ok(&Deleted { deleted: true, queue_id: &department.queue_id })
            }
        }
    })
    .await
}

/// A department id is a UUID; anything else is a bad request, not an unknown department.
fn queue_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw).map(|id| id.to_string()).map_err(|_| ApiError::invalid("queue_id", "must be a UUID"))
}

fn instant(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid("at", "must be an RFC 3339 instant such as 2025-03-09T13:30:00Z"))
}

/// The tenant's department, or 404 (another tenant's ids included).
async fn find(ctx: &AppContext, tenant: &TenantId, queue_id: &str) -> Result<Department, ApiError> {
    ctx.departments.get(tenant, queue_id).await?.ok_or_else(|| ApiError::NotFound(format!("no department {queue_id}")))
}

/// The body as a [`DepartmentInput`]. serde does not say which field has the wrong JSON
/// type, so a refused body is tried one field at a time to name it.
fn body(req: &Request) -> Result<DepartmentInput, ApiError> {
    let fields: Map<String, Value> = serde_json::from_slice(req.body().as_ref())
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    let parse = |fields: Map<String, Value>| serde_json::from_value::<DepartmentInput>(Value::Object(fields));
    parse(fields.clone()).map_err(|e| {
        let culprit =
            fields.into_iter().find(|(name, value)| parse(Map::from_iter([(name.clone(), value.clone())])).is_err());
        match culprit {
            Some((name, _)) => ApiError::invalid(name.chars().take(64).collect::<String>(), e.to_string()),
            None => ApiError::BadRequest(format!("invalid body: {e}")),
        }
    })
}

async fn audit(
    ctx: &AppContext,
    tenant: &TenantId,
    action: &str,
    actor: &str,
    department: &Department,
) -> Result<(), ApiError> {
    let mut entry = AuditEntry::new(tenant, action, actor, None);
    entry.detail.insert("queue_id".into(), department.queue_id.clone().into());
    entry.detail.insert("name".into(), department.name.clone().into());
    ctx.audit.record(&entry).await?;
    Ok(())
}
