//! The `Store` port: everything durable goes through it.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::action::IdempotencyKey;
use crate::audit::{AuditEvent, AuditRecord, ChainHead, Checkpoint, RawEvent};
use crate::id::{AgentId, GroupName, PersonId, TicketId};
use crate::ticket::{StateName, Ticket};
use crate::timestamp::Timestamp;

/// Durable state: tickets, decisions, the audit chain, the outbox and used nonces.
///
/// One [`commit`](Store::commit) is one atomic write: the ticket (insert, or compare-and-swap
/// on its version), the audit records (chained onto the current head by the store), outbox rows
/// and single-use nonces — all or nothing. Implementations must pass the conformance suite in
/// `tests/common/store_conformance.rs` unchanged.
///
/// Object safe, `Send + Sync`; the facade holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Commits one write atomically, or nothing.
    ///
    /// The store decides the commit time: the later of its clock and every earlier commit (it
    /// never goes backwards). A write whose [`Write::valid_before`] is not after the commit
    /// time is refused with [`StoreError::TooLate`], so deadlines are judged at commit.
    async fn commit(&self, write: Write) -> Result<Committed, StoreError>;

    /// A ticket by id.
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError>;

    /// A ticket by its idempotency key, scoped to the proposing agent.
    async fn ticket_by_key(
        &self,
        agent: &AgentId,
        key: &IdempotencyKey,
    ) -> Result<Option<Ticket>, StoreError>;

    /// Tickets matching a filter, newest first, one page at a time.
    async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError>;

    /// The decisions (accepted and refused) recorded for a ticket, oldest first.
    async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError>;

    /// Stored audit events with `seq >= from`, in order, at most `limit`, undecoded (page
    /// through the chain to verify or export it).
    async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError>;

    /// Audit events of one ticket, in order.
    async fn ticket_audit(&self, ticket: TicketId) -> Result<Vec<AuditEvent>, StoreError>;

    /// The chain head ([`ChainHead::GENESIS`] when empty).
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;

    /// Tickets whose state changes by time alone at or before `now`: pending past their
    /// deadline, approved past their grant, executing past their lease. Oldest first.
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError>;

    /// Keeps a signed checkpoint of the chain head.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The newest saved checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Reachability and backlog figures.
    async fn health(&self) -> Result<StoreHealth, StoreError>;

    /// Flushes pending writes and stops accepting new ones. Idempotent.
    async fn shutdown(&self) -> Result<(), StoreError>;

    /// Adds a callback (several may be registered) the store calls after each durable commit
    /// with the ids of the tickets it changed, so same-process waiters wake without polling; it has run by the
    /// time the committing callers are answered. Stores that cannot (or commits made by other
    /// processes) are seen by polling instead. Default: ignored.
    fn on_commit(&self, listener: CommitListener) {
        let _ = listener;
    }
}

/// Called with the ids of the tickets a durable commit changed.
pub type CommitListener = std::sync::Arc<dyn Fn(&[TicketId]) + Send + Sync>;

/// One atomic write.
#[derive(Debug, Clone, Default)]
pub struct Write {
    /// The ticket change, if any.
    pub ticket: Option<TicketWrite>,
    /// The decision to record, if any.
    pub decision: Option<DecisionRow>,
    /// Audit records, chained in this order onto the head at commit.
    pub audit: Vec<AuditRecord>,
    /// Outbox rows to deliver after commit.
    pub outbox: Vec<OutboxRow>,
    /// Single-use nonces consumed by this write; a nonce seen before refuses the whole write
    /// with [`StoreError::NonceReused`].
    pub nonces: Vec<NonceUse>,
    /// The write is valid only if committed strictly before this instant (a review deadline,
    /// a grant's end); otherwise [`StoreError::TooLate`] and nothing is written.
    pub valid_before: Option<Timestamp>,
}

/// Insert a new ticket, or replace one at an expected version.
#[derive(Debug, Clone)]
pub enum TicketWrite {
    /// A new ticket (version 1). Refused with [`StoreError::DuplicateKey`] if the agent already
    /// has a ticket under the same idempotency key.
    Insert(Box<Ticket>),
    /// Compare-and-swap: replace the stored ticket only if its version is `expected_version`
    /// (the new ticket's version must be `expected_version + 1`).
    Update {
        /// The new ticket.
        ticket: Box<Ticket>,
        /// The version the change was computed from.
        expected_version: u64,
    },
}

/// A recorded decision (accepted or refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The ticket.
    pub ticket: TicketId,
    /// The authenticated reviewer, if authentication succeeded.
    pub person: Option<PersonId>,
    /// What was asked: `approve`, `approve_with_edits`, `reject`, `request_changes`, or an
    /// operator action.
    pub verdict: String,
    /// `None` if accepted, else the refusal's name.
    pub refusal: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// A notification to deliver after commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Stable id: channels use it to deduplicate deliveries.
    pub id: Uuid,
    /// The ticket it concerns.
    pub ticket: TicketId,
    /// Which notifier delivers it.
    pub channel: String,
    /// What to deliver.
    pub payload: Value,
    /// Earliest delivery time.
    pub due: Timestamp,
}

/// A nonce consumed by a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NonceUse {
    /// The nonce.
    pub nonce: [u8; 16],
    /// After this it may be forgotten (the token carrying it has expired).
    pub expires: Timestamp,
}

/// What a successful commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The commit time (monotonic across commits of one store).
    pub at: Timestamp,
    /// The chain head after the commit.
    pub head: ChainHead,
}

/// Filters for [`Store::list_tickets`]. All set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketFilter {
    /// Only tickets in one of these states (empty: any).
    pub states: Vec<StateName>,
    /// Only tickets with a review requirement naming this group.
    pub group: Option<GroupName>,
    /// Only tickets proposed by this agent.
    pub agent: Option<AgentId>,
    /// Only tickets created at or after this instant.
    pub created_from: Option<Timestamp>,
    /// Only tickets created before this instant.
    pub created_before: Option<Timestamp>,
    /// Continue after this cursor (from [`TicketPage::next`]).
    pub after: Option<TicketCursor>,
    /// Page size (capped by the store; 0 means the store's default).
    pub limit: usize,
}

/// An opaque position in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketCursor(pub(crate) TicketId);

/// One page of tickets.
#[derive(Debug, Clone)]
pub struct TicketPage {
    /// The tickets, newest first.
    pub tickets: Vec<Ticket>,
    /// Where the next page starts, if there may be one.
    pub next: Option<TicketCursor>,
}

/// Store figures for [`Handoff::health`](crate::Handoff::health).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoreHealth {
    /// Tickets pending review.
    pub pending: u64,
    /// When the oldest pending ticket was created.
    pub oldest_pending: Option<Timestamp>,
    /// Outbox rows waiting for delivery.
    pub outbox_backlog: u64,
    /// Outbox rows that gave up.
    pub outbox_dead: u64,
    /// Number of audit events.
    pub audit_events: u64,
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-swap lost: the ticket changed since it was read.
    #[error("ticket {ticket} changed concurrently (expected version {expected})")]
    VersionConflict {
        /// The ticket.
        ticket: TicketId,
        /// The version the write expected.
        expected: u64,
    },
    /// The agent already has a ticket under this idempotency key.
    #[error("idempotency key already used by ticket {existing}")]
    DuplicateKey {
        /// The existing ticket.
        existing: TicketId,
    },
    /// A nonce in the write was used before.
    #[error("nonce already used")]
    NonceReused,
    /// The write's deadline passed before it could be committed.
    #[error("commit at {at} is not before the write's limit {limit}")]
    TooLate {
        /// The commit time.
        at: Timestamp,
        /// The limit.
        limit: Timestamp,
    },
    /// An update named a ticket that does not exist.
    #[error("ticket {0} not found")]
    NotFound(TicketId),
    /// The store was shut down.
    #[error("store is shut down")]
    Closed,
    /// The database schema is newer than this code understands.
    #[error("database schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Found in the database.
        found: i64,
        /// Understood by this code.
        supported: i64,
    },
    /// The write itself is malformed (a new ticket not at version 1, an update that does not
    /// write the next version): a bug in the caller. Nothing was written.
    #[error("invalid write: {0}")]
    InvalidWrite(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, SQL, connection).
    #[error("store backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

impl StoreError {
    /// Wraps a backend error, keeping it as the source.
    pub fn backend(e: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
