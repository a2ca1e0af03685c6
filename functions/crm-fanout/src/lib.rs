//! `crm-fanout`: the calls table's stream → the CRM delivery queue (see `shared::outbox`).
//!
//! On a failed enqueue it reports the first record not enqueued: Lambda retries the
//! batch from there, so nothing after it is skipped (and anything before it that is
//! re-sent is deduplicated by event id downstream).

use aws_lambda_events::{dynamodb::Event, streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse}};
use shared::{AppContext, outbox};

pub const NAME: &str = "crm-fanout";

pub async fn handler(ctx: &AppContext, event: Event) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    let (sequences, jobs): (Vec<Option<String>>, Vec<outbox::DeliveryJob>) = event
        .records
        .into_iter()
        .filter(|r| r.event_name == "INSERT")
        .filter_map(|r| outbox::job_from_image(r.change.new_image).map(|job| (r.change.sequence_number, job)))
        .unzip();
    if jobs.is_empty() {
        return response;
    }
    let first_failed = match ctx.config.crm_delivery_queue_url.as_deref() {
        None => {
            tracing::error!(function = NAME, "CRM_DELIVERY_QUEUE_URL is not set");
            Some(0)
        }
        Some(queue) => match outbox::enqueue(ctx.aws.sqs(), queue, &jobs).await {
            Ok(refused) => refused.into_iter().min(),
            Err(e) => {
                tracing::error!(function = NAME, error = format!("{e:#}"), "enqueueing CRM deliveries");
                Some(0)
            }
        },
    };
    if let Some(index) = first_failed {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = sequences[index].clone();
        response.batch_item_failures.push(failure);
    }
    tracing::info!(function = NAME, events = jobs.len(), failed = first_failed.is_some(), "fan-out");
    response
}
