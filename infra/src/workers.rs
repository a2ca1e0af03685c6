//! Local stand-ins for Lambda's SQS event source mappings: poll a queue, hand each
//! batch to the same handler the Lambda binary runs, delete what succeeded, and leave
//! failures to the queue's visibility timeout and redrive policy, as in AWS.

use std::{collections::HashSet, sync::Arc, time::Duration};

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use shared::AppContext;

/// How long a failed message stays invisible before its retry. AWS uses the queue's
/// own setting; locally it is shortened so retries happen within a test's patience.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub batch: i32,
    pub retry_after: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self { batch: 5, retry_after: Duration::from_secs(10) }
    }
}

fn record(message: aws_sdk_sqs::types::Message, queue_arn: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id;
    record.receipt_handle = message.receipt_handle;
    record.body = message.body;
    record.md5_of_body = message.md5_of_body;
    record.attributes = message.attributes.unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
    record.event_source = Some("aws:sqs".into());
    record.event_source_arn = Some(queue_arn.to_owned());
    record
}

/// Feeds the recording fetch queue to `recording-fetcher` until the task is dropped.
pub async fn recording_fetcher(ctx: Arc<AppContext>, polling: Polling) {
    let Some(queue) = ctx.config.recording_fetch_queue_url.clone() else {
        tracing::warn!("RECORDING_FETCH_QUEUE_URL is not set: recording fetcher not started");
        return;
    };
    let sqs = ctx.aws.sqs().clone();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(polling.batch)
            .wait_time_seconds(1)
            .visibility_timeout(polling.retry_after.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "polling recording jobs");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let handles: Vec<(String, String)> = messages
            .iter()
            .filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?)))
            .collect();
        let mut event = SqsEvent::default();
        event.records = messages.into_iter().map(|m| record(m, "arn:aws:sqs:local:000000000000:recording-fetch")).collect();
        let response = recording_fetcher::handler(&ctx, event).await;
        let failed: HashSet<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        let done: Vec<DeleteMessageBatchRequestEntry> = handles
            .into_iter()
            .filter(|(id, _)| !failed.contains(id))
            .filter_map(|(id, handle)| DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(handle).build().ok())
            .collect();
        if !done.is_empty()
            && let Err(e) = sqs.delete_message_batch().queue_url(&queue).set_entries(Some(done)).send().await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "deleting finished recording jobs");
        }
    }
}
