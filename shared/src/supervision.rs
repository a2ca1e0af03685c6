//! Supervisor actions on a live call (seed 004 "Admin Call Actions", `admin` scope): a
//! supervisor listens in (`monitor`), joins the conversation (`barge`), coaches the agent
//! without the caller hearing (`whisper`), or ends the call (`disconnect`).
//!
//! A routed call sits in a Twilio conference of its own (`departments::route_inbound`),
//! tracked on the call by the conference's status callbacks
//! (`providers::twilio::conference`). The supervisor is dialled into it with Twilio's
//! Participants API, from the tenant's line on the call, with the tenant's credentials:
//!
//! | action       | request                                                                          |
//! |--------------|----------------------------------------------------------------------------------|
//! | `monitor`    | `POST …/Conferences/{CF}/Participants.json`: `From`, `To`, `Label=supervisor`, `Muted=true`, `Beep=false`, `StartConferenceOnEnter=false` |
//! | `barge`      | the same with `Muted=false`                                                      |
//! | `whisper`    | the same with `Muted=false`, `Coaching=true`, `CallSidToCoach=<agent's call>`    |
//! | `disconnect` | `DELETE …/Conferences/{CF}/Participants/{customer's call}.json`                  |
//!
//! `StartConferenceOnEnter=false` keeps a supervisor who joins before the agent from
//! starting the conference (the caller keeps the hold music). The customer joined with
//! `endConferenceOnExit`, so removing it ends the conference and the call.
//!
//! Each attempt is written to the audit log before it is made, so no action can go
//! unaudited whatever happens next; a performed action is appended to the call's timeline
//! as `call.supervisor_action`, from where the outbox carries it on.

use std::fmt;

use chrono::Utc;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::{
    AppContext,
    audit::AuditEntry,
    calls::{Call, CallEvent, CallStatus, Direction, lifecycle::call_id_for, model::ConferenceRef},
    edge::ApiError,
    phone::E164,
    providers::twilio::client::{Beep, Coaching, CreateParticipant, Endpoint, TwilioCredentials, TwilioError},
    tenants::{Principal, TenantId, providers::ProviderKind},
};

/// The audit action and the timeline event type of a supervisor action.
pub const EVENT_KIND: &str = "call.supervisor_action";
/// The `Label` of a supervisor's participant.
pub const SUPERVISOR_LABEL: &str = "supervisor";
const FIELDS: [&str; 3] = ["call_sid", "action", "supervisor_id"];
/// Twilio Client identities: at most 121 characters.
const MAX_IDENTITY: usize = 121;
/// Bounds how much of Twilio's error message is passed on.
const MAX_PROVIDER_MESSAGE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Monitor,
    Barge,
    Whisper,
    Disconnect,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Monitor, Action::Barge, Action::Whisper, Action::Disconnect];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Monitor => "monitor",
            Action::Barge => "barge",
            Action::Whisper => "whisper",
            Action::Disconnect => "disconnect",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw)
    }
}

/// Who supervises: a phone number, or a Twilio Client identity (`client:<identity>`).
#[derive(Clone, PartialEq, Eq)]
pub enum Supervisor {
    Phone(E164),
    Client(String),
}

impl Supervisor {
    pub fn parse(raw: &str) -> Option<Self> {
        if let Ok(number) = E164::parse(raw) {
            return Some(Supervisor::Phone(number));
        }
        let identity = raw.strip_prefix("client:")?;
        let valid = (1..=MAX_IDENTITY).contains(&identity.len())
            && identity.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
        valid.then(|| Supervisor::Client(identity.to_owned()))
    }

    /// As given: what Twilio dials (`To`) and what the audit log keeps.
    pub fn address(&self) -> String {
        match self {
            Supervisor::Phone(number) => number.as_str().to_owned(),
            Supervisor::Client(identity) => format!("client:{identity}"),
        }
    }

    /// As the timeline (and so the CRM) shows it: a number masked like every number
    /// Switchboard prints, a client identity as it is.
    pub fn masked(&self) -> String {
        match self {
            Supervisor::Phone(number) => number.masked(),
            Supervisor::Client(_) => self.address(),
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Supervisor({})", self.masked())
    }
}

/// How a request names the call: Twilio's CallSid of the caller's leg, or our call id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRef {
    CallSid(String),
    CallId(String),
}

impl CallRef {
    pub fn parse(raw: &str) -> Option<Self> {
        if is_sid("CA", raw) {
            return Some(CallRef::CallSid(raw.to_owned()));
        }
        uuid::Uuid::parse_str(raw).ok().filter(|_| raw.len() == 36).map(|id| CallRef::CallId(id.to_string()))
    }

    fn as_str(&self) -> &str {
        match self {
            CallRef::CallSid(sid) => sid,
            CallRef::CallId(id) => id,
        }
    }
}

/// The body of `POST api-calls-admin-action`, validated.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub call: CallRef,
    pub action: Action,
    pub supervisor: Supervisor,
}

impl ActionRequest {
    /// `{"call_sid", "action", "supervisor_id"}`; a 400 names the first bad field.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let not_an_object =
            || ApiError::BadRequest("the body must be a JSON object with call_sid, action and supervisor_id".into());
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
            return Err(not_an_object());
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let unknown: String = unknown.chars().take(64).collect();
            return Err(ApiError::invalid(
                &unknown,
                format!("unknown field '{unknown}'; expected {}", FIELDS.join(", ")),
            ));
        }
        let text = |name: &'static str| match object.get(name) {
            None | Some(Value::Null) => Err(ApiError::invalid(name, format!("{name} is required"))),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(ApiError::invalid(name, format!("{name} is required")))
            }
            Some(Value::String(s)) => Ok(s.trim()),
            Some(_) => Err(ApiError::invalid(name, format!("{name} must be a string"))),
        };
        let call = CallRef::parse(text("call_sid")?).ok_or_else(|| {
            ApiError::invalid(
                "call_sid",
                "call_sid must be a Twilio CallSid (CA followed by 32 hex digits) or a call id (a UUID)",
            )
        })?;
        let action = Action::parse(text("action")?)
            .ok_or_else(|| ApiError::invalid("action", "action must be one of monitor, barge, whisper, disconnect"))?;
        let supervisor = Supervisor::parse(text("supervisor_id")?).ok_or_else(|| {
            ApiError::invalid(
                "supervisor_id",
                "supervisor_id must be an E.164 phone number such as +14155550100, or client:<identity> (letters, digits, _ - . @)",
            )
        })?;
        Ok(Self { call, action, supervisor })
    }
}

/// What Twilio is to be asked for one action on one call.
#[derive(Debug, Clone)]
pub enum ParticipantRequest {
    /// Dial the supervisor into the conference.
    Add { conference_sid: String, participant: CreateParticipant },
    /// Remove a participant (the customer) from the conference.
    Remove { conference_sid: String, call_sid: String },
}

impl ParticipantRequest {
    pub fn conference_sid(&self) -> &str {
        match self {
            ParticipantRequest::Add { conference_sid, .. } | ParticipantRequest::Remove { conference_sid, .. } => {
                conference_sid
            }
        }
    }
}

/// The request an action makes of Twilio on this call, or the 409 saying why it cannot
/// be made: the call is not live, not in a conference, or has no agent to whisper to.
pub fn plan(
    call: &Call,
    conference: &ConferenceRef,
    action: Action,
    supervisor: &Supervisor,
) -> Result<ParticipantRequest, ApiError> {
    if call.provider != "twilio" {
        return Err(ApiError::Conflict("supervisor actions need a call made through Twilio".into()));
    }
    match call.status {
        CallStatus::InProgress => {}
        status if status.is_terminal() => {
            return Err(ApiError::Conflict(format!("the call has already ended ({})", status.as_str())));
        }
        status => {
            return Err(ApiError::Conflict(format!("the call is not in progress yet ({})", status.as_str())));
        }
    }
    let (Some(conference_sid), Some(customer)) = (conference.live_sid(), conference.customer_call_sid.as_deref())
    else {
        return Err(ApiError::Conflict("the call is not in a conference".into()));
    };
    let conference_sid = conference_sid.to_owned();
    let (muted, coaching) = match action {
        Action::Disconnect => {
            return Ok(ParticipantRequest::Remove { conference_sid, call_sid: customer.to_owned() });
        }
        Action::Monitor => (true, None),
        Action::Barge => (false, None),
        Action::Whisper => {
            let agent = conference
                .agent_call_sid
                .clone()
                .ok_or_else(|| ApiError::Conflict("no agent is on the call to whisper to".into()))?;
            (false, Some(Coaching::Start { call_sid_to_coach: agent }))
        }
    };
    // The tenant's number on the call: the one dialled, or the one an outbound call shows.
    let line = match call.direction {
        Direction::Inbound => &call.to_number,
        Direction::Outbound => &call.from_number,
    };
    // Twilio dials a phone only from a phone number (a Twilio number or verified caller id).
    if matches!(supervisor, Supervisor::Phone(_)) && line.e164().is_none() {
        return Err(ApiError::Conflict(
            "the call's line is not a phone number, so only a client:<identity> supervisor can join it".into(),
        ));
    }
    let participant = CreateParticipant {
        label: Some(SUPERVISOR_LABEL.into()),
        muted: Some(muted),
        coaching,
        beep: Some(Beep::Never),
        start_conference_on_enter: Some(false),
        ..CreateParticipant::new(Endpoint::from(line.as_str()), Endpoint::from(supervisor.address()))
    };
    Ok(ParticipantRequest::Add { conference_sid, participant })
}

/// The answer to a performed action.
#[derive(Debug, Clone, Serialize)]
pub struct Performed {
    pub action: Action,
    pub call_id: String,
    /// The caller's leg, as Twilio names it.
    pub call_sid: Option<String>,
    /// The supervisor's new leg (monitor, barge, whisper).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_call_sid: Option<String>,
}

/// Resolves the tenant's call, checks it can be supervised, audits the attempt, asks
/// Twilio, and records the action on the call's timeline. 404 for a call this tenant does
/// not have; 409 when the call is not live or not in a conference; 502 when Twilio refuses.
pub async fn perform(ctx: &AppContext, principal: &Principal, request: &ActionRequest) -> Result<Performed, ApiError> {
    let tenant = &principal.tenant_id;
    let (call, conference, account_sid) = resolve(ctx, tenant, &request.call).await?;
    let twilio_request = plan(&call, &conference, request.action, &request.supervisor)?;
    let no_account = || ApiError::Conflict("the call's Twilio account is no longer configured for this tenant".into());
    let account =
        ctx.providers.credentials(tenant, &account_sid.ok_or_else(no_account)?).await?.ok_or_else(no_account)?;
    if !account.active {
        return Err(ApiError::Conflict("the call's Twilio account is disabled".into()));
    }
    let credentials = TwilioCredentials::from(&account);

    let mut entry = AuditEntry::new(tenant, EVENT_KIND, &principal.key_id, Some(&call.id));
    entry.detail.extend([
        ("action".to_owned(), request.action.as_str().into()),
        ("supervisor_id".to_owned(), request.supervisor.address().into()),
        ("call_sid".to_owned(), call.provider_call_sid.clone().into()),
        ("conference_sid".to_owned(), twilio_request.conference_sid().into()),
    ]);
    ctx.audit.record(&entry).await?;

    let twilio = ctx.twilio()?;
    let participant_call_sid = match &twilio_request {
        ParticipantRequest::Add { conference_sid, participant } => {
            let joined =
                twilio.create_participant(&credentials, conference_sid, participant).await.map_err(provider_error)?;
            Some(joined.call_sid)
        }
        ParticipantRequest::Remove { conference_sid, call_sid } => {
            twilio.delete_participant(&credentials, conference_sid, call_sid).await.map_err(provider_error)?;
            None
        }
    };

    let event = CallEvent {
        id: uuid::Uuid::now_v7().to_string(),
        call_id: call.id.clone(),
        kind: EVENT_KIND.into(),
        status: None,
        occurred_at: Utc::now(),
        source: "api".into(),
        detail: serde_json::Map::from_iter([
            ("action".to_owned(), request.action.as_str().into()),
            ("supervisor".to_owned(), request.supervisor.masked().into()),
        ]),
    };
    ctx.calls.append_event(tenant, &event).await?;
    Ok(Performed { action: request.action, call_id: call.id, call_sid: call.provider_call_sid, participant_call_sid })
}

/// The tenant's call with its conference, and which of the tenant's Twilio accounts it
/// came through (call ids are derived from account and CallSid, see `call_id_for`).
async fn resolve(
    ctx: &AppContext,
    tenant: &TenantId,
    call_ref: &CallRef,
) -> Result<(Call, ConferenceRef, Option<String>), ApiError> {
    let not_found = || ApiError::NotFound(format!("no call {}", call_ref.as_str()));
    let accounts: Vec<String> = ctx
        .providers
        .list(tenant)
        .await?
        .into_iter()
        .filter(|a| a.kind == ProviderKind::Twilio)
        .map(|a| a.account_sid)
        .collect();
    match call_ref {
        CallRef::CallSid(sid) => {
            for account in accounts {
                if let Some((call, conference)) =
                    ctx.calls.get_with_conference(tenant, &call_id_for("twilio", &account, sid)).await?
                {
                    return Ok((call, conference, Some(account)));
                }
            }
            Err(not_found())
        }
        CallRef::CallId(id) => {
            let (call, conference) = ctx.calls.get_with_conference(tenant, id).await?.ok_or_else(not_found)?;
            let account = call
                .provider_call_sid
                .as_deref()
                .and_then(|sid| accounts.into_iter().find(|account| call_id_for("twilio", account, sid) == call.id));
            Ok((call, conference, account))
        }
    }
}

/// Twilio's refusal as the caller should see it: a conference that is gone is the call's
/// state (409); anything else is Twilio's (502, with Twilio's message, which never holds
/// credentials).
fn provider_error(error: TwilioError) -> ApiError {
    let bad_gateway = |code, message| ApiError::Refused { status: StatusCode::BAD_GATEWAY, code, message };
    match error {
        TwilioError::Api { status: 404, .. } => ApiError::Conflict("the call is no longer in a conference".into()),
        TwilioError::Api { status, code, message, .. } => {
            let code = code.map(|c| format!(", code {c}")).unwrap_or_default();
            let message: String = message.chars().take(MAX_PROVIDER_MESSAGE).collect();
            bad_gateway("provider_error", format!("Twilio refused the request (HTTP {status}{code}): {message}"))
        }
        TwilioError::Timeout | TwilioError::Transport(_) => bad_gateway(
            "provider_unavailable",
            "Twilio could not be reached; nothing may have happened, try again".into(),
        ),
        other => ApiError::Unexpected(other.into()),
    }
}

fn is_sid(prefix: &str, raw: &str) -> bool {
    raw.len() == 34 && raw.starts_with(prefix) && raw[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
    const AGENT_SID: &str = "CAfedcba9876543210fedcba9876543210";
    const CF: &str = "CF0123456789abcdef0123456789abcdef";
    const CALL_ID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f";

    fn parse(body: serde_json::Value) -> Result<ActionRequest, ApiError> {
        ActionRequest::parse(body.to_string().as_bytes())
    }

    fn field(result: Result<ActionRequest, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    fn call(status: &str, direction: &str) -> Call {
        serde_json::from_value(serde_json::json!({
            "id": CALL_ID, "tenant_id": "0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30", "provider": "twilio",
            "provider_call_sid": CALL_SID, "direction": direction, "from_number": "+12025550143",
            "to_number": "+14155550100", "status": status, "started_at": "2026-01-05T10:00:00Z",
        }))
        .unwrap()
    }

    fn conference(agent: bool) -> ConferenceRef {
        ConferenceRef {
            conference_sid: Some(CF.into()),
            conference_name: Some(format!("sales-{CALL_ID}")),
            customer_call_sid: Some(CALL_SID.into()),
            agent_call_sid: agent.then(|| AGENT_SID.into()),
            ended_conference_sid: None,
        }
    }

    fn phone() -> Supervisor {
        Supervisor::parse("+14155550177").unwrap()
    }

    fn added(request: ParticipantRequest) -> CreateParticipant {
        match request {
            ParticipantRequest::Add { conference_sid, participant } => {
                assert_eq!(conference_sid, CF);
                participant
            }
            other => panic!("expected a participant to add, got {other:?}"),
        }
    }

    fn conflict(result: Result<ParticipantRequest, ApiError>) -> String {
        match result {
            Err(ApiError::Conflict(message)) => message,
            other => panic!("expected a 409, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_body_names_the_call_by_sid_or_id() {
        let request =
            parse(serde_json::json!({"call_sid": CALL_SID, "action": "whisper", "supervisor_id": "client:sup_7"}))
                .unwrap();
        assert_eq!(request.call, CallRef::CallSid(CALL_SID.into()));
        assert_eq!(request.action, Action::Whisper);
        assert_eq!(request.supervisor, Supervisor::Client("sup_7".into()));
        let by_id = parse(serde_json::json!({"call_sid": CALL_ID.to_uppercase(), "action": "monitor", "supervisor_id": "+14155550177"})).unwrap();
        assert_eq!(by_id.call, CallRef::CallId(CALL_ID.into()));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let ok = serde_json::json!({"call_sid": CALL_SID, "action": "monitor", "supervisor_id": "+14155550177"});
        let with = |name: &str, value: serde_json::Value| {
            let mut body = ok.clone();
            body[name] = value;
            body
        };
        for (body, expected) in [
            (with("call_sid", "CA123".into()), "call_sid"),
            (with("call_sid", "CA0123456789abcdef0123456789abcdeg".into()), "call_sid"),
            (with("call_sid", serde_json::Value::Null), "call_sid"),
            (with("call_sid", 7.into()), "call_sid"),
            (with("action", "listen".into()), "action"),
            (with("action", "  ".into()), "action"),
            (with("supervisor_id", "4155550177".into()), "supervisor_id"),
            (with("supervisor_id", "client:".into()), "supervisor_id"),
            (with("supervisor_id", "client:a b".into()), "supervisor_id"),
            (with("supervisor", "+14155550177".into()), "supervisor"),
        ] {
            assert_eq!(field(parse(body.clone())), expected, "{body}");
        }
        assert!(matches!(ActionRequest::parse(b"[1]"), Err(ApiError::BadRequest(_))));
        assert!(matches!(ActionRequest::parse(b""), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn monitor_joins_muted_and_silent_from_the_line_the_caller_dialled() {
        let monitor =
            added(plan(&call("in-progress", "inbound"), &conference(true), Action::Monitor, &phone()).unwrap());
        assert_eq!((monitor.from.as_str(), monitor.to.as_str()), ("+14155550100", "+14155550177"));
        assert_eq!(monitor.label.as_deref(), Some(SUPERVISOR_LABEL));
        assert_eq!((monitor.muted, monitor.beep, monitor.coaching), (Some(true), Some(Beep::Never), None));
        assert_eq!((monitor.start_conference_on_enter, monitor.end_conference_on_exit), (Some(false), None));

        let barge = added(plan(&call("in-progress", "outbound"), &conference(true), Action::Barge, &phone()).unwrap());
        assert_eq!((barge.from.as_str(), barge.muted, barge.coaching), ("+12025550143", Some(false), None));
    }

    #[test]
    fn whisper_coaches_the_agent_and_needs_one() {
        let supervisor = Supervisor::parse("client:sup_7").unwrap();
        let whisper =
            added(plan(&call("in-progress", "inbound"), &conference(true), Action::Whisper, &supervisor).unwrap());
        assert_eq!(whisper.to.as_str(), "client:sup_7");
        assert_eq!(whisper.coaching, Some(Coaching::Start { call_sid_to_coach: AGENT_SID.into() }));
        assert_eq!(whisper.muted, Some(false));
        let message = conflict(plan(&call("in-progress", "inbound"), &conference(false), Action::Whisper, &supervisor));
        assert!(message.contains("no agent"), "{message}");
    }

    #[test]
    fn disconnect_removes_the_customer() {
        match plan(&call("in-progress", "inbound"), &conference(false), Action::Disconnect, &phone()).unwrap() {
            ParticipantRequest::Remove { conference_sid, call_sid } => {
                assert_eq!((conference_sid.as_str(), call_sid.as_str()), (CF, CALL_SID))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_live_call_in_a_live_conference_can_be_supervised() {
        let live = conference(true);
        assert!(
            conflict(plan(&call("completed", "inbound"), &live, Action::Monitor, &phone()))
                .contains("ended (completed)")
        );
        assert!(
            conflict(plan(&call("ringing", "inbound"), &live, Action::Barge, &phone())).contains("not in progress")
        );
        let in_progress = call("in-progress", "inbound");
        let never = ConferenceRef::default();
        assert_eq!(conflict(plan(&in_progress, &never, Action::Monitor, &phone())), "the call is not in a conference");
        let ended = ConferenceRef { ended_conference_sid: Some(CF.into()), ..live.clone() };
        assert_eq!(
            conflict(plan(&in_progress, &ended, Action::Disconnect, &phone())),
            "the call is not in a conference"
        );
        let customer_left = ConferenceRef { customer_call_sid: None, ..live };
        assert_eq!(
            conflict(plan(&in_progress, &customer_left, Action::Monitor, &phone())),
            "the call is not in a conference"
        );
    }

    #[test]
    fn a_phone_supervisor_needs_a_phone_line() {
        let mut from_client = call("in-progress", "outbound");
        from_client.from_number = crate::phone::Address::parse("client:agent-7").unwrap();
        assert!(
            conflict(plan(&from_client, &conference(true), Action::Monitor, &phone())).contains("client:<identity>")
        );
        let client = Supervisor::parse("client:sup_7").unwrap();
        assert_eq!(
            added(plan(&from_client, &conference(true), Action::Monitor, &client).unwrap()).from.as_str(),
            "client:agent-7"
        );
    }

    #[test]
    fn the_timeline_masks_a_supervisors_number() {
        assert_eq!(phone().masked(), "+1********77");
        assert_eq!(format!("{:?}", phone()), "Supervisor(+1********77)");
        assert_eq!(Supervisor::parse("client:sup_7").unwrap().masked(), "client:sup_7");
    }

    #[test]
    fn a_gone_conference_is_a_409_and_other_refusals_a_502_with_twilios_message() {
        let gone = TwilioError::Api { status: 404, code: Some(20404), message: "not found".into(), more_info: None };
        assert!(matches!(provider_error(gone), ApiError::Conflict(m) if m == "the call is no longer in a conference"));
        let refused =
            TwilioError::Api { status: 400, code: Some(21216), message: "Call blocked".into(), more_info: None };
        let error = provider_error(refused);
        assert_eq!((error.status(), error.code()), (StatusCode::BAD_GATEWAY, "provider_error"));
        assert!(error.to_string().ends_with("code 21216): Call blocked"), "{error}");
        assert_eq!(provider_error(TwilioError::Timeout).status(), StatusCode::BAD_GATEWAY);
    }
}
