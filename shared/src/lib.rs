//! Switchboard's common library: everything a function needs besides its own wiring.
//!
//! Organised by domain (`tenants`, `calls`) with the cross-cutting edge pieces beside
//! them (`config`, `telemetry`, `aws`, `edge`, `cursor`). Functions stay thin:
//! parse → authorize → one call in here → respond.

pub mod agents;
pub mod audit;
pub mod aws;
pub mod calls;
pub mod config;
pub mod context;
pub mod cursor;
pub mod deliveries;
pub mod departments;
pub mod edge;
pub mod jobs;
pub mod outbox;
pub mod phone;
pub mod providers;
pub mod recordings;
pub mod supervision;
pub mod telemetry;
pub mod tenants;

pub use context::AppContext;
