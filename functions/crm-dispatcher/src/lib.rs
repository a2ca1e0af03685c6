//! `crm-dispatcher`: SQS consumer that POSTs each call event to its tenant's CRM.
//! A batch is read from the store in one request, then every record of it is in
//! flight at once. A retry or a deferral is a new (delayed) message, so the record
//! itself succeeds; only a store or queue error fails it (`ReportBatchItemFailures`),
//! for the queue to redeliver. How one tenant's silent CRM is kept from holding up the
//! others: see `shared::deliveries::dispatch`.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::{
    AppContext,
    deliveries::dispatch::{self, Dispatcher, Outcome},
    outbox::DeliveryJob,
};

pub const NAME: &str = "crm-dispatcher";

pub async fn handler(ctx: &AppContext, dispatcher: &Dispatcher, event: SqsEvent) -> SqsBatchResponse {
    let mut failed = Vec::new();
    let mut jobs = Vec::new();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        match serde_json::from_str::<DeliveryJob>(record.body.as_deref().unwrap_or("")) {
            Ok(job) => jobs.push((id, job)),
            Err(e) => {
                tracing::error!(function = NAME, message_id = %id, error = %e, "malformed job");
                failed.push(id);
            }
        }
    }
    let batch: Vec<DeliveryJob> = jobs.iter().map(|(_, job)| job.clone()).collect();
    let outcomes = dispatcher.deliver_all(ctx, &batch, chrono::Utc::now()).await;
    let follow_ups = jobs.into_iter().zip(outcomes).map(|((id, job), outcome)| async move {
        match follow_up(ctx, &job, outcome).await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(function = NAME, message_id = %id, event_id = %job.event_id, error = format!("{e:#}"), "job failed");
                Some(id)
            }
        }
    });
    failed.extend(futures::future::join_all(follow_ups).await.into_iter().flatten());
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// Logs the outcome and queues what comes next: the retry's or the deferral's hop.
async fn follow_up(ctx: &AppContext, job: &DeliveryJob, outcome: anyhow::Result<Outcome>) -> anyhow::Result<()> {
    let outcome = outcome?;
    tracing::info!(tenant = %job.tenant_id, event_id = %job.event_id, attempt = job.attempt, outcome = ?outcome, "delivery");
    match outcome {
        Outcome::Retry { after, attempt } => dispatch::schedule(ctx, &DeliveryJob { attempt, ..job.clone() }, after).await,
        Outcome::Deferred { after, .. } => dispatch::schedule(ctx, job, after).await,
        _ => Ok(()),
    }
}
