//! `X-Twilio-Signature`: how a webhook proves it comes from Twilio.
//!
//! The signature is `base64(HMAC-SHA1(auth token, URL + key + value of every POST param,
//! sorted))`. Twilio signs the URL it was configured with, byte for byte, so the caller
//! passes the public URL rebuilt from the public host, the raw path and the raw query;
//! re-encoding any of it (as twilio-node's `new URL()` does, twilio/twilio-node#1183)
//! turns valid requests into mismatches. For non-form bodies (JSON) Twilio puts
//! `bodySHA256=<hex>` in the URL instead and signs the URL alone.
//!
//! Behaviour follows the helper libraries (twilio-python `twilio/request_validator.py`,
//! twilio-node `src/webhooks/webhooks.ts`) and passes their published vectors, with two
//! deliberate differences: only the URL as received is tried (with and without port),
//! never a re-encoded form of it, and a body the signature does not cover is refused.

use base64::{Engine, prelude::BASE64_STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

const BODY_HASH_PARAM: &str = "bodySHA256";

/// Why a webhook was refused. Nothing from the request or the token is carried, so
/// it is safe to log and to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("webhook URL is not an absolute http(s) URL")]
    InvalidUrl,
    #[error("form body is not valid application/x-www-form-urlencoded UTF-8")]
    MalformedBody,
    #[error("a non-form body without bodySHA256 in the URL is not covered by the signature")]
    UnsignedBody,
    #[error("X-Twilio-Signature does not match")]
    Mismatch,
    #[error("body does not hash to the bodySHA256 in the URL")]
    BodyHashMismatch,
}

/// The signature Twilio sends for a request to exactly `url` with these POST params
/// (none for GET and bodySHA256 requests); the local Twilio simulator signs with it.
pub fn compute<K: AsRef<str>, V: AsRef<str>>(auth_token: &str, url: &str, params: &[(K, V)]) -> String {
    sign(auth_token, url, &canonical(params))
}

/// Lower-case hex SHA-256 of a raw body: the `bodySHA256` value Twilio adds to the URL.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Checks a webhook's `X-Twilio-Signature` against the public `url` Twilio called and
/// the raw `body`.
///
/// As in every helper library, the URL is tried without its port and with the scheme's
/// default port (Twilio's signer is inconsistent about ports), and either match passes.
/// If the URL carries `bodySHA256`, the signature covers the URL alone and the body must
/// hash to that value; otherwise a non-empty body must be a form, whose decoded params
/// are signed. Any other body would be unauthenticated, so it is refused.
pub fn validate(
    auth_token: &str,
    url: &str,
    body: &[u8],
    content_type: Option<&str>,
    signature: &str,
) -> Result<(), SignatureError> {
    let candidates = port_variants(url)?;
    let expected_body_hash = query_value(url, BODY_HASH_PARAM);
    let params = match expected_body_hash {
        None if !body.is_empty() && is_form(content_type) => form_pairs(body)?,
        None if !body.is_empty() => return Err(SignatureError::UnsignedBody),
        _ => Vec::new(),
    };
    let params = canonical(&params);
    // Both candidates are always computed and compared, so timing says nothing of which matched.
    let matched = candidates.iter().fold(Choice::from(0), |matched, candidate| {
        matched | sign(auth_token, candidate, &params).as_bytes().ct_eq(signature.as_bytes())
    });
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    match expected_body_hash {
        Some(expected) if !bool::from(body_hash(body).as_bytes().ct_eq(expected.as_bytes())) => {
            Err(SignatureError::BodyHashMismatch)
        }
        _ => Ok(()),
    }
}

fn sign(auth_token: &str, url: &str, sorted_params: &[(&str, &str)]) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (key, value) in sorted_params {
        mac.update(key.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64_STANDARD.encode(mac.finalize().into_bytes())
}

/// Sorted by key, then by value for a repeated key (twilio-python `sorted(values)`),
/// each identical pair once (twilio-node `new Set(values)`, whose published vector
/// repeats `Digits=1234`).
fn canonical<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut pairs: Vec<_> = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The URL without any explicit port, and with the scheme's default port unless it
/// already has one (twilio-python `remove_port`/`add_port`). Only the authority is
/// rewritten; credentials stay in the signed string, path and query keep their bytes.
fn port_variants(url: &str) -> Result<[String; 2], SignatureError> {
    let (scheme, rest) = url.split_once("://").ok_or(SignatureError::InvalidUrl)?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return Err(SignatureError::InvalidUrl),
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host_port) = authority.split_at(authority.rfind('@').map_or(0, |at| at + 1));
    // Digits after the last ':' are a port; in `[::1]` the text after it ends in ']'.
    let port_at = host_port.rfind(':').filter(|&colon| host_port[colon + 1..].bytes().all(|b| b.is_ascii_digit()));
    let host = port_at.map_or(host_port, |colon| &host_port[..colon]);
    if host.is_empty() {
        return Err(SignatureError::InvalidUrl);
    }
    let with_port = match port_at {
        Some(_) => url.to_owned(),
        None => format!("{scheme}://{userinfo}{host}:{default_port}{tail}"),
    };
    Ok([format!("{scheme}://{userinfo}{host}{tail}"), with_port])
}

/// The raw value of `name` in the URL's query. A bodySHA256 value is hex, which never
/// needs percent-encoding, so it is compared exactly as Twilio sent it.
fn query_value<'u>(url: &'u str, name: &str) -> Option<&'u str> {
    let (_, query) = url.split_once('?')?;
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Decodes an `application/x-www-form-urlencoded` body strictly: a broken `%` escape or
/// invalid UTF-8 is an error rather than a silent replacement, so the params checked are
/// exactly those Twilio signed and any later lenient parse of the body agrees with them.
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, SignatureError> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            Ok((form_decode(key)?, form_decode(value)?))
        })
        .collect()
}

fn form_decode(raw: &[u8]) -> Result<String, SignatureError> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        decoded.push(match b {
            b'+' => b' ',
            b'%' => {
                let mut hex_digit = || bytes.next().and_then(|&d| char::from(d).to_digit(16));
                match (hex_digit(), hex_digit()) {
                    (Some(high), Some(low)) => (high * 16 + low) as u8,
                    _ => return Err(SignatureError::MalformedBody),
                }
            }
            b => b,
        });
    }
    String::from_utf8(decoded).map_err(|_| SignatureError::MalformedBody)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from twilio/twilio-python tests/unit/test_request_validator.py and
    // twilio/twilio-node spec/validation.spec.js (same token, URL, params and values).
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PARAMS: [(&str, &str); 5] = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ];
    const SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    // PARAMS as Twilio posts them, in another order: '+' must be percent-encoded.
    const FORM_BODY: &str =
        "To=%2B18005551212&Digits=1234&From=%2B14158675309&Caller=%2B14158675309&CallSid=CA1234567890ABCDE";
    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json");
    const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_BODY_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    fn validate_form(url: &str, body: &str, signature: &str) -> Result<(), SignatureError> {
        validate(TOKEN, url, body.as_bytes(), FORM, signature)
    }

    #[test]
    fn computes_the_published_signature() {
        assert_eq!(compute(TOKEN, URL, &PARAMS), SIGNATURE);
    }

    #[test]
    fn accepts_the_published_request_from_its_raw_form_body() {
        assert_eq!(validate_form(URL, FORM_BODY, SIGNATURE), Ok(()));
        let with_charset = Some("application/x-www-form-urlencoded; charset=utf-8");
        assert_eq!(validate(TOKEN, URL, FORM_BODY.as_bytes(), with_charset, SIGNATURE), Ok(()));
    }

    #[test]
    fn strips_any_explicit_port() {
        // twilio-python test_validation_removes_port_on_https / node "stripping them".
        assert_eq!(validate_form("https://mycompany.com:1234/myapp.php?foo=1&bar=2", FORM_BODY, SIGNATURE), Ok(()));
    }

    #[test]
    fn accepts_a_signature_over_the_url_as_given_with_its_port() {
        // test_validation_removes_port_on_http: "hash of http uri with port 1234".
        let url = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert_eq!(validate_form(url, FORM_BODY, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="), Ok(()));
    }

    #[test]
    fn adds_the_default_port_of_the_scheme() {
        // test_validation_adds_port_on_https / test_validation_adds_port_on_http.
        assert_eq!(validate_form(URL, FORM_BODY, "kvajT1Ptam85bY51eRf/AJRuM3w="), Ok(()));
        let http = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(validate_form(http, FORM_BODY, "0ZXoZLH/DfblKGATFgpif+LLRf4="), Ok(()));
    }

    #[test]
    fn keeps_credentials_in_the_signed_url() {
        // twilio-node "should validate urls with credentials" and its two siblings.
        let with_user_and_password = "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(validate_form(with_user_and_password, FORM_BODY, "CukzLTc1tT5dXEDIHm/tKBanW10="), Ok(()));
        assert_eq!(validate_form(with_user_and_password, FORM_BODY, "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="), Ok(()));
        let with_user = "https://user@mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(validate_form(with_user, FORM_BODY, "2YRLlVAflCqxaNicjMpJcSTgzSs="), Ok(()));
    }

    #[test]
    fn signs_the_raw_query_not_a_re_encoded_one() {
        // twilio-node "should validate urls with special characters".
        let raw = format!("{URL}&Body=It's+amazing");
        assert_eq!(validate_form(&raw, FORM_BODY, "dsq4Ehbj6cs+KdTkpF5sSSplOWw="), Ok(()));
        let re_encoded = format!("{URL}&Body=It%27s+amazing");
        assert_eq!(
            validate_form(&re_encoded, FORM_BODY, "dsq4Ehbj6cs+KdTkpF5sSSplOWw="),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn sorts_repeated_keys_by_value_and_signs_each_identical_pair_once() {
        let expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
        // twilio-python test_compute_signature_duplicate_multi_dict.
        let twice = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")];
        assert_eq!(compute(TOKEN, URL, &twice), expected);
        // twilio-node "should validate request body with multiple params and values".
        let body = "Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234";
        assert_eq!(validate_form(URL, body, expected), Ok(()));
        // twilio-node "... with an array parameter regardless of the position of values".
        let expected = "83O6e2vORAoJHUNzJjDWN1jz+BA=";
        for body in [
            "MessagingBinding.Address=%2B1325xxxxxxx&MessagingBinding.Address=%2B1415xxxxxxx",
            "MessagingBinding.Address=%2B1415xxxxxxx&MessagingBinding.Address=%2B1325xxxxxxx",
        ] {
            assert_eq!(validate_form(URL, body, expected), Ok(()));
        }
    }

    #[test]
    fn json_body_is_checked_against_body_sha256() {
        assert_eq!(body_hash(JSON_BODY.as_bytes()), JSON_BODY_HASH);
        // twilio-python test_validation_of_body_succeeds / node "should validate request body when given".
        let url = format!("{URL}&bodySHA256={JSON_BODY_HASH}");
        assert_eq!(validate(TOKEN, &url, JSON_BODY.as_bytes(), JSON, "a9nBmqA0ju/hNViExpshrM61xv4="), Ok(()));
        // twilio-node "should validate request body with only sha param".
        let url = format!("https://mycompany.com/myapp.php?bodySHA256={JSON_BODY_HASH}");
        assert_eq!(validate(TOKEN, &url, JSON_BODY.as_bytes(), JSON, "y77kIzt2vzLz71DgmJGsen2scGs="), Ok(()));
        // twilio-node "should validate request body when empty": signed with port 443.
        let empty_hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(body_hash(b"{}"), empty_hash);
        let url = format!("{URL}&bodySHA256={empty_hash}");
        assert_eq!(validate(TOKEN, &url, b"{}", JSON, "Ldidvp12m26NI7eqEvxnEpkd9Hc="), Ok(()));
    }

    #[test]
    fn tampered_json_body_is_a_body_hash_mismatch() {
        let url = format!("{URL}&bodySHA256={JSON_BODY_HASH}");
        let tampered = JSON_BODY.replace("value", "other");
        let result = validate(TOKEN, &url, tampered.as_bytes(), JSON, "a9nBmqA0ju/hNViExpshrM61xv4=");
        assert_eq!(result, Err(SignatureError::BodyHashMismatch));
    }

    #[test]
    fn json_body_without_body_sha256_is_refused() {
        // twilio-node "should fail validation if given body but no bodySHA256 param".
        let result = validate(TOKEN, URL, JSON_BODY.as_bytes(), JSON, SIGNATURE);
        assert_eq!(result, Err(SignatureError::UnsignedBody));
        let result = validate(TOKEN, URL, FORM_BODY.as_bytes(), None, SIGNATURE);
        assert_eq!(result, Err(SignatureError::UnsignedBody));
    }

    #[test]
    fn empty_params_sign_the_url_alone() {
        let url = format!("{URL}&bodySHA256={JSON_BODY_HASH}");
        assert_eq!(compute::<&str, &str>(TOKEN, &url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
        // A GET webhook: no body, no content type.
        let signature = compute::<&str, &str>(TOKEN, URL, &[]);
        assert_eq!(validate(TOKEN, URL, b"", None, &signature), Ok(()));
    }

    #[test]
    fn a_signature_for_another_url_is_rejected() {
        // twilio-node spec/unit/webhooks/webhooks.spec.js: "does not match the target URL".
        let signature = compute::<&str, &str>("s3cr3t", "https://example.com/path?test=param", &[]);
        let result = validate("s3cr3t", "https://example.com/path?test=param2", b"", None, &signature);
        assert_eq!(result, Err(SignatureError::Mismatch));
        let other_host = URL.replace("mycompany", "evil");
        assert_eq!(validate_form(&other_host, FORM_BODY, SIGNATURE), Err(SignatureError::Mismatch));
    }

    #[test]
    fn tampered_param_wrong_token_and_wrong_signature_are_rejected() {
        let tampered = FORM_BODY.replace("Digits=1234", "Digits=9999");
        assert_eq!(validate_form(URL, &tampered, SIGNATURE), Err(SignatureError::Mismatch));
        let added = format!("{FORM_BODY}&Extra=1");
        assert_eq!(validate_form(URL, &added, SIGNATURE), Err(SignatureError::Mismatch));
        assert_eq!(validate(TOKEN, URL, FORM_BODY.as_bytes(), FORM, "WRONG_SIGNATURE"), Err(SignatureError::Mismatch));
        assert_eq!(validate("54321", URL, FORM_BODY.as_bytes(), FORM, SIGNATURE), Err(SignatureError::Mismatch));
        assert_eq!(validate_form(URL, FORM_BODY, ""), Err(SignatureError::Mismatch));
    }

    #[test]
    fn form_plus_is_a_space_and_percent_2b_a_plus() {
        let url = "https://example.com/twilio/voice";
        let signature = compute(TOKEN, url, &[("Body", "hello world"), ("From", "+1")]);
        assert_eq!(validate_form(url, "Body=hello+world&From=%2B1", &signature), Ok(()));
        assert_eq!(validate_form(url, "Body=hello%20world&From=%2b1", &signature), Ok(()));
        assert_eq!(validate_form(url, "Body=hello+world&From=+1", &signature), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_form_body_is_refused() {
        for body in ["Digits=%zz", "Digits=%4", "Digits=%ff"] {
            assert_eq!(validate_form(URL, body, SIGNATURE), Err(SignatureError::MalformedBody), "{body}");
        }
    }

    #[test]
    fn port_variants_touch_only_the_authority() {
        let variants = |url| port_variants(url).unwrap();
        assert_eq!(
            variants("https://a.example/p?q=1:2"),
            ["https://a.example/p?q=1:2", "https://a.example:443/p?q=1:2"]
        );
        assert_eq!(variants("http://[::1]:8080/p"), ["http://[::1]/p", "http://[::1]:8080/p"]);
        assert_eq!(variants("http://[::1]/p"), ["http://[::1]/p", "http://[::1]:80/p"]);
        assert_eq!(
            variants("https://u:p@a.example?x=@b:9"),
            ["https://u:p@a.example?x=@b:9", "https://u:p@a.example:443?x=@b:9"]
        );
        for invalid in ["/myapp.php", "ftp://a.example/", "https:///p", "https://u@:443/"] {
            assert_eq!(port_variants(invalid), Err(SignatureError::InvalidUrl), "{invalid}");
        }
    }
}
