//! Listing a tenant's calls: the query a CRM may ask, and which index answers it.
//!
//! Every filter maps onto a tenant-scoped index keyed by it (`by-agent`, `by-status`, …)
//! with `started_key` as the sort key, so one filter is one Query, newest first. When
//! several filters are combined, the most selective one picks the index and the rest
//! become a filter expression on that Query.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::model::{CallStatus, Direction};
use crate::{edge::ApiError, tenants::TenantId};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

pub const PARAMS: &[&str] =
    &["status", "agent_id", "direction", "department", "start_date", "end_date", "limit", "cursor"];

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub status: Option<CallStatus>,
    pub agent_id: Option<String>,
    pub direction: Option<Direction>,
    pub department: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// A GSI of the calls table: its name and its partition-key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Index {
    pub name: &'static str,
    pub key: &'static str,
}

pub const BY_TENANT: Index = Index { name: "by-tenant", key: "tenant_pk" };
pub const BY_STATUS: Index = Index { name: "by-status", key: "status_pk" };
pub const BY_AGENT: Index = Index { name: "by-agent", key: "agent_pk" };
pub const BY_DIRECTION: Index = Index { name: "by-direction", key: "direction_pk" };
pub const BY_DEPARTMENT: Index = Index { name: "by-department", key: "department_pk" };

impl ListQuery {
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let get = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let status = get("status")
            .map(|raw| {
                CallStatus::parse(raw).ok_or_else(|| {
                    let known: Vec<_> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::invalid("status", format!("status must be one of: {}", known.join(", ")))
                })
            })
            .transpose()?;
        let agent_id = get("agent_id")
            .map(|raw| {
                uuid::Uuid::parse_str(raw)
                    .map(|u| u.to_string())
                    .map_err(|_| ApiError::invalid("agent_id", "agent_id must be a UUID"))
            })
            .transpose()?;
        let direction = get("direction")
            .map(|raw| {
                Direction::parse(raw)
                    .ok_or_else(|| ApiError::invalid("direction", "direction must be inbound or outbound"))
            })
            .transpose()?;
        let department = get("department")
            .map(|raw| {
                valid_department(raw).then(|| raw.to_owned()).ok_or_else(|| {
                    ApiError::invalid("department", "department must be a department name (letters, digits, '-', '_'; at most 64)")
                })
            })
            .transpose()?;
        let start = get("start_date").map(|raw| parse_date("start_date", raw, Bound::Start)).transpose()?;
        let end = get("end_date").map(|raw| parse_date("end_date", raw, Bound::End)).transpose()?;
        if let (Some(start), Some(end)) = (start, end)
            && end < start
        {
            return Err(ApiError::invalid("end_date", "end_date is before start_date"));
        }
        let limit = crate::edge::limit_param(params, DEFAULT_LIMIT, MAX_LIMIT)?;
        Ok(Self { status, agent_id, direction, department, start, end, limit, cursor: get("cursor").map(str::to_owned) })
    }

    /// The filters as (index, partition value), most selective first. The first picks
    /// the index; the others are checked by a filter expression on the same Query.
    pub fn key_conditions(&self, tenant: &TenantId) -> Vec<(Index, String)> {
        let mut keys = Vec::with_capacity(4);
        if let Some(agent) = &self.agent_id {
            keys.push((BY_AGENT, format!("{tenant}#{agent}")));
        }
        if let Some(department) = &self.department {
            keys.push((BY_DEPARTMENT, format!("{tenant}#{department}")));
        }
        if let Some(status) = self.status {
            keys.push((BY_STATUS, format!("{tenant}#{}", status.as_str())));
        }
        if let Some(direction) = self.direction {
            keys.push((BY_DIRECTION, format!("{tenant}#{}", direction.as_str())));
        }
        if keys.is_empty() {
            keys.push((BY_TENANT, tenant.to_string()));
        }
        keys
    }

    /// What a cursor is bound to: the tenant and every filter (not the page size).
    pub fn cursor_scope(&self, tenant: &TenantId) -> String {
        let opt = |v: Option<&str>| v.unwrap_or("").to_owned();
        format!(
            "calls-list|{tenant}|{}|{}|{}|{}|{}|{}",
            opt(self.status.map(CallStatus::as_str)),
            opt(self.agent_id.as_deref()),
            opt(self.direction.map(Direction::as_str)),
            opt(self.department.as_deref()),
            self.start.map(|t| started_key_prefix(&t)).unwrap_or_default(),
            self.end.map(|t| started_key_prefix(&t)).unwrap_or_default(),
        )
    }
}

fn valid_department(raw: &str) -> bool {
    raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub enum Bound {
    Start,
    End,
}

/// ISO 8601: a full timestamp with offset, or a date (a whole day: its first instant for
/// `start_date`, its last for `end_date`).
pub fn parse_date(field: &str, raw: &str, bound: Bound) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let time = match bound {
            Bound::Start => NaiveTime::MIN,
            Bound::End => NaiveTime::from_hms_milli_opt(23, 59, 59, 999).expect("valid time"),
        };
        return Ok(day.and_time(time).and_utc());
    }
    Err(ApiError::invalid(
        field,
        format!("{field} must be an ISO 8601 date or timestamp, e.g. 2025-10-01 or 2025-10-01T00:00:00Z"),
    ))
}

/// The sortable prefix of `started_key`: fixed-width UTC with milliseconds, so string
/// order is time order.
pub fn started_key_prefix(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ListQuery, ApiError> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ListQuery::from_params(&map)
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_to_fifty_newest_of_all_calls() {
        let q = parse(&[]).unwrap();
        assert_eq!(q.limit, 50);
        let tenant = TenantId::parse("6f1c2a44-1b7e-4c1e-9a55-2a0f6c1f0a01").unwrap();
        assert_eq!(q.key_conditions(&tenant), vec![(BY_TENANT, tenant.to_string())]);
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(field_of(parse(&[("limit", "0")]).unwrap_err()), "limit");
        assert_eq!(field_of(parse(&[("limit", "201")]).unwrap_err()), "limit");
        assert_eq!(field_of(parse(&[("limit", "ten")]).unwrap_err()), "limit");
        assert_eq!(field_of(parse(&[("status", "done")]).unwrap_err()), "status");
        assert_eq!(field_of(parse(&[("direction", "sideways")]).unwrap_err()), "direction");
        assert_eq!(field_of(parse(&[("agent_id", "bob")]).unwrap_err()), "agent_id");
        assert_eq!(field_of(parse(&[("department", "sales#x")]).unwrap_err()), "department");
        assert_eq!(field_of(parse(&[("start_date", "yesterday")]).unwrap_err()), "start_date");
        assert_eq!(field_of(parse(&[("end_date", "2025-13-01")]).unwrap_err()), "end_date");
        assert_eq!(
            field_of(parse(&[("start_date", "2025-10-02"), ("end_date", "2025-10-01")]).unwrap_err()),
            "end_date"
        );
    }

    #[test]
    fn a_plain_end_date_covers_the_whole_day() {
        let q = parse(&[("start_date", "2025-10-01"), ("end_date", "2025-10-01")]).unwrap();
        assert_eq!(started_key_prefix(&q.start.unwrap()), "2025-10-01T00:00:00.000Z");
        assert_eq!(started_key_prefix(&q.end.unwrap()), "2025-10-01T23:59:59.999Z");
        let q = parse(&[("start_date", "2025-10-01T12:00:00+02:00")]).unwrap();
        assert_eq!(started_key_prefix(&q.start.unwrap()), "2025-10-01T10:00:00.000Z");
    }

    #[test]
    fn the_most_selective_filter_picks_the_index() {
        let agent = "0b5e6bbf-7a8a-4c55-9b1e-54b0b8a0b1c2";
        let q = parse(&[("status", "completed"), ("direction", "inbound"), ("agent_id", agent)]).unwrap();
        let tenant = TenantId::parse("6f1c2a44-1b7e-4c1e-9a55-2a0f6c1f0a01").unwrap();
        let keys = q.key_conditions(&tenant);
        assert_eq!(keys[0], (BY_AGENT, format!("{tenant}#{agent}")));
        assert_eq!(keys[1].0, BY_STATUS);
        assert_eq!(keys[2].0, BY_DIRECTION);
    }

    #[test]
    fn cursor_scope_changes_with_any_filter_but_not_the_page_size() {
        let tenant = TenantId::parse("6f1c2a44-1b7e-4c1e-9a55-2a0f6c1f0a01").unwrap();
        let a = parse(&[("status", "completed"), ("limit", "10")]).unwrap().cursor_scope(&tenant);
        let b = parse(&[("status", "completed"), ("limit", "20")]).unwrap().cursor_scope(&tenant);
        let c = parse(&[("status", "failed")]).unwrap().cursor_scope(&tenant);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
