//! The durable engine next to bare rusqlite doing the same writes, measured in the same run.
//!
//! "The same writes" are the rows our `propose` commits for a *pending* ticket: one `tickets`
//! row (JSON body and indexed columns), its `ticket_groups` rows and the `proposed` audit event
//! hashed onto the chain ([`Chain`], so the very same bytes), written by the baseline in one
//! `BEGIN IMMEDIATE` transaction per propose with cached prepared statements, on the schema of
//! `src/store/sqlite/migrations/` (0001, 0002, 0005), WAL, `synchronous=FULL`, foreign keys on — the
//! pragmas `SqliteStore` sets. Every database is a file in one temporary directory (set
//! `TMPDIR` to choose the disk). The baseline's rows are built before its clock starts (ticket,
//! JSON, chained hashes), so it times SQLite alone; our side builds them in its path.
//!
//! Benches (goals are reported as ratios, never asserted):
//! 1. `propose_1_caller_full`: `AgentHandle::propose` → pending on a file `SqliteStore`, one
//!    caller, vs the bare rate (goal ≥ 0.85); also the raw `Store::commit` path (no policy, no
//!    facade). The timed rounds add the same three with `synchronous=NORMAL` (no fsync per
//!    commit, so our fixed per-propose cost shows), a `ticket_by_key` read (a reader-thread
//!    round trip) and the pure-CPU steps of the path.
//! 2. `propose_concurrent_full`: 8 / 32 / 128 tasks on a 2-worker tokio runtime, each an agent
//!    of its own, distinct keys, group commit, total throughput vs the bare
//!    one-transaction-per-propose rate (goal at 32: ≥ 5×); `bare_batched_full`: the ceiling,
//!    bare rusqlite writing the same rows 1000 per transaction. The timed rounds add
//!    diagnostics: bare at 16 rows per transaction with and without a savepoint per write, and
//!    32 callers that are tasks of one agent (their rows share the right edge of the
//!    `(agent, …)` indexes, as the baseline's do).
//! 3. `decide_wakeup_{full,normal}`: a task waits on a pending ticket; from just before
//!    `decide` to the waiter holding the approval, p50 / p99 (goal p50 ≤ 1 ms), next to `decide`
//!    alone.
//! 4. `propose_at_scale_full`: propose rate, one caller, with 100 000 tickets already stored
//!    (bulk-loaded with rusqlite) vs an empty store (goal ≥ 0.80); with
//!    `AGENT_HANDOFF_BENCH_SCALE=1` also with 1 000 000 (or `AGENT_HANDOFF_BENCH_SCALE_TICKETS`),
//!    about 3.4 GB in `TMPDIR` and a minute to load.
//!
//! Criterion prints its own figures. After it, each bench prints `ratio` lines from contenders
//! timed in interleaved rounds in this process (order rotated each round): the ratio is fastest
//! round over fastest round (bursts of other work only slow rounds down), with the medians and
//! the median of the per-round ratios beside it; then a summary table, then one
//! `REPORT| <area> | <measure> | <ours> | <baseline> | <ratio> | <goal> | <met> |` line per
//! headline figure (areas `store`, `wakeup`, `scale`) for `scripts/bench-report`. A disk probe
//! (fdatasync of 4 KiB) runs before and after: every FULL figure sits on fsync, so a busy disk
//! shows there first. `AGENT_HANDOFF_BENCH_ONLY=one_caller,concurrent,wakeup,scale` runs a
//! subset. Under `cargo test --benches` everything runs once, as a smoke test (the scale
//! fixture then holds 1 000 tickets), and the rows are still checked against ours.
//!
//! Profiling: `AGENT_HANDOFF_BENCH_PROFILE=<what>:<ops>` runs one fixed workload and nothing
//! else (see `profile`), e.g. for instructions per propose:
//! `AGENT_HANDOFF_BENCH_PROFILE=facade:1200 valgrind --tool=callgrind target/release/deps/store-<hash> --bench`
//! minus the same with `facade:200`, over 1 000. (Valgrind's CPU has no SHA extensions, so
//! SHA-256 runs in software there; subtract `sha2::sha256::compress256`.)
//! See BENCHMARKS.md for figures and what they mean.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_handoff::action::{ActionRequest, Requester};
use agent_handoff::audit::{AuditEvent, AuditRecord, Chain};
use agent_handoff::backend::{TicketWrite, Write};
use agent_handoff::policy::{
    MatchedRule, Outcome, PolicyEngine, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement,
    Ruling,
};
use agent_handoff::ticket::{open, PrincipalCheck, Ticket, TicketState, Verdict};
use agent_handoff::{
    AgentHandle, AgentId, Clock, Credential, Decision, GroupName, Handoff, Limits, PersonId,
    Proposal, RuleId, SqliteOptions, SqliteStore, StaticDirectory, Store, Synchronous, SystemClock,
    TicketId, Timestamp,
};
use criterion::{BatchSize, Criterion, Throughput};
use rusqlite::{params, Connection};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::runtime::Runtime;

#[path = "support/refund.rs"]
mod refund;
use refund::request;

/// The schema our store creates, applied as is to the baseline's databases.
const SCHEMA: &str = concat!(
    include_str!("../src/store/sqlite/migrations/0001_init.sql"),
    include_str!("../src/store/sqlite/migrations/0002_outbox_order.sql"),
    include_str!("../src/store/sqlite/migrations/0005_requester_scope.sql"),
);

/// The reviewer group every bench ticket needs one approval from.
const GROUP: &str = "ops";
/// The agent's principal (resolved by the directory, so the ticket records a person).
const PRINCIPAL: &str = "alice";
/// The reviewer who approves in the wake-up bench.
const REVIEWER: &str = "rene";

/// Operations per contender per round in the fixed-size ratio timings.
const ROUND_OPS: usize = 100;
/// Rounds per ratio (the fastest and the median are reported).
const ROUNDS: usize = 21;
/// Proposals per round in the concurrent benches, whatever the number of callers.
const CONCURRENT_OPS: usize = 2048;
/// Rows per transaction of the batched ceiling.
const BATCH_ROWS: usize = 1000;
/// Rows per transaction in the savepoint diagnostics: about the batches our writer forms
/// with 32 callers on this machine.
const GROUP_ROWS: usize = 16;
/// Wake-up samples per durability level.
const WAKE_SAMPLES: usize = 400;
/// Tickets stored by the scale fixture of every run (the 1 M one is opt-in).
const SCALE_SMALL: usize = 100_000;

// ------------------------------------------------------------------------------------------
// Inputs shared by both sides
// ------------------------------------------------------------------------------------------

/// Every proposal of the process gets a fresh idempotency key and ticket id.
static NEXT: AtomicU64 = AtomicU64::new(1);

fn next_n() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn requests(count: usize) -> Vec<ActionRequest> {
    (0..count).map(|_| request(next_n())).collect()
}

/// Answers Review (1 approval from `ops`, 1 h deadline) for every action: deterministic and
/// independent of the policy file format.
#[derive(Debug)]
struct ReviewEverything {
    policy: PolicyRef,
    requirement: ReviewRequirement,
    rule: RuleId,
}

impl ReviewEverything {
    fn new() -> Self {
        Self {
            policy: PolicyRef {
                version: "bench-1".into(),
                hash: PolicyHash(Sha256::digest(b"bench policy").into()),
            },
            requirement: ReviewRequirement {
                groups: [GroupName::new(GROUP).unwrap()].into(),
                approvals: 1,
            },
            rule: RuleId::new("production-writes-need-review").unwrap(),
        }
    }
}

impl PolicyEngine for ReviewEverything {
    fn evaluate(&self, request: &ActionRequest) -> Ruling {
        Ruling {
            outcome: Outcome::Review(ReviewPlan {
                requirements: BTreeSet::from([self.requirement.clone()]),
                deadline: Duration::from_secs(3600),
                approval_ttl: Duration::from_secs(3600),
                veto: true,
            }),
            matched: vec![MatchedRule {
                rule: self.rule.clone(),
                reasons: vec![
                    format!("kind `{}` matches `db.*`", request.kind().as_str()),
                    "environment is `production`".into(),
                ],
                fail_closed: None,
            }],
            policy: self.policy.clone(),
        }
    }

    fn policy_ref(&self) -> PolicyRef {
        self.policy.clone()
    }
}

fn agent_id() -> AgentId {
    AgentId::new("billing-agent").unwrap()
}

fn requester() -> Requester {
    Requester::new(agent_id(), Some(PersonId::new(PRINCIPAL).unwrap()))
}

/// A UUID v7 for `now`, with the rest taken from a counter (unique within the process).
fn ticket_id(now: Timestamp) -> TicketId {
    let mut rest = [0u8; 10];
    rest[2..].copy_from_slice(&next_n().to_be_bytes());
    let ms = u64::try_from(now.as_unix_millis()).unwrap_or(0);
    TicketId::from_uuid(uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid())
}

/// The ticket and audit records our propose would produce for `request` at `now`.
fn opened(
    policy: &ReviewEverything,
    request: ActionRequest,
    now: Timestamp,
) -> (Ticket, Vec<AuditRecord>) {
    let ruling = policy.evaluate(&request);
    let t = open(
        ticket_id(now),
        requester(),
        PrincipalCheck::Person(PersonId::new(PRINCIPAL).unwrap()),
        request,
        ruling,
        now,
    );
    (t.ticket, t.audit)
}

// ------------------------------------------------------------------------------------------
// The baseline: bare rusqlite
// ------------------------------------------------------------------------------------------

/// The rows one propose writes, ready to insert.
struct Rows {
    id: [u8; 16],
    agent: String,
    principal: String,
    key: String,
    state: &'static str,
    digest: [u8; 32],
    created_at: i64,
    due_at: Option<i64>,
    body: String,
    groups: Vec<String>,
    events: Vec<AuditEvent>,
}

impl Rows {
    /// Exactly what `SqliteStore` derives from the ticket (see `store/sqlite/codec.rs`), with
    /// the records chained onto `chain`.
    fn of(ticket: &Ticket, audit: Vec<AuditRecord>, chain: &mut Chain) -> Rows {
        assert!(matches!(ticket.state(), TicketState::Pending));
        let groups = ticket
            .plan()
            .map(|plan| {
                plan.requirements
                    .iter()
                    .flat_map(|r| r.groups.iter().map(|g| g.as_str().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Rows {
            id: *ticket.id().as_uuid().as_bytes(),
            agent: ticket.requester().agent().as_str().to_owned(),
            principal: ticket
                .requester()
                .principal()
                .map_or("", |p| p.as_str())
                .to_owned(),
            key: ticket.idempotency_key().as_str().to_owned(),
            state: ticket.state().name().as_str(),
            digest: *ticket.action_digest().as_bytes(),
            created_at: ticket.created_at().as_unix_millis(),
            due_at: ticket.deadline().map(Timestamp::as_unix_millis),
            body: serde_json::to_string(ticket).unwrap(),
            groups,
            events: audit
                .into_iter()
                .map(|r| chain.append(r).unwrap())
                .collect(),
        }
    }
}

/// One bare connection with the chain head it has written up to.
struct Bare {
    conn: Connection,
    chain: RefCell<Chain>,
    policy: ReviewEverything,
}

impl Bare {
    fn open(path: &Path, sync: Synchronous) -> Bare {
        let conn = Connection::open(path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync = match sync {
            Synchronous::Full => "FULL",
            _ => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA trusted_schema = OFF; PRAGMA temp_store = MEMORY;"
        ))
        .unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        if version == 0 {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = 2; COMMIT;"
            ))
            .unwrap();
        }
        let chain = RefCell::new(Chain::resume(head(&conn)));
        Bare {
            conn,
            chain,
            policy: ReviewEverything::new(),
        }
    }

    /// Rows for `count` fresh proposals, chained after everything built so far.
    fn rows(&self, count: usize) -> Vec<Rows> {
        let now = SystemClock.now();
        let mut chain = self.chain.borrow_mut();
        (0..count)
            .map(|_| {
                let (ticket, audit) = opened(&self.policy, request(next_n()), now);
                Rows::of(&ticket, audit, &mut chain)
            })
            .collect()
    }

    fn insert(&self, rows: &Rows) {
        let c = &self.conn;
        c.prepare_cached(
            "INSERT INTO tickets (id, agent, principal, idempotency_key, state, version, digest, \
             created_at, updated_at, due_at, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .unwrap()
        .execute(params![
            rows.id,
            rows.agent,
            rows.principal,
            rows.key,
            rows.state,
            1i64,
            rows.digest,
            rows.created_at,
            rows.created_at,
            rows.due_at,
            rows.body,
        ])
        .unwrap();
        let mut groups = c
            .prepare_cached("INSERT OR IGNORE INTO ticket_groups (grp, ticket_id) VALUES (?1, ?2)")
            .unwrap();
        for g in &rows.groups {
            groups.execute(params![g, rows.id]).unwrap();
        }
        let mut events = c
            .prepare_cached(
                "INSERT INTO audit_events \
                 (seq, ticket_id, at, kind, bytes, prev_hash, hash, committed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        for e in &rows.events {
            let r = e.record();
            events
                .execute(params![
                    e.seq() as i64,
                    r.ticket.map(|t| *t.as_uuid().as_bytes()),
                    r.at.as_unix_millis(),
                    r.kind,
                    e.bytes(),
                    &e.prev_hash().as_bytes()[..],
                    &e.hash().as_bytes()[..],
                    r.at.as_unix_millis(),
                ])
                .unwrap();
        }
    }

    /// One transaction for these rows.
    fn commit(&self, rows: &[Rows]) {
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .unwrap()
            .execute([])
            .unwrap();
        for r in rows {
            self.insert(r);
        }
        self.conn
            .prepare_cached("COMMIT")
            .unwrap()
            .execute([])
            .unwrap();
    }

    /// One transaction per propose, timed.
    fn one_per_tx(&self, count: usize) -> Duration {
        let rows = self.rows(count);
        let start = Instant::now();
        for r in &rows {
            self.commit(std::slice::from_ref(r));
        }
        start.elapsed()
    }

    /// `count` proposes, `per_tx` per transaction, each in its own savepoint if `savepoints`
    /// (as our writer's group commit does), timed.
    fn grouped(&self, count: usize, per_tx: usize, savepoints: bool) -> Duration {
        let rows = self.rows(count);
        let start = Instant::now();
        for chunk in rows.chunks(per_tx) {
            if savepoints {
                self.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                for r in chunk {
                    self.conn.execute_batch("SAVEPOINT w").unwrap();
                    self.insert(r);
                    self.conn.execute_batch("RELEASE w").unwrap();
                }
                self.conn.execute_batch("COMMIT").unwrap();
            } else {
                self.commit(chunk);
            }
        }
        start.elapsed()
    }
}

fn head(conn: &Connection) -> agent_handoff::audit::ChainHead {
    use agent_handoff::audit::{ChainHash, ChainHead};
    conn.query_row(
        "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        [],
        |r| {
            let seq: i64 = r.get(0)?;
            let hash: Vec<u8> = r.get(1)?;
            Ok(ChainHead {
                seq: seq as u64,
                hash: ChainHash::from_bytes(hash.try_into().unwrap()),
            })
        },
    )
    .unwrap_or(ChainHead::GENESIS)
}

/// What one database holds per ticket, to show that the baseline writes what we write.
#[derive(Debug, PartialEq)]
struct Shape {
    /// (min, max) length of a ticket's JSON body.
    body: (i64, i64),
    /// (min, max) length of an audit event's bytes, less the digits of its `seq`.
    event: (i64, i64),
    /// Audit events and group rows per ticket.
    events_per_ticket: f64,
    groups_per_ticket: f64,
    /// Distinct (state, version, due_at - created_at) of the tickets.
    columns: Vec<(String, i64, Option<i64>)>,
}

/// Reads the shape of a database and verifies its whole audit chain.
fn shape(path: &Path) -> Shape {
    let conn = Connection::open(path).unwrap();
    let q = |sql: &str| -> (i64, i64) {
        conn.query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    let body = q("SELECT min(length(body)), max(length(body)) FROM tickets");
    // The bytes hold the event's `seq`, whose digits grow with the chain.
    let event = q(
        "SELECT min(length(bytes) - length(seq)), max(length(bytes) - length(seq)) \
                   FROM audit_events",
    );
    let (tickets, _) = q("SELECT count(*), 0 FROM tickets");
    let (events, _) = q("SELECT count(*), 0 FROM audit_events");
    let (groups, _) = q("SELECT count(*), 0 FROM ticket_groups");
    let mut s = conn
        .prepare("SELECT DISTINCT state, version, due_at - created_at FROM tickets")
        .unwrap();
    let columns = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut s = conn
        .prepare("SELECT seq, bytes, prev_hash, hash FROM audit_events ORDER BY seq")
        .unwrap();
    let raw = s
        .query_map([], |r| {
            let (prev, hash): (Vec<u8>, Vec<u8>) = (r.get(2)?, r.get(3)?);
            Ok(agent_handoff::audit::RawEvent {
                seq: r.get::<_, i64>(0)? as u64,
                bytes: r.get(1)?,
                prev_hash: agent_handoff::audit::ChainHash::from_bytes(prev.try_into().unwrap()),
                hash: agent_handoff::audit::ChainHash::from_bytes(hash.try_into().unwrap()),
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    agent_handoff::audit::verify(&raw).expect("the audit chain verifies");
    Shape {
        body,
        event,
        events_per_ticket: events as f64 / tickets as f64,
        groups_per_ticket: groups as f64 / tickets as f64,
        columns,
    }
}

/// Fails the run if the baseline's rows differ in shape from ours.
fn check_same_writes(bare: &Path, ours: &Path) {
    let (b, o) = (shape(bare), shape(ours));
    assert_eq!(b, o, "the baseline must write what our propose writes");
    println!(
        "same writes: checked (per ticket: body {} B, {} audit event(s) of {} B + seq digits, {} group row(s); both chains verify)",
        o.body.0, o.events_per_ticket, o.event.0, o.groups_per_ticket
    );
}

// ------------------------------------------------------------------------------------------
// Our side: SqliteStore and the Handoff facade
// ------------------------------------------------------------------------------------------

struct Ours {
    handoff: Handoff,
    agent: AgentHandle,
    reviewer: Credential,
}

async fn ours(path: &Path, sync: Synchronous) -> Ours {
    let store = SqliteStore::open_with(path, SqliteOptions::new().with_synchronous(sync))
        .await
        .unwrap();
    let mut dir = StaticDirectory::new();
    dir.add_person(PRINCIPAL, ["staff"]).unwrap();
    dir.add_person(REVIEWER, [GROUP]).unwrap();
    let token = dir.issue_token(REVIEWER).unwrap();
    let handoff = Handoff::builder()
        .store(store)
        .policy(ReviewEverything::new())
        .identity(dir)
        .limits(Limits {
            proposals_per_minute: 0,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id(), Some(PersonId::new(PRINCIPAL).unwrap()));
    Ours {
        handoff,
        agent,
        reviewer: Credential::token(token.expose()),
    }
}

async fn propose_pending(agent: &AgentHandle, request: ActionRequest) -> TicketId {
    match agent.propose(request).await.unwrap() {
        Proposal::Pending(p) => p.id,
        other => panic!("expected a pending ticket, got {other:?}"),
    }
}

/// `count` proposals through the facade, one at a time, timed.
fn facade_serial(rt: &Runtime, agent: &AgentHandle, count: usize) -> Duration {
    let reqs = requests(count);
    rt.block_on(async {
        let start = Instant::now();
        for r in reqs {
            propose_pending(agent, r).await;
        }
        start.elapsed()
    })
}

/// The writes our propose makes, built before the clock starts.
fn writes(policy: &ReviewEverything, count: usize) -> Vec<Write> {
    let now = SystemClock.now();
    (0..count)
        .map(|_| {
            let (ticket, audit) = opened(policy, request(next_n()), now);
            Write::new()
                .with_ticket(TicketWrite::Insert(Box::new(ticket)))
                .with_audit_records(audit)
        })
        .collect()
}

/// `count` raw `Store::commit` calls, one at a time, timed.
fn commit_serial(
    rt: &Runtime,
    store: &dyn Store,
    policy: &ReviewEverything,
    count: usize,
) -> Duration {
    let ws = writes(policy, count);
    rt.block_on(async {
        let start = Instant::now();
        for w in ws {
            store.commit(w).await.unwrap();
        }
        start.elapsed()
    })
}

/// Whose tasks the concurrent callers are.
#[derive(Clone, Copy)]
enum Agents {
    /// Each caller is an agent of its own (`agent-<i>`): the headline figures.
    PerCaller,
    /// Every caller is a task of the bench's one agent.
    One,
}

/// `callers` tasks proposing `total / callers` distinct requests each; the wall time for all.
fn facade_concurrent(
    rt: &Runtime,
    handoff: &Handoff,
    callers: usize,
    total: usize,
    agents: Agents,
) -> Duration {
    let per = total / callers;
    let work: Vec<(AgentHandle, Vec<ActionRequest>)> = (0..callers)
        .map(|i| {
            let agent = match agents {
                Agents::PerCaller => AgentId::new(format!("agent-{i}")).unwrap(),
                Agents::One => agent_id(),
            };
            (
                handoff.agent(agent, Some(PersonId::new(PRINCIPAL).unwrap())),
                requests(per),
            )
        })
        .collect();
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|(agent, reqs)| {
                tokio::spawn(async move {
                    for r in reqs {
                        propose_pending(&agent, r).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    })
}

/// One wake-up: propose, park a waiter, decide; returns (decide → waiter has the approval,
/// decide → `decide` returned).
fn wake_once(rt: &Runtime, ours: &Ours) -> (Duration, Duration) {
    let req = request(next_n());
    rt.block_on(async {
        let pending = match ours.agent.propose(req).await.unwrap() {
            Proposal::Pending(p) => p,
            other => panic!("expected a pending ticket, got {other:?}"),
        };
        let id = pending.id;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let agent = ours.agent.clone();
        tokio::spawn(async move {
            let decision = agent.wait(&pending, Duration::from_secs(30)).await;
            let seen = Instant::now();
            let _ = tx.send((decision, seen));
        });
        // Let the waiter read the ticket and park (its first poll is 25 ms away).
        tokio::time::sleep(Duration::from_millis(3)).await;
        let start = Instant::now();
        ours.handoff
            .decide(id, &ours.reviewer, Verdict::Approve, None)
            .await
            .unwrap();
        let decided = start.elapsed();
        let (decision, seen) = rx.await.unwrap();
        match decision.unwrap() {
            Decision::Approved(grant) => assert_eq!(grant.ticket(), id),
            other => panic!("expected an approval, got {other:?}"),
        }
        (seen.saturating_duration_since(start), decided)
    })
}

// ------------------------------------------------------------------------------------------
// Timing and reporting
// ------------------------------------------------------------------------------------------

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A timed piece of work that returns its rate (operations per second).
type Contender<'a> = Box<dyn FnMut() -> f64 + 'a>;

/// The rates of one contender, one per round (operations per second).
#[derive(Debug, Clone)]
struct Rates(Vec<f64>);

impl Rates {
    fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// The fastest round: the least disturbed by other work on the machine (which only slows).
    fn best(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }

    /// The median over the rounds of `self / base` within each round: contenders of one round
    /// run back to back, so a disturbance that lasts longer than a round cancels out.
    fn paired_ratio(&self, base: &Rates) -> f64 {
        median(self.0.iter().zip(&base.0).map(|(a, b)| a / b).collect())
    }
}

/// Runs every contender once per round, in turn, for `rounds` rounds, so that load from
/// elsewhere on the machine hits all of them alike; returns each one's rates.
fn interleaved(rounds: usize, mut contenders: Vec<Contender<'_>>) -> Vec<Rates> {
    let n = contenders.len();
    let mut rates = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        // Rotate who goes first: whoever follows a contender inherits its leftovers (dirty
        // pages being written back, a WAL checkpoint due).
        for i in (0..n).map(|k| (round + k) % n) {
            rates[i].push(contenders[i]());
        }
    }
    rates.into_iter().map(Rates).collect()
}

fn rate(ops: usize, took: Duration) -> f64 {
    ops as f64 / took.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn per_s(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.2} k/s", rate / 1e3)
    } else {
        format!("{rate:.0} /s")
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Lines of the final summary table.
#[derive(Default)]
struct Summary {
    rows: Vec<[String; 4]>,
    /// `REPORT|` lines, printed last (see [`Report`]).
    reports: Vec<String>,
}

/// A headline figure for `scripts/bench-report`, which collects one line per figure from
/// every bench into one markdown table. The format is a contract with that script:
/// `REPORT| <area> | <measure> | <ours> | <baseline> | <ratio> | <goal> | <met> |`, where
/// `<met>` is `yes`, `no`, or `—` when there is no goal.
struct Report<'a> {
    area: &'a str,
    measure: &'a str,
    /// What the baseline is, e.g. `bare rusqlite` (its rate follows).
    baseline: &'a str,
}

/// `≥ 0.85×`, `≥ 5×`.
fn goal_text(goal: f64) -> String {
    if goal.fract() == 0.0 {
        format!("≥ {goal:.0}×")
    } else {
        format!("≥ {goal:.2}×")
    }
}

/// `705 µs`, `2.25 ms`.
fn duration_text(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        micros(d)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

impl Summary {
    /// Prints and keeps `ours / base`; `goal` is the ratio aimed at, if any.
    ///
    /// The headline ratio is fastest round over fastest round: other work on this machine
    /// comes in bursts that only ever slow a round down, so each contender's fastest round is
    /// its least disturbed one (this was the steadiest figure from run to run). The median of
    /// the per-round ratios and the median rates are printed beside it.
    fn ratio(
        &mut self,
        name: &str,
        ours: (&str, &Rates),
        base: (&str, &Rates),
        goal: Option<f64>,
        report: Option<Report<'_>>,
    ) {
        let best = ours.1.best() / base.1.best();
        if let Some(r) = report {
            let (goal, met) = match goal {
                Some(g) => (goal_text(g), if best >= g { "yes" } else { "no" }),
                None => ("—".into(), "—"),
            };
            self.reports.push(format!(
                "REPORT| {} | {} | {} | {} {} | {best:.2}× | {goal} | {met} |",
                r.area,
                r.measure,
                per_s(ours.1.best()),
                r.baseline,
                per_s(base.1.best()),
            ));
        }
        let paired = ours.1.paired_ratio(base.1);
        let verdict = match goal {
            Some(g) if best >= g => format!("goal >= {g:.2}: met"),
            Some(g) => format!("goal >= {g:.2}: NOT met"),
            None => "no goal".into(),
        };
        println!(
            "ratio {name}: {best:.2} ({verdict}); fastest rounds {} {} / {} {}; medians {} / {}, median of per-round ratios {paired:.2}",
            ours.0,
            per_s(ours.1.best()),
            base.0,
            per_s(base.1.best()),
            per_s(ours.1.median()),
            per_s(base.1.median()),
        );
        self.rows.push([
            name.into(),
            format!(
                "{} {} ({}) vs {} {} ({})",
                ours.0,
                per_s(ours.1.best()),
                per_s(ours.1.median()),
                base.0,
                per_s(base.1.best()),
                per_s(base.1.median())
            ),
            format!("**{best:.2}** ({paired:.2})"),
            match goal {
                Some(g) => format!(
                    "≥ {g:.2}: {}",
                    if best >= g { "met" } else { "**not met**" }
                ),
                None => "—".into(),
            },
        ]);
    }

    /// Prints and keeps the time per operation (in each contender's fastest round).
    fn cost(&mut self, name: &str, contenders: &[(&str, &Rates)]) {
        let text = contenders
            .iter()
            .map(|(label, r)| {
                format!(
                    "{label} {}",
                    micros(Duration::from_secs_f64(1.0 / r.best()))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!("cost {name}: {text}");
        self.rows.push([name.into(), text, "—".into(), "—".into()]);
    }

    /// Wake-up latencies; `report` names the measure for `REPORT|` lines (p50 and p99, with
    /// `decide` alone as the baseline: the difference is the wake-up proper).
    fn latency(
        &mut self,
        name: &str,
        samples: &mut [Duration],
        decide: &mut [Duration],
        report: Option<&str>,
    ) {
        samples.sort();
        decide.sort();
        let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        let met = p50 <= Duration::from_millis(1);
        let verdict = if met { "met" } else { "NOT met" };
        if let Some(measure) = report {
            for (p, q, goal, met) in [
                ("p50", 0.5, "≤ 1 ms", if met { "yes" } else { "no" }),
                ("p99", 0.99, "—", "—"),
            ] {
                let (ours, alone) = (percentile(samples, q), percentile(decide, q));
                self.reports.push(format!(
                    "REPORT| wakeup | {measure}, {p} | {} | decide alone {} | {:.2}× | {goal} | {met} |",
                    duration_text(ours),
                    duration_text(alone),
                    ours.as_secs_f64() / alone.as_secs_f64(),
                ));
            }
        }
        println!(
            "latency {name}: decide → waiter p50 {} p99 {} max {} (decide alone p50 {} p99 {}; {} samples; goal p50 <= 1 ms: {verdict})",
            micros(p50),
            micros(p99),
            micros(*samples.last().unwrap()),
            micros(percentile(decide, 0.5)),
            micros(percentile(decide, 0.99)),
            samples.len(),
        );
        self.rows.push([
            name.into(),
            format!(
                "p50 {} / p99 {} (decide alone p50 {})",
                micros(p50),
                micros(p99),
                micros(percentile(decide, 0.5))
            ),
            "—".into(),
            format!("p50 ≤ 1 ms — {verdict}"),
        ]);
    }

    fn print(&self) {
        println!("\n| bench | rates: fastest of {ROUNDS} interleaved rounds (median) | ratio: fastest / fastest (median of per-round ratios) | goal |");
        println!("|---|---|---|---|");
        for r in &self.rows {
            println!("| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
        println!();
        for line in &self.reports {
            println!("{line}");
        }
    }
}

/// How fast the disk makes 4 KiB durable right now (the floor under every FULL commit); other
/// work on the machine shows up here first.
fn disk_probe() {
    use std::io::Write as _;
    let dir = TempDir::new().unwrap();
    let mut f = std::fs::File::create(dir.path().join("probe")).unwrap();
    let mut took: Vec<Duration> = (0..200)
        .map(|_| {
            f.write_all(&[0x5a; 4096]).unwrap();
            let start = Instant::now();
            f.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    took.sort();
    println!(
        "disk: fdatasync after a 4 KiB append: p50 {} p90 {} p99 {}",
        micros(percentile(&took, 0.5)),
        micros(percentile(&took, 0.9)),
        micros(percentile(&took, 0.99)),
    );
}

fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args()
}

// ------------------------------------------------------------------------------------------
// 1. One caller
// ------------------------------------------------------------------------------------------

fn one_caller(c: &mut Criterion, dir: &Path, timed: bool, summary: &mut Summary) {
    let rt = current_thread();
    let bare = Bare::open(&dir.join("bare-1.sqlite3"), Synchronous::Full);
    let facade = rt.block_on(ours(&dir.join("facade-1.sqlite3"), Synchronous::Full));
    let store = rt
        .block_on(SqliteStore::open(dir.join("commit-1.sqlite3")))
        .unwrap();
    let policy = ReviewEverything::new();

    let mut g = c.benchmark_group("propose_1_caller_full");
    g.throughput(Throughput::Elements(1));
    g.bench_function("bare_rusqlite", |b| {
        b.iter_batched(
            || bare.rows(1),
            |rows| bare.commit(&rows),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("store_commit", |b| {
        b.iter_batched(
            || writes(&policy, 1).pop().unwrap(),
            |w| rt.block_on(store.commit(w)).unwrap(),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("facade_propose", |b| {
        b.iter_batched(
            || request(next_n()),
            |r| rt.block_on(propose_pending(&facade.agent, r)),
            BatchSize::SmallInput,
        );
    });
    g.finish();

    if timed {
        // The same three without an fsync per commit (synchronous=NORMAL) expose the CPU and
        // thread hand-off costs that the fsync hides; plus the facade's one extra read.
        let bare_n = Bare::open(&dir.join("bare-1-normal.sqlite3"), Synchronous::Normal);
        let facade_n = rt.block_on(ours(
            &dir.join("facade-1-normal.sqlite3"),
            Synchronous::Normal,
        ));
        let store_n = rt
            .block_on(SqliteStore::open_with(
                dir.join("commit-1-normal.sqlite3"),
                SqliteOptions::new().with_synchronous(Synchronous::Normal),
            ))
            .unwrap();
        let agent = Requester::new(agent_id(), Some(PersonId::new(PRINCIPAL).unwrap()));
        let rates = interleaved(
            ROUNDS,
            vec![
                Box::new(|| rate(ROUND_OPS, bare.one_per_tx(ROUND_OPS))),
                Box::new(|| rate(ROUND_OPS, commit_serial(&rt, &store, &policy, ROUND_OPS))),
                Box::new(|| rate(ROUND_OPS, facade_serial(&rt, &facade.agent, ROUND_OPS))),
                Box::new(|| rate(ROUND_OPS, bare_n.one_per_tx(ROUND_OPS))),
                Box::new(|| rate(ROUND_OPS, commit_serial(&rt, &store_n, &policy, ROUND_OPS))),
                Box::new(|| rate(ROUND_OPS, facade_serial(&rt, &facade_n.agent, ROUND_OPS))),
                Box::new(|| {
                    let keys: Vec<_> = requests(ROUND_OPS)
                        .into_iter()
                        .map(|r| r.idempotency_key().clone())
                        .collect();
                    let took = rt.block_on(async {
                        let start = Instant::now();
                        for k in &keys {
                            assert!(store_n.ticket_by_key(&agent, k).await.unwrap().is_none());
                        }
                        start.elapsed()
                    });
                    rate(ROUND_OPS, took)
                }),
                // The pure CPU parts of the path: policy + `open` (digest, ticket, `proposed`
                // record) on the caller; ticket JSON + chain append on the writer.
                Box::new(|| {
                    let reqs = requests(ROUND_OPS);
                    let now = SystemClock.now();
                    let start = Instant::now();
                    for r in reqs {
                        black_box(opened(&policy, r, now));
                    }
                    rate(ROUND_OPS, start.elapsed())
                }),
                Box::new(|| {
                    let now = SystemClock.now();
                    let opened: Vec<_> = requests(ROUND_OPS)
                        .into_iter()
                        .map(|r| opened(&policy, r, now))
                        .collect();
                    let mut chain = Chain::new();
                    let start = Instant::now();
                    for (ticket, audit) in &opened {
                        black_box(serde_json::to_string(ticket).unwrap());
                        for record in audit {
                            black_box(chain.append(record.clone()).unwrap());
                        }
                    }
                    rate(ROUND_OPS, start.elapsed())
                }),
            ],
        );
        let [bare, commit, facade] = [&rates[0], &rates[1], &rates[2]];
        summary.ratio(
            "1 caller, FULL: facade propose / bare",
            ("facade", facade),
            ("bare", bare),
            Some(0.85),
            Some(Report {
                area: "store",
                measure: "propose, 1 caller, FULL",
                baseline: "bare rusqlite",
            }),
        );
        summary.ratio(
            "1 caller, FULL: Store::commit / bare",
            ("commit", commit),
            ("bare", bare),
            None,
            Some(Report {
                area: "store",
                measure: "Store::commit (no facade, no policy), 1 caller, FULL",
                baseline: "bare rusqlite",
            }),
        );
        summary.ratio(
            "1 caller, FULL: facade propose / Store::commit",
            ("facade", facade),
            ("commit", commit),
            None,
            None,
        );
        let [bare_n_r, commit_n_r, facade_n_r, read] = [&rates[3], &rates[4], &rates[5], &rates[6]];
        summary.ratio(
            "1 caller, NORMAL: facade propose / bare",
            ("facade", facade_n_r),
            ("bare", bare_n_r),
            None,
            None,
        );
        summary.ratio(
            "1 caller, NORMAL: Store::commit / bare",
            ("commit", commit_n_r),
            ("bare", bare_n_r),
            None,
            None,
        );
        summary.cost(
            "1 caller, per propose",
            &[
                ("bare FULL", bare),
                ("commit FULL", commit),
                ("facade FULL", facade),
                ("bare NORMAL", bare_n_r),
                ("commit NORMAL", commit_n_r),
                ("facade NORMAL", facade_n_r),
                ("ticket_by_key read", read),
                ("policy + open", &rates[7]),
                ("ticket JSON + chain append", &rates[8]),
            ],
        );
        rt.block_on(store_n.shutdown()).unwrap();
        rt.block_on(facade_n.handoff.shutdown()).unwrap();
    }
    rt.block_on(store.shutdown()).unwrap();
    rt.block_on(facade.handoff.shutdown()).unwrap();
    check_same_writes(&dir.join("bare-1.sqlite3"), &dir.join("facade-1.sqlite3"));
    check_same_writes(&dir.join("bare-1.sqlite3"), &dir.join("commit-1.sqlite3"));
}

// ------------------------------------------------------------------------------------------
// 2. Concurrent callers, group commit
// ------------------------------------------------------------------------------------------

fn concurrent(c: &mut Criterion, dir: &Path, timed: bool, summary: &mut Summary) {
    let rt = multi_thread();
    let bare = Bare::open(&dir.join("bare-n.sqlite3"), Synchronous::Full);
    let bare_batched = Bare::open(&dir.join("bare-batched.sqlite3"), Synchronous::Full);
    let bare_grouped = Bare::open(&dir.join("bare-grouped.sqlite3"), Synchronous::Full);
    let facade = rt.block_on(ours(&dir.join("facade-n.sqlite3"), Synchronous::Full));
    let callers = [8usize, 32, 128];

    let mut g = c.benchmark_group("propose_concurrent_full");
    g.throughput(Throughput::Elements(CONCURRENT_OPS as u64));
    for n in callers {
        g.bench_function(format!("facade_{n}_callers"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        facade_concurrent(
                            &rt,
                            &facade.handoff,
                            n,
                            CONCURRENT_OPS,
                            Agents::PerCaller,
                        )
                    })
                    .sum()
            });
        });
    }
    g.finish();
    let mut g = c.benchmark_group("bare_batched_full");
    g.throughput(Throughput::Elements(BATCH_ROWS as u64));
    g.bench_function("bare_1000_per_tx", |b| {
        b.iter_batched(
            || bare_batched.rows(BATCH_ROWS),
            |rows| bare_batched.commit(&rows),
            BatchSize::PerIteration,
        );
    });
    g.finish();

    if timed {
        let batched_rows = BATCH_ROWS * 2;
        let mut contenders: Vec<Contender<'_>> = vec![
            Box::new(|| rate(ROUND_OPS, bare.one_per_tx(ROUND_OPS))),
            Box::new(|| {
                rate(
                    batched_rows,
                    bare_batched.grouped(batched_rows, BATCH_ROWS, false),
                )
            }),
            // Diagnostics: what one savepoint per write costs at a group-commit batch size.
            Box::new(|| {
                rate(
                    CONCURRENT_OPS,
                    bare_grouped.grouped(CONCURRENT_OPS, GROUP_ROWS, false),
                )
            }),
            Box::new(|| {
                rate(
                    CONCURRENT_OPS,
                    bare_grouped.grouped(CONCURRENT_OPS, GROUP_ROWS, true),
                )
            }),
        ];
        for n in callers {
            let (rt, h) = (&rt, &facade.handoff);
            contenders.push(Box::new(move || {
                rate(
                    CONCURRENT_OPS,
                    facade_concurrent(rt, h, n, CONCURRENT_OPS, Agents::PerCaller),
                )
            }));
        }
        // Diagnostic: the same 32 callers as tasks of one agent, so their tickets share the
        // right edge of the (agent, …) indexes, as the baseline's rows do.
        {
            let (rt, h) = (&rt, &facade.handoff);
            contenders.push(Box::new(move || {
                rate(
                    CONCURRENT_OPS,
                    facade_concurrent(rt, h, 32, CONCURRENT_OPS, Agents::One),
                )
            }));
        }
        let rates = interleaved(ROUNDS, contenders);
        let [bare, batched, grouped, savepoints] = [&rates[0], &rates[1], &rates[2], &rates[3]];
        let first_facade = 4;
        for (i, n) in callers.iter().enumerate() {
            summary.ratio(
                &format!("{n} callers, FULL: facade propose / bare 1 per tx"),
                ("facade", &rates[first_facade + i]),
                ("bare", bare),
                (*n == 32).then_some(5.0),
                Some(Report {
                    area: "store",
                    measure: &format!("propose, {n} callers, FULL, group commit"),
                    baseline: "bare rusqlite 1 tx per propose",
                }),
            );
        }
        summary.ratio(
            "batched ceiling: bare 1000 per tx / bare 1 per tx",
            ("bare batched", batched),
            ("bare", bare),
            None,
            Some(Report {
                area: "store",
                measure: &format!("batched ceiling: bare rusqlite, {BATCH_ROWS} proposes per tx"),
                baseline: "bare rusqlite 1 tx per propose",
            }),
        );
        summary.ratio(
            "32 callers, FULL: facade propose / bare batched ceiling",
            ("facade", &rates[first_facade + 1]),
            ("bare batched", batched),
            None,
            None,
        );
        summary.ratio(
            "diagnostic: 32 callers of one agent / 32 agents, facade propose",
            ("one agent", &rates[first_facade + callers.len()]),
            ("32 agents", &rates[first_facade + 1]),
            None,
            None,
        );
        summary.ratio(
            &format!("diagnostic: bare {GROUP_ROWS} per tx, savepoint per write / none"),
            ("savepoints", savepoints),
            ("none", grouped),
            None,
            None,
        );
    }
    rt.block_on(facade.handoff.shutdown()).unwrap();
}

// ------------------------------------------------------------------------------------------
// 3. Decision → waiter wake-up
// ------------------------------------------------------------------------------------------

fn wakeup(c: &mut Criterion, dir: &Path, timed: bool, summary: &mut Summary) {
    let rt = multi_thread();
    for (sync, name) in [(Synchronous::Full, "full"), (Synchronous::Normal, "normal")] {
        let o = rt.block_on(ours(&dir.join(format!("wake-{name}.sqlite3")), sync));
        let mut g = c.benchmark_group(format!("decide_wakeup_{name}"));
        g.bench_function("decide_to_waiter", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| wake_once(&rt, &o).0).sum());
        });
        g.finish();
        if timed {
            let (mut wake, mut decide): (Vec<_>, Vec<_>) =
                (0..WAKE_SAMPLES).map(|_| wake_once(&rt, &o)).unzip();
            summary.latency(
                &format!("decide → waiter, {}", name.to_uppercase()),
                &mut wake,
                &mut decide,
                (sync == Synchronous::Full).then_some("decide → same-process waiter, FULL"),
            );
        }
        rt.block_on(o.handoff.shutdown()).unwrap();
    }
}

// ------------------------------------------------------------------------------------------
// 4. At scale (100 k in every run; 1 M with AGENT_HANDOFF_BENCH_SCALE=1)
// ------------------------------------------------------------------------------------------

/// Bulk-loads `count` pending tickets (and their audit chain) straight into a new database.
fn bulk_load(path: &Path, count: usize) -> Duration {
    let start = Instant::now();
    let bare = Bare::open(path, Synchronous::Normal);
    bare.conn
        .execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .unwrap();
    let chunk = 10_000;
    let mut done = 0;
    while done < count {
        let n = chunk.min(count - done);
        let rows = bare.rows(n);
        bare.commit(&rows);
        done += n;
        if done % 100_000 == 0 {
            eprintln!("  loaded {done} tickets in {:.0?}", start.elapsed());
        }
    }
    bare.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    start.elapsed()
}

/// The scale fixtures: 100 k tickets in every run, and with `AGENT_HANDOFF_BENCH_SCALE=1`
/// also `AGENT_HANDOFF_BENCH_SCALE_TICKETS` (default 1 M).
fn scale_sizes() -> Vec<usize> {
    let mut sizes = vec![SCALE_SMALL];
    if std::env::var("AGENT_HANDOFF_BENCH_SCALE").as_deref() == Ok("1") {
        let big = std::env::var("AGENT_HANDOFF_BENCH_SCALE_TICKETS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        if big != SCALE_SMALL {
            sizes.push(big);
        }
    }
    sizes
}

/// `100 k`, `1 M`.
fn count_text(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{} M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{} k", n / 1000)
    } else {
        n.to_string()
    }
}

fn at_scale(c: &mut Criterion, dir: &Path, timed: bool, summary: &mut Summary) {
    // Under `cargo test --benches` (one untimed pass) a small fixture keeps the smoke test quick.
    let sizes = if timed { scale_sizes() } else { vec![1000] };
    let empty = dir.join("scale-empty.sqlite3");
    let mut stored = Vec::new();
    for &count in &sizes {
        let path = dir.join(format!("scale-{count}.sqlite3"));
        let took = bulk_load(&path, count);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "scale fixture: {count} tickets bulk-loaded in {took:.1?} ({:.2} GB)",
            size as f64 / 1e9
        );
        stored.push((count, path));
    }

    // Bare first (our store reads the chain head when it opens, so it must come second).
    if timed {
        let bare_empty = Bare::open(&empty, Synchronous::Full);
        let bares: Vec<Bare> = stored
            .iter()
            .map(|(_, path)| Bare::open(path, Synchronous::Full))
            .collect();
        let mut contenders: Vec<Contender<'_>> = vec![Box::new(|| {
            rate(ROUND_OPS, bare_empty.one_per_tx(ROUND_OPS))
        })];
        for bare in &bares {
            contenders.push(Box::new(move || {
                rate(ROUND_OPS, bare.one_per_tx(ROUND_OPS))
            }));
        }
        let rates = interleaved(ROUNDS, contenders);
        for (i, (count, _)) in stored.iter().enumerate() {
            let label = count_text(*count);
            summary.ratio(
                &format!("bare, {label} stored / empty"),
                (&label, &rates[1 + i]),
                ("empty", &rates[0]),
                None,
                None,
            );
        }
    }

    let rt = current_thread();
    let o_empty = rt.block_on(ours(&empty, Synchronous::Full));
    let o_stored: Vec<Ours> = stored
        .iter()
        .map(|(_, path)| rt.block_on(ours(path, Synchronous::Full)))
        .collect();
    let mut g = c.benchmark_group("propose_at_scale_full");
    g.throughput(Throughput::Elements(1));
    let mut named: Vec<(String, &Ours)> = vec![("empty".into(), &o_empty)];
    for ((count, _), o) in stored.iter().zip(&o_stored) {
        named.push((count_text(*count).replace(' ', ""), o));
    }
    for (name, o) in &named {
        g.bench_function(format!("facade_{name}"), |b| {
            b.iter_batched(
                || request(next_n()),
                |r| rt.block_on(propose_pending(&o.agent, r)),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
    if timed {
        let mut contenders: Vec<Contender<'_>> = Vec::new();
        for (_, o) in &named {
            let rt = &rt;
            contenders.push(Box::new(move || {
                rate(ROUND_OPS, facade_serial(rt, &o.agent, ROUND_OPS))
            }));
        }
        let rates = interleaved(ROUNDS, contenders);
        summary.cost(
            "1 caller, FULL: facade propose, empty store",
            &[("empty", &rates[0])],
        );
        for (i, (count, _)) in stored.iter().enumerate() {
            let label = count_text(*count);
            summary.ratio(
                &format!("1 caller, FULL: facade propose, {label} stored / empty"),
                (&label, &rates[1 + i]),
                ("empty", &rates[0]),
                Some(0.80),
                Some(Report {
                    area: "scale",
                    measure: &format!("propose, 1 caller, FULL, {label} tickets stored"),
                    baseline: "empty store",
                }),
            );
        }
    }
    rt.block_on(o_empty.handoff.shutdown()).unwrap();
    for o in &o_stored {
        rt.block_on(o.handoff.shutdown()).unwrap();
    }
}

// ------------------------------------------------------------------------------------------
// Profiling: a fixed workload and nothing else
// ------------------------------------------------------------------------------------------

/// `AGENT_HANDOFF_BENCH_PROFILE=<what>:<ops>[:<callers>]` runs only `ops` proposals of one
/// contender — `facade`, `commit` or `bare` (one caller, FULL), or `concurrent` (`callers`
/// tasks, default 32; `AGENT_HANDOFF_BENCH_AGENTS=one` makes them tasks of one agent) — or
/// `ops` `ticket_by_key` reads (`read`, back to back; `coldread`, 1 ms apart), or `ops`
/// decide → waiter wake-ups (`wakeup`), or `ops` fsyncs inline and across a thread hand-off
/// (`handoff`), and prints the time taken; for `valgrind --tool=callgrind`, `perf record` and
/// `perf stat`. Instructions per propose are the difference between two runs with
/// different `ops`, divided by the difference of `ops` (which cancels the set-up).
/// `AGENT_HANDOFF_BENCH_SYNC=normal` uses `synchronous=NORMAL`.
fn profile(spec: &str, dir: &Path) {
    let mut parts = spec.split(':');
    let what = parts.next().unwrap_or_default();
    let ops: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let callers: usize = parts.next().and_then(|n| n.parse().ok()).unwrap_or(32);
    let sync = match std::env::var("AGENT_HANDOFF_BENCH_SYNC").as_deref() {
        Ok("normal") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let took = match what {
        "bare" => Bare::open(&dir.join("profile.sqlite3"), sync).one_per_tx(ops),
        "commit" => {
            let rt = current_thread();
            let store = rt
                .block_on(SqliteStore::open_with(
                    dir.join("profile.sqlite3"),
                    SqliteOptions::new().with_synchronous(sync),
                ))
                .unwrap();
            let took = commit_serial(&rt, &store, &ReviewEverything::new(), ops);
            rt.block_on(store.shutdown()).unwrap();
            took
        }
        "facade" => {
            let rt = current_thread();
            let o = rt.block_on(ours(&dir.join("profile.sqlite3"), sync));
            let took = facade_serial(&rt, &o.agent, ops);
            rt.block_on(o.handoff.shutdown()).unwrap();
            took
        }
        "concurrent" => {
            let rt = multi_thread();
            let o = rt.block_on(ours(&dir.join("profile.sqlite3"), sync));
            let agents = match std::env::var("AGENT_HANDOFF_BENCH_AGENTS").as_deref() {
                Ok("one") => Agents::One,
                _ => Agents::PerCaller,
            };
            let took = facade_concurrent(&rt, &o.handoff, callers, ops, agents);
            rt.block_on(o.handoff.shutdown()).unwrap();
            took
        }
        "read" => {
            let rt = current_thread();
            let store = rt
                .block_on(SqliteStore::open(dir.join("profile.sqlite3")))
                .unwrap();
            let (agent, keys) = (
                Requester::new(agent_id(), Some(PersonId::new(PRINCIPAL).unwrap())),
                requests(ops),
            );
            let took = rt.block_on(async {
                let start = Instant::now();
                for r in &keys {
                    let key = r.idempotency_key();
                    assert!(store.ticket_by_key(&agent, key).await.unwrap().is_none());
                }
                start.elapsed()
            });
            rt.block_on(store.shutdown()).unwrap();
            took
        }
        "coldread" => {
            let rt = multi_thread();
            let store = rt
                .block_on(SqliteStore::open(dir.join("profile.sqlite3")))
                .unwrap();
            let (agent, keys) = (
                Requester::new(agent_id(), Some(PersonId::new(PRINCIPAL).unwrap())),
                requests(ops),
            );
            let mut took: Vec<Duration> = rt.block_on(async {
                let mut took = Vec::new();
                for r in &keys {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let start = Instant::now();
                    let key = r.idempotency_key();
                    assert!(store.ticket_by_key(&agent, key).await.unwrap().is_none());
                    took.push(start.elapsed());
                }
                took
            });
            rt.block_on(store.shutdown()).unwrap();
            took.sort();
            println!(
                "profile coldread: p50 {} p90 {} p99 {}",
                micros(percentile(&took, 0.5)),
                micros(percentile(&took, 0.9)),
                micros(percentile(&took, 0.99)),
            );
            took.iter().sum()
        }
        "wakeup" => {
            let rt = multi_thread();
            let o = rt.block_on(ours(&dir.join("profile.sqlite3"), sync));
            let (mut wake, mut decide): (Vec<_>, Vec<_>) =
                (0..ops).map(|_| wake_once(&rt, &o)).unzip();
            rt.block_on(o.handoff.shutdown()).unwrap();
            wake.sort();
            decide.sort();
            println!(
                "profile wakeup: p50 {} p99 {} (decide alone p50 {} p99 {})",
                micros(percentile(&wake, 0.5)),
                micros(percentile(&wake, 0.99)),
                micros(percentile(&decide, 0.5)),
                micros(percentile(&decide, 0.99)),
            );
            wake.iter().sum()
        }
        "handoff" => {
            // What the thread hand-off of a one-caller commit costs on its own: an fdatasync of
            // a 4 KiB append done inline, and the same done on another thread for an async
            // caller (a std channel there, a oneshot back), `ops` times each, interleaved.
            use std::io::Write as _;
            let rt = current_thread();
            let mut inline = std::fs::File::create(dir.join("inline")).unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
            let path = dir.join("thread");
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(path).unwrap();
                while let Ok(reply) = rx.recv() {
                    f.write_all(&[0x5a; 4096]).unwrap();
                    f.sync_data().unwrap();
                    let _ = reply.send(());
                }
            });
            let mut a = Vec::new();
            let mut b = Vec::new();
            for _ in 0..ops {
                let start = Instant::now();
                inline.write_all(&[0x5a; 4096]).unwrap();
                inline.sync_data().unwrap();
                a.push(start.elapsed());
                let took = rt.block_on(async {
                    let (reply, done) = tokio::sync::oneshot::channel();
                    let start = Instant::now();
                    tx.send(reply).unwrap();
                    done.await.unwrap();
                    start.elapsed()
                });
                b.push(took);
            }
            a.sort();
            b.sort();
            println!(
                "profile handoff: inline fdatasync p50 {} p90 {}; on a thread, answered to an async caller p50 {} p90 {}",
                micros(percentile(&a, 0.5)),
                micros(percentile(&a, 0.9)),
                micros(percentile(&b, 0.5)),
                micros(percentile(&b, 0.9)),
            );
            Duration::from_secs(1)
        }
        other => panic!("AGENT_HANDOFF_BENCH_PROFILE: unknown contender `{other}`"),
    };
    println!(
        "profile {what}: {ops} proposals in {took:.2?} ({})",
        per_s(rate(ops, took))
    );
}

fn main() {
    // Under `cargo test --benches` criterion runs each bench once; skip the timed rounds.
    let timed = std::env::args().any(|a| a == "--bench");
    let dir = TempDir::new().unwrap();
    if let Ok(spec) = std::env::var("AGENT_HANDOFF_BENCH_PROFILE") {
        profile(&spec, dir.path());
        return;
    }
    let mut c = criterion();
    let mut summary = Summary::default();
    // `AGENT_HANDOFF_BENCH_ONLY=one_caller,concurrent,wakeup,scale` runs a subset.
    let only = std::env::var("AGENT_HANDOFF_BENCH_ONLY").ok();
    let run = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s == name))
    };
    if timed {
        let version: String = Connection::open_in_memory()
            .unwrap()
            .query_row("SELECT sqlite_version()", [], |r| r.get(0))
            .unwrap();
        println!(
            "SQLite {version}, databases in {} (set TMPDIR to choose the disk)",
            dir.path().display()
        );
        disk_probe();
    }
    if run("one_caller") {
        one_caller(&mut c, dir.path(), timed, &mut summary);
    }
    if run("concurrent") {
        concurrent(&mut c, dir.path(), timed, &mut summary);
    }
    if run("wakeup") {
        wakeup(&mut c, dir.path(), timed, &mut summary);
    }
    if run("scale") {
        if timed && std::env::var("AGENT_HANDOFF_BENCH_SCALE").as_deref() != Ok("1") {
            println!(
                "propose_at_scale: {} tickets only (set AGENT_HANDOFF_BENCH_SCALE=1 for 1 M)",
                SCALE_SMALL
            );
        }
        at_scale(&mut c, dir.path(), timed, &mut summary);
    }
    if timed {
        disk_probe();
    }
    c.final_summary();
    if timed {
        summary.print();
    }
}
