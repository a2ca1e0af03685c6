//! The call record and its timeline, as stored and as CRMs see them (seed 004).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::{phone::Address, tenants::TenantId};

/// A call's lifecycle, in Twilio's vocabulary (every provider adapter maps onto it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    pub const ALL: [CallStatus; 9] = [
        CallStatus::Queued,
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::Failed,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Initiated => "initiated",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 4
    }

    /// Position in the lifecycle; a call only ever moves to a higher rank, and every
    /// terminal status shares the top rank so none can replace another.
    pub fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Initiated => 1,
            CallStatus::Ringing => 2,
            CallStatus::InProgress => 3,
            _ => 4,
        }
    }

    pub fn can_move_to(self, next: CallStatus) -> bool {
        next.rank() > self.rank()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// The agent as embedded in a call (denormalised at assignment, so listing calls needs
/// no second read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRef {
    pub id: String,
    pub full_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Granted,
    Declined,
    Withdrawn,
    NotRequired,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consent {
    pub status: ConsentStatus,
    #[serde(with = "ts")]
    pub recorded_at: DateTime<Utc>,
    /// How it was captured: `ivr-prompt`, `agent`, `crm`…
    pub method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordingStatus {
    Pending,
    Available,
    Absent,
    Failed,
}

/// Where the call's recording stands. The audio itself lives only in S3 and leaves it
/// only through a signed URL from `api-calls-recording`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingRef {
    pub status: RecordingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// The provider's error code when the recording is `absent` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Where the audio is in the recordings bucket; internal, never shown to CRMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<DateTime<Utc>>,
}

impl RecordingRef {
    pub fn with_status(status: RecordingStatus) -> Self {
        Self {
            status,
            recording_sid: None,
            duration_seconds: None,
            error_code: None,
            object_key: None,
            content_type: None,
            size_bytes: None,
            stored_at: None,
        }
    }
}

/// A recording as CRMs see it: its state, never where it is stored.
#[derive(Debug, Serialize)]
pub struct RecordingView<'a> {
    pub status: RecordingStatus,
    pub recording_sid: Option<&'a str>,
    pub duration_seconds: Option<u32>,
    pub error_code: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub size_bytes: Option<u64>,
    #[serde(with = "ts::option")]
    pub stored_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: String,
    pub tenant_id: TenantId,
    /// `twilio`, `exotel`, `vonage`, …
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_call_sid: Option<String>,
    pub direction: Direction,
    pub from_number: Address,
    pub to_number: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_name: Option<String>,
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    #[serde(with = "ts")]
    pub started_at: DateTime<Utc>,
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(default, with = "ts::option", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A call as a CRM sees it: seed 004's list fields (`twilio_call_sid`, `recording_url`)
/// plus the provider-neutral ones.
#[derive(Debug, Serialize)]
pub struct CallView<'a> {
    pub id: &'a str,
    pub provider: &'a str,
    pub provider_call_sid: Option<&'a str>,
    pub twilio_call_sid: Option<&'a str>,
    pub direction: Direction,
    pub from_number: &'a Address,
    pub to_number: &'a Address,
    pub caller_name: Option<&'a str>,
    pub status: CallStatus,
    pub duration_seconds: Option<u32>,
    /// Recordings are served only as audited, short-lived signed URLs from
    /// `api-calls-recording`; a list never embeds one.
    pub recording_url: Option<&'a str>,
    pub recording: Option<RecordingView<'a>>,
    pub transcript: Option<&'a str>,
    #[serde(with = "ts")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "ts::option")]
    pub answered_at: Option<DateTime<Utc>>,
    #[serde(with = "ts::option")]
    pub ended_at: Option<DateTime<Utc>>,
    pub agent: Option<&'a AgentRef>,
    pub department: Option<&'a str>,
    pub metadata: &'a serde_json::Map<String, serde_json::Value>,
}

impl Call {
    pub fn view(&self) -> CallView<'_> {
        CallView {
            id: &self.id,
            provider: &self.provider,
            provider_call_sid: self.provider_call_sid.as_deref(),
            twilio_call_sid: self.provider_call_sid.as_deref().filter(|_| self.provider == "twilio"),
            direction: self.direction,
            from_number: &self.from_number,
            to_number: &self.to_number,
            caller_name: self.caller_name.as_deref(),
            status: self.status,
            duration_seconds: self.duration_seconds,
            recording_url: None,
            recording: self.recording.as_ref().map(|r| RecordingView {
                status: r.status,
                recording_sid: r.recording_sid.as_deref(),
                duration_seconds: r.duration_seconds,
                error_code: r.error_code.as_deref(),
                content_type: r.content_type.as_deref(),
                size_bytes: r.size_bytes,
                stored_at: r.stored_at,
            }),
            transcript: self.transcript.as_deref(),
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at: self.ended_at,
            agent: self.agent.as_ref(),
            department: self.department.as_deref(),
            metadata: &self.metadata,
        }
    }
}

/// The call's Twilio conference as its status callbacks reported it. Stored as flat
/// attributes of the call item but kept out of `Call`, so the CRM never sees it; read it
/// with `CallStore::get_with_conference`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConferenceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference_name: Option<String>,
    /// The customer's participant; absent once it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_call_sid: Option<String>,
    /// The agent's participant; absent until it joins and once it left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_call_sid: Option<String>,
    /// Set by `conference-end`: that conference is over whatever arrives after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_conference_sid: Option<String>,
}

impl ConferenceRef {
    /// The conference's SID while it runs with the customer in it. The customer joins with
    /// `endConferenceOnExit`, so without the customer there is no conference to act on.
    pub fn live_sid(&self) -> Option<&str> {
        let sid = self.conference_sid.as_deref()?;
        (self.ended_conference_sid.as_deref() != Some(sid) && self.customer_call_sid.is_some()).then_some(sid)
    }
}

/// A conference participant Switchboard places, by its `participantLabel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceLeg {
    Customer,
    Agent,
}

impl ConferenceLeg {
    pub fn label(self) -> &'static str {
        match self {
            ConferenceLeg::Customer => "customer",
            ConferenceLeg::Agent => "agent",
        }
    }

    pub fn from_label(label: &str) -> Option<Self> {
        [ConferenceLeg::Customer, ConferenceLeg::Agent].into_iter().find(|leg| leg.label() == label)
    }
}

/// What one conference status callback changes on the customer's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceReport {
    pub conference_sid: String,
    pub conference_name: String,
    /// Twilio's `SequenceNumber`: orders one conference's callbacks, which may arrive in
    /// any order.
    pub sequence: Option<u32>,
    pub change: ConferenceChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConferenceChange {
    Started,
    Ended,
    Joined { leg: ConferenceLeg, call_sid: String },
    Left { leg: ConferenceLeg, call_sid: String },
}

/// One entry of a call's timeline. Append-only; ordered by `occurred_at` then `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    /// UUIDv7: unique and time-ordered; CRMs deduplicate deliveries by it.
    pub id: String,
    pub call_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CallStatus>,
    #[serde(with = "ts")]
    pub occurred_at: DateTime<Utc>,
    /// Who reported it: `twilio`, `api`, `operator`, `demo`…
    pub source: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Timestamps as RFC 3339 UTC, fractional seconds only when present (`…T10:00:00Z`).
pub mod ts {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Millisecond precision at most: what the store's sort keys keep.
    pub fn format(t: &DateTime<Utc>) -> String {
        use chrono::SubsecRound;
        t.trunc_subsecs(3).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&format(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|raw| DateTime::parse_from_rfc3339(&raw).map(|t| t.with_timezone(&Utc)))
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_are_final_and_the_lifecycle_only_moves_forward() {
        use CallStatus::*;
        assert!(Ringing.can_move_to(InProgress));
        assert!(Queued.can_move_to(Completed));
        assert!(!InProgress.can_move_to(Ringing));
        assert!(!Ringing.can_move_to(Ringing));
        for terminal in [Completed, Busy, Failed, NoAnswer, Canceled] {
            assert!(terminal.is_terminal());
            for next in CallStatus::ALL {
                assert!(!terminal.can_move_to(next), "{terminal:?} -> {next:?}");
            }
        }
    }

    #[test]
    fn statuses_use_twilio_names() {
        for s in CallStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(CallStatus::parse(s.as_str()), Some(s));
        }
    }
}
