//! Races through the facade on a multi-threaded runtime and a file-backed store (WAL,
//! `synchronous=FULL`, group commit on the writer thread, separate reader connections).
//!
//! Every task waits on a barrier so the operations really overlap; the assertions hold for
//! any interleaving (exactly one winner, typed refusals for the losers, one ticket per key),
//! so they do not depend on timing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use agent_handoff::backend::TicketFilter;
use agent_handoff::ticket::{EventKind, Refusal, StateName, TicketState, Verdict};
use agent_handoff::{DecideError, ExecuteError, Limits, Proposal, TicketId};
use support::*;
use tokio::sync::Barrier;

fn file_backed() -> Setup {
    Setup {
        backing: Backing::File,
        ..Setup::default()
    }
}

/// Counts the audit events of each kind for one ticket.
async fn kinds(h: &Harness, id: TicketId) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for kind in h.audit_kinds(id).await {
        *out.entry(kind).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_proposals_with_one_key_make_exactly_one_ticket() {
    let h = Harness::with(file_backed()).await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    // A reviewed kind and a policy-allowed kind: both must be single tickets.
    for (round, kind) in ["db.drop", "db.read", "db.drop", "db.read"]
        .iter()
        .enumerate()
    {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (agent, barrier, request) =
                    (agent.clone(), Arc::clone(&barrier), request(kind, &key));
                tokio::spawn(async move {
                    barrier.wait().await;
                    agent.propose(request).await
                })
            })
            .collect();
        let mut ids = BTreeSet::new();
        for task in tasks {
            let id = match task.await.unwrap().expect("every proposal is answered") {
                Proposal::Pending(p) => p.id,
                Proposal::Allowed(g) => g.ticket(),
                other => panic!("unexpected answer {other:?}"),
            };
            ids.insert(id);
        }
        assert_eq!(ids.len(), 1, "all 32 answers name the same ticket");
        let id = ids.pop_first().unwrap();
        let listed = all_tickets(
            h.store.as_ref(),
            TicketFilter {
                agent: Some(agent_id("ops-agent")),
                ..TicketFilter::default()
            },
        )
        .await;
        assert_eq!(listed.len(), round + 1, "one ticket per key");
        assert!(listed.iter().any(|t| t.id() == id));
        assert_eq!(kinds(&h, id).await["proposed"], 1, "proposed once");
    }
    h.handoff.verify_audit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_and_reject_races_end_in_exactly_one_decision_and_the_loser_is_refused() {
    let h = Harness::with(file_backed()).await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    const TICKETS: usize = 24;
    let mut ids = Vec::new();
    for i in 0..TICKETS {
        // 1 of dba with veto on: either vote alone decides.
        match agent
            .propose(request("db.update", &format!("u-{i}")))
            .await
            .unwrap()
        {
            Proposal::Pending(p) => ids.push(p.id),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    let barrier = Arc::new(Barrier::new(2 * TICKETS));
    let mut tasks = Vec::new();
    for &id in &ids {
        for (who, verdict) in [
            ("alice", Verdict::Approve),
            (
                "bob",
                Verdict::Reject {
                    feedback: "not today".into(),
                },
            ),
        ] {
            let (handoff, cred, barrier) =
                (h.handoff.clone(), h.cred(who).clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (id, who, handoff.decide(id, &cred, verdict, None).await)
            }));
        }
    }
    let mut winners: BTreeMap<TicketId, &str> = BTreeMap::new();
    let mut losers = 0;
    for task in tasks {
        let (id, who, result) = task.await.unwrap();
        match result {
            Ok(_) => assert!(winners.insert(id, who).is_none(), "two winners on {id}"),
            Err(DecideError::Refused(Refusal::NotPending { state })) => {
                assert!(matches!(state, StateName::Approved | StateName::Rejected));
                losers += 1;
            }
            Err(other) => panic!("the loser must get a typed refusal, got {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        TICKETS,
        "every ticket has exactly one winner"
    );
    assert_eq!(losers, TICKETS);
    for (id, winner) in winners {
        let state = h.ticket(id).await.state().name();
        let expected = if winner == "alice" {
            StateName::Approved
        } else {
            StateName::Rejected
        };
        assert_eq!(state, expected, "the ticket ended as its winner decided");
        let counts = kinds(&h, id).await;
        let decided = counts.get("approved").copied().unwrap_or(0)
            + counts.get("rejected").copied().unwrap_or(0);
        assert_eq!(decided, 1, "decided once: {counts:?}");
        assert_eq!(counts.get("refused"), Some(&1), "the loser is audited");
    }
    h.handoff.verify_audit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_begins_on_one_approved_ticket_issue_exactly_one_permit() {
    let h = Harness::with(file_backed()).await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    for i in 0..16 {
        let id = match agent
            .propose(request("db.read", &format!("r-{i}")))
            .await
            .unwrap()
        {
            Proposal::Allowed(g) => g.ticket(),
            other => panic!("unexpected answer {other:?}"),
        };
        // Two grants for one ticket, as two processes reloading it would have.
        let grants = [
            h.handoff.grant(id).await.unwrap().unwrap(),
            h.handoff.grant(id).await.unwrap().unwrap(),
        ];
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = grants
            .into_iter()
            .map(|grant| {
                let (agent, barrier) = (agent.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    agent.begin(grant, BTreeMap::new()).await
                })
            })
            .collect();
        let mut permits = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(permit) => permits.push(permit),
                Err(ExecuteError::Refused(Refusal::NotApplicable { state, event })) => {
                    assert_eq!((state, event), (StateName::Executing, EventKind::Begin));
                }
                Err(other) => panic!("the second begin must be refused, got {other:?}"),
            }
        }
        assert_eq!(permits.len(), 1, "exactly one permit for ticket {id}");
        assert_eq!(kinds(&h, id).await["execution_started"], 1);
        let permit = permits.pop().unwrap();
        assert!(matches!(
            h.ticket(id).await.state(),
            TicketState::Executing { .. }
        ));
        agent
            .finish(
                permit,
                agent_handoff::ticket::ExecutionOutcome::Succeeded {
                    output: serde_json::Value::Null,
                },
            )
            .await
            .unwrap();
    }
    h.handoff.verify_audit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_approvals_from_distinct_reviewers_all_count_and_approve_exactly_once() {
    const N: usize = 12;
    let policy = standard_policy().with("db.quorum", review(&[req("dba", N as u32)], HOUR, HOUR));
    let h = Harness::with(Setup {
        backing: Backing::File,
        policy,
        extra_dbas: N,
        limits: Limits::default(),
        interpose: false,
    })
    .await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    for round in 0..3 {
        let id = match agent
            .propose(request("db.quorum", &format!("q-{round}")))
            .await
            .unwrap()
        {
            Proposal::Pending(p) => p.id,
            other => panic!("unexpected answer {other:?}"),
        };
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = h
            .dbas
            .iter()
            .cloned()
            .map(|cred| {
                let (handoff, barrier) = (h.handoff.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    handoff.decide(id, &cred, Verdict::Approve, None).await
                })
            })
            .collect();
        for task in tasks {
            // Votes commute: a vote that loses the compare-and-swap is re-applied.
            task.await.unwrap().expect("every approval is counted");
        }
        let ticket = h.ticket(id).await;
        let TicketState::Approved(approval) = ticket.state() else {
            panic!("expected approval, got {:?}", ticket.state());
        };
        let expected: BTreeSet<_> = (0..N).map(|i| person(&format!("dba-{i:02}"))).collect();
        assert_eq!(
            approval.by,
            agent_handoff::ticket::ApprovedBy::Reviewers(expected)
        );
        let counts = kinds(&h, id).await;
        assert_eq!(counts["voted"], N, "{counts:?}");
        assert_eq!(counts["approved"], 1, "approved exactly once: {counts:?}");
        assert!(!counts.contains_key("refused"), "{counts:?}");
    }
    h.handoff.verify_audit().await.unwrap();
}

/// Votes commute: with veto off, 64 eligible reviewers rejecting at once (half with a
/// credential, half through their own decision link) must all be answered `Ok` — a vote that
/// lost the compare-and-swap is merged by the store or re-applied by the engine, never
/// answered `VersionConflict` — and each counted once: 64 votes on the ticket, 64 `voted`
/// events, 64 accepted decision rows, no refusal. Then 64 approvals meeting a quorum of 64 at
/// once approve the ticket exactly once, by all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_commuting_votes_are_all_accepted_and_counted_once() {
    const N: usize = 64;
    let policy = standard_policy()
        .with("db.poll", review_no_veto(&[req("dba", 1000)], HOUR, HOUR))
        .with(
            "db.quorum",
            review_no_veto(&[req("dba", N as u32)], HOUR, HOUR),
        );
    let h = Harness::with_links(
        Setup {
            backing: Backing::File,
            policy,
            extra_dbas: N,
            limits: Limits::default(),
            interpose: false,
        },
        LinkSetup::standard(),
    )
    .await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    for (round, kind) in ["db.poll", "db.quorum"].into_iter().enumerate() {
        let id = match agent
            .propose(request(kind, &format!("c-{round}")))
            .await
            .unwrap()
        {
            Proposal::Pending(p) => p.id,
            other => panic!("unexpected answer {other:?}"),
        };
        let ticket = h.ticket(id).await;
        let barrier = Arc::new(Barrier::new(N));
        let tasks: Vec<_> = h
            .dbas
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, cred)| {
                let (handoff, barrier) = (h.handoff.clone(), Arc::clone(&barrier));
                let (verdict, kind) = if round == 0 {
                    (
                        Verdict::Reject {
                            feedback: format!("no from {i}"),
                        },
                        agent_handoff::token::VerdictKind::Reject,
                    )
                } else {
                    (Verdict::Approve, agent_handoff::token::VerdictKind::Approve)
                };
                let token = (i % 2 == 1).then(|| {
                    let who = person(&format!("dba-{i:02}"));
                    h.handoff
                        .mint_links(&ticket, Some(who), h.now())
                        .unwrap()
                        .into_iter()
                        .find(|l| l.verdict == kind)
                        .unwrap()
                        .token
                });
                tokio::spawn(async move {
                    barrier.wait().await;
                    match token {
                        None => handoff
                            .decide(id, &cred, verdict, None)
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Some(token) => {
                            let submission = match verdict {
                                Verdict::Reject { feedback } => {
                                    agent_handoff::TokenSubmission::new().with_feedback(feedback)
                                }
                                _ => agent_handoff::TokenSubmission::new(),
                            };
                            handoff
                                .decide_with_token(&token, &cred, submission)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                        }
                    }
                })
            })
            .collect();
        let mut failed = Vec::new();
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                failed.push(e);
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {N} commuting votes failed: {failed:?}",
            failed.len()
        );
        let ticket = h.ticket(id).await;
        let voters: BTreeSet<_> = ticket.votes().iter().map(|v| v.person.clone()).collect();
        let everyone: BTreeSet<_> = (0..N).map(|i| person(&format!("dba-{i:02}"))).collect();
        assert_eq!(ticket.votes().len(), N, "one vote each");
        assert_eq!(voters, everyone);
        let counts = kinds(&h, id).await;
        assert_eq!(counts["voted"], N, "{counts:?}");
        assert!(!counts.contains_key("refused"), "{counts:?}");
        let decisions = h.decisions(id).await;
        assert_eq!(decisions.len(), N);
        assert!(decisions.iter().all(|d| d.refusal.is_none()));
        if round == 0 {
            assert_eq!(ticket.state(), &TicketState::Pending, "veto is off");
            assert_eq!(ticket.version(), 1 + N as u64);
        } else {
            let TicketState::Approved(approval) = ticket.state() else {
                panic!("expected approval, got {:?}", ticket.state());
            };
            assert_eq!(
                approval.by,
                agent_handoff::ticket::ApprovedBy::Reviewers(everyone)
            );
            assert_eq!(counts["approved"], 1, "approved exactly once: {counts:?}");
        }
    }
    h.handoff.verify_audit().await.unwrap();
}
