//! `GET api-calls-list`: a tenant's calls, newest first, filtered, paginated by cursor.
//!
//! Filters: status, agent_id, direction, department, start_date, end_date (ISO 8601);
//! limit 1–200 (default 50); cursor = the previous page's `next_cursor`.

use lambda_http::{Body, Request, Response, http::Method};
use serde::Serialize;
use shared::{
    AppContext,
    calls::{self, Call, CallView, ListQuery},
    edge,
    tenants::Scope,
};

pub const NAME: &str = "api-calls-list";

#[derive(Serialize)]
struct ListResponse<'a> {
    calls: Vec<CallView<'a>>,
    count: usize,
    next_cursor: Option<String>,
}

pub async fn handler(ctx: &AppContext, req: Request) -> Response<Body> {
    edge::serve(NAME, req, |req| async move {
        edge::require_method(&req, &[Method::GET])?;
        let principal = ctx.authorize(&req, Scope::CallsRead).await?;
        let query = ListQuery::from_params(&edge::query_params(&req, calls::list::PARAMS)?)?;
        let page = calls::list_calls(&ctx.calls, &ctx.cursors, &principal.tenant_id, &query).await?;
        let calls: Vec<CallView> = page.calls.iter().map(Call::view).collect();
        edge::ok(&ListResponse { count: calls.len(), calls, next_cursor: page.next_cursor })
    })
    .await
}
