//! Why a token or a key was refused.

use crate::codes::{self, Code};
use crate::timestamp::Timestamp;

/// How a token text is malformed (found before any key is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedToken {
    /// Longer than [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN).
    #[error("token longer than 1024 bytes")]
    TooLong,
    /// Does not start with `ah1.` (another version, or not a token).
    #[error("token does not start with `ah1.`")]
    VersionPrefix,
    /// No `.` between payload and signature.
    #[error("token has no signature part")]
    MissingSignature,
    /// A part is not base64url without padding (canonical, no trailing bits).
    #[error("token is not valid base64url")]
    Base64,
    /// The signature part does not decode to exactly 32 bytes (empty, truncated or over-long).
    #[error("token signature is not 32 bytes")]
    SignatureLength,
    /// The payload does not follow the layout.
    #[error("token payload is invalid: {0}")]
    Payload(&'static str),
}

/// A decision token was refused. Variants are distinct so each refusal can be handled and
/// audited as what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a well-formed token.
    #[error(transparent)]
    Malformed(#[from] MalformedToken),
    /// Signed with a key id the ring does not hold (retired, or forged).
    #[error("token key `{key_id}` is unknown")]
    UnknownKey {
        /// The key id named by the token.
        key_id: String,
    },
    /// The signature does not verify: the token was altered or forged.
    #[error("token signature does not verify")]
    BadSignature,
    /// Authentic but expired.
    #[error("token expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
    },
    /// Authentic but issued further in the future than the allowed clock skew.
    #[error("token issued at {issued_at}, in the future")]
    NotYetValid {
        /// The claimed issue time.
        issued_at: Timestamp,
    },
    /// Authentic and current, but for another version of the action (it was edited since).
    #[error("token was issued for another version of the action")]
    DigestMismatch,
}

/// A token could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// `expires_at` is not after `issued_at`.
    #[error("token would expire at {expires_at}, not after its issue time {issued_at}")]
    ExpiryNotAfterIssue {
        /// The claimed issue time.
        issued_at: Timestamp,
        /// The claimed expiry.
        expires_at: Timestamp,
    },
}

/// A token key or key ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key ids are 1 to 32 ASCII letters, digits, `.`, `_` or `-`.
    #[error("invalid token key id `{id}`: 1 to 32 ASCII letters, digits, `.`, `_` or `-`")]
    InvalidId {
        /// The refused id (cut to 64 characters).
        id: String,
    },
    /// The secret is shorter than [`MIN_TOKEN_SECRET_LEN`](super::MIN_TOKEN_SECRET_LEN).
    #[error("token secret too short: {len} bytes, at least 32 required")]
    SecretTooShort {
        /// Length given.
        len: usize,
    },
    /// Two keys in one ring share an id.
    #[error("duplicate token key id `{id}`")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
}

impl MalformedToken {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        codes::TOKEN_MALFORMED
    }
}

impl TokenError {
    /// The stable code (see [`codes`](crate::codes)), also the refusal's name in the audit
    /// trail.
    pub fn code(&self) -> Code {
        match self {
            TokenError::Malformed(m) => m.code(),
            TokenError::UnknownKey { .. } => codes::TOKEN_UNKNOWN_KEY,
            TokenError::BadSignature => codes::TOKEN_BAD_SIGNATURE,
            TokenError::Expired { .. } => codes::TOKEN_EXPIRED,
            TokenError::NotYetValid { .. } => codes::TOKEN_NOT_YET_VALID,
            TokenError::DigestMismatch => codes::DIGEST_CHANGED,
        }
    }
}

impl SignError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        codes::TOKEN_SIGN_FAILED
    }
}
