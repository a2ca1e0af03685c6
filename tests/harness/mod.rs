//! The one harness every black-box test uses.
//!
//! `TestApp::spawn()` serves the real gateway (the same handlers the Lambda binaries
//! run) on an ephemeral loopback port, wired to the local AWS stack that `infra/test`
//! started. Every DynamoDB request the app makes is counted by operation, so tests can
//! assert store costs. Tests isolate themselves by creating their own tenants.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_sdk_dynamodb::{
    config::{ConfigBag, Intercept, RuntimeComponents, interceptors::BeforeTransmitInterceptorContextRef},
    error::BoxError,
};
use serde_json::Value;
use shared::{
    AppContext,
    aws::AwsClients,
    config::Config,
    tenants::{Scope, TenantId},
};

/// Counts DynamoDB requests as they are transmitted (retries included), by operation.
#[derive(Debug, Default, Clone)]
pub struct StoreRequests(Arc<Mutex<HashMap<String, usize>>>);

impl StoreRequests {
    /// Requests since the last call, by operation (`Query`, `UpdateItem`, …).
    pub fn take(&self) -> HashMap<String, usize> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for StoreRequests {
    fn name(&self) -> &'static str {
        "StoreRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        *self.0.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub ctx: Arc<AppContext>,
    pub store_requests: StoreRequests,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: TenantId,
    pub api_key: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.field` of an error envelope.
    pub fn error_field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        shared::telemetry::init_for_tests();
        let config = Config::from_env().unwrap_or_else(|e| {
            panic!("{e}: black-box tests run against the local stack; use ./infra/test (it starts the stack and sources its env)")
        });
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store_requests = StoreRequests::default();
        let mut aws = AwsClients::new(&sdk, config.local);
        let counted = aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(store_requests.clone()).build();
        aws.dynamodb = aws_sdk_dynamodb::Client::from_conf(counted);
        let twilio = shared::providers::twilio::client::TwilioClient::from_env().expect("Twilio client");
        let ctx = Arc::new(AppContext::new(config, aws, twilio));

        let listener = switchboard_infra::gateway::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind gateway");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(switchboard_infra::gateway::serve(listener, ctx.clone()));
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        TestApp { base_url: format!("http://{addr}/functions/v1"), http, ctx, store_requests, server }
    }

    /// A new tenant with a key holding every scope at the default rate limit.
    pub async fn tenant(&self, name: &str) -> TestTenant {
        let tenant = self.ctx.tenants.create(name).await.expect("create tenant");
        let key = self.key(&tenant.tenant_id, &Scope::ALL, shared::tenants::DEFAULT_RATE_LIMIT_PER_HOUR).await;
        TestTenant { id: tenant.tenant_id, api_key: key }
    }

    pub async fn key(&self, tenant: &TenantId, scopes: &[Scope], rate_limit: u32) -> String {
        self.ctx.keys.issue(tenant, "test", scopes, rate_limit).await.expect("issue key").secret
    }

    /// `GET <function>?<query>` with an optional `x-api-key`.
    pub async fn get(&self, function: &str, query: &[(&str, &str)], key: Option<&str>) -> Reply {
        let mut request = self.http.get(format!("{}/{function}", self.base_url)).query(query);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        Self::reply(request.send().await.expect("gateway reachable")).await
    }

    pub async fn request(&self, request: reqwest::RequestBuilder) -> Reply {
        Self::reply(request.send().await.expect("gateway reachable")).await
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Reply { status, headers, body }
    }
}
