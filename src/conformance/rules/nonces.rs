//! Nonces: single use, a reuse refusing the whole write.

use super::prelude::*;

/// A nonce is consumed once: a second write with it is refused whole (its ticket, decision and
/// audit rows are not written), also when the repeat is within one write.
pub async fn nonce_is_single_use(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let token = nonce();
    let vote = approve(&v1, "alice", now);
    let mut first = update(&v1, &vote);
    first.nonces.push(token);
    first.decision = Some(decision(id, "alice", "approve", now));
    store.commit(first).await.unwrap();

    let before = snapshot(&*store, id).await;
    let p = propose("agent-a", "key-2", review(), now);
    let mut second = insert(&p);
    second.nonces = vec![nonce(), token];
    second.outbox.push(outbox(p.ticket.id(), now));
    assert!(matches!(
        store.commit(second).await,
        Err(StoreError::NonceReused)
    ));
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);

    // The same nonce twice in one write.
    let twice = nonce();
    let q = propose("agent-a", "key-3", review(), now);
    let mut write = insert(&q);
    write.nonces = vec![twice, twice];
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert_eq!(store.ticket(q.ticket.id()).await.unwrap(), None);
    assert_unchanged(&*store, id, &before).await;
    let mut write = insert(&q);
    write.nonces = vec![twice];
    store
        .commit(write)
        .await
        .expect("the refused write did not consume the nonce");
    store.shutdown().await.unwrap();
    Ok(())
}

/// A nonce limits its write like `valid_before`: committed at or after the nonce's expiry the
/// write is too late (the store may have forgotten the nonce), whatever its own limit.
pub async fn a_write_at_or_after_a_nonces_expiry_is_too_late(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    let short = NonceUse::new(nonce().nonce, ts(T0 + 1_000));
    clock.set(ts(T0 + 1_000));
    let p = propose("agent-a", "key-1", review(), ts(T0));
    let mut write = insert(&p);
    write.nonces = vec![nonce(), short];
    match store.commit(write.clone()).await {
        Err(StoreError::TooLate { limit, .. }) => assert_eq!(limit, short.expires),
        other => panic!("expected too late, got {other:?}"),
    }
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    assert_eq!(store.health().await.unwrap().nonces, 0);
    write.nonces = vec![nonce()];
    store.commit(write).await.unwrap();
    assert_eq!(store.health().await.unwrap().nonces, 1);
    store.shutdown().await.unwrap();
    Ok(())
}

/// `prune_nonces` forgets consumed nonces whose expiry a later commit has passed, at most
/// `limit` per call, and keeps the others (still single use); a forgotten nonce cannot be
/// consumed again, since a write carrying it is too late. `health` counts what is kept.
pub async fn expired_nonces_are_pruned_and_never_consumed_again(h: Harness) -> Checked {
    let clock = ManualClock::new(ts(T0));
    let env = Env::with(Arc::new(clock.clone()));
    let store = h.open(&env).await;
    let soon: Vec<NonceUse> = (0..5)
        .map(|_| NonceUse::new(nonce().nonce, ts(T0 + 10_000)))
        .collect();
    let later = NonceUse::new(nonce().nonce, ts(T0 + 3_600_000));
    store
        .commit(
            Write::new()
                .with_audit(marker(1, ts(T0)))
                .with_nonces(soon.iter().copied().chain([later])),
        )
        .await
        .unwrap();
    assert_eq!(store.health().await.unwrap().nonces, 6);
    assert_eq!(
        store.prune_nonces(100).await.unwrap(),
        0,
        "none expired yet"
    );

    // Time passes, and something is committed after the expiry.
    clock.set(ts(T0 + 20_000));
    store
        .commit(Write::new().with_audit(marker(2, ts(T0 + 20_000))))
        .await
        .unwrap();
    assert_eq!(store.prune_nonces(2).await.unwrap(), 2, "at most the limit");
    assert_eq!(store.prune_nonces(100).await.unwrap(), 3);
    assert_eq!(store.prune_nonces(100).await.unwrap(), 0);
    assert_eq!(
        store.health().await.unwrap().nonces,
        1,
        "the unexpired one is kept"
    );

    // A forgotten nonce is never consumed again; a kept one is still single use.
    let p = propose("agent-a", "key-1", review(), ts(T0 + 20_000));
    let mut write = insert(&p);
    write.nonces = vec![soon[0]];
    assert!(matches!(
        store.commit(write.clone()).await,
        Err(StoreError::TooLate { .. })
    ));
    write.nonces = vec![later];
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    store.shutdown().await.unwrap();
    Ok(())
}
