//! Walks every (state, event) pair of the ticket lifecycle against an explicit table.
//!
//! A ticket in each of the ten states is built through the public API (`open` + `apply`);
//! each event is applied once while nothing is due (`NOW`) and once after every deadline,
//! grant and lease has passed (`LATE`). Each cell names the expected result:
//! `state` for a transition to that state, `!code` for a refusal with nothing to persist,
//! `!code>state` for a refusal that persists the ticket in `state`. Changing any cell of the
//! machine's behaviour fails this test.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_handoff::action::{ActionRequest, Requester};
use agent_handoff::audit::{kind, Actor};
use agent_handoff::policy::{
    Outcome, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement, Ruling,
};
use agent_handoff::ticket::{
    apply, open, Event, EventKind, ExecutionOutcome, LeaseId, PrincipalCheck, Refusal, Reviewer,
    StateName, Ticket, Verdict,
};
use agent_handoff::{AgentId, GroupName, PersonId, TicketId, Timestamp};
use serde_json::json;
use uuid::Uuid;

const NOW: i64 = 500;
const LATE: i64 = 1_000_000;

/// Event columns, in table order.
const COLUMNS: [&str; 12] = [
    "approve",
    "reject",
    "changes",
    "edit",
    "cancel",
    "expire",
    "begin",
    "renew",
    "finish",
    "lease_lost",
    "resolve",
    "revoke",
];

/// Expected results while nothing is due (`NOW`).
#[rustfmt::skip]
const AT_NOW: [(StateName, [&str; 12]); 10] = [
    //                     approve         reject          changes         edit            cancel              expire            begin               renew               finish              lease_lost          resolve             revoke
    (StateName::Pending,   ["pending",     "rejected",     "rejected",     "pending",      "cancelled",        "!not_due",       "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Approved,  ["!not_pending","!not_pending", "!not_pending", "!not_pending", "cancelled",        "!not_due",       "executing",        "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "cancelled"]),
    (StateName::Executing, ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "executing",        "succeeded",        "!not_due",         "!not_applicable",  "!not_applicable"]),
    (StateName::Succeeded, ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Failed,    ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Rejected,  ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Expired,   ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Cancelled, ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Stale,     ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable",  "!not_applicable"]),
    (StateName::Unknown,   ["!not_pending","!not_pending", "!not_pending", "!not_pending", "!not_applicable",  "!not_applicable","!not_applicable",  "!not_applicable",  "succeeded",        "!not_applicable",  "succeeded",        "!not_applicable"]),
];

/// Expected results after every deadline, grant and lease has passed (`LATE`).
#[rustfmt::skip]
const AT_LATE: [(StateName, [&str; 12]); 10] = [
    //                     approve                      reject                       changes                      edit                         cancel                       expire            begin                        renew                        finish                       lease_lost                   resolve                      revoke
    (StateName::Pending,   ["!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "expired",        "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired", "!deadline_passed>expired"]),
    (StateName::Approved,  ["!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "expired",        "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired",   "!grant_expired>expired"]),
    (StateName::Executing, ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!lease_expired",           "succeeded",                "unknown",                  "!not_applicable",          "!not_applicable"]),
    (StateName::Succeeded, ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Failed,    ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Rejected,  ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Expired,   ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Cancelled, ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Stale,     ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable",          "!not_applicable"]),
    (StateName::Unknown,   ["!not_pending",             "!not_pending",             "!not_pending",             "!not_pending",             "!not_applicable",          "!not_applicable","!not_applicable",          "!not_applicable",          "succeeded",                "!not_applicable",          "succeeded",                "!not_applicable"]),
];

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

fn dba(name: &str) -> Reviewer {
    Reviewer {
        person: person(name),
        groups: [GroupName::new("dba").unwrap()].into(),
    }
}

fn review() -> Ruling {
    Ruling {
        outcome: Outcome::Review(ReviewPlan {
            requirements: [ReviewRequirement {
                groups: [GroupName::new("dba").unwrap()].into(),
                approvals: 2,
            }]
            .into(),
            deadline: Duration::from_secs(10),
            approval_ttl: Duration::from_secs(5),
            veto: true,
        }),
        matched: Vec::new(),
        policy: PolicyRef {
            version: "v1".into(),
            hash: PolicyHash([0; 32]),
        },
    }
}

fn lease() -> LeaseId {
    LeaseId::from_uuid(Uuid::from_u128(42))
}

fn observed() -> BTreeMap<String, serde_json::Value> {
    [("rows".to_owned(), json!(10))].into()
}

fn ok(ticket: &Ticket, event: Event, at: i64) -> Ticket {
    match apply(ticket, event, t(at)) {
        Ok(tr) => tr.ticket,
        Err(r) => panic!("setup refused: {}", r.refusal),
    }
}

fn pending() -> Ticket {
    let request = ActionRequest::builder("db.table.drop", "table-drop-0001")
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "orders" }))
        .precondition("rows", json!(10))
        .build()
        .unwrap();
    open(
        TicketId::from_uuid(Uuid::from_u128(1)),
        Requester::new(AgentId::new("agent").unwrap(), Some(person("pat"))),
        PrincipalCheck::Person(person("pat")),
        request,
        review(),
        t(0),
    )
    .ticket
}

fn vote(who: &str, verdict: Verdict) -> Event {
    Event::Vote {
        reviewer: dba(who),
        verdict,
    }
}

fn approved() -> Ticket {
    let p = ok(&pending(), vote("alice", Verdict::Approve), 100);
    ok(&p, vote("bob", Verdict::Approve), 200)
}

fn begin_event(ticket: &Ticket, lease_expires: i64) -> Event {
    Event::Begin {
        digest: ticket.action_digest(),
        observed: observed(),
        current: review(),
        lease: lease(),
        lease_expires: t(lease_expires),
    }
}

fn executing() -> Ticket {
    let a = approved();
    ok(&a, begin_event(&a, 1_000), 300)
}

fn succeeded() -> Event {
    Event::Finish {
        lease: lease(),
        outcome: ExecutionOutcome::Succeeded { output: json!({}) },
    }
}

/// A ticket in each state, built through the public API only.
fn ticket_in(state: StateName) -> Ticket {
    let ticket = match state {
        StateName::Pending => pending(),
        StateName::Approved => approved(),
        StateName::Executing => executing(),
        StateName::Succeeded => ok(&executing(), succeeded(), 400),
        StateName::Failed => ok(
            &executing(),
            Event::Finish {
                lease: lease(),
                outcome: ExecutionOutcome::Failed {
                    error: "boom".into(),
                },
            },
            400,
        ),
        StateName::Rejected => ok(
            &pending(),
            vote(
                "alice",
                Verdict::Reject {
                    feedback: "no".into(),
                },
            ),
            100,
        ),
        StateName::Expired => ok(&pending(), Event::Expire, 10_000),
        StateName::Cancelled => ok(
            &pending(),
            Event::Cancel {
                by: Actor::Agent(AgentId::new("agent").unwrap()),
                reason: "not needed".into(),
            },
            100,
        ),
        StateName::Stale => {
            let a = approved();
            let mut wrong = observed();
            wrong.insert("rows".into(), json!(11));
            let event = Event::Begin {
                digest: a.action_digest(),
                observed: wrong,
                current: review(),
                lease: lease(),
                lease_expires: t(1_000),
            };
            apply(&a, event, t(300))
                .expect_err("stale expected")
                .ticket
                .expect("stale ticket persisted")
        }
        StateName::Unknown => ok(&executing(), Event::LeaseLost { lease: lease() }, 1_000),
    };
    assert_eq!(ticket.state().name(), state, "fixture for {state}");
    ticket
}

/// The event of a column, with valid data (right lease, right digest, eligible reviewer who
/// has not voted yet).
fn event(column: &str, ticket: &Ticket, at: i64) -> (Event, EventKind) {
    let operator = person("olga");
    let event = match column {
        "approve" => vote("dave", Verdict::Approve),
        "reject" => vote(
            "dave",
            Verdict::Reject {
                feedback: "no".into(),
            },
        ),
        "changes" => vote(
            "dave",
            Verdict::RequestChanges {
                feedback: "less".into(),
            },
        ),
        "edit" => Event::Edit {
            reviewer: dba("dave"),
            parameters: json!({ "table": "orders_old" }),
            ruling: review(),
        },
        "cancel" => Event::Cancel {
            by: Actor::Agent(AgentId::new("agent").unwrap()),
            reason: "changed plans".into(),
        },
        "expire" => Event::Expire,
        "begin" => begin_event(ticket, at + 1_000),
        "renew" => Event::Renew {
            lease: lease(),
            lease_expires: t(at + 5_000),
        },
        "finish" => succeeded(),
        "lease_lost" => Event::LeaseLost { lease: lease() },
        "resolve" => Event::Resolve {
            operator,
            outcome: ExecutionOutcome::Succeeded { output: json!({}) },
        },
        "revoke" => Event::Revoke {
            operator,
            reason: "incident".into(),
        },
        other => panic!("unknown column {other}"),
    };
    let kind = event.kind();
    (event, kind)
}

/// Applies the cell's event and describes the result in the table's notation, checking the
/// invariants every cell shares on the way.
fn observe(ticket: &Ticket, column: &str, at: i64) -> String {
    let (event, event_kind) = event(column, ticket, at);
    match apply(ticket, event, t(at)) {
        Ok(tr) => {
            assert_eq!(
                tr.ticket.version(),
                ticket.version() + 1,
                "{column}: version"
            );
            assert!(!tr.audit.is_empty(), "{column}: a transition is audited");
            assert!(tr.audit.iter().all(|r| r.kind != kind::REFUSED));
            tr.ticket.state().name().to_string()
        }
        Err(refused) => {
            let last = refused.audit.last().expect("a refusal is audited");
            assert_eq!(last.kind, kind::REFUSED);
            assert_eq!(last.data["refusal"], refused.refusal.code().as_str());
            if let Refusal::NotApplicable { state, event } = &refused.refusal {
                assert_eq!(*state, ticket.state().name());
                assert_eq!(*event, event_kind);
            }
            match refused.ticket {
                None => {
                    assert_eq!(refused.audit.len(), 1);
                    format!("!{}", refused.refusal.code().as_str())
                }
                Some(next) => {
                    assert_eq!(next.version(), ticket.version() + 1, "{column}: version");
                    assert_eq!(refused.audit.len(), 2, "{column}: change + refusal");
                    format!(
                        "!{}>{}",
                        refused.refusal.code().as_str(),
                        next.state().name()
                    )
                }
            }
        }
    }
}

fn walk(table: &[(StateName, [&str; 12]); 10], at: i64) {
    let states: Vec<StateName> = table.iter().map(|(s, _)| *s).collect();
    assert_eq!(states, StateName::ALL, "one row per state, in order");
    let mut mismatches = Vec::new();
    for (state, row) in table {
        let ticket = ticket_in(*state);
        for (column, expected) in COLUMNS.iter().zip(row) {
            let got = observe(&ticket, column, at);
            if got != *expected {
                mismatches.push(format!(
                    "({state}, {column}) at {at}: expected {expected}, got {got}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "table cells changed:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_state_and_event_while_nothing_is_due() {
    walk(&AT_NOW, NOW);
}

#[test]
fn every_state_and_event_after_every_deadline() {
    walk(&AT_LATE, LATE);
}

#[test]
fn the_columns_cover_every_event_kind() {
    let pending = pending();
    let mut kinds: Vec<EventKind> = COLUMNS.iter().map(|c| event(c, &pending, NOW).1).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, EventKind::ALL);
}
