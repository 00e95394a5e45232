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
use crate::audit::{Chain, ChainHash, ChainHead};
use crate::backend::{Clock, Committed, NonceUse, StoreError, TicketWrite, Write};
use crate::oneshot;
use crate::timestamp::Timestamp;

/// Work for the writer thread.
pub(super) enum Job {
    /// Commit one write.
    Commit(Box<Write>, oneshot::Sender<Result<Committed, StoreError>>),
    /// Run a closure on the writer's connection outside any transaction (in-memory stores
    /// read here, since they have no separate readers).
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Stop after the jobs queued before this one.
    Shutdown(oneshot::Sender<()>),
}

pub(super) type Listener = crate::backend::CommitListener;

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) chain: Chain,
    pub(super) last_commit: Timestamp,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) max_batch: usize,
    pub(super) listener: Arc<std::sync::Mutex<Option<Listener>>>,
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
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
        for reply in shutdown {
            reply.send(());
        }
    }

    #[allow(clippy::type_complexity)]
    fn commit_batch(
        &mut self,
        commits: Vec<(Box<Write>, oneshot::Sender<Result<Committed, StoreError>>)>,
    ) {
        let at = self.clock.now().max(self.last_commit);
        let start_head = self.chain.head();
        let mut results = Vec::with_capacity(commits.len());
        let mut changed = Vec::new();
        let begun = self.conn.execute_batch("BEGIN IMMEDIATE").map_err(sql_err);
        if let Err(e) = begun {
            let msg = e.to_string();
            for (_, reply) in commits {
                reply.send(Err(StoreError::Corrupt(format!("could not begin: {msg}"))));
            }
            return;
        }
        for (write, reply) in commits {
            let head_before = self.chain.head();
            let outcome = self
                .conn
                .execute_batch("SAVEPOINT w")
                .map_err(sql_err)
                .and_then(|()| self.apply(&write, at));
            match outcome {
                Ok(()) => {
                    let _ = self.conn.execute_batch("RELEASE w");
                    if let Some(t) = &write.ticket {
                        changed.push(ticket_of(t).id());
                    }
                    results.push((reply, Ok(self.chain.head())));
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK TO w; RELEASE w");
                    self.chain = Chain::resume(head_before);
                    results.push((reply, Err(e)));
                }
            }
        }
        failpoint("before_commit");
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                self.last_commit = at;
                failpoint("after_commit");
                if !changed.is_empty() {
                    let listener = crate::backend::lock(&self.listener).clone();
                    if let Some(listener) = listener {
                        listener(&changed);
                    }
                }
                for (reply, result) in results {
                    reply.send(result.map(|head| Committed { at, head }));
                }
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.chain = Chain::resume(start_head);
                let msg = e.to_string();
                for (reply, _) in results {
                    reply.send(Err(StoreError::Corrupt(format!("commit failed: {msg}"))));
                }
            }
        }
    }

    /// Applies one write inside its savepoint.
    fn apply(&mut self, write: &Write, at: Timestamp) -> Result<(), StoreError> {
        if let Some(limit) = write.valid_before {
            if at >= limit {
                return Err(StoreError::TooLate { at, limit });
            }
        }
        for nonce in &write.nonces {
            consume_nonce(&self.conn, nonce)?;
        }
        if let Some(t) = &write.ticket {
            write_ticket(&self.conn, t)?;
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
        for record in &write.audit {
            let event = self
                .chain
                .append(record.clone())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            codec::insert_event(&self.conn, &event)?;
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
        Ok(())
    }
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

fn write_ticket(conn: &Connection, write: &TicketWrite) -> Result<(), StoreError> {
    match write {
        TicketWrite::Insert(ticket) => {
            if ticket.version() != 1 {
                return Err(StoreError::Corrupt(format!(
                    "a new ticket must have version 1, not {}",
                    ticket.version()
                )));
            }
            let row = codec::TicketRow::of(ticket)?;
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO tickets (id, agent, idempotency_key, state, version, digest, \
                     created_at, updated_at, due_at, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        row.id,
                        row.agent,
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
                            "SELECT id FROM tickets WHERE agent = ?1 AND idempotency_key = ?2",
                            params![row.agent, row.key],
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
            let mut groups = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ticket_groups (grp, ticket_id) VALUES (?1, ?2)",
                )
                .map_err(sql_err)?;
            for g in codec::groups_of(ticket) {
                groups
                    .execute(params![g.as_str(), row.id])
                    .map_err(sql_err)?;
            }
            Ok(())
        }
        TicketWrite::Update {
            ticket,
            expected_version,
        } => {
            if ticket.version() != expected_version + 1 {
                return Err(StoreError::Corrupt(format!(
                    "an update from version {expected_version} must write version {}, not {}",
                    expected_version + 1,
                    ticket.version()
                )));
            }
            let row = codec::TicketRow::of(ticket)?;
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
                return Ok(());
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

/// The chain head stored in the database.
pub(super) fn load_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
    match row {
        None => Ok(ChainHead::GENESIS),
        Some((seq, hash)) => Ok(ChainHead {
            seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))?,
            hash: ChainHash::from_bytes(codec::hash32(&hash)?),
        }),
    }
}

/// Test-only fault injection: with the `failpoints` feature and
/// `AGENT_HANDOFF_FAILPOINT=<name>` set, the process kills itself with SIGKILL at that point,
/// exactly as a crash would (no destructors, no flush).
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) {
    if std::env::var("AGENT_HANDOFF_FAILPOINT").as_deref() == Ok(name) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // SIGKILL is not deliverable late; never continue past a failpoint.
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint(_: &str) {}
