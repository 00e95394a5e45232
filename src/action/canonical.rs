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
    // PROVISIONAL: helper A replaces with a parser that refuses duplicate keys.
    serde_json::from_str(text).map_err(|e| CanonicalError::Invalid(e.to_string()))
}

/// Writes the RFC 8785 canonical form of `value`.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    // PROVISIONAL: serde_json's sorted maps are close to JCS; helper A replaces with RFC 8785.
    serde_json::to_vec(value).unwrap_or_default()
}
