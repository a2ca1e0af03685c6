//! Twilio webhooks: authenticate first, then normalise.
//!
//! A request names its account (`AccountSid`, inside the signed params); that picks the
//! tenant's token, and the request counts only if its `X-Twilio-Signature` verifies
//! with that token over the public URL Twilio called. Until then nothing is stored and
//! nothing in the request is believed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use lambda_http::Request;
use secrecy::ExposeSecret;

use super::signature;
use crate::{
    calls::{CallStatus, Direction, lifecycle::StatusReport},
    edge::ApiError,
    phone::Address,
    tenants::providers::{ProviderStore, WebhookAccount},
};

/// A webhook whose signature checked out: its tenant's account and its params.
#[derive(Debug)]
pub struct Verified {
    pub account: WebhookAccount,
    params: HashMap<String, String>,
}

impl Verified {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, ApiError> {
        self.param(name).ok_or_else(|| ApiError::invalid(name, format!("{name} is required")))
    }
}

/// Where this function is reached from outside: `<PUBLIC_BASE_URL>/<function>` when
/// configured (the local gateway, a custom domain), else `https://<Host>` (a Function URL).
pub fn public_base(req: &Request, configured: Option<&str>, function: &str) -> Result<String, ApiError> {
    match configured {
        Some(base) => Ok(format!("{}/{function}", base.trim_end_matches('/'))),
        None => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| ApiError::BadRequest("missing Host header".into()))?;
            Ok(format!("https://{host}"))
        }
    }
}

/// The URL Twilio called, byte for byte: the public base + the raw path and raw query
/// as received. Never re-encoded.
pub fn public_url(req: &Request, public_base: &str) -> String {
    let path_and_query = req.uri().path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
    format!("{public_base}{path_and_query}")
}

/// Authenticates a Twilio webhook. 400 without a signature, 403 when it does not verify
/// (including for an account no tenant has configured).
pub async fn verify(providers: &ProviderStore, req: &Request, public_base: &str) -> Result<Verified, ApiError> {
    let signature = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing X-Twilio-Signature header".into()))?
        .to_owned();
    let url = public_url(req, public_base);
    let body = req.body().as_ref();
    let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let is_form = content_type.is_none_or(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    // Params: the form body (POST) and the query string (GET, and our own hints).
    let mut params: HashMap<String, String> = HashMap::new();
    let query_pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    params.extend(query_pairs);
    if is_form && !body.is_empty() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| ApiError::BadRequest("body is not valid form encoding".into()))?;
        params.extend(form);
    }
    let forbidden = || ApiError::Forbidden("invalid Twilio signature".into());
    let account_sid = params.get("AccountSid").cloned().ok_or_else(forbidden)?;
    let account = providers.webhook_account(&account_sid).await?.ok_or_else(forbidden)?;
    signature::validate(account.auth_token.expose_secret(), &url, body, content_type, &signature).map_err(|e| {
        tracing::warn!(reason = %e, account = %account.account_sid, "rejected Twilio webhook");
        forbidden()
    })?;
    if !account.active {
        return Err(ApiError::Forbidden("this provider account is disabled".into()));
    }
    crate::edge::record_tenant(account.tenant_id.as_str());
    Ok(Verified { account, params })
}

/// Twilio's `Direction` (`inbound`, `outbound-api`, `outbound-dial`) in ours.
fn direction(raw: Option<&str>) -> Direction {
    match raw {
        Some(d) if d.starts_with("outbound") => Direction::Outbound,
        _ => Direction::Inbound,
    }
}

/// Twilio stamps callbacks in RFC 2822 (`Mon, 16 Aug 2010 03:45:01 +0000`).
fn timestamp(raw: Option<&str>) -> DateTime<Utc> {
    raw.and_then(|t| DateTime::parse_from_rfc2822(t).ok()).map(|t| t.with_timezone(&Utc)).unwrap_or_else(Utc::now)
}

fn address(webhook: &Verified, name: &'static str) -> Result<Address, ApiError> {
    Address::parse(webhook.required(name)?).map_err(|e| ApiError::invalid(name, e.to_string()))
}

/// A voice or status callback as a status report of our state machine.
pub fn status_report(webhook: &Verified) -> Result<StatusReport, ApiError> {
    let raw_status = webhook.required("CallStatus")?;
    let status =
        CallStatus::parse(raw_status).ok_or_else(|| ApiError::invalid("CallStatus", format!("unknown CallStatus '{raw_status}'")))?;
    let call_sid = webhook.required("CallSid")?;
    if !(call_sid.len() == 34 && call_sid.starts_with("CA")) {
        return Err(ApiError::invalid("CallSid", "CallSid must be CA followed by 32 characters"));
    }
    let number = |name: &'static str| -> Result<Option<u32>, ApiError> {
        webhook
            .param(name)
            .map(|v| v.parse::<u32>().map_err(|_| ApiError::invalid(name, format!("{name} must be a non-negative integer"))))
            .transpose()
    };
    Ok(StatusReport {
        tenant_id: webhook.account.tenant_id.clone(),
        provider: "twilio",
        account: webhook.account.account_sid.clone(),
        provider_call_sid: call_sid.to_owned(),
        status,
        occurred_at: timestamp(webhook.param("Timestamp")),
        direction: direction(webhook.param("Direction")),
        from: address(webhook, "From")?,
        to: address(webhook, "To")?,
        caller_name: webhook.param("CallerName").map(|n| n.chars().take(200).collect()),
        duration_seconds: number("CallDuration")?,
        sequence: number("SequenceNumber")?,
    })
}

/// A recording status callback (`RecordingStatus` in-progress, completed, absent, failed).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingCallback {
    pub call_sid: String,
    pub recording_sid: String,
    pub status: String,
    pub duration_seconds: Option<u32>,
    pub error_code: Option<String>,
}

pub fn recording_callback(webhook: &Verified) -> Result<RecordingCallback, ApiError> {
    let recording_sid = webhook.required("RecordingSid")?;
    if !(recording_sid.len() == 34 && recording_sid.starts_with("RE")) {
        return Err(ApiError::invalid("RecordingSid", "RecordingSid must be RE followed by 32 characters"));
    }
    Ok(RecordingCallback {
        call_sid: webhook.required("CallSid")?.to_owned(),
        recording_sid: recording_sid.to_owned(),
        status: webhook.required("RecordingStatus")?.to_owned(),
        duration_seconds: webhook.param("RecordingDuration").and_then(|d| d.parse().ok()),
        error_code: webhook.param("ErrorCode").map(str::to_owned),
    })
}
