//! Stable refusal codes: one documented list for every typed refusal of this crate.
//!
//! Every error a door can surface — [`ProposeError`](crate::ProposeError),
//! [`DecideError`](crate::DecideError), [`LinkError`](crate::LinkError),
//! [`ExecuteError`](crate::ExecuteError), [`WaitError`](crate::WaitError),
//! [`AuditError`](crate::AuditError), [`RunError`](crate::RunError),
//! [`Error`](crate::Error), [`StoreError`](crate::StoreError),
//! [`IdentityError`](crate::IdentityError), the ticket machine's
//! [`Refusal`](crate::ticket::Refusal), [`ValidationError`](crate::action::ValidationError),
//! [`PolicyError`](crate::policy::PolicyError) and the smaller ones of the pure core — has a
//! `code()` returning one [`Code`] of this list. The same code names the refusal in audit
//! records (`"refusal": "<code>"`) and in decision rows.
//!
//! A code is a **stable** snake-case name: it is never renamed or reused for another meaning
//! (new refusals get new codes), so clients may match on it. Several variants may share one
//! code when they mean the same to a caller (every "no such ticket" is [`NOT_FOUND`]); an error
//! that wraps another (a [`DecideError::Refused`](crate::DecideError::Refused), a
//! [`ProposeError::Store`](crate::ProposeError::Store)) answers the code of what it wraps.
//!
//! Each code carries what a door needs to map it without a table of its own:
//!
//! - its [`Kind`], the class of failure (an HTTP door derives the status from it, a Python
//!   binding the exception base class, an MCP server the error category);
//! - its [`Retry`] advice: whether the same request can succeed later, or only a new one made
//!   after reading the ticket again;
//! - its meaning, in one sentence ([`Code::meaning`]).
//!
//! How the doors derive from it: the HTTP door's problem+json `type` is
//! `<base>/problems/<code>` with the status of the code's kind; the MCP door puts
//! `{"code", "kind", "retry"}` into the error's `data`; the Python binding raises one
//! exception class per code (`NotPendingError` for `not_pending`), subclassing one class per
//! kind. [`ALL`] lists every code, so a door can generate its table (OpenAPI problem types,
//! Python classes) and a test can check it covers every code.
//!
//! ```
//! use agent_handoff::codes::{self, Kind, Retry};
//!
//! let code = codes::lookup("stale_version").unwrap();
//! assert_eq!(code, codes::STALE_VERSION);
//! assert_eq!(code.kind(), Kind::Conflict);
//! assert_eq!(code.retry(), Retry::AfterRefresh);
//! assert!(codes::ALL.iter().any(|c| c.as_str() == "not_pending"));
//! ```

use std::fmt;

use serde::{Serialize, Serializer};

/// One stable refusal code: its name, class, retry advice and meaning.
///
/// Compares, hashes, displays and serialises as its name (`"not_pending"`); compares equal to a
/// `&str` holding that name. Only the constants of this module exist.
#[derive(Clone, Copy)]
pub struct Code {
    name: &'static str,
    kind: Kind,
    retry: Retry,
    meaning: &'static str,
}

impl Code {
    /// The snake-case name (`"not_pending"`).
    pub const fn as_str(self) -> &'static str {
        self.name
    }

    /// The class of failure.
    pub const fn kind(self) -> Kind {
        self.kind
    }

    /// Whether and how retrying can help.
    pub const fn retry(self) -> Retry {
        self.retry
    }

    /// What the code means, in one sentence.
    pub const fn meaning(self) -> &'static str {
        self.meaning
    }
}

impl PartialEq for Code {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Code {}

impl std::hash::Hash for Code {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl PartialEq<Code> for &str {
    fn eq(&self, other: &Code) -> bool {
        *self == other.name
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.name)
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

/// The class of a failure: what a door maps to its protocol's status (the HTTP status in
/// parentheses is the one the HTTP door answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// The input is malformed or out of bounds: fix the request (400).
    Invalid,
    /// The credential or decision token was not accepted (401).
    Unauthenticated,
    /// Authenticated, but this person may not do this (403).
    Forbidden,
    /// Policy or an operator control refuses it (403).
    Denied,
    /// No such ticket, or none this caller may see (404).
    NotFound,
    /// The ticket's state, a vote on record, an idempotency key's history or a used token does
    /// not allow it (409).
    Conflict,
    /// The final check failed: the action, its preconditions or the policy changed since the
    /// approval, and the ticket is now stale (409).
    Stale,
    /// A deadline, token, grant or lease ran out (410).
    Expired,
    /// Too many requests: slow down (429).
    RateLimited,
    /// The engine is not configured for this, or a component does not fit it (500).
    NotConfigured,
    /// Stored evidence failed verification: tampering or corruption (500).
    Integrity,
    /// A bug, or something that must not happen (500).
    Internal,
    /// The store, the identity directory or the random source failed or is shut down, and
    /// nothing was recorded (503).
    Unavailable,
}

impl Kind {
    /// The snake-case name (`"not_found"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::Denied => "denied",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Stale => "stale",
            Kind::Expired => "expired",
            Kind::RateLimited => "rate_limited",
            Kind::NotConfigured => "not_configured",
            Kind::Integrity => "integrity",
            Kind::Internal => "internal",
            Kind::Unavailable => "unavailable",
        }
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Retry {
    /// The same request will be refused again.
    No,
    /// The same request may succeed later (after a backoff, or once a rate limit refills).
    Later,
    /// Read the ticket again: a new request made on its current version may succeed.
    AfterRefresh,
}

impl Retry {
    /// The snake-case name (`"after_refresh"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Retry::No => "no",
            Retry::Later => "later",
            Retry::AfterRefresh => "after_refresh",
        }
    }
}

/// The code with this name, if there is one.
pub fn lookup(name: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// Defines each code as a constant and [`ALL`] from one table, so a code cannot exist without
/// being listed.
macro_rules! codes {
    ($( $konst:ident = $name:literal, $kind:ident, $retry:ident, $meaning:literal; )*) => {
        $(
            #[doc = concat!("`", $name, "` (", stringify!($kind), ", retry: ", stringify!($retry), "): ", $meaning)]
            pub const $konst: Code = Code {
                name: $name,
                kind: Kind::$kind,
                retry: Retry::$retry,
                meaning: $meaning,
            };
        )*

        /// Every code, in the order of this module's list.
        pub const ALL: &[Code] = &[$($konst),*];
    };
}

codes! {
    // The ticket machine (`ticket::Refusal`).
    NOT_PENDING = "not_pending", Conflict, No,
        "The ticket no longer takes decisions: it was decided, expired or cancelled.";
    DEADLINE_PASSED = "deadline_passed", Expired, No,
        "The review deadline passed; the ticket expired (default deny).";
    NOT_DUE = "not_due", Conflict, Later,
        "An expiry or a lost lease was reported before it was due.";
    NOT_ELIGIBLE = "not_eligible", Forbidden, No,
        "The reviewer is in none of the groups the ticket's requirements name.";
    SELF_APPROVAL = "self_approval", Forbidden, No,
        "The reviewer is the person the request was made for and may not approve it.";
    PRINCIPAL_UNRESOLVED = "principal_unresolved", Forbidden, No,
        "The requester's principal is unknown to the directory, so no approval is accepted (fail closed).";
    CONFLICTING_VOTE = "conflicting_vote", Conflict, No,
        "The reviewer already voted otherwise on this ticket and may not change their vote.";
    EDIT_NOT_RULED = "edit_not_ruled", Internal, No,
        "An edit reached the ticket machine without the policy's ruling on the edited action.";
    EDIT_DENIED = "edit_denied", Denied, No,
        "The policy denies the edited action; the ticket is unchanged.";
    EDIT_INVALID = "edit_invalid", Invalid, No,
        "The edited parameters do not make a valid action.";
    DIGEST_MISMATCH = "digest_mismatch", Stale, No,
        "The action presented at begin is not the approved one; the ticket is now stale.";
    PRECONDITIONS_CHANGED = "preconditions_changed", Stale, No,
        "Observed preconditions differ from the expected ones; the ticket is now stale.";
    POLICY_STRICTER = "policy_stricter", Stale, No,
        "The current policy is stricter than the approval; the ticket is now stale.";
    GRANT_EXPIRED = "grant_expired", Expired, No,
        "The approval lapsed before execution began.";
    LEASE_MISMATCH = "lease_mismatch", Conflict, No,
        "The permit's lease is not the ticket's current lease.";
    LEASE_EXPIRED = "lease_expired", Expired, No,
        "The execution lease expired before it was renewed.";
    NOT_APPLICABLE = "not_applicable", Conflict, No,
        "The operation does not apply to a ticket in its current state.";

    // The facade.
    NOT_FOUND = "not_found", NotFound, No,
        "No such ticket, or none this caller may see.";
    FROZEN = "frozen", Denied, No,
        "An operator's kill switch freezes this agent or every agent.";
    RATE_LIMITED = "rate_limited", RateLimited, Later,
        "The agent exceeded its proposal rate limit.";
    IDEMPOTENCY_CONFLICT = "idempotency_conflict", Conflict, No,
        "The idempotency key was used before for a different action; nothing was recorded.";
    STALE_VERSION = "stale_version", Conflict, AfterRefresh,
        "The ticket's action, requirements or state changed since the version the caller saw.";
    NOT_OPERATOR = "not_operator", Forbidden, No,
        "The authenticated person is not in the operator group.";
    PRECONDITIONS_NOT_OBSERVED = "preconditions_not_observed", Invalid, No,
        "The action has preconditions, but no observed values were given.";
    NOT_APPROVED = "not_approved", Denied, No,
        "The action was not approved: denied by policy, rejected, expired or cancelled.";
    STILL_PENDING = "still_pending", Conflict, Later,
        "Nobody decided within the wait timeout; the ticket is still pending.";
    ACTION_FAILED = "action_failed", Internal, No,
        "The host's action itself failed; its failure was recorded.";
    NOT_CONFIGURED = "not_configured", NotConfigured, No,
        "The engine is not configured for this operation (decision links, digest key, checkpoint key).";
    INVALID_CONFIGURATION = "invalid_configuration", NotConfigured, No,
        "The builder was given an incomplete or inconsistent configuration.";
    STORE_CONTRACT_TOO_OLD = "store_contract_too_old", NotConfigured, No,
        "The store implements an older store contract than this engine needs.";
    CLOCK_MISMATCH = "clock_mismatch", NotConfigured, No,
        "The builder was given another clock than the one the store stamps commits with.";

    // Credentials and identities.
    UNAUTHENTICATED = "unauthenticated", Unauthenticated, No,
        "The credential was not accepted.";
    CREDENTIAL_UNSUPPORTED = "credential_unsupported", Unauthenticated, No,
        "The identity verifier does not accept this kind of credential.";
    IDENTITY_UNAVAILABLE = "identity_unavailable", Unavailable, Later,
        "The identity directory could not be reached or failed.";
    UNKNOWN_PERSON = "unknown_person", Invalid, No,
        "The person is not in the directory.";

    // Decision tokens and links.
    TOKEN_MALFORMED = "token_malformed", Invalid, No,
        "The decision token is not well formed.";
    TOKEN_UNKNOWN_KEY = "token_unknown_key", Unauthenticated, No,
        "The decision token names a signing key the key ring does not hold.";
    TOKEN_BAD_SIGNATURE = "token_bad_signature", Unauthenticated, No,
        "The decision token's signature does not verify: it was altered or forged.";
    TOKEN_EXPIRED = "token_expired", Expired, No,
        "The decision token is authentic but expired.";
    TOKEN_NOT_YET_VALID = "token_not_yet_valid", Unauthenticated, No,
        "The decision token claims an issue time further ahead than the allowed clock skew.";
    DIGEST_CHANGED = "digest_changed", Conflict, AfterRefresh,
        "The action changed since the link was issued: review the current version.";
    REPLAYED = "replayed", Conflict, No,
        "The decision token was used before.";
    WRONG_REVIEWER = "wrong_reviewer", Forbidden, No,
        "The decision token was issued to another reviewer.";
    INVALID_SUBMISSION = "invalid_submission", Invalid, No,
        "The submission does not fit the token's verdict.";
    TOKEN_SIGN_FAILED = "token_sign_failed", Internal, No,
        "A decision token could not be signed.";
    RANDOM_FAILED = "random_failed", Unavailable, Later,
        "The operating system's random number generator failed.";
    FEISHU_CALLBACK_REFUSED = "feishu_callback_refused", Unauthenticated, No,
        "A Feishu callback failed verification (signature, time window, decryption, token).";
    FEISHU_NO_DECISION_TOKEN = "feishu_no_decision_token", Invalid, No,
        "A verified Feishu card action carries no decision token.";

    // The store.
    VERSION_CONFLICT = "version_conflict", Conflict, Later,
        "The ticket changed concurrently; the same call may succeed when repeated.";
    DUPLICATE_KEY = "duplicate_key", Conflict, No,
        "The requester already has a ticket under this idempotency key.";
    NONCE_REUSED = "nonce_reused", Conflict, No,
        "A single-use nonce in the write was used before.";
    TOO_LATE = "too_late", Expired, No,
        "The write's time limit passed before it could be committed.";
    OUTBOX_CONFLICT = "outbox_conflict", Conflict, No,
        "Another delivery worker recorded this outbox row's outcome first.";
    STORE_CLOSED = "store_closed", Unavailable, No,
        "The store was shut down.";
    STORE_SCHEMA_TOO_NEW = "store_schema_too_new", NotConfigured, No,
        "The database schema is newer than this code understands.";
    INVALID_WRITE = "invalid_write", Internal, No,
        "The store refused a malformed write; nothing was written.";
    AUDIT_MISFILED = "audit_misfiled", Integrity, No,
        "An audit event's index columns disagree with its hashed bytes.";
    STORE_CORRUPT = "store_corrupt", Integrity, No,
        "Stored data could not be decoded.";
    STORE_UNAVAILABLE = "store_unavailable", Unavailable, Later,
        "The store's backend failed (I/O, SQL, connection); nothing was recorded.";
    CLOCK_JUMP = "clock_jump", Unavailable, Later,
        "The clock jumped ahead of its monotonic time since the last commit; nothing was recorded until it reads sensibly or an operator rebases it.";
    FLOOR_AHEAD = "floor_ahead", Unavailable, Later,
        "The latest commit time stored is far ahead of the clock; nothing was recorded until an operator rebases the floor or the clock is fixed.";

    // The audit chain.
    AUDIT_CHAIN_BROKEN = "audit_chain_broken", Integrity, No,
        "The audit chain failed verification: an event was edited, removed, inserted or cut off.";
    AUDIT_CHECKPOINT_INVALID = "audit_checkpoint_invalid", Integrity, No,
        "A checkpoint is malformed, of another chain (origin), or its signature does not verify.";
    AUDIT_CHECKPOINT_REFUSED = "audit_checkpoint_refused", Integrity, No,
        "No checkpoint was signed: the chain no longer passes through the newest checkpoint it was verified from (cut or rewritten).";
    NO_SUCH_TEXT = "no_such_text", NotFound, No,
        "No kept audit text at that event and name: never written, or erased already.";

    // Action requests (`action::ValidationError`) and identifiers.
    INVALID_KIND = "invalid_kind", Invalid, No,
        "The action kind is empty or not dotted lowercase segments.";
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key", Invalid, No,
        "The idempotency key is shorter than 8 or longer than 255 bytes, or not printable ASCII without spaces.";
    INVALID_CONFIDENCE = "invalid_confidence", Invalid, No,
        "The confidence is outside 0..=1.";
    INVALID_SENSITIVE_POINTER = "invalid_sensitive_pointer", Invalid, No,
        "A sensitive-parameter pointer is malformed, too long, repeated, points at nothing, or there are too many.";
    INVALID_PARAMETERS = "invalid_parameters", Invalid, No,
        "The parameters are not a JSON object.";
    INVALID_TARGETS = "invalid_targets", Invalid, No,
        "A target is empty, too long or holds a control character, or there are too many.";
    INVALID_FIELD = "invalid_field", Invalid, No,
        "A field, name or unit failed its own validation.";
    MALFORMED_REQUEST = "malformed_request", Invalid, No,
        "The request JSON has the wrong shape: a missing or unknown member, or a wrong type.";
    MALFORMED_JSON = "malformed_json", Invalid, No,
        "The JSON text was refused: malformed, duplicate keys, too large or too deep.";
    TOO_LARGE = "too_large", Invalid, No,
        "A value, text or list is over its documented bound.";
    TOO_DEEP = "too_deep", Invalid, No,
        "A JSON value is nested deeper than its documented bound.";
    UNSAFE_INTEGER = "unsafe_integer", Invalid, No,
        "An integer is beyond ±(2^53 − 1), which other JSON readers would round.";
    INVALID_ID = "invalid_id", Invalid, No,
        "An identifier is empty, too long or holds control characters or surrounding whitespace.";
    INVALID_DIGEST = "invalid_digest", Invalid, No,
        "An action digest is not 64 lowercase hexadecimal digits.";

    // Policy documents.
    POLICY_INVALID = "policy_invalid", Invalid, No,
        "The policy document was refused; each of its problems has a code of its own.";
    POLICY_SYNTAX = "policy_syntax", Invalid, No,
        "The policy document is not well-formed TOML or JSON.";
    POLICY_UNKNOWN_FIELD = "policy_unknown_field", Invalid, No,
        "The policy document has a field the schema does not know.";
    POLICY_SCHEMA = "policy_schema", Invalid, No,
        "A policy field is missing or repeated, or a value has the wrong type.";
    POLICY_INVALID_VALUE = "policy_invalid_value", Invalid, No,
        "A policy value is malformed (duration, name, amount, outcome, empty list).";
    POLICY_INVALID_GLOB = "policy_invalid_glob", Invalid, No,
        "A policy kind glob is malformed.";
    POLICY_OUT_OF_BOUNDS = "policy_out_of_bounds", Invalid, No,
        "A policy number, duration or size is outside its documented bounds.";
    POLICY_DUPLICATE_RULE_ID = "policy_duplicate_rule_id", Invalid, No,
        "Two policy rules share an id, or a rule uses the reserved id `default`.";
    POLICY_HIGH_RISK_ALLOW = "policy_high_risk_allow", Invalid, No,
        "An allow outcome can reach production or irreversible actions without the document's opt-in.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_meanings_are_sentences() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ALL {
            assert!(seen.insert(code.as_str()), "`{code}` is listed twice");
            assert!(
                !code.as_str().is_empty()
                    && code
                        .as_str()
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !code.as_str().starts_with('_')
                    && !code.as_str().ends_with('_')
                    && !code.as_str().contains("__"),
                "`{code}` is not snake case"
            );
            assert!(code.meaning().ends_with('.'), "`{code}`");
            assert_eq!(lookup(code.as_str()), Some(*code));
        }
        assert_eq!(lookup("no_such_code"), None);
    }
}
