//! A Twilio call, played into Switchboard: the callbacks Twilio would send for an
//! inbound call (voice → ringing → in-progress → final status → recording completed),
//! each form-encoded and signed with the account's token exactly as Twilio signs them,
//! optionally duplicated and shuffled as real networks deliver them.

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, seq::SliceRandom};
use shared::{
    calls::{CallStatus, Direction, lifecycle::StatusReport},
    phone::Address,
    providers::twilio::signature,
    tenants::TenantId,
};

use crate::twilio_fake;

/// What happens on the simulated call.
#[derive(Debug, Clone)]
pub struct CallScript {
    pub call_sid: String,
    pub from: String,
    pub to: String,
    pub caller_name: Option<String>,
    pub started_at: DateTime<Utc>,
    /// `Completed` (answered, talks `talk_seconds`) or an unanswered final status.
    pub outcome: CallStatus,
    pub talk_seconds: u32,
    /// Set when the call was recorded: the recording's SID.
    pub recording_sid: Option<String>,
}

impl CallScript {
    /// A plausible call: mostly answered and recorded, sometimes busy or unanswered.
    pub fn random(to: &str, rng: &mut impl Rng) -> Self {
        let outcome = match rng.random_range(0..10) {
            0 => CallStatus::Busy,
            1 => CallStatus::NoAnswer,
            2 => CallStatus::Failed,
            _ => CallStatus::Completed,
        };
        let answered = outcome == CallStatus::Completed;
        Self {
            call_sid: twilio_fake::sid("CA"),
            from: format!("+1{}{:07}", rng.random_range(201..990), rng.random_range(0..10_000_000)),
            to: to.to_owned(),
            caller_name: Some(["Ada Lovelace", "Grace Hopper", "Alan Turing"][rng.random_range(0..3)].to_owned()),
            // The voice request (which has no Timestamp) starts the call now; later
            // callbacks carry Twilio's whole-second timestamps from there.
            started_at: DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("valid"),
            outcome,
            talk_seconds: if answered { rng.random_range(5..600) } else { 0 },
            recording_sid: answered.then(|| twilio_fake::sid("RE")),
        }
    }

    /// The same call, placed now: Twilio's clock for a call starts with its voice request.
    pub fn placed_now(mut self) -> Self {
        self.started_at = DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("valid");
        self
    }

    /// The statuses this call passes through, in order, and when.
    /// The status reports `webhook-twilio` makes of this call's callbacks (for writing
    /// them straight to the store, as the benchmarks' raw path does).
    pub fn status_reports(&self, tenant: &TenantId, account: &str) -> Vec<StatusReport> {
        self.timeline()
            .into_iter()
            .enumerate()
            .map(|(sequence, (status, at))| StatusReport {
                tenant_id: tenant.clone(),
                provider: "twilio",
                account: account.to_owned(),
                provider_call_sid: self.call_sid.clone(),
                status,
                occurred_at: at,
                direction: Direction::Inbound,
                from: Address::parse(&self.from).expect("scripts hold valid numbers"),
                to: Address::parse(&self.to).expect("scripts hold valid numbers"),
                caller_name: self.caller_name.clone(),
                duration_seconds: status.is_terminal().then_some(self.talk_seconds),
                sequence: Some(sequence as u32),
            })
            .collect()
    }

    pub fn timeline(&self) -> Vec<(CallStatus, DateTime<Utc>)> {
        let ring = self.started_at + Duration::seconds(1);
        let mut steps = vec![(CallStatus::Ringing, ring)];
        let mut end = ring + Duration::seconds(8);
        if self.outcome == CallStatus::Completed {
            steps.push((CallStatus::InProgress, end));
            end += Duration::seconds(self.talk_seconds.into());
        }
        steps.push((self.outcome, end));
        steps
    }
}

/// One HTTP callback Twilio would make.
#[derive(Debug, Clone)]
pub struct Callback {
    /// `voice`, `status`, `recording` (with a query string where Twilio would add one).
    pub subpath: String,
    pub params: Vec<(String, String)>,
}

fn rfc2822(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// Every callback of `script` in Twilio's order: `voice` first (Twilio waits for its
/// TwiML), then a status callback per step, then the recording's.
pub fn callbacks(account_sid: &str, script: &CallScript) -> Vec<Callback> {
    let base = |status: CallStatus| -> Vec<(String, String)> {
        let mut p = vec![
            ("AccountSid".into(), account_sid.to_owned()),
            ("ApiVersion".into(), "2010-04-01".into()),
            ("CallSid".into(), script.call_sid.clone()),
            ("CallStatus".into(), status.as_str().into()),
            ("Direction".into(), "inbound".into()),
            ("From".into(), script.from.clone()),
            ("To".into(), script.to.clone()),
            ("Called".into(), script.to.clone()),
            ("Caller".into(), script.from.clone()),
        ];
        if let Some(name) = &script.caller_name {
            p.push(("CallerName".into(), name.clone()));
        }
        p
    };
    let mut out = vec![Callback { subpath: "voice".into(), params: base(CallStatus::Ringing) }];
    for (sequence, (status, at)) in script.timeline().into_iter().enumerate() {
        let mut params = base(status);
        params.push(("SequenceNumber".into(), sequence.to_string()));
        params.push(("Timestamp".into(), rfc2822(at)));
        params.push(("CallbackSource".into(), "call-progress-events".into()));
        if status.is_terminal() {
            params.push(("CallDuration".into(), script.talk_seconds.to_string()));
        }
        out.push(Callback { subpath: "status".into(), params });
    }
    if let Some(recording_sid) = &script.recording_sid {
        out.push(Callback {
            subpath: "recording".into(),
            params: vec![
                ("AccountSid".into(), account_sid.to_owned()),
                ("CallSid".into(), script.call_sid.clone()),
                ("RecordingSid".into(), recording_sid.clone()),
                (
                    "RecordingUrl".into(),
                    format!("https://api.twilio.com/2010-04-01/Accounts/{account_sid}/Recordings/{recording_sid}"),
                ),
                ("RecordingStatus".into(), "completed".into()),
                ("RecordingDuration".into(), script.talk_seconds.to_string()),
                ("RecordingChannels".into(), "1".into()),
                ("RecordingSource".into(), "RecordVerb".into()),
            ],
        });
    }
    out
}

/// Network weather: each status/recording callback delivered twice, and/or in random
/// order. `voice` always comes first: Twilio cannot proceed without its answer.
pub fn disorder(mut callbacks: Vec<Callback>, duplicate: bool, shuffle: bool, rng: &mut impl Rng) -> Vec<Callback> {
    let voice = callbacks.remove(0);
    if duplicate {
        callbacks = callbacks.into_iter().flat_map(|c| [c.clone(), c]).collect();
    }
    if shuffle {
        callbacks.shuffle(rng);
    }
    std::iter::once(voice).chain(callbacks).collect()
}

/// Delivers callbacks to `webhook_base` (e.g. `http://127.0.0.1:54321/functions/v1/webhook-twilio`).
#[derive(Clone)]
pub struct Caller {
    pub http: reqwest::Client,
    pub webhook_base: String,
    pub auth_token: String,
}

impl Caller {
    /// POSTs one callback, signed; returns the status and body.
    pub async fn deliver(&self, callback: &Callback) -> anyhow::Result<(u16, String)> {
        let url = format!("{}/{}", self.webhook_base, callback.subpath);
        let signature = signature::compute(&self.auth_token, &url, &callback.params);
        let response = self
            .http
            .post(&url)
            .header("x-twilio-signature", signature)
            .form(&callback.params)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}
