//! One signer per scheme a CRM can verify a delivery with.
//!
//! - `X-Signature` (seed 003): lower-case hex HMAC-SHA256 of the raw body. The seed's
//!   receiver keys the HMAC with `secret.encode('utf-8')`, i.e. the secret exactly as the
//!   CRM was shown it, so that is the key here too: the `whsec_…` text, not its bytes.
//! - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
//!   `v1,` + base64 HMAC-SHA256 of `{msg_id}.{timestamp}.{body}` keyed with the
//!   base64-decoded part of the `whsec_` secret, so a CRM can use any of the standard's
//!   libraries. One secret serves both schemes, as the spec's migration section allows.
//!
//! During a secret rotation every active secret signs (the new one and the old one),
//! so a CRM verifies with whichever it holds and no delivery fails over the switch.

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

const SECRET_PREFIX: &str = "whsec_";
/// The spec's bounds for a symmetric secret: 24 bytes (192 bits) to 64 bytes (512 bits).
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
const GENERATED_BYTES: usize = 24;

/// How far `webhook-timestamp` may be from the receiver's clock: the 5 minutes every
/// Standard Webhooks library enforces against replays.
pub const TIMESTAMP_TOLERANCE_SECS: u64 = 5 * 60;

/// A tenant's webhook signing secret, `whsec_` + base64 of 24–64 random bytes. Only
/// `parse` and `generate` build one, so a held secret is always usable; it never prints.
pub struct WebhookSecret {
    text: SecretString,
    key: SecretSlice<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be whsec_ followed by the base64 of 24 to 64 random bytes")]
pub struct InvalidWebhookSecret;

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_BYTES];
        rand::rng().fill_bytes(&mut key);
        let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(&key));
        Self { text: text.into(), key: key.into() }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidWebhookSecret> {
        let encoded = raw.strip_prefix(SECRET_PREFIX).ok_or(InvalidWebhookSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| InvalidWebhookSecret)?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err(InvalidWebhookSecret);
        }
        Ok(Self { text: raw.into(), key: key.into() })
    }
}

/// The `whsec_…` text: what the tenant is shown once and what the settings store keeps.
impl ExposeSecret<str> for WebhookSecret {
    fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().to_vec()
}

/// Seed 003's `X-Signature`: lower-case hex HMAC-SHA256 of the raw body under `secret`.
pub fn x_signature(secret: &[u8], body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, &[body]))
}

/// One `X-Signature` value per secret, in the order given, each keyed with the secret's
/// `whsec_…` text as seed 003's receiver encodes it.
pub fn x_signatures(secrets: &[&WebhookSecret], body: &[u8]) -> Vec<String> {
    secrets.iter().map(|s| x_signature(s.expose_secret().as_bytes(), body)).collect()
}

fn standard_webhooks_mac(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    hmac_sha256(secret.key.expose_secret(), &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body])
}

/// One Standard Webhooks signature: `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`.
/// `msg_id` must not contain `.` (the spec's rule; event ids are UUIDs).
pub fn standard_webhooks_signature(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(standard_webhooks_mac(secret, msg_id, timestamp, body)))
}

/// The `webhook-signature` value: one signature per active secret, space-separated
/// (`v1,a v1,b`), the spec's form for zero-downtime rotation.
pub fn signature_header(secrets: &[&WebhookSecret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| standard_webhooks_signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("webhook-timestamp is more than 5 minutes away from now")]
    OutsideTolerance,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
}

/// What a receiver does (and what our tests and the local CRM fake check deliveries
/// with): the timestamp within tolerance of `now` (unix seconds), then any `v1` entry of
/// `header` equal, in constant time, to the signature under `secret`.
pub fn verify_standard_webhooks(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
) -> Result<(), VerifyError> {
    if now.abs_diff(timestamp) > TIMESTAMP_TOLERANCE_SECS {
        return Err(VerifyError::OutsideTolerance);
    }
    let expected = standard_webhooks_mac(secret, msg_id, timestamp, body);
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| bool::from(candidate.ct_eq(&expected)))
        .then_some(())
        .ok_or(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vector: standard-webhooks/standard-webhooks,
    /// libraries/rust/src/lib.rs `test_sign` (commit 1e88c9ce08bb2c605fea9a2a540b4a91d31c7a62).
    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_MSG_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TIMESTAMP: i64 = 1649367553;
    const VECTOR_PAYLOAD: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VECTOR_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn vector_secret() -> WebhookSecret {
        WebhookSecret::parse(VECTOR_SECRET).unwrap()
    }

    #[test]
    fn standard_webhooks_signature_matches_the_published_vectors() {
        let signature = standard_webhooks_signature(&vector_secret(), VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD);
        assert_eq!(signature, VECTOR_SIGNATURE);

        // standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py
        // `test_sign_function` (commit 33d368b20c5543357f4f27fd13bed0703b8c5204).
        let python = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let (msg_id, timestamp, payload) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        let signature = standard_webhooks_signature(&python, msg_id, timestamp, payload);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verification_accepts_the_vector_and_refuses_tampering_and_stale_timestamps() {
        let secret = vector_secret();
        let verify = |timestamp, body: &[u8], now| {
            verify_standard_webhooks(&secret, VECTOR_MSG_ID, timestamp, body, VECTOR_SIGNATURE, now)
        };
        let ts = VECTOR_TIMESTAMP;
        assert_eq!(verify(ts, VECTOR_PAYLOAD, ts), Ok(()));
        assert_eq!(verify(ts, VECTOR_PAYLOAD, ts + 300), Ok(()));
        let tampered = br#"{"email":"test@example.com","username":"test_user2"}"#;
        assert_eq!(verify(ts, tampered, ts), Err(VerifyError::NoMatch));
        assert_eq!(verify(ts + 1, VECTOR_PAYLOAD, ts), Err(VerifyError::NoMatch));
        assert_eq!(verify(ts, VECTOR_PAYLOAD, ts + 301), Err(VerifyError::OutsideTolerance));
        assert_eq!(verify(ts, VECTOR_PAYLOAD, ts - 301), Err(VerifyError::OutsideTolerance));
        let other_id = verify_standard_webhooks(&secret, "msg_other", ts, VECTOR_PAYLOAD, VECTOR_SIGNATURE, ts);
        assert_eq!(other_id, Err(VerifyError::NoMatch));
    }

    #[test]
    fn during_rotation_both_secrets_sign_and_either_verifies() {
        let (old, new, stranger) = (vector_secret(), WebhookSecret::generate(), WebhookSecret::generate());
        let header = signature_header(&[&new, &old], VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD);
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], VECTOR_SIGNATURE);
        let verify = |secret, header: &str| {
            verify_standard_webhooks(secret, VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD, header, VECTOR_TIMESTAMP)
        };
        assert_eq!(verify(&old, &header), Ok(()));
        assert_eq!(verify(&new, &header), Ok(()));
        assert_eq!(verify(&stranger, &header), Err(VerifyError::NoMatch));
        // Entries of other schemes or versions are skipped, not fatal.
        let mixed = format!("v1a,aGVsbG8= v2,{} junk {VECTOR_SIGNATURE}", &VECTOR_SIGNATURE[3..]);
        assert_eq!(verify(&old, &mixed), Ok(()));

        let hexes = x_signatures(&[&new, &old], VECTOR_PAYLOAD);
        assert_eq!(hexes, [&new, &old].map(|s| x_signature(s.expose_secret().as_bytes(), VECTOR_PAYLOAD)));
        assert_ne!(hexes[0], hexes[1]);
    }

    #[test]
    fn only_whsec_secrets_of_24_to_64_bytes_parse() {
        let b64 = |n: usize| STANDARD.encode(vec![7u8; n]);
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD".to_owned(),
            "whsec_not base64!".to_owned(),
            format!("whsec_{}", b64(23)),
            format!("whsec_{}", b64(65)),
        ] {
            assert_eq!(WebhookSecret::parse(&bad).unwrap_err(), InvalidWebhookSecret, "{bad}");
        }
        for n in [24, 64] {
            assert!(WebhookSecret::parse(&format!("whsec_{}", b64(n))).is_ok());
        }
        let generated = WebhookSecret::generate();
        let reparsed = WebhookSecret::parse(generated.expose_secret()).unwrap();
        assert_eq!(reparsed.key.expose_secret().len(), 24);
        assert_ne!(generated.expose_secret(), WebhookSecret::generate().expose_secret());
    }

    #[test]
    fn a_secret_never_prints() {
        assert_eq!(format!("{:?}", vector_secret()), "WebhookSecret([REDACTED])");
    }

    #[test]
    fn x_signature_matches_rfc_4231_test_case_2() {
        let signature = x_signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(signature, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    /// Runs seed 003's Python `verify_callback_signature`, verbatim, on our X-Signature.
    #[test]
    fn seed_003_python_receiver_accepts_x_signature() {
        use std::{io::Write, process::{Command, Stdio}};

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/deliveries/testdata/verify_x_signature.py");
        let python_verifies = |secret: &str, signature: &str, body: &[u8]| -> Option<bool> {
            let mut child = match Command::new("python3")
                .args([script, secret, signature])
                .stdin(Stdio::piped())
                .spawn()
            {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                Err(e) => panic!("running python3: {e}"),
            };
            child.stdin.take().unwrap().write_all(body).unwrap();
            match child.wait().unwrap().code() {
                Some(0) => Some(true),
                Some(3) => Some(false),
                other => panic!("the seed verifier crashed: exit {other:?}"),
            }
        };

        let secret = WebhookSecret::generate();
        // Non-ASCII on purpose: the seed decodes the body as UTF-8 and re-encodes it.
        let body = r#"{"event":"call.status_update","call":{"caller_name":"José Núñez 李"}}"#.as_bytes();
        let [signature] = x_signatures(&[&secret], body).try_into().unwrap();
        let Some(valid) = python_verifies(secret.expose_secret(), &signature, body) else {
            eprintln!("skipping seed_003_python_receiver_accepts_x_signature: python3 is not installed");
            return;
        };
        assert!(valid, "the seed's receiver refused our X-Signature");
        let tampered = r#"{"event":"call.status_update","call":{"caller_name":"Jose Nunez 李"}}"#.as_bytes();
        assert_eq!(python_verifies(secret.expose_secret(), &signature, tampered), Some(false));
        let other = WebhookSecret::generate();
        assert_eq!(python_verifies(other.expose_secret(), &signature, body), Some(false));
    }
}
