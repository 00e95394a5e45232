//! WAL checkpoints on their own thread, off the commit path (`synchronous=NORMAL` only).
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that pushes the WAL past its
//! threshold: it copies the WAL's pages into the database file and fsyncs the WAL and that
//! file while the batch's callers wait for their answers. With `synchronous=NORMAL` those are
//! the only fsyncs on the commit path, so here a second connection does the checkpoint on its
//! own thread, asked by the writer every [`EVERY`] committed writes, in parallel with the
//! writer's next batches. A `PASSIVE` checkpoint never blocks the writer or the readers, and
//! syncs as the automatic one does, so durability is unchanged. (Measured against the
//! automatic checkpoint in interleaved rounds, one process: NORMAL, one caller +17 to +49 %,
//! 32 callers +9 to +39 %; far more while other work made the disk's fsyncs take
//! milliseconds.)
//!
//! With `synchronous=FULL` (the default) every commit already waits for an fsync of the WAL,
//! and a checkpoint running beside it puts the database file's writes and fsync on the disk
//! next to that fsync: the same rounds measured one caller 3 to 5 % slower, and 32 callers 2 %
//! slower in their fastest round though 15 % faster in the median one. No clear gain, so FULL
//! keeps SQLite's automatic checkpoint on the writer.
//!
//! The writer keeps SQLite's automatic checkpoint as a backstop at [`BACKSTOP_PAGES`]: a
//! checkpoint that runs beside a busy writer seldom finds the WAL fully copied at the moment a
//! new transaction starts, which is when SQLite rewinds the WAL to its start, so without the
//! backstop the file would grow for as long as writes keep coming. The backstop's checkpoint
//! finds most pages already copied, and rewinds the WAL.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::schema::sql_err;
use crate::backend::StoreError;

/// Committed writes between two requests for a checkpoint: a proposal adds three to five WAL
/// pages, so this is about SQLite's default automatic checkpoint of 1 000 pages.
pub(super) const EVERY: u64 = 256;

/// WAL pages after which the writer checkpoints on its own (`wal_autocheckpoint`).
pub(super) const BACKSTOP_PAGES: u32 = 8_000;

/// The writer's handle on the checkpoint thread.
pub(super) struct Checkpointer {
    /// Holds at most one pending request: asking again while one waits is a no-op.
    ask: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Writes committed since the last request.
    since: u64,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a read-write connection to the store's file.
    pub(super) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (ask, asked) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("agent-handoff-checkpoint".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    // Busy (another checkpoint running, e.g. another process's) or failed:
                    // the next request, or the writer's backstop, tries again.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(StoreError::backend)?;
        Ok(Self {
            ask: Some(ask),
            thread: Some(thread),
            since: 0,
        })
    }

    /// Counts `writes` newly committed, and asks for a checkpoint every [`EVERY`].
    pub(super) fn committed(&mut self, writes: usize) {
        self.since += writes as u64;
        if self.since >= EVERY {
            self.since = 0;
            if let Some(ask) = &self.ask {
                let _ = ask.try_send(());
            }
        }
    }

    /// Stops the thread after the checkpoint it may be running.
    pub(super) fn stop(&mut self) {
        self.ask.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pragmas for the checkpoint connection (the writer's, with `synchronous` as configured).
pub(super) fn open(
    path: &std::path::Path,
    configure: impl FnOnce(&Connection) -> Result<(), StoreError>,
) -> Result<Connection, StoreError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err)?;
    configure(&conn)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::audit::{Actor, AuditRecord};
    use crate::backend::{Store, Write};
    use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
    use crate::timestamp::Timestamp;

    /// With NORMAL, the checkpoint thread copies committed pages into the database file long
    /// before the writer's backstop would: after a few hundred small commits (some 1 000 WAL
    /// pages, an eighth of the backstop) the file holds what they wrote.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn normal_stores_checkpoint_on_their_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite3");
        let options = SqliteOptions::new().with_synchronous(Synchronous::Normal);
        let store = SqliteStore::open_with(&path, options).await.unwrap();
        let filler = "x".repeat(2000);
        let writes = 2 * super::EVERY;
        for n in 0..writes {
            let record = AuditRecord {
                texts: Vec::new(),
                ticket: None,
                at: Timestamp::from_unix_millis(1_700_000_000_000),
                kind: "checkpoint_test".into(),
                actor: Actor::System,
                data: serde_json::json!({ "n": n, "filler": filler }),
            };
            let write = Write {
                audit: vec![record],
                ..Write::default()
            };
            store.commit(write).await.unwrap();
        }
        // Every event is over 2 000 bytes: the file must hold at least half of them.
        let expected = writes * 2000 / 2;
        let mut size = 0;
        for _ in 0..400 {
            size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            size >= expected,
            "the database file holds {size} bytes after {writes} commits of 2 kB, \
             so nothing was checkpointed"
        );
        store.shutdown().await.unwrap();
    }
}
