//! What each verified Twilio callback does to the store, and the recording fetch it
//! schedules. The `webhook-twilio` and `recording-fetcher` functions are thin shells
//! around these.

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;

use super::{
    client::{RecordingFormat, TwilioCredentials, TwilioError},
    webhook::{self, Verified},
};
use crate::{
    AppContext,
    calls::{CallEvent, RecordingRef, RecordingStatus, lifecycle::{Applied, call_id_for}},
    edge::ApiError,
    recordings::{self, FetchJob},
};

/// `status` (and the status part of `voice`): one state-machine step.
pub async fn on_status(ctx: &AppContext, webhook: &Verified) -> Result<Applied, ApiError> {
    let report = webhook::status_report(webhook)?;
    Ok(ctx.calls.apply_status(&report).await?)
}

/// `recording`: `completed` schedules the fetch into S3; `absent`/`failed` are recorded
/// on the call with Twilio's error code.
pub async fn on_recording(ctx: &AppContext, webhook: &Verified) -> Result<(), ApiError> {
    let callback = webhook::recording_callback(webhook)?;
    let tenant = &webhook.account.tenant_id;
    let call_id = call_id_for("twilio", &webhook.account.account_sid, &callback.call_sid);
    let mut recording = RecordingRef::with_status(RecordingStatus::Pending);
    recording.recording_sid = Some(callback.recording_sid.clone());
    recording.duration_seconds = callback.duration_seconds;
    match callback.status.as_str() {
        "in-progress" => Ok(()),
        "completed" => {
            ctx.calls.set_recording(tenant, &call_id, &recording, None).await?;
            let queue = ctx.config.recording_fetch_queue_url.as_deref().context("RECORDING_FETCH_QUEUE_URL is not set")?;
            let job = FetchJob {
                tenant_id: tenant.clone(),
                account_sid: webhook.account.account_sid.clone(),
                call_id,
                recording_sid: callback.recording_sid,
                duration_seconds: callback.duration_seconds,
            };
            // If this fails Twilio gets a 5xx and retries the callback: nothing is lost.
            ctx.aws
                .sqs
                .send_message()
                .queue_url(queue)
                .message_body(serde_json::to_string(&job).context("encoding fetch job")?)
                .send()
                .await
                .context("enqueueing recording fetch")?;
            Ok(())
        }
        "absent" | "failed" => {
            recording.status = if callback.status == "absent" { RecordingStatus::Absent } else { RecordingStatus::Failed };
            recording.error_code = callback.error_code;
            ctx.calls.set_recording(tenant, &call_id, &recording, None).await?;
            Ok(())
        }
        other => Err(ApiError::invalid("RecordingStatus", format!("unknown RecordingStatus '{other}'"))),
    }
}

/// The recording fetcher's work: Twilio → S3 (streamed, encrypted, one object per
/// recording), then the call is marked and one `call.recording_available` event appended.
/// A recording Twilio no longer has is recorded as failed and not retried; any other
/// failure is returned so the queue retries it.
pub async fn fetch_recording(ctx: &AppContext, job: &FetchJob) -> anyhow::Result<()> {
    let bucket = ctx.config.recordings_bucket.as_deref().context("RECORDINGS_BUCKET is not set")?;
    let account = ctx
        .providers
        .credentials(&job.tenant_id, &job.account_sid)
        .await?
        .with_context(|| format!("tenant has no provider account {}", job.account_sid))?;
    let creds = TwilioCredentials {
        account_sid: account.account_sid.clone(),
        auth_token: account.auth_token.expose_secret().to_owned().into(),
    };
    let media = match ctx.twilio.fetch_recording(&creds, &job.recording_sid, RecordingFormat::Wav).await {
        Ok(media) => media,
        Err(TwilioError::Api { status: 404, code, .. }) => {
            let mut failed = RecordingRef::with_status(RecordingStatus::Failed);
            failed.recording_sid = Some(job.recording_sid.clone());
            failed.error_code = Some(code.map_or("404".to_owned(), |c| c.to_string()));
            ctx.calls.set_recording(&job.tenant_id, &job.call_id, &failed, None).await?;
            return Ok(());
        }
        Err(e) => return Err(e).context("fetching recording from Twilio"),
    };
    let key = recordings::object_key(&job.tenant_id, &job.call_id, &job.recording_sid, "wav");
    let content_type = media.content_type.clone();
    let size = recordings::upload(&ctx.aws.s3, bucket, &key, &content_type, Box::pin(media.into_stream())).await?;

    let stored_at = Utc::now();
    let mut recording = RecordingRef::with_status(RecordingStatus::Available);
    recording.recording_sid = Some(job.recording_sid.clone());
    recording.duration_seconds = job.duration_seconds;
    recording.object_key = Some(key);
    recording.content_type = Some(content_type);
    recording.size_bytes = Some(size);
    recording.stored_at = Some(stored_at);
    let event = CallEvent {
        id: call_id_for("recording", &job.call_id, &job.recording_sid),
        call_id: job.call_id.clone(),
        kind: "call.recording_available".into(),
        status: None,
        occurred_at: stored_at,
        source: "twilio".into(),
        detail: serde_json::Map::from_iter([
            ("recording_sid".to_owned(), job.recording_sid.clone().into()),
            ("duration_seconds".to_owned(), job.duration_seconds.into()),
        ]),
    };
    ctx.calls.set_recording(&job.tenant_id, &job.call_id, &recording, Some(&event)).await?;
    Ok(())
}
