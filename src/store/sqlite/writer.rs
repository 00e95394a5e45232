//! The writer thread: group commit with one savepoint per caller.
//!
//! Every write goes through this one thread and its one connection. It takes the first queued
//! job, then every job that queued up meanwhile (while the previous batch was being made
//! durable), and applies them in one transaction, each inside its own savepoint: a caller whose
//! write fails (a lost compare-and-swap, a reused nonce) is rolled back to its savepoint without
//! touching the others. After `COMMIT` returns — the fsync that covers every write in the batch
//! — each caller gets its answer.

use std::sync::mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::codec;
use super::schema::sql_err;
use crate::audit::{Chain, ChainHash, ChainHead, MAX_SEQ};
use crate::backend::{
    CommitClock, Committed, Freeze, FreezeChange, FreezeScope, NonceUse, OutboxOutcome,
    OutboxUpdate, StoreError, TicketWrite, Write,
};
use crate::failpoint::failpoint;
use crate::id::{AgentId, PersonId};
use crate::oneshot;
use crate::timestamp::Timestamp;

/// Work for the writer thread.
pub(super) enum Job {
    /// Commit one write.
    Commit(Box<Prepared>, Reply),
    /// Run a closure on the writer's connection outside any transaction (in-memory stores
    /// read here, since they have no separate readers).
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Forget at most this many expired nonces (see [`Writer::prune_nonces`]).
    PruneNonces(usize, oneshot::Sender<Result<usize, StoreError>>),
    /// Stop after the jobs queued before this one.
    Shutdown(oneshot::Sender<()>),
}

pub(super) type Listener = crate::backend::CommitListener;

/// Where a commit's outcome goes.
pub(super) type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// A write with its ticket row already encoded (JSON body, index columns) on the caller's
/// thread, so the single writer thread spends its time on SQLite only.
pub(super) struct Prepared {
    pub(super) write: Write,
    pub(super) row: Option<codec::TicketRow>,
}

impl Prepared {
    pub(super) fn new(write: Write) -> Result<Self, StoreError> {
        // Texts are kept only when the chain commits to them (an HMAC each, here, off the
        // writer thread).
        for record in &write.audit {
            record
                .check_texts()
                .map_err(|e| StoreError::InvalidWrite(e.to_string()))?;
        }
        if !write.erase.is_empty() && write.audit.is_empty() {
            return Err(StoreError::InvalidWrite(
                "an erasure needs the audit record of the erasing event".into(),
            ));
        }
        let row = match &write.ticket {
            Some(t) => Some(codec::TicketRow::of(ticket_of(t))?),
            None => None,
        };
        Ok(Self { write, row })
    }
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) chain: Chain,
    pub(super) last_commit: Timestamp,
    /// The newest clock rebase seen (`clock_rebases.id`, 0 for none): when another one
    /// appears, the floor stepped back and `last_commit` is taken from the database again.
    pub(super) rebases: i64,
    pub(super) clock: Arc<CommitClock>,
    pub(super) max_batch: usize,
    pub(super) listeners: Arc<std::sync::Mutex<Vec<Listener>>>,
    /// The WAL checkpoint thread (file-backed stores with `synchronous=NORMAL`).
    pub(super) checkpointer: Option<super::checkpoint::Checkpointer>,
    /// Whether the last batch refused a write: the next one then starts with savepoints.
    pub(super) refusals: bool,
    /// Nonces expiring at or before this may have been forgotten (`nonce_horizon`, read under
    /// the write lock with each batch): a write consuming one is too late.
    pub(super) nonce_horizon: Timestamp,
}

/// A batch applied, its transaction still open.
struct Applied {
    /// The commit time of the batch.
    at: Timestamp,
    /// The chain head before the batch.
    start_head: ChainHead,
    /// Per write, in order: the chain head after it, or why it was refused.
    results: Vec<Result<ChainHead, StoreError>>,
    /// The tickets the applied writes changed.
    changed: Vec<crate::id::TicketId>,
}

/// Why a batch's transaction was rolled back.
enum Abort {
    /// A write was refused in a pass without savepoints: run the batch again with them.
    Refused,
    /// The transaction failed as a whole (could not begin, or SQLite rolled it back): every
    /// write of the batch fails with this.
    Failed(StoreError),
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Job>) {
        let mut shutdown = Vec::new();
        while shutdown.is_empty() {
            let Ok(first) = rx.recv() else { break };
            let mut commits = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Commit(w, reply) => commits.push((w, reply)),
                    Job::Run(f) => f(&mut self.conn),
                    Job::PruneNonces(limit, reply) => reply.send(self.prune_nonces(limit)),
                    Job::Shutdown(reply) => shutdown.push(reply),
                }
                if shutdown.is_empty() && commits.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            if !commits.is_empty() {
                self.commit_batch(commits);
            }
        }
        // Anything queued after the shutdown request is refused by dropped senders.
        if let Some(mut checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        for reply in shutdown {
            reply.send(());
        }
    }

    fn commit_batch(&mut self, mut commits: Vec<(Box<Prepared>, Reply)>) {
        // Several writes share the transaction, and each must be all or nothing on its own:
        // a savepoint per write gives that. But a savepoint copies every page its write
        // touches that the batch already dirtied to the statement journal: with 32 callers,
        // a fifth of the writer's instructions and 5-7 % of the process's CPU time. So a
        // batch runs first without savepoints; only if one of its writes fails is the
        // transaction rolled back and the batch run again with a savepoint per write. The outcome is the same: the writes
        // before the failed one are applied again on the same state, in the same order. After
        // a batch with a refused write the next one starts with savepoints, so a burst of
        // conflicts costs one extra pass, not one per batch.
        let isolate = commits.len() > 1 && self.refusals;
        let pass = match self.apply_batch(&mut commits, isolate) {
            // Rolled back: again, with a savepoint per write.
            Err(Abort::Refused) => self.apply_batch(&mut commits, true),
            pass => pass,
        };
        let applied = match pass {
            Ok(applied) => applied,
            Err(abort) => {
                let e = Arc::new(match abort {
                    Abort::Failed(e) => e,
                    // Never with savepoints; answered as a failed transaction all the same.
                    Abort::Refused => StoreError::Corrupt("a write was refused twice".into()),
                });
                for (_, reply) in commits {
                    reply.send(Err(StoreError::backend(Arc::clone(&e))));
                }
                return;
            }
        };
        let Applied {
            at,
            start_head,
            results,
            changed,
        } = applied;
        self.refusals = results.iter().any(Result::is_err);
        let results: Vec<_> = commits
            .into_iter()
            .map(|(_, reply)| reply)
            .zip(results)
            .collect();
        if results.iter().all(|(_, r)| r.is_err()) {
            // Nothing to make durable (a lone write that failed): answer without an fsync.
            let _ = exec(&self.conn, "ROLLBACK");
            self.chain = Chain::resume(start_head);
            for (reply, result) in results {
                reply.send(result.map(|head| Committed { at, head }));
            }
            return;
        }
        failpoint("before_commit");
        match exec(&self.conn, "COMMIT") {
            Ok(()) => {
                self.last_commit = at;
                failpoint("after_commit");
                if let Some(checkpointer) = &mut self.checkpointer {
                    checkpointer.committed(results.iter().filter(|(_, r)| r.is_ok()).count());
                }
                // Listeners run before any caller is answered, so a caller that sees its
                // commit acknowledged knows same-process waiters were already told.
                if !changed.is_empty() {
                    let listeners = crate::backend::lock(&self.listeners).clone();
                    for listener in listeners {
                        // A panicking listener must not take the writer down with it (the
                        // batch is durable: its callers must still get their answers).
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            listener(&changed)
                        }));
                    }
                }
                for (reply, result) in results {
                    reply.send(result.map(|head| Committed { at, head }));
                }
            }
            Err(e) => {
                let _ = exec(&self.conn, "ROLLBACK");
                self.chain = Chain::resume(start_head);
                let e = Arc::new(e);
                for (reply, result) in results {
                    // A write refused on its own keeps its own answer; the others failed with
                    // the transaction.
                    reply.send(match result {
                        Ok(_) => Err(StoreError::backend(Arc::clone(&e))),
                        Err(own) => Err(own),
                    });
                }
            }
        }
    }

    /// Opens the transaction and applies every write of the batch, each in a savepoint of its
    /// own if `isolate`. On success the transaction is left open for `COMMIT`. Without
    /// `isolate`, the first refused write of a batch of several rolls the whole transaction
    /// back ([`Abort::Refused`]); the writes keep their audit records for another pass.
    fn apply_batch(
        &mut self,
        commits: &mut [(Box<Prepared>, Reply)],
        isolate: bool,
    ) -> Result<Applied, Abort> {
        exec(&self.conn, "BEGIN IMMEDIATE").map_err(Abort::Failed)?;
        // Under the write lock: another connection (another process on the same file) may have
        // appended since our last batch, so the head and the last commit time are read from
        // the database, not cached. The commit time is taken only now, after any wait for the
        // lock, so a deadline is never judged against a time earlier than the commit.
        let start_head = match load_tail(&self.conn).and_then(|tail| {
            self.nonce_horizon = load_nonce_horizon(&self.conn)?;
            Ok((tail, load_rebases(&self.conn)?))
        }) {
            Ok(((head, last_commit), rebases)) => {
                if rebases == self.rebases {
                    self.last_commit = self.last_commit.max(last_commit);
                } else {
                    // An operator rebased the floor (here or in another process): what this
                    // writer remembers may be the poisoned floor.
                    self.rebases = rebases;
                    self.last_commit = last_commit;
                }
                head
            }
            Err(e) => {
                let _ = exec(&self.conn, "ROLLBACK");
                return Err(Abort::Failed(e));
            }
        };
        self.chain = Chain::resume(start_head);
        // One commit time per batch, checked against jumps and the floor (see
        // `CommitClock`); a batch with a rebase takes the clock's reading as it is.
        let stamped = if commits.iter().any(|(p, _)| p.write.rebase_clock) {
            Ok(self.clock.rebase())
        } else {
            self.clock.stamp(self.last_commit)
        };
        let at = match stamped {
            Ok(at) => at,
            Err(alarm) => {
                // Nothing is applied: every write is refused (and the transaction rolled back).
                return Ok(Applied {
                    at: self.last_commit,
                    start_head,
                    results: commits.iter().map(|_| Err(alarm.into())).collect(),
                    changed: Vec::new(),
                });
            }
        };
        let several = commits.len() > 1;
        let mut results = Vec::with_capacity(commits.len());
        let mut changed = Vec::new();
        for (prepared, _) in commits.iter_mut() {
            let head_before = self.chain.head();
            let outcome = if isolate {
                exec(&self.conn, "SAVEPOINT w").and_then(|()| self.apply(prepared, at))
            } else {
                self.apply(prepared, at)
            };
            match outcome {
                Ok(()) => {
                    if isolate {
                        let _ = exec(&self.conn, "RELEASE w");
                    }
                    if let Some(t) = &prepared.write.ticket {
                        changed.push(ticket_of(t).id());
                    }
                    results.push(Ok(self.chain.head()));
                }
                Err(e) => {
                    if self.conn.is_autocommit() {
                        // SQLite rolled the whole transaction back by itself (I/O error, disk
                        // full, …): the writes applied before this one are gone too, and the
                        // ones after it would run outside any transaction. Answer everyone.
                        self.chain = Chain::resume(start_head);
                        return Err(Abort::Failed(e));
                    }
                    if isolate {
                        let _ = exec(&self.conn, "ROLLBACK TO w");
                        let _ = exec(&self.conn, "RELEASE w");
                    } else if several {
                        let _ = exec(&self.conn, "ROLLBACK");
                        self.chain = Chain::resume(start_head);
                        return Err(Abort::Refused);
                    }
                    // (A lone write that failed is rolled back with its transaction.)
                    self.chain = Chain::resume(head_before);
                    results.push(Err(e));
                }
            }
        }
        Ok(Applied {
            at,
            start_head,
            results,
            changed,
        })
    }

    /// Applies one write (inside its savepoint, if any). Its audit records move into the
    /// chain and back into `write.audit`, so a write applied in a pass that is rolled back can
    /// be applied again, without copying the records.
    ///
    /// The ticket goes first: a compare-and-swap that fails on a write with a rebase has
    /// changed nothing yet, so the write is replaced by its rebase on the stored ticket (see
    /// [`Write::rebase`]) and applied as that.
    fn apply(&mut self, prepared: &mut Prepared, at: Timestamp) -> Result<(), StoreError> {
        check_limits(&prepared.write, at, self.nonce_horizon)?;
        match prepared.write_ticket(&self.conn) {
            Err(StoreError::VersionConflict { ticket, expected })
                if prepared.write.rebase.is_some() =>
            {
                self.rebase(prepared, at, ticket, expected)?;
                check_limits(&prepared.write, at, self.nonce_horizon)?;
                prepared.write_ticket(&self.conn)?;
            }
            other => other?,
        }
        let write = &mut prepared.write;
        if let Some(agent) = &write.unless_frozen {
            if let Some(freeze) = freeze_covering(&self.conn, agent)? {
                return Err(StoreError::Frozen {
                    scope: freeze.scope,
                    reason: freeze.reason,
                });
            }
        }
        for nonce in &write.nonces {
            consume_nonce(&self.conn, nonce)?;
        }
        if let Some(d) = &write.decision {
            self.conn
                .prepare_cached(
                    "INSERT INTO decisions (ticket_id, person, verdict, refusal, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        d.ticket.as_uuid().as_bytes(),
                        d.person.as_ref().map(|p| p.as_str()),
                        d.verdict,
                        d.refusal,
                        d.at.as_unix_millis(),
                    ])
                })
                .map_err(sql_err)?;
        }
        if !write.audit.is_empty() {
            failpoint("before_audit");
        }
        if self
            .chain
            .head()
            .seq
            .saturating_add(write.audit.len() as u64)
            > MAX_SEQ
        {
            return Err(StoreError::Corrupt(format!(
                "the audit chain is full at seq {}",
                self.chain.head().seq
            )));
        }
        let records = std::mem::take(&mut write.audit);
        let first_seq = self.chain.head().seq + 1;
        let mut inserted = Ok(());
        for record in records {
            if inserted.is_err() {
                write.audit.push(record);
                continue;
            }
            // Cannot fail: the room left in the chain was checked above.
            let event = self
                .chain
                .append(record)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            inserted = codec::insert_event(&self.conn, &event, at)
                .and_then(|()| codec::insert_texts(&self.conn, &event));
            write.audit.push(event.into_parts().1);
        }
        inserted?;
        for text in &write.erase {
            codec::erase_text(&self.conn, text, first_seq)?;
        }
        for row in &write.outbox {
            self.conn
                .prepare_cached(
                    "INSERT INTO outbox (id, ticket_id, channel, payload, due_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        row.id.as_bytes(),
                        row.ticket.as_uuid().as_bytes(),
                        row.channel,
                        row.payload.to_string(),
                        row.due.as_unix_millis(),
                    ])
                })
                .map_err(sql_err)?;
        }
        for update in &write.outbox_updates {
            update_outbox(&self.conn, update)?;
        }
        if let Some(change) = &write.freeze {
            change_freeze(&self.conn, change, at)?;
        }
        if write.rebase_clock {
            self.conn
                .prepare_cached("INSERT INTO clock_rebases (at, floor_before) VALUES (?1, ?2)")
                .and_then(|mut s| {
                    s.execute(params![
                        at.as_unix_millis(),
                        self.last_commit.as_unix_millis()
                    ])
                })
                .map_err(sql_err)?;
        }
        Ok(())
    }
}

impl Writer {
    /// Forgets at most `limit` nonces whose expiry is at or before the newest commit recorded
    /// in the file, and raises the file's nonce horizon to the latest expiry forgotten. A write
    /// carrying a forgotten nonce is refused as too late (see `check_limits`): its commit time
    /// is past the nonce's expiry, and even if an operator stepped the commit floor back
    /// ([`Write::rebase_clock`]) the horizon, which never goes back, still covers the nonce.
    fn prune_nonces(&mut self, limit: usize) -> Result<usize, StoreError> {
        exec(&self.conn, "BEGIN IMMEDIATE")?;
        let pruned = load_tail(&self.conn).and_then(|(_, durable)| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let latest: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT max(expires_at) FROM (SELECT expires_at FROM nonces \
                     WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
                )
                .and_then(|mut s| {
                    s.query_row(params![durable.as_unix_millis(), limit], |r| r.get(0))
                })
                .map_err(sql_err)?;
            let Some(latest) = latest else { return Ok(0) };
            self.conn
                .prepare_cached(
                    "INSERT INTO nonce_horizon (id, forgotten_before) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET \
                     forgotten_before = max(forgotten_before, excluded.forgotten_before)",
                )
                .and_then(|mut s| s.execute(params![latest]))
                .map_err(sql_err)?;
            self.conn
                .prepare_cached(
                    "DELETE FROM nonces WHERE nonce IN \
                     (SELECT nonce FROM nonces WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![latest, limit]))
                .map_err(sql_err)
        });
        match pruned {
            Ok(n) => exec(&self.conn, "COMMIT").map(|()| n),
            Err(e) => {
                let _ = exec(&self.conn, "ROLLBACK");
                Err(e)
            }
        }
    }

    /// Replaces `prepared` by its rebase on the ticket as this transaction sees it, or answers
    /// the version conflict the rebase declines.
    fn rebase(
        &self,
        prepared: &mut Prepared,
        at: Timestamp,
        ticket: crate::id::TicketId,
        expected: u64,
    ) -> Result<(), StoreError> {
        let conflict = || StoreError::VersionConflict { ticket, expected };
        let Some(rebase) = prepared.write.rebase.clone() else {
            return Err(conflict());
        };
        let body: String = self
            .conn
            .prepare_cached("SELECT body FROM tickets WHERE id = ?1")
            .and_then(|mut s| s.query_row(params![ticket.as_uuid().as_bytes()], |r| r.get(0)))
            .map_err(sql_err)?;
        let current = codec::ticket_from_body(&body)?;
        let mut rebased = rebase.apply(&current, at).ok_or_else(conflict)?;
        if let Some(t) = &rebased.ticket {
            if ticket_of(t).id() != ticket {
                return Err(StoreError::InvalidWrite(format!(
                    "a rebase of a write on ticket {ticket} writes ticket {}",
                    ticket_of(t).id()
                )));
            }
        }
        rebased.rebase = Some(rebase);
        *prepared = Prepared::new(rebased)?;
        Ok(())
    }
}

impl Prepared {
    /// Inserts or compare-and-swaps the write's ticket, if it has one.
    fn write_ticket(&self, conn: &Connection) -> Result<(), StoreError> {
        match (&self.write.ticket, &self.row) {
            (Some(t), Some(row)) => write_ticket(conn, t, row),
            _ => Ok(()),
        }
    }
}

/// Refuses a write committed at or after its limit, or at or after the expiry of a nonce it
/// consumes (the store may forget a nonce once it expired), or consuming a nonce that expired
/// at or before the `horizon` of forgotten nonces.
fn check_limits(write: &Write, at: Timestamp, horizon: Timestamp) -> Result<(), StoreError> {
    if let Some(forgotten) = write.nonces.iter().find(|n| n.expires <= horizon) {
        return Err(StoreError::TooLate {
            at: at.max(horizon),
            limit: forgotten.expires,
        });
    }
    let limit = write
        .nonces
        .iter()
        .map(|n| n.expires)
        .chain(write.valid_before)
        .min();
    match limit {
        Some(limit) if at >= limit => Err(StoreError::TooLate { at, limit }),
        _ => Ok(()),
    }
}

/// The file's horizon of forgotten nonces (`EPOCH` when none was ever forgotten).
fn load_nonce_horizon(conn: &Connection) -> Result<Timestamp, StoreError> {
    let forgotten: Option<i64> = conn
        .prepare_cached("SELECT forgotten_before FROM nonce_horizon WHERE id = 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(sql_err)?;
    Ok(forgotten.map_or(Timestamp::EPOCH, Timestamp::from_unix_millis))
}

/// How a freeze's scope is stored.
fn scope_key(scope: &FreezeScope) -> String {
    match scope {
        FreezeScope::All => "all".to_owned(),
        FreezeScope::Agent(agent) => agent_scope_key(agent),
    }
}

fn agent_scope_key(agent: &AgentId) -> String {
    format!("agent:{}", agent.as_str())
}

fn scope_of(key: &str) -> Result<FreezeScope, StoreError> {
    if key == "all" {
        return Ok(FreezeScope::All);
    }
    key.strip_prefix("agent:")
        .and_then(|a| AgentId::new(a).ok())
        .map(FreezeScope::Agent)
        .ok_or_else(|| StoreError::Corrupt(format!("freeze scope `{key}`")))
}

fn freeze_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Freeze, StoreError>> {
    let (scope, reason, since, by): (String, String, i64, Option<String>) =
        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
    Ok((|| {
        let by = by
            .map(|p| PersonId::new(p).map_err(|e| StoreError::Corrupt(format!("freeze by: {e}"))))
            .transpose()?;
        Ok(Freeze::new(
            scope_of(&scope)?,
            reason,
            Timestamp::from_unix_millis(since),
            by,
        ))
    })())
}

/// The freeze in force that covers `agent`, the global one first (read inside the
/// transaction that would commit the guarded write).
fn freeze_covering(conn: &Connection, agent: &AgentId) -> Result<Option<Freeze>, StoreError> {
    conn.prepare_cached(
        "SELECT scope, reason, since, by FROM freezes WHERE scope IN ('all', ?1) \
         ORDER BY scope = 'all' DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![agent_scope_key(agent)], freeze_from_row)
            .optional()
    })
    .map_err(sql_err)?
    .transpose()
}

/// Every freeze in force, the global one first.
pub(super) fn load_freezes(conn: &Connection) -> Result<Vec<Freeze>, StoreError> {
    let mut s = conn
        .prepare_cached(
            "SELECT scope, reason, since, by FROM freezes ORDER BY scope = 'all' DESC, scope",
        )
        .map_err(sql_err)?;
    let rows = s.query_map([], freeze_from_row).map_err(sql_err)?;
    rows.map(|r| r.map_err(sql_err)?).collect()
}

fn change_freeze(
    conn: &Connection,
    change: &FreezeChange,
    at: Timestamp,
) -> Result<(), StoreError> {
    match change {
        FreezeChange::Set { scope, reason, by } => conn
            .prepare_cached(
                "INSERT OR REPLACE INTO freezes (scope, reason, since, by) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    scope_key(scope),
                    reason,
                    at.as_unix_millis(),
                    by.as_ref().map(PersonId::as_str),
                ])
            }),
        FreezeChange::Lift { scope } => conn
            .prepare_cached("DELETE FROM freezes WHERE scope = ?1")
            .and_then(|mut s| s.execute(params![scope_key(scope)])),
    }
    .map(|_| ())
    .map_err(sql_err)
}

/// The newest clock rebase's id (0 if the floor was never rebased).
pub(super) fn load_rebases(conn: &Connection) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT coalesce(max(id), 0) FROM clock_rebases")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql_err)
}

/// Records a delivery outcome on a row still pending at the claimed attempts count.
fn update_outbox(conn: &Connection, update: &OutboxUpdate) -> Result<(), StoreError> {
    let id = update.id.as_bytes();
    let attempts = i64::from(update.attempts);
    let changed = match &update.outcome {
        OutboxOutcome::Delivered { receipt } => conn
            .prepare_cached(
                "UPDATE outbox SET status = 'delivered', receipt = ?3 \
                 WHERE id = ?1 AND status = 'pending' AND attempts = ?2",
            )
            .and_then(|mut s| s.execute(params![id, attempts, receipt.to_string()])),
        OutboxOutcome::Retry { due, error } => conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, due_at = ?3, last_error = ?4 \
                 WHERE id = ?1 AND status = 'pending' AND attempts = ?2",
            )
            .and_then(|mut s| s.execute(params![id, attempts, due.as_unix_millis(), error])),
        OutboxOutcome::Dead { error } => conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, status = 'dead', last_error = ?3 \
                 WHERE id = ?1 AND status = 'pending' AND attempts = ?2",
            )
            .and_then(|mut s| s.execute(params![id, attempts, error])),
    }
    .map_err(sql_err)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::OutboxConflict { id: update.id })
    }
}

/// Runs one transaction-control statement from the statement cache (no re-parsing per commit).
fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(sql_err)
}

fn ticket_of(t: &TicketWrite) -> &crate::ticket::Ticket {
    match t {
        TicketWrite::Insert(t) => t,
        TicketWrite::Update { ticket, .. } => ticket,
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

fn consume_nonce(conn: &Connection, nonce: &NonceUse) -> Result<(), StoreError> {
    let inserted = conn
        .prepare_cached("INSERT INTO nonces (nonce, expires_at) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![&nonce.nonce[..], nonce.expires.as_unix_millis()]));
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_constraint(&e) => Err(StoreError::NonceReused),
        Err(e) => Err(sql_err(e)),
    }
}

fn write_ticket(
    conn: &Connection,
    write: &TicketWrite,
    row: &codec::TicketRow,
) -> Result<(), StoreError> {
    match write {
        TicketWrite::Insert(ticket) => {
            if ticket.version() != 1 {
                return Err(StoreError::InvalidWrite(format!(
                    "a new ticket must have version 1, not {}",
                    ticket.version()
                )));
            }
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tickets (id, agent, principal, idempotency_key, state, \
                     version, digest, created_at, updated_at, due_at, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        row.id,
                        row.agent,
                        row.principal,
                        row.key,
                        row.state,
                        row.version,
                        row.digest,
                        row.created_at,
                        row.updated_at,
                        row.due_at,
                        row.body,
                    ])
                });
            match inserted {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => {
                    let existing: Option<Vec<u8>> = conn
                        .query_row(
                            "SELECT id FROM tickets \
                             WHERE agent = ?1 AND principal = ?2 AND idempotency_key = ?3",
                            params![row.agent, row.principal, row.key],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(sql_err)?;
                    return match existing {
                        Some(id) => Err(StoreError::DuplicateKey {
                            existing: codec::ticket_id(&id)?,
                        }),
                        None => Err(sql_err(e)),
                    };
                }
                Err(e) => return Err(sql_err(e)),
            }
            insert_groups(conn, ticket, &row.id)
        }
        TicketWrite::Update {
            ticket,
            expected_version,
        } => {
            if expected_version.checked_add(1) != Some(ticket.version()) {
                return Err(StoreError::InvalidWrite(format!(
                    "an update from version {expected_version} must write the next version, \
                     not {}",
                    ticket.version()
                )));
            }
            let changed = conn
                .prepare_cached(
                    "UPDATE tickets SET state = ?3, version = ?4, digest = ?5, updated_at = ?6, \
                     due_at = ?7, body = ?8 WHERE id = ?1 AND version = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        row.id,
                        *expected_version as i64,
                        row.state,
                        row.version,
                        row.digest,
                        row.updated_at,
                        row.due_at,
                        row.body,
                    ])
                })
                .map_err(sql_err)?;
            if changed == 1 {
                // An edit re-rules the action: the groups its requirements name may change.
                conn.prepare_cached("DELETE FROM ticket_groups WHERE ticket_id = ?1")
                    .and_then(|mut s| s.execute(params![row.id]))
                    .map_err(sql_err)?;
                return insert_groups(conn, ticket, &row.id);
            }
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM tickets WHERE id = ?1)",
                    params![row.id],
                    |r| r.get(0),
                )
                .map_err(sql_err)?;
            Err(if exists {
                StoreError::VersionConflict {
                    ticket: ticket.id(),
                    expected: *expected_version,
                }
            } else {
                StoreError::NotFound(ticket.id())
            })
        }
    }
}

/// Indexes the groups named by the ticket's review requirements.
fn insert_groups(
    conn: &Connection,
    ticket: &crate::ticket::Ticket,
    id: &[u8; 16],
) -> Result<(), StoreError> {
    let mut groups = conn
        .prepare_cached("INSERT OR IGNORE INTO ticket_groups (grp, ticket_id) VALUES (?1, ?2)")
        .map_err(sql_err)?;
    for g in codec::groups_of(ticket) {
        groups.execute(params![g.as_str(), id]).map_err(sql_err)?;
    }
    Ok(())
}

/// The chain head stored in the database.
pub(super) fn load_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    load_tail(conn).map(|(head, _)| head)
}

/// The chain head and the commit time of the newest audit event ([`Timestamp::EPOCH`] for an
/// empty chain): commit times resume from it, so they never go backwards across a reopen, a
/// clock set back between two runs, or another process writing to the same file.
pub(super) fn load_tail(conn: &Connection) -> Result<(ChainHead, Timestamp), StoreError> {
    let row: Option<(i64, Vec<u8>, i64)> = conn
        .prepare_cached(
            "SELECT seq, hash, committed_at FROM audit_events ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(sql_err)?;
    match row {
        None => Ok((ChainHead::GENESIS, Timestamp::EPOCH)),
        Some((seq, hash, committed_at)) => Ok((
            ChainHead {
                seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))?,
                hash: ChainHash::from_bytes(codec::hash32(&hash)?),
            },
            Timestamp::from_unix_millis(committed_at),
        )),
    }
}
