//! `GET api-calls-recording?call_id=`: a presigned S3 URL for the call's recording,
//! valid one hour, with `expires_at` (seed 004). 404 when there is no recording (or the
//! call is another tenant's); 403 when consent was withdrawn; 410 past retention. The
//! audit entry is written before the URL is made, so no URL exists un-audited.

use chrono::Utc;
use lambda_http::{Body, Request, Response, http::Method};
use serde::Serialize;
use shared::{
    AppContext,
    audit::AuditEntry,
    calls,
    edge::{self, ApiError},
    recordings,
    tenants::Scope,
};

pub const NAME: &str = "api-calls-recording";

#[derive(Serialize)]
struct RecordingResponse {
    recording_url: String,
    expires_at: String,
    call_id: String,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET])?;
        let principal = ctx.authorize(&req, Scope::RecordingsRead).await?;
        let params = edge::query_params(&req, &["call_id"])?;
        let call_id = calls::parse_call_id(params.get("call_id").map(String::as_str))?;
        let tenant = &principal.tenant_id;
        let (call, settings) = tokio::try_join!(ctx.calls.get(tenant, &call_id), ctx.settings.get(tenant))?;
        let call = call.ok_or_else(|| ApiError::NotFound(format!("no call {call_id}")))?;
        let key = recordings::accessible(&call, &settings, Utc::now())?;
        let bucket = ctx.config.recordings_bucket.as_deref().ok_or_else(|| anyhow_missing("RECORDINGS_BUCKET"))?;

        let mut entry = AuditEntry::new(tenant, "recording.url_issued", &principal.key_id, Some(&call_id));
        let expires_at = entry.at + chrono::Duration::from_std(recordings::URL_TTL).expect("an hour fits");
        entry.detail.insert("expires_at".into(), calls::model::ts::format(&expires_at).into());
        ctx.audit.record(&entry).await?;
        let (recording_url, expires_at) = recordings::presign_get(ctx.aws.s3(), bucket, key, recordings::URL_TTL).await?;
        edge::ok(&RecordingResponse { recording_url, expires_at: calls::model::ts::format(&expires_at), call_id })
    })
    .await
}

fn anyhow_missing(name: &str) -> ApiError {
    ApiError::Unexpected(anyhow::anyhow!("{name} is not configured"))
}
