//! A tenant's call settings (seed 004 "Set Up Call Settings", "Configure Webhooks",
//! "Security & Compliance"): one item, read where a decision needs it (recording access
//! checks retention; the CRM dispatcher, the webhook and its credentials).
//!
//! The item also holds the CRM webhook's bearer token and signing secrets (the table is
//! encrypted at rest). They are write-only, kept out of reach by type: [`CallSettings`]
//! (what a tenant reads and writes) has none of them; [`CallSettingsRecord`] (what the
//! dispatcher reads) has them but is not `Serialize` and prints them redacted; its
//! [`SettingsView`] says only whether and when each was set.
//!
//! Every change is a read–modify–write guarded by the item's `version`, so two concurrent
//! PUTs cannot silently undo each other: the later write is refused and asked to retry.

use std::{collections::HashMap, ops::RangeInclusive};

use anyhow::Context;
use aws_sdk_dynamodb::{Client, types::AttributeValue};
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;

use super::{TenantId, tenant_pk};
use crate::{
    calls::model::ts,
    deliveries::{WebhookEvent, WebhookSecret},
    edge::ApiError,
};

type Item = HashMap<String, AttributeValue>;

/// Seed 004: retention is configurable from 30 to 365 days.
pub const RETENTION_DAYS: RangeInclusive<u32> = 30..=365;
/// How long a replaced signing secret keeps signing deliveries, so a CRM can switch to
/// the new one without a delivery failing verification in between.
pub const SECRET_ROTATION_OVERLAP: TimeDelta = TimeDelta::hours(24);
/// The events a CRM can subscribe to, in the order settings list them.
pub const CRM_WEBHOOK_EVENTS: [WebhookEvent; 3] =
    [WebhookEvent::StatusUpdate, WebhookEvent::RecordingAvailable, WebhookEvent::SupervisorAction];
const TOKEN_LEN: RangeInclusive<usize> = 16..=512;
const MAX_URL_LEN: usize = 2048;

/// A tenant's call settings as the tenant reads and writes them: no credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallSettings {
    pub recording_enabled: bool,
    pub consent_required: bool,
    pub transcription_enabled: bool,
    pub retention_days: u32,
    /// Where CRM webhooks go; none are sent without one.
    pub crm_webhook_url: Option<String>,
    /// The subset of [`CRM_WEBHOOK_EVENTS`] sent, in that order.
    pub crm_webhook_events: Vec<String>,
    /// Turned off when the endpoint answers `410 Gone`; setting a URL turns it back on.
    pub crm_webhook_enabled: bool,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            recording_enabled: true,
            consent_required: true,
            transcription_enabled: false,
            retention_days: 90,
            crm_webhook_url: None,
            crm_webhook_events: CRM_WEBHOOK_EVENTS.iter().map(|e| e.as_str().to_owned()).collect(),
            crm_webhook_enabled: true,
        }
    }
}

/// The stored item: the settings with the webhook credentials, for the dispatcher.
/// Deliberately not `Serialize`, and `Debug` redacts every secret, so it can reach
/// neither a response nor a log.
#[derive(Debug, Default)]
pub struct CallSettingsRecord {
    pub settings: CallSettings,
    /// Sent as `Authorization: Bearer <token>` (seed 004).
    pub crm_webhook_token: Option<SecretString>,
    pub crm_webhook_token_set_at: Option<DateTime<Utc>>,
    pub crm_webhook_secret: Option<WebhookSecret>,
    pub crm_webhook_secret_set_at: Option<DateTime<Utc>>,
    /// The secret `crm_webhook_secret` replaced, still signing until it expires.
    pub previous_secret: Option<WebhookSecret>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The dispatcher's circuit breaker for the webhook endpoint.
    pub pause: WebhookPause,
    /// The stored version this record was read at (0: never written with one).
    version: u64,
}

/// A webhook endpoint that stopped answering is paused: its deliveries wait instead of
/// each spending the request timeout. After `until` one delivery probes it (the one
/// that claims `probe_until`); an answer resumes it, another silence pauses it for
/// twice as long. Any settings change resumes it (the tenant may have fixed it).
/// Kept outside `version`: the breaker never makes a tenant's PUT fail.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebhookPause {
    pub until: Option<DateTime<Utc>>,
    /// The current pause's length, doubled by each failed probe.
    pub window: Option<std::time::Duration>,
    pub probe_until: Option<DateTime<Utc>>,
}

impl CallSettingsRecord {
    /// The secrets a delivery at `now` is signed with: the current one first, then the
    /// one it replaced while that is inside [`SECRET_ROTATION_OVERLAP`].
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&WebhookSecret> {
        let previous = self.previous_secret.as_ref().filter(|_| self.previous_secret_valid_until(now).is_some());
        self.crm_webhook_secret.iter().chain(previous).collect()
    }

    /// What a tenant is shown at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> SettingsView<'_> {
        SettingsView {
            settings: &self.settings,
            crm_webhook_token_set: self.crm_webhook_token.is_some(),
            crm_webhook_token_set_at: self.crm_webhook_token_set_at,
            crm_webhook_secret_set: self.crm_webhook_secret.is_some(),
            crm_webhook_secret_set_at: self.crm_webhook_secret_set_at,
            previous_secret_valid_until: self.previous_secret_valid_until(now),
            crm_webhook_paused_until: self.pause.until.filter(|until| now < *until),
        }
    }

    fn previous_secret_valid_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.previous_secret_expires_at.filter(|until| self.previous_secret.is_some() && now < *until)
    }

    /// Applies a PUT's changes; returns whether it generated a signing secret. Giving the
    /// stored token or secret again changes nothing, so a retried PUT neither moves
    /// `*_set_at` nor rotates the current secret out.
    fn apply(&mut self, changes: SettingsChanges, now: DateTime<Utc>) -> bool {
        let SettingsChanges {
            recording_enabled,
            consent_required,
            transcription_enabled,
            retention_days,
            crm_webhook_url,
            crm_webhook_events,
            crm_webhook_enabled,
            crm_webhook_token,
            crm_webhook_secret,
        } = changes;
        let s = &mut self.settings;
        s.recording_enabled = recording_enabled.unwrap_or(s.recording_enabled);
        s.consent_required = consent_required.unwrap_or(s.consent_required);
        s.transcription_enabled = transcription_enabled.unwrap_or(s.transcription_enabled);
        s.retention_days = retention_days.unwrap_or(s.retention_days);
        if let Some(events) = crm_webhook_events {
            s.crm_webhook_events = events;
        }
        if let Some(url) = crm_webhook_url {
            s.crm_webhook_enabled |= url.is_some();
            s.crm_webhook_url = url;
        }
        s.crm_webhook_enabled = crm_webhook_enabled.unwrap_or(s.crm_webhook_enabled);

        match crm_webhook_token {
            Some(Some(token)) if !same(self.crm_webhook_token.as_ref(), &token) => {
                self.crm_webhook_token = Some(token);
                self.crm_webhook_token_set_at = Some(now);
            }
            Some(None) => (self.crm_webhook_token, self.crm_webhook_token_set_at) = (None, None),
            _ => {}
        }

        let generated = matches!(crm_webhook_secret, Some(SecretChange::Generate));
        let new_secret = match crm_webhook_secret {
            Some(SecretChange::Generate) => Some(WebhookSecret::generate()),
            Some(SecretChange::Set(secret)) if !same(self.crm_webhook_secret.as_ref(), &secret) => Some(secret),
            Some(SecretChange::Remove) => {
                (self.crm_webhook_secret, self.crm_webhook_secret_set_at) = (None, None);
                (self.previous_secret, self.previous_secret_expires_at) = (None, None);
                None
            }
            _ => None,
        };
        if let Some(secret) = new_secret {
            self.previous_secret_expires_at = self.crm_webhook_secret.is_some().then(|| now + SECRET_ROTATION_OVERLAP);
            self.previous_secret = self.crm_webhook_secret.replace(secret);
            self.crm_webhook_secret_set_at = Some(now);
        }
        generated
    }
}

/// Constant-time, so response timing cannot be used to guess a stored credential.
fn same<S: ExposeSecret<str>>(stored: Option<&S>, given: &S) -> bool {
    stored.is_some_and(|s| bool::from(s.expose_secret().as_bytes().ct_eq(given.expose_secret().as_bytes())))
}

/// What GET and PUT answer: the settings, and of each credential only whether and when
/// it was set.
#[derive(Debug, Serialize)]
pub struct SettingsView<'a> {
    #[serde(flatten)]
    settings: &'a CallSettings,
    crm_webhook_token_set: bool,
    #[serde(with = "ts::option")]
    crm_webhook_token_set_at: Option<DateTime<Utc>>,
    crm_webhook_secret_set: bool,
    #[serde(with = "ts::option")]
    crm_webhook_secret_set_at: Option<DateTime<Utc>>,
    /// Until when the replaced secret still signs; `null` outside a rotation.
    #[serde(with = "ts::option")]
    previous_secret_valid_until: Option<DateTime<Utc>>,
    /// Set while deliveries wait because the endpoint stopped answering (see
    /// `WebhookPause`); a PUT resumes them.
    #[serde(with = "ts::option")]
    crm_webhook_paused_until: Option<DateTime<Utc>>,
}

/// A PUT body: every field optional; unknown fields are refused (a misspelt
/// `crm_webhook_tokn` must not be silently dropped). `null` removes the webhook URL,
/// token or secret. `"crm_webhook_secret": "generate"` has the server make one, a new one
/// on every such PUT (the one it replaces keeps signing for a day either way).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    recording_enabled: Option<bool>,
    consent_required: Option<bool>,
    transcription_enabled: Option<bool>,
    retention_days: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    crm_webhook_url: Option<Option<String>>,
    crm_webhook_events: Option<Vec<String>>,
    crm_webhook_enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    crm_webhook_token: Option<Option<SecretString>>,
    #[serde(default, deserialize_with = "nullable")]
    crm_webhook_secret: Option<Option<SecretString>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A [`SettingsInput`], every field valid; `None` leaves a setting as it is.
#[derive(Debug)]
pub struct SettingsChanges {
    recording_enabled: Option<bool>,
    consent_required: Option<bool>,
    transcription_enabled: Option<bool>,
    retention_days: Option<u32>,
    crm_webhook_url: Option<Option<String>>,
    crm_webhook_events: Option<Vec<String>>,
    crm_webhook_enabled: Option<bool>,
    crm_webhook_token: Option<Option<SecretString>>,
    crm_webhook_secret: Option<SecretChange>,
}

#[derive(Debug)]
enum SecretChange {
    Set(WebhookSecret),
    Generate,
    Remove,
}

impl SettingsInput {
    /// Checks each field, failing on the first bad one with a 400 that names it.
    /// `local`: on the local stack a CRM fake may listen on plain http on loopback.
    pub fn validate(self, local: bool) -> Result<SettingsChanges, ApiError> {
        Ok(SettingsChanges {
            recording_enabled: self.recording_enabled,
            consent_required: self.consent_required,
            transcription_enabled: self.transcription_enabled,
            retention_days: self.retention_days.map(retention_days).transpose()?,
            crm_webhook_url: self
                .crm_webhook_url
                .map(|v| v.map(|url| webhook_url(&url, local)).transpose())
                .transpose()?,
            crm_webhook_events: self.crm_webhook_events.map(webhook_events).transpose()?,
            crm_webhook_enabled: self.crm_webhook_enabled,
            crm_webhook_token: self.crm_webhook_token.map(|v| v.map(webhook_token).transpose()).transpose()?,
            crm_webhook_secret: self.crm_webhook_secret.map(signing_secret).transpose()?,
        })
    }
}

fn retention_days(raw: i64) -> Result<u32, ApiError> {
    u32::try_from(raw)
        .ok()
        .filter(|days| RETENTION_DAYS.contains(days))
        .ok_or_else(|| ApiError::invalid("retention_days", "must be 30 to 365 days"))
}

/// HTTPS only (seed 004): deliveries carry call data and the bearer token. No userinfo,
/// since the URL is shown on every GET and credentials belong in `crm_webhook_token`.
fn webhook_url(raw: &str, local: bool) -> Result<String, ApiError> {
    reqwest::Url::parse(raw)
        .ok()
        .filter(|url| {
            let scheme_ok = match url.scheme() {
                "https" => true,
                "http" => local && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
                _ => false,
            };
            scheme_ok && url.username().is_empty() && url.password().is_none() && url.as_str().len() <= MAX_URL_LEN
        })
        .map(String::from)
        .ok_or_else(|| {
            ApiError::invalid(
                "crm_webhook_url",
                "must be an https URL of at most 2048 characters without credentials \
                 (plain http only to 127.0.0.1, localhost or [::1] on the local stack)",
            )
        })
}

/// Duplicates collapse and the order is [`CRM_WEBHOOK_EVENTS`]', so equal sets store equally.
fn webhook_events(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    if let Some(i) = raw.iter().position(|name| WebhookEvent::parse(name).is_none()) {
        return Err(ApiError::invalid(
            format!("crm_webhook_events[{i}]"),
            "must be call.status_update or call.recording_available",
        ));
    }
    let events: Vec<String> = CRM_WEBHOOK_EVENTS
        .iter()
        .map(|e| e.as_str())
        .filter(|e| raw.iter().any(|name| name == e))
        .map(str::to_owned)
        .collect();
    if events.is_empty() {
        return Err(ApiError::invalid(
            "crm_webhook_events",
            "must name at least one event; set crm_webhook_url to null to stop deliveries",
        ));
    }
    Ok(events)
}

/// Visible ASCII only: the token goes into an `Authorization` header as given.
fn webhook_token(raw: SecretString) -> Result<SecretString, ApiError> {
    let token = raw.expose_secret();
    if TOKEN_LEN.contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(raw)
    } else {
        Err(ApiError::invalid("crm_webhook_token", "must be 16 to 512 visible ASCII characters without spaces"))
    }
}

fn signing_secret(raw: Option<SecretString>) -> Result<SecretChange, ApiError> {
    match raw.as_ref().map(ExposeSecret::expose_secret) {
        None => Ok(SecretChange::Remove),
        Some("generate") => Ok(SecretChange::Generate),
        Some(text) => WebhookSecret::parse(text)
            .map(SecretChange::Set)
            .map_err(|e| ApiError::invalid("crm_webhook_secret", format!("{e}, or \"generate\""))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the settings were changed by another request; read them again and retry")]
    Changed,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<SettingsError> for ApiError {
    fn from(err: SettingsError) -> Self {
        match err {
            SettingsError::Changed => ApiError::Conflict(err.to_string()),
            SettingsError::Store(e) => ApiError::Unexpected(e),
        }
    }
}

/// A record as a PUT left it.
#[derive(Debug)]
pub struct SettingsUpdate {
    pub record: CallSettingsRecord,
    generated: bool,
}

impl SettingsUpdate {
    /// The signing secret this PUT generated: the only time a secret leaves the store,
    /// so the tenant can copy it into their CRM.
    pub fn generated_secret(&self) -> Option<&WebhookSecret> {
        self.record.crm_webhook_secret.as_ref().filter(|_| self.generated)
    }
}

/// What the item holds besides the public settings.
#[derive(Deserialize)]
struct StoredCredentials {
    #[serde(default)]
    version: u64,
    crm_webhook_token: Option<SecretString>,
    #[serde(default, with = "ts::option")]
    crm_webhook_token_set_at: Option<DateTime<Utc>>,
    crm_webhook_secret: Option<SecretString>,
    #[serde(default, with = "ts::option")]
    crm_webhook_secret_set_at: Option<DateTime<Utc>>,
    previous_secret: Option<SecretString>,
    #[serde(default, with = "ts::option")]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Unix milliseconds (numbers, so conditions compare them).
    crm_paused_until_ms: Option<i64>,
    crm_pause_secs: Option<u64>,
    crm_probe_until_ms: Option<i64>,
}

const SETTINGS_SK: &str = "SETTINGS";

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// Whether a conditional write was applied: `false` when its condition did not hold
/// (for these writes, nothing was left to do).
fn condition_held<E>(result: Result<(), aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>) -> anyhow::Result<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone)]
pub struct SettingsStore {
    db: Client,
    table: String,
}

impl SettingsStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// The public settings (defaults until first set): one eventually consistent
    /// GetItem, the cheapest read, for checks such as recording access.
    pub async fn get(&self, tenant: &TenantId) -> anyhow::Result<CallSettings> {
        Ok(self.item(tenant, false).await?.map(serde_dynamo::from_item).transpose()?.unwrap_or_default())
    }

    /// The settings with the webhook credentials. Strongly consistent: a rotation signs
    /// from the next delivery on, and a change is based on the version it is checked against.
    pub async fn get_record(&self, tenant: &TenantId) -> anyhow::Result<CallSettingsRecord> {
        Self::record(self.item(tenant, true).await?)
    }

    /// The read of a batch that wants the settings record (decoded by [`Self::record`]).
    pub fn read(&self, tenant: &TenantId) -> (&str, Item) {
        let key = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(tenant_pk(tenant))),
            ("sk".to_owned(), AttributeValue::S(SETTINGS_SK.into())),
        ]);
        (&self.table, key)
    }

    /// The record a stored item holds (the defaults when there is none).
    pub fn record(item: Option<Item>) -> anyhow::Result<CallSettingsRecord> {
        let Some(item) = item else { return Ok(CallSettingsRecord::default()) };
        let settings = serde_dynamo::from_item(item.clone()).context("decoding call settings")?;
        let stored: StoredCredentials = serde_dynamo::from_item(item).context("decoding webhook credentials")?;
        let secret = |text: Option<SecretString>| {
            text.map(|t| WebhookSecret::parse(t.expose_secret()))
                .transpose()
                .context("a stored webhook secret is malformed")
        };
        Ok(CallSettingsRecord {
            settings,
            crm_webhook_token: stored.crm_webhook_token,
            crm_webhook_token_set_at: stored.crm_webhook_token_set_at,
            crm_webhook_secret: secret(stored.crm_webhook_secret)?,
            crm_webhook_secret_set_at: stored.crm_webhook_secret_set_at,
            previous_secret: secret(stored.previous_secret)?,
            previous_secret_expires_at: stored.previous_secret_expires_at,
            pause: WebhookPause {
                until: stored.crm_paused_until_ms.and_then(DateTime::from_timestamp_millis),
                window: stored.crm_pause_secs.map(std::time::Duration::from_secs),
                probe_until: stored.crm_probe_until_ms.and_then(DateTime::from_timestamp_millis),
            },
            version: stored.version,
        })
    }

    /// Applies a PUT: one consistent read, one conditional write.
    pub async fn update(
        &self,
        tenant: &TenantId,
        changes: SettingsChanges,
        now: DateTime<Utc>,
    ) -> Result<SettingsUpdate, SettingsError> {
        let mut record = self.get_record(tenant).await?;
        let generated = record.apply(changes, now);
        self.save(tenant, &mut record).await?;
        Ok(SettingsUpdate { record, generated })
    }

    /// Replaces the public settings and keeps the webhook credentials (for operators and
    /// tests seeding a tenant; the API goes through `update`).
    pub async fn put(&self, tenant: &TenantId, settings: &CallSettings) -> Result<(), SettingsError> {
        if !RETENTION_DAYS.contains(&settings.retention_days) {
            return Err(anyhow::anyhow!("retention_days must be 30 to 365").into());
        }
        let mut record = self.get_record(tenant).await?;
        record.settings = settings.clone();
        self.save(tenant, &mut record).await
    }

    /// Turns the webhook off after its endpoint answered `410 Gone`, unless the URL has
    /// changed since (a new endpoint deserves its own attempts). Returns whether it did.
    /// Bumps the version, so a PUT based on an earlier read cannot write `enabled` back.
    pub async fn disable_webhook(&self, tenant: &TenantId, gone_url: &str) -> anyhow::Result<bool> {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(SETTINGS_SK.into()))
            .update_expression("SET crm_webhook_enabled = :off, #version = if_not_exists(#version, :zero) + :one")
            .condition_expression("crm_webhook_url = :url")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":off", AttributeValue::Bool(false))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":url", AttributeValue::S(gone_url.to_owned()))
            .send()
            .await;
        condition_held(result.map(drop))
    }

    /// Pauses the webhook at `url` until `until` for `window` (see [`WebhookPause`]),
    /// unless the URL changed meanwhile.
    pub async fn pause_webhook(
        &self,
        tenant: &TenantId,
        url: &str,
        until: DateTime<Utc>,
        window: std::time::Duration,
    ) -> anyhow::Result<()> {
        let result = self
            .settings_update(tenant)
            .update_expression("SET crm_paused_until_ms = :until, crm_pause_secs = :window REMOVE crm_probe_until_ms")
            .condition_expression("crm_webhook_url = :url")
            .expression_attribute_values(":until", number(until.timestamp_millis()))
            .expression_attribute_values(":window", number(window.as_secs().max(1)))
            .expression_attribute_values(":url", AttributeValue::S(url.to_owned()))
            .send()
            .await;
        condition_held(result.map(drop)).map(drop)
    }

    /// Claims the probe of a pause that has run out: true for exactly one caller per
    /// `lease` (the probe's longest possible request), so one delivery tests the
    /// endpoint while the others keep waiting.
    pub async fn claim_probe(
        &self,
        tenant: &TenantId,
        paused_until: DateTime<Utc>,
        now: DateTime<Utc>,
        lease: std::time::Duration,
    ) -> anyhow::Result<bool> {
        let lease_until = now + lease;
        let result = self
            .settings_update(tenant)
            .update_expression("SET crm_probe_until_ms = :lease")
            .condition_expression(
                "crm_paused_until_ms = :until AND (attribute_not_exists(crm_probe_until_ms) OR crm_probe_until_ms < :now)",
            )
            .expression_attribute_values(":lease", number(lease_until.timestamp_millis()))
            .expression_attribute_values(":until", number(paused_until.timestamp_millis()))
            .expression_attribute_values(":now", number(now.timestamp_millis()))
            .send()
            .await;
        condition_held(result.map(drop))
    }

    /// Ends a pause: the endpoint answered.
    pub async fn resume_webhook(&self, tenant: &TenantId) -> anyhow::Result<()> {
        let result = self
            .settings_update(tenant)
            .update_expression("REMOVE crm_paused_until_ms, crm_pause_secs, crm_probe_until_ms")
            .condition_expression("attribute_exists(crm_paused_until_ms)")
            .send()
            .await;
        condition_held(result.map(drop)).map(drop)
    }

    fn settings_update(&self, tenant: &TenantId) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.db
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(SETTINGS_SK.into()))
    }

    async fn item(&self, tenant: &TenantId, consistent: bool) -> anyhow::Result<Option<Item>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(SETTINGS_SK.into()))
            .consistent_read(consistent)
            .send()
            .await?;
        Ok(out.item)
    }

    /// Writes the whole item if it is still at the version `record` was read at.
    async fn save(&self, tenant: &TenantId, record: &mut CallSettingsRecord) -> Result<(), SettingsError> {
        let next = record.version + 1;
        let mut item: Item = serde_dynamo::to_item(&record.settings).map_err(anyhow::Error::from)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(tenant)));
        item.insert("sk".into(), AttributeValue::S(SETTINGS_SK.into()));
        item.insert("version".into(), AttributeValue::N(next.to_string()));
        let secrets = [
            ("crm_webhook_token", record.crm_webhook_token.as_ref().map(ExposeSecret::expose_secret)),
            ("crm_webhook_secret", record.crm_webhook_secret.as_ref().map(ExposeSecret::expose_secret)),
            ("previous_secret", record.previous_secret.as_ref().map(ExposeSecret::expose_secret)),
        ];
        let times = [
            ("crm_webhook_token_set_at", record.crm_webhook_token_set_at.as_ref().map(ts::format)),
            ("crm_webhook_secret_set_at", record.crm_webhook_secret_set_at.as_ref().map(ts::format)),
            ("previous_secret_expires_at", record.previous_secret_expires_at.as_ref().map(ts::format)),
        ];
        let texts = secrets.into_iter().map(|(name, v)| (name, v.map(str::to_owned))).chain(times);
        item.extend(texts.filter_map(|(name, v)| Some((name.to_owned(), AttributeValue::S(v?)))));

        let request = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .expression_attribute_names("#version", "version");
        // Version 0 was read from no item, or from one written before versions existed.
        let request = match record.version {
            0 => request.condition_expression("attribute_not_exists(#version)"),
            seen => request
                .condition_expression("#version = :seen")
                .expression_attribute_values(":seen", AttributeValue::N(seen.to_string())),
        };
        request.send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) {
                SettingsError::Changed
            } else {
                SettingsError::Store(e.into())
            }
        })?;
        record.version = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tok_0123456789abcdef";

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_760_000_000, 0).unwrap() + TimeDelta::hours(hours)
    }

    fn changes(body: serde_json::Value) -> Result<SettingsChanges, ApiError> {
        serde_json::from_value::<SettingsInput>(body).unwrap().validate(false)
    }

    fn refused_field(body: serde_json::Value, local: bool) -> String {
        let input: SettingsInput = serde_json::from_value(body).unwrap();
        match input.validate(local) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let secret = WebhookSecret::generate();
        for (body, field) in [
            (serde_json::json!({"retention_days": 10}), "retention_days"),
            (serde_json::json!({"retention_days": -1}), "retention_days"),
            (serde_json::json!({"retention_days": 366}), "retention_days"),
            (serde_json::json!({"crm_webhook_url": "http://crm.example.com/hooks"}), "crm_webhook_url"),
            (serde_json::json!({"crm_webhook_url": "https://user:pw@crm.example.com/"}), "crm_webhook_url"),
            (serde_json::json!({"crm_webhook_url": "not a url"}), "crm_webhook_url"),
            (serde_json::json!({"crm_webhook_events": ["call.status_update", "call.nope"]}), "crm_webhook_events[1]"),
            (serde_json::json!({"crm_webhook_events": []}), "crm_webhook_events"),
            (serde_json::json!({"crm_webhook_token": "short"}), "crm_webhook_token"),
            (serde_json::json!({"crm_webhook_token": "has a space in the token"}), "crm_webhook_token"),
            (serde_json::json!({"crm_webhook_secret": &secret.expose_secret()[6..]}), "crm_webhook_secret"),
        ] {
            assert_eq!(refused_field(body.clone(), false), field, "{body}");
        }
        assert!(serde_json::from_value::<SettingsInput>(serde_json::json!({"crm_webhook_tokn": TOKEN})).is_err());
    }

    #[test]
    fn plain_http_is_only_for_loopback_on_the_local_stack() {
        for url in ["http://127.0.0.1:9000/hook", "http://localhost/hook", "http://[::1]:8080/"] {
            assert_eq!(refused_field(serde_json::json!({"crm_webhook_url": url}), false), "crm_webhook_url");
            let input: SettingsInput = serde_json::from_value(serde_json::json!({"crm_webhook_url": url})).unwrap();
            assert!(input.validate(true).is_ok(), "{url}");
        }
        assert_eq!(refused_field(serde_json::json!({"crm_webhook_url": "http://10.0.0.1/"}), true), "crm_webhook_url");
    }

    #[test]
    fn events_are_deduplicated_in_their_canonical_order() {
        let mut record = CallSettingsRecord::default();
        let events = serde_json::json!(["call.recording_available", "call.status_update", "call.recording_available"]);
        record.apply(changes(serde_json::json!({"crm_webhook_events": events})).unwrap(), at(0));
        assert_eq!(record.settings.crm_webhook_events, ["call.status_update", "call.recording_available"]);
    }

    #[test]
    fn a_new_secret_keeps_the_old_one_signing_for_a_day() {
        let mut record = CallSettingsRecord::default();
        let first = WebhookSecret::generate();
        let first_text = first.expose_secret().to_owned();
        record.apply(changes(serde_json::json!({"crm_webhook_secret": first_text})).unwrap(), at(0));
        assert_eq!(record.signing_secrets(at(0)).len(), 1);
        assert!(record.previous_secret.is_none());

        let generated = record.apply(changes(serde_json::json!({"crm_webhook_secret": "generate"})).unwrap(), at(1));
        assert!(generated);
        let signing: Vec<&str> = record.signing_secrets(at(2)).into_iter().map(|s| s.expose_secret()).collect();
        assert_eq!(signing.len(), 2);
        assert_ne!(signing[0], first_text);
        assert_eq!(signing[1], first_text);
        assert_eq!(record.view(at(2)).previous_secret_valid_until, Some(at(25)));
        assert_eq!(record.signing_secrets(at(25)).len(), 1, "the overlap ends after 24 h");
        assert_eq!(record.view(at(25)).previous_secret_valid_until, None);
    }

    #[test]
    fn repeating_a_put_changes_nothing() {
        let secret = WebhookSecret::generate().expose_secret().to_owned();
        let body = serde_json::json!({"crm_webhook_token": TOKEN, "crm_webhook_secret": secret});
        let mut record = CallSettingsRecord::default();
        assert!(!record.apply(changes(body.clone()).unwrap(), at(0)));
        record.apply(changes(body).unwrap(), at(1));
        assert_eq!(record.crm_webhook_token_set_at, Some(at(0)));
        assert_eq!(record.crm_webhook_secret_set_at, Some(at(0)));
        assert!(record.previous_secret.is_none(), "the same secret again is no rotation");
    }

    #[test]
    fn a_url_re_enables_the_webhook_and_null_removes_credentials() {
        let mut record = CallSettingsRecord::default();
        record.settings.crm_webhook_enabled = false;
        let url = "https://crm.example.com/hooks/calls";
        let body =
            serde_json::json!({"crm_webhook_url": url, "crm_webhook_token": TOKEN, "crm_webhook_secret": "generate"});
        record.apply(changes(body).unwrap(), at(0));
        assert!(record.settings.crm_webhook_enabled);
        assert_eq!(record.settings.crm_webhook_url.as_deref(), Some(url));

        let body = serde_json::json!({"crm_webhook_url": null, "crm_webhook_token": null, "crm_webhook_secret": null});
        record.apply(changes(body).unwrap(), at(1));
        assert_eq!(record.settings.crm_webhook_url, None);
        assert!(record.crm_webhook_token.is_none() && record.crm_webhook_token_set_at.is_none());
        assert!(record.signing_secrets(at(1)).is_empty());
    }

    #[test]
    fn credentials_reach_neither_debug_output_nor_the_view() {
        let mut record = CallSettingsRecord::default();
        let body = serde_json::json!({"crm_webhook_token": TOKEN, "crm_webhook_secret": "generate"});
        record.apply(changes(body).unwrap(), at(0));
        let secret = record.crm_webhook_secret.as_ref().unwrap().expose_secret().to_owned();
        let input: SettingsInput = serde_json::from_value(serde_json::json!({"crm_webhook_token": TOKEN})).unwrap();
        let view = serde_json::to_string(&record.view(at(0))).unwrap();
        for printed in [format!("{record:?}"), format!("{input:?}"), view.clone()] {
            assert!(!printed.contains(TOKEN) && !printed.contains(&secret), "{printed}");
        }
        let view: serde_json::Value = serde_json::from_str(&view).unwrap();
        assert_eq!(view["crm_webhook_token_set"], true);
        assert_eq!(view["crm_webhook_secret_set"], true);
        assert_eq!(view["retention_days"], 90);
    }
}
