//! Regressions found by an independent review of the facade: a `wait` whose ticket read
//! raced an approval just before the deadline, and an idempotent replay across principals.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_handoff::ticket::{StateName, Verdict};
use agent_handoff::{Decision, ExecuteError, Proposal, ProposeError, Store};
use support::*;

/// A waiter's read that completed just before the deadline, followed by an approval committed
/// before the deadline, must not be judged at a `now` past the deadline: the agent is told
/// what is durable (approved), not `Expired`.
#[tokio::test]
async fn wait_reports_an_approval_committed_just_before_the_deadline() {
    let h = Harness::with(Setup {
        interpose: true,
        ..Setup::default()
    })
    .await;
    let (store, clock, handoff) = (h.interpose.clone().unwrap(), &h.clock, &h.handoff);
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let Proposal::Pending(p) = agent.propose(request("db.update", "u-1")).await.unwrap() else {
        panic!("expected pending")
    };
    // The waiter's read completes at deadline - 1 min: pending.
    clock.advance(HOUR - MIN);
    let seen_by_waiter = store.ticket(p.id).await.unwrap().unwrap();
    // Alice approves before the deadline; the commit is accepted (valid_before = deadline).
    handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        store.ticket(p.id).await.unwrap().unwrap().state().name(),
        StateName::Approved
    );
    // The waiter reads the clock only now, at the deadline.
    clock.advance(MIN);
    store.serve_once(seen_by_waiter);
    let d = agent.wait(&p, Duration::ZERO).await.unwrap();
    // Durable state: approved, with a valid grant.
    assert!(
        handoff.grant(p.id).await.unwrap().is_some(),
        "ticket is approved and its grant valid"
    );
    assert!(
        matches!(d, Decision::Approved(_)),
        "agent was told {d:?} for an approved ticket"
    );
}

/// A replay is the same action by the same requester: a handle of the same agent bound to
/// another principal must not receive the first principal's ticket (here a grant the new
/// principal approved himself).
#[tokio::test]
async fn a_replay_by_the_same_agent_for_another_principal_is_a_conflict() {
    let h = Harness::new().await;
    let for_alice = h
        .handoff
        .agent(agent_id("assistant"), Some(person("alice")));
    let for_bob = h.handoff.agent(agent_id("assistant"), Some(person("bob")));
    let Proposal::Pending(p) = for_alice.propose(request("db.update", "k")).await.unwrap() else {
        panic!("expected pending")
    };
    // bob approves alice's request (not self-approval: alice is the principal).
    h.handoff
        .decide(p.id, h.cred("bob"), Verdict::Approve, None)
        .await
        .unwrap();
    // bob's own session proposes the same action under the same key...
    let replay = for_bob.propose(request("db.update", "k")).await;
    // ...and must not receive alice's ticket or its grant: a different requester.
    assert!(
        matches!(replay, Err(ProposeError::IdempotencyConflict { existing }) if existing == p.id),
        "bob's handle got {replay:?}"
    );
    // Nor can bob's handle begin the grant loaded by id.
    let grant = h.handoff.grant(p.id).await.unwrap().expect("approved");
    assert!(matches!(
        for_bob.begin(grant, BTreeMap::new()).await,
        Err(ExecuteError::NotFound(id)) if id == p.id
    ));
    // Alice's own session still replays it.
    assert!(matches!(
        for_alice.propose(request("db.update", "k")).await.unwrap(),
        Proposal::Allowed(_)
    ));
}
