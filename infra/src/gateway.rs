//! The local gateway: every function at `http://127.0.0.1:54321/functions/v1/<name>`
//! (the Supabase local convention), each served by the same handler its Lambda binary
//! runs. The path after the function name becomes the request path, as behind a
//! Function URL, so `/functions/v1/webhook-twilio/voice` reaches that function as `/voice`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Request, Response};
use shared::{AppContext, edge};
use tokio::net::TcpListener;

pub const PREFIX: &str = "/functions/v1/";
/// Lambda's synchronous invocation payload limit.
const MAX_BODY: usize = 6 * 1024 * 1024;

/// Every function the gateway mounts, by its public name.
pub const FUNCTIONS: &[&str] = &[
    api_calls_list::NAME,
    api_calls_details::NAME,
    api_calls_recording::NAME,
    api_providers_manage::NAME,
    api_call_events::NAME,
    api_call_settings::NAME,
    api_webhook_deliveries::NAME,
    api_calls_admin_action::NAME,
    api_calls_monitor::NAME,
    api_agents_manage::NAME,
    api_departments_manage::NAME,
    webhook_twilio::NAME,
];

async fn dispatch(ctx: &AppContext, name: &str, req: Request) -> Response<Body> {
    match name {
        api_calls_list::NAME => api_calls_list::handler(ctx, req).await,
        api_calls_details::NAME => api_calls_details::handler(ctx, req).await,
        api_calls_recording::NAME => api_calls_recording::handler(ctx, req).await,
        api_providers_manage::NAME => api_providers_manage::handler(ctx, req).await,
        api_call_events::NAME => api_call_events::handler(ctx, req).await,
        api_call_settings::NAME => api_call_settings::handler(ctx, req).await,
        api_webhook_deliveries::NAME => api_webhook_deliveries::handler(ctx, req).await,
        api_calls_admin_action::NAME => api_calls_admin_action::handler(ctx, req).await,
        api_calls_monitor::NAME => api_calls_monitor::handler(ctx, req).await,
        api_agents_manage::NAME => api_agents_manage::handler(ctx, req).await,
        api_departments_manage::NAME => api_departments_manage::handler(ctx, req).await,
        webhook_twilio::NAME => webhook_twilio::handler(ctx, req).await,
        _ => {
            let name = name.to_owned();
            edge::serve("gateway", req, |_| async move {
                Err(edge::ApiError::NotFound(format!("no function named '{name}'")))
            })
            .await
        }
    }
}

/// Serves until the listener fails; each connection on its own task.
pub async fn serve(listener: TcpListener, ctx: Arc<AppContext>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    require_loopback(addr)?;
    TcpListener::bind(addr).await
}

fn require_loopback(addr: SocketAddr) -> std::io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(std::io::Error::other("the local gateway binds loopback addresses only"))
    }
}

async fn handle(ctx: &AppContext, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let Some((name, rest)) = path.strip_prefix(PREFIX).map(|p| p.split_once('/').map_or((p, ""), |(n, r)| (n, r)))
    else {
        return plain(404, "not found: functions are served under /functions/v1/<name>");
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(413, "request body exceeds 6 MB"),
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = match path_and_query.parse() {
        Ok(uri) => uri,
        Err(_) => return plain(400, "malformed request URI"),
    };
    let body = if body.is_empty() { Body::Empty } else { Body::from(body.to_vec()) };
    let response = dispatch(ctx, name, Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}

fn plain(status: u16, message: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    response
}
