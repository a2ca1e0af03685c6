//! Versioned data migrations, applied the same way locally and in AWS
//! (`switchboard migrate` with the deployed stack's environment).
//!
//! A migration is `migrations/NNNN_name.json`: `{"description", "operations": [...]}`.
//! Each is applied once, in version order; its record (`MIGRATION` / `NNNN`) is written
//! with a condition, so two operators migrating at once cannot both apply it.

use std::{collections::HashMap, path::Path};

use anyhow::{Context, bail};
use aws_sdk_dynamodb::{Client, error::SdkError, types::AttributeValue};
use serde::Deserialize;
use shared::config::Config;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Migration {
    description: String,
    operations: Vec<Operation>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Operation {
    /// Puts an item unless one with its key exists (operator edits survive re-runs).
    PutIfAbsent { table: TableRef, item: serde_json::Value },
}

#[derive(Debug, Deserialize)]
enum TableRef {
    #[serde(rename = "tenants")]
    Tenants,
    #[serde(rename = "calls")]
    Calls,
}

pub struct Applied {
    pub version: String,
    pub description: String,
}

fn table<'a>(config: &'a Config, table: &TableRef) -> &'a str {
    match table {
        TableRef::Tenants => &config.tenants_table,
        TableRef::Calls => &config.calls_table,
    }
}

/// Applies every migration in `dir` not yet recorded; returns those it applied.
pub async fn run(db: &Client, config: &Config, dir: &Path) -> anyhow::Result<Vec<Applied>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for path in files {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let Some((version, _)) = stem.split_once('_').filter(|(v, _)| v.len() == 4 && v.bytes().all(|b| b.is_ascii_digit()))
        else {
            bail!("{}: migration files are named NNNN_name.json", path.display());
        };
        let migration: Migration = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let record = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("MIGRATION".into())),
            ("sk".to_owned(), AttributeValue::S(version.to_owned())),
        ]);
        let done = db.get_item().table_name(&config.tenants_table).set_key(Some(record.clone())).consistent_read(true).send().await?;
        if done.item.is_some() {
            continue;
        }
        for op in &migration.operations {
            match op {
                Operation::PutIfAbsent { table: t, item } => {
                    let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(item)?;
                    let result = db
                        .put_item()
                        .table_name(table(config, t))
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(pk)")
                        .send()
                        .await;
                    match result {
                        Ok(_) => {}
                        Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {}
                        Err(e) => return Err(e).with_context(|| format!("migration {version}")),
                    }
                }
            }
        }
        let mut record = record;
        record.insert("description".into(), AttributeValue::S(migration.description.clone()));
        record.insert("applied_at".into(), AttributeValue::S(chrono::Utc::now().to_rfc3339()));
        let recorded = db
            .put_item()
            .table_name(&config.tenants_table)
            .set_item(Some(record))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match recorded {
            Ok(_) => applied.push(Applied { version: version.to_owned(), description: migration.description }),
            // Another operator finished it first: its operations are idempotent.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {}
            Err(e) => return Err(e).with_context(|| format!("recording migration {version}")),
        }
    }
    Ok(applied)
}
