use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let ctx = shared::AppContext::from_env().await?;
    run(service_fn(|req| async { Ok::<_, Error>(api_departments_manage::handler(&ctx, req).await) })).await
}
