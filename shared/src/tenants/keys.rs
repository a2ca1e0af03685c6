//! API keys: shown once, stored only as a SHA-256 hash, scoped, revocable, and
//! rate-limited per key in the same DynamoDB write that authenticates them.
//!
//! A key reads `sbk_<16 hex key id>_<64 hex secret>`. The key id locates the item; the
//! secret's hash must match. Authentication is one conditional `UpdateItem` that both
//! checks the hash and counts the request in the key's hourly window, so concurrent
//! Lambda instances can never admit more than the limit, and a wrong secret never
//! spends the real key's quota. The hash is compared again locally in constant time.

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    error::SdkError,
    operation::update_item::UpdateItemError,
    types::{AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update},
};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::TenantId;

pub const DEFAULT_RATE_LIMIT_PER_HOUR: u32 = 1000;
const WINDOW_SECS: i64 = 3600;
const KEY_PREFIX: &str = "sbk_";

/// What a key may do. Scopes are independent: `admin` (supervisor actions) does not
/// imply `recordings:read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "calls:read")]
    CallsRead,
    #[serde(rename = "calls:write")]
    CallsWrite,
    #[serde(rename = "recordings:read")]
    RecordingsRead,
    #[serde(rename = "settings")]
    Settings,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] =
        [Scope::CallsRead, Scope::CallsWrite, Scope::RecordingsRead, Scope::Settings, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::CallsRead => "calls:read",
            Scope::CallsWrite => "calls:write",
            Scope::RecordingsRead => "recordings:read",
            Scope::Settings => "settings",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A freshly issued key. `secret` is the only copy of the full key: print it once.
pub struct IssuedKey {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedKey({}, [REDACTED])", self.key_id)
    }
}

/// The caller, once its key checks out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub key_id: String,
    pub scopes: Vec<Scope>,
    pub rate: RateWindow,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Where the key stands in its current hourly window, for the X-RateLimit-* headers.
#[derive(Debug, Clone, Copy)]
pub struct RateWindow {
    pub limit: u32,
    pub remaining: u32,
    pub reset_epoch: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing x-api-key header")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("API key revoked")]
    Revoked,
    #[error("rate limit exceeded")]
    RateLimited(RateWindow),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// A key as listed to its tenant (never with its hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySummary {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub rate_limit_per_hour: u32,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The stored key: the summary plus the hash and the live rate-limit window.
#[derive(Debug, Serialize, Deserialize)]
struct KeyRecord {
    pk: String,
    sk: String,
    tenant_id: TenantId,
    secret_hash: String,
    #[serde(flatten)]
    summary: KeySummary,
    rl_window: i64,
    rl_count: u32,
}

fn key_pk(key_id: &str) -> String {
    format!("APIKEY#{key_id}")
}
const KEY_SK: &str = "KEY";

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `sbk_<id>_<secret>` without allocating; anything else is not a key.
fn parse_key(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (is_hex(id, 16) && is_hex(secret, 64)).then_some((id, secret))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(&buf)
}

/// API keys in the tenants table: `APIKEY#<id>`/`KEY` holds the hash and the window;
/// `TENANT#<tenant>`/`KEY#<id>` mirrors the summary so a tenant's keys are one Query.
#[derive(Debug, Clone)]
pub struct KeyStore {
    db: Client,
    table: String,
}

impl KeyStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    pub async fn issue(
        &self,
        tenant_id: &TenantId,
        name: &str,
        scopes: &[Scope],
        rate_limit_per_hour: u32,
    ) -> anyhow::Result<IssuedKey> {
        let key_id = random_hex(8);
        let secret = random_hex(32);
        let summary = KeySummary {
            key_id: key_id.clone(),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            rate_limit_per_hour,
            created_at: Utc::now(),
            revoked_at: None,
        };
        let record = KeyRecord {
            pk: key_pk(&key_id),
            sk: KEY_SK.into(),
            tenant_id: tenant_id.clone(),
            secret_hash: hash_secret(&secret),
            summary: summary.clone(),
            rl_window: 0,
            rl_count: 0,
        };
        let mut mirror: HashMap<String, AttributeValue> = serde_dynamo::to_item(&summary)?;
        mirror.insert("pk".into(), AttributeValue::S(super::tenant_pk(tenant_id)));
        mirror.insert("sk".into(), AttributeValue::S(format!("KEY#{key_id}")));
        let put = |item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
        };
        self.db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put(serde_dynamo::to_item(&record)?)?).build())
            .transact_items(TransactWriteItem::builder().put(put(mirror)?).build())
            .send()
            .await?;
        Ok(IssuedKey { secret: format!("{KEY_PREFIX}{key_id}_{secret}"), key_id })
    }

    /// Revokes a key of this tenant. Returns false when the tenant has no such key.
    pub async fn revoke(&self, tenant_id: &TenantId, key_id: &str) -> anyhow::Result<bool> {
        let now = AttributeValue::S(Utc::now().to_rfc3339());
        // The key item proves the tenant owns it; the mirror only has to exist.
        let key_item = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key_pk(key_id)))
            .key("sk", AttributeValue::S(KEY_SK.into()))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :now)")
            .condition_expression("tenant_id = :tenant")
            .expression_attribute_values(":now", now.clone())
            .expression_attribute_values(":tenant", AttributeValue::S(tenant_id.to_string()))
            .build()?;
        let mirror = Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(super::tenant_pk(tenant_id)))
            .key("sk", AttributeValue::S(format!("KEY#{key_id}")))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", now)
            .build()?;
        let result = self
            .db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(key_item).build())
            .transact_items(TransactWriteItem::builder().update(mirror).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_transaction_canceled_exception() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self, tenant_id: &TenantId) -> anyhow::Result<Vec<KeySummary>> {
        let out = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(super::tenant_pk(tenant_id)))
            .expression_attribute_values(":prefix", AttributeValue::S("KEY#".into()))
            .send()
            .await?;
        Ok(serde_dynamo::from_items(out.items.unwrap_or_default())?)
    }

    /// Authenticates `x-api-key` and counts the request, in one write when the key is
    /// inside a live window (every request but the first of each hour).
    pub async fn authenticate(&self, presented: Option<&str>, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let presented = presented.filter(|k| !k.is_empty()).ok_or(AuthError::Missing)?;
        let (key_id, secret) = parse_key(presented.trim()).ok_or(AuthError::Invalid)?;
        let hash = hash_secret(secret);
        let window = now.timestamp().div_euclid(WINDOW_SECS);
        let reset_epoch = (window + 1) * WINDOW_SECS;

        // Two attempts cover the hourly rollover racing another instance's reset.
        for _ in 0..3 {
            let counted = self
                .count(key_id, &hash, "rl_window = :w AND rl_count < rate_limit_per_hour", "SET rl_count = rl_count + :one", window)
                .await?;
            let old = match counted {
                Ok(record) => return principal(record, &hash, reset_epoch),
                Err(old) => old.ok_or(AuthError::Invalid)?,
            };
            verify(&old, &hash)?;
            if old.rl_window == window {
                return Err(AuthError::RateLimited(RateWindow {
                    limit: old.summary.rate_limit_per_hour,
                    remaining: 0,
                    reset_epoch,
                }));
            }
            // First request of a new window: start it at 1, unless another instance
            // just did (then the next increment attempt sees the live window).
            let reset = self
                .count(key_id, &hash, "rl_window < :w", "SET rl_window = :w, rl_count = :one", window)
                .await?;
            if let Ok(record) = reset {
                return principal(record, &hash, reset_epoch);
            }
        }
        Err(AuthError::Store(anyhow::anyhow!("rate-limit window kept changing under contention")))
    }

    /// One conditional update on the key. `Ok(Ok(new))` when it applied, `Ok(Err(old))`
    /// when its condition (or the hash/revocation guard) failed.
    async fn count(
        &self,
        key_id: &str,
        hash: &str,
        window_condition: &str,
        update: &str,
        window: i64,
    ) -> Result<Result<KeyRecord, Option<KeyRecord>>, AuthError> {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key_pk(key_id)))
            .key("sk", AttributeValue::S(KEY_SK.into()))
            .update_expression(update)
            .condition_expression(format!(
                "secret_hash = :hash AND attribute_not_exists(revoked_at) AND {window_condition}"
            ))
            .expression_attribute_values(":hash", AttributeValue::S(hash.to_owned()))
            .expression_attribute_values(":w", AttributeValue::N(window.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let record = serde_dynamo::from_item(out.attributes.unwrap_or_default())
                    .map_err(|e| AuthError::Store(e.into()))?;
                Ok(Ok(record))
            }
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let old = failed
                        .item
                        .filter(|item| !item.is_empty())
                        .map(serde_dynamo::from_item)
                        .transpose()
                        .map_err(|e| AuthError::Store(e.into()))?;
                    Ok(Err(old))
                }
                other => Err(AuthError::Store(other.into())),
            },
            Err(e) => Err(AuthError::Store(e.into())),
        }
    }
}

/// Constant-time hash check, then revocation: a wrong secret learns nothing more.
fn verify(record: &KeyRecord, hash: &str) -> Result<(), AuthError> {
    if !bool::from(record.secret_hash.as_bytes().ct_eq(hash.as_bytes())) {
        return Err(AuthError::Invalid);
    }
    if record.summary.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    Ok(())
}

fn principal(record: KeyRecord, hash: &str, reset_epoch: i64) -> Result<Principal, AuthError> {
    verify(&record, hash)?;
    let limit = record.summary.rate_limit_per_hour;
    Ok(Principal {
        tenant_id: record.tenant_id,
        key_id: record.summary.key_id,
        scopes: record.summary.scopes,
        rate: RateWindow { limit, remaining: limit.saturating_sub(record.rl_count), reset_epoch },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_keys() {
        let id = "0123456789abcdef";
        let secret = "a".repeat(64);
        assert_eq!(parse_key(&format!("sbk_{id}_{secret}")), Some((id, secret.as_str())));
        for bad in [
            String::new(),
            format!("sbk_{id}"),
            format!("sbk_{id}_{}", "a".repeat(63)),
            format!("sbk_{}_{secret}", "A".repeat(16)),
            format!("xyz_{id}_{secret}"),
            format!("sbk_{id}_{secret}_"),
            format!("sbk_{id}__{secret}"),
        ] {
            assert_eq!(parse_key(&bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_round_trip_by_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
            assert_eq!(serde_json::to_value(scope).unwrap(), scope.as_str());
        }
        assert_eq!(Scope::parse("calls:delete"), None);
    }

    #[test]
    fn issued_key_debug_hides_the_secret() {
        let key = IssuedKey { key_id: "abc".into(), secret: "sbk_abc_topsecret".into() };
        assert!(!format!("{key:?}").contains("topsecret"));
    }
}
