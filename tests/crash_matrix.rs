//! The crash matrix: kill a host in the middle of each operation a user runs, at each point
//! where a crash can matter, reopen its database, check what it left, then restart the host's
//! work and check that it finishes without doing anything twice.
//!
//! Needs the `failpoints` feature: `cargo test --all-features --test crash_matrix`.
//!
//! # The child
//!
//! Each run re-executes this test binary as a child process (the ignored test
//! `matrix_worker`, told by `CRASH_MATRIX_DIR` to act as the worker) with
//! `AGENT_HANDOFF_FAILPOINT=<point>@<operation>:<n>` (see `src/failpoint.rs` for every point).
//! The child opens a `SqliteStore` file (WAL, `synchronous=FULL`) behind a `Handoff` on a
//! manual clock and drives a realistic workload through the public API, round after round:
//!
//! - **propose**: an action policy allows (`db.read`), one needing one DBA (`db.update`), one
//!   needing two (`db.drop`, quorum 2), one nobody decides (`db.vacuum`, 6 s deadline, left to
//!   expire), one policy denies (`payment.send`), and often a repeat of an earlier proposal with
//!   the same idempotency key;
//! - **decide**: approvals and rejections through `decide` (credentials) and through signed
//!   links `decide_with_token` (bound to the reviewer or verdict-only), the two votes of a
//!   quorum in different rounds, and self-approval attempts by the requester's principal
//!   (refused and recorded);
//! - **begin → execute → finish**: the action executor appends `executed <ticket>` to a
//!   journal file and fsyncs it between `begin` and `finish`; some executions "hang" (the
//!   permit is dropped unfinished) and end `Unknown` when their lease lapses;
//! - **expire**: `expire_due` sweeps the undecided tickets and the lapsed leases, and an
//!   operator **resolves** each `Unknown` ticket;
//! - **deliver**: `deliver_due` hands review cards to a notifier that appends each delivery
//!   (outbox row id, ticket, kind, hash of the card) to a journal file and fsyncs it before
//!   answering.
//!
//! Before each operation the child prints a `send` line describing it, after the library
//! answered an `ack` line, both flushed; the failpoint kills it with SIGKILL in the middle of
//! one of them.
//!
//! # The checks
//!
//! After the kill, the parent reopens the file and checks:
//! - `PRAGMA integrity_check` is `ok`; `Handoff::verify_audit` verifies the whole chain and
//!   counts every stored event;
//! - no ticket is half-written: replaying each ticket's audit events gives its stored version
//!   and state, its decision rows (accepted votes and recorded refusals, per person), its
//!   outbox rows (one review request per pending round, one close per departure from pending)
//!   and its delivered marks (one `notified` event each); no audit event, decision or outbox
//!   row belongs to no ticket; every spent token nonce has the decision or refusal that spent
//!   it;
//! - every acknowledged operation is present (the proposal under its key with the ticket it
//!   answered, the decision row with its refusal if any, the permit's `execution_started`, the
//!   outcome, the resolution, the sweep's moves, every delivery the notifier journaled before
//!   the acknowledgement marked delivered), and the operation in flight is present exactly when
//!   the point is past its commit;
//! - every `executed` line has the durable permit it ran under, and every journaled delivery
//!   is an outbox row of its ticket and kind.
//!
//! Then a **recovery run** in the parent does what a restarted host would: the link in flight
//! is submitted again (refused as replayed exactly when its decision is present), a decision
//! in flight is made again (counted once), every
//! proposal is made again with its key (the same ticket comes back; a ticket whose permit was
//! issued before the crash gets no grant), reviewers approve what is pending, approved actions
//! are begun, executed (journaled) and finished, time passes so lapsed leases and outbox
//! claims come back, sweeps run, an operator resolves every `Unknown` ticket from the journal,
//! and the outbox is drained. Afterwards:
//! - no action was executed twice (at most one `executed` line per ticket, each with exactly
//!   one `execution_started`);
//! - every outbox row is delivered and journaled at least once; a row delivered more than once
//!   carried the same id and the same card each time, and every journaled id is a row;
//! - every ticket is in a state nothing more happens to (`Unknown` resolved, nothing pending,
//!   approved or executing left behind);
//! - the integrity check, the chain and the per-ticket agreement hold again.
//!
//! # Size
//!
//! The matrix is every operation × every point that can fire in it: the store's three points
//! (`before_audit`, `before_commit`, `after_commit`) in each of the eight operations, plus the
//! facade's nine points in their own operation: 33 cells. CI runs two crashes per cell, at the
//! first hit and at a random later one (66 runs). For the big run, `CRASH_RUNS` sets the total,
//! spread evenly over the cells (and widens the range of hits), `CRASH_SEED` picks another
//! sequence:
//!
//! `CRASH_RUNS=1000 cargo test --release --all-features --test crash_matrix`
//!
//! Each test prints a summary line (runs and violations, i.e. runs whose checks failed; every
//! run is attempted and the failures listed at the end).
#![cfg(all(feature = "failpoints", feature = "sqlite"))]

mod rng;
mod support;
use rng::Rng;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_handoff::action::{ActionRequest, Requester};
use agent_handoff::audit::{kind, Actor, AuditEvent};
use agent_handoff::backend::{OutboxEntry, OutboxStatus, TicketFilter};
use agent_handoff::notify::{Delivery, DeliveryError, DeliveryReceipt, Notifier};
use agent_handoff::ticket::{ExecutionOutcome, StateName, Verdict};
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    AgentHandle, Clock, Credential, DecideError, Decision, Handoff, LinkError, ManualClock,
    PendingTicket, Proposal, SqliteOptions, SqliteStore, Store, TicketId, Timestamp,
    TokenSubmission,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use support::{
    agent_id, all_tickets, allow, checkpoint_key, decision_links, deny, digest_key, directory, key,
    person, req, review, KindPolicy, HOUR, MIN, START,
};
use uuid::Uuid;

const DIR_VAR: &str = "CRASH_MATRIX_DIR";
const SEED_VAR: &str = "CRASH_MATRIX_SEED";
const DB: &str = "handoff.sqlite3";
const ACTIONS: &str = "actions.journal";
const DELIVERIES: &str = "deliveries.journal";
const CHANNEL: &str = "reviewers";
const AGENT: &str = "agent-1";
/// The requester's principal (an alias of `pat`, who is a DBA: self-approval is attempted).
const PRINCIPAL: &str = "pat@example.com";
/// Rounds the child plays at most; one that gets through all of them was never killed, which
/// fails the run.
const MAX_ROUNDS: u64 = 80;
/// Time that passes per round.
const ROUND: Duration = Duration::from_secs(2);
/// Execution leases, and the review deadline of `db.vacuum` (nobody decides it).
const SHORT: Duration = Duration::from_secs(6);

/// The store's points, which fire in every operation that writes.
const STORE_POINTS: [&str; 3] = ["before_audit", "before_commit", "after_commit"];
/// The facade's points, each in its own operation (`<operation>.<what>`).
const FACADE_POINTS: [&str; 9] = [
    "propose.committed",
    "decide.committed",
    "decide_token.committed",
    "begin.committed",
    "finish.entered",
    "finish.committed",
    "deliver.claimed",
    "deliver.notified",
    "deliver.recorded",
];

// ---------------------------------------------------------------------------------------------
// Shared by the child and the parent
// ---------------------------------------------------------------------------------------------

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Appends one line to a journal file and makes it durable before returning.
fn journal(path: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
    file.sync_data().unwrap();
}

fn journal_lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().map(str::to_owned).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The action executor: records the execution durably, then the caller records the outcome.
fn execute(dir: &Path, ticket: TicketId) {
    journal(&dir.join(ACTIONS), &format!("executed {ticket}"));
}

/// Tickets in the action journal, one entry per `executed` line.
fn executed(dir: &Path) -> Vec<TicketId> {
    journal_lines(&dir.join(ACTIONS))
        .iter()
        .map(|l| l.strip_prefix("executed ").unwrap().parse().unwrap())
        .collect()
}

/// One line of the notifier's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivered {
    id: Uuid,
    ticket: TicketId,
    kind: String,
    card: String,
}

fn delivered(dir: &Path) -> Vec<Delivered> {
    journal_lines(&dir.join(DELIVERIES))
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!((f.len(), f[0]), (5, "delivered"), "journal line {l:?}");
            Delivered {
                id: f[1].parse().unwrap(),
                ticket: f[2].parse().unwrap(),
                kind: f[3].to_owned(),
                card: f[4].to_owned(),
            }
        })
        .collect()
}

/// A channel that journals every card it accepts (fsynced) before answering.
#[derive(Debug)]
struct JournalNotifier {
    path: PathBuf,
}

#[async_trait]
impl Notifier for JournalNotifier {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let card = serde_json::to_vec(&delivery.card).unwrap();
        let kind = serde_json::to_value(delivery.kind).unwrap();
        journal(
            &self.path,
            &format!(
                "delivered {} {} {} {}",
                delivery.id,
                delivery.ticket,
                kind.as_str().unwrap(),
                hex(&sha2::Sha256::digest(&card))
            ),
        );
        Ok(DeliveryReceipt::new(Some(format!("msg-{}", delivery.id))))
    }
}

fn policy() -> KindPolicy {
    KindPolicy::new()
        .with("db.read", allow(5 * MIN))
        .with("db.update", review(&[req("dba", 1)], HOUR, 30 * MIN))
        .with("db.drop", review(&[req("dba", 2)], HOUR, 30 * MIN))
        .with("db.vacuum", review(&[req("dba", 1)], SHORT, 30 * MIN))
        .with("payment.send", deny("payments are denied"))
}

/// The request proposed under `key` (`r<round>-<tag>`): the tag says which kind.
fn action(key: &str) -> ActionRequest {
    let kind = match key.rsplit('-').next().unwrap() {
        "read" => "db.read",
        "update" => "db.update",
        "drop" => "db.drop",
        "vacuum" => "db.vacuum",
        "pay" => "payment.send",
        other => panic!("no kind for tag {other}"),
    };
    support::request(kind, key)
}

/// A host: the engine on the database file of `dir`, on a manual clock.
struct Host {
    dir: PathBuf,
    clock: ManualClock,
    handoff: Handoff,
    store: Arc<dyn Store>,
    agent: AgentHandle,
    creds: BTreeMap<&'static str, Credential>,
}

impl Host {
    async fn open(dir: &Path, clock: ManualClock) -> Self {
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let sqlite = SqliteStore::open_with(
            dir.join(DB),
            SqliteOptions::new().with_clock(Arc::clone(&shared)),
        )
        .await
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let (directory, creds) = directory();
        let handoff = Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(policy())
            .identity(directory)
            .shared_clock(shared)
            .limits(agent_handoff::Limits {
                lease_ttl: SHORT,
                proposals_per_minute: 0,
                ..agent_handoff::Limits::default()
            })
            .checkpoint_key("test.example/audit", checkpoint_key())
            .decision_links(decision_links())
            .digest_key(digest_key())
            .notifier(
                CHANNEL,
                JournalNotifier {
                    path: dir.join(DELIVERIES),
                },
            )
            .build()
            .unwrap();
        let agent = handoff.agent(agent_id(AGENT), Some(person(PRINCIPAL)));
        Self {
            dir: dir.to_owned(),
            clock,
            handoff,
            store,
            agent,
            creds,
        }
    }

    fn cred(&self, who: &str) -> &Credential {
        &self.creds[who]
    }
}

/// An operation as the child announces it before running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Propose {
        key: String,
    },
    Decide {
        ticket: TicketId,
        person: String,
        verdict: String,
    },
    DecideToken {
        ticket: TicketId,
        person: String,
        verdict: String,
        token: String,
    },
    Begin {
        ticket: TicketId,
    },
    Finish {
        ticket: TicketId,
    },
    /// `expire_due`, with the tickets the child knows to be due.
    Sweep {
        due: Vec<TicketId>,
    },
    Resolve {
        ticket: TicketId,
    },
    /// `deliver_due`, with the notifier journal's length before it.
    Deliver {
        journal: usize,
    },
}

impl Op {
    /// The failpoint operation label the library sets while this runs.
    fn label(&self) -> &'static str {
        match self {
            Op::Propose { .. } => "propose",
            Op::Decide { .. } => "decide",
            Op::DecideToken { .. } => "decide_token",
            Op::Begin { .. } => "begin",
            Op::Finish { .. } => "finish",
            Op::Sweep { .. } => "expire",
            Op::Resolve { .. } => "resolve",
            Op::Deliver { .. } => "deliver",
        }
    }
}

/// What the library answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ack", rename_all = "snake_case")]
enum Ack {
    Proposed { ticket: TicketId },
    Decided { refusal: Option<String> },
    Swept { moved: usize },
    Delivered { journal: usize },
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sent {
    n: u64,
    at: i64,
    op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Acked {
    n: u64,
    ack: Ack,
}

fn verdict_of(verdict: &str) -> Verdict {
    match verdict {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject {
            feedback: "not now".into(),
        },
        other => panic!("verdict {other}"),
    }
}

fn submission_of(verdict: &str) -> TokenSubmission {
    match verdict {
        "approve" => TokenSubmission::new(),
        _ => TokenSubmission::new().with_feedback("not now"),
    }
}

fn proposal_ticket(answer: &Proposal) -> TicketId {
    match answer {
        Proposal::Allowed(g) => g.ticket(),
        Proposal::Pending(p) => p.id,
        Proposal::Denied { ticket, .. } | Proposal::Closed { ticket, .. } => *ticket,
    }
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// The worker run in the child process; does nothing unless `CRASH_MATRIX_DIR` is set.
#[test]
#[ignore = "child process of the crash matrix"]
fn matrix_worker() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_VAR).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let host = Host::open(Path::new(&dir), ManualClock::new(ts(START))).await;
        let mut worker = Worker {
            host,
            rng: Rng::new(seed),
            n: 0,
            keys: Vec::new(),
            second_votes: Vec::new(),
            vacuums: Vec::new(),
            hung: Vec::new(),
        };
        for round in 0..MAX_ROUNDS {
            worker.round(round).await;
        }
    });
    say("done");
}

/// How a reviewer decides.
#[derive(Clone, Copy)]
enum Via {
    Credential,
    /// A link bound to the reviewer.
    BoundLink,
    /// A verdict-only link (a group chat's button).
    GroupLink,
}

struct Worker {
    host: Host,
    rng: Rng,
    n: u64,
    /// Keys proposed so far (first proposals).
    keys: Vec<String>,
    /// Quorum-2 tickets with one approval, waiting for the second.
    second_votes: Vec<PendingTicket>,
    /// Tickets nobody decides, with their deadlines.
    vacuums: Vec<(TicketId, Timestamp)>,
    /// Executions never finished, with their lease ends.
    hung: Vec<(TicketId, Timestamp)>,
}

impl Worker {
    fn send(&mut self, op: Op) -> u64 {
        self.n += 1;
        let sent = Sent {
            n: self.n,
            at: self.host.clock.now().as_unix_millis(),
            op,
        };
        say(&format!("send {}", serde_json::to_string(&sent).unwrap()));
        self.n
    }

    fn ack(&self, n: u64, ack: Ack) {
        say(&format!(
            "ack {}",
            serde_json::to_string(&Acked { n, ack }).unwrap()
        ));
    }

    async fn round(&mut self, round: u64) {
        self.host.clock.advance(ROUND);
        let mut grants = Vec::new();
        let mut updates = Vec::new();
        let mut drops = Vec::new();

        // Proposals, and a repeat of an earlier one (its answer is dropped, as a host that
        // already acted on it would).
        let mut tags = vec!["read", "update", "drop"];
        if round % 2 == 0 {
            tags.push("vacuum");
        }
        if round % 3 == 1 {
            tags.push("pay");
        }
        for tag in tags {
            let key = format!("r{round}-{tag}");
            self.keys.push(key.clone());
            match self.propose(&key).await {
                Proposal::Allowed(grant) => grants.push(grant),
                Proposal::Pending(p) => match tag {
                    "update" => updates.push(p),
                    "drop" => drops.push(p),
                    _ => self.vacuums.push((p.id, p.deadline)),
                },
                _ => {}
            }
        }
        if self.rng.below(2) == 0 {
            let i = self.rng.below(self.keys.len() as u64) as usize;
            let key = self.keys[i].clone();
            let _ = self.propose(&key).await;
        }

        // Decisions: one DBA for updates; two for drops, in two rounds.
        let mut decided = Vec::new();
        for p in updates {
            if self.rng.below(4) == 0 {
                self.decide(p.id, "pat", "approve", Via::Credential).await;
            }
            let (who, verdict, via) = match self.rng.below(10) {
                0 => ("bob", "reject", Via::Credential),
                1 => ("bob", "reject", Via::BoundLink),
                2..=5 => ("alice", "approve", Via::Credential),
                6 | 7 => ("alice", "approve", Via::BoundLink),
                _ => ("alice", "approve", Via::GroupLink),
            };
            self.decide(p.id, who, verdict, via).await;
            decided.push(p);
        }
        for p in std::mem::take(&mut self.second_votes) {
            let (who, verdict, via) = match self.rng.below(6) {
                0 => ("carol", "reject", Via::GroupLink),
                1 | 2 => ("bob", "approve", Via::Credential),
                3 => ("bob", "approve", Via::BoundLink),
                _ => ("bob", "approve", Via::GroupLink),
            };
            self.decide(p.id, who, verdict, via).await;
            decided.push(p);
        }
        for p in drops {
            let via = match self.rng.below(3) {
                0 => Via::Credential,
                1 => Via::BoundLink,
                _ => Via::GroupLink,
            };
            self.decide(p.id, "alice", "approve", via).await;
            self.second_votes.push(p);
        }
        for p in decided {
            if let Decision::Approved(grant) =
                self.host.agent.wait(&p, Duration::ZERO).await.unwrap()
            {
                grants.push(grant);
            }
        }

        // Begin → execute → finish; some executions hang and are never finished.
        for (i, grant) in grants.into_iter().enumerate() {
            let ticket = grant.ticket();
            let n = self.send(Op::Begin { ticket });
            let permit = self.host.agent.begin(grant, BTreeMap::new()).await.unwrap();
            self.ack(n, Ack::Done);
            execute(&self.host.dir, ticket);
            if i == 0 && self.rng.below(2) == 0 {
                self.hung.push((ticket, permit.lease_expires()));
                drop(permit);
                continue;
            }
            let n = self.send(Op::Finish { ticket });
            self.host
                .agent
                .finish(
                    permit,
                    ExecutionOutcome::Succeeded {
                        output: serde_json::Value::Null,
                    },
                )
                .await
                .unwrap();
            self.ack(n, Ack::Done);
        }

        // Sweep what is due, resolve what it made unknown.
        let now = self.host.clock.now();
        let lost: Vec<TicketId> = self
            .hung
            .iter()
            .filter(|(_, until)| now >= *until)
            .map(|(t, _)| *t)
            .collect();
        let expired: Vec<TicketId> = self
            .vacuums
            .iter()
            .filter(|(_, deadline)| now >= *deadline)
            .map(|(t, _)| *t)
            .collect();
        if !lost.is_empty() || !expired.is_empty() {
            let due: Vec<TicketId> = lost.iter().chain(&expired).copied().collect();
            let n = self.send(Op::Sweep { due });
            let moved = self.host.handoff.expire_due().await.unwrap();
            self.ack(n, Ack::Swept { moved });
            self.hung.retain(|(t, _)| !lost.contains(t));
            self.vacuums.retain(|(t, _)| !expired.contains(t));
        }
        for ticket in lost {
            let n = self.send(Op::Resolve { ticket });
            self.host
                .handoff
                .resolve(
                    ticket,
                    self.host.cred("olga"),
                    ExecutionOutcome::Succeeded {
                        output: serde_json::Value::Null,
                    },
                )
                .await
                .unwrap();
            self.ack(n, Ack::Done);
        }

        // Deliver the review cards.
        let path = self.host.dir.join(DELIVERIES);
        let n = self.send(Op::Deliver {
            journal: journal_lines(&path).len(),
        });
        self.host.handoff.deliver_due().await.unwrap();
        self.ack(
            n,
            Ack::Delivered {
                journal: journal_lines(&path).len(),
            },
        );
    }

    async fn propose(&mut self, key: &str) -> Proposal {
        let n = self.send(Op::Propose { key: key.into() });
        let answer = self.host.agent.propose(action(key)).await.unwrap();
        self.ack(
            n,
            Ack::Proposed {
                ticket: proposal_ticket(&answer),
            },
        );
        answer
    }

    async fn decide(&mut self, ticket: TicketId, who: &str, verdict: &str, via: Via) {
        let (n, refusal) = match via {
            Via::Credential => {
                let n = self.send(Op::Decide {
                    ticket,
                    person: who.into(),
                    verdict: verdict.into(),
                });
                let refusal = match self
                    .host
                    .handoff
                    .decide(ticket, self.host.cred(who), verdict_of(verdict), None)
                    .await
                {
                    Ok(_) => None,
                    Err(DecideError::Refused(r)) => Some(r.code().as_str().to_owned()),
                    Err(e) => panic!("decide {ticket} by {who}: {e}"),
                };
                (n, refusal)
            }
            Via::BoundLink | Via::GroupLink => {
                let stored = self.host.store.ticket(ticket).await.unwrap().unwrap();
                let bound = matches!(via, Via::BoundLink).then(|| person(who));
                let wanted = if verdict == "approve" {
                    VerdictKind::Approve
                } else {
                    VerdictKind::Reject
                };
                let link = self
                    .host
                    .handoff
                    .mint_links(&stored, bound, self.host.clock.now())
                    .unwrap()
                    .into_iter()
                    .find(|l| l.verdict == wanted)
                    .unwrap();
                let n = self.send(Op::DecideToken {
                    ticket,
                    person: who.into(),
                    verdict: verdict.into(),
                    token: link.token.clone(),
                });
                let refusal = match self
                    .host
                    .handoff
                    .decide_with_token(&link.token, self.host.cred(who), submission_of(verdict))
                    .await
                {
                    Ok(_) => None,
                    Err(LinkError::Refused(r)) => Some(r.code().as_str().to_owned()),
                    Err(e) => panic!("decide {ticket} by {who} with a link: {e}"),
                };
                (n, refusal)
            }
        };
        self.ack(n, Ack::Decided { refusal });
    }
}

// ---------------------------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------------------------

/// One crash: in which operation, at which point, at which hit, with which workload seed.
#[derive(Debug, Clone, Copy)]
struct Case {
    op: &'static str,
    point: &'static str,
    nth: u64,
    seed: u64,
}

impl Case {
    /// Whether the point is past the commit of the write in flight.
    fn durable(&self) -> bool {
        matches!(self.point, "after_commit" | "deliver.recorded")
            || self.point.ends_with(".committed")
    }
}

/// What the child said before it died.
struct Transcript {
    sent: Vec<Sent>,
    acks: BTreeMap<u64, Ack>,
}

fn run_child(case: &Case, dir: &Path) -> Transcript {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["matrix_worker", "--exact", "--ignored", "--nocapture"])
        .env(DIR_VAR, dir)
        .env(SEED_VAR, case.seed.to_string())
        .env(
            "AGENT_HANDOFF_FAILPOINT",
            format!("{}@{}:{}", case.point, case.op, case.nth),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(9),
            "{case:?}: the child must die by SIGKILL, got {:?}\nstdout tail:\n{}\nstderr:\n{}",
            output.status,
            stdout.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut transcript = Transcript {
        sent: Vec::new(),
        acks: BTreeMap::new(),
    };
    for line in stdout.lines() {
        if let Some(json) = line.strip_prefix("send ") {
            transcript.sent.push(serde_json::from_str(json).unwrap());
        } else if let Some(json) = line.strip_prefix("ack ") {
            let acked: Acked = serde_json::from_str(json).unwrap();
            transcript.acks.insert(acked.n, acked.ack);
        }
    }
    transcript
}

/// Runs one crash and every check (see the module docs).
async fn crash_and_check(case: Case) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let transcript = run_child(&case, dir);
    let in_flight: Vec<&Sent> = transcript
        .sent
        .iter()
        .filter(|s| !transcript.acks.contains_key(&s.n))
        .collect();
    assert_eq!(
        in_flight.len(),
        1,
        "{case:?}: one operation at a time, so exactly one in flight: {in_flight:?}"
    );
    let flight = in_flight[0].clone();
    assert_eq!(flight.n, transcript.sent.last().unwrap().n, "{case:?}");
    assert_eq!(
        flight.op.label(),
        case.op,
        "{case:?}: the failpoint fired in another operation: {flight:?}"
    );

    // The file, through a connection of our own.
    integrity(dir, &case);

    // A host restarts on it, its clock after everything the child saw.
    let resume = transcript.sent.iter().map(|s| s.at).max().unwrap() + 1_000;
    let host = Host::open(dir, ManualClock::new(ts(resume))).await;
    audit_verifies(&host, &case).await;
    agree(&host, &case, true).await;
    journals_agree(&host, &case).await;
    acknowledged_present(&host, &transcript, &case).await;
    in_flight_as_expected(&host, &flight, &case).await;

    recover(&host, &transcript, &flight, &case).await;

    settled(&host, &case).await;
    integrity(dir, &case);
    audit_verifies(&host, &case).await;
    agree(&host, &case, false).await;
    host.store.shutdown().await.unwrap();
}

/// One value from the database file, through a connection of our own (opened per query, so
/// no connection is held across an await).
fn query<T: rusqlite::types::FromSql>(dir: &Path, sql: &str) -> T {
    rusqlite::Connection::open(dir.join(DB))
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn integrity(dir: &Path, case: &Case) {
    let integrity: String = query(dir, "PRAGMA integrity_check");
    assert_eq!(integrity, "ok", "{case:?}");
}

async fn audit_verifies(host: &Host, case: &Case) {
    let report = host
        .handoff
        .verify_audit()
        .await
        .unwrap_or_else(|e| panic!("{case:?}: audit chain: {e}"));
    let stored: i64 = query(&host.dir, "SELECT count(*) FROM audit_events");
    assert_eq!(report.events, stored as u64, "{case:?}: events verified");
}

async fn tickets(host: &Host) -> Vec<agent_handoff::ticket::Ticket> {
    all_tickets(host.store.as_ref(), TicketFilter::default()).await
}

fn actor_person(actor: &Actor) -> Option<String> {
    match actor {
        Actor::Reviewer(p) | Actor::Operator(p) => Some(p.as_str().to_owned()),
        _ => None,
    }
}

fn text(v: &serde_json::Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {v}"))
        .to_owned()
}

/// What a ticket's audit events say its rows must be.
#[derive(Debug, Default)]
struct Replayed {
    version: u64,
    state: Option<StateName>,
    /// (person, verdict) of accepted decisions.
    accepted: Vec<(String, String)>,
    /// (person, refusal) of recorded refusals.
    refused: Vec<(String, String)>,
    requests: u64,
    closes: u64,
    notified: BTreeSet<String>,
}

fn replay(events: &[AuditEvent]) -> Replayed {
    use StateName as S;
    let mut r = Replayed::default();
    // Just proposed: the policy may still approve or reject it in the same transition.
    let mut fresh = false;
    for event in events {
        let record = event.record();
        let kind_name = record.kind.as_str();
        let by_policy = record.actor == Actor::Policy;
        if fresh && !(by_policy && matches!(kind_name, kind::APPROVED | kind::REJECTED)) {
            r.requests += 1;
        }
        let was_fresh = std::mem::replace(&mut fresh, false);
        let leave_pending = |r: &mut Replayed| {
            if r.state == Some(S::Pending) && !was_fresh {
                r.closes += 1;
            }
        };
        let data = &record.data;
        match kind_name {
            kind::PROPOSED => {
                r.version += 1;
                r.state = Some(S::Pending);
                fresh = true;
            }
            kind::VOTED => {
                r.version += 1;
                r.accepted
                    .push((actor_person(&record.actor).unwrap(), text(data, "vote")));
            }
            kind::REPEATED => r
                .accepted
                .push((actor_person(&record.actor).unwrap(), text(data, "verdict"))),
            kind::APPROVED => {
                leave_pending(&mut r);
                r.state = Some(S::Approved);
            }
            kind::REJECTED => {
                leave_pending(&mut r);
                r.state = Some(S::Rejected);
            }
            kind::EDITED => {
                r.version += 1;
                r.requests += 1;
                r.state = Some(S::Pending);
            }
            kind::EXPIRED => {
                r.version += 1;
                leave_pending(&mut r);
                r.state = Some(S::Expired);
            }
            kind::CANCELLED | kind::REVOKED => {
                r.version += 1;
                leave_pending(&mut r);
                r.state = Some(S::Cancelled);
            }
            kind::EXECUTION_STARTED => {
                r.version += 1;
                r.state = Some(S::Executing);
            }
            kind::LEASE_RENEWED => r.version += 1,
            kind::EXECUTION_FINISHED | kind::RESOLVED => {
                r.version += 1;
                r.state = Some(match text(data, "outcome").as_str() {
                    "succeeded" => S::Succeeded,
                    _ => S::Failed,
                });
                if kind_name == kind::RESOLVED {
                    r.accepted
                        .push((actor_person(&record.actor).unwrap(), "resolve".into()));
                }
            }
            kind::LEASE_LOST => {
                r.version += 1;
                r.state = Some(S::Unknown);
            }
            kind::STALE => {
                r.version += 1;
                r.state = Some(S::Stale);
            }
            kind::REFUSED => {
                if let Some(p) = actor_person(&record.actor) {
                    r.refused.push((p, text(data, "refusal")));
                }
            }
            kind::NOTIFIED => {
                r.notified.insert(text(data, "delivery"));
            }
            other => panic!("unexpected audit event `{other}`: {record:?}"),
        }
    }
    if fresh {
        r.requests += 1;
    }
    r
}

/// Every outbox row of the store, by id.
async fn outbox(host: &Host) -> BTreeMap<Uuid, OutboxEntry> {
    let mut rows = BTreeMap::new();
    for t in tickets(host).await {
        for entry in host.store.ticket_outbox(t.id()).await.unwrap() {
            rows.insert(entry.row.id, entry);
        }
    }
    rows
}

/// No ticket half-written: each ticket's row, audit events, decisions and outbox rows agree,
/// and no row belongs to no ticket. With `nonces`, every spent token nonce is accounted for.
async fn agree(host: &Host, case: &Case, nonces: bool) {
    for ticket in tickets(host).await {
        let id = ticket.id();
        let events = host.store.ticket_audit(id).await.unwrap();
        let r = replay(&events);
        let kinds: Vec<&str> = events.iter().map(|e| e.record().kind.as_str()).collect();
        assert_eq!(
            (r.version, r.state),
            (ticket.version(), Some(ticket.state().name())),
            "{case:?}: ticket {id} (version, state) vs its audit {kinds:?}"
        );
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for d in host.store.decisions(id).await.unwrap() {
            let who = d.person.as_ref().map(|p| p.as_str().to_owned()).unwrap();
            match d.refusal {
                None => accepted.push((who, d.verdict)),
                Some(code) => refused.push((who, code)),
            }
        }
        let mut expected = (r.accepted.clone(), r.refused.clone());
        expected.0.sort();
        expected.1.sort();
        accepted.sort();
        refused.sort();
        assert_eq!(
            (accepted, refused),
            expected,
            "{case:?}: ticket {id} decisions vs its audit {kinds:?}"
        );
        let rows = host.store.ticket_outbox(id).await.unwrap();
        let of_kind = |k: &str| rows.iter().filter(|e| e.row.payload["kind"] == k).count() as u64;
        assert_eq!(
            (
                of_kind("request_review"),
                of_kind("close"),
                rows.len() as u64
            ),
            (r.requests, r.closes, r.requests + r.closes),
            "{case:?}: ticket {id} outbox rows vs its audit {kinds:?}"
        );
        let marked: BTreeSet<String> = rows
            .iter()
            .filter(|e| e.status == OutboxStatus::Delivered)
            .map(|e| e.row.id.to_string())
            .collect();
        assert_eq!(
            marked, r.notified,
            "{case:?}: ticket {id} delivered rows vs `notified` events"
        );
        assert!(
            rows.iter()
                .all(|e| e.status != OutboxStatus::Dead && e.attempts == 0),
            "{case:?}: ticket {id}: the notifier never fails"
        );
    }
    let orphans: i64 = query(
        &host.dir,
        "SELECT (SELECT count(*) FROM audit_events WHERE ticket_id IS NOT NULL \
                 AND ticket_id NOT IN (SELECT id FROM tickets)) \
              + (SELECT count(*) FROM decisions WHERE ticket_id NOT IN (SELECT id FROM tickets)) \
              + (SELECT count(*) FROM outbox WHERE ticket_id NOT IN (SELECT id FROM tickets))",
    );
    assert_eq!(orphans, 0, "{case:?}: rows of no ticket");
    if nonces {
        // Each token use that spends (every one but a replay or an expired token) consumes one
        // nonce per (token, person), in the write that records it.
        let mut spends = BTreeSet::new();
        for raw in host.store.audit_events(1, 1_000_000).await.unwrap() {
            let event = AuditEvent::decode(raw).unwrap();
            let record = event.record();
            let Some(note) = record.data.get("token") else {
                continue;
            };
            let refusal = record.data.get("refusal").and_then(|r| r.as_str());
            if matches!(refusal, Some("replayed" | "token_expired")) {
                continue;
            }
            spends.insert((text(note, "nonce"), actor_person(&record.actor).unwrap()));
        }
        let stored: i64 = query(&host.dir, "SELECT count(*) FROM nonces");
        assert_eq!(
            stored as usize,
            spends.len(),
            "{case:?}: spent nonces vs token uses recorded"
        );
    }
}

async fn has_event(host: &Host, ticket: TicketId, kind_name: &str) -> usize {
    host.store
        .ticket_audit(ticket)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.record().kind == kind_name)
        .count()
}

/// Whether the write of a (single-write) operation is in the store.
async fn present(host: &Host, op: &Op) -> bool {
    match op {
        Op::Propose { key: k } => host
            .store
            .ticket_by_key(
                &Requester::new(agent_id(AGENT), Some(person(PRINCIPAL))),
                &key(k),
            )
            .await
            .unwrap()
            .is_some(),
        Op::Decide {
            ticket,
            person,
            verdict,
        }
        | Op::DecideToken {
            ticket,
            person,
            verdict,
            ..
        } => host
            .store
            .decisions(*ticket)
            .await
            .unwrap()
            .iter()
            .any(|d| {
                d.person.as_ref().map(|p| p.as_str()) == Some(person.as_str())
                    && d.verdict == *verdict
            }),
        Op::Begin { ticket } => has_event(host, *ticket, kind::EXECUTION_STARTED).await > 0,
        Op::Finish { ticket } => has_event(host, *ticket, kind::EXECUTION_FINISHED).await > 0,
        Op::Resolve { ticket } => has_event(host, *ticket, kind::RESOLVED).await > 0,
        Op::Sweep { .. } | Op::Deliver { .. } => unreachable!("several writes"),
    }
}

async fn acknowledged_present(host: &Host, t: &Transcript, case: &Case) {
    let lines = delivered(&host.dir);
    let rows = outbox(host).await;
    let marked = |d: &Delivered| rows[&d.id].status == OutboxStatus::Delivered;
    for sent in &t.sent {
        let Some(ack) = t.acks.get(&sent.n) else {
            continue;
        };
        match (&sent.op, ack) {
            (Op::Propose { key: k }, Ack::Proposed { ticket }) => {
                let stored = host
                    .store
                    .ticket_by_key(
                        &Requester::new(agent_id(AGENT), Some(person(PRINCIPAL))),
                        &key(k),
                    )
                    .await
                    .unwrap()
                    .map(|t| t.id());
                assert_eq!(stored, Some(*ticket), "{case:?}: acknowledged {sent:?}");
            }
            (
                Op::Decide {
                    ticket,
                    person,
                    verdict,
                }
                | Op::DecideToken {
                    ticket,
                    person,
                    verdict,
                    ..
                },
                Ack::Decided { refusal },
            ) => {
                let rows = host.store.decisions(*ticket).await.unwrap();
                assert!(
                    rows.iter().any(|d| d.person.as_ref().map(|p| p.as_str())
                        == Some(person.as_str())
                        && d.verdict == *verdict
                        && d.refusal == *refusal),
                    "{case:?}: acknowledged {sent:?} ({ack:?}) not in {rows:?}"
                );
            }
            (Op::Sweep { due }, Ack::Swept { .. }) => {
                for ticket in due {
                    let state = host
                        .store
                        .ticket(*ticket)
                        .await
                        .unwrap()
                        .unwrap()
                        .state()
                        .name();
                    assert!(
                        !matches!(state, StateName::Pending | StateName::Executing),
                        "{case:?}: acknowledged {sent:?} left {ticket} {state}"
                    );
                }
            }
            (Op::Deliver { journal }, Ack::Delivered { journal: after }) => {
                for d in &lines[*journal..*after] {
                    assert!(
                        marked(d),
                        "{case:?}: acknowledged delivery {d:?} not marked"
                    );
                }
            }
            (op, Ack::Done) => {
                assert!(
                    present(host, op).await,
                    "{case:?}: acknowledged {sent:?} missing"
                );
            }
            (op, ack) => panic!("{case:?}: {op:?} acknowledged as {ack:?}"),
        }
    }
}

/// The operation in flight is in the store exactly when the point is past its commit.
async fn in_flight_as_expected(host: &Host, flight: &Sent, case: &Case) {
    match &flight.op {
        Op::Sweep { .. } => {} // one write per ticket: only the general checks apply
        Op::Deliver { journal } => {
            let lines = delivered(&host.dir);
            let rows = outbox(host).await;
            let new = &lines[*journal..];
            let marked: Vec<bool> = new
                .iter()
                .map(|d| rows[&d.id].status == OutboxStatus::Delivered)
                .collect();
            let expected: Vec<bool> = match case.point {
                "deliver.claimed" => vec![true; new.len()],
                _ if case.durable() => vec![true; new.len()],
                _ => {
                    let mut v = vec![true; new.len()];
                    if let Some(last) = v.last_mut() {
                        *last = false;
                    }
                    v
                }
            };
            assert!(
                case.point == "deliver.claimed" || !new.is_empty(),
                "{case:?}: killed in a delivery that delivered nothing"
            );
            assert_eq!(
                marked, expected,
                "{case:?}: deliveries journaled in the call in flight, marked delivered"
            );
        }
        op => assert_eq!(
            present(host, op).await,
            case.durable(),
            "{case:?}: the operation in flight ({op:?}) is present iff the kill came after its commit"
        ),
    }
}

/// Every execution ran under a durable permit, at most once; every journaled delivery is an
/// outbox row of its ticket and kind, with the same card each time.
async fn journals_agree(host: &Host, case: &Case) {
    let mut seen = BTreeSet::new();
    for ticket in executed(&host.dir) {
        assert!(seen.insert(ticket), "{case:?}: {ticket} executed twice");
        assert_eq!(
            has_event(host, ticket, kind::EXECUTION_STARTED).await,
            1,
            "{case:?}: {ticket} executed without exactly one durable permit"
        );
    }
    let rows = outbox(host).await;
    let mut cards: BTreeMap<Uuid, &str> = BTreeMap::new();
    let lines = delivered(&host.dir);
    for d in &lines {
        let row = rows
            .get(&d.id)
            .unwrap_or_else(|| panic!("{case:?}: delivery {d:?} is no outbox row"));
        assert_eq!(
            (row.row.ticket, row.row.payload["kind"].as_str().unwrap()),
            (d.ticket, d.kind.as_str()),
            "{case:?}: delivery {d:?} vs its row"
        );
        let first = *cards.entry(d.id).or_insert(d.card.as_str());
        assert_eq!(
            first, d.card,
            "{case:?}: delivery {} changed its card",
            d.id
        );
    }
}

/// The restarted host finishes the work (see the module docs).
async fn recover(host: &Host, t: &Transcript, flight: &Sent, case: &Case) {
    // The reviewer submits the link in flight again.
    if let Op::DecideToken {
        person,
        verdict,
        token,
        ..
    } = &flight.op
    {
        let was = present(host, &flight.op).await;
        let again = host
            .handoff
            .decide_with_token(token, host.cred(person), submission_of(verdict))
            .await;
        match again {
            Err(LinkError::Replayed) => {
                assert!(was, "{case:?}: an unspent link refused as replayed")
            }
            Ok(_) | Err(LinkError::Refused(_)) => {
                assert!(!was, "{case:?}: a spent link was accepted again: {again:?}")
            }
            Err(e) => panic!("{case:?}: submitting the link again: {e}"),
        }
    }
    // The reviewer whose answer was lost decides again: the vote counts once.
    if let Op::Decide {
        ticket,
        person,
        verdict,
    } = &flight.op
    {
        match host
            .handoff
            .decide(*ticket, host.cred(person), verdict_of(verdict), None)
            .await
        {
            Ok(_) | Err(DecideError::Refused(_)) => {}
            Err(e) => panic!("{case:?}: deciding again: {e}"),
        }
        let accepted = host
            .store
            .decisions(*ticket)
            .await
            .unwrap()
            .iter()
            .filter(|d| {
                d.person.as_ref().map(|p| p.as_str()) == Some(person.as_str())
                    && d.verdict == *verdict
                    && d.refusal.is_none()
            })
            .count();
        assert!(
            accepted <= 1,
            "{case:?}: {person}'s {verdict} counted {accepted} times"
        );
    }

    // Every proposal again, with its key.
    let mut started = BTreeSet::new();
    for ticket in tickets(host).await {
        if has_event(host, ticket.id(), kind::EXECUTION_STARTED).await > 0 {
            started.insert(ticket.id());
        }
    }
    let acked: BTreeMap<&str, TicketId> = t
        .sent
        .iter()
        .filter_map(|s| match (&s.op, t.acks.get(&s.n)) {
            (Op::Propose { key }, Some(Ack::Proposed { ticket })) => Some((key.as_str(), *ticket)),
            _ => None,
        })
        .collect();
    let mut keys: Vec<&str> = Vec::new();
    for s in &t.sent {
        if let Op::Propose { key } = &s.op {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
    }
    let mut grants = Vec::new();
    let mut pending = Vec::new();
    for k in keys {
        let before = host
            .store
            .ticket_by_key(
                &Requester::new(agent_id(AGENT), Some(person(PRINCIPAL))),
                &key(k),
            )
            .await
            .unwrap()
            .map(|t| t.id());
        let answer = host.agent.propose(action(k)).await.unwrap();
        let id = proposal_ticket(&answer);
        if let Some(before) = before {
            assert_eq!(id, before, "{case:?}: key {k} proposed again");
        }
        if let Some(acked) = acked.get(k) {
            assert_eq!(id, *acked, "{case:?}: key {k} proposed again");
        }
        if started.contains(&id) {
            assert!(
                !matches!(answer, Proposal::Allowed(_)),
                "{case:?}: {id} had a permit before the crash and got a grant again"
            );
            assert!(host.handoff.grant(id).await.unwrap().is_none(), "{case:?}");
        }
        match answer {
            Proposal::Allowed(grant) => grants.push(grant),
            Proposal::Pending(p) => pending.push(p),
            _ => {}
        }
    }

    // Reviewers approve what is pending; approved actions run.
    for p in &pending {
        for who in ["alice", "bob"] {
            match host
                .handoff
                .decide(p.id, host.cred(who), Verdict::Approve, None)
                .await
            {
                Ok(_) | Err(DecideError::Refused(_)) => {}
                Err(e) => panic!("{case:?}: {who} approving {}: {e}", p.id),
            }
        }
        if let Decision::Approved(grant) = host.agent.wait(p, Duration::ZERO).await.unwrap() {
            grants.push(grant);
        }
    }
    for grant in grants {
        let ticket = grant.ticket();
        assert!(
            !started.contains(&ticket),
            "{case:?}: {ticket} had a permit before the crash and got a grant again"
        );
        let permit = host
            .agent
            .begin(grant, BTreeMap::new())
            .await
            .unwrap_or_else(|e| panic!("{case:?}: begin {ticket}: {e}"));
        execute(&host.dir, ticket);
        host.agent
            .finish(
                permit,
                ExecutionOutcome::Succeeded {
                    output: serde_json::Value::Null,
                },
            )
            .await
            .unwrap();
    }

    // Leases and outbox claims of the dead process lapse; sweeps, resolutions, deliveries.
    host.clock.advance(3 * MIN);
    settle(host, case).await;
    host.clock.advance(48 * HOUR);
    settle(host, case).await;
}

/// Sweeps, resolves every `Unknown` ticket from the action journal, drains the outbox.
async fn settle(host: &Host, case: &Case) {
    host.handoff.expire_due().await.unwrap();
    let ran: BTreeSet<TicketId> = executed(&host.dir).into_iter().collect();
    for ticket in tickets(host).await {
        if ticket.state().name() != StateName::Unknown {
            continue;
        }
        let outcome = if ran.contains(&ticket.id()) {
            ExecutionOutcome::Succeeded {
                output: serde_json::Value::Null,
            }
        } else {
            ExecutionOutcome::Failed {
                error: "never executed: the permit was lost in a crash".into(),
            }
        };
        host.handoff
            .resolve(ticket.id(), host.cred("olga"), outcome)
            .await
            .unwrap_or_else(|e| panic!("{case:?}: resolve {}: {e}", ticket.id()));
    }
    for _ in 0..20 {
        if host.handoff.deliver_due().await.unwrap().claimed == 0 {
            return;
        }
    }
    panic!("{case:?}: the outbox never drained");
}

/// After recovery: nothing executed twice, everything delivered, nothing left in a state
/// that needs anyone.
async fn settled(host: &Host, case: &Case) {
    journals_agree(host, case).await;
    for ticket in tickets(host).await {
        let state = ticket.state().name();
        assert!(
            !matches!(
                state,
                StateName::Pending
                    | StateName::Approved
                    | StateName::Executing
                    | StateName::Unknown
            ),
            "{case:?}: ticket {} left {state}",
            ticket.id()
        );
    }
    let lines = delivered(&host.dir);
    let journaled: BTreeSet<Uuid> = lines.iter().map(|d| d.id).collect();
    for (id, entry) in outbox(host).await {
        assert_eq!(entry.status, OutboxStatus::Delivered, "{case:?}: row {id}");
        assert!(
            journaled.contains(&id),
            "{case:?}: row {id} never reached the channel"
        );
    }
}

/// The cells of one operation: the store's points, and the facade's points of that operation.
fn cells(op: &'static str) -> Vec<(&'static str, &'static str)> {
    STORE_POINTS
        .iter()
        .chain(
            FACADE_POINTS
                .iter()
                .filter(|p| p.split('.').next() == Some(op)),
        )
        .map(|point| (op, *point))
        .collect()
}

const OPERATIONS: [&str; 8] = [
    "propose",
    "decide",
    "decide_token",
    "begin",
    "finish",
    "expire",
    "resolve",
    "deliver",
];

/// Runs every cell of `op`: two crashes per cell by default, or `CRASH_RUNS` in total over the
/// whole matrix. Every run is attempted; the test fails with the list of runs that did not
/// hold.
async fn matrix(op: &'static str) {
    let total_cells: usize = OPERATIONS.iter().map(|o| cells(o).len()).sum();
    let runs_per_cell: u64 = match std::env::var("CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(total) => total.div_ceil(total_cells as u64).max(1),
        None => 2,
    };
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_250_105);
    // Later hits need longer workloads; the big run reaches further.
    let max_nth = if runs_per_cell > 4 { 12 } else { 6 };
    let mut rng = Rng::new(
        seed ^ op
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)),
    );
    let started = Instant::now();
    let mut runs = 0;
    let mut violations = Vec::new();
    for (op, point) in cells(op) {
        for run in 0..runs_per_cell {
            let case = Case {
                op,
                point,
                nth: if run == 0 {
                    1
                } else {
                    2 + rng.below(max_nth - 1)
                },
                seed: rng.next(),
            };
            runs += 1;
            // A failed check panics inside the task; the run is counted and the next one goes on.
            if tokio::spawn(crash_and_check(case)).await.is_err() {
                violations.push(case);
            }
        }
    }
    eprintln!(
        "crash matrix `{op}`: {runs} runs, {} violations, {:.1} s",
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(violations.is_empty(), "runs that failed: {violations:#?}");
}

#[tokio::test]
async fn crash_in_propose() {
    matrix("propose").await;
}

#[tokio::test]
async fn crash_in_decide() {
    matrix("decide").await;
}

#[tokio::test]
async fn crash_in_decide_with_token() {
    matrix("decide_token").await;
}

#[tokio::test]
async fn crash_in_begin() {
    matrix("begin").await;
}

#[tokio::test]
async fn crash_in_finish() {
    matrix("finish").await;
}

#[tokio::test]
async fn crash_in_expiry_sweep() {
    matrix("expire").await;
}

#[tokio::test]
async fn crash_in_resolve() {
    matrix("resolve").await;
}

#[tokio::test]
async fn crash_in_outbox_delivery() {
    matrix("deliver").await;
}
