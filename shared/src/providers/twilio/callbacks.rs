//! What each verified Twilio callback does to the store, and the recording fetch it
//! schedules. The `webhook-twilio` and `recording-fetcher` functions are thin shells
//! around these.

use anyhow::Context;
use chrono::Utc;

use super::{
    inbound,
    client::{CallInstructions, CallUpdate, RecordingFormat, TwilioCredentials, TwilioError},
    twiml::Response,
    webhook::{self, Verified},
};
use crate::{
    AppContext,
    calls::{CallEvent, Direction, RecordingRef, RecordingStatus, lifecycle::{Applied, call_id_for}},
    departments::{WaitDecision, WebhookUrls, hold_twiml, route_inbound, wait_twiml},
    edge::ApiError,
    recordings::{self, FetchJob},
};

/// A caller past the max wait whose agent is ringing holds this much longer, at a time.
const HOLD_WHILE_RINGING_SECS: i64 = 10;

/// `status` (and the status part of `voice`): one state-machine step. A caller who hangs
/// up leaves the department's queue (or drops the agent being rung for them).
pub async fn on_status(ctx: &AppContext, webhook: &Verified) -> Result<Applied, ApiError> {
    let report = webhook::status_report(webhook)?;
    let applied = ctx.calls.apply_status(&report).await?;
    if report.status.is_terminal() && report.direction == Direction::Inbound {
        inbound::on_caller_ended(ctx, &webhook.account, &report.call_id()).await?;
    }
    Ok(applied)
}

/// The absolute URLs of our webhook endpoints, as Twilio must call them back.
fn urls(webhook_base: &str) -> WebhookUrls {
    let at = |subpath: &str| format!("{webhook_base}/{subpath}");
    WebhookUrls {
        status: at("status"),
        recording: at("recording"),
        conference: at("conference"),
        wait: at("wait"),
        voicemail_done: at("voicemail-done"),
    }
}

/// `voice`: an inbound call. Records it (ringing), files it under the department that
/// owns the dialled number, and answers the TwiML of the routing decision; a caller put
/// on hold is queued for the department's agents (once, even if Twilio retries).
pub async fn on_voice(ctx: &AppContext, webhook: &Verified, webhook_base: &str) -> Result<String, ApiError> {
    let report = webhook::status_report(webhook)?;
    let call_id = report.call_id();
    ctx.calls.apply_status(&report).await?;
    let department = match report.to.e164() {
        Some(number) => ctx.departments.by_number(&report.tenant_id, &number).await?,
        None => None,
    };
    if let Some(department) = &department {
        ctx.calls.assign(&report.tenant_id, &call_id, Some(&department.name), None).await?;
    }
    let route = route_inbound(department.as_ref(), &call_id, Utc::now(), &urls(webhook_base));
    if let (true, Some(department)) = (route.queued, &department) {
        inbound::admit(ctx, &webhook.account, department, &call_id, &report.from, webhook_base).await?;
    }
    Ok(route.twiml)
}

/// `wait`: the conference hold loop. Serves the department's queue (the safety net for
/// a pairing missed on the way) and keeps the caller on hold music until the
/// department's max wait; then takes the caller out of the queue and moves the call to
/// the after-hours action (a wait URL cannot do that itself, so over Twilio's REST API).
pub async fn on_wait(ctx: &AppContext, webhook: &Verified, webhook_base: &str) -> Result<String, ApiError> {
    let queue_id = webhook.param("queue_id").ok_or_else(|| ApiError::invalid("queue_id", "queue_id is required"))?;
    let since: i64 = webhook
        .param("since")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::invalid("since", "since must be epoch seconds"))?;
    let call_sid = webhook.param("CallSid").ok_or_else(|| ApiError::invalid("CallSid", "CallSid is required"))?;
    let tenant = &webhook.account.tenant_id;
    let department = ctx
        .departments
        .get(tenant, queue_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no department {queue_id}")))?;
    inbound::serve(ctx, tenant, &department, Some(&webhook.account)).await?;
    let call_id = call_id_for("twilio", &webhook.account.account_sid, call_sid);
    let urls = urls(webhook_base);
    match wait_twiml(&department, since, Utc::now(), &urls) {
        WaitDecision::Hold(twiml) => Ok(twiml),
        WaitDecision::Expired(after_hours) => {
            if !inbound::give_up_waiting(ctx, Some(&webhook.account), tenant, &call_id).await? {
                // An agent is being rung for this caller: hold a little longer.
                return Ok(hold_twiml(&department, since, HOLD_WHILE_RINGING_SECS, &urls));
            }
            ctx.twilio()?
                .update_call(&TwilioCredentials::from(&webhook.account), call_sid, &CallUpdate::Redirect(CallInstructions::Twiml(after_hours)))
                .await
                .context("moving the caller to the after-hours action")?;
            Ok(Response::new().to_xml())
        }
    }
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
                .sqs()
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
    let creds = TwilioCredentials::from(&account);
    let media = match ctx.twilio()?.fetch_recording(&creds, &job.recording_sid, RecordingFormat::Wav).await {
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
    let size = recordings::upload(ctx.aws.s3(), bucket, &key, &content_type, Box::pin(media.into_stream())).await?;

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
