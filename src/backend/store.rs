//! The `Store` port: everything durable goes through it.

use std::error::Error as StdError;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::clock::Clock;
use super::commit_clock::ClockAlarm;
use super::freeze::{Freeze, FreezeChange, FreezeScope};
use crate::action::IdempotencyKey;
use crate::audit::{AuditEvent, AuditRecord, ChainHead, Checkpoint, RawEvent};
use crate::id::{AgentId, GroupName, PersonId, TicketId};
use crate::ticket::{StateName, Ticket};
use crate::timestamp::Timestamp;

/// Durable state: tickets, decisions, the audit chain, the outbox and used nonces.
///
/// One [`commit`](Store::commit) is one atomic write: the ticket (insert, or compare-and-swap
/// on its version), the audit records (chained onto the current head by the store), outbox rows
/// and single-use nonces, freezes set or lifted — all or nothing. Implementations must pass
/// the conformance suite in `tests/common/store_conformance.rs` unchanged.
///
/// **Time.** A store is opened with the `Handoff`'s clock ([`clock`](Store::clock)) and stamps
/// every commit with [`CommitClock`](crate::backend::CommitClock)'s rule: the later of the
/// clock and the latest commit time stored, never backwards; a clock that jumped ahead of its
/// monotonic time, or a stored floor far ahead of the clock, refuses the commit
/// ([`StoreError::ClockJump`], [`StoreError::FloorAhead`]) and shows in
/// [`health`](Store::health), until the clock reads sensibly or a write with
/// [`Write::rebase_clock`] steps the floor onto the clock.
///
/// **Freezes** live in the store, so they hold across restarts and every process sharing it: a
/// write with [`Write::unless_frozen`] is refused whole ([`StoreError::Frozen`]) when a freeze
/// covering that agent is in force *at its commit*, checked inside the committing transaction
/// against the store's own records (never a cache); [`Write::freeze`] sets or lifts one in the
/// same transaction as the write's audit rows; [`freezes`](Store::freezes) lists them.
///
/// Object safe, `Send + Sync`; the facade holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Commits one write atomically, or nothing.
    ///
    /// The store decides the commit time: the later of its clock and every earlier commit (it
    /// never goes backwards). A write whose [`Write::valid_before`] is not after the commit
    /// time is refused with [`StoreError::TooLate`], so deadlines are judged at commit.
    ///
    /// The clock reading is checked first, as [`CommitClock::stamp`] does: a jump refuses the
    /// commit with [`StoreError::ClockJump`], a floor more than the tolerance ahead of the
    /// clock with [`StoreError::FloorAhead`]; neither writes anything nor moves the floor. A
    /// write with [`Write::rebase_clock`] is stamped with the clock's reading as it is
    /// ([`CommitClock::rebase`]) and every later commit, by any process, continues from it.
    ///
    /// Then [`Write::unless_frozen`] is checked against the freezes in force in the same
    /// transaction ([`StoreError::Frozen`]), so a write committed after a freeze's commit is
    /// refused, one committed before it is not.
    ///
    /// [`CommitClock::stamp`]: crate::backend::CommitClock::stamp
    /// [`CommitClock::rebase`]: crate::backend::CommitClock::rebase
    async fn commit(&self, write: Write) -> Result<Committed, StoreError>;

    /// The clock that stamps this store's commits. The `Handoff` builder takes it (or checks
    /// that the engine's clock is the same one, by [`Clock::id`]), so one `Handoff` reads one
    /// clock.
    fn clock(&self) -> std::sync::Arc<dyn Clock>;

    /// The freezes in force, global first, then by agent.
    async fn freezes(&self) -> Result<Vec<Freeze>, StoreError>;

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
    /// with [`StoreError::NonceReused`].
    pub nonces: Vec<NonceUse>,
    /// The write is valid only if committed strictly before this instant (a review deadline,
    /// a grant's end); otherwise [`StoreError::TooLate`] and nothing is written.
    pub valid_before: Option<Timestamp>,
    /// The write is valid only if, when it commits, no freeze covers this agent (a freeze of
    /// every agent, or of this one); otherwise [`StoreError::Frozen`] and nothing is written.
    /// Checked inside the committing transaction against the store's own freeze records. The
    /// engine sets it on what a freeze refuses: proposals, approvals, `begin`.
    pub unless_frozen: Option<AgentId>,
    /// A freeze to set or lift, in the same transaction as the rest of the write (its audit
    /// record): a write guarded by [`unless_frozen`](Self::unless_frozen) commits either
    /// before the freeze or not at all.
    pub freeze: Option<FreezeChange>,
    /// An operator vouched for the clock: commit at its reading even when it jumped or the
    /// stored floor is ahead of it ([`StoreError::ClockJump`], [`StoreError::FloorAhead`]),
    /// stepping the floor back onto the clock.
    pub rebase_clock: bool,
}

impl Write {
    /// Refuses the write if a freeze covers `agent` when it commits
    /// ([`unless_frozen`](Self::unless_frozen)).
    pub fn with_freeze_guard(mut self, agent: AgentId) -> Self {
        self.unless_frozen = Some(agent);
        self
    }

    /// Sets or lifts a freeze with the write ([`freeze`](Self::freeze)).
    pub fn with_freeze_change(mut self, change: FreezeChange) -> Self {
        self.freeze = Some(change);
        self
    }

    /// Commits at the clock's reading, rebasing the floor onto it
    /// ([`rebase_clock`](Self::rebase_clock)).
    pub fn with_clock_rebase(mut self) -> Self {
        self.rebase_clock = true;
        self
    }
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
    /// The latest commit time stored (the floor later commits never go below), if any.
    pub commit_floor: Option<Timestamp>,
    /// Why commits are being refused because of the clock, if they are (see
    /// [`ClockAlarm`]): an alarm for operators.
    pub clock_alarm: Option<ClockAlarm>,
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
    /// A freeze covering the write's [`Write::unless_frozen`] agent was in force when it
    /// would have committed. Nothing was written.
    ///
    /// Code: `frozen`.
    #[error("frozen by an operator: {reason}")]
    Frozen {
        /// The freeze that refused it.
        scope: FreezeScope,
        /// The operator's reason.
        reason: String,
    },
    /// The clock jumped: it read more than the store's tolerance ahead of the last commit's
    /// time plus the monotonic time since ([`ClockAlarm::Jumped`]). Nothing was written and
    /// the floor did not move; retry once the clock is fixed, or have an operator vouch for
    /// it (`Handoff::rebase_clock`).
    ///
    /// Code: `clock_jump`.
    #[error("the clock jumped to {clock} (expected about {expected}): commit refused")]
    ClockJump {
        /// What the clock read.
        clock: Timestamp,
        /// What monotonic time says it should read.
        expected: Timestamp,
    },
    /// The latest commit time stored is more than the store's tolerance ahead of the clock
    /// ([`ClockAlarm::FloorAhead`]): a poisoned floor, or a clock behind. Nothing was written;
    /// an operator rebases the floor (`Handoff::rebase_clock`) or fixes the clock.
    ///
    /// Code: `floor_ahead`.
    #[error("the commit floor {floor} is ahead of the clock {clock}: commit refused")]
    FloorAhead {
        /// The latest commit time stored.
        floor: Timestamp,
        /// What the clock read.
        clock: Timestamp,
    },
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

impl From<ClockAlarm> for StoreError {
    fn from(alarm: ClockAlarm) -> Self {
        match alarm {
            ClockAlarm::Jumped { clock, expected } => StoreError::ClockJump { clock, expected },
            ClockAlarm::FloorAhead { floor, clock } => StoreError::FloorAhead { floor, clock },
        }
    }
}

impl StoreError {
    /// Wraps a backend error, keeping it as the source.
    pub fn backend(e: impl StdError + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
