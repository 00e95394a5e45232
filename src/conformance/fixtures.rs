//! Building blocks for store tests: tickets made by the pure core (`open` and `apply` with
//! fixed rulings, so no policy or facade is involved), the writes that store them, clocks, and
//! reading the chain back.
//!
//! The contract [`rules`](super::rules) are written with these; a store's own tests (what is
//! specific to that backend) can use them too. Everything here panics on failure: these are
//! test helpers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::action::{ActionRequest, Requester};
use crate::audit::{verify, Actor, AuditRecord, RawEvent, VerifySummary};
use crate::backend::{Clock, ManualClock, Store};
use crate::backend::{DecisionRow, NonceUse, OutboxRow, TicketWrite, Write};
use crate::id::{AgentId, GroupName, PersonId, TicketId};
use crate::policy::{Outcome, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement, Ruling};
use crate::ticket::{
    apply, open, Event, LeaseId, PrincipalCheck, Reviewer, Ticket, Transition, Verdict,
};
use crate::timestamp::Timestamp;
use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;

/// A fixed instant the tests start from (2023-11-14T22:13:20Z).
pub const T0: i64 = 1_700_000_000_000;

/// How long reviewers have on a `review` ruling.
pub const REVIEW_DEADLINE: Duration = Duration::from_secs(60);

/// How long an `allow` ruling's grant lasts.
pub const GRANT_TTL: Duration = Duration::from_secs(30);

/// The instant `ms` milliseconds after the Unix epoch.
pub fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

/// An agent id (panics if `name` is not a valid one).
pub fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

/// A person id (panics if `name` is not a valid one).
pub fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

/// A group name (panics if `name` is not a valid one).
pub fn group(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

/// 16 random bytes.
pub fn random16() -> [u8; 16] {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// A fresh random ticket id.
pub fn new_id() -> TicketId {
    TicketId::from_uuid(Uuid::from_bytes(random16()))
}

fn policy_ref() -> PolicyRef {
    PolicyRef {
        version: "test".into(),
        hash: PolicyHash([7; 32]),
    }
}

/// One approval from `group`, 60 s to decide, veto on.
pub fn review_by(group_name: &str) -> Ruling {
    Ruling {
        outcome: Outcome::Review(ReviewPlan {
            requirements: [ReviewRequirement {
                groups: [group(group_name)].into(),
                approvals: 1,
            }]
            .into(),
            deadline: REVIEW_DEADLINE,
            approval_ttl: Duration::from_secs(600),
            veto: true,
        }),
        matched: Vec::new(),
        policy: policy_ref(),
    }
}

/// A thousand approvals from `dba`, veto off, an hour to decide: votes keep it pending.
pub fn poll() -> Ruling {
    Ruling {
        outcome: Outcome::Review(ReviewPlan {
            requirements: [ReviewRequirement {
                groups: [group("dba")].into(),
                approvals: 1000,
            }]
            .into(),
            deadline: Duration::from_secs(3600),
            approval_ttl: Duration::from_secs(3600),
            veto: false,
        }),
        matched: Vec::new(),
        policy: policy_ref(),
    }
}

/// One approval from `dba`.
pub fn review() -> Ruling {
    review_by("dba")
}

/// Allowed by policy for 30 s.
pub fn allow() -> Ruling {
    Ruling {
        outcome: Outcome::Allow {
            grant_ttl: GRANT_TTL,
        },
        matched: Vec::new(),
        policy: policy_ref(),
    }
}

/// Denied by policy.
pub fn deny() -> Ruling {
    Ruling {
        outcome: Outcome::Deny {
            reason: "not here".into(),
        },
        matched: Vec::new(),
        policy: policy_ref(),
    }
}

/// A proposal by `agent_name` (acting on its own) under idempotency key `idempotency-<key>`,
/// ruled `ruling`, at `now`.
pub fn propose(agent_name: &str, key: &str, ruling: Ruling, now: Timestamp) -> Transition {
    propose_for(agent_name, None, key, ruling, now)
}

/// Like [`propose`], by `agent_name` acting for `principal` (`None`: on its own).
pub fn propose_for(
    agent_name: &str,
    principal: Option<&str>,
    key: &str,
    ruling: Ruling,
    now: Timestamp,
) -> Transition {
    let request = ActionRequest::builder("db.table.drop", format!("idempotency-{key}"))
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders" }))
        .build()
        .unwrap();
    open(
        new_id(),
        requester(agent_name, principal),
        match principal {
            Some(p) => PrincipalCheck::Person(person(p)),
            None => PrincipalCheck::NoPrincipal,
        },
        request,
        ruling,
        now,
    )
}

/// `agent_name` acting for `principal` (`None`: on its own).
pub fn requester(agent_name: &str, principal: Option<&str>) -> Requester {
    Requester::new(agent(agent_name), principal.map(person))
}

/// A reviewer in `groups`.
pub fn reviewer(name: &str, groups: &[&str]) -> Reviewer {
    Reviewer {
        person: person(name),
        groups: groups.iter().map(|g| group(g)).collect(),
    }
}

/// Applies an event that must succeed, its audit records' texts sealed (as the engine seals
/// them before a commit: a store refuses unsealed texts).
pub fn step(ticket: &Ticket, event: Event, now: Timestamp) -> Transition {
    match apply(ticket, event, now) {
        Ok(mut transition) => {
            seal(&mut transition.audit);
            transition
        }
        Err(refused) => panic!("event refused: {}", refused.refusal),
    }
}

/// Seals every record's pending texts with fresh random salts.
pub fn seal(records: &mut [AuditRecord]) {
    for record in records {
        record.seal(|| {
            let mut salt = [0u8; 32];
            getrandom::fill(&mut salt).unwrap();
            salt
        });
    }
}

/// `who` (a dba) approves.
pub fn approve(ticket: &Ticket, who: &str, now: Timestamp) -> Transition {
    step(
        ticket,
        Event::Vote {
            reviewer: reviewer(who, &["dba"]),
            verdict: Verdict::Approve,
        },
        now,
    )
}

/// `who` (a dba) rejects.
pub fn reject(ticket: &Ticket, who: &str, now: Timestamp) -> Transition {
    step(
        ticket,
        Event::Vote {
            reviewer: reviewer(who, &["dba"]),
            verdict: Verdict::Reject {
                feedback: "no".into(),
            },
        },
        now,
    )
}

/// Starts executing an approved ticket with a lease until `lease_expires`.
pub fn begin(ticket: &Ticket, lease_expires: Timestamp, now: Timestamp) -> Transition {
    step(
        ticket,
        Event::Begin {
            digest: ticket.action_digest(),
            observed: BTreeMap::new(),
            current: ticket.ruling().clone(),
            lease: LeaseId::from_uuid(Uuid::from_bytes(random16())),
            lease_expires,
        },
        now,
    )
}

/// An audit record that identifies write number `n` in the chain.
pub fn marker(n: u64, at: Timestamp) -> AuditRecord {
    AuditRecord::new(
        None,
        at,
        "test.marker",
        Actor::System,
        json!({ "write": n }),
    )
}

/// A fresh single-use nonce that expires in 2100 (a nonce also limits its write: stores
/// refuse a write committed at or after a nonce's expiry, and some tests commit on the system
/// clock).
pub fn nonce() -> NonceUse {
    NonceUse::new(random16(), ts(4_102_444_800_000))
}

/// An outbox row for `ticket`.
pub fn outbox(ticket: TicketId, at: Timestamp) -> OutboxRow {
    OutboxRow::new(
        Uuid::from_bytes(random16()),
        ticket,
        "test",
        json!({ "ticket": ticket.to_string() }),
        at,
    )
}

/// A decision row for `ticket`.
pub fn decision(ticket: TicketId, who: &str, verdict: &str, at: Timestamp) -> DecisionRow {
    DecisionRow::new(ticket, Some(person(who)), verdict, at)
}

/// Inserting a new ticket with the audit records of its proposal.
pub fn insert(transition: &Transition) -> Write {
    Write::new()
        .with_ticket(TicketWrite::Insert(Box::new(transition.ticket.clone())))
        .with_audit_records(transition.audit.clone())
}

/// Replacing `from` by the transition's ticket, with its audit records.
pub fn update(from: &Ticket, transition: &Transition) -> Write {
    Write::new()
        .with_ticket(TicketWrite::Update {
            ticket: Box::new(transition.ticket.clone()),
            expected_version: from.version(),
        })
        .with_audit_records(transition.audit.clone())
}

/// Every stored audit event, read in pages.
pub async fn chain<S: Store + ?Sized>(store: &S) -> Vec<RawEvent> {
    let mut events: Vec<RawEvent> = Vec::new();
    loop {
        let from = events.last().map_or(1, |e| e.seq + 1);
        let page = store.audit_events(from, 97).await.unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// Verifies the whole stored chain and checks it ends at the store's head.
pub async fn verify_chain<S: Store + ?Sized>(store: &S) -> VerifySummary {
    let events = chain(store).await;
    let summary = verify(&events).unwrap_or_else(|e| panic!("audit chain does not verify: {e}"));
    assert_eq!(
        summary.head,
        store.audit_head().await.unwrap(),
        "the store's head is the verified chain's end"
    );
    summary
}

/// A clock a test can set to any instant, backwards too (a stepped wall clock). Sleepers are
/// served by an inner [`ManualClock`] that only moves forward.
#[derive(Debug, Clone)]
pub struct SteppingClock {
    now: Arc<Mutex<Timestamp>>,
    sleepers: ManualClock,
}

impl SteppingClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            sleepers: ManualClock::new(start),
        }
    }

    /// Sets the time, in either direction.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap() = to;
        self.sleepers.set(to);
    }
}

#[async_trait]
impl Clock for SteppingClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap()
    }

    async fn sleep_until(&self, deadline: Timestamp) {
        self.sleepers.sleep_until(deadline).await
    }
}
