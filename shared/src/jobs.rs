//! One way to consume an SQS batch (`ReportBatchItemFailures`): every record's JSON job
//! is decoded and handled concurrently, each in its own span; a malformed job or a
//! failed one is reported alone, so the queue retries (then dead-letters) just it.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tracing::Instrument;

pub async fn process_batch<J, F, Fut>(function: &'static str, event: SqsEvent, concurrency: usize, handle: F) -> SqsBatchResponse
where
    J: DeserializeOwned,
    F: Fn(J) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let handle = &handle;
    let failures: Vec<BatchItemFailure> = futures::stream::iter(event.records)
        .map(|record| {
            let id = record.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("job", function, message_id = %id);
            async move {
                let outcome = match serde_json::from_str::<J>(record.body.as_deref().unwrap_or("")) {
                    Ok(job) => handle(job).await,
                    Err(e) => Err(anyhow::Error::from(e).context("malformed job")),
                };
                let error = outcome.err()?;
                tracing::error!(error = format!("{error:#}"), "job failed");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                Some(failure)
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}
