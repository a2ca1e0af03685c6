//! `GET api-calls-details?call_id=`: one call with its ordered event timeline, consent
//! and metadata. Another tenant's call id is indistinguishable from an unknown one (404).

use lambda_http::{Body, Request, Response, http::Method};
use serde::Serialize;
use shared::{
    AppContext,
    calls::{self, CallEvent, CallView, Consent},
    edge::{self, ApiError},
    tenants::Scope,
};

pub const NAME: &str = "api-calls-details";

#[derive(Serialize)]
struct DetailsResponse<'a> {
    call: DetailedCall<'a>,
    events: &'a [CallEvent],
}

#[derive(Serialize)]
struct DetailedCall<'a> {
    #[serde(flatten)]
    call: CallView<'a>,
    consent: Option<&'a Consent>,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET])?;
        let principal = ctx.authorize(&req, Scope::CallsRead).await?;
        let params = edge::query_params(&req, &["call_id"])?;
        let call_id = calls::parse_call_id(params.get("call_id").map(String::as_str))?;
        let (call, events) = ctx
            .calls
            .details(&principal.tenant_id, &call_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no call {call_id}")))?;
        edge::ok(&DetailsResponse {
            call: DetailedCall { call: call.view(), consent: call.consent.as_ref() },
            events: &events,
        })
    })
    .await
}
