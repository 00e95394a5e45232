//! The action digest (SHA-256 over RFC 8785 canonical JSON) and its keyed variant.
// CONTRACT STUB — helper A replaces the bodies.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::request::ActionRequest;

/// SHA-256 over the canonical JSON of everything a ruling or a reviewer relies on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActionDigest([u8; 32]);

impl ActionDigest {
    /// The digest of a request.
    pub fn of(request: &ActionRequest) -> Self {
        // PROVISIONAL (helper A replaces with RFC 8785 over the documented fields).
        use sha2::Digest as _;
        let mut v = serde_json::to_value(request).expect("serialisable");
        if let Some(o) = v.as_object_mut() {
            o.remove("justification");
            o.remove("idempotency_key");
            o.remove("sensitive");
        }
        let bytes = serde_json::to_vec(&v).expect("serialisable");
        Self(sha2::Sha256::digest(&bytes).into())
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

impl fmt::Debug for ActionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActionDigest(..)")
    }
}

/// A secret key for keyed digests (what leaves the store).
#[derive(Clone)]
pub struct DigestKey([u8; 32]);

impl DigestKey {
    /// From 32 secret bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// HMAC-SHA256(key, digest bytes).
    pub fn keyed(&self, digest: &ActionDigest) -> KeyedDigest {
        let _ = digest;
        todo!()
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(<redacted>)")
    }
}

/// HMAC-SHA256 of an [`ActionDigest`] under a [`DigestKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

impl fmt::Debug for KeyedDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyedDigest(..)")
    }
}
