//! What an agent proposes: the action, the facts policy rules read, and why.
//!
//! An [`ActionRequest`] is what the model may produce (it can be parsed from model output with
//! [`ActionRequest::from_json`]); the [`Requester`] is not part of it and is bound by the host
//! application, so a model can never claim to be someone else.

mod canonical;
mod digest;
mod facts;
mod request;

pub use canonical::{canonical_json, parse_strict_json, CanonicalError};
pub use digest::{ActionDigest, DigestKey, KeyedDigest};
pub use facts::{
    Amount, Confidence, Environment, Impact, Justification, Reversibility, Sensitivity,
};
pub use request::{
    ActionKind, ActionRequest, ActionRequestBuilder, IdempotencyKey, Requester, ValidationError,
};
