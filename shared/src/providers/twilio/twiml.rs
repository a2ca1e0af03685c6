//! TwiML for voice: the XML document Twilio executes when it fetches a call's webhook.
//!
//! Typed so a flow cannot misspell a verb, an attribute or one of its fixed values:
//! names and casing are Twilio's (twilio-python `twilio/twiml/voice_response.py` and
//! the TwiML docs). An attribute left `None` (or an empty event list) is omitted, so
//! Twilio applies its own default rather than one guessed here.

use std::fmt::{self, Display};

use crate::phone::E164;

const XML_DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// A `<Response>`, built verb by verb in the order Twilio executes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: String,
}

impl Response {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn say(mut self, say: Say) -> Self {
        Tag::open(&mut self.verbs, "Say")
            .attr("voice", say.voice.as_deref())
            .attr("language", say.language.as_deref())
            .text(&say.text);
        self
    }

    pub fn play(mut self, play: Play) -> Self {
        Tag::open(&mut self.verbs, "Play").attr("loop", play.loop_count).text(&play.url);
        self
    }

    pub fn pause(mut self, length_secs: u32) -> Self {
        Tag::open(&mut self.verbs, "Pause").attr("length", Some(length_secs)).empty();
        self
    }

    pub fn hangup(mut self) -> Self {
        Tag::open(&mut self.verbs, "Hangup").empty();
        self
    }

    pub fn redirect(mut self, redirect: Redirect) -> Self {
        Tag::open(&mut self.verbs, "Redirect").attr("method", redirect.method).text(&redirect.url);
        self
    }

    pub fn record(mut self, record: Record) -> Self {
        Tag::open(&mut self.verbs, "Record")
            .attr("action", record.action.as_deref())
            .attr("method", record.method)
            .attr("maxLength", record.max_length)
            .attr("timeout", record.timeout)
            .attr("playBeep", record.play_beep)
            .attr("finishOnKey", record.finish_on_key.as_deref())
            .attr("transcribe", record.transcribe)
            .attr("recordingStatusCallback", record.recording_status_callback.as_deref())
            .attr("recordingStatusCallbackEvent", space_separated(&record.recording_status_callback_event))
            .attr("recordingStatusCallbackMethod", record.recording_status_callback_method)
            .attr("trim", record.trim)
            .empty();
        self
    }

    pub fn dial(mut self, dial: Dial) -> Self {
        Tag::open(&mut self.verbs, "Dial")
            .attr("callerId", dial.caller_id.as_ref().map(E164::as_str))
            .attr("timeout", dial.timeout)
            .attr("record", dial.record)
            .attr("action", dial.action.as_deref())
            .attr("method", dial.method)
            .attr("answerOnBridge", dial.answer_on_bridge)
            .attr("ringTone", dial.ring_tone.as_deref())
            .children(|out| dial.nouns.iter().for_each(|noun| noun.write(out)));
        self
    }

    pub fn enqueue(mut self, enqueue: Enqueue) -> Self {
        Tag::open(&mut self.verbs, "Enqueue")
            .attr("action", enqueue.action.as_deref())
            .attr("waitUrl", enqueue.wait_url.as_deref())
            .text(&enqueue.queue);
        self
    }

    /// Takes the caller out of the queue its `<Enqueue>` put it in (from a wait URL).
    pub fn leave(mut self) -> Self {
        Tag::open(&mut self.verbs, "Leave").empty();
        self
    }

    pub fn to_xml(&self) -> String {
        format!("{XML_DECLARATION}<Response>{}</Response>", self.verbs)
    }
}

/// `<Say>`: text-to-speech.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Say {
    pub text: String,
    /// e.g. `Polly.Joanna`, `alice`.
    pub voice: Option<String>,
    /// e.g. `en-US`.
    pub language: Option<String>,
}

impl Say {
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), ..Self::default() }
    }
}

/// `<Play>`: an audio file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Play {
    pub url: String,
    /// `loop`: times to play; 0 repeats until the call moves on (hold music).
    pub loop_count: Option<u32>,
}

impl Play {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }
}

/// `<Redirect>`: continue with the TwiML at another URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redirect {
    pub url: String,
    pub method: Option<Method>,
}

impl Redirect {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }
}

/// `<Record>`: record the caller (voicemail), then request `action`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub action: Option<String>,
    pub method: Option<Method>,
    /// Seconds.
    pub max_length: Option<u32>,
    /// Seconds of silence that end the recording.
    pub timeout: Option<u32>,
    pub play_beep: Option<bool>,
    /// Keys that end the recording, e.g. `#`.
    pub finish_on_key: Option<String>,
    pub transcribe: Option<bool>,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_event: Vec<RecordingEvent>,
    pub recording_status_callback_method: Option<Method>,
    pub trim: Option<Trim>,
}

/// `<Dial>`: connect the caller to one or more nouns; all ring at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dial {
    pub nouns: Vec<Noun>,
    pub caller_id: Option<E164>,
    /// Seconds to ring before giving up.
    pub timeout: Option<u32>,
    pub record: Option<DialRecord>,
    pub action: Option<String>,
    pub method: Option<Method>,
    /// Keep the caller hearing ringback until the dialled party answers.
    pub answer_on_bridge: Option<bool>,
    /// Ringback country code, e.g. `us`, `in`.
    pub ring_tone: Option<String>,
}

impl Dial {
    pub fn new(noun: Noun) -> Self {
        Self { nouns: vec![noun], ..Self::default() }
    }
}

/// What a `<Dial>` connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noun {
    Number(E164),
    /// A Twilio Client (softphone) identity.
    Client(String),
    Conference(Conference),
}

impl Noun {
    fn write(&self, out: &mut String) {
        match self {
            Noun::Number(number) => Tag::open(out, "Number").text(number.as_str()),
            Noun::Client(identity) => Tag::open(out, "Client").text(identity),
            Noun::Conference(c) => Tag::open(out, "Conference")
                .attr("startConferenceOnEnter", c.start_conference_on_enter)
                .attr("endConferenceOnExit", c.end_conference_on_exit)
                .attr("waitUrl", c.wait_url.as_deref())
                .attr("waitMethod", c.wait_method)
                .attr("beep", c.beep)
                .attr("muted", c.muted)
                .attr("statusCallback", c.status_callback.as_deref())
                .attr("statusCallbackEvent", space_separated(&c.status_callback_event))
                .attr("statusCallbackMethod", c.status_callback_method)
                .attr("maxParticipants", c.max_participants)
                .attr("record", c.record)
                .attr("recordingStatusCallback", c.recording_status_callback.as_deref())
                .attr("coach", c.coach.as_deref())
                .attr("participantLabel", c.participant_label.as_deref())
                .text(&c.name),
        }
    }
}

/// `<Conference>`: a named room; how calls are held, transferred and barged into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conference {
    /// Namespaced to the account; never put personal data (a phone number) in it.
    pub name: String,
    pub start_conference_on_enter: Option<bool>,
    pub end_conference_on_exit: Option<bool>,
    /// TwiML (or audio) played while the conference has not started: hold music.
    pub wait_url: Option<String>,
    pub wait_method: Option<Method>,
    pub beep: Option<Beep>,
    pub muted: Option<bool>,
    pub status_callback: Option<String>,
    pub status_callback_event: Vec<ConferenceEvent>,
    pub status_callback_method: Option<Method>,
    pub max_participants: Option<u32>,
    pub record: Option<ConferenceRecord>,
    pub recording_status_callback: Option<String>,
    /// CallSid of the participant this one coaches (whisper: heard only by that call).
    pub coach: Option<String>,
    pub participant_label: Option<String>,
}

impl Conference {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Self::default() }
    }
}

/// `<Enqueue>`: put the caller in a named queue until an agent dequeues it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enqueue {
    pub queue: String,
    /// Requested when the caller leaves the queue without being bridged.
    pub action: Option<String>,
    /// TwiML played while waiting (music, position announcements).
    pub wait_url: Option<String>,
}

impl Enqueue {
    pub fn new(queue: impl Into<String>) -> Self {
        Self { queue: queue.into(), ..Self::default() }
    }
}

/// Declares a closed set of TwiML attribute values and their exact spelling.
macro_rules! attribute_values {
    ($($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text),+ })
            }
        }
    )+};
}

attribute_values! {
    /// How Twilio requests a callback URL.
    Method { Get => "GET", Post => "POST" }
    Trim { TrimSilence => "trim-silence", DoNotTrim => "do-not-trim" }
    RecordingEvent { InProgress => "in-progress", Completed => "completed", Absent => "absent" }
    DialRecord {
        DoNotRecord => "do-not-record",
        RecordFromAnswer => "record-from-answer",
        RecordFromRinging => "record-from-ringing",
        RecordFromAnswerDual => "record-from-answer-dual",
        RecordFromRingingDual => "record-from-ringing-dual",
    }
    ConferenceRecord { DoNotRecord => "do-not-record", RecordFromStart => "record-from-start" }
    /// Whom the conference beeps for: `Always` is Twilio's `true`, `Never` its `false`.
    Beep { Always => "true", Never => "false", OnEnter => "onEnter", OnExit => "onExit" }
    ConferenceEvent {
        Start => "start",
        End => "end",
        Join => "join",
        Leave => "leave",
        Mute => "mute",
        Hold => "hold",
        Modify => "modify",
        Speaker => "speaker",
        Announcement => "announcement",
    }
}

/// Twilio's event-list attributes are space-separated; an empty list is no attribute.
fn space_separated<T: Display>(values: &[T]) -> Option<String> {
    (!values.is_empty()).then(|| values.iter().map(T::to_string).collect::<Vec<_>>().join(" "))
}

/// One element being written; unset attributes are skipped and every value escaped.
struct Tag<'o> {
    out: &'o mut String,
    name: &'static str,
}

impl<'o> Tag<'o> {
    fn open(out: &'o mut String, name: &'static str) -> Self {
        out.push('<');
        out.push_str(name);
        Self { out, name }
    }

    fn attr(self, name: &str, value: Option<impl Display>) -> Self {
        if let Some(value) = value {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_into(self.out, &value.to_string());
            self.out.push('"');
        }
        self
    }

    fn empty(self) {
        self.out.push_str("/>");
    }

    fn text(self, text: &str) {
        self.children(|out| escape_into(out, text));
    }

    fn children(self, write: impl FnOnce(&mut String)) {
        self.out.push('>');
        write(self.out);
        self.out.push_str("</");
        self.out.push_str(self.name);
        self.out.push('>');
    }
}

/// Escapes the five XML specials, and drops the characters XML 1.0 cannot carry at all
/// (C0 controls other than tab, LF, CR; U+FFFE, U+FFFF): one stray control character
/// in a tenant's greeting would otherwise make Twilio reject the whole document.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\0'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    fn number(raw: &str) -> E164 {
        E164::parse(raw).unwrap()
    }

    #[test]
    fn empty_response() {
        assert_eq!(Response::new().to_xml(), format!("{HEAD}<Response></Response>"));
    }

    #[test]
    fn caller_waits_in_a_conference_with_hold_music() {
        let room = Conference {
            start_conference_on_enter: Some(false),
            end_conference_on_exit: Some(true),
            wait_url: Some("https://hooks.example.com/twilio/queue/wait?dept=sales".into()),
            wait_method: Some(Method::Post),
            beep: Some(Beep::Never),
            status_callback: Some("https://hooks.example.com/twilio/conference".into()),
            status_callback_event: vec![
                ConferenceEvent::Start,
                ConferenceEvent::End,
                ConferenceEvent::Join,
                ConferenceEvent::Leave,
            ],
            status_callback_method: Some(Method::Post),
            max_participants: Some(10),
            record: Some(ConferenceRecord::RecordFromStart),
            recording_status_callback: Some("https://hooks.example.com/twilio/recording".into()),
            participant_label: Some("customer".into()),
            ..Conference::new("call-01J9Z")
        };
        let xml = Response::new()
            .say(Say { voice: Some("Polly.Joanna".into()), language: Some("en-US".into()), ..Say::new("Please hold.") })
            .dial(Dial::new(Noun::Conference(room)))
            .to_xml();
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response>\
                 <Say voice=\"Polly.Joanna\" language=\"en-US\">Please hold.</Say>\
                 <Dial><Conference startConferenceOnEnter=\"false\" endConferenceOnExit=\"true\" \
                 waitUrl=\"https://hooks.example.com/twilio/queue/wait?dept=sales\" waitMethod=\"POST\" \
                 beep=\"false\" statusCallback=\"https://hooks.example.com/twilio/conference\" \
                 statusCallbackEvent=\"start end join leave\" statusCallbackMethod=\"POST\" \
                 maxParticipants=\"10\" record=\"record-from-start\" \
                 recordingStatusCallback=\"https://hooks.example.com/twilio/recording\" \
                 participantLabel=\"customer\">call-01J9Z</Conference></Dial>\
                 </Response>"
            )
        );
    }

    #[test]
    fn wait_url_loops_the_department_music() {
        let xml = Response::new()
            .play(Play { loop_count: Some(0), ..Play::new("https://cdn.example.com/hold.mp3") })
            .to_xml();
        assert_eq!(xml, format!("{HEAD}<Response><Play loop=\"0\">https://cdn.example.com/hold.mp3</Play></Response>"));
    }

    #[test]
    fn supervisor_whispers_to_an_agent() {
        let coach = Conference {
            muted: Some(false),
            beep: Some(Beep::OnEnter),
            coach: Some("CA0123456789abcdef0123456789abcdef".into()),
            ..Conference::new("call-01J9Z")
        };
        let xml = Response::new().dial(Dial::new(Noun::Conference(coach))).to_xml();
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response><Dial><Conference beep=\"onEnter\" muted=\"false\" \
                 coach=\"CA0123456789abcdef0123456789abcdef\">call-01J9Z</Conference></Dial></Response>"
            )
        );
    }

    #[test]
    fn after_hours_voicemail() {
        let record = Record {
            action: Some("https://hooks.example.com/twilio/voicemail".into()),
            method: Some(Method::Post),
            max_length: Some(120),
            timeout: Some(5),
            play_beep: Some(true),
            finish_on_key: Some("#".into()),
            transcribe: Some(false),
            recording_status_callback: Some("https://hooks.example.com/twilio/recording".into()),
            recording_status_callback_event: vec![RecordingEvent::Completed, RecordingEvent::Absent],
            recording_status_callback_method: Some(Method::Post),
            trim: Some(Trim::TrimSilence),
        };
        let xml = Response::new()
            .say(Say::new("We are closed. Leave a message after the beep."))
            .record(record)
            .hangup()
            .to_xml();
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response>\
                 <Say>We are closed. Leave a message after the beep.</Say>\
                 <Record action=\"https://hooks.example.com/twilio/voicemail\" method=\"POST\" \
                 maxLength=\"120\" timeout=\"5\" playBeep=\"true\" finishOnKey=\"#\" transcribe=\"false\" \
                 recordingStatusCallback=\"https://hooks.example.com/twilio/recording\" \
                 recordingStatusCallbackEvent=\"completed absent\" recordingStatusCallbackMethod=\"POST\" \
                 trim=\"trim-silence\"/>\
                 <Hangup/>\
                 </Response>"
            )
        );
    }

    #[test]
    fn after_hours_forward_to_a_number() {
        let dial = Dial {
            caller_id: Some(number("+14155550100")),
            timeout: Some(20),
            record: Some(DialRecord::RecordFromAnswerDual),
            action: Some("https://hooks.example.com/twilio/dial-status".into()),
            method: Some(Method::Post),
            answer_on_bridge: Some(true),
            ring_tone: Some("us".into()),
            ..Dial::new(Noun::Number(number("+14155550199")))
        };
        assert_eq!(
            Response::new().dial(dial).to_xml(),
            format!(
                "{HEAD}<Response><Dial callerId=\"+14155550100\" timeout=\"20\" record=\"record-from-answer-dual\" \
                 action=\"https://hooks.example.com/twilio/dial-status\" method=\"POST\" answerOnBridge=\"true\" \
                 ringTone=\"us\"><Number>+14155550199</Number></Dial></Response>"
            )
        );
    }

    #[test]
    fn dial_rings_several_agents_at_once() {
        let dial = Dial {
            nouns: vec![Noun::Client("agent-7".into()), Noun::Number(number("+919876543210"))],
            timeout: Some(15),
            ..Dial::default()
        };
        assert_eq!(
            Response::new().dial(dial).to_xml(),
            format!(
                "{HEAD}<Response><Dial timeout=\"15\"><Client>agent-7</Client>\
                 <Number>+919876543210</Number></Dial></Response>"
            )
        );
    }

    #[test]
    fn queue_pause_redirect_and_leave() {
        let xml = Response::new()
            .enqueue(Enqueue {
                action: Some("https://hooks.example.com/twilio/queue/left".into()),
                wait_url: Some("https://hooks.example.com/twilio/queue/wait".into()),
                ..Enqueue::new("sales")
            })
            .pause(2)
            .redirect(Redirect { method: Some(Method::Get), ..Redirect::new("https://hooks.example.com/twilio/voice") })
            .leave()
            .to_xml();
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response>\
                 <Enqueue action=\"https://hooks.example.com/twilio/queue/left\" \
                 waitUrl=\"https://hooks.example.com/twilio/queue/wait\">sales</Enqueue>\
                 <Pause length=\"2\"/>\
                 <Redirect method=\"GET\">https://hooks.example.com/twilio/voice</Redirect>\
                 <Leave/>\
                 </Response>"
            )
        );
    }

    #[test]
    fn escapes_text_and_urls() {
        let xml = Response::new()
            .say(Say::new(r#"Tom & Jerry's <"shop">"#))
            .play(Play::new("https://cdn.example.com/a.mp3?x=1&y='2'"))
            .record(Record { action: Some(r#"https://h.example.com/vm?a=1&b="<2>""#.into()), ..Record::default() })
            .to_xml();
        assert_eq!(
            xml,
            format!(
                "{HEAD}<Response>\
                 <Say>Tom &amp; Jerry&apos;s &lt;&quot;shop&quot;&gt;</Say>\
                 <Play>https://cdn.example.com/a.mp3?x=1&amp;y=&apos;2&apos;</Play>\
                 <Record action=\"https://h.example.com/vm?a=1&amp;b=&quot;&lt;2&gt;&quot;\"/>\
                 </Response>"
            )
        );
    }

    #[test]
    fn drops_characters_xml_cannot_carry() {
        let xml = Response::new().say(Say::new("Hi\u{0}\u{7}\tthere\u{ffff}\nbye")).to_xml();
        assert_eq!(xml, format!("{HEAD}<Response><Say>Hi\tthere\nbye</Say></Response>"));
    }
}
