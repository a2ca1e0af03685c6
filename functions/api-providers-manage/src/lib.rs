//! `api-providers-manage` (settings scope): a tenant's telephony provider accounts.
//!
//! GET lists them; POST creates one; PUT `{provider_id, …}` updates it partially;
//! DELETE `?provider_id=` removes it. Credentials (`auth_token`) are write-only: accepted
//! on POST/PUT, never returned (responses show `credentials_set_at`), never logged.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::Method};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use shared::{
    AppContext,
    edge::{self, ApiError},
    phone::E164,
    tenants::{
        Scope,
        providers::{ProviderAccount, ProviderError, ProviderKind, valid_account_sid},
    },
};

pub const NAME: &str = "api-providers-manage";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderInput {
    provider_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<String>,
    phone_numbers: Option<Vec<String>>,
    priority: Option<u32>,
    active: Option<bool>,
}

impl std::fmt::Debug for ProviderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderInput([REDACTED])")
    }
}

#[derive(Serialize)]
struct One<'a> {
    provider: &'a ProviderAccount,
}

#[derive(Serialize)]
struct Many {
    providers: Vec<ProviderAccount>,
    count: usize,
}

fn body(req: &Request) -> Result<ProviderInput, ApiError> {
    serde_json::from_slice(req.body().as_ref()).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn numbers(raw: Vec<String>) -> Result<Vec<E164>, ApiError> {
    raw.iter()
        .enumerate()
        .map(|(i, n)| E164::parse(n).map_err(|e| ApiError::invalid(format!("phone_numbers[{i}]"), e.to_string())))
        .collect()
}

fn token(raw: String) -> Result<SecretString, ApiError> {
    if raw.len() < 16 || raw.len() > 256 || raw.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid("auth_token", "auth_token must be 16 to 256 characters without spaces"));
    }
    Ok(SecretString::from(raw))
}

fn conflict(e: ProviderError) -> ApiError {
    match e {
        ProviderError::AccountTaken(_) => ApiError::Conflict(e.to_string()),
        ProviderError::NotFound(id) => ApiError::NotFound(format!("no provider {id}")),
        ProviderError::Store(e) => ApiError::Unexpected(e),
    }
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET, Method::POST, Method::PUT, Method::DELETE])?;
        let principal = ctx.authorize(&req, Scope::Settings).await?;
        let tenant = &principal.tenant_id;
        match *req.method() {
            Method::GET => {
                edge::query_params(&req, &[])?;
                let providers = ctx.providers.list(tenant).await?;
                edge::ok(&Many { count: providers.len(), providers })
            }
            Method::POST => {
                let input = body(&req)?;
                if input.provider_id.is_some() {
                    return Err(ApiError::invalid("provider_id", "provider_id is assigned by the server"));
                }
                match input.kind.as_deref() {
                    Some("twilio") => {}
                    _ => return Err(ApiError::invalid("type", "type must be \"twilio\"")),
                }
                let account_sid = input.account_sid.filter(|s| valid_account_sid(s)).ok_or_else(|| {
                    ApiError::invalid("account_sid", "account_sid must be a Twilio Account SID (AC + 32 hex digits)")
                })?;
                let auth_token = token(input.auth_token.ok_or_else(|| ApiError::invalid("auth_token", "auth_token is required"))?)?;
                let now = Utc::now();
                let account = ProviderAccount {
                    provider_id: uuid::Uuid::new_v4().to_string(),
                    kind: ProviderKind::Twilio,
                    account_sid,
                    phone_numbers: numbers(input.phone_numbers.unwrap_or_default())?,
                    priority: input.priority.unwrap_or(1),
                    active: input.active.unwrap_or(true),
                    created_at: now,
                    updated_at: now,
                    credentials_set_at: now,
                };
                ctx.providers.put(tenant, &account, &auth_token, None).await.map_err(conflict)?;
                let mut response = edge::ok(&One { provider: &account })?;
                *response.status_mut() = lambda_http::http::StatusCode::CREATED;
                Ok(response)
            }
            Method::PUT => {
                let input = body(&req)?;
                let id = input.provider_id.clone().ok_or_else(|| ApiError::invalid("provider_id", "provider_id is required"))?;
                let mut account = ctx.providers.get(tenant, &id).await?.ok_or_else(|| ApiError::NotFound(format!("no provider {id}")))?;
                if input.kind.as_deref().is_some_and(|k| k != "twilio") {
                    return Err(ApiError::invalid("type", "type cannot change"));
                }
                let previous_sid = account.account_sid.clone();
                if let Some(sid) = input.account_sid {
                    if !valid_account_sid(&sid) {
                        return Err(ApiError::invalid("account_sid", "account_sid must be a Twilio Account SID (AC + 32 hex digits)"));
                    }
                    account.account_sid = sid;
                }
                if let Some(n) = input.phone_numbers {
                    account.phone_numbers = numbers(n)?;
                }
                account.priority = input.priority.unwrap_or(account.priority);
                account.active = input.active.unwrap_or(account.active);
                account.updated_at = Utc::now();
                // Changing the account needs its token; otherwise the stored one is kept.
                let auth_token = match input.auth_token {
                    Some(raw) => {
                        account.credentials_set_at = account.updated_at;
                        token(raw)?
                    }
                    None if account.account_sid != previous_sid => {
                        return Err(ApiError::invalid("auth_token", "a new account_sid needs its auth_token"));
                    }
                    None => ctx.providers.credentials(tenant, &previous_sid).await?.map(|a| a.auth_token).ok_or_else(|| {
                        ApiError::Unexpected(anyhow::anyhow!("provider {id} has no stored credentials"))
                    })?,
                };
                ctx.providers.put(tenant, &account, &auth_token, Some(&previous_sid)).await.map_err(conflict)?;
                edge::ok(&One { provider: &account })
            }
            _ => {
                let params = edge::query_params(&req, &["provider_id"])?;
                let id = params.get("provider_id").ok_or_else(|| ApiError::invalid("provider_id", "provider_id is required"))?;
                ctx.providers.delete(tenant, id).await.map_err(conflict)?;
                edge::ok(&serde_json::json!({ "deleted": id }))
            }
        }
    })
    .await
}
