//! Telephony providers: each speaks its own REST API and webhook dialect; the rest of
//! Switchboard sees only calls, statuses and recordings.

pub mod twilio;
