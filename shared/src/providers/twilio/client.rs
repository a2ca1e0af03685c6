//! Twilio's REST API (2010-04-01): place and steer calls, drive conference participants
//! (supervisor monitor, whisper, barge) and stream recordings out to S3.
//!
//! One [`TwilioClient`] per cold start, shared by reference; credentials go with each
//! call because every tenant brings its own Twilio account. Bodies are form-encoded with
//! list parameters as repeated keys and booleans as `true`/`false`, as Twilio's own helper
//! libraries send them. Retries are bounded and never risk placing a call twice (see
//! `should_retry`).

use std::{fmt, time::Duration};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use crate::{calls::CallStatus, phone::E164};

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// Points the client at another server speaking Twilio's API (the local fake in tests).
pub const BASE_URL_ENV: &str = "TWILIO_API_BASE_URL";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence while reading a response, recordings included.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request deadline for API calls. Media has none: an hour of audio can take longer
/// to stream than this, and the read timeout still catches a stalled download.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest `Retry-After` waited out inside a Lambda; beyond it the error goes back to the
/// caller, whose queue can retry later without paying for an idle function.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A tenant's Twilio account. `Debug` shows the SID; the token prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct TwilioCredentials {
    pub account_sid: String,
    pub auth_token: SecretString,
}

/// The account a verified webhook came from is the one to call back with.
impl From<&crate::tenants::providers::WebhookAccount> for TwilioCredentials {
    fn from(account: &crate::tenants::providers::WebhookAccount) -> Self {
        Self { account_sid: account.account_sid.clone(), auth_token: account.auth_token.clone() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio's error body. `message` can quote the request, phone numbers included, so
    /// `Display` (what reaches logs) names only the status and code.
    #[error("Twilio API error: HTTP {status}{}", .code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Api { status: u16, code: Option<u32>, message: String, more_info: Option<String> },
    #[error("Twilio request timed out")]
    Timeout,
    #[error("Twilio request failed")]
    Transport(#[source] reqwest::Error),
    #[error("unexpected Twilio response: {0}")]
    Decode(String),
    #[error("not a Twilio SID of the form {0} + 32 hex digits")]
    InvalidSid(&'static str),
    #[error("invalid Twilio client configuration: {0}")]
    Config(String),
}

/// A call leg's address as Twilio's `To`/`From` take it: an E.164 number, `client:<id>`
/// or a `sip:` URI. `Debug` masks the digits, so requests and resources can be logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Endpoint(String);

impl Endpoint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<E164> for Endpoint {
    fn from(number: E164) -> Self {
        Self(number.as_str().to_owned())
    }
}

impl From<&str> for Endpoint {
    fn from(raw: &str) -> Self {
        Self(raw.to_owned())
    }
}

impl From<String> for Endpoint {
    fn from(raw: String) -> Self {
        Self(raw)
    }
}

/// Keeps the first digit (the country code's) and the last two, like `E164::masked`.
impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.bytes().filter(u8::is_ascii_digit).count();
        let mut seen = 0;
        let masked: String = self
            .0
            .chars()
            .map(|c| {
                if !c.is_ascii_digit() {
                    return c;
                }
                seen += 1;
                if seen == 1 || seen + 2 > digits { c } else { '*' }
            })
            .collect();
        write!(f, "Endpoint({masked})")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
}

impl HttpMethod {
    fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// Call progress events Twilio can send to a `StatusCallback` (it sends only `completed`
/// unless asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCallbackEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl StatusCallbackEvent {
    pub const ALL: [StatusCallbackEvent; 4] = [Self::Initiated, Self::Ringing, Self::Answered, Self::Completed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingStatusCallbackEvent {
    InProgress,
    Completed,
    Absent,
}

impl RecordingStatusCallbackEvent {
    fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Absent => "absent",
        }
    }
}

/// Answering-machine detection: `Enable` reports as soon as Twilio knows who answered,
/// `DetectMessageEnd` waits for the greeting to end (to leave a voicemail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineDetection {
    Enable,
    DetectMessageEnd,
}

impl MachineDetection {
    fn as_str(self) -> &'static str {
        match self {
            Self::Enable => "Enable",
            Self::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

/// What Twilio runs when the call connects: TwiML fetched from a URL, or given inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInstructions {
    Url(String),
    Twiml(String),
}

/// `POST /Calls.json`. Build with [`CreateCall::new`], then set fields as needed.
#[derive(Debug, Clone)]
pub struct CreateCall {
    pub to: Endpoint,
    pub from: Endpoint,
    pub instructions: CallInstructions,
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<StatusCallbackEvent>,
    pub status_callback_method: Option<HttpMethod>,
    pub record: Option<bool>,
    pub recording_status_callback: Option<String>,
    pub recording_status_callback_events: Vec<RecordingStatusCallbackEvent>,
    /// Seconds to let the callee's phone ring (Twilio's default is 60).
    pub timeout_secs: Option<u32>,
    pub machine_detection: Option<MachineDetection>,
}

impl CreateCall {
    pub fn new(to: impl Into<Endpoint>, from: impl Into<Endpoint>, instructions: CallInstructions) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            instructions,
            status_callback: None,
            status_callback_events: Vec::new(),
            status_callback_method: None,
            record: None,
            recording_status_callback: None,
            recording_status_callback_events: Vec::new(),
            timeout_secs: None,
            machine_detection: None,
        }
    }

    fn form(&self) -> Form {
        Form::default()
            .set("To", self.to.as_str())
            .set("From", self.from.as_str())
            .instructions(&self.instructions)
            .opt("StatusCallback", self.status_callback.as_deref())
            .each("StatusCallbackEvent", self.status_callback_events.iter().map(|e| e.as_str()))
            .opt("StatusCallbackMethod", self.status_callback_method.map(HttpMethod::as_str))
            .opt("Record", self.record)
            .opt("RecordingStatusCallback", self.recording_status_callback.as_deref())
            .each("RecordingStatusCallbackEvent", self.recording_status_callback_events.iter().map(|e| e.as_str()))
            .opt("Timeout", self.timeout_secs)
            .opt("MachineDetection", self.machine_detection.map(MachineDetection::as_str))
    }
}

/// `POST /Calls/{CallSid}.json`: hang up, or hand the live call new TwiML (a transfer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallUpdate {
    /// Ends the call whatever its state (`Status=completed`).
    Complete,
    /// Ends a call that is still queued or ringing; no effect once answered.
    Cancel,
    Redirect(CallInstructions),
}

impl CallUpdate {
    fn form(&self) -> Form {
        match self {
            CallUpdate::Complete => Form::default().set("Status", "completed"),
            CallUpdate::Cancel => Form::default().set("Status", "canceled"),
            CallUpdate::Redirect(instructions) => Form::default().instructions(instructions),
        }
    }
}

/// A coaching participant (a whispering supervisor) is heard only by the call it coaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coaching {
    Start { call_sid_to_coach: String },
    Stop,
}

/// When the conference hears a beep for this participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beep {
    Always,
    Never,
    OnEnter,
    OnExit,
}

impl Beep {
    fn as_str(self) -> &'static str {
        match self {
            Beep::Always => "true",
            Beep::Never => "false",
            Beep::OnEnter => "onEnter",
            Beep::OnExit => "onExit",
        }
    }
}

/// `POST /Conferences/{ConferenceSid}/Participants.json`: dial someone into a conference.
#[derive(Debug, Clone)]
pub struct CreateParticipant {
    pub from: Endpoint,
    pub to: Endpoint,
    pub label: Option<String>,
    pub muted: Option<bool>,
    pub coaching: Option<Coaching>,
    pub beep: Option<Beep>,
    pub start_conference_on_enter: Option<bool>,
    pub end_conference_on_exit: Option<bool>,
    /// Whether the new leg hears ringing and carrier messages before it is answered.
    pub early_media: Option<bool>,
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<StatusCallbackEvent>,
    pub timeout_secs: Option<u32>,
}

impl CreateParticipant {
    pub fn new(from: impl Into<Endpoint>, to: impl Into<Endpoint>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            label: None,
            muted: None,
            coaching: None,
            beep: None,
            start_conference_on_enter: None,
            end_conference_on_exit: None,
            early_media: None,
            status_callback: None,
            status_callback_events: Vec::new(),
            timeout_secs: None,
        }
    }

    fn form(&self) -> Form {
        Form::default()
            .set("From", self.from.as_str())
            .set("To", self.to.as_str())
            .opt("Label", self.label.as_deref())
            .opt("Muted", self.muted)
            .coaching(self.coaching.as_ref())
            .opt("Beep", self.beep.map(Beep::as_str))
            .opt("StartConferenceOnEnter", self.start_conference_on_enter)
            .opt("EndConferenceOnExit", self.end_conference_on_exit)
            .opt("EarlyMedia", self.early_media)
            .opt("StatusCallback", self.status_callback.as_deref())
            .each("StatusCallbackEvent", self.status_callback_events.iter().map(|e| e.as_str()))
            .opt("Timeout", self.timeout_secs)
    }
}

/// `POST /Conferences/{ConferenceSid}/Participants/{CallSid}.json`; unset fields are left
/// as they are.
#[derive(Debug, Clone, Default)]
pub struct UpdateParticipant {
    pub muted: Option<bool>,
    pub hold: Option<bool>,
    /// What the participant hears while on hold (audio or TwiML).
    pub hold_url: Option<String>,
    /// Played to this participant only (audio or TwiML).
    pub announce_url: Option<String>,
    pub coaching: Option<Coaching>,
    pub end_conference_on_exit: Option<bool>,
}

impl UpdateParticipant {
    fn form(&self) -> Form {
        Form::default()
            .opt("Muted", self.muted)
            .opt("Hold", self.hold)
            .opt("HoldUrl", self.hold_url.as_deref())
            .opt("AnnounceUrl", self.announce_url.as_deref())
            .coaching(self.coaching.as_ref())
            .opt("EndConferenceOnExit", self.end_conference_on_exit)
    }
}

/// A Call resource, reduced to what Switchboard uses; other fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct CallResource {
    pub sid: String,
    pub account_sid: String,
    pub parent_call_sid: Option<String>,
    pub status: CallStatus,
    /// `inbound`, `outbound-api`, `outbound-dial`, …
    pub direction: String,
    pub from: Endpoint,
    pub to: Endpoint,
    #[serde(default, deserialize_with = "seconds")]
    pub duration: Option<u32>,
    #[serde(default, deserialize_with = "rfc2822")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "rfc2822")]
    pub end_time: Option<DateTime<Utc>>,
    pub answered_by: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantStatus {
    Queued,
    Connecting,
    Ringing,
    Connected,
    Complete,
    Failed,
}

/// A conference Participant resource, reduced to what Switchboard uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Participant {
    pub call_sid: String,
    pub conference_sid: String,
    pub account_sid: String,
    pub label: Option<String>,
    pub status: ParticipantStatus,
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub hold: bool,
    #[serde(default)]
    pub coaching: bool,
    pub call_sid_to_coach: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFormat {
    Wav,
    Mp3,
}

impl RecordingFormat {
    fn extension(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "wav",
            RecordingFormat::Mp3 => "mp3",
        }
    }

    /// What Twilio documents for each representation, used if the header is missing.
    fn content_type(self) -> &'static str {
        match self {
            RecordingFormat::Wav => "audio/x-wav",
            RecordingFormat::Mp3 => "audio/mpeg",
        }
    }
}

/// A recording's media as it arrives, to be streamed on (into S3) rather than buffered.
/// A failure mid-stream is not retried here: the caller restarts its upload.
#[derive(Debug)]
pub struct RecordingMedia {
    pub content_type: String,
    pub content_length: Option<u64>,
    body: reqwest::Response,
}

impl RecordingMedia {
    /// The next piece of the file, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TwilioError> {
        self.body.chunk().await.map_err(transport_error)
    }

    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, TwilioError>> + Send + 'static {
        futures::stream::try_unfold(
            self,
            |mut media| async move { Ok(media.chunk().await?.map(|chunk| (chunk, media))) },
        )
    }
}

/// The Recording SID at the end of a webhook's `RecordingUrl`. Media is fetched by SID
/// from the configured base URL, so credentials never go to a URL taken from a payload.
pub fn recording_sid_from_url(url: &str) -> Option<&str> {
    let file = url.trim_end_matches('/').rsplit('/').next()?;
    let sid = file.split_once('.').map_or(file, |(sid, _)| sid);
    is_sid("RE", sid).then_some(sid)
}

#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: String,
}

impl TwilioClient {
    /// `base_url` must be HTTPS, or plain HTTP on a loopback host (the local fake), so
    /// credentials never cross a network in clear text.
    pub fn new(base_url: &str) -> Result<Self, TwilioError> {
        let url =
            reqwest::Url::parse(base_url).map_err(|e| TwilioError::Config(format!("base URL {base_url:?}: {e}")))?;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
            return Err(TwilioError::Config(format!("base URL {base_url:?} must be https (or http on loopback)")));
        }
        // Redirects are followed: recording media answers with a 302 to storage, and
        // reqwest drops the Authorization header when a redirect leaves the host.
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TwilioError::Config(e.to_string()))?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned() })
    }

    /// [`DEFAULT_BASE_URL`] unless [`BASE_URL_ENV`] names another.
    pub fn from_env() -> Result<Self, TwilioError> {
        let configured = std::env::var(BASE_URL_ENV).ok().filter(|v| !v.trim().is_empty());
        Self::new(configured.as_deref().unwrap_or(DEFAULT_BASE_URL))
    }

    /// Places a call. Not idempotent: retried only when Twilio cannot have acted on it.
    pub async fn create_call(&self, creds: &TwilioCredentials, call: &CreateCall) -> Result<CallResource, TwilioError> {
        let url = self.url(creds, "Calls.json")?;
        self.json(creds, Method::POST, &url, call.form(), Idempotency::NotIdempotent).await
    }

    pub async fn update_call(
        &self,
        creds: &TwilioCredentials,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<CallResource, TwilioError> {
        let url = self.url(creds, &format!("Calls/{}.json", sid("CA", call_sid)?))?;
        self.json(creds, Method::POST, &url, update.form(), Idempotency::Idempotent).await
    }

    /// Dials a new leg into the conference. Not idempotent, like [`Self::create_call`].
    pub async fn create_participant(
        &self,
        creds: &TwilioCredentials,
        conference_sid: &str,
        participant: &CreateParticipant,
    ) -> Result<Participant, TwilioError> {
        let url = self.url(creds, &format!("Conferences/{}/Participants.json", sid("CF", conference_sid)?))?;
        self.json(creds, Method::POST, &url, participant.form(), Idempotency::NotIdempotent).await
    }

    pub async fn update_participant(
        &self,
        creds: &TwilioCredentials,
        conference_sid: &str,
        call_sid: &str,
        update: &UpdateParticipant,
    ) -> Result<Participant, TwilioError> {
        let url = self.participant_url(creds, conference_sid, call_sid)?;
        self.json(creds, Method::POST, &url, update.form(), Idempotency::Idempotent).await
    }

    /// Removes the participant, hanging up its leg. A retried delete that already took
    /// effect answers 404.
    pub async fn delete_participant(
        &self,
        creds: &TwilioCredentials,
        conference_sid: &str,
        call_sid: &str,
    ) -> Result<(), TwilioError> {
        let url = self.participant_url(creds, conference_sid, call_sid)?;
        self.send(creds, Method::DELETE, &url, None, Idempotency::Idempotent, Some(REQUEST_TIMEOUT)).await?;
        Ok(())
    }

    /// Opens the recording's media; the body streams from [`RecordingMedia`].
    pub async fn fetch_recording(
        &self,
        creds: &TwilioCredentials,
        recording_sid: &str,
        format: RecordingFormat,
    ) -> Result<RecordingMedia, TwilioError> {
        let url = self.url(creds, &format!("Recordings/{}.{}", sid("RE", recording_sid)?, format.extension()))?;
        let body = self.send(creds, Method::GET, &url, None, Idempotency::Idempotent, None).await?;
        let content_type =
            body.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(format.content_type());
        Ok(RecordingMedia { content_type: content_type.to_owned(), content_length: body.content_length(), body })
    }

    fn url(&self, creds: &TwilioCredentials, resource: &str) -> Result<String, TwilioError> {
        Ok(format!("{}/2010-04-01/Accounts/{}/{resource}", self.base_url, sid("AC", &creds.account_sid)?))
    }

    fn participant_url(
        &self,
        creds: &TwilioCredentials,
        conference_sid: &str,
        call_sid: &str,
    ) -> Result<String, TwilioError> {
        self.url(
            creds,
            &format!("Conferences/{}/Participants/{}.json", sid("CF", conference_sid)?, sid("CA", call_sid)?),
        )
    }

    async fn json<T: DeserializeOwned>(
        &self,
        creds: &TwilioCredentials,
        method: Method,
        url: &str,
        form: Form,
        idempotency: Idempotency,
    ) -> Result<T, TwilioError> {
        let response = self.send(creds, method, url, Some(&form), idempotency, Some(REQUEST_TIMEOUT)).await?;
        let body = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice(&body).map_err(|e| TwilioError::Decode(e.to_string()))
    }

    /// Sends until success, a failure [`should_retry`] rejects, or [`MAX_ATTEMPTS`].
    async fn send(
        &self,
        creds: &TwilioCredentials,
        method: Method,
        url: &str,
        form: Option<&Form>,
        idempotency: Idempotency,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, TwilioError> {
        let mut attempt = 1;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .basic_auth(&creds.account_sid, Some(creds.auth_token.expose_secret()));
            if let Some(form) = form {
                request = request.form(&form.0);
            }
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            let (failure, error, retry_after) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = response.bytes().await.unwrap_or_default();
                    (Failure::Status(status), api_error(status, &body), retry_after)
                }
                Err(e) => (if e.is_connect() { Failure::Connect } else { Failure::Other }, transport_error(e), None),
            };
            if attempt >= MAX_ATTEMPTS || !should_retry(idempotency, failure) {
                return Err(error);
            }
            let delay = match retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => return Err(error),
                Some(wait) => wait,
                None => backoff(attempt),
            };
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, %error, "retrying Twilio request");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Whether a request may be sent again after it might have reached Twilio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// How one attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Status(StatusCode),
    /// No connection was made, so nothing was sent.
    Connect,
    /// Timed out or broke after sending: Twilio may have acted.
    Other,
}

/// 429 and 503 are answered before Twilio acts (error 20429: "never processed and always
/// safe to retry"), and a connect error sent nothing: any request may repeat those. Other
/// 5xx and mid-flight failures may have acted, so only idempotent requests repeat them
/// (error 20500: GET, DELETE and hanging up are safe; triggering a call is not). Other
/// 4xx are the request's fault and repeat identically.
fn should_retry(idempotency: Idempotency, failure: Failure) -> bool {
    match failure {
        Failure::Connect => true,
        Failure::Status(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => true,
        Failure::Status(status) => status.is_server_error() && idempotency == Idempotency::Idempotent,
        Failure::Other => idempotency == Idempotency::Idempotent,
    }
}

/// Exponential from [`FIRST_BACKOFF`], half of it random so that concurrent retries
/// spread out.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF * 2u32.pow(attempt.saturating_sub(1));
    full / 2 + full.mul_f64(rand::random::<f64>() / 2.0)
}

/// `Retry-After` in seconds, the form Twilio sends.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// Twilio's error body, `{"code", "message", "more_info", "status"}`; anything else (a
/// proxy's HTML page) becomes an error named by its status alone.
fn api_error(status: StatusCode, body: &[u8]) -> TwilioError {
    #[derive(Deserialize)]
    struct Body {
        code: Option<u32>,
        message: Option<String>,
        more_info: Option<String>,
    }
    let body = serde_json::from_slice::<Body>(body).ok();
    let (code, message, more_info) = body.map_or((None, None, None), |b| (b.code, b.message, b.more_info));
    TwilioError::Api {
        status: status.as_u16(),
        code,
        message: message.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
        more_info,
    }
}

fn transport_error(e: reqwest::Error) -> TwilioError {
    if e.is_timeout() { TwilioError::Timeout } else { TwilioError::Transport(e) }
}

fn is_sid(prefix: &str, raw: &str) -> bool {
    raw.len() == 34 && raw.starts_with(prefix) && raw[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// SIDs become URL path segments, so anything else is refused before it can reshape a URL.
fn sid<'a>(prefix: &'static str, raw: &'a str) -> Result<&'a str, TwilioError> {
    if is_sid(prefix, raw) { Ok(raw) } else { Err(TwilioError::InvalidSid(prefix)) }
}

/// A form body in Twilio's encoding: scalars once, lists as repeated keys, booleans as
/// `true`/`false`; unset options are left out so Twilio applies its defaults.
#[derive(Debug, Default)]
struct Form(Vec<(&'static str, String)>);

impl Form {
    fn set(mut self, key: &'static str, value: &str) -> Self {
        self.0.push((key, value.to_owned()));
        self
    }

    fn opt(mut self, key: &'static str, value: Option<impl ToString>) -> Self {
        self.0.extend(value.map(|v| (key, v.to_string())));
        self
    }

    fn each<'v>(mut self, key: &'static str, values: impl IntoIterator<Item = &'v str>) -> Self {
        self.0.extend(values.into_iter().map(|v| (key, v.to_owned())));
        self
    }

    fn instructions(self, instructions: &CallInstructions) -> Self {
        match instructions {
            CallInstructions::Url(url) => self.set("Url", url),
            CallInstructions::Twiml(twiml) => self.set("Twiml", twiml),
        }
    }

    fn coaching(self, coaching: Option<&Coaching>) -> Self {
        match coaching {
            Some(Coaching::Start { call_sid_to_coach }) => {
                self.set("Coaching", "true").set("CallSidToCoach", call_sid_to_coach)
            }
            Some(Coaching::Stop) => self.set("Coaching", "false"),
            None => self,
        }
    }
}

/// Twilio's dates: RFC 2822 in GMT (`Tue, 31 Aug 2010 20:36:28 +0000`), or null.
fn rfc2822<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|raw| DateTime::parse_from_rfc2822(&raw).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom))
        .transpose()
}

/// Twilio sends durations as strings (`"42"`); a number is accepted too.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u32),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(text)) => text.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "CA0123456789abcdef0123456789abcdef";

    fn pairs(form: Form) -> Vec<(&'static str, String)> {
        form.0
    }

    fn owned(expected: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        expected.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn create_call_repeats_list_params_and_omits_unset_ones() {
        let call = CreateCall {
            status_callback: Some("https://sb.example/status".into()),
            status_callback_events: StatusCallbackEvent::ALL.to_vec(),
            status_callback_method: Some(HttpMethod::Post),
            record: Some(true),
            recording_status_callback_events: vec![RecordingStatusCallbackEvent::Completed],
            timeout_secs: Some(25),
            ..CreateCall::new("+14155550100", "+14155550199", CallInstructions::Url("https://sb.example/voice".into()))
        };
        assert_eq!(
            pairs(call.form()),
            owned(&[
                ("To", "+14155550100"),
                ("From", "+14155550199"),
                ("Url", "https://sb.example/voice"),
                ("StatusCallback", "https://sb.example/status"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
                ("StatusCallbackMethod", "POST"),
                ("Record", "true"),
                ("RecordingStatusCallbackEvent", "completed"),
                ("Timeout", "25"),
            ])
        );
        let encoded = serde_urlencoded::to_string(&call.form().0).unwrap();
        assert!(encoded.contains("StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&"), "{encoded}");
    }

    #[test]
    fn call_updates_send_status_or_new_instructions() {
        assert_eq!(pairs(CallUpdate::Complete.form()), owned(&[("Status", "completed")]));
        assert_eq!(pairs(CallUpdate::Cancel.form()), owned(&[("Status", "canceled")]));
        let transfer =
            CallUpdate::Redirect(CallInstructions::Twiml("<Response><Dial>+14155550123</Dial></Response>".into()));
        assert_eq!(pairs(transfer.form()), owned(&[("Twiml", "<Response><Dial>+14155550123</Dial></Response>")]));
    }

    #[test]
    fn coaching_always_names_the_coached_call() {
        let whisper = CreateParticipant {
            muted: Some(false),
            coaching: Some(Coaching::Start { call_sid_to_coach: CA.into() }),
            beep: Some(Beep::Never),
            ..CreateParticipant::new("+14155550199", "client:supervisor-7")
        };
        assert_eq!(
            pairs(whisper.form()),
            owned(&[
                ("From", "+14155550199"),
                ("To", "client:supervisor-7"),
                ("Muted", "false"),
                ("Coaching", "true"),
                ("CallSidToCoach", CA),
                ("Beep", "false"),
            ])
        );
        let barge = UpdateParticipant { muted: Some(false), coaching: Some(Coaching::Stop), ..Default::default() };
        assert_eq!(pairs(barge.form()), owned(&[("Muted", "false"), ("Coaching", "false")]));
    }

    #[test]
    fn twilio_error_body_is_parsed_and_its_message_kept_out_of_display() {
        let body = br#"{"code": 21211, "message": "The 'To' number +15005550001 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let error = api_error(StatusCode::BAD_REQUEST, body);
        let TwilioError::Api { status, code, ref message, ref more_info } = error else { panic!("{error:?}") };
        assert_eq!((status, code), (400, Some(21211)));
        assert!(message.starts_with("The 'To' number"));
        assert_eq!(more_info.as_deref(), Some("https://www.twilio.com/docs/errors/21211"));
        assert_eq!(error.to_string(), "Twilio API error: HTTP 400, code 21211");
    }

    #[test]
    fn non_json_error_body_is_named_by_its_status() {
        let error = api_error(StatusCode::BAD_GATEWAY, b"<html>Bad Gateway</html>");
        assert!(
            matches!(error, TwilioError::Api { status: 502, code: None, ref message, more_info: None } if message == "Bad Gateway")
        );
        assert_eq!(error.to_string(), "Twilio API error: HTTP 502");
    }

    #[test]
    fn only_unprocessed_failures_are_retried_for_call_creation() {
        use Idempotency::*;
        let status = |code: u16| Failure::Status(StatusCode::from_u16(code).unwrap());
        for (failure, idempotent, not_idempotent) in [
            (status(429), true, true),
            (status(503), true, true),
            (Failure::Connect, true, true),
            (status(500), true, false),
            (status(502), true, false),
            (status(504), true, false),
            (Failure::Other, true, false),
            (status(400), false, false),
            (status(401), false, false),
            (status(404), false, false),
        ] {
            assert_eq!(should_retry(Idempotent, failure), idempotent, "{failure:?}, idempotent");
            assert_eq!(should_retry(NotIdempotent, failure), not_idempotent, "{failure:?}, not idempotent");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        for attempt in 1..=3 {
            let full = FIRST_BACKOFF * 2u32.pow(attempt - 1);
            let delay = backoff(attempt);
            assert!(delay >= full / 2 && delay <= full, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn call_resource_decodes_twilio_json() {
        let json = r#"{
            "sid": "CA0123456789abcdef0123456789abcdef", "account_sid": "AC0123456789abcdef0123456789abcdef",
            "parent_call_sid": null, "status": "completed", "direction": "outbound-api",
            "from": "+14155550199", "to": "+14155550100", "to_formatted": "(415) 555-0100",
            "duration": "42", "start_time": "Tue, 31 Aug 2010 20:36:28 +0000", "end_time": "Tue, 31 Aug 2010 20:37:10 +0000",
            "price": "-0.02000", "answered_by": null, "subresource_uris": {"recordings": "/x"}
        }"#;
        let call: CallResource = serde_json::from_str(json).unwrap();
        assert_eq!(call.status, CallStatus::Completed);
        assert_eq!(call.duration, Some(42));
        assert_eq!(call.start_time.unwrap().to_rfc3339(), "2010-08-31T20:36:28+00:00");
        assert_eq!(format!("{:?}", call.to), "Endpoint(+1********00)");
    }

    #[test]
    fn queued_call_has_no_times() {
        let json = r#"{"sid": "CA1", "account_sid": "AC1", "parent_call_sid": null, "status": "queued",
            "direction": "outbound-api", "from": "client:agent-7", "to": "+14155550100",
            "duration": null, "start_time": null, "end_time": null}"#;
        let call: CallResource = serde_json::from_str(json).unwrap();
        assert_eq!((call.duration, call.start_time, call.end_time), (None, None, None));
        assert_eq!(format!("{:?}", call.from), "Endpoint(client:agent-7)");
    }

    #[test]
    fn sids_are_checked_before_they_reach_a_path() {
        assert_eq!(sid("CA", CA).unwrap(), CA);
        for bad in [
            "",
            "CA123",
            "CF0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcde/",
            "CA../../Accounts/AC0123456789abcd",
        ] {
            assert!(matches!(sid("CA", bad), Err(TwilioError::InvalidSid("CA"))), "{bad}");
        }
    }

    #[test]
    fn recording_sid_is_taken_from_a_recording_url() {
        let re = "RE0123456789abcdef0123456789abcdef";
        let base = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings";
        assert_eq!(recording_sid_from_url(&format!("{base}/{re}")), Some(re));
        assert_eq!(recording_sid_from_url(&format!("{base}/{re}.mp3")), Some(re));
        assert_eq!(recording_sid_from_url("https://evil.example/RE-not-a-sid"), None);
    }

    #[test]
    fn credentials_never_print_the_token() {
        let creds = TwilioCredentials {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token: "s3cr3t-token".into(),
        };
        assert!(!format!("{creds:?}").contains("s3cr3t"));
    }

    #[test]
    fn base_url_must_be_https_unless_loopback() {
        assert!(TwilioClient::new(DEFAULT_BASE_URL).is_ok());
        assert!(TwilioClient::new("http://127.0.0.1:4010/").is_ok());
        assert!(TwilioClient::new("http://localhost:4010").is_ok());
        assert!(matches!(TwilioClient::new("http://api.twilio.com"), Err(TwilioError::Config(_))));
        assert!(matches!(TwilioClient::new("not a url"), Err(TwilioError::Config(_))));
    }
}
