//! Everything a function builds once per cold start and shares across requests.

use chrono::Utc;
use http::{HeaderName, HeaderValue};
use lambda_http::Request;

use crate::{
    agents::{AgentStore, QueueStore},
    audit::AuditLog,
    aws::AwsClients,
    providers::twilio::client::TwilioClient,
    calls::CallStore,
    config::Config,
    deliveries::store::DeliveryStore,
    departments::DepartmentStore,
    cursor::CursorSigner,
    edge::{self, ApiError},
    tenants::{AuthError, KeyStore, Principal, RateWindow, Scope, TenantStore, providers::ProviderStore, settings::SettingsStore},
};

#[derive(Debug, Clone)]
pub struct AppContext {
    pub config: Config,
    pub aws: AwsClients,
    pub tenants: TenantStore,
    pub keys: KeyStore,
    pub calls: CallStore,
    pub providers: ProviderStore,
    pub departments: DepartmentStore,
    pub agents: AgentStore,
    pub queue: QueueStore,
    pub settings: SettingsStore,
    pub deliveries: DeliveryStore,
    pub audit: AuditLog,
    twilio: std::sync::OnceLock<TwilioClient>,
    pub cursors: CursorSigner,
}

impl AppContext {
    /// Cold-start wiring: configuration from the environment, then the clients.
    pub async fn from_env() -> anyhow::Result<Self> {
        let config = Config::from_env()?;
        let aws = AwsClients::from_env(config.local).await;
        Ok(Self::new(config, aws, None))
    }

    /// `twilio`: a ready client (tests point one at a local fake), or `None` to build one
    /// from the environment on first use (its TLS setup costs ~3 ms that only
    /// Twilio-facing functions should pay).
    pub fn new(config: Config, aws: AwsClients, twilio: Option<TwilioClient>) -> Self {
        Self {
            providers: ProviderStore::new(aws.dynamodb.clone(), &config.tenants_table),
            departments: DepartmentStore::new(aws.dynamodb.clone(), &config.tenants_table),
            agents: AgentStore::new(aws.dynamodb.clone(), &config.tenants_table),
            queue: QueueStore::new(aws.dynamodb.clone(), &config.tenants_table),
            settings: SettingsStore::new(aws.dynamodb.clone(), &config.tenants_table),
            deliveries: DeliveryStore::new(aws.dynamodb.clone(), &config.tenants_table),
            audit: AuditLog::new(aws.dynamodb.clone(), &config.tenants_table),
            twilio: twilio.map(std::sync::OnceLock::from).unwrap_or_default(),
            tenants: TenantStore::new(aws.dynamodb.clone(), &config.tenants_table),
            keys: KeyStore::new(aws.dynamodb.clone(), &config.tenants_table),
            calls: CallStore::new(aws.dynamodb.clone(), &config.calls_table),
            cursors: CursorSigner::new(config.cursor_key_bytes()),
            config,
            aws,
        }
    }

    pub fn twilio(&self) -> anyhow::Result<&TwilioClient> {
        if let Some(client) = self.twilio.get() {
            return Ok(client);
        }
        let client = TwilioClient::from_env()?;
        Ok(self.twilio.get_or_init(|| client))
    }

    /// Checks `x-api-key`, counts the request against the key's hourly limit, and
    /// requires `scope`: 401 unknown/revoked, 429 over the limit, 403 missing scope.
    pub async fn authorize(&self, req: &Request, scope: Scope) -> Result<Principal, ApiError> {
        self.authorize_any(req, &[scope]).await
    }

    /// [`Self::authorize`] for a request that any one of `scopes` allows.
    pub async fn authorize_any(&self, req: &Request, scopes: &[Scope]) -> Result<Principal, ApiError> {
        let presented = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        let principal = match self.keys.authenticate(presented, Utc::now()).await {
            Ok(p) => p,
            Err(AuthError::Missing) => return Err(ApiError::Unauthorized("missing x-api-key header")),
            Err(AuthError::Invalid) => return Err(ApiError::Unauthorized("invalid API key")),
            Err(AuthError::Revoked) => return Err(ApiError::Unauthorized("API key has been revoked")),
            Err(AuthError::RateLimited(window)) => {
                rate_headers(&window);
                let retry_after_secs = (window.reset_epoch - Utc::now().timestamp()).max(1) as u64;
                return Err(ApiError::RateLimited { limit: window.limit, retry_after_secs });
            }
            Err(AuthError::Store(e)) => return Err(ApiError::Unexpected(e)),
        };
        edge::record_tenant(principal.tenant_id.as_str());
        rate_headers(&principal.rate);
        if !scopes.iter().any(|s| principal.has(*s)) {
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::Forbidden(format!("this API key lacks the '{}' scope", names.join("' or '"))));
        }
        Ok(principal)
    }
}

fn rate_headers(window: &RateWindow) {
    let set = |name: &'static str, value: i64| edge::add_response_header(HeaderName::from_static(name), HeaderValue::from(value));
    set("x-ratelimit-limit", window.limit.into());
    set("x-ratelimit-remaining", window.remaining.into());
    set("x-ratelimit-reset", window.reset_epoch);
}
