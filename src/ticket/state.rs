//! Ticket states and the records they keep.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::action::ActionDigest;
use crate::audit::Actor;
use crate::id::{GroupName, PersonId};
use crate::policy::Ruling;
use crate::timestamp::Timestamp;

/// The requester's principal as resolved into the directory's person-id namespace, for
/// self-approval checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "person", rename_all = "snake_case")]
pub enum PrincipalCheck {
    /// The agent acts for nobody.
    NoPrincipal,
    /// The principal is this person: they may not approve.
    Person(PersonId),
    /// A principal was given but could not be resolved: every approval is refused (fail
    /// closed), since any reviewer might be that principal.
    Unresolved,
}

/// Where a ticket is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting for reviewers until the deadline.
    Pending,
    /// Approved and not yet used.
    Approved(Approval),
    /// A permit was issued and the action is running under a lease.
    Executing {
        /// The approval that was used.
        approval: Approval,
        /// The permit's lease id.
        lease: LeaseId,
        /// When the lease lapses unless renewed.
        lease_expires: Timestamp,
        /// When execution began.
        started_at: Timestamp,
    },
    /// The action ran and succeeded.
    Succeeded {
        /// What the action returned (as reported by the host).
        output: Value,
        /// When the outcome was recorded.
        at: Timestamp,
        /// Set when an operator resolved an unknown outcome.
        resolved_by: Option<PersonId>,
    },
    /// The action ran and failed.
    Failed {
        /// The error as reported by the host.
        error: String,
        /// When the outcome was recorded.
        at: Timestamp,
        /// Set when an operator resolved an unknown outcome.
        resolved_by: Option<PersonId>,
    },
    /// Refused by policy, a reviewer, or a kill switch.
    Rejected {
        /// By whom and why.
        by: RejectedBy,
        /// When.
        at: Timestamp,
    },
    /// Nobody answered in time, or the approval lapsed unused.
    Expired {
        /// Which deadline passed.
        stage: ExpiredStage,
        /// The deadline itself (not the time somebody noticed).
        at: Timestamp,
    },
    /// Cancelled by the requester or an operator.
    Cancelled {
        /// Who cancelled.
        by: Actor,
        /// Why.
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// The final check at begin failed: the world or the policy changed since approval.
    Stale {
        /// What no longer held.
        reason: StaleReason,
        /// The precondition values observed at begin.
        observed: BTreeMap<String, Value>,
        /// When.
        at: Timestamp,
    },
    /// The lease lapsed without an outcome: the action may or may not have run. Never retried
    /// automatically; an operator resolves it (or a late finish with the lease id).
    Unknown {
        /// The lapsed lease.
        lease: LeaseId,
        /// When the lease lapsed.
        since: Timestamp,
    },
}

impl TicketState {
    /// The state's name without its data.
    pub fn name(&self) -> StateName {
        match self {
            TicketState::Pending => StateName::Pending,
            TicketState::Approved(_) => StateName::Approved,
            TicketState::Executing { .. } => StateName::Executing,
            TicketState::Succeeded { .. } => StateName::Succeeded,
            TicketState::Failed { .. } => StateName::Failed,
            TicketState::Rejected { .. } => StateName::Rejected,
            TicketState::Expired { .. } => StateName::Expired,
            TicketState::Cancelled { .. } => StateName::Cancelled,
            TicketState::Stale { .. } => StateName::Stale,
            TicketState::Unknown { .. } => StateName::Unknown,
        }
    }
}

/// A state's name, for filters, indexes and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// See [`TicketState::Pending`].
    Pending,
    /// See [`TicketState::Approved`].
    Approved,
    /// See [`TicketState::Executing`].
    Executing,
    /// See [`TicketState::Succeeded`].
    Succeeded,
    /// See [`TicketState::Failed`].
    Failed,
    /// See [`TicketState::Rejected`].
    Rejected,
    /// See [`TicketState::Expired`].
    Expired,
    /// See [`TicketState::Cancelled`].
    Cancelled,
    /// See [`TicketState::Stale`].
    Stale,
    /// See [`TicketState::Unknown`].
    Unknown,
}

impl StateName {
    /// Every state, in lifecycle order.
    pub const ALL: [StateName; 10] = [
        StateName::Pending,
        StateName::Approved,
        StateName::Executing,
        StateName::Succeeded,
        StateName::Failed,
        StateName::Rejected,
        StateName::Expired,
        StateName::Cancelled,
        StateName::Stale,
        StateName::Unknown,
    ];

    /// The lowercase name used in stores and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Pending => "pending",
            StateName::Approved => "approved",
            StateName::Executing => "executing",
            StateName::Succeeded => "succeeded",
            StateName::Failed => "failed",
            StateName::Rejected => "rejected",
            StateName::Expired => "expired",
            StateName::Cancelled => "cancelled",
            StateName::Stale => "stale",
            StateName::Unknown => "unknown",
        }
    }

    /// Parses [`as_str`](Self::as_str) output.
    pub fn parse(name: &str) -> Option<StateName> {
        StateName::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Terminal states never change (except `Unknown`, which only an operator resolution or a
    /// late finish with the matching lease moves, to `Succeeded` or `Failed`).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            StateName::Pending | StateName::Approved | StateName::Executing
        )
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approval that can be used to begin execution until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Policy or which reviewers.
    pub by: ApprovedBy,
    /// When the ticket became approved.
    pub at: Timestamp,
    /// The grant lapses at this instant (earliest counting approval + approval ttl, or
    /// approval time + grant ttl for policy grants).
    pub valid_until: Timestamp,
    /// Digest of the action approved (the edit's if edited).
    pub digest: ActionDigest,
}

/// Who approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "reviewers", rename_all = "snake_case")]
pub enum ApprovedBy {
    /// The policy allowed it without review.
    Policy,
    /// These reviewers' approvals met every requirement.
    Reviewers(BTreeSet<PersonId>),
}

/// Who rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum RejectedBy {
    /// The policy denied it.
    Policy {
        /// The deny reason.
        reason: String,
    },
    /// A reviewer rejected it.
    Reviewer {
        /// Who.
        person: PersonId,
        /// Their feedback for the agent.
        feedback: String,
    },
    /// A reviewer asked for changes: the agent may propose a revised action (with a new key).
    ChangesRequested {
        /// Who.
        person: PersonId,
        /// What to change.
        feedback: String,
    },
    /// Proposals were frozen by an operator's kill switch.
    Frozen {
        /// The kill switch's reason.
        reason: String,
    },
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiredStage {
    /// Nobody decided before the review deadline (default deny).
    Review,
    /// The approval was not used before it lapsed.
    Grant,
}

/// Why the final check at begin failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StaleReason {
    /// The action presented is not the one approved.
    DigestMismatch {
        /// The approved digest.
        approved: ActionDigest,
        /// The presented digest.
        presented: ActionDigest,
    },
    /// Observed precondition values differ from the expected ones.
    Preconditions {
        /// Names of the preconditions that differ or were not observed.
        differing: Vec<String>,
    },
    /// The current policy is stricter than the one the approval was given under.
    PolicyStricter {
        /// The current ruling.
        current: Box<Ruling>,
    },
}

/// A reviewer's edit of the action's parameters (approve with edits).
///
/// `Debug` never prints the parameters: they may hold values the request marked sensitive.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// The edited parameters (replacing the proposed ones).
    pub parameters: Value,
    /// Digest of the edited action.
    pub digest: ActionDigest,
    /// The reviewer who edited (a co-author: cannot be the only approver).
    pub editor: PersonId,
    /// When.
    pub at: Timestamp,
}

/// One reviewer's vote in the current round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The reviewer (directory person id).
    pub person: PersonId,
    /// Their groups at the time of the vote.
    pub groups: BTreeSet<GroupName>,
    /// What they said.
    pub kind: VoteKind,
    /// Feedback, for rejections and change requests.
    pub feedback: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// The kind of a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    /// Approve.
    Approve,
    /// Reject.
    Reject,
    /// Request changes.
    RequestChanges,
}

impl VoteKind {
    /// The lowercase name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            VoteKind::Approve => "approve",
            VoteKind::Reject => "reject",
            VoteKind::RequestChanges => "request_changes",
        }
    }
}

impl fmt::Display for VoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An execution permit's lease id: random, issued by the store, never guessable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(Uuid);

impl LeaseId {
    /// Wraps 128 random bits.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

impl fmt::Debug for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Edit")
            .field("parameters", &super::event::HIDDEN_PARAMETERS)
            .field("digest", &self.digest)
            .field("editor", &self.editor)
            .field("at", &self.at)
            .finish()
    }
}
