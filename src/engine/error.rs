//! Errors of the facade, one enum per operation, all converting into [`Error`].

use crate::audit::TextRef;
use crate::backend::{IdentityError, StoreError};
use crate::codes::{self, Code};
use crate::id::{PersonId, TicketId};
use crate::limits::LimitError;
use crate::ticket::{Refusal, StateName};
use crate::timestamp::Timestamp;
use crate::token::{MalformedToken, SignError};

/// Why a proposal was not recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// The agent is frozen by an operator's kill switch ([`Handoff::freeze`]): nothing was
    /// recorded but the refusal (audited, coalesced per agent: see
    /// [`Limits::frozen_audit_per_minute`]).
    ///
    /// Code: `frozen`.
    ///
    /// [`Handoff::freeze`]: crate::Handoff::freeze
    /// [`Limits::frozen_audit_per_minute`]: crate::Limits::frozen_audit_per_minute
    #[error("proposals are frozen: {reason}")]
    Frozen {
        /// The operator's reason.
        reason: String,
    },
    /// The agent exceeded its proposal rate limit.
    #[error("agent exceeded its proposal rate limit")]
    RateLimited,
    /// This requester (the same agent acting for the same principal) used the idempotency key
    /// before for a different action; nothing was written. Keys are scoped by the whole
    /// requester, so another requester's key never conflicts, and `existing` is always a
    /// ticket of this requester.
    #[error("idempotency key was used for a different action (ticket {existing})")]
    IdempotencyConflict {
        /// This requester's ticket recorded under the key.
        existing: TicketId,
    },
    /// The identity directory failed while resolving the requester's principal.
    #[error("identity directory failed")]
    Identity(#[source] IdentityError),
    /// The store failed; nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a reviewer's or operator's decision was not applied. Every variant except
/// [`DecideError::Store`] is also recorded in the audit trail (refusals of a person in none
/// of the ticket's groups once per ticket and minute, the others counted: see
/// [`Limits`](crate::Limits#coalesced-refusals)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecideError {
    /// The credential was not accepted.
    #[error("credential refused")]
    Unauthenticated(#[source] IdentityError),
    /// The authenticated person is not an operator.
    #[error("`{person}` is not an operator")]
    NotOperator {
        /// Who tried.
        person: String,
    },
    /// An approval (plain or with edits) of a ticket whose agent is frozen by an operator's
    /// kill switch ([`Handoff::freeze`](crate::Handoff::freeze)): not counted; the refusal
    /// is audited with a refused decision row (coalesced per agent, see
    /// [`Limits::frozen_audit_per_minute`](crate::Limits::frozen_audit_per_minute)).
    /// Rejections and change requests are never frozen.
    ///
    /// Code: `frozen`.
    #[error("approvals are frozen: {reason}")]
    Frozen {
        /// The operator's reason.
        reason: String,
    },
    /// No such ticket.
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    /// The ticket's action, requirements or state changed since the version the caller saw.
    #[error("ticket changed since version {expected} (now {current}): review it again")]
    StaleVersion {
        /// What the caller saw.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// The ticket machine refused (already decided, expired, not eligible, self-approval…).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A feedback, reason or outcome over its bound ([`crate::limits`]): refused before the
    /// credential was looked at; nothing was recorded. Code: the [`LimitError`]'s.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The text to erase is not kept (never written, or erased already); nothing was
    /// recorded. Code: `no_such_text`.
    #[error("no kept audit text `{0}`")]
    NoSuchText(TextRef),
    /// The store failed; nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a decision link could not be minted, previewed or used.
///
/// From [`decide_with_token`](crate::Handoff::decide_with_token), every variant except
/// [`NotConfigured`](Self::NotConfigured), [`InvalidSubmission`](Self::InvalidSubmission),
/// [`NotPending`](Self::NotPending), [`Random`](Self::Random) and [`Store`](Self::Store) is
/// also recorded in the audit trail: refusals before a credential was verified as coalesced
/// unauthenticated rows (see [`Limits`](crate::Limits)), later ones as rows of the
/// authenticated reviewer. [`preview_token`](crate::Handoff::preview_token) records nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Decision links need both [`decision_links`](crate::HandoffBuilder::decision_links) and
    /// [`digest_key`](crate::HandoffBuilder::digest_key) in the builder.
    #[error("decision links are not configured: {0}")]
    NotConfigured(&'static str),
    /// Not a well-formed token.
    #[error(transparent)]
    Malformed(#[from] MalformedToken),
    /// Signed with a key id the ring does not hold (retired too long ago, or forged).
    #[error("token key `{key_id}` is unknown")]
    UnknownKey {
        /// The key id the token names.
        key_id: String,
    },
    /// The signature does not verify: the token was altered or forged.
    #[error("token signature does not verify")]
    BadSignature,
    /// Authentic but expired (checked again at commit: a token may not outlive its expiry).
    #[error("token expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: Timestamp,
    },
    /// Authentic but issued further in the future than the key ring's clock skew allows.
    #[error("token issued at {issued_at}, in the future")]
    NotYetValid {
        /// The claimed issue time.
        issued_at: Timestamp,
    },
    /// The credential was not accepted. The token was not spent: its rightful holder can
    /// still use it.
    #[error("credential refused")]
    Unauthenticated(#[source] IdentityError),
    /// The token was issued to another reviewer (a forwarded link). Nothing is spent: the
    /// reviewer it was issued to can still use it. Recorded once per link, person and minute;
    /// further attempts are counted into one summary row (see [`Limits`](crate::Limits)).
    #[error("token was issued to `{bound}`, not to `{presented}`")]
    WrongReviewer {
        /// The reviewer the token names.
        bound: PersonId,
        /// The authenticated reviewer who used it.
        presented: PersonId,
    },
    /// The action changed since the token was issued (a reviewer edited it): review the
    /// current version. The token is spent.
    #[error("the action changed since the link was issued: review it again")]
    DigestChanged,
    /// The token was used before.
    #[error("token was already used")]
    Replayed,
    /// An approval of a ticket whose agent is frozen by an operator's kill switch
    /// ([`Handoff::freeze`](crate::Handoff::freeze)): not counted, audited as for
    /// [`DecideError::Frozen`]. The token was not spent: it can be used once the freeze is
    /// lifted.
    ///
    /// Code: `frozen`.
    #[error("approvals are frozen: {reason}")]
    Frozen {
        /// The operator's reason.
        reason: String,
    },
    /// The token names a ticket the store does not hold.
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    /// The submission does not fit the token's verdict (parameters are needed by, and only
    /// accepted with, an approve-with-edits token). Nothing was recorded and the token was not
    /// spent.
    #[error("invalid submission: {0}")]
    InvalidSubmission(&'static str),
    /// Links are minted only for pending tickets.
    #[error("ticket is {state}, not pending: no links to mint")]
    NotPending {
        /// The ticket's state.
        state: StateName,
    },
    /// The ticket machine refused the verdict (already decided, expired, not eligible,
    /// self-approval…). The token is spent.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The submission's feedback is over [`MAX_FEEDBACK_LEN`](crate::limits::MAX_FEEDBACK_LEN):
    /// refused first, nothing recorded, the token not spent. Code: the [`LimitError`]'s.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A token could not be signed.
    #[error("token could not be signed")]
    Sign(#[source] SignError),
    /// The operating system's random number generator failed (minting a nonce).
    #[error("random number generator failed")]
    Random(#[source] getrandom::Error),
    /// The store failed; nothing was recorded and the token was not spent.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `begin`, `renew` or `finish` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError {
    /// No such ticket.
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    /// The final check or the lease check refused; for a failed final check the ticket is now
    /// `Stale` (see the refusal).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The action has preconditions but none were observed (use `run_with`).
    #[error("the action has preconditions; observe them and use `run_with`")]
    PreconditionsNotObserved,
    /// A cancel reason or observed precondition values over their bounds
    /// ([`crate::limits`]); nothing was recorded. A refused `begin` leaves the grant usable:
    /// reload it with [`Handoff::grant`](crate::Handoff::grant). Code: the [`LimitError`]'s.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// `finish` was given an outcome over its bounds ([`ExecutionOutcome::check`](crate::ticket::ExecutionOutcome::check)):
    /// nothing was recorded, and the permit is handed back to finish again with a bounded
    /// outcome. Code: the [`LimitError`]'s.
    #[error("the outcome was refused: {error}")]
    OutcomeRefused {
        /// Which bound.
        error: LimitError,
        /// The permit, unused.
        permit: Box<super::Permit>,
    },
    /// `begin` of a grant whose agent is frozen by an operator's kill switch
    /// ([`Handoff::freeze`](crate::Handoff::freeze)): no permit was issued and the ticket is
    /// still approved (until its grant ends); the refusal is audited (coalesced per agent,
    /// see [`Limits::frozen_audit_per_minute`](crate::Limits::frozen_audit_per_minute)).
    /// `renew` and `finish` are never frozen.
    ///
    /// Code: `frozen`.
    #[error("execution is frozen: {reason}")]
    Frozen {
        /// The operator's reason.
        reason: String,
    },
    /// The store failed. For `finish`, the outcome was not recorded: call it again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `wait` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No such ticket.
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an audit verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The chain is broken: names the first bad event.
    #[error(transparent)]
    Chain(#[from] crate::audit::VerifyError),
    /// A saved checkpoint is malformed or its signature does not verify.
    #[error(transparent)]
    Checkpoint(#[from] crate::audit::CheckpointError),
    /// No checkpoint key was configured.
    #[error("no checkpoint key configured")]
    NoCheckpointKey,
    /// [`checkpoint`](crate::Handoff::checkpoint) refused to sign: the chain from the newest
    /// checkpoint it trusts (from its first event, if none) to the head does not verify, so the
    /// chain was cut or rewritten since, and signing its head would launder that. Audited.
    /// Code: `audit_checkpoint_refused`.
    #[error("refusing to sign a checkpoint: the chain since {} does not verify", match .previous { Some(size) => format!("the checkpoint at size {size}"), None => "its start".to_owned() })]
    CheckpointRefused {
        /// The size of the checkpoint verification started from (`None`: from the start).
        previous: Option<u64>,
        /// What verification found.
        #[source]
        source: crate::audit::VerifyError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`run`](crate::AgentHandle::run) can end with, besides the closure's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E> {
    /// The proposal was not recorded.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// Policy denied it, or a reviewer rejected it / asked for changes.
    #[error("not approved ({state}): {reason}")]
    NotApproved {
        /// The ticket.
        ticket: TicketId,
        /// Its final state.
        state: StateName,
        /// Why (deny reason, reviewer feedback, "expired", …).
        reason: String,
    },
    /// Nobody decided within the wait timeout; the ticket is still pending.
    #[error("still pending after the wait timeout (ticket {0})")]
    StillPending(TicketId),
    /// Waiting failed.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// The final check failed or execution could not be recorded.
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// The action itself failed (recorded as `Failed`).
    #[error("the action failed")]
    Action(#[source] E),
}

/// Any error of this crate's facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ProposeError`].
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// See [`DecideError`].
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// See [`ExecuteError`].
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// See [`WaitError`].
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// See [`AuditError`].
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// See [`LinkError`].
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A store failure outside the operations above.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The builder was missing a part.
    #[error("handoff builder: {0}")]
    Build(&'static str),
    /// The store implements an older store contract than this engine needs (see
    /// [`STORE_CONTRACT_VERSION`](crate::backend::STORE_CONTRACT_VERSION)): it would ignore
    /// parts of the writes it is given.
    #[error("the store implements store contract version {implemented}; this engine needs version {required}")]
    StoreContract {
        /// The version the store states.
        implemented: u32,
        /// The version the engine needs.
        required: u32,
    },
    /// The clock given to the builder is not the one the store stamps commits with (see
    /// [`HandoffBuilder::clock`](crate::HandoffBuilder::clock)): open the store with it
    /// (e.g. `SqliteOptions::with_clock`), or leave it out of the builder, which then takes
    /// the store's.
    ///
    /// Code: [`clock_mismatch`](crate::codes::CLOCK_MISMATCH).
    #[error("handoff builder: the store stamps commits with another clock than the engine's")]
    ClockMismatch,
}

impl ProposeError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            ProposeError::Frozen { .. } => codes::FROZEN,
            ProposeError::RateLimited => codes::RATE_LIMITED,
            ProposeError::IdempotencyConflict { .. } => codes::IDEMPOTENCY_CONFLICT,
            ProposeError::Identity(e) => e.code(),
            ProposeError::Store(e) => e.code(),
        }
    }
}

impl DecideError {
    /// The stable code (see [`codes`](crate::codes)); a refusal of the ticket machine answers
    /// its own code.
    pub fn code(&self) -> Code {
        match self {
            DecideError::Unauthenticated(e) => e.code(),
            DecideError::NotOperator { .. } => codes::NOT_OPERATOR,
            DecideError::Frozen { .. } => codes::FROZEN,
            DecideError::NotFound(_) => codes::NOT_FOUND,
            DecideError::StaleVersion { .. } => codes::STALE_VERSION,
            DecideError::Refused(r) => r.code(),
            DecideError::Limit(e) => e.code(),
            DecideError::NoSuchText(_) => codes::NO_SUCH_TEXT,
            DecideError::Store(e) => e.code(),
        }
    }
}

impl LinkError {
    /// The stable code (see [`codes`](crate::codes)); the same code names the refusal in the
    /// audit trail.
    pub fn code(&self) -> Code {
        match self {
            LinkError::NotConfigured(_) => codes::NOT_CONFIGURED,
            LinkError::Malformed(_) => codes::TOKEN_MALFORMED,
            LinkError::UnknownKey { .. } => codes::TOKEN_UNKNOWN_KEY,
            LinkError::BadSignature => codes::TOKEN_BAD_SIGNATURE,
            LinkError::Expired { .. } => codes::TOKEN_EXPIRED,
            LinkError::NotYetValid { .. } => codes::TOKEN_NOT_YET_VALID,
            LinkError::Unauthenticated(e) => e.code(),
            LinkError::WrongReviewer { .. } => codes::WRONG_REVIEWER,
            LinkError::DigestChanged => codes::DIGEST_CHANGED,
            LinkError::Replayed => codes::REPLAYED,
            LinkError::Frozen { .. } => codes::FROZEN,
            LinkError::NotFound(_) => codes::NOT_FOUND,
            LinkError::InvalidSubmission(_) => codes::INVALID_SUBMISSION,
            LinkError::NotPending { .. } => codes::NOT_PENDING,
            LinkError::Refused(r) => r.code(),
            LinkError::Limit(e) => e.code(),
            LinkError::Sign(_) => codes::TOKEN_SIGN_FAILED,
            LinkError::Random(_) => codes::RANDOM_FAILED,
            LinkError::Store(e) => e.code(),
        }
    }
}

impl ExecuteError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            ExecuteError::NotFound(_) => codes::NOT_FOUND,
            ExecuteError::Refused(r) => r.code(),
            ExecuteError::PreconditionsNotObserved => codes::PRECONDITIONS_NOT_OBSERVED,
            ExecuteError::Limit(e) | ExecuteError::OutcomeRefused { error: e, .. } => e.code(),
            ExecuteError::Frozen { .. } => codes::FROZEN,
            ExecuteError::Store(e) => e.code(),
        }
    }
}

impl WaitError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            WaitError::NotFound(_) => codes::NOT_FOUND,
            WaitError::Store(e) => e.code(),
        }
    }
}

impl AuditError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            AuditError::Chain(_) => codes::AUDIT_CHAIN_BROKEN,
            AuditError::Checkpoint(_) => codes::AUDIT_CHECKPOINT_INVALID,
            AuditError::NoCheckpointKey => codes::NOT_CONFIGURED,
            AuditError::CheckpointRefused { .. } => codes::AUDIT_CHECKPOINT_REFUSED,
            AuditError::Store(e) => e.code(),
        }
    }
}

impl<E> RunError<E> {
    /// The stable code (see [`codes`](crate::codes)); the action's own failure is
    /// [`ACTION_FAILED`](crate::codes::ACTION_FAILED).
    pub fn code(&self) -> Code {
        match self {
            RunError::Propose(e) => e.code(),
            RunError::NotApproved { .. } => codes::NOT_APPROVED,
            RunError::StillPending(_) => codes::STILL_PENDING,
            RunError::Wait(e) => e.code(),
            RunError::Execute(e) => e.code(),
            RunError::Action(_) => codes::ACTION_FAILED,
        }
    }
}

impl Error {
    /// The stable code of the error inside (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            Error::Propose(e) => e.code(),
            Error::Decide(e) => e.code(),
            Error::Execute(e) => e.code(),
            Error::Wait(e) => e.code(),
            Error::Audit(e) => e.code(),
            Error::Link(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Build(_) => codes::INVALID_CONFIGURATION,
            Error::StoreContract { .. } => codes::STORE_CONTRACT_TOO_OLD,
            Error::ClockMismatch => codes::CLOCK_MISMATCH,
        }
    }
}
