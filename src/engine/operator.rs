//! The operator side: revoke, resolve, sweeping, health (the kill switch is in `freeze.rs`,
//! the clock rebase in `clock.rs`, audit verification, checkpoints and erasure in `audit.rs`).

use serde::{Deserialize, Serialize};

use super::error::DecideError;
use super::{DriveError, Driven, Handoff};
use crate::audit::Actor;
use crate::backend::{lock, Credential, Freeze, FreezeScope, StoreError, StoreHealth};
use crate::codes;
use crate::id::{AgentId, TicketId};
use crate::ticket::{Event, ExecutionOutcome, Reviewer, Ticket};
use crate::timestamp::Timestamp;

/// Engine health, for probes and dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Store figures (pending, oldest pending, outbox backlog and dead rows, audit size, the
    /// commit floor and the clock alarm, if commits are refused because of the clock).
    pub store: StoreHealth,
    /// Age of the oldest pending ticket, in milliseconds.
    pub oldest_pending_age_ms: Option<u64>,
    /// Whether every agent is frozen (read from the store: every process sees it).
    pub frozen_all: bool,
    /// Agents frozen individually.
    pub frozen_agents: Vec<AgentId>,
    /// The freezes in force, with reasons, since when and by whom.
    pub freezes: Vec<Freeze>,
}

impl Handoff {
    pub(crate) async fn operator(
        &self,
        ticket: Option<TicketId>,
        credential: &Credential,
    ) -> Result<Reviewer, DecideError> {
        let person = self.authenticate(ticket, credential).await?;
        if person.groups.contains(&self.inner.operator_group) {
            return Ok(person);
        }
        let record = self.inner.refusal_record(
            ticket,
            Actor::Reviewer(person.person.clone()),
            codes::NOT_OPERATOR,
            serde_json::Value::Null,
        );
        self.inner.audit_only(vec![record]).await?;
        Err(DecideError::NotOperator {
            person: person.person.to_string(),
        })
    }

    /// Withdraws an approval that has not been used. A reason over
    /// [`MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) is refused with
    /// [`DecideError::Limit`] before anything is written.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn revoke(
        &self,
        ticket: TicketId,
        credential: &Credential,
        reason: &str,
    ) -> Result<Ticket, DecideError> {
        let _op = crate::failpoint::operation("revoke");
        check_reason(reason)?;
        let op = self.operator(Some(ticket), credential).await?;
        let reason = reason.to_owned();
        self.operator_event(ticket, &op, "revoke", |_| Event::Revoke {
            operator: op.person.clone(),
            reason: reason.clone(),
        })
        .await
    }

    /// Records the outcome of a ticket whose execution lease lapsed (`Unknown`), after the
    /// operator found out what happened. An outcome over its bounds
    /// ([`ExecutionOutcome::check`]) is refused with [`DecideError::Limit`] before anything
    /// is written.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn resolve(
        &self,
        ticket: TicketId,
        credential: &Credential,
        outcome: ExecutionOutcome,
    ) -> Result<Ticket, DecideError> {
        let _op = crate::failpoint::operation("resolve");
        outcome.check()?;
        let op = self.operator(Some(ticket), credential).await?;
        self.operator_event(ticket, &op, "resolve", |_| Event::Resolve {
            operator: op.person.clone(),
            outcome: outcome.clone(),
        })
        .await
    }

    /// Cancels any ticket as an operator. A reason over
    /// [`MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) is refused with
    /// [`DecideError::Limit`] before anything is written.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn cancel_as_operator(
        &self,
        ticket: TicketId,
        credential: &Credential,
        reason: &str,
    ) -> Result<Ticket, DecideError> {
        check_reason(reason)?;
        let op = self.operator(Some(ticket), credential).await?;
        let reason = reason.to_owned();
        self.operator_event(ticket, &op, "cancel", |_| Event::Cancel {
            by: Actor::Operator(op.person.clone()),
            reason: reason.clone(),
        })
        .await
    }

    async fn operator_event(
        &self,
        ticket: TicketId,
        op: &Reviewer,
        what: &str,
        event: impl Fn(&Ticket) -> Event,
    ) -> Result<Ticket, DecideError> {
        let driven = self
            .inner
            .drive::<DecideError>(
                ticket,
                Some((Some(op.person.clone()), what.to_owned())),
                None,
                |t, _| Ok(event(t)),
            )
            .await;
        match driven {
            Ok(Driven::Applied { ticket, .. }) => Ok(ticket),
            Ok(Driven::Refused(r)) => Err(DecideError::Refused(r)),
            Err(DriveError::NotFound(id)) => Err(DecideError::NotFound(id)),
            Err(DriveError::Pre(e)) => Err(e),
            Err(DriveError::Store(e)) => Err(DecideError::Store(e)),
        }
    }

    /// Persists every change due by time at or before now: pending tickets past their
    /// deadline expire, unused grants past their validity expire, executions past their lease
    /// become `Unknown`. Returns how many tickets were moved. Drive it yourself, or use
    /// [`spawn_sweeper`](Self::spawn_sweeper).
    ///
    /// It also writes the counts of refusals coalesced in a one-minute window that is over —
    /// unauthenticated ones (see [`Limits::unauthenticated_audit_per_minute`](super::Limits)),
    /// and those of people who have no say on a ticket (see
    /// [`Limits`](super::Limits#coalesced-refusals)) — so a flood that stopped is audited
    /// without waiting for another refusal; and, once the tickets are moved, it makes the
    /// store forget the single-use nonces that expired ([`Store::prune_nonces`](crate::Store)),
    /// so the nonce table does not grow without end.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        const BATCH: usize = 256;
        let now = self.inner.clock.now();
        let mut summaries: Vec<_> = self.inner.flood_summary_due(now).into_iter().collect();
        summaries.extend(self.inner.frozen_summaries_due(now));
        let no_say = lock(&self.inner.no_say).due(now);
        summaries.extend(no_say.iter().cloned());
        if !summaries.is_empty() {
            if let Err(e) = self.inner.audit_only(summaries).await {
                // These counts are written by a later sweep.
                lock(&self.inner.no_say).restore(&no_say);
                return Err(e);
            }
        }
        let moved = self.expire_all(BATCH).await?;
        while self.inner.store.prune_nonces(BATCH).await? == BATCH {}
        Ok(moved)
    }

    /// Moves every ticket due by time, in batches of `batch`.
    async fn expire_all(&self, batch: usize) -> Result<usize, StoreError> {
        let mut moved = 0;
        loop {
            let now = self.inner.clock.now();
            let due = self.inner.store.due(now, batch).await?;
            let n = due.len();
            let mut moved_now = 0;
            for id in due {
                match self.expire(id).await {
                    Ok(true) => moved_now += 1,
                    Ok(false) => {}
                    // One unreadable ticket must not hold back every ticket due after it.
                    Err(StoreError::Corrupt(e)) => {
                        tracing::error!(ticket = %id, error = %e, "sweep skipped an unreadable ticket");
                    }
                    Err(e) => return Err(e),
                }
            }
            moved += moved_now;
            // A full batch may have more behind it; a batch where nothing moved would come
            // back unchanged, so stop rather than spin.
            if n < batch || moved_now == 0 {
                return Ok(moved);
            }
        }
    }

    /// Runs [`expire_due`](Self::expire_due) every `every` on the current tokio runtime until
    /// the returned handle is aborted.
    #[cfg(feature = "tokio")]
    pub fn spawn_sweeper(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.expire_due().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
                let next = this.inner.clock.now().saturating_add(every);
                this.inner.clock.sleep_until(next).await;
            }
        })
    }

    /// Store reachability, backlog and freeze status.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let store = self.inner.store.health().await?;
        let freezes = self.inner.store.freezes().await?;
        let now: Timestamp = self.inner.clock.now();
        Ok(Health {
            oldest_pending_age_ms: store
                .oldest_pending
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            store,
            frozen_all: freezes.iter().any(|f| f.scope == FreezeScope::All),
            frozen_agents: freezes
                .iter()
                .filter_map(|f| match &f.scope {
                    FreezeScope::Agent(a) => Some(a.clone()),
                    FreezeScope::All => None,
                })
                .collect(),
            freezes,
        })
    }
}

/// A cancel, revoke, freeze, clock-rebase or erase reason within [`MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN).
pub(crate) fn check_reason(reason: &str) -> Result<(), crate::limits::LimitError> {
    crate::limits::check_text("reason", reason, crate::limits::MAX_REASON_LEN)
}
