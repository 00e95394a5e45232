//! Time: `TooLate` judged at the commit time, which never goes backwards (also across a
//! reopen); the clock the store was opened with; jumps and a floor ahead refused until rebased.

use super::prelude::*;

/// A write is valid only if committed strictly before its limit: at the limit it is `TooLate`
/// and writes nothing; a millisecond earlier it lands.
pub async fn write_at_or_after_its_limit_is_too_late(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    let p = propose("agent-a", "key-1", review(), ts(T0));
    store.commit(insert(&p)).await.unwrap();
    let deadline = p.ticket.deadline().unwrap();
    let id = p.ticket.id();

    clock.set(deadline);
    let before = snapshot(&*store, id).await;
    let vote = approve(&p.ticket, "alice", ts(T0 + 1));
    let own = nonce();
    let mut write = update(&p.ticket, &vote);
    write.valid_before = Some(deadline);
    write.nonces.push(own);
    write.decision = Some(decision(id, "alice", "approve", ts(T0 + 1)));
    write.outbox.push(outbox(id, deadline));
    match store.commit(write.clone()).await {
        Err(StoreError::TooLate { at, limit }) => {
            assert_eq!(limit, deadline);
            assert!(at >= deadline, "{at:?}");
        }
        other => panic!("expected too late, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&p.ticket));

    // The same write, with a limit one millisecond after the commit time, lands.
    write.valid_before = Some(ts(deadline.as_unix_millis() + 1));
    let committed = store.commit(write).await.unwrap();
    assert_eq!(committed.at, deadline);
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&vote.ticket));
    store.shutdown().await.unwrap();
    Ok(())
}

/// The commit time is the later of the clock and every earlier commit: a clock stepped back
/// does not move it back, and limits are judged against it.
pub async fn commit_time_never_goes_backwards(h: Harness) -> Checked {
    let clock = SteppingClock::new(ts(T0 + 10_000));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    let first = store
        .commit(Write::new().with_audit_records(vec![marker(1, ts(T0))]))
        .await
        .unwrap();
    assert_eq!(first.at, ts(T0 + 10_000));

    clock.set(ts(T0 + 5_000));
    let second = store
        .commit(Write::new().with_audit_records(vec![marker(2, ts(T0))]))
        .await
        .unwrap();
    assert!(second.at >= first.at, "{second:?} after {first:?}");

    // A limit the clock has not reached, but the commit time has.
    let late = Write::new()
        .with_audit_records(vec![marker(3, ts(T0))])
        .with_valid_before(ts(T0 + 7_000));
    assert!(matches!(
        store.commit(late).await,
        Err(StoreError::TooLate { at, .. }) if at >= first.at
    ));

    clock.set(ts(T0 + 20_000));
    let third = store.commit(Write::default()).await.unwrap();
    assert_eq!(
        third.at,
        ts(T0 + 20_000),
        "and it follows the clock forward"
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// A clock set back across a restart does not move the commit time back either.
pub async fn commit_time_never_goes_backwards_across_reopen(h: Harness) -> Checked {
    h.require_durable()?;
    let env = Env::with(Arc::new(SteppingClock::new(ts(T0 + 10_000))));
    let store = h.open(&env).await;
    let p = propose("agent-a", "a", review(), ts(T0));
    let first = store.commit(insert(&p)).await.unwrap();
    assert_eq!(first.at, ts(T0 + 10_000));
    store.shutdown().await.unwrap();
    drop(store);

    let env = env.with_clock(Arc::new(SteppingClock::new(ts(T0 + 5_000))));
    let store = h.open(&env).await;
    let again = store
        .commit(Write::new().with_audit_records(vec![marker(1, ts(T0))]))
        .await
        .unwrap();
    assert!(again.at >= first.at, "{again:?} after {first:?}");
    let late = Write::new()
        .with_audit_records(vec![marker(2, ts(T0))])
        .with_valid_before(ts(T0 + 7_000));
    assert!(matches!(
        store.commit(late).await,
        Err(StoreError::TooLate { at, .. }) if at >= first.at
    ));
    store.shutdown().await.unwrap();
    Ok(())
}

/// A day: further than any store's tolerance. The clock rules assume a store's clock tolerance
/// (see [`CommitClock`](crate::backend::CommitClock)) between a few minutes and a day, as the
/// default is: steps of two minutes must be accepted, steps of a day refused.
const DAY_MS: i64 = 24 * 3_600_000;

/// The store says which clock stamps its commits: the one it was opened with.
pub async fn the_store_names_the_clock_it_was_opened_with(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    assert_eq!(store.clock().id(), clock.id(), "a clone of the same clock");
    assert_ne!(store.clock().id(), ManualClock::new(ts(T0)).id());
    clock.advance(std::time::Duration::from_secs(5));
    assert_eq!(store.clock().now(), ts(T0 + 5_000));
    store.shutdown().await.unwrap();
    Ok(())
}

/// The wall clock jumping ahead of its monotonic time (by more than the tolerance) refuses
/// every commit with `ClockJump` — nothing written, the floor not moved — and raises the health
/// alarm, until the clock reads sensibly again; a small step is accepted.
pub async fn a_clock_jump_is_refused_and_moves_no_floor(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    let p = propose("agent-a", "a", review(), ts(T0));
    store.commit(insert(&p)).await.unwrap();
    clock.advance(std::time::Duration::from_secs(60));
    // A correction of a minute: accepted.
    clock.step_wall(ts(T0 + 120_000));
    let small = store
        .commit(Write::new().with_audit(marker(1, ts(T0))))
        .await
        .unwrap();
    assert_eq!(small.at, ts(T0 + 120_000));
    assert_eq!(store.health().await.unwrap().clock_alarm, None);

    // A year ahead, without the time passing.
    clock.step_wall(ts(T0 + 365 * DAY_MS));
    let before = snapshot(&*store, p.ticket.id()).await;
    let q = propose("agent-a", "b", review(), ts(T0 + 365 * DAY_MS));
    match store.commit(insert(&q)).await {
        Err(StoreError::ClockJump { clock, expected }) => {
            assert_eq!(clock, ts(T0 + 365 * DAY_MS));
            assert_eq!(expected, small.at, "the last commit plus no time passed");
        }
        other => panic!("expected a clock jump, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    assert_eq!(store.ticket(q.ticket.id()).await.unwrap(), None);
    assert!(matches!(
        store.health().await.unwrap().clock_alarm,
        Some(ClockAlarm::Jumped { .. })
    ));

    // Corrected: commits resume at the clock's time, not at the year-ahead reading.
    clock.step_wall(ts(T0 + 180_000));
    let resumed = store.commit(insert(&q)).await.unwrap();
    assert_eq!(resumed.at, ts(T0 + 180_000));
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    assert_eq!(
        store.health().await.unwrap().commit_floor,
        Some(ts(T0 + 180_000))
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// A write that rebases is committed at the clock's reading despite a jump, and later commits
/// continue from it (an operator vouched for the clock: a suspend longer than the tolerance).
pub async fn a_rebase_accepts_a_jumped_clock(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    clock.step_wall(ts(T0 + 2 * DAY_MS));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::ClockJump { .. })
    ));
    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0 + 2 * DAY_MS)));
    let rebased = store.commit(rebase).await.unwrap();
    assert_eq!(rebased.at, ts(T0 + 2 * DAY_MS));
    clock.advance(std::time::Duration::from_secs(1));
    let next = proposed(&*store, "agent-a", "b", review(), ts(T0 + 2 * DAY_MS)).await;
    assert!(store.ticket(next.id()).await.unwrap().is_some());
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    store.shutdown().await.unwrap();
    Ok(())
}

/// A floor more than the tolerance ahead of the clock (the clock set back a day here; a store
/// written under a clock a year ahead in `a_poisoned_floor_is_refused_after_reopen_until_rebased`)
/// refuses every commit with `FloorAhead`, raising the alarm; a write that rebases steps the
/// floor back onto the clock, and deadlines are then judged by the clock again.
pub async fn a_floor_ahead_of_the_clock_is_refused_until_rebased(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0 + DAY_MS));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0 + DAY_MS)).await;
    clock.step_wall(ts(T0));
    let p = propose("agent-a", "b", review(), ts(T0));
    let before = snapshot(&*store, p.ticket.id()).await;
    match store.commit(insert(&p)).await {
        Err(StoreError::FloorAhead { floor, clock }) => {
            assert_eq!((floor, clock), (ts(T0 + DAY_MS), ts(T0)));
        }
        other => panic!("expected the floor ahead, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    let health = store.health().await.unwrap();
    assert_eq!(health.commit_floor, Some(ts(T0 + DAY_MS)));
    assert_eq!(
        health.clock_alarm,
        Some(ClockAlarm::FloorAhead {
            floor: ts(T0 + DAY_MS),
            clock: ts(T0)
        })
    );

    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0)));
    assert_eq!(
        store.commit(rebase).await.unwrap().at,
        ts(T0),
        "stepped back"
    );
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    assert_eq!(store.health().await.unwrap().commit_floor, Some(ts(T0)));
    clock.advance(std::time::Duration::from_secs(1));
    // A limit the old floor had passed but the clock has not: judged by the clock.
    let mut write = insert(&p);
    write.valid_before = Some(ts(T0 + 60_000));
    assert_eq!(store.commit(write).await.unwrap().at, ts(T0 + 1_000));
    store.shutdown().await.unwrap();
    Ok(())
}

/// Durable: a store written under a clock a year ahead, reopened under the right clock, refuses
/// commits (`FloorAhead`) until a rebase; the rebased floor holds across another reopen.
pub async fn a_poisoned_floor_is_refused_after_reopen_until_rebased(h: Harness) -> Checked {
    h.require_durable()?;
    let ahead = ManualClock::new(ts(T0 + 365 * DAY_MS));
    let env = Env::with(Arc::new(ahead));
    let store = h.open(&env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0 + 365 * DAY_MS)).await;
    store.shutdown().await.unwrap();
    drop(store);

    let clock = ManualClock::new(ts(T0));
    let env = env.with_clock(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    assert!(matches!(
        store.health().await.unwrap().clock_alarm,
        Some(ClockAlarm::FloorAhead { .. })
    ));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::FloorAhead { .. })
    ));
    let mut rebase = Write::default().with_clock_rebase();
    rebase.audit.push(marker(1, ts(T0)));
    assert_eq!(store.commit(rebase).await.unwrap().at, ts(T0));
    store.shutdown().await.unwrap();
    drop(store);

    clock.advance(std::time::Duration::from_secs(10));
    let store = h.open(&env).await;
    assert_eq!(store.health().await.unwrap().clock_alarm, None);
    let p = propose("agent-a", "b", review(), ts(T0 + 10_000));
    assert_eq!(
        store.commit(insert(&p)).await.unwrap().at,
        ts(T0 + 10_000),
        "the rebased floor, not the poisoned one"
    );
    store.shutdown().await.unwrap();
    Ok(())
}
