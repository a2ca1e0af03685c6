//! The one harness every black-box test uses.
//!
//! `TestApp::spawn()` serves the real gateway (the same handlers the Lambda binaries
//! run) on an ephemeral loopback port, wired to the local AWS stack that `infra/test`
//! started. Every DynamoDB request the app makes is counted by operation, so tests can
//! assert store costs. Tests isolate themselves by creating their own tenants.

pub mod crm;

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
use switchboard_infra::{simulate::Caller, twilio_fake::TwilioFake, workers::Polling};
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
    /// Twilio's REST API, faked on loopback: the app's Twilio client points at it.
    pub twilio: TwilioFake,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        self.workers.iter().for_each(|w| w.abort());
    }
}

/// A tenant's Twilio account as the simulator needs it.
pub struct TwilioAccount {
    pub account_sid: String,
    pub auth_token: String,
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
        Self::spawn_with(None, None).await
    }

    /// An app whose CRM queue is consumed by `crm-dispatcher`, its retry schedule
    /// multiplied by `delay_scale` (`DELIVERY_DELAY_SCALE`). Other apps leave the queue
    /// alone, so a test can read the jobs the outbox puts there.
    pub async fn spawn_with_crm_dispatcher(delay_scale: f64) -> TestApp {
        Self::spawn_with(None, Some(delay_scale)).await
    }

    /// An app whose DynamoDB client talks to `endpoint` instead (e.g. a dead port, to
    /// see how the edge answers while the store is down).
    pub async fn spawn_with_dynamodb(endpoint: &str) -> TestApp {
        Self::spawn_with(Some(endpoint), None).await
    }

    async fn spawn_with(dynamodb_endpoint: Option<&str>, crm_delay_scale: Option<f64>) -> TestApp {
        shared::telemetry::init_for_tests();
        let config = Config::from_env().unwrap_or_else(|e| {
            panic!("{e}: black-box tests run against the local stack; use ./infra/test (it starts the stack and sources its env)")
        });
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store_requests = StoreRequests::default();
        let mut aws = AwsClients::new(&sdk, config.local);
        let mut counted = aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(store_requests.clone());
        if let Some(endpoint) = dynamodb_endpoint {
            counted = counted.endpoint_url(endpoint);
        }
        let counted = counted.build();
        aws.dynamodb = aws_sdk_dynamodb::Client::from_conf(counted);
        let twilio = TwilioFake::start(Vec::<(String, String)>::new()).await.expect("start Twilio fake");
        let client = shared::providers::twilio::client::TwilioClient::new(&twilio.base_url()).expect("Twilio client");

        let listener = switchboard_infra::gateway::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind gateway");
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}/functions/v1");
        let mut config = config;
        config.public_base_url = Some(base_url.clone());
        // Each app gets its own queues: its workers must only see its own jobs
        // (another test's recordings live in another Twilio fake).
        config.recording_fetch_queue_url = Some(Self::queue(&aws, "recording-fetch").await);
        config.crm_delivery_queue_url = Some(Self::queue(&aws, "crm-delivery").await);
        config.crm_delivery_dlq_url = Some(Self::queue(&aws, "crm-delivery-dlq").await);
        config.delivery_delay_scale = crm_delay_scale.unwrap_or(config.delivery_delay_scale);
        let ctx = Arc::new(AppContext::new(config, aws, Some(client)));
        let server = tokio::spawn(switchboard_infra::gateway::serve(listener, ctx.clone()));
        let polling = Polling { batch: 5, concurrency: 1, retry_after: Duration::from_secs(1) };
        let mut workers = vec![tokio::spawn(switchboard_infra::workers::recording_fetcher(ctx.clone(), polling))];
        if crm_delay_scale.is_some() {
            workers.push(tokio::spawn(switchboard_infra::workers::crm_dispatcher(ctx.clone(), Polling::CRM)));
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        TestApp { base_url, http, ctx, store_requests, twilio, server, workers }
    }

    async fn queue(aws: &AwsClients, purpose: &str) -> String {
        let name = format!("test-{purpose}-{}", uuid::Uuid::new_v4().simple());
        let created = aws.sqs().create_queue().queue_name(name).send().await.expect("create test queue");
        created.queue_url.expect("queue URL")
    }

    /// Configures a Twilio account for `tenant` (stored as the API would) and teaches
    /// the Twilio fake its credentials.
    pub async fn twilio_account(&self, tenant: &TenantId) -> TwilioAccount {
        use shared::tenants::providers::{ProviderAccount, ProviderKind};
        let account_sid = switchboard_infra::twilio_fake::sid("AC");
        let auth_token = format!("{:032x}", rand::random::<u128>());
        let now = chrono::Utc::now();
        let account = ProviderAccount {
            provider_id: uuid::Uuid::new_v4().to_string(),
            kind: ProviderKind::Twilio,
            account_sid: account_sid.clone(),
            phone_numbers: vec![shared::phone::E164::parse("+14155550100").unwrap()],
            priority: 1,
            active: true,
            created_at: now,
            updated_at: now,
            credentials_set_at: now,
        };
        self.ctx.providers.put(tenant, &account, &auth_token.clone().into(), None).await.expect("store provider");
        self.twilio.add_account(&account_sid, &auth_token);
        TwilioAccount { account_sid, auth_token }
    }

    /// Plays Twilio callbacks into this app's `webhook-twilio`, signed with `account`'s token.
    pub fn caller(&self, account: &TwilioAccount) -> Caller {
        Caller {
            http: self.http.clone(),
            webhook_base: format!("{}/webhook-twilio", self.base_url),
            auth_token: account.auth_token.clone(),
        }
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
