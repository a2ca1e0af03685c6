//! The one place that builds AWS clients: once per cold start, shared by reference.
//!
//! `AWS_ENDPOINT_URL` (and the service-specific `AWS_ENDPOINT_URL_S3`) are read by
//! `aws-config` itself, so setting them points every client at the local stack.

use aws_config::{BehaviorVersion, SdkConfig};

#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    pub async fn from_env(local: bool) -> Self {
        let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
        Self::new(&sdk, local)
    }

    /// `local`: the local S3 server addresses buckets by path, not by virtual host.
    pub fn new(sdk: &SdkConfig, local: bool) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(sdk).force_path_style(local).build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }
}
