//! The operator side: revoke, resolve, sweeping, audit verification, health (the kill switch
//! is in `freeze.rs`, the clock rebase in `clock.rs`).

use std::future::Future as _;
use std::task::Poll;

use serde::{Deserialize, Serialize};

use super::error::{AuditError, DecideError};
use super::{DriveError, Driven, Handoff};
use crate::audit::{Actor, ChainHead, Checkpoint, RawEvent, Verifier, VerifyError};
use crate::backend::{Credential, Freeze, FreezeScope, StoreError, StoreHealth};
use crate::codes;
use crate::id::{AgentId, TicketId};
use crate::ticket::{Event, ExecutionOutcome, Reviewer, Ticket};
use crate::timestamp::Timestamp;

/// The result of verifying the audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Events verified.
    pub events: u64,
    /// The head after the last event.
    pub head: ChainHead,
    /// Size of the newest saved checkpoint that the chain was checked against, if any.
    pub checkpoint_size: Option<u64>,
}

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

/// Audit page size when streaming the chain.
const PAGE: usize = 4096;

impl Handoff {
    pub(super) async fn operator(
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

    /// Withdraws an approval that has not been used.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn revoke(
        &self,
        ticket: TicketId,
        credential: &Credential,
        reason: &str,
    ) -> Result<Ticket, DecideError> {
        let _op = crate::failpoint::operation("revoke");
        let op = self.operator(Some(ticket), credential).await?;
        let reason = reason.to_owned();
        self.operator_event(ticket, &op, "revoke", |_| Event::Revoke {
            operator: op.person.clone(),
            reason: reason.clone(),
        })
        .await
    }

    /// Records the outcome of a ticket whose execution lease lapsed (`Unknown`), after the
    /// operator found out what happened.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn resolve(
        &self,
        ticket: TicketId,
        credential: &Credential,
        outcome: ExecutionOutcome,
    ) -> Result<Ticket, DecideError> {
        let _op = crate::failpoint::operation("resolve");
        let op = self.operator(Some(ticket), credential).await?;
        self.operator_event(ticket, &op, "resolve", |_| Event::Resolve {
            operator: op.person.clone(),
            outcome: outcome.clone(),
        })
        .await
    }

    /// Cancels any ticket as an operator.
    #[tracing::instrument(level = "info", skip_all, fields(ticket = %ticket))]
    pub async fn cancel_as_operator(
        &self,
        ticket: TicketId,
        credential: &Credential,
        reason: &str,
    ) -> Result<Ticket, DecideError> {
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
    /// It also writes the count of unauthenticated refusals coalesced in a one-minute window
    /// that is over (see [`Limits::unauthenticated_audit_per_minute`](super::Limits)), so a
    /// flood that stopped is audited without waiting for another refusal.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn expire_due(&self) -> Result<usize, StoreError> {
        const BATCH: usize = 256;
        if let Some(summary) = self.inner.flood_summary_due(self.inner.clock.now()) {
            self.inner.audit_only(vec![summary]).await?;
        }
        let frozen = self.inner.frozen_summaries_due(self.inner.clock.now());
        if !frozen.is_empty() {
            self.inner.audit_only(frozen).await?;
        }
        let mut moved = 0;
        loop {
            let now = self.inner.clock.now();
            let due = self.inner.store.due(now, BATCH).await?;
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
            if n < BATCH || moved_now == 0 {
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

    /// Verifies the whole audit chain from the store, page by page in constant memory. If a
    /// checkpoint was saved, its signature is checked with the configured key and the chain must
    /// pass through its head: a truncated or rewritten chain is refused.
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn verify_audit(&self) -> Result<AuditReport, AuditError> {
        let mut verifier = Verifier::new();
        let mut checkpoint_size = None;
        if let Some(cp) = self.inner.store.latest_checkpoint().await? {
            let key = self
                .inner
                .checkpoint_key
                .as_ref()
                .ok_or(AuditError::NoCheckpointKey)?;
            let head = cp.verify(std::slice::from_ref(key))?;
            checkpoint_size = Some(head.seq);
            verifier = verifier.expect_head(head);
        }
        // One page is read while the one before it is hashed: the store's read of the next
        // page starts on its own thread before this one's verification runs.
        let mut from = 1;
        let mut page = self.inner.store.audit_events(from, PAGE).await;
        loop {
            let events = match page {
                Ok(events) => events,
                Err(StoreError::MisfiledAuditEvent { seq }) => {
                    // The events stored before it may hold an earlier break: check them first.
                    for event in &self.events_before(from, seq).await? {
                        verifier.push(event)?;
                    }
                    return Err(VerifyError::Misfiled { seq }.into());
                }
                Err(e) => return Err(e.into()),
            };
            let more = events.len() == PAGE;
            let next_from = events.last().map_or(from, |e| e.seq + 1);
            let mut next = more.then(|| Box::pin(self.inner.store.audit_events(next_from, PAGE)));
            let mut early = None;
            if let Some(next) = next.as_mut() {
                // Polled once, so the read is on its way while this page is verified.
                early = match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                };
            }
            for event in &events {
                verifier.push(event)?;
            }
            let Some(next) = next else { break };
            page = match early {
                Some(result) => result,
                None => next.await,
            };
            from = next_from;
        }
        let summary = verifier.finish()?;
        Ok(AuditReport {
            events: summary.count,
            head: summary.head,
            checkpoint_size,
        })
    }

    /// The stored events from `from` up to (not including) the misfiled event `misfiled`: the
    /// longest page from `from` that the store answers without reaching it. Rows may be missing
    /// (a deleted event), so the count is found by bisection, not by subtracting seqs.
    async fn events_before(&self, from: u64, misfiled: u64) -> Result<Vec<RawEvent>, StoreError> {
        let (mut ok, mut bad) = (
            Vec::new(),
            usize::try_from(misfiled - from).unwrap_or(PAGE) + 1,
        );
        let mut lo = 0;
        while lo + 1 < bad {
            let mid = lo + (bad - lo) / 2;
            match self.inner.store.audit_events(from, mid).await {
                Ok(page) => {
                    lo = mid;
                    ok = page;
                }
                Err(StoreError::MisfiledAuditEvent { .. }) => bad = mid,
                Err(e) => return Err(e),
            }
        }
        Ok(ok)
    }

    /// Signs the current chain head with the checkpoint key and saves it in the store.
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let key = self
            .inner
            .checkpoint_key
            .as_ref()
            .ok_or(AuditError::NoCheckpointKey)?;
        let head = self.inner.store.audit_head().await?;
        let cp = Checkpoint::sign(&self.inner.origin, head, key)?;
        self.inner.store.save_checkpoint(&cp).await?;
        Ok(cp)
    }

    /// Store reachability, backlog, clock alarm and freezes (as the store holds them).
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
