//! The `Store` port: everything durable goes through it.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::clock::Clock;
use super::commit_clock::ClockAlarm;
use super::freeze::{Freeze, FreezeChange, FreezeScope};
use crate::action::{IdempotencyKey, Requester};
use crate::audit::{AuditEvent, AuditRecord, ChainHead, Checkpoint, RawEvent, TextRef, TextRow};
use crate::codes::{self, Code};
use crate::id::{AgentId, GroupName, PersonId, TicketId};
use crate::ticket::{StateName, Ticket};
use crate::timestamp::Timestamp;

/// Durable state: tickets, decisions, the audit chain with the texts kept beside it, signed
/// checkpoints, the outbox and used nonces.
///
/// One [`commit`](Store::commit) is one atomic write: the ticket (insert, or compare-and-swap
/// on its version), the audit records (chained onto the current head by the store) with their
/// texts, erasures of texts, outbox rows and single-use nonces, freezes set or lifted — all or
/// nothing. Implementations must pass the store conformance suite unchanged (see below).
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
/// **Texts beside the chain.** An audit record's [`texts`](AuditRecord::texts) (free text and values, see
/// [`AuditText`](crate::audit::AuditText)) never enter the hashed bytes: the record's data
/// holds their salted commitments. A store keeps each text in a side table beside its event —
/// name, value (its JSON text), salt — in the same transaction as the event, after checking
/// the record with [`AuditRecord::check_texts`] (a record whose texts are not sealed, or do
/// not open the commitments its data holds, refuses the whole write with
/// [`StoreError::InvalidWrite`]). Reads of events that decode them (`ticket_audit_page`,
/// `ticket_audit`) attach the texts with [`AuditEvent::decode_with_texts`]; `audit_texts`
/// lists the rows by event. An erasure ([`Write::erase`]) drops a text's value and salt and
/// records which event erased it; the chain is never touched, so it still verifies.
///
/// **Idempotency scope.** One ticket per (requester, idempotency key), where the requester is
/// the agent *and* the principal it acts for, "no principal" being a value of its own (two
/// proposals of one key without a principal are one ticket: a `UNIQUE` index over a `NULL`
/// column would let both in). [`StoreError::DuplicateKey`] names the ticket of the same
/// requester only; a key used by another requester is no conflict.
///
/// **Rebase.** A write carrying a [`Rebase`] whose [`TicketWrite::Update`] finds the ticket at
/// another version is recomputed on the ticket as committed (see [`Write::rebase`]), so writes
/// that commute (reviewers' votes) never lose a compare-and-swap to each other.
///
/// **Nonces.** A write is refused with [`StoreError::TooLate`] when committed at or after the
/// expiry of any nonce it consumes, so a nonce past its expiry can never be consumed again and
/// [`prune_nonces`](Store::prune_nonces) may forget it. Because an operator may step the
/// commit floor back ([`Write::rebase_clock`]), a store that forgot nonces also refuses, as
/// `TooLate`, a write consuming a nonce that expired at or before the latest expiry it forgot
/// (a horizon that never goes back).
///
/// Object safe, `Send + Sync`; the facade holds an `Arc<dyn Store>`.
///
/// # The conformance suite
///
/// The contract is written once as a test suite, public behind the `conformance` feature
/// (module `agent_handoff::conformance`): one rule per obligation, each reported by name when
/// a store breaks it. The bundled SQLite store runs it unchanged, on a file and in memory; a
/// store of yours runs it from its tests — with `store_conformance!(name, harness)` (one
/// `#[test]` per rule), or with `conformance::run` as here, where an integrator's store (one
/// that counts its commits and keeps its data in SQLite) passes the whole suite:
///
#[cfg_attr(all(feature = "conformance", feature = "sqlite"), doc = "```")]
#[cfg_attr(
    not(all(feature = "conformance", feature = "sqlite")),
    doc = "```ignore"
)]
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// use agent_handoff::backend::{Committed, Write};
/// use agent_handoff::conformance::{self, Env, Harness};
/// use agent_handoff::{Clock, SqliteOptions, SqliteStore, Store, StoreError};
/// # use agent_handoff::audit::{AuditEvent, ChainHead, Checkpoint, RawEvent, TextRow};
/// # use agent_handoff::backend::{
/// #     CommitListener, DecisionRow, Freeze, OutboxEntry, StoreHealth, TicketFilter, TicketPage,
/// # };
/// # use agent_handoff::action::{IdempotencyKey, Requester};
/// # use agent_handoff::ticket::Ticket;
/// # use agent_handoff::{TicketId, Timestamp};
///
/// #[derive(Debug)]
/// struct CountingStore {
///     inner: SqliteStore,
///     commits: AtomicU64,
/// }
///
/// #[async_trait::async_trait]
/// impl Store for CountingStore {
///     fn contract_version(&self) -> u32 {
///         4 // the contract this store was written and tested against, as a literal
///     }
///
///     async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
///         let committed = self.inner.commit(write).await?;
///         self.commits.fetch_add(1, Ordering::Relaxed);
///         Ok(committed)
///     }
///
///     fn clock(&self) -> Arc<dyn Clock> {
///         self.inner.clock()
///     }
///
///     // … every other method, delegating to `inner` …
/// #   async fn freezes(&self) -> Result<Vec<Freeze>, StoreError> { self.inner.freezes().await }
/// #   async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> { self.inner.ticket(id).await }
/// #   async fn ticket_by_key(&self, requester: &Requester, key: &IdempotencyKey) -> Result<Option<Ticket>, StoreError> { self.inner.ticket_by_key(requester, key).await }
/// #   async fn prune_nonces(&self, limit: usize) -> Result<usize, StoreError> { self.inner.prune_nonces(limit).await }
/// #   async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError> { self.inner.list_tickets(filter).await }
/// #   async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError> { self.inner.decisions(ticket).await }
/// #   async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> { self.inner.audit_events(from, limit).await }
/// #   async fn ticket_audit_page(&self, ticket: TicketId, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> { self.inner.ticket_audit_page(ticket, after, limit).await }
/// #   async fn audit_texts(&self, from: u64, to: u64) -> Result<Vec<TextRow>, StoreError> { self.inner.audit_texts(from, to).await }
/// #   async fn audit_head(&self) -> Result<ChainHead, StoreError> { self.inner.audit_head().await }
/// #   async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError> { self.inner.due(now, limit).await }
/// #   async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> { self.inner.save_checkpoint(checkpoint).await }
/// #   async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> { self.inner.latest_checkpoint().await }
/// #   async fn checkpoints(&self, from: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreError> { self.inner.checkpoints(from, limit).await }
/// #   async fn claim_outbox(&self, now: Timestamp, lease: std::time::Duration, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> { self.inner.claim_outbox(now, lease, limit).await }
/// #   async fn ticket_outbox(&self, ticket: TicketId) -> Result<Vec<OutboxEntry>, StoreError> { self.inner.ticket_outbox(ticket).await }
/// #   async fn outbox_receipt(&self, ticket: TicketId, channel: &str) -> Result<Option<serde_json::Value>, StoreError> { self.inner.outbox_receipt(ticket, channel).await }
/// #   async fn health(&self) -> Result<StoreHealth, StoreError> { self.inner.health().await }
/// #   async fn shutdown(&self) -> Result<(), StoreError> { self.inner.shutdown().await }
/// #   fn on_commit(&self, listener: CommitListener) { self.inner.on_commit(listener) }
/// }
///
/// // How the suite opens the store: in the `Env` of each rule, stamping commits with its
/// // clock; opening the same `Env` again reopens the same data.
/// let harness = Harness::new(|env: Env| async move {
///     let options = SqliteOptions::new().with_clock(env.clock());
///     CountingStore {
///         inner: SqliteStore::open_with(env.path("store.sqlite3"), options).await.unwrap(),
///         commits: AtomicU64::new(0),
///     }
/// })
/// .durable()
/// .with_commit_listeners();
///
/// let runtime = tokio::runtime::Builder::new_multi_thread().enable_time().build()?;
/// let report = runtime.block_on(conformance::run(&harness));
/// report.assert_passed();
/// assert!(report.failed().is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Every object in a [`Write`] this store does not know how to apply must refuse the whole
/// write with [`StoreError::InvalidWrite`] (the parts are `#[non_exhaustive]`: match them with
/// a refusing wildcard arm), and a store states the contract version it implements
/// ([`contract_version`](Store::contract_version)), so a store written against an older
/// contract is refused at build instead of silently ignoring what it does not know.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The version of the store contract this store implements (see
    /// [`STORE_CONTRACT_VERSION`]): return the number of the contract you implemented and
    /// tested, as a literal — never the constant itself, which would claim whatever the crate
    /// you are compiled against requires. [`HandoffBuilder::build`](crate::HandoffBuilder::build)
    /// refuses a store older than the engine needs.
    fn contract_version(&self) -> u32;

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

    /// Audit events of one ticket with `seq > after`, in order, at most `limit`, decoded with
    /// their texts attached ([`AuditEvent::decode_with_texts`]). Every event returned names
    /// this ticket in its hashed bytes ([`StoreError::MisfiledAuditEvent`] otherwise).
    async fn ticket_audit_page(
        &self,
        ticket: TicketId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Every audit event of one ticket, in order, with their texts (pages of
    /// [`ticket_audit_page`](Self::ticket_audit_page) put together).
    async fn ticket_audit(&self, ticket: TicketId) -> Result<Vec<AuditEvent>, StoreError> {
        const PAGE: usize = 1024;
        let mut events: Vec<AuditEvent> = Vec::new();
        loop {
            let after = events.last().map_or(0, AuditEvent::seq);
            let page = self.ticket_audit_page(ticket, after, PAGE).await?;
            let full = page.len() == PAGE;
            events.extend(page);
            if !full {
                return Ok(events);
            }
        }
    }

    /// The side-table rows of the texts of events `from..=to`, ordered by event and name
    /// (erased ones included, without value and salt).
    async fn audit_texts(&self, from: u64, to: u64) -> Result<Vec<TextRow>, StoreError>;

    /// The chain head ([`ChainHead::GENESIS`] when empty).
    async fn audit_head(&self) -> Result<ChainHead, StoreError>;

    /// Tickets whose state changes by time alone at or before `now`: pending past their
    /// deadline, approved past their grant, executing past their lease. Oldest first.
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError>;

    /// Keeps a signed checkpoint of the chain head (one per size: saving another of the same
    /// size replaces it).
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The saved checkpoint of the longest chain.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Saved checkpoints of sizes `>= from`, smallest first, at most `limit` (page through
    /// every checkpoint to check that the chain passes through each).
    async fn checkpoints(&self, from: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreError>;

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
    /// expiry (see [`Write::nonces`]), and — should the floor be rebased back — whenever the
    /// nonce expired at or before the latest expiry forgotten, so a forgotten nonce can never
    /// be consumed again. The
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

/// The version of the [`Store`] contract this crate's engine speaks: the parts of a [`Write`] a
/// store must apply and what each store method must answer.
///
/// A store states the version it implements ([`Store::contract_version`]);
/// [`HandoffBuilder::build`](crate::HandoffBuilder::build) refuses a store that implements an
/// older one. Every new obligation — a new part of [`Write`] to apply (a store that silently
/// ignored grant counts or freezes would fail open), a new method, a new refusal a store must
/// give — raises it, and the conformance suite checks a store against the current one.
///
/// | version | the contract |
/// |---|---|
/// | 1 | tickets inserted or replaced by compare-and-swap on their version, decisions, audit records chained onto the head at commit, outbox rows and delivery outcomes, single-use nonces, `valid_before` judged at the commit time, which never goes backwards |
/// | 2 | 1, and: the store names its clock (`clock`); commit times follow [`CommitClock`](crate::backend::CommitClock) (a jumped clock and a floor ahead of the clock refuse the commit, `rebase_clock` steps the floor onto the clock, seen by every process); freezes held by the store (`freezes`), set or lifted with their write (`freeze`), and `unless_frozen` checked inside the committing transaction |
/// | 3 | 2, and the texts of audit records kept beside their events only when the chain commits to them ([`AuditRecord::check_texts`]), read back with the events (`ticket_audit_page`, `audit_texts`); erasures of texts ([`Write::erase`], [`StoreError::NoSuchText`]); every checkpoint listed by size (`checkpoints`) |
/// | 4 | 3, and idempotency keys unique per whole requester (agent and principal, "no principal" a value) and `ticket_by_key` by requester; [`Write::rebase`] applied on a lost compare-and-swap; a write `TooLate` at or after any of its nonces' expiry; [`Store::prune_nonces`]; [`StoreHealth::nonces`] |
pub const STORE_CONTRACT_VERSION: u32 = 4;

/// Called with the ids of the tickets a durable commit changed.
pub type CommitListener = std::sync::Arc<dyn Fn(&[TicketId]) + Send + Sync>;

/// One atomic write.
///
/// Build one with [`Write::new`] and the `with_*` methods; a store reads the fields. New parts
/// come with a new [`STORE_CONTRACT_VERSION`], so a store that does not know them is refused
/// instead of ignoring them.
///
/// ```
/// use agent_handoff::backend::{NonceUse, Write};
/// use agent_handoff::Timestamp;
///
/// let expires = Timestamp::from_unix_millis(1_700_000_060_000);
/// let write = Write::new()
///     .with_nonce(NonceUse::new([7; 16], expires))
///     .with_valid_before(expires);
/// assert_eq!(write.nonces.len(), 1);
/// assert!(write.ticket.is_none());
/// ```
///
/// Outside this crate a struct literal does not compile, so code written today keeps
/// compiling when a part is added:
///
/// ```compile_fail
/// let write = agent_handoff::backend::Write { valid_before: None, ..Default::default() };
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// Texts to erase: each must be kept (not erased) in the side table, else the whole write
    /// is refused with [`StoreError::NoSuchText`]. Its value and salt are dropped and it is
    /// recorded as erased by the write's first audit record (the `text_erased` event), which
    /// the write must carry ([`StoreError::InvalidWrite`] otherwise).
    pub erase: Vec<TextRef>,
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

impl Write {
    /// Adds a text to erase (see [`erase`](Self::erase)).
    pub fn with_erasure(mut self, text: TextRef) -> Self {
        self.erase.push(text);
        self
    }
}

impl Write {
    /// A write with nothing in it (committing it still takes a commit time).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`rebase`](Self::rebase).
    #[must_use]
    pub fn with_rebase(mut self, rebase: Rebase) -> Self {
        self.rebase = Some(rebase);
        self
    }

    /// Sets the ticket change.
    #[must_use]
    pub fn with_ticket(mut self, change: TicketWrite) -> Self {
        self.ticket = Some(change);
        self
    }

    /// Sets the decision row to record.
    #[must_use]
    pub fn with_decision(mut self, row: DecisionRow) -> Self {
        self.decision = Some(row);
        self
    }

    /// Appends one audit record (records are chained in the order added).
    #[must_use]
    pub fn with_audit(mut self, record: AuditRecord) -> Self {
        self.audit.push(record);
        self
    }

    /// Appends audit records, in order.
    #[must_use]
    pub fn with_audit_records(mut self, records: impl IntoIterator<Item = AuditRecord>) -> Self {
        self.audit.extend(records);
        self
    }

    /// Appends one outbox row.
    #[must_use]
    pub fn with_outbox(mut self, row: OutboxRow) -> Self {
        self.outbox.push(row);
        self
    }

    /// Appends outbox rows, in order.
    #[must_use]
    pub fn with_outbox_rows(mut self, rows: impl IntoIterator<Item = OutboxRow>) -> Self {
        self.outbox.extend(rows);
        self
    }

    /// Appends the outcome of a delivery attempt.
    #[must_use]
    pub fn with_outbox_update(mut self, update: OutboxUpdate) -> Self {
        self.outbox_updates.push(update);
        self
    }

    /// Appends outcomes of delivery attempts.
    #[must_use]
    pub fn with_outbox_updates(mut self, updates: impl IntoIterator<Item = OutboxUpdate>) -> Self {
        self.outbox_updates.extend(updates);
        self
    }

    /// Appends a single-use nonce to consume.
    #[must_use]
    pub fn with_nonce(mut self, nonce: NonceUse) -> Self {
        self.nonces.push(nonce);
        self
    }

    /// Appends single-use nonces to consume.
    #[must_use]
    pub fn with_nonces(mut self, nonces: impl IntoIterator<Item = NonceUse>) -> Self {
        self.nonces.extend(nonces);
        self
    }

    /// Makes the write valid only if committed strictly before `limit`.
    #[must_use]
    pub fn with_valid_before(mut self, limit: Timestamp) -> Self {
        self.valid_before = Some(limit);
        self
    }

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
///
/// A store refuses a kind of ticket change it does not know with [`StoreError::InvalidWrite`].
#[derive(Debug, Clone)]
#[non_exhaustive]
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

impl TicketWrite {
    /// A new ticket (version 1).
    pub fn insert(ticket: Ticket) -> Self {
        TicketWrite::Insert(Box::new(ticket))
    }

    /// Replaces the stored ticket if its version is `expected_version`.
    pub fn update(ticket: Ticket, expected_version: u64) -> Self {
        TicketWrite::Update {
            ticket: Box::new(ticket),
            expected_version,
        }
    }
}

/// A recorded decision (accepted or refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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

impl DecisionRow {
    /// An accepted decision on `ticket` by `person` (`None`: not authenticated), asking for
    /// `verdict`, at `at`.
    pub fn new(
        ticket: TicketId,
        person: Option<PersonId>,
        verdict: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            ticket,
            person,
            verdict: verdict.into(),
            refusal: None,
            at,
        }
    }

    /// Marks the decision refused, with the refusal's code (see [`codes`](crate::codes)).
    #[must_use]
    pub fn with_refusal(mut self, code: impl Into<String>) -> Self {
        self.refusal = Some(code.into());
        self
    }
}

/// A notification to deliver after commit.
///
/// `Debug` does not show the payload: a review card carries decision links, whose tokens are
/// live credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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

impl OutboxRow {
    /// A row delivering `payload` about `ticket` on `channel`, not before `due`.
    pub fn new(
        id: Uuid,
        ticket: TicketId,
        channel: impl Into<String>,
        payload: Value,
        due: Timestamp,
    ) -> Self {
        Self {
            id,
            ticket,
            channel: channel.into(),
            payload,
            due,
        }
    }
}

impl fmt::Debug for OutboxRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRow")
            .field("id", &self.id)
            .field("ticket", &self.ticket)
            .field("channel", &self.channel)
            .field("due", &self.due)
            .field("payload", &"<redacted>")
            .finish()
    }
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
///
/// `Debug` shows neither the payload (see [`OutboxRow`]) nor the receipt's contents (a
/// channel's receipt may hold what lets a card be updated).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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

impl fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("row", &self.row)
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("receipt", &self.receipt.as_ref().map(|_| "<redacted>"))
            .field("last_error", &self.last_error)
            .finish()
    }
}

/// The outcome of one delivery attempt, recorded on an outbox row.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxUpdate {
    /// The row.
    pub id: Uuid,
    /// The row's [`OutboxEntry::attempts`] when it was claimed: the update applies only if it
    /// is unchanged and the row still pending.
    pub attempts: u32,
    /// What happened.
    pub outcome: OutboxOutcome,
}

impl OutboxUpdate {
    /// The outcome of an attempt on row `id`, claimed with `attempts` failed attempts.
    pub fn new(id: Uuid, attempts: u32, outcome: OutboxOutcome) -> Self {
        Self {
            id,
            attempts,
            outcome,
        }
    }
}

/// What a delivery attempt came to. A store refuses an outcome it does not know with
/// [`StoreError::InvalidWrite`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
#[non_exhaustive]
pub struct NonceUse {
    /// The nonce.
    pub nonce: [u8; 16],
    /// After this it may be forgotten (the token carrying it has expired).
    pub expires: Timestamp,
}

impl NonceUse {
    /// Consumes `nonce`, which may be forgotten after `expires`.
    pub fn new(nonce: [u8; 16], expires: Timestamp) -> Self {
        Self { nonce, expires }
    }
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

impl TicketCursor {
    /// The position after `ticket`, the last one of a page (for stores answering
    /// [`Store::list_tickets`]).
    pub fn after(ticket: TicketId) -> Self {
        Self(ticket)
    }

    /// The last ticket of the page before.
    pub fn ticket(&self) -> TicketId {
        self.0
    }
}

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
    /// An erasure named a text that is not kept (never written, or erased already). Nothing
    /// of the write was recorded. Code: `no_such_text`.
    #[error("no kept audit text `{0}`")]
    NoSuchText(TextRef),
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

    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            StoreError::VersionConflict { .. } => codes::VERSION_CONFLICT,
            StoreError::DuplicateKey { .. } => codes::DUPLICATE_KEY,
            StoreError::NonceReused => codes::NONCE_REUSED,
            StoreError::TooLate { .. } => codes::TOO_LATE,
            StoreError::OutboxConflict { .. } => codes::OUTBOX_CONFLICT,
            StoreError::NotFound(_) => codes::NOT_FOUND,
            StoreError::Frozen { .. } => codes::FROZEN,
            StoreError::ClockJump { .. } => codes::CLOCK_JUMP,
            StoreError::FloorAhead { .. } => codes::FLOOR_AHEAD,
            StoreError::Closed => codes::STORE_CLOSED,
            StoreError::SchemaTooNew { .. } => codes::STORE_SCHEMA_TOO_NEW,
            StoreError::InvalidWrite(_) => codes::INVALID_WRITE,
            StoreError::MisfiledAuditEvent { .. } => codes::AUDIT_MISFILED,
            StoreError::NoSuchText(_) => codes::NO_SUCH_TEXT,
            StoreError::Corrupt(_) => codes::STORE_CORRUPT,
            StoreError::Backend(_) => codes::STORE_UNAVAILABLE,
        }
    }
}
