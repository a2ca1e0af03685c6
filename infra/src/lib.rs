//! Switchboard outside Lambda: the local gateway that serves every function's handler,
//! demo data, and data migrations (the operator CLI in `main.rs` drives them).

pub mod demo;
pub mod gateway;
pub mod loopback;
pub mod migrate;
pub mod simulate;
pub mod workers;
pub mod twilio_fake;
