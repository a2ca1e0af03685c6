//! What a CRM receives for one call event: seed 004's `call.status_update` body, plus
//! seed 003's `event_type` name, the event id to deduplicate by, and the header values
//! derived from the event.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    calls::model::{Call, CallEvent, CallStatus, Direction, ts},
    phone::Address,
    tenants::{Tenant, TenantId},
};

/// A CRM webhook event: the body's `event` and the `X-Webhook-Event` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEvent {
    StatusUpdate,
    RecordingAvailable,
    /// A supervisor monitored, barged into, whispered on or disconnected a call.
    SupervisorAction,
}

impl WebhookEvent {
    /// The webhook event a timeline entry is delivered as, by its `type`.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "call.status_update" => Some(Self::StatusUpdate),
            "call.recording_available" => Some(Self::RecordingAvailable),
            "call.supervisor_action" => Some(Self::SupervisorAction),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::StatusUpdate => "call.status_update",
            Self::RecordingAvailable => "call.recording_available",
            Self::SupervisorAction => "call.supervisor_action",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotDeliverable {
    #[error("event type '{0}' is not a CRM webhook event")]
    UnknownEvent(String),
    /// Guards tenant isolation: a body must never mix one tenant's call with another's.
    #[error("the event, call and tenant do not belong together")]
    Mismatch,
}

/// One call event, ready to render for its tenant's CRM. Built only from an event of
/// that call and a call of that tenant.
#[derive(Debug)]
pub struct CallWebhook<'a> {
    event: WebhookEvent,
    call: &'a Call,
    call_event: &'a CallEvent,
    tenant: &'a Tenant,
}

impl<'a> CallWebhook<'a> {
    pub fn new(call: &'a Call, call_event: &'a CallEvent, tenant: &'a Tenant) -> Result<Self, NotDeliverable> {
        let event = WebhookEvent::parse(&call_event.kind)
            .ok_or_else(|| NotDeliverable::UnknownEvent(call_event.kind.clone()))?;
        if call_event.call_id != call.id || call.tenant_id != tenant.tenant_id {
            return Err(NotDeliverable::Mismatch);
        }
        Ok(Self { event, call, call_event, tenant })
    }

    /// The `X-Webhook-Event` value.
    pub fn event(&self) -> WebhookEvent {
        self.event
    }

    /// The `X-Call-ID` value.
    pub fn call_id(&self) -> &str {
        &self.call.id
    }

    /// The body's `event_id` and the `webhook-id`: the same on every retry and replay,
    /// so a CRM processes an event once.
    pub fn event_id(&self) -> &str {
        &self.call_event.id
    }

    /// The status this event reports. A status update carries its own, so a late,
    /// retried or replayed delivery still says what happened then (`ringing`), not where
    /// the call is now (`completed`); the other call fields are the call as it stands.
    pub fn status(&self) -> CallStatus {
        match self.event {
            WebhookEvent::StatusUpdate => self.call_event.status.unwrap_or(self.call.status),
            WebhookEvent::RecordingAvailable | WebhookEvent::SupervisorAction => self.call.status,
        }
    }

    /// The body's `event_type`, in seed 003's callback vocabulary:
    ///
    /// | event / status                 | `event_type`               |
    /// |--------------------------------|----------------------------|
    /// | queued, initiated, ringing     | `call_started`             |
    /// | in-progress                    | `call_answered`            |
    /// | completed                      | `call_completed`           |
    /// | busy                           | `call_busy`                |
    /// | no-answer                      | `call_no_answer`           |
    /// | failed, canceled               | `call_failed`              |
    /// | `call.recording_available`     | `call_recording_available` |
    /// | `call.supervisor_action`       | `call_supervisor_action`   |
    ///
    /// Seed 003 has no name for the steps before an answer, so all three are "initiation"
    /// (`call.status` tells them apart). `canceled` is a call hung up before it
    /// connected: it did not complete, and seed 003's receivers route `call_failed` to
    /// their not-connected handling. `call_timeout` is never sent: a ring timeout is
    /// reported by carriers as no-answer. `call_recording_available` and
    /// `call_supervisor_action` are not in seed 003; they follow its `call_<what>` pattern.
    pub fn event_type(&self) -> &'static str {
        match self.event {
            WebhookEvent::RecordingAvailable => return "call_recording_available",
            WebhookEvent::SupervisorAction => return "call_supervisor_action",
            WebhookEvent::StatusUpdate => {}
        }
        match self.status() {
            CallStatus::Queued | CallStatus::Initiated | CallStatus::Ringing => "call_started",
            CallStatus::InProgress => "call_answered",
            CallStatus::Completed => "call_completed",
            CallStatus::Busy => "call_busy",
            CallStatus::NoAnswer => "call_no_answer",
            CallStatus::Failed | CallStatus::Canceled => "call_failed",
        }
    }

    /// The exact body bytes. Signatures are computed over these, so serialize once and
    /// send and sign the same bytes (compact JSON, UTF-8 as seed 003's receiver needs).
    pub fn render(&self) -> Vec<u8> {
        let call = self.call;
        let body = Body {
            event: self.event.as_str(),
            event_type: self.event_type(),
            event_id: self.event_id(),
            call: CallBody {
                id: &call.id,
                call_sid: call.provider_call_sid.as_deref(),
                status: self.status(),
                direction: call.direction,
                from_number: &call.from_number,
                to_number: &call.to_number,
                caller_name: call.caller_name.as_deref(),
                duration_seconds: call.duration_seconds,
                started_at: call.started_at,
                ended_at: call.ended_at,
                recording_url: None,
                transcript: call.transcript.as_deref(),
                agent: call.agent.as_ref().map(|a| AgentBody { id: &a.id, name: &a.full_name }),
                department: call.department.as_deref(),
                metadata: &call.metadata,
            },
            business: BusinessBody { id: &self.tenant.tenant_id, name: &self.tenant.name },
            timestamp: self.call_event.occurred_at,
            // What the supervisor did (action, who); other events' details are internal.
            detail: (self.event == WebhookEvent::SupervisorAction).then_some(&self.call_event.detail),
        };
        serde_json::to_vec(&body).expect("a body of strings, numbers and JSON values serializes")
    }
}

#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    event_type: &'static str,
    event_id: &'a str,
    call: CallBody<'a>,
    business: BusinessBody<'a>,
    #[serde(with = "ts")]
    timestamp: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct CallBody<'a> {
    id: &'a str,
    call_sid: Option<&'a str>,
    status: CallStatus,
    direction: Direction,
    from_number: &'a Address,
    to_number: &'a Address,
    caller_name: Option<&'a str>,
    duration_seconds: Option<u32>,
    #[serde(with = "ts")]
    started_at: DateTime<Utc>,
    #[serde(with = "ts::option")]
    ended_at: Option<DateTime<Utc>>,
    /// Always null: recordings leave S3 only as audited signed URLs from
    /// `api-calls-recording`, never inside a webhook.
    recording_url: Option<&'a str>,
    transcript: Option<&'a str>,
    agent: Option<AgentBody<'a>>,
    department: Option<&'a str>,
    metadata: &'a serde_json::Map<String, serde_json::Value>,
}

/// Seed 004's webhook names the agent `name` (the API's call views say `full_name`).
#[derive(Serialize)]
struct AgentBody<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct BusinessBody<'a> {
    id: &'a TenantId,
    name: &'a str,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::calls::model::AgentRef;

    const TENANT: &str = "5b0f6c8e-2d4a-4f51-9a7e-1c3b5d7f9a20";
    const CALL: &str = "0b8e5d2c-6f1a-4c3e-9d7b-2a4f6e8c0b13";

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 10, 20, h, m, s).unwrap()
    }

    fn tenant() -> Tenant {
        Tenant { tenant_id: TenantId::parse(TENANT).unwrap(), name: "Your Business".into(), created_at: at(9, 0, 0) }
    }

    fn completed_call() -> Call {
        Call {
            id: CALL.into(),
            tenant_id: TenantId::parse(TENANT).unwrap(),
            provider: "twilio".into(),
            provider_call_sid: Some("CA0123456789abcdef0123456789abcdef".into()),
            direction: Direction::Inbound,
            from_number: Address::parse("+14155550100").unwrap(),
            to_number: Address::parse("+14155550199").unwrap(),
            caller_name: Some("John Doe".into()),
            status: CallStatus::Completed,
            duration_seconds: Some(180),
            recording: None,
            transcript: None,
            started_at: at(10, 0, 0),
            answered_at: Some(at(10, 0, 5)),
            ended_at: Some(at(10, 3, 0)),
            agent: Some(AgentRef { id: "agent-7".into(), full_name: "Agent Name".into(), email: None }),
            department: Some("sales".into()),
            consent: None,
            metadata: serde_json::Map::from_iter([("crm_id".to_owned(), json!("external_id_123"))]),
        }
    }

    fn event(kind: &str, status: Option<CallStatus>, occurred_at: DateTime<Utc>) -> CallEvent {
        CallEvent {
            id: "01920f3c-7a2b-7c4d-8e5f-6a7b8c9d0e1f".into(),
            call_id: CALL.into(),
            kind: kind.into(),
            status,
            occurred_at,
            source: "twilio".into(),
            detail: serde_json::Map::new(),
        }
    }

    #[test]
    fn a_status_update_renders_seed_004s_body_with_seed_003s_event_type() {
        let (call, tenant) = (completed_call(), tenant());
        let completed = event("call.status_update", Some(CallStatus::Completed), at(10, 3, 0));
        let webhook = CallWebhook::new(&call, &completed, &tenant).unwrap();
        assert_eq!(webhook.event().as_str(), "call.status_update");
        assert_eq!(webhook.call_id(), CALL);

        let body: serde_json::Value = serde_json::from_slice(&webhook.render()).unwrap();
        assert_eq!(body, json!({
            "event": "call.status_update",
            "event_type": "call_completed",
            "event_id": "01920f3c-7a2b-7c4d-8e5f-6a7b8c9d0e1f",
            "call": {
                "id": CALL,
                "call_sid": "CA0123456789abcdef0123456789abcdef",
                "status": "completed",
                "direction": "inbound",
                "from_number": "+14155550100",
                "to_number": "+14155550199",
                "caller_name": "John Doe",
                "duration_seconds": 180,
                "started_at": "2025-10-20T10:00:00Z",
                "ended_at": "2025-10-20T10:03:00Z",
                "recording_url": null,
                "transcript": null,
                "agent": {"id": "agent-7", "name": "Agent Name"},
                "department": "sales",
                "metadata": {"crm_id": "external_id_123"}
            },
            "business": {"id": TENANT, "name": "Your Business"},
            "timestamp": "2025-10-20T10:03:00Z"
        }));
    }

    #[test]
    fn every_status_maps_to_a_seed_003_event_type() {
        use CallStatus::*;
        let (call, tenant) = (completed_call(), tenant());
        let expected = [
            (Queued, "call_started"),
            (Initiated, "call_started"),
            (Ringing, "call_started"),
            (InProgress, "call_answered"),
            (Completed, "call_completed"),
            (Busy, "call_busy"),
            (NoAnswer, "call_no_answer"),
            (Failed, "call_failed"),
            (Canceled, "call_failed"),
        ];
        assert_eq!(expected.len(), CallStatus::ALL.len());
        for (status, name) in expected {
            let update = event("call.status_update", Some(status), at(10, 0, 0));
            assert_eq!(CallWebhook::new(&call, &update, &tenant).unwrap().event_type(), name, "{status:?}");
        }
    }

    #[test]
    fn a_late_delivery_reports_the_events_status_not_the_calls_current_one() {
        let (call, tenant) = (completed_call(), tenant());
        let ringing = event("call.status_update", Some(CallStatus::Ringing), at(10, 0, 1));
        let body: serde_json::Value =
            serde_json::from_slice(&CallWebhook::new(&call, &ringing, &tenant).unwrap().render()).unwrap();
        assert_eq!(body["call"]["status"], "ringing");
        assert_eq!(body["event_type"], "call_started");
        assert_eq!(body["timestamp"], "2025-10-20T10:00:01Z");
    }

    #[test]
    fn a_recording_event_has_its_own_event_and_type_and_still_no_url() {
        let (call, tenant) = (completed_call(), tenant());
        let recorded = event("call.recording_available", None, at(10, 4, 0));
        let webhook = CallWebhook::new(&call, &recorded, &tenant).unwrap();
        assert_eq!(webhook.event().as_str(), "call.recording_available");
        let body: serde_json::Value = serde_json::from_slice(&webhook.render()).unwrap();
        assert_eq!(body["event"], "call.recording_available");
        assert_eq!(body["event_type"], "call_recording_available");
        assert_eq!(body["call"]["status"], "completed");
        assert_eq!(body["call"]["recording_url"], serde_json::Value::Null);
    }

    #[test]
    fn a_supervisor_action_carries_what_was_done_and_by_whom() {
        let (call, tenant) = (completed_call(), tenant());
        let mut action = event("call.supervisor_action", None, at(10, 1, 0));
        action.detail = serde_json::Map::from_iter([
            ("action".to_owned(), json!("whisper")),
            ("supervisor".to_owned(), json!("+1415***0199")),
        ]);
        let body: serde_json::Value =
            serde_json::from_slice(&CallWebhook::new(&call, &action, &tenant).unwrap().render()).unwrap();
        assert_eq!((body["event"].as_str(), body["event_type"].as_str()), (Some("call.supervisor_action"), Some("call_supervisor_action")));
        assert_eq!(body["detail"], json!({"action": "whisper", "supervisor": "+1415***0199"}));
        // Other events keep their details (sequence numbers, …) to themselves.
        let mut update = event("call.status_update", Some(CallStatus::Completed), at(10, 3, 0));
        update.detail.insert("sequence_number".into(), json!(3));
        let body: serde_json::Value =
            serde_json::from_slice(&CallWebhook::new(&call, &update, &tenant).unwrap().render()).unwrap();
        assert!(body.get("detail").is_none());
    }

    #[test]
    fn unknown_events_and_mismatched_call_or_tenant_are_refused() {
        let (call, tenant) = (completed_call(), tenant());
        let note = event("call.note_added", None, at(10, 0, 0));
        assert_eq!(
            CallWebhook::new(&call, &note, &tenant).unwrap_err(),
            NotDeliverable::UnknownEvent("call.note_added".into())
        );

        let mut other_call = event("call.status_update", Some(CallStatus::Ringing), at(10, 0, 0));
        other_call.call_id = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f".into();
        assert_eq!(CallWebhook::new(&call, &other_call, &tenant).unwrap_err(), NotDeliverable::Mismatch);

        let other_tenant = Tenant { tenant_id: TenantId::generate(), ..tenant.clone() };
        let update = event("call.status_update", Some(CallStatus::Ringing), at(10, 0, 0));
        assert_eq!(CallWebhook::new(&call, &update, &other_tenant).unwrap_err(), NotDeliverable::Mismatch);
    }
}
