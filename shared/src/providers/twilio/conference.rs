//! Twilio's conference status callbacks (`/conference`): where the customer's call stands
//! in its conference — the conference's SID, and which participant is the customer and
//! which the agent — so that supervisors can act on the live call (`supervision`).
//!
//! Routing names each conference `<department>-<call id>` and labels its participants
//! `customer` and `agent` (`departments::route_inbound`), so every callback names the
//! call it is about without a lookup. Callbacks arrive more than once and in any order;
//! the store applies each only if it is news (`CallStore::set_conference`).

use super::webhook::Verified;
use crate::{
    AppContext,
    calls::model::{ConferenceChange, ConferenceLeg, ConferenceReport},
    edge::ApiError,
};

/// Records one conference callback on the customer's call. Events Switchboard does not
/// track (mute, hold, speech…), participants it did not label and conferences it did not
/// name are acknowledged and ignored.
pub async fn on_conference(ctx: &AppContext, webhook: &Verified) -> Result<(), ApiError> {
    let Some((call_id, report)) = conference_report(|name| webhook.param(name))? else {
        return Ok(());
    };
    let changed = ctx.calls.set_conference(&webhook.account.tenant_id, &call_id, &report).await?;
    if !changed {
        tracing::debug!(call_id = %call_id, conference_sid = %report.conference_sid, "conference callback changed nothing");
    }
    Ok(())
}

/// A conference callback's parameters (`param` reads one by Twilio's name) as the call it
/// concerns and what changes on it; `None` when it concerns nothing Switchboard tracks.
pub fn conference_report<'a>(
    param: impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<(String, ConferenceReport)>, ApiError> {
    let required =
        |name: &'static str| param(name).ok_or_else(|| ApiError::invalid(name, format!("{name} is required")));
    let event = required("StatusCallbackEvent")?;
    let leg_event = matches!(event, "participant-join" | "participant-leave");
    if !(leg_event || matches!(event, "conference-start" | "conference-end")) {
        return Ok(None);
    }
    let conference_sid = required("ConferenceSid")?;
    if !is_sid("CF", conference_sid) {
        return Err(ApiError::invalid("ConferenceSid", "ConferenceSid must be CF followed by 32 hex digits"));
    }
    let conference_name = required("FriendlyName")?;
    let Some(call_id) = call_id_of(conference_name) else {
        return Ok(None);
    };
    let sequence = param("SequenceNumber")
        .map(|n| {
            n.parse::<u32>()
                .map_err(|_| ApiError::invalid("SequenceNumber", "SequenceNumber must be a non-negative integer"))
        })
        .transpose()?;
    let change = match event {
        "conference-start" => ConferenceChange::Started,
        "conference-end" => ConferenceChange::Ended,
        _ => {
            let Some(leg) = param("ParticipantLabel").and_then(ConferenceLeg::from_label) else {
                return Ok(None);
            };
            let call_sid = required("CallSid")?;
            if !is_sid("CA", call_sid) {
                return Err(ApiError::invalid("CallSid", "CallSid must be CA followed by 32 hex digits"));
            }
            let call_sid = call_sid.to_owned();
            if event == "participant-join" {
                ConferenceChange::Joined { leg, call_sid }
            } else {
                ConferenceChange::Left { leg, call_sid }
            }
        }
    };
    let report = ConferenceReport {
        conference_sid: conference_sid.to_owned(),
        conference_name: conference_name.to_owned(),
        sequence,
        change,
    };
    Ok(Some((call_id, report)))
}

/// The call id a conference name ends with (`<department>-<call id>`), if it has one.
fn call_id_of(conference_name: &str) -> Option<String> {
    let tail = conference_name.get(conference_name.len().checked_sub(36)?..)?;
    uuid::Uuid::parse_str(tail).ok().map(|id| id.to_string())
}

fn is_sid(prefix: &str, raw: &str) -> bool {
    raw.len() == 34 && raw.starts_with(prefix) && raw[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const CF: &str = "CF0123456789abcdef0123456789abcdef";
    const CA: &str = "CA0123456789abcdef0123456789abcdef";
    const CALL: &str = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

    fn report(pairs: &[(&str, &str)]) -> Result<Option<(String, ConferenceReport)>, ApiError> {
        let mut params: HashMap<&str, &str> =
            HashMap::from([("ConferenceSid", CF), ("FriendlyName", "sales-6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f")]);
        params.extend(pairs.iter().copied());
        conference_report(|name| params.get(name).copied())
    }

    fn field(error: ApiError) -> String {
        match error {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn participant_events_name_the_leg_by_its_label() {
        let (call_id, joined) = report(&[
            ("StatusCallbackEvent", "participant-join"),
            ("ParticipantLabel", "agent"),
            ("CallSid", CA),
            ("SequenceNumber", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(call_id, CALL);
        assert_eq!(joined.conference_sid, CF);
        assert_eq!(joined.conference_name, format!("sales-{CALL}"));
        assert_eq!(joined.sequence, Some(3));
        assert_eq!(joined.change, ConferenceChange::Joined { leg: ConferenceLeg::Agent, call_sid: CA.into() });

        let (_, left) =
            report(&[("StatusCallbackEvent", "participant-leave"), ("ParticipantLabel", "customer"), ("CallSid", CA)])
                .unwrap()
                .unwrap();
        assert_eq!(
            (left.sequence, left.change),
            (None, ConferenceChange::Left { leg: ConferenceLeg::Customer, call_sid: CA.into() })
        );
    }

    #[test]
    fn conference_start_and_end_need_no_participant() {
        let (_, start) = report(&[("StatusCallbackEvent", "conference-start")]).unwrap().unwrap();
        assert_eq!(start.change, ConferenceChange::Started);
        let (_, end) = report(&[("StatusCallbackEvent", "conference-end"), ("SequenceNumber", "9")]).unwrap().unwrap();
        assert_eq!(end.change, ConferenceChange::Ended);
    }

    #[test]
    fn what_switchboard_does_not_track_is_acknowledged() {
        for pairs in [
            vec![("StatusCallbackEvent", "participant-mute"), ("ParticipantLabel", "agent"), ("CallSid", CA)],
            vec![("StatusCallbackEvent", "announcement-end")],
            vec![("StatusCallbackEvent", "participant-join"), ("ParticipantLabel", "supervisor"), ("CallSid", CA)],
            vec![("StatusCallbackEvent", "participant-join"), ("CallSid", CA)],
            vec![("StatusCallbackEvent", "conference-start"), ("FriendlyName", "someone-elses-room")],
            vec![("StatusCallbackEvent", "conference-start"), ("FriendlyName", "ü")],
        ] {
            assert!(report(&pairs).unwrap().is_none(), "{pairs:?}");
        }
    }

    #[test]
    fn malformed_callbacks_name_the_field() {
        assert_eq!(field(report(&[]).unwrap_err()), "StatusCallbackEvent");
        let bad_conference = [("StatusCallbackEvent", "conference-start"), ("ConferenceSid", "CF123")];
        assert_eq!(field(report(&bad_conference).unwrap_err()), "ConferenceSid");
        let bad_call =
            [("StatusCallbackEvent", "participant-join"), ("ParticipantLabel", "agent"), ("CallSid", "CA/../x")];
        assert_eq!(field(report(&bad_call).unwrap_err()), "CallSid");
        let no_call = [("StatusCallbackEvent", "participant-leave"), ("ParticipantLabel", "agent")];
        assert_eq!(field(report(&no_call).unwrap_err()), "CallSid");
        let bad_sequence = [("StatusCallbackEvent", "conference-end"), ("SequenceNumber", "-1")];
        assert_eq!(field(report(&bad_sequence).unwrap_err()), "SequenceNumber");
    }
}
