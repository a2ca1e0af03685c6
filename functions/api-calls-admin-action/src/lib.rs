//! `POST api-calls-admin-action` (admin scope): a supervisor monitors, barges into,
//! whispers on or disconnects a live call (seed 004 "Admin Call Actions"); see
//! `shared::supervision` for what each action asks of Twilio.
//!
//! 404 for a call the tenant does not have (another tenant's included); 409 when the call
//! is not live, not in a conference, or has no agent to whisper to; 502 when Twilio refuses.

use lambda_http::{Body, Request, Response, http::Method};
use shared::{
    AppContext, edge,
    supervision::{self, ActionRequest},
    tenants::Scope,
};

pub const NAME: &str = "api-calls-admin-action";

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::POST])?;
        let principal = ctx.authorize(&req, Scope::Admin).await?;
        edge::query_params(&req, &[])?;
        let request = ActionRequest::parse(req.body().as_ref())?;
        edge::ok(&supervision::perform(ctx, &principal, &request).await?)
    })
    .await
}
