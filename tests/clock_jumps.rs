//! Clock jumps through the public API: one clock per `Handoff` (a different one is refused at
//! build), a wall clock that jumps ahead refused with a typed error and a health alarm instead
//! of becoming the floor of every later commit, a floor already poisoned by a database written
//! under a wrong clock detected, and an operator's audited rebase that makes it right.
//!
//! The reproduction of issue 9, C8: one proposal under a clock a year ahead, then the clock
//! corrected, used to make every new review expire at its first approval (the store judged
//! deadlines at the year-ahead floor) until real time caught up.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_handoff::audit::Actor;
use agent_handoff::backend::ClockAlarm;
use agent_handoff::ticket::{StateName, Verdict};
use agent_handoff::{
    Clock, Credential, DecideError, Error, Handoff, ManualClock, PendingTicket, Proposal,
    ProposeError, SqliteOptions, SqliteStore, Store, StoreError, Timestamp,
};
use std::collections::BTreeMap;
use support::*;

const DAY: Duration = Duration::from_secs(24 * 3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn start() -> Timestamp {
    Timestamp::from_unix_millis(START)
}

#[track_caller]
fn pending(p: Proposal) -> PendingTicket {
    match p {
        Proposal::Pending(p) => p,
        other => panic!("expected a pending ticket, got {other:?}"),
    }
}

fn builder() -> agent_handoff::HandoffBuilder {
    Handoff::builder()
        .policy(standard_policy())
        .identity(directory().0)
}

/// Issue 9, E19: a `ManualClock` given to the builder but not to the store made the store
/// stamp system time, so proposals came back pending with a deadline already past. Now the
/// builder takes the store's clock, or refuses a different one.
#[tokio::test]
async fn one_clock_per_handoff_the_builder_takes_the_stores_or_refuses_another() {
    let manual = ManualClock::new(start());
    // The store on system time, the engine on a manual clock: refused.
    let refused = builder()
        .store(SqliteStore::in_memory().await.unwrap())
        .clock(manual.clone())
        .build();
    assert!(matches!(refused, Err(Error::ClockMismatch)), "{refused:?}");
    // Two manual clocks that merely read the same time are two clocks.
    let store = SqliteStore::in_memory_with(
        SqliteOptions::new().with_clock(Arc::new(ManualClock::new(start()))),
    )
    .await
    .unwrap();
    assert!(matches!(
        builder().store(store).clock(manual.clone()).build(),
        Err(Error::ClockMismatch)
    ));

    // Clones of one manual clock are one clock.
    let on_manual = || async {
        SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::new(manual.clone())))
            .await
            .unwrap()
    };
    builder()
        .store(on_manual().await)
        .clock(manual.clone())
        .build()
        .unwrap();
    // Without a clock, the builder takes the store's.
    let handoff = builder().store(on_manual().await).build().unwrap();
    assert_eq!(handoff.clock().id(), manual.id());
    manual.advance(Duration::from_secs(7));
    assert_eq!(handoff.clock().now(), manual.now());
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let p = pending(agent.propose(request("db.update", "u")).await.unwrap());
    assert_eq!(p.deadline, manual.now().saturating_add(HOUR));
    // The default everywhere is the system clock: one clock.
    builder()
        .store(SqliteStore::in_memory().await.unwrap())
        .clock(agent_handoff::SystemClock)
        .build()
        .unwrap();
}

/// Issue 9, C8: a clock a year ahead, then corrected. The jump is refused (typed, alarmed, no
/// new floor; the sweep expires nothing), and once the clock is corrected every review works.
#[tokio::test]
async fn a_clock_a_year_ahead_is_refused_and_once_corrected_reviews_work() {
    let h = Harness::new().await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    let earlier = pending(
        agent
            .propose(request("db.update", "earlier"))
            .await
            .unwrap(),
    );
    h.clock.advance(MIN);

    h.clock.step_wall(h.now().saturating_add(YEAR));
    match agent.propose(request("db.update", "ahead")).await {
        Err(ProposeError::Store(StoreError::ClockJump { clock, expected })) => {
            assert_eq!(clock, start().saturating_add(MIN).saturating_add(YEAR));
            assert_eq!(expected, start().saturating_add(MIN));
        }
        other => panic!("expected a clock jump, got {other:?}"),
    }
    let health = h.handoff.health().await.unwrap();
    assert!(matches!(
        health.store.clock_alarm,
        Some(ClockAlarm::Jumped { .. })
    ));
    // Everything that would write is refused: votes, and the sweep that would otherwise
    // expire every pending ticket at once.
    assert!(matches!(
        h.handoff
            .decide(earlier.id, h.cred("alice"), Verdict::Approve, None)
            .await,
        Err(DecideError::Store(StoreError::ClockJump { .. }))
    ));
    assert!(matches!(
        h.handoff.expire_due().await,
        Err(StoreError::ClockJump { .. })
    ));
    assert_eq!(
        h.ticket(earlier.id).await.state().name(),
        StateName::Pending
    );

    // Corrected.
    h.clock.step_wall(start().saturating_add(2 * MIN));
    assert_eq!(h.handoff.health().await.unwrap().store.clock_alarm, None);
    let fresh = pending(agent.propose(request("db.update", "fresh")).await.unwrap());
    assert_eq!(
        fresh.deadline,
        start().saturating_add(2 * MIN).saturating_add(HOUR)
    );
    for id in [earlier.id, fresh.id] {
        let t = h
            .handoff
            .decide(id, h.cred("alice"), Verdict::Approve, None)
            .await
            .unwrap();
        assert_eq!(
            t.ticket().state().name(),
            StateName::Approved,
            "a review approved in time is approved, not expired"
        );
    }
    h.handoff.verify_audit().await.unwrap();
}

/// A correction within the tolerance is no jump.
#[tokio::test]
async fn a_small_correction_of_the_clock_is_accepted() {
    let h = Harness::new().await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    let _ = agent.propose(request("db.update", "a")).await.unwrap();
    h.clock.step_wall(h.now().saturating_add(5 * MIN));
    let _ = agent.propose(request("db.update", "b")).await.unwrap();
    h.clock.step_wall(h.now().saturating_sub(3 * MIN));
    let _ = agent.propose(request("db.update", "c")).await.unwrap();
    assert_eq!(h.handoff.health().await.unwrap().store.clock_alarm, None);
}

/// The tolerance is the store's to configure.
#[tokio::test]
async fn the_tolerance_is_configurable() {
    let clock = ManualClock::new(start());
    let store = SqliteStore::in_memory_with(
        SqliteOptions::new()
            .with_clock(Arc::new(clock.clone()))
            .with_clock_tolerance(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let handoff = builder().store(store).build().unwrap();
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let _ = agent.propose(request("db.update", "a")).await.unwrap();
    clock.step_wall(clock.now().saturating_add(MIN));
    assert!(matches!(
        agent.propose(request("db.update", "b")).await,
        Err(ProposeError::Store(StoreError::ClockJump { .. }))
    ));
}

/// An engine on a file, its store opened with `clock`.
async fn engine_on(
    path: &Path,
    clock: &ManualClock,
) -> (Handoff, Arc<dyn Store>, BTreeMap<&'static str, Credential>) {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open_with(
            path,
            SqliteOptions::new().with_clock(Arc::new(clock.clone())),
        )
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

/// A database written under a clock a year ahead (by another host, or before a reboot that
/// fixed the clock) has a poisoned floor: detected at once (alarm, typed refusals). An
/// operator's rebase — refused to a non-operator — steps the floor onto the clock, is audited,
/// and holds across a restart; reviews then work.
#[tokio::test]
async fn a_poisoned_floor_is_detected_and_an_operator_rebases_it_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.sqlite3");
    let wrong = ManualClock::new(start().saturating_add(YEAR));
    let (handoff, store, _) = engine_on(&path, &wrong).await;
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let _ = agent.propose(request("db.update", "ahead")).await.unwrap();
    store.shutdown().await.unwrap();
    drop(handoff);

    let clock = ManualClock::new(start());
    let (handoff, store, creds) = engine_on(&path, &clock).await;
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let health = handoff.health().await.unwrap();
    let poisoned = start().saturating_add(YEAR);
    assert_eq!(health.store.commit_floor, Some(poisoned));
    assert_eq!(
        health.store.clock_alarm,
        Some(ClockAlarm::FloorAhead {
            floor: poisoned,
            clock: start()
        })
    );
    assert!(matches!(
        agent.propose(request("db.update", "now")).await,
        Err(ProposeError::Store(StoreError::FloorAhead { .. }))
    ));
    // Not an operator: refused (the refusal cannot be audited while nothing commits).
    assert!(handoff
        .rebase_clock(&creds["alice"], "not mine")
        .await
        .is_err());
    assert!(handoff.health().await.unwrap().store.clock_alarm.is_some());

    let rebase = handoff
        .rebase_clock(
            &creds["olga"],
            "the floor was written with the CMOS clock a year ahead",
        )
        .await
        .unwrap();
    assert_eq!(rebase.floor_before, Some(poisoned));
    assert!(matches!(rebase.alarm, Some(ClockAlarm::FloorAhead { .. })));
    assert_eq!(rebase.floor, start());
    let health = handoff.health().await.unwrap();
    assert_eq!(health.store.clock_alarm, None);
    assert_eq!(health.store.commit_floor, Some(start()));
    let event = store
        .audit_events(1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|raw| agent_handoff::audit::AuditEvent::decode(raw).unwrap())
        .find(|e| e.record().kind == "clock_rebased")
        .expect("the rebase is audited");
    assert_eq!(event.record().actor, Actor::Operator(person("olga")));
    assert_eq!(
        event.record().data["floor_before"],
        poisoned.as_unix_millis()
    );
    // The reason is a text beside the chain: committed in the event, kept in the side table.
    assert!(event.record().data["reason"]["commitment"].is_string());
    let rows = store.audit_texts(event.seq(), event.seq()).await.unwrap();
    let event =
        agent_handoff::audit::AuditEvent::decode_with_texts(event.raw().clone(), rows).unwrap();
    assert_eq!(
        event.text("reason").unwrap().as_str(),
        Some("the floor was written with the CMOS clock a year ahead")
    );

    clock.advance(MIN);
    let p = pending(agent.propose(request("db.update", "now")).await.unwrap());
    let t = handoff
        .decide(p.id, &creds["alice"], Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(t.ticket().state().name(), StateName::Approved);
    handoff.verify_audit().await.unwrap();
    store.shutdown().await.unwrap();
    drop(handoff);

    // After a restart the rebased floor holds.
    clock.advance(MIN);
    let (handoff, store, creds) = engine_on(&path, &clock).await;
    assert_eq!(handoff.health().await.unwrap().store.clock_alarm, None);
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let p = pending(agent.propose(request("db.update", "later")).await.unwrap());
    let t = handoff
        .decide(p.id, &creds["bob"], Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(t.ticket().state().name(), StateName::Approved);
    store.shutdown().await.unwrap();
}

/// A jump that is real (a machine suspended for longer than the tolerance: monotonic time did
/// not advance) is accepted by an operator's rebase, and commits continue from the new time.
#[tokio::test]
async fn an_operator_accepts_a_real_jump_after_a_suspend() {
    let h = Harness::new().await;
    let agent = h.handoff.agent(agent_id("ops-agent"), None);
    let _ = agent.propose(request("db.update", "before")).await.unwrap();
    let resumed = h.now().saturating_add(DAY);
    h.clock.step_wall(resumed);
    assert!(matches!(
        agent.propose(request("db.update", "after")).await,
        Err(ProposeError::Store(StoreError::ClockJump { .. }))
    ));
    let rebase = h
        .handoff
        .rebase_clock(h.cred("olga"), "the host was suspended overnight")
        .await
        .unwrap();
    assert!(matches!(rebase.alarm, Some(ClockAlarm::Jumped { .. })));
    assert_eq!(rebase.floor, resumed);
    let p = pending(agent.propose(request("db.update", "after")).await.unwrap());
    assert_eq!(p.deadline, resumed.saturating_add(HOUR));
    assert_eq!(h.handoff.health().await.unwrap().store.clock_alarm, None);
    h.handoff.verify_audit().await.unwrap();
}
