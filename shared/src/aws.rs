//! The one place that builds AWS clients: once per cold start, shared by reference.
//!
//! `AWS_ENDPOINT_URL` (and service-specific ones such as `AWS_ENDPOINT_URL_S3`) are read
//! by `aws-config` itself, so setting them points every client at the local stack.
//! S3 and SQS clients are built on first use: most functions never touch them, and a
//! cold start should only pay for what the function uses.
//!
//! The SDK's HTTPS client trusts only the Amazon Trust Services roots, which every AWS
//! endpoint chains to: the SDK talks to nothing else, and loading the system store
//! instead (a directory of ~300 files, ~140 certificates parsed) cost 3 ms of each
//! cold start.

use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region, SdkConfig, environment::EnvironmentVariableCredentialsProvider};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};

const AWS_ROOTS: &[u8] = include_bytes!("../certs/aws-roots.pem");

#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    sdk: SdkConfig,
    local: bool,
    s3: OnceLock<aws_sdk_s3::Client>,
    sqs: OnceLock<aws_sdk_sqs::Client>,
}

impl AwsClients {
    /// In Lambda the runtime puts region and credentials in the environment, where both
    /// default provider chains look first; pinning them gives the same answer without
    /// building the rest of the chains (profiles, SSO, IMDS: ~3 ms of every cold start).
    pub async fn from_env(local: bool) -> Self {
        let region = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")).ok();
        let trust = TrustStore::empty().with_native_roots(false).with_pem_certificate(AWS_ROOTS);
        let tls = TlsContext::builder().with_trust_store(trust).build().expect("the bundled AWS roots are valid PEM");
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls)
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let (Some(region), true) = (region, std::env::var_os("AWS_ACCESS_KEY_ID").is_some()) {
            loader = loader.region(Region::new(region)).credentials_provider(EnvironmentVariableCredentialsProvider::new());
        }
        Self::new(&loader.load().await, local)
    }

    /// `local`: the local S3 server addresses buckets by path, not by virtual host.
    pub fn new(sdk: &SdkConfig, local: bool) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sdk: sdk.clone(),
            local,
            s3: OnceLock::new(),
            sqs: OnceLock::new(),
        }
    }

    /// The configuration every client here was built from (endpoints, trust, region),
    /// for clients of services no function uses (the local stream consumer's).
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(self.local).build())
        })
    }

    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        self.sqs.get_or_init(|| aws_sdk_sqs::Client::new(&self.sdk))
    }
}

/// A DynamoDB item (or key).
pub type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// Reads items of one or more tables in one `BatchGetItem` (at most 100 distinct
/// keys; a key asked for twice is read once), strongly consistent, retrying what the
/// store left unprocessed a bounded number of times. Answers in the order asked:
/// `None` for a key with no item.
pub async fn batch_get(db: &aws_sdk_dynamodb::Client, reads: &[(&str, Item)]) -> anyhow::Result<Vec<Option<Item>>> {
    use std::collections::{HashMap, HashSet};

    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let id = |table: &str, item: &Item| {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        (table.to_owned(), text("pk"), text("sk"))
    };
    let mut asked = HashSet::new();
    let mut pending: HashMap<String, Vec<Item>> = HashMap::new();
    for (table, key) in reads {
        if asked.insert(id(table, key)) {
            pending.entry((*table).to_owned()).or_default().push(key.clone());
        }
    }
    anyhow::ensure!(asked.len() <= 100, "BatchGetItem reads at most 100 keys");
    let mut found = HashMap::new();
    for _ in 0..5 {
        if pending.is_empty() {
            break;
        }
        let mut request = db.batch_get_item();
        for (table, keys) in std::mem::take(&mut pending) {
            request = request.request_items(table, KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build()?);
        }
        let out = request.send().await.map_err(|e| anyhow::anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        for (table, items) in out.responses.unwrap_or_default() {
            found.extend(items.into_iter().map(|item| (id(&table, &item), item)));
        }
        pending = out.unprocessed_keys.unwrap_or_default().into_iter().map(|(table, k)| (table, k.keys)).collect();
    }
    anyhow::ensure!(pending.is_empty(), "the store kept leaving keys of a batch read unprocessed");
    Ok(reads.iter().map(|(table, key)| found.get(&id(table, key)).cloned()).collect())
}
