//! The body of a create (POST) or partial update (PUT) of an agent, parsed field by
//! field so a 400 names the field (`skills.spanish`, `departments[1]`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Agent, AgentState};
use crate::{edge::ApiError, phone::E164, tenants::TenantId};

pub const MAX_SKILLS: usize = 50;
pub const MAX_DEPARTMENTS: usize = 50;
pub const SKILL_LEVELS: std::ops::RangeInclusive<i64> = 1..=10;

/// An agent as the CRM writes it. Unknown fields are refused; for the nullable contact
/// fields `null` clears and leaving the field out keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInput {
    agent_id: Option<String>,
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    client_identity: Option<Option<String>>,
    skills: Option<BTreeMap<String, i64>>,
    departments: Option<Vec<String>>,
    state: Option<String>,
}

/// Every field of an [`AgentInput`], parsed; `None` leaves it as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentChanges {
    pub name: Option<String>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<E164>>,
    pub client_identity: Option<Option<String>>,
    pub skills: Option<BTreeMap<String, u8>>,
    pub departments: Option<Vec<String>>,
    pub state: Option<AgentState>,
}

impl AgentInput {
    /// The agent a PUT changes; not a field.
    pub fn agent_id(&self) -> Option<&str> {
        self.agent_id.as_deref()
    }

    /// Parses each field, failing on the first bad one with a 400 that names it.
    pub fn validate(self) -> Result<AgentChanges, ApiError> {
        Ok(AgentChanges {
            name: self.name.map(|v| text("name", &v, 100)).transpose()?,
            email: self.email.map(|v| v.map(|e| email(&e)).transpose()).transpose()?,
            phone: self
                .phone
                .map(|v| v.map(|p| E164::parse(&p).map_err(|e| ApiError::invalid("phone", e.to_string()))).transpose())
                .transpose()?,
            client_identity: self.client_identity.map(|v| v.map(|c| identity(&c)).transpose()).transpose()?,
            skills: self.skills.map(skills).transpose()?,
            departments: self.departments.map(departments).transpose()?,
            state: self
                .state
                .map(|s| {
                    AgentState::parse(&s)
                        .ok_or_else(|| ApiError::invalid("state", "must be one of available, busy, away, offline"))
                })
                .transpose()?,
        })
    }
}

impl AgentChanges {
    /// Whether anything besides the availability state changes (settings scope).
    pub fn changes_profile(&self) -> bool {
        self.name.is_some()
            || self.email.is_some()
            || self.phone.is_some()
            || self.client_identity.is_some()
            || self.skills.is_some()
            || self.departments.is_some()
    }

    /// A new agent: `name` and a way to ring them (phone or client_identity) are
    /// required; the state defaults to offline.
    pub fn create(self, tenant: TenantId, now: DateTime<Utc>) -> Result<Agent, ApiError> {
        let name = self.name.clone().ok_or_else(|| ApiError::invalid("name", "is required"))?;
        let mut agent = Agent {
            agent_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant,
            name,
            email: None,
            phone: None,
            client_identity: None,
            skills: BTreeMap::new(),
            departments: Vec::new(),
            state: AgentState::Offline,
            state_since: now,
            current_call_id: None,
            idle_since: None,
            idle_secs_today: 0,
            idle_day: Some(now.date_naive()),
            last_call_at: None,
            created_at: now,
            updated_at: now,
            version: 0,
        };
        let state = self.state;
        agent = self.apply_profile(agent, now)?;
        if let Some(state) = state {
            agent.transition(state, None, now);
        }
        Ok(agent)
    }

    /// Changes the profile fields the body names and keeps the rest (the state is the
    /// store's to change, with its log entry).
    pub fn apply_profile(self, mut agent: Agent, now: DateTime<Utc>) -> Result<Agent, ApiError> {
        macro_rules! set {
            ($($field:ident),+) => { $(if let Some(v) = self.$field { agent.$field = v; })+ };
        }
        set!(name, email, phone, client_identity, skills, departments);
        if agent.phone.is_none() && agent.client_identity.is_none() {
            return Err(ApiError::invalid("phone", "an agent needs a phone or a client_identity to be rung"));
        }
        agent.updated_at = now;
        Ok(agent)
    }
}

fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn text(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let value = raw.trim();
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, format!("must be 1 to {max} characters without control characters")));
    }
    Ok(value.to_owned())
}

fn email(raw: &str) -> Result<String, ApiError> {
    let value = raw.trim();
    let valid = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| value.to_owned()).ok_or_else(|| ApiError::invalid("email", "must be an email address"))
}

/// Twilio's rule for Client names (error 31105): at most 256 characters, none of them
/// control, space, delimiter or "unwise" URI characters.
fn identity(raw: &str) -> Result<String, ApiError> {
    let valid = (1..=256).contains(&raw.chars().count())
        && !raw.chars().any(|c| c.is_control() || c.is_whitespace() || "<>#%\"{}|\\^[]`".contains(c));
    valid.then(|| raw.to_owned()).ok_or_else(|| {
        ApiError::invalid(
            "client_identity",
            "must be 1 to 256 characters without spaces, control characters or any of <>#%\"{}|\\^[]`",
        )
    })
}

/// A skill is a lowercase slug (the same rule as a department's required skills).
pub fn valid_skill(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 40
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

fn skills(raw: BTreeMap<String, i64>) -> Result<BTreeMap<String, u8>, ApiError> {
    if raw.len() > MAX_SKILLS {
        return Err(ApiError::invalid("skills", format!("at most {MAX_SKILLS} skills")));
    }
    raw.into_iter()
        .map(|(name, level)| {
            if !valid_skill(&name) {
                return Err(ApiError::invalid(
                    format!("skills.{name}"),
                    "a skill name is a lowercase slug of up to 40 letters, digits, '_' or '-'",
                ));
            }
            if !SKILL_LEVELS.contains(&level) {
                return Err(ApiError::invalid(format!("skills.{name}"), "a skill level is 1 to 10"));
            }
            Ok((name, level as u8))
        })
        .collect()
}

fn departments(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_DEPARTMENTS {
        return Err(ApiError::invalid("departments", format!("at most {MAX_DEPARTMENTS} departments")));
    }
    let mut ids: Vec<String> = Vec::with_capacity(raw.len());
    for (i, id) in raw.iter().enumerate() {
        let parsed = uuid::Uuid::parse_str(id)
            .map_err(|_| ApiError::invalid(format!("departments[{i}]"), "must be a department's queue_id"))?
            .to_string();
        if !ids.contains(&parsed) {
            ids.push(parsed);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: serde_json::Value) -> Result<AgentChanges, ApiError> {
        serde_json::from_value::<AgentInput>(body).unwrap().validate()
    }

    fn field(body: serde_json::Value) -> String {
        match parse(body) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field(json!({"name": ""})), "name");
        assert_eq!(field(json!({"email": "nope"})), "email");
        assert_eq!(field(json!({"phone": "555"})), "phone");
        assert_eq!(field(json!({"client_identity": "has space"})), "client_identity");
        assert_eq!(field(json!({"skills": {"Spanish": 3}})), "skills.Spanish");
        assert_eq!(field(json!({"skills": {"spanish": 11}})), "skills.spanish");
        assert_eq!(field(json!({"skills": {"spanish": 0}})), "skills.spanish");
        assert_eq!(field(json!({"departments": ["0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30", "x"]})), "departments[1]");
        assert_eq!(field(json!({"state": "sleeping"})), "state");
        assert!(serde_json::from_value::<AgentInput>(json!({"nmae": "x"})).is_err(), "unknown fields are refused");
    }

    #[test]
    fn create_needs_a_name_and_a_way_to_ring() {
        let tenant = TenantId::parse("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f").unwrap();
        let now = Utc::now();
        let missing = |body| match parse(body).unwrap().create(tenant.clone(), now) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(missing(json!({"phone": "+14155550123"})), "name");
        assert_eq!(missing(json!({"name": "Ada"})), "phone");
        let agent =
            parse(json!({"name": " Ada ", "client_identity": "ada", "skills": {"spanish": 7}, "state": "available"}))
                .unwrap()
                .create(tenant, now)
                .unwrap();
        assert_eq!((agent.name.as_str(), agent.state, agent.idle_since), ("Ada", AgentState::Available, Some(now)));
        assert_eq!(agent.skills["spanish"], 7);
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let changes = parse(json!({"email": null})).unwrap();
        assert_eq!(changes.email, Some(None));
        assert_eq!(changes.phone, None);
        assert!(changes.changes_profile());
        assert!(!parse(json!({"state": "away"})).unwrap().changes_profile());
    }
}
