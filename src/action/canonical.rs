//! RFC 8785 (JCS) canonical JSON and strict parsing (duplicate keys refused).
// CONTRACT STUB — helper A replaces the bodies.

use serde_json::Value;

/// Why JSON text was refused or could not be canonicalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// Malformed or with duplicate keys.
    #[error("invalid JSON: {0}")]
    Invalid(String),
}

/// Parses JSON text, refusing duplicate object keys.
pub fn parse_strict_json(text: &str) -> Result<Value, CanonicalError> {
    let _ = text;
    todo!()
}

/// Writes the RFC 8785 canonical form of `value`.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let _ = value;
    todo!()
}
