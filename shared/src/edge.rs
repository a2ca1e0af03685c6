//! The HTTP edge every CRM-facing function goes through.
//!
//! One error envelope (`{"success": false, "error": {"code", "message"}}`), CORS on
//! every response (errors and preflight included), a 4xx that names the bad field, a
//! panic turned into a 500 envelope instead of a dropped connection, and exactly one
//! JSON log line per request with request id, tenant, function, status and latency.

use std::{cell::RefCell, collections::HashMap, future::Future, panic::AssertUnwindSafe, time::Instant};

use futures::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use tracing::Instrument;

/// Everything a CRM-facing handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A query parameter or body field is missing or invalid; `field` names it.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(Method),
    #[error("{0}")]
    Conflict(String),
    /// A request understood and authorised but refused by policy, with its own code
    /// (e.g. 403 `consent_withdrawn`, 410 `retention_expired`).
    #[error("{message}")]
    Refused { status: StatusCode, code: &'static str, message: String },
    #[error("rate limit of {limit} requests per hour exceeded; retry after {retry_after_secs} s")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Refused { status, .. } => *status,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_parameter",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::Refused { code, .. } => code,
            Self::Unexpected(_) => "internal_error",
        }
    }

    fn into_response(self) -> Response<Body> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            success: bool,
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        let status = self.status();
        // Internal details stay in the log; the caller gets the request id to quote.
        let message = match &self {
            Self::Unexpected(_) => "internal error; quote the X-Request-Id header to support".into(),
            other => other.to_string(),
        };
        let field = match &self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            _ => None,
        };
        let mut response = json(status, &Envelope {
            success: false,
            error: Detail { code: self.code(), message, field },
        });
        if let Self::RateLimited { retry_after_secs, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"success\":false}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `200 {"success": true, ...body}`: the success shape of every seed response.
pub fn ok<T: Serialize>(body: &T) -> Result<Response<Body>, ApiError> {
    #[derive(Serialize)]
    struct Success<'a, T> {
        success: bool,
        #[serde(flatten)]
        body: &'a T,
    }
    Ok(json(StatusCode::OK, &Success { success: true, body }))
}

pub fn require_method(req: &Request, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(req.method()) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(req.method().clone()))
    }
}

/// The query string as a map, refusing parameters the endpoint does not know (a typo
/// such as `agent=` for `agent_id=` would otherwise silently widen a CRM's query) and
/// repeated parameters (which value wins would be a guess).
pub fn query_params(req: &Request, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let raw = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| ApiError::BadRequest("the query string is not valid form encoding".into()))?;
    let mut params = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if !known.contains(&name.as_str()) {
            let expected = match known {
                [] => "this endpoint takes no query parameters".to_owned(),
                _ => format!("expected one of: {}", known.join(", ")),
            };
            return Err(ApiError::invalid(
                clip(&name, 64),
                format!("unknown query parameter '{}'; {expected}", clip(&name, 64)),
            ));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid(&name, format!("query parameter '{name}' is given more than once")));
        }
    }
    Ok(params)
}

/// `limit`: absent → `default`; otherwise an integer from 1 to `max`, or a 400 naming it.
pub fn limit_param(params: &HashMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match params.get("limit").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", format!("limit must be an integer from 1 to {max}"))),
    }
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

tokio::task_local! {
    static SCOPE: RefCell<RequestScope>;
}

/// What a request learns on its way through (who it is, headers owed to the caller)
/// that the edge must attach to the response and the log line, whatever the outcome.
#[derive(Default)]
struct RequestScope {
    tenant: Option<String>,
    headers: HeaderMap,
}

/// Records the authenticated tenant for this request's log line.
pub fn record_tenant(tenant: &str) {
    let _ = SCOPE.try_with(|s| s.borrow_mut().tenant = Some(tenant.to_owned()));
}

/// Adds a header to this request's response, success or error (rate-limit headers).
pub fn add_response_header(name: HeaderName, value: HeaderValue) {
    let _ = SCOPE.try_with(|s| s.borrow_mut().headers.insert(name, value));
}

const ALLOW_HEADERS: &str = "x-api-key, content-type, authorization";
const EXPOSE_HEADERS: &str =
    "x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, retry-after";

fn cors(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
}

fn request_id(req: &Request) -> String {
    req.lambda_context_ref()
        .map(|c| c.request_id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| {
            req.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128 && v.is_ascii())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Runs one request through the edge: preflight, the handler (panics caught), the
/// error envelope, CORS, the request id, and one log line.
pub async fn serve<F, Fut>(function: &'static str, req: Request, handler: F) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = Instant::now();
    let request_id = request_id(&req);
    let method = req.method().clone();
    let span = tracing::info_span!("request", function, request_id = %request_id);

    let run = async {
        if method == Method::OPTIONS {
            let mut preflight = Response::new(Body::Empty);
            *preflight.status_mut() = StatusCode::NO_CONTENT;
            preflight
                .headers_mut()
                .insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
            return (preflight, None);
        }
        let outcome = AssertUnwindSafe(handler(req)).catch_unwind().await;
        let error = match outcome {
            Ok(Ok(response)) => return (response, None),
            Ok(Err(error)) => error,
            Err(_) => ApiError::Unexpected(anyhow::anyhow!("handler panicked")),
        };
        if let ApiError::Unexpected(cause) = &error {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let code = error.code();
        (error.into_response(), Some(code))
    };
    let ((mut response, error_code), scope) = SCOPE
        .scope(RefCell::new(RequestScope::default()), async {
            let result = run.await;
            (result, SCOPE.with(|s| s.take()))
        })
        .instrument(span)
        .await;

    let headers = response.headers_mut();
    headers.extend(scope.headers);
    cors(headers);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
    tracing::info!(
        function,
        request_id = %request_id,
        tenant = scope.tenant.as_deref().unwrap_or("-"),
        method = %method,
        status = response.status().as_u16(),
        error_code = error_code.unwrap_or("-"),
        latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request {
        http::Request::builder().uri(uri).body(Body::Empty).unwrap()
    }

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[tokio::test]
    async fn errors_use_the_envelope_and_carry_cors() {
        let response = serve("t", get("/x"), |_| async {
            Err::<Response<Body>, _>(ApiError::invalid("limit", "limit must be between 1 and 200"))
        })
        .await;
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert!(response.headers().contains_key("x-request-id"));
        let body = body_json(response).await;
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert_eq!(body["error"]["field"], "limit");
    }

    #[tokio::test]
    async fn preflight_allows_the_api_key_header_without_calling_the_handler() {
        let req = http::Request::builder().method("OPTIONS").uri("/x").body(Body::Empty).unwrap();
        let response = serve("t", req, |_| async { panic!("handler must not run") }).await;
        assert_eq!(response.status(), 204);
        let allowed = response.headers()["access-control-allow-headers"].to_str().unwrap();
        assert!(allowed.contains("x-api-key"));
    }

    #[tokio::test]
    async fn a_panic_becomes_a_500_envelope_without_internal_details() {
        let response = serve("t", get("/x"), |_| async {
            let v: Vec<u8> = Vec::new();
            let _ = v[3];
            ok(&())
        })
        .await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body["error"]["message"].as_str().unwrap().contains("index out of bounds"));
    }

    #[tokio::test]
    async fn rate_limit_headers_reach_error_responses() {
        let response = serve("t", get("/x"), |_| async {
            add_response_header(HeaderName::from_static("x-ratelimit-limit"), HeaderValue::from(5));
            Err::<Response<Body>, _>(ApiError::RateLimited { limit: 5, retry_after_secs: 42 })
        })
        .await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "42");
        assert_eq!(response.headers()["x-ratelimit-limit"], "5");
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let err = query_params(&get("/x?agent=1"), &["agent_id"]).unwrap_err();
        assert!(matches!(&err, ApiError::InvalidField { field, .. } if field == "agent"));
        let err = query_params(&get("/x?limit=1&limit=2"), &["limit"]).unwrap_err();
        assert!(matches!(&err, ApiError::InvalidField { field, .. } if field == "limit"));
        let ok = query_params(&get("/x?status=in-progress&limit=5"), &["status", "limit"]).unwrap();
        assert_eq!(ok["status"], "in-progress");
    }
}
