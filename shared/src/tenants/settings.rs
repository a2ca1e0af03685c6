//! A tenant's call settings (seed 004 "Recording & Compliance"): one item, read where a
//! decision needs it (recording access checks retention; the dispatcher, the CRM URL).

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use serde::{Deserialize, Serialize};

use super::{TenantId, tenant_pk};

/// Seed 004: retention is configurable from 30 to 365 days.
pub const RETENTION_DAYS: std::ops::RangeInclusive<u32> = 30..=365;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallSettings {
    pub recording_enabled: bool,
    pub consent_required: bool,
    pub transcription_enabled: bool,
    pub retention_days: u32,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self { recording_enabled: true, consent_required: true, transcription_enabled: false, retention_days: 90 }
    }
}

const SETTINGS_SK: &str = "SETTINGS";

#[derive(Debug, Clone)]
pub struct SettingsStore {
    db: Client,
    table: String,
}

impl SettingsStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    pub async fn get(&self, tenant: &TenantId) -> anyhow::Result<CallSettings> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(SETTINGS_SK.into()))
            .send()
            .await?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?.unwrap_or_default())
    }

    pub async fn put(&self, tenant: &TenantId, settings: &CallSettings) -> anyhow::Result<()> {
        anyhow::ensure!(RETENTION_DAYS.contains(&settings.retention_days), "retention_days must be 30 to 365");
        let mut item: std::collections::HashMap<String, AttributeValue> = serde_dynamo::to_item(settings)?;
        item.insert("pk".into(), AttributeValue::S(tenant_pk(tenant)));
        item.insert("sk".into(), AttributeValue::S(SETTINGS_SK.into()));
        self.db.put_item().table_name(&self.table).set_item(Some(item)).send().await?;
        Ok(())
    }
}
