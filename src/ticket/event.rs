//! What can happen to a ticket.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::LeaseId;
use crate::action::ActionDigest;
use crate::audit::Actor;
use crate::id::{GroupName, PersonId};
use crate::policy::Ruling;
use crate::timestamp::Timestamp;

/// An authenticated reviewer: the directory's person id and groups.
///
/// Only an identity verifier should produce one from a credential; the facade's public reviewer
/// API never accepts one ready-made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reviewer {
    /// The directory person id.
    pub person: PersonId,
    /// The groups the person belongs to.
    pub groups: BTreeSet<GroupName>,
}

/// A reviewer's answer. A typed value, never free text interpreted by a model.
///
/// `Debug` never prints edited parameters: they may hold values the request marked sensitive.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Approve the action as proposed (or as last edited).
    Approve,
    /// Approve with edited parameters: the editor becomes a co-author, the edited action is
    /// re-ruled and needs at least one other approver.
    ApproveWithEdits {
        /// The replacement parameters (a JSON object).
        parameters: Value,
    },
    /// Reject.
    Reject {
        /// Why, for the agent.
        feedback: String,
    },
    /// Ask the agent to revise and propose again.
    RequestChanges {
        /// What to change.
        feedback: String,
    },
}

/// How an execution ended, as reported by the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExecutionOutcome {
    /// It worked.
    Succeeded {
        /// What it returned (no sensitive values).
        output: Value,
    },
    /// It failed.
    Failed {
        /// The error.
        error: String,
    },
}

impl ExecutionOutcome {
    /// Checks the outcome against the public bounds ([`crate::limits`]): an error text of at
    /// most [`MAX_ERROR_LEN`](crate::limits::MAX_ERROR_LEN) bytes, an output of at most
    /// [`MAX_VALUE_DEPTH`](crate::limits::MAX_VALUE_DEPTH) levels and
    /// [`MAX_VALUE_BYTES`](crate::limits::MAX_VALUE_BYTES) canonical bytes. `finish` and
    /// `resolve` refuse an outcome that fails it, before anything is written.
    pub fn check(&self) -> Result<(), crate::limits::LimitError> {
        match self {
            ExecutionOutcome::Succeeded { output } => crate::limits::check_value("output", output),
            ExecutionOutcome::Failed { error } => {
                crate::limits::check_text("error", error, crate::limits::MAX_ERROR_LEN)
            }
        }
    }
}

impl Verdict {
    /// Checks the feedback of a rejection or change request against
    /// [`MAX_FEEDBACK_LEN`](crate::limits::MAX_FEEDBACK_LEN). The facade refuses a verdict
    /// that fails it before anything is written (edited parameters are checked as action
    /// parameters, by the ticket machine).
    pub fn check(&self) -> Result<(), crate::limits::LimitError> {
        match self {
            Verdict::Reject { feedback } | Verdict::RequestChanges { feedback } => {
                crate::limits::check_text("feedback", feedback, crate::limits::MAX_FEEDBACK_LEN)
            }
            Verdict::Approve | Verdict::ApproveWithEdits { .. } => Ok(()),
        }
    }
}

/// An event applied to a ticket by [`apply`](super::apply).
///
/// `Debug` never prints edited parameters (see [`Verdict`]).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A reviewer approves, rejects or requests changes.
    Vote {
        /// The authenticated reviewer.
        reviewer: Reviewer,
        /// Their verdict (not an edit: see [`Event::Edit`]).
        verdict: Verdict,
    },
    /// A reviewer approves with edited parameters. The facade re-rules the edited action and
    /// passes the ruling; the stricter of it and the ticket's ruling applies.
    Edit {
        /// The authenticated reviewer.
        reviewer: Reviewer,
        /// The replacement parameters.
        parameters: Value,
        /// The policy's ruling on the edited action.
        ruling: Ruling,
    },
    /// The requester or an operator cancels.
    Cancel {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
    },
    /// A sweep noticed a passed deadline (any other event does too).
    Expire,
    /// The final check and the start of execution.
    Begin {
        /// Digest of the action about to run.
        digest: ActionDigest,
        /// Observed values of the preconditions.
        observed: BTreeMap<String, Value>,
        /// The current policy's ruling on the action about to run.
        current: Ruling,
        /// The lease id the store issued.
        lease: LeaseId,
        /// When the lease lapses unless renewed.
        lease_expires: Timestamp,
    },
    /// Extend the execution lease.
    Renew {
        /// The lease id of the permit.
        lease: LeaseId,
        /// The new expiry.
        lease_expires: Timestamp,
    },
    /// Record the execution's outcome.
    Finish {
        /// The lease id of the permit.
        lease: LeaseId,
        /// How it ended.
        outcome: ExecutionOutcome,
    },
    /// The lease lapsed without an outcome.
    LeaseLost {
        /// The lapsed lease.
        lease: LeaseId,
    },
    /// An operator records the outcome of an unknown ticket.
    Resolve {
        /// The operator.
        operator: PersonId,
        /// What happened.
        outcome: ExecutionOutcome,
    },
    /// An operator withdraws an approval that has not been used.
    Revoke {
        /// The operator.
        operator: PersonId,
        /// Why.
        reason: String,
    },
}

/// An event's kind without its data, for the transition table, refusals and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// See [`Event::Vote`].
    Vote,
    /// See [`Event::Edit`].
    Edit,
    /// See [`Event::Cancel`].
    Cancel,
    /// See [`Event::Expire`].
    Expire,
    /// See [`Event::Begin`].
    Begin,
    /// See [`Event::Renew`].
    Renew,
    /// See [`Event::Finish`].
    Finish,
    /// See [`Event::LeaseLost`].
    LeaseLost,
    /// See [`Event::Resolve`].
    Resolve,
    /// See [`Event::Revoke`].
    Revoke,
}

impl EventKind {
    /// Every kind, in the order of [`Event`]'s variants.
    pub const ALL: [EventKind; 10] = [
        EventKind::Vote,
        EventKind::Edit,
        EventKind::Cancel,
        EventKind::Expire,
        EventKind::Begin,
        EventKind::Renew,
        EventKind::Finish,
        EventKind::LeaseLost,
        EventKind::Resolve,
        EventKind::Revoke,
    ];

    /// The lowercase name used in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Vote => "vote",
            EventKind::Edit => "edit",
            EventKind::Cancel => "cancel",
            EventKind::Expire => "expire",
            EventKind::Begin => "begin",
            EventKind::Renew => "renew",
            EventKind::Finish => "finish",
            EventKind::LeaseLost => "lease_lost",
            EventKind::Resolve => "resolve",
            EventKind::Revoke => "revoke",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Vote { .. } => EventKind::Vote,
            Event::Edit { .. } => EventKind::Edit,
            Event::Cancel { .. } => EventKind::Cancel,
            Event::Expire => EventKind::Expire,
            Event::Begin { .. } => EventKind::Begin,
            Event::Renew { .. } => EventKind::Renew,
            Event::Finish { .. } => EventKind::Finish,
            Event::LeaseLost { .. } => EventKind::LeaseLost,
            Event::Resolve { .. } => EventKind::Resolve,
            Event::Revoke { .. } => EventKind::Revoke,
        }
    }

    /// Whether the event may be re-applied to a newer version of the ticket after a
    /// compare-and-swap race with concurrent votes, instead of being refused.
    ///
    /// True for plain [`Event::Vote`]s (approve, reject, request changes): a vote does not
    /// depend on which other votes were recorded first, and [`apply`](super::apply) decides it
    /// afresh against the newer ticket (which may by then be approved, rejected or expired).
    /// False for everything else — in particular [`Event::Edit`], which changes the digest and
    /// the requirements the caller saw, so a race must be surfaced to the caller.
    pub fn commutes_with_votes(&self) -> bool {
        matches!(self, Event::Vote { .. })
    }
}

/// What `Debug` shows instead of edited parameters.
pub(crate) const HIDDEN_PARAMETERS: &str = "<hidden: may hold sensitive values>";

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Approve => f.write_str("Approve"),
            Verdict::ApproveWithEdits { .. } => f
                .debug_struct("ApproveWithEdits")
                .field("parameters", &HIDDEN_PARAMETERS)
                .finish(),
            Verdict::Reject { feedback } => f
                .debug_struct("Reject")
                .field("feedback", feedback)
                .finish(),
            Verdict::RequestChanges { feedback } => f
                .debug_struct("RequestChanges")
                .field("feedback", feedback)
                .finish(),
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Vote { reviewer, verdict } => f
                .debug_struct("Vote")
                .field("reviewer", reviewer)
                .field("verdict", verdict)
                .finish(),
            Event::Edit {
                reviewer, ruling, ..
            } => f
                .debug_struct("Edit")
                .field("reviewer", reviewer)
                .field("parameters", &HIDDEN_PARAMETERS)
                .field("ruling", ruling)
                .finish(),
            Event::Cancel { by, reason } => f
                .debug_struct("Cancel")
                .field("by", by)
                .field("reason", reason)
                .finish(),
            Event::Expire => f.write_str("Expire"),
            Event::Begin {
                digest,
                observed,
                current,
                lease,
                lease_expires,
            } => f
                .debug_struct("Begin")
                .field("digest", digest)
                .field("observed", observed)
                .field("current", current)
                .field("lease", lease)
                .field("lease_expires", lease_expires)
                .finish(),
            Event::Renew {
                lease,
                lease_expires,
            } => f
                .debug_struct("Renew")
                .field("lease", lease)
                .field("lease_expires", lease_expires)
                .finish(),
            Event::Finish { lease, outcome } => f
                .debug_struct("Finish")
                .field("lease", lease)
                .field("outcome", outcome)
                .finish(),
            Event::LeaseLost { lease } => {
                f.debug_struct("LeaseLost").field("lease", lease).finish()
            }
            Event::Resolve { operator, outcome } => f
                .debug_struct("Resolve")
                .field("operator", operator)
                .field("outcome", outcome)
                .finish(),
            Event::Revoke { operator, reason } => f
                .debug_struct("Revoke")
                .field("operator", operator)
                .field("reason", reason)
                .finish(),
        }
    }
}
