//! Twilio: the REST client, webhook signature validation, and TwiML.

pub mod callbacks;
pub mod client;
pub mod conference;
pub mod inbound;
pub mod signature;
pub mod twiml;
pub mod webhook;
