//! A local Twilio that speaks the REST API's wire format (2010-04-01): Basic auth per
//! account, form-encoded requests, JSON resources with `CA…` SIDs and RFC 2822 dates,
//! and Twilio's error bodies and codes. Integration tests and `switchboard simulate call`
//! point `TWILIO_API_BASE_URL` at it; every request is recorded, so a test can assert
//! exactly what Twilio would have received.
//!
//! It serves what Switchboard calls: create and update Calls, create, update and delete
//! conference Participants (any conference SID is taken as existing; participants that
//! joined by TwiML are registered by the test), and Recording media registered by the
//! test (served as registered, never transcoded). It keeps just enough state to answer
//! like Twilio, and never dials anyone or sends webhooks.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    task::JoinHandle,
};

const API_PREFIX: &str = "/2010-04-01/Accounts/";
const CALL_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

type Reply = Response<Full<Bytes>>;

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    /// Query and form parameters, decoded, in order, repeated keys kept.
    pub params: Vec<(String, String)>,
    /// The Basic-auth user (an Account SID); the token is never kept.
    pub auth_user: Option<String>,
}

impl RecordedRequest {
    /// The first value of `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        first(&self.params, key)
    }

    /// Every value of a repeated `key`, in order.
    pub fn params_named(&self, key: &str) -> Vec<&str> {
        self.params.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
}

/// A running fake. Dropping it stops the server and closes its connections.
pub struct TwilioFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl TwilioFake {
    /// Serves on an ephemeral loopback port for the given (Account SID, auth token) pairs.
    pub async fn start(accounts: impl IntoIterator<Item = (String, String)>) -> io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), accounts).await
    }

    /// Loopback only: the fake accepts test credentials and must not be reachable.
    pub async fn bind(addr: SocketAddr, accounts: impl IntoIterator<Item = (String, String)>) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::other("the Twilio fake binds loopback addresses only"));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State { accounts: accounts.into_iter().collect(), ..State::default() }));
        let shared = state.clone();
        let server = tokio::spawn(crate::loopback::serve(listener, move |req| {
            let state = shared.clone();
            async move { handle(&state, req).await }
        }));
        Ok(Self { addr, state, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for `TWILIO_API_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers a live inbound call (as if Twilio had received it), so the REST API
    /// can act on it: redirect it, hang it up.
    pub fn add_inbound_call(&self, account_sid: &str, call_sid: &str, from: &str, to: &str) {
        let now = now();
        let call = json!({
            "sid": call_sid, "account_sid": account_sid, "date_created": now, "date_updated": now,
            "from": from, "to": to, "status": "in-progress", "direction": "inbound",
            "start_time": now, "end_time": null, "duration": null, "parent_call_sid": null,
            "api_version": "2010-04-01",
            "uri": format!("{API_PREFIX}{account_sid}/Calls/{call_sid}.json"),
        });
        self.lock().calls.insert(call_sid.to_owned(), call);
    }

    /// Registers a participant that joined a conference by TwiML (`<Dial><Conference>`),
    /// as Twilio would know it, so the REST API can act on it: update, coach, remove it.
    pub fn add_participant(&self, account_sid: &str, conference_sid: &str, call_sid: &str, label: Option<&str>) {
        let now = now();
        let participant = json!({
            "account_sid": account_sid, "call_sid": call_sid, "label": label, "call_sid_to_coach": null,
            "coaching": false, "conference_sid": conference_sid, "date_created": now, "date_updated": now,
            "end_conference_on_exit": false, "muted": false, "hold": false, "start_conference_on_enter": true,
            "status": "connected",
            "uri": format!("{API_PREFIX}{account_sid}/Conferences/{conference_sid}/Participants/{call_sid}.json"),
        });
        self.lock().participants.insert((conference_sid.to_owned(), call_sid.to_owned()), participant);
    }

    /// Accepts another account's credentials from now on.
    pub fn add_account(&self, account_sid: &str, auth_token: &str) {
        self.lock().accounts.insert(account_sid.to_owned(), auth_token.to_owned());
    }

    /// Makes `/Recordings/{recording_sid}` (any extension) serve `media` to its account.
    pub fn add_recording(&self, account_sid: &str, recording_sid: &str, content_type: &str, media: impl Into<Bytes>) {
        let content_type = HeaderValue::from_str(content_type).expect("content type is a valid header value");
        let recording = Recording { content_type, media: media.into() };
        self.lock().recordings.insert((account_sid.to_owned(), recording_sid.to_owned()), recording);
    }

    /// Answers the next `times` requests whose path contains `path_contains` with
    /// `status` and a Twilio error body (plus `Retry-After` if given), before auth or
    /// routing, as Twilio's edge would. Those requests are still recorded.
    pub fn fail_next(&self, path_contains: &str, times: usize, status: StatusCode, retry_after_secs: Option<u64>) {
        let fault = Fault { path_contains: path_contains.to_owned(), remaining: times, status, retry_after_secs };
        self.lock().faults.push(fault);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Stops serving: the port is closed when this returns, open connections are aborted.
    pub async fn shutdown(mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TwilioFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A fresh SID in Twilio's shape: two-letter prefix and 32 lowercase hex digits.
pub fn sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// A valid WAV of a 440 Hz tone, 8 kHz mono 16-bit PCM like Twilio's own recordings. A
/// tone rather than silence, so a byte-for-byte comparison notices any corruption.
pub fn tone_wav(millis: u32) -> Vec<u8> {
    const RATE: u32 = 8_000;
    let samples = RATE * millis / 1_000;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk length
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // channels
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes()); // bytes per second
    wav.extend_from_slice(&2u16.to_le_bytes()); // bytes per frame
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..samples {
        let sample = (f64::from(n) * 440.0 * std::f64::consts::TAU / f64::from(RATE)).sin() * 8_000.0;
        wav.extend_from_slice(&(sample as i16).to_le_bytes());
    }
    wav
}

struct Fault {
    path_contains: String,
    remaining: usize,
    status: StatusCode,
    retry_after_secs: Option<u64>,
}

struct Recording {
    content_type: HeaderValue,
    media: Bytes,
}

#[derive(Default)]
struct State {
    /// Account SID → auth token.
    accounts: HashMap<String, String>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    /// Call SID → Call resource; its `account_sid` says whose it is.
    calls: HashMap<String, Value>,
    /// (Conference SID, Call SID) → Participant resource.
    participants: HashMap<(String, String), Value>,
    /// (Account SID, Recording SID) → media.
    recordings: HashMap<(String, String), Recording>,
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut params = form_pairs(parts.uri.query().unwrap_or_default().as_bytes());
    params.extend(form_pairs(&body));
    let credentials = basic_auth(&parts.headers);
    let path = parts.uri.path();

    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.requests.push(RecordedRequest {
        method: parts.method.clone(),
        path: path.to_owned(),
        params: params.clone(),
        auth_user: credentials.as_ref().map(|(user, _)| user.clone()),
    });
    if let Some(reply) = state.injected_fault(path) {
        return reply;
    }
    let Some((account, resource)) = path.strip_prefix(API_PREFIX).and_then(|rest| rest.split_once('/')) else {
        return not_found(path).into_reply();
    };
    let Some((user, _)) = credentials.filter(|(user, token)| state.accounts.get(user) == Some(token)) else {
        return unauthorized();
    };
    // Another account's resources do not exist as far as these credentials can tell.
    if user != account {
        return not_found(path).into_reply();
    }
    state.route(&parts.method, path, account, resource, &params).unwrap_or_else(TwilioApiError::into_reply)
}

impl State {
    fn injected_fault(&mut self, path: &str) -> Option<Reply> {
        let fault = self.faults.iter_mut().find(|f| f.remaining > 0 && path.contains(&f.path_contains))?;
        fault.remaining -= 1;
        // Twilio's generic codes mirror the status: 20429, 20500, 20503.
        let code = 20_000 + u32::from(fault.status.as_u16());
        let mut reply =
            TwilioApiError::new(fault.status, code, fault.status.canonical_reason().unwrap_or("Error")).into_reply();
        if let Some(secs) = fault.retry_after_secs {
            reply.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        Some(reply)
    }

    fn route(
        &mut self,
        method: &Method,
        path: &str,
        account: &str,
        resource: &str,
        params: &[(String, String)],
    ) -> Result<Reply, TwilioApiError> {
        let (stem, extension) = resource.rsplit_once('.').unwrap_or((resource, ""));
        let segments: Vec<&str> = stem.split('/').collect();
        match (method, segments.as_slice(), extension) {
            (&Method::POST, ["Calls"], "json") => self.create_call(account, params),
            (&Method::POST, ["Calls", call], "json") => self.update_call(account, call, params, path),
            (&Method::POST, ["Conferences", conference, "Participants"], "json") => {
                self.create_participant(account, conference, params)
            }
            (&Method::POST, ["Conferences", conference, "Participants", call], "json") => {
                self.update_participant(account, conference, call, params, path)
            }
            (&Method::DELETE, ["Conferences", conference, "Participants", call], "json") => {
                self.participant(account, conference, call).ok_or_else(|| not_found(path))?;
                self.participants.remove(&(conference.to_string(), call.to_string()));
                Ok(reply(StatusCode::NO_CONTENT, Bytes::new()))
            }
            (&Method::GET, ["Recordings", recording], "" | "wav" | "mp3") => self.recording(account, recording, path),
            _ => Err(not_found(path)),
        }
    }

    fn create_call(&mut self, account: &str, params: &[(String, String)]) -> Result<Reply, TwilioApiError> {
        let to = required(params, "To", 21201, "No 'To' number is specified")?;
        let from = required(params, "From", 21213, "No 'From' number is specified")?;
        let param = |key| first(params, key).filter(|v| !v.is_empty());
        if param("Url").or(param("Twiml")).or(param("ApplicationSid")).is_none() {
            return Err(TwilioApiError::new(
                StatusCode::BAD_REQUEST,
                21200,
                "Either a 'Url', 'Twiml' or 'ApplicationSid' parameter is required",
            ));
        }
        check_url(params)?;
        check_status_callback_events(params)?;
        let sid = sid("CA");
        let now = now();
        let uri = format!("{API_PREFIX}{account}/Calls/{sid}");
        let call = json!({
            "sid": sid, "date_created": now, "date_updated": now, "parent_call_sid": null,
            "account_sid": account, "to": to, "to_formatted": to, "from": from, "from_formatted": from,
            "phone_number_sid": null, "status": "queued", "start_time": null, "end_time": null,
            "duration": null, "price": null, "price_unit": "USD", "direction": "outbound-api",
            "answered_by": null, "api_version": "2010-04-01", "forwarded_from": null, "group_sid": null,
            "caller_name": null, "queue_time": "0", "trunk_sid": null, "uri": format!("{uri}.json"),
            "subresource_uris": {
                "notifications": format!("{uri}/Notifications.json"),
                "recordings": format!("{uri}/Recordings.json"),
                "events": format!("{uri}/Events.json"),
            },
        });
        self.calls.insert(sid, call.clone());
        Ok(json_reply(StatusCode::CREATED, &call))
    }

    fn update_call(
        &mut self,
        account: &str,
        call_sid: &str,
        params: &[(String, String)],
        path: &str,
    ) -> Result<Reply, TwilioApiError> {
        let call =
            self.calls.get_mut(call_sid).filter(|c| c["account_sid"] == account).ok_or_else(|| not_found(path))?;
        let finished =
            matches!(call["status"].as_str(), Some("completed" | "canceled" | "failed" | "busy" | "no-answer"));
        if first(params, "Url").or(first(params, "Twiml")).is_some() {
            if finished {
                return Err(TwilioApiError::new(
                    StatusCode::BAD_REQUEST,
                    21220,
                    "Call is not in-progress. Cannot redirect.",
                ));
            }
            check_url(params)?;
        }
        let now = now();
        // Hanging up a call that has already ended changes nothing.
        if let Some(status @ ("completed" | "canceled")) = first(params, "Status")
            && !finished
        {
            call["status"] = json!(status);
            call["end_time"] = json!(now);
            call["duration"] = json!("0");
        }
        call["date_updated"] = json!(now);
        Ok(json_reply(StatusCode::OK, call))
    }

    fn create_participant(
        &mut self,
        account: &str,
        conference: &str,
        params: &[(String, String)],
    ) -> Result<Reply, TwilioApiError> {
        required(params, "To", 21201, "No 'To' number is specified")?;
        required(params, "From", 21213, "No 'From' number is specified")?;
        check_status_callback_events(params)?;
        self.check_coaching(conference, first(params, "Coaching"), first(params, "CallSidToCoach"))?;
        let call_sid = sid("CA");
        let now = now();
        let param = |key| first(params, key);
        let coached = param("CallSidToCoach");
        let participant = json!({
            "account_sid": account, "call_sid": call_sid, "label": param("Label"),
            "call_sid_to_coach": coached,
            // Twilio: coaching defaults to false unless call_sid_to_coach is given.
            "coaching": param("Coaching").map_or(coached.is_some(), is_true),
            "conference_sid": conference, "date_created": now, "date_updated": now,
            "end_conference_on_exit": param("EndConferenceOnExit").is_some_and(is_true),
            "muted": param("Muted").is_some_and(is_true), "hold": false,
            "start_conference_on_enter": param("StartConferenceOnEnter").is_none_or(is_true),
            "status": "queued",
            "uri": format!("{API_PREFIX}{account}/Conferences/{conference}/Participants/{call_sid}.json"),
        });
        self.participants.insert((conference.to_owned(), call_sid), participant.clone());
        Ok(json_reply(StatusCode::CREATED, &participant))
    }

    fn update_participant(
        &mut self,
        account: &str,
        conference: &str,
        call: &str,
        params: &[(String, String)],
        path: &str,
    ) -> Result<Reply, TwilioApiError> {
        let coaching_already = self.participant(account, conference, call).ok_or_else(|| not_found(path))?
            ["call_sid_to_coach"]
            .is_string();
        let coached = first(params, "CallSidToCoach");
        if coached.is_some() || !coaching_already {
            self.check_coaching(conference, first(params, "Coaching"), coached)?;
        }
        let participant = self.participant(account, conference, call).ok_or_else(|| not_found(path))?;
        for (key, field) in [
            ("Muted", "muted"),
            ("Hold", "hold"),
            ("Coaching", "coaching"),
            ("EndConferenceOnExit", "end_conference_on_exit"),
        ] {
            if let Some(value) = first(params, key) {
                participant[field] = json!(is_true(value));
            }
        }
        if let Some(coached) = first(params, "CallSidToCoach") {
            participant["call_sid_to_coach"] = json!(coached);
            if first(params, "Coaching").is_none() {
                participant["coaching"] = json!(true);
            }
        }
        if participant["coaching"] == false {
            participant["call_sid_to_coach"] = Value::Null;
        }
        participant["date_updated"] = json!(now());
        Ok(json_reply(StatusCode::OK, participant))
    }

    /// Twilio: `coaching=true` needs `call_sid_to_coach`, and the coached call must be in
    /// the conference (error 16028). The fake knows a conference's participants only once
    /// one is created or registered in it, so an unknown conference takes any call.
    fn check_coaching(
        &self,
        conference: &str,
        coaching: Option<&str>,
        coached: Option<&str>,
    ) -> Result<(), TwilioApiError> {
        if coaching.is_some_and(is_true) && coached.is_none_or(str::is_empty) {
            // Twilio documents the rule without a dedicated code; the fake uses its generic 20001.
            let message = "CallSidToCoach is required when Coaching is true";
            return Err(TwilioApiError::new(StatusCode::BAD_REQUEST, 20001, message));
        }
        let known = self.participants.keys().any(|(c, _)| c == conference);
        if let Some(coached) = coached.filter(|_| known && coaching.is_none_or(is_true))
            && !self.participants.contains_key(&(conference.to_owned(), coached.to_owned()))
        {
            return Err(TwilioApiError::new(
                StatusCode::BAD_REQUEST,
                16028,
                "Participant to be whispered is not present in the conference",
            ));
        }
        Ok(())
    }

    fn participant(&mut self, account: &str, conference: &str, call: &str) -> Option<&mut Value> {
        self.participants.get_mut(&(conference.to_owned(), call.to_owned())).filter(|p| p["account_sid"] == account)
    }

    fn recording(&self, account: &str, recording_sid: &str, path: &str) -> Result<Reply, TwilioApiError> {
        let recording =
            self.recordings.get(&(account.to_owned(), recording_sid.to_owned())).ok_or_else(|| not_found(path))?;
        let mut reply = reply(StatusCode::OK, recording.media.clone());
        reply.headers_mut().insert(header::CONTENT_TYPE, recording.content_type.clone());
        Ok(reply)
    }
}

fn first<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn required<'a>(
    params: &'a [(String, String)],
    key: &str,
    code: u32,
    message: &str,
) -> Result<&'a str, TwilioApiError> {
    first(params, key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TwilioApiError::new(StatusCode::BAD_REQUEST, code, message))
}

/// Twilio reads any value other than `true` as false.
fn is_true(value: &str) -> bool {
    value == "true"
}

fn check_url(params: &[(String, String)]) -> Result<(), TwilioApiError> {
    match first(params, "Url") {
        Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            Err(TwilioApiError::new(StatusCode::BAD_REQUEST, 21205, format!("Url is not a valid URL: {url}")))
        }
        _ => Ok(()),
    }
}

fn check_status_callback_events(params: &[(String, String)]) -> Result<(), TwilioApiError> {
    let valid =
        params.iter().filter(|(k, _)| k == "StatusCallbackEvent").all(|(_, v)| CALL_EVENTS.contains(&v.as_str()));
    if valid {
        Ok(())
    } else {
        Err(TwilioApiError::new(
            StatusCode::BAD_REQUEST,
            21626,
            "One or more of the StatusCallbackEvents provided were invalid.",
        ))
    }
}

/// Twilio's date format: RFC 2822 in GMT (`Tue, 31 Aug 2010 20:36:28 +0000`).
fn now() -> String {
    Utc::now().to_rfc2822()
}

fn form_pairs(raw: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(raw).unwrap_or_default()
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, token) = decoded.split_once(':')?;
    Some((user.to_owned(), token.to_owned()))
}

fn reply(status: StatusCode, body: Bytes) -> Reply {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    reply
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = reply(status, Bytes::from(body.to_string()));
    reply.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

/// An error as Twilio reports it; rendered as its body `{"code", "message", "more_info",
/// "status"}`.
struct TwilioApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl TwilioApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn into_reply(self) -> Reply {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        json_reply(self.status, &body)
    }
}

fn not_found(path: &str) -> TwilioApiError {
    TwilioApiError::new(StatusCode::NOT_FOUND, 20404, format!("The requested resource {path} was not found"))
}

fn unauthorized() -> Reply {
    let mut reply = TwilioApiError::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate").into_reply();
    reply.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Twilio API\""));
    reply
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use shared::{
        calls::CallStatus,
        providers::twilio::client::{
            Beep, CallInstructions, CallUpdate, Coaching, CreateCall, CreateParticipant, ParticipantStatus,
            RecordingFormat, StatusCallbackEvent, TwilioClient, TwilioCredentials, TwilioError, UpdateParticipant,
        },
    };

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    struct Harness {
        fake: TwilioFake,
        client: TwilioClient,
        creds: TwilioCredentials,
    }

    async fn harness() -> Harness {
        let account = sid("AC");
        let fake = TwilioFake::start([(account.clone(), TOKEN.to_owned())]).await.unwrap();
        let client = TwilioClient::new(&fake.base_url()).unwrap();
        Harness { fake, client, creds: TwilioCredentials { account_sid: account, auth_token: TOKEN.into() } }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn outbound_call() -> CreateCall {
        CreateCall::new("+14155550100", "+14155550199", CallInstructions::Url("https://sb.example/twilio/voice".into()))
    }

    fn api_error(result: Result<impl std::fmt::Debug, TwilioError>) -> (u16, Option<u32>) {
        match result {
            Err(TwilioError::Api { status, code, .. }) => (status, code),
            other => panic!("expected a Twilio API error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn create_call_sends_the_documented_form() {
        let h = harness().await;
        let call = CreateCall {
            status_callback: Some("https://sb.example/twilio/status".into()),
            status_callback_events: StatusCallbackEvent::ALL.to_vec(),
            record: Some(true),
            recording_status_callback: Some("https://sb.example/twilio/recording".into()),
            timeout_secs: Some(30),
            ..outbound_call()
        };
        let created = h.client.create_call(&h.creds, &call).await.unwrap();

        assert!(created.sid.starts_with("CA") && created.sid.len() == 34, "{}", created.sid);
        assert_eq!((created.status, created.direction.as_str()), (CallStatus::Queued, "outbound-api"));
        assert_eq!(created.to.as_str(), "+14155550100");
        let [request] = h.fake.requests().try_into().unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, format!("/2010-04-01/Accounts/{}/Calls.json", h.creds.account_sid));
        assert_eq!(request.auth_user.as_deref(), Some(h.creds.account_sid.as_str()));
        assert_eq!(
            request.params,
            params(&[
                ("To", "+14155550100"),
                ("From", "+14155550199"),
                ("Url", "https://sb.example/twilio/voice"),
                ("StatusCallback", "https://sb.example/twilio/status"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
                ("Record", "true"),
                ("RecordingStatusCallback", "https://sb.example/twilio/recording"),
                ("Timeout", "30"),
            ])
        );
    }

    #[tokio::test]
    async fn transfer_then_hang_up_updates_the_call() {
        let h = harness().await;
        let call = h.client.create_call(&h.creds, &outbound_call()).await.unwrap();
        let twiml = "<Response><Dial>+14155550123</Dial></Response>";

        h.client
            .update_call(&h.creds, &call.sid, &CallUpdate::Redirect(CallInstructions::Twiml(twiml.into())))
            .await
            .unwrap();
        let ended = h.client.update_call(&h.creds, &call.sid, &CallUpdate::Complete).await.unwrap();

        assert_eq!(ended.status, CallStatus::Completed);
        assert!(ended.end_time.is_some());
        let requests = h.fake.requests();
        let path = format!("/2010-04-01/Accounts/{}/Calls/{}.json", h.creds.account_sid, call.sid);
        assert_eq!((requests[1].path.as_str(), &requests[1].params), (path.as_str(), &params(&[("Twiml", twiml)])));
        assert_eq!(
            (requests[2].path.as_str(), &requests[2].params),
            (path.as_str(), &params(&[("Status", "completed")]))
        );
    }

    #[tokio::test]
    async fn redirecting_an_ended_call_is_a_typed_error() {
        let h = harness().await;
        let call = h.client.create_call(&h.creds, &outbound_call()).await.unwrap();
        h.client.update_call(&h.creds, &call.sid, &CallUpdate::Complete).await.unwrap();

        let redirect = CallUpdate::Redirect(CallInstructions::Url("https://sb.example/hold".into()));
        assert_eq!(api_error(h.client.update_call(&h.creds, &call.sid, &redirect).await), (400, Some(21220)));
    }

    #[tokio::test]
    async fn wrong_token_is_a_typed_401_and_not_retried() {
        let h = harness().await;
        let wrong = TwilioCredentials { auth_token: "not-the-token".into(), ..h.creds.clone() };

        assert_eq!(api_error(h.client.create_call(&wrong, &outbound_call()).await), (401, Some(20003)));
        assert_eq!(h.fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn service_unavailable_twice_then_success_is_retried() {
        let h = harness().await;
        h.fake.fail_next("/Calls.json", 2, StatusCode::SERVICE_UNAVAILABLE, None);

        let call = h.client.create_call(&h.creds, &outbound_call()).await.unwrap();

        assert_eq!(call.status, CallStatus::Queued);
        let requests = h.fake.requests();
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.params == requests[0].params));
    }

    #[tokio::test]
    async fn bad_request_is_not_retried() {
        let h = harness().await;
        let call =
            CreateCall::new("+14155550100", "+14155550199", CallInstructions::Url("ftp://sb.example/voice".into()));

        assert_eq!(api_error(h.client.create_call(&h.creds, &call).await), (400, Some(21205)));
        assert_eq!(h.fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn server_error_is_retried_for_hang_up_but_not_for_call_creation() {
        let h = harness().await;
        h.fake.fail_next("/Calls", 1, StatusCode::INTERNAL_SERVER_ERROR, None);
        assert_eq!(api_error(h.client.create_call(&h.creds, &outbound_call()).await), (500, Some(20500)));
        assert_eq!(h.fake.requests().len(), 1);

        let call = h.client.create_call(&h.creds, &outbound_call()).await.unwrap();
        h.fake.fail_next("/Calls/", 1, StatusCode::INTERNAL_SERVER_ERROR, None);
        h.client.update_call(&h.creds, &call.sid, &CallUpdate::Complete).await.unwrap();
        assert_eq!(h.fake.requests().len(), 4);
    }

    #[tokio::test]
    async fn retry_after_beyond_the_cap_is_returned_to_the_caller() {
        let h = harness().await;
        h.fake.fail_next("/Calls.json", 1, StatusCode::TOO_MANY_REQUESTS, Some(60));

        assert_eq!(api_error(h.client.create_call(&h.creds, &outbound_call()).await), (429, Some(20429)));
        assert_eq!(h.fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn supervisor_whisper_then_barge_then_leave() {
        let h = harness().await;
        let conference = sid("CF");
        let agent_call = sid("CA");
        let whisper = CreateParticipant {
            label: Some("supervisor".into()),
            muted: Some(false),
            coaching: Some(Coaching::Start { call_sid_to_coach: agent_call.clone() }),
            beep: Some(Beep::Never),
            start_conference_on_enter: Some(false),
            end_conference_on_exit: Some(false),
            early_media: Some(false),
            status_callback: Some("https://sb.example/twilio/conference".into()),
            status_callback_events: vec![StatusCallbackEvent::Answered, StatusCallbackEvent::Completed],
            ..CreateParticipant::new("+14155550199", "client:supervisor-7")
        };

        let joined = h.client.create_participant(&h.creds, &conference, &whisper).await.unwrap();
        assert_eq!((joined.conference_sid.as_str(), joined.status), (conference.as_str(), ParticipantStatus::Queued));
        assert!(joined.coaching && !joined.muted);
        assert_eq!(joined.call_sid_to_coach.as_deref(), Some(agent_call.as_str()));
        assert_eq!(joined.label.as_deref(), Some("supervisor"));

        let barge = UpdateParticipant { muted: Some(false), coaching: Some(Coaching::Stop), ..Default::default() };
        let barged = h.client.update_participant(&h.creds, &conference, &joined.call_sid, &barge).await.unwrap();
        assert!(!barged.coaching && barged.call_sid_to_coach.is_none());

        let mute = UpdateParticipant { muted: Some(true), ..Default::default() };
        assert!(h.client.update_participant(&h.creds, &conference, &joined.call_sid, &mute).await.unwrap().muted);

        h.client.delete_participant(&h.creds, &conference, &joined.call_sid).await.unwrap();
        assert_eq!(
            api_error(h.client.update_participant(&h.creds, &conference, &joined.call_sid, &mute).await),
            (404, Some(20404))
        );

        let requests = h.fake.requests();
        let participants =
            format!("/2010-04-01/Accounts/{}/Conferences/{conference}/Participants", h.creds.account_sid);
        let this_one = format!("{participants}/{}.json", joined.call_sid);
        assert_eq!(
            (&requests[0].method, requests[0].path.as_str()),
            (&Method::POST, format!("{participants}.json").as_str())
        );
        assert_eq!(
            requests[0].params,
            params(&[
                ("From", "+14155550199"),
                ("To", "client:supervisor-7"),
                ("Label", "supervisor"),
                ("Muted", "false"),
                ("Coaching", "true"),
                ("CallSidToCoach", agent_call.as_str()),
                ("Beep", "false"),
                ("StartConferenceOnEnter", "false"),
                ("EndConferenceOnExit", "false"),
                ("EarlyMedia", "false"),
                ("StatusCallback", "https://sb.example/twilio/conference"),
                ("StatusCallbackEvent", "answered"),
                ("StatusCallbackEvent", "completed"),
            ])
        );
        assert_eq!(
            (requests[1].path.as_str(), &requests[1].params),
            (this_one.as_str(), &params(&[("Muted", "false"), ("Coaching", "false")]))
        );
        assert_eq!(requests[2].params, params(&[("Muted", "true")]));
        assert_eq!(
            (&requests[3].method, requests[3].path.as_str(), requests[3].params.is_empty()),
            (&Method::DELETE, this_one.as_str(), true)
        );
    }

    #[tokio::test]
    async fn coaching_needs_a_coached_call_that_is_in_the_conference() {
        let h = harness().await;
        let conference = sid("CF");
        let (customer_call, agent_call) = (sid("CA"), sid("CA"));
        h.fake.add_participant(&h.creds.account_sid, &conference, &customer_call, Some("customer"));
        h.fake.add_participant(&h.creds.account_sid, &conference, &agent_call, Some("agent"));
        let post = |form: &[(&str, &str)]| {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Conferences/{conference}/Participants.json",
                h.fake.base_url(),
                h.creds.account_sid
            );
            reqwest::Client::new().post(url).basic_auth(&h.creds.account_sid, Some(TOKEN)).form(form).send()
        };

        let coaching_nobody = [("From", "+14155550199"), ("To", "client:supervisor-7"), ("Coaching", "true")];
        let reply = post(&coaching_nobody).await.unwrap();
        assert_eq!(reply.status().as_u16(), 400);
        assert_eq!(reply.json::<Value>().await.unwrap()["code"], 20001);
        let no_from = post(&[("To", "client:supervisor-7")]).await.unwrap();
        assert_eq!(no_from.json::<Value>().await.unwrap()["code"], 21213);

        let supervisor = |coached: &str| CreateParticipant {
            coaching: Some(Coaching::Start { call_sid_to_coach: coached.to_owned() }),
            ..CreateParticipant::new("+14155550199", "client:supervisor-7")
        };
        assert_eq!(
            api_error(h.client.create_participant(&h.creds, &conference, &supervisor(&sid("CA"))).await),
            (400, Some(16028))
        );
        let joined = h.client.create_participant(&h.creds, &conference, &supervisor(&agent_call)).await.unwrap();
        assert_eq!(joined.call_sid_to_coach.as_deref(), Some(agent_call.as_str()));

        // A participant that joined by TwiML can be removed; removing it again is a 404.
        h.client.delete_participant(&h.creds, &conference, &customer_call).await.unwrap();
        assert_eq!(
            api_error(h.client.delete_participant(&h.creds, &conference, &customer_call).await),
            (404, Some(20404))
        );
    }

    #[tokio::test]
    async fn recording_media_streams_back_byte_for_byte() {
        let h = harness().await;
        let recording = sid("RE");
        let wav = tone_wav(1_000);
        h.fake.add_recording(&h.creds.account_sid, &recording, "audio/x-wav", wav.clone());

        let media = h.client.fetch_recording(&h.creds, &recording, RecordingFormat::Wav).await.unwrap();
        assert_eq!((media.content_type.as_str(), media.content_length), ("audio/x-wav", Some(wav.len() as u64)));
        let chunks: Vec<Bytes> = media.into_stream().try_collect().await.unwrap();

        assert_eq!(chunks.concat(), wav);
        let path = format!("/2010-04-01/Accounts/{}/Recordings/{recording}.wav", h.creds.account_sid);
        assert_eq!(h.fake.requests()[0].path, path);
    }

    #[tokio::test]
    async fn recordings_are_private_to_their_account() {
        let (tenant_a, tenant_b) = (sid("AC"), sid("AC"));
        let fake = TwilioFake::start([(tenant_a.clone(), TOKEN.to_owned()), (tenant_b.clone(), TOKEN.to_owned())])
            .await
            .unwrap();
        let client = TwilioClient::new(&fake.base_url()).unwrap();
        let recording = sid("RE");
        fake.add_recording(&tenant_a, &recording, "audio/x-wav", tone_wav(100));
        let creds_b = TwilioCredentials { account_sid: tenant_b, auth_token: TOKEN.into() };

        assert_eq!(
            api_error(client.fetch_recording(&creds_b, &recording, RecordingFormat::Wav).await),
            (404, Some(20404))
        );
        assert_eq!(
            api_error(client.fetch_recording(&creds_b, &sid("RE"), RecordingFormat::Mp3).await),
            (404, Some(20404))
        );
    }

    #[test]
    fn tone_wav_is_a_valid_8khz_mono_pcm_file() {
        let wav = tone_wav(1_000);
        assert_eq!(wav.len(), 44 + 16_000);
        assert_eq!((&wav[0..4], &wav[8..16], &wav[36..40]), (&b"RIFF"[..], &b"WAVEfmt "[..], &b"data"[..]));
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), wav.len() as u32 - 8);
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8_000);
        assert!(wav[44..].iter().any(|&b| b != 0));
    }

    #[tokio::test]
    async fn refuses_non_loopback_addresses() {
        let error = TwilioFake::bind(SocketAddr::from(([0, 0, 0, 0], 0)), []).await.err().unwrap();
        assert!(error.to_string().contains("loopback"));
    }

    #[tokio::test]
    async fn shutdown_closes_the_port() {
        let h = harness().await;
        h.fake.shutdown().await;

        let result = h.client.create_call(&h.creds, &outbound_call()).await;
        assert!(matches!(result, Err(TwilioError::Transport(_))), "{result:?}");
    }
}
