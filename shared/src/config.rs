//! Typed configuration, read once from the environment at cold start.
//!
//! Names match `template.yaml`'s `Globals.Function.Environment.Variables`; the local
//! stack resolves that same block into its env file, so both run with one shape.

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Every function's configuration. Secrets are `SecretString`: their `Debug` prints
/// `[REDACTED]`, and they have no `Display`, so they cannot reach a log by accident.
#[derive(Debug, Clone)]
pub struct Config {
    pub tenants_table: String,
    pub calls_table: String,
    pub recordings_bucket: Option<String>,
    pub crm_delivery_queue_url: Option<String>,
    /// Where a CRM delivery goes after its last attempt failed.
    pub crm_delivery_dlq_url: Option<String>,
    pub recording_fetch_queue_url: Option<String>,
    /// Where provider webhooks reach us, as the provider signs it (`…/functions/v1` locally).
    /// Unset behind a Function URL: the public URL is then `https://<Host>/<path>`.
    pub public_base_url: Option<String>,
    pub cursor_signing_key: SecretString,
    /// Multiplies the CRM retry schedule (`DELIVERY_DELAY_SCALE`, default 1), so the
    /// local stack's tests run hours of backoff in seconds through the same hops.
    pub delivery_delay_scale: f64,
    /// Running against the local stack (S3 needs path-style addressing there).
    pub local: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any key → value lookup (the environment in
    /// production, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            get(name).filter(|v| !v.trim().is_empty()).ok_or(ConfigError::Missing(name))
        };
        let cursor_signing_key = required("CURSOR_SIGNING_KEY")?;
        if cursor_signing_key.len() < 32 {
            return Err(ConfigError::Invalid {
                name: "CURSOR_SIGNING_KEY",
                reason: "must be at least 32 characters".into(),
            });
        }
        let delivery_delay_scale = match get("DELIVERY_DELAY_SCALE").filter(|v| !v.trim().is_empty()) {
            None => 1.0,
            Some(raw) => raw.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f > 0.0).ok_or_else(|| {
                ConfigError::Invalid { name: "DELIVERY_DELAY_SCALE", reason: "must be a positive number".into() }
            })?,
        };
        Ok(Self {
            tenants_table: required("TENANTS_TABLE")?,
            calls_table: required("CALLS_TABLE")?,
            recordings_bucket: get("RECORDINGS_BUCKET").filter(|v| !v.is_empty()),
            crm_delivery_queue_url: get("CRM_DELIVERY_QUEUE_URL").filter(|v| !v.is_empty()),
            crm_delivery_dlq_url: get("CRM_DELIVERY_DLQ_URL").filter(|v| !v.is_empty()),
            recording_fetch_queue_url: get("RECORDING_FETCH_QUEUE_URL").filter(|v| !v.is_empty()),
            public_base_url: get("PUBLIC_BASE_URL").filter(|v| !v.is_empty()),
            cursor_signing_key: SecretString::from(cursor_signing_key),
            delivery_delay_scale,
            local: matches!(get("SWITCHBOARD_LOCAL").as_deref(), Some("1" | "true")),
        })
    }

    pub fn cursor_key_bytes(&self) -> &[u8] {
        self.cursor_signing_key.expose_secret().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn missing_table_names_the_variable() {
        let err = Config::from_lookup(env(&[("CURSOR_SIGNING_KEY", KEY)])).unwrap_err();
        assert_eq!(err.to_string(), "environment variable TENANTS_TABLE is not set");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = Config::from_lookup(env(&[
            ("CURSOR_SIGNING_KEY", KEY),
            ("TENANTS_TABLE", "t"),
            ("CALLS_TABLE", "c"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(KEY), "{printed}");
        assert!(printed.contains("REDACTED"));
    }

    #[test]
    fn delivery_delay_scale_defaults_to_one_and_must_be_positive() {
        let base = [("CURSOR_SIGNING_KEY", KEY), ("TENANTS_TABLE", "t"), ("CALLS_TABLE", "c")];
        assert_eq!(Config::from_lookup(env(&base)).unwrap().delivery_delay_scale, 1.0);
        let scaled = Config::from_lookup(env(&[base.as_slice(), &[("DELIVERY_DELAY_SCALE", "0.001")]].concat())).unwrap();
        assert_eq!(scaled.delivery_delay_scale, 0.001);
        for bad in ["0", "-1", "fast", "NaN"] {
            let err = Config::from_lookup(env(&[base.as_slice(), &[("DELIVERY_DELAY_SCALE", bad)]].concat())).unwrap_err();
            assert!(err.to_string().contains("DELIVERY_DELAY_SCALE"), "{bad}");
        }
    }

    #[test]
    fn short_signing_key_is_rejected() {
        let err = Config::from_lookup(env(&[
            ("CURSOR_SIGNING_KEY", "short"),
            ("TENANTS_TABLE", "t"),
            ("CALLS_TABLE", "c"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("CURSOR_SIGNING_KEY"));
    }
}
