//! The outbox: how a committed call event reaches the CRM delivery queue.
//!
//! Events are never sent by the function that commits them. The calls table's stream
//! carries every committed event item; `crm-fanout` turns each into a delivery job on
//! the CRM queue. A process that dies right after its commit loses nothing: the record
//! is in the stream (24 h), and the stream's consumer resumes from its checkpoint.
//! Delivery is at least once; the event id deduplicates.

use anyhow::Context;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{calls::model::ts, tenants::TenantId};

/// One call event to deliver to its tenant's CRM (the CRM queue's message body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub tenant_id: TenantId,
    pub call_id: String,
    pub event_id: String,
    /// `call.status_update`, `call.recording_available`, …
    pub kind: String,
    #[serde(with = "ts")]
    pub occurred_at: DateTime<Utc>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempt: u32,
    /// Not to be attempted before this: SQS delays a message 15 minutes at most, so a
    /// longer backoff is a chain of hops, each re-sent until this time has come.
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// When this job first waited (a retry or a deferral): deferrals end with the
    /// retry schedule's length.
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// The fields of a committed event item that a job needs (its stream image).
#[derive(Deserialize)]
struct EventImage {
    sk: String,
    tenant_id: TenantId,
    call_id: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(with = "ts")]
    occurred_at: DateTime<Utc>,
}

/// The delivery job for a stream record's new image, if it is a call event (calls and
/// other items also flow through the stream and are not CRM events).
pub fn job_from_image<I>(image: I) -> Option<DeliveryJob>
where
    I: Into<serde_dynamo::Item>,
{
    let image: EventImage = serde_dynamo::from_item(image).ok()?;
    image.sk.starts_with("E#").then_some(DeliveryJob {
        tenant_id: image.tenant_id,
        call_id: image.call_id,
        event_id: image.id,
        kind: image.kind,
        occurred_at: image.occurred_at,
        attempt: 0,
        not_before: None,
        since: None,
    })
}

/// Sends jobs to the CRM queue, ten per request; returns the indexes SQS refused.
pub async fn enqueue(sqs: &aws_sdk_sqs::Client, queue_url: &str, jobs: &[DeliveryJob]) -> anyhow::Result<Vec<usize>> {
    let mut refused = Vec::new();
    for (chunk_no, chunk) in jobs.chunks(10).enumerate() {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, job)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(serde_json::to_string(job).expect("jobs serialize"))
                    .build()
                    .context("building SQS entry")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = sqs.send_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await?;
        refused.extend(out.failed.iter().filter_map(|f| f.id.parse::<usize>().ok()).map(|i| chunk_no * 10 + i));
    }
    Ok(refused)
}
