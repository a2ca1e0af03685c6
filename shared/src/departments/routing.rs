//! What an inbound call to a department gets, decided without I/O so the voice webhook
//! only loads the department, places the agent leg and answers the TwiML.
//!
//! An open department puts the caller in a conference of its own, waiting (music, or a
//! spoken hold) until the agent's leg joins; the wait URL measures the wait and hands the
//! caller to the after-hours action once `max_wait_time` has passed.

use chrono::{DateTime, Utc};

use super::{AfterHours, Department};
use crate::{
    phone::E164,
    providers::twilio::{
        client::{CallInstructions, CreateCall, Endpoint, StatusCallbackEvent},
        twiml::{Beep, Conference, ConferenceEvent, Dial, Noun, Play, Record, RecordingEvent, Redirect, Response, Say},
    },
};

const NOT_IN_SERVICE: &str = "This number is not in service.";
const HOLD_MESSAGE: &str = "Please stay on the line. The next available agent will be with you shortly.";
/// Longest an agent's phone rings: past this a phone's own voicemail may answer and
/// join the caller's conference.
const AGENT_RING_SECS: u32 = 30;
/// Without music, how often the wait is measured again (at most this late).
const HOLD_CHECK_SECS: i64 = 20;
const VOICEMAIL_MAX_SECS: u32 = 120;

/// Absolute URLs of our Twilio webhook endpoints, as the caller deploys them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrls {
    /// Call status callback; the agent leg reports here.
    pub status: String,
    /// Recording status callback; voicemails report here.
    pub recording: String,
    /// Conference status callback (start, end, join, leave).
    pub conference: String,
    /// The hold loop served by [`wait_twiml`]; `queue_id` and `since` are appended.
    pub wait: String,
    /// Where `<Record>` goes once a voicemail is left; it must answer with a hang-up.
    /// Without it Twilio re-requests the voice URL, which would prompt for a message again.
    pub voicemail_done: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRoute {
    /// The answer to the voice webhook.
    pub twiml: String,
    /// The caller waits in the department's conference: queue the call for an agent.
    pub queued: bool,
}

/// The agent's call into the caller's conference, placed with Twilio's REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLeg {
    pub to: Endpoint,
    /// The department's number, so the agent sees which line is calling.
    pub from: E164,
    pub twiml: String,
    pub timeout_secs: u32,
    pub status_callback: String,
}

impl AgentLeg {
    pub fn create_call(&self) -> CreateCall {
        CreateCall {
            status_callback: Some(self.status_callback.clone()),
            status_callback_events: StatusCallbackEvent::ALL.to_vec(),
            timeout_secs: Some(self.timeout_secs),
            ..CreateCall::new(self.to.clone(), self.from.clone(), CallInstructions::Twiml(self.twiml.clone()))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitDecision {
    /// The answer to the wait request: music or a spoken hold, then back to the wait URL.
    Hold(String),
    /// The caller has waited `max_wait_time`. A wait URL may only Say, Play, Pause and
    /// Redirect (Twilio error 13238), so this TwiML must reach the caller's call by a REST
    /// update (`CallUpdate::Redirect`), which also takes it out of the conference.
    Expired(String),
}

/// Routes a call to the department owning the dialled number (`None` when no department
/// has it). `call_id` is ours, never a phone number: it names the conference room.
pub fn route_inbound(
    department: Option<&Department>,
    call_id: &str,
    now: DateTime<Utc>,
    urls: &WebhookUrls,
) -> InboundRoute {
    let Some(department) = department.filter(|d| d.enabled) else {
        return InboundRoute { twiml: Response::new().say(Say::new(NOT_IN_SERVICE)).hangup().to_xml(), queued: false };
    };
    if !department.is_open(now) {
        return InboundRoute { twiml: after_hours_twiml(department, urls), queued: false };
    }
    // Always our wait URL, even with music: it plays the music and enforces the wait.
    let customer = Conference {
        start_conference_on_enter: Some(false),
        end_conference_on_exit: Some(true),
        wait_url: Some(wait_url(urls, department, now.timestamp())),
        beep: Some(Beep::Never),
        status_callback: Some(urls.conference.clone()),
        status_callback_event: vec![
            ConferenceEvent::Start,
            ConferenceEvent::End,
            ConferenceEvent::Join,
            ConferenceEvent::Leave,
        ],
        participant_label: Some("customer".into()),
        ..Conference::new(room_name(department, call_id))
    };
    InboundRoute { twiml: Response::new().dial(Dial::new(Noun::Conference(customer))).to_xml(), queued: true }
}

/// The conference a department's caller waits in; `call_id` is ours, never a number.
pub fn room_name(department: &Department, call_id: &str) -> String {
    format!("{}-{call_id}", department.name)
}

/// The call that brings an agent (`to`) into the caller's conference. The agent's leg
/// starts the conference (the caller's hold music stops) and ends it on hanging up.
pub fn agent_leg(department: &Department, call_id: &str, to: Endpoint, status_callback: String) -> AgentLeg {
    let agent = Conference {
        start_conference_on_enter: Some(true),
        end_conference_on_exit: Some(true),
        beep: Some(Beep::Never),
        participant_label: Some("agent".into()),
        ..Conference::new(room_name(department, call_id))
    };
    AgentLeg {
        to,
        from: department.phone_number.clone(),
        twiml: Response::new().dial(Dial::new(Noun::Conference(agent))).to_xml(),
        timeout_secs: department.max_wait_time.min(AGENT_RING_SECS),
        status_callback,
    }
}

/// Answers the conference wait URL; `since` is the epoch second routing put in it.
pub fn wait_twiml(department: &Department, since: i64, now: DateTime<Utc>, urls: &WebhookUrls) -> WaitDecision {
    let remaining = i64::from(department.max_wait_time) - (now.timestamp() - since);
    if remaining <= 0 {
        return WaitDecision::Expired(after_hours_twiml(department, urls));
    }
    WaitDecision::Hold(hold_twiml(department, since, remaining, urls))
}

/// Hold music (or a spoken hold with a pause of at most `remaining` seconds), then back
/// to the wait URL with the wait's original start.
pub fn hold_twiml(department: &Department, since: i64, remaining: i64, urls: &WebhookUrls) -> String {
    // The wait is measured again when the music (or the pause) ends.
    let hold = match &department.music_url {
        Some(music) => Response::new().play(Play::new(music)),
        None => Response::new().say(Say::new(HOLD_MESSAGE)).pause(remaining.clamp(1, HOLD_CHECK_SECS) as u32),
    };
    hold.redirect(Redirect::new(wait_url(urls, department, since))).to_xml()
}

/// The after-hours action, also what a caller gets after waiting too long, so its words
/// fit both: "no one is available", not "we are closed".
pub fn after_hours_twiml(department: &Department, urls: &WebhookUrls) -> String {
    let greeting =
        format!("Thank you for calling {}. No one is available to take your call right now.", department.display_name);
    match (department.after_hours_action, &department.after_hours_forward_to) {
        (AfterHours::Forward, Some(to)) => Response::new().dial(Dial::new(Noun::Number(to.clone()))),
        (AfterHours::Voicemail, _) => Response::new()
            .say(Say::new(format!("{greeting} Please leave a message after the beep.")))
            .record(Record {
                action: Some(urls.voicemail_done.clone()),
                max_length: Some(VOICEMAIL_MAX_SECS),
                play_beep: Some(true),
                recording_status_callback: Some(urls.recording.clone()),
                recording_status_callback_event: vec![RecordingEvent::Completed, RecordingEvent::Absent],
                ..Record::default()
            })
            // Reached only when the caller leaves no message (Twilio skips `action` then).
            .hangup(),
        // Forward without a number cannot be stored; hanging up is the safe reading.
        (AfterHours::Hangup | AfterHours::Forward, _) => {
            Response::new().say(Say::new(format!("{greeting} Please call again later."))).hangup()
        }
    }
    .to_xml()
}

fn wait_url(urls: &WebhookUrls, department: &Department, since: i64) -> String {
    let separator = if urls.wait.contains('?') { '&' } else { '?' };
    format!("{}{separator}queue_id={}&since={since}", urls.wait, department.queue_id)
}

#[cfg(test)]
mod tests {
    use chrono_tz::America::New_York;

    use super::*;
    use crate::departments::tests::{department, utc};

    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
    const QUEUE: &str = "0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30";

    fn urls() -> WebhookUrls {
        WebhookUrls {
            status: "https://hooks.example.com/twilio/status".into(),
            recording: "https://hooks.example.com/twilio/recording".into(),
            conference: "https://hooks.example.com/twilio/conference".into(),
            wait: "https://hooks.example.com/twilio/wait".into(),
            voicemail_done: "https://hooks.example.com/twilio/voicemail".into(),
        }
    }

    /// Monday 2025-03-10 10:00 EDT, inside the 09:00–17:00 hours.
    fn open_now() -> DateTime<Utc> {
        utc(2025, 3, 10, 14, 0)
    }

    /// Monday 2025-03-10 20:00 EDT.
    fn closed_now() -> DateTime<Utc> {
        utc(2025, 3, 11, 0, 0)
    }

    /// Every TwiML here must at least be well-formed XML with balanced elements.
    fn assert_well_formed(xml: &str) {
        let body = xml.strip_prefix(HEAD).expect("XML declaration");
        let mut open = Vec::new();
        for tag in body.split('<').skip(1).map(|t| &t[..t.find('>').expect("unclosed tag")]) {
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop(), Some(name), "in {xml}");
            } else if !tag.ends_with('/') {
                open.push(tag.split(' ').next().unwrap());
            }
        }
        assert!(open.is_empty(), "unclosed {open:?} in {xml}");
        assert_eq!(body.matches('"').count() % 2, 0, "unbalanced quotes in {xml}");
    }

    fn route(d: Option<&Department>, now: DateTime<Utc>) -> InboundRoute {
        let route = route_inbound(d, "call-1", now, &urls());
        assert_well_formed(&route.twiml);
        route
    }

    #[test]
    fn unknown_or_disabled_numbers_are_not_in_service() {
        let expected = format!("{HEAD}<Response><Say>This number is not in service.</Say><Hangup/></Response>");
        assert_eq!(route(None, open_now()), InboundRoute { twiml: expected.clone(), queued: false });
        let disabled = Department { enabled: false, ..department(New_York) };
        assert_eq!(route(Some(&disabled), open_now()), InboundRoute { twiml: expected, queued: false });
    }

    #[test]
    fn open_department_holds_the_caller_in_a_conference_and_rings_the_agent() {
        let d = department(New_York);
        let since = open_now().timestamp();
        let route = route(Some(&d), open_now());
        assert_eq!(
            route.twiml,
            format!(
                "{HEAD}<Response><Dial><Conference startConferenceOnEnter=\"false\" endConferenceOnExit=\"true\" \
                 waitUrl=\"https://hooks.example.com/twilio/wait?queue_id={QUEUE}&amp;since={since}\" beep=\"false\" \
                 statusCallback=\"https://hooks.example.com/twilio/conference\" statusCallbackEvent=\"start end join leave\" \
                 participantLabel=\"customer\">support-call-1</Conference></Dial></Response>"
            )
        );
        assert!(route.queued);
        let leg = agent_leg(&d, "call-1", Endpoint::from("+14155550123"), "https://hooks.example.com/twilio/status".into());
        assert_well_formed(&leg.twiml);
        assert_eq!(
            leg,
            AgentLeg {
                to: Endpoint::from("+14155550123"),
                from: d.phone_number.clone(),
                twiml: format!(
                    "{HEAD}<Response><Dial><Conference startConferenceOnEnter=\"true\" endConferenceOnExit=\"true\" \
                     beep=\"false\" participantLabel=\"agent\">support-call-1</Conference></Dial></Response>"
                ),
                timeout_secs: 30,
                status_callback: "https://hooks.example.com/twilio/status".into(),
            }
        );
        let call = leg.create_call();
        assert_eq!(
            (call.to.as_str(), call.from.as_str(), call.timeout_secs),
            ("+14155550123", "+14155550100", Some(30))
        );
        assert_eq!(call.instructions, CallInstructions::Twiml(leg.twiml));
    }

    #[test]
    fn music_is_played_by_our_wait_url_so_the_wait_stays_bounded() {
        let d = Department { music_url: Some("https://cdn.example.com/hold.mp3".into()), ..department(New_York) };
        let route = route(Some(&d), open_now());
        assert!(route.twiml.contains("waitUrl=\"https://hooks.example.com/twilio/wait?queue_id="), "{}", route.twiml);
        assert!(route.queued, "the caller waits for an agent");
    }

    #[test]
    fn wait_url_keeps_an_existing_query() {
        let urls = WebhookUrls { wait: "https://hooks.example.com/twilio/wait?t=abc".into(), ..urls() };
        assert_eq!(
            wait_url(&urls, &department(New_York), 7),
            format!("https://hooks.example.com/twilio/wait?t=abc&queue_id={QUEUE}&since=7")
        );
    }

    #[test]
    fn closed_department_takes_a_voicemail() {
        let route = route(Some(&department(New_York)), closed_now());
        assert_eq!(
            route.twiml,
            format!(
                "{HEAD}<Response><Say>Thank you for calling Customer Support. No one is available to take your call \
                 right now. Please leave a message after the beep.</Say>\
                 <Record action=\"https://hooks.example.com/twilio/voicemail\" maxLength=\"120\" playBeep=\"true\" \
                 recordingStatusCallback=\"https://hooks.example.com/twilio/recording\" \
                 recordingStatusCallbackEvent=\"completed absent\"/><Hangup/></Response>"
            )
        );
        assert!(!route.queued);
    }

    #[test]
    fn closed_department_can_hang_up() {
        let d = Department { after_hours_action: AfterHours::Hangup, ..department(New_York) };
        assert_eq!(
            route(Some(&d), closed_now()),
            InboundRoute {
                twiml: format!(
                    "{HEAD}<Response><Say>Thank you for calling Customer Support. No one is available to take your \
                     call right now. Please call again later.</Say><Hangup/></Response>"
                ),
                queued: false,
            }
        );
    }

    #[test]
    fn closed_department_can_forward() {
        let d = Department {
            after_hours_action: AfterHours::Forward,
            after_hours_forward_to: Some(E164::parse("+14155550199").unwrap()),
            ..department(New_York)
        };
        assert_eq!(
            route(Some(&d), closed_now()).twiml,
            format!("{HEAD}<Response><Dial><Number>+14155550199</Number></Dial></Response>")
        );
    }

    #[test]
    fn display_names_are_escaped_in_speech() {
        let d = Department {
            display_name: "Tom & Jerry's <Shop>".into(),
            after_hours_action: AfterHours::Hangup,
            ..department(New_York)
        };
        let twiml = route(Some(&d), closed_now()).twiml;
        assert!(twiml.contains("Thank you for calling Tom &amp; Jerry&apos;s &lt;Shop&gt;."), "{twiml}");
    }

    #[test]
    fn waiting_caller_hears_music_then_returns_to_the_wait_url() {
        let d = Department { music_url: Some("https://cdn.example.com/hold.mp3".into()), ..department(New_York) };
        let since = open_now().timestamp();
        let decision = wait_twiml(&d, since, open_now() + chrono::Duration::seconds(299), &urls());
        assert_eq!(
            decision,
            WaitDecision::Hold(format!(
                "{HEAD}<Response><Play>https://cdn.example.com/hold.mp3</Play>\
                 <Redirect>https://hooks.example.com/twilio/wait?queue_id={QUEUE}&amp;since={since}</Redirect></Response>"
            ))
        );
    }

    #[test]
    fn without_music_the_hold_pause_ends_when_the_wait_does() {
        let d = department(New_York);
        let since = open_now().timestamp();
        let hold = |waited: i64| match wait_twiml(&d, since, open_now() + chrono::Duration::seconds(waited), &urls()) {
            WaitDecision::Hold(twiml) => twiml,
            expired => panic!("{expired:?}"),
        };
        assert_eq!(
            hold(0),
            format!(
                "{HEAD}<Response><Say>{HOLD_MESSAGE}</Say><Pause length=\"20\"/>\
                 <Redirect>https://hooks.example.com/twilio/wait?queue_id={QUEUE}&amp;since={since}</Redirect></Response>"
            )
        );
        assert!(hold(295).contains("<Pause length=\"5\"/>"));
        assert_well_formed(&hold(0));
    }

    #[test]
    fn wait_expires_into_the_after_hours_action() {
        let d = Department { after_hours_action: AfterHours::Hangup, ..department(New_York) };
        let since = open_now().timestamp();
        assert_eq!(
            wait_twiml(&d, since, open_now() + chrono::Duration::seconds(300), &urls()),
            WaitDecision::Expired(after_hours_twiml(&d, &urls()))
        );
    }
}
