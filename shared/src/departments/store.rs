//! Departments in the tenants table, three items each under the tenant's key:
//!
//! | sk                 | holds                 | for                                      |
//! |--------------------|-----------------------|------------------------------------------|
//! | `DEPT#<queue_id>`  | the department        | get; list (a Query on the prefix)        |
//! | `DEPTNUM#<e164>`   | the department, again | the voice webhook: one GetItem per call  |
//! | `DEPTNAME#<name>`  | its `queue_id`        | names unique within the tenant           |
//!
//! Calls waiting in a department's queue sit under the same key, as
//! `QUEUED#<queue_id>#<enqueued epoch ms, 13 digits>#<call_id>` ([`queued_prefix`]), so
//! they list oldest first and a department with callers waiting can refuse deletion.
//!
//! Every write moves all three in one transaction whose conditions keep a number and a
//! name to one department, and refuse a write based on a read that is no longer current
//! (so the guards it releases are really its own).

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    Client,
    operation::transact_write_items::TransactWriteItemsError,
    types::{AttributeValue, Delete, Put, TransactWriteItem},
};

use super::Department;
use crate::{
    edge::ApiError,
    phone::E164,
    tenants::{TenantId, tenant_items, tenant_pk},
};

type Item = HashMap<String, AttributeValue>;

const DEPARTMENT_PREFIX: &str = "DEPT#";
/// A guard item may be written or removed only when absent or already this department's.
const OWNED_BY_THIS: &str = "attribute_not_exists(pk) OR queue_id = :q";
/// Positions in a `put` transaction; DynamoDB reports cancellation reasons in this order.
const NUMBER_ITEM: usize = 1;
const NAME_ITEM: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum DepartmentError {
    #[error("no department {0}")]
    NotFound(String),
    #[error("phone_number is already assigned to another department")]
    NumberTaken,
    #[error("name '{0}' is already used by another department")]
    NameTaken(String),
    #[error("the department was changed by another request; read it again and retry")]
    Changed,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<DepartmentError> for ApiError {
    fn from(err: DepartmentError) -> Self {
        match err {
            DepartmentError::Store(e) => ApiError::Unexpected(e),
            DepartmentError::NotFound(_) => ApiError::NotFound(err.to_string()),
            DepartmentError::NumberTaken | DepartmentError::NameTaken(_) | DepartmentError::Changed => {
                ApiError::Conflict(err.to_string())
            }
        }
    }
}

fn department_sk(queue_id: &str) -> String {
    format!("{DEPARTMENT_PREFIX}{queue_id}")
}

fn number_sk(number: &E164) -> String {
    format!("DEPTNUM#{}", number.as_str())
}

fn name_sk(name: &str) -> String {
    format!("DEPTNAME#{name}")
}

/// The start of the sort key of every call waiting in `queue_id`'s queue.
pub fn queued_prefix(queue_id: &str) -> String {
    format!("QUEUED#{queue_id}#")
}

#[derive(Debug, Clone)]
pub struct DepartmentStore {
    db: Client,
    table: String,
}

impl DepartmentStore {
    pub fn new(db: Client, table: impl Into<String>) -> Self {
        Self { db, table: table.into() }
    }

    /// Creates a department (`previous: None`) or replaces it. `previous` is the
    /// department as read for the change: the write is refused if it is no longer what
    /// is stored, and its number and name are released if they change.
    pub async fn put(&self, department: &Department, previous: Option<&Department>) -> Result<(), DepartmentError> {
        let pk = tenant_pk(&department.tenant_id);
        let queue_id = AttributeValue::S(department.queue_id.clone());
        let record = Put::builder()
            .table_name(&self.table)
            .set_item(Some(stored(department, department_sk(&department.queue_id))?));
        let record = match previous {
            None => record.condition_expression("attribute_not_exists(pk)"),
            Some(seen) => record.condition_expression("updated_at = :seen").expression_attribute_values(
                ":seen",
                serde_dynamo::to_attribute_value(seen.updated_at).map_err(anyhow::Error::from)?,
            ),
        };
        let guard = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(OWNED_BY_THIS)
                .expression_attribute_values(":q", queue_id.clone())
        };
        let name_item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk.clone())),
            ("sk".to_owned(), AttributeValue::S(name_sk(&department.name))),
            ("queue_id".to_owned(), queue_id.clone()),
        ]);
        let mut tx = self
            .db
            .transact_write_items()
            .transact_items(put(record)?)
            .transact_items(put(guard(stored(department, number_sk(&department.phone_number))?))?)
            .transact_items(put(guard(name_item))?);
        if let Some(seen) = previous {
            if seen.phone_number != department.phone_number {
                tx = tx.transact_items(self.release(&pk, number_sk(&seen.phone_number), &queue_id)?);
            }
            if seen.name != department.name {
                tx = tx.transact_items(self.release(&pk, name_sk(&seen.name), &queue_id)?);
            }
        }
        tx.send().await.map_err(|e| match refused_item(e.as_service_error()) {
            Some(NUMBER_ITEM) => DepartmentError::NumberTaken,
            Some(NAME_ITEM) => DepartmentError::NameTaken(department.name.clone()),
            Some(_) => DepartmentError::Changed,
            None => DepartmentError::Store(e.into()),
        })?;
        Ok(())
    }

    /// Strongly consistent: a PUT reads, changes and writes back under `put`'s guard.
    pub async fn get(&self, tenant: &TenantId, queue_id: &str) -> anyhow::Result<Option<Department>> {
        let Ok(queue_id) = uuid::Uuid::parse_str(queue_id) else { return Ok(None) };
        self.get_item(tenant, department_sk(&queue_id.to_string()), true).await
    }

    /// The department a dialled number rings: one eventually consistent GetItem, the
    /// cheapest read, on every inbound call.
    pub async fn by_number(&self, tenant: &TenantId, number: &E164) -> anyhow::Result<Option<Department>> {
        self.get_item(tenant, number_sk(number), false).await
    }

    /// Every department of the tenant, by name. A tenant has one per inbound number, so
    /// a handful: every page is read rather than handing out a cursor.
    pub async fn list(&self, tenant: &TenantId) -> anyhow::Result<Vec<Department>> {
        let items: Vec<Item> = tenant_items(&self.db, &self.table, tenant, DEPARTMENT_PREFIX)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await?;
        let mut departments: Vec<Department> = serde_dynamo::from_items(items)?;
        departments.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(departments)
    }

    /// Whether any call waits in the department's queue: one consistent Query for one key.
    pub async fn has_waiting_calls(&self, tenant: &TenantId, queue_id: &str) -> anyhow::Result<bool> {
        let out = tenant_items(&self.db, &self.table, tenant, queued_prefix(queue_id))
            .projection_expression("sk")
            .consistent_read(true)
            .limit(1)
            .send()
            .await?;
        Ok(out.count > 0)
    }

    /// Removes the department with its number and name, in one transaction.
    pub async fn delete(&self, tenant: &TenantId, queue_id: &str) -> Result<(), DepartmentError> {
        let department =
            self.get(tenant, queue_id).await?.ok_or_else(|| DepartmentError::NotFound(queue_id.to_owned()))?;
        let pk = tenant_pk(tenant);
        let owner = AttributeValue::S(department.queue_id.clone());
        let record = Delete::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", AttributeValue::S(department_sk(&department.queue_id)))
            .condition_expression("updated_at = :seen")
            .expression_attribute_values(
                ":seen",
                serde_dynamo::to_attribute_value(department.updated_at).map_err(anyhow::Error::from)?,
            )
            .build()
            .map_err(anyhow::Error::from)?;
        self.db
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(record).build())
            .transact_items(self.release(&pk, number_sk(&department.phone_number), &owner)?)
            .transact_items(self.release(&pk, name_sk(&department.name), &owner)?)
            .send()
            .await
            .map_err(|e| match refused_item(e.as_service_error()) {
                Some(_) => DepartmentError::Changed,
                None => DepartmentError::Store(e.into()),
            })?;
        Ok(())
    }

    async fn get_item(&self, tenant: &TenantId, sk: String, consistent: bool) -> anyhow::Result<Option<Department>> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(tenant_pk(tenant)))
            .key("sk", AttributeValue::S(sk))
            .consistent_read(consistent)
            .send()
            .await?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }

    /// Deletes a guard item, unless another department holds it.
    fn release(&self, pk: &str, sk: String, owner: &AttributeValue) -> anyhow::Result<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk))
            .condition_expression(OWNED_BY_THIS)
            .expression_attribute_values(":q", owner.clone())
            .build()?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}

/// The department as an item under `sk`.
fn stored(department: &Department, sk: String) -> anyhow::Result<Item> {
    let mut item: Item = serde_dynamo::to_item(department)?;
    item.insert("pk".into(), AttributeValue::S(tenant_pk(&department.tenant_id)));
    item.insert("sk".into(), AttributeValue::S(sk));
    Ok(item)
}

fn put(put: aws_sdk_dynamodb::types::builders::PutBuilder) -> anyhow::Result<TransactWriteItem> {
    Ok(TransactWriteItem::builder().put(put.build()?).build())
}

/// The position of the item whose condition cancelled the transaction. Losing a race
/// with a concurrent transaction on the same items counts as the department's own
/// item (position 0) having changed: retrying is the answer either way.
fn refused_item(err: Option<&TransactWriteItemsError>) -> Option<usize> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err else { return None };
    let reasons = cancelled.cancellation_reasons();
    reasons
        .iter()
        .position(|r| r.code() == Some("ConditionalCheckFailed"))
        .or_else(|| reasons.iter().any(|r| r.code() == Some("TransactionConflict")).then_some(0))
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{CancellationReason, error::TransactionCanceledException};

    use super::*;
    use crate::departments::tests::{department, utc};

    fn cancelled(codes: &[&str]) -> TransactWriteItemsError {
        let reasons = codes.iter().map(|c| CancellationReason::builder().code(*c).build()).collect();
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder().set_cancellation_reasons(Some(reasons)).build(),
        )
    }

    #[test]
    fn a_stored_department_reads_back_whole_under_each_key() {
        let mut d = department(chrono_tz::Europe::Berlin);
        d.music_url = Some("https://cdn.example.com/hold.mp3".into());
        d.required_skills = vec!["billing".into(), "spanish".into()];
        d.updated_at = utc(2025, 10, 26, 1, 30) + chrono::Duration::nanoseconds(123_456_789);
        let item = stored(&d, number_sk(&d.phone_number)).unwrap();
        assert_eq!(item["pk"], AttributeValue::S("TENANT#6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f".into()));
        assert_eq!(item["sk"], AttributeValue::S("DEPTNUM#+14155550100".into()));
        assert_eq!(item["timezone"], AttributeValue::S("Europe/Berlin".into()));
        assert_eq!(serde_dynamo::from_item::<_, Department>(item).unwrap(), d);
        // The optimistic guard compares the stored attribute with the value read back.
        let stored_at = &stored(&d, department_sk(&d.queue_id)).unwrap()["updated_at"];
        assert_eq!(stored_at, &serde_dynamo::to_attribute_value(d.updated_at).unwrap());
    }

    #[test]
    fn department_keys_list_without_their_guards() {
        let d = department(chrono_tz::Europe::Berlin);
        assert!(department_sk(&d.queue_id).starts_with(DEPARTMENT_PREFIX));
        assert!(!number_sk(&d.phone_number).starts_with(DEPARTMENT_PREFIX));
        assert!(!name_sk(&d.name).starts_with(DEPARTMENT_PREFIX));
    }

    #[test]
    fn queued_calls_list_apart_from_departments_and_other_queues() {
        let d = department(chrono_tz::Europe::Berlin);
        let prefix = queued_prefix(&d.queue_id);
        assert_eq!(prefix, "QUEUED#0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30#");
        assert!(!prefix.starts_with(DEPARTMENT_PREFIX));
        // A queue id never prefixes another: the closing '#' ends it.
        let longer = format!("{}0", d.queue_id);
        assert!(!queued_prefix(&longer).starts_with(&prefix));
    }

    #[test]
    fn cancellation_reasons_name_the_refusing_item() {
        assert_eq!(refused_item(Some(&cancelled(&["None", "ConditionalCheckFailed", "None"]))), Some(NUMBER_ITEM));
        assert_eq!(refused_item(Some(&cancelled(&["None", "None", "ConditionalCheckFailed"]))), Some(NAME_ITEM));
        assert_eq!(refused_item(Some(&cancelled(&["ConditionalCheckFailed", "None", "None"]))), Some(0));
        assert_eq!(refused_item(Some(&cancelled(&["None", "TransactionConflict", "None"]))), Some(0));
        assert_eq!(refused_item(Some(&cancelled(&["None", "ThrottlingError", "None"]))), None);
        assert_eq!(refused_item(None), None);
    }

    #[test]
    fn conflicts_answer_409_and_missing_404() {
        use http::StatusCode;
        let status = |e: DepartmentError| ApiError::from(e).status();
        assert_eq!(status(DepartmentError::NumberTaken), StatusCode::CONFLICT);
        assert_eq!(status(DepartmentError::NameTaken("sales".into())), StatusCode::CONFLICT);
        assert_eq!(status(DepartmentError::Changed), StatusCode::CONFLICT);
        assert_eq!(status(DepartmentError::NotFound("x".into())), StatusCode::NOT_FOUND);
        assert_eq!(status(DepartmentError::Store(anyhow::anyhow!("boom"))), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
