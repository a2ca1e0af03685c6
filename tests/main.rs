//! Black-box tests against the real local stack, by feature. Run with `./infra/test`.

mod admin_actions;
mod agents;
mod auth;
mod call_settings;
mod call_events;
mod calls_details;
mod calls_list;
mod crm_delivery;
mod departments;
mod fixtures;
mod monitor;
mod outbox;
mod providers;
mod recordings;
mod routing;
mod twilio_lifecycle;
mod twilio_voice;
