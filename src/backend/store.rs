//! The `Store` port: everything durable goes through it.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::action::{IdempotencyKey, Requester};
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
/// What a store must do besides, each enforced by that suite:
///
/// - **Idempotency scope.** One ticket per (requester, idempotency key), where the requester is
///   the agent *and* the principal it acts for, "no principal" being a value of its own (two
///   proposals of one key without a principal are one ticket: a `UNIQUE` index over a `NULL`
///   column would let both in). [`StoreError::DuplicateKey`] names the ticket of the same
///   requester only; a key used by another requester is no conflict.
/// - **Rebase.** A write carrying a [`Rebase`] whose [`TicketWrite::Update`] finds the ticket
///   at another version is recomputed on the ticket as committed (see [`Write::rebase`]), so
///   writes that commute (reviewers' votes) never lose a compare-and-swap to each other.
/// - **Nonces.** A write is refused with [`StoreError::TooLate`] when committed at or after
///   the expiry of any nonce it consumes, so a nonce past its expiry can never be consumed
///   again and [`prune_nonces`](Store::prune_nonces) may forget it.
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

    /// A ticket by its idempotency key, scoped to the whole requester: the proposing agent and
    /// the principal it acts for (`None` is a principal of its own, not a wildcard). Another
    /// requester's ticket under the same key is never returned.
    async fn ticket_by_key(
        &self,
        requester: &Requester,
        key: &IdempotencyKey,
    ) -> Result<Option<Ticket>, StoreError>;

    /// Tickets matching a filter, newest first, one page at a time.
    async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError>;

    /// The decisions (accepted and refused) recorded for a ticket, oldest first.
    async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError>;

    /// Stored audit events with `seq >= from`, in order, at most `limit`, undecoded (page
    /// through the chain to verify or export it).
    ///
    /// A store that files events under index columns (ticket, kind, time) kept beside the
    /// hashed bytes must check them against the bytes and answer
    /// [`StoreError::MisfiledAuditEvent`] for the first page row that disagrees, so that an
    /// edited column cannot move an event between tickets' histories unnoticed.
    async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError>;

    /// Audit events of one ticket, in order. Every event returned names this ticket in its
    /// hashed bytes ([`StoreError::MisfiledAuditEvent`] otherwise).
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

    /// Claims outbox rows that are due: status pending, `due <= now`, oldest due first, at
    /// most `limit`. A row is not claimable while an earlier row (by insertion order) of the
    /// same ticket and channel is still pending, so a channel sees a ticket's deliveries in
    /// order (the card is posted before it is closed).
    ///
    /// Claiming moves each row's due time to `now + lease` in the same transaction, so a
    /// second worker does not claim it while the first delivers, and a worker that crashed
    /// mid-delivery leaves it to be claimed again once the lease ends. Nothing else changes:
    /// the outcome is recorded with an [`OutboxUpdate`] in a [`Write`], guarded by the
    /// attempts count returned here.
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Every outbox row of a ticket, in the order they were written.
    async fn ticket_outbox(&self, ticket: TicketId) -> Result<Vec<OutboxEntry>, StoreError>;

    /// The receipt of the newest delivered row of `ticket` on `channel` that has one (the
    /// posted card a later update or close should edit).
    async fn outbox_receipt(
        &self,
        ticket: TicketId,
        channel: &str,
    ) -> Result<Option<Value>, StoreError>;

    /// Forgets at most `limit` consumed nonces whose expiry is at or before the store's commit
    /// time (the later of its clock and every earlier commit), and answers how many it forgot.
    ///
    /// Safe by construction: a write consuming a nonce is refused at or after that nonce's
    /// expiry (see [`Write::nonces`]), so a forgotten nonce can never be consumed again. The
    /// engine's sweep ([`Handoff::expire_due`](crate::Handoff::expire_due)) calls it until it
    /// answers fewer than `limit`; without it the nonce table only grows.
    async fn prune_nonces(&self, limit: usize) -> Result<usize, StoreError>;

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
    /// Outcomes of delivery attempts on existing outbox rows. Each is applied only if the row
    /// is still pending with the attempts count it was claimed with; otherwise the whole write
    /// is refused with [`StoreError::OutboxConflict`] (another worker recorded it first).
    pub outbox_updates: Vec<OutboxUpdate>,
    /// Single-use nonces consumed by this write; a nonce seen before refuses the whole write
    /// with [`StoreError::NonceReused`]. Each nonce also limits the write like
    /// [`valid_before`](Self::valid_before): committed at or after a nonce's
    /// [`expires`](NonceUse::expires), the write is [`StoreError::TooLate`] (the store may have
    /// forgotten the nonce by then, see [`Store::prune_nonces`]).
    pub nonces: Vec<NonceUse>,
    /// The write is valid only if committed strictly before this instant (a review deadline,
    /// a grant's end); otherwise [`StoreError::TooLate`] and nothing is written.
    pub valid_before: Option<Timestamp>,
    /// How to recompute this write if its [`TicketWrite::Update`] would lose the
    /// compare-and-swap: the store calls it, inside the transaction, with the ticket as
    /// committed (by earlier commits, and by the writes of its batch applied before this one)
    /// and the commit time, and applies the write it returns in place of this one — limits,
    /// nonces and all, keeping this rebase. `None` from it: [`StoreError::VersionConflict`] as
    /// without a rebase. A rebase is only called when the stored version differs from the
    /// expected one, and may be called more than once for one commit (the last call is the one
    /// applied).
    ///
    /// For changes that commute with whatever got there first — reviewers' votes, which the
    /// engine recomputes with the ticket machine — like a key-value store's merge operator.
    pub rebase: Option<Rebase>,
}

impl Write {
    /// Sets [`rebase`](Self::rebase).
    pub fn with_rebase(mut self, rebase: Rebase) -> Self {
        self.rebase = Some(rebase);
        self
    }
}

/// The function of a [`Write::rebase`]: the ticket as committed and the commit time in, the
/// write to apply instead (or `None`: refuse with [`StoreError::VersionConflict`]) out.
type RebaseFn = dyn Fn(&Ticket, Timestamp) -> Option<Write> + Send + Sync;

/// Recomputes a write on the ticket as committed (see [`Write::rebase`]). Cheap to clone.
///
/// The function runs on the store's writing thread or inside its transaction: it must be a
/// quick, pure computation and must never call the store.
#[derive(Clone)]
pub struct Rebase(Arc<RebaseFn>);

impl Rebase {
    /// A rebase computed by `f`.
    pub fn new(f: impl Fn(&Ticket, Timestamp) -> Option<Write> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The write to apply instead, on `current` committed at `at`.
    pub fn apply(&self, current: &Ticket, at: Timestamp) -> Option<Write> {
        (self.0)(current, at)
    }
}

impl fmt::Debug for Rebase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rebase(..)")
    }
}

/// Insert a new ticket, or replace one at an expected version.
#[derive(Debug, Clone)]
pub enum TicketWrite {
    /// A new ticket (version 1). Refused with [`StoreError::DuplicateKey`] if its requester
    /// (agent and principal, see [`Store`]) already has a ticket under the same idempotency
    /// key.
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

/// Where an outbox row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Accepted by the channel.
    Delivered,
    /// Given up: retries exhausted, or a failure retrying cannot fix.
    Dead,
}

impl OutboxStatus {
    /// The stored name (`pending`, `delivered`, `dead`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Dead => "dead",
        }
    }
}

/// A stored outbox row with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The row as written (`due` is the current due time: a claim moves it to the lease end).
    pub row: OutboxRow,
    /// Where it stands.
    pub status: OutboxStatus,
    /// Failed attempts recorded so far.
    pub attempts: u32,
    /// The channel's receipt, once delivered.
    pub receipt: Option<Value>,
    /// The last failure, if any (no secrets: notifiers keep them out of their errors).
    pub last_error: Option<String>,
}

/// The outcome of one delivery attempt, recorded on an outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxUpdate {
    /// The row.
    pub id: Uuid,
    /// The row's [`OutboxEntry::attempts`] when it was claimed: the update applies only if it
    /// is unchanged and the row still pending.
    pub attempts: u32,
    /// What happened.
    pub outcome: OutboxOutcome,
}

/// What a delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    /// The channel accepted it: status `delivered`, receipt kept.
    Delivered {
        /// The channel's receipt (a serialised `DeliveryReceipt`).
        receipt: Value,
    },
    /// A failure worth retrying: attempts + 1, next attempt at `due`.
    Retry {
        /// When to try again.
        due: Timestamp,
        /// What went wrong.
        error: String,
    },
    /// Given up: attempts + 1, status `dead` (counted in [`StoreHealth::outbox_dead`]).
    Dead {
        /// What went wrong.
        error: String,
    },
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
    /// Consumed nonces still remembered (pruned once expired, see [`Store::prune_nonces`]).
    pub nonces: u64,
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
    /// The requester (agent and principal) already has a ticket under this idempotency key.
    #[error("idempotency key already used by ticket {existing}")]
    DuplicateKey {
        /// The existing ticket, of the same requester.
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
    /// An outbox update found its row no longer pending at the attempts count it was claimed
    /// with: another worker recorded an outcome first. Nothing of the write was recorded.
    #[error("outbox row {id} was updated concurrently")]
    OutboxConflict {
        /// The row.
        id: Uuid,
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
    /// An audit event's index columns (ticket, kind, time) disagree with its hashed bytes:
    /// someone edited them, which would move the event between tickets' histories. Reported by
    /// [`Store::audit_events`] and [`Store::ticket_audit`].
    #[error(
        "audit event {seq} is stored under another ticket, kind or time than its contents name"
    )]
    MisfiledAuditEvent {
        /// The event's sequence number.
        seq: u64,
    },
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
