//! The bundled SQLite store: the public store conformance suite on a file and in memory, then
//! what is specific to SQLite — append-only triggers under raw SQL, the schema version guard,
//! WAL, online backup, reader threads, several stores (processes) on one file.
//!
//! Not tested: `synchronous` is a per-connection setting and the store exposes no accessor for
//! its writer connection, so a second connection cannot observe it.
#![cfg(feature = "sqlite")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_handoff::audit::{Checkpoint, CheckpointKey, Verifier};
use agent_handoff::backend::{FreezeChange, TicketFilter, Write};
use agent_handoff::conformance::fixtures::*;
use agent_handoff::conformance::{Env, Harness, Misfile};
use agent_handoff::{
    FreezeScope, ManualClock, SqliteOptions, SqliteStore, Store, StoreError, TicketId,
};

/// The file store: durable, with commit listeners, and index columns a raw connection can
/// misfile.
fn sqlite_file() -> Harness {
    Harness::new(|env: Env| async move { file_store(&env).await })
        .durable()
        .with_commit_listeners()
        .with_misfile(|env: Env, seq: u64, edit: Misfile| async move { misfile(&env, seq, edit) })
}

agent_handoff::store_conformance!(sqlite_file, sqlite_file());

agent_handoff::store_conformance!(
    sqlite_memory,
    Harness::new(|env: Env| async move {
        SqliteStore::in_memory_with(SqliteOptions::new().with_clock(env.clock()))
            .await
            .unwrap()
    })
    .with_commit_listeners()
);

/// Edits an index column of event `seq` in the (shut down) file store of `env`, through a
/// connection of its own with the append-only triggers lifted for the edit.
fn misfile(env: &Env, seq: u64, edit: Misfile) {
    use rusqlite::types::Value;
    let (column, value) = match edit {
        Misfile::Ticket(ticket) => (
            "ticket_id",
            ticket.map_or(Value::Null, |t| {
                Value::Blob(t.as_uuid().as_bytes().to_vec())
            }),
        ),
        Misfile::Kind(kind) => ("kind", Value::Text(kind)),
        Misfile::At(at) => ("at", Value::Integer(at.as_unix_millis())),
        other => panic!("no such column to misfile: {other:?}"),
    };
    let mut conn = raw(env);
    let tx = conn.transaction().unwrap();
    let triggers: Vec<String> = tx
        .prepare(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tx.execute_batch("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
        .unwrap();
    let n = tx
        .execute(
            &format!("UPDATE audit_events SET {column} = ?1 WHERE seq = ?2"),
            rusqlite::params![value, seq as i64],
        )
        .unwrap();
    assert_eq!(n, 1, "event {seq} exists");
    for sql in triggers {
        tx.execute_batch(&sql).unwrap();
    }
    tx.commit().unwrap();
}

async fn file_store(env: &Env) -> SqliteStore {
    SqliteStore::open_with(
        env.path("store.sqlite3"),
        SqliteOptions::new().with_clock(env.clock()),
    )
    .await
    .unwrap()
}

/// A connection of our own to the store's file, as another process would have.
fn raw(env: &Env) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(env.path("store.sqlite3")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

async fn some_tickets(store: &SqliteStore, n: usize) -> Vec<TicketId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let p = propose("agent-a", &format!("key-{i}"), review(), ts(T0));
        store.commit(insert(&p)).await.unwrap();
        ids.push(p.ticket.id());
    }
    ids
}

#[tokio::test]
async fn audit_events_reject_update_and_delete_even_through_raw_sql() {
    let env = Env::new();
    let store = file_store(&env).await;
    some_tickets(&store, 3).await;
    let before = chain(&store).await;

    let conn = raw(&env);
    for sql in [
        "UPDATE audit_events SET kind = 'approved' WHERE seq = 1",
        "UPDATE audit_events SET bytes = x'00', hash = prev_hash",
        "DELETE FROM audit_events WHERE seq = 2",
        "DELETE FROM audit_events",
    ] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "`{sql}` must abort: {err}"
        );
    }
    drop(conn);
    assert_eq!(chain(&store).await, before, "nothing changed");
    verify_chain(&store).await;
    store.shutdown().await.unwrap();
}

#[tokio::test]
async fn refuses_a_database_written_by_newer_code() {
    let env = Env::new();
    let store = file_store(&env).await;
    some_tickets(&store, 1).await;
    store.shutdown().await.unwrap();
    drop(store);

    let supported: i64 = raw(&env)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(supported >= 1, "a new store records its schema version");
    raw(&env)
        .pragma_update(None, "user_version", supported + 1)
        .unwrap();
    match SqliteStore::open(env.path("store.sqlite3")).await {
        Err(StoreError::SchemaTooNew {
            found,
            supported: ours,
        }) => assert_eq!((found, ours), (supported + 1, supported)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let after: i64 = raw(&env)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after, supported + 1, "the newer database is left as it was");

    raw(&env).pragma_update(None, "user_version", -1).unwrap();
    assert!(matches!(
        SqliteStore::open(env.path("store.sqlite3")).await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn a_file_store_runs_in_wal_mode() {
    let env = Env::new();
    let store = file_store(&env).await;
    some_tickets(&store, 1).await;
    let mode: String = raw(&env)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    assert!(env.path("store.sqlite3-wal").exists());
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_copies_tickets_chain_and_checkpoints_while_serving() {
    let env = Env::new();
    let store = Arc::new(file_store(&env).await);
    let ids = some_tickets(&store, 5).await;
    let key = CheckpointKey::new("audit.test/1", &[3; 32]).unwrap();
    let checkpoint =
        Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
    store.save_checkpoint(&checkpoint).await.unwrap();

    // Commits keep arriving while the backup runs.
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..50 {
                let p = propose("agent-b", &format!("during-{i}"), allow(), ts(T0));
                store.commit(insert(&p)).await.unwrap();
            }
        })
    };
    let copy = env.path("backup.sqlite3");
    store.backup(&copy).await.unwrap();
    writer.await.unwrap();

    let ok: String = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let restored = SqliteStore::open(&copy).await.unwrap();
    assert_eq!(
        restored.latest_checkpoint().await.unwrap().as_ref(),
        Some(&checkpoint)
    );
    let events = chain(&restored).await;
    let summary = Verifier::new()
        .expect_head(checkpoint.verify(&[key]).unwrap())
        .verify(&events)
        .expect("the copy verifies against the checkpoint");
    assert_eq!(summary.head, restored.audit_head().await.unwrap());
    let original = chain(&*store).await;
    assert_eq!(
        events[..],
        original[..events.len()],
        "the copy is a prefix of the original chain"
    );
    for id in ids {
        assert_eq!(
            restored.ticket(id).await.unwrap(),
            store.ticket(id).await.unwrap()
        );
    }
    // The copy is a working store.
    let p = propose("agent-c", "after-restore", review(), ts(T0));
    restored.commit(insert(&p)).await.unwrap();
    verify_chain(&restored).await;
    restored.shutdown().await.unwrap();
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_every_acknowledged_commit() {
    let env = Env::new();
    let store = Arc::new(
        SqliteStore::open_with(
            env.path("store.sqlite3"),
            SqliteOptions::new().with_clock(env.clock()).with_readers(3),
        )
        .await
        .unwrap(),
    );
    let done = Arc::new(AtomicUsize::new(0));
    // Readers watch the head while a writer commits: it never goes back.
    let watchers: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut last = 0;
                while done.load(Ordering::SeqCst) == 0 {
                    let seq = store.audit_head().await.unwrap().seq;
                    assert!(seq >= last, "a reader saw the head go back");
                    last = seq;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for i in 0..100 {
        let p = propose("agent-a", &format!("key-{i}"), review(), ts(T0));
        let committed = store.commit(insert(&p)).await.unwrap();
        // Read-after-acknowledge, on whichever reader takes it.
        assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), Some(p.ticket));
        assert!(store.audit_head().await.unwrap().seq >= committed.head.seq);
    }
    done.store(1, Ordering::SeqCst);
    for w in watchers {
        w.await.unwrap();
    }
    let page = store
        .list_tickets(&TicketFilter {
            limit: 500,
            ..TicketFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(page.tickets.len(), 100);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_store_serves_reads_between_writes() {
    let env = Env::new();
    let store = Arc::new(
        SqliteStore::in_memory_with(SqliteOptions::new().with_clock(env.clock()))
            .await
            .unwrap(),
    );
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let p = propose("agent-a", &format!("key-{i}"), review(), ts(T0));
                store.commit(insert(&p)).await.unwrap();
                assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), Some(p.ticket));
                store.health().await.unwrap()
            })
        })
        .collect();
    for h in handles {
        assert!(h.await.unwrap().pending >= 1);
    }
    assert_eq!(store.health().await.unwrap().pending, 20);
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// Two stores on one file (as two processes would be) append to one chain: each reads the head
/// under the write lock instead of trusting what it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_keep_one_chain() {
    let env = Env::new();
    let a = Arc::new(file_store(&env).await);
    let b = Arc::new(file_store(&env).await);
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        handles.push(tokio::spawn(async move {
            let p = propose("agent-a", &format!("key-{i}"), review(), ts(T0));
            store.commit(insert(&p)).await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let per_ticket = propose("agent-a", "x", review(), ts(T0)).audit.len() as u64;
    assert_eq!(verify_chain(&*a).await.count, 40 * per_ticket);
    assert_eq!(b.audit_head().await.unwrap(), a.audit_head().await.unwrap());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A store whose clock lags another store's on the same file never commits before it.
#[tokio::test]
async fn commit_time_never_goes_backwards_across_stores_on_one_file() {
    let ahead = Env::with(Arc::new(SteppingClock::new(ts(T0 + 10_000))));
    let behind = ahead.with_clock(Arc::new(SteppingClock::new(ts(T0 + 5_000))));
    let a = file_store(&ahead).await;
    let b = file_store(&behind).await;
    let marker_write = |n| Write::new().with_audit_records(vec![marker(n, ts(T0))]);
    let first = a.commit(marker_write(1)).await.unwrap();
    let second = b.commit(marker_write(2)).await.unwrap();
    assert!(second.at >= first.at, "{second:?} after {first:?}");
    let late = Write::new().with_valid_before(ts(T0 + 7_000));
    assert!(matches!(
        b.commit(late).await,
        Err(StoreError::TooLate { .. })
    ));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A freeze committed through one store (process) refuses the next guarded write of another on
/// the same file: the check reads the file inside the guarded write's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_through_one_store_refuses_the_next_guarded_write_of_another() {
    let env = Env::new();
    let a = file_store(&env).await;
    let b = file_store(&env).await;
    let guarded = |key: &str| {
        insert(&propose("agent-a", key, review(), ts(T0))).with_freeze_guard(agent("agent-a"))
    };
    b.commit(guarded("before")).await.unwrap();
    let mut freeze = Write::default().with_freeze_change(FreezeChange::set(
        FreezeScope::Agent(agent("agent-a")),
        "incident",
        None,
    ));
    freeze.audit.push(marker(1, ts(T0)));
    a.commit(freeze).await.unwrap();
    assert!(matches!(
        b.commit(guarded("after")).await,
        Err(StoreError::Frozen { .. })
    ));
    assert_eq!(b.freezes().await.unwrap().len(), 1);
    let mut lift = Write::default()
        .with_freeze_change(FreezeChange::lift(FreezeScope::Agent(agent("agent-a"))));
    lift.audit.push(marker(2, ts(T0)));
    b.commit(lift).await.unwrap();
    a.commit(guarded("after")).await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A rebase through one store steps back the floor another store on the file remembers from
/// its own commits: that store's next commit follows its clock, not the poisoned floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebase_through_one_store_is_seen_by_another_on_the_file() {
    const DAY: i64 = 24 * 3_600_000;
    let wrong = ManualClock::new(ts(T0 + DAY));
    let right = ManualClock::new(ts(T0));
    let env_b = Env::with(Arc::new(wrong.clone()));
    let env_a = env_b.with_clock(Arc::new(right.clone()));
    let b = file_store(&env_b).await;
    let a = file_store(&env_a).await;
    let marker_write = |n| Write::new().with_audit(marker(n, ts(T0)));
    // B's clock was a day ahead when it committed; then it is corrected.
    assert_eq!(b.commit(marker_write(1)).await.unwrap().at, ts(T0 + DAY));
    wrong.step_wall(ts(T0));
    assert!(matches!(
        b.commit(marker_write(2)).await,
        Err(StoreError::FloorAhead { .. })
    ));
    assert!(matches!(
        a.commit(marker_write(3)).await,
        Err(StoreError::FloorAhead { .. })
    ));
    let rebase = marker_write(4).with_clock_rebase();
    assert_eq!(a.commit(rebase).await.unwrap().at, ts(T0));
    wrong.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        b.commit(marker_write(5)).await.unwrap().at,
        ts(T0 + 1_000),
        "B dropped the floor it remembered"
    );
    assert_eq!(b.health().await.unwrap().clock_alarm, None);
    verify_chain(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Several stores opening a new file at once create the schema once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_new_file_migrate_once() {
    for round in 0..24 {
        let env = Env::new();
        let path = env.path(&format!("new-{round}.sqlite3"));
        let opens: Vec<_> = (0..3)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SqliteStore::open(path).await })
            })
            .collect();
        for o in opens {
            let store = o.await.unwrap().expect("every concurrent open succeeds");
            store.shutdown().await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_version_2_file_is_migrated_to_requester_scoped_keys() {
    let env = Env::new();
    let carols = propose_for("agent-a", Some("carol"), "shared", review(), ts(T0));
    let alone = propose("agent-a", "own", review(), ts(T0));
    {
        let conn = raw(&env);
        conn.execute_batch(include_str!("../src/store/sqlite/migrations/0001_init.sql"))
            .unwrap();
        conn.execute_batch(include_str!(
            "../src/store/sqlite/migrations/0002_outbox_order.sql"
        ))
        .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        for t in [&carols.ticket, &alone.ticket] {
            conn.execute(
                "INSERT INTO tickets (id, agent, idempotency_key, state, version, digest, \
                 created_at, updated_at, due_at, body) VALUES (?1, 'agent-a', ?2, 'pending', 1, \
                 ?3, ?4, ?4, NULL, ?5)",
                rusqlite::params![
                    t.id().as_uuid().as_bytes(),
                    t.idempotency_key().as_str(),
                    t.action_digest().as_bytes(),
                    T0,
                    serde_json::to_string(t).unwrap(),
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO decisions (ticket_id, person, verdict, refusal, at) \
                 VALUES (?1, 'bob', 'approve', NULL, ?2)",
                rusqlite::params![t.id().as_uuid().as_bytes(), T0],
            )
            .unwrap();
        }
    }
    let store = file_store(&env).await;
    let version: i64 = raw(&env)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert!(version >= 3, "migrated, now at {version}");
    let key = carols.ticket.idempotency_key();
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", Some("carol")), key)
            .await
            .unwrap()
            .as_ref(),
        Some(&carols.ticket)
    );
    assert_eq!(
        store.ticket(alone.ticket.id()).await.unwrap().as_ref(),
        Some(&alone.ticket)
    );
    assert_eq!(store.decisions(carols.ticket.id()).await.unwrap().len(), 1);
    // Pat's proposal through the same agent under carol's key is pat's own ticket; the agent
    // on its own too; carol's key again is carol's ticket.
    for principal in [Some("pat"), None] {
        let p = propose_for("agent-a", principal, "shared", review(), ts(T0));
        store.commit(insert(&p)).await.unwrap();
    }
    let again = propose_for("agent-a", Some("carol"), "shared", review(), ts(T0));
    assert!(matches!(
        store.commit(insert(&again)).await,
        Err(StoreError::DuplicateKey { existing }) if existing == carols.ticket.id()
    ));
    let orphans: i64 = raw(&env)
        .query_row(
            "SELECT count(*) FROM decisions WHERE ticket_id NOT IN (SELECT id FROM tickets)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    store.shutdown().await.unwrap();
}

/// Nonces are forgotten only once the newest commit *recorded in the file* is past their
/// expiry — a time every later commit, by this or another process, after a restart or a
/// clock set back, is at or after — not merely once the clock is.
#[tokio::test]
async fn nonces_are_pruned_against_the_files_last_commit_not_the_clock() {
    let clock = agent_handoff::ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = file_store(&env).await;
    let token = agent_handoff::backend::NonceUse::new(nonce().nonce, ts(T0 + 1_000));
    store
        .commit(Write::new().with_audit(marker(1, ts(T0))).with_nonce(token))
        .await
        .unwrap();
    clock.set(ts(T0 + 60_000));
    assert_eq!(store.prune_nonces(10).await.unwrap(), 0, "no commit since");
    store.shutdown().await.unwrap();

    // Reopened with the clock set back before the expiry: the file's last commit rules.
    let store =
        file_store(&env.with_clock(Arc::new(agent_handoff::ManualClock::new(ts(T0))))).await;
    let mut write = insert(&propose("agent-a", "k-1", review(), ts(T0)));
    write.nonces = vec![token];
    assert!(
        matches!(store.commit(write).await, Err(StoreError::NonceReused)),
        "still remembered"
    );
    let committed = store
        .commit(Write::new().with_audit(marker(2, ts(T0))))
        .await
        .unwrap();
    assert!(committed.at < token.expires, "the clock was set back");
    assert_eq!(store.prune_nonces(10).await.unwrap(), 0);
    store.shutdown().await.unwrap();
}

/// A nonce forgotten under a poisoned floor stays unusable after an operator steps the floor
/// back: the store keeps the latest expiry it forgot (its nonce horizon), never lowered, and a
/// write consuming a nonce that expired at or before it is too late — else a token still
/// valid by the corrected clock could be used a second time.
#[tokio::test]
async fn a_nonce_forgotten_under_a_poisoned_floor_stays_spent_after_a_rebase() {
    const DAY: i64 = 24 * 3_600_000;
    let clock = agent_handoff::ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = file_store(&env).await;
    // A token valid for an hour is spent.
    let token = agent_handoff::backend::NonceUse::new(nonce().nonce, ts(T0 + 3_600_000));
    store
        .commit(Write::new().with_audit(marker(1, ts(T0))).with_nonce(token))
        .await
        .unwrap();
    // The clock jumps a day ahead (accepted after a rebase onto it), a commit makes that the
    // floor, and the sweep forgets the nonce.
    clock.step_wall(ts(T0 + DAY));
    store
        .commit(
            Write::new()
                .with_audit(marker(2, ts(T0 + DAY)))
                .with_clock_rebase(),
        )
        .await
        .unwrap();
    assert_eq!(store.prune_nonces(10).await.unwrap(), 1);
    // The clock is corrected and the floor rebased back onto it.
    clock.step_wall(ts(T0 + 60_000));
    let rebased = store
        .commit(
            Write::new()
                .with_audit(marker(3, ts(T0 + 60_000)))
                .with_clock_rebase(),
        )
        .await
        .unwrap();
    assert!(
        rebased.at < token.expires,
        "the token is valid again by the clock"
    );
    let mut replay = insert(&propose("agent-a", "k-1", review(), ts(T0 + 60_000)));
    replay.nonces = vec![token];
    assert!(
        matches!(store.commit(replay).await, Err(StoreError::TooLate { .. })),
        "the forgotten nonce is never consumed again"
    );
    store.shutdown().await.unwrap();
}
