use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let ctx = shared::AppContext::from_env().await?;
    let dispatcher = shared::deliveries::dispatch::Dispatcher::new()?;
    run(service_fn(|event: LambdaEvent<_>| async {
        Ok::<_, Error>(crm_dispatcher::handler(&ctx, &dispatcher, event.payload).await)
    }))
    .await
}
