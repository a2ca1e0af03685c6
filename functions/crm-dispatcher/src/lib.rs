//! `crm-dispatcher`: SQS consumer that POSTs each call event to its tenant's CRM.
//! Every record of a batch is in flight at once, so one tenant's hanging CRM costs its
//! own record at most the 15 s request timeout and delays no other tenant's. A retry is
//! a new (delayed) message, so the record itself succeeds; only a store or queue error
//! fails it (`ReportBatchItemFailures`), for the queue to redeliver.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use shared::{
    AppContext,
    deliveries::dispatch::{self, Outcome},
    jobs,
    outbox::DeliveryJob,
};

pub const NAME: &str = "crm-dispatcher";
/// The template's BatchSize: a whole batch in flight together.
const CONCURRENCY: usize = 10;

pub async fn handler(ctx: &AppContext, http: &reqwest::Client, event: SqsEvent) -> SqsBatchResponse {
    jobs::process_batch(NAME, event, CONCURRENCY, |job| process(ctx, http, job)).await
}

async fn process(ctx: &AppContext, http: &reqwest::Client, job: DeliveryJob) -> anyhow::Result<()> {
    let outcome = dispatch::deliver(ctx, http, &job, chrono::Utc::now()).await?;
    tracing::info!(tenant = %job.tenant_id, event_id = %job.event_id, attempt = job.attempt, outcome = ?outcome, "delivery");
    if let Outcome::Retry { after, attempt } = outcome {
        dispatch::schedule(ctx, &DeliveryJob { attempt, ..job }, after).await?;
    }
    Ok(())
}
