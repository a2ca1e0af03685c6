//! Black-box tests against the real local stack, by feature. Run with `./infra/test`.

mod auth;
mod call_settings;
mod call_events;
mod calls_details;
mod calls_list;
mod crm_delivery;
mod fixtures;
mod outbox;
mod providers;
mod recordings;
mod twilio_lifecycle;
mod twilio_voice;
