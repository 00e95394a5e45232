//! Connection setup and migrations by `PRAGMA user_version`.

use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::Synchronous;
use crate::backend::StoreError;

/// Migrations in order; migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_outbox_order.sql"),
    include_str!("migrations/0003_operator_state.sql"),
    include_str!("migrations/0004_audit_texts.sql"),
    include_str!("migrations/0005_requester_scope.sql"),
];

/// The schema version this code writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn sql_err(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

/// Pragmas for every connection.
pub(crate) fn configure(
    conn: &Connection,
    synchronous: Synchronous,
    busy_timeout: Duration,
    file_backed: bool,
) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout).map_err(sql_err)?;
    if file_backed {
        // Switching a new file to WAL needs an exclusive lock, and SQLite answers `SQLITE_BUSY`
        // at once (without the busy handler) while another connection is switching the same
        // file: retry for as long as the busy timeout allows.
        let give_up = Instant::now() + busy_timeout;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == ErrorCode::DatabaseBusy && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => break other.map_err(sql_err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "could not enable WAL journal mode (got `{mode}`)"
            )));
        }
    }
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    // `secure_delete = FAST`: the bytes of an erased audit text are overwritten in the pages
    // that held them (where that costs no extra I/O), not left in the file's free space.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF; \
         PRAGMA temp_store = MEMORY; PRAGMA secure_delete = FAST;"
    ))
    .map_err(sql_err)?;
    Ok(())
}

/// Brings the schema up to [`SCHEMA_VERSION`]; refuses a database written by newer code.
///
/// The version is read under the write lock (`BEGIN IMMEDIATE`), so two processes opening a
/// new file at the same time do not both run the same migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // A migration may rebuild a table other tables refer to (SQLite's procedure for changes
    // `ALTER TABLE` cannot make): foreign keys are off while migrations run (the pragma has
    // no effect inside a transaction) and checked before they are on again.
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(sql_err)?;
    let migrated = migrate_all(conn);
    let checked = migrated.and_then(|()| {
        let violation: Option<String> = conn
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        match violation {
            Some(table) => Err(StoreError::Corrupt(format!(
                "a migration left a row of `{table}` without its parent"
            ))),
            None => Ok(()),
        }
    });
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql_err)?;
    checked
}

fn migrate_all(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql_err)?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Ok(index) = usize::try_from(found) else {
            return Err(StoreError::Corrupt(format!(
                "negative schema version {found}"
            )));
        };
        let Some(sql) = MIGRATIONS.get(index) else {
            return Ok(()); // up to date; the read-only transaction ends on drop
        };
        tx.execute_batch(sql).map_err(sql_err)?;
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(sql_err)?;
        tx.commit().map_err(sql_err)?;
    }
}
