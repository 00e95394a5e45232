//! Crash tests: kill a process in the middle of the store's commit path, reopen the file, and
//! check what it left behind.
//!
//! Needs the `failpoints` feature: `cargo test --features failpoints --test store_crash`.
//!
//! Each case re-runs this test binary as a child process (the ignored test `crash_worker`,
//! selected with `--exact --ignored`, told by `STORE_CRASH_DB` to act as the worker). The child
//! opens a `SqliteStore` on a file and commits in a loop — inserts with audit and outbox rows,
//! approvals with decisions, begins, nonce-only writes, and writes doomed to lose their
//! compare-and-swap — printing a `send` line describing each write before committing it and an
//! `ack` (or `fail`) line after the store answered, flushed each time. It runs with
//! `AGENT_HANDOFF_FAILPOINT=<point>:<n>`, so the writer SIGKILLs the process the `n`-th time it
//! reaches `before_audit`, `before_commit` or `after_commit` (the store's points; every point
//! is listed and explained in `src/failpoint.rs`).
//!
//! This suite drives the store directly with raw `Write`s; `tests/crash_matrix.rs` crashes the
//! operations a user runs (`Handoff` propose, decide, begin, finish, outbox delivery) at these
//! points and at the facade's own, and checks that a restarted host can finish the work.
//!
//! The parent waits for the child to die by a signal, then checks:
//! - `PRAGMA integrity_check` is `ok` (through its own connection);
//! - the audit chain verifies and ends at the store's head;
//! - every write is all or nothing: the tickets, audit events (by ticket and in total),
//!   decisions, outbox rows and nonces in the file are exactly the sum of the writes that are
//!   present, where a write is present when its ticket is at its version (or, for a write
//!   without a ticket, its nonce is used); no row belongs to anything else;
//! - every acknowledged write is present, no refused one is;
//! - with one writer in flight: the write in flight at `before_audit` or `before_commit` is
//!   absent, the one at `after_commit` (durable, not yet acknowledged) is present in full;
//!   with several, only the all-or-nothing and acknowledgement checks apply (a batch may be
//!   durable before the child printed its acknowledgements);
//! - no ticket was started twice (at most one `execution_started` event each);
//! - the reopened store takes new commits onto the same chain.
//!
//! The default run (CI size) kills at a few positions of each point, one and four writers in
//! flight, and a couple of random positions. For a big run:
//! `CRASH_RUNS=1000 cargo test --release --features failpoints --test store_crash -- random`
//! (`CRASH_SEED=<n>` picks another sequence of random positions).
#![cfg(all(feature = "failpoints", feature = "sqlite"))]

mod rng;
use rng::Rng;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use agent_handoff::audit::{kind, Actor, AuditRecord};
use agent_handoff::backend::{NonceUse, Write};
use agent_handoff::conformance::fixtures::*;
use agent_handoff::ticket::{StateName, Ticket};
use agent_handoff::{SqliteStore, Store, TicketId};
use serde::{Deserialize, Serialize};
use serde_json::json;

const DB_VAR: &str = "STORE_CRASH_DB";
const SEED_VAR: &str = "STORE_CRASH_SEED";
const WRITERS_VAR: &str = "STORE_CRASH_WRITERS";
/// Upper bound on the writes one child makes (a child that reaches it exits normally, which
/// fails the case: its failpoint was never hit).
const MAX_OPS: u64 = 400;

/// What a write puts in the store, as the child announces it before committing.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Op {
    id: u64,
    /// `insert`, `approve`, `begin`, `nonce`, `doomed`.
    what: String,
    /// The ticket written, and the version it is written at.
    ticket: Option<TicketId>,
    version: u64,
    /// Kinds of the audit records about the ticket, in order.
    kinds: Vec<String>,
    /// Audit records about no ticket.
    free_audit: u64,
    outbox: u64,
    decisions: u64,
    nonce: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// The worker run in the child process; does nothing unless `STORE_CRASH_DB` is set.
#[test]
#[ignore = "child process of the crash tests"]
fn crash_worker() {
    let Ok(path) = std::env::var(DB_VAR) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_VAR).unwrap().parse().unwrap();
    let writers: u64 = std::env::var(WRITERS_VAR).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move { writer(&store, w, seed).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    say("done");
}

/// One writer: commits one write at a time, keeping its own tickets.
async fn writer(store: &SqliteStore, w: u64, seed: u64) {
    let mut rng = Rng::new(seed ^ (w + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut mine: Vec<Ticket> = Vec::new();
    // Each ticket as first committed, to replay a stale compare-and-swap from.
    let mut first: BTreeMap<TicketId, Ticket> = BTreeMap::new();
    for i in 0..MAX_OPS {
        let id = w * 1_000_000 + i;
        let now = agent_handoff::Clock::now(&agent_handoff::SystemClock);
        let pick = rng.below(100);
        let of_state = |state: StateName| -> Vec<usize> {
            (0..mine.len())
                .filter(|k| mine[*k].state().name() == state)
                .collect()
        };
        let pending = of_state(StateName::Pending);
        let approved = of_state(StateName::Approved);
        let decided: Vec<usize> = (0..mine.len())
            .filter(|k| mine[*k].version() >= 2)
            .collect();
        let own = nonce();
        let (op, write, next) = if pick < 25 && !pending.is_empty() {
            let t = &mine[pending[rng.below(pending.len() as u64) as usize]];
            let tr = approve(t, "alice", now);
            let mut write = update(t, &tr);
            write.decision = Some(decision(t.id(), "alice", "approve", now));
            write.outbox.push(outbox(t.id(), now));
            (
                describe(id, "approve", &tr.ticket, &write, &own),
                write,
                Some(tr.ticket),
            )
        } else if pick < 40 && !approved.is_empty() {
            let t = &mine[approved[rng.below(approved.len() as u64) as usize]];
            let tr = begin(t, ts(now.as_unix_millis() + 600_000), now);
            let write = update(t, &tr);
            (
                describe(id, "begin", &tr.ticket, &write, &own),
                write,
                Some(tr.ticket),
            )
        } else if pick < 50 {
            let write = Write::new().with_audit_records(vec![op_marker(id, now)]);
            (describe_free(id, "nonce", &write, &own), write, None)
        } else if pick < 65 && !decided.is_empty() {
            // The ticket's first transition again, from version 1: a stale compare-and-swap,
            // refused whole.
            let t = &mine[decided[rng.below(decided.len() as u64) as usize]];
            let v1 = &first[&t.id()];
            let tr = match v1.state().name() {
                StateName::Pending => approve(v1, "bob", now),
                _ => begin(v1, ts(now.as_unix_millis() + 600_000), now),
            };
            let mut write = update(v1, &tr);
            write.audit.push(op_marker(id, now));
            write.decision = Some(decision(t.id(), "bob", "approve", now));
            write.outbox.push(outbox(t.id(), now));
            (
                describe(id, "doomed", &tr.ticket, &write, &own),
                write,
                None,
            )
        } else {
            let ruling = if rng.below(2) == 0 { review() } else { allow() };
            let p = propose(&format!("agent-{w}"), &format!("op-{id}"), ruling, now);
            let mut write = insert(&p);
            write.outbox.push(outbox(p.ticket.id(), now));
            (
                describe(id, "insert", &p.ticket, &write, &own),
                write,
                Some(p.ticket),
            )
        };
        let mut write = write;
        write.nonces.push(own);
        say(&format!("send {}", serde_json::to_string(&op).unwrap()));
        match store.commit(write).await {
            Ok(_) => {
                say(&format!("ack {id}"));
                if let Some(t) = next {
                    match mine.iter_mut().find(|m| m.id() == t.id()) {
                        Some(slot) => *slot = t,
                        None => {
                            first.insert(t.id(), t.clone());
                            mine.push(t);
                        }
                    }
                }
            }
            Err(e) => say(&format!("fail {id} {e}")),
        }
    }
}

fn op_marker(id: u64, at: agent_handoff::Timestamp) -> AuditRecord {
    AuditRecord::new(None, at, "test.op", Actor::System, json!({ "op": id }))
}

fn describe(id: u64, what: &str, ticket: &Ticket, write: &Write, nonce: &NonceUse) -> Op {
    Op {
        id,
        what: what.into(),
        ticket: Some(ticket.id()),
        version: ticket.version(),
        kinds: write
            .audit
            .iter()
            .filter(|r| r.ticket.is_some())
            .map(|r| r.kind.clone())
            .collect(),
        free_audit: write.audit.iter().filter(|r| r.ticket.is_none()).count() as u64,
        outbox: write.outbox.len() as u64,
        decisions: u64::from(write.decision.is_some()),
        nonce: hex(&nonce.nonce),
    }
}

fn describe_free(id: u64, what: &str, write: &Write, nonce: &NonceUse) -> Op {
    Op {
        id,
        what: what.into(),
        ticket: None,
        version: 0,
        kinds: Vec::new(),
        free_audit: write.audit.len() as u64,
        outbox: 0,
        decisions: 0,
        nonce: hex(&nonce.nonce),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// One crash: where, at which hit, with how many writers in flight, with which seed.
#[derive(Debug, Clone, Copy)]
struct Case {
    point: &'static str,
    nth: u64,
    writers: u64,
    seed: u64,
}

/// What the child said before it died.
#[derive(Default)]
struct Transcript {
    sent: BTreeMap<u64, Op>,
    acked: BTreeSet<u64>,
    failed: BTreeSet<u64>,
}

fn run_child(case: Case, db: &Path) -> Transcript {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["crash_worker", "--exact", "--ignored", "--nocapture"])
        .env(DB_VAR, db)
        .env(SEED_VAR, case.seed.to_string())
        .env(WRITERS_VAR, case.writers.to_string())
        .env(
            "AGENT_HANDOFF_FAILPOINT",
            format!("{}:{}", case.point, case.nth),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    {
        use std::os::unix::process::ExitStatusExt;
        let signal = output.status.signal();
        assert!(
            matches!(signal, Some(9) | Some(6)),
            "{case:?}: the child must die by SIGKILL (or abort), got {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut transcript = Transcript::default();
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("send ") {
            if let Ok(op) = serde_json::from_str::<Op>(json) {
                transcript.sent.insert(op.id, op);
            }
        } else if let Some(rest) = line.strip_prefix("ack ") {
            transcript.acked.insert(rest.trim().parse().unwrap());
        } else if let Some(rest) = line.strip_prefix("fail ") {
            let id = rest.split_whitespace().next().unwrap();
            transcript.failed.insert(id.parse().unwrap());
        }
    }
    transcript
}

/// Runs one crash and checks every invariant (see the module docs).
async fn crash_and_check(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.sqlite3");
    let transcript = run_child(case, &db);
    assert!(
        !transcript.sent.is_empty(),
        "{case:?}: the child wrote nothing"
    );
    let in_flight: Vec<u64> = transcript
        .sent
        .keys()
        .copied()
        .filter(|id| !transcript.acked.contains(id) && !transcript.failed.contains(id))
        .collect();
    assert!(
        !in_flight.is_empty() && in_flight.len() as u64 <= case.writers,
        "{case:?}: died with {in_flight:?} in flight"
    );

    // The file, through a connection of our own.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok", "{case:?}");

    let store = SqliteStore::open(&db).await.unwrap();
    let summary = verify_chain(&store).await;

    // Which writes are present: a ticket write when the ticket is at (or past) its version,
    // a write without a ticket when its nonce is used.
    let nonce_used = |nonce: &str| -> bool {
        conn.query_row(
            "SELECT count(*) FROM nonces WHERE hex(nonce) = upper(?1)",
            [nonce],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    };
    let mut versions: BTreeMap<TicketId, u64> = BTreeMap::new();
    for op in transcript.sent.values() {
        if let Some(t) = op.ticket {
            if let std::collections::btree_map::Entry::Vacant(e) = versions.entry(t) {
                let stored = store.ticket(t).await.unwrap();
                e.insert(stored.map_or(0, |s| s.version()));
            }
        }
    }
    let present = |op: &Op| -> bool {
        match op.ticket {
            Some(t) if op.what != "doomed" => versions[&t] >= op.version,
            _ => nonce_used(&op.nonce),
        }
    };
    let present_ops: Vec<&Op> = transcript.sent.values().filter(|op| present(op)).collect();

    // Acknowledged writes are there; refused ones are not.
    for id in &transcript.acked {
        assert!(
            present(&transcript.sent[id]),
            "{case:?}: acknowledged write {id} is missing"
        );
    }
    for id in &transcript.failed {
        let op = &transcript.sent[id];
        assert_eq!(op.what, "doomed", "{case:?}: write {id} failed: {op:?}");
        assert!(!present(op), "{case:?}: refused write {id} left rows");
    }
    if case.writers == 1 {
        let op = &transcript.sent[&in_flight[0]];
        let expected = case.point == "after_commit" && op.what != "doomed";
        assert_eq!(
            present(op),
            expected,
            "{case:?}: the write in flight ({op:?}) is present iff the kill came after COMMIT"
        );
    }

    // All or nothing: every row in the file is accounted for by exactly the present writes.
    let mut by_ticket: BTreeMap<TicketId, Vec<&Op>> = BTreeMap::new();
    for op in &present_ops {
        if let Some(t) = op.ticket {
            by_ticket.entry(t).or_default().push(op);
        }
    }
    let count = |sql: &str, ticket: Option<TicketId>| -> u64 {
        let n: i64 = match ticket {
            Some(t) => conn.query_row(sql, [&t.as_uuid().as_bytes()[..]], |r| r.get(0)),
            None => conn.query_row(sql, [], |r| r.get(0)),
        }
        .unwrap();
        n as u64
    };
    for (t, ops) in &by_ticket {
        let stored = store.ticket(*t).await.unwrap().expect("present ticket");
        let versions: Vec<u64> = ops.iter().map(|op| op.version).collect();
        assert_eq!(
            versions,
            (1..=stored.version()).collect::<Vec<_>>(),
            "{case:?}: ticket {t} holds exactly the writes up to its version"
        );
        let kinds: Vec<String> = store
            .ticket_audit(*t)
            .await
            .unwrap()
            .iter()
            .map(|e| e.record().kind.clone())
            .collect();
        let expected: Vec<String> = ops.iter().flat_map(|op| op.kinds.clone()).collect();
        assert_eq!(kinds, expected, "{case:?}: audit of ticket {t}");
        assert!(
            kinds
                .iter()
                .filter(|k| *k == kind::EXECUTION_STARTED)
                .count()
                <= 1,
            "{case:?}: ticket {t} started twice"
        );
        assert_eq!(
            store.decisions(*t).await.unwrap().len() as u64,
            ops.iter().map(|op| op.decisions).sum::<u64>(),
            "{case:?}: decisions of ticket {t}"
        );
        assert_eq!(
            count("SELECT count(*) FROM outbox WHERE ticket_id = ?1", Some(*t)),
            ops.iter().map(|op| op.outbox).sum::<u64>(),
            "{case:?}: outbox rows of ticket {t}"
        );
    }
    for op in transcript.sent.values() {
        assert_eq!(
            nonce_used(&op.nonce),
            present(op),
            "{case:?}: the nonce of write {} is used iff the write is present",
            op.id
        );
    }
    let total = |f: fn(&Op) -> u64| present_ops.iter().map(|op| f(op)).sum::<u64>();
    assert_eq!(
        count("SELECT count(*) FROM tickets", None),
        by_ticket.len() as u64,
        "{case:?}: no ticket row of unknown origin"
    );
    assert_eq!(
        summary.count,
        total(|op| op.kinds.len() as u64 + op.free_audit),
        "{case:?}: the chain holds exactly the present writes' events"
    );
    assert_eq!(
        count("SELECT count(*) FROM nonces", None),
        present_ops.len() as u64
    );
    assert_eq!(
        count("SELECT count(*) FROM outbox", None),
        total(|op| op.outbox)
    );
    assert_eq!(
        count("SELECT count(*) FROM decisions", None),
        total(|op| op.decisions)
    );
    drop(conn);

    // The store goes on from where the crash left it.
    let p = propose("agent-after", "after-crash", review(), ts(T0));
    let committed = store.commit(insert(&p)).await.unwrap();
    assert_eq!(committed.head.seq, summary.head.seq + p.audit.len() as u64);
    verify_chain(&store).await;
    store.shutdown().await.unwrap();
}

async fn run_cases(cases: &[Case]) {
    for case in cases {
        crash_and_check(*case).await;
    }
}

fn cases(point: &'static str) -> Vec<Case> {
    let mut cases: Vec<Case> = [1, 6, 23]
        .into_iter()
        .map(|nth| Case {
            point,
            nth,
            writers: 1,
            seed: nth * 7 + 1,
        })
        .collect();
    cases.push(Case {
        point,
        nth: 17,
        writers: 4,
        seed: 99,
    });
    cases
}

#[tokio::test]
async fn kill_before_an_audit_insert() {
    run_cases(&cases("before_audit")).await;
}

#[tokio::test]
async fn kill_before_commit() {
    run_cases(&cases("before_commit")).await;
}

#[tokio::test]
async fn kill_after_commit_before_the_reply() {
    run_cases(&cases("after_commit")).await;
}

/// `CRASH_RUNS` random crashes (default 3), from `CRASH_SEED` (default fixed).
#[tokio::test]
async fn random_crashes() {
    let runs: u64 = std::env::var("CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_240_601);
    let mut rng = Rng::new(seed);
    for run in 0..runs {
        let point = ["before_audit", "before_commit", "after_commit"][rng.below(3) as usize];
        let case = Case {
            point,
            nth: 1 + rng.below(120),
            writers: [1, 1, 2, 4, 8][rng.below(5) as usize],
            seed: rng.next(),
        };
        if runs > 10 && run % 50 == 0 {
            eprintln!("crash run {run}/{runs}: {case:?}");
        }
        crash_and_check(case).await;
    }
}
