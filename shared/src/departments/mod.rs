//! Departments (seed 004 "Department Management APIs"): the queues inbound numbers ring,
//! their business hours, and what a caller gets when nobody can answer.
//!
//! `input` turns a CRM's JSON into a valid [`Department`], `store` keeps it in the
//! tenants table (keyed so the voice webhook resolves a dialled number in one read), and
//! `routing` decides, without I/O, the TwiML an inbound call gets.

mod input;
mod routing;
mod store;

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

pub use input::{DepartmentChanges, DepartmentInput};
pub use routing::{
    AgentLeg, InboundRoute, WaitDecision, WebhookUrls, after_hours_twiml, agent_leg, hold_twiml, room_name, route_inbound, wait_twiml,
};
pub use store::{DepartmentError, DepartmentStore, queued_prefix};

use crate::{phone::E164, tenants::TenantId};

/// A call queue: the number callers dial, when it is staffed, and how long they may wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub queue_id: String,
    pub tenant_id: TenantId,
    /// Unique per tenant; a slug, because it also names the call's conference room.
    pub name: String,
    pub display_name: String,
    pub phone_number: E164,
    pub routing_strategy: RoutingStrategy,
    /// Skills an agent needs to take this department's calls under skill-based routing.
    /// Always shown (`[]` too); items stored before the field existed read as none.
    #[serde(default)]
    pub required_skills: Vec<String>,
    /// `None` is always open.
    pub business_hours: Option<BusinessHours>,
    #[serde(with = "tz_name")]
    pub timezone: Tz,
    /// Seconds a caller waits for an agent before the after-hours action.
    pub max_wait_time: u32,
    /// Hold music; a spoken hold message when `None`.
    pub music_url: Option<String>,
    pub after_hours_action: AfterHours,
    /// Set exactly when `after_hours_action` is `Forward`.
    pub after_hours_forward_to: Option<E164>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Department {
    /// Evaluated on the department's wall clock, so 09:00 stays 09:00 local across a
    /// daylight-saving change. A UTC instant maps to exactly one local time, so the
    /// skipped and repeated hours of a change need no special case.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        let Some(hours) = &self.business_hours else { return true };
        let local = at.with_timezone(&self.timezone);
        let minute = TimeOfDay((local.hour() * 60 + local.minute()) as u16);
        hours.day(local.weekday()).is_some_and(|day| day.contains(minute))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoutingStrategy {
    RoundRobin,
    LongestIdle,
    MostIdle,
    SkillBased,
}

/// What a caller gets outside business hours, or after waiting `max_wait_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterHours {
    Voicemail,
    Hangup,
    Forward,
}

/// Opening hours per weekday, as seed 004 writes them; a day left out is closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BusinessHours {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuesday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wednesday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thursday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saturday: Option<DayHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sunday: Option<DayHours>,
}

impl BusinessHours {
    pub fn day(&self, day: Weekday) -> Option<&DayHours> {
        match day {
            Weekday::Mon => self.monday.as_ref(),
            Weekday::Tue => self.tuesday.as_ref(),
            Weekday::Wed => self.wednesday.as_ref(),
            Weekday::Thu => self.thursday.as_ref(),
            Weekday::Fri => self.friday.as_ref(),
            Weekday::Sat => self.saturday.as_ref(),
            Weekday::Sun => self.sunday.as_ref(),
        }
    }

    fn day_slot_mut(&mut self, day: Weekday) -> &mut Option<DayHours> {
        match day {
            Weekday::Mon => &mut self.monday,
            Weekday::Tue => &mut self.tuesday,
            Weekday::Wed => &mut self.wednesday,
            Weekday::Thu => &mut self.thursday,
            Weekday::Fri => &mut self.friday,
            Weekday::Sat => &mut self.saturday,
            Weekday::Sun => &mut self.sunday,
        }
    }
}

/// One day's opening, `start` inclusive, `end` exclusive, within the same day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayHours {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl DayHours {
    pub fn contains(&self, at: TimeOfDay) -> bool {
        self.start <= at && at < self.end
    }
}

/// A wall-clock minute, written `HH:MM`. `24:00` exists so a day can stay open to its
/// very end (`00:00`–`24:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(24 * 60);

    pub fn parse(raw: &str) -> Option<Self> {
        let (h, m) = raw.split_once(':')?;
        let two_digits =
            |s: &str| (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<u16>().ok()).flatten();
        let (h, m) = (two_digits(h)?, two_digits(m)?);
        let minute = h * 60 + m;
        (m < 60 && minute <= Self::END_OF_DAY.0).then_some(Self(minute))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        TimeOfDay::parse(&raw).ok_or_else(|| de::Error::custom(format!("{raw:?} is not a HH:MM time")))
    }
}

/// A time zone as its IANA name (`America/New_York`).
mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(|_| de::Error::custom(format!("{raw:?} is not an IANA time zone")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    pub(crate) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// A department open 09:00–17:00 every day, as the routing and store tests use it.
    pub(crate) fn department(timezone: Tz) -> Department {
        let day = Some(DayHours { start: TimeOfDay::parse("09:00").unwrap(), end: TimeOfDay::parse("17:00").unwrap() });
        Department {
            queue_id: "0b7f3c2e-9d4a-4c1b-8e6f-2a5d7c9e1f30".into(),
            tenant_id: TenantId::parse("6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f").unwrap(),
            name: "support".into(),
            display_name: "Customer Support".into(),
            phone_number: E164::parse("+14155550100").unwrap(),
            routing_strategy: RoutingStrategy::LongestIdle,
            required_skills: Vec::new(),
            business_hours: Some(BusinessHours {
                monday: day,
                tuesday: day,
                wednesday: day,
                thursday: day,
                friday: day,
                saturday: day,
                sunday: day,
            }),
            timezone,
            max_wait_time: 300,
            music_url: None,
            after_hours_action: AfterHours::Voicemail,
            after_hours_forward_to: None,
            enabled: true,
            created_at: utc(2025, 1, 1, 0, 0),
            updated_at: utc(2025, 1, 1, 0, 0),
        }
    }

    #[test]
    fn new_york_opens_at_nine_local_on_both_sides_of_spring_forward() {
        let d = department(chrono_tz::America::New_York);
        // Saturday 2025-03-08, EST (UTC-5).
        assert!(!d.is_open(utc(2025, 3, 8, 13, 30)), "08:30 EST");
        assert!(d.is_open(utc(2025, 3, 8, 14, 30)), "09:30 EST");
        // Sunday 2025-03-09, EDT (UTC-4) from 02:00: the same UTC instant is now open.
        assert!(!d.is_open(utc(2025, 3, 9, 12, 30)), "08:30 EDT");
        assert!(d.is_open(utc(2025, 3, 9, 13, 30)), "09:30 EDT");
        assert!(d.is_open(utc(2025, 3, 9, 20, 59)), "16:59 EDT");
        assert!(!d.is_open(utc(2025, 3, 9, 21, 0)), "17:00 EDT: end is exclusive");
    }

    #[test]
    fn berlin_opens_at_nine_local_on_both_sides_of_fall_back() {
        let d = department(chrono_tz::Europe::Berlin);
        // Saturday 2025-10-25, CEST (UTC+2).
        assert!(!d.is_open(utc(2025, 10, 25, 6, 30)), "08:30 CEST");
        assert!(d.is_open(utc(2025, 10, 25, 7, 30)), "09:30 CEST");
        // Sunday 2025-10-26, CET (UTC+1) from 03:00 CEST: the same UTC instant is now closed.
        assert!(!d.is_open(utc(2025, 10, 26, 7, 30)), "08:30 CET");
        assert!(d.is_open(utc(2025, 10, 26, 8, 30)), "09:30 CET");
        assert!(!d.is_open(utc(2025, 10, 26, 16, 0)), "17:00 CET");
    }

    #[test]
    fn a_missing_day_is_closed_and_no_hours_is_always_open() {
        let mut d = department(chrono_tz::Europe::Berlin);
        d.business_hours.as_mut().unwrap().sunday = None;
        assert!(!d.is_open(utc(2025, 10, 26, 10, 0)), "Sunday noon");
        assert!(d.is_open(utc(2025, 10, 27, 10, 0)), "Monday 11:00");
        d.business_hours = None;
        assert!(d.is_open(utc(2025, 10, 26, 2, 0)), "Sunday 03:00");
    }

    #[test]
    fn end_of_day_keeps_the_last_minute_open() {
        let mut d = department(Tz::UTC);
        d.business_hours = Some(BusinessHours {
            monday: Some(DayHours { start: TimeOfDay::parse("00:00").unwrap(), end: TimeOfDay::END_OF_DAY }),
            ..BusinessHours::default()
        });
        assert!(d.is_open(utc(2025, 3, 10, 0, 0)));
        assert!(d.is_open(utc(2025, 3, 10, 23, 59)));
        assert!(!d.is_open(utc(2025, 3, 11, 0, 0)), "Tuesday is closed");
    }

    #[test]
    fn times_parse_only_as_hh_mm() {
        assert_eq!(TimeOfDay::parse("09:05").map(|t| t.to_string()).as_deref(), Some("09:05"));
        assert_eq!(TimeOfDay::parse("24:00"), Some(TimeOfDay::END_OF_DAY));
        for bad in ["9:00", "09:5", "24:01", "25:00", "09:60", "0900", "+9:00", "09:00:00", "", "ab:cd"] {
            assert_eq!(TimeOfDay::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn serializes_as_seed_004_writes_it() {
        let mut d = department(chrono_tz::America::New_York);
        d.business_hours = Some(BusinessHours {
            monday: Some(DayHours {
                start: TimeOfDay::parse("09:00").unwrap(),
                end: TimeOfDay::parse("17:00").unwrap(),
            }),
            ..BusinessHours::default()
        });
        let value = serde_json::to_value(&d).unwrap();
        assert_eq!(value["business_hours"], json!({"monday": {"start": "09:00", "end": "17:00"}}));
        assert_eq!(value["timezone"], "America/New_York");
        assert_eq!(value["routing_strategy"], "longest-idle");
        assert_eq!(value["after_hours_action"], "voicemail");
        assert_eq!(serde_json::from_value::<Department>(value).unwrap(), d);
    }

    #[test]
    fn required_skills_are_always_shown_and_default_to_none() {
        let mut d = department(Tz::UTC);
        let mut value = serde_json::to_value(&d).unwrap();
        assert_eq!(value["required_skills"], json!([]));
        value.as_object_mut().unwrap().remove("required_skills");
        assert_eq!(serde_json::from_value::<Department>(value).unwrap(), d, "stored before the field existed");
        d.required_skills = vec!["billing".into(), "spanish".into()];
        assert_eq!(serde_json::to_value(&d).unwrap()["required_skills"], json!(["billing", "spanish"]));
    }
}
