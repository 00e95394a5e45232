//! [`StoreReader`]: what the facade lets its users do with its store — read it.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::store::{
    DecisionRow, OutboxEntry, Store, StoreError, StoreHealth, TicketFilter, TicketPage,
};
use crate::audit::{AuditEvent, ChainHead, Checkpoint, RawEvent, TextRow};
use crate::id::TicketId;
use crate::ticket::Ticket;

/// Read access to a [`Handoff`](crate::Handoff)'s store, from
/// [`Handoff::store`](crate::Handoff::store).
///
/// Only reads: every change goes through the facade, which runs it through the ticket
/// machine, the policy and the audit chain. A raw [`Store::commit`] could write any ticket
/// state, and claiming or saving through the store directly would bypass the outbox worker and
/// the checkpoint signer, so none of them is here. Cheap to clone.
///
/// ```compile_fail
/// # async fn f(handoff: agent_handoff::Handoff, write: agent_handoff::backend::Write) {
/// handoff.store().commit(write).await; // no raw commit through the facade
/// # }
/// ```
#[derive(Clone)]
pub struct StoreReader {
    store: Arc<dyn Store>,
}

impl StoreReader {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// A ticket by id.
    pub async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.store.ticket(id).await
    }

    /// Tickets matching a filter, newest first, one page at a time.
    pub async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError> {
        self.store.list_tickets(filter).await
    }

    /// The decisions (accepted and refused) recorded for a ticket, oldest first.
    pub async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError> {
        self.store.decisions(ticket).await
    }

    /// Stored audit events with `seq >= from`, in order, at most `limit`, undecoded.
    pub async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        self.store.audit_events(from, limit).await
    }

    /// Audit events of one ticket, in order, with their texts.
    pub async fn ticket_audit(&self, ticket: TicketId) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.ticket_audit(ticket).await
    }

    /// Audit events of one ticket with `seq > after`, in order, at most `limit`, with their
    /// texts.
    pub async fn ticket_audit_page(
        &self,
        ticket: TicketId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.ticket_audit_page(ticket, after, limit).await
    }

    /// The side-table rows of the texts of events `from..=to`.
    pub async fn audit_texts(&self, from: u64, to: u64) -> Result<Vec<TextRow>, StoreError> {
        self.store.audit_texts(from, to).await
    }

    /// The chain head.
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.store.audit_head().await
    }

    /// The newest saved checkpoint.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.store.latest_checkpoint().await
    }

    /// Saved checkpoints of sizes `>= from`, smallest first, at most `limit`.
    pub async fn checkpoints(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        self.store.checkpoints(from, limit).await
    }

    /// Every outbox row of a ticket, in the order they were written.
    pub async fn ticket_outbox(&self, ticket: TicketId) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store.ticket_outbox(ticket).await
    }

    /// The receipt of the newest delivered row of `ticket` on `channel` that has one.
    pub async fn outbox_receipt(
        &self,
        ticket: TicketId,
        channel: &str,
    ) -> Result<Option<Value>, StoreError> {
        self.store.outbox_receipt(ticket, channel).await
    }

    /// Reachability and backlog figures.
    pub async fn health(&self) -> Result<StoreHealth, StoreError> {
        self.store.health().await
    }

    /// The store contract version the store implements.
    pub fn contract_version(&self) -> u32 {
        self.store.contract_version()
    }
}

impl fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreReader").field(&self.store).finish()
    }
}
