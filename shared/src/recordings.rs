//! Recordings live only in S3: private, encrypted, keyed by tenant and call. They leave
//! it only as a short-lived signed URL, issued while consent and retention allow, and
//! every issue is audited before the URL exists.

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::{
    Client,
    presigning::PresigningConfig,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{
    calls::{Call, ConsentStatus, RecordingRef, RecordingStatus},
    edge::ApiError,
    tenants::{TenantId, settings::CallSettings},
};

/// How long a signed recording URL stays valid (seed 004).
pub const URL_TTL: Duration = Duration::from_secs(3600);
/// S3's minimum multipart part size is 5 MiB; parts are buffered up to this.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// The work of fetching one provider recording into S3 (an SQS message body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchJob {
    pub tenant_id: TenantId,
    pub account_sid: String,
    pub call_id: String,
    pub recording_sid: String,
    pub duration_seconds: Option<u32>,
}

/// `recordings/<tenant>/<call>/<recording>.wav`: one object per recording, so a retried
/// fetch overwrites the same object instead of adding another.
pub fn object_key(tenant: &TenantId, call_id: &str, recording_sid: &str, extension: &str) -> String {
    format!("recordings/{tenant}/{call_id}/{recording_sid}.{extension}")
}

/// Streams `body` into `bucket/key` with server-side encryption: one PutObject when it
/// fits in a part, a multipart upload otherwise (aborted on failure). Returns the size.
pub async fn upload<S, E>(s3: &Client, bucket: &str, key: &str, content_type: &str, mut body: S) -> anyhow::Result<u64>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut buffer = Vec::with_capacity(PART_SIZE);
    let mut ended = fill(&mut body, &mut buffer).await?;
    if ended {
        let size = buffer.len() as u64;
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(buffer))
            .send()
            .await
            .context("storing recording")?;
        return Ok(size);
    }
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .server_side_encryption(ServerSideEncryption::Aes256)
        .send()
        .await
        .context("starting multipart upload")?;
    let upload_id = upload.upload_id().context("multipart upload without id")?.to_owned();
    let result = async {
        let mut parts = Vec::new();
        let mut size = 0u64;
        loop {
            let number = parts.len() as i32 + 1;
            size += buffer.len() as u64;
            let part = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(std::mem::take(&mut buffer)))
                .send()
                .await
                .context("uploading part")?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build());
            if ended {
                break;
            }
            ended = fill(&mut body, &mut buffer).await?;
        }
        s3.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .context("completing multipart upload")?;
        anyhow::Ok(size)
    }
    .await;
    if result.is_err() {
        let _ = s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
    }
    result
}

/// Reads into `buffer` until it holds a part or the stream ends (returns true then).
async fn fill<S, E>(body: &mut S, buffer: &mut Vec<u8>) -> anyhow::Result<bool>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    while buffer.len() < PART_SIZE {
        match body.next().await {
            Some(chunk) => buffer.extend_from_slice(&chunk.context("reading recording media")?),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// The stored recording of `call`, if policy allows handing it out now.
pub fn accessible<'a>(call: &'a Call, settings: &CallSettings, now: DateTime<Utc>) -> Result<&'a str, ApiError> {
    let no_recording = || ApiError::NotFound(format!("call {} has no recording", call.id));
    let recording: &RecordingRef = call.recording.as_ref().ok_or_else(no_recording)?;
    let key = match (recording.status, recording.object_key.as_deref()) {
        (RecordingStatus::Available, Some(key)) => key,
        _ => return Err(no_recording()),
    };
    if call.consent.as_ref().is_some_and(|c| matches!(c.status, ConsentStatus::Withdrawn | ConsentStatus::Declined)) {
        return Err(ApiError::Refused {
            status: StatusCode::FORBIDDEN,
            code: "consent_withdrawn",
            message: "the caller withdrew or declined consent to this recording".into(),
        });
    }
    let recorded = recording.stored_at.or(call.ended_at).unwrap_or(call.started_at);
    if recorded + chrono::Duration::days(settings.retention_days.into()) < now {
        return Err(ApiError::Refused {
            status: StatusCode::GONE,
            code: "retention_expired",
            message: format!("the recording passed the tenant's {}-day retention period", settings.retention_days),
        });
    }
    Ok(key)
}

/// A presigned GET for `key`, valid `ttl`; the URL and when it expires.
pub async fn presign_get(s3: &Client, bucket: &str, key: &str, ttl: Duration) -> anyhow::Result<(String, DateTime<Utc>)> {
    let issued = Utc::now();
    let request = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .presigned(PresigningConfig::builder().start_time(issued.into()).expires_in(ttl).build()?)
        .await
        .context("presigning recording URL")?;
    Ok((request.uri().to_string(), issued + chrono::Duration::from_std(ttl)?))
}
