use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let ctx = shared::AppContext::from_env().await?;
    run(service_fn(|event: LambdaEvent<_>| async { Ok::<_, Error>(crm_fanout::handler(&ctx, event.payload).await) })).await
}
