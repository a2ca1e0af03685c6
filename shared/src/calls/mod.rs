//! Calls: the record every other feature hangs off, its timeline, and how CRMs read them.

pub mod lifecycle;
pub mod list;
pub mod live;
pub mod model;
pub mod store;

pub use list::ListQuery;
pub use model::{AgentRef, Call, CallEvent, CallStatus, CallView, Consent, ConsentStatus, Direction, RecordingRef, RecordingStatus, RecordingView};
pub use store::{CallStore, LogPosition, Position};

use crate::{cursor::CursorSigner, edge::ApiError, tenants::TenantId};

pub struct ListPage {
    pub calls: Vec<Call>,
    pub next_cursor: Option<String>,
}

/// One page of a tenant's calls; the cursor in and out is sealed to tenant + filters.
pub async fn list_calls(
    store: &CallStore,
    cursors: &CursorSigner,
    tenant: &TenantId,
    query: &ListQuery,
) -> Result<ListPage, ApiError> {
    let scope = query.cursor_scope(tenant);
    let after = query
        .cursor
        .as_deref()
        .map(|c| cursors.open::<Position>(&scope, c).map_err(|e| ApiError::invalid("cursor", e.to_string())))
        .transpose()?;
    let page = store.list(tenant, query, after).await?;
    Ok(ListPage { next_cursor: page.next.map(|p| cursors.seal(&scope, &p)), calls: page.calls })
}

/// Call ids are UUIDs; anything else is a 400 before it reaches the store.
pub fn parse_call_id(raw: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| ApiError::invalid("call_id", "call_id is required"))?;
    uuid::Uuid::parse_str(raw).map(|u| u.to_string()).map_err(|_| ApiError::invalid("call_id", "call_id must be a UUID"))
}
