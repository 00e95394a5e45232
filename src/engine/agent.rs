//! The agent side: propose, wait, begin, finish, cancel — and `run`, which does all of it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::Instrument;

use super::error::{ExecuteError, ProposeError, RunError, WaitError};
use super::waiters::first_of;
use super::{DriveError, Driven, Handoff, Inner};
use crate::action::{ActionDigest, ActionRequest, Requester};
use crate::audit::Actor;
use crate::backend::{lock, StoreError, TicketWrite, Write};
use crate::id::{AgentId, PersonId, TicketId};
use crate::policy::Ruling;
use crate::ticket::{
    open, ApprovedBy, Event, ExecutionOutcome, ExpiredStage, LeaseId, PrincipalCheck, RejectedBy,
    StateName, Ticket, TicketState,
};
use crate::timestamp::Timestamp;

impl Handoff {
    /// A handle for one agent, acting for `principal` (a directory person id or alias) or on
    /// its own. The host binds these; they are never read from model output.
    pub fn agent(&self, agent: AgentId, principal: Option<PersonId>) -> AgentHandle {
        AgentHandle {
            handoff: self.clone(),
            requester: Requester::new(agent, principal),
        }
    }

    /// Reloads the grant of an approved ticket (e.g. after a restart).
    #[tracing::instrument(level = "debug", skip_all, fields(ticket = %ticket))]
    pub async fn grant(&self, ticket: TicketId) -> Result<Option<Grant>, StoreError> {
        let now = self.inner.clock.now();
        Ok(self
            .inner
            .store
            .ticket(ticket)
            .await?
            .and_then(|t| Grant::of(&t, now)))
    }
}

/// Proposes actions for one agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    handoff: Handoff,
    requester: Requester,
}

impl fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentHandle")
            .field("requester", &self.requester)
            .finish_non_exhaustive()
    }
}

/// The answer to a proposal.
// One value per proposal, moved once: boxing the grant would cost an allocation and a
// clumsier match on the common path for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[must_use]
pub enum Proposal {
    /// Policy allows it: begin with the grant.
    Allowed(Grant),
    /// A review is needed: [`wait`](AgentHandle::wait) for it.
    Pending(PendingTicket),
    /// Policy denied it (or, for a repeated key, reviewers rejected it earlier).
    Denied {
        /// The ticket recording the denial.
        ticket: TicketId,
        /// Why.
        reason: String,
        /// The ruling, with the rules that decided.
        ruling: Box<Ruling>,
    },
    /// A repeated proposal whose ticket is already past approval (executing, executed,
    /// expired, cancelled, stale, unknown). A fresh attempt needs a fresh idempotency key.
    Closed {
        /// The ticket.
        ticket: TicketId,
        /// Its state.
        state: StateName,
    },
}

impl Proposal {
    /// The ticket that records the proposal, whatever the answer.
    pub fn ticket(&self) -> TicketId {
        match self {
            Proposal::Allowed(grant) => grant.ticket(),
            Proposal::Pending(pending) => pending.id,
            Proposal::Denied { ticket, .. } | Proposal::Closed { ticket, .. } => *ticket,
        }
    }
}

/// A ticket waiting for reviewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTicket {
    /// The ticket.
    pub id: TicketId,
    /// Unanswered at this instant means denied.
    pub deadline: Timestamp,
}

/// What [`wait`](AgentHandle::wait) resolved to.
// One value per wait, moved once (see `Proposal`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[must_use]
pub enum Decision {
    /// Approved: begin with the grant (its action carries any reviewer edits).
    Approved(Grant),
    /// A reviewer rejected it.
    Rejected {
        /// Who.
        by: PersonId,
        /// Their feedback.
        feedback: String,
    },
    /// A reviewer asked for changes: propose a revised action under a new key.
    ChangesRequested {
        /// Who.
        by: PersonId,
        /// What to change.
        feedback: String,
    },
    /// Policy denied it.
    Denied {
        /// Why.
        reason: String,
    },
    /// Nobody decided before the deadline (default deny), or the approval lapsed unused.
    Expired,
    /// The requester or an operator cancelled it.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// The wait timed out; the ticket is still pending.
    StillPending(PendingTicket),
    /// The ticket is already past approval (executing or finished).
    Closed(StateName),
}

/// Permission to begin one approved action. Consumed by [`begin`](AgentHandle::begin), so an
/// in-process double start does not compile; the store's compare-and-swap refuses it across
/// processes.
#[must_use = "an unused grant lapses at its validity end"]
pub struct Grant {
    ticket: TicketId,
    action: ApprovedAction,
    valid_until: Timestamp,
    approved_by: ApprovedBy,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("ticket", &self.ticket)
            .field("action", &self.action)
            .field("valid_until", &self.valid_until)
            .field("approved_by", &self.approved_by)
            .finish()
    }
}

impl Grant {
    fn of(ticket: &Ticket, now: Timestamp) -> Option<Grant> {
        let TicketState::Approved(approval) = ticket.state_at(now) else {
            return None;
        };
        Some(Grant {
            ticket: ticket.id(),
            action: ApprovedAction::of(ticket),
            valid_until: approval.valid_until,
            approved_by: approval.by,
        })
    }

    /// The ticket.
    pub fn ticket(&self) -> TicketId {
        self.ticket
    }

    /// The action approved (with any reviewer edits).
    pub fn action(&self) -> &ApprovedAction {
        &self.action
    }

    /// The grant lapses at this instant.
    pub fn valid_until(&self) -> Timestamp {
        self.valid_until
    }

    /// Policy, or which reviewers.
    pub fn approved_by(&self) -> &ApprovedBy {
        &self.approved_by
    }

    /// Whether `request` is the action this grant approves: the same action digest (kind,
    /// targets, parameters as approved — with any reviewer edits —, facts, attributes and
    /// preconditions; not the justification or the idempotency key). A gateway that holds a
    /// grant checks with it that the call it is about to forward is the approved one.
    pub fn covers(&self, request: &ActionRequest) -> bool {
        self.action.covers(request)
    }
}

/// The exact action that was approved: the proposal, with a reviewer's edited parameters if
/// any. Its digest is what `begin` checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovedAction {
    request: ActionRequest,
    digest: ActionDigest,
    edited: bool,
}

impl ApprovedAction {
    fn of(ticket: &Ticket) -> Self {
        Self {
            request: ticket.approved_request(),
            digest: ticket.action_digest(),
            edited: ticket.edit().is_some(),
        }
    }

    /// The request to execute.
    pub fn request(&self) -> &ActionRequest {
        &self.request
    }

    /// Its parameters (run these, not the ones first proposed).
    pub fn parameters(&self) -> &Value {
        self.request.parameters()
    }

    /// Its digest.
    pub fn digest(&self) -> ActionDigest {
        self.digest
    }

    /// Whether a reviewer changed the parameters.
    pub fn was_edited(&self) -> bool {
        self.edited
    }

    /// Whether `request` is this action (see [`Grant::covers`]).
    pub fn covers(&self, request: &ActionRequest) -> bool {
        request.digest() == self.digest
    }
}

/// A single-use execution permit: a lease on the ticket's `Executing` state. Renew it while a
/// long action runs; consume it with [`finish`](AgentHandle::finish).
#[must_use = "finish the permit, or the ticket ends `unknown` when the lease lapses"]
pub struct Permit {
    ticket: TicketId,
    lease: LeaseId,
    lease_expires: Timestamp,
    action: ApprovedAction,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .field("lease_expires", &self.lease_expires)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// The ticket.
    pub fn ticket(&self) -> TicketId {
        self.ticket
    }

    /// The action to execute.
    pub fn action(&self) -> &ApprovedAction {
        &self.action
    }

    /// When the lease lapses unless renewed.
    pub fn lease_expires(&self) -> Timestamp {
        self.lease_expires
    }
}

/// A token bucket for the per-agent proposal rate.
pub(crate) struct Bucket {
    tokens: f64,
    at: Timestamp,
}

impl AgentHandle {
    /// The requester bound to this handle.
    pub fn requester(&self) -> &Requester {
        &self.requester
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handoff.inner
    }

    /// Proposes an action: validated (by its type), ruled by policy, recorded, and answered.
    ///
    /// Every proposal is recorded — allowed and denied ones too — so idempotency, at-most-once
    /// and the audit trail hold for every action. The same idempotency key with the same
    /// action returns the existing ticket in whatever state it is; with a different action it
    /// is refused with [`ProposeError::IdempotencyConflict`] and nothing is written.
    pub async fn propose(&self, request: ActionRequest) -> Result<Proposal, ProposeError> {
        let _op = crate::failpoint::operation("propose");
        let span = tracing::info_span!(
            "propose",
            agent = %self.requester.agent(),
            kind = %request.kind().as_str(),
            ticket = tracing::field::Empty,
        );
        self.propose_inner(request).instrument(span).await
    }

    async fn propose_inner(&self, request: ActionRequest) -> Result<Proposal, ProposeError> {
        let inner = self.inner();
        let agent = self.requester.agent();
        // No read before the insert: the store's unique (requester, key) constraint finds a
        // repeated key in the same transaction (`DuplicateKey` below), which saves a round
        // trip to the store on every new proposal. Replays cost no rate-limit token: a
        // limited agent retrying after a crash still gets its answer.
        if let Err(limited) = self.take_token() {
            // A frozen agent is answered `Frozen`, limited or not (the store's freezes are
            // read here; an unlimited proposal has them checked by its own write).
            let freezes = inner.store.freezes().await?;
            if let Some(freeze) = crate::backend::covering(&freezes, agent) {
                let reason = freeze.reason.clone();
                return Err(self.frozen(&request, request.digest(), reason).await);
            }
            return match inner
                .store
                .ticket_by_key(&self.requester, request.idempotency_key())
                .await?
            {
                Some(existing) => self.replay(existing, request.digest()).await,
                None => Err(limited),
            };
        }
        let principal = match self.requester.principal() {
            None => PrincipalCheck::NoPrincipal,
            Some(p) => match inner.identity.resolve_principal(p).await {
                Ok(Some(person)) => PrincipalCheck::Person(person),
                Ok(None) => PrincipalCheck::Unresolved,
                Err(e) => return Err(ProposeError::Identity(e)),
            },
        };
        let ruling = inner.policy.evaluate(&request);
        let now = inner.clock.now();
        let id = new_ticket_id(now)?;
        // Kept for the audit row of a refusal by a freeze (the request moves into the ticket).
        let (kind, key) = (request.kind().clone(), request.idempotency_key().clone());
        tracing::Span::current().record("ticket", tracing::field::display(id));
        let transition = open(id, self.requester.clone(), principal, request, ruling, now);
        let ticket = transition.ticket;
        // `open` computed the action's digest; the answer is made now so the ticket moves
        // into the write instead of being cloned (both only matter once the commit succeeds).
        let digest = ticket.proposed_digest();
        let answer = self.answer(&ticket, now);
        let write = Write {
            outbox: inner.notifications(&ticket, &transition.effects, now)?,
            ticket: Some(TicketWrite::Insert(Box::new(ticket))),
            audit: transition.audit,
            // A freeze is checked by the store inside this write's transaction.
            unless_frozen: Some(agent.clone()),
            ..Write::default()
        };
        match inner.store.commit(write).await {
            Ok(_) => {
                crate::failpoint::failpoint("propose.committed");
                Ok(answer)
            }
            Err(StoreError::DuplicateKey { existing }) => {
                // A replay, or a concurrent proposal with the same key that won the race.
                self.refund_token();
                match inner.store.ticket(existing).await? {
                    Some(t) => self.replay(t, digest).await,
                    None => Err(StoreError::NotFound(existing).into()),
                }
            }
            Err(StoreError::Frozen { reason, .. }) => {
                self.refund_token();
                let refused = super::freeze::Refused::Proposal {
                    kind: kind.as_str(),
                    idempotency_key: key.as_str(),
                    digest: digest.to_string(),
                };
                Err(self.refused_frozen(refused, reason).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Audits a proposal refused by a freeze (coalesced) and returns the refusal.
    async fn frozen(
        &self,
        request: &ActionRequest,
        digest: ActionDigest,
        reason: String,
    ) -> ProposeError {
        let refused = super::freeze::Refused::Proposal {
            kind: request.kind().as_str(),
            idempotency_key: request.idempotency_key().as_str(),
            digest: digest.to_string(),
        };
        self.refused_frozen(refused, reason).await
    }

    async fn refused_frozen(
        &self,
        refused: super::freeze::Refused<'_>,
        reason: String,
    ) -> ProposeError {
        let agent = self.requester.agent();
        match self.inner().refused_frozen(agent, refused).await {
            Ok(()) => ProposeError::Frozen { reason },
            Err(e) => e.into(),
        }
    }

    async fn replay(
        &self,
        existing: Ticket,
        digest: ActionDigest,
    ) -> Result<Proposal, ProposeError> {
        // Keys are scoped by the whole requester (agent and principal), so the store answers
        // this requester's own ticket only. Anything else would hand out another principal's
        // ticket (or its grant, which the person now asking may have approved): refused
        // without naming it.
        if existing.requester() != &self.requester {
            return Err(StoreError::Corrupt(
                "the store answered another requester's ticket for an idempotency key".into(),
            )
            .into());
        }
        if existing.proposed_digest() != digest {
            return Err(ProposeError::IdempotencyConflict {
                existing: existing.id(),
            });
        }
        let inner = self.inner();
        let mut ticket = existing;
        // Bounded: each round either answers or records the change time made.
        for _ in 0..4 {
            let now = inner.clock.now();
            if ticket.state().name() == ticket.state_at(now).name() {
                return Ok(self.answer(&ticket, now));
            }
            // Time alone changed it (a deadline or grant end passed): persist that before
            // answering it, serialised with any write that was in flight, so a replay never
            // calls an approval that was used "expired". Then answer from the record.
            self.handoff.expire(ticket.id()).await?;
            ticket = inner
                .store
                .ticket(ticket.id())
                .await?
                .ok_or(StoreError::NotFound(ticket.id()))?;
        }
        Ok(self.answer(&ticket, inner.clock.now()))
    }

    fn answer(&self, ticket: &Ticket, now: Timestamp) -> Proposal {
        match ticket.state_at(now) {
            TicketState::Approved(_) => match Grant::of(ticket, now) {
                Some(g) => Proposal::Allowed(g),
                None => Proposal::Closed {
                    ticket: ticket.id(),
                    state: StateName::Approved,
                },
            },
            TicketState::Pending => Proposal::Pending(PendingTicket {
                id: ticket.id(),
                deadline: ticket.deadline().unwrap_or(now),
            }),
            TicketState::Rejected { by, .. } => Proposal::Denied {
                ticket: ticket.id(),
                reason: rejection_reason(&by),
                ruling: Box::new(ticket.ruling().clone()),
            },
            other => Proposal::Closed {
                ticket: ticket.id(),
                state: other.name(),
            },
        }
    }

    fn take_token(&self) -> Result<(), ProposeError> {
        let inner = self.inner();
        let per_minute = inner.limits.proposals_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let now = inner.clock.now();
        let mut buckets = lock(&inner.buckets);
        let bucket = buckets
            .entry(self.requester.agent().clone())
            .or_insert(Bucket {
                tokens: f64::from(per_minute),
                at: now,
            });
        let refill =
            now.saturating_duration_since(bucket.at).as_secs_f64() / 60.0 * f64::from(per_minute);
        bucket.tokens = (bucket.tokens + refill).min(f64::from(per_minute));
        bucket.at = bucket.at.max(now);
        if bucket.tokens < 1.0 {
            return Err(ProposeError::RateLimited);
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Gives back the token a proposal took when it turned out to be a replay.
    fn refund_token(&self) {
        let inner = self.inner();
        let per_minute = f64::from(inner.limits.proposals_per_minute);
        if per_minute == 0.0 {
            return;
        }
        if let Some(bucket) = lock(&inner.buckets).get_mut(self.requester.agent()) {
            bucket.tokens = (bucket.tokens + 1.0).min(per_minute);
        }
    }

    /// Waits until the ticket is decided, its deadline passes, or `timeout` elapses.
    ///
    /// Decisions made in this process wake the waiter at once; decisions made by other
    /// processes are seen by polling the store with backoff. The ticket's own deadline always
    /// wins: at the deadline this returns [`Decision::Expired`] (and records the expiry) even
    /// if no sweeper ran.
    pub async fn wait(
        &self,
        ticket: &PendingTicket,
        timeout: Duration,
    ) -> Result<Decision, WaitError> {
        let span = tracing::info_span!("wait", ticket = %ticket.id);
        self.handoff
            .wait_for(ticket.id, timeout)
            .instrument(span)
            .await
    }

    /// The final check, then a single-use permit.
    ///
    /// Checks that the action about to run is the approved one (digest), that the observed
    /// precondition values equal the expected ones, and that the current policy is not
    /// stricter; on failure the ticket becomes `Stale` and this returns the refusal (the
    /// ticket's history then holds the expected and the observed values, as texts of its
    /// `stale` event). On success the ticket moves `Approved → Executing` under a fresh random
    /// lease.
    ///
    /// Only the observed values of the preconditions the action names are looked at and
    /// kept; they are bounded like parameters ([`crate::limits`]), and values over the bounds
    /// are refused with [`ExecuteError::Limit`] before anything is written (reload the grant
    /// with [`Handoff::grant`]).
    pub async fn begin(
        &self,
        grant: Grant,
        observed: BTreeMap<String, Value>,
    ) -> Result<Permit, ExecuteError> {
        let _op = crate::failpoint::operation("begin");
        let span = tracing::info_span!("begin", ticket = %grant.ticket);
        self.handoff
            .begin_inner(&self.requester, grant, observed)
            .instrument(span)
            .await
    }

    /// Extends the permit's lease by the configured lease ttl from now.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %permit.ticket))]
    pub async fn renew(&self, permit: &mut Permit) -> Result<(), ExecuteError> {
        let _op = crate::failpoint::operation("renew");
        let inner = self.inner();
        let lease = permit.lease;
        let ttl = inner.limits.lease_ttl;
        let mut new_expiry = None;
        let driven = inner
            .drive::<ExecuteError>(permit.ticket, None, None, |_, now| {
                let until = now.saturating_add(ttl);
                new_expiry = Some(until);
                Ok(Event::Renew {
                    lease,
                    lease_expires: until,
                })
            })
            .await;
        match execute_result(driven)? {
            Ok(_) => {
                if let Some(until) = new_expiry {
                    permit.lease_expires = until;
                }
                Ok(())
            }
            Err(refusal) => Err(ExecuteError::Refused(refusal)),
        }
    }

    /// Records how the execution ended, consuming the permit. A finish after the lease lapsed
    /// (the ticket became `Unknown`) is still recorded when the lease id matches.
    ///
    /// An outcome over its bounds ([`ExecutionOutcome::check`]: error text, output size and
    /// depth) is refused with [`ExecuteError::OutcomeRefused`], which hands the permit back.
    pub async fn finish(
        &self,
        permit: Permit,
        outcome: ExecutionOutcome,
    ) -> Result<(), ExecuteError> {
        let _op = crate::failpoint::operation("finish");
        if let Err(error) = outcome.check() {
            return Err(ExecuteError::OutcomeRefused {
                error,
                permit: Box::new(permit),
            });
        }
        crate::failpoint::failpoint("finish.entered");
        let span = tracing::info_span!("finish", ticket = %permit.ticket);
        let lease = permit.lease;
        let driven = self
            .inner()
            .drive::<ExecuteError>(permit.ticket, None, None, move |_, _| {
                Ok(Event::Finish {
                    lease,
                    outcome: outcome.clone(),
                })
            })
            .instrument(span)
            .await;
        match execute_result(driven)? {
            Ok(_) => {
                crate::failpoint::failpoint("finish.committed");
                Ok(())
            }
            Err(refusal) => Err(ExecuteError::Refused(refusal)),
        }
    }

    /// Cancels one of this agent's tickets (pending or approved and unused). A reason over
    /// [`MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) is refused with
    /// [`ExecuteError::Limit`] before anything is written.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket, agent = %self.requester.agent()))]
    pub async fn cancel(&self, ticket: TicketId, reason: &str) -> Result<(), ExecuteError> {
        let _op = crate::failpoint::operation("cancel");
        super::operator::check_reason(reason)?;
        let actor = Actor::Agent(self.requester.agent().clone());
        let reason = reason.to_owned();
        let requester = self.requester.clone();
        let driven = self
            .inner()
            .drive::<ExecuteError>(ticket, None, None, |t, _| {
                if t.requester() != &requester {
                    // Another requester's ticket: refuse as if it did not exist.
                    return Err(ExecuteError::NotFound(t.id()));
                }
                Ok(Event::Cancel {
                    by: actor.clone(),
                    reason: reason.clone(),
                })
            })
            .await;
        match execute_result(driven)? {
            Ok(_) => Ok(()),
            Err(refusal) => Err(ExecuteError::Refused(refusal)),
        }
    }

    /// Gates one action end to end: propose → wait (up to `wait`) → begin → run `action`
    /// with the approved action → finish. For actions without preconditions; see
    /// [`run_with`](Self::run_with) otherwise.
    ///
    /// The closure runs at most once, and only with the exact approved action (including a
    /// reviewer's edits). Its error is recorded as the execution's failure.
    pub async fn run<T, E, F, Fut>(
        &self,
        request: ActionRequest,
        wait: Duration,
        action: F,
    ) -> Result<T, RunError<E>>
    where
        F: FnOnce(ApprovedAction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        if !request.preconditions().is_empty() {
            return Err(RunError::Execute(ExecuteError::PreconditionsNotObserved));
        }
        self.run_with(request, wait, |_| async { BTreeMap::new() }, action)
            .await
    }

    /// Like [`run`](Self::run), with a closure that observes the current values of the
    /// action's preconditions right before the final check.
    pub async fn run_with<T, E, O, OFut, F, Fut>(
        &self,
        request: ActionRequest,
        wait: Duration,
        observe: O,
        action: F,
    ) -> Result<T, RunError<E>>
    where
        O: FnOnce(&ApprovedAction) -> OFut,
        OFut: Future<Output = BTreeMap<String, Value>>,
        F: FnOnce(ApprovedAction) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let grant = match self.propose(request).await? {
            Proposal::Allowed(grant) => grant,
            Proposal::Pending(pending) => match self.wait(&pending, wait).await? {
                Decision::Approved(grant) => grant,
                Decision::StillPending(p) => return Err(RunError::StillPending(p.id)),
                other => return Err(not_approved(pending.id, other)),
            },
            Proposal::Denied { ticket, reason, .. } => {
                return Err(RunError::NotApproved {
                    ticket,
                    state: StateName::Rejected,
                    reason,
                })
            }
            Proposal::Closed { ticket, state } => {
                return Err(RunError::NotApproved {
                    ticket,
                    state,
                    reason: "the ticket for this idempotency key is already closed".into(),
                })
            }
        };
        let observed = observe(grant.action()).await;
        let permit = self.begin(grant, observed).await?;
        let approved = permit.action.clone();
        match action(approved).await {
            Ok(value) => {
                self.finish(
                    permit,
                    ExecutionOutcome::Succeeded {
                        output: Value::Null,
                    },
                )
                .await?;
                Ok(value)
            }
            Err(e) => {
                // The action's own error, cut to the bound the outcome must keep.
                let error = crate::limits::clip_text(&e.to_string(), crate::limits::MAX_ERROR_LEN);
                self.finish(permit, ExecutionOutcome::Failed { error })
                    .await?;
                Err(RunError::Action(e))
            }
        }
    }
}

fn not_approved<E>(ticket: TicketId, decision: Decision) -> RunError<E> {
    let (state, reason) = match decision {
        Decision::Rejected { by, feedback } => {
            (StateName::Rejected, format!("rejected by {by}: {feedback}"))
        }
        Decision::ChangesRequested { by, feedback } => (
            StateName::Rejected,
            format!("changes requested by {by}: {feedback}"),
        ),
        Decision::Denied { reason } => (StateName::Rejected, reason),
        Decision::Expired => (StateName::Expired, "nobody approved in time".into()),
        Decision::Cancelled { reason } => (StateName::Cancelled, reason),
        Decision::Closed(state) => (state, "already closed".into()),
        Decision::Approved(_) | Decision::StillPending(_) => {
            (StateName::Pending, "unexpected decision".into())
        }
    };
    RunError::NotApproved {
        ticket,
        state,
        reason,
    }
}

fn execute_result(
    driven: Result<Driven, DriveError<ExecuteError>>,
) -> Result<Result<Ticket, crate::ticket::Refusal>, ExecuteError> {
    match driven {
        Ok(Driven::Applied { ticket, .. }) => Ok(Ok(ticket)),
        Ok(Driven::Refused(r)) => Ok(Err(r)),
        Err(DriveError::NotFound(id)) => Err(ExecuteError::NotFound(id)),
        Err(DriveError::Pre(e)) => Err(e),
        Err(DriveError::Store(e)) => Err(ExecuteError::Store(e)),
    }
}

pub(crate) fn rejection_reason(by: &RejectedBy) -> String {
    match by {
        RejectedBy::Policy { reason } => reason.clone(),
        RejectedBy::Reviewer { person, feedback } => format!("rejected by {person}: {feedback}"),
        RejectedBy::ChangesRequested { person, feedback } => {
            format!("changes requested by {person}: {feedback}")
        }
        RejectedBy::Frozen { reason } => format!("frozen: {reason}"),
    }
}

/// A UUID v7 for `now` with 74 random bits from the OS.
pub(crate) fn new_ticket_id(now: Timestamp) -> Result<TicketId, StoreError> {
    let mut random = [0u8; 10];
    getrandom::fill(&mut random).map_err(|e| StoreError::Corrupt(format!("random: {e}")))?;
    let ms = u64::try_from(now.as_unix_millis()).unwrap_or(0);
    Ok(TicketId::from_uuid(
        uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid(),
    ))
}

/// A random lease id (122 random bits).
pub(crate) fn new_lease_id() -> Result<LeaseId, StoreError> {
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| StoreError::Corrupt(format!("random: {e}")))?;
    Ok(LeaseId::from_uuid(
        uuid::Builder::from_random_bytes(random).into_uuid(),
    ))
}

impl Handoff {
    pub(crate) async fn wait_for(
        &self,
        id: TicketId,
        timeout: Duration,
    ) -> Result<Decision, WaitError> {
        let inner = &self.inner;
        let give_up = inner.clock.now().saturating_add(timeout);
        let mut watch = inner.waiters.watch(id);
        let mut poll = Duration::from_millis(25);
        loop {
            // The clock is read before the ticket, so the view is never of a time later than
            // the read: a decision committed just before the deadline is never shown expired.
            let now = inner.clock.now();
            let ticket = inner
                .store
                .ticket(id)
                .await?
                .ok_or(WaitError::NotFound(id))?;
            let view = ticket.state_at(now);
            if !matches!(view, TicketState::Pending) {
                // A review deadline or grant end passed without a sweep: record the expiry
                // before answering it. If the ticket moved on meanwhile (a decision, a begin or
                // a cancel committed in time but not yet visible to the read), read it again:
                // an approval that was used must never be answered as lapsed.
                if ticket.state().name() != view.name()
                    && !self.expire(id).await.map_err(WaitError::Store)?
                {
                    continue;
                }
                return Ok(decision_of(&ticket, view, now));
            }
            let deadline = ticket.deadline().unwrap_or(give_up);
            if now >= give_up {
                return Ok(Decision::StillPending(PendingTicket { id, deadline }));
            }
            let wake_at = deadline.min(give_up).min(now.saturating_add(poll));
            first_of(watch.changed(), inner.clock.sleep_until(wake_at)).await;
            poll = (poll * 2).min(inner.limits.max_poll_interval);
        }
    }

    /// Persists what time alone changed on a ticket: a passed review deadline or grant end
    /// (`Expire`), a lapsed execution lease (`LeaseLost`). Returns whether the ticket moved.
    ///
    /// Nothing is written when nothing is due — e.g. the ticket was decided, finished or
    /// swept by someone else between the caller's read and this write — so sweeps and waiters
    /// never leave `refused` records behind.
    pub(crate) async fn expire(&self, id: TicketId) -> Result<bool, StoreError> {
        let _op = crate::failpoint::operation("expire");
        struct NotDue;
        match self
            .inner
            .drive::<NotDue>(id, None, None, |t, now| {
                let now = now.max(t.updated_at());
                match t.state() {
                    TicketState::Executing {
                        lease,
                        lease_expires,
                        ..
                    } if now >= *lease_expires => Ok(Event::LeaseLost { lease: *lease }),
                    state if state.name() != t.state_at(now).name() => Ok(Event::Expire),
                    _ => Err(NotDue),
                }
            })
            .await
        {
            Ok(Driven::Applied { .. }) => Ok(true),
            Ok(Driven::Refused(_)) | Err(DriveError::Pre(NotDue) | DriveError::NotFound(_)) => {
                Ok(false)
            }
            Err(DriveError::Store(e)) => Err(e),
        }
    }

    async fn begin_inner(
        &self,
        requester: &Requester,
        grant: Grant,
        observed: BTreeMap<String, Value>,
    ) -> Result<Permit, ExecuteError> {
        let inner = &self.inner;
        check_observed(grant.action.request(), &observed)?;
        let lease = new_lease_id()?;
        let digest = grant.action.digest;
        let ttl = inner.limits.lease_ttl;
        let mut expires = None;
        let driven = inner
            .drive::<ExecuteError>(grant.ticket, None, None, |t, now| {
                if t.requester() != requester {
                    // Another requester's grant (another agent, or the same agent acting for
                    // another principal): only the proposer may execute, and the audit trail
                    // attributes execution to it. Refuse as if it did not exist.
                    return Err(ExecuteError::NotFound(t.id()));
                }
                let until = now.saturating_add(ttl);
                expires = Some(until);
                // The policy as it is for this attempt: a retry after a lost race judges the
                // action against the policy in force then, not the one read before the first.
                let current = inner.policy.evaluate(grant.action.request());
                Ok(Event::Begin {
                    digest,
                    observed: observed.clone(),
                    current,
                    lease,
                    lease_expires: until,
                })
            })
            .await;
        if let Err(DriveError::Store(StoreError::Frozen { reason, .. })) = &driven {
            let refused = super::freeze::Refused::Event {
                ticket: grant.ticket,
                event: "begin",
                state: StateName::Approved.as_str(),
                decision: None,
            };
            inner.refused_frozen(requester.agent(), refused).await?;
            tracing::info!(refusal = "frozen", "begin refused");
            return Err(ExecuteError::Frozen {
                reason: reason.clone(),
            });
        }
        match execute_result(driven)? {
            Ok(ticket) => match ticket.state() {
                TicketState::Executing {
                    lease: l,
                    lease_expires,
                    ..
                } if *l == lease => {
                    crate::failpoint::failpoint("begin.committed");
                    Ok(Permit {
                        ticket: grant.ticket,
                        lease,
                        lease_expires: *lease_expires,
                        action: grant.action,
                    })
                }
                // A repeated begin with the same lease cannot happen (fresh random lease);
                // anything else means the machine did not start execution.
                _ => Err(ExecuteError::Store(StoreError::Corrupt(format!(
                    "begin left ticket {} in state {} ({:?})",
                    grant.ticket,
                    ticket.state().name(),
                    expires
                )))),
            },
            Err(refusal) => {
                tracing::info!(refusal = %refusal.code(), "begin refused");
                Err(ExecuteError::Refused(refusal))
            }
        }
    }
}

/// The observed values of the preconditions `request` names, within the bounds of values:
/// each as deep as a parameter value may be, all together as large as the parameters.
fn check_observed(
    request: &ActionRequest,
    observed: &BTreeMap<String, Value>,
) -> Result<(), crate::limits::LimitError> {
    let expected = request.preconditions();
    let mut kept = serde_json::Map::new();
    for (name, value) in observed.iter().filter(|(n, _)| expected.contains_key(*n)) {
        crate::limits::check_depth("observed", value)?;
        kept.insert(name.clone(), value.clone());
    }
    let len = crate::action::canonical_json(&Value::Object(kept)).len();
    if len > crate::limits::MAX_VALUE_BYTES {
        return Err(crate::limits::LimitError::ValueTooLarge {
            field: "observed",
            len,
            max: crate::limits::MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

fn decision_of(ticket: &Ticket, view: TicketState, now: Timestamp) -> Decision {
    match view {
        TicketState::Approved(_) => match Grant::of(ticket, now) {
            Some(g) => Decision::Approved(g),
            None => Decision::Expired,
        },
        TicketState::Rejected { by, .. } => match by {
            RejectedBy::Reviewer { person, feedback } => Decision::Rejected {
                by: person,
                feedback,
            },
            RejectedBy::ChangesRequested { person, feedback } => Decision::ChangesRequested {
                by: person,
                feedback,
            },
            other => Decision::Denied {
                reason: rejection_reason(&other),
            },
        },
        TicketState::Expired { stage, .. } => {
            let _ = matches!(stage, ExpiredStage::Grant);
            Decision::Expired
        }
        TicketState::Cancelled { reason, .. } => Decision::Cancelled { reason },
        TicketState::Pending => Decision::StillPending(PendingTicket {
            id: ticket.id(),
            deadline: ticket.deadline().unwrap_or(now),
        }),
        other => Decision::Closed(other.name()),
    }
}
