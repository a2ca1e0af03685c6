//! The call state machine as providers drive it.
//!
//! A provider report becomes one conditional transaction: the call is created if absent
//! (a report may overtake the one that should have created it) and moves to the new
//! status only if that status ranks higher, and one timeline event is appended with it.
//! Duplicates and late reports fail the condition and change nothing; terminal statuses
//! are final. No read precedes the write, so concurrent deliveries cannot race.

use chrono::{DateTime, Utc};

use super::model::{CallStatus, Direction};
use crate::{phone::Address, tenants::TenantId};

/// Call ids of provider-originated calls are derived from the provider's own id, so
/// every report about a call lands on the same item without a lookup.
pub fn call_id_for(provider: &str, account: &str, provider_call_sid: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6a1f_3c52_0d7e_4b9a_8c21_5b0c_2d3e_4f50);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{provider}/{account}/{provider_call_sid}").as_bytes()).to_string()
}

/// The id of the timeline event a report produces: the same report delivered twice
/// yields the same id, which the event's put condition refuses the second time.
pub fn event_id_for(call_id: &str, status: CallStatus) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2b7e_151c_9d4f_4e1a_a3c5_77e0_1f2a_6b3c);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{call_id}/{}", status.as_str()).as_bytes()).to_string()
}

/// A provider's report of a call's status, normalised.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub tenant_id: TenantId,
    pub provider: &'static str,
    pub account: String,
    pub provider_call_sid: String,
    pub status: CallStatus,
    /// When the provider says it happened.
    pub occurred_at: DateTime<Utc>,
    pub direction: Direction,
    pub from: Address,
    pub to: Address,
    pub caller_name: Option<String>,
    /// Talk time, reported with the terminal status.
    pub duration_seconds: Option<u32>,
    /// The provider's ordering hint (Twilio's SequenceNumber), kept on the event.
    pub sequence: Option<u32>,
}

impl StatusReport {
    pub fn call_id(&self) -> String {
        call_id_for(self.provider, &self.account, &self.provider_call_sid)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The call moved to the reported status; one event was appended.
    Changed { call_id: String, event_id: String },
    /// A duplicate, or a report older than the call's current status: nothing changed.
    Unchanged { call_id: String },
}
