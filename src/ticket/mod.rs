//! The review ticket and its pure state machine.
//!
//! [`apply`] is the only way a ticket changes: it takes a ticket, an [`Event`] and the time,
//! and returns the next ticket with the audit records it implies, or a typed refusal. No I/O,
//! no clock, no randomness (lease ids are passed in).
//!
//! # The table
//!
//! Before the table is consulted, a ticket whose deadline has passed is expired (*lazy
//! expiry*): a `Pending` ticket at or past its review deadline becomes
//! `Expired { stage: Review, at: deadline }`, an `Approved` ticket at or past its grant's
//! `valid_until` becomes `Expired { stage: Grant, at: valid_until }`. The expiry is persisted
//! and the event refused ([`Refusal::DeadlinePassed`], [`Refusal::GrantExpired`]), except
//! [`Event::Expire`], which succeeds with it. `Cancel` loses against expiry.
//!
//! | state \ event | vote / edit | cancel | expire | begin | renew | finish | lease lost | resolve | revoke |
//! |---|---|---|---|---|---|---|---|---|---|
//! | pending | quorum rules (below) | cancelled | refused `NotDue` | n/a | n/a | n/a | n/a | n/a | n/a |
//! | approved | `NotPending` | cancelled | refused `NotDue` | executing, or stale | n/a | n/a | n/a | n/a | cancelled by the operator (`revoked`) |
//! | executing | `NotPending` | n/a | n/a | n/a | lease extended | succeeded / failed | unknown (`NotDue` before the lease expiry) | n/a | n/a |
//! | unknown | `NotPending` | n/a | n/a | n/a | n/a | succeeded / failed (late finish) | n/a | succeeded / failed, resolved by the operator | n/a |
//! | succeeded, failed, rejected, expired, cancelled, stale | `NotPending` | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |
//!
//! "n/a" is [`Refusal::NotApplicable`]. A reviewer repeating exactly the decision already on
//! record for them in the current round gets an unchanged ticket in any state (an `Ok` with
//! the same version and no audit record: [`Transition::is_noop`]).
//!
//! # Votes on a pending ticket
//!
//! In order: the reviewer must count toward at least one requirement ([`Refusal::NotEligible`],
//! which also means an ineligible reviewer cannot veto); approvals (and edits, which are
//! approvals) are refused when the requester's principal could not be resolved
//! ([`Refusal::PrincipalUnresolved`]) or is the reviewer ([`Refusal::SelfApproval`]). Rejecting
//! or requesting changes on one's own request is allowed: refusing is always safe, and an
//! eligible principal's rejection vetoes like anybody's. A reviewer who approved may later
//! reject or request changes (their approval is replaced); a reviewer who rejected or
//! requested changes may not change their vote ([`Refusal::ConflictingVote`]) until an edit
//! starts a new round. A repeated approval whose ttl has lapsed is renewed.
//!
//! With veto on, one rejection or change request by an eligible reviewer rejects the ticket;
//! with veto off it is recorded and the ticket stays pending until quorum or deadline. The
//! ticket is approved when every requirement is met by distinct, non-lapsed, non-principal
//! approvers and — after an edit — at least one of them is not the editor. The grant is valid
//! until the earliest counting approval plus the approval ttl.
//!
//! An edit is re-ruled: the stricter of the ticket's ruling and the edited action's ruling
//! applies ([`Outcome::join`](crate::policy::Outcome::join)); a `Deny` refuses the edit
//! ([`Refusal::EditDenied`]) and leaves the ticket as it was. Otherwise earlier votes are
//! void, the editor's approval opens the new round (effect [`Effect::RequestReview`] again),
//! and the review deadline stays where it was. The proposal and the edited parameters are
//! both kept ([`Ticket::request`], [`Ticket::edit`]).
//!
//! # Begin
//!
//! `Approved → Executing` once, with the lease passed in. The final check, in order: the
//! digest presented must be the approved one; every expected precondition must have been
//! observed with an equal value (a missing value differs); the current ruling must not be
//! stricter than the approval (`Deny` is; for a policy grant any `Review` is; for a reviewed
//! grant a `Review` is stricter when the ticket's approvals, counted under the current plan,
//! do not meet it or an eligible rejection on record would veto under it). A failed check
//! makes the ticket `Stale` with the observed values, returned as the refusal's ticket.
//!
//! # Versions and concurrency
//!
//! Every change — including the ones a refusal persists — increments
//! [`Ticket::version`] by one, for the store's compare-and-swap. Plain votes may be re-applied
//! to a newer version after a race ([`Event::commutes_with_votes`]).
// CONTRACT: the types in this file are shared with the store and the facade; helper C owns the
// module and may extend them, keeping the shapes below.

mod event;
mod machine;
mod quorum;
mod state;
#[cfg(test)]
mod tests;

pub use event::{Event, EventKind, ExecutionOutcome, Reviewer, Verdict};
pub use machine::{apply, open, Effect, Refusal, Refused, Transition};
pub use quorum::RequirementProgress;
pub use state::{
    Approval, ApprovedBy, Edit, ExpiredStage, LeaseId, PrincipalCheck, RejectedBy, StaleReason,
    StateName, TicketState, Vote, VoteKind,
};

use serde::{Deserialize, Serialize};

use crate::action::{ActionDigest, ActionRequest, IdempotencyKey, Requester};
use crate::id::PersonId;
use crate::id::TicketId;
use crate::policy::{Outcome, ReviewPlan, Ruling};
use crate::timestamp::Timestamp;

/// A durable review ticket: the immutable request, the ruling, the votes and the state.
///
/// Created by [`open`]; changed only by [`apply`]. Every change increments
/// [`version`](Self::version), which stores use for compare-and-swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub(crate) id: TicketId,
    pub(crate) version: u64,
    /// The version at which the action, the ruling or the state last changed (votes that
    /// leave the ticket pending do not count): a reviewer who saw any version from here on
    /// saw what matters.
    pub(crate) material_version: u64,
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

    /// The version at which the action, the ruling or the state last changed. A reviewer's
    /// `expected_version` at or after it is still current: only other reviewers' votes came
    /// in between.
    pub fn material_version(&self) -> u64 {
        self.material_version
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

    /// The state as of `now`: like [`state`](Self::state), but a pending ticket at or past its
    /// review deadline reads as `Expired { stage: Review, at: deadline }` and an approved
    /// ticket at or past its grant's `valid_until` reads as `Expired { stage: Grant, at:
    /// valid_until }`, which is what the next write will persist.
    pub fn state_at(&self, now: Timestamp) -> TicketState {
        match &self.state {
            TicketState::Pending if now >= self.review_deadline() => TicketState::Expired {
                stage: ExpiredStage::Review,
                at: self.review_deadline(),
            },
            TicketState::Approved(approval) if now >= approval.valid_until => {
                TicketState::Expired {
                    stage: ExpiredStage::Grant,
                    at: approval.valid_until,
                }
            }
            state => state.clone(),
        }
    }

    /// The review plan in force, if the ruling requires review.
    pub fn plan(&self) -> Option<&ReviewPlan> {
        match &self.ruling.outcome {
            Outcome::Review(plan) => Some(plan),
            _ => None,
        }
    }

    /// Each requirement of the review plan with the distinct reviewers whose approvals count
    /// toward it at `now` (eligible, not the principal, not lapsed) and how many are still
    /// needed. Empty when the ruling did not require review.
    ///
    /// After an edit, quorum additionally needs an approver other than the editor: see
    /// [`awaiting_non_editor`](Self::awaiting_non_editor).
    pub fn progress(&self, now: Timestamp) -> Vec<RequirementProgress> {
        self.plan().map_or_else(Vec::new, |plan| {
            quorum::progress(plan, &self.votes, &self.principal, now)
        })
    }

    /// The editor, while an edited action still lacks a counting approval from somebody else.
    pub fn awaiting_non_editor(&self, now: Timestamp) -> Option<&PersonId> {
        let editor = &self.edit.as_ref()?.editor;
        let plan = self.plan()?;
        let others = quorum::counting_approvals(plan, &self.votes, &self.principal, now)
            .iter()
            .any(|v| &v.person != editor);
        (!others).then_some(editor)
    }

    /// The approval in force or used: set while approved or executing.
    pub fn approval(&self) -> Option<&Approval> {
        match &self.state {
            TicketState::Approved(approval) | TicketState::Executing { approval, .. } => {
                Some(approval)
            }
            _ => None,
        }
    }

    /// The action that may run: the proposal, with the edited parameters if a reviewer edited
    /// them. Its digest is [`action_digest`](Self::action_digest).
    pub fn approved_request(&self) -> ActionRequest {
        let mut request = self.request.clone();
        if let Some(edit) = &self.edit {
            request.parameters = edit.parameters.clone();
        }
        request
    }

    /// The review deadline of a pending ticket. A pending ticket without one (never produced
    /// by [`open`]) is treated as due at creation: default deny.
    pub(crate) fn review_deadline(&self) -> Timestamp {
        self.deadline.unwrap_or(self.created_at)
    }
}
