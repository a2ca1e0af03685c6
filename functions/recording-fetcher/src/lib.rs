//! `recording-fetcher`: SQS consumer that streams finished recordings from the provider
//! into S3. Jobs run concurrently; each failure is reported alone
//! (`ReportBatchItemFailures`) so the queue retries just it, then dead-letters it.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use shared::{AppContext, providers::twilio::callbacks, recordings::FetchJob};
use tracing::Instrument;

pub const NAME: &str = "recording-fetcher";
const CONCURRENCY: usize = 4;

pub async fn handler(ctx: &AppContext, event: SqsEvent) -> SqsBatchResponse {
    let failures: Vec<BatchItemFailure> = futures::stream::iter(event.records)
        .map(|record| {
            let id = record.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("job", function = NAME, message_id = %id);
            async move {
                let job: Result<FetchJob, _> = serde_json::from_str(record.body.as_deref().unwrap_or(""));
                let outcome = match job {
                    Ok(job) => callbacks::fetch_recording(ctx, &job).await,
                    Err(e) => Err(anyhow::Error::from(e).context("malformed fetch job")),
                };
                match outcome {
                    Ok(()) => {
                        tracing::info!(status = "stored", "recording job");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "recording job failed");
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
