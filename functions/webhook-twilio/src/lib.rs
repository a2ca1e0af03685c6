//! `webhook-twilio`: Twilio's callbacks, one function with subpaths.
//!
//! Every request is authenticated by `X-Twilio-Signature` before anything is read or
//! stored (400 without it, 403 when it does not verify). `voice` answers TwiML that
//! routes the caller; `status` drives the call state machine; `recording` schedules the
//! fetch into S3. Store failures answer 5xx so Twilio retries; duplicates answer 2xx.

use lambda_http::{
    Body, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use shared::{
    AppContext,
    edge::{self, ApiError},
    providers::twilio::{callbacks, inbound, twiml::Response as Twiml, webhook},
};

pub const NAME: &str = "webhook-twilio";

const SUBPATHS: &[&str] =
    &["/voice", "/status", "/recording", "/wait", "/agent-status", "/voicemail-done", "/conference"];

fn twiml(xml: String) -> Response<Body> {
    let mut response = Response::new(Body::from(xml));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

fn no_content() -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        let path = req.uri().path().to_owned();
        if !SUBPATHS.contains(&path.as_str()) {
            return Err(ApiError::NotFound(format!("no webhook at {path}; expected one of {}", SUBPATHS.join(", "))));
        }
        edge::require_method(&req, &[Method::POST])?;
        let base = webhook::public_base(&req, ctx.config.public_base_url.as_deref(), NAME)?;
        let verified = webhook::verify(&ctx.providers, &req, &base).await?;
        match path.as_str() {
            "/voice" => Ok(twiml(callbacks::on_voice(ctx, &verified, &base).await?)),
            "/status" => callbacks::on_status(ctx, &verified).await.map(|_| no_content()),
            "/recording" => callbacks::on_recording(ctx, &verified).await.map(|_| no_content()),
            "/wait" => Ok(twiml(callbacks::on_wait(ctx, &verified, &base).await?)),
            "/agent-status" => inbound::on_agent_status(ctx, &verified).await.map(|_| no_content()),
            "/voicemail-done" => Ok(twiml(Twiml::new().hangup().to_xml())),
            _ => shared::providers::twilio::conference::on_conference(ctx, &verified).await.map(|_| no_content()),
        }
    })
    .await
}
