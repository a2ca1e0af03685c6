//! A tenant's telephony provider accounts. Credentials are write-only: stored (in the
//! encrypted tenants table), used to sign and verify, never returned, never logged.
//!
//! A provider webhook names its account (Twilio's `AccountSid`) in the signed body. The
//! account item `TWILIO#<AccountSid>` maps it to its tenant and token in one read; the
//! body is trusted only after the signature made with that token checks out.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    types::{AttributeValue, Delete, Put, TransactWriteItem},
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{TenantId, tenant_pk};
use crate::phone::E164;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Twilio,
}

/// A provider account as its tenant sees it: everything but the credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderAccount {
    pub provider_id: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    pub account_sid: String,
    pub phone_numbers: Vec<E164>,
    pub priority: u32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the credentials were last set (shown instead of them).
    pub credentials_set_at: DateTime<Utc>,
}

/// What a webhook needs to verify and attribute a request.
#[derive(Clone)]
pub struct WebhookAccount {
    pub tenant_id: TenantId,
    pub provider_id: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    pub active: bool,
}

impl std::fmt::Debug for WebhookAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookAccount({}, {}, [REDACTED])", self.tenant_id, self.account_sid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("account {0} is already configured (by this or another tenant)")]
    AccountTaken(String),
    #[error("no provider {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Twilio Account SIDs: `AC` and 32 hex digits.
pub fn valid_account_sid(raw: &str) -> bool {
    raw.len() == 34 && raw.starts_with("AC") && raw[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn account_pk(account_sid: &str) -> String {
    format!("TWILIO#{account_sid}")
}
const ACCOUNT_SK: &str = "ACCOUNT";

#[derive(Debug, Clone)]
pub struct ProviderStore {
    db: Client,
    table: String,
}

impl ProviderStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    fn account_item(account: &ProviderAccount, tenant: &TenantId, token: &SecretString) -> Item {
        HashMap::from([
            ("pk".into(), AttributeValue::S(account_pk(&account.account_sid))),
            ("sk".into(), AttributeValue::S(ACCOUNT_SK.into())),
            ("tenant_id".into(), AttributeValue::S(tenant.to_string())),
            ("provider_id".into(), AttributeValue::S(account.provider_id.clone())),
            ("account_sid".into(), AttributeValue::S(account.account_sid.clone())),
            ("auth_token".into(), AttributeValue::S(token.expose_secret().to_owned())),
            ("active".into(), AttributeValue::Bool(account.active)),
        ])
    }

    /// Creates or replaces a provider account with its credentials. The account SID is
    /// claimed atomically: one Twilio account belongs to one tenant.
    pub async fn put(
        &self,
        tenant: &TenantId,
        account: &ProviderAccount,
        auth_token: &SecretString,
        previous_account_sid: Option<&str>,
    ) -> Result<(), ProviderError> {
        let mut record: Item = serde_dynamo::to_item(account).map_err(anyhow::Error::from)?;
        record.insert("pk".into(), AttributeValue::S(tenant_pk(tenant)));
        record.insert("sk".into(), AttributeValue::S(format!("PROVIDER#{}", account.provider_id)));
        let claim = Put::builder()
            .table_name(&self.table)
            .set_item(Some(Self::account_item(account, tenant, auth_token)))
            .condition_expression("attribute_not_exists(pk) OR (tenant_id = :t AND provider_id = :p)")
            .expression_attribute_values(":t", AttributeValue::S(tenant.to_string()))
            .expression_attribute_values(":p", AttributeValue::S(account.provider_id.clone()))
            .build()
            .map_err(anyhow::Error::from)?;
        let record = Put::builder().table_name(&self.table).set_item(Some(record)).build().map_err(anyhow::Error::from)?;
        let mut tx = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(claim).build())
            .transact_items(TransactWriteItem::builder().put(record).build());
        if let Some(old) = previous_account_sid.filter(|old| *old != account.account_sid) {
            let release = Delete::builder()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(account_pk(old)))
                .key("sk", AttributeValue::S(ACCOUNT_SK.into()))
                .build()
                .map_err(anyhow::Error::from)?;
            tx = tx.transact_items(TransactWriteItem::builder().delete(release).build());
        }
        match tx.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => {
                Err(ProviderError::AccountTaken(account.account_sid.clone()))
            }
            Err(e) => Err(ProviderError::Store(e.into())),
        }
    }

    pub async fn list(&self, tenant: &TenantId) -> anyhow::Result<Vec<ProviderAccount>> {
        let out = super::tenant_items(&self.db, &self.table, tenant, "PROVIDER#")
            .send()
            .await?;
        Ok(serde_dynamo::from_items(out.items.unwrap_or_default())?)
    }

    pub async fn get(&self, tenant: &TenantId, provider_id: &str) -> anyhow::Result<Option<ProviderAccount>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(format!("PROVIDER#{provider_id}")))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }

    /// The tenant's credentials for outbound REST calls (recording fetch, call control).
    pub async fn credentials(&self, tenant: &TenantId, account_sid: &str) -> anyhow::Result<Option<WebhookAccount>> {
        Ok(self.webhook_account(account_sid).await?.filter(|a| &a.tenant_id == tenant))
    }

    pub async fn delete(&self, tenant: &TenantId, provider_id: &str) -> Result<(), ProviderError> {
        let account = self.get(tenant, provider_id).await?.ok_or_else(|| ProviderError::NotFound(provider_id.into()))?;
        let key = |pk: String, sk: String| {
            Delete::builder()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S(sk))
                .build()
                .map_err(anyhow::Error::from)
        };
        self.db
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder().delete(key(tenant_pk(tenant), format!("PROVIDER#{provider_id}"))?).build(),
            )
            .transact_items(
                TransactWriteItem::builder().delete(key(account_pk(&account.account_sid), ACCOUNT_SK.into())?).build(),
            )
            .send()
            .await
            .map_err(|e| ProviderError::Store(e.into()))?;
        Ok(())
    }

    /// One GetItem: the account a webhook claims to come from, with its token.
    pub async fn webhook_account(&self, account_sid: &str) -> anyhow::Result<Option<WebhookAccount>> {
        if !valid_account_sid(account_sid) {
            return Ok(None);
        }
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(account_pk(account_sid)))
            .key("sk", AttributeValue::S(ACCOUNT_SK.into()))
            .send()
            .await?;
        let Some(item) = out.item else { return Ok(None) };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        let Some(tenant_id) = TenantId::parse(&text("tenant_id")) else { return Ok(None) };
        Ok(Some(WebhookAccount {
            tenant_id,
            provider_id: text("provider_id"),
            account_sid: text("account_sid"),
            auth_token: SecretString::from(text("auth_token")),
            active: item.get("active").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        }))
    }
}
