//! `api-call-settings` (settings scope): a tenant's recording, consent, transcription and
//! retention settings and its CRM webhook (seed 004 "Set Up Call Settings").
//!
//! GET returns them; PUT changes the fields it names. The webhook's bearer token and
//! signing secret are write-only: responses say only whether and when each was set. The
//! one exception is `"crm_webhook_secret": "generate"`, whose PUT returns the new secret
//! once as `generated_secret`, since the CRM must be told it.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::Method};
use secrecy::ExposeSecret;
use serde::Serialize;
use shared::{
    AppContext,
    edge::{self, ApiError},
    tenants::{
        Scope,
        settings::{SettingsInput, SettingsView},
    },
};

pub const NAME: &str = "api-call-settings";

#[derive(Serialize)]
struct Reply<'a> {
    settings: SettingsView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_secret: Option<&'a str>,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET, Method::PUT])?;
        let principal = ctx.authorize(&req, Scope::Settings).await?;
        let tenant = &principal.tenant_id;
        edge::query_params(&req, &[])?;
        let now = Utc::now();
        if req.method() == Method::GET {
            let record = ctx.settings.get_record(tenant).await?;
            return edge::ok(&Reply { settings: record.view(now), generated_secret: None });
        }
        let input: SettingsInput = serde_json::from_slice(req.body().as_ref())
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        let update = ctx.settings.update(tenant, input.validate(ctx.config.local)?, now).await?;
        edge::ok(&Reply {
            settings: update.record.view(now),
            generated_secret: update.generated_secret().map(ExposeSecret::expose_secret),
        })
    })
    .await
}
