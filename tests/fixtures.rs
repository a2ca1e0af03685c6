//! Call data constructed for assertions: every attribute a filter can select is
//! assigned deterministically, so the expected answer of each query is known.

use chrono::{DateTime, Duration, TimeZone, Utc};
use shared::{
    calls::{Call, CallEvent, CallStatus, Direction},
    phone::E164,
    tenants::TenantId,
};
use switchboard_infra::demo;

pub const STATUSES: [CallStatus; 3] = [CallStatus::Completed, CallStatus::Failed, CallStatus::InProgress];
pub const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 9, 1, 8, 0, 0).unwrap()
}

/// `count` calls, one every 37 minutes from `epoch()`, cycling through 3 statuses,
/// 4 agents, 2 directions and 3 departments at co-prime strides so every combination
/// occurs.
pub fn calls(tenant: &TenantId, count: usize) -> Vec<(Call, Vec<CallEvent>)> {
    let mut rng = rand::rng();
    (0..count)
        .map(|i| {
            let started = epoch() + Duration::minutes(37 * i as i64);
            let (mut call, _) = demo::call(tenant, started, &mut rng);
            call.status = STATUSES[i % 3];
            call.agent = Some(demo::agent(i % 4));
            call.direction = DIRECTIONS[(i / 3) % 2];
            call.department = Some(demo::DEPARTMENTS[(i / 2) % 3].into());
            call.from_number = E164::parse("+14155550199").unwrap().into();
            (call, Vec::new())
        })
        .collect()
}

