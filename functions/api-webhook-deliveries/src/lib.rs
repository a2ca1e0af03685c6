//! `api-webhook-deliveries`: every CRM delivery with its attempts, and replays.
//!
//! - `GET ?event_id=` (calls:read): one delivery with its last attempts (time, status
//!   code, latency, response excerpt, error).
//! - `GET ?status=&event=&call_id=&start_date=&end_date=&limit=&cursor=` (calls:read):
//!   summaries, newest first, by sealed cursor.
//! - `POST {"event_id"}` or `{"start_date", "end_date", "status"?, "event"?, "cursor"?}`
//!   (calls:write): deliver again, with the same `webhook-id`s.

use lambda_http::{Body, Request, Response, http::Method};
use shared::{
    AppContext,
    deliveries::inspect::{self, ReplayInput},
    edge::{self, ApiError},
    tenants::Scope,
};

pub const NAME: &str = "api-webhook-deliveries";

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET, Method::POST])?;
        if req.method() == Method::GET {
            let principal = ctx.authorize(&req, Scope::CallsRead).await?;
            let params = edge::query_params(&req, inspect::LIST_PARAMS)?;
            return edge::ok(&inspect::get(ctx, &principal.tenant_id, &params).await?);
        }
        let principal = ctx.authorize(&req, Scope::CallsWrite).await?;
        edge::query_params(&req, &[])?;
        let input: ReplayInput = serde_json::from_slice(req.body().as_ref())
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        edge::ok(&inspect::replay(ctx, &principal.tenant_id, &principal.key_id, input).await?)
    })
    .await
}
