//! `crm-dispatcher`: SQS consumer that POSTs each call event to its tenant's CRM.
//! Every record of a batch is in flight at once, so one tenant's hanging CRM costs its
//! own record at most the 15 s request timeout and delays no other tenant's. A retry is
//! a new (delayed) message, so the record itself succeeds; only a store or queue error
//! fails it (`ReportBatchItemFailures`), for the queue to redeliver.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use shared::{
    AppContext,
    deliveries::dispatch::{self, Outcome},
    outbox::DeliveryJob,
};
use tracing::Instrument;

pub const NAME: &str = "crm-dispatcher";
/// The template's BatchSize: a whole batch in flight together.
const CONCURRENCY: usize = 10;

pub async fn handler(ctx: &AppContext, http: &reqwest::Client, event: SqsEvent) -> SqsBatchResponse {
    let failures: Vec<BatchItemFailure> = futures::stream::iter(event.records)
        .map(|record| {
            let id = record.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("delivery", function = NAME, message_id = %id);
            async move {
                match process(ctx, http, record.body.as_deref().unwrap_or("")).await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "delivery failed");
                        let mut failure = BatchItemFailure::default();
                        failure.item_identifier = id;
                        Some(failure)
                    }
                }
            }
            .instrument(span)
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

async fn process(ctx: &AppContext, http: &reqwest::Client, body: &str) -> anyhow::Result<()> {
    let job: DeliveryJob = serde_json::from_str(body).map_err(|e| anyhow::Error::from(e).context("malformed delivery job"))?;
    let outcome = dispatch::deliver(ctx, http, &job, chrono::Utc::now()).await?;
    tracing::info!(tenant = %job.tenant_id, event_id = %job.event_id, attempt = job.attempt, outcome = ?outcome, "delivery");
    if let Outcome::Retry { after, attempt } = outcome {
        dispatch::schedule(ctx, &DeliveryJob { attempt, ..job }, after).await?;
    }
    Ok(())
}
