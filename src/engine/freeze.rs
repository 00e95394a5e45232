//! The kill switch: freezing and unfreezing (one write with its audit row), which writes a
//! freeze refuses, and the refusals' audit rows, coalesced per agent.
//!
//! A freeze lives in the store and is checked by the store inside each guarded write's
//! transaction ([`Write::unless_frozen`]): proposals, approvals (plain and with edits) and
//! `begin` commit either before the freeze's own write or not at all, in every process sharing
//! the store. Rejections, change requests, cancels, revokes, renewals, finishes, expiries and
//! resolutions are never guarded, so outcomes are never lost and nothing is pushed into
//! `Unknown`.

use serde_json::json;

use super::coalesce::Admit;

use super::error::DecideError;
use super::{Handoff, Inner};
use crate::audit::{Actor, AuditRecord};
use crate::backend::{lock, Credential, DecisionRow, FreezeChange, FreezeScope, StoreError, Write};
use crate::codes;
use crate::id::{AgentId, PersonId, TicketId};
use crate::ticket::{Event, Ticket, Verdict};
use crate::timestamp::Timestamp;

/// The agent whose freeze refuses this event on this ticket, if a freeze refuses it at all:
/// approvals (plain and with edits) and `begin`. Set as the accepted write's
/// [`Write::unless_frozen`].
pub(crate) fn guard(event: &Event, ticket: &Ticket) -> Option<AgentId> {
    match event {
        Event::Vote {
            verdict: Verdict::Approve,
            ..
        }
        | Event::Edit { .. }
        | Event::Begin { .. } => Some(ticket.requester().agent().clone()),
        _ => None,
    }
}

impl Handoff {
    /// Kill switch: from the commit of this call on, proposals, approvals (plain and with
    /// edits) and `begin` of the agents in `scope` are refused ([`ProposeError::Frozen`],
    /// [`DecideError::Frozen`], [`ExecuteError::Frozen`], [`LinkError::Frozen`]) and
    /// audited, until [`unfreeze`](Self::unfreeze). Rejections, change requests, cancels,
    /// revokes, renewals, finishes and resolutions go on.
    ///
    /// The freeze is held in the store and set in the same write as its audit row: it holds
    /// across restarts and for every process sharing the store, and an operation racing it
    /// either commits before it or is refused.
    ///
    /// [`ProposeError::Frozen`]: crate::ProposeError::Frozen
    /// [`ExecuteError::Frozen`]: crate::ExecuteError::Frozen
    /// [`LinkError::Frozen`]: crate::LinkError::Frozen
    #[tracing::instrument(level = "info", skip_all, fields(scope = ?scope))]
    pub async fn freeze(
        &self,
        credential: &Credential,
        scope: FreezeScope,
        reason: &str,
    ) -> Result<(), DecideError> {
        super::operator::check_reason(reason)?;
        let op = self.operator(None, credential).await?;
        let change = FreezeChange::set(scope.clone(), reason, Some(op.person.clone()));
        self.record_freeze(&op.person, change, &scope, Some(reason))
            .await
    }

    /// Lifts a freeze (from the commit of this call on; nothing if `scope` is not frozen).
    #[tracing::instrument(level = "info", skip_all, fields(scope = ?scope))]
    pub async fn unfreeze(
        &self,
        credential: &Credential,
        scope: FreezeScope,
    ) -> Result<(), DecideError> {
        let op = self.operator(None, credential).await?;
        let change = FreezeChange::lift(scope.clone());
        self.record_freeze(&op.person, change, &scope, None).await
    }

    async fn record_freeze(
        &self,
        operator: &PersonId,
        change: FreezeChange,
        scope: &FreezeScope,
        reason: Option<&str>,
    ) -> Result<(), DecideError> {
        // The reason is a text beside the chain (bounded, erasable), committed in the event.
        let record = AuditRecord::new(
            None,
            self.inner.clock.now(),
            if reason.is_some() {
                crate::audit::kind::FROZEN
            } else {
                crate::audit::kind::UNFROZEN
            },
            Actor::Operator(operator.clone()),
            json!({ "scope": scope, "reason": serde_json::Value::Null }),
        );
        let record = match reason {
            Some(reason) => record.with_text("reason", reason),
            None => record,
        };
        let write = Write::default()
            .with_freeze_change(change)
            .with_audit(record);
        self.inner.commit(write).await?;
        Ok(())
    }
}

/// What a frozen refusal concerns, for its audit row.
pub(crate) enum Refused<'a> {
    /// A proposal (no ticket was made).
    Proposal {
        kind: &'a str,
        idempotency_key: &'a str,
        digest: String,
    },
    /// An event on a ticket: an approval (`vote`, `edit`, with the reviewer's decision row)
    /// or `begin`.
    Event {
        ticket: TicketId,
        event: &'static str,
        /// The state the machine accepted the event in.
        state: &'static str,
        /// The reviewer and their verdict, for approvals.
        decision: Option<(&'a PersonId, &'a str)>,
    },
}

impl Inner {
    /// Audits a refusal by a freeze of `agent`'s actions: one row each up to
    /// [`Limits::frozen_audit_per_minute`](super::Limits) per agent, then counted and written
    /// as one summary row, so a frozen agent looping on proposals cannot fill the disk.
    pub(crate) async fn refused_frozen(
        &self,
        agent: &AgentId,
        what: Refused<'_>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let limit = self.limits.frozen_audit_per_minute;
        let summary = {
            let mut flood = lock(&self.frozen);
            match flood.admit(agent, now, limit) {
                Admit::Count => return Ok(()),
                Admit::Write { suppressed } => suppressed,
            }
        };
        let mut write = Write::default();
        if let Some((count, since)) = summary {
            write.audit.push(summary_record(agent, count, since, now));
        }
        match what {
            Refused::Proposal {
                kind,
                idempotency_key,
                digest,
            } => write.audit.push(self.refusal_record(
                None,
                Actor::Agent(agent.clone()),
                codes::FROZEN,
                // The freeze's reason is its `frozen` event's text, not copied here.
                json!({
                    "kind": kind,
                    "idempotency_key": idempotency_key,
                    "digest": digest,
                }),
            )),
            Refused::Event {
                ticket,
                event,
                state,
                decision,
            } => {
                let actor = match decision {
                    Some((person, _)) => Actor::Reviewer(person.clone()),
                    None => Actor::Agent(agent.clone()),
                };
                // The shape of the ticket machine's refusals.
                write.audit.push(AuditRecord::new(
                    Some(ticket),
                    now,
                    crate::audit::kind::REFUSED,
                    actor,
                    json!({
                        "event": event,
                        "refusal": codes::FROZEN.as_str(),
                        "message": "frozen by an operator",
                        "state": state,
                    }),
                ));
                write.decision = decision.map(|(person, verdict)| DecisionRow {
                    ticket,
                    person: Some(person.clone()),
                    verdict: verdict.to_owned(),
                    refusal: Some(codes::FROZEN.as_str().to_owned()),
                    at: now,
                });
            }
        }
        self.store.commit(write).await.map(|_| ())
    }

    /// The summary rows of frozen refusals counted but not written, for agents whose window
    /// is over at `now` (written by the sweep, so a flood that stopped is still audited).
    pub(crate) fn frozen_summaries_due(&self, now: Timestamp) -> Vec<AuditRecord> {
        lock(&self.frozen)
            .due(now)
            .into_iter()
            .map(|(agent, count, since)| summary_record(&agent, count, since, now))
            .collect()
    }
}

fn summary_record(agent: &AgentId, count: u64, since: Timestamp, now: Timestamp) -> AuditRecord {
    AuditRecord::new(
        None,
        now,
        crate::audit::kind::REFUSED,
        Actor::Agent(agent.clone()),
        json!({
            "refusal": codes::FROZEN.as_str(),
            "detail": { "coalesced": count, "since": since.as_unix_millis() },
        }),
    )
}
