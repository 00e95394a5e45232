//! Standard Webhooks v1 (symmetric): secrets, signing, headers and verification.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::timestamp::Timestamp;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest secret accepted, in bytes (the specification's minimum, 192 bits).
pub const MIN_SECRET_LEN: usize = 24;

/// Longest secret accepted, in bytes (512 bits).
pub const MAX_SECRET_LEN: usize = 64;

/// Header carrying the message id (stable across retries; receivers dedupe on it).
pub const HEADER_ID: &str = "webhook-id";

/// Header carrying the attempt time, integer Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";

/// Header carrying the space-separated list of `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far the `webhook-timestamp` may lie in the past or the future unless
/// [`WebhookVerifier::with_tolerance`] says otherwise (the specification's reference value).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Longest message id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Longest `webhook-signature` header looked at, in bytes; longer ones are refused unparsed.
pub const MAX_SIGNATURE_HEADER_LEN: usize = 4096;

/// Most signatures one header may list (rotation needs two or three).
pub const MAX_SIGNATURES: usize = 16;

/// The version prefix of symmetric (HMAC-SHA256) signatures.
const V1: &str = "v1";

/// Length of the standard, padded base64 form of a 32-byte MAC.
const MAC_B64_LEN: usize = 44;

/// Secrets are read with or without trailing `=` (generators differ); MACs are read strictly.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A Standard Webhooks signing secret: 24 to 64 random bytes, written `whsec_` + base64.
///
/// `Debug` never shows the secret; [`expose_whsec`](Self::expose_whsec) gives the text form to
/// hand to the receiver's operator.
#[derive(Clone)]
pub struct WebhookSecret {
    bytes: Vec<u8>,
    mac: HmacSha256,
}

impl WebhookSecret {
    /// A secret from raw bytes (24 to 64, from a CSPRNG).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WebhookSecretError> {
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            return Err(WebhookSecretError::Length { len: bytes.len() });
        }
        let mac = HmacSha256::new_from_slice(bytes)
            .map_err(|_| WebhookSecretError::Length { len: bytes.len() })?;
        Ok(Self {
            bytes: bytes.to_vec(),
            mac,
        })
    }

    /// Parses the text form `whsec_<base64>` (standard alphabet, trailing `=` optional).
    pub fn parse(text: &str) -> Result<Self, WebhookSecretError> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookSecretError::Prefix)?;
        // 64 bytes are 88 base64 characters; anything much longer is not worth decoding.
        if b64.len() > 2 * MAX_SECRET_LEN {
            return Err(WebhookSecretError::Length {
                len: b64.len() / 4 * 3,
            });
        }
        let bytes = SECRET_BASE64
            .decode(b64)
            .map_err(|_| WebhookSecretError::Base64)?;
        Self::from_bytes(&bytes)
    }

    /// The text form `whsec_<base64>`, for configuring the receiver. Handle it as a secret.
    pub fn expose_whsec(&self) -> String {
        let mut text = String::from(SECRET_PREFIX);
        STANDARD.encode_string(&self.bytes, &mut text);
        text
    }

    /// The MAC state after absorbing `{msg_id}.{timestamp}.{body}`.
    fn mac_over(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl FromStr for WebhookSecret {
    type Err = WebhookSecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSecret")
            .field("len", &self.bytes.len())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Signs one message with one secret: `v1,<base64(HMAC-SHA256(secret, "{msg_id}.{timestamp}.{body}"))>`.
///
/// `msg_id` should come from [`WebhookSigner::headers`]'s checks (no `.`, no whitespace); this
/// function signs whatever it is given.
///
/// ```
/// use agent_handoff::notify::webhook::{sign, WebhookSecret};
///
/// let secret: WebhookSecret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
/// let body = br#"{"email":"test@example.com","username":"test_user"}"#;
/// assert_eq!(
///     sign(&secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
///     "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
/// );
/// ```
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(V1.len() + 1 + MAC_B64_LEN);
    out.push_str(V1);
    out.push(',');
    let tag = secret
        .mac_over(msg_id, timestamp_secs, body)
        .finalize()
        .into_bytes();
    STANDARD.encode_string(tag, &mut out);
    out
}

/// The three headers of one signed delivery. `Debug` shows them all (signatures are not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, integer Unix seconds.
    pub timestamp: String,
    /// `webhook-signature`: one `v1,<base64>` per secret, space-separated.
    pub signature: String,
}

impl WebhookHeaders {
    /// `(name, value)` pairs, ready for any HTTP client.
    pub fn to_pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_ID, &self.id),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// Signs outgoing webhooks with one or more secrets (the current one first; keep the previous
/// one during a rotation so receivers that have not switched yet still verify).
#[derive(Debug, Clone)]
pub struct WebhookSigner {
    secrets: Vec<WebhookSecret>,
}

impl WebhookSigner {
    /// A signer with at least one and at most [`MAX_SIGNATURES`] secrets.
    pub fn new(secrets: impl IntoIterator<Item = WebhookSecret>) -> Result<Self, WebhookSignError> {
        let secrets: Vec<_> = secrets.into_iter().collect();
        if secrets.is_empty() || secrets.len() > MAX_SIGNATURES {
            return Err(WebhookSignError::SecretCount {
                count: secrets.len(),
            });
        }
        Ok(Self { secrets })
    }

    /// The headers for delivering `body` as message `msg_id` at `now`.
    ///
    /// `msg_id` must be stable across retries of the same delivery (the outbox row id) and is
    /// checked: 1 to [`MAX_ID_LEN`] bytes of printable ASCII without `.` (which would make the
    /// signed content ambiguous) or spaces. `now` must not be before the Unix epoch.
    pub fn headers(
        &self,
        msg_id: &str,
        now: Timestamp,
        body: &[u8],
    ) -> Result<WebhookHeaders, WebhookSignError> {
        if !is_valid_id(msg_id) {
            return Err(WebhookSignError::InvalidId);
        }
        let timestamp = now.as_unix_seconds();
        if timestamp < 0 {
            return Err(WebhookSignError::BeforeEpoch);
        }
        let signature = self
            .secrets
            .iter()
            .map(|s| sign(s, msg_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ");
        Ok(WebhookHeaders {
            id: msg_id.to_owned(),
            timestamp: timestamp.to_string(),
            signature,
        })
    }
}

/// What an authentic webhook said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedWebhook {
    /// The `webhook-id`: record it and drop later deliveries with the same id.
    pub id: String,
    /// The `webhook-timestamp`, Unix seconds.
    pub timestamp: i64,
}

/// Verifies incoming Standard Webhooks: several secrets (rotation), a tolerance window around a
/// passed-in `now`, constant-time comparison.
///
/// Checks, in order: headers present and well-formed ([`MissingHeader`],
/// [`DuplicateHeader`], [`BadId`], [`BadTimestamp`], [`BadSignatureHeader`]); at least one `v1`
/// signature verifying under at least one secret ([`NoValidSignature`]; entries with other
/// version prefixes, such as the asymmetric `v1a`, are ignored as the specification says, and a
/// `v1` entry that is empty, truncated, over-long or not base64 simply does not verify); then,
/// for authentic messages only, the window ([`TooOld`], [`TooNew`]), so a timestamp refusal
/// always means a genuine message outside the window (a replay or a skewed clock).
///
/// [`MissingHeader`]: WebhookVerifyError::MissingHeader
/// [`DuplicateHeader`]: WebhookVerifyError::DuplicateHeader
/// [`BadId`]: WebhookVerifyError::BadId
/// [`BadTimestamp`]: WebhookVerifyError::BadTimestamp
/// [`BadSignatureHeader`]: WebhookVerifyError::BadSignatureHeader
/// [`NoValidSignature`]: WebhookVerifyError::NoValidSignature
/// [`TooOld`]: WebhookVerifyError::TooOld
/// [`TooNew`]: WebhookVerifyError::TooNew
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

impl WebhookVerifier {
    /// A verifier accepting signatures made with any of `secrets` (at least one, at most
    /// [`MAX_SIGNATURES`]).
    pub fn new(
        secrets: impl IntoIterator<Item = WebhookSecret>,
    ) -> Result<Self, WebhookVerifierError> {
        let secrets: Vec<_> = secrets.into_iter().collect();
        if secrets.is_empty() || secrets.len() > MAX_SIGNATURES {
            return Err(WebhookVerifierError::SecretCount {
                count: secrets.len(),
            });
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// Sets how far the timestamp may lie before or after `now` (default
    /// [`DEFAULT_TOLERANCE`]); whole seconds count.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies a request given its headers (names compared ASCII case-insensitively; each of
    /// the three must appear exactly once) and its raw body bytes, as received.
    pub fn verify<K: AsRef<str>, V: AsRef<str>>(
        &self,
        headers: &[(K, V)],
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedWebhook, WebhookVerifyError> {
        let id = single_header(headers, HEADER_ID)?;
        let timestamp = single_header(headers, HEADER_TIMESTAMP)?;
        let signature = single_header(headers, HEADER_SIGNATURE)?;
        self.verify_parts(id, timestamp, signature, body, now)
    }

    /// Verifies a request given the three header values directly.
    pub fn verify_parts(
        &self,
        msg_id: &str,
        timestamp: &str,
        signature_header: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedWebhook, WebhookVerifyError> {
        if !is_valid_id(msg_id) {
            return Err(WebhookVerifyError::BadId);
        }
        let ts = parse_timestamp(timestamp).ok_or(WebhookVerifyError::BadTimestamp)?;
        if signature_header.len() > MAX_SIGNATURE_HEADER_LEN {
            return Err(WebhookVerifyError::BadSignatureHeader);
        }
        let entries: Vec<&str> = signature_header
            .split(' ')
            .filter(|e| !e.is_empty())
            .collect();
        if entries.len() > MAX_SIGNATURES {
            return Err(WebhookVerifyError::BadSignatureHeader);
        }
        // Unknown versions (such as the asymmetric `v1a`) are skipped, and so are `v1` entries
        // that do not decode to exactly 32 bytes: they cannot verify.
        let tags: Vec<[u8; 32]> = entries
            .into_iter()
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == V1)
            .filter_map(|(_, b64)| decode_mac(b64))
            .collect();
        // The body is hashed once per secret; every tag is checked against every secret,
        // whatever matched before, so the work does not depend on which one verifies.
        let mut authentic = false;
        for secret in &self.secrets {
            let mac = secret.mac_over(msg_id, ts, body);
            for tag in &tags {
                authentic |= mac.clone().verify_slice(tag).is_ok();
            }
        }
        if !authentic {
            return Err(WebhookVerifyError::NoValidSignature);
        }
        let now_secs = i128::from(now.as_unix_seconds());
        let tolerance = i128::from(self.tolerance.as_secs());
        let age = now_secs - i128::from(ts);
        if age > tolerance {
            return Err(WebhookVerifyError::TooOld { timestamp: ts });
        }
        if -age > tolerance {
            return Err(WebhookVerifyError::TooNew { timestamp: ts });
        }
        Ok(VerifiedWebhook {
            id: msg_id.to_owned(),
            timestamp: ts,
        })
    }
}

/// Decodes a strict, padded standard-base64 32-byte MAC; anything else is `None`.
fn decode_mac(b64: &str) -> Option<[u8; 32]> {
    if b64.len() != MAC_B64_LEN {
        return None;
    }
    // One spare byte: the decoder wants room for its length estimate.
    let mut buf = [0u8; 33];
    match STANDARD.decode_slice(b64, &mut buf) {
        Ok(32) => {
            let mut tag = [0u8; 32];
            tag.copy_from_slice(&buf[..32]);
            Some(tag)
        }
        _ => None,
    }
}

/// Canonical non-negative decimal seconds: digits only, no sign, no leading zero, fits `i64`.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty()
        || text.len() > 19
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

/// 1 to [`MAX_ID_LEN`] bytes of printable ASCII (`!` to `~`) other than `.`.
fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
}

/// The one value of header `name`, or a missing / duplicate refusal.
fn single_header<'h, K: AsRef<str>, V: AsRef<str>>(
    headers: &'h [(K, V)],
    name: &'static str,
) -> Result<&'h str, WebhookVerifyError> {
    let mut found = None;
    for (k, v) in headers {
        if k.as_ref().eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Err(WebhookVerifyError::DuplicateHeader { name });
            }
            found = Some(v.as_ref());
        }
    }
    found.ok_or(WebhookVerifyError::MissingHeader { name })
}

/// A webhook secret could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookSecretError {
    /// The text form does not start with `whsec_`.
    #[error("webhook secret does not start with `whsec_`")]
    Prefix,
    /// The text after `whsec_` is not standard base64.
    #[error("webhook secret is not valid base64")]
    Base64,
    /// Not between 24 and 64 bytes.
    #[error("webhook secret is {len} bytes, 24 to 64 required")]
    Length {
        /// Length found (estimated for over-long text).
        len: usize,
    },
}

/// Outgoing headers could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookSignError {
    /// A signer needs 1 to 16 secrets.
    #[error("a webhook signer needs 1 to 16 secrets, got {count}")]
    SecretCount {
        /// Number given.
        count: usize,
    },
    /// The message id is empty, too long, or has `.`, spaces or non-printable characters.
    #[error("webhook id must be 1 to 256 printable ASCII characters without `.` or spaces")]
    InvalidId,
    /// `now` is before the Unix epoch.
    #[error("webhook timestamp is before the Unix epoch")]
    BeforeEpoch,
}

/// A verifier could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookVerifierError {
    /// A verifier needs 1 to 16 secrets.
    #[error("a webhook verifier needs 1 to 16 secrets, got {count}")]
    SecretCount {
        /// Number given.
        count: usize,
    },
}

/// An incoming webhook was refused. Variants are distinct so each refusal can be handled and
/// audited as what it is; none of them carries request content beyond the parsed timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookVerifyError {
    /// A required header is absent.
    #[error("webhook header `{name}` is missing")]
    MissingHeader {
        /// The header name.
        name: &'static str,
    },
    /// A header appears more than once.
    #[error("webhook header `{name}` appears more than once")]
    DuplicateHeader {
        /// The header name.
        name: &'static str,
    },
    /// `webhook-id` is empty, too long, or has `.`, spaces or non-printable characters.
    #[error("webhook id is malformed")]
    BadId,
    /// `webhook-timestamp` is not canonical non-negative integer seconds.
    #[error("webhook timestamp is malformed")]
    BadTimestamp,
    /// `webhook-signature` is longer than 4096 bytes or lists more than 16 signatures.
    #[error("webhook signature header is too long")]
    BadSignatureHeader,
    /// No `v1` signature verifies under any secret (forged, altered, wrong secret, or only
    /// unsupported versions listed).
    #[error("no webhook signature verifies")]
    NoValidSignature,
    /// Authentic, but older than the tolerance allows (a replay or a delayed retry).
    #[error("webhook timestamp {timestamp} is too old")]
    TooOld {
        /// The message's timestamp, Unix seconds.
        timestamp: i64,
    },
    /// Authentic, but further in the future than the tolerance allows.
    #[error("webhook timestamp {timestamp} is in the future")]
    TooNew {
        /// The message's timestamp, Unix seconds.
        timestamp: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
    }

    #[test]
    fn mac_decoding_is_strict() {
        let good = "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
        assert!(decode_mac(good).is_some());
        assert!(decode_mac("").is_none());
        assert!(decode_mac(&good[..43]).is_none());
        assert!(decode_mac(&format!("{good}A")).is_none());
        // Same length, but not the canonical encoding (non-zero trailing bits).
        assert!(decode_mac("tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=").is_none());
        assert!(decode_mac("tZ1I4_hDygAJgO5TYxiSd6Sd0kDW6hPenDe-bTa3Kkw=").is_none());
    }

    #[test]
    fn timestamps_are_canonical() {
        assert_eq!(parse_timestamp("0"), Some(0));
        assert_eq!(parse_timestamp("1649367553"), Some(1_649_367_553));
        for bad in [
            "",
            "01649367553",
            "+1649367553",
            "-1",
            " 1",
            "1.0",
            "99999999999999999999",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ids_exclude_dots_and_spaces() {
        assert!(is_valid_id("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a.b"));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("a\r\nb"));
        assert!(!is_valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = secret();
        let debug = format!("{s:?}");
        assert!(!debug.contains("C2FVsBQIhrscChlQIMV"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let verifier = WebhookVerifier::new([s.clone()]).unwrap();
        assert!(!format!("{verifier:?}").contains("C2FVsBQIhrscChlQIMV"));
        let signer = WebhookSigner::new([s]).unwrap();
        assert!(!format!("{signer:?}").contains("C2FVsBQIhrscChlQIMV"));
    }
}
