//! Regressions found by an independent review of the facade: a `wait` whose ticket read
//! raced an approval just before the deadline, and an idempotency key shared across principals.
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

/// Keys are scoped by the whole requester: a handle of the same agent bound to another
/// principal neither receives the first principal's ticket (here a grant the new principal
/// approved himself) nor is blocked by it, nor told its id — it gets a ticket of its own.
#[tokio::test]
async fn the_same_agent_for_another_principal_gets_its_own_ticket_under_the_same_key() {
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
    // ...and gets a pending ticket of his own: not alice's, not her grant, no conflict.
    let own = match replay {
        Ok(Proposal::Pending(own)) => own,
        other => panic!("bob's handle got {other:?}"),
    };
    assert_ne!(own.id, p.id);
    let theirs = h.ticket(own.id).await;
    assert_eq!(theirs.requester(), for_bob.requester());
    // A different action under the key is bob's own conflict, naming bob's own ticket only.
    let different = agent_handoff::action::ActionRequest::builder("db.update", idem("k"))
        .target("postgres://prod/customers")
        .build()
        .unwrap();
    assert!(matches!(
        for_bob.propose(different).await,
        Err(ProposeError::IdempotencyConflict { existing }) if existing == own.id
    ));
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

/// `begin` judges the action against the policy in force at each attempt: when its
/// compare-and-swap loses to another writer and the policy became stricter meanwhile, the
/// retry refuses (the ticket goes `Stale`), instead of reusing the ruling it read before the
/// first attempt.
#[tokio::test]
async fn a_begin_retried_after_a_lost_race_applies_the_policy_in_force_then() {
    let h = Harness::with(Setup {
        backing: Backing::File,
        interpose: true,
        ..Setup::default()
    })
    .await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    let Proposal::Pending(p) = agent.propose(request("db.update", "b-1")).await.unwrap() else {
        panic!("expected pending")
    };
    h.handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    let grant = h.handoff.grant(p.id).await.unwrap().expect("approved");
    let approved = h.ticket(p.id).await;

    // Another process writes the ticket (the same approval, at the next version) and the
    // policy is tightened, between this begin's read and its commit.
    let other = agent_handoff::SqliteStore::open_with(
        h.store_path(),
        agent_handoff::SqliteOptions::new().with_clock(h.handoff.clock().clone()),
    )
    .await
    .unwrap();
    let mut body = serde_json::to_value(&approved).unwrap();
    body["version"] = serde_json::json!(approved.version() + 1);
    let bumped: agent_handoff::ticket::Ticket = serde_json::from_value(body).unwrap();
    let policy = h.policy.clone();
    h.interpose
        .as_ref()
        .unwrap()
        .before_next_commit(async move {
            policy.set("db.update", deny("db updates are frozen"));
            other
                .commit(agent_handoff::backend::Write::new().with_ticket(
                    agent_handoff::backend::TicketWrite::update(bumped, approved.version()),
                ))
                .await
                .unwrap();
            other.shutdown().await.unwrap();
        });
    match agent.begin(grant, BTreeMap::new()).await {
        Err(ExecuteError::Refused(agent_handoff::ticket::Refusal::PolicyStricter)) => {}
        Ok(_) => panic!("a permit was issued under a policy that now denies the action"),
        Err(e) => panic!("expected the stricter policy to refuse, got {e:?}"),
    }
    assert_eq!(h.ticket(p.id).await.state().name(), StateName::Stale);
}
