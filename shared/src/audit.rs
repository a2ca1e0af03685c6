//! The audit log: who did what to which call, when. Append-only, per tenant, newest
//! first. Written before the audited thing is handed out, so nothing un-audited leaks.

use aws_sdk_dynamodb::{Client, types::AttributeValue};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{calls::model::ts, tenants::TenantId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub tenant_id: TenantId,
    /// `recording.url_issued`, `call.supervisor_action`, …
    pub action: String,
    /// Who: the API key id (never the key), or `operator`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(with = "ts")]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl AuditEntry {
    pub fn new(tenant_id: &TenantId, action: &str, actor: &str, call_id: Option<&str>) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant_id.clone(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            call_id: call_id.map(str::to_owned),
            at: Utc::now(),
            detail: Default::default(),
        }
    }
}

fn audit_pk(tenant: &TenantId) -> String {
    format!("AUDIT#{tenant}")
}

#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Client,
    table: String,
}

impl AuditLog {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    pub async fn record(&self, entry: &AuditEntry) -> anyhow::Result<()> {
        let mut item: std::collections::HashMap<String, AttributeValue> = serde_dynamo::to_item(entry)?;
        item.insert("pk".into(), AttributeValue::S(audit_pk(&entry.tenant_id)));
        // UUIDv7 ids sort by time, so the sort key alone orders the log.
        item.insert("sk".into(), AttributeValue::S(entry.id.clone()));
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await?;
        Ok(())
    }

    /// The tenant's most recent entries, newest first, optionally for one call.
    pub async fn recent(&self, tenant: &TenantId, call_id: Option<&str>, limit: i32) -> anyhow::Result<Vec<AuditEntry>> {
        let mut query = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(audit_pk(tenant)))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(call_id) = call_id {
            query = query
                .filter_expression("call_id = :call")
                .expression_attribute_values(":call", AttributeValue::S(call_id.to_owned()));
        }
        let out = query.send().await?;
        Ok(serde_dynamo::from_items(out.items.unwrap_or_default())?)
    }
}
