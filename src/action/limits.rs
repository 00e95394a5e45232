//! The bounds an [`ActionRequest`](super::ActionRequest) and its JSON text must respect.
//!
//! Every bound is checked by [`ActionRequestBuilder::build`](super::ActionRequestBuilder::build),
//! [`ActionRequest::from_json`](super::ActionRequest::from_json), deserialisation and
//! [`ActionRequest::with_parameters`](super::ActionRequest::with_parameters) alike; each
//! violation is its own [`ValidationError`](super::ValidationError) variant. Lengths are in
//! bytes of UTF-8.

pub use super::canonical::{MAX_JSON_BYTES, MAX_JSON_DEPTH};
pub use super::facts::MAX_AMOUNT_DIGITS;
pub use super::request::{MAX_IDEMPOTENCY_KEY_LEN, MAX_KIND_SEGMENTS, MIN_IDEMPOTENCY_KEY_LEN};

/// Most targets in one request.
pub const MAX_TARGETS: usize = 64;
/// Longest target, in bytes (a target is never empty and has no control characters).
pub const MAX_TARGET_LEN: usize = 1024;

/// Longest canonical JSON of the parameters object, in bytes (64 KiB); the same bound applies
/// to the attributes and to the preconditions, each taken as one object.
pub const MAX_CANONICAL_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in the parameters (the parameters object itself is
/// level 1) and in each attribute or precondition value.
pub const MAX_VALUE_DEPTH: usize = 32;
/// Largest magnitude of an integer anywhere in the parameters, attributes and preconditions:
/// 2^53 − 1, the largest integer every JSON implementation reads exactly (I-JSON, RFC 7493).
/// Larger identifiers belong in strings.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Most sensitive-parameter pointers.
pub const MAX_SENSITIVE_POINTERS: usize = 64;
/// Longest sensitive-parameter pointer, in bytes.
pub const MAX_POINTER_LEN: usize = 1024;

/// Longest justification reason, in bytes.
pub const MAX_REASON_LEN: usize = 4096;
/// Longest expected effect, in bytes.
pub const MAX_EXPECTED_EFFECT_LEN: usize = 4096;
/// Most risk factors.
pub const MAX_RISK_FACTORS: usize = 32;
/// Longest risk factor, in bytes.
pub const MAX_RISK_FACTOR_LEN: usize = 1024;
/// Longest rollback plan, in bytes.
pub const MAX_ROLLBACK_PLAN_LEN: usize = 4096;

/// Most attributes, and most preconditions.
pub const MAX_ENTRIES: usize = 64;
/// Longest attribute or precondition name, in bytes; names are 1 or more of `A-Z a-z 0-9 _ . -`.
pub const MAX_NAME_LEN: usize = 128;

/// Longest impact unit, in bytes; units are 1 or more of `A-Z a-z 0-9 _` (`USD`, `EUR_cents`).
pub const MAX_UNIT_LEN: usize = 32;
