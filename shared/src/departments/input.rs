//! The body of a create (POST) or partial update (PUT) of a department.
//!
//! Fields arrive as raw JSON values and are parsed here one by one, so a 400 names the
//! exact field (`business_hours.monday.end`) rather than the line and column where serde
//! stopped. Rules that span fields are checked on the department a request would leave.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, de::DeserializeOwned, de::IntoDeserializer};

use super::{AfterHours, BusinessHours, DayHours, Department, RoutingStrategy, TimeOfDay};
use crate::{edge::ApiError, phone::E164, tenants::TenantId};

/// Seed 004's example waits 300 s; the API accepts 10 s to an hour.
const DEFAULT_MAX_WAIT_SECS: u32 = 300;
const MAX_WAIT_SECS: std::ops::RangeInclusive<u32> = 10..=3600;
const MAX_REQUIRED_SKILLS: usize = 20;

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

/// A department as the CRM writes it. Unknown fields are refused: a misspelt
/// `max_wait` must not be silently ignored. For the nullable settings, `null` clears
/// the setting and leaving the field out keeps it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentInput {
    queue_id: Option<String>,
    name: Option<String>,
    display_name: Option<String>,
    phone_number: Option<String>,
    routing_strategy: Option<String>,
    /// `[]` clears them.
    required_skills: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    business_hours: Option<Option<BTreeMap<String, Option<DayHoursInput>>>>,
    timezone: Option<String>,
    max_wait_time: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    music_url: Option<Option<String>>,
    after_hours_action: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    after_hours_forward_to: Option<Option<String>>,
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DayHoursInput {
    start: Option<String>,
    end: Option<String>,
}

/// Every setting of a [`DepartmentInput`], parsed; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepartmentChanges {
    name: Option<String>,
    display_name: Option<String>,
    phone_number: Option<E164>,
    routing_strategy: Option<RoutingStrategy>,
    required_skills: Option<Vec<String>>,
    business_hours: Option<Option<BusinessHours>>,
    timezone: Option<Tz>,
    max_wait_time: Option<u32>,
    music_url: Option<Option<String>>,
    after_hours_action: Option<AfterHours>,
    after_hours_forward_to: Option<Option<E164>>,
    enabled: Option<bool>,
}

impl DepartmentInput {
    /// The department a PUT changes (seed 004 puts it in the body); not a setting.
    pub fn queue_id(&self) -> Option<&str> {
        self.queue_id.as_deref()
    }

    /// Parses each field, failing on the first bad one with a 400 that names it.
    pub fn validate(self) -> Result<DepartmentChanges, ApiError> {
        Ok(DepartmentChanges {
            name: self.name.map(|v| name(&v)).transpose()?,
            display_name: self.display_name.map(|v| text("display_name", &v, 100)).transpose()?,
            phone_number: self.phone_number.map(|v| e164("phone_number", &v)).transpose()?,
            routing_strategy: self.routing_strategy.map(|v| variant("routing_strategy", &v)).transpose()?,
            required_skills: self.required_skills.map(required_skills).transpose()?,
            business_hours: self.business_hours.map(|v| v.map(business_hours).transpose()).transpose()?,
            timezone: self.timezone.map(|v| timezone(&v)).transpose()?,
            max_wait_time: self.max_wait_time.map(max_wait_time).transpose()?,
            music_url: self.music_url.map(|v| v.map(|url| http_url("music_url", &url)).transpose()).transpose()?,
            after_hours_action: self.after_hours_action.map(|v| variant("after_hours_action", &v)).transpose()?,
            after_hours_forward_to: self
                .after_hours_forward_to
                .map(|v| v.map(|n| e164("after_hours_forward_to", &n)).transpose())
                .transpose()?,
            enabled: self.enabled,
        })
    }
}

impl DepartmentChanges {
    /// A new department: `name` and `phone_number` are required; everything else has the
    /// default seed 004's example implies (round-robin, always open in UTC, 300 s wait,
    /// voicemail, enabled).
    pub fn create(self, tenant: TenantId, now: DateTime<Utc>) -> Result<Department, ApiError> {
        let name = self.name.clone().ok_or_else(|| ApiError::invalid("name", "is required"))?;
        let phone_number = self.phone_number.clone().ok_or_else(|| ApiError::invalid("phone_number", "is required"))?;
        let department = Department {
            queue_id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant,
            display_name: name.clone(),
            name,
            phone_number,
            routing_strategy: RoutingStrategy::RoundRobin,
            required_skills: Vec::new(),
            business_hours: None,
            timezone: Tz::UTC,
            max_wait_time: DEFAULT_MAX_WAIT_SECS,
            music_url: None,
            after_hours_action: AfterHours::Voicemail,
            after_hours_forward_to: None,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        self.apply(department, now)
    }

    /// A PUT: changes what the body names and keeps the rest.
    pub fn apply(self, mut d: Department, now: DateTime<Utc>) -> Result<Department, ApiError> {
        macro_rules! set {
            ($($field:ident),+) => { $(if let Some(v) = self.$field { d.$field = v; })+ };
        }
        set!(
            name,
            display_name,
            phone_number,
            routing_strategy,
            required_skills,
            business_hours,
            timezone,
            max_wait_time,
            music_url,
            enabled
        );
        if let Some(action) = self.after_hours_action {
            // A forward number means nothing without `forward`; switching away drops it.
            if action != AfterHours::Forward && self.after_hours_forward_to.is_none() {
                d.after_hours_forward_to = None;
            }
            d.after_hours_action = action;
        }
        set!(after_hours_forward_to);
        match (d.after_hours_action, &d.after_hours_forward_to) {
            (AfterHours::Forward, None) => {
                return Err(ApiError::invalid(
                    "after_hours_forward_to",
                    "is required when after_hours_action is forward",
                ));
            }
            (AfterHours::Forward, Some(to)) if *to == d.phone_number => {
                return Err(ApiError::invalid(
                    "after_hours_forward_to",
                    "must differ from phone_number: the call would loop",
                ));
            }
            (AfterHours::Voicemail | AfterHours::Hangup, Some(_)) => {
                return Err(ApiError::invalid(
                    "after_hours_forward_to",
                    "applies only when after_hours_action is forward",
                ));
            }
            _ => {}
        }
        if d.routing_strategy == RoutingStrategy::SkillBased && d.required_skills.is_empty() {
            return Err(ApiError::invalid(
                "required_skills",
                "needs at least one skill when routing_strategy is skill-based",
            ));
        }
        d.updated_at = now;
        Ok(d)
    }
}

/// Tells a JSON `null` (`Some(None)`: clear) from a missing field (`None`: keep).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn name(raw: &str) -> Result<String, ApiError> {
    let valid = (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    valid
        .then(|| raw.to_owned())
        .ok_or_else(|| ApiError::invalid("name", "must be 1 to 64 characters of a-z, 0-9, '-' and '_'"))
}

fn text(field: &str, raw: &str, max_chars: usize) -> Result<String, ApiError> {
    let trimmed = raw.trim();
    let count = trimmed.chars().count();
    if (1..=max_chars).contains(&count) && !trimmed.chars().any(char::is_control) {
        Ok(trimmed.to_owned())
    } else {
        Err(ApiError::invalid(field, format!("must be 1 to {max_chars} characters without control characters")))
    }
}

fn e164(field: &str, raw: &str) -> Result<E164, ApiError> {
    E164::parse(raw).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// A kebab-case enum value; serde's message lists the accepted values.
fn variant<T: DeserializeOwned>(field: &str, raw: &str) -> Result<T, ApiError> {
    T::deserialize(raw.into_deserializer())
        .map_err(|e: serde::de::value::Error| ApiError::invalid(field, e.to_string()))
}

/// Skill names as agents carry them: lowercase slugs, kept in the order given, once each.
fn required_skills(raw: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut skills: Vec<String> = Vec::with_capacity(raw.len().min(MAX_REQUIRED_SKILLS));
    for (i, skill) in raw.into_iter().enumerate() {
        if !valid_skill(&skill) {
            return Err(ApiError::invalid(
                format!("required_skills[{i}]"),
                "must be a skill name: 1 to 40 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
            ));
        }
        if !skills.contains(&skill) {
            skills.push(skill);
        }
        if skills.len() > MAX_REQUIRED_SKILLS {
            return Err(ApiError::invalid(
                "required_skills",
                format!("at most {MAX_REQUIRED_SKILLS} different skills"),
            ));
        }
    }
    Ok(skills)
}

/// `[a-z0-9][a-z0-9_-]{0,39}`
fn valid_skill(raw: &str) -> bool {
    let lower_or_digit = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match raw.as_bytes() {
        [first, rest @ ..] => {
            rest.len() < 40
                && lower_or_digit(first)
                && rest.iter().all(|b| lower_or_digit(b) || *b == b'-' || *b == b'_')
        }
        [] => false,
    }
}

fn timezone(raw: &str) -> Result<Tz, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid("timezone", "must be an IANA time zone name such as America/New_York or Europe/Berlin")
    })
}

fn max_wait_time(raw: i64) -> Result<u32, ApiError> {
    u32::try_from(raw)
        .ok()
        .filter(|secs| MAX_WAIT_SECS.contains(secs))
        .ok_or_else(|| ApiError::invalid("max_wait_time", "must be 10 to 3600 seconds"))
}

/// Kept in its normalised form: it goes into TwiML as written here.
fn http_url(field: &str, raw: &str) -> Result<String, ApiError> {
    reqwest::Url::parse(raw)
        .ok()
        .filter(|url| {
            matches!(url.scheme(), "http" | "https") && url.host_str().is_some() && url.as_str().len() <= 2048
        })
        .map(String::from)
        .ok_or_else(|| ApiError::invalid(field, "must be an http or https URL of at most 2048 characters"))
}

fn business_hours(days: BTreeMap<String, Option<DayHoursInput>>) -> Result<BusinessHours, ApiError> {
    let mut hours = BusinessHours::default();
    for (key, span) in days {
        let Some(&(day, weekday)) = WEEKDAYS.iter().find(|(name, _)| *name == key) else {
            let shown: String = key.chars().take(32).collect();
            return Err(ApiError::invalid("business_hours", format!("'{shown}' is not a day; use monday to sunday")));
        };
        *hours.day_slot_mut(weekday) = span.map(|span| day_hours(day, span)).transpose()?;
    }
    if hours == BusinessHours::default() {
        return Err(ApiError::invalid("business_hours", "must open on at least one day; send null to be always open"));
    }
    Ok(hours)
}

fn day_hours(day: &str, span: DayHoursInput) -> Result<DayHours, ApiError> {
    let time = |part: &str, raw: Option<String>| {
        let field = format!("business_hours.{day}.{part}");
        let raw = raw.ok_or_else(|| ApiError::invalid(&field, "is required"))?;
        TimeOfDay::parse(&raw).ok_or_else(|| ApiError::invalid(&field, "must be a time HH:MM from 00:00 to 24:00"))
    };
    let (start, end) = (time("start", span.start)?, time("end", span.end)?);
    if start == TimeOfDay::END_OF_DAY {
        return Err(ApiError::invalid(
            format!("business_hours.{day}.start"),
            "must be a time HH:MM from 00:00 to 23:59",
        ));
    }
    if end <= start {
        return Err(ApiError::invalid(
            format!("business_hours.{day}.end"),
            format!(
                "must be after start ({start}); hours past midnight are not supported, \
                 so split them: end this day at 24:00 and open the next at 00:00"
            ),
        ));
    }
    Ok(DayHours { start, end })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::departments::tests::utc;

    fn tenant() -> TenantId {
        TenantId::parse("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f").unwrap()
    }

    fn changes(body: Value) -> Result<DepartmentChanges, ApiError> {
        serde_json::from_value::<DepartmentInput>(body).unwrap().validate()
    }

    fn create(body: Value) -> Result<Department, ApiError> {
        changes(body)?.create(tenant(), utc(2025, 10, 20, 10, 0))
    }

    /// The field a 400 names.
    fn bad_field(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    fn seed_example() -> Value {
        json!({
            "name": "support",
            "display_name": "Customer Support",
            "phone_number": "+1234567890",
            "routing_strategy": "longest-idle",
            "business_hours": {
                "monday": {"start": "09:00", "end": "17:00"},
                "tuesday": {"start": "09:00", "end": "17:00"}
            },
            "max_wait_time": 300,
            "music_url": "https://example.com/music.mp3",
            "after_hours_action": "voicemail"
        })
    }

    #[test]
    fn creates_the_seed_004_example() {
        let d = create(seed_example()).unwrap();
        assert_eq!(d.name, "support");
        assert_eq!(d.display_name, "Customer Support");
        assert_eq!(d.phone_number.as_str(), "+1234567890");
        assert_eq!(d.routing_strategy, RoutingStrategy::LongestIdle);
        assert_eq!(d.business_hours.as_ref().unwrap().day(Weekday::Tue).unwrap().end.to_string(), "17:00");
        assert_eq!(d.business_hours.as_ref().unwrap().day(Weekday::Wed), None);
        assert_eq!(d.timezone, Tz::UTC);
        assert_eq!(d.music_url.as_deref(), Some("https://example.com/music.mp3"));
        assert!(d.enabled);
        assert_eq!(d.created_at, d.updated_at);
        assert!(uuid::Uuid::parse_str(&d.queue_id).is_ok());
    }

    #[test]
    fn defaults_fill_a_minimal_create() {
        let d = create(json!({"name": "sales", "phone_number": "+14155550100"})).unwrap();
        assert_eq!(d.display_name, "sales");
        assert_eq!(d.routing_strategy, RoutingStrategy::RoundRobin);
        assert_eq!(d.max_wait_time, 300);
        assert_eq!(d.after_hours_action, AfterHours::Voicemail);
        assert_eq!(d.business_hours, None);
    }

    #[test]
    fn create_requires_name_and_number() {
        assert_eq!(bad_field(create(json!({"phone_number": "+14155550100"}))), "name");
        assert_eq!(bad_field(create(json!({"name": "sales"}))), "phone_number");
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            (json!({"name": "Sales Team"}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "a".repeat(65)}), "name"),
            (json!({"display_name": "  "}), "display_name"),
            (json!({"phone_number": "555-0100"}), "phone_number"),
            (json!({"routing_strategy": "random"}), "routing_strategy"),
            (json!({"timezone": "Mars/Olympus_Mons"}), "timezone"),
            (json!({"max_wait_time": 9}), "max_wait_time"),
            (json!({"max_wait_time": 3601}), "max_wait_time"),
            (json!({"max_wait_time": -300}), "max_wait_time"),
            (json!({"music_url": "ftp://example.com/a.mp3"}), "music_url"),
            (json!({"music_url": "music.mp3"}), "music_url"),
            (json!({"after_hours_action": "ring"}), "after_hours_action"),
            (json!({"after_hours_forward_to": "0044"}), "after_hours_forward_to"),
            (json!({"business_hours": {}}), "business_hours"),
            (json!({"business_hours": {"funday": {"start": "09:00", "end": "17:00"}}}), "business_hours"),
            (json!({"business_hours": {"monday": {"start": "9am", "end": "17:00"}}}), "business_hours.monday.start"),
            (json!({"business_hours": {"monday": {"start": "24:00", "end": "24:00"}}}), "business_hours.monday.start"),
            (json!({"business_hours": {"friday": {"start": "09:00"}}}), "business_hours.friday.end"),
            (json!({"business_hours": {"monday": {"start": "09:00", "end": "09:00"}}}), "business_hours.monday.end"),
        ];
        for (body, field) in cases {
            assert_eq!(bad_field(changes(body.clone())), field, "{body}");
        }
    }

    #[test]
    fn overnight_hours_are_refused_with_a_way_out() {
        let err = changes(json!({"business_hours": {"friday": {"start": "22:00", "end": "02:00"}}})).unwrap_err();
        assert!(err.to_string().contains("past midnight are not supported"), "{err}");
        let split = json!({"business_hours": {
            "friday": {"start": "22:00", "end": "24:00"},
            "saturday": {"start": "00:00", "end": "02:00"}
        }});
        assert!(changes(split).is_ok());
    }

    #[test]
    fn required_skills_are_slugs_kept_once_each_in_order() {
        let body = json!({"required_skills": ["spanish", "billing", "spanish", "tier-2", "a_b", "0"]});
        let skills = changes(body).unwrap().required_skills.unwrap();
        assert_eq!(skills, ["spanish", "billing", "tier-2", "a_b", "0"]);
        assert!(valid_skill(&"a".repeat(40)));
        for bad in ["", "Spanish", "-spanish", "_x", "tier 2", "café", &"a".repeat(41)] {
            let body = json!({"required_skills": ["billing", bad]});
            assert_eq!(bad_field(changes(body)), "required_skills[1]", "{bad:?}");
        }
    }

    #[test]
    fn at_most_twenty_different_required_skills() {
        let twenty: Vec<String> = (0..20).map(|i| format!("skill-{i}")).collect();
        let mut repeated = twenty.clone();
        repeated.extend(twenty.iter().cloned());
        assert_eq!(changes(json!({"required_skills": repeated})).unwrap().required_skills.unwrap(), twenty);
        let mut too_many = twenty;
        too_many.push("skill-20".into());
        assert_eq!(bad_field(changes(json!({"required_skills": too_many}))), "required_skills");
    }

    #[test]
    fn skill_based_routing_needs_a_required_skill() {
        let skill_based = json!({"name": "sales", "phone_number": "+14155550100", "routing_strategy": "skill-based"});
        assert_eq!(bad_field(create(skill_based.clone())), "required_skills");
        let mut with_skills = skill_based;
        with_skills["required_skills"] = json!(["billing"]);
        let d = create(with_skills).unwrap();
        assert_eq!(
            (d.routing_strategy, d.required_skills.as_slice()),
            (RoutingStrategy::SkillBased, &["billing".to_owned()][..])
        );
        // Checked on the department an update leaves, whichever field the update names.
        let now = utc(2025, 10, 21, 8, 0);
        assert_eq!(
            bad_field(changes(json!({"required_skills": []})).unwrap().apply(d.clone(), now)),
            "required_skills"
        );
        let round_robin = changes(json!({"routing_strategy": "round-robin", "required_skills": []})).unwrap();
        assert!(round_robin.apply(d, now).unwrap().required_skills.is_empty());
        let plain = create(json!({"name": "sales", "phone_number": "+14155550100"})).unwrap();
        assert!(plain.required_skills.is_empty());
        assert_eq!(
            bad_field(changes(json!({"routing_strategy": "skill-based"})).unwrap().apply(plain, now)),
            "required_skills"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<DepartmentInput>(json!({"max_wait": 600})).is_err());
    }

    #[test]
    fn forward_needs_a_number_and_only_forward_takes_one() {
        let forward = json!({"name": "sales", "phone_number": "+14155550100", "after_hours_action": "forward"});
        assert_eq!(bad_field(create(forward.clone())), "after_hours_forward_to");
        let mut looping = forward.clone();
        looping["after_hours_forward_to"] = json!("+14155550100");
        assert_eq!(bad_field(create(looping)), "after_hours_forward_to");
        let mut ok = forward;
        ok["after_hours_forward_to"] = json!("+14155550199");
        assert_eq!(create(ok).unwrap().after_hours_forward_to.unwrap().as_str(), "+14155550199");
        let stray = json!({"name": "sales", "phone_number": "+14155550100", "after_hours_forward_to": "+14155550199"});
        assert_eq!(bad_field(create(stray)), "after_hours_forward_to");
    }

    #[test]
    fn update_changes_only_what_the_body_names() {
        let before = create(seed_example()).unwrap();
        let body = json!({"queue_id": before.queue_id, "max_wait_time": 600, "enabled": false});
        let input: DepartmentInput = serde_json::from_value(body).unwrap();
        assert_eq!(input.queue_id(), Some(before.queue_id.as_str()));
        let later = utc(2025, 10, 21, 8, 0);
        let after = input.validate().unwrap().apply(before.clone(), later).unwrap();
        assert_eq!((after.max_wait_time, after.enabled, after.updated_at), (600, false, later));
        assert_eq!(Department { max_wait_time: 300, enabled: true, updated_at: before.updated_at, ..after }, before);
    }

    #[test]
    fn null_clears_a_setting_and_absence_keeps_it() {
        let before = create(seed_example()).unwrap();
        let now = utc(2025, 10, 21, 8, 0);
        let kept = changes(json!({})).unwrap().apply(before.clone(), now).unwrap();
        assert_eq!((kept.music_url.is_some(), kept.business_hours.is_some()), (true, true));
        let cleared = changes(json!({"music_url": null, "business_hours": null})).unwrap().apply(before, now).unwrap();
        assert_eq!((cleared.music_url, cleared.business_hours), (None, None));
    }

    #[test]
    fn leaving_forward_drops_the_forward_number() {
        let forward = json!({
            "name": "sales", "phone_number": "+14155550100",
            "after_hours_action": "forward", "after_hours_forward_to": "+14155550199"
        });
        let before = create(forward).unwrap();
        let now = utc(2025, 10, 21, 8, 0);
        let after = changes(json!({"after_hours_action": "hangup"})).unwrap().apply(before.clone(), now).unwrap();
        assert_eq!((after.after_hours_action, after.after_hours_forward_to), (AfterHours::Hangup, None));
        let cleared = changes(json!({"after_hours_forward_to": null})).unwrap().apply(before, now);
        assert_eq!(bad_field(cleared), "after_hours_forward_to");
    }
}
