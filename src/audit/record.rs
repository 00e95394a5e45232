//! What happened, before it is chained: produced by the ticket machine and the facade.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::{AgentId, PersonId, TicketId};
use crate::timestamp::Timestamp;

/// Who caused an audited event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// The proposing agent (bound by the host).
    Agent(AgentId),
    /// An authenticated reviewer (directory person id).
    Reviewer(PersonId),
    /// An authenticated operator (directory person id).
    Operator(PersonId),
    /// The policy engine.
    Policy,
    /// The library itself (expiry sweeps, lease expiry, delivery worker).
    System,
    /// Someone who could not be authenticated (refused callbacks); never trusted.
    Unauthenticated,
}

/// One audited fact, not yet chained. The store assigns the sequence number and hashes.
///
/// `data` must never hold sensitive parameter values or free text: use salted commitments —
/// the action's committed parameters, and for free text and values the record's
/// [`texts`](Self::texts), kept beside the event (see [`AuditText`](super::AuditText)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// The ticket it concerns, if any.
    pub ticket: Option<TicketId>,
    /// When it happened (the writer's commit time for transitions).
    pub at: Timestamp,
    /// What happened: one of the [`kind`] constants.
    pub kind: String,
    /// Who caused it.
    pub actor: Actor,
    /// Details (a JSON object).
    pub data: Value,
    /// Free text and values the event is about, kept beside it and never hashed: `data` holds
    /// a salted commitment of each under its name once [sealed](Self::seal). Read back from a
    /// store, each says whether it is kept, erased or altered.
    #[serde(skip)]
    pub texts: Vec<super::AuditText>,
}

impl AuditRecord {
    /// A record of `kind` caused by `actor` at `at`, about `ticket` if any, with `data` (a
    /// JSON object), without texts (add them with [`with_text`](Self::with_text)).
    pub fn new(
        ticket: Option<TicketId>,
        at: Timestamp,
        kind: impl Into<String>,
        actor: Actor,
        data: Value,
    ) -> Self {
        Self {
            ticket,
            at,
            kind: kind.into(),
            actor,
            data,
            texts: Vec::new(),
        }
    }
}

/// The audit event kinds the library writes.
pub mod kind {
    /// A proposal was recorded with its ruling.
    pub const PROPOSED: &str = "proposed";
    /// A reviewer's vote was counted.
    pub const VOTED: &str = "voted";
    /// A reviewer repeated a vote already counted (through a decision token, whose use is
    /// recorded); nothing changed.
    pub const REPEATED: &str = "repeated";
    /// A reviewer edited the action (approve with edits).
    pub const EDITED: &str = "edited";
    /// The ticket was approved (by policy or by quorum).
    pub const APPROVED: &str = "approved";
    /// The ticket was rejected (policy, reviewer, changes requested, frozen).
    pub const REJECTED: &str = "rejected";
    /// The review deadline or the grant's validity passed.
    pub const EXPIRED: &str = "expired";
    /// The requester or an operator cancelled the ticket.
    pub const CANCELLED: &str = "cancelled";
    /// An operator revoked an unused approval.
    pub const REVOKED: &str = "revoked";
    /// Execution began: a permit (lease) was issued.
    pub const EXECUTION_STARTED: &str = "execution_started";
    /// The execution lease was renewed.
    pub const LEASE_RENEWED: &str = "lease_renewed";
    /// Execution finished (succeeded or failed).
    pub const EXECUTION_FINISHED: &str = "execution_finished";
    /// The execution lease lapsed without an outcome; the ticket is unknown.
    pub const LEASE_LOST: &str = "lease_lost";
    /// An operator resolved an unknown outcome.
    pub const RESOLVED: &str = "resolved";
    /// The final check at begin failed; the ticket is stale.
    pub const STALE: &str = "stale";
    /// An event was refused (the data says which refusal).
    pub const REFUSED: &str = "refused";
    /// A review card was delivered to a channel (the data names the channel, the delivery id
    /// and the channel's message id).
    pub const NOTIFIED: &str = "notified";
    /// A delivery attempt failed (the data gives the attempt, whether a retry can help and
    /// the error code).
    pub const DELIVERY_FAILED: &str = "delivery_failed";
    /// An operator erased a text kept beside an event (the data names it, `{"text": {"seq",
    /// "name"}}`); its commitment stays in the chain.
    pub const TEXT_ERASED: &str = "text_erased";
    /// Delivery of a review card was given up (retries exhausted, or a failure retrying
    /// cannot fix); the outbox row is dead.
    pub const GAVE_UP: &str = "gave_up";
    /// An operator froze proposals, approvals and `begin` (the data names the scope and the
    /// reason); written in the same transaction that sets the freeze.
    pub const FROZEN: &str = "frozen";
    /// An operator lifted a freeze (the data names the scope).
    pub const UNFROZEN: &str = "unfrozen";
    /// An operator rebased the commit floor onto the clock (the data gives the floor before,
    /// the clock's reading, the alarm if one was raised, and the reason).
    pub const CLOCK_REBASED: &str = "clock_rebased";
}
