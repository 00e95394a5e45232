//! The kill switch through the public API: what a freeze refuses (proposals, approvals plain
//! and with edits and through links, `begin` of earlier grants) and what it lets through
//! (rejections, change requests, cancels, revokes, renewals, finishes, resolutions), its audit
//! rows coalesced per agent, and the freeze held by the store — across a restart, across two
//! `Handoff`s on one file, and in the same write as its audit row, so a racing proposal commits
//! before it or not at all.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use agent_handoff::audit::{Actor, AuditEvent};
use agent_handoff::ticket::{ExecutionOutcome, StateName, Verdict};
use agent_handoff::token::VerdictKind;
use agent_handoff::{
    AgentHandle, Clock, DecideError, ExecuteError, FreezeScope, Grant, Handoff, Limits, LinkError,
    ManualClock, PendingTicket, Proposal, ProposeError, SqliteOptions, SqliteStore, Store,
    Timestamp, TokenSubmission,
};
use serde_json::{json, Value};
use support::*;

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

fn ops(h: &Harness) -> AgentHandle {
    h.handoff.agent(agent_id("ops-agent"), None)
}

fn ops_scope() -> FreezeScope {
    FreezeScope::Agent(agent_id("ops-agent"))
}

fn none() -> BTreeMap<String, Value> {
    BTreeMap::new()
}

fn succeeded() -> ExecutionOutcome {
    ExecutionOutcome::Succeeded {
        output: Value::Null,
    }
}

/// `refused` records of the ticket: (actor, event, refusal).
async fn refusals(h: &Harness, id: agent_handoff::TicketId) -> Vec<(Actor, String, String)> {
    h.audit(id)
        .await
        .iter()
        .map(AuditEvent::record)
        .filter(|r| r.kind == "refused")
        .map(|r| {
            (
                r.actor.clone(),
                r.data["event"].as_str().unwrap_or_default().to_owned(),
                r.data["refusal"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Issue 9, C9: `begin` of a grant issued before the freeze used to issue a permit.
#[tokio::test]
async fn a_freeze_refuses_begin_of_a_grant_issued_before_it() {
    let h = Harness::new().await;
    let agent = ops(&h);
    let grant = allowed(agent.propose(request("db.read", "before")).await.unwrap());
    let id = grant.ticket();
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "incident 7")
        .await
        .unwrap();
    match agent.begin(grant, none()).await {
        Err(ExecuteError::Frozen { reason }) => assert_eq!(reason, "incident 7"),
        other => panic!("expected a frozen begin, got {other:?}"),
    }
    assert_eq!(h.ticket(id).await.state().name(), StateName::Approved);
    assert_eq!(
        refusals(&h, id).await,
        [(
            Actor::Agent(agent_id("ops-agent")),
            "begin".to_owned(),
            "frozen".to_owned()
        )]
    );
    // Lifted: the grant (reloaded) is still good.
    h.handoff
        .unfreeze(h.cred("olga"), ops_scope())
        .await
        .unwrap();
    let grant = h.handoff.grant(id).await.unwrap().unwrap();
    let permit = agent.begin(grant, none()).await.unwrap();
    agent.finish(permit, succeeded()).await.unwrap();
    assert_audit_ok(&h).await;
}

/// Issue 9, C9: approving a pending ticket while frozen (then beginning it) used to issue a
/// permit. Approvals, plain and with edits, are refused with a refused decision row each.
#[tokio::test]
async fn a_freeze_refuses_approvals_plain_and_with_edits() {
    let h = Harness::new().await;
    let agent = ops(&h);
    let p = pending(
        agent
            .propose(request("db.update", "pending"))
            .await
            .unwrap(),
    );
    h.handoff
        .freeze(h.cred("olga"), FreezeScope::All, "everyone stops")
        .await
        .unwrap();
    match h
        .handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
    {
        Err(DecideError::Frozen { reason }) => assert_eq!(reason, "everyone stops"),
        other => panic!("expected a frozen approval, got {other:?}"),
    }
    let edit = Verdict::ApproveWithEdits {
        parameters: json!({ "table": "orders", "limit": 10 }),
    };
    assert!(matches!(
        h.handoff.decide(p.id, h.cred("bob"), edit, None).await,
        Err(DecideError::Frozen { .. })
    ));
    let ticket = h.ticket(p.id).await;
    assert_eq!(ticket.state().name(), StateName::Pending);
    assert!(ticket.votes().is_empty(), "nothing counted");
    let rows: Vec<(String, String, Option<String>)> = h
        .decisions(p.id)
        .await
        .into_iter()
        .map(|d| {
            (
                d.person.unwrap().to_string(),
                d.verdict,
                d.refusal.map(|r| r.to_string()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("alice".into(), "approve".into(), Some("frozen".into())),
            (
                "bob".into(),
                "approve_with_edits".into(),
                Some("frozen".into())
            ),
        ]
    );
    assert_eq!(
        refusals(&h, p.id).await,
        [
            (
                Actor::Reviewer(person("alice")),
                "vote".into(),
                "frozen".into()
            ),
            (
                Actor::Reviewer(person("bob")),
                "edit".into(),
                "frozen".into()
            ),
        ]
    );
    h.handoff
        .unfreeze(h.cred("olga"), FreezeScope::All)
        .await
        .unwrap();
    let approved = h
        .handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(approved.ticket().state().name(), StateName::Approved);
    assert_audit_ok(&h).await;
}

/// While frozen, everything that restricts or records goes on: rejection, change request,
/// cancel, revoke, renew, finish, resolve — so no outcome is lost and nothing is pushed into
/// `Unknown` by the freeze.
#[tokio::test]
async fn a_freeze_lets_rejections_cancels_revokes_renewals_finishes_and_resolutions_through() {
    let h = Harness::new().await;
    let agent = ops(&h);
    let to_reject = pending(agent.propose(request("db.update", "rej")).await.unwrap());
    let to_change = pending(agent.propose(request("db.update", "chg")).await.unwrap());
    let to_cancel = allowed(agent.propose(request("db.read", "cancel")).await.unwrap());
    let to_revoke = allowed(agent.propose(request("db.read", "revoke")).await.unwrap());
    let running = allowed(agent.propose(request("db.read", "run")).await.unwrap());
    let lapsing = allowed(agent.propose(request("db.read", "lapse")).await.unwrap());
    let mut permit = agent.begin(running, none()).await.unwrap();
    let lost = agent.begin(lapsing, none()).await.unwrap();
    let lost_id = lost.ticket();
    drop(lost); // the host crashed mid-execution

    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "incident")
        .await
        .unwrap();
    let reject = Verdict::Reject {
        feedback: "no".into(),
    };
    h.handoff
        .decide(to_reject.id, h.cred("alice"), reject, None)
        .await
        .unwrap();
    let change = Verdict::RequestChanges {
        feedback: "smaller".into(),
    };
    h.handoff
        .decide(to_change.id, h.cred("bob"), change, None)
        .await
        .unwrap();
    agent
        .cancel(to_cancel.ticket(), "not needed")
        .await
        .unwrap();
    h.handoff
        .revoke(to_revoke.ticket(), h.cred("olga"), "incident")
        .await
        .unwrap();
    agent.renew(&mut permit).await.unwrap();
    let running_id = permit.ticket();
    agent.finish(permit, succeeded()).await.unwrap();
    h.clock.advance(10 * MIN);
    h.handoff.expire_due().await.unwrap();
    assert_eq!(h.ticket(lost_id).await.state().name(), StateName::Unknown);
    h.handoff
        .resolve(lost_id, h.cred("olga"), succeeded())
        .await
        .unwrap();

    let states = [
        (to_reject.id, StateName::Rejected),
        (to_change.id, StateName::Rejected),
        (to_cancel.ticket(), StateName::Cancelled),
        (to_revoke.ticket(), StateName::Cancelled),
        (running_id, StateName::Succeeded),
        (lost_id, StateName::Succeeded),
    ];
    for (id, state) in states {
        assert_eq!(h.ticket(id).await.state().name(), state, "{id}");
    }
    assert_audit_ok(&h).await;
}

/// An approval through a decision link while frozen is refused, and the token is not spent:
/// the same link approves once the freeze is lifted.
#[tokio::test]
async fn an_approval_through_a_link_while_frozen_is_refused_without_spending_the_token() {
    let h = Harness::with_links(Setup::default(), LinkSetup::standard()).await;
    let agent = ops(&h);
    let p = pending(agent.propose(request("db.update", "link")).await.unwrap());
    let ticket = h.ticket(p.id).await;
    let links = h
        .handoff
        .mint_links(&ticket, Some(person("alice")), h.now())
        .unwrap();
    let approve = links
        .iter()
        .find(|l| l.verdict == VerdictKind::Approve)
        .unwrap();
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "incident")
        .await
        .unwrap();
    match h
        .handoff
        .decide_with_token(&approve.token, h.cred("alice"), TokenSubmission::new())
        .await
    {
        Err(LinkError::Frozen { reason }) => assert_eq!(reason, "incident"),
        other => panic!("expected a frozen approval, got {other:?}"),
    }
    assert_eq!(h.ticket(p.id).await.state().name(), StateName::Pending);
    h.handoff
        .unfreeze(h.cred("olga"), ops_scope())
        .await
        .unwrap();
    let t = h
        .handoff
        .decide_with_token(&approve.token, h.cred("alice"), TokenSubmission::new())
        .await
        .unwrap();
    assert_eq!(t.ticket().state().name(), StateName::Approved);
    assert_audit_ok(&h).await;
}

/// Issue 9, C10: 1 000 proposals of a frozen agent used to write 1 000 fsync'd events. Now
/// one row each up to the per-minute budget, the rest counted into one summary row written by
/// the next sweep after the minute; every refusal is accounted for.
#[tokio::test]
async fn a_frozen_agent_looping_on_proposals_writes_a_bounded_number_of_rows() {
    let h = Harness::new().await;
    let agent = ops(&h);
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "runaway agent")
        .await
        .unwrap();
    let before = h.all_audit().await.len();
    for i in 0..1_000 {
        match agent
            .propose(request("db.read", &format!("loop-{i}")))
            .await
        {
            Err(ProposeError::Frozen { .. }) => {}
            other => panic!("proposal {i}: expected frozen, got {other:?}"),
        }
    }
    let budget = Limits::default().frozen_audit_per_minute as usize;
    let written = h.all_audit().await.len() - before;
    assert_eq!(written, budget, "one row each up to the budget, then none");
    assert!(h.all_tickets().await.is_empty());

    h.clock.advance(MIN);
    h.handoff.expire_due().await.unwrap();
    let events = h.all_audit().await;
    let summary = events.last().unwrap().record();
    assert_eq!(summary.actor, Actor::Agent(agent_id("ops-agent")));
    assert_eq!(summary.data["refusal"], "frozen");
    assert_eq!(
        summary.data["detail"]["coalesced"],
        1_000 - budget as u64,
        "every refusal is accounted for"
    );
    assert_eq!(events.len() - before, budget + 1);
    // The refused proposals took no rate-limit token: once lifted the agent proposes at once.
    h.handoff
        .unfreeze(h.cred("olga"), ops_scope())
        .await
        .unwrap();
    let _ = allowed(agent.propose(request("db.read", "after")).await.unwrap());
    assert_audit_ok(&h).await;
}

/// A frozen agent whose rate budget is spent is still answered `Frozen`, not `RateLimited`.
#[tokio::test]
async fn a_rate_limited_frozen_agent_is_answered_frozen() {
    let h = Harness::with(Setup {
        limits: Limits {
            proposals_per_minute: 1,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let agent = ops(&h);
    let _ = allowed(agent.propose(request("db.read", "one")).await.unwrap());
    assert!(matches!(
        agent.propose(request("db.read", "two")).await,
        Err(ProposeError::RateLimited)
    ));
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "stop")
        .await
        .unwrap();
    assert!(matches!(
        agent.propose(request("db.read", "two")).await,
        Err(ProposeError::Frozen { .. })
    ));
}

/// An engine on a file, with the standard policy and directory.
async fn engine_on(
    path: &Path,
    clock: &ManualClock,
) -> (
    Handoff,
    Arc<dyn Store>,
    BTreeMap<&'static str, agent_handoff::Credential>,
) {
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(path, SqliteOptions::new().with_clock(shared))
            .await
            .unwrap(),
    );
    let (dir, creds) = directory();
    let handoff = Handoff::builder()
        .shared_store(Arc::clone(&store))
        .policy(standard_policy())
        .identity(dir)
        .build()
        .unwrap();
    (handoff, store, creds)
}

/// A freeze used to be a flag in one process's memory: a restart unfroze the agent.
#[tokio::test]
async fn a_freeze_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.sqlite3");
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let (handoff, store, creds) = engine_on(&path, &clock).await;
    handoff
        .freeze(&creds["olga"], ops_scope(), "held over the restart")
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(handoff);

    let (handoff, store, _) = engine_on(&path, &clock).await;
    let health = handoff.health().await.unwrap();
    assert_eq!(health.frozen_agents, [agent_id("ops-agent")]);
    assert_eq!(health.freezes[0].reason, "held over the restart");
    assert_eq!(health.freezes[0].by, Some(person("olga")));
    let agent = handoff.agent(agent_id("ops-agent"), None);
    assert!(matches!(
        agent.propose(request("db.read", "after-restart")).await,
        Err(ProposeError::Frozen { .. })
    ));
    store.shutdown().await.unwrap();
}

/// Two `Handoff`s on one file (two processes): a freeze made through one refuses the other's
/// next proposal and begin, and the other's health shows it; a lift through the other is seen
/// by the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_through_one_handoff_refuses_the_next_operation_of_another_on_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.sqlite3");
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let (a, store_a, creds_a) = engine_on(&path, &clock).await;
    let (b, store_b, creds_b) = engine_on(&path, &clock).await;
    let agent_b = b.agent(agent_id("ops-agent"), None);
    let grant = allowed(agent_b.propose(request("db.read", "g")).await.unwrap());
    a.freeze(&creds_a["olga"], FreezeScope::All, "from host a")
        .await
        .unwrap();
    assert!(b.health().await.unwrap().frozen_all);
    assert!(matches!(
        agent_b.propose(request("db.read", "h")).await,
        Err(ProposeError::Frozen { .. })
    ));
    assert!(matches!(
        agent_b.begin(grant, none()).await,
        Err(ExecuteError::Frozen { .. })
    ));
    b.unfreeze(&creds_b["olga"], FreezeScope::All)
        .await
        .unwrap();
    let agent_a = a.agent(agent_id("ops-agent"), None);
    let _ = allowed(agent_a.propose(request("db.read", "h")).await.unwrap());
    assert!(!a.health().await.unwrap().frozen_all);
    store_a.shutdown().await.unwrap();
    store_b.shutdown().await.unwrap();
}

/// "A freeze is audited before the flag is set, so a racing proposal can slip through": the
/// freeze and its audit row are one write, and each proposal's own write checks it. Every
/// proposal racing the freeze either committed before the `frozen` event (its `proposed`
/// event comes earlier in the chain) or was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_racing_a_freeze_commit_before_it_or_are_refused() {
    let h = Harness::with(Setup {
        backing: Backing::File,
        limits: Limits {
            proposals_per_minute: 0,
            frozen_audit_per_minute: 0,
            ..Limits::default()
        },
        ..Setup::default()
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..96 {
        let agent = ops(&h);
        tasks.push(tokio::spawn(async move {
            for _ in 0..i % 11 {
                tokio::task::yield_now().await;
            }
            agent
                .propose(request("db.read", &format!("race-{i}")))
                .await
        }));
    }
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "race")
        .await
        .unwrap();
    let (mut before, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => before += 1,
            Err(ProposeError::Frozen { .. }) => refused += 1,
            Err(e) => panic!("a racing proposal failed otherwise: {e:?}"),
        }
    }
    let events = h.all_audit().await;
    let frozen_seq = events
        .iter()
        .find(|e| e.record().kind == "frozen")
        .unwrap()
        .seq();
    let proposed: Vec<u64> = events
        .iter()
        .filter(|e| e.record().kind == "proposed")
        .map(AuditEvent::seq)
        .collect();
    assert_eq!(proposed.len(), before);
    assert!(
        proposed.iter().all(|seq| *seq < frozen_seq),
        "a proposal committed after the freeze"
    );
    let refusals = events
        .iter()
        .filter(|e| e.record().data["refusal"] == "frozen")
        .count();
    assert_eq!(
        refusals, refused,
        "each refusal audited (no coalescing here)"
    );
    assert_eq!(before + refused, 96);
    println!("racing a freeze: {before} proposals before it, {refused} refused");
    assert_audit_ok(&h).await;
}

/// A freeze of one agent leaves the others alone; `health` lists every freeze from the store.
#[tokio::test]
async fn an_agent_freeze_leaves_other_agents_alone() {
    let h = Harness::new().await;
    let other = h.handoff.agent(agent_id("other-agent"), None);
    h.handoff
        .freeze(h.cred("olga"), ops_scope(), "just this one")
        .await
        .unwrap();
    let grant = allowed(other.propose(request("db.read", "o")).await.unwrap());
    let permit = other.begin(grant, none()).await.unwrap();
    other.finish(permit, succeeded()).await.unwrap();
    let p = pending(other.propose(request("db.update", "u")).await.unwrap());
    h.handoff
        .decide(p.id, h.cred("alice"), Verdict::Approve, None)
        .await
        .unwrap();
    let health = h.handoff.health().await.unwrap();
    assert!(!health.frozen_all);
    assert_eq!(health.freezes.len(), 1);
    assert_eq!(health.freezes[0].scope, ops_scope());
    assert!(health.freezes[0].since >= Timestamp::from_unix_millis(START));
}

/// The chain verifies, and covers every stored event.
async fn assert_audit_ok(h: &Harness) {
    let report = h
        .handoff
        .verify_audit()
        .await
        .expect("audit chain verifies");
    assert_eq!(report.events, h.all_audit().await.len() as u64);
    assert_eq!(report.head, h.head().await);
}
