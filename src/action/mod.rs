//! What an agent proposes: the action, the facts policy rules read, and why.
//!
//! An [`ActionRequest`] is what the model may produce (it can be parsed from model output with
//! [`ActionRequest::from_json`]); the [`Requester`] is not part of it and is bound by the host
//! application, so a model can never claim to be someone else.
//!
//! Every request has an [`ActionDigest`]: SHA-256 over the RFC 8785 canonical JSON
//! ([`canonical_json`]) of everything a ruling or a reviewer relies on. The exact document is
//! specified on [`ActionDigest`] and pinned by a golden vector.

mod canonical;
mod digest;
mod facts;
pub mod limits;
mod request;

pub use canonical::{canonical_json, parse_strict_json, CanonicalError};
pub(crate) use canonical::{write_canonical, write_string};
pub(crate) use digest::commitment;
pub use digest::{
    ActionDigest, DigestKey, KeyedDigest, ParseDigestError, ACTION_DIGEST_FORMAT,
    KEYED_DIGEST_LABEL,
};
pub use facts::{
    Amount, Confidence, Environment, Impact, Justification, Reversibility, Sensitivity,
};
pub use request::{
    ActionKind, ActionRequest, ActionRequestBuilder, IdempotencyKey, Requester, ValidationError,
    REDACTED,
};
