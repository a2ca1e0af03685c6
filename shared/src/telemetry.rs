//! Telemetry: JSON lines on stdout (CloudWatch parses them), one per request from the
//! HTTP edge. Level from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the JSON subscriber once per process. Safe to call more than once (later
/// calls are no-ops), which the local gateway and tests rely on.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false);
    let _ = tracing_subscriber::registry().with(filter).with(json).try_init();
}

/// Tests are quiet unless `TEST_LOG` is set, so a failing test's output stays readable.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}
