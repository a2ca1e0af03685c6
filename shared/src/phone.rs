//! E.164 phone numbers: `+`, a country code not starting with 0, at most 15 digits.
//!
//! This is the ITU format check, deliberately not a numbering-plan validation: the
//! numbers here come from carriers (caller ids, dialled numbers), and rejecting a call
//! record because a plan table is out of date would lose data.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be an E.164 number such as +14155550100 ('+' then 8 to 15 digits)")]
pub struct InvalidE164;

impl E164 {
    pub fn parse(raw: &str) -> Result<Self, InvalidE164> {
        let digits = raw.strip_prefix('+').ok_or(InvalidE164)?;
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid { Ok(Self(raw.to_owned())) } else { Err(InvalidE164) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For logs: country code and last two digits only (`+1*******00`).
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let keep_tail = 2;
        let head = &digits[..1];
        format!("+{head}{}{}", "*".repeat(digits.len() - 1 - keep_tail), &digits[digits.len() - keep_tail..])
    }
}

/// Debug masks the number: full phone numbers never reach logs.
impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.masked())
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        E164::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A party of a call as carriers report it: usually an E.164 number, but also a
/// browser/app client (`client:alice`), a SIP URI, or a withheld caller id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("must be an E.164 number, client:<id>, sip:<uri> or anonymous")]
pub struct InvalidAddress;

impl Address {
    pub fn parse(raw: &str) -> Result<Self, InvalidAddress> {
        let raw = raw.trim();
        let printable = raw.len() <= 256 && raw.chars().all(|c| !c.is_control());
        let valid = E164::parse(raw).is_ok()
            || (printable
                && ["client:", "sip:"].iter().any(|p| raw.strip_prefix(p).is_some_and(|rest| !rest.trim().is_empty())))
            || matches!(raw.to_ascii_lowercase().as_str(), "anonymous" | "restricted" | "unknown" | "private");
        if valid { Ok(Self(raw.to_owned())) } else { Err(InvalidAddress) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn e164(&self) -> Option<E164> {
        E164::parse(&self.0).ok()
    }
}

impl From<E164> for Address {
    fn from(n: E164) -> Self {
        Self(n.0)
    }
}

/// Debug masks numbers like `E164` does.
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.e164() {
            Some(n) => write!(f, "Address({})", n.masked()),
            None => write!(f, "Address({})", self.0.split(':').next().unwrap_or("?")),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Address::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164() {
        for ok in ["+14155550100", "+442071838750", "+919876543210", "+12345678"] {
            assert!(E164::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in ["", "+", "14155550100", "+0123456789", "+1415555010a", "+1234567", "+1234567890123456", "+1 415 555 0100", "++14155550100", "+١٢٣٤٥٦٧٨٩"] {
            assert_eq!(E164::parse(bad), Err(InvalidE164), "{bad}");
        }
    }

    #[test]
    fn addresses_cover_what_carriers_send() {
        for ok in ["+14155550100", "client:alice", "sip:agent@pbx.example.com", "anonymous", "Restricted"] {
            assert!(Address::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "4155550100", "client:", "mailto:x@y", "sip:\u{0}"] {
            assert_eq!(Address::parse(bad), Err(InvalidAddress), "{bad}");
        }
        assert_eq!(format!("{:?}", Address::parse("client:alice").unwrap()), "Address(client)");
    }

    #[test]
    fn debug_output_is_masked() {
        let n = E164::parse("+14155550100").unwrap();
        assert_eq!(format!("{n:?}"), "E164(+1********00)");
    }
}
