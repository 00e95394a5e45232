//! Tampering with the real audit table: a history built through the public API on a file
//! [`SqliteStore`] (tickets through their whole lives: allowed and run, denied, approved by
//! credential, by bound and group links, edited, rejected, expired, cancelled, revoked, lease
//! lost and resolved, refused decisions, forged-token floods, freezes, checkpoints), the store
//! closed, the file opened with `rusqlite`, the append-only triggers dropped, one random
//! tamper applied, the store reopened and [`Handoff::verify_audit`] asked.
//!
//! Every tamper is detected, and the first bad event named is exact, per kind (`n` is the
//! chain's size, covered by the checkpoint taken at the end of the history):
//!
//! | tamper | refused as | event named |
//! |---|---|---|
//! | a byte of event `k`'s bytes; its ticket, its time or its `seq` inside the bytes | `HashMismatch` | `k` |
//! | event `k`'s `hash` column | `HashMismatch` | `k` |
//! | event `k`'s `prev_hash` column | `PrevMismatch` | `k` |
//! | event `k`'s `seq` column moved past the tail | `SeqGap` | `expected` = `k` |
//! | event `k < n` deleted | `SeqGap` | `expected` = `k` |
//! | event `k < n` deleted, later events renumbered to close the gap | `PrevMismatch` | `k` |
//! | events `a < b` swap their `seq` | `PrevMismatch` | `a` |
//! | a forged event inserted at `k ≤ n` (later ones renumbered) with a wrong hash | `HashMismatch` | `k` |
//! | a forged event inserted at `k < n` with a correctly recomputed link | `PrevMismatch` | `k + 1`: the forgery links correctly, so the first bad event is the genuine one it displaced |
//! | the same at `k = n`, the checkpoint's own seq | `Rewritten` by the checkpoint | `n` = `k` (the chain alone: `PrevMismatch` at `n + 1`) |
//! | a copy of an earlier event appended at `n + 1` | `PrevMismatch` | `n + 1` |
//! | a forged event inserted past the tail at `n + 1 + g` | `SeqGap` | `seq` = `n + 1 + g` (`expected` = `n + 1`) |
//! | the tail cut from `t` on | `Truncated` by the checkpoint | `chain_size + 1` = `t` |
//! | the tail cut from `t` on, and the checkpoints from `t` on deleted | not by `verify_audit`: by the checkpoint kept outside the database (`verify_audit_against`), `Truncated` | `chain_size + 1` = `t` |
//! | event `k`'s `ticket_id`, `kind` or `at` index column (not hashed) | `Misfiled` | `k` |
//! | the chain rewritten from `k` with recomputed hashes | `Rewritten` by the first stored checkpoint at or after `k` | that checkpoint's size; against the kept one, `n` (the chain alone is consistent) |
//! | **laundered**: the tail cut from `t` on, traffic continued through the engine past `n`, then a routine `checkpoint()` | `checkpoint()` refuses (`CheckpointRefused`, `Rewritten` at `n`) and audits the refusal; `verify_audit`: `Rewritten` by the first stored checkpoint at or after `t` | that checkpoint's size; against the kept one, `n` |
//!
//! `verify_audit` checks the chain against **every** stored checkpoint (one per round of the
//! history), so where a tamper lands on an earlier checkpoint's seq it is named there first (a
//! linked forgery at a stored checkpoint's seq `k < n`: `Rewritten` at `k`).
//!
//! Every kind except the bare truncations, the rewrite and the laundering is also detected by
//! the chain alone (a verifier without any checkpoint), with the same error (except the linked
//! forgeries at a checkpoint's seq, as said): the test checks that too, and what the checkpoint
//! kept outside the database names in every case. A bare truncation, a wholesale rewrite and a
//! laundered cut verify as chains; only a checkpoint taken before shows them. Deleting the
//! newer checkpoints together with the tail defeats `verify_audit`, which reads checkpoints
//! from the same database: a checkpoint must be kept elsewhere to vouch for the head (the
//! design's "signed and kept elsewhere"), and `verify_audit_against` checks against it.
//!
//! # Running
//!
//! CI size (300 cases): `cargo test --all-features --test audit_tamper_sqlite`
//!
//! Big run: `TAMPER_CASES=10000 cargo test --release --all-features --test audit_tamper_sqlite -- --nocapture`
//! (`TAMPER_SEED=<u64>` replays a run; `TAMPER_ROUNDS=<n>` lengthens the history, default 2).

#![cfg(feature = "sqlite")]

mod rng;
mod support;
use rng::Rng;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_handoff::audit::{ChainHash, Checkpoint, RawEvent, Verifier, VerifyError};
use agent_handoff::ticket::{ExecutionOutcome, Verdict};
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    AuditError, Clock, FreezeScope, Handoff, Limits, LinkError, ManualClock, Proposal,
    SqliteOptions, SqliteStore, StaticDirectory, Store, StoreError, StoreReader, Synchronous,
    TicketId, Timestamp, TokenSubmission,
};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use support::*;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got `{v}`")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// A realistic history.

/// An engine on a file store, with `identity` as its directory.
async fn engine_with(path: &Path, clock: &ManualClock, identity: StaticDirectory) -> Handoff {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    // Durability does not matter to tampering; `NORMAL` spares the disk's fsyncs.
    let options = SqliteOptions::new()
        .with_clock(Arc::clone(&shared))
        .with_synchronous(Synchronous::Normal);
    let store = SqliteStore::open_with(path, options).await.unwrap();
    Handoff::builder()
        .store(store)
        .policy(standard_policy())
        .identity(identity)
        .shared_clock(shared)
        .limits(Limits {
            unauthenticated_audit_per_minute: 2,
            lease_ttl: Duration::from_secs(60),
            ..Limits::default()
        })
        .checkpoint_key("test.example/audit", checkpoint_key())
        .decision_links(decision_links())
        .digest_key(digest_key())
        .build()
        .unwrap()
}

/// An engine on a file store (to verify it).
async fn engine(path: &Path, clock: &ManualClock) -> Handoff {
    engine_with(path, clock, directory().0).await
}

fn pending(p: Proposal) -> TicketId {
    match p {
        Proposal::Pending(p) => p.id,
        other => panic!("expected a pending ticket, got {other:?}"),
    }
}

fn token_for(links: &[agent_handoff::MintedLink], verdict: VerdictKind) -> String {
    links
        .iter()
        .find(|l| l.verdict == verdict)
        .unwrap()
        .token
        .clone()
}

/// Runs `rounds` rounds of tickets through their lives, then checkpoints the head. Returns
/// the kept checkpoint (as a deployment would keep it outside the database).
async fn build_history(path: &Path, rounds: u64) -> Checkpoint {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let (dir, creds) = directory();
    let h = engine_with(path, &clock, dir).await;
    let cred = |p: &str| creds[p].clone();
    let ops = h.agent(agent_id("ops-agent"), Some(person("pat@example.com")));
    let mut n = 0u64;
    let mut req = |kind: &str| {
        n += 1;
        agent_handoff::action::ActionRequest::builder(kind, format!("idempotency-history-{n}"))
            .target("postgres://prod/orders")
            .parameters(json!({ "table": "orders", "limit": 1000, "n": n }))
            .reason("history")
            .build()
            .unwrap()
    };
    for round in 0..rounds {
        // Allowed by policy, run, succeeded.
        let grant = match ops.propose(req("db.read")).await.unwrap() {
            Proposal::Allowed(g) => g,
            other => panic!("expected allowed, got {other:?}"),
        };
        let permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
        ops.finish(
            permit,
            ExecutionOutcome::Succeeded {
                output: json!({ "rows": 3 }),
            },
        )
        .await
        .unwrap();

        // Denied by policy.
        assert!(matches!(
            ops.propose(req("payment.send")).await.unwrap(),
            Proposal::Denied { .. }
        ));

        // Approved by credential after a refused self-approval, run, failed.
        let id = pending(ops.propose(req("db.update")).await.unwrap());
        assert!(h
            .decide(id, &cred("pat"), Verdict::Approve, None)
            .await
            .is_err());
        assert!(h
            .decide(id, &cred("erin"), Verdict::Approve, None)
            .await
            .is_err());
        h.decide(id, &cred("alice"), Verdict::Approve, None)
            .await
            .unwrap();
        let permit = ops
            .begin(h.grant(id).await.unwrap().unwrap(), BTreeMap::new())
            .await
            .unwrap();
        ops.finish(
            permit,
            ExecutionOutcome::Failed {
                error: "disk full".into(),
            },
        )
        .await
        .unwrap();

        // Two DBAs through links: a bound link, then a group link; a forwarded link refused.
        let id = pending(ops.propose(req("db.drop")).await.unwrap());
        let t = h.store().ticket(id).await.unwrap().unwrap();
        let alices = h
            .mint_links(&t, Some(person("alice")), clock.now())
            .unwrap();
        let group = h.mint_links(&t, None, clock.now()).unwrap();
        assert!(matches!(
            h.decide_with_token(
                &token_for(&alices, VerdictKind::Approve),
                &cred("carol"),
                TokenSubmission::new()
            )
            .await,
            Err(LinkError::WrongReviewer { .. })
        ));
        let alices = h
            .mint_links(&t, Some(person("alice")), clock.now())
            .unwrap();
        h.decide_with_token(
            &token_for(&alices, VerdictKind::Approve),
            &cred("alice"),
            TokenSubmission::new(),
        )
        .await
        .unwrap();
        h.decide_with_token(
            &token_for(&group, VerdictKind::Approve),
            &cred("bob"),
            TokenSubmission::new(),
        )
        .await
        .unwrap();
        let permit = ops
            .begin(h.grant(id).await.unwrap().unwrap(), BTreeMap::new())
            .await
            .unwrap();
        ops.finish(
            permit,
            ExecutionOutcome::Succeeded {
                output: json!({ "dropped": true }),
            },
        )
        .await
        .unwrap();

        // Edited by one reviewer, approved by another.
        let id = pending(ops.propose(req("db.drop")).await.unwrap());
        h.decide(
            id,
            &cred("carol"),
            Verdict::ApproveWithEdits {
                parameters: json!({ "table": "orders", "limit": 10 }),
            },
            None,
        )
        .await
        .unwrap();
        h.decide(id, &cred("bob"), Verdict::Approve, None)
            .await
            .unwrap();

        // Rejected.
        let id = pending(ops.propose(req("invoice.pay")).await.unwrap());
        h.decide(
            id,
            &cred("dave"),
            Verdict::Reject {
                feedback: "not this month".into(),
            },
            None,
        )
        .await
        .unwrap();

        // Cancelled by the agent; revoked by an operator after approval.
        let id = pending(ops.propose(req("db.update")).await.unwrap());
        ops.cancel(id, "no longer needed").await.unwrap();
        let id = pending(ops.propose(req("db.update")).await.unwrap());
        h.decide(id, &cred("bob"), Verdict::Approve, None)
            .await
            .unwrap();
        h.revoke(id, &cred("olga"), "change freeze").await.unwrap();

        // A flood of forged links (coalesced), a freeze and its lifting.
        for _ in 0..5 {
            assert!(h
                .decide_with_token("ah1.forged", &cred("alice"), TokenSubmission::new())
                .await
                .is_err());
        }
        h.freeze(&cred("olga"), FreezeScope::All, "incident")
            .await
            .unwrap();
        h.unfreeze(&cred("olga"), FreezeScope::All).await.unwrap();

        // A lease lost (Unknown), resolved by an operator.
        let id = pending(ops.propose(req("db.update")).await.unwrap());
        h.decide(id, &cred("carol"), Verdict::Approve, None)
            .await
            .unwrap();
        let _permit = ops
            .begin(h.grant(id).await.unwrap().unwrap(), BTreeMap::new())
            .await
            .unwrap();
        clock.advance(Duration::from_secs(120));
        h.expire_due().await.unwrap();
        h.resolve(
            id,
            &cred("olga"),
            ExecutionOutcome::Succeeded {
                output: json!({ "checked": "by hand" }),
            },
        )
        .await
        .unwrap();

        // Expired: nobody decided within the hour (the sweep also writes the flood's count).
        pending(ops.propose(req("db.migrate")).await.unwrap());
        clock.advance(2 * HOUR);
        assert!(h.expire_due().await.unwrap() >= 1);

        if round == 0 {
            h.checkpoint().await.unwrap();
        }
    }
    let kept = h.checkpoint().await.unwrap();
    h.verify_audit().await.unwrap();
    h.shutdown().await.unwrap();
    kept
}

// ---------------------------------------------------------------------------------------------
// The table, read and written directly.

struct Stored {
    seq: u64,
    ticket: Option<Vec<u8>>,
    at: i64,
    kind: String,
    bytes: Vec<u8>,
    prev: [u8; 32],
    hash: [u8; 32],
    committed_at: i64,
}

fn read_table(conn: &Connection) -> Vec<Stored> {
    let mut s = conn
        .prepare(
            "SELECT seq, ticket_id, at, kind, bytes, prev_hash, hash, committed_at \
             FROM audit_events ORDER BY seq",
        )
        .unwrap();
    s.query_map([], |r| {
        Ok(Stored {
            seq: r.get::<_, i64>(0)? as u64,
            ticket: r.get(1)?,
            at: r.get(2)?,
            kind: r.get(3)?,
            bytes: r.get(4)?,
            prev: r.get::<_, Vec<u8>>(5)?.try_into().unwrap(),
            hash: r.get::<_, Vec<u8>>(6)?.try_into().unwrap(),
            committed_at: r.get(7)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn insert(conn: &Connection, e: &Stored) {
    conn.execute(
        "INSERT INTO audit_events (seq, ticket_id, at, kind, bytes, prev_hash, hash, committed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            e.seq as i64,
            e.ticket,
            e.at,
            e.kind,
            e.bytes,
            e.prev.as_slice(),
            e.hash.as_slice(),
            e.committed_at
        ],
    )
    .unwrap();
}

/// Adds `delta` (±1) to the seq of every event from `from` on.
fn shift(conn: &Connection, from: u64, delta: i64) {
    const FAR: i64 = 1 << 40;
    conn.execute(
        "UPDATE audit_events SET seq = seq + ?1 WHERE seq >= ?2",
        params![FAR, from as i64],
    )
    .unwrap();
    conn.execute(
        "UPDATE audit_events SET seq = seq - ?1 + ?2 WHERE seq >= ?1",
        params![FAR, delta],
    )
    .unwrap();
}

fn set_bytes(conn: &Connection, seq: u64, bytes: &[u8]) {
    conn.execute(
        "UPDATE audit_events SET bytes = ?1 WHERE seq = ?2",
        params![bytes, seq as i64],
    )
    .unwrap();
}

fn link(prev: &[u8; 32], seq: u64, bytes: &[u8]) -> [u8; 32] {
    *ChainHash::link(&ChainHash::from_bytes(*prev), seq, bytes).as_bytes()
}

/// The event's JSON with `edit` applied, serialised with sorted keys (the canonical form of
/// these simple values).
fn edit_json(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    edit(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tampers and what must be reported.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tamper {
    DataByte,
    TicketInBytes,
    TimeInBytes,
    SeqInBytes,
    HashColumn,
    PrevHashColumn,
    SeqMoved,
    Deleted,
    DeletedRenumbered,
    Swapped,
    InsertedBadHash,
    InsertedLinked,
    CopyAppended,
    InsertedPastTail,
    Truncated,
    TruncatedWithCheckpoints,
    Rewritten,
    Laundered,
}

const TAMPERS: &[Tamper] = &[
    Tamper::DataByte,
    Tamper::TicketInBytes,
    Tamper::TimeInBytes,
    Tamper::SeqInBytes,
    Tamper::HashColumn,
    Tamper::PrevHashColumn,
    Tamper::SeqMoved,
    Tamper::Deleted,
    Tamper::DeletedRenumbered,
    Tamper::Swapped,
    Tamper::InsertedBadHash,
    Tamper::InsertedLinked,
    Tamper::CopyAppended,
    Tamper::InsertedPastTail,
    Tamper::Truncated,
    Tamper::TruncatedWithCheckpoints,
    Tamper::Rewritten,
    Tamper::Laundered,
];

/// What verification must report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Hash(u64),
    Prev(u64),
    Gap {
        seq: u64,
        expected: u64,
    },
    /// Cut at `chain_size + 1`, against a checkpoint of `checkpoint_size`.
    Truncated {
        checkpoint_size: u64,
        chain_size: u64,
    },
    Rewritten(u64),
}

impl Expect {
    fn matches(&self, e: &VerifyError) -> bool {
        match (self, e) {
            (Expect::Hash(k), VerifyError::HashMismatch { seq }) => k == seq,
            (Expect::Prev(k), VerifyError::PrevMismatch { seq }) => k == seq,
            (
                Expect::Gap { seq, expected },
                VerifyError::SeqGap {
                    seq: s,
                    expected: x,
                },
            ) => seq == s && expected == x,
            (
                Expect::Truncated {
                    checkpoint_size,
                    chain_size,
                },
                VerifyError::Truncated {
                    checkpoint_size: c,
                    chain_size: s,
                },
            ) => checkpoint_size == c && chain_size == s,
            (Expect::Rewritten(k), VerifyError::Rewritten { seq }) => k == seq,
            _ => false,
        }
    }
}

/// How a tamper is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// The chain alone, so `verify_audit` (with or without checkpoint) reports it.
    Chain,
    /// `verify_audit`, through the checkpoint stored in the database.
    StoredCheckpoint,
    /// Only the checkpoint kept outside the database.
    KeptCheckpoint,
    /// The checkpoint stored in the database (so `verify_audit`) names it first; the chain
    /// alone reports it too, as given, one event later.
    CheckpointFirst(Expect),
    /// `verify_audit` names `audit` (the first stored checkpoint the chain no longer passes
    /// through), the chain alone reports `alone` (`None`: it verifies), the kept checkpoint
    /// the case's expectation.
    Stored {
        audit: Expect,
        alone: Option<Expect>,
    },
    /// Laundered: after the cut, traffic goes on through the engine past the kept
    /// checkpoint's size and `checkpoint()` is asked to sign the new head. It must refuse
    /// (audited), and `verify_audit` name `audit`; the chain alone verifies.
    Laundered { audit: Expect },
}

/// Where a tamper lands in its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    First,
    Last,
    Random,
}

/// Applies one tamper of kind `t` to the table; returns what must be reported (the exact
/// error, so the first bad event it names: see the table in the module docs), how it is
/// found, and the earliest seq the tamper touched.
fn tamper(conn: &Connection, t: Tamper, at_pos: Pos, rng: &mut Rng, n: u64) -> (Expect, By, u64) {
    let events = read_table(conn);
    assert_eq!(events.len() as u64, n);
    // The checkpoints stored in the database (one per round of the history, the last at `n`):
    // `verify_audit` checks the chain against every one.
    let stored: Vec<u64> = {
        let mut s = conn
            .prepare("SELECT size FROM checkpoints ORDER BY size")
            .unwrap();
        let sizes = s.query_map([], |r| r.get::<_, i64>(0)).unwrap();
        sizes.map(|r| r.unwrap() as u64).collect()
    };
    assert_eq!(stored.last(), Some(&n));
    let first_stored_from = |k: u64| *stored.iter().find(|&&size| size >= k).unwrap();
    let at = |seq: u64| &events[seq as usize - 1];
    // Where the tamper lands: at either end of its range, or anywhere in it.
    let pick = |rng: &mut Rng, lo: u64, hi: u64| match at_pos {
        Pos::First => lo,
        Pos::Last => hi,
        Pos::Random => rng.range(lo, hi),
    };
    let any = |rng: &mut Rng| pick(rng, 1, n);
    match t {
        Tamper::DataByte => {
            let k = any(rng);
            let mut bytes = at(k).bytes.clone();
            let i = rng.range(0, bytes.len() as u64 - 1) as usize;
            bytes[i] ^= 1 << rng.range(0, 7);
            set_bytes(conn, k, &bytes);
            (Expect::Hash(k), By::Chain, k)
        }
        Tamper::TicketInBytes => {
            // An event about a ticket, moved to another ticket (same length) or to none.
            let with_ticket: Vec<u64> = events
                .iter()
                .filter(|e| e.ticket.is_some())
                .map(|e| e.seq)
                .collect();
            let k = with_ticket[pick(rng, 0, with_ticket.len() as u64 - 1) as usize];
            let other = uuid::Uuid::from_bytes(rng.bytes::<32>()[..16].try_into().unwrap());
            let to_none = rng.range(0, 3) == 0;
            let bytes = edit_json(&at(k).bytes, |m| {
                m.insert(
                    "ticket".into(),
                    if to_none {
                        Value::Null
                    } else {
                        Value::String(other.to_string())
                    },
                );
            });
            assert_ne!(bytes, at(k).bytes);
            set_bytes(conn, k, &bytes);
            (Expect::Hash(k), By::Chain, k)
        }
        Tamper::TimeInBytes => {
            let k = any(rng);
            let shift = rng.range(1, 86_400_000) as i64;
            let bytes = edit_json(&at(k).bytes, |m| {
                let t = m["at"].as_i64().unwrap();
                m.insert("at".into(), json!(t - shift));
            });
            set_bytes(conn, k, &bytes);
            (Expect::Hash(k), By::Chain, k)
        }
        Tamper::SeqInBytes => {
            let k = any(rng);
            let bytes = edit_json(&at(k).bytes, |m| {
                m.insert("seq".into(), json!(k + 1));
            });
            set_bytes(conn, k, &bytes);
            (Expect::Hash(k), By::Chain, k)
        }
        Tamper::HashColumn => {
            let k = any(rng);
            let mut hash = at(k).hash;
            if rng.range(0, 1) == 0 {
                hash[rng.range(0, 31) as usize] ^= 1 << rng.range(0, 7);
            } else {
                hash = rng.bytes::<32>();
            }
            conn.execute(
                "UPDATE audit_events SET hash = ?1 WHERE seq = ?2",
                params![hash.as_slice(), k as i64],
            )
            .unwrap();
            (Expect::Hash(k), By::Chain, k)
        }
        Tamper::PrevHashColumn => {
            let k = any(rng);
            let mut prev = at(k).prev;
            prev[rng.range(0, 31) as usize] ^= 1 << rng.range(0, 7);
            conn.execute(
                "UPDATE audit_events SET prev_hash = ?1 WHERE seq = ?2",
                params![prev.as_slice(), k as i64],
            )
            .unwrap();
            (Expect::Prev(k), By::Chain, k)
        }
        Tamper::SeqMoved => {
            let k = any(rng);
            let to = n + 1 + rng.range(0, 1000);
            conn.execute(
                "UPDATE audit_events SET seq = ?1 WHERE seq = ?2",
                params![to as i64, k as i64],
            )
            .unwrap();
            let expect = if k < n {
                Expect::Gap {
                    seq: k + 1,
                    expected: k,
                }
            } else {
                Expect::Gap {
                    seq: to,
                    expected: k,
                }
            };
            (expect, By::Chain, k)
        }
        Tamper::Deleted => {
            let k = pick(rng, 1, n - 1);
            conn.execute("DELETE FROM audit_events WHERE seq = ?1", [k as i64])
                .unwrap();
            (
                Expect::Gap {
                    seq: k + 1,
                    expected: k,
                },
                By::Chain,
                k,
            )
        }
        Tamper::DeletedRenumbered => {
            let k = pick(rng, 1, n - 1);
            conn.execute("DELETE FROM audit_events WHERE seq = ?1", [k as i64])
                .unwrap();
            shift(conn, k + 1, -1);
            (Expect::Prev(k), By::Chain, k)
        }
        Tamper::Swapped => {
            let a = pick(rng, 1, n - 1);
            let b = match at_pos {
                Pos::Random => rng.range(a + 1, n),
                _ => n + 1 - a,
            }
            .max(a + 1);
            let tmp = (n + 10_000) as i64;
            for (from, to) in [(a as i64, tmp), (b as i64, a as i64), (tmp, b as i64)] {
                conn.execute(
                    "UPDATE audit_events SET seq = ?1 WHERE seq = ?2",
                    params![to, from],
                )
                .unwrap();
            }
            (Expect::Prev(a), By::Chain, a)
        }
        Tamper::InsertedBadHash | Tamper::InsertedLinked => {
            let k = any(rng);
            let model = at(rng.range(1, n));
            let prev = if k == 1 {
                *ChainHash::GENESIS.as_bytes()
            } else {
                at(k - 1).hash
            };
            let bytes = edit_json(&model.bytes, |m| {
                m.insert("seq".into(), json!(k));
                m.insert(
                    "actor".into(),
                    json!({ "type": "reviewer", "id": "mallory" }),
                );
            });
            let hash = if t == Tamper::InsertedLinked {
                link(&prev, k, &bytes)
            } else {
                rng.bytes::<32>()
            };
            shift(conn, k, 1);
            insert(
                conn,
                &Stored {
                    seq: k,
                    bytes,
                    prev,
                    hash,
                    ticket: model.ticket.clone(),
                    at: model.at,
                    kind: model.kind.clone(),
                    committed_at: model.committed_at,
                },
            );
            if t == Tamper::InsertedLinked {
                if k == n {
                    // At the checkpoint's own seq: its hash is not the checkpoint's.
                    (
                        Expect::Rewritten(n),
                        By::CheckpointFirst(Expect::Prev(n + 1)),
                        k,
                    )
                } else if stored.contains(&k) {
                    // At an earlier stored checkpoint's seq: `verify_audit` names it there.
                    (
                        Expect::Prev(k + 1),
                        By::Stored {
                            audit: Expect::Rewritten(k),
                            alone: Some(Expect::Prev(k + 1)),
                        },
                        k,
                    )
                } else {
                    (Expect::Prev(k + 1), By::Chain, k)
                }
            } else {
                (Expect::Hash(k), By::Chain, k)
            }
        }
        Tamper::CopyAppended => {
            let j = any(rng);
            let copy = Stored {
                seq: n + 1,
                ticket: at(j).ticket.clone(),
                kind: at(j).kind.clone(),
                bytes: at(j).bytes.clone(),
                ..*at(j)
            };
            insert(conn, &copy);
            (Expect::Prev(n + 1), By::Chain, n + 1)
        }
        Tamper::InsertedPastTail => {
            let seq = n + 2 + rng.range(0, 100);
            let prev = at(n).hash;
            let bytes = edit_json(&at(n).bytes, |m| {
                m.insert("seq".into(), json!(seq));
            });
            let hash = link(&prev, seq, &bytes);
            insert(
                conn,
                &Stored {
                    seq,
                    bytes,
                    prev,
                    hash,
                    ticket: at(n).ticket.clone(),
                    kind: at(n).kind.clone(),
                    ..*at(n)
                },
            );
            (
                Expect::Gap {
                    seq,
                    expected: n + 1,
                },
                By::Chain,
                seq,
            )
        }
        Tamper::Truncated | Tamper::TruncatedWithCheckpoints => {
            let cut = pick(rng, 1, n);
            conn.execute("DELETE FROM audit_events WHERE seq >= ?1", [cut as i64])
                .unwrap();
            let by = if t == Tamper::TruncatedWithCheckpoints {
                conn.execute("DELETE FROM checkpoints WHERE size >= ?1", [cut as i64])
                    .unwrap();
                By::KeptCheckpoint
            } else {
                By::StoredCheckpoint
            };
            (
                Expect::Truncated {
                    checkpoint_size: n,
                    chain_size: cut - 1,
                },
                by,
                cut,
            )
        }
        Tamper::Rewritten => {
            // Edit event k and recompute every hash after it: a consistent chain.
            let k = any(rng);
            let mut prev = if k == 1 {
                *ChainHash::GENESIS.as_bytes()
            } else {
                at(k - 1).hash
            };
            for seq in k..=n {
                let mut bytes = at(seq).bytes.clone();
                if seq == k {
                    bytes = edit_json(&bytes, |m| {
                        m.insert(
                            "actor".into(),
                            json!({ "type": "reviewer", "id": "mallory" }),
                        );
                    });
                }
                let hash = link(&prev, seq, &bytes);
                conn.execute(
                    "UPDATE audit_events SET bytes = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                    params![bytes, prev.as_slice(), hash.as_slice(), seq as i64],
                )
                .unwrap();
                prev = hash;
            }
            // The first stored checkpoint at or after `k` no longer matches.
            (
                Expect::Rewritten(n),
                By::Stored {
                    audit: Expect::Rewritten(first_stored_from(k)),
                    alone: None,
                },
                k,
            )
        }
        Tamper::Laundered => {
            // The reproduction: the tail cut from `cut` (checkpoints kept), then
            // traffic continues and a routine checkpoint is taken (in `case`).
            let cut = pick(rng, 1, n);
            conn.execute("DELETE FROM audit_events WHERE seq >= ?1", [cut as i64])
                .unwrap();
            (
                Expect::Rewritten(n),
                By::Laundered {
                    audit: Expect::Rewritten(first_stored_from(cut)),
                },
                cut,
            )
        }
    }
}

/// Traffic through the engine until the chain is longer than `size`: policy-allowed reads,
/// run and finished, a day after whatever the store committed last.
async fn traffic_past(h: &Handoff, clock: &ManualClock, size: u64) {
    clock.advance(Duration::from_secs(86_400));
    let ops = h.agent(agent_id("ops-agent"), Some(person("pat@example.com")));
    let mut i = 0u64;
    while h.store().audit_head().await.unwrap().seq <= size {
        i += 1;
        let request = agent_handoff::action::ActionRequest::builder(
            "db.read",
            format!("laundering-{size}-{i}"),
        )
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders", "n": i }))
        .reason("traffic after the cut")
        .build()
        .unwrap();
        let grant = match ops.propose(request).await.unwrap() {
            Proposal::Allowed(grant) => grant,
            other => panic!("db.read is allowed by the standard policy: {other:?}"),
        };
        let permit = ops.begin(grant, BTreeMap::new()).await.unwrap();
        ops.finish(
            permit,
            ExecutionOutcome::Succeeded {
                output: json!(null),
            },
        )
        .await
        .unwrap();
    }
}

/// The whole chain, read through the store's public port.
async fn stored_chain(store: &StoreReader) -> Vec<RawEvent> {
    let mut out: Vec<RawEvent> = Vec::new();
    loop {
        let from = out.last().map_or(1, |e| e.seq + 1);
        let page = store.audit_events(from, 1000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

fn drop_triggers(conn: &Connection) {
    conn.execute_batch("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
        .unwrap();
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// One history to tamper with, built once.
struct Pristine {
    _dir: tempfile::TempDir,
    path: PathBuf,
    kept: Checkpoint,
    size: u64,
}

async fn pristine(rounds: u64) -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sqlite3");
    let kept = build_history(&live, rounds).await;
    // The closed store's file, as it is on disk (WAL folded in by a plain connection).
    let path = dir.path().join("pristine.sqlite3");
    {
        let conn = Connection::open(&live).unwrap();
        conn.execute("VACUUM INTO ?1", [path.to_str().unwrap()])
            .unwrap();
    }
    let size = kept.size();
    Pristine {
        _dir: dir,
        path,
        kept,
        size,
    }
}

/// Checks one tamper of kind `t` on a copy of the pristine history.
async fn case(
    p: &Pristine,
    work: &Path,
    (t, at_pos): (Tamper, Pos),
    rng: &mut Rng,
    seed: u64,
    i: u64,
) {
    let path = work.join(format!("case-{i}.sqlite3"));
    std::fs::copy(&p.path, &path).unwrap();
    let (expect, by, touched) = {
        let mut conn = Connection::open(&path).unwrap();
        // One transaction, no fsync: durability does not matter to the tamper.
        conn.pragma_update(None, "synchronous", "OFF").unwrap();
        let tx = conn.transaction().unwrap();
        drop_triggers(&tx);
        let out = tamper(&tx, t, at_pos, rng, p.size);
        tx.commit().unwrap();
        out
    };
    let ctx =
        format!("seed {seed:#x}, case {i}: {t:?} at {at_pos:?}, expecting {expect:?} by {by:?}");

    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let h = engine(&path, &clock).await;
    if let By::Laundered { .. } = by {
        traffic_past(&h, &clock, p.size).await;
        let before = h.store().audit_head().await.unwrap().seq;
        let refused = h.checkpoint().await;
        assert!(
            matches!(
                &refused,
                Err(AuditError::CheckpointRefused { previous: Some(s), source: VerifyError::Rewritten { seq } })
                    if *s == p.size && *seq == p.size
            ),
            "{ctx}: the laundering checkpoint was {refused:?}"
        );
        // Refused, audited, and nothing signed.
        let after = stored_chain(&h.store()).await;
        let last = agent_handoff::audit::AuditEvent::decode(after.last().unwrap().clone()).unwrap();
        assert_eq!(after.len() as u64, before + 1, "{ctx}");
        assert_eq!(last.record().data["refusal"], "checkpoint_refused", "{ctx}");
        assert_eq!(
            h.store().latest_checkpoint().await.unwrap().unwrap().size(),
            p.size,
            "{ctx}"
        );
    }
    let report = h.verify_audit().await;
    let chain = stored_chain(&h.store()).await;
    let bare = Verifier::new().verify(&chain);
    let kept_head = p.kept.verify(&[checkpoint_key()]).unwrap();
    let against_kept = Verifier::new().expect_head(kept_head).verify(&chain);
    h.shutdown().await.unwrap();
    drop(h);
    remove_db(&path);

    match by {
        By::Chain => {
            let err = match report {
                Err(AuditError::Chain(e)) => e,
                other => panic!("{ctx}: verify_audit said {other:?}"),
            };
            assert!(expect.matches(&err), "{ctx}: verify_audit said {err:?}");
            let bare = bare.expect_err(&ctx);
            assert!(
                expect.matches(&bare),
                "{ctx}: the chain alone said {bare:?}"
            );
        }
        By::CheckpointFirst(alone) => {
            let err = match report {
                Err(AuditError::Chain(e)) => e,
                other => panic!("{ctx}: verify_audit said {other:?}"),
            };
            assert!(expect.matches(&err), "{ctx}: verify_audit said {err:?}");
            let bare = bare.expect_err(&ctx);
            assert!(alone.matches(&bare), "{ctx}: the chain alone said {bare:?}");
        }
        By::StoredCheckpoint => {
            let err = match report {
                Err(AuditError::Chain(e)) => e,
                other => panic!("{ctx}: verify_audit said {other:?}"),
            };
            assert!(expect.matches(&err), "{ctx}: verify_audit said {err:?}");
            assert!(
                bare.is_ok(),
                "{ctx}: without a checkpoint the chain verifies"
            );
        }
        By::Stored { audit, alone } => {
            let err = match report {
                Err(AuditError::Chain(e)) => e,
                other => panic!("{ctx}: verify_audit said {other:?}"),
            };
            assert!(audit.matches(&err), "{ctx}: verify_audit said {err:?}");
            match alone {
                Some(alone) => {
                    let bare = bare.expect_err(&ctx);
                    assert!(alone.matches(&bare), "{ctx}: the chain alone said {bare:?}");
                }
                None => assert!(
                    bare.is_ok(),
                    "{ctx}: without a checkpoint the chain verifies"
                ),
            }
        }
        By::Laundered { audit } => {
            let err = match report {
                Err(AuditError::Chain(e)) => e,
                other => panic!("{ctx}: verify_audit said {other:?}"),
            };
            assert!(audit.matches(&err), "{ctx}: verify_audit said {err:?}");
            assert!(
                bare.is_ok(),
                "{ctx}: the laundered chain is consistent by itself"
            );
        }
        By::KeptCheckpoint => {
            let report = report.unwrap_or_else(|e| {
                panic!("{ctx}: verify_audit was expected to be defeated, said {e:?}")
            });
            assert!(report.checkpoint_size.is_none_or(|s| s < touched), "{ctx}");
            assert!(bare.is_ok(), "{ctx}");
        }
    }
    // The same first bad event against the checkpoint kept outside the database.
    let kept = against_kept.expect_err(&ctx);
    assert!(
        expect.matches(&kept),
        "{ctx}: against the kept checkpoint: {kept:?}"
    );
}

#[tokio::test]
async fn every_tamper_of_the_stored_table_is_detected_at_its_first_bad_event() {
    let cases = env_u64("TAMPER_CASES", 300);
    let seed = env_u64("TAMPER_SEED", 0x7a3e_5eed);
    let rounds = env_u64("TAMPER_ROUNDS", 2);
    let started = Instant::now();
    let p = pristine(rounds).await;
    let work = tempfile::tempdir().unwrap();

    // The untouched copy verifies, against both checkpoints.
    {
        let path = work.path().join("untouched.sqlite3");
        std::fs::copy(&p.path, &path).unwrap();
        let clock = ManualClock::new(Timestamp::from_unix_millis(START));
        let h = engine(&path, &clock).await;
        let report = h.verify_audit().await.unwrap();
        assert_eq!(report.events, p.size);
        assert_eq!(report.checkpoint_size, Some(p.size));
        assert_eq!(
            report.checkpoints, 2,
            "one checkpoint per round, each checked"
        );
        assert!(report.is_clean(), "{report}");
        let chain = stored_chain(&h.store()).await;
        Verifier::new()
            .expect_head(p.kept.verify(&[checkpoint_key()]).unwrap())
            .verify(&chain)
            .unwrap();
        h.shutdown().await.unwrap();
    }

    let mut rng = Rng::new(seed);
    let mut by_kind: BTreeMap<Tamper, u64> = BTreeMap::new();
    for i in 0..cases {
        // Every kind at both ends of its range first, then anything anywhere.
        let kinds = TAMPERS.len() as u64;
        let (t, at_pos) = match i / kinds {
            0 => (TAMPERS[(i % kinds) as usize], Pos::First),
            1 => (TAMPERS[(i % kinds) as usize], Pos::Last),
            _ => (TAMPERS[rng.range(0, kinds - 1) as usize], Pos::Random),
        };
        case(&p, work.path(), (t, at_pos), &mut rng, seed, i).await;
        *by_kind.entry(t).or_default() += 1;
    }
    println!(
        "audit tamper (SQLite): seed {seed:#x}, {cases} cases on a chain of {} events, \
         {cases} detected (100 %), first bad event exact in every case; {} routine checkpoints \
         over a laundered cut refused (and audited), 0 signed; {:.1} s",
        p.size,
        by_kind.get(&Tamper::Laundered).copied().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    for (t, n) in &by_kind {
        println!("  {t:?}: {n}");
    }
}

/// The triggers the suite drops are what stands in the way of these edits.
#[tokio::test]
async fn the_table_refuses_updates_and_deletes_until_its_triggers_are_dropped() {
    let p = pristine(1).await;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("t.sqlite3");
    std::fs::copy(&p.path, &path).unwrap();
    let conn = Connection::open(&path).unwrap();
    for sql in [
        "UPDATE audit_events SET kind = 'x' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 1",
    ] {
        let err = conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    drop_triggers(&conn);
    conn.execute("DELETE FROM audit_events WHERE seq = 1", [])
        .unwrap();
}

/// A bare cut of the tail leaves a consistent chain: only the checkpoint taken before shows
/// it. Deleting the newer checkpoints with it defeats `verify_audit`, not a checkpoint kept
/// elsewhere.
#[tokio::test]
async fn a_cut_tail_is_seen_by_the_checkpoint_taken_before() {
    // Two rounds: a checkpoint after each.
    let p = pristine(2).await;
    let work = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let cut = p.size - 3;
    for delete_checkpoints in [false, true] {
        let path = work
            .path()
            .join(format!("cut-{delete_checkpoints}.sqlite3"));
        std::fs::copy(&p.path, &path).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            drop_triggers(&conn);
            conn.execute("DELETE FROM audit_events WHERE seq >= ?1", [cut as i64])
                .unwrap();
            if delete_checkpoints {
                conn.execute("DELETE FROM checkpoints WHERE size >= ?1", [cut as i64])
                    .unwrap();
            }
        }
        let h = engine(&path, &clock).await;
        let chain = stored_chain(&h.store()).await;
        assert_eq!(chain.len() as u64, cut - 1);
        Verifier::new()
            .verify(&chain)
            .expect("a cut chain is consistent");
        let report = h.verify_audit().await;
        if delete_checkpoints {
            let report = report.expect("the database no longer holds the newer checkpoint");
            assert!(report.checkpoint_size.is_some_and(|s| s < cut));
        } else {
            assert!(matches!(
                report,
                Err(AuditError::Chain(VerifyError::Truncated { checkpoint_size, chain_size }))
                    if checkpoint_size == p.size && chain_size == cut - 1
            ));
        }
        let kept = p.kept.verify(&[checkpoint_key()]).unwrap();
        assert!(matches!(
            Verifier::new().expect_head(kept).verify(&chain),
            Err(VerifyError::Truncated { checkpoint_size, chain_size })
                if checkpoint_size == p.size && chain_size == cut - 1
        ));
        // The engine's own check against the kept copy: fails whatever rows were deleted.
        let against = h.verify_audit_against(&p.kept).await;
        assert!(
            matches!(
                against,
                Err(AuditError::Chain(VerifyError::Truncated { checkpoint_size, chain_size }))
                    if checkpoint_size == p.size && chain_size == cut - 1
            ),
            "{against:?}"
        );
        // And a checkpoint of another origin, or by another key, is no kept copy.
        let other_origin =
            Checkpoint::sign("test.example/other", p.kept.head(), &checkpoint_key()).unwrap();
        assert!(matches!(
            h.verify_audit_against(&other_origin).await,
            Err(AuditError::Checkpoint(
                agent_handoff::audit::CheckpointError::WrongOrigin { .. }
            ))
        ));
        h.shutdown().await.unwrap();
    }
}

/// `ticket_id`, `kind` and `at` are copies of the event's bytes kept for indexes and not
/// covered by the hash. Editing one must not pass silently: a ticket's history
/// (`Store::ticket_audit`) is selected by `ticket_id`, so moving an event to another ticket in
/// that column would hide it from its own ticket and show it in the other's. The store checks
/// the columns against the bytes: `verify_audit` names the event (`Misfiled`), and the history
/// it was moved into refuses it (`MisfiledAuditEvent`).
#[tokio::test]
async fn an_edited_index_column_is_named_as_misfiled() {
    let p = pristine(1).await;
    let work = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let (a, b, seq) = {
        let conn = Connection::open(&p.path).unwrap();
        let refusal: (i64, Vec<u8>) = conn
            .query_row(
                "SELECT seq, ticket_id FROM audit_events WHERE kind = 'refused' \
                 AND ticket_id IS NOT NULL ORDER BY seq LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let other: Vec<u8> = conn
            .query_row(
                "SELECT ticket_id FROM audit_events WHERE ticket_id IS NOT NULL \
                 AND ticket_id != ?1 LIMIT 1",
                [&refusal.1],
                |r| r.get(0),
            )
            .unwrap();
        let id = |b: &[u8]| TicketId::from_uuid(uuid::Uuid::from_slice(b).unwrap());
        (id(&refusal.1), id(&other), refusal.0)
    };
    let b_bytes = b.as_uuid().as_bytes().to_vec();
    let edits: [(&str, rusqlite::types::Value); 4] = [
        ("ticket_id", rusqlite::types::Value::Blob(b_bytes)),
        ("ticket_id", rusqlite::types::Value::Null),
        ("kind", rusqlite::types::Value::Text("voted".into())),
        ("at", rusqlite::types::Value::Integer(START - 1)),
    ];
    for (i, (column, value)) in edits.into_iter().enumerate() {
        let path = work.path().join(format!("misfiled-{i}.sqlite3"));
        std::fs::copy(&p.path, &path).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            drop_triggers(&conn);
            let n = conn
                .execute(
                    &format!("UPDATE audit_events SET {column} = ?1 WHERE seq = ?2"),
                    params![value, seq],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        let h = engine(&path, &clock).await;
        let report = h.verify_audit().await;
        assert!(
            matches!(report, Err(AuditError::Chain(VerifyError::Misfiled { seq: s })) if s == seq as u64),
            "{column} of event {seq} edited: {report:?}"
        );
        if i == 0 {
            // Moved into `b`'s history: refused there, and named.
            assert!(matches!(
                h.store().ticket_audit(b).await,
                Err(StoreError::MisfiledAuditEvent { seq: s }) if s == seq as u64
            ));
            // Gone from `a`'s history: that is what `verify_audit` above names.
            let history = h.store().ticket_audit(a).await.unwrap();
            assert!(history.iter().all(|e| e.seq() != seq as u64));
        }
        h.shutdown().await.unwrap();
    }
}

/// Verification reads the chain in pages (4 096 events) and reads the next page while it
/// hashes the current one: a chain several pages long verifies whole, and a tamper in a later
/// page is still named at the first bad event, before or after a misfiled one.
#[tokio::test]
async fn a_chain_of_several_pages_is_verified_whole_and_tampers_are_named_across_pages() {
    use agent_handoff::audit::{Actor, AuditRecord};
    use agent_handoff::backend::Write;

    const EVENTS: u64 = 10_000;
    let work = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let path = work.path().join("long.sqlite3");
    let ticket = TicketId::from_uuid(uuid::Uuid::from_u128(7));
    {
        // The fixture is written to the store directly: the facade offers no raw commit.
        let store = SqliteStore::open_with(
            &path,
            SqliteOptions::new()
                .with_clock(Arc::new(clock.clone()))
                .with_synchronous(Synchronous::Normal),
        )
        .await
        .unwrap();
        for write in 0..EVENTS / 1000 {
            let audit = (0..1000)
                .map(|i| {
                    AuditRecord::new(
                        // Events of no ticket and of one ticket alternate.
                        (i % 2 == 0).then_some(ticket),
                        Timestamp::from_unix_millis(START + (write * 1000 + i) as i64),
                        "note",
                        Actor::Operator(agent_handoff::PersonId::new("olga").unwrap()),
                        json!({ "n": write * 1000 + i }),
                    )
                })
                .collect::<Vec<_>>();
            store
                .commit(Write::new().with_audit_records(audit))
                .await
                .unwrap();
        }
        store.shutdown().await.unwrap();
        let h = engine(&path, &clock).await;
        let report = h.verify_audit().await.unwrap();
        assert_eq!(report.events, EVENTS);
        h.shutdown().await.unwrap();
    }
    // (tampers, the error expected): seqs chosen on both sides of the page boundary 4 096.
    type Case = (&'static [(&'static str, i64)], fn(&VerifyError) -> bool);
    let cases: [Case; 4] = [
        (&[("misfile", 9_000)], |e| {
            matches!(e, VerifyError::Misfiled { seq: 9_000 })
        }),
        (&[("misfile", 4_097)], |e| {
            matches!(e, VerifyError::Misfiled { seq: 4_097 })
        }),
        (&[("misfile", 9_000), ("hash", 6_000)], |e| {
            matches!(e, VerifyError::HashMismatch { seq: 6_000 })
        }),
        (&[("misfile", 4_200), ("hash", 4_096)], |e| {
            matches!(e, VerifyError::HashMismatch { seq: 4_096 })
        }),
    ];
    for (i, (tampers, expected)) in cases.into_iter().enumerate() {
        let copy = work.path().join(format!("long-{i}.sqlite3"));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
                .unwrap();
        }
        {
            let conn = Connection::open(&copy).unwrap();
            drop_triggers(&conn);
            for (what, seq) in tampers {
                let sql = match *what {
                    "misfile" => "UPDATE audit_events SET kind = 'moved' WHERE seq = ?1",
                    _ => "UPDATE audit_events SET hash = zeroblob(32) WHERE seq = ?1",
                };
                assert_eq!(conn.execute(sql, [seq]).unwrap(), 1);
            }
        }
        let h = engine(&copy, &clock).await;
        match h.verify_audit().await {
            Err(AuditError::Chain(e)) => assert!(expected(&e), "{tampers:?}: {e:?}"),
            other => panic!("{tampers:?}: {other:?}"),
        }
        h.shutdown().await.unwrap();
    }
}

/// The reproduction of a laundered truncation: a chain of at least ten events under a
/// checkpoint, events 5 to its end deleted with the triggers dropped, traffic going on past
/// the checkpoint's size, then a routine checkpoint. The checkpoint is refused (and the
/// refusal audited), and `verify_audit` — which checks every stored checkpoint — fails where
/// the chain left the old one. Deleting the checkpoint row as well defeats both, but not the
/// copy kept outside the database (`verify_audit_against`).
#[tokio::test]
async fn a_routine_checkpoint_never_launders_a_cut_tail() {
    let work = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let path = work.path().join("launder.sqlite3");
    let kept = {
        let h = engine(&path, &clock).await;
        traffic_past(&h, &clock, 9).await;
        let kept = h.checkpoint().await.unwrap();
        assert!(kept.size() >= 10);
        let report = h.verify_audit().await.unwrap();
        assert!(report.is_clean(), "{report}");
        h.shutdown().await.unwrap();
        kept
    };
    let size = kept.size();
    for delete_checkpoint in [false, true] {
        let copy = work
            .path()
            .join(format!("launder-{delete_checkpoint}.sqlite3"));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
                .unwrap();
        }
        {
            let conn = Connection::open(&copy).unwrap();
            drop_triggers(&conn);
            conn.execute("DELETE FROM audit_events WHERE seq >= 5", [])
                .unwrap();
            if delete_checkpoint {
                conn.execute("DELETE FROM checkpoints", []).unwrap();
            }
        }
        let h = engine(&copy, &clock).await;
        traffic_past(&h, &clock, size).await;
        let refused = h.checkpoint().await;
        if delete_checkpoint {
            // Nothing in the database vouches for the old head any more: the new chain is
            // consistent and gets signed; only the kept copy shows the rewrite.
            let signed = refused.expect("no stored checkpoint to contradict the chain");
            assert!(signed.size() > size);
            let report = h.verify_audit().await.unwrap();
            assert_eq!(report.checkpoint_size, Some(signed.size()));
        } else {
            assert!(
                matches!(
                    refused,
                    Err(AuditError::CheckpointRefused {
                        previous: Some(p),
                        source: VerifyError::Rewritten { seq }
                    }) if p == size && seq == size
                ),
                "{refused:?}"
            );
            assert_eq!(
                h.store().latest_checkpoint().await.unwrap().unwrap().size(),
                size
            );
            let events = stored_chain(&h.store()).await;
            let last =
                agent_handoff::audit::AuditEvent::decode(events.last().unwrap().clone()).unwrap();
            assert_eq!(last.record().kind, "refused");
            assert_eq!(last.record().data["refusal"], "checkpoint_refused");
            assert_eq!(last.record().data["detail"]["previous"], size);
            let report = h.verify_audit().await;
            assert!(
                matches!(report, Err(AuditError::Chain(VerifyError::Rewritten { seq })) if seq == size),
                "{report:?}"
            );
        }
        let against = h.verify_audit_against(&kept).await;
        assert!(
            matches!(against, Err(AuditError::Chain(VerifyError::Rewritten { seq })) if seq == size),
            "{against:?}"
        );
        h.shutdown().await.unwrap();
    }
}

/// Saves a checkpoint row directly in the database (as anyone who can write the file can).
fn save_checkpoint_raw(path: &Path, checkpoint: &Checkpoint) {
    let conn = Connection::open(path).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO checkpoints (size, text) VALUES (?1, ?2)",
        params![checkpoint.size() as i64, checkpoint.to_text()],
    )
    .unwrap();
}

/// `verify_audit` reports, rather than passes silently: no checkpoint at all, and a stored
/// checkpoint signed by a key it does not hold. A stored checkpoint of another origin, or
/// one naming the configured key with a signature that does not verify, is refused.
#[tokio::test]
async fn missing_foreign_and_forged_checkpoints_are_findings_or_refusals() {
    use agent_handoff::audit::CheckpointKey;
    use agent_handoff::AuditFinding;

    let work = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let path = work.path().join("findings.sqlite3");
    let h = engine(&path, &clock).await;
    traffic_past(&h, &clock, 3).await;
    let report = h.verify_audit().await.unwrap();
    assert_eq!(report.findings, [AuditFinding::NoCheckpoint]);
    assert!(!report.is_clean());
    assert_eq!(report.checkpoint_size, None);
    assert!(report.to_string().contains("no_checkpoint"), "{report}");

    let head = h.store().audit_head().await.unwrap();
    let retired = CheckpointKey::new("test.example/retired", &[0x42; 32]).unwrap();
    let foreign = Checkpoint::sign("test.example/audit", head, &retired).unwrap();
    save_checkpoint_raw(&path, &foreign);
    let report = h.verify_audit().await.unwrap();
    assert_eq!(
        report.findings,
        [
            AuditFinding::UntrustedCheckpoint {
                size: head.seq,
                signers: vec!["test.example/retired".into()],
            },
            AuditFinding::NoCheckpoint,
        ]
    );
    // A checkpoint over an untrusted one: verified from the start, then signed.
    let cp = h.checkpoint().await.unwrap();
    let report = h.verify_audit().await.unwrap();
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.checkpoint_size, Some(cp.size()));

    // Another chain's checkpoint under the same key: refused.
    traffic_past(&h, &clock, cp.size()).await;
    let other = Checkpoint::sign(
        "test.example/other",
        h.store().audit_head().await.unwrap(),
        &checkpoint_key(),
    )
    .unwrap();
    save_checkpoint_raw(&path, &other);
    assert!(matches!(
        h.verify_audit().await,
        Err(AuditError::Checkpoint(
            agent_handoff::audit::CheckpointError::WrongOrigin { .. }
        ))
    ));
    assert!(matches!(
        h.checkpoint().await,
        Err(AuditError::Checkpoint(
            agent_handoff::audit::CheckpointError::WrongOrigin { .. }
        ))
    ));
    // A forged signature by the configured key's name: refused.
    let forger = CheckpointKey::new("test.example/audit", &[0x13; 32]).unwrap();
    assert_eq!(
        forger.id(),
        checkpoint_key().id(),
        "the forger names the real key"
    );
    // At the other chain's checkpoint's size, so it replaces it.
    let forged = Checkpoint::sign("test.example/audit", other.head(), &forger).unwrap();
    save_checkpoint_raw(&path, &forged);
    let report = h.verify_audit().await;
    assert!(
        matches!(
            report,
            Err(AuditError::Checkpoint(
                agent_handoff::audit::CheckpointError::BadSignature { .. }
            ))
        ),
        "{report:?}"
    );
    h.shutdown().await.unwrap();
}
