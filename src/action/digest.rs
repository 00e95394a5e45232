//! The action digest (SHA-256 over RFC 8785 canonical JSON) and its keyed variant.
//!
//! The encoding is specified on [`ActionDigest`] and [`DigestKey`].

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::canonical::{
    canonical_json, es6_number, write_canonical, write_canonical_map, write_string,
};
use super::request::ActionRequest;
use crate::codes::{self, Code};

/// The `format` member of the digested document; a new document layout gets a new value.
pub const ACTION_DIGEST_FORMAT: &str = "agent-handoff/action-digest/v1";

/// The label HMAC'd in front of the action digest to make a [`KeyedDigest`].
pub const KEYED_DIGEST_LABEL: &str = "agent-handoff/keyed-action-digest/v1";

/// SHA-256 over the RFC 8785 canonical JSON of everything a ruling or a reviewer relies on.
///
/// # The digested document, version 1
///
/// [`ActionDigest::of`] is `SHA-256(JCS(document))`, where JCS is RFC 8785 (see
/// [`canonical_json`]) and `document` is a JSON object with exactly these members:
///
/// | member | value |
/// |---|---|
/// | `format` | the string `"agent-handoff/action-digest/v1"` ([`ACTION_DIGEST_FORMAT`]) |
/// | `kind` | the action kind, a string (`"payment.send"`) |
/// | `targets` | array of the target strings, in the order given |
/// | `parameters` | the parameters object, **with sensitive values in clear** |
/// | `environment` | string: `"development"`, `"staging"`, `"production"` or the custom name |
/// | `sensitivity` | string: `"public"`, `"internal"`, `"confidential"` or `"regulated"` |
/// | `impact` | `{"amount": "<decimal>", "unit": "<unit>"}`, or `null` when not stated |
/// | `reversibility` | string: `"reversible"`, `"compensable"` or `"irreversible"` |
/// | `confidence` | the number in `0..=1`, or `null` when not stated |
/// | `attributes` | object: attribute name → JSON value (`{}` when none) |
/// | `preconditions` | object: precondition name → expected JSON value (`{}` when none) |
///
/// The impact amount is the normal-form decimal string of [`Amount`](super::Amount): no
/// leading zeros in the integer part, no trailing zeros in the fraction, no trailing `.`
/// (`"4200.50"` and `"04200.5"` both give `"4200.5"`; integer minor units `1500` give
/// `"1500"`). It is a string, never a JSON number.
///
/// **Not digested**: the justification (reason, expected effect, risks, rollback plan), the
/// idempotency key and the list of sensitive pointers. They do not change what is executed;
/// changing them does not change the digest.
///
/// Because [`ActionRequest`] validation refuses integers outside ±(2^53 − 1) anywhere in the
/// parameters, attributes and preconditions, every digested document is plain RFC 8785 input,
/// and any conforming JCS implementation reproduces the bytes.
///
/// # Example
///
/// The request built below has this document (shown with whitespace; the digest covers its
/// canonical form, which is checked in as `tests/vectors/action_digest_v1.json`):
///
/// ```json
/// {
///   "attributes": {"vendor_tier": "new"},
///   "confidence": 0.93,
///   "environment": "production",
///   "format": "agent-handoff/action-digest/v1",
///   "impact": {"amount": "4200.5", "unit": "USD"},
///   "kind": "payment.send",
///   "parameters": {"amount": "4200.50", "currency": "USD", "iban": "DE89370400440532013000"},
///   "preconditions": {"balance_at_least": "5000"},
///   "reversibility": "compensable",
///   "sensitivity": "confidential",
///   "targets": ["vendor:acme"]
/// }
/// ```
///
/// ```
/// use agent_handoff::action::{ActionDigest, ActionRequest, Amount, Environment, Impact,
///     Reversibility, Sensitivity};
/// use serde_json::json;
///
/// let request = ActionRequest::builder("payment.send", "invoice-2024-0042")
///     .target("vendor:acme")
///     .parameters(json!({"iban": "DE89370400440532013000", "amount": "4200.50", "currency": "USD"}))
///     .sensitive("/iban")
///     .environment(Environment::Production)
///     .sensitivity(Sensitivity::Confidential)
///     .impact(Impact::new(Amount::parse("4200.50").unwrap(), "USD"))
///     .reversibility(Reversibility::Compensable)
///     .confidence(0.93)
///     .attribute("vendor_tier", json!("new"))
///     .precondition("balance_at_least", json!("5000"))
///     .reason("pay the March invoice")
///     .build()
///     .unwrap();
///
/// assert_eq!(
///     String::from_utf8(ActionDigest::canonical_bytes(&request)).unwrap(),
///     concat!(
///         r#"{"attributes":{"vendor_tier":"new"},"confidence":0.93,"environment":"production","#,
///         r#""format":"agent-handoff/action-digest/v1","impact":{"amount":"4200.5","unit":"USD"},"#,
///         r#""kind":"payment.send","parameters":{"amount":"4200.50","currency":"USD","#,
///         r#""iban":"DE89370400440532013000"},"preconditions":{"balance_at_least":"5000"},"#,
///         r#""reversibility":"compensable","sensitivity":"confidential","targets":["vendor:acme"]}"#,
///     ),
/// );
/// assert_eq!(
///     request.digest().to_string(),
///     "eab5f43cd01530b3c4d605354d1b51d81f8a76a009cb27d25d6c3e2e5283638a",
/// );
/// ```
///
/// # Text form
///
/// Displays, serialises (serde) and parses ([`FromStr`]) as 64 lowercase hexadecimal
/// digits; `Debug` shows only the first 8 of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionDigest([u8; 32]);

impl ActionDigest {
    /// The digest of a request: SHA-256 over [`canonical_bytes`](Self::canonical_bytes).
    pub fn of(request: &ActionRequest) -> Self {
        Self(Sha256::digest(Self::canonical_bytes(request)).into())
    }

    /// The exact bytes that are hashed: the canonical JSON of the
    /// [digested document](ActionDigest#the-digested-document-version-1). Useful to reproduce
    /// a digest elsewhere.
    pub fn canonical_bytes(request: &ActionRequest) -> Vec<u8> {
        // Streamed in canonical member order (the member names are ASCII, so UTF-16 order is
        // byte order); `document` builds the same thing as a Value, and a test holds them equal.
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(b"{\"attributes\":");
        write_canonical_map(request.attributes(), &mut out);
        out.extend_from_slice(b",\"confidence\":");
        match request.confidence() {
            Some(c) => out.extend_from_slice(es6_number(c.get()).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"environment\":");
        write_string(request.environment().as_str(), &mut out);
        out.extend_from_slice(b",\"format\":");
        write_string(ACTION_DIGEST_FORMAT, &mut out);
        out.extend_from_slice(b",\"impact\":");
        match request.impact() {
            Some(impact) => {
                out.extend_from_slice(b"{\"amount\":");
                write_string(&impact.amount.to_string(), &mut out);
                out.extend_from_slice(b",\"unit\":");
                write_string(&impact.unit, &mut out);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"kind\":");
        write_string(request.kind().as_str(), &mut out);
        out.extend_from_slice(b",\"parameters\":");
        write_canonical(request.parameters(), &mut out);
        out.extend_from_slice(b",\"preconditions\":");
        write_canonical_map(request.preconditions(), &mut out);
        out.extend_from_slice(b",\"reversibility\":");
        write_string(request.reversibility().as_str(), &mut out);
        out.extend_from_slice(b",\"sensitivity\":");
        write_string(request.sensitivity().as_str(), &mut out);
        out.extend_from_slice(b",\"targets\":[");
        for (i, target) in request.targets().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(target, &mut out);
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The digested document (version 1) of a request, as a value: the reference for
/// [`ActionDigest::canonical_bytes`], which streams the same bytes without building it.
#[cfg(test)]
fn document(request: &ActionRequest) -> Value {
    use serde_json::Map;
    let mut doc = Map::new();
    doc.insert("format".into(), Value::from(ACTION_DIGEST_FORMAT));
    doc.insert("kind".into(), Value::from(request.kind().as_str()));
    doc.insert(
        "targets".into(),
        Value::Array(
            request
                .targets()
                .iter()
                .map(|t| Value::from(t.as_str()))
                .collect(),
        ),
    );
    doc.insert("parameters".into(), request.parameters().clone());
    doc.insert(
        "environment".into(),
        Value::from(request.environment().as_str()),
    );
    doc.insert(
        "sensitivity".into(),
        Value::from(request.sensitivity().as_str()),
    );
    let impact = match request.impact() {
        Some(impact) => {
            let mut obj = Map::new();
            obj.insert("amount".into(), Value::from(impact.amount.to_string()));
            obj.insert("unit".into(), Value::from(impact.unit.as_str()));
            Value::Object(obj)
        }
        None => Value::Null,
    };
    doc.insert("impact".into(), impact);
    doc.insert(
        "reversibility".into(),
        Value::from(request.reversibility().as_str()),
    );
    // `Value::from(f64)` is `null` only for non-finite values, which `Confidence` refuses.
    let confidence = request
        .confidence()
        .map_or(Value::Null, |c| Value::from(c.get()));
    doc.insert("confidence".into(), confidence);
    let map = |m: &std::collections::BTreeMap<String, Value>| {
        Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    };
    doc.insert("attributes".into(), map(request.attributes()));
    doc.insert("preconditions".into(), map(request.preconditions()));
    Value::Object(doc)
}

/// Why a digest's text form was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDigestError {
    /// Not 64 characters long.
    #[error("digest is {len} bytes long; 64 lowercase hex digits are required")]
    Length {
        /// Its length in bytes.
        len: usize,
    },
    /// A character other than `0-9` and `a-f`.
    #[error("digest has a character other than `0-9` and `a-f` at byte {index}")]
    Character {
        /// Byte offset of the first offending character.
        index: usize,
    },
}

impl ParseDigestError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        codes::INVALID_DIGEST
    }
}

/// Writes bytes as lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    out
}

/// Reads exactly 64 lowercase hex digits.
fn from_hex32(text: &str) -> Result<[u8; 32], ParseDigestError> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(ParseDigestError::Length { len: bytes.len() });
    }
    let nibble = |i: usize| match bytes[i] {
        b @ b'0'..=b'9' => Ok(b - b'0'),
        b @ b'a'..=b'f' => Ok(b - b'a' + 10),
        _ => Err(ParseDigestError::Character { index: i }),
    };
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (nibble(2 * i)? << 4) | nibble(2 * i + 1)?;
    }
    Ok(out)
}

macro_rules! hex_digest_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            /// 64 lowercase hex digits.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&to_hex(&self.0))
            }
        }

        impl fmt::Debug for $name {
            /// The first 8 hex digits, enough to tell digests apart in logs.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), to_hex(&self.0[..4]))
            }
        }

        impl FromStr for $name {
            type Err = ParseDigestError;

            /// Exactly 64 lowercase hex digits.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                from_hex32(s).map(Self)
            }
        }

        impl Serialize for $name {
            /// As 64 lowercase hex digits.
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            /// From 64 lowercase hex digits.
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("64 lowercase hex digits")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

hex_digest_impls!(ActionDigest);
hex_digest_impls!(KeyedDigest);

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with 32 bytes.
///
/// HMAC zero-pads keys shorter than the 64-byte SHA-256 block (RFC 2104), so keying with the
/// padded block is the same function, and needs no fallible length check.
pub(crate) fn hmac_sha256(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// A secret key for keyed digests (what leaves the store). Never printed.
///
/// # Keyed digests
///
/// A bare SHA-256 of a document with a low-entropy sensitive value (a 4-digit PIN, an amount)
/// can be brute-forced by whoever sees it. Anything that leaves the store (links, cards,
/// webhook bodies, decision tokens) therefore carries a [`KeyedDigest`]:
///
/// ```text
/// keyed = HMAC-SHA256(key, "agent-handoff/keyed-action-digest/v1" ‖ 0x00 ‖ digest)
/// ```
///
/// where `key` is the 32-byte [`DigestKey`] and `digest` the 32 raw bytes of the
/// [`ActionDigest`]. The label ([`KEYED_DIGEST_LABEL`]) keeps these MACs apart from any other
/// HMAC made with the same key.
#[derive(Clone)]
pub struct DigestKey([u8; 32]);

impl DigestKey {
    /// From 32 secret bytes (from a CSPRNG, kept in the host's secret store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// `HMAC-SHA256(key, KEYED_DIGEST_LABEL ‖ 0x00 ‖ digest)`; see
    /// [keyed digests](DigestKey#keyed-digests).
    pub fn keyed(&self, digest: &ActionDigest) -> KeyedDigest {
        KeyedDigest(self.mac(digest).finalize().into_bytes().into())
    }

    /// Whether `presented` is the keyed form of `digest` under this key, compared in constant
    /// time. Use this for keyed digests that arrive from outside (links, callbacks).
    pub fn verify(&self, digest: &ActionDigest, presented: &KeyedDigest) -> bool {
        self.mac(digest).verify_slice(&presented.0).is_ok()
    }

    fn mac(&self, digest: &ActionDigest) -> HmacSha256 {
        let mut mac = hmac_sha256(&self.0);
        mac.update(KEYED_DIGEST_LABEL.as_bytes());
        mac.update(&[0]);
        mac.update(&digest.0);
        mac
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(<redacted>)")
    }
}

/// HMAC-SHA256 of an [`ActionDigest`] under a [`DigestKey`]; see
/// [keyed digests](DigestKey#keyed-digests). Displays, serialises and parses as 64 lowercase
/// hex digits; `Debug` shows the first 8.
///
/// `==` is not constant-time: compare a value that arrived from outside with
/// [`verify`](Self::verify) or [`DigestKey::verify`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyedDigest([u8; 32]);

impl KeyedDigest {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `other` is the same keyed digest, compared in constant time (every byte is
    /// looked at whatever the first difference).
    pub fn verify(&self, other: &KeyedDigest) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
        diff == 0
    }
}

/// Hex of a HMAC-SHA256 commitment over `pointer ‖ 0x00 ‖ JCS(value)` keyed with `salt`.
pub(crate) fn commitment(salt: &[u8; 32], pointer: &str, value: &Value) -> String {
    let mut mac = hmac_sha256(salt);
    mac.update(pointer.as_bytes());
    mac.update(&[0]);
    mac.update(&canonical_json(value));
    to_hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_bytes_equal_the_canonical_document() {
        use serde_json::json;
        let requests = [
            ActionRequest::builder("a.b", "key-00000001")
                .build()
                .unwrap(),
            ActionRequest::builder("payment.send", "key-00000002")
                .target("t\"\\")
                .target("ünï")
                .parameters(json!({"\u{e000}": 1, "\u{1f600}": [1.5, -0.0, "\"\\"], "a": {}}))
                .impact(super::super::Impact::new(
                    super::super::Amount::parse("0012.50").unwrap(),
                    "EUR_cents",
                ))
                .confidence(0.1)
                .attribute("Z", json!(null))
                .attribute("a", json!({"y": 1, "x": 2}))
                .precondition("p.q-r", json!([true]))
                .environment(super::super::Environment::Custom("eu-1".into()))
                .build()
                .unwrap(),
        ];
        for request in &requests {
            assert_eq!(
                ActionDigest::canonical_bytes(request),
                canonical_json(&document(request))
            );
        }
    }

    #[test]
    fn hex_round_trips_and_is_strict() {
        let d = ActionDigest::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        let text = d.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..8], "00070e15");
        assert_eq!(text.parse::<ActionDigest>().unwrap(), d);
        assert_eq!(
            "ab".parse::<ActionDigest>(),
            Err(ParseDigestError::Length { len: 2 })
        );
        let upper = text.to_uppercase();
        assert_eq!(
            upper.parse::<ActionDigest>(),
            Err(ParseDigestError::Character { index: 5 })
        );
        let mut bad = text.clone();
        bad.replace_range(63.., "g");
        assert_eq!(
            bad.parse::<KeyedDigest>(),
            Err(ParseDigestError::Character { index: 63 })
        );
    }

    #[test]
    fn debug_shows_a_prefix_only() {
        let d = ActionDigest::from_bytes([0xab; 32]);
        assert_eq!(format!("{d:?}"), "ActionDigest(abababab…)");
        let k = KeyedDigest::from_bytes([0x01; 32]);
        assert_eq!(format!("{k:?}"), "KeyedDigest(01010101…)");
    }

    #[test]
    fn serde_uses_hex_strings() {
        let d = ActionDigest::from_bytes([0x5a; 32]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "5a".repeat(32)));
        assert_eq!(serde_json::from_str::<ActionDigest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<ActionDigest>("[1,2]").is_err());
        assert!(serde_json::from_str::<KeyedDigest>("\"5a\"").is_err());
    }

    #[test]
    fn keyed_digest_is_labelled_hmac_sha256() {
        // Independent construction of HMAC-SHA256 (RFC 2104) from SHA-256, to pin the message.
        fn reference_hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
            let mut ipad = [0x36u8; 64];
            let mut opad = [0x5cu8; 64];
            for i in 0..32 {
                ipad[i] ^= key[i];
                opad[i] ^= key[i];
            }
            let inner = Sha256::new()
                .chain_update(ipad)
                .chain_update(message)
                .finalize();
            Sha256::new()
                .chain_update(opad)
                .chain_update(inner)
                .finalize()
                .into()
        }
        let key_bytes = [0x42u8; 32];
        let key = DigestKey::from_bytes(key_bytes);
        let digest = ActionDigest::from_bytes([0x17; 32]);
        let mut message = KEYED_DIGEST_LABEL.as_bytes().to_vec();
        message.push(0);
        message.extend_from_slice(&[0x17; 32]);
        let keyed = key.keyed(&digest);
        assert_eq!(keyed.as_bytes(), &reference_hmac(&key_bytes, &message));
        assert!(key.verify(&digest, &keyed));
        let other = ActionDigest::from_bytes([0x18; 32]);
        assert!(!key.verify(&other, &keyed));
        assert_ne!(DigestKey::from_bytes([0x43; 32]).keyed(&digest), keyed);
    }

    #[test]
    fn keyed_digest_verify_compares_every_byte() {
        let a = KeyedDigest::from_bytes([9; 32]);
        assert!(a.verify(&KeyedDigest::from_bytes([9; 32])));
        for i in 0..32 {
            let mut bytes = [9u8; 32];
            bytes[i] ^= 0x80;
            assert!(!a.verify(&KeyedDigest::from_bytes(bytes)), "byte {i}");
        }
    }

    #[test]
    fn digest_key_never_prints_its_bytes() {
        let key = DigestKey::from_bytes([0xcd; 32]);
        for text in [format!("{key:?}"), format!("{key:#?}")] {
            assert!(!text.to_lowercase().contains("cd"), "{text}");
            assert!(!text.contains("205"), "{text}");
        }
    }
}
