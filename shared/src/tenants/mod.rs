//! Tenants: the unit of isolation. Every stored thing carries its tenant, every read
//! is keyed by it, and another tenant's ids answer 404.

pub mod keys;
pub mod providers;
pub mod settings;

use std::fmt;

use aws_sdk_dynamodb::{Client, error::SdkError, types::AttributeValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use keys::{AuthError, DEFAULT_RATE_LIMIT_PER_HOUR, IssuedKey, KeyStore, KeySummary, Principal, RateWindow, Scope};

#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// Tenant ids are UUIDs; anything else is refused before it reaches a key.
    pub fn parse(raw: &str) -> Option<Self> {
        uuid::Uuid::parse_str(raw).ok().map(|u| Self(u.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

pub(crate) fn tenant_pk(tenant: &TenantId) -> String {
    format!("TENANT#{tenant}")
}

/// A Query for the tenant's items whose sort key starts with `prefix` (departments,
/// agents, a queue, …); the caller adds paging, limits and consistency.
pub(crate) fn tenant_items(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    tenant: &TenantId,
    prefix: impl Into<String>,
) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
    use aws_sdk_dynamodb::types::AttributeValue;
    db.query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", AttributeValue::S(tenant_pk(tenant)))
        .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
}
const PROFILE_SK: &str = "PROFILE";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct TenantStore {
    db: Client,
    table: String,
}

impl TenantStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    pub async fn create(&self, name: &str) -> anyhow::Result<Tenant> {
        let name = name.trim();
        anyhow::ensure!(!name.is_empty() && name.chars().count() <= 200, "tenant name must be 1 to 200 characters");
        let tenant = Tenant { tenant_id: TenantId::generate(), name: name.to_owned(), created_at: Utc::now() };
        let mut item: std::collections::HashMap<String, AttributeValue> = serde_dynamo::to_item(&tenant)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(&tenant.tenant_id)));
        item.insert("sk".into(), AttributeValue::S(PROFILE_SK.into()));
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(SdkError::into_service_error)?;
        Ok(tenant)
    }

    /// The read of a batch that wants the tenant's profile.
    pub fn read(&self, tenant_id: &TenantId) -> (&str, crate::aws::Item) {
        let key = std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(tenant_pk(tenant_id))),
            ("sk".to_owned(), AttributeValue::S(PROFILE_SK.into())),
        ]);
        (&self.table, key)
    }

    pub async fn get(&self, tenant_id: &TenantId) -> anyhow::Result<Option<Tenant>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant_id)))
            .key("sk", AttributeValue::S(PROFILE_SK.into()))
            .send()
            .await?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }
}
