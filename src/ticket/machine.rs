//! The transition function: the ticket lifecycle table, in code once.
//!
//! [`open`] creates a ticket from the policy's ruling; [`apply`] applies one [`Event`] at a
//! given time and returns the next ticket with the audit records and effects it implies, or a
//! typed [`Refusal`] (with the audit record of the refusal, and a ticket to persist when the
//! refusal itself changed something: a lazy expiry, or `Stale` at begin).
//!
//! The rules and the table are documented on the [`ticket`](super) module.

// `Refused` carries an optional `Ticket` inline, like `Transition` does on the `Ok` side, so
// boxing the error would not make `Result<Transition, Refused>` any smaller.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::event::{Event, EventKind, ExecutionOutcome, Reviewer, Verdict};
use super::quorum;
use super::state::{
    Approval, ApprovedBy, Edit, ExpiredStage, LeaseId, PrincipalCheck, RejectedBy, StaleReason,
    StateName, TicketState, Vote, VoteKind,
};
use super::Ticket;
use crate::action::{ActionDigest, ActionRequest, Requester, ValidationError};
use crate::audit::{kind, Actor, AuditRecord};
use crate::codes::{self, Code};
use crate::id::{PersonId, TicketId};
use crate::policy::{MatchedRule, Outcome, ReviewPlan, Ruling};
use crate::timestamp::Timestamp;

/// Side effects a transition asks the driver to perform (as data).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// The ticket became pending, or an edit started a new review round: notify its
    /// reviewers (again).
    RequestReview,
    /// The ticket left pending: update or close review cards.
    CloseReview,
}

/// A successful transition.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The ticket after the event.
    pub ticket: Ticket,
    /// What to append to the audit chain, in order.
    pub audit: Vec<AuditRecord>,
    /// What the driver should do after committing.
    pub effects: Vec<Effect>,
}

impl Transition {
    /// Whether nothing changed (a reviewer repeating a decision already on record): the ticket
    /// is returned as it was, same version, with no audit record, and nothing needs writing.
    pub fn is_noop(&self) -> bool {
        self.audit.is_empty()
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A vote or edit on a ticket that is no longer pending.
    #[error("ticket is {state}, no longer pending")]
    NotPending {
        /// The ticket's state.
        state: StateName,
    },
    /// The review deadline passed: the ticket was expired instead.
    #[error("the review deadline {deadline} has passed")]
    DeadlinePassed {
        /// The deadline.
        deadline: Timestamp,
    },
    /// An expiry (or a lost lease) reported before it is due.
    #[error("not due until {due}")]
    NotDue {
        /// When it will be due.
        due: Timestamp,
    },
    /// The reviewer is in none of the groups of the ticket's requirements.
    #[error("reviewer `{person}` is in none of the required groups")]
    NotEligible {
        /// The reviewer.
        person: PersonId,
    },
    /// The reviewer is the requester's principal and may not approve their own request.
    #[error("reviewer `{person}` is the requester's principal and may not approve")]
    SelfApproval {
        /// The reviewer.
        person: PersonId,
    },
    /// The requester's principal could not be resolved, so any reviewer might be them:
    /// approvals are refused (fail closed).
    #[error("the requester's principal could not be resolved, so no approval is accepted")]
    PrincipalUnresolved,
    /// The reviewer already rejected or requested changes in this round.
    #[error("reviewer `{person}` already voted `{previous}` and may not change their vote")]
    ConflictingVote {
        /// The reviewer.
        person: PersonId,
        /// Their vote on record.
        previous: VoteKind,
    },
    /// An approval with edits arrived as a plain vote, without the policy's ruling on the
    /// edited action; it must be applied as [`Event::Edit`].
    #[error("an edit must be applied with the policy's ruling on the edited action")]
    EditNotRuled,
    /// The policy denies the edited action; the ticket stays as it was.
    #[error("the policy denies the edited action: {reason}")]
    EditDenied {
        /// The deny reason.
        reason: String,
    },
    /// The edited parameters do not make a valid action.
    #[error("the edited parameters are invalid: {source}")]
    EditInvalid {
        /// What is wrong.
        #[source]
        source: ValidationError,
    },
    /// The action presented at begin is not the approved one (the ticket is now stale).
    #[error("the action presented is not the approved one")]
    DigestMismatch,
    /// Observed preconditions differ from the expected ones (the ticket is now stale).
    #[error("preconditions changed since approval: `{}`", differing.join("`, `"))]
    PreconditionsChanged {
        /// The preconditions that differ or were not observed.
        differing: Vec<String>,
    },
    /// The current policy is stricter than the approval (the ticket is now stale).
    #[error("the current policy is stricter than the one the approval was given under")]
    PolicyStricter,
    /// The approval lapsed before begin: the ticket was expired instead.
    #[error("the approval lapsed at {valid_until}")]
    GrantExpired {
        /// When it lapsed.
        valid_until: Timestamp,
    },
    /// The lease id does not match the ticket's permit.
    #[error("the lease id does not match the ticket's permit")]
    LeaseMismatch,
    /// A renewal after the lease expired.
    #[error("the lease expired at {expired_at}")]
    LeaseExpired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// The event does not apply to a ticket in this state.
    #[error("`{event}` does not apply to a {state} ticket")]
    NotApplicable {
        /// The ticket's state.
        state: StateName,
        /// The event's kind.
        event: EventKind,
    },
}

impl Refusal {
    /// The stable code (see [`codes`](crate::codes)), also written into audit records and
    /// decision rows (`not_pending`, …).
    pub fn code(&self) -> Code {
        match self {
            Refusal::NotPending { .. } => codes::NOT_PENDING,
            Refusal::DeadlinePassed { .. } => codes::DEADLINE_PASSED,
            Refusal::NotDue { .. } => codes::NOT_DUE,
            Refusal::NotEligible { .. } => codes::NOT_ELIGIBLE,
            Refusal::SelfApproval { .. } => codes::SELF_APPROVAL,
            Refusal::PrincipalUnresolved => codes::PRINCIPAL_UNRESOLVED,
            Refusal::ConflictingVote { .. } => codes::CONFLICTING_VOTE,
            Refusal::EditNotRuled => codes::EDIT_NOT_RULED,
            Refusal::EditDenied { .. } => codes::EDIT_DENIED,
            Refusal::EditInvalid { .. } => codes::EDIT_INVALID,
            Refusal::DigestMismatch => codes::DIGEST_MISMATCH,
            Refusal::PreconditionsChanged { .. } => codes::PRECONDITIONS_CHANGED,
            Refusal::PolicyStricter => codes::POLICY_STRICTER,
            Refusal::GrantExpired { .. } => codes::GRANT_EXPIRED,
            Refusal::LeaseMismatch => codes::LEASE_MISMATCH,
            Refusal::LeaseExpired { .. } => codes::LEASE_EXPIRED,
            Refusal::NotApplicable { .. } => codes::NOT_APPLICABLE,
        }
    }
}

/// A refusal, with what must still be recorded.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// The audit records of the refusal (always at least one, the `refused` record, last;
    /// preceded by the `expired` or `stale` record when `ticket` is set).
    pub audit: Vec<AuditRecord>,
    /// A ticket change to persist despite the refusal (lazy expiry, `Stale` at begin).
    pub ticket: Option<Ticket>,
    /// What the driver should do after committing `ticket` (closing review cards of a ticket
    /// that expired while pending).
    pub effects: Vec<Effect>,
}

/// Creates a ticket for a proposal from the policy's ruling. Version 1.
///
/// `Allow` approves it by policy until `now + grant_ttl`; `Review` makes it pending until
/// `now + deadline` (effect [`Effect::RequestReview`]); `Deny` rejects it by policy. The audit
/// records are a `proposed` record (facts, digest, ruling — never the raw parameters, which
/// the store keeps) and, when the policy decided, an `approved` or `rejected` record.
///
/// If the requester names a principal but `principal` says there is none, the inconsistency
/// is resolved fail-closed: the ticket records the principal as [`PrincipalCheck::Unresolved`].
pub fn open(
    id: TicketId,
    requester: Requester,
    principal: PrincipalCheck,
    request: ActionRequest,
    ruling: Ruling,
    now: Timestamp,
) -> Transition {
    let principal = match (principal, requester.principal()) {
        (PrincipalCheck::NoPrincipal, Some(_)) => PrincipalCheck::Unresolved,
        (principal, _) => principal,
    };
    let digest = ActionDigest::of(&request);
    let (state, deadline, effects) = match &ruling.outcome {
        Outcome::Allow { grant_ttl } => (
            TicketState::Approved(Approval {
                by: ApprovedBy::Policy,
                at: now,
                valid_until: now.saturating_add(*grant_ttl),
                digest,
            }),
            None,
            Vec::new(),
        ),
        Outcome::Review(plan) => (
            TicketState::Pending,
            Some(now.saturating_add(plan.deadline)),
            vec![Effect::RequestReview],
        ),
        Outcome::Deny { reason } => (
            TicketState::Rejected {
                by: RejectedBy::Policy {
                    reason: reason.clone(),
                },
                at: now,
            },
            None,
            Vec::new(),
        ),
    };
    let ticket = Ticket {
        id,
        version: 1,
        material_version: 1,
        requester,
        principal,
        request,
        digest,
        edit: None,
        ruling,
        created_at: now,
        deadline,
        votes: Vec::new(),
        state,
        updated_at: now,
    };
    let record = |kind: &str, actor: Actor, data: Value| AuditRecord {
        texts: Vec::new(),
        ticket: Some(id),
        at: now,
        kind: kind.to_owned(),
        actor,
        data,
    };
    let mut audit = vec![record(
        kind::PROPOSED,
        Actor::Agent(ticket.requester.agent().clone()),
        proposed_data(&ticket),
    )];
    match &ticket.state {
        TicketState::Approved(approval) => audit.push(record(
            kind::APPROVED,
            Actor::Policy,
            json!({
                "by": "policy",
                "digest": hex(approval.digest.as_bytes()),
                "valid_until": approval.valid_until.as_unix_millis(),
                "policy": policy_data(&ticket.ruling),
            }),
        )),
        TicketState::Rejected {
            by: RejectedBy::Policy { reason },
            ..
        } => audit.push(record(
            kind::REJECTED,
            Actor::Policy,
            json!({
                "by": "policy",
                "reason": reason,
                "policy": policy_data(&ticket.ruling),
            }),
        )),
        _ => {}
    }
    Transition {
        ticket,
        audit,
        effects,
    }
}

/// Applies one event to a ticket at `now`.
///
/// `now` is the writer's commit time; a `now` earlier than the ticket's last change is taken
/// as that change's time, so time never runs backwards for a ticket. See the
/// [module documentation](super) for the table and the rules.
pub fn apply(ticket: &Ticket, event: Event, now: Timestamp) -> Result<Transition, Refused> {
    let step = Step {
        ticket,
        now: now.max(ticket.updated_at),
        event: event.kind(),
        actor: actor_of(ticket, &event),
    };
    if let Some(expired) = step.lazy_expiry() {
        return expired;
    }
    match event {
        Event::Vote { reviewer, verdict } => step.vote(reviewer, verdict),
        Event::Edit {
            reviewer,
            parameters,
            ruling,
        } => step.edit(reviewer, parameters, ruling),
        Event::Cancel { by, reason } => step.cancel(by, reason),
        Event::Expire => step.expire_early(),
        Event::Begin {
            digest,
            observed,
            current,
            lease,
            lease_expires,
        } => step.begin(digest, observed, current, lease, lease_expires),
        Event::Renew {
            lease,
            lease_expires,
        } => step.renew(lease, lease_expires),
        Event::Finish { lease, outcome } => step.finish(lease, outcome),
        Event::LeaseLost { lease } => step.lease_lost(lease),
        Event::Resolve { operator, outcome } => step.resolve(operator, outcome),
        Event::Revoke { operator, reason } => step.revoke(operator, reason),
    }
}

/// Who an event is attributed to in the audit trail.
fn actor_of(ticket: &Ticket, event: &Event) -> Actor {
    match event {
        Event::Vote { reviewer, .. } | Event::Edit { reviewer, .. } => {
            Actor::Reviewer(reviewer.person.clone())
        }
        Event::Cancel { by, .. } => by.clone(),
        Event::Expire | Event::LeaseLost { .. } => Actor::System,
        Event::Begin { .. } | Event::Renew { .. } | Event::Finish { .. } => {
            Actor::Agent(ticket.requester.agent().clone())
        }
        Event::Resolve { operator, .. } | Event::Revoke { operator, .. } => {
            Actor::Operator(operator.clone())
        }
    }
}

type Applied = Result<Transition, Refused>;

/// One application of an event: the ticket before, the time, and who caused it.
struct Step<'a> {
    ticket: &'a Ticket,
    now: Timestamp,
    event: EventKind,
    actor: Actor,
}

impl Step<'_> {
    fn state(&self) -> StateName {
        self.ticket.state.name()
    }

    fn record(&self, kind: &str, actor: Actor, data: Value) -> AuditRecord {
        AuditRecord {
            texts: Vec::new(),
            ticket: Some(self.ticket.id),
            at: self.now,
            kind: kind.to_owned(),
            actor,
            data,
        }
    }

    /// A record attributed to the event's actor.
    fn own_record(&self, kind: &str, data: Value) -> AuditRecord {
        self.record(kind, self.actor.clone(), data)
    }

    /// The ticket with the next version, stamped now.
    fn bump(&self, mut next: Ticket) -> Ticket {
        next.version = self.ticket.version.saturating_add(1);
        next.updated_at = self.now;
        if next.state.name() != self.ticket.state.name()
            || next.action_digest() != self.ticket.action_digest()
            || next.ruling != self.ticket.ruling
        {
            next.material_version = next.version;
        }
        next
    }

    /// The ticket in a new state, next version.
    fn moved(&self, state: TicketState) -> Ticket {
        let mut next = self.ticket.clone();
        next.state = state;
        self.bump(next)
    }

    fn noop(&self) -> Applied {
        Ok(Transition {
            ticket: self.ticket.clone(),
            audit: Vec::new(),
            effects: Vec::new(),
        })
    }

    fn done(&self, ticket: Ticket, audit: Vec<AuditRecord>, effects: Vec<Effect>) -> Applied {
        Ok(Transition {
            ticket,
            audit,
            effects,
        })
    }

    fn refuse(&self, refusal: Refusal) -> Applied {
        Err(self.refused(refusal, None, Vec::new(), Vec::new()))
    }

    fn refused(
        &self,
        refusal: Refusal,
        ticket: Option<Ticket>,
        mut audit: Vec<AuditRecord>,
        effects: Vec<Effect>,
    ) -> Refused {
        audit.push(self.own_record(
            kind::REFUSED,
            json!({
                "event": self.event.as_str(),
                "refusal": refusal.code(),
                "message": refusal.to_string(),
                "state": self.state().as_str(),
            }),
        ));
        Refused {
            refusal,
            audit,
            ticket,
            effects,
        }
    }

    fn not_applicable(&self) -> Applied {
        self.refuse(Refusal::NotApplicable {
            state: self.state(),
            event: self.event,
        })
    }

    /// Persists a passed review deadline or grant validity before anything else happens.
    fn lazy_expiry(&self) -> Option<Applied> {
        let (stage, at, refusal, effects) = match &self.ticket.state {
            TicketState::Pending => {
                let deadline = self.ticket.review_deadline();
                if self.now < deadline {
                    return None;
                }
                (
                    ExpiredStage::Review,
                    deadline,
                    Refusal::DeadlinePassed { deadline },
                    vec![Effect::CloseReview],
                )
            }
            TicketState::Approved(approval) if self.now >= approval.valid_until => (
                ExpiredStage::Grant,
                approval.valid_until,
                Refusal::GrantExpired {
                    valid_until: approval.valid_until,
                },
                Vec::new(),
            ),
            _ => return None,
        };
        let expired = self.moved(TicketState::Expired { stage, at });
        let record = self.record(
            kind::EXPIRED,
            Actor::System,
            json!({
                "stage": to_json(&stage),
                "deadline": at.as_unix_millis(),
                "from": self.state().as_str(),
                "noticed_by": self.event.as_str(),
            }),
        );
        Some(if self.event == EventKind::Expire {
            self.done(expired, vec![record], effects)
        } else {
            Err(self.refused(refusal, Some(expired), vec![record], effects))
        })
    }

    /// Whether this reviewer's identical decision is already on record in this round.
    fn repeats(&self, person: &PersonId, kind: VoteKind, feedback: Option<&String>) -> bool {
        self.ticket
            .votes
            .iter()
            .any(|v| &v.person == person && v.kind == kind && v.feedback.as_ref() == feedback)
    }

    /// The checks every approval (plain or with edits) passes: eligibility, principal.
    fn check_approver(&self, plan: &ReviewPlan, reviewer: &Reviewer) -> Result<(), Refusal> {
        self.check_eligible(plan, reviewer)?;
        match &self.ticket.principal {
            PrincipalCheck::Unresolved => Err(Refusal::PrincipalUnresolved),
            PrincipalCheck::Person(p) if p == &reviewer.person => Err(Refusal::SelfApproval {
                person: reviewer.person.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn check_eligible(&self, plan: &ReviewPlan, reviewer: &Reviewer) -> Result<(), Refusal> {
        if quorum::is_eligible(plan, &reviewer.groups) {
            Ok(())
        } else {
            Err(Refusal::NotEligible {
                person: reviewer.person.clone(),
            })
        }
    }

    fn vote(&self, reviewer: Reviewer, verdict: Verdict) -> Applied {
        let (vote_kind, feedback) = match verdict {
            Verdict::Approve => (VoteKind::Approve, None),
            Verdict::Reject { feedback } => (VoteKind::Reject, Some(feedback)),
            Verdict::RequestChanges { feedback } => (VoteKind::RequestChanges, Some(feedback)),
            Verdict::ApproveWithEdits { .. } => return self.refuse(Refusal::EditNotRuled),
        };
        if self.state() != StateName::Pending {
            return if self.repeats(&reviewer.person, vote_kind, feedback.as_ref()) {
                self.noop()
            } else {
                self.refuse(Refusal::NotPending {
                    state: self.state(),
                })
            };
        }
        let Some(plan) = self.ticket.plan() else {
            // A pending ticket always has a review plan; without one nobody is eligible.
            return self.refuse(Refusal::NotEligible {
                person: reviewer.person,
            });
        };
        let check = if vote_kind == VoteKind::Approve {
            self.check_approver(plan, &reviewer)
        } else {
            self.check_eligible(plan, &reviewer)
        };
        if let Err(refusal) = check {
            return self.refuse(refusal);
        }
        let prior = self
            .ticket
            .votes
            .iter()
            .position(|v| v.person == reviewer.person);
        if let Some(index) = prior {
            let prior = &self.ticket.votes[index];
            match (prior.kind, vote_kind) {
                (VoteKind::Approve, VoteKind::Approve) => {
                    if !quorum::lapsed(plan, prior.at, self.now) {
                        return self.noop();
                    }
                    // A lapsed approval repeated is renewed below.
                }
                (VoteKind::Approve, _) => {} // stricter: replaces the approval
                (previous, _) => {
                    return if previous == vote_kind && prior.feedback == feedback {
                        self.noop()
                    } else {
                        self.refuse(Refusal::ConflictingVote {
                            person: reviewer.person,
                            previous,
                        })
                    };
                }
            }
        }
        let replaces = prior.map(|i| self.ticket.votes[i].kind);
        let vote = Vote {
            person: reviewer.person.clone(),
            groups: reviewer.groups,
            kind: vote_kind,
            feedback: feedback.clone(),
            at: self.now,
        };
        let mut next = self.ticket.clone();
        match prior {
            Some(index) => next.votes[index] = vote,
            None => next.votes.push(vote),
        }
        let mut voted = self.own_record(
            kind::VOTED,
            json!({
                "vote": vote_kind.as_str(),
                "feedback": Value::Null,
                "replaces": replaces.map(VoteKind::as_str),
                "digest": hex(self.ticket.action_digest().as_bytes()),
                "progress": progress_data(&quorum::progress(
                    plan,
                    &next.votes,
                    &next.principal,
                    self.now,
                )),
            }),
        );
        if let Some(feedback) = &feedback {
            voted = voted.with_text("feedback", feedback.as_str());
        }

        if vote_kind != VoteKind::Approve {
            if !plan.veto {
                return self.done(self.bump(next), vec![voted], Vec::new());
            }
            let feedback = feedback.unwrap_or_default();
            let person = reviewer.person;
            let by = if vote_kind == VoteKind::Reject {
                RejectedBy::Reviewer { person, feedback }
            } else {
                RejectedBy::ChangesRequested { person, feedback }
            };
            let rejected = rejected_record(self.own_record(kind::REJECTED, json!({})), &by);
            next.state = TicketState::Rejected { by, at: self.now };
            return self.done(
                self.bump(next),
                vec![voted, rejected],
                vec![Effect::CloseReview],
            );
        }

        let editor = next.edit.as_ref().map(|e| e.editor.clone());
        match quorum::quorum(
            plan,
            &next.votes,
            &next.principal,
            editor.as_ref(),
            self.now,
        ) {
            None => self.done(self.bump(next), vec![voted], Vec::new()),
            Some(met) => {
                let approval = Approval {
                    by: ApprovedBy::Reviewers(met.approvers),
                    at: self.now,
                    valid_until: met.valid_until,
                    digest: next.action_digest(),
                };
                let approved = self.own_record(
                    kind::APPROVED,
                    json!({
                        "by": "reviewers",
                        "reviewers": to_json(&approval.by),
                        "digest": hex(approval.digest.as_bytes()),
                        "valid_until": approval.valid_until.as_unix_millis(),
                        "edited": next.edit.is_some(),
                    }),
                );
                next.state = TicketState::Approved(approval);
                self.done(
                    self.bump(next),
                    vec![voted, approved],
                    vec![Effect::CloseReview],
                )
            }
        }
    }

    fn edit(&self, reviewer: Reviewer, parameters: Value, ruling: Ruling) -> Applied {
        let repeated = self.ticket.edit.as_ref().is_some_and(|e| {
            e.editor == reviewer.person
                && e.parameters == parameters
                && self.ticket.votes.iter().any(|v| {
                    v.person == reviewer.person
                        && v.kind == VoteKind::Approve
                        && self
                            .ticket
                            .plan()
                            .is_some_and(|plan| !quorum::lapsed(plan, v.at, self.now))
                })
        });
        if self.state() != StateName::Pending {
            return if repeated {
                self.noop()
            } else {
                self.refuse(Refusal::NotPending {
                    state: self.state(),
                })
            };
        }
        let Some(plan) = self.ticket.plan() else {
            return self.refuse(Refusal::NotEligible {
                person: reviewer.person,
            });
        };
        if let Err(refusal) = self.check_approver(plan, &reviewer) {
            return self.refuse(refusal);
        }
        if let Some(prior) = self
            .ticket
            .votes
            .iter()
            .find(|v| v.person == reviewer.person && v.kind != VoteKind::Approve)
        {
            return self.refuse(Refusal::ConflictingVote {
                person: reviewer.person,
                previous: prior.kind,
            });
        }
        if repeated {
            return self.noop();
        }
        let edited = match edited_request(&self.ticket.request, parameters) {
            Ok(edited) => edited,
            Err(source) => return self.refuse(Refusal::EditInvalid { source }),
        };
        let outcome = self.ticket.ruling.outcome.clone().join(ruling.outcome);
        if let Outcome::Deny { reason } = outcome {
            return self.refuse(Refusal::EditDenied { reason });
        }
        let mut matched: Vec<MatchedRule> = self.ticket.ruling.matched.clone();
        for rule in ruling.matched {
            if !matched.contains(&rule) {
                matched.push(rule);
            }
        }
        let joined = Ruling {
            outcome,
            matched,
            policy: ruling.policy,
        };
        let digest = ActionDigest::of(&edited);
        let voided: Vec<&str> = self
            .ticket
            .votes
            .iter()
            .filter(|v| v.person != reviewer.person)
            .map(|v| v.person.as_str())
            .collect();
        let mut next = self.ticket.clone();
        next.edit = Some(Edit {
            parameters: edited.parameters,
            digest,
            editor: reviewer.person.clone(),
            at: self.now,
        });
        next.votes = vec![Vote {
            person: reviewer.person,
            groups: reviewer.groups,
            kind: VoteKind::Approve,
            feedback: None,
            at: self.now,
        }];
        let progress = match &joined.outcome {
            Outcome::Review(plan) => quorum::progress(plan, &next.votes, &next.principal, self.now),
            _ => Vec::new(),
        };
        let record = self.own_record(
            kind::EDITED,
            json!({
                "proposed_digest": hex(self.ticket.digest.as_bytes()),
                "previous_digest": hex(self.ticket.action_digest().as_bytes()),
                "digest": hex(digest.as_bytes()),
                "voided": voided,
                "outcome": outcome_name(&joined.outcome),
                "requirements": requirements_data(&joined.outcome),
                "matched": to_json(&joined.matched),
                "policy": policy_data(&joined),
                "progress": progress_data(&progress),
            }),
        );
        next.ruling = joined;
        self.done(self.bump(next), vec![record], vec![Effect::RequestReview])
    }

    fn cancel(&self, by: Actor, reason: String) -> Applied {
        let effects = match self.state() {
            StateName::Pending => vec![Effect::CloseReview],
            StateName::Approved => Vec::new(),
            _ => return self.not_applicable(),
        };
        let record = self
            .record(
                kind::CANCELLED,
                by.clone(),
                json!({ "reason": Value::Null, "from": self.state().as_str() }),
            )
            .with_text("reason", reason.as_str());
        let next = self.moved(TicketState::Cancelled {
            by,
            reason,
            at: self.now,
        });
        self.done(next, vec![record], effects)
    }

    /// `Expire` before anything is due (lazy expiry handled the due case).
    fn expire_early(&self) -> Applied {
        match &self.ticket.state {
            TicketState::Pending => self.refuse(Refusal::NotDue {
                due: self.ticket.review_deadline(),
            }),
            TicketState::Approved(approval) => self.refuse(Refusal::NotDue {
                due: approval.valid_until,
            }),
            _ => self.not_applicable(),
        }
    }

    fn begin(
        &self,
        digest: ActionDigest,
        observed: BTreeMap<String, Value>,
        current: Ruling,
        lease: LeaseId,
        lease_expires: Timestamp,
    ) -> Applied {
        let TicketState::Approved(approval) = &self.ticket.state else {
            return self.not_applicable();
        };
        // Only the values of the preconditions the action names are looked at, and kept.
        let expected = self.ticket.request.preconditions();
        let observed: BTreeMap<String, Value> = observed
            .into_iter()
            .filter(|(name, _)| expected.contains_key(name))
            .collect();
        if let Some((reason, refusal)) = self.stale_reason(approval, digest, &observed, current) {
            let mut record = self.own_record(kind::STALE, stale_data(&reason));
            if matches!(reason, StaleReason::Preconditions { .. }) {
                record = record
                    .with_text("expected", to_json(expected))
                    .with_text("observed", to_json(&observed));
            }
            let stale = self.moved(TicketState::Stale {
                reason,
                observed,
                at: self.now,
            });
            return Err(self.refused(refusal, Some(stale), vec![record], Vec::new()));
        }
        let record = self.own_record(
            kind::EXECUTION_STARTED,
            json!({
                "lease": to_json(&lease),
                "lease_expires": lease_expires.as_unix_millis(),
                "digest": hex(approval.digest.as_bytes()),
                "approved_by": to_json(&approval.by),
            }),
        );
        let next = self.moved(TicketState::Executing {
            approval: approval.clone(),
            lease,
            lease_expires,
            started_at: self.now,
        });
        self.done(next, vec![record], Vec::new())
    }

    /// The final check at begin; `None` when everything still holds.
    fn stale_reason(
        &self,
        approval: &Approval,
        digest: ActionDigest,
        observed: &BTreeMap<String, Value>,
        current: Ruling,
    ) -> Option<(StaleReason, Refusal)> {
        if digest != approval.digest {
            return Some((
                StaleReason::DigestMismatch {
                    approved: approval.digest,
                    presented: digest,
                },
                Refusal::DigestMismatch,
            ));
        }
        let differing: Vec<String> = self
            .ticket
            .request
            .preconditions()
            .iter()
            .filter(|(name, expected)| observed.get(*name) != Some(*expected))
            .map(|(name, _)| name.clone())
            .collect();
        if !differing.is_empty() {
            return Some((
                StaleReason::Preconditions {
                    differing: differing.clone(),
                },
                Refusal::PreconditionsChanged { differing },
            ));
        }
        let stricter = match (&current.outcome, &approval.by) {
            (Outcome::Deny { .. }, _) => true,
            (Outcome::Allow { .. }, _) => false,
            (Outcome::Review(_), ApprovedBy::Policy) => true,
            (Outcome::Review(plan), ApprovedBy::Reviewers(_)) => {
                let editor = self.ticket.edit.as_ref().map(|e| &e.editor);
                quorum::vetoed(plan, &self.ticket.votes)
                    || quorum::quorum(
                        plan,
                        &self.ticket.votes,
                        &self.ticket.principal,
                        editor,
                        self.now,
                    )
                    .is_none()
            }
        };
        stricter.then(|| {
            (
                StaleReason::PolicyStricter {
                    current: Box::new(current),
                },
                Refusal::PolicyStricter,
            )
        })
    }

    fn renew(&self, lease: LeaseId, lease_expires: Timestamp) -> Applied {
        let TicketState::Executing {
            approval,
            lease: held,
            lease_expires: previous,
            started_at,
        } = &self.ticket.state
        else {
            return self.not_applicable();
        };
        if *held != lease {
            return self.refuse(Refusal::LeaseMismatch);
        }
        if self.now >= *previous {
            return self.refuse(Refusal::LeaseExpired {
                expired_at: *previous,
            });
        }
        let record = self.own_record(
            kind::LEASE_RENEWED,
            json!({
                "lease": to_json(&lease),
                "previous": previous.as_unix_millis(),
                "lease_expires": lease_expires.as_unix_millis(),
            }),
        );
        let next = self.moved(TicketState::Executing {
            approval: approval.clone(),
            lease,
            lease_expires,
            started_at: *started_at,
        });
        self.done(next, vec![record], Vec::new())
    }

    fn finish(&self, lease: LeaseId, outcome: ExecutionOutcome) -> Applied {
        let (held, late) = match &self.ticket.state {
            TicketState::Executing {
                lease: held,
                lease_expires,
                ..
            } => (held, self.now >= *lease_expires),
            TicketState::Unknown { lease: held, .. } => (held, true),
            _ => return self.not_applicable(),
        };
        if *held != lease {
            return self.refuse(Refusal::LeaseMismatch);
        }
        let mut record = outcome_record(
            self.own_record(kind::EXECUTION_FINISHED, json!({})),
            &outcome,
        );
        if let Some(object) = record.data.as_object_mut() {
            object.insert("lease".into(), to_json(&lease));
            object.insert("late".into(), Value::Bool(late));
            object.insert("from".into(), self.state().as_str().into());
        }
        let next = self.moved(outcome_state(outcome, self.now, None));
        self.done(next, vec![record], Vec::new())
    }

    fn lease_lost(&self, lease: LeaseId) -> Applied {
        let TicketState::Executing {
            lease: held,
            lease_expires,
            ..
        } = &self.ticket.state
        else {
            return self.not_applicable();
        };
        if *held != lease {
            return self.refuse(Refusal::LeaseMismatch);
        }
        if self.now < *lease_expires {
            return self.refuse(Refusal::NotDue {
                due: *lease_expires,
            });
        }
        let record = self.own_record(
            kind::LEASE_LOST,
            json!({
                "lease": to_json(&lease),
                "lease_expires": lease_expires.as_unix_millis(),
            }),
        );
        let next = self.moved(TicketState::Unknown {
            lease,
            since: *lease_expires,
        });
        self.done(next, vec![record], Vec::new())
    }

    fn resolve(&self, operator: PersonId, outcome: ExecutionOutcome) -> Applied {
        let TicketState::Unknown { lease, .. } = &self.ticket.state else {
            return self.not_applicable();
        };
        let mut record = outcome_record(self.own_record(kind::RESOLVED, json!({})), &outcome);
        if let Some(object) = record.data.as_object_mut() {
            object.insert("lease".into(), to_json(lease));
        }
        let next = self.moved(outcome_state(outcome, self.now, Some(operator)));
        self.done(next, vec![record], Vec::new())
    }

    fn revoke(&self, operator: PersonId, reason: String) -> Applied {
        let TicketState::Approved(approval) = &self.ticket.state else {
            return self.not_applicable();
        };
        let record = self
            .own_record(
                kind::REVOKED,
                json!({
                    "reason": Value::Null,
                    "digest": hex(approval.digest.as_bytes()),
                    "approved_by": to_json(&approval.by),
                }),
            )
            .with_text("reason", reason.as_str());
        let next = self.moved(TicketState::Cancelled {
            by: Actor::Operator(operator),
            reason,
            at: self.now,
        });
        self.done(next, vec![record], Vec::new())
    }
}

/// The proposed request with the edited parameters, validated like a new request.
// Once `ActionRequest::with_parameters` exists (action module), use it instead.
fn edited_request(
    request: &ActionRequest,
    parameters: Value,
) -> Result<ActionRequest, ValidationError> {
    let mut edited = request.clone();
    edited.parameters = parameters;
    edited.validate()?;
    Ok(edited)
}

fn outcome_state(outcome: ExecutionOutcome, at: Timestamp, by: Option<PersonId>) -> TicketState {
    match outcome {
        ExecutionOutcome::Succeeded { output } => TicketState::Succeeded {
            output,
            at,
            resolved_by: by,
        },
        ExecutionOutcome::Failed { error } => TicketState::Failed {
            error,
            at,
            resolved_by: by,
        },
    }
}

/// An execution outcome on its record: the outcome's name in the data, the error text or the
/// output (unless `null`) as a text beside it (committed, never chained in clear).
fn outcome_record(mut record: AuditRecord, outcome: &ExecutionOutcome) -> AuditRecord {
    let (name, text) = match outcome {
        ExecutionOutcome::Succeeded { output } => (
            "succeeded",
            ("output", (!output.is_null()).then(|| output.clone())),
        ),
        ExecutionOutcome::Failed { error } => {
            ("failed", ("error", Some(Value::String(error.clone()))))
        }
    };
    if let Some(object) = record.data.as_object_mut() {
        object.insert("outcome".into(), name.into());
        object.insert(text.0.into(), Value::Null);
    }
    match text {
        (field, Some(value)) => record.with_text(field, value),
        _ => record,
    }
}

/// A rejection on its record: by whom; a kill switch's reason as a text beside it (a
/// reviewer's feedback is the `voted` record's text, committed once).
fn rejected_record(mut record: AuditRecord, by: &RejectedBy) -> AuditRecord {
    let (data, reason) = match by {
        RejectedBy::Policy { reason } => (json!({ "by": "policy", "reason": reason }), None),
        RejectedBy::Reviewer { person, .. } => {
            (json!({ "by": "reviewer", "person": person.as_str() }), None)
        }
        RejectedBy::ChangesRequested { person, .. } => (
            json!({ "by": "changes_requested", "person": person.as_str() }),
            None,
        ),
        RejectedBy::Frozen { reason } => (
            json!({ "by": "frozen", "reason": Value::Null }),
            Some(reason),
        ),
    };
    record.data = data;
    match reason {
        Some(reason) => record.with_text("reason", reason.as_str()),
        None => record,
    }
}

fn stale_data(reason: &StaleReason) -> Value {
    match reason {
        StaleReason::DigestMismatch {
            approved,
            presented,
        } => json!({
            "reason": "digest_mismatch",
            "approved": hex(approved.as_bytes()),
            "presented": hex(presented.as_bytes()),
        }),
        StaleReason::Preconditions { differing } => json!({
            "reason": "preconditions",
            "differing": differing,
            "expected": Value::Null,
            "observed": Value::Null,
        }),
        StaleReason::PolicyStricter { current } => json!({
            "reason": "policy_stricter",
            "outcome": outcome_name(&current.outcome),
            "requirements": requirements_data(&current.outcome),
            "matched": to_json(&current.matched),
            "policy": policy_data(current),
        }),
    }
}

/// The `proposed` record: the facts, the digest and the ruling — not the raw parameters.
fn proposed_data(ticket: &Ticket) -> Value {
    let request = &ticket.request;
    let ruling = &ticket.ruling;
    json!({
        "agent": request_agent(&ticket.requester),
        "principal": to_json(&ticket.principal),
        "kind": request.kind().as_str(),
        "targets": request.targets(),
        "environment": request.environment().as_str(),
        "sensitivity": request.sensitivity().as_str(),
        "impact": to_json(&request.impact()),
        "reversibility": request.reversibility().as_str(),
        "confidence": request.confidence().map(|c| c.get()),
        "digest": hex(ticket.digest.as_bytes()),
        "idempotency_key": request.idempotency_key().as_str(),
        "preconditions": request.preconditions().keys().collect::<Vec<_>>(),
        "outcome": outcome_name(&ruling.outcome),
        "requirements": requirements_data(&ruling.outcome),
        "deadline": ticket.deadline.map(Timestamp::as_unix_millis),
        "matched": to_json(&ruling.matched),
        "policy": policy_data(ruling),
    })
}

fn request_agent(requester: &Requester) -> Value {
    Value::String(requester.agent().as_str().to_owned())
}

fn policy_data(ruling: &Ruling) -> Value {
    json!({
        "version": ruling.policy.version,
        "hash": ruling.policy.hash.to_string(),
    })
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Allow { .. } => "allow",
        Outcome::Review(_) => "review",
        Outcome::Deny { .. } => "deny",
    }
}

fn requirements_data(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Review(plan) => Value::Array(
            plan.requirements
                .iter()
                .map(|r| Value::String(r.to_string()))
                .collect(),
        ),
        _ => Value::Array(Vec::new()),
    }
}

fn progress_data(progress: &[quorum::RequirementProgress]) -> Value {
    Value::Array(
        progress
            .iter()
            .map(|p| {
                json!({
                    "requirement": p.requirement.to_string(),
                    "approvers": to_json(&p.approvers),
                    "needed": p.needed,
                })
            })
            .collect(),
    )
}

/// Serialises a value whose serialisation cannot fail (derived impls over strings, numbers,
/// sets and string-keyed maps); `null` if it ever did.
fn to_json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
