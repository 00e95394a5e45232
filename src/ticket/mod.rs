//! The review ticket and its pure state machine.
//!
//! [`apply`] is the only way a ticket changes: it takes a ticket, an [`Event`] and the time,
//! and returns the next ticket with the audit records it implies, or a typed refusal. No I/O,
//! no clock, no randomness (lease ids are passed in).
// CONTRACT: the types in this file are shared with the store and the facade; helper C owns the
// module and may extend them, keeping the shapes below.

mod event;
mod machine;
mod state;

pub use event::{Event, ExecutionOutcome, Reviewer, Verdict};
pub use machine::{apply, open, Effect, Refusal, Refused, Transition};
pub use state::{
    Approval, ApprovedBy, Edit, ExpiredStage, LeaseId, PrincipalCheck, RejectedBy, StaleReason,
    StateName, TicketState, Vote, VoteKind,
};

use serde::{Deserialize, Serialize};

use crate::action::{ActionDigest, ActionRequest, IdempotencyKey, Requester};
use crate::id::TicketId;
use crate::policy::Ruling;
use crate::timestamp::Timestamp;

/// A durable review ticket: the immutable request, the ruling, the votes and the state.
///
/// Created by [`open`]; changed only by [`apply`]. Every change increments
/// [`version`](Self::version), which stores use for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub(crate) id: TicketId,
    pub(crate) version: u64,
    pub(crate) requester: Requester,
    pub(crate) principal: PrincipalCheck,
    /// The request as proposed (never modified).
    pub(crate) request: ActionRequest,
    /// Digest of the request as proposed.
    pub(crate) digest: ActionDigest,
    /// The reviewer's edit, if any: the action that will run instead of the proposed one.
    pub(crate) edit: Option<Edit>,
    /// The ruling in force (for an edited action, the stricter of the two rulings).
    pub(crate) ruling: Ruling,
    pub(crate) created_at: Timestamp,
    /// The review deadline (pending tickets only ever have one).
    pub(crate) deadline: Option<Timestamp>,
    /// Votes of the current round (an edit starts a new round).
    pub(crate) votes: Vec<Vote>,
    pub(crate) state: TicketState,
    pub(crate) updated_at: Timestamp,
}

impl Ticket {
    /// The ticket id.
    pub fn id(&self) -> TicketId {
        self.id
    }

    /// Incremented on every transition; starts at 1.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Who proposed it.
    pub fn requester(&self) -> &Requester {
        &self.requester
    }

    /// The requester's principal as resolved for self-approval checks.
    pub fn principal(&self) -> &PrincipalCheck {
        &self.principal
    }

    /// The request as proposed.
    pub fn request(&self) -> &ActionRequest {
        &self.request
    }

    /// The idempotency key of the proposal.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        self.request.idempotency_key()
    }

    /// Digest of the request as proposed.
    pub fn proposed_digest(&self) -> ActionDigest {
        self.digest
    }

    /// The reviewer's edit, if the action was approved with edits.
    pub fn edit(&self) -> Option<&Edit> {
        self.edit.as_ref()
    }

    /// The digest of the action that may run: the edit's if there is one, else the proposal's.
    pub fn action_digest(&self) -> ActionDigest {
        self.edit.as_ref().map_or(self.digest, |e| e.digest)
    }

    /// The ruling in force.
    pub fn ruling(&self) -> &Ruling {
        &self.ruling
    }

    /// When it was proposed.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The review deadline, if review was required.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// Votes of the current round.
    pub fn votes(&self) -> &[Vote] {
        &self.votes
    }

    /// The stored state. Use [`state_at`](Self::state_at) to account for a deadline that has
    /// passed without a write.
    pub fn state(&self) -> &TicketState {
        &self.state
    }

    /// When it last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
}
