//! Concurrency storms through the public API, each checked afterwards by a model.
//!
//! Everything runs on a file-backed [`SqliteStore`] (WAL, `synchronous=FULL`, group commit)
//! and a multi-threaded tokio runtime. The storms do not try to force an interleaving; they
//! record what every operation answered (`Ok` or a typed refusal) and then check that the
//! store, the decisions table and the audit chain are explained by those answers, whatever the
//! interleaving was:
//!
//! 1. **Duplicate proposals** (`duplicate_proposal_storm…`): `STORM_TASKS` tasks each propose
//!    every one of `STORM_KEYS` idempotency keys, in their own shuffled order; for one key in
//!    eight, one task proposes a *different* action under the key. Checked: one ticket per key
//!    (the store's `UNIQUE (agent, principal, key)`), every task that proposed the same action got the
//!    same ticket and the answer its ruling gives, every task that proposed another action got
//!    `IdempotencyConflict` naming that ticket, each ticket has exactly the audit events of its
//!    proposal (`proposed`, plus `approved`/`rejected` by policy) — a replay writes nothing, as
//!    `AgentHandle::propose` documents (the losing insert is rolled back to its savepoint and
//!    the answer is read back) — no decision or outbox row exists, and the chain verifies.
//! 2. **Decisions** (`decision_storm…`): `STORM_TICKETS` tickets (one or two approvals of
//!    `dba`, with and without veto, policy-allowed, policy-denied; staggered deadlines, grant
//!    ends and approval ttls) take racing approvals, rejections, change requests,
//!    self-approvals, ineligible votes, repeated votes, cancels by the agent and by an
//!    operator, revokes, begins (each with its own grant), renewals, finishes, operator
//!    resolutions and waits, while a clock task advances a [`ManualClock`] in steps and runs
//!    `expire_due` (votes arriving after a deadline exercise the lazy expiry). The model
//!    replays each ticket's audit events through a small reference of the lifecycle (states,
//!    distinct non-self eligible approvers, lapse, veto, validity, leases) and checks that:
//!    every transition is legal at its time (at most one terminal outcome; approved only when
//!    the counted approvers meet the quorum, with the reviewers and validity the audit names;
//!    begin only on an approved ticket inside its validity, at most once; finish only after
//!    begin); the stored ticket is where the replay ends (state, version, votes); every `Ok`
//!    answer has its transition and every transition an `Ok` answer; every refusal answered is
//!    audited once, with the state it saw, and is one that state justifies; the decisions table
//!    holds exactly the accepted and refused decisions; expiries are those the sweeps and waits
//!    report; nothing else is in the chain, and the chain verifies. **Freezes**: the operator of
//!    the driving process freezes the agent, lifts it, freezes every agent and lifts that, each
//!    at a set share of the process's operations (`FREEZES`), racing the approvals and begins; the model reads the `frozen` and
//!    `unfrozen` events of the chain and checks that no approval was counted and no permit issued
//!    (`execution_started`) between a freeze and its lift — the store checks the freeze inside
//!    the committing write, so chain order is the order that counts — that each `frozen`
//!    refusal of an approval or a begin was answered as such and follows a freeze, and that the
//!    chain holds exactly the freezes answered.
//! 3. **Several processes** (`multi_process_storm…`): `STORM_PROCS` child processes (this test
//!    binary re-run as the ignored test `storm_worker`, selected with `--exact --ignored`, told
//!    by `STORM_WORKER_DIR` to act as a worker) open one SQLite file. They share time through
//!    a file (a [`Clock`] reading it; one child moves it, every child sweeps). They first run
//!    the duplicate-proposal storm together (`STORM_TASKS` tasks split between them), meet at
//!    a file barrier, then run the decision storm on the first `STORM_TICKETS` keys (at most
//!    `STORM_KEYS`) with each operation given to one of the processes. Each child prints its
//!    answers as JSON lines; the parent parses them and runs the same model over the union
//!    (one ticket per key across processes, at most one successful begin per ticket across
//!    processes, …).
//!
//! `the_model_reports_answers_and_rows_that_do_not_fit` shows the model can fail: each answer
//! forgotten, invented or altered, and each row forged into the store, is reported.
//! Two bugs these storms found are pinned by regression tests
//! (`an_engine_whose_clock_lags…`, `a_wait_never_answers_expired…`), both fixed.
//!
//! Sizes come from the environment (defaults are the CI size, under ten seconds for the file
//! in a debug build): `STORM_TASKS` (32), `STORM_KEYS` (96), `STORM_TICKETS` (128),
//! `STORM_PROCS` (3), `STORM_SEED` (1: which operations each ticket gets; the interleaving is
//! up to the scheduler). The big run:
//!
//! ```text
//! STORM_KEYS=1000 STORM_TICKETS=1000 STORM_PROCS=4 \
//!     cargo test --release --all-features --test storm -- --nocapture --test-threads 1
//! ```
//!
//! Each test prints its figures (operations, answers by kind, final states, elapsed time);
//! nothing asserts on time.

mod rng;
mod support;
use rng::Rng;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_handoff::action::{ActionRequest, Requester};
use agent_handoff::audit::{Actor, AuditRecord};
use agent_handoff::backend::TicketFilter;
use agent_handoff::policy::Outcome;
use agent_handoff::ticket::{ExecutionOutcome, StateName, Ticket, TicketState, Verdict};
use agent_handoff::{
    AgentHandle, Clock, Credential, DecideError, Decision, ExecuteError, FreezeScope, Handoff,
    Limits, ManualClock, PendingTicket, Proposal, ProposeError, SqliteOptions, SqliteStore, Store,
    TicketId, Timestamp,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{agent_id, all_tickets, allow, deny, directory, idem, key, person, req, KindPolicy};

// ---------------------------------------------------------------------------------------------
// Sizes, names, time
// ---------------------------------------------------------------------------------------------

/// One clock step of the decision storm.
const STEP: Duration = Duration::from_secs(20);
/// Steps the clock makes; every review deadline and policy grant ends before the last one.
const STEPS: u32 = 12;
/// Review deadlines and policy grants last 1..=`MAX_DEADLINE_STEPS` steps.
const MAX_DEADLINE_STEPS: u32 = 10;
/// Approval ttls, in steps (30 never lapses within the storm).
const TTL_STEPS: [u32; 4] = [2, 4, 8, 30];

/// The proposing agent, and the principal it acts for (a DBA, so self-approval is tried).
const AGENT: &str = "storm-agent";
const PRINCIPAL: &str = "pat";
/// The operator of the standard directory.
const OPERATOR: &str = "olga";
/// Members of `dba` in the standard directory (`pat` among them).
const DBAS: [&str; 4] = ["alice", "bob", "carol", "pat"];

/// Child-process plumbing.
const WORKER_DIR: &str = "STORM_WORKER_DIR";
const WORKER_INDEX: &str = "STORM_WORKER_INDEX";
/// Lines a child prints for the parent start with one of these.
const LINE_PROPOSAL: &str = "STORM-PROPOSAL ";
const LINE_OP: &str = "STORM-OP ";
const LINE_SUMMARY: &str = "STORM-SUMMARY ";
const LINE_FREEZE: &str = "STORM-FREEZE ";

/// Real-time guard against a storm that never settles (a bug, reported as a panic).
const HANG_GUARD: Duration = Duration::from_secs(300);

fn start() -> Timestamp {
    Timestamp::from_unix_millis(support::START)
}

fn at_step(step: u32) -> Timestamp {
    start().saturating_add(STEP * step)
}

fn ms(t: Timestamp) -> i64 {
    t.as_unix_millis()
}

/// Storm sizes, from the environment.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    tasks: usize,
    keys: usize,
    tickets: usize,
    procs: usize,
    seed: u64,
}

impl Cfg {
    fn from_env() -> Self {
        fn var(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} must be a number, got `{v}`")),
                Err(_) => default,
            }
        }
        let keys = var("STORM_KEYS", 96).max(1) as usize;
        Self {
            tasks: var("STORM_TASKS", 32).max(1) as usize,
            keys,
            tickets: var("STORM_TICKETS", 128).max(1) as usize,
            procs: var("STORM_PROCS", 3).max(1) as usize,
            seed: var("STORM_SEED", 1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and the policy
// ---------------------------------------------------------------------------------------------

/// What the policy says about a key's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One approval of `dba`, veto on.
    One,
    /// One approval of `dba`, veto off.
    OneNoVeto,
    /// Two approvals of `dba`, veto on.
    Two,
    /// Two approvals of `dba`, veto off.
    TwoNoVeto,
    /// Allowed by policy (a grant of `deadline` steps).
    Allow,
    /// Denied by policy.
    Deny,
}

impl Shape {
    const ALL: [Shape; 6] = [
        Shape::One,
        Shape::OneNoVeto,
        Shape::Two,
        Shape::TwoNoVeto,
        Shape::Allow,
        Shape::Deny,
    ];

    fn name(self) -> &'static str {
        match self {
            Shape::One => "one",
            Shape::OneNoVeto => "one-noveto",
            Shape::Two => "two",
            Shape::TwoNoVeto => "two-noveto",
            Shape::Allow => "allow",
            Shape::Deny => "deny",
        }
    }
}

/// The ruling of one key's action.
#[derive(Debug, Clone, Copy)]
struct KeyPlan {
    shape: Shape,
    deadline_steps: u32,
    ttl_steps: u32,
}

impl KeyPlan {
    fn of(k: usize) -> Self {
        let shape = match k % 8 {
            0 | 1 => Shape::One,
            2 | 3 => Shape::Two,
            4 => Shape::TwoNoVeto,
            5 => Shape::OneNoVeto,
            6 => Shape::Allow,
            _ => Shape::Deny,
        };
        Self {
            shape,
            deadline_steps: 1 + ((k / 8) as u32 % MAX_DEADLINE_STEPS),
            ttl_steps: TTL_STEPS[(k / 3) % TTL_STEPS.len()],
        }
    }

    fn kind(&self) -> String {
        kind_name(self.shape, self.deadline_steps, self.ttl_steps)
    }

    fn outcome(&self) -> Outcome {
        let deadline = STEP * self.deadline_steps;
        let ttl = STEP * self.ttl_steps;
        match self.shape {
            Shape::One => support::review(&[req("dba", 1)], deadline, ttl),
            Shape::OneNoVeto => support::review_no_veto(&[req("dba", 1)], deadline, ttl),
            Shape::Two => support::review(&[req("dba", 2)], deadline, ttl),
            Shape::TwoNoVeto => support::review_no_veto(&[req("dba", 2)], deadline, ttl),
            Shape::Allow => allow(deadline),
            Shape::Deny => deny("storms of this kind are denied"),
        }
    }
}

fn kind_name(shape: Shape, deadline_steps: u32, ttl_steps: u32) -> String {
    format!("storm.{}.d{deadline_steps}.t{ttl_steps}", shape.name())
}

/// Every kind a key can have, with its outcome (anything else is denied by default).
fn storm_policy() -> KindPolicy {
    let policy = KindPolicy::new();
    for shape in Shape::ALL {
        for d in 1..=MAX_DEADLINE_STEPS {
            for t in TTL_STEPS {
                let plan = KeyPlan {
                    shape,
                    deadline_steps: d,
                    ttl_steps: t,
                };
                policy.set(&plan.kind(), plan.outcome());
            }
        }
    }
    policy
}

fn key_text(k: usize) -> String {
    format!("storm-{k:06}")
}

/// The action proposed under key `k`; `variant` is another action under the same key.
fn storm_request(k: usize, variant: bool) -> ActionRequest {
    let mut parameters = json!({ "key": k, "table": "orders" });
    if variant {
        parameters["variant"] = json!(true);
    }
    ActionRequest::builder(KeyPlan::of(k).kind(), idem(&key_text(k)))
        .target("postgres://prod/orders")
        .parameters(parameters)
        .reason("storm")
        .build()
        .unwrap()
}

/// Whether global task `task` of `tasks` proposes the other action under key `k`: one task,
/// for one key in eight.
fn proposes_variant(k: usize, task: usize, tasks: usize) -> bool {
    tasks > 1 && k % 8 == 3 && (k * 7 + 3) % tasks == task
}

// ---------------------------------------------------------------------------------------------
// Clocks and the engine
// ---------------------------------------------------------------------------------------------

/// Time shared by several processes: the milliseconds in a file, replaced atomically by the
/// one process that moves time.
#[derive(Debug)]
struct FileClock {
    path: PathBuf,
}

impl FileClock {
    fn set(&self, to: Timestamp) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, ms(to).to_string()).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

#[async_trait]
impl Clock for FileClock {
    fn now(&self) -> Timestamp {
        let text = std::fs::read_to_string(&self.path).unwrap();
        Timestamp::from_unix_millis(text.trim().parse().unwrap())
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        while self.now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// The storm's time: a manual clock in one process, a file across processes.
#[derive(Clone)]
enum Time {
    Manual(ManualClock),
    File(Arc<FileClock>),
}

impl Time {
    fn clock(&self) -> Arc<dyn Clock> {
        match self {
            Time::Manual(c) => Arc::new(c.clone()),
            Time::File(c) => Arc::clone(c) as Arc<dyn Clock>,
        }
    }

    fn now(&self) -> Timestamp {
        match self {
            Time::Manual(c) => c.now(),
            Time::File(c) => c.now(),
        }
    }

    fn set(&self, to: Timestamp) {
        match self {
            Time::Manual(c) => c.set(to),
            Time::File(c) => c.set(to),
        }
    }
}

/// One process's engine on the storm's file.
struct Node {
    handoff: Handoff,
    agent: AgentHandle,
    creds: BTreeMap<&'static str, Credential>,
    store: Arc<dyn Store>,
}

impl Node {
    async fn open(path: &Path, time: &Time) -> Arc<Node> {
        let clock = time.clock();
        let options = SqliteOptions::new().with_clock(Arc::clone(&clock));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(path, options).await.unwrap());
        let (dir, creds) = directory();
        let handoff = Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(storm_policy())
            .identity(dir)
            .shared_clock(clock)
            .limits(Limits {
                // Every proposal of the storm must be answered, not rate-limited.
                proposals_per_minute: 0,
                // Every refusal by a freeze audited (the model counts them).
                frozen_audit_per_minute: 0,
                lease_ttl: STEP,
                ..Limits::default()
            })
            .build()
            .unwrap();
        let agent = handoff.agent(agent_id(AGENT), Some(person(PRINCIPAL)));
        Arc::new(Node {
            handoff,
            agent,
            creds,
            store,
        })
    }

    fn cred(&self, who: &str) -> &Credential {
        &self.creds[who]
    }
}

// ---------------------------------------------------------------------------------------------
// What the storms record
// ---------------------------------------------------------------------------------------------

/// One proposal's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProposalRecord {
    proc: usize,
    task: usize,
    key: usize,
    variant: bool,
    /// `pending`, `allowed`, `denied`, `closed:<state>`, `conflict` or `error:<what>`.
    answer: String,
    /// The ticket answered (for `conflict`, the ticket holding the key).
    ticket: Option<TicketId>,
}

/// One operation's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpRecord {
    proc: usize,
    ticket: TicketId,
    /// `vote`, `cancel_agent`, `cancel_operator`, `revoke`, `begin`, `renew`, `finish`,
    /// `resolve`, `wait`, or `no_grant` (a begin that found no grant to use: no operation).
    op: String,
    /// The reviewer of a vote.
    who: String,
    /// The verdict of a vote.
    verdict: String,
    /// `ok`, `refused:<code>`, `decision:<name>` (waits) or `error:<what>`.
    result: String,
}

/// One freeze or lift of the kill switch by the operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FreezeRecord {
    proc: usize,
    /// `freeze` or `unfreeze`.
    op: String,
    /// `agent` (the storm's agent) or `all`.
    scope: String,
    /// `ok` or `error:<what>`.
    result: String,
}

fn freeze_scope(scope: &str) -> FreezeScope {
    match scope {
        "all" => FreezeScope::All,
        _ => FreezeScope::Agent(agent_id(AGENT)),
    }
}

/// Freezes (`on`) or lifts `scope` as the operator.
async fn freeze_op(node: &Node, proc: usize, on: bool, scope: &str) -> FreezeRecord {
    let h = &node.handoff;
    let r = if on {
        h.freeze(node.cred(OPERATOR), freeze_scope(scope), "storm freezes")
            .await
    } else {
        h.unfreeze(node.cred(OPERATOR), freeze_scope(scope)).await
    };
    FreezeRecord {
        proc,
        op: if on { "freeze" } else { "unfreeze" }.into(),
        scope: scope.into(),
        result: decide_result(r),
    }
}

/// The kill switch during the decision storm: (freeze?, scope), each once this share (in
/// percent) of the driving process's immediate operations is done — in the thick of the
/// approvals and begins, and short, so that most of the storm runs unfrozen.
const FREEZES: [(bool, &str, usize); 4] = [
    (true, "agent", 70),
    (false, "agent", 71),
    (true, "all", 90),
    (false, "all", 91),
];

/// The driving process's operator: works the kill switch as [`FREEZES`] says.
async fn work_the_kill_switch(node: &Node, proc: usize, progress: &Progress) -> Vec<FreezeRecord> {
    let begun = Instant::now();
    let mut out = Vec::new();
    for (on, scope, percent) in FREEZES {
        let due = progress.immediate_total * percent / 100;
        while progress.immediate_done.load(Ordering::SeqCst) < due
            && !progress.quiet.load(Ordering::SeqCst)
        {
            assert!(begun.elapsed() < HANG_GUARD, "the storm stalled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(freeze_op(node, proc, on, scope).await);
    }
    out
}

/// What one process's sweeps moved, and how long it took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Summary {
    proc: usize,
    swept: usize,
    proposals: usize,
    ops: usize,
    propose_ms: u128,
    decide_ms: u128,
}

fn refused(code: &str) -> String {
    format!("refused:{code}")
}

fn decide_result<T>(r: Result<T, DecideError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(DecideError::Refused(refusal)) => refused(refusal.code().as_str()),
        Err(e @ DecideError::Frozen { .. }) => refused(e.code().as_str()),
        Err(e) => format!("error:{e:?}"),
    }
}

fn execute_result<T>(r: &Result<T, ExecuteError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(ExecuteError::Refused(refusal)) => refused(refusal.code().as_str()),
        Err(e @ ExecuteError::Frozen { .. }) => refused(e.code().as_str()),
        Err(e) => format!("error:{e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Storm 1: duplicate proposals
// ---------------------------------------------------------------------------------------------

fn answer_of(r: Result<Proposal, ProposeError>) -> (String, Option<TicketId>) {
    match r {
        Ok(Proposal::Pending(p)) => ("pending".into(), Some(p.id)),
        Ok(Proposal::Allowed(grant)) => ("allowed".into(), Some(grant.ticket())),
        Ok(Proposal::Denied { ticket, .. }) => ("denied".into(), Some(ticket)),
        Ok(Proposal::Closed { ticket, state }) => {
            (format!("closed:{}", state.as_str()), Some(ticket))
        }
        Err(ProposeError::IdempotencyConflict { existing }) => ("conflict".into(), Some(existing)),
        Err(e) => (format!("error:{e:?}"), None),
    }
}

/// Global tasks `tasks` (of `total`) each propose every key once, in their own order, all
/// starting together.
async fn proposal_storm(
    node: &Arc<Node>,
    cfg: &Cfg,
    proc: usize,
    tasks: std::ops::Range<usize>,
    total: usize,
) -> Vec<ProposalRecord> {
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks.len()));
    let handles: Vec<_> = tasks
        .map(|task| {
            let (node, barrier, cfg) = (Arc::clone(node), Arc::clone(&barrier), *cfg);
            tokio::spawn(async move {
                let mut order: Vec<usize> = (0..cfg.keys).collect();
                Rng::new(cfg.seed ^ ((task as u64 + 1) << 20)).shuffle(&mut order);
                barrier.wait().await;
                let mut out = Vec::with_capacity(order.len());
                for k in order {
                    let variant = proposes_variant(k, task, total);
                    let (answer, ticket) =
                        answer_of(node.agent.propose(storm_request(k, variant)).await);
                    out.push(ProposalRecord {
                        proc,
                        task,
                        key: k,
                        variant,
                        answer,
                        ticket,
                    });
                }
                out
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Storm 2: decisions
// ---------------------------------------------------------------------------------------------

/// An operation planned on a ticket.
#[derive(Debug, Clone)]
enum Op {
    Vote {
        who: &'static str,
        verdict: &'static str,
    },
    CancelAgent,
    CancelOperator,
    /// Fires once the ticket has left `pending`.
    Revoke,
    /// Once the ticket has left `pending`: take a grant, begin, maybe renew, finish.
    Begin {
        renew: bool,
        succeed: bool,
        stall: Stall,
    },
    /// Fires once the ticket is past executing.
    Resolve,
    /// `AgentHandle::wait` until the ticket is decided or expired.
    Wait,
}

impl Op {
    /// Fired right away (after its delay), not on a state of the ticket.
    fn immediate(&self) -> bool {
        matches!(self, Op::Vote { .. } | Op::CancelAgent | Op::CancelOperator)
    }
}

/// Where a begin operation waits for time to pass, as a slow agent would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    No,
    /// Holds the grant until the clock moves, then begins (the grant may have lapsed).
    BeforeBegin,
    /// Holds the permit until the lease is lost, then finishes late (an operator may have
    /// resolved the ticket meanwhile).
    BeforeFinish,
}

#[derive(Debug, Clone)]
struct Planned {
    op: Op,
    proc: usize,
    /// Scheduler turns to let pass before firing.
    delay: u32,
}

/// The operations of ticket `k`: the same in every process for a seed.
fn plan_ticket(seed: u64, k: usize, procs: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ (k as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut ops = Vec::new();
    for who in ["alice", "bob", "carol"] {
        let verdict = match rng.below(20) {
            0..=11 => "approve",
            12..=13 => "reject",
            14 => "request_changes",
            _ => continue,
        };
        ops.push(Op::Vote { who, verdict });
        match rng.below(8) {
            // The same vote again (a retry): counted once.
            0 | 1 => ops.push(Op::Vote { who, verdict }),
            // A change of mind, racing the first vote: an approval may be replaced by a
            // rejection, never the other way round.
            2 => ops.push(Op::Vote {
                who,
                verdict: if verdict == "approve" {
                    "reject"
                } else {
                    "approve"
                },
            }),
            _ => {}
        }
    }
    if rng.below(10) < 3 {
        ops.push(Op::Vote {
            who: PRINCIPAL,
            verdict: "approve",
        });
    }
    if rng.below(10) < 2 {
        // Not in `dba`: neither an approval nor a veto counts.
        let verdict = if rng.below(2) == 0 {
            "approve"
        } else {
            "reject"
        };
        ops.push(Op::Vote {
            who: "dave",
            verdict,
        });
    }
    if rng.below(100) < 12 {
        ops.push(Op::CancelAgent);
    }
    if rng.below(100) < 8 {
        ops.push(Op::CancelOperator);
    }
    if rng.below(100) < 20 {
        ops.push(Op::Revoke);
    }
    for _ in 0..[0, 1, 1, 2, 2, 3][rng.below(6) as usize] {
        ops.push(Op::Begin {
            renew: rng.below(3) == 0,
            succeed: rng.below(4) != 0,
            stall: match rng.below(6) {
                0 => Stall::BeforeBegin,
                1 | 2 => Stall::BeforeFinish,
                _ => Stall::No,
            },
        });
    }
    if rng.below(100) < 30 {
        ops.push(Op::Resolve);
    }
    if rng.below(100) < 30 {
        ops.push(Op::Wait);
    }
    ops.into_iter()
        .map(|op| Planned {
            op,
            proc: rng.below(procs as u64) as usize,
            delay: rng.below(40) as u32,
        })
        .collect()
}

/// What this process does with time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Moves the clock in steps (paced by this process's immediate operations) and sweeps
    /// after each.
    Driver,
    /// Sweeps whenever it sees the clock move.
    Sweeper,
}

/// Shared progress of one process's decision storm.
struct Progress {
    immediate_total: usize,
    immediate_done: AtomicUsize,
    /// Time has reached its last step and this process swept after it: pollers stop waiting.
    quiet: AtomicBool,
    swept: AtomicUsize,
}

/// Polls the stored ticket until `cond` holds on its state or the storm is quiet.
async fn poll_state(
    node: &Node,
    id: TicketId,
    progress: &Progress,
    cond: impl Fn(StateName) -> bool,
) -> StateName {
    let begun = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let state = node.store.ticket(id).await.unwrap().unwrap().state().name();
        if cond(state) || progress.quiet.load(Ordering::SeqCst) {
            return state;
        }
        assert!(
            begun.elapsed() < HANG_GUARD,
            "ticket {id} stuck in {state:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(32));
    }
}

/// Waits until the clock moves (or the storm is quiet).
async fn poll_time(time: &Time, progress: &Progress) {
    let (begun, then) = (Instant::now(), time.now());
    while time.now() == then && !progress.quiet.load(Ordering::SeqCst) {
        assert!(begun.elapsed() < HANG_GUARD, "time stood still");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs one planned operation; returns the answers it got.
async fn run_op(
    node: Arc<Node>,
    id: TicketId,
    planned: Planned,
    proc: usize,
    progress: Arc<Progress>,
    time: Time,
) -> Vec<OpRecord> {
    for _ in 0..planned.delay {
        tokio::task::yield_now().await;
    }
    let rec = |op: &str, who: &str, verdict: &str, result: String| OpRecord {
        proc,
        ticket: id,
        op: op.into(),
        who: who.into(),
        verdict: verdict.into(),
        result,
    };
    let h = &node.handoff;
    let mut out = Vec::new();
    match planned.op {
        Op::Vote { who, verdict } => {
            let v = match verdict {
                "approve" => Verdict::Approve,
                "reject" => Verdict::Reject {
                    feedback: "storm says no".into(),
                },
                _ => Verdict::RequestChanges {
                    feedback: "storm wants changes".into(),
                },
            };
            let r = h.decide(id, node.cred(who), v, None).await;
            out.push(rec("vote", who, verdict, decide_result(r)));
        }
        Op::CancelAgent => {
            let r = node.agent.cancel(id, "storm cancels").await;
            out.push(rec("cancel_agent", AGENT, "", execute_result(&r)));
        }
        Op::CancelOperator => {
            let r = h
                .cancel_as_operator(id, node.cred(OPERATOR), "storm cancels")
                .await;
            out.push(rec("cancel_operator", OPERATOR, "", decide_result(r)));
        }
        Op::Revoke => {
            poll_state(&node, id, &progress, |s| s != StateName::Pending).await;
            let r = h.revoke(id, node.cred(OPERATOR), "storm revokes").await;
            out.push(rec("revoke", OPERATOR, "", decide_result(r)));
        }
        Op::Resolve => {
            poll_state(&node, id, &progress, |s| {
                !matches!(
                    s,
                    StateName::Pending | StateName::Approved | StateName::Executing
                )
            })
            .await;
            let outcome = ExecutionOutcome::Failed {
                error: "resolved by the storm".into(),
            };
            let r = h.resolve(id, node.cred(OPERATOR), outcome).await;
            out.push(rec("resolve", OPERATOR, "", decide_result(r)));
        }
        Op::Wait => {
            let pending = PendingTicket {
                id,
                deadline: at_step(STEPS),
            };
            let result = match node
                .agent
                .wait(&pending, Duration::from_secs(365 * 24 * 3600))
                .await
            {
                Ok(d) => format!("decision:{}", decision_name(&d)),
                Err(e) => format!("error:{e:?}"),
            };
            out.push(rec("wait", AGENT, "", result));
        }
        Op::Begin {
            renew,
            succeed,
            stall,
        } => {
            poll_state(&node, id, &progress, |s| s != StateName::Pending).await;
            let Some(grant) = h.grant(id).await.unwrap() else {
                out.push(rec("no_grant", AGENT, "", "ok".into()));
                return out;
            };
            if stall == Stall::BeforeBegin {
                poll_time(&time, &progress).await;
            }
            tokio::task::yield_now().await;
            let begun = node.agent.begin(grant, BTreeMap::new()).await;
            out.push(rec("begin", AGENT, "", execute_result(&begun)));
            let Ok(mut permit) = begun else {
                return out;
            };
            for _ in 0..planned.delay {
                tokio::task::yield_now().await;
            }
            if renew {
                let r = node.agent.renew(&mut permit).await;
                out.push(rec("renew", AGENT, "", execute_result(&r)));
            }
            if stall == Stall::BeforeFinish {
                poll_state(&node, id, &progress, |s| s != StateName::Executing).await;
            }
            let outcome = if succeed {
                ExecutionOutcome::Succeeded {
                    output: Value::Null,
                }
            } else {
                ExecutionOutcome::Failed {
                    error: "the storm failed it".into(),
                }
            };
            let r = node.agent.finish(permit, outcome).await;
            out.push(rec("finish", AGENT, "", execute_result(&r)));
        }
    }
    out
}

fn decision_name(d: &Decision) -> String {
    match d {
        Decision::Approved(_) => "approved".into(),
        Decision::Rejected { .. } => "rejected".into(),
        Decision::ChangesRequested { .. } => "changes_requested".into(),
        Decision::Denied { .. } => "denied".into(),
        Decision::Expired => "expired".into(),
        Decision::Cancelled { .. } => "cancelled".into(),
        Decision::StillPending(_) => "still_pending".into(),
        Decision::Closed(state) => format!("closed:{}", state.as_str()),
    }
}

/// Runs this process's share of the decision storm on `tickets` (key → ticket) and returns
/// the answers, what its sweeps moved and the freezes its clock task made.
async fn decision_storm(
    node: &Arc<Node>,
    tickets: &BTreeMap<usize, TicketId>,
    cfg: &Cfg,
    proc: usize,
    time: &Time,
    role: Role,
) -> (Vec<OpRecord>, usize, Vec<FreezeRecord>) {
    let mut mine = Vec::new();
    for (&k, &id) in tickets {
        for planned in plan_ticket(cfg.seed, k, cfg.procs) {
            if planned.proc == proc {
                mine.push((id, planned));
            }
        }
    }
    let progress = Arc::new(Progress {
        immediate_total: mine.iter().filter(|(_, p)| p.op.immediate()).count(),
        immediate_done: AtomicUsize::new(0),
        quiet: AtomicBool::new(false),
        swept: AtomicUsize::new(0),
    });
    let barrier = Arc::new(tokio::sync::Barrier::new(mine.len() + 1));
    let handles: Vec<_> = mine
        .into_iter()
        .map(|(id, planned)| {
            let (node, progress, barrier, time) = (
                Arc::clone(node),
                Arc::clone(&progress),
                Arc::clone(&barrier),
                time.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let immediate = planned.op.immediate();
                let out = run_op(node, id, planned, proc, Arc::clone(&progress), time).await;
                if immediate {
                    progress.immediate_done.fetch_add(1, Ordering::SeqCst);
                }
                out
            })
        })
        .collect();
    let timekeeper = {
        let (node, progress, time) = (Arc::clone(node), Arc::clone(&progress), time.clone());
        tokio::spawn(async move { keep_time(&node, &progress, &time, role).await })
    };
    let operator = (role == Role::Driver).then(|| {
        let (node, progress) = (Arc::clone(node), Arc::clone(&progress));
        tokio::spawn(async move { work_the_kill_switch(&node, proc, &progress).await })
    });
    barrier.wait().await;
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.unwrap());
    }
    timekeeper.await.unwrap();
    let freezes = match operator {
        Some(operator) => operator.await.unwrap(),
        None => Vec::new(),
    };
    (out, progress.swept.load(Ordering::SeqCst), freezes)
}

/// The clock task (driver) or the sweeper of a process.
async fn keep_time(node: &Node, progress: &Progress, time: &Time, role: Role) {
    let sweep = || async {
        let moved = node.handoff.expire_due().await.unwrap();
        progress.swept.fetch_add(moved, Ordering::SeqCst);
    };
    let begun = Instant::now();
    match role {
        Role::Driver => {
            for step in 1..=STEPS {
                // Spread the steps over this process's immediate operations: the last step
                // comes once all of them are done.
                let due = progress.immediate_total * step as usize / STEPS as usize;
                while progress.immediate_done.load(Ordering::SeqCst) < due {
                    assert!(begun.elapsed() < HANG_GUARD, "the storm stalled");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                time.set(at_step(step));
                sweep().await;
            }
        }
        Role::Sweeper => {
            let mut seen = time.now();
            loop {
                let now = time.now();
                if now != seen {
                    seen = now;
                    sweep().await;
                }
                if now >= at_step(STEPS)
                    && progress.immediate_done.load(Ordering::SeqCst) >= progress.immediate_total
                {
                    break;
                }
                assert!(begun.elapsed() < HANG_GUARD, "time never reached its end");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sweep().await;
        }
    }
    progress.quiet.store(true, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// Everything the storms answered.
#[derive(Debug, Clone, Default)]
struct Evidence {
    proposals: Vec<ProposalRecord>,
    ops: Vec<OpRecord>,
    /// The operator's freezes and lifts.
    freezes: Vec<FreezeRecord>,
    /// Tickets moved by `expire_due`, over all processes.
    swept: usize,
}

/// What the model found.
#[derive(Debug, Default)]
struct Report {
    violations: Vec<String>,
    /// Answers by operation and result.
    answers: BTreeMap<String, usize>,
    /// Final states.
    states: BTreeMap<String, usize>,
    /// Audit events by kind.
    events: BTreeMap<String, usize>,
    chain: u64,
    tickets: usize,
    decisions: usize,
}

impl Report {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn assert_clean(&self) {
        if self.violations.is_empty() {
            return;
        }
        let shown: Vec<&String> = self.violations.iter().take(30).collect();
        panic!(
            "{} violation(s) of the model; the first ones:\n{}",
            self.violations.len(),
            shown
                .iter()
                .map(|v| format!("  - {v}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn print(&self, title: &str, elapsed: Duration) {
        println!("== {title}: {elapsed:.2?}");
        println!(
            "   tickets {}, audit events {}, decision rows {}, violations {}",
            self.tickets,
            self.chain,
            self.decisions,
            self.violations.len()
        );
        println!("   answers: {:?}", self.answers);
        println!("   final states: {:?}", self.states);
        println!("   audit events: {:?}", self.events);
    }
}

fn actor_key(actor: &Actor) -> String {
    match actor {
        Actor::Agent(a) => format!("agent:{a}"),
        Actor::Reviewer(p) => format!("reviewer:{p}"),
        Actor::Operator(p) => format!("operator:{p}"),
        Actor::Policy => "policy".into(),
        Actor::System => "system".into(),
        Actor::Unauthenticated => "unauthenticated".into(),
    }
}

fn agent_key() -> String {
    format!("agent:{AGENT}")
}

/// A number from an audit record's data.
fn num(data: &Value, field: &str) -> Option<i64> {
    data.get(field).and_then(Value::as_i64)
}

fn text<'a>(data: &'a Value, field: &str) -> &'a str {
    data.get(field).and_then(Value::as_str).unwrap_or("")
}

/// What the next audit event of the ticket must be.
#[derive(Debug)]
enum Expect {
    /// `approved` by these reviewers, valid until then.
    Approved {
        by: String,
        reviewers: BTreeSet<String>,
        valid_until: i64,
    },
    /// `rejected` by this reviewer's veto.
    Rejected { by: String, how: &'static str },
    /// A `refused` record of this event, with one of these codes (after a forced expiry).
    Refused {
        event: String,
        codes: [&'static str; 1],
    },
}

/// The stretches of the chain (by seq, `[from, to)`) during which a freeze was in force: from a
/// `frozen` event while none was, to the `unfrozen` that lifts the last one.
#[derive(Debug, Clone, Default)]
struct FrozenSpans {
    spans: Vec<(u64, u64)>,
}

impl FrozenSpans {
    /// From the chain's `frozen` / `unfrozen` events, in seq order, with their scopes.
    fn of(events: &[(u64, bool, String)]) -> Self {
        let mut active = BTreeSet::new();
        let mut spans = Vec::new();
        let mut start = 0;
        for (seq, on, scope) in events {
            let was = !active.is_empty();
            if *on {
                active.insert(scope.clone());
            } else {
                active.remove(scope);
            }
            match (was, active.is_empty()) {
                (false, false) => start = *seq,
                (true, true) => spans.push((start, *seq)),
                _ => {}
            }
        }
        if !active.is_empty() {
            spans.push((start, u64::MAX));
        }
        Self { spans }
    }

    /// Whether a freeze was in force when the event at `seq` committed.
    fn covers(&self, seq: u64) -> bool {
        self.spans.iter().any(|(from, to)| *from < seq && seq < *to)
    }

    /// Whether a freeze had been set before the event at `seq` (a refusal is recorded after
    /// the refused write, possibly after the lift).
    fn set_before(&self, seq: u64) -> bool {
        self.spans.first().is_some_and(|(from, _)| *from < seq)
    }
}

/// One ticket's audit events replayed through a reference of the lifecycle.
struct Replay {
    id: TicketId,
    /// The seq of the event being replayed.
    seq: u64,
    frozen: FrozenSpans,
    needed: usize,
    veto: bool,
    ttl: i64,
    deadline: Option<i64>,
    state: StateName,
    seen: BTreeSet<StateName>,
    /// Each reviewer's vote on record: kind and time.
    votes: BTreeMap<String, (String, i64)>,
    valid_until: i64,
    lease: Value,
    lease_expires: i64,
    /// Writes that changed the ticket (its version).
    writes: u64,
    /// `voted` events by (reviewer, vote).
    voted: BTreeMap<(String, String), usize>,
    /// Transitions by the operation that causes them.
    transitions: BTreeMap<&'static str, usize>,
    /// Expiries and lost leases written by `expire` (sweeps and waits).
    swept: usize,
    /// `refused` records by (actor, event, code).
    refused: BTreeMap<(String, String, String), usize>,
}

impl Replay {
    fn run(
        stored: &Ticket,
        events: &[AuditRecord],
        seqs: &[u64],
        frozen: &FrozenSpans,
        report: &mut Report,
    ) -> Replay {
        let id = stored.id();
        let (needed, veto, ttl) = match stored.plan() {
            Some(plan) => (
                plan.requirements.iter().map(|r| r.approvals as usize).sum(),
                plan.veto,
                plan.approval_ttl.as_millis() as i64,
            ),
            None => (0, false, 0),
        };
        let mut r = Replay {
            id,
            seq: 0,
            frozen: frozen.clone(),
            needed,
            veto,
            ttl,
            deadline: stored.deadline().map(ms),
            state: StateName::Pending,
            seen: BTreeSet::new(),
            votes: BTreeMap::new(),
            valid_until: 0,
            lease: Value::Null,
            lease_expires: 0,
            writes: 1,
            voted: BTreeMap::new(),
            transitions: BTreeMap::new(),
            swept: 0,
            refused: BTreeMap::new(),
        };
        let mut bad = |what: String| report.violation(format!("ticket {id}: {what}"));
        let Some(first) = events.first() else {
            bad("no audit events".into());
            return r;
        };
        if first.kind != "proposed" || actor_key(&first.actor) != agent_key() {
            bad(format!(
                "first event is {} by {:?}, not proposed by the agent",
                first.kind, first.actor
            ));
        }
        if num(&first.data, "deadline") != r.deadline {
            bad(format!(
                "proposed with deadline {:?}, stored {:?}",
                first.data.get("deadline"),
                r.deadline
            ));
        }
        let mut rest = &events[1..];
        match &stored.ruling().outcome {
            Outcome::Review(_) => {}
            Outcome::Allow { .. } => match rest.first() {
                Some(e) if e.kind == "approved" && e.actor == Actor::Policy => {
                    r.state = StateName::Approved;
                    r.valid_until = num(&e.data, "valid_until").unwrap_or(0);
                    rest = &rest[1..];
                }
                other => bad(format!("an allowed proposal is followed by {other:?}")),
            },
            Outcome::Deny { .. } => match rest.first() {
                Some(e) if e.kind == "rejected" && e.actor == Actor::Policy => {
                    r.state = StateName::Rejected;
                    rest = &rest[1..];
                }
                other => bad(format!("a denied proposal is followed by {other:?}")),
            },
        }
        r.seen.insert(r.state);
        let mut expect: Option<Expect> = None;
        let offset = events.len() - rest.len();
        for (i, e) in rest.iter().enumerate() {
            r.seq = seqs.get(offset + i).copied().unwrap_or(0);
            if let Some(x) = expect.take() {
                r.expected(x, e, &mut bad);
            } else {
                expect = r.event(e, &mut bad);
            }
            r.seen.insert(r.state);
        }
        if let Some(x) = expect {
            bad(format!("the chain ends where {x:?} was due"));
        }
        r
    }

    /// Approvers counting at `at`: distinct, eligible, not the principal, not lapsed.
    fn counting(&self, at: i64) -> BTreeMap<String, i64> {
        self.votes
            .iter()
            .filter(|(p, (kind, t))| {
                kind == "approve"
                    && t + self.ttl > at
                    && p.as_str() != PRINCIPAL
                    && DBAS.contains(&p.as_str())
            })
            .map(|(p, (_, t))| (p.clone(), *t))
            .collect()
    }

    fn transition(&mut self, name: &'static str, to: StateName) {
        *self.transitions.entry(name).or_default() += 1;
        self.state = to;
        self.writes += 1;
    }

    /// An event that was announced by the one before it (same write).
    fn expected(&mut self, x: Expect, e: &AuditRecord, bad: &mut impl FnMut(String)) {
        let actor = actor_key(&e.actor);
        match x {
            Expect::Approved {
                by,
                reviewers,
                valid_until,
            } => {
                let named: BTreeSet<String> = e
                    .data
                    .pointer("/reviewers/reviewers")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if e.kind != "approved" || actor != by {
                    bad(format!(
                        "quorum met by {reviewers:?}, but the next event is {} by {actor}",
                        e.kind
                    ));
                } else if named != reviewers || num(&e.data, "valid_until") != Some(valid_until) {
                    bad(format!(
                        "approved by {named:?} until {:?}; the counted approvers are \
                         {reviewers:?} until {valid_until}",
                        num(&e.data, "valid_until")
                    ));
                }
                self.state = StateName::Approved;
                self.valid_until = valid_until;
            }
            Expect::Rejected { by, how } => {
                if e.kind != "rejected" || actor != by || text(&e.data, "by") != how {
                    bad(format!(
                        "a veto by {by} must reject ({how}); the next event is {} by {actor} \
                         ({})",
                        e.kind, e.data
                    ));
                }
                self.state = StateName::Rejected;
            }
            Expect::Refused { event, codes } => {
                if e.kind != "refused"
                    || text(&e.data, "event") != event
                    || !codes.contains(&text(&e.data, "refusal"))
                {
                    bad(format!(
                        "a forced expiry noticed by {event} must be followed by its refusal \
                         {codes:?}, got {} {}",
                        e.kind, e.data
                    ));
                }
                self.refusal(e);
            }
        }
    }

    fn refusal(&mut self, e: &AuditRecord) {
        let key = (
            actor_key(&e.actor),
            text(&e.data, "event").to_owned(),
            text(&e.data, "refusal").to_owned(),
        );
        *self.refused.entry(key).or_default() += 1;
    }

    /// An event that starts a write. Returns what must come next in the same write.
    fn event(&mut self, e: &AuditRecord, bad: &mut impl FnMut(String)) -> Option<Expect> {
        let at = ms(e.at);
        let actor = actor_key(&e.actor);
        let from = self.state;
        let mut need = |ok: bool, what: &str| {
            if !ok {
                bad(format!(
                    "{} by {actor} at {at} from {from:?}: {what} ({})",
                    e.kind, e.data
                ));
            }
        };
        match e.kind.as_str() {
            "voted" => {
                let vote = text(&e.data, "vote").to_owned();
                let person = match &e.actor {
                    Actor::Reviewer(p) => p.as_str().to_owned(),
                    _ => String::new(),
                };
                need(from == StateName::Pending, "a vote on a ticket not pending");
                need(
                    self.deadline.is_some_and(|d| at < d),
                    "a vote at or after the deadline",
                );
                need(
                    DBAS.contains(&person.as_str()),
                    "a vote by someone not eligible",
                );
                match self.votes.get(&person) {
                    None => {}
                    Some((prior, t)) if prior == "approve" => need(
                        vote != "approve" || t + self.ttl <= at,
                        "an approval counted twice",
                    ),
                    Some((prior, _)) => need(false, &format!("a vote after a {prior}")),
                }
                if vote == "approve" {
                    need(person != PRINCIPAL, "a self-approval counted");
                    need(
                        !self.frozen.covers(self.seq),
                        "an approval counted while frozen",
                    );
                }
                *self
                    .voted
                    .entry((person.clone(), vote.clone()))
                    .or_default() += 1;
                self.votes.insert(person.clone(), (vote.clone(), at));
                self.writes += 1;
                if vote == "approve" {
                    let counting = self.counting(at);
                    if counting.len() >= self.needed.max(1) {
                        let valid_until = counting.values().min().copied().unwrap_or(at) + self.ttl;
                        return Some(Expect::Approved {
                            by: actor.clone(),
                            reviewers: counting.into_keys().collect(),
                            valid_until,
                        });
                    }
                } else if self.veto {
                    return Some(Expect::Rejected {
                        by: actor.clone(),
                        how: if vote == "reject" {
                            "reviewer"
                        } else {
                            "changes_requested"
                        },
                    });
                }
                None
            }
            "expired" => {
                let stage = text(&e.data, "stage");
                let limit = num(&e.data, "deadline");
                match from {
                    StateName::Pending => need(
                        stage == "review" && limit == self.deadline && Some(at) >= limit,
                        "a review expiry that is not due",
                    ),
                    StateName::Approved => need(
                        stage == "grant"
                            && limit == Some(self.valid_until)
                            && at >= self.valid_until,
                        "a grant expiry that is not due",
                    ),
                    _ => need(false, "an expiry of a ticket neither pending nor approved"),
                }
                need(e.actor == Actor::System, "an expiry not by the system");
                need(
                    text(&e.data, "from") == from.as_str(),
                    "an expiry from another state",
                );
                self.state = StateName::Expired;
                self.writes += 1;
                let noticed_by = text(&e.data, "noticed_by").to_owned();
                if noticed_by == "expire" {
                    self.swept += 1;
                    return None;
                }
                Some(Expect::Refused {
                    event: noticed_by,
                    codes: [if from == StateName::Pending {
                        "deadline_passed"
                    } else {
                        "grant_expired"
                    }],
                })
            }
            "cancelled" => {
                need(
                    (from == StateName::Pending && self.deadline.is_some_and(|d| at < d))
                        || (from == StateName::Approved && at < self.valid_until),
                    "a cancel of a ticket not pending or approved (in time)",
                );
                let name = match &e.actor {
                    Actor::Agent(_) if actor == agent_key() => "cancel_agent",
                    Actor::Operator(_) => "cancel_operator",
                    _ => {
                        need(false, "a cancel by someone else");
                        "cancel_other"
                    }
                };
                self.transition(name, StateName::Cancelled);
                None
            }
            "revoked" => {
                need(
                    from == StateName::Approved && at < self.valid_until,
                    "a revoke of a ticket not approved (in time)",
                );
                need(
                    matches!(e.actor, Actor::Operator(_)),
                    "a revoke not by an operator",
                );
                self.transition("revoke", StateName::Cancelled);
                None
            }
            "execution_started" => {
                need(
                    from == StateName::Approved && at < self.valid_until,
                    "a begin on a ticket not approved, or after its validity",
                );
                need(actor == agent_key(), "a begin not by the proposing agent");
                need(
                    !self.frozen.covers(self.seq),
                    "a permit issued while frozen",
                );
                self.lease = e.data.get("lease").cloned().unwrap_or(Value::Null);
                self.lease_expires = num(&e.data, "lease_expires").unwrap_or(0);
                need(
                    self.lease_expires > at,
                    "a lease that ends before it starts",
                );
                self.transition("begin", StateName::Executing);
                None
            }
            "lease_renewed" => {
                need(
                    from == StateName::Executing
                        && at < self.lease_expires
                        && e.data.get("lease") == Some(&self.lease)
                        && num(&e.data, "previous") == Some(self.lease_expires),
                    "a renewal of a lease not held or lapsed",
                );
                self.lease_expires = num(&e.data, "lease_expires").unwrap_or(0);
                self.transition("renew", StateName::Executing);
                None
            }
            "lease_lost" => {
                need(
                    from == StateName::Executing
                        && at >= self.lease_expires
                        && e.actor == Actor::System,
                    "a lease lost before it lapsed",
                );
                self.swept += 1;
                self.state = StateName::Unknown;
                self.writes += 1;
                None
            }
            "execution_finished" => {
                let late = from == StateName::Unknown || at >= self.lease_expires;
                need(
                    matches!(from, StateName::Executing | StateName::Unknown)
                        && e.data.get("lease") == Some(&self.lease)
                        && text(&e.data, "from") == from.as_str()
                        && e.data.get("late") == Some(&Value::Bool(late)),
                    "a finish without a begin, or with the wrong lease",
                );
                need(actor == agent_key(), "a finish not by the proposing agent");
                let to = outcome_state(&e.data);
                self.transition("finish", to);
                None
            }
            "resolved" => {
                need(
                    from == StateName::Unknown,
                    "a resolve of a ticket not unknown",
                );
                need(
                    matches!(e.actor, Actor::Operator(_)),
                    "a resolve not by an operator",
                );
                let to = outcome_state(&e.data);
                self.transition("resolve", to);
                None
            }
            "refused" => {
                let seen_state = StateName::parse(text(&e.data, "state"));
                need(
                    seen_state.is_some_and(|s| self.seen.contains(&s)),
                    "a refusal of a state the ticket never had",
                );
                if let Some(seen_state) = seen_state {
                    if let Err(why) = self.justified(e, seen_state) {
                        need(false, &why);
                    }
                }
                self.refusal(e);
                None
            }
            other => {
                need(false, &format!("an unexpected `{other}` event"));
                None
            }
        }
    }

    /// Whether a refusal is one the state it saw justifies.
    fn justified(&self, e: &AuditRecord, seen: StateName) -> Result<(), String> {
        use StateName::*;
        let event = text(&e.data, "event");
        let code = text(&e.data, "refusal");
        let person = match &e.actor {
            Actor::Reviewer(p) => p.as_str(),
            _ => "",
        };
        let ok = match code {
            "not_pending" => event == "vote" && seen != Pending,
            "not_eligible" => event == "vote" && seen == Pending && !DBAS.contains(&person),
            "self_approval" => event == "vote" && seen == Pending && person == PRINCIPAL,
            "conflicting_vote" => {
                event == "vote"
                    && seen == Pending
                    && self
                        .votes
                        .get(person)
                        .is_some_and(|(kind, _)| kind != "approve")
            }
            "not_applicable" => match event {
                "cancel" => !matches!(seen, Pending | Approved),
                "revoke" | "begin" => seen != Approved,
                "renew" => seen != Executing,
                "finish" => !matches!(seen, Executing | Unknown),
                "resolve" => seen != Unknown,
                _ => false,
            },
            "lease_expired" => event == "renew" && seen == Executing,
            // Approvals and begins, after a freeze was set.
            "frozen" => {
                self.frozen.set_before(self.seq)
                    && match event {
                        "vote" | "edit" => seen == Pending,
                        "begin" => seen == Approved,
                        _ => false,
                    }
            }
            // Legitimate only right after the forced expiry that announces them (`Expect`).
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "refusal `{code}` of `{event}` is not justified by {seen:?}"
            ))
        }
    }
}

fn outcome_state(data: &Value) -> StateName {
    if text(data, "outcome") == "succeeded" {
        StateName::Succeeded
    } else {
        StateName::Failed
    }
}

/// Reads the store back and checks it against everything the storms answered.
///
/// `initial`: no time passed and no decision was made, so every ticket must be exactly as
/// proposed (the duplicate-proposal storm on its own).
async fn check(node: &Node, cfg: &Cfg, evidence: &Evidence, initial: bool) -> Report {
    let mut report = Report::default();
    let store = node.store.as_ref();
    let agent = Requester::new(agent_id(AGENT), Some(person(PRINCIPAL)));

    // One ticket per key, and the proposals' answers.
    let mut by_key: BTreeMap<usize, Ticket> = BTreeMap::new();
    for k in 0..cfg.keys {
        match store
            .ticket_by_key(&agent, &key(&key_text(k)))
            .await
            .unwrap()
        {
            Some(t) => {
                by_key.insert(k, t);
            }
            None => report.violation(format!("key {k}: no ticket")),
        }
    }
    let listed = all_tickets(store, TicketFilter::default()).await;
    report.tickets = listed.len();
    let listed_ids: BTreeSet<TicketId> = listed.iter().map(Ticket::id).collect();
    let keyed_ids: BTreeSet<TicketId> = by_key.values().map(Ticket::id).collect();
    if listed.len() != cfg.keys || listed_ids != keyed_ids {
        report.violation(format!(
            "{} tickets in the store for {} keys ({} distinct by key)",
            listed.len(),
            cfg.keys,
            keyed_ids.len()
        ));
    }

    // Each ticket: its audit replayed, its answers matched.
    let mut ops_by_ticket: BTreeMap<TicketId, Vec<&OpRecord>> = BTreeMap::new();
    for op in &evidence.ops {
        *report
            .answers
            .entry(format!("{} {}", op.op, op.result))
            .or_default() += 1;
        ops_by_ticket.entry(op.ticket).or_default().push(op);
    }
    // The events of no ticket: the operator's freezes and lifts, exactly those answered.
    let frozen = check_freezes(store, evidence, &mut report).await;
    let mut events_total = frozen.1;
    let frozen = frozen.0;
    let mut swept = 0usize;
    let mut waits_expired = 0usize;
    for (k, stored) in &by_key {
        let id = stored.id();
        let stored_events = store.ticket_audit(id).await.unwrap();
        let seqs: Vec<u64> = stored_events.iter().map(|e| e.seq()).collect();
        let events: Vec<AuditRecord> = stored_events.iter().map(|e| e.record().clone()).collect();
        events_total += events.len() as u64;
        for e in &events {
            *report.events.entry(e.kind.clone()).or_default() += 1;
        }
        *report
            .states
            .entry(stored.state().name().as_str().to_owned())
            .or_default() += 1;
        let kind = KeyPlan::of(*k).kind();
        if stored.request().kind().as_str() != kind {
            report.violation(format!("key {k}: ticket {id} is of kind {kind}"));
        }
        let replay = Replay::run(stored, &events, &seqs, &frozen, &mut report);
        swept += replay.swept;
        if initial {
            let expected = if matches!(stored.ruling().outcome, Outcome::Review(_)) {
                1
            } else {
                2
            };
            if events.len() != expected || stored.version() != 1 {
                report.violation(format!(
                    "key {k}: ticket {id} has {} audit events at version {}, not exactly its \
                     proposal",
                    events.len(),
                    stored.version()
                ));
            }
        }
        check_stored(stored, &replay, &mut report);
        let ops = ops_by_ticket.remove(&id).unwrap_or_default();
        waits_expired += ops
            .iter()
            .filter(|o| o.op == "wait" && o.result == "decision:expired")
            .count();
        let decisions = store.decisions(id).await.unwrap();
        report.decisions += decisions.len();
        match_answers(&replay, &ops, &decisions, &mut report);
        if !store.ticket_outbox(id).await.unwrap().is_empty() {
            report.violation(format!("ticket {id}: outbox rows without any channel"));
        }
    }
    for id in ops_by_ticket.keys() {
        report.violation(format!("answers for ticket {id}, which no key holds"));
    }
    check_proposals(evidence, &by_key, &mut report);

    // Expiries: each one written by a sweep or a wait, and every sweep's count written.
    if swept < evidence.swept || swept > evidence.swept + waits_expired {
        report.violation(format!(
            "{swept} expiries written by `expire`; the sweeps moved {} and {waits_expired} \
             waits saw an expiry",
            evidence.swept
        ));
    }

    // Nothing else in the chain, and the chain verifies.
    match node.handoff.verify_audit().await {
        Ok(audit) => {
            report.chain = audit.events;
            if audit.events != events_total {
                report.violation(format!(
                    "the chain holds {} events, the tickets {events_total}",
                    audit.events
                ));
            }
        }
        Err(e) => report.violation(format!("the audit chain does not verify: {e}")),
    }
    let health = node.handoff.health().await.unwrap();
    if health.store.outbox_backlog + health.store.outbox_dead != 0 {
        report.violation(format!("outbox rows: {:?}", health.store));
    }
    if !initial && health.store.pending != 0 {
        report.violation(format!(
            "{} tickets still pending after every deadline passed",
            health.store.pending
        ));
    }
    report
}

/// The events that name no ticket must be the operator's freezes and lifts, one per answered
/// `ok`; returns the stretches of the chain they froze and how many there are.
async fn check_freezes(
    store: &dyn Store,
    evidence: &Evidence,
    report: &mut Report,
) -> (FrozenSpans, u64) {
    let mut found = Vec::new();
    let mut from = 1;
    loop {
        let page = store.audit_events(from, 4096).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for raw in page {
            let event = agent_handoff::audit::AuditEvent::decode(raw).unwrap();
            let r = event.record();
            if r.ticket.is_some() {
                continue;
            }
            let on = match r.kind.as_str() {
                "frozen" => true,
                "unfrozen" => false,
                other => {
                    report.violation(format!("an unexpected `{other}` event of no ticket"));
                    continue;
                }
            };
            if actor_key(&r.actor) != format!("operator:{OPERATOR}") {
                report.violation(format!("a `{}` event by {:?}", r.kind, r.actor));
                continue;
            }
            let scope = match r.data.get("scope").and_then(|s| s.get("scope")) {
                Some(Value::String(s)) if s == "all" => "all",
                _ => "agent",
            };
            found.push((event.seq(), on, scope.to_owned()));
        }
    }
    let mut answered: BTreeMap<(String, String), usize> = BTreeMap::new();
    for f in &evidence.freezes {
        *report
            .answers
            .entry(format!("{} {} {}", f.op, f.scope, f.result))
            .or_default() += 1;
        if f.result == "ok" {
            *answered.entry((f.op.clone(), f.scope.clone())).or_default() += 1;
        } else {
            report.violation(format!("a {} of {} failed: {}", f.op, f.scope, f.result));
        }
    }
    let mut audited: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, on, scope) in &found {
        let op = if *on { "freeze" } else { "unfreeze" };
        *audited.entry((op.to_owned(), scope.clone())).or_default() += 1;
    }
    if answered != audited {
        report.violation(format!(
            "freezes answered {answered:?}, audited {audited:?}"
        ));
    }
    (FrozenSpans::of(&found), found.len() as u64)
}

/// The stored ticket is where the replay ended.
fn check_stored(stored: &Ticket, replay: &Replay, report: &mut Report) {
    let id = stored.id();
    if stored.state().name() != replay.state {
        report.violation(format!(
            "ticket {id}: stored {:?}, the audit trail ends {:?}",
            stored.state().name(),
            replay.state
        ));
    }
    if stored.version() != replay.writes {
        report.violation(format!(
            "ticket {id}: version {} after {} audited writes",
            stored.version(),
            replay.writes
        ));
    }
    let votes: BTreeMap<String, String> = stored
        .votes()
        .iter()
        .map(|v| (v.person.as_str().to_owned(), v.kind.as_str().to_owned()))
        .collect();
    let replayed: BTreeMap<String, String> = replay
        .votes
        .iter()
        .map(|(p, (kind, _))| (p.clone(), kind.clone()))
        .collect();
    if votes != replayed {
        report.violation(format!(
            "ticket {id}: stored votes {votes:?}, audited {replayed:?}"
        ));
    }
    match stored.state() {
        TicketState::Approved(a) if ms(a.valid_until) != replay.valid_until => {
            report.violation(format!(
                "ticket {id}: approved until {}, audited {}",
                ms(a.valid_until),
                replay.valid_until
            ));
        }
        TicketState::Executing { lease_expires, .. }
            if ms(*lease_expires) != replay.lease_expires =>
        {
            report.violation(format!(
                "ticket {id}: lease ends {lease_expires}, audited otherwise"
            ));
        }
        _ => {}
    }
}

/// How an operation shows in the audit trail and the decisions table.
struct Attribution {
    /// The actor of its audit records (as [`actor_key`] writes it).
    actor: String,
    /// The machine event it applies.
    event: String,
    /// Its decision row (person, verdict), for reviewer and operator decisions.
    row: Option<(String, String)>,
}

fn attribution(op: &OpRecord) -> Option<Attribution> {
    let operator = format!("operator:{OPERATOR}");
    let (actor, event, row) = match op.op.as_str() {
        "vote" => (
            format!("reviewer:{}", op.who),
            "vote".to_owned(),
            Some((op.who.clone(), op.verdict.clone())),
        ),
        "cancel_agent" => (agent_key(), "cancel".into(), None),
        "cancel_operator" => (
            operator,
            "cancel".into(),
            Some((OPERATOR.into(), "cancel".into())),
        ),
        "revoke" | "resolve" => (
            operator,
            op.op.clone(),
            Some((OPERATOR.into(), op.op.clone())),
        ),
        "begin" | "renew" | "finish" => (agent_key(), op.op.clone(), None),
        _ => return None,
    };
    Some(Attribution { actor, event, row })
}

/// Every answer of the ticket's operations against its audit trail and decisions table.
fn match_answers(
    replay: &Replay,
    ops: &[&OpRecord],
    decisions: &[agent_handoff::backend::DecisionRow],
    report: &mut Report,
) {
    let id = replay.id;
    let mut ok_votes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut ok_ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let mut refused_rows: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for op in ops {
        if op.result.starts_with("error:") {
            report.violation(format!(
                "ticket {id}: {} by {} failed: {}",
                op.op, op.who, op.result
            ));
            continue;
        }
        if op.op == "wait" {
            let state = match op.result.as_str() {
                "decision:approved" => Some(StateName::Approved),
                "decision:rejected" | "decision:changes_requested" | "decision:denied" => {
                    Some(StateName::Rejected)
                }
                "decision:expired" => Some(StateName::Expired),
                "decision:cancelled" => Some(StateName::Cancelled),
                other => other
                    .strip_prefix("decision:closed:")
                    .and_then(StateName::parse),
            };
            let fits = state.is_some_and(|s| replay.seen.contains(&s));
            if !fits {
                report.violation(format!(
                    "ticket {id}: a wait answered {}, a state the ticket never had ({:?})",
                    op.result, replay.seen
                ));
            }
            continue;
        }
        if op.op == "no_grant" {
            continue;
        }
        let Some(attributed) = attribution(op) else {
            report.violation(format!("ticket {id}: unknown operation {}", op.op));
            continue;
        };
        if op.result == "ok" {
            if op.op == "vote" {
                *ok_votes
                    .entry((op.who.clone(), op.verdict.clone()))
                    .or_default() += 1;
            } else {
                *ok_ops.entry(op.op.clone()).or_default() += 1;
            }
        } else if let Some(code) = op.result.strip_prefix("refused:") {
            *refused
                .entry((attributed.actor, attributed.event, code.to_owned()))
                .or_default() += 1;
            if let Some((person, verdict)) = attributed.row {
                *refused_rows
                    .entry((person, verdict, code.to_owned()))
                    .or_default() += 1;
            }
        } else {
            report.violation(format!("ticket {id}: unreadable answer {}", op.result));
        }
    }

    // Votes: each counted vote was answered `Ok`; each `Ok` vote was counted (a repeat once).
    let vote_keys: BTreeSet<&(String, String)> =
        ok_votes.keys().chain(replay.voted.keys()).collect();
    for k in vote_keys {
        let answered = ok_votes.get(k).copied().unwrap_or(0);
        let counted = replay.voted.get(k).copied().unwrap_or(0);
        if counted > answered || (answered > 0 && counted == 0) {
            report.violation(format!(
                "ticket {id}: {k:?} answered ok {answered} time(s), counted {counted} time(s)"
            ));
        }
    }
    // Other operations: each `Ok` is exactly one transition.
    for name in [
        "cancel_agent",
        "cancel_operator",
        "revoke",
        "begin",
        "renew",
        "finish",
        "resolve",
    ] {
        let answered = ok_ops.get(name).copied().unwrap_or(0);
        let done = replay.transitions.get(name).copied().unwrap_or(0);
        if answered != done {
            report.violation(format!(
                "ticket {id}: {name} answered ok {answered} time(s), {done} transition(s) audited"
            ));
        }
    }
    if replay.transitions.get("begin").copied().unwrap_or(0) > 1 {
        report.violation(format!("ticket {id}: more than one successful begin"));
    }
    // Refusals: each answered refusal audited once, no other refusal audited.
    if refused != replay.refused {
        report.violation(format!(
            "ticket {id}: refusals answered {refused:?}, audited {:?}",
            replay.refused
        ));
    }
    // The decisions table: accepted rows are the counted votes and the operator transitions;
    // refused rows are the refused decisions.
    let mut accepted_rows: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut rows_refused: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for row in decisions {
        let person = row.person.as_ref().map(|p| p.as_str().to_owned());
        let Some(person) = person else {
            report.violation(format!("ticket {id}: a decision row without a person"));
            continue;
        };
        match &row.refusal {
            None => {
                *accepted_rows
                    .entry((person, row.verdict.clone()))
                    .or_default() += 1
            }
            Some(code) => {
                *rows_refused
                    .entry((person, row.verdict.clone(), code.clone()))
                    .or_default() += 1
            }
        }
    }
    let mut expected_rows = replay.voted.clone();
    for (name, verdict) in [
        ("cancel_operator", "cancel"),
        ("revoke", "revoke"),
        ("resolve", "resolve"),
    ] {
        if let Some(n) = replay.transitions.get(name) {
            expected_rows.insert((OPERATOR.into(), verdict.into()), *n);
        }
    }
    if accepted_rows != expected_rows {
        report.violation(format!(
            "ticket {id}: accepted decision rows {accepted_rows:?}, expected {expected_rows:?}"
        ));
    }
    if rows_refused != refused_rows {
        report.violation(format!(
            "ticket {id}: refused decision rows {rows_refused:?}, answered {refused_rows:?}"
        ));
    }
}

/// Every proposal's answer names its key's ticket and fits the ticket's history.
fn check_proposals(evidence: &Evidence, by_key: &BTreeMap<usize, Ticket>, report: &mut Report) {
    for p in &evidence.proposals {
        *report
            .answers
            .entry(format!(
                "propose{} {}",
                if p.variant { " (other action)" } else { "" },
                p.answer
            ))
            .or_default() += 1;
        let Some(stored) = by_key.get(&p.key) else {
            continue;
        };
        let id = stored.id();
        if p.ticket != Some(id) {
            report.violation(format!(
                "key {}: task {} (process {}) was answered {} with {:?}, the key holds {id}",
                p.key, p.task, p.proc, p.answer, p.ticket
            ));
            continue;
        }
        let same_action = storm_request(p.key, p.variant).digest() == stored.proposed_digest();
        if !same_action {
            if p.answer != "conflict" {
                report.violation(format!(
                    "key {}: another action under the key was answered {}",
                    p.key, p.answer
                ));
            }
            continue;
        }
        let state = match p.answer.as_str() {
            "pending" => Some(StateName::Pending),
            "allowed" => Some(StateName::Approved),
            "denied" => Some(StateName::Rejected),
            other => other.strip_prefix("closed:").and_then(StateName::parse),
        };
        // Every proposal is made before any decision and before time moves: each answer is
        // the one the ruling gives.
        let expected = match stored.ruling().outcome {
            Outcome::Review(_) => StateName::Pending,
            Outcome::Allow { .. } => StateName::Approved,
            Outcome::Deny { .. } => StateName::Rejected,
        };
        let fits = state == Some(expected);
        if !fits {
            report.violation(format!(
                "key {}: the same action was answered {}, its ruling says {expected:?}",
                p.key, p.answer
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The storms in one process
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_proposal_storm_makes_one_ticket_per_key_and_replays_write_nothing() {
    let cfg = Cfg::from_env();
    let dir = tempfile::tempdir().unwrap();
    let time = Time::Manual(ManualClock::new(start()));
    let node = Node::open(&dir.path().join("storm.sqlite3"), &time).await;
    let begun = Instant::now();
    let proposals = proposal_storm(&node, &cfg, 0, 0..cfg.tasks, cfg.tasks).await;
    let elapsed = begun.elapsed();
    assert_eq!(proposals.len(), cfg.tasks * cfg.keys);
    let evidence = Evidence {
        proposals,
        ..Evidence::default()
    };
    let report = check(&node, &cfg, &evidence, true).await;
    report.print(
        &format!(
            "duplicate proposals: {} tasks x {} keys = {} proposals",
            cfg.tasks,
            cfg.keys,
            cfg.tasks * cfg.keys
        ),
        elapsed,
    );
    report.assert_clean();
    node.store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decision_storm_leaves_every_ticket_as_its_successful_operations_explain() {
    let cfg = Cfg {
        keys: Cfg::from_env().tickets,
        procs: 1,
        ..Cfg::from_env()
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let time = Time::Manual(clock);
    let node = Node::open(&dir.path().join("storm.sqlite3"), &time).await;
    // The tickets, proposed by a few racing tasks.
    let proposals = proposal_storm(&node, &cfg, 0, 0..4, 4).await;
    let tickets: BTreeMap<usize, TicketId> = proposals
        .iter()
        .filter_map(|p| Some((p.key, p.ticket?)))
        .collect();
    assert_eq!(tickets.len(), cfg.keys, "every key has its ticket");
    let begun = Instant::now();
    let (ops, swept, freezes) = decision_storm(&node, &tickets, &cfg, 0, &time, Role::Driver).await;
    let elapsed = begun.elapsed();
    let n_ops = ops.len();
    let evidence = Evidence {
        proposals,
        ops,
        freezes,
        swept,
    };
    let report = check(&node, &cfg, &evidence, false).await;
    report.print(
        &format!(
            "decision storm: {} tickets, {n_ops} answers, {swept} swept",
            cfg.keys
        ),
        elapsed,
    );
    report.assert_clean();
    node.store.shutdown().await.unwrap();
}

/// The model is not vacuous: a small scripted run passes it, and each answer or row that does
/// not fit the store (an answer forgotten, invented or changed; a row forged in the store) is
/// reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_reports_answers_and_rows_that_do_not_fit() {
    let cfg = Cfg {
        tasks: 1,
        keys: 8,
        tickets: 8,
        procs: 1,
        seed: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let time = Time::Manual(ManualClock::new(start()));
    let node = Node::open(&dir.path().join("storm.sqlite3"), &time).await;
    let mut evidence = Evidence {
        proposals: proposal_storm(&node, &cfg, 0, 0..1, 1).await,
        ..Evidence::default()
    };
    let ticket = |k: usize| {
        evidence
            .proposals
            .iter()
            .find(|p| p.key == k)
            .unwrap()
            .ticket
            .unwrap()
    };
    let (allowed, two, one) = (ticket(6), ticket(2), ticket(0));
    let progress = Arc::new(Progress {
        immediate_total: 0,
        immediate_done: AtomicUsize::new(0),
        quiet: AtomicBool::new(true),
        swept: AtomicUsize::new(0),
    });
    let script = [
        (
            allowed,
            Op::Begin {
                renew: false,
                succeed: true,
                stall: Stall::No,
            },
        ),
        (two, vote("alice", "approve")),
        (two, vote(PRINCIPAL, "approve")),
        (two, vote("bob", "approve")),
        (two, vote("carol", "reject")),
        (two, Op::CancelAgent),
        (one, vote("bob", "reject")),
        (one, Op::Wait),
    ];
    for (id, op) in script {
        let planned = Planned {
            op,
            proc: 0,
            delay: 0,
        };
        let answers = run_op(
            Arc::clone(&node),
            id,
            planned,
            0,
            Arc::clone(&progress),
            time.clone(),
        )
        .await;
        evidence.ops.extend(answers);
    }
    // The kill switch: an approval refused while frozen, counted once lifted; then every agent
    // frozen to the end.
    let frozen_one = ticket(1);
    let vote_on = |id, who| {
        let (node, progress, time) = (Arc::clone(&node), Arc::clone(&progress), time.clone());
        let planned = Planned {
            op: vote(who, "approve"),
            proc: 0,
            delay: 0,
        };
        async move { run_op(node, id, planned, 0, progress, time).await }
    };
    evidence
        .freezes
        .push(freeze_op(&node, 0, true, "agent").await);
    evidence.ops.extend(vote_on(frozen_one, "alice").await);
    evidence
        .freezes
        .push(freeze_op(&node, 0, false, "agent").await);
    evidence.ops.extend(vote_on(frozen_one, "alice").await);
    evidence
        .freezes
        .push(freeze_op(&node, 0, true, "all").await);
    assert!(
        evidence
            .ops
            .iter()
            .any(|o| o.ticket == frozen_one && o.result == refused("frozen")),
        "the approval while frozen was refused: {:?}",
        evidence.ops
    );
    time.set(at_step(STEPS));
    evidence.swept = node.handoff.expire_due().await.unwrap();
    check(&node, &cfg, &evidence, false).await.assert_clean();

    let find = |e: &Evidence, id: TicketId, op: &str, result: &str| {
        e.ops
            .iter()
            .position(|o| o.ticket == id && o.op == op && o.result == result)
            .unwrap_or_else(|| panic!("the script answered {op} {result} on {id}"))
    };
    type Tamper = Box<dyn Fn(&mut Evidence)>;
    let tampered: Vec<(&str, Tamper)> = vec![
        (
            "an ok begin forgotten",
            Box::new(move |e| {
                e.ops.remove(find(e, allowed, "begin", "ok"));
            }),
        ),
        (
            "a second ok begin",
            Box::new(move |e| {
                let i = find(e, allowed, "begin", "ok");
                e.ops.push(e.ops[i].clone());
            }),
        ),
        (
            "an ok vote forgotten",
            Box::new(move |e| {
                let i = e
                    .ops
                    .iter()
                    .position(|o| o.ticket == two && o.who == "alice" && o.result == "ok")
                    .unwrap();
                e.ops.remove(i);
            }),
        ),
        (
            "a refusal answered with another code",
            Box::new(move |e| {
                let i = find(e, two, "vote", "refused:self_approval");
                e.ops[i].result = refused("not_eligible");
            }),
        ),
        (
            "a refusal answered as ok",
            Box::new(move |e| {
                let i = find(e, two, "vote", "refused:not_pending");
                e.ops[i].result = "ok".into();
            }),
        ),
        (
            "an ok cancel never made",
            Box::new(move |e| {
                let i = find(e, two, "cancel_agent", "ok");
                let mut extra = e.ops[i].clone();
                extra.ticket = one;
                e.ops.push(extra);
            }),
        ),
        (
            "a wait that saw an approval",
            Box::new(move |e| {
                let i = find(e, one, "wait", "decision:rejected");
                e.ops[i].result = "decision:approved".into();
            }),
        ),
        (
            "a proposal answered with another key's ticket",
            Box::new(move |e| {
                let i = e.proposals.iter().position(|p| p.key == 0).unwrap();
                e.proposals[i].ticket = Some(two);
            }),
        ),
        (
            "a proposal answered as allowed",
            Box::new(move |e| {
                let i = e.proposals.iter().position(|p| p.key == 0).unwrap();
                e.proposals[i].answer = "allowed".into();
            }),
        ),
        ("a sweep that moved one more", Box::new(|e| e.swept += 1)),
        (
            "a refusal by a freeze answered as ok",
            Box::new(move |e| {
                let i = find(e, frozen_one, "vote", "refused:frozen");
                e.ops[i].result = "ok".into();
            }),
        ),
        (
            "a freeze nobody answered",
            Box::new(|e| {
                e.freezes.remove(0);
            }),
        ),
    ];
    for (what, tamper) in &tampered {
        let mut e = evidence.clone();
        tamper(&mut e);
        let report = check(&node, &cfg, &e, false).await;
        assert!(!report.violations.is_empty(), "the model missed {what}");
    }

    // Rows forged in the store (one after the other: each must add to what was found).
    let at = time.now();
    let forged = [
        (
            "an accepted decision row nobody answered",
            agent_handoff::backend::Write::new().with_decision(
                agent_handoff::backend::DecisionRow::new(two, Some(person("dave")), "approve", at),
            ),
        ),
        (
            "a second execution_started",
            agent_handoff::backend::Write::new().with_audit_records(vec![AuditRecord::new(
                Some(allowed),
                at,
                "execution_started",
                Actor::Agent(agent_id(AGENT)),
                json!({ "lease_expires": ms(at) + 1000 }),
            )]),
        ),
        (
            "an event about no ticket",
            agent_handoff::backend::Write::new().with_audit_records(vec![AuditRecord::new(
                None,
                at,
                "frozen",
                Actor::System,
                json!({}),
            )]),
        ),
    ];
    let mut found = 0;
    for (what, write) in forged {
        node.store.commit(write).await.unwrap();
        let report = check(&node, &cfg, &evidence, false).await;
        assert!(report.violations.len() > found, "the model missed {what}");
        found = report.violations.len();
    }
    // A permit issued while frozen (every agent is, to the end): written past the engine's
    // guard, as a store ignoring freezes would.
    let forged_begin = agent_handoff::backend::Write::new().with_audit(AuditRecord::new(
        Some(ticket(3)),
        at,
        "execution_started",
        Actor::Agent(agent_id(AGENT)),
        json!({ "lease_expires": ms(at) + 1000 }),
    ));
    node.store.commit(forged_begin).await.unwrap();
    let report = check(&node, &cfg, &evidence, false).await;
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("a permit issued while frozen")),
        "the model missed a permit issued while frozen: {:?}",
        report.violations
    );
    found = report.violations.len();
    evidence
        .freezes
        .push(freeze_op(&node, 0, false, "all").await);
    // A ticket under a key no task proposed.
    let _ = node
        .agent
        .propose(storm_request(cfg.keys, false))
        .await
        .unwrap();
    let report = check(&node, &cfg, &evidence, false).await;
    assert!(
        report.violations.len() > found,
        "the model missed a ticket nobody proposed"
    );
    node.store.shutdown().await.unwrap();
}

fn vote(who: &'static str, verdict: &'static str) -> Op {
    Op::Vote { who, verdict }
}

/// Two engines on one file whose clocks disagree: two processes after one host's clock was
/// stepped back, or one process whose clock was set back between two runs (the store resumes
/// its commit time from the file, `load_tail`). The store judges a deadline at its commit
/// time, `max(clock, last commit in the file)`; the engine recomputes a write refused as
/// `TooLate` with its own clock, which still says the deadline is ahead.
///
/// Expected: the late vote is refused as `DeadlinePassed` and the ticket expired, as it is
/// when the clocks agree. Found by the storms before the fix: `drive` recomputed the same
/// write `MAX_RACES` times with its own clock and answered `DecideError::Store(TooLate)`, and
/// the ticket stayed `pending` past its deadline until an engine whose clock had caught up
/// touched it (nothing wrong was ever committed). Fixed in `Inner::drive`: the refused
/// commit's `at` is the floor of the next attempt's `now`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_whose_clock_lags_the_files_commits_refuses_a_late_vote_as_past_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("storm.sqlite3");
    let behind = Node::open(&path, &Time::Manual(ManualClock::new(start()))).await;
    let ahead = Node::open(&path, &Time::Manual(ManualClock::new(at_step(3)))).await;
    // Key 0: one approval of `dba`, a deadline of one step.
    let Proposal::Pending(pending) = behind.agent.propose(storm_request(0, false)).await.unwrap()
    else {
        panic!("key 0 needs a review");
    };
    assert_eq!(pending.deadline, at_step(1));
    // The other engine commits at step 3: the file's commit time is now past the deadline.
    let _ = ahead.agent.propose(storm_request(1, false)).await.unwrap();
    let vote = behind
        .handoff
        .decide(pending.id, behind.cred("alice"), Verdict::Approve, None)
        .await;
    assert!(
        matches!(
            vote,
            Err(DecideError::Refused(
                agent_handoff::ticket::Refusal::DeadlinePassed { .. }
            ))
        ),
        "a vote committed after the deadline is refused as past deadline, got {vote:?}"
    );
    let stored = behind.store.ticket(pending.id).await.unwrap().unwrap();
    assert_eq!(stored.state().name(), StateName::Expired);
}

/// An approval used in time, and the next `ticket()` read answered from the snapshot before
/// that use: the race of a reader whose read lost to a begin committed just before the grant's
/// end, reproduced deterministically. The clock stands at the grant's end; the lease (until 6
/// minutes) still runs. Returns the harness, the agent, the ticket and its permit.
async fn used_approval_read_stale() -> (
    support::Harness,
    AgentHandle,
    TicketId,
    agent_handoff::Permit,
) {
    use support::{request, Harness, Setup, MIN};
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    // `db.read` is allowed for 5 minutes; the permit's lease lasts 5 minutes from begin.
    let Proposal::Allowed(grant) = agent.propose(request("db.read", "used")).await.unwrap() else {
        panic!("db.read is allowed");
    };
    let (id, valid_until) = (grant.ticket(), grant.valid_until());
    let approved = h.ticket(id).await;
    h.clock.advance(MIN);
    let permit = agent.begin(grant, BTreeMap::new()).await.unwrap();
    h.clock.set(valid_until);
    h.interpose.as_ref().unwrap().serve_once(approved);
    (h, agent, id, permit)
}

/// `wait` on a ticket whose grant's end has passed by the waiter's clock, when the waiter's
/// read races a begin that committed before that end (its commit time was taken before the
/// clock passed the end; its transaction was not yet visible when the waiter read). Found by
/// the multi-process storm (`wait` answered `Expired` for approvals that were used or
/// cancelled).
///
/// Expected: the waiter answers from the durable record (`Closed(Executing)`), as it does for
/// a pending ticket, whose expiry `wait` persists (serialised with the racing write) before
/// answering. Found before the fix: for an approved ticket `wait` answered `Expired` ("the
/// approval lapsed unused") from its read alone, although the approval was used; an agent
/// that trusted the answer and proposed again under a fresh key could run the action twice.
/// Fixed in `Handoff::wait_for`: the expiry is persisted for every stored state whose view
/// differs, then the ticket is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_never_answers_expired_for_an_approval_that_was_used() {
    let (h, agent, id, permit) = used_approval_read_stale().await;
    let pending = PendingTicket {
        id,
        deadline: h.now(),
    };
    let decision = agent.wait(&pending, support::MIN).await.unwrap();
    assert!(
        matches!(decision, Decision::Closed(StateName::Executing)),
        "the approval was used: the wait must not answer {decision:?}"
    );
    let outcome = ExecutionOutcome::Succeeded {
        output: Value::Null,
    };
    agent.finish(permit, outcome).await.unwrap();
}

/// The same race through a replayed `propose`: answering `Closed(Expired)` would tell the
/// agent its approval lapsed unused; the replay persists the expiry first (which finds the
/// ticket executing) and answers from the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_proposal_never_answers_expired_for_an_approval_that_was_used() {
    let (_h, agent, id, permit) = used_approval_read_stale().await;
    let replay = agent
        .propose(support::request("db.read", "used"))
        .await
        .unwrap();
    assert!(
        matches!(
            replay,
            Proposal::Closed { ticket, state: StateName::Executing } if ticket == id
        ),
        "the approval was used: the replay must not answer {replay:?}"
    );
    let outcome = ExecutionOutcome::Succeeded {
        output: Value::Null,
    };
    agent.finish(permit, outcome).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The storms in several processes
// ---------------------------------------------------------------------------------------------

/// The last `n` lines of a child's output.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until every process has reached `name`.
fn cross_barrier(dir: &Path, name: &str, me: usize, procs: usize) {
    std::fs::write(dir.join(format!("{name}-{me}")), b"").unwrap();
    let begun = Instant::now();
    while (0..procs).any(|i| !dir.join(format!("{name}-{i}")).exists()) {
        assert!(
            begun.elapsed() < HANG_GUARD,
            "process {me} waited too long at `{name}`"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn say(prefix: &str, value: &impl Serialize) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{prefix}{}", serde_json::to_string(value).unwrap()).unwrap();
}

/// The global tasks of process `proc` of `procs` (the storm's `tasks` split between them).
fn tasks_of(proc: usize, cfg: &Cfg) -> std::ops::Range<usize> {
    let per = cfg.tasks.div_ceil(cfg.procs);
    (proc * per).min(cfg.tasks)..((proc + 1) * per).min(cfg.tasks)
}

/// The worker run in each child process; does nothing unless `STORM_WORKER_DIR` is set.
#[test]
#[ignore = "child process of the multi-process storm"]
fn storm_worker() {
    let Ok(dir) = std::env::var(WORKER_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let me: usize = std::env::var(WORKER_INDEX).unwrap().parse().unwrap();
    let cfg = Cfg::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let time = Time::File(Arc::new(FileClock {
            path: dir.join("clock"),
        }));
        let node = Node::open(&dir.join("storm.sqlite3"), &time).await;
        cross_barrier(&dir, "ready", me, cfg.procs);
        let begun = Instant::now();
        let proposals = proposal_storm(&node, &cfg, me, tasks_of(me, &cfg), cfg.tasks).await;
        let propose_ms = begun.elapsed().as_millis();
        for p in &proposals {
            say(LINE_PROPOSAL, p);
        }
        // Every key now has its ticket, created before time moves.
        cross_barrier(&dir, "proposed", me, cfg.procs);
        let mut tickets = BTreeMap::new();
        for k in 0..cfg.tickets.min(cfg.keys) {
            let t = node
                .store
                .ticket_by_key(
                    &Requester::new(agent_id(AGENT), Some(person(PRINCIPAL))),
                    &key(&key_text(k)),
                )
                .await
                .unwrap()
                .expect("every key has its ticket");
            tickets.insert(k, t.id());
        }
        let role = if me == 0 { Role::Driver } else { Role::Sweeper };
        let begun = Instant::now();
        let (ops, swept, freezes) = decision_storm(&node, &tickets, &cfg, me, &time, role).await;
        let decide_ms = begun.elapsed().as_millis();
        for op in &ops {
            say(LINE_OP, op);
        }
        for f in &freezes {
            say(LINE_FREEZE, f);
        }
        say(
            LINE_SUMMARY,
            &Summary {
                proc: me,
                swept,
                proposals: proposals.len(),
                ops: ops.len(),
                propose_ms,
                decide_ms,
            },
        );
        node.store.shutdown().await.unwrap();
    });
}

#[test]
fn multi_process_storm_keeps_one_ticket_per_key_and_one_begin_per_ticket() {
    let cfg = Cfg::from_env();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("storm.sqlite3");
    let clock = Arc::new(FileClock {
        path: dir.path().join("clock"),
    });
    clock.set(start());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The schema, before the children race to open the file.
    runtime.block_on(async {
        SqliteStore::open(&db)
            .await
            .unwrap()
            .shutdown()
            .await
            .unwrap();
    });
    let begun = Instant::now();
    let children: Vec<_> = (0..cfg.procs)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["storm_worker", "--exact", "--ignored", "--nocapture"])
                .env(WORKER_DIR, dir.path())
                .env(WORKER_INDEX, i.to_string())
                .env("STORM_TASKS", cfg.tasks.to_string())
                .env("STORM_KEYS", cfg.keys.to_string())
                .env("STORM_TICKETS", cfg.tickets.to_string())
                .env("STORM_PROCS", cfg.procs.to_string())
                .env("STORM_SEED", cfg.seed.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // One reader per child, so no child blocks on a full pipe while another is read.
    let readers: Vec<_> = children
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output().unwrap()))
        .collect();
    let outputs: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let elapsed = begun.elapsed();
    let mut evidence = Evidence::default();
    let mut summaries = Vec::new();
    let failed: Vec<String> = outputs
        .iter()
        .enumerate()
        .filter(|(_, out)| !out.status.success())
        .map(|(i, out)| {
            format!(
                "child {i} failed ({}):\n{}\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 40),
                tail(&String::from_utf8_lossy(&out.stderr), 40)
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    for out in &outputs {
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout.lines() {
            if let Some(json) = line.strip_prefix(LINE_PROPOSAL) {
                evidence.proposals.push(serde_json::from_str(json).unwrap());
            } else if let Some(json) = line.strip_prefix(LINE_OP) {
                evidence.ops.push(serde_json::from_str(json).unwrap());
            } else if let Some(json) = line.strip_prefix(LINE_FREEZE) {
                evidence.freezes.push(serde_json::from_str(json).unwrap());
            } else if let Some(json) = line.strip_prefix(LINE_SUMMARY) {
                let summary: Summary = serde_json::from_str(json).unwrap();
                evidence.swept += summary.swept;
                summaries.push(summary);
            }
        }
    }
    assert_eq!(summaries.len(), cfg.procs, "every child reported");
    assert_eq!(
        evidence.proposals.len(),
        cfg.tasks * cfg.keys,
        "every proposal was answered"
    );
    let report = runtime.block_on(async {
        let node = Node::open(&db, &Time::File(Arc::clone(&clock))).await;
        let report = check(&node, &cfg, &evidence, false).await;
        node.store.shutdown().await.unwrap();
        report
    });
    // Tickets whose operations were answered by more than one process.
    let mut procs_by_ticket: BTreeMap<TicketId, BTreeSet<usize>> = BTreeMap::new();
    for op in &evidence.ops {
        procs_by_ticket
            .entry(op.ticket)
            .or_default()
            .insert(op.proc);
    }
    let shared = procs_by_ticket.values().filter(|p| p.len() > 1).count();
    report.print(
        &format!(
            "{} processes: {} tasks x {} keys = {} proposals, {} tickets decided \
             ({shared} by several processes), {} answers, {} swept",
            cfg.procs,
            cfg.tasks,
            cfg.keys,
            evidence.proposals.len(),
            cfg.tickets.min(cfg.keys),
            evidence.ops.len(),
            evidence.swept
        ),
        elapsed,
    );
    for s in &summaries {
        println!("   {s:?}");
    }
    report.assert_clean();
}
