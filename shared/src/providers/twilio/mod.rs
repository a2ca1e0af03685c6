//! Twilio: the REST client, webhook signature validation, and TwiML.

pub mod callbacks;
pub mod client;
pub mod signature;
pub mod twiml;
pub mod webhook;
