//! `GET api-call-events?after=<cursor>&limit=`: the tenant's append-only event log in
//! commit order, resumable. A CRM that was down keeps its last `next_cursor` and asks
//! again: it gets exactly what it missed, without replays. `next_cursor` is always
//! returned (the same one when nothing new was committed), so polling never loses place.

use chrono::{Duration, Utc};
use lambda_http::{Body, Request, Response, http::Method};
use serde::Serialize;
use shared::{
    AppContext,
    calls::{CallEvent, LogPosition},
    edge::{self, ApiError},
    tenants::Scope,
};

pub const NAME: &str = "api-call-events";
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;
/// Events younger than this are not served yet: writers' clocks differ a little, and an
/// event stamped slightly in the past must not land behind a cursor already handed out.
const SETTLE: Duration = Duration::seconds(2);

#[derive(Serialize)]
struct EventsResponse<'a> {
    events: Vec<&'a CallEvent>,
    count: usize,
    next_cursor: Option<String>,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET])?;
        let principal = ctx.authorize(&req, Scope::CallsRead).await?;
        let params = edge::query_params(&req, &["after", "limit"])?;
        let limit = edge::limit_param(&params, DEFAULT_LIMIT, MAX_LIMIT)?;
        let tenant = &principal.tenant_id;
        let scope = format!("call-events|{tenant}");
        let after = params
            .get("after")
            .map(|c| ctx.cursors.open::<LogPosition>(&scope, c).map_err(|e| ApiError::invalid("after", e.to_string())))
            .transpose()?;
        let page = ctx.calls.event_log(tenant, after, Utc::now() - SETTLE, limit).await?;
        let next_cursor = match page.last() {
            Some((position, _)) => Some(ctx.cursors.seal(&scope, position)),
            None => params.get("after").cloned(),
        };
        let events: Vec<&CallEvent> = page.iter().map(|(_, e)| e).collect();
        edge::ok(&EventsResponse { count: events.len(), events, next_cursor })
    })
    .await
}
