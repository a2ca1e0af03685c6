//! `GET api-calls-monitor`: the live dashboard (seed 004 "Monitor Active Calls") — the
//! tenant's calls in progress, its agents' states and its departments' queues, with the
//! figures over them. No query parameters. See `shared::calls::live` for what is read,
//! how consistently, and the bounds.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::Method};
use shared::{AppContext, calls::live, edge, tenants::Scope};

pub const NAME: &str = "api-calls-monitor";

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET])?;
        let principal = ctx.authorize(&req, Scope::CallsRead).await?;
        edge::query_params(&req, &[])?;
        let dashboard = live::dashboard(ctx, &principal.tenant_id, Utc::now()).await?;
        edge::ok(&dashboard)
    })
    .await
}
