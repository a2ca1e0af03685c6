//! Local stand-ins for Lambda's SQS event source mappings: poll a queue, hand each
//! batch to the same handler the Lambda binary runs, delete what succeeded, and leave
//! failures to the queue's visibility timeout and redrive policy, as in AWS.

use std::{collections::{HashMap, HashSet}, sync::Arc, time::Duration};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use shared::AppContext;

/// How a queue is polled: `batch` messages per invocation, up to `concurrency`
/// invocations at once (Lambda runs several batches side by side, scaling with the
/// backlog), and how long a failed message stays invisible before its retry (AWS uses
/// the queue's own setting; locally it is shortened to fit a test's patience).
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub batch: i32,
    pub concurrency: usize,
    pub retry_after: Duration,
}

impl Polling {
    /// The CRM queue: whole Lambda batches, twenty at once, invisible longer than the
    /// 15 s a slow CRM may take, so a delivery in flight is not received (and POSTed) again.
    pub const CRM: Polling = Polling { batch: 10, concurrency: 20, retry_after: Duration::from_secs(30) };
}

impl Default for Polling {
    fn default() -> Self {
        Self { batch: 5, concurrency: 1, retry_after: Duration::from_secs(10) }
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
    consume(&ctx, &queue, "recording-fetch", polling, |event| recording_fetcher::handler(&ctx, event)).await
}

/// Feeds the CRM delivery queue to `crm-dispatcher` until the task is dropped (poll it
/// with [`Polling::CRM`]).
pub async fn crm_dispatcher(ctx: Arc<AppContext>, polling: Polling) {
    let Some(queue) = ctx.config.crm_delivery_queue_url.clone() else {
        tracing::warn!("CRM_DELIVERY_QUEUE_URL is not set: CRM dispatcher not started");
        return;
    };
    let dispatcher = match shared::deliveries::dispatch::Dispatcher::new() {
        Ok(dispatcher) => dispatcher,
        Err(e) => return tracing::error!(error = %e, "building the CRM HTTP client: CRM dispatcher not started"),
    };
    consume(&ctx, &queue, "crm-delivery", polling, |event| crm_dispatcher::handler(&ctx, &dispatcher, event)).await
}

/// The event source mapping itself: receive a batch, run `handler` (up to
/// `polling.concurrency` batches at once), delete what it did not report as failed.
async fn consume<F, Fut>(ctx: &AppContext, queue: &str, name: &str, polling: Polling, handler: F)
where
    F: Fn(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    use futures::{StreamExt, stream::FuturesUnordered};
    let sqs = ctx.aws.sqs().clone();
    let arn = format!("arn:aws:sqs:local:000000000000:{name}");
    let receive = || {
        sqs.receive_message()
            .queue_url(queue)
            .max_number_of_messages(polling.batch)
            .wait_time_seconds(1)
            .visibility_timeout(polling.retry_after.as_secs().max(1) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
    };
    let mut running = FuturesUnordered::new();
    // A receive is never abandoned midway (its messages would stay invisible for the
    // visibility timeout): it is polled to the end beside the running batches.
    let mut receiving = None;
    loop {
        if receiving.is_none() && running.len() < polling.concurrency.max(1) {
            receiving = Some(Box::pin(receive()));
        }
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            received = async { receiving.as_mut().expect("guarded").await }, if receiving.is_some() => {
                receiving = None;
                let messages = match received {
                    Ok(out) => out.messages.unwrap_or_default(),
                    Err(e) => {
                        tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), queue = name, "polling");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if !messages.is_empty() {
                    running.push(run_batch(&sqs, queue, name, &arn, messages, &handler));
                }
            }
        }
    }
}

/// One invocation: the batch through `handler`, then the deletes.
async fn run_batch<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    name: &str,
    arn: &str,
    messages: Vec<aws_sdk_sqs::types::Message>,
    handler: &F,
) where
    F: Fn(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    let handles: Vec<(String, String)> =
        messages.iter().filter_map(|m| Some((m.message_id.clone()?, m.receipt_handle.clone()?))).collect();
    let mut event = SqsEvent::default();
    event.records = messages.into_iter().map(|m| record(m, arn)).collect();
    let response = handler(event).await;
    let failed: HashSet<String> = response.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    let done: Vec<DeleteMessageBatchRequestEntry> = handles
        .into_iter()
        .filter(|(id, _)| !failed.contains(id))
        .filter_map(|(id, handle)| DeleteMessageBatchRequestEntry::builder().id(id).receipt_handle(handle).build().ok())
        .collect();
    if !done.is_empty()
        && let Err(e) = sqs.delete_message_batch().queue_url(queue).set_entries(Some(done)).send().await
    {
        tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), queue = name, "deleting finished messages");
    }
}

/// Where a consumer without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record the stream holds (AWS's TRIM_HORIZON, as in template.yaml).
    Oldest,
    /// After what the stream holds now (a test's own consumer ignores older traffic).
    Now,
}

/// Stands in for the DynamoDB Streams event source mapping of `crm-fanout`: reads the
/// calls table's stream from where `consumer` last stopped (its checkpoint lives in
/// the tenants table, so a restart resumes instead of skipping), hands each batch to
/// the handler, and advances only past what it enqueued.
pub async fn outbox(ctx: Arc<AppContext>, consumer: String, start: Start) {
    let streams = aws_sdk_dynamodbstreams::Client::new(ctx.aws.sdk());
    let arn = loop {
        match stream_arn(&ctx).await {
            Ok(arn) => break arn,
            Err(e) => tracing::warn!(error = format!("{e:#}"), "outbox poller: no stream yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // Read from the store once per shard, then kept here; every advance is persisted.
    let mut checkpoints: HashMap<String, Option<String>> = HashMap::new();
    loop {
        if let Err(e) = outbox_pass(&ctx, &streams, &arn, &consumer, start, &mut checkpoints).await {
            tracing::warn!(error = format!("{e:#}"), "outbox poller");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stream_arn(ctx: &AppContext) -> anyhow::Result<String> {
    let table = ctx.aws.dynamodb.describe_table().table_name(&ctx.config.calls_table).send().await?;
    table.table.and_then(|t| t.latest_stream_arn).ok_or_else(|| anyhow::anyhow!("the calls table has no stream"))
}

/// One pass over every shard (listed each pass: shards split): all records available now.
async fn outbox_pass(
    ctx: &AppContext,
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
    consumer: &str,
    start: Start,
    checkpoints: &mut HashMap<String, Option<String>>,
) -> anyhow::Result<()> {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let shards = streams.describe_stream().stream_arn(arn).send().await?.stream_description.and_then(|d| d.shards).unwrap_or_default();
    for shard in shards {
        let Some(shard_id) = shard.shard_id else { continue };
        let checkpoint = match checkpoints.get(&shard_id) {
            Some(known) => known.clone(),
            None => checkpoint(ctx, consumer, &shard_id).await?,
        };
        let skipping = checkpoint.is_none() && start == Start::Now;
        let mut iterator = match checkpoint.as_deref().filter(|c| *c != FROM_OLDEST) {
            Some(seq) => streams.get_shard_iterator().stream_arn(arn).shard_id(&shard_id).shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
            None => streams.get_shard_iterator().stream_arn(arn).shard_id(&shard_id).shard_iterator_type(ShardIteratorType::TrimHorizon),
        }
        .send()
        .await?
        .shard_iterator;
        let mut advance = |seq: String| {
            checkpoints.insert(shard_id.clone(), Some(seq.clone()));
            save_checkpoint(ctx, consumer, &shard_id, seq)
        };
        while let Some(current) = iterator.take() {
            let out = streams.get_records().shard_iterator(current).limit(100).send().await?;
            let records = out.records.unwrap_or_default();
            if records.is_empty() {
                if skipping {
                    // An empty stream: "now" is its start.
                    advance(FROM_OLDEST.to_owned()).await?;
                }
                break;
            }
            let last = records.last().and_then(|r| r.dynamodb.as_ref()).and_then(|d| d.sequence_number.clone());
            if !skipping {
                let mut event = aws_lambda_events::dynamodb::Event::default();
                event.records = records.into_iter().map(lambda_record).collect();
                let response = crm_fanout::handler(ctx, event).await;
                if let Some(failed) = response.batch_item_failures.first() {
                    // Resume at the failed record next pass: everything before it is enqueued.
                    anyhow::bail!("fan-out failed at sequence {:?}", failed.item_identifier);
                }
            }
            if let Some(seq) = last {
                advance(seq).await?;
            }
            iterator = out.next_shard_iterator;
        }
    }
    Ok(())
}

/// A checkpoint meaning "read from the oldest record" (set when `Start::Now` met an
/// empty stream, whose "now" is its beginning).
const FROM_OLDEST: &str = "oldest";

fn lambda_record(record: aws_sdk_dynamodbstreams::types::Record) -> aws_lambda_events::dynamodb::EventRecord {
    let mut event = aws_lambda_events::dynamodb::EventRecord::default();
    event.event_name = record.event_name.map(|n| n.as_str().to_owned()).unwrap_or_default();
    event.event_id = record.event_id.unwrap_or_default();
    if let Some(change) = record.dynamodb {
        event.change.sequence_number = change.sequence_number;
        event.change.keys = change.keys.unwrap_or_default().into();
        event.change.new_image = change.new_image.unwrap_or_default().into();
        event.change.old_image = change.old_image.unwrap_or_default().into();
    }
    event
}

fn checkpoint_key(consumer: &str, shard_id: &str) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue;
    std::collections::HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("OUTBOX#{consumer}"))),
        ("sk".to_owned(), AttributeValue::S(shard_id.to_owned())),
    ])
}

async fn checkpoint(ctx: &AppContext, consumer: &str, shard_id: &str) -> anyhow::Result<Option<String>> {
    let out = ctx
        .aws
        .dynamodb
        .get_item()
        .table_name(&ctx.config.tenants_table)
        .set_key(Some(checkpoint_key(consumer, shard_id)))
        .consistent_read(true)
        .send()
        .await?;
    Ok(out.item.and_then(|i| i.get("sequence_number").and_then(|v| v.as_s().ok()).cloned()))
}

async fn save_checkpoint(ctx: &AppContext, consumer: &str, shard_id: &str, sequence: String) -> anyhow::Result<()> {
    let mut item = checkpoint_key(consumer, shard_id);
    item.insert("sequence_number".into(), aws_sdk_dynamodb::types::AttributeValue::S(sequence));
    ctx.aws.dynamodb.put_item().table_name(&ctx.config.tenants_table).set_item(Some(item)).send().await?;
    Ok(())
}
