use std::{collections::HashSet, time::Duration};

use rand::SeedableRng;
use shared::{calls::lifecycle::call_id_for, outbox::DeliveryJob};
use switchboard_infra::{simulate::{self, CallScript}, workers::{self, Start}};
use switchboard_tests::{TestApp, TestTenant};

/// This app's own outbox consumer, started from now; returns once it has a checkpoint.
async fn start_outbox(app: &TestApp, consumer: &str) -> tokio::task::JoinHandle<()> {
    let task = tokio::spawn(workers::outbox(app.ctx.clone(), consumer.to_owned(), Start::Now));
    for _ in 0..100 {
        let out = app
            .ctx
            .aws
            .dynamodb
            .query()
            .table_name(&app.ctx.config.tenants_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("OUTBOX#{consumer}")))
            .send()
            .await
            .unwrap();
        if out.count > 0 {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("outbox consumer {consumer} never checkpointed");
}

/// Drains this app's CRM queue for up to `patience`, returning the tenant's jobs.
async fn drain(app: &TestApp, tenant: &TestTenant, want: usize, patience: Duration) -> Vec<DeliveryJob> {
    let queue = app.ctx.config.crm_delivery_queue_url.clone().unwrap();
    let deadline = tokio::time::Instant::now() + patience;
    let mut jobs = Vec::new();
    while tokio::time::Instant::now() < deadline && jobs.len() < want {
        let out = app.ctx.aws.sqs().receive_message().queue_url(&queue).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
        for message in out.messages.unwrap_or_default() {
            let job: DeliveryJob = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
            if job.tenant_id == tenant.id {
                jobs.push(job);
            }
            app.ctx.aws.sqs().delete_message().queue_url(&queue).receipt_handle(message.receipt_handle.unwrap()).send().await.unwrap();
        }
    }
    jobs
}

async fn play_call(app: &TestApp, account: &switchboard_tests::TwilioAccount, seed: u64) -> String {
    let mut script = CallScript::random("+14155550100", &mut rand::rngs::StdRng::seed_from_u64(seed)).placed_now();
    script.recording_sid = None;
    for callback in simulate::callbacks(&account.account_sid, &script) {
        assert!((200..300).contains(&app.caller(account).deliver(&callback).await.unwrap().0));
    }
    call_id_for("twilio", &account.account_sid, &script.call_sid)
}

#[tokio::test]
async fn every_committed_event_reaches_the_crm_queue_even_across_a_dead_consumer() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant("outbox").await;
    let account = app.twilio_account(&tenant.id).await;
    let consumer = format!("test-{}", uuid::Uuid::new_v4().simple());
    let poller = start_outbox(&app, &consumer).await;

    let first = play_call(&app, &account, 1).await;
    let (_, events) = app.ctx.calls.details(&tenant.id, &first).await.unwrap().unwrap();
    let jobs = drain(&app, &tenant, events.len(), Duration::from_secs(20)).await;
    let delivered: HashSet<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    let committed: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(delivered, committed, "one job per committed event");
    assert!(jobs.iter().all(|j| j.call_id == first && j.kind == "call.status_update"));

    // The consumer dies; events are committed meanwhile (between commit and enqueue).
    poller.abort();
    let _ = poller.await;
    let second = play_call(&app, &account, 2).await;
    assert!(drain(&app, &tenant, 1, Duration::from_secs(2)).await.is_empty(), "nothing moves while it is down");

    // Restarted from its checkpoint, it delivers what was committed while it was down.
    let restarted = tokio::spawn(workers::outbox(app.ctx.clone(), consumer.clone(), Start::Now));
    let (_, events) = app.ctx.calls.details(&tenant.id, &second).await.unwrap().unwrap();
    let jobs = drain(&app, &tenant, events.len(), Duration::from_secs(20)).await;
    let delivered: HashSet<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    let committed: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(delivered, committed);
    restarted.abort();
}
