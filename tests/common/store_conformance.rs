//! The `Store` contract, written once. Every store implementation must pass it unchanged.
//!
//! Run it with the [`store_conformance!`] macro (the approach of tower-sessions' shared store
//! tests): give the suite a name and an async opener that builds the store under test from an
//! [`Env`] (a temporary directory and the clock the store must use for commit times):
//!
//! ```ignore
//! #[macro_use]
//! mod common;
//! use common::store_conformance::Env;
//!
//! store_conformance!(sqlite_memory, |env: Env| async move {
//!     SqliteStore::in_memory_with(SqliteOptions::new().with_clock(env.clock())).await.unwrap()
//! });
//! // `durable`: opening again with the same `Env` sees the same data (adds the reopen tests).
//! store_conformance!(sqlite_file, durable, |env: Env| async move {
//!     let options = SqliteOptions::new().with_clock(env.clock());
//!     SqliteStore::open_with(env.path("store.sqlite3"), options).await.unwrap()
//! });
//! ```
//!
//! What a store must do, each as a test below: state the store contract version it implements
//! (this suite is the contract of `STORE_CONTRACT_VERSION`); atomic writes (a refused write leaves no ticket,
//! decision, audit, outbox or nonce row, whatever step refused it); group commits in which one
//! caller's failure never touches another's; compare-and-swap on the ticket version, and the
//! rebase of a write that lost it; idempotency keys unique per requester (agent and principal,
//! "no principal" a value of its own), also under races; `TooLate` judged against a commit time
//! that never goes backwards; single-use nonces, each limiting its write by its expiry, pruned
//! once expired; reads by id, key, filter (paged, newest first),
//! due time, decisions and per-ticket audit; health figures; checkpoints (the newest, and all of
//! them in pages); texts kept beside their events only when the chain commits to them, read back
//! with the events, erased by an audited write; shutdown that refuses later writes and keeps
//! every acknowledged one; an audit chain that verifies and continues across a reopen; the clock
//! the store was opened with, a clock jump refused without moving the floor, a floor ahead of
//! the clock refused until a rebase (also after a reopen), the health alarm of each; freezes
//! checked inside the committing write (refused whole while in force, set with their audit row
//! or not at all, racing writes before or refused), held across a reopen.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use agent_handoff::audit::{
    Actor, AuditEvent, AuditRecord, AuditText, ChainHead, Checkpoint, CheckpointKey, TextRef,
    TextRow, TextState,
};
use agent_handoff::backend::{
    ClockAlarm, Committed, FreezeChange, NonceUse, OutboxOutcome, OutboxRow, OutboxStatus,
    OutboxUpdate, Rebase, TicketFilter, TicketWrite, Write,
};
use agent_handoff::ticket::{Event, StateName, Ticket};
use agent_handoff::{Clock, FreezeScope, ManualClock, Store, StoreError, TicketId, Timestamp};
use serde_json::json;

use super::*;

/// Generates one `#[tokio::test]` per conformance test for a store.
///
/// `store_conformance!(name, opener)` or `store_conformance!(name, durable, opener)`, where
/// `opener` is an expression of a type `Fn(Env) -> impl Future<Output = impl Store>`. With
/// `durable`, opening again with the same [`Env`] must see what was committed before (adds
/// the shutdown-flush and reopen tests).
macro_rules! store_conformance {
    ($name:ident, $open:expr) => {
        store_conformance!(@suite $name, $open, []);
    };
    ($name:ident, durable, $open:expr) => {
        store_conformance!(@suite $name, $open, [
            shutdown_keeps_every_acknowledged_commit,
            chain_continues_across_reopen,
            commit_time_never_goes_backwards_across_reopen,
            a_poisoned_floor_is_refused_after_reopen_until_rebased,
            freezes_hold_across_reopen,
        ]);
    };
    (@suite $name:ident, $open:expr, [$($extra:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            store_conformance!(@tests $open;
                states_the_store_contract_version_it_implements,
                insert_then_read_back,
                update_is_a_compare_and_swap_on_the_version,
                refused_write_writes_nothing,
                failed_write_rolls_back_its_audit_rows,
                group_commit_isolates_each_callers_failure,
                idempotency_key_is_unique_per_requester,
                concurrent_inserts_with_one_key_create_one_ticket,
                concurrent_inserts_with_one_key_and_a_principal_create_one_ticket,
                a_lost_compare_and_swap_is_rebased_on_the_ticket_as_committed,
                a_declined_rebase_is_a_version_conflict_and_writes_nothing,
                concurrent_rebased_writes_on_one_ticket_all_land,
                write_at_or_after_its_limit_is_too_late,
                commit_time_never_goes_backwards,
                nonce_is_single_use,
                a_write_at_or_after_a_nonces_expiry_is_too_late,
                expired_nonces_are_pruned_and_never_consumed_again,
                list_tickets_filters_and_pages_newest_first,
                list_by_group_follows_a_ruling_change,
                due_lists_tickets_whose_time_is_up,
                decisions_are_listed_oldest_first,
                ticket_audit_and_audit_pages_cover_the_chain,
                health_reports_pending_backlog_and_chain_length,
                checkpoints_keep_the_newest,
                checkpoints_are_listed_smallest_first,
                texts_are_kept_beside_their_events,
                texts_not_committed_by_the_chain_are_refused,
                erasure_drops_a_text_and_names_the_erasing_event,
                shutdown_refuses_later_commits,
                outbox_claims_due_rows_oldest_first_and_leases_them,
                outbox_claims_a_tickets_rows_per_channel_in_order,
                outbox_outcomes_are_recorded_once_with_their_audit_rows,
                the_store_names_the_clock_it_was_opened_with,
                a_clock_jump_is_refused_and_moves_no_floor,
                a_rebase_accepts_a_jumped_clock,
                a_floor_ahead_of_the_clock_is_refused_until_rebased,
                a_freeze_refuses_guarded_writes_until_lifted,
                a_freeze_is_set_with_its_audit_row_or_not_at_all,
                guarded_writes_racing_a_freeze_commit_before_it_or_not_at_all,
                $($extra,)*
            );
        }
    };
    (@tests $open:expr; $($test:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::common::store_conformance::$test($open).await;
            }
        )*
    };
}

/// What a test gives the opener: a temporary directory (removed at the end of the test) and
/// the clock that stamps commits. Cloning shares both.
#[derive(Clone)]
pub struct Env {
    dir: Arc<tempfile::TempDir>,
    clock: Arc<dyn Clock>,
}

impl Env {
    /// A fresh directory and a [`ManualClock`] stopped at [`T0`].
    pub fn new() -> Self {
        Self::with(Arc::new(ManualClock::new(ts(T0))))
    }

    /// A fresh directory and `clock`.
    pub fn with(clock: Arc<dyn Clock>) -> Self {
        Self {
            dir: Arc::new(tempfile::tempdir().unwrap()),
            clock,
        }
    }

    /// The same directory with another clock (to reopen a durable store after a restart).
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        Self {
            dir: Arc::clone(&self.dir),
            clock,
        }
    }

    /// The clock the store must stamp commits with.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// A path inside the test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

async fn open_in<S, Fut>(open: &impl Fn(Env) -> Fut, env: &Env) -> Arc<S>
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    Arc::new(open(env.clone()).await)
}

/// Commits a proposal and returns its ticket.
async fn proposed<S: Store + ?Sized>(
    store: &S,
    agent_name: &str,
    key: &str,
    ruling: agent_handoff::policy::Ruling,
    now: Timestamp,
) -> Ticket {
    let p = propose(agent_name, key, ruling, now);
    store.commit(insert(&p)).await.unwrap();
    p.ticket
}

fn records(events: &[AuditEvent]) -> Vec<AuditRecord> {
    events.iter().map(|e| e.record().clone()).collect()
}

/// The decoded records of stored events `from..=to`, with their texts.
async fn records_between<S: Store + ?Sized>(store: &S, from: u64, to: u64) -> Vec<AuditRecord> {
    let raw = store
        .audit_events(from, usize::try_from(to + 1 - from).unwrap())
        .await
        .unwrap();
    let texts = store.audit_texts(from, to).await.unwrap();
    raw.into_iter()
        .map(|r| {
            let mine: Vec<_> = texts.iter().filter(|t| t.seq == r.seq).cloned().collect();
            AuditEvent::decode_with_texts(r, mine)
                .unwrap()
                .record()
                .clone()
        })
        .collect()
}

/// A refused write left everything as it was: same head, same decisions for `ticket`, same
/// outbox backlog.
struct Snapshot {
    head: ChainHead,
    backlog: u64,
    decisions: usize,
}

async fn snapshot<S: Store + ?Sized>(store: &S, ticket: TicketId) -> Snapshot {
    Snapshot {
        head: store.audit_head().await.unwrap(),
        backlog: store.health().await.unwrap().outbox_backlog,
        decisions: store.decisions(ticket).await.unwrap().len(),
    }
}

async fn assert_unchanged<S: Store + ?Sized>(store: &S, ticket: TicketId, before: &Snapshot) {
    let after = snapshot(store, ticket).await;
    assert_eq!(after.head, before.head, "no audit row was written");
    assert_eq!(after.backlog, before.backlog, "no outbox row was written");
    assert_eq!(after.decisions, before.decisions, "no decision was written");
}

// ---------------------------------------------------------------------------------------------
// Writes and reads of one ticket
// ---------------------------------------------------------------------------------------------

/// A store states the contract version it implements, and this suite is the contract of
/// [`STORE_CONTRACT_VERSION`]: a store that passes it implements that version (the engine
/// refuses a store that states an older one).
pub async fn states_the_store_contract_version_it_implements<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    assert_eq!(
        store.contract_version(),
        agent_handoff::STORE_CONTRACT_VERSION,
        "the store states another contract version than the one this suite checks"
    );
}

/// A committed insert reads back by id and by key with its audit records, stamped with the
/// store clock's time and chained onto the head.
pub async fn insert_then_read_back<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    assert_eq!(store.audit_head().await.unwrap(), ChainHead::GENESIS);

    let p = propose("agent-a", "key-1", review(), now);
    let id = p.ticket.id();
    let mut write = insert(&p);
    write.outbox.push(outbox(id, now));
    let committed = store.commit(write).await.unwrap();

    assert_eq!(
        committed.at, now,
        "the commit time comes from the store's clock"
    );
    assert_eq!(committed.head.seq, p.audit.len() as u64);
    assert_eq!(store.audit_head().await.unwrap(), committed.head);
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&p.ticket));
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", None), p.ticket.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(&p.ticket)
    );
    assert_eq!(store.ticket(new_id()).await.unwrap(), None);
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-b", None), p.ticket.idempotency_key())
            .await
            .unwrap(),
        None,
        "keys are scoped per requester"
    );
    assert_eq!(records(&store.ticket_audit(id).await.unwrap()), p.audit);
    assert!(store.decisions(id).await.unwrap().is_empty());
    assert_eq!(verify_chain(&*store).await.count, p.audit.len() as u64);
    store.shutdown().await.unwrap();
}

/// `Update` replaces the ticket only at the expected version; a stale version, an unknown id or
/// a new version other than `expected + 1` is refused and writes nothing.
pub async fn update_is_a_compare_and_swap_on_the_version<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let approved = approve(&v1, "alice", now);
    let v3 = begin(&approved.ticket, ts(T0 + 10_000), now);
    let before = snapshot(&*store, id).await;

    // A new version that does not follow the expected one.
    for (ticket, expected) in [(&v3.ticket, 1), (&v1, 1), (&approved.ticket, 0)] {
        let write = Write::new()
            .with_ticket(TicketWrite::Update {
                ticket: Box::new(ticket.clone()),
                expected_version: expected,
            })
            .with_audit_records(approved.audit.clone())
            .with_decision(decision(id, "alice", "approve", now));
        let err = store.commit(write).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidWrite(_)),
            "version {} from expected {expected}: {err:?}",
            ticket.version()
        );
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&v1));

    // The right version wins once.
    let mut good = update(&v1, &approved);
    good.decision = Some(decision(id, "alice", "approve", now));
    store.commit(good).await.unwrap();
    assert_eq!(
        store.ticket(id).await.unwrap().as_ref(),
        Some(&approved.ticket)
    );

    // A change computed from version 1 is now stale.
    let before = snapshot(&*store, id).await;
    let rejected = reject(&v1, "bob", now);
    let mut stale = update(&v1, &rejected);
    stale.decision = Some(decision(id, "bob", "reject", now));
    stale.outbox.push(outbox(id, now));
    match store.commit(stale).await {
        Err(StoreError::VersionConflict { ticket, expected }) => {
            assert_eq!((ticket, expected), (id, 1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(
        store.ticket(id).await.unwrap().as_ref(),
        Some(&approved.ticket)
    );

    // An update of a ticket that was never inserted.
    let ghost = propose("agent-a", "key-2", review(), now);
    let ghost_id = ghost.ticket.id();
    let ghost_v2 = approve(&ghost.ticket, "alice", now);
    match store.commit(update(&ghost.ticket, &ghost_v2)).await {
        Err(StoreError::NotFound(missing)) => assert_eq!(missing, ghost_id),
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(store.ticket(ghost_id).await.unwrap(), None);
    assert_unchanged(&*store, id, &before).await;

    // The next version in sequence still works.
    store.commit(update(&approved.ticket, &v3)).await.unwrap();
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&v3.ticket));
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// Whatever refuses a write — a lost compare-and-swap, an unknown ticket, a used key, a reused
/// nonce, a passed limit, a malformed version — none of its parts is written: no ticket, no
/// decision, no audit row, no outbox row, and none of its nonces is consumed.
pub async fn refused_write_writes_nothing<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let v2 = approve(&v1, "alice", now);
    store.commit(update(&v1, &v2)).await.unwrap();
    let used = nonce();
    store
        .commit(
            Write::new()
                .with_nonces(vec![used])
                .with_audit_records(vec![marker(0, now)]),
        )
        .await
        .unwrap();

    // Every refused write carries a fresh nonce, a decision, audit records, an outbox row.
    let mut fresh = Vec::new();
    let mut dressed = |mut write: Write, ticket: TicketId, n: u64| {
        let own = nonce();
        fresh.push(own);
        write.nonces.insert(0, own);
        write.decision = Some(decision(ticket, "carol", "approve", now));
        write.audit.push(marker(n, now));
        write.outbox.push(outbox(ticket, now));
        write
    };
    let stale = dressed(update(&v1, &reject(&v1, "bob", now)), id, 1);
    let ghost = propose("agent-a", "key-ghost", review(), now);
    let unknown = dressed(
        update(&ghost.ticket, &approve(&ghost.ticket, "alice", now)),
        ghost.ticket.id(),
        2,
    );
    let twin = propose("agent-a", "key-1", review(), now);
    let duplicate = dressed(insert(&twin), twin.ticket.id(), 3);
    let mut reused = dressed(
        update(&v2.ticket, &begin(&v2.ticket, ts(T0 + 9_000), now)),
        id,
        4,
    );
    reused.nonces.push(used); // after a fresh one, so a partial write would show
    let mut late = dressed(
        update(&v2.ticket, &begin(&v2.ticket, ts(T0 + 9_000), now)),
        id,
        5,
    );
    late.valid_before = Some(now);
    // Writes version 2 again, from version 2.
    let malformed = dressed(update(&v2.ticket, &v2), id, 6);

    let before = snapshot(&*store, id).await;
    type IsExpected = fn(&StoreError) -> bool;
    let cases: [(&str, Write, IsExpected); 6] = [
        ("stale version", stale, |e| {
            matches!(e, StoreError::VersionConflict { .. })
        }),
        ("unknown ticket", unknown, |e| {
            matches!(e, StoreError::NotFound(_))
        }),
        ("used key", duplicate, |e| {
            matches!(e, StoreError::DuplicateKey { .. })
        }),
        ("reused nonce", reused, |e| {
            matches!(e, StoreError::NonceReused)
        }),
        ("too late", late, |e| {
            matches!(e, StoreError::TooLate { .. })
        }),
        ("malformed version", malformed, |e| {
            matches!(e, StoreError::InvalidWrite(_))
        }),
    ];
    for (what, write, expected) in cases {
        let err = store.commit(write).await.unwrap_err();
        assert!(expected(&err), "{what}: unexpected {err:?}");
        assert_unchanged(&*store, id, &before).await;
        assert_eq!(
            store.ticket(id).await.unwrap().as_ref(),
            Some(&v2.ticket),
            "{what}: the ticket is unchanged"
        );
    }
    assert_eq!(store.ticket(ghost.ticket.id()).await.unwrap(), None);
    assert_eq!(store.ticket(twin.ticket.id()).await.unwrap(), None);
    assert_eq!(
        store.decisions(ghost.ticket.id()).await.unwrap(),
        Vec::new()
    );

    // None of the refused writes consumed its nonce.
    store
        .commit(
            Write::new()
                .with_nonces(fresh)
                .with_audit_records(vec![marker(7, now)]),
        )
        .await
        .expect("the nonces of refused writes are still unused");
    let summary = verify_chain(&*store).await;
    assert_eq!(summary.count, before.head.seq + 1);
    store.shutdown().await.unwrap();
}

/// A write that fails after its audit rows were chained (here: an outbox id that is already
/// taken) leaves no trace, and the next write chains onto the head as it was.
pub async fn failed_write_rolls_back_its_audit_rows<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let first = propose("agent-a", "key-1", review(), now);
    let row = outbox(first.ticket.id(), now);
    let mut write = insert(&first);
    write.outbox.push(row.clone());
    store.commit(write).await.unwrap();
    let before = snapshot(&*store, first.ticket.id()).await;

    let second = propose("agent-a", "key-2", review(), now);
    let mut clash = insert(&second);
    clash.audit.push(marker(1, now));
    clash.outbox.push(row);
    store
        .commit(clash)
        .await
        .expect_err("an outbox id is unique");
    assert_unchanged(&*store, first.ticket.id(), &before).await;
    assert_eq!(store.ticket(second.ticket.id()).await.unwrap(), None);
    assert!(store
        .ticket_audit(second.ticket.id())
        .await
        .unwrap()
        .is_empty());

    let third = propose("agent-a", "key-3", review(), now);
    let committed = store.commit(insert(&third)).await.unwrap();
    assert_eq!(
        committed.head.seq,
        before.head.seq + third.audit.len() as u64
    );
    assert_eq!(
        records_between(&*store, before.head.seq + 1, committed.head.seq).await,
        third.audit
    );
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------------------------

/// One write in the concurrent flood, and what the store must hold if it wins.
struct Contender {
    n: u64,
    write: Write,
    ticket: Ticket,
    own_nonce: agent_handoff::backend::NonceUse,
}

/// Many concurrent commits, half of them doomed (lost compare-and-swaps, reused nonces, used
/// keys, a taken outbox id that fails after the audit records were chained), land exactly the
/// winners: each contest has one winner, each winner's rows are all
/// there and contiguous in the chain at the head it was told, no loser left any row, and the
/// chain verifies.
pub async fn group_commit_isolates_each_callers_failure<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    for round in 0..3 {
        let mut pending = Vec::new();
        for i in 0..16 {
            let key = format!("setup-{round}-{i}");
            pending.push(proposed(&*store, "agent-a", &key, review(), now).await);
        }
        let setup_head = store.audit_head().await.unwrap();
        let setup_backlog = store.health().await.unwrap().outbox_backlog;

        let mut n = 0;
        let mut contender = |mut write: Write, ticket: Ticket, shared: Option<_>| {
            n += 1;
            let own = nonce();
            write.nonces.push(own);
            write.nonces.extend(shared);
            write.audit.push(marker(n, now));
            write.outbox.push(outbox(ticket.id(), now));
            Contender {
                n,
                write,
                ticket,
                own_nonce: own,
            }
        };
        // Contests of two: exactly one of each must land.
        let mut contests: Vec<(&str, [Contender; 2])> = Vec::new();
        for t in &pending {
            let yes = approve(t, "alice", now);
            let no = reject(t, "bob", now);
            let mut a = contender(update(t, &yes), yes.ticket.clone(), None);
            a.write.decision = Some(decision(t.id(), "alice", "approve", now));
            let mut b = contender(update(t, &no), no.ticket.clone(), None);
            b.write.decision = Some(decision(t.id(), "bob", "reject", now));
            contests.push(("version", [a, b]));
        }
        for i in 0..8 {
            let shared = nonce();
            let x = propose("agent-b", &format!("nonce-{round}-{i}-x"), review(), now);
            let y = propose("agent-b", &format!("nonce-{round}-{i}-y"), allow(), now);
            contests.push((
                "nonce",
                [
                    contender(insert(&x), x.ticket.clone(), Some(shared)),
                    contender(insert(&y), y.ticket.clone(), Some(shared)),
                ],
            ));
        }
        for i in 0..8 {
            let key = format!("key-{round}-{i}");
            let x = propose("agent-c", &key, review(), now);
            let y = propose("agent-c", &key, deny(), now);
            contests.push((
                "key",
                [
                    contender(insert(&x), x.ticket.clone(), None),
                    contender(insert(&y), y.ticket.clone(), None),
                ],
            ));
        }
        // Two inserts that share an outbox row id: the loser fails after its audit records
        // were chained, so its records must go and the next write must chain where it was.
        for i in 0..8 {
            let shared = uuid::Uuid::from_bytes(random16());
            let x = propose("agent-e", &format!("outbox-{round}-{i}-x"), review(), now);
            let y = propose("agent-e", &format!("outbox-{round}-{i}-y"), allow(), now);
            let mut a = contender(insert(&x), x.ticket.clone(), None);
            let mut b = contender(insert(&y), y.ticket.clone(), None);
            for c in [&mut a, &mut b] {
                let mut row = outbox(c.ticket.id(), now);
                row.id = shared;
                c.write.outbox.push(row);
            }
            contests.push(("outbox", [a, b]));
        }
        // Writes that cannot fail.
        let solos: Vec<Contender> = (0..8)
            .map(|i| {
                let p = propose("agent-d", &format!("solo-{round}-{i}"), allow(), now);
                contender(insert(&p), p.ticket.clone(), None)
            })
            .collect();

        // Fire everything at once, contest partners next to each other.
        let mut handles = BTreeMap::new();
        let spawn = |c: &Contender| {
            let store = Arc::clone(&store);
            let write = c.write.clone();
            tokio::spawn(async move { store.commit(write).await })
        };
        for (_, pair) in &contests {
            for c in pair {
                handles.insert(c.n, spawn(c));
            }
        }
        for c in &solos {
            handles.insert(c.n, spawn(c));
        }
        let mut results: BTreeMap<u64, Result<Committed, StoreError>> = BTreeMap::new();
        for (n, handle) in handles {
            results.insert(n, handle.await.unwrap());
        }

        let mut winners: Vec<&Contender> = Vec::new();
        let mut losers: Vec<&Contender> = Vec::new();
        for (kind, pair) in &contests {
            let ok: Vec<&Contender> = pair.iter().filter(|c| results[&c.n].is_ok()).collect();
            assert_eq!(ok.len(), 1, "exactly one {kind} contender lands");
            let (winner, loser) = if results[&pair[0].n].is_ok() {
                (&pair[0], &pair[1])
            } else {
                (&pair[1], &pair[0])
            };
            let err = results[&loser.n].as_ref().unwrap_err();
            match *kind {
                "version" => assert!(
                    matches!(err, StoreError::VersionConflict { ticket, expected: 1 }
                        if *ticket == winner.ticket.id()),
                    "{err:?}"
                ),
                "nonce" => assert!(matches!(err, StoreError::NonceReused), "{err:?}"),
                "outbox" => {} // any error: the contract only says it is refused whole
                _ => assert!(
                    matches!(err, StoreError::DuplicateKey { existing }
                        if *existing == winner.ticket.id()),
                    "{err:?}"
                ),
            }
            winners.push(winner);
            losers.push(loser);
        }
        for c in &solos {
            assert!(results[&c.n].is_ok(), "{:?}", results[&c.n]);
            winners.push(c);
        }

        // Each winner's ticket and decision, and nothing of the losers'.
        for w in &winners {
            assert_eq!(
                store.ticket(w.ticket.id()).await.unwrap().as_ref(),
                Some(&w.ticket)
            );
            if let Some(d) = &w.write.decision {
                assert_eq!(
                    store.decisions(w.ticket.id()).await.unwrap(),
                    vec![d.clone()]
                );
            }
        }
        for l in &losers {
            if matches!(l.write.ticket, Some(TicketWrite::Insert(_))) {
                assert_eq!(store.ticket(l.ticket.id()).await.unwrap(), None);
            }
        }

        // The chain holds exactly the winners' records, each write's contiguous at the head it
        // was acknowledged with, and verifies.
        let summary = verify_chain(&*store).await;
        let added: u64 = winners.iter().map(|w| w.write.audit.len() as u64).sum();
        assert_eq!(
            summary.head.seq,
            setup_head.seq + added,
            "no loser left a record"
        );
        let mut acked: Vec<(Committed, &Contender)> = winners
            .iter()
            .map(|w| (*results[&w.n].as_ref().unwrap(), *w))
            .collect();
        acked.sort_by_key(|(c, _)| c.head.seq);
        for window in acked.windows(2) {
            assert!(
                window[0].0.at <= window[1].0.at,
                "commit times follow the chain"
            );
        }
        for (committed, w) in &acked {
            let len = w.write.audit.len() as u64;
            assert_eq!(
                records_between(&*store, committed.head.seq + 1 - len, committed.head.seq).await,
                w.write.audit,
                "write {} sits at its acknowledged head",
                w.n
            );
        }
        assert_eq!(
            store.health().await.unwrap().outbox_backlog,
            setup_backlog
                + winners
                    .iter()
                    .map(|w| w.write.outbox.len() as u64)
                    .sum::<u64>()
        );

        // The winners consumed their nonces, the losers did not.
        for w in &winners {
            let reuse = Write::new().with_nonces(vec![w.own_nonce]);
            assert!(matches!(
                store.commit(reuse).await,
                Err(StoreError::NonceReused)
            ));
        }
        let unused = Write::new().with_nonces(losers.iter().map(|l| l.own_nonce));
        store
            .commit(unused)
            .await
            .expect("no loser consumed its nonce");
    }
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

/// Keys are scoped by the whole requester, agent and principal. A second ticket under one
/// requester's key is refused with that requester's ticket and writes nothing — also when the
/// requester has no principal ("no principal" is a value: a `UNIQUE` index over a `NULL`
/// would let both in) — while the same key under another agent, or the same agent acting for
/// another principal, or for none, is another requester's own ticket.
pub async fn idempotency_key_is_unique_per_requester<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let requesters: [(&str, Option<&str>); 4] = [
        ("agent-a", None),
        ("agent-a", Some("carol")),
        ("agent-a", Some("pat")),
        ("agent-b", None),
    ];
    let mut firsts = Vec::new();
    for (agent_name, principal) in requesters {
        let first = propose_for(agent_name, principal, "same-key", review(), now);
        store.commit(insert(&first)).await.unwrap_or_else(|e| {
            panic!("{agent_name} for {principal:?}: its own key is free, got {e:?}")
        });
        firsts.push(first.ticket);
    }
    for ((agent_name, principal), first) in requesters.into_iter().zip(&firsts) {
        let before = snapshot(&*store, first.id()).await;
        // The same requester again (twice without a principal, for the first requester).
        let again = propose_for(agent_name, principal, "same-key", allow(), now);
        let mut write = insert(&again);
        write.outbox.push(outbox(again.ticket.id(), now));
        match store.commit(write).await {
            Err(StoreError::DuplicateKey { existing }) => assert_eq!(
                existing,
                first.id(),
                "{agent_name} for {principal:?}: its own ticket"
            ),
            other => {
                panic!("{agent_name} for {principal:?}: expected a duplicate key, got {other:?}")
            }
        }
        assert_unchanged(&*store, first.id(), &before).await;
        assert_eq!(store.ticket(again.ticket.id()).await.unwrap(), None);
        assert_eq!(
            store
                .ticket_by_key(&requester(agent_name, principal), first.idempotency_key())
                .await
                .unwrap()
                .as_ref(),
            Some(first),
            "{agent_name} for {principal:?} reads its own ticket"
        );
    }
    assert_eq!(
        store
            .ticket_by_key(
                &requester("agent-a", Some("dave")),
                firsts[0].idempotency_key()
            )
            .await
            .unwrap(),
        None,
        "a requester that never used the key finds nothing"
    );
    store.shutdown().await.unwrap();
}

/// Sixteen concurrent inserts under one key: one wins, every other is told the winner's id,
/// and only the winner's audit records exist.
pub async fn concurrent_inserts_with_one_key_create_one_ticket<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let proposals: Vec<_> = (0..16)
        .map(|_| propose("agent-a", "race", review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let winners: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one insert wins: {results:?}");
    let winner = &proposals[winners[0]].ticket;
    for (i, r) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(
                matches!(r, Err(StoreError::DuplicateKey { existing }) if *existing == winner.id()),
                "{r:?}"
            );
            assert_eq!(store.ticket(proposals[i].ticket.id()).await.unwrap(), None);
        }
    }
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", None), winner.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(winner)
    );
    let summary = verify_chain(&*store).await;
    assert_eq!(summary.count, proposals[winners[0]].audit.len() as u64);
    store.shutdown().await.unwrap();
}

/// Sixteen concurrent inserts under one key by an agent acting for a principal: one ticket.
pub async fn concurrent_inserts_with_one_key_and_a_principal_create_one_ticket<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let proposals: Vec<_> = (0..16)
        .map(|_| propose_for("agent-a", Some("pat"), "race", review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(StoreError::DuplicateKey { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    assert_eq!(
        store
            .ticket_by_key(
                &requester("agent-a", Some("pat")),
                proposals[0].ticket.idempotency_key()
            )
            .await
            .unwrap()
            .map(|t| t.id()),
        Some(proposals[winners[0]].ticket.id())
    );
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Rebase
// ---------------------------------------------------------------------------------------------

/// The write of `who`'s approval of `current` at `at`: the update, its audit records and the
/// decision row, with `nonces`.
fn vote_write(current: &Ticket, who: &str, at: Timestamp, nonces: Vec<NonceUse>) -> Write {
    let vote = approve(current, who, at);
    let mut write = update(current, &vote);
    write.decision = Some(decision(current.id(), who, "approve", at));
    write.nonces = nonces;
    write
}

/// A rebase that re-applies `who`'s approval to the ticket as committed, counting its calls
/// and recording the versions it was called on.
fn vote_rebase(
    who: &'static str,
    nonces: Vec<NonceUse>,
    calls: Arc<std::sync::Mutex<Vec<u64>>>,
) -> Rebase {
    Rebase::new(move |current: &Ticket, at: Timestamp| {
        calls.lock().unwrap().push(current.version());
        Some(vote_write(current, who, at, nonces.clone()))
    })
}

/// A write whose update expected an older version and carries a rebase is not refused: the
/// store calls the rebase with the ticket as committed and the commit time, and applies what
/// it returns instead — its ticket, decision, audit and outbox rows and nonces — and nothing
/// of the write it replaced.
pub async fn a_lost_compare_and_swap_is_rebased_on_the_ticket_as_committed<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    // Alice's vote lands first.
    store
        .commit(vote_write(&v1, "alice", now, Vec::new()))
        .await
        .unwrap();
    let v2 = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(v2.version(), 2);

    // Bob's vote was computed on version 1; its rebase recomputes it on what is stored.
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let token = nonce();
    let mut stale = vote_write(&v1, "bob", now, vec![token]);
    stale.outbox.push(outbox(id, now));
    let head = store.audit_head().await.unwrap();
    let committed = store
        .commit(stale.with_rebase(vote_rebase("bob", vec![token], Arc::clone(&calls))))
        .await
        .expect("rebased, not refused");
    assert_eq!(*calls.lock().unwrap(), vec![2], "called once, on version 2");

    let v3 = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(
        v3,
        approve(&v2, "bob", committed.at).ticket,
        "bob's vote on alice's"
    );
    assert_eq!(v3.version(), 3);
    let voters: Vec<&str> = v3.votes().iter().map(|v| v.person.as_str()).collect();
    assert_eq!(voters, ["alice", "bob"]);
    // The rebased write's rows, not the replaced one's: its audit records (computed on v2),
    // one decision row, no outbox row (the rebase wrote none), its nonce consumed.
    let written = records_between(&*store, head.seq + 1, committed.head.seq).await;
    assert_eq!(written, approve(&v2, "bob", committed.at).audit);
    assert_eq!(store.decisions(id).await.unwrap().len(), 2);
    assert_eq!(store.health().await.unwrap().outbox_backlog, 0);
    let mut again = insert(&propose("agent-a", "key-2", review(), now));
    again.nonces.push(token);
    assert!(matches!(
        store.commit(again).await,
        Err(StoreError::NonceReused)
    ));
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// A rebase that declines (`None`) leaves the write refused as a version conflict: nothing of
/// it is written and none of its nonces consumed. A write at the expected version never calls
/// its rebase.
pub async fn a_declined_rebase_is_a_version_conflict_and_writes_nothing<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fresh = vote_write(&v1, "alice", now, Vec::new()).with_rebase(vote_rebase(
        "alice",
        Vec::new(),
        Arc::clone(&calls),
    ));
    store.commit(fresh).await.unwrap();
    assert!(calls.lock().unwrap().is_empty(), "no conflict, no rebase");

    let before = snapshot(&*store, id).await;
    let token = nonce();
    let declined = Rebase::new(|_: &Ticket, _: Timestamp| None);
    let mut stale = vote_write(&v1, "bob", now, vec![token]);
    stale.outbox.push(outbox(id, now));
    match store.commit(stale.with_rebase(declined)).await {
        Err(StoreError::VersionConflict { ticket, expected }) => {
            assert_eq!((ticket, expected), (id, 1))
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().unwrap().version(), 2);
    let mut write = insert(&propose("agent-a", "key-2", review(), now));
    write.nonces.push(token);
    store
        .commit(write)
        .await
        .expect("the declined write consumed no nonce");
    store.shutdown().await.unwrap();
}

/// Thirty-two writes computed on the same version of one ticket, committed at once (one
/// group commit, or racing transactions): each carries a rebase, so every one lands — one
/// vote each, version 1 + 32, one decision row and one `voted` record each.
pub async fn concurrent_rebased_writes_on_one_ticket_all_land<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    const N: usize = 32;
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    let names: Vec<&'static str> = (0..N)
        .map(|i| &*Box::leak(format!("dba-{i:02}").into_boxed_str()))
        .collect();
    let handles: Vec<_> = names
        .iter()
        .map(|&who| {
            let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
            let token = nonce();
            let write = vote_write(&v1, who, now, vec![token]).with_rebase(vote_rebase(
                who,
                vec![token],
                calls,
            ));
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().expect("a rebased vote is never refused");
    }
    let t = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(t.version(), 1 + N as u64);
    let voters: BTreeSet<&str> = t.votes().iter().map(|v| v.person.as_str()).collect();
    assert_eq!(voters, names.iter().copied().collect());
    assert_eq!(store.decisions(id).await.unwrap().len(), N);
    let voted = store
        .ticket_audit(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.record().kind == "voted")
        .count();
    assert_eq!(voted, N);
    assert_eq!(store.health().await.unwrap().nonces, N as u64);
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// A write is valid only if committed strictly before its limit: at the limit it is `TooLate`
/// and writes nothing; a millisecond earlier it lands.
pub async fn write_at_or_after_its_limit_is_too_late<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    let p = propose("agent-a", "key-1", review(), ts(T0));
    store.commit(insert(&p)).await.unwrap();
    let deadline = p.ticket.deadline().unwrap();
    let id = p.ticket.id();

    clock.set(deadline);
    let before = snapshot(&*store, id).await;
    let vote = approve(&p.ticket, "alice", ts(T0 + 1));
    let own = nonce();
    let mut write = update(&p.ticket, &vote);
    write.valid_before = Some(deadline);
    write.nonces.push(own);
    write.decision = Some(decision(id, "alice", "approve", ts(T0 + 1)));
    write.outbox.push(outbox(id, deadline));
    match store.commit(write.clone()).await {
        Err(StoreError::TooLate { at, limit }) => {
            assert_eq!(limit, deadline);
            assert!(at >= deadline, "{at:?}");
        }
        other => panic!("expected too late, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&p.ticket));

    // The same write, with a limit one millisecond after the commit time, lands.
    write.valid_before = Some(ts(deadline.as_unix_millis() + 1));
    let committed = store.commit(write).await.unwrap();
    assert_eq!(committed.at, deadline);
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&vote.ticket));
    store.shutdown().await.unwrap();
}

/// The commit time is the later of the clock and every earlier commit: a clock stepped back
/// does not move it back, and limits are judged against it.
pub async fn commit_time_never_goes_backwards<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = SteppingClock::new(ts(T0 + 10_000));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    let first = store
        .commit(Write::new().with_audit_records(vec![marker(1, ts(T0))]))
        .await
        .unwrap();
    assert_eq!(first.at, ts(T0 + 10_000));

    clock.set(ts(T0 + 5_000));
    let second = store
        .commit(Write::new().with_audit_records(vec![marker(2, ts(T0))]))
        .await
        .unwrap();
    assert!(second.at >= first.at, "{second:?} after {first:?}");

    // A limit the clock has not reached, but the commit time has.
    let late = Write::new()
        .with_audit_records(vec![marker(3, ts(T0))])
        .with_valid_before(ts(T0 + 7_000));
    assert!(matches!(
        store.commit(late).await,
        Err(StoreError::TooLate { at, .. }) if at >= first.at
    ));

    clock.set(ts(T0 + 20_000));
    let third = store.commit(Write::default()).await.unwrap();
    assert_eq!(
        third.at,
        ts(T0 + 20_000),
        "and it follows the clock forward"
    );
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Nonces
// ---------------------------------------------------------------------------------------------

/// A nonce is consumed once: a second write with it is refused whole (its ticket, decision and
/// audit rows are not written), also when the repeat is within one write.
pub async fn nonce_is_single_use<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let token = nonce();
    let vote = approve(&v1, "alice", now);
    let mut first = update(&v1, &vote);
    first.nonces.push(token);
    first.decision = Some(decision(id, "alice", "approve", now));
    store.commit(first).await.unwrap();

    let before = snapshot(&*store, id).await;
    let p = propose("agent-a", "key-2", review(), now);
    let mut second = insert(&p);
    second.nonces = vec![nonce(), token];
    second.outbox.push(outbox(p.ticket.id(), now));
    assert!(matches!(
        store.commit(second).await,
        Err(StoreError::NonceReused)
    ));
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);

    // The same nonce twice in one write.
    let twice = nonce();
    let q = propose("agent-a", "key-3", review(), now);
    let mut write = insert(&q);
    write.nonces = vec![twice, twice];
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert_eq!(store.ticket(q.ticket.id()).await.unwrap(), None);
    assert_unchanged(&*store, id, &before).await;
    let mut write = insert(&q);
    write.nonces = vec![twice];
    store
        .commit(write)
        .await
        .expect("the refused write did not consume the nonce");
    store.shutdown().await.unwrap();
}

/// A nonce limits its write like `valid_before`: committed at or after the nonce's expiry the
/// write is too late (the store may have forgotten the nonce), whatever its own limit.
pub async fn a_write_at_or_after_a_nonces_expiry_is_too_late<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    let short = NonceUse::new(nonce().nonce, ts(T0 + 1_000));
    clock.set(ts(T0 + 1_000));
    let p = propose("agent-a", "key-1", review(), ts(T0));
    let mut write = insert(&p);
    write.nonces = vec![nonce(), short];
    match store.commit(write.clone()).await {
        Err(StoreError::TooLate { limit, .. }) => assert_eq!(limit, short.expires),
        other => panic!("expected too late, got {other:?}"),
    }
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    assert_eq!(store.health().await.unwrap().nonces, 0);
    write.nonces = vec![nonce()];
    store.commit(write).await.unwrap();
    assert_eq!(store.health().await.unwrap().nonces, 1);
    store.shutdown().await.unwrap();
}

/// `prune_nonces` forgets consumed nonces whose expiry a later commit has passed, at most
/// `limit` per call, and keeps the others (still single use); a forgotten nonce cannot be
/// consumed again, since a write carrying it is too late. `health` counts what is kept.
pub async fn expired_nonces_are_pruned_and_never_consumed_again<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    let soon: Vec<NonceUse> = (0..5)
        .map(|_| NonceUse::new(nonce().nonce, ts(T0 + 10_000)))
        .collect();
    let later = NonceUse::new(nonce().nonce, ts(T0 + 3_600_000));
    store
        .commit(
            Write::new()
                .with_audit(marker(1, ts(T0)))
                .with_nonces(soon.iter().copied().chain([later])),
        )
        .await
        .unwrap();
    assert_eq!(store.health().await.unwrap().nonces, 6);
    assert_eq!(
        store.prune_nonces(100).await.unwrap(),
        0,
        "none expired yet"
    );

    // Time passes, and something is committed after the expiry.
    clock.set(ts(T0 + 20_000));
    store
        .commit(Write::new().with_audit(marker(2, ts(T0 + 20_000))))
        .await
        .unwrap();
    assert_eq!(store.prune_nonces(2).await.unwrap(), 2, "at most the limit");
    assert_eq!(store.prune_nonces(100).await.unwrap(), 3);
    assert_eq!(store.prune_nonces(100).await.unwrap(), 0);
    assert_eq!(
        store.health().await.unwrap().nonces,
        1,
        "the unexpired one is kept"
    );

    // A forgotten nonce is never consumed again; a kept one is still single use.
    let p = propose("agent-a", "key-1", review(), ts(T0 + 20_000));
    let mut write = insert(&p);
    write.nonces = vec![soon[0]];
    assert!(matches!(
        store.commit(write.clone()).await,
        Err(StoreError::TooLate { .. })
    ));
    write.nonces = vec![later];
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// Every page of a listing, following the cursor.
async fn all_pages<S: Store + ?Sized>(store: &S, mut filter: TicketFilter) -> (Vec<Ticket>, usize) {
    let mut tickets = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_tickets(&filter).await.unwrap();
        pages += 1;
        if filter.limit > 0 {
            assert!(
                page.tickets.len() <= filter.limit,
                "a page holds at most `limit`"
            );
        }
        tickets.extend(page.tickets);
        match page.next {
            Some(cursor) => filter.after = Some(cursor),
            None => return (tickets, pages),
        }
        assert!(pages < 1_000, "the cursor must advance");
    }
}

/// Listings return exactly the tickets matching every set filter (states, group, agent,
/// created range), newest first, each once across pages of any size.
pub async fn list_tickets_filters_and_pages_newest_first<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let agents = ["agent-a", "agent-b", "agent-c"];
    let mut all: Vec<Ticket> = Vec::new();
    for i in 0..30_i64 {
        // Pairs share a creation time, so order among equal times is exercised too.
        let created = ts(T0 + (i / 2) * 1_000);
        let ruling = match i % 5 {
            0 | 1 => review_by("dba"),
            2 => review_by("finance"),
            3 => allow(),
            _ => deny(),
        };
        let name = agents[(i % 3) as usize];
        let mut ticket = proposed(&*store, name, &format!("key-{i}"), ruling, created).await;
        if i % 5 == 1 {
            let next = approve(&ticket, "alice", created);
            store.commit(update(&ticket, &next)).await.unwrap();
            ticket = next.ticket;
        }
        all.push(ticket);
    }

    let groups_of = |t: &Ticket| -> BTreeSet<String> {
        t.plan()
            .map(|plan| {
                plan.requirements
                    .iter()
                    .flat_map(|r| r.groups.iter().map(|g| g.as_str().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let filters = [
        TicketFilter::default(),
        TicketFilter {
            states: vec![StateName::Pending],
            ..TicketFilter::default()
        },
        TicketFilter {
            states: vec![StateName::Approved, StateName::Rejected],
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("dba")),
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("finance")),
            states: vec![StateName::Pending],
            ..TicketFilter::default()
        },
        TicketFilter {
            agent: Some(agent("agent-b")),
            ..TicketFilter::default()
        },
        TicketFilter {
            created_from: Some(ts(T0 + 3_000)),
            created_before: Some(ts(T0 + 9_000)),
            ..TicketFilter::default()
        },
        TicketFilter {
            agent: Some(agent("agent-a")),
            group: Some(group("dba")),
            created_from: Some(ts(T0 + 1_000)),
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("nobody")),
            ..TicketFilter::default()
        },
    ];
    for filter in filters {
        let mut expected: Vec<TicketId> = all
            .iter()
            .filter(|t| filter.states.is_empty() || filter.states.contains(&t.state().name()))
            .filter(|t| {
                filter
                    .group
                    .as_ref()
                    .is_none_or(|g| groups_of(t).contains(g.as_str()))
            })
            .filter(|t| {
                filter
                    .agent
                    .as_ref()
                    .is_none_or(|a| t.requester().agent() == a)
            })
            .filter(|t| filter.created_from.is_none_or(|f| t.created_at() >= f))
            .filter(|t| filter.created_before.is_none_or(|b| t.created_at() < b))
            .map(Ticket::id)
            .collect();
        expected.sort();
        for limit in [0, 1, 4, 7, 100] {
            let (listed, pages) = all_pages(
                &*store,
                TicketFilter {
                    limit,
                    ..filter.clone()
                },
            )
            .await;
            for pair in listed.windows(2) {
                assert!(
                    pair[0].created_at() >= pair[1].created_at(),
                    "newest first ({filter:?}, limit {limit})"
                );
            }
            for t in &listed {
                let stored = all.iter().find(|s| s.id() == t.id()).unwrap();
                assert_eq!(t, stored, "listings return the stored ticket");
            }
            let mut ids: Vec<TicketId> = listed.iter().map(Ticket::id).collect();
            ids.sort();
            assert_eq!(
                ids, expected,
                "each match exactly once ({filter:?}, limit {limit})"
            );
            if let Some(full_pages) = expected.len().checked_div(limit) {
                assert!(
                    pages <= full_pages + 2,
                    "no runaway paging ({filter:?}, limit {limit})"
                );
            }
        }
    }
    store.shutdown().await.unwrap();
}

/// A ticket whose ruling changes (an edit re-ruled under a stricter policy that adds a group)
/// is listed under the new group.
pub async fn list_by_group_follows_a_ruling_change<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review_by("dba"), now).await;
    let by = |g: &str| TicketFilter {
        group: Some(group(g)),
        ..TicketFilter::default()
    };
    assert!(store
        .list_tickets(&by("finance"))
        .await
        .unwrap()
        .tickets
        .is_empty());

    let edited = step(
        &v1,
        Event::Edit {
            reviewer: reviewer("alice", &["dba"]),
            parameters: json!({ "table": "orders_archive" }),
            ruling: review_by("finance"),
        },
        now,
    );
    assert!(edited.ticket.plan().unwrap().requirements.len() == 2);
    store.commit(update(&v1, &edited)).await.unwrap();
    for g in ["dba", "finance"] {
        let page = store.list_tickets(&by(g)).await.unwrap();
        assert_eq!(
            page.tickets,
            vec![edited.ticket.clone()],
            "listed under {g}"
        );
    }
    store.shutdown().await.unwrap();
}

/// `due` lists the tickets whose state changes by time alone at or before `now` — pending past
/// the review deadline, approved past the grant, executing past the lease — soonest first, at
/// most `limit`; terminal tickets never.
pub async fn due_lists_tickets_whose_time_is_up<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    // Due at T0 + 60 s (review deadline).
    let pending = proposed(&*store, "agent-a", "pending", review(), now).await;
    // Due at T0 + 30 s (grant).
    let approved = proposed(&*store, "agent-a", "approved", allow(), now).await;
    // Due at T0 + 45 s (lease).
    let allowed = proposed(&*store, "agent-a", "executing", allow(), now).await;
    let executing = begin(&allowed, ts(T0 + 45_000), now);
    store.commit(update(&allowed, &executing)).await.unwrap();
    // Never due.
    let denied = proposed(&*store, "agent-a", "denied", deny(), now).await;
    let decided = proposed(&*store, "agent-a", "decided", review(), now).await;
    let rejected = reject(&decided, "bob", now);
    store.commit(update(&decided, &rejected)).await.unwrap();
    assert_eq!(denied.state().name(), StateName::Rejected);

    let due = |at: i64, limit: usize| {
        let store = Arc::clone(&store);
        async move { store.due(ts(at), limit).await.unwrap() }
    };
    assert_eq!(due(T0 + 29_999, 10).await, vec![]);
    assert_eq!(due(T0 + 30_000, 10).await, vec![approved.id()]);
    assert_eq!(
        due(T0 + 45_000, 10).await,
        vec![approved.id(), executing.ticket.id()]
    );
    assert_eq!(
        due(T0 + 3_600_000, 10).await,
        vec![approved.id(), executing.ticket.id(), pending.id()]
    );
    assert_eq!(
        due(T0 + 3_600_000, 2).await,
        vec![approved.id(), executing.ticket.id()]
    );

    // Once decided, a ticket is no longer due.
    let done = reject(&pending, "bob", now);
    store.commit(update(&pending, &done)).await.unwrap();
    assert_eq!(
        due(T0 + 3_600_000, 10).await,
        vec![approved.id(), executing.ticket.id()]
    );
    store.shutdown().await.unwrap();
}

/// The decisions of a ticket, accepted and refused, in the order they were committed.
pub async fn decisions_are_listed_oldest_first<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let a = proposed(&*store, "agent-a", "a", review(), now).await;
    let b = proposed(&*store, "agent-a", "b", review(), now).await;
    let mut refused = decision(a.id(), "mallory", "approve", now);
    refused.refusal = Some("not_eligible".into());
    let mut anonymous = decision(a.id(), "x", "reject", ts(T0 + 2));
    anonymous.person = None;
    anonymous.refusal = Some("unauthenticated".into());
    let accepted = decision(a.id(), "alice", "approve", ts(T0 + 1));
    let other = decision(b.id(), "bob", "reject", now);
    let expected_a = vec![refused.clone(), accepted.clone(), anonymous.clone()];
    for (ticket, d) in [
        (&a, refused),
        (&b, other.clone()),
        (&a, accepted),
        (&a, anonymous),
    ] {
        store
            .commit(Write::new().with_decision(d).with_audit({
                let mut record = marker(0, now);
                record.ticket = Some(ticket.id());
                record
            }))
            .await
            .unwrap();
    }
    assert_eq!(store.decisions(a.id()).await.unwrap(), expected_a);
    assert_eq!(store.decisions(b.id()).await.unwrap(), vec![other]);
    assert_eq!(store.decisions(new_id()).await.unwrap(), vec![]);
    store.shutdown().await.unwrap();
}

/// `ticket_audit` returns one ticket's events in chain order (and no other ticket's);
/// `audit_events` pages through the whole chain from any point.
pub async fn ticket_audit_and_audit_pages_cover_the_chain<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let mut expected: BTreeMap<TicketId, Vec<AuditRecord>> = BTreeMap::new();
    let mut tickets = Vec::new();
    for i in 0..3 {
        let p = propose("agent-a", &format!("key-{i}"), review(), now);
        store.commit(insert(&p)).await.unwrap();
        expected.insert(p.ticket.id(), p.audit.clone());
        tickets.push(p.ticket);
    }
    // Interleave later events of the tickets with events of no ticket.
    for (i, t) in tickets.iter().enumerate() {
        let next = if i == 1 {
            reject(t, "bob", now)
        } else {
            approve(t, "alice", now)
        };
        let mut write = update(t, &next);
        write.audit.push(marker(i as u64, now));
        store.commit(write).await.unwrap();
        expected.get_mut(&t.id()).unwrap().extend(next.audit);
    }
    for (id, records_expected) in &expected {
        let events = store.ticket_audit(*id).await.unwrap();
        assert_eq!(&records(&events), records_expected);
        assert!(events.windows(2).all(|w| w[0].seq() < w[1].seq()));
    }
    assert!(store.ticket_audit(new_id()).await.unwrap().is_empty());

    let all = chain(&*store).await;
    let head = store.audit_head().await.unwrap();
    assert_eq!(all.len() as u64, head.seq);
    for from in [1, 2, head.seq, head.seq + 1] {
        for limit in [1, 3, 1_000] {
            let page = store.audit_events(from, limit).await.unwrap();
            let want: Vec<_> = all
                .iter()
                .filter(|e| e.seq >= from)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(page, want, "audit_events({from}, {limit})");
        }
    }
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// Health: pending tickets and the oldest one's creation, the outbox backlog, the chain length.
pub async fn health_reports_pending_backlog_and_chain_length<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let empty = store.health().await.unwrap();
    assert_eq!(
        (
            empty.pending,
            empty.oldest_pending,
            empty.outbox_backlog,
            empty.outbox_dead,
            empty.audit_events
        ),
        (0, None, 0, 0, 0)
    );
    let mut rows = 0;
    let mut pending = Vec::new();
    for (i, (ruling, created)) in [
        (review(), T0 + 5_000),
        (allow(), T0),
        (review(), T0 + 2_000),
        (deny(), T0 + 1_000),
        (review(), T0 + 3_000),
    ]
    .into_iter()
    .enumerate()
    {
        let p = propose("agent-a", &format!("key-{i}"), ruling, ts(created));
        let mut write = insert(&p);
        for _ in 0..i {
            write.outbox.push(outbox(p.ticket.id(), ts(created)));
            rows += 1;
        }
        store.commit(write).await.unwrap();
        if p.ticket.state().name() == StateName::Pending {
            pending.push(p.ticket);
        }
    }
    // The oldest pending one is decided: the next oldest counts.
    let oldest = pending
        .iter()
        .min_by_key(|t| t.created_at())
        .unwrap()
        .clone();
    store
        .commit(update(&oldest, &reject(&oldest, "bob", ts(T0 + 6_000))))
        .await
        .unwrap();

    let health = store.health().await.unwrap();
    assert_eq!(health.pending, 2);
    assert_eq!(health.oldest_pending, Some(ts(T0 + 3_000)));
    assert_eq!(health.outbox_backlog, rows);
    assert_eq!(health.outbox_dead, 0);
    assert_eq!(health.audit_events, store.audit_head().await.unwrap().seq);
    store.shutdown().await.unwrap();
}

/// Saved checkpoints read back exactly; the latest is the one of the longest chain, even when
/// an older one is saved afterwards.
pub async fn checkpoints_keep_the_newest<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let key = CheckpointKey::new("audit.test/2025", &[9; 32]).unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);

    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    let early = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
    store.save_checkpoint(&early).await.unwrap();
    assert_eq!(
        store.latest_checkpoint().await.unwrap().as_ref(),
        Some(&early)
    );

    proposed(&*store, "agent-a", "b", review(), ts(T0)).await;
    let late = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
    store.save_checkpoint(&late).await.unwrap();
    store.save_checkpoint(&early).await.unwrap();
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest, late);
    assert_eq!(
        latest.verify(&[key]).unwrap(),
        store.audit_head().await.unwrap()
    );
    store.shutdown().await.unwrap();
}

/// Checkpoints are listed by size, smallest first, from a size on, a page at a time.
pub async fn checkpoints_are_listed_smallest_first<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let key = CheckpointKey::new("audit.test/2025", &[9; 32]).unwrap();
    assert!(store.checkpoints(0, 10).await.unwrap().is_empty());
    let mut saved = Vec::new();
    for i in 0..5 {
        proposed(&*store, "agent-a", &format!("c{i}"), review(), ts(T0)).await;
        let cp = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
        saved.push(cp);
    }
    // Saved out of order, one twice.
    for i in [3, 0, 4, 1, 2, 3] {
        store.save_checkpoint(&saved[i]).await.unwrap();
    }
    assert_eq!(store.checkpoints(0, 100).await.unwrap(), saved);
    assert_eq!(store.checkpoints(0, 2).await.unwrap(), saved[..2]);
    let from = saved[2].size();
    assert_eq!(store.checkpoints(from, 2).await.unwrap(), saved[2..4]);
    assert_eq!(store.checkpoints(from + 1, 100).await.unwrap(), saved[3..]);
    assert!(store
        .checkpoints(saved[4].size() + 1, 100)
        .await
        .unwrap()
        .is_empty());
    store.shutdown().await.unwrap();
}

/// A record carrying `texts`, sealed with fixed salts.
fn with_texts(ticket: Option<TicketId>, texts: &[(&str, serde_json::Value)]) -> AuditRecord {
    let mut data = serde_json::Map::new();
    data.insert("note".into(), json!("texts"));
    let mut record = AuditRecord::new(
        ticket,
        ts(T0),
        "test.texts",
        Actor::System,
        serde_json::Value::Object(data),
    );
    for (name, value) in texts {
        record = record.with_text(*name, value.clone());
    }
    let mut salt = 0u8;
    record.seal(|| {
        salt += 1;
        [salt; 32]
    });
    record
}

/// Texts are kept beside their events: the chained bytes hold only the commitments, the
/// side table the values and salts; a ticket's history (in pages) and `audit_texts` read them
/// back, and each opens its commitment.
pub async fn texts_are_kept_beside_their_events<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let t = proposed(&*store, "agent-a", "texts", review(), ts(T0)).await;
    let secret = "transfer to DE89 3704 0044 0532 0130 00 rejected";
    let first = with_texts(
        Some(t.id()),
        &[
            ("feedback", json!(secret)),
            (
                "observed",
                json!({ "row_count": 121, "f": 1.5, "deep": [[{ "x": null }]] }),
            ),
        ],
    );
    let second = with_texts(None, &[("reason", json!("é \u{0} \" \\ ünïcödé"))]);
    let third = with_texts(Some(t.id()), &[]);
    let write = Write::new().with_audit_records([
        first.clone(),
        marker(1, ts(T0)),
        second.clone(),
        third.clone(),
    ]);
    let head = store.commit(write).await.unwrap().head;

    // Never in the hashed bytes.
    for event in chain(&*store).await {
        assert!(
            !String::from_utf8_lossy(&event.bytes).contains("DE89"),
            "event {} holds the text",
            event.seq
        );
    }
    // Read back with the ticket's history, kept and opening the commitments.
    let history = store.ticket_audit(t.id()).await.unwrap();
    let kept = records(&history);
    assert_eq!(&kept[kept.len() - 2..], [first.clone(), third.clone()]);
    let event = &history[history.len() - 2];
    assert_eq!(event.text("feedback").unwrap().state(), TextState::Kept);
    assert_eq!(event.text("feedback").unwrap().as_str(), Some(secret));
    assert_eq!(
        event.record().data["feedback"]["commitment"].as_str(),
        event.text("feedback").unwrap().commitment().as_deref()
    );
    // In pages.
    let all = history.iter().map(AuditEvent::seq).collect::<Vec<_>>();
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.ticket_audit_page(t.id(), after, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq();
        paged.extend(page);
    }
    assert_eq!(paged.iter().map(AuditEvent::seq).collect::<Vec<_>>(), all);
    assert_eq!(records(&paged), kept);
    // The side table by event.
    let rows = store.audit_texts(1, head.seq).await.unwrap();
    let names: Vec<(u64, &str)> = rows.iter().map(|r| (r.seq, r.name.as_str())).collect();
    let first_seq = head.seq - 3;
    assert_eq!(
        names,
        [
            (first_seq, "feedback"),
            (first_seq, "observed"),
            (first_seq + 2, "reason")
        ]
    );
    assert_eq!(
        rows[2],
        TextRow::of(first_seq + 2, second.text("reason").unwrap()).unwrap()
    );
    assert!(store
        .audit_texts(first_seq + 3, head.seq)
        .await
        .unwrap()
        .is_empty());
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// A record whose texts are not sealed, or whose data does not hold their commitments, or
/// with a text named twice or badly, refuses the whole write: nothing of it is kept.
pub async fn texts_not_committed_by_the_chain_are_refused<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let t = proposed(&*store, "agent-a", "refused-texts", review(), ts(T0)).await;
    let before = snapshot(&*store, t.id()).await;
    let unsealed = AuditRecord::new(None, ts(T0), "test.texts", Actor::System, json!({}))
        .with_text("feedback", "pending");
    let mut uncommitted = with_texts(None, &[("feedback", json!("x"))]);
    uncommitted.data["feedback"] = json!({ "commitment": "00".repeat(32) });
    let mut swapped = with_texts(None, &[("feedback", json!("x"))]);
    swapped.texts = vec![AuditText::sealed("feedback", "y", [1; 32])];
    let badly_named = with_texts(None, &[("Feed Back", json!("x"))]);
    for record in [unsealed, uncommitted, swapped, badly_named] {
        let write = Write::new()
            .with_decision(decision(t.id(), "bob", "reject", ts(T0)))
            .with_audit_records([marker(1, ts(T0)), record])
            .with_nonce(nonce());
        let err = store.commit(write).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidWrite(_)), "{err:?}");
        assert_unchanged(&*store, t.id(), &before).await;
    }
    assert!(store.audit_texts(1, u64::MAX / 2).await.unwrap().is_empty());
    store.shutdown().await.unwrap();
}

/// An erasure drops a kept text's value and salt in the same write as its audit record,
/// naming that record as the erasing event; the chain is untouched and still verifies. A text
/// that is not kept (unknown, erased already) refuses the whole write; an erasure without an
/// audit record is refused.
pub async fn erasure_drops_a_text_and_names_the_erasing_event<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let t = proposed(&*store, "agent-a", "erase", review(), ts(T0)).await;
    let record = with_texts(
        Some(t.id()),
        &[("feedback", json!("secret")), ("reason", json!("kept"))],
    );
    let seq = store
        .commit(Write::new().with_audit(record))
        .await
        .unwrap()
        .head
        .seq;
    let text = TextRef::new(seq, "feedback");
    let erase = |text: TextRef| {
        Write::new()
            .with_audit(marker(9, ts(T0)))
            .with_erasure(text)
    };
    let by = store.commit(erase(text.clone())).await.unwrap().head.seq;
    let rows = store.audit_texts(seq, seq).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        TextRow {
            seq,
            name: "feedback".into(),
            value: None,
            salt: None,
            erased_by: Some(by),
        }
    );
    assert!(rows[1].value.is_some(), "the other text is kept");
    let history = store.ticket_audit(t.id()).await.unwrap();
    let event = history.iter().find(|e| e.seq() == seq).unwrap();
    assert_eq!(
        event.text("feedback").unwrap().state(),
        TextState::Erased { by }
    );
    assert_eq!(event.text("feedback").unwrap().value(), None);
    assert_eq!(event.text("reason").unwrap().as_str(), Some("kept"));

    // Erased already, never written: nothing of the write is kept.
    let head = store.audit_head().await.unwrap();
    for missing in [
        text.clone(),
        TextRef::new(seq, "output"),
        TextRef::new(head.seq + 5, "reason"),
    ] {
        let err = store.commit(erase(missing.clone())).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::NoSuchText(t) if *t == missing),
            "{err:?}"
        );
        assert_eq!(store.audit_head().await.unwrap(), head);
    }
    let err = store
        .commit(Write::default().with_erasure(TextRef::new(seq, "reason")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidWrite(_)), "{err:?}");
    assert!(store.audit_texts(seq, seq).await.unwrap()[1]
        .value
        .is_some());
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// After shutdown every commit is refused with `Closed`; shutting down again is fine.
pub async fn shutdown_refuses_later_commits<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    store.shutdown().await.unwrap();
    let p = propose("agent-a", "b", review(), ts(T0));
    assert!(matches!(
        store.commit(insert(&p)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::Closed)
    ));
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Durable stores
// ---------------------------------------------------------------------------------------------

/// Shutdown while commits are in flight: each commit is either acknowledged or refused with
/// `Closed`, and after a reopen exactly the acknowledged ones are there.
pub async fn shutdown_keeps_every_acknowledged_commit<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let now = ts(T0);
    let mut outcomes: Vec<(Ticket, bool)> = Vec::new();
    for i in 0..8 {
        outcomes.push((
            proposed(&*store, "agent-a", &format!("first-{i}"), review(), now).await,
            true,
        ));
    }
    let proposals: Vec<_> = (0..48)
        .map(|i| propose("agent-a", &format!("racing-{i}"), review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    tokio::task::yield_now().await;
    store.shutdown().await.unwrap();
    for (p, handle) in proposals.iter().zip(handles) {
        match handle.await.unwrap() {
            Ok(_) => outcomes.push((p.ticket.clone(), true)),
            Err(StoreError::Closed) => outcomes.push((p.ticket.clone(), false)),
            Err(e) => panic!("a commit racing shutdown failed otherwise: {e:?}"),
        }
    }
    drop(store);

    let reopened = open_in(&open, &env).await;
    for (ticket, acknowledged) in &outcomes {
        let stored = reopened.ticket(ticket.id()).await.unwrap();
        if *acknowledged {
            assert_eq!(
                stored.as_ref(),
                Some(ticket),
                "an acknowledged commit survives"
            );
        } else {
            assert_eq!(stored, None, "a refused commit left nothing");
        }
    }
    let acknowledged = outcomes.iter().filter(|(_, ok)| *ok).count() as u64;
    let per_ticket = propose("agent-a", "x", review(), now).audit.len() as u64;
    assert_eq!(
        verify_chain(&*reopened).await.count,
        acknowledged * per_ticket
    );
    reopened.shutdown().await.unwrap();
}

/// After a reopen the head is where it was, the next events chain onto it, and the tickets,
/// keys and compare-and-swap versions are intact.
pub async fn chain_continues_across_reopen<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let now = ts(T0);
    let store = open_in(&open, &env).await;
    let a = proposed(&*store, "agent-a", "a", review(), now).await;
    proposed(&*store, "agent-a", "b", allow(), now).await;
    let head = store.audit_head().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = open_in(&open, &env).await;
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", None), a.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
    let twin = propose("agent-a", "a", review(), now);
    assert!(matches!(
        store.commit(insert(&twin)).await,
        Err(StoreError::DuplicateKey { existing }) if existing == a.id()
    ));
    let next = approve(&a, "alice", now);
    let committed = store.commit(update(&a, &next)).await.unwrap();
    assert_eq!(committed.head.seq, head.seq + next.audit.len() as u64);
    assert_eq!(
        records_between(&*store, head.seq + 1, committed.head.seq).await,
        next.audit
    );
    let raw = store.audit_events(head.seq + 1, 1).await.unwrap();
    assert_eq!(
        raw[0].prev_hash, head.hash,
        "the first new event links to the old head"
    );
    assert_eq!(verify_chain(&*store).await.head, committed.head);
    store.shutdown().await.unwrap();
    drop(store);

    let store = open_in(&open, &env).await;
    assert_eq!(store.audit_head().await.unwrap(), committed.head);
    assert_eq!(
        store.ticket(a.id()).await.unwrap().as_ref(),
        Some(&next.ticket)
    );
    store.shutdown().await.unwrap();
}

/// A clock set back across a restart does not move the commit time back either.
pub async fn commit_time_never_goes_backwards_across_reopen<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::with(Arc::new(SteppingClock::new(ts(T0 + 10_000))));
    let store = open_in(&open, &env).await;
    let p = propose("agent-a", "a", review(), ts(T0));
    let first = store.commit(insert(&p)).await.unwrap();
    assert_eq!(first.at, ts(T0 + 10_000));
    store.shutdown().await.unwrap();
    drop(store);

    let env = env.with_clock(Arc::new(SteppingClock::new(ts(T0 + 5_000))));
    let store = open_in(&open, &env).await;
    let again = store
        .commit(Write::new().with_audit_records(vec![marker(1, ts(T0))]))
        .await
        .unwrap();
    assert!(again.at >= first.at, "{again:?} after {first:?}");
    let late = Write::new()
        .with_audit_records(vec![marker(2, ts(T0))])
        .with_valid_before(ts(T0 + 7_000));
    assert!(matches!(
        store.commit(late).await,
        Err(StoreError::TooLate { at, .. }) if at >= first.at
    ));
    store.shutdown().await.unwrap();
}

/// An outbox row of `ticket` on `channel`, due at `due`.
fn outbox_on(ticket: TicketId, channel: &str, due: Timestamp) -> OutboxRow {
    let mut row = outbox(ticket, due);
    row.channel = channel.into();
    row
}

/// Claims return due pending rows, oldest due first, at most `limit`; a claim leases them
/// (due moves to `now + lease`) so they are not claimed again until the lease ends.
pub async fn outbox_claims_due_rows_oldest_first_and_leases_them<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let lease = std::time::Duration::from_secs(60);
    let mut ids = Vec::new();
    for (i, due) in [T0 + 3_000, T0 + 1_000, T0 + 2_000, T0 + 50_000]
        .into_iter()
        .enumerate()
    {
        let p = propose("agent-a", &format!("outbox-{i}"), review(), ts(T0));
        let row = outbox_on(p.ticket.id(), "ops", ts(due));
        ids.push(row.id);
        let mut w = insert(&p);
        w.outbox.push(row);
        store.commit(w).await.unwrap();
    }

    assert!(store
        .claim_outbox(ts(T0), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let now = ts(T0 + 3_000);
    let first = store.claim_outbox(now, lease, 2).await.unwrap();
    let claimed: Vec<_> = first.iter().map(|e| e.row.id).collect();
    assert_eq!(
        claimed,
        [ids[1], ids[2]],
        "oldest due first, at most the limit"
    );
    for e in &first {
        assert_eq!(e.status, OutboxStatus::Pending);
        assert_eq!(e.attempts, 0);
        assert_eq!(e.row.due, now.saturating_add(lease), "leased");
        assert_eq!(e.row.channel, "ops");
    }
    let second = store.claim_outbox(now, lease, 10).await.unwrap();
    assert_eq!(
        second.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        [ids[0]],
        "claimed rows are not claimed again during their lease"
    );
    assert!(store.claim_outbox(now, lease, 10).await.unwrap().is_empty());
    // A lease that ran out (a crashed worker) makes the rows claimable again (with the
    // fourth row, due meanwhile).
    let later = now.saturating_add(lease);
    let again: BTreeSet<_> = store
        .claim_outbox(later, lease, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.row.id)
        .collect();
    assert_eq!(again, ids.iter().copied().collect::<BTreeSet<_>>());
    // Claims changed nothing but the due time.
    let health = store.health().await.unwrap();
    assert_eq!((health.outbox_backlog, health.outbox_dead), (4, 0));
}

/// A ticket's rows on one channel are claimed one at a time, in the order written: the next
/// only once the earlier one is no longer pending. Other channels are independent.
pub async fn outbox_claims_a_tickets_rows_per_channel_in_order<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let lease = std::time::Duration::from_secs(60);
    let p = propose("agent-a", "ordered", review(), ts(T0));
    let id = p.ticket.id();
    let rows = [
        outbox_on(id, "ops", ts(T0 + 5)),
        outbox_on(id, "room", ts(T0 + 5)),
        outbox_on(id, "ops", ts(T0)),
    ];
    let mut w = insert(&p);
    w.outbox.extend(rows.iter().cloned());
    store.commit(w).await.unwrap();

    let stored = store.ticket_outbox(id).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        "rows of a ticket in the order written"
    );
    assert_eq!(stored[0].row, rows[0]);

    let now = ts(T0 + 10);
    let first = store.claim_outbox(now, lease, 10).await.unwrap();
    let claimed: BTreeSet<_> = first.iter().map(|e| e.row.id).collect();
    assert_eq!(claimed, BTreeSet::from([rows[0].id, rows[1].id]));
    // The later `ops` row waits while the earlier one is pending, even past its lease.
    let after_lease = now.saturating_add(lease);
    let retry: Vec<_> = store
        .claim_outbox(after_lease, lease, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.row.id)
        .collect();
    assert!(!retry.contains(&rows[2].id));
    let ops_first = store
        .ticket_outbox(id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.row.id == rows[0].id)
        .unwrap();
    store
        .commit(Write::new().with_outbox_updates(vec![OutboxUpdate::new(
            rows[0].id,
            ops_first.attempts,
            OutboxOutcome::Delivered {
                receipt: json!({ "channel_message_id": "m-1" }),
            },
        )]))
        .await
        .unwrap();
    let next = store.claim_outbox(after_lease, lease, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        [rows[2].id]
    );
}

/// Outcomes: delivered keeps the receipt (the newest per ticket and channel is readable),
/// a retry counts the attempt and moves the due time, dead counts in health. Each applies
/// only to a pending row at the claimed attempts count; otherwise the whole write — audit
/// rows included — is refused with `OutboxConflict`.
pub async fn outbox_outcomes_are_recorded_once_with_their_audit_rows<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let p = propose("agent-a", "outcomes", review(), ts(T0));
    let id = p.ticket.id();
    let rows = [
        outbox_on(id, "ops", ts(T0)),
        outbox_on(id, "room", ts(T0)),
        outbox_on(id, "mail", ts(T0)),
    ];
    let mut w = insert(&p);
    w.outbox.extend(rows.iter().cloned());
    store.commit(w).await.unwrap();
    assert_eq!(store.outbox_receipt(id, "ops").await.unwrap(), None);

    let outcome = |row: &OutboxRow, attempts: u32, outcome: OutboxOutcome, n: u64| {
        Write::new()
            .with_outbox_updates(vec![OutboxUpdate::new(row.id, attempts, outcome)])
            .with_audit_records(vec![marker(n, ts(T0 + 1))])
    };
    let receipt = json!({ "channel_message_id": "m-ops" });
    store
        .commit(outcome(
            &rows[0],
            0,
            OutboxOutcome::Delivered {
                receipt: receipt.clone(),
            },
            1,
        ))
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();
    // A second outcome for the same claim (another worker) is refused whole.
    match store
        .commit(outcome(
            &rows[0],
            0,
            OutboxOutcome::Retry {
                due: ts(T0 + 9),
                error: "late".into(),
            },
            2,
        ))
        .await
    {
        Err(StoreError::OutboxConflict { id: conflict }) => assert_eq!(conflict, rows[0].id),
        other => panic!("expected OutboxConflict, got {other:?}"),
    }
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "no audit row for a refused outcome"
    );
    assert_eq!(
        store.outbox_receipt(id, "ops").await.unwrap(),
        Some(receipt)
    );
    assert_eq!(store.outbox_receipt(id, "room").await.unwrap(), None);

    // Retry: attempts + 1, due moved, error kept; a stale attempts count is refused.
    store
        .commit(outcome(
            &rows[1],
            0,
            OutboxOutcome::Retry {
                due: ts(T0 + 60_000),
                error: "timeout".into(),
            },
            3,
        ))
        .await
        .unwrap();
    assert!(matches!(
        store
            .commit(outcome(
                &rows[1],
                0,
                OutboxOutcome::Dead {
                    error: "stale".into()
                },
                4
            ))
            .await,
        Err(StoreError::OutboxConflict { .. })
    ));
    assert!(store
        .claim_outbox(ts(T0 + 59_999), std::time::Duration::from_secs(1), 10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.row.id != rows[1].id));
    // Dead.
    store
        .commit(outcome(
            &rows[2],
            0,
            OutboxOutcome::Dead {
                error: "permanent".into(),
            },
            5,
        ))
        .await
        .unwrap();

    let stored = store.ticket_outbox(id).await.unwrap();
    let by_id = |i: usize| stored.iter().find(|e| e.row.id == rows[i].id).unwrap();
    assert_eq!(
        (by_id(0).status, by_id(0).attempts),
        (OutboxStatus::Delivered, 0)
    );
    assert_eq!(
        (by_id(1).status, by_id(1).attempts, by_id(1).row.due),
        (OutboxStatus::Pending, 1, ts(T0 + 60_000))
    );
    assert_eq!(by_id(1).last_error.as_deref(), Some("timeout"));
    assert_eq!(
        (by_id(2).status, by_id(2).attempts),
        (OutboxStatus::Dead, 1)
    );
    let health = store.health().await.unwrap();
    assert_eq!((health.outbox_backlog, health.outbox_dead), (1, 1));
    verify_chain(store.as_ref()).await;
}

// ---------------------------------------------------------------------------------------------
// The clock: one per store, jumps refused, a floor ahead refused until rebased
// ---------------------------------------------------------------------------------------------
//
// The suite assumes the store's clock tolerance (see `CommitClock`) is between a few minutes
// and a day, as the default is: steps of two minutes must be accepted, steps of a day refused.

/// A day: further than any store's tolerance.
const DAY_MS: i64 = 24 * 3_600_000;

/// The store says which clock stamps its commits: the one it was opened with.
pub async fn the_store_names_the_clock_it_was_opened_with<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    assert_eq!(store.clock().id(), clock.id(), "a clone of the same clock");
    assert_ne!(store.clock().id(), ManualClock::new(ts(T0)).id());
    clock.advance(std::time::Duration::from_secs(5));
    assert_eq!(store.clock().now(), ts(T0 + 5_000));
    store.shutdown().await.unwrap();
}

/// The wall clock jumping ahead of its monotonic time (by more than the tolerance) refuses
/// every commit with `ClockJump` — nothing written, the floor not moved — and raises the health
/// alarm, until the clock reads sensibly again; a small step is accepted.
pub async fn a_clock_jump_is_refused_and_moves_no_floor<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    let p = propose("agent-a", "a", review(), ts(T0));
    store.commit(insert(&p)).await.unwrap();
    clock.advance(std::time::Duration::from_secs(60));
    // A correction of a minute: accepted.
    clock.step_wall(ts(T0 + 120_000));
    let small = store
        .commit(Write::new().with_audit(marker(1, ts(T0))))
        .await
        .unwrap();
    assert_eq!(small.at, ts(T0 + 120_000));
    assert_eq!(store.health().await.unwrap().clock_alarm, None);

    // A year ahead, without the time passing.
    clock.step_wall(ts(T0 + 365 * DAY_MS));
    let before = snapshot(&*store, p.ticket.id()).await;
    let q = propose("agent-a", "b", review(), ts(T0 + 365 * DAY_MS));
    match store.commit(insert(&q)).await {
        Err(StoreError::ClockJump { clock, expected }) => {
            assert_eq!(clock, ts(T0 + 365 * DAY_MS));
            assert_eq!(expected, small.at, "the last commit plus no time passed");
        }
        other => panic!("expected a clock jump, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    assert_eq!(store.ticket(q.ticket.id()).await.unwrap(), None);
    assert!(matches!(
        store.health().await.unwrap().clock_alarm,
        Some(ClockAlarm::Jumped { .. })
    ));

    // Corrected: commits resume at the clock's time, not at the year-ahead reading.
    clock.step_wall(ts(T0 + 180_000));
    let resumed = store.commit(insert(&q)).await.unwrap();
    assert_eq!(resumed.at, ts(T0 + 180_000));
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    assert_eq!(
        store.health().await.unwrap().commit_floor,
        Some(ts(T0 + 180_000))
    );
    store.shutdown().await.unwrap();
}

/// A write that rebases is committed at the clock's reading despite a jump, and later commits
/// continue from it (an operator vouched for the clock: a suspend longer than the tolerance).
pub async fn a_rebase_accepts_a_jumped_clock<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    clock.step_wall(ts(T0 + 2 * DAY_MS));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::ClockJump { .. })
    ));
    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0 + 2 * DAY_MS)));
    let rebased = store.commit(rebase).await.unwrap();
    assert_eq!(rebased.at, ts(T0 + 2 * DAY_MS));
    clock.advance(std::time::Duration::from_secs(1));
    let next = proposed(&*store, "agent-a", "b", review(), ts(T0 + 2 * DAY_MS)).await;
    assert!(store.ticket(next.id()).await.unwrap().is_some());
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    store.shutdown().await.unwrap();
}

/// A floor more than the tolerance ahead of the clock (the clock set back a day here; a store
/// written under a clock a year ahead in `a_poisoned_floor_is_refused_after_reopen_until_rebased`)
/// refuses every commit with `FloorAhead`, raising the alarm; a write that rebases steps the
/// floor back onto the clock, and deadlines are then judged by the clock again.
pub async fn a_floor_ahead_of_the_clock_is_refused_until_rebased<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let clock = ManualClock::new(ts(T0 + DAY_MS));
    let env = Env::with(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0 + DAY_MS)).await;
    clock.step_wall(ts(T0));
    let p = propose("agent-a", "b", review(), ts(T0));
    let before = snapshot(&*store, p.ticket.id()).await;
    match store.commit(insert(&p)).await {
        Err(StoreError::FloorAhead { floor, clock }) => {
            assert_eq!((floor, clock), (ts(T0 + DAY_MS), ts(T0)));
        }
        other => panic!("expected the floor ahead, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    let health = store.health().await.unwrap();
    assert_eq!(health.commit_floor, Some(ts(T0 + DAY_MS)));
    assert_eq!(
        health.clock_alarm,
        Some(ClockAlarm::FloorAhead {
            floor: ts(T0 + DAY_MS),
            clock: ts(T0)
        })
    );

    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0)));
    assert_eq!(
        store.commit(rebase).await.unwrap().at,
        ts(T0),
        "stepped back"
    );
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    assert_eq!(store.health().await.unwrap().commit_floor, Some(ts(T0)));
    clock.advance(std::time::Duration::from_secs(1));
    // A limit the old floor had passed but the clock has not: judged by the clock.
    let mut write = insert(&p);
    write.valid_before = Some(ts(T0 + 60_000));
    assert_eq!(store.commit(write).await.unwrap().at, ts(T0 + 1_000));
    store.shutdown().await.unwrap();
}

/// Durable: a store written under a clock a year ahead, reopened under the right clock, refuses
/// commits (`FloorAhead`) until a rebase; the rebased floor holds across another reopen.
pub async fn a_poisoned_floor_is_refused_after_reopen_until_rebased<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let ahead = ManualClock::new(ts(T0 + 365 * DAY_MS));
    let env = Env::with(Arc::new(ahead));
    let store = open_in(&open, &env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0 + 365 * DAY_MS)).await;
    store.shutdown().await.unwrap();
    drop(store);

    let clock = ManualClock::new(ts(T0));
    let env = env.with_clock(Arc::new(clock.clone()));
    let store = open_in(&open, &env).await;
    assert!(matches!(
        store.health().await.unwrap().clock_alarm,
        Some(ClockAlarm::FloorAhead { .. })
    ));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::FloorAhead { .. })
    ));
    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0)));
    assert_eq!(store.commit(rebase).await.unwrap().at, ts(T0));
    store.shutdown().await.unwrap();
    drop(store);

    clock.advance(std::time::Duration::from_secs(10));
    let store = open_in(&open, &env).await;
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    let p = propose("agent-a", "b", review(), ts(T0 + 10_000));
    assert_eq!(
        store.commit(insert(&p)).await.unwrap().at,
        ts(T0 + 10_000),
        "the rebased floor, not the poisoned one"
    );
    store.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Freezes
// ---------------------------------------------------------------------------------------------

fn freeze_write(scope: FreezeScope, reason: &str, n: u64) -> Write {
    let mut write =
        Write::default().with_freeze_change(FreezeChange::set(scope, reason, Some(person("olga"))));
    write.audit.push(marker(n, ts(T0)));
    write
}

fn lift_write(scope: FreezeScope, n: u64) -> Write {
    let mut write = Write::default().with_freeze_change(FreezeChange::lift(scope));
    write.audit.push(marker(n, ts(T0)));
    write
}

fn guarded(p: &agent_handoff::ticket::Transition, agent_name: &str) -> Write {
    insert(p).with_freeze_guard(agent(agent_name))
}

/// A write guarded for an agent is refused whole (`Frozen`) while a freeze of that agent or of
/// every agent is in force, and lands once it is lifted; unguarded writes and other agents'
/// are not touched. `freezes` lists what is in force.
pub async fn a_freeze_refuses_guarded_writes_until_lifted<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    assert!(store.freezes().await.unwrap().is_empty());
    let a = FreezeScope::Agent(agent("agent-a"));
    store
        .commit(freeze_write(a.clone(), "agent a misbehaves", 1))
        .await
        .unwrap();
    let freezes = store.freezes().await.unwrap();
    assert_eq!(freezes.len(), 1);
    assert_eq!(
        (
            &freezes[0].scope,
            freezes[0].reason.as_str(),
            freezes[0].since
        ),
        (&a, "agent a misbehaves", ts(T0))
    );
    assert_eq!(freezes[0].by, Some(person("olga")));

    let p = propose("agent-a", "a", review(), ts(T0));
    let before = snapshot(&*store, p.ticket.id()).await;
    let mut write = guarded(&p, "agent-a");
    write.nonces.push(nonce());
    write.outbox.push(outbox(p.ticket.id(), ts(T0)));
    match store.commit(write.clone()).await {
        Err(StoreError::Frozen { scope, reason }) => {
            assert_eq!((scope, reason.as_str()), (a.clone(), "agent a misbehaves"));
        }
        other => panic!("expected frozen, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    // Another agent, and an unguarded write of the frozen one (a rejection, a finish).
    proposed(&*store, "agent-b", "b", review(), ts(T0)).await;
    let unguarded = proposed(&*store, "agent-a", "c", review(), ts(T0)).await;
    store
        .commit(update(&unguarded, &reject(&unguarded, "bob", ts(T0))))
        .await
        .unwrap();

    // Every agent.
    store
        .commit(freeze_write(FreezeScope::All, "incident", 2))
        .await
        .unwrap();
    let q = propose("agent-b", "d", review(), ts(T0));
    assert!(matches!(
        store.commit(guarded(&q, "agent-b")).await,
        Err(StoreError::Frozen {
            scope: FreezeScope::All,
            ..
        })
    ));
    let listed: Vec<FreezeScope> = store
        .freezes()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.scope)
        .collect();
    assert_eq!(listed, [FreezeScope::All, a.clone()], "global first");

    store.commit(lift_write(FreezeScope::All, 3)).await.unwrap();
    store.commit(guarded(&q, "agent-b")).await.unwrap();
    assert!(matches!(
        store.commit(write.clone()).await,
        Err(StoreError::Frozen { .. })
    ));
    store.commit(lift_write(a, 4)).await.unwrap();
    // Lifting what is not frozen changes nothing.
    store.commit(lift_write(FreezeScope::All, 5)).await.unwrap();
    assert!(store.freezes().await.unwrap().is_empty());
    store.commit(write).await.unwrap();
    assert!(store.ticket(p.ticket.id()).await.unwrap().is_some());
    store.shutdown().await.unwrap();
}

/// The freeze and its audit row are one write: a freeze write refused for another reason sets
/// no freeze.
pub async fn a_freeze_is_set_with_its_audit_row_or_not_at_all<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let used = nonce();
    store.commit(Write::new().with_nonce(used)).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let mut write = freeze_write(FreezeScope::All, "incident", 1);
    write.nonces.push(used);
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert!(store.freezes().await.unwrap().is_empty());
    assert_eq!(store.audit_head().await.unwrap(), head);
    let p = propose("agent-a", "a", review(), ts(T0));
    store.commit(guarded(&p, "agent-a")).await.unwrap();
    store.shutdown().await.unwrap();
}

/// Guarded writes racing a freeze: each one either committed before the freeze's write (its
/// audit rows come before the freeze's in the chain) or was refused `Frozen` — never after.
pub async fn guarded_writes_racing_a_freeze_commit_before_it_or_not_at_all<S, Fut>(
    open: impl Fn(Env) -> Fut,
) where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    let proposals: Vec<_> = (0..72)
        .map(|i| propose("agent-a", &format!("k{i}"), review(), ts(T0)))
        .collect();
    // Some before, many racing, some after.
    for p in &proposals[..8] {
        store.commit(guarded(p, "agent-a")).await.unwrap();
    }
    let mut racing = Vec::new();
    for (i, p) in proposals[8..64].iter().enumerate() {
        let (store, write) = (Arc::clone(&store), guarded(p, "agent-a"));
        racing.push(tokio::spawn(async move {
            for _ in 0..i % 7 {
                tokio::task::yield_now().await;
            }
            store.commit(write).await
        }));
    }
    let freezer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            store
                .commit(freeze_write(
                    FreezeScope::Agent(agent("agent-a")),
                    "race",
                    99,
                ))
                .await
        })
    };
    let mut outcomes = Vec::new();
    for r in racing {
        outcomes.push(r.await.unwrap());
    }
    let frozen_at = freezer.await.unwrap().unwrap().head.seq;
    for p in &proposals[64..] {
        assert!(matches!(
            store.commit(guarded(p, "agent-a")).await,
            Err(StoreError::Frozen { .. })
        ));
    }
    let mut before = 8;
    for (p, outcome) in proposals[8..64].iter().zip(&outcomes) {
        match outcome {
            Ok(committed) => {
                before += 1;
                assert!(
                    committed.head.seq < frozen_at,
                    "a guarded write committed after the freeze"
                );
            }
            Err(StoreError::Frozen { .. }) => {
                assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
            }
            Err(e) => panic!("a guarded write failed otherwise: {e:?}"),
        }
    }
    for p in &proposals {
        let events = store.ticket_audit(p.ticket.id()).await.unwrap();
        assert!(
            events.iter().all(|e| e.seq() < frozen_at),
            "audit rows of a guarded write after the freeze's"
        );
    }
    let listed = all_pages(&*store, TicketFilter::default()).await.0.len();
    assert_eq!(listed, before, "exactly the writes answered Ok are stored");
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
}

/// Durable: a freeze holds across a reopen (a restart does not unfreeze), and so does its lift.
pub async fn freezes_hold_across_reopen<S, Fut>(open: impl Fn(Env) -> Fut)
where
    S: Store + 'static,
    Fut: Future<Output = S>,
{
    let env = Env::new();
    let store = open_in(&open, &env).await;
    store
        .commit(freeze_write(FreezeScope::All, "incident", 1))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = open_in(&open, &env).await;
    assert_eq!(store.freezes().await.unwrap().len(), 1);
    let p = propose("agent-a", "a", review(), ts(T0));
    assert!(matches!(
        store.commit(guarded(&p, "agent-a")).await,
        Err(StoreError::Frozen { .. })
    ));
    store.commit(lift_write(FreezeScope::All, 2)).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = open_in(&open, &env).await;
    assert!(store.freezes().await.unwrap().is_empty());
    store.commit(guarded(&p, "agent-a")).await.unwrap();
    store.shutdown().await.unwrap();
}
