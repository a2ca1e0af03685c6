//! CRM deliveries: what a tenant's CRM receives for each call event and how it is signed.
//!
//! A delivery is one POST of `CallWebhook::render`'s bytes with `Content-Type:
//! application/json` and the headers in `header`: `Authorization: Bearer <token>`,
//! `X-Webhook-Event`, `X-Call-ID` (seed 004), `X-Signature` (seed 003) and the Standard
//! Webhooks trio `webhook-id` (the event id), `webhook-timestamp` (the attempt's unix
//! time) and `webhook-signature`.

pub mod dispatch;
pub mod payload;
pub mod inspect;
pub mod signing;
pub mod store;

pub use payload::{CallWebhook, NotDeliverable, WebhookEvent};
pub use signing::{
    InvalidWebhookSecret, TIMESTAMP_TOLERANCE_SECS, VerifyError, WebhookSecret, signature_header,
    standard_webhooks_signature, verify_standard_webhooks, x_signature, x_signatures,
};

/// Header names of a delivery. HTTP names are case-insensitive; these are the canonical
/// lower-case forms `http` requires.
pub mod header {
    use http::HeaderName;

    /// `Bearer <token>`: the tenant's CRM webhook token (seed 004).
    pub use http::header::AUTHORIZATION;

    /// `call.status_update` or `call.recording_available`.
    pub const X_WEBHOOK_EVENT: HeaderName = HeaderName::from_static("x-webhook-event");
    pub const X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
    /// Hex HMAC-SHA256 of the raw body (seed 003).
    pub const X_SIGNATURE: HeaderName = HeaderName::from_static("x-signature");
    /// The event id: stable across retries, the CRM's idempotency key.
    pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    /// Unix seconds of this attempt (not of the event), so each retry is fresh.
    pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
}
