//! `recording-fetcher`: SQS consumer that streams finished recordings from the provider
//! into S3. Jobs run concurrently; each failure is reported alone
//! (`ReportBatchItemFailures`) so the queue retries just it, then dead-letters it.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use shared::{AppContext, jobs, providers::twilio::callbacks, recordings::FetchJob};

pub const NAME: &str = "recording-fetcher";
const CONCURRENCY: usize = 4;

pub async fn handler(ctx: &AppContext, event: SqsEvent) -> SqsBatchResponse {
    jobs::process_batch(NAME, event, CONCURRENCY, |job: FetchJob| async move {
        callbacks::fetch_recording(ctx, &job).await?;
        tracing::info!(recording = %job.recording_sid, "recording stored");
        Ok(())
    })
    .await
}
