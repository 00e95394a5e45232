//! End to end through the `Handoff` facade, on a manual clock shared with a SQLite store.
//!
//! Policy is a fixed kind → outcome table (`support::KindPolicy`), so these tests do not
//! depend on the policy document format; identity is a `StaticDirectory` with tokens.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_handoff::action::Requester;
use agent_handoff::audit::{Actor, AuditEvent};
use agent_handoff::policy::Outcome;
use agent_handoff::ticket::{
    ApprovedBy, ExecutionOutcome, ExpiredStage, PrincipalCheck, Refusal, RejectedBy, StaleReason,
    StateName, TicketState, Verdict,
};
use agent_handoff::{
    AgentHandle, Credential, DecideError, Decided, Decision, ExecuteError, FreezeScope, Grant,
    Limits, PendingTicket, Proposal, ProposeError, RunError, Timestamp,
};
use serde_json::{json, Value};
use support::*;

fn ms(t: i64) -> Timestamp {
    Timestamp::from_unix_millis(t)
}

fn at(offset: Duration) -> Timestamp {
    ms(START).saturating_add(offset)
}

#[track_caller]
fn pending(p: Proposal) -> PendingTicket {
    match p {
        Proposal::Pending(p) => p,
        other => panic!("expected a pending ticket, got {other:?}"),
    }
}

#[track_caller]
fn allowed(p: Proposal) -> Grant {
    match p {
        Proposal::Allowed(g) => g,
        other => panic!("expected an allowed proposal, got {other:?}"),
    }
}

#[track_caller]
fn approved(d: Decision) -> Grant {
    match d {
        Decision::Approved(g) => g,
        other => panic!("expected an approval, got {other:?}"),
    }
}

fn no_observations() -> BTreeMap<String, Value> {
    BTreeMap::new()
}

fn succeeded() -> ExecutionOutcome {
    ExecutionOutcome::Succeeded {
        output: json!({ "ok": true }),
    }
}

impl Harness {
    fn ops(&self) -> AgentHandle {
        self.handoff.agent(agent_id("ops-agent"), None)
    }

    /// The agent acting for `pat` (named by the host with an alias).
    fn for_pat(&self) -> AgentHandle {
        self.handoff
            .agent(agent_id("pat-agent"), Some(person("pat@example.com")))
    }

    async fn approve(
        &self,
        id: agent_handoff::TicketId,
        who: &str,
    ) -> Result<agent_handoff::ticket::Ticket, DecideError> {
        self.handoff
            .decide(id, self.cred(who), Verdict::Approve, None)
            .await
            .map(Decided::into_ticket)
    }

    /// The chain verifies, and covers every stored event.
    async fn assert_audit_ok(&self) {
        let report = self
            .handoff
            .verify_audit()
            .await
            .expect("audit chain verifies");
        assert_eq!(report.events, self.all_audit().await.len() as u64);
        assert_eq!(report.head, self.head().await);
    }
}

/// The `refused` events of a ticket, as (actor, refusal code).
fn refusals(events: &[AuditEvent]) -> Vec<(Actor, String)> {
    events
        .iter()
        .map(AuditEvent::record)
        .filter(|r| r.kind == "refused")
        .map(|r| {
            (
                r.actor.clone(),
                r.data["refusal"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Allowed and denied proposals are tickets too.

#[tokio::test]
async fn an_allowed_action_begins_and_finishes_and_every_step_is_audited() {
    let h = Harness::new().await;
    let agent = h.ops();
    let request = request("db.read", "read-1");
    let grant = allowed(agent.propose(request.clone()).await.unwrap());
    assert_eq!(grant.approved_by(), &ApprovedBy::Policy);
    assert_eq!(grant.valid_until(), at(5 * MIN));
    assert_eq!(grant.action().parameters(), request.parameters());
    assert_eq!(grant.action().digest(), request.digest());
    assert!(!grant.action().was_edited());
    let id = grant.ticket();

    let permit = agent.begin(grant, no_observations()).await.unwrap();
    assert_eq!(permit.ticket(), id);
    assert_eq!(permit.lease_expires(), at(Limits::default().lease_ttl));
    assert_eq!(h.ticket(id).await.state().name(), StateName::Executing);
    agent.finish(permit, succeeded()).await.unwrap();

    let details = h.handoff.ticket(id).await.unwrap().unwrap();
    assert!(matches!(
        details.ticket.state(),
        TicketState::Succeeded {
            resolved_by: None,
            ..
        }
    ));
    let kinds: Vec<&str> = details
        .audit
        .iter()
        .map(|e| e.record().kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "proposed",
            "approved",
            "execution_started",
            "execution_finished"
        ]
    );
    assert_eq!(details.audit[1].record().actor, Actor::Policy);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_denied_action_is_recorded_as_a_ticket_rejected_by_policy_with_the_ruling() {
    let h = Harness::new().await;
    let agent = h.ops();
    let Proposal::Denied {
        ticket,
        reason,
        ruling,
    } = agent
        .propose(request("payment.send", "pay-1"))
        .await
        .unwrap()
    else {
        panic!("expected a denial");
    };
    assert_eq!(reason, "payments over the limit are denied");
    assert!(matches!(ruling.outcome, Outcome::Deny { .. }));
    assert_eq!(ruling.matched[0].rule.as_str(), "payment.send");

    let stored = h.ticket(ticket).await;
    assert_eq!(
        stored.state(),
        &TicketState::Rejected {
            by: RejectedBy::Policy { reason },
            at: ms(START)
        }
    );
    assert_eq!(stored.ruling(), &*ruling);
    let audit = h.audit(ticket).await;
    let kinds: Vec<&str> = audit.iter().map(|e| e.record().kind.as_str()).collect();
    assert_eq!(kinds, ["proposed", "rejected"]);
    assert_eq!(audit[1].record().actor, Actor::Policy);
    assert!(h.handoff.grant(ticket).await.unwrap().is_none());
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency.

#[tokio::test]
async fn the_same_key_and_action_returns_the_same_ticket_in_whatever_state_it_is() {
    let h = Harness::new().await;
    let agent = h.ops();

    // Pending: the same pending ticket, and nothing written.
    let first = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let head = h.head().await;
    let again = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    assert_eq!(again, first);
    assert_eq!(h.head().await, head, "a replay writes nothing");

    // Approved: the grant of the same ticket.
    h.approve(first.id, "alice").await.unwrap();
    h.approve(first.id, "bob").await.unwrap();
    let grant = allowed(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    assert_eq!(grant.ticket(), first.id);
    assert_eq!(
        grant.approved_by(),
        &ApprovedBy::Reviewers(persons(&["alice", "bob"]))
    );

    // Denied: the same denial.
    let Proposal::Denied { ticket: denied, .. } = agent
        .propose(request("payment.send", "pay-1"))
        .await
        .unwrap()
    else {
        panic!("expected a denial")
    };
    let Proposal::Denied { ticket: again, .. } = agent
        .propose(request("payment.send", "pay-1"))
        .await
        .unwrap()
    else {
        panic!("expected the same denial")
    };
    assert_eq!(again, denied);

    // Expired stays expired, before and after the expiry is persisted.
    let late = pending(agent.propose(request("db.drop", "drop-2")).await.unwrap());
    h.clock.set(late.deadline);
    for _ in 0..2 {
        match agent.propose(request("db.drop", "drop-2")).await.unwrap() {
            Proposal::Closed { ticket, state } => {
                assert_eq!((ticket, state), (late.id, StateName::Expired));
            }
            other => panic!("expected the expired ticket, got {other:?}"),
        }
        h.handoff.expire_due().await.unwrap();
    }
    assert!(matches!(
        h.ticket(late.id).await.state(),
        TicketState::Expired {
            stage: ExpiredStage::Review,
            ..
        }
    ));

    // Running it: the ticket is closed for this key.
    let permit = agent.begin(grant, no_observations()).await;
    assert!(permit.is_err(), "the drop-1 grant lapsed with the clock");
    assert_eq!(h.all_tickets().await.len(), 3);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn the_same_key_with_another_action_is_a_typed_conflict_that_writes_nothing() {
    let h = Harness::new().await;
    let agent = h.ops();
    let first = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let head = h.head().await;

    let other_params = agent_handoff::action::ActionRequest::builder("db.drop", idem("drop-1"))
        .target("postgres://prod/orders")
        .parameters(json!({ "table": "customers", "limit": 1000 }))
        .reason("the test says so")
        .build()
        .unwrap();
    for conflicting in [other_params, request("db.update", "drop-1")] {
        match agent.propose(conflicting).await {
            Err(ProposeError::IdempotencyConflict { existing }) => assert_eq!(existing, first.id),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert_eq!(h.head().await, head, "nothing was written");
    assert_eq!(h.all_tickets().await.len(), 1);

    // Keys are scoped per requester: another agent may use the same key.
    let other = h.handoff.agent(agent_id("other-agent"), None);
    let theirs = pending(other.propose(request("db.update", "drop-1")).await.unwrap());
    assert_ne!(theirs.id, first.id);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Reviewers: quorum, self-approval, eligibility, authentication.

#[tokio::test]
async fn a_quorum_of_two_refuses_self_approval_ineligible_reviewers_and_bad_tokens_and_audits_each()
{
    let h = Harness::new().await;
    let agent = h.for_pat();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let ticket = h.ticket(p.id).await;
    assert_eq!(ticket.principal(), &PrincipalCheck::Person(person("pat")));

    // The principal may not approve, with a token or through a chat platform.
    let pat_on_feishu = h.platform_cred("feishu", "ou_pat").await;
    for cred in [h.cred("pat").clone(), pat_on_feishu] {
        match h.handoff.decide(p.id, &cred, Verdict::Approve, None).await {
            Err(DecideError::Refused(Refusal::SelfApproval { person: who })) => {
                assert_eq!(who, person("pat"));
            }
            other => panic!("expected a self-approval refusal, got {other:?}"),
        }
    }
    // Someone outside every required group can neither approve nor veto (the second attempt
    // within the minute is refused too, but only counted: see below).
    for verdict in [
        Verdict::Approve,
        Verdict::Reject {
            feedback: "no".into(),
        },
    ] {
        match h.handoff.decide(p.id, h.cred("erin"), verdict, None).await {
            Err(DecideError::Refused(Refusal::NotEligible { person: who })) => {
                assert_eq!(who, person("erin"));
            }
            other => panic!("expected an eligibility refusal, got {other:?}"),
        }
    }
    // A forged token is refused before anything else.
    match h
        .handoff
        .decide(
            p.id,
            &Credential::token("aht_forged"),
            Verdict::Approve,
            None,
        )
        .await
    {
        Err(DecideError::Unauthenticated(_)) => {}
        other => panic!("expected an authentication refusal, got {other:?}"),
    }
    assert_eq!(h.ticket(p.id).await.state(), &TicketState::Pending);

    // One approval is not enough; repeating it counts once.
    let after_alice = h.approve(p.id, "alice").await.unwrap();
    assert_eq!(after_alice.state(), &TicketState::Pending);
    assert_eq!(after_alice.progress(h.now())[0].needed, 1);
    let repeated = h.approve(p.id, "alice").await.unwrap();
    assert_eq!(repeated.version(), after_alice.version());
    assert_eq!(
        agent
            .wait(&p, Duration::ZERO)
            .await
            .unwrap()
            .name_for_test(),
        "still_pending"
    );

    let done = h.approve(p.id, "bob").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::from_secs(1)).await.unwrap());
    assert_eq!(grant.ticket(), p.id);
    assert_eq!(
        grant.approved_by(),
        &ApprovedBy::Reviewers(persons(&["alice", "bob"]))
    );
    assert_eq!(done.state().name(), StateName::Approved);

    // Every refusal is audited, and the authenticated ones are decisions too.
    let audit = h.audit(p.id).await;
    assert_eq!(
        refusals(&audit),
        [
            (Actor::Reviewer(person("pat")), "self_approval".to_owned()),
            (Actor::Reviewer(person("pat")), "self_approval".to_owned()),
            (Actor::Reviewer(person("erin")), "not_eligible".to_owned()),
            (Actor::Unauthenticated, "unauthenticated".to_owned()),
        ]
    );
    let decisions: Vec<(Option<String>, String, Option<String>)> = h
        .decisions(p.id)
        .await
        .into_iter()
        .map(|d| (d.person.map(|p| p.to_string()), d.verdict, d.refusal))
        .collect();
    let row = |who: &str, verdict: &str, refusal: Option<&str>| {
        (
            Some(who.to_owned()),
            verdict.to_owned(),
            refusal.map(str::to_owned),
        )
    };
    assert_eq!(
        decisions,
        [
            row("pat", "approve", Some("self_approval")),
            row("pat", "approve", Some("self_approval")),
            row("erin", "approve", Some("not_eligible")),
            row("alice", "approve", None),
            row("bob", "approve", None),
        ]
    );
    // Erin's second attempt is written as a count once its minute is over.
    h.clock.advance(2 * MIN);
    h.handoff.expire_due().await.unwrap();
    let summary = h.audit(p.id).await.pop().unwrap();
    let record = summary.record();
    assert_eq!(
        (
            &record.kind[..],
            &record.actor,
            &record.data["refusal"],
            &record.data["detail"]["coalesced"]
        ),
        (
            "refused",
            &Actor::Reviewer(person("erin")),
            &json!("not_eligible"),
            &json!(1)
        )
    );
    h.assert_audit_ok().await;
}

/// A short name for a decision, so assertions can compare without `PartialEq` on grants.
trait NameForTest {
    fn name_for_test(&self) -> &'static str;
}

impl NameForTest for Decision {
    fn name_for_test(&self) -> &'static str {
        match self {
            Decision::Approved(_) => "approved",
            Decision::Rejected { .. } => "rejected",
            Decision::ChangesRequested { .. } => "changes_requested",
            Decision::Denied { .. } => "denied",
            Decision::Expired => "expired",
            Decision::Cancelled { .. } => "cancelled",
            Decision::StillPending(_) => "still_pending",
            Decision::Closed(_) => "closed",
        }
    }
}

#[tokio::test]
async fn an_unresolvable_principal_fails_closed() {
    let h = Harness::new().await;
    let agent = h
        .handoff
        .agent(agent_id("ghost-agent"), Some(person("ghost@example.com")));
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    assert_eq!(
        h.ticket(p.id).await.principal(),
        &PrincipalCheck::Unresolved
    );
    match h.approve(p.id, "alice").await {
        Err(DecideError::Refused(Refusal::PrincipalUnresolved)) => {}
        other => panic!("expected a fail-closed refusal, got {other:?}"),
    }
    // Rejecting is always safe.
    h.handoff
        .decide(
            p.id,
            h.cred("alice"),
            Verdict::Reject {
                feedback: "who is this for?".into(),
            },
            None,
        )
        .await
        .unwrap();
    match agent.wait(&p, Duration::ZERO).await.unwrap() {
        Decision::Rejected { by, feedback } => {
            assert_eq!(
                (by, feedback.as_str()),
                (person("alice"), "who is this for?")
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn every_requirement_must_be_met_and_dba_approvals_alone_do_not_approve() {
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.migrate", "m-1")).await.unwrap());
    h.approve(p.id, "alice").await.unwrap();
    let t = h.approve(p.id, "bob").await.unwrap();
    assert_eq!(
        t.state(),
        &TicketState::Pending,
        "2 of dba alone do not approve"
    );
    let progress = t.progress(h.now());
    let needed: BTreeMap<String, u32> = progress
        .iter()
        .map(|p| (p.requirement.to_string(), p.needed))
        .collect();
    assert_eq!(
        needed,
        BTreeMap::from([("1 of finance".to_owned(), 1), ("2 of dba".to_owned(), 0)])
    );
    // A third DBA does not help either.
    let t = h.approve(p.id, "carol").await.unwrap();
    assert_eq!(t.state(), &TicketState::Pending);
    assert_eq!(
        agent
            .wait(&p, Duration::ZERO)
            .await
            .unwrap()
            .name_for_test(),
        "still_pending"
    );

    h.approve(p.id, "dave").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    assert_eq!(
        grant.approved_by(),
        &ApprovedBy::Reviewers(persons(&["alice", "bob", "carol", "dave"]))
    );
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Deadlines and ttls.

#[tokio::test]
async fn wait_returns_expired_at_the_deadline_without_a_sweeper_and_the_expiry_is_persisted() {
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    assert_eq!(p.deadline, at(HOUR));

    let waiter = {
        let (agent, p) = (agent.clone(), p.clone());
        tokio::spawn(async move { agent.wait(&p, 10 * HOUR).await })
    };
    until(|| h.clock.sleepers() > 0).await; // the waiter is parked on the clock
    h.clock.set(p.deadline);
    let decision = waiter.await.unwrap().unwrap();
    assert_eq!(decision.name_for_test(), "expired");

    // Persisted by the waiter itself (nobody swept), at the deadline, not when noticed.
    assert_eq!(
        h.ticket(p.id).await.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Review,
            at: p.deadline
        }
    );
    assert_eq!(h.audit_kinds(p.id).await, ["proposed", "expired"]);
    assert_eq!(
        h.handoff.expire_due().await.unwrap(),
        0,
        "nothing left to sweep"
    );

    // A decision after that is refused.
    match h.approve(p.id, "alice").await {
        Err(DecideError::Refused(Refusal::NotPending { state })) => {
            assert_eq!(state, StateName::Expired);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_decision_at_the_deadline_is_refused_and_expires_the_ticket() {
    let h = Harness::new().await;
    let agent = h.ops();
    let early = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    let late = pending(agent.propose(request("db.update", "u-2")).await.unwrap());

    h.clock
        .set(early.deadline.saturating_sub(Duration::from_millis(1)));
    let t = h.approve(early.id, "alice").await.unwrap();
    assert_eq!(
        t.state().name(),
        StateName::Approved,
        "one ms before is in time"
    );

    h.clock.set(late.deadline);
    match h.approve(late.id, "alice").await {
        Err(DecideError::Refused(Refusal::DeadlinePassed { deadline })) => {
            assert_eq!(deadline, late.deadline);
        }
        other => panic!("expected a deadline refusal, got {other:?}"),
    }
    assert_eq!(
        h.ticket(late.id).await.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Review,
            at: late.deadline
        }
    );
    let rows = h.decisions(late.id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].refusal.as_deref(), Some("deadline_passed"));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn deadlines_are_judged_at_commit_time_not_when_the_decision_was_computed() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    // Alice's approval is computed before the deadline; the deadline passes before it commits.
    let (clock, deadline) = (h.clock.clone(), p.deadline);
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move { clock.set(deadline) });
    match h.approve(p.id, "alice").await {
        Err(DecideError::Refused(Refusal::DeadlinePassed { deadline })) => {
            assert_eq!(deadline, p.deadline);
        }
        other => panic!("expected a deadline refusal, got {other:?}"),
    }
    assert_eq!(
        h.ticket(p.id).await.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Review,
            at: p.deadline
        }
    );

    // Same for a lease: a renewal computed before the lease lapsed cannot commit after it.
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let mut permit = agent.begin(grant, no_observations()).await.unwrap();
    let lease_end = permit.lease_expires();
    let clock = h.clock.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move { clock.set(lease_end) });
    match agent.renew(&mut permit).await {
        Err(ExecuteError::Refused(Refusal::LeaseExpired { expired_at })) => {
            assert_eq!(expired_at, lease_end);
        }
        other => panic!("expected a lapsed lease, got {other:?}"),
    }
    assert_eq!(permit.lease_expires(), lease_end);
    assert!(matches!(
        h.ticket(permit.ticket()).await.state(),
        TicketState::Executing { lease_expires, .. } if *lease_expires == lease_end
    ));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn expire_due_sweeps_passed_deadlines_lapsed_grants_and_lost_leases() {
    let h = Harness::new().await;
    let agent = h.ops();
    let reviews: Vec<PendingTicket> = futures_join((0..3).map(|i| {
        let agent = agent.clone();
        async move {
            pending(
                agent
                    .propose(request("db.drop", &format!("d-{i}")))
                    .await
                    .unwrap(),
            )
        }
    }))
    .await;
    let unused = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let running = allowed(agent.propose(request("db.read", "r-2")).await.unwrap());
    let (unused_id, unused_until) = (unused.ticket(), unused.valid_until());
    let permit = agent.begin(running, no_observations()).await.unwrap();
    let lease_end = permit.lease_expires();

    assert_eq!(
        h.handoff.expire_due().await.unwrap(),
        0,
        "nothing is due yet"
    );
    h.clock.advance(2 * HOUR);
    assert_eq!(h.handoff.expire_due().await.unwrap(), 5);
    assert_eq!(h.handoff.expire_due().await.unwrap(), 0);

    for p in &reviews {
        assert_eq!(
            h.ticket(p.id).await.state(),
            &TicketState::Expired {
                stage: ExpiredStage::Review,
                at: p.deadline
            }
        );
    }
    assert_eq!(
        h.ticket(unused_id).await.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Grant,
            at: unused_until
        }
    );
    assert!(matches!(
        h.ticket(permit.ticket()).await.state(),
        TicketState::Unknown { since, .. } if *since == lease_end
    ));
    // Sweeps record the expiry, never a refusal.
    assert!(refusals(&h.all_audit().await).is_empty());
    h.assert_audit_ok().await;
    drop(permit);
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn a_sweep_that_loses_a_race_to_a_late_finish_records_nothing() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let permit = agent.begin(grant, no_observations()).await.unwrap();
    let id = permit.ticket();
    h.clock.set(permit.lease_expires());
    // The sweep lists the lapsed lease; the late finish lands before its write.
    let finisher = agent.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            finisher.finish(permit, succeeded()).await.unwrap();
        });
    let head = h.head().await;
    assert_eq!(
        h.handoff.expire_due().await.unwrap(),
        0,
        "nothing was moved by the sweep"
    );
    assert!(!h.interpose.as_ref().unwrap().armed(), "the race happened");
    assert_eq!(
        h.head().await.seq,
        head.seq + 1,
        "only the finish was recorded"
    );
    assert_eq!(h.ticket(id).await.state().name(), StateName::Succeeded);
    assert!(refusals(&h.all_audit().await).is_empty());
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn an_approval_older_than_the_approval_ttl_no_longer_counts_and_a_lapsed_grant_cannot_begin()
{
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    h.approve(p.id, "alice").await.unwrap();

    h.clock.advance(30 * MIN); // alice's approval lapses now
    let t = h.approve(p.id, "bob").await.unwrap();
    assert_eq!(
        t.state(),
        &TicketState::Pending,
        "alice's approval has lapsed"
    );
    assert_eq!(t.progress(h.now())[0].approvers, persons(&["bob"]));

    // Repeating a lapsed approval renews it.
    h.clock.advance(MIN);
    let t = h.approve(p.id, "alice").await.unwrap();
    let TicketState::Approved(approval) = t.state() else {
        panic!("expected approval, got {:?}", t.state());
    };
    // Valid until the earliest counting approval (bob's, at +30 min) plus the ttl.
    assert_eq!(approval.valid_until, at(60 * MIN));

    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    assert_eq!(grant.valid_until(), at(60 * MIN));
    h.clock.set(grant.valid_until());
    match agent.begin(grant, no_observations()).await {
        Err(ExecuteError::Refused(Refusal::GrantExpired { valid_until })) => {
            assert_eq!(valid_until, at(60 * MIN));
        }
        other => panic!("expected a lapsed grant, got {other:?}"),
    }
    assert_eq!(
        h.ticket(p.id).await.state(),
        &TicketState::Expired {
            stage: ExpiredStage::Grant,
            at: at(60 * MIN)
        }
    );
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Approve with edits.

#[tokio::test]
async fn an_edited_action_is_approved_with_another_approver_and_runs_with_the_edits() {
    let h = Harness::new().await;
    let agent = h.ops();
    let proposed = request("db.drop", "drop-1");
    let p = pending(agent.propose(proposed.clone()).await.unwrap());
    let edited = json!({ "table": "orders", "limit": 10 });

    let t = h
        .handoff
        .decide(
            p.id,
            h.cred("alice"),
            Verdict::ApproveWithEdits {
                parameters: edited.clone(),
            },
            Some(1),
        )
        .await
        .unwrap()
        .into_ticket();
    assert_eq!(t.state(), &TicketState::Pending);
    assert_eq!(t.edit().unwrap().editor, person("alice"));

    h.approve(p.id, "bob").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    assert_eq!(grant.action().parameters(), &edited);
    assert!(grant.action().was_edited());
    assert_ne!(grant.action().digest(), proposed.digest());
    assert_eq!(
        grant.approved_by(),
        &ApprovedBy::Reviewers(persons(&["alice", "bob"]))
    );

    let permit = agent.begin(grant, no_observations()).await.unwrap();
    assert_eq!(permit.action().parameters(), &edited);
    agent.finish(permit, succeeded()).await.unwrap();

    let ticket = h.ticket(p.id).await;
    assert_eq!(ticket.request().parameters(), proposed.parameters());
    assert_eq!(ticket.edit().unwrap().parameters, edited);
    assert_eq!(ticket.approved_request().parameters(), &edited);
    assert_eq!(ticket.proposed_digest(), proposed.digest());
    assert!(h.audit_kinds(p.id).await.contains(&"edited".to_owned()));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn the_editor_alone_cannot_approve_even_when_one_approval_suffices() {
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    let edits = Verdict::ApproveWithEdits {
        parameters: json!({ "table": "orders", "limit": 1 }),
    };
    let t = h
        .handoff
        .decide(p.id, h.cred("alice"), edits, None)
        .await
        .unwrap()
        .into_ticket();
    assert_eq!(t.state(), &TicketState::Pending);
    let t = h.approve(p.id, "alice").await.unwrap();
    assert_eq!(
        t.state(),
        &TicketState::Pending,
        "the editor needs a co-approver"
    );
    let t = h.approve(p.id, "bob").await.unwrap();
    assert_eq!(t.state().name(), StateName::Approved);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// The final check at begin.

#[tokio::test]
async fn precondition_drift_at_begin_makes_the_ticket_stale_with_the_observed_values() {
    let h = Harness::new().await;
    let agent = h.ops();
    let request = agent_handoff::action::ActionRequest::builder("db.update", idem("u-1"))
        .parameters(json!({ "table": "orders" }))
        .precondition("row_count", json!(42))
        .precondition("schema", json!("v7"))
        .build()
        .unwrap();
    let p = pending(agent.propose(request).await.unwrap());
    h.approve(p.id, "alice").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());

    let observed = BTreeMap::from([
        ("row_count".to_owned(), json!(43)),
        ("schema".to_owned(), json!("v7")),
    ]);
    match agent.begin(grant, observed.clone()).await {
        Err(ExecuteError::Refused(Refusal::PreconditionsChanged { differing })) => {
            assert_eq!(differing, ["row_count"]);
        }
        other => panic!("expected drift, got {other:?}"),
    }
    match h.ticket(p.id).await.state() {
        TicketState::Stale {
            reason: StaleReason::Preconditions { differing },
            observed: recorded,
            ..
        } => {
            assert_eq!(differing, &["row_count"]);
            assert_eq!(recorded, &observed);
        }
        other => panic!("expected a stale ticket, got {other:?}"),
    }
    assert!(h.audit_kinds(p.id).await.contains(&"stale".to_owned()));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_stricter_policy_at_begin_makes_the_ticket_stale() {
    let h = Harness::new().await;
    let agent = h.ops();

    // Allowed by policy, then the policy starts to require review.
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let id = grant.ticket();
    h.policy
        .set("db.read", review(&[req("dba", 1)], HOUR, 30 * MIN));
    match agent.begin(grant, no_observations()).await {
        Err(ExecuteError::Refused(Refusal::PolicyStricter)) => {}
        other => panic!("expected a stricter policy, got {other:?}"),
    }
    assert!(matches!(
        h.ticket(id).await.state(),
        TicketState::Stale {
            reason: StaleReason::PolicyStricter { .. },
            ..
        }
    ));

    // Approved by one DBA, then the policy wants two.
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    h.approve(p.id, "alice").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    h.policy
        .set("db.update", review(&[req("dba", 2)], HOUR, 30 * MIN));
    match agent.begin(grant, no_observations()).await {
        Err(ExecuteError::Refused(Refusal::PolicyStricter)) => {}
        other => panic!("expected a stricter policy, got {other:?}"),
    }
    assert_eq!(h.ticket(p.id).await.state().name(), StateName::Stale);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn another_agent_cannot_begin_or_cancel_a_ticket_it_did_not_propose() {
    let h = Harness::new().await;
    let owner = h.ops();
    let intruder = h.handoff.agent(agent_id("intruder"), None);
    let grant = allowed(owner.propose(request("db.read", "r-1")).await.unwrap());
    let id = grant.ticket();
    match intruder.begin(grant, no_observations()).await {
        Err(ExecuteError::NotFound(t)) => assert_eq!(t, id),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match intruder.cancel(id, "mine now").await {
        Err(ExecuteError::NotFound(t)) => assert_eq!(t, id),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The owner still can.
    let grant = h.handoff.grant(id).await.unwrap().unwrap();
    let _permit = owner.begin(grant, no_observations()).await.unwrap();
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Leases and operator controls.

#[tokio::test]
async fn a_lease_is_renewed_lapses_to_unknown_and_a_late_finish_is_still_recorded() {
    let h = Harness::with(Setup {
        limits: Limits {
            lease_ttl: 5 * MIN,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let mut permit = agent.begin(grant, no_observations()).await.unwrap();
    let id = permit.ticket();
    assert_eq!(permit.lease_expires(), at(5 * MIN));

    h.clock.advance(4 * MIN);
    agent.renew(&mut permit).await.unwrap();
    assert_eq!(permit.lease_expires(), at(9 * MIN));
    assert!(matches!(
        h.ticket(id).await.state(),
        TicketState::Executing { lease_expires, .. } if *lease_expires == at(9 * MIN)
    ));

    h.clock.set(at(9 * MIN));
    assert_eq!(h.handoff.expire_due().await.unwrap(), 1);
    assert!(matches!(
        h.ticket(id).await.state(),
        TicketState::Unknown { since, .. } if *since == at(9 * MIN)
    ));
    // Renewing a lapsed lease is refused; finishing with it is still recorded.
    match agent.renew(&mut permit).await {
        Err(ExecuteError::Refused(Refusal::NotApplicable { state, .. })) => {
            assert_eq!(state, StateName::Unknown);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    h.clock.advance(MIN);
    agent.finish(permit, succeeded()).await.unwrap();
    assert!(matches!(
        h.ticket(id).await.state(),
        TicketState::Succeeded {
            resolved_by: None,
            ..
        }
    ));
    let audit = h.audit(id).await;
    let finished = audit
        .iter()
        .find(|e| e.record().kind == "execution_finished")
        .unwrap();
    assert_eq!(finished.record().data["late"], json!(true));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn an_operator_resolves_an_unknown_ticket_and_others_may_not() {
    let h = Harness::new().await;
    let agent = h.ops();
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let permit = agent.begin(grant, no_observations()).await.unwrap();
    let id = permit.ticket();
    h.clock.set(permit.lease_expires());
    h.handoff.expire_due().await.unwrap();
    drop(permit); // the process that held it "crashed"

    let outcome = ExecutionOutcome::Failed {
        error: "half the rows were written".into(),
    };
    match h
        .handoff
        .resolve(id, h.cred("alice"), outcome.clone())
        .await
    {
        Err(DecideError::NotOperator { person }) => assert_eq!(person, "alice"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let t = h
        .handoff
        .resolve(id, h.cred("olga"), outcome)
        .await
        .unwrap();
    assert_eq!(
        t.state(),
        &TicketState::Failed {
            error: "half the rows were written".into(),
            at: h.now(),
            resolved_by: Some(person("olga")),
        }
    );
    let audit = h.audit(id).await;
    assert_eq!(
        refusals(&audit),
        [(Actor::Reviewer(person("alice")), "not_operator".to_owned())]
    );
    let resolved = audit
        .iter()
        .find(|e| e.record().kind == "resolved")
        .unwrap();
    assert_eq!(resolved.record().actor, Actor::Operator(person("olga")));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn an_operator_revokes_an_unused_approval() {
    let h = Harness::new().await;
    let agent = h.ops();
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let id = grant.ticket();
    match h.handoff.revoke(id, h.cred("bob"), "not an operator").await {
        Err(DecideError::NotOperator { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let t = h
        .handoff
        .revoke(id, h.cred("olga"), "incident in progress")
        .await
        .unwrap();
    assert!(matches!(
        t.state(),
        TicketState::Cancelled { by: Actor::Operator(op), .. } if *op == person("olga")
    ));
    match agent.begin(grant, no_observations()).await {
        Err(ExecuteError::Refused(Refusal::NotApplicable { state, .. })) => {
            assert_eq!(state, StateName::Cancelled);
        }
        other => panic!("expected the revoked grant to be refused, got {other:?}"),
    }
    assert!(h.audit_kinds(id).await.contains(&"revoked".to_owned()));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn cancelling_a_pending_ticket_wakes_its_waiter() {
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    agent.cancel(p.id, "no longer needed").await.unwrap();
    match agent.wait(&p, HOUR).await.unwrap() {
        Decision::Cancelled { reason } => assert_eq!(reason, "no longer needed"),
        other => panic!("expected a cancellation, got {other:?}"),
    }
    match h.approve(p.id, "alice").await {
        Err(DecideError::Refused(Refusal::NotPending { state })) => {
            assert_eq!(state, StateName::Cancelled);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn the_kill_switch_freezes_proposals_for_everyone_or_one_agent_and_is_audited() {
    let h = Harness::new().await;
    let ops = h.ops();
    let other = h.handoff.agent(agent_id("other-agent"), None);

    match h
        .handoff
        .freeze(h.cred("alice"), FreezeScope::All, "not mine to freeze")
        .await
    {
        Err(DecideError::NotOperator { .. }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    h.handoff
        .freeze(h.cred("olga"), FreezeScope::All, "incident 42")
        .await
        .unwrap();
    assert!(h.handoff.health().await.unwrap().frozen_all);
    for agent in [&ops, &other] {
        match agent.propose(request("db.read", "r-1")).await {
            Err(ProposeError::Frozen { reason }) => assert_eq!(reason, "incident 42"),
            other => panic!("expected a frozen refusal, got {other:?}"),
        }
    }
    assert!(
        h.all_tickets().await.is_empty(),
        "frozen proposals make no ticket"
    );

    h.handoff
        .unfreeze(h.cred("olga"), FreezeScope::All)
        .await
        .unwrap();
    let _ = allowed(ops.propose(request("db.read", "r-1")).await.unwrap());

    let scope = FreezeScope::Agent(agent_id("ops-agent"));
    h.handoff
        .freeze(h.cred("olga"), scope.clone(), "ops agent misbehaves")
        .await
        .unwrap();
    assert_eq!(
        h.handoff.health().await.unwrap().frozen_agents,
        [agent_id("ops-agent")]
    );
    assert!(matches!(
        ops.propose(request("db.read", "r-2")).await,
        Err(ProposeError::Frozen { .. })
    ));
    let _ = allowed(other.propose(request("db.read", "r-2")).await.unwrap());
    h.handoff.unfreeze(h.cred("olga"), scope).await.unwrap();
    let _ = allowed(ops.propose(request("db.read", "r-2")).await.unwrap());

    // Audit: the operator's switches and each refused proposal.
    let kinds: Vec<(String, Actor, Option<String>)> = h
        .all_audit()
        .await
        .iter()
        .map(AuditEvent::record)
        .filter(|r| r.ticket.is_none())
        .map(|r| {
            (
                r.kind.clone(),
                r.actor.clone(),
                r.data["refusal"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let olga = || Actor::Operator(person("olga"));
    let refused = |a: &str| {
        (
            "refused".to_owned(),
            Actor::Agent(agent_id(a)),
            Some("frozen".to_owned()),
        )
    };
    assert_eq!(
        kinds,
        [
            (
                "refused".to_owned(),
                Actor::Reviewer(person("alice")),
                Some("not_operator".to_owned())
            ),
            ("frozen".to_owned(), olga(), None),
            refused("ops-agent"),
            refused("other-agent"),
            ("unfrozen".to_owned(), olga(), None),
            ("frozen".to_owned(), olga(), None),
            refused("ops-agent"),
            ("unfrozen".to_owned(), olga(), None),
        ]
    );
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn the_proposal_rate_limit_is_per_agent_and_refills_with_time() {
    let h = Harness::with(Setup {
        limits: Limits {
            proposals_per_minute: 3,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let ops = h.ops();
    for i in 0..3 {
        let _ = allowed(
            ops.propose(request("db.read", &format!("r-{i}")))
                .await
                .unwrap(),
        );
    }
    assert!(matches!(
        ops.propose(request("db.read", "r-3")).await,
        Err(ProposeError::RateLimited)
    ));
    // Replays answer from the store and cost nothing; other agents have their own budget.
    let _ = allowed(ops.propose(request("db.read", "r-0")).await.unwrap());
    let other = h.handoff.agent(agent_id("other-agent"), None);
    let _ = allowed(other.propose(request("db.read", "r-0")).await.unwrap());

    h.clock.advance(Duration::from_secs(20)); // one token back
    let _ = allowed(ops.propose(request("db.read", "r-3")).await.unwrap());
    assert!(matches!(
        ops.propose(request("db.read", "r-4")).await,
        Err(ProposeError::RateLimited)
    ));
    assert_eq!(h.all_tickets().await.len(), 5);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Versions and races.

#[tokio::test]
async fn expected_version_tolerates_other_votes_but_not_an_edit() {
    let h = Harness::new().await;
    let agent = h.ops();

    // Carol looked at version 1; alice's vote came in meanwhile: carol's vote still counts.
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let seen = h.ticket(p.id).await.version();
    h.handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, Some(seen))
        .await
        .unwrap();
    let t = h
        .handoff
        .decide(p.id, h.cred("carol"), Verdict::Approve, Some(seen))
        .await
        .unwrap()
        .into_ticket();
    assert_eq!(t.state().name(), StateName::Approved);

    // Bob looked at version 1; alice edited meanwhile: bob must look again.
    let p = pending(agent.propose(request("db.drop", "drop-2")).await.unwrap());
    let seen = h.ticket(p.id).await.version();
    h.handoff
        .decide(
            p.id,
            h.cred("alice"),
            Verdict::ApproveWithEdits {
                parameters: json!({ "table": "orders", "limit": 5 }),
            },
            Some(seen),
        )
        .await
        .unwrap();
    let current = h.ticket(p.id).await.version();
    match h
        .handoff
        .decide(p.id, h.cred("bob"), Verdict::Approve, Some(seen))
        .await
    {
        Err(DecideError::StaleVersion {
            expected,
            current: now,
        }) => {
            assert_eq!((expected, now), (seen, current));
        }
        other => panic!("expected a stale version, got {other:?}"),
    }
    assert_eq!(h.ticket(p.id).await.state(), &TicketState::Pending);
    assert_eq!(
        refusals(&h.audit(p.id).await),
        [(Actor::Reviewer(person("bob")), "stale_version".to_owned())]
    );
    let last = h.decisions(p.id).await.pop().unwrap();
    assert_eq!(
        (last.person, last.refusal.as_deref()),
        (Some(person("bob")), Some("stale_version"))
    );

    let t = h
        .handoff
        .decide(p.id, h.cred("bob"), Verdict::Approve, Some(current))
        .await
        .unwrap()
        .into_ticket();
    assert_eq!(t.state().name(), StateName::Approved);
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_vote_racing_another_vote_is_reapplied_and_both_count() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let (handoff, bob) = (h.handoff.clone(), h.cred("bob").clone());
    let id = p.id;
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            handoff
                .decide(id, &bob, Verdict::Approve, None)
                .await
                .unwrap();
        });
    // Alice read version 1; bob's vote lands before her compare-and-swap.
    let t = h.approve(p.id, "alice").await.unwrap();
    assert!(!h.interpose.as_ref().unwrap().armed(), "the race happened");
    assert_eq!(t.state().name(), StateName::Approved);
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    assert_eq!(
        grant.approved_by(),
        &ApprovedBy::Reviewers(persons(&["alice", "bob"]))
    );
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn an_approval_never_counts_for_an_edit_its_reviewer_did_not_see() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    let (handoff, bob) = (h.handoff.clone(), h.cred("bob").clone());
    let id = p.id;
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            let edit = Verdict::ApproveWithEdits {
                parameters: json!({ "table": "customers", "limit": 1_000_000 }),
            };
            handoff.decide(id, &bob, edit, None).await.unwrap();
        });
    // Alice read the proposal and approves it; bob's edit lands before her write.
    match h.approve(p.id, "alice").await {
        Err(DecideError::StaleVersion { expected, current }) => {
            assert_eq!((expected, current), (1, 2));
        }
        other => panic!("alice's approval must not count for bob's edit: {other:?}"),
    }
    assert!(!h.interpose.as_ref().unwrap().armed(), "the race happened");
    let t = h.ticket(p.id).await;
    assert_eq!(t.state(), &TicketState::Pending);
    assert_eq!(
        t.votes()
            .iter()
            .map(|v| v.person.clone())
            .collect::<BTreeSet<_>>(),
        persons(&["bob"])
    );
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn a_proposal_racing_the_same_key_answers_with_the_winner() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.ops();
    let rival = agent.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            pending(rival.propose(request("db.drop", "drop-1")).await.unwrap());
        });
    let mine = pending(agent.propose(request("db.drop", "drop-1")).await.unwrap());
    assert_eq!(h.all_tickets().await.len(), 1);
    assert_eq!(h.all_tickets().await[0].id(), mine.id);

    // A different action under the raced key is a conflict, written by nobody.
    let rival = agent.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            pending(rival.propose(request("db.drop", "drop-2")).await.unwrap());
        });
    let head_before = h.head().await;
    match agent.propose(request("db.update", "drop-2")).await {
        Err(ProposeError::IdempotencyConflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let events_written = h.head().await.seq - head_before.seq;
    assert_eq!(events_written, 1, "only the rival's proposal was recorded");
    assert_eq!(h.all_tickets().await.len(), 2);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// run.

#[tokio::test]
async fn run_executes_the_closure_exactly_once_with_the_approved_action() {
    let h = Harness::new().await;
    let agent = h.ops();
    let calls = Arc::new(AtomicUsize::new(0));

    let c = Arc::clone(&calls);
    let request = request("db.read", "r-1");
    let params = agent
        .run(request.clone(), Duration::ZERO, |approved| async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(approved.parameters().clone())
        })
        .await
        .unwrap();
    assert_eq!(&params, request.parameters());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let t = h
        .store
        .ticket_by_key(&Requester::new(agent_id("ops-agent"), None), &key("r-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state().name(), StateName::Succeeded);

    // Reviewed with edits before the agent runs it: the closure sees the edited action.
    let p = pending(
        agent
            .propose(request_for("db.update", "u-1"))
            .await
            .unwrap(),
    );
    let edited = json!({ "table": "orders", "limit": 3 });
    h.handoff
        .decide(
            p.id,
            h.cred("alice"),
            Verdict::ApproveWithEdits {
                parameters: edited.clone(),
            },
            None,
        )
        .await
        .unwrap();
    h.approve(p.id, "bob").await.unwrap();
    let c = Arc::clone(&calls);
    let seen = agent
        .run(
            request_for("db.update", "u-1"),
            Duration::ZERO,
            |approved| async move {
                c.fetch_add(1, Ordering::SeqCst);
                assert!(approved.was_edited());
                Ok::<_, std::io::Error>(approved.parameters().clone())
            },
        )
        .await
        .unwrap();
    assert_eq!(seen, edited);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(h.ticket(p.id).await.state().name(), StateName::Succeeded);

    // Running the same key again does not run it again.
    let c = Arc::clone(&calls);
    match agent
        .run(request.clone(), Duration::ZERO, |_| async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Value::Null)
        })
        .await
    {
        Err(RunError::NotApproved { state, .. }) => assert_eq!(state, StateName::Succeeded),
        other => panic!("expected the closed ticket, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    h.assert_audit_ok().await;
}

fn request_for(kind: &str, key: &str) -> agent_handoff::action::ActionRequest {
    request(kind, key)
}

#[tokio::test]
async fn run_records_the_closures_error_as_a_failed_execution() {
    let h = Harness::new().await;
    let agent = h.ops();
    match agent
        .run(request("db.read", "r-1"), Duration::ZERO, |_| async {
            Err::<(), _>(std::io::Error::other("disk full"))
        })
        .await
    {
        Err(RunError::Action(e)) => assert_eq!(e.to_string(), "disk full"),
        other => panic!("expected the action's error, got {other:?}"),
    }
    let t = h
        .store
        .ticket_by_key(&Requester::new(agent_id("ops-agent"), None), &key("r-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        t.state(),
        TicketState::Failed { error, .. } if error == "disk full"
    ));
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn run_never_calls_the_closure_unless_approved() {
    let h = Harness::new().await;
    let agent = h.ops();
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |request: agent_handoff::action::ActionRequest| {
        let (agent, calls) = (agent.clone(), Arc::clone(&calls));
        async move {
            agent
                .run(request, Duration::ZERO, |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(())
                })
                .await
        }
    };

    // Denied by policy.
    match run(request("payment.send", "p-1")).await {
        Err(RunError::NotApproved { state, reason, .. }) => {
            assert_eq!(state, StateName::Rejected);
            assert_eq!(reason, "payments over the limit are denied");
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Rejected by a reviewer.
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    h.handoff
        .decide(
            p.id,
            h.cred("alice"),
            Verdict::Reject {
                feedback: "use a migration".into(),
            },
            None,
        )
        .await
        .unwrap();
    match run(request("db.update", "u-1")).await {
        Err(RunError::NotApproved { state, reason, .. }) => {
            assert_eq!(state, StateName::Rejected);
            assert!(reason.contains("use a migration"), "{reason}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Still pending when the wait ends.
    match run(request("db.drop", "d-1")).await {
        Err(RunError::StillPending(_)) => {}
        other => panic!("expected a pending ticket, got {other:?}"),
    }
    // Preconditions need `run_with`.
    let with_pre = agent_handoff::action::ActionRequest::builder("db.read", idem("r-pre"))
        .precondition("rows", json!(1))
        .build()
        .unwrap();
    match run(with_pre).await {
        Err(RunError::Execute(ExecuteError::PreconditionsNotObserved)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// Waking waiters.

#[tokio::test]
async fn wait_wakes_as_soon_as_a_decision_commits_without_the_clock_moving() {
    let h = Harness::new().await;
    let agent = h.ops();
    let p = pending(agent.propose(request("db.update", "u-1")).await.unwrap());
    let waiter = {
        let (agent, p) = (agent.clone(), p.clone());
        tokio::spawn(async move { agent.wait(&p, 10 * HOUR).await })
    };
    until(|| h.clock.sleepers() > 0).await; // parked: read the ticket, found it pending

    let decider = {
        let (handoff, alice) = (h.handoff.clone(), h.cred("alice").clone());
        tokio::spawn(async move {
            handoff
                .decide(p.id, &alice, Verdict::Approve, None)
                .await
                .unwrap()
        })
    };
    decider.await.unwrap();
    // The manual clock never moves, so a polling waiter would never wake; the bound below
    // only keeps a broken build from hanging the suite.
    let decision = tokio::time::timeout(Duration::from_secs(120), waiter)
        .await
        .expect("the waiter woke on the commit")
        .unwrap()
        .unwrap();
    assert_eq!(decision.name_for_test(), "approved");
    assert_eq!(h.now(), ms(START), "the clock never moved");
    assert_eq!(
        h.clock.sleepers(),
        0,
        "a finished wait leaves nothing asleep on the clock"
    );
}

#[tokio::test]
async fn every_engine_sharing_a_store_wakes_its_waiters_on_a_commit() {
    let h = Harness::new().await;
    // A second engine on the same store, e.g. a reviewer web app in the same process.
    let (directory, creds) = directory();
    let second = agent_handoff::Handoff::builder()
        .shared_store(Arc::clone(&h.store))
        .policy(h.policy.clone())
        .identity(directory)
        .shared_clock(Arc::new(h.clock.clone()))
        .build()
        .unwrap();
    let agent = h.ops();
    let p = pending(agent.propose(request("db.update", "u-2")).await.unwrap());
    let waiter = {
        let (agent, p) = (agent.clone(), p.clone());
        tokio::spawn(async move { agent.wait(&p, 10 * HOUR).await })
    };
    until(|| h.clock.sleepers() > 0).await;
    second
        .decide(p.id, &creds["alice"], Verdict::Approve, None)
        .await
        .unwrap();
    let decision = tokio::time::timeout(Duration::from_secs(120), waiter)
        .await
        .expect("the first engine's waiter woke on the second engine's commit")
        .unwrap()
        .unwrap();
    assert_eq!(decision.name_for_test(), "approved");
    assert_eq!(h.now(), ms(START), "the clock never moved");
}

// ---------------------------------------------------------------------------------------------
// Audit, listings, health.

#[tokio::test]
async fn verify_audit_passes_after_a_full_day_of_work_and_against_a_saved_checkpoint() {
    let h = Harness::new().await;
    let agent = h.for_pat();
    let _ = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let _ = agent.propose(request("payment.send", "p-1")).await.unwrap();
    let p = pending(agent.propose(request("db.drop", "d-1")).await.unwrap());
    let _ = h.approve(p.id, "pat").await.unwrap_err();
    let report = h.handoff.verify_audit().await.unwrap();
    assert_eq!(report.checkpoint_size, None);

    let checkpoint = h.handoff.checkpoint().await.unwrap();
    assert_eq!(checkpoint.size(), report.events);
    h.approve(p.id, "alice").await.unwrap();
    h.approve(p.id, "bob").await.unwrap();
    let grant = approved(agent.wait(&p, Duration::ZERO).await.unwrap());
    let permit = agent.begin(grant, no_observations()).await.unwrap();
    agent.finish(permit, succeeded()).await.unwrap();

    let report = h.handoff.verify_audit().await.unwrap();
    assert_eq!(report.checkpoint_size, Some(checkpoint.size()));
    assert!(report.events > checkpoint.size());
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn pending_for_lists_exactly_the_pending_tickets_naming_one_of_the_reviewers_groups() {
    let h = Harness::new().await;
    let agent = h.ops();
    let lapsed = pending(agent.propose(request("db.drop", "lapsed")).await.unwrap());
    h.clock.set(lapsed.deadline); // expired by time, never written
    let dba = pending(agent.propose(request("db.drop", "dba")).await.unwrap());
    let finance = pending(
        agent
            .propose(request("invoice.pay", "finance"))
            .await
            .unwrap(),
    );
    let both = pending(agent.propose(request("db.migrate", "both")).await.unwrap());
    let decided = pending(
        agent
            .propose(request("db.update", "decided"))
            .await
            .unwrap(),
    );
    h.approve(decided.id, "alice").await.unwrap();
    let _ = allowed(agent.propose(request("db.read", "allowed")).await.unwrap());

    let ids = |tickets: Vec<agent_handoff::ticket::Ticket>| -> BTreeSet<_> {
        tickets.iter().map(|t| t.id()).collect()
    };
    let for_alice = ids(h.handoff.pending_for(h.cred("alice")).await.unwrap());
    assert_eq!(for_alice, BTreeSet::from([dba.id, both.id]));
    let for_dave = ids(h.handoff.pending_for(h.cred("dave")).await.unwrap());
    assert_eq!(for_dave, BTreeSet::from([finance.id, both.id]));
    assert!(h
        .handoff
        .pending_for(h.cred("erin"))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        h.handoff.pending_for(&Credential::token("aht_nope")).await,
        Err(DecideError::Unauthenticated(_))
    ));

    let health = h.handoff.health().await.unwrap();
    assert_eq!(
        health.oldest_pending_age_ms,
        Some(HOUR.as_millis() as u64),
        "the lapsed ticket is still stored as pending"
    );
    h.assert_audit_ok().await;
}

#[tokio::test]
async fn the_engine_and_the_store_read_the_same_clock() {
    let h = Harness::new().await;
    h.clock.advance(Duration::from_secs(90));
    let agent = h.ops();
    let grant = allowed(agent.propose(request("db.read", "r-1")).await.unwrap());
    let t = h.ticket(grant.ticket()).await;
    assert_eq!(t.created_at(), at(Duration::from_secs(90)));
    assert_eq!(h.handoff.clock().now(), h.now());
    let audit = h.audit(t.id()).await;
    assert!(audit
        .iter()
        .all(|e| e.record().at == at(Duration::from_secs(90))));
}

#[tokio::test]
async fn a_flood_of_forged_credentials_is_refused_and_audited_in_coalesced_rows() {
    let h = Harness::with(Setup {
        limits: Limits {
            unauthenticated_audit_per_minute: 3,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let p = pending(h.ops().propose(request("db.drop", "drop-1")).await.unwrap());
    let forged = Credential::token("aht_forged");
    let flood = || async {
        match h
            .handoff
            .decide(p.id, &forged, Verdict::Approve, None)
            .await
        {
            Err(DecideError::Unauthenticated(_)) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let unauthenticated = || async {
        h.all_audit()
            .await
            .iter()
            .map(AuditEvent::record)
            .filter(|r| r.actor == Actor::Unauthenticated)
            .map(|r| r.data["detail"]["coalesced"].as_u64())
            .collect::<Vec<_>>()
    };

    for _ in 0..100 {
        flood().await;
    }
    assert_eq!(
        unauthenticated().await,
        [None, None, None],
        "3 rows, then counted"
    );

    h.clock.advance(MIN);
    flood().await;
    assert_eq!(
        unauthenticated().await,
        [None, None, None, Some(97), None],
        "the next minute starts with one row for the 97 suppressed"
    );
    // Authenticated reviewers are unaffected.
    h.approve(p.id, "alice").await.unwrap();
    h.assert_audit_ok().await;
}

// ---------------------------------------------------------------------------------------------
// What a new user needs without reading the ticket: the proposal's ticket, whether a vote was
// counted, whether a grant covers a call.

#[tokio::test]
async fn every_proposal_names_its_ticket() {
    let h = Harness::new().await;
    let agent = h.ops();
    let allowed = agent.propose(request("db.read", "t-read")).await.unwrap();
    let pending = agent.propose(request("db.drop", "t-drop")).await.unwrap();
    let denied = agent
        .propose(request("payment.send", "t-pay"))
        .await
        .unwrap();
    for (proposal, state) in [
        (&allowed, StateName::Approved),
        (&pending, StateName::Pending),
        (&denied, StateName::Rejected),
    ] {
        assert_eq!(h.ticket(proposal.ticket()).await.state().name(), state);
    }
    // A replay of an executed one names the same ticket.
    let id = allowed.ticket();
    let permit = agent
        .begin(self::allowed(allowed), no_observations())
        .await
        .unwrap();
    agent.finish(permit, succeeded()).await.unwrap();
    let replay = agent.propose(request("db.read", "t-read")).await.unwrap();
    assert!(matches!(replay, Proposal::Closed { .. }));
    assert_eq!(replay.ticket(), id);
}

#[tokio::test]
async fn a_repeated_identical_vote_is_answered_as_a_repeat_and_counted_once() {
    let h = Harness::new().await;
    let p = pending(
        h.ops()
            .propose(request("db.drop", "repeat-1"))
            .await
            .unwrap(),
    );
    let first = h
        .handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    assert!(matches!(first, Decided::Recorded(_)));
    assert!(!first.is_repeated());
    let again = h
        .handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    assert!(again.is_repeated(), "{again:?}");
    assert_eq!(
        again.ticket(),
        first.ticket(),
        "answered with the same ticket"
    );
    assert_eq!(again.ticket().version(), first.ticket().version());
    // Counted once: one more approval is still needed, and the second one decides.
    assert_eq!(again.ticket().state().name(), StateName::Pending);
    let last = h
        .handoff
        .decide(p.id, h.cred("bob"), Verdict::Approve, None)
        .await
        .unwrap();
    assert!(matches!(&last, Decided::Recorded(t) if t.state().name() == StateName::Approved));
}

#[tokio::test]
async fn a_grant_covers_exactly_the_approved_action() {
    let h = Harness::new().await;
    let agent = h.ops();
    let asked = agent_handoff::action::ActionRequest::builder("db.update", idem("covers-1"))
        .target("table:orders")
        .parameters(json!({ "set": { "status": "refunded" }, "where": { "id": 7 } }))
        .reason("the customer asked")
        .build()
        .unwrap();
    let p = pending(agent.propose(asked.clone()).await.unwrap());
    h.approve(p.id, "alice").await.unwrap();
    let grant = h.handoff.grant(p.id).await.unwrap().unwrap();
    assert!(grant.covers(&asked));
    // The justification and the key are not what runs: a retry with another reason is covered.
    let retried = agent_handoff::action::ActionRequest::builder("db.update", idem("covers-2"))
        .target("table:orders")
        .parameters(json!({ "where": { "id": 7 }, "set": { "status": "refunded" } }))
        .reason("retry")
        .build()
        .unwrap();
    assert!(
        grant.covers(&retried),
        "key order and justification do not matter"
    );
    // Anything that changes what runs is not.
    for other in [
        json!({ "set": { "status": "refunded" }, "where": { "id": 8 } }),
        json!({ "set": { "status": "refunded" } }),
    ] {
        let call = asked.with_parameters(other.clone()).unwrap();
        assert!(!grant.covers(&call), "{other}");
    }
    let elsewhere = agent_handoff::action::ActionRequest::builder("db.update", idem("covers-1"))
        .target("table:customers")
        .parameters(asked.parameters().clone())
        .build()
        .unwrap();
    assert!(!grant.covers(&elsewhere));
    assert!(grant.action().covers(&asked));
}
