//! The bundled SQLite store (feature `sqlite`).
//!
//! - **Durability**: WAL journal, `synchronous=FULL` by default: a commit acknowledged to a
//!   caller survives power loss. [`Synchronous::Normal`] trades the last few commits on power
//!   loss (never on an application crash) for roughly three times the single-writer rate.
//! - **No blocking I/O on async threads**: one writer thread owns the only write connection
//!   and does group commit (see `writer.rs`); reads run on a small pool of reader threads with
//!   their own read-only connections (WAL readers never block the writer). Async callers
//!   await a one-shot answer, on any runtime. With [`Synchronous::Normal`] a fourth kind of
//!   thread checkpoints the WAL off the commit path (see `checkpoint.rs`).
//! - **Schema**: migrations in `migrations/*.sql`, applied by `PRAGMA user_version`; a
//!   database written by newer code is refused ([`StoreError::SchemaTooNew`]).
//! - **Idempotency scope**: one ticket per (agent id, principal, idempotency key), enforced by
//!   a `UNIQUE` constraint; "no principal" is stored as a value (`''`), not `NULL`, so it is
//!   unique too. Hosts serving several tenants should qualify agent ids by tenant.
//! - **Nonces**: consumed nonces are kept until their expiry, then forgotten by
//!   [`Store::prune_nonces`] (the engine's sweep calls it) against the newest commit in the
//!   file; `nonce_horizon` keeps the latest expiry forgotten, so a clock rebase cannot make a
//!   forgotten nonce usable again.
//! - **Audit**: `audit_events` is append-only (triggers abort `UPDATE` and `DELETE`); events
//!   keep the exact bytes that were hashed. Their texts live in `audit_texts`, beside the
//!   chain, where an erasure drops value and salt (`secure_delete` overwrites the freed bytes).
//! - **Time**: commits are stamped by [`CommitClock`] with the clock of
//!   [`SqliteOptions::with_clock`] (the `Handoff`'s); the floor is the commit time of the newest
//!   audit event, read under the write lock, so it holds across reopens and processes; a rebase
//!   is recorded in `clock_rebases`, which tells every writer on the file to drop the floor it
//!   remembers.
//! - **Freezes** live in the `freezes` table: a guarded write reads it inside its own
//!   transaction, so a freeze made by any process refuses the next guarded write of every
//!   other, and a restart keeps it.

mod checkpoint;
mod codec;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use self::schema::sql_err;
use self::writer::{Job, Listener, Writer};
use crate::action::{IdempotencyKey, Requester};
use crate::audit::{AuditEvent, Chain, ChainHead, Checkpoint, RawEvent, TextRow};
use crate::backend::{
    lock, Clock, CommitClock, Committed, DecisionRow, Freeze, OutboxEntry, Store, StoreError,
    StoreHealth, SystemClock, TicketCursor, TicketFilter, TicketPage, Write,
    DEFAULT_CLOCK_TOLERANCE,
};
use crate::id::TicketId;
use crate::oneshot;
use crate::ticket::Ticket;
use crate::timestamp::Timestamp;

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged decision survives power loss. The default.
    #[default]
    Full,
    /// fsync at WAL checkpoints only: survives application crashes, but a power loss may roll
    /// back the most recent commits. Faster; choose it only if losing an acknowledged approval
    /// on power loss is acceptable.
    Normal,
}

/// Options for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    synchronous: Synchronous,
    busy_timeout: Duration,
    readers: usize,
    max_batch: usize,
    clock: Arc<dyn Clock>,
    clock_tolerance: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            readers: 2,
            max_batch: 256,
            clock: Arc::new(SystemClock),
            clock_tolerance: DEFAULT_CLOCK_TOLERANCE,
        }
    }
}

impl SqliteOptions {
    /// Default options: `synchronous=FULL`, 5 s busy timeout, 2 readers, batches of ≤ 256,
    /// the system clock with a tolerance of [`DEFAULT_CLOCK_TOLERANCE`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the durability level.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a connection waits for a lock held by another process.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Number of reader threads (at least 1).
    pub fn with_readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Most writes committed in one transaction (at least 1; 1 disables group commit).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// The clock that stamps commits: the `Handoff`'s clock (default [`SystemClock`]). The
    /// builder takes it from the store, or refuses an engine clock that is another one.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How far the clock may jump ahead of its monotonic time since the last commit, or fall
    /// behind the stored commit floor, before commits are refused (default
    /// [`DEFAULT_CLOCK_TOLERANCE`]; see [`CommitClock`]). Raise it on machines that suspend
    /// for longer (a suspend does not advance monotonic time on Linux).
    pub fn with_clock_tolerance(mut self, tolerance: Duration) -> Self {
        self.clock_tolerance = tolerance;
        self
    }
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The reader threads' queue. A read wakes exactly one idle reader (`notify_one`); with one
/// `mpsc::Receiver` shared behind a mutex, the reader that took a job released the mutex to
/// the next one, so every read woke two threads.
struct ReadQueue {
    state: Mutex<ReadState>,
    ready: std::sync::Condvar,
}

struct ReadState {
    jobs: std::collections::VecDeque<ReadJob>,
    /// Set when the store is dropped: readers finish the queued jobs, then exit.
    closed: bool,
}

impl ReadQueue {
    fn new() -> Self {
        Self {
            state: Mutex::new(ReadState {
                jobs: std::collections::VecDeque::new(),
                closed: false,
            }),
            ready: std::sync::Condvar::new(),
        }
    }

    fn push(&self, job: ReadJob) {
        lock(&self.state).jobs.push_back(job);
        self.ready.notify_one();
    }

    /// The next job, or `None` once the queue is closed and empty.
    fn pop(&self) -> Option<ReadJob> {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// The store's handle on its readers: closes the queue when the store goes away.
struct Readers(Arc<ReadQueue>);

impl Drop for Readers {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The bundled SQLite [`Store`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_handoff::{SqliteStore, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("handoff.sqlite3")).await?;
/// assert_eq!(store.health().await?.pending, 0);
/// store.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct SqliteStore {
    path: Option<PathBuf>,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Option<Readers>,
    listeners: Arc<Mutex<Vec<Listener>>>,
    clock: Arc<CommitClock>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) a database file with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens a database file.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let store = Self::start(
            move || {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                Connection::open_with_flags(&p, flags).map_err(sql_err)
            },
            Some(path.clone()),
            options.clone(),
        )
        .await?;
        // Readers open after the writer has migrated the schema.
        let queue = Arc::new(ReadQueue::new());
        // Dropped on an early return below: the readers already started then exit.
        let readers = Readers(Arc::clone(&queue));
        let mut ready = Vec::with_capacity(options.readers);
        for i in 0..options.readers {
            let queue = Arc::clone(&queue);
            let (path, busy_timeout) = (path.clone(), options.busy_timeout);
            let (ready_tx, ready_rx) = oneshot::channel();
            ready.push(ready_rx);
            // Each reader opens its connection on its own thread: opening touches the disk,
            // and this function may be awaited on an async executor thread.
            std::thread::Builder::new()
                .name(format!("agent-handoff-reader-{i}"))
                .spawn(move || {
                    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let opened = Connection::open_with_flags(&path, flags)
                        .and_then(|conn| conn.busy_timeout(busy_timeout).map(|()| conn))
                        .map_err(sql_err);
                    let conn = match opened {
                        Ok(conn) => {
                            ready_tx.send(Ok(()));
                            conn
                        }
                        Err(e) => return ready_tx.send(Err(e)),
                    };
                    while let Some(job) = queue.pop() {
                        // A panicking read drops its reply (the caller sees `Closed`); the
                        // thread goes on serving the others.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
                    }
                })
                .map_err(StoreError::backend)?;
        }
        for r in ready {
            r.await.ok_or(StoreError::Closed)??;
        }
        Ok(Self {
            readers: Some(readers),
            ..store
        })
    }

    /// A private in-memory database (tests, demos). Reads are served by the writer thread.
    pub async fn in_memory() -> Result<Self, StoreError> {
        Self::in_memory_with(SqliteOptions::default()).await
    }

    /// A private in-memory database with options (the clock matters; durability does not).
    pub async fn in_memory_with(options: SqliteOptions) -> Result<Self, StoreError> {
        Self::start(
            || Connection::open_in_memory().map_err(sql_err),
            None,
            options,
        )
        .await
    }

    async fn start(
        open: impl FnOnce() -> Result<Connection, StoreError> + Send + 'static,
        path: Option<PathBuf>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel();
        let listeners: Arc<Mutex<Vec<Listener>>> = Arc::default();
        let l = Arc::clone(&listeners);
        let file_backed = path.is_some();
        let checkpoint_path = path.clone();
        let clock = Arc::new(CommitClock::new(
            Arc::clone(&options.clock),
            options.clock_tolerance,
        ));
        let commit_clock = Arc::clone(&clock);
        std::thread::Builder::new()
            .name("agent-handoff-writer".into())
            .spawn(move || {
                let setup = (|| {
                    let mut conn = open()?;
                    schema::configure(
                        &conn,
                        options.synchronous,
                        options.busy_timeout,
                        file_backed,
                    )?;
                    schema::migrate(&mut conn)?;
                    let (head, last_commit) = writer::load_tail(&conn)?;
                    let rebases = writer::load_rebases(&conn)?;
                    // With `synchronous=NORMAL` a file's WAL is checkpointed by a thread of
                    // its own, and the writer's automatic checkpoint is the backstop; with
                    // FULL the writer checkpoints (see `checkpoint.rs` for why).
                    let checkpointer = match &checkpoint_path {
                        Some(path) if options.synchronous == Synchronous::Normal => {
                            let ckpt = checkpoint::open(path, |c| {
                                schema::configure(
                                    c,
                                    options.synchronous,
                                    options.busy_timeout,
                                    true,
                                )
                            })?;
                            conn.pragma_update(
                                None,
                                "wal_autocheckpoint",
                                checkpoint::BACKSTOP_PAGES,
                            )
                            .map_err(sql_err)?;
                            Some(checkpoint::Checkpointer::start(ckpt)?)
                        }
                        _ => None,
                    };
                    Ok::<_, StoreError>((conn, head, last_commit, rebases, checkpointer))
                })();
                match setup {
                    Err(e) => ready_tx.send(Err(e)),
                    Ok((conn, head, last_commit, rebases, checkpointer)) => {
                        ready_tx.send(Ok(()));
                        Writer {
                            conn,
                            chain: Chain::resume(head),
                            last_commit,
                            rebases,
                            clock: commit_clock,
                            max_batch: options.max_batch,
                            listeners: l,
                            checkpointer,
                            refusals: false,
                            // Read from the file with every batch.
                            nonce_horizon: Timestamp::EPOCH,
                        }
                        .run(rx);
                    }
                }
            })
            .map_err(StoreError::backend)?;
        ready_rx.await.ok_or(StoreError::Closed)??;
        Ok(Self {
            path,
            writer: Mutex::new(Some(tx)),
            readers: None,
            listeners,
            clock,
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        match lock(&self.writer).as_ref() {
            Some(tx) => tx.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    /// Runs a read on a reader thread (or the writer, for in-memory stores).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        match &self.readers {
            Some(readers) => readers
                .0
                .push(Box::new(move |conn: &Connection| tx.send(f(conn)))),
            None => self.send(Job::Run(Box::new(move |conn: &mut Connection| {
                tx.send(f(conn))
            })))?,
        }
        rx.await.ok_or(StoreError::Closed)?
    }

    /// Copies the whole database (tickets, chain, checkpoints) to `dest` with SQLite's online
    /// backup, while the store keeps serving. The copy verifies like the original.
    pub async fn backup(&self, dest: impl AsRef<Path>) -> Result<(), StoreError> {
        let dest = dest.as_ref().to_path_buf();
        let (tx, rx) = oneshot::channel();
        // From the writer's connection, so the copy is a consistent commit boundary.
        self.send(Job::Run(Box::new(move |conn: &mut Connection| {
            let result = conn
                .backup(
                    rusqlite::MAIN_DB,
                    &dest,
                    None::<fn(rusqlite::backup::Progress)>,
                )
                .map_err(sql_err);
            tx.send(result)
        })))?;
        rx.await.ok_or(StoreError::Closed)?
    }

    /// Adds a callback told about tickets changed by each durable commit (used by engines to
    /// wake same-process waiters without polling; every engine sharing the store is told).
    pub(crate) fn add_listener(&self, listener: Listener) {
        lock(&self.listeners).push(listener);
    }
}

const SELECT_TICKET: &str = "SELECT body FROM tickets";

#[async_trait]
impl Store for SqliteStore {
    /// Version 4 (see [`STORE_CONTRACT_VERSION`](crate::backend::STORE_CONTRACT_VERSION)):
    /// raise it here only together with what the new contract asks of this store.
    fn contract_version(&self) -> u32 {
        4
    }

    async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        let (tx, rx) = oneshot::channel();
        // Encoding the ticket row here keeps JSON work off the single writer thread.
        let prepared = writer::Prepared::new(write)?;
        self.send(Job::Commit(Box::new(prepared), tx))?;
        rx.await.ok_or(StoreError::Closed)?
    }

    fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(self.clock.clock())
    }

    async fn freezes(&self) -> Result<Vec<Freeze>, StoreError> {
        self.read(writer::load_freezes).await
    }

    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached(&format!("{SELECT_TICKET} WHERE id = ?1"))
                .and_then(|mut s| {
                    s.query_row(params![id.as_uuid().as_bytes()], |r| r.get(0))
                        .optional()
                })
                .map_err(sql_err)?;
            body.as_deref().map(codec::ticket_from_body).transpose()
        })
        .await
    }

    async fn ticket_by_key(
        &self,
        requester: &Requester,
        key: &IdempotencyKey,
    ) -> Result<Option<Ticket>, StoreError> {
        let (agent, principal, key) = (
            requester.agent().as_str().to_owned(),
            codec::principal_column(requester).to_owned(),
            key.as_str().to_owned(),
        );
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached(&format!(
                    "{SELECT_TICKET} WHERE agent = ?1 AND principal = ?2 AND idempotency_key = ?3"
                ))
                .and_then(|mut s| {
                    s.query_row(params![agent, principal, key], |r| r.get(0))
                        .optional()
                })
                .map_err(sql_err)?;
            body.as_deref().map(codec::ticket_from_body).transpose()
        })
        .await
    }

    async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError> {
        let filter = filter.clone();
        self.read(move |conn| list(conn, &filter)).await
    }

    async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT ticket_id, person, verdict, refusal, at FROM decisions \
                     WHERE ticket_id = ?1 ORDER BY id",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(
                    params![ticket.as_uuid().as_bytes()],
                    codec::decision_from_row,
                )
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err)?).collect()
        })
        .await
    }

    async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT seq, bytes, prev_hash, hash, ticket_id, kind, at FROM audit_events \
                     WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(
                    params![i64::try_from(from).unwrap_or(i64::MAX), limit as i64],
                    codec::filed_raw_from_row,
                )
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err)?).collect()
        })
        .await
    }

    async fn ticket_audit_page(
        &self,
        ticket: TicketId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(move |conn| {
            let id = ticket.as_uuid().as_bytes().to_vec();
            let after = i64::try_from(after).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut texts: BTreeMap<u64, Vec<TextRow>> = BTreeMap::new();
            {
                let mut s = conn
                    .prepare_cached(
                        "SELECT seq, name, value, salt, erased_by FROM audit_texts WHERE seq IN \
                         (SELECT seq FROM audit_events WHERE ticket_id = ?1 AND seq > ?2 \
                          ORDER BY seq LIMIT ?3) ORDER BY seq, name",
                    )
                    .map_err(sql_err)?;
                let rows = s
                    .query_map(params![id, after, limit], codec::text_from_row)
                    .map_err(sql_err)?;
                for row in rows {
                    let row = row.map_err(sql_err)??;
                    texts.entry(row.seq).or_default().push(row);
                }
            }
            let mut s = conn
                .prepare_cached(
                    "SELECT seq, bytes, prev_hash, hash FROM audit_events \
                     WHERE ticket_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(params![id, after, limit], codec::event_from_row)
                .map_err(sql_err)?;
            rows.map(|r| {
                let mut event = r.map_err(sql_err)??;
                // The column is not hashed; the bytes are.
                if event.record().ticket != Some(ticket) {
                    return Err(StoreError::MisfiledAuditEvent { seq: event.seq() });
                }
                event.attach_texts(texts.remove(&event.seq()).unwrap_or_default());
                Ok(event)
            })
            .collect()
        })
        .await
    }

    async fn audit_texts(&self, from: u64, to: u64) -> Result<Vec<TextRow>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT seq, name, value, salt, erased_by FROM audit_texts \
                     WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq, name",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(
                    params![
                        i64::try_from(from).unwrap_or(i64::MAX),
                        i64::try_from(to).unwrap_or(i64::MAX)
                    ],
                    codec::text_from_row,
                )
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err)?).collect()
        })
        .await
    }

    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.read(writer::load_head).await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT id FROM tickets WHERE due_at IS NOT NULL AND due_at <= ?1 \
                     ORDER BY due_at LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(params![now.as_unix_millis(), limit as i64], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .map_err(sql_err)?;
            rows.map(|r| codec::ticket_id(&r.map_err(sql_err)?))
                .collect()
        })
        .await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let text = checkpoint.to_text();
        let size = checkpoint.size();
        let (tx, rx) = oneshot::channel();
        self.send(Job::Run(Box::new(move |conn: &mut Connection| {
            let result = conn
                .execute(
                    "INSERT OR REPLACE INTO checkpoints (size, text) VALUES (?1, ?2)",
                    params![size as i64, text],
                )
                .map(|_| ())
                .map_err(sql_err);
            tx.send(result)
        })))?;
        rx.await.ok_or(StoreError::Closed)?
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.read(|conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT text FROM checkpoints ORDER BY size DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)?;
            text.map(|t| {
                Checkpoint::parse(&t).map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn checkpoints(&self, from: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT text FROM checkpoints WHERE size >= ?1 ORDER BY size LIMIT ?2",
                )
                .map_err(sql_err)?;
            let rows = s
                .query_map(
                    params![
                        i64::try_from(from).unwrap_or(i64::MAX),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(sql_err)?;
            rows.map(|text| {
                Checkpoint::parse(&text.map_err(sql_err)?)
                    .map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))
            })
            .collect()
        })
        .await
    }

    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let (tx, rx) = oneshot::channel();
        // On the writer thread, in one `IMMEDIATE` transaction: the rows chosen are the rows
        // leased, even with other processes claiming from the same file.
        self.send(Job::Run(Box::new(move |conn: &mut Connection| {
            tx.send(claim(conn, now, lease, limit))
        })))?;
        rx.await.ok_or(StoreError::Closed)?
    }

    async fn ticket_outbox(&self, ticket: TicketId) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "{SELECT_OUTBOX} WHERE ticket_id = ?1 ORDER BY rowid"
                ))
                .map_err(sql_err)?;
            let rows = s
                .query_map(params![ticket.as_uuid().as_bytes()], codec::outbox_from_row)
                .map_err(sql_err)?;
            rows.map(|r| r.map_err(sql_err)?).collect()
        })
        .await
    }

    async fn outbox_receipt(
        &self,
        ticket: TicketId,
        channel: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let channel = channel.to_owned();
        self.read(move |conn| {
            let receipt: Option<String> = conn
                .prepare_cached(
                    "SELECT receipt FROM outbox WHERE ticket_id = ?1 AND channel = ?2 \
                     AND status = 'delivered' AND receipt IS NOT NULL \
                     ORDER BY rowid DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row(params![ticket.as_uuid().as_bytes(), channel], |r| r.get(0))
                        .optional()
                })
                .map_err(sql_err)?;
            receipt
                .map(|r| {
                    serde_json::from_str(&r)
                        .map_err(|e| StoreError::Corrupt(format!("outbox receipt: {e}")))
                })
                .transpose()
        })
        .await
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        let clock = Arc::clone(&self.clock);
        self.read(move |conn| {
            let (pending, oldest): (i64, Option<i64>) = conn
                .query_row(
                    "SELECT count(*), min(created_at) FROM tickets WHERE state = 'pending'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_err)?;
            let (backlog, dead): (i64, i64) = conn
                .query_row(
                    "SELECT count(*) FILTER (WHERE status = 'pending'), \
                            count(*) FILTER (WHERE status = 'dead') FROM outbox",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(sql_err)?;
            let last: Option<(i64, i64)> = conn
                .query_row(
                    "SELECT seq, committed_at FROM audit_events ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql_err)?;
            let nonces: i64 = conn
                .query_row("SELECT count(*) FROM nonces", [], |r| r.get(0))
                .map_err(sql_err)?;
            let floor = last.map(|(_, at)| Timestamp::from_unix_millis(at));
            Ok(StoreHealth {
                pending: pending as u64,
                oldest_pending: oldest.map(Timestamp::from_unix_millis),
                outbox_backlog: backlog as u64,
                outbox_dead: dead as u64,
                audit_events: last.map_or(0, |(seq, _)| seq as u64),
                commit_floor: floor,
                clock_alarm: clock.alarm(floor.unwrap_or(Timestamp::EPOCH)),
                nonces: nonces as u64,
            })
        })
        .await
    }

    async fn prune_nonces(&self, limit: usize) -> Result<usize, StoreError> {
        let (tx, rx) = oneshot::channel();
        // On the writer thread: it knows the commit time, which never goes backwards.
        self.send(Job::PruneNonces(limit, tx))?;
        rx.await.ok_or(StoreError::Closed)?
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.send(Job::Shutdown(tx)).is_err() {
            return Ok(()); // already shut down
        }
        let _ = rx.await;
        lock(&self.writer).take();
        Ok(())
    }

    fn on_commit(&self, listener: Listener) {
        self.add_listener(listener);
    }
}

const SELECT_OUTBOX: &str = "SELECT id, ticket_id, channel, payload, due_at, attempts, status, \
     receipt, last_error FROM outbox";

/// Picks due rows (per ticket and channel, only the earliest pending one) and leases them.
fn claim(
    conn: &mut Connection,
    now: Timestamp,
    lease: Duration,
    limit: usize,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let mut entries = {
        let mut s = tx
            .prepare_cached(&format!(
                "{SELECT_OUTBOX} o WHERE status = 'pending' AND due_at <= ?1 \
                 AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.ticket_id = o.ticket_id \
                 AND e.channel = o.channel AND e.status = 'pending' AND e.rowid < o.rowid) \
                 ORDER BY due_at, rowid LIMIT ?2"
            ))
            .map_err(sql_err)?;
        let rows = s
            .query_map(
                params![
                    now.as_unix_millis(),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                codec::outbox_from_row,
            )
            .map_err(sql_err)?;
        rows.map(|r| r.map_err(sql_err)?)
            .collect::<Result<Vec<_>, StoreError>>()?
    };
    let until = now.saturating_add(lease);
    {
        let mut s = tx
            .prepare_cached("UPDATE outbox SET due_at = ?2 WHERE id = ?1")
            .map_err(sql_err)?;
        for entry in &mut entries {
            s.execute(params![entry.row.id.as_bytes(), until.as_unix_millis()])
                .map_err(sql_err)?;
            entry.row.due = until;
        }
    }
    tx.commit().map_err(sql_err)?;
    Ok(entries)
}

/// Most tickets one page returns.
const MAX_PAGE: usize = 500;

fn list(conn: &Connection, f: &TicketFilter) -> Result<TicketPage, StoreError> {
    let mut sql = String::from("SELECT t.body, t.created_at, t.id FROM tickets t");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(g) = &f.group {
        sql.push_str(" JOIN ticket_groups g ON g.ticket_id = t.id AND g.grp = ?");
        args.push(g.as_str().to_owned().into());
    }
    if !f.states.is_empty() {
        let marks = vec!["?"; f.states.len()].join(", ");
        conds.push(format!("t.state IN ({marks})"));
        args.extend(f.states.iter().map(|s| s.as_str().to_owned().into()));
    }
    if let Some(a) = &f.agent {
        conds.push("t.agent = ?".into());
        args.push(a.as_str().to_owned().into());
    }
    if let Some(t) = f.created_from {
        conds.push("t.created_at >= ?".into());
        args.push(t.as_unix_millis().into());
    }
    if let Some(t) = f.created_before {
        conds.push("t.created_at < ?".into());
        args.push(t.as_unix_millis().into());
    }
    if let Some(TicketCursor(after)) = &f.after {
        // Newest first: continue with (created_at, id) strictly below the cursor's.
        conds.push(
            "(t.created_at, t.id) < (SELECT created_at, id FROM tickets WHERE id = ?)".into(),
        );
        args.push(after.as_uuid().as_bytes().to_vec().into());
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    let limit = if f.limit == 0 {
        100
    } else {
        f.limit.min(MAX_PAGE)
    };
    sql.push_str(" ORDER BY t.created_at DESC, t.id DESC LIMIT ?");
    args.push((limit as i64 + 1).into());
    let mut s = conn.prepare_cached(&sql).map_err(sql_err)?;
    let rows = s
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0))
        .map_err(sql_err)?;
    let mut tickets = Vec::new();
    for body in rows {
        tickets.push(codec::ticket_from_body(&body.map_err(sql_err)?)?);
    }
    let next = if tickets.len() > limit {
        tickets.truncate(limit);
        tickets.last().map(|t| TicketCursor(t.id()))
    } else {
        None
    };
    Ok(TicketPage { tickets, next })
}
