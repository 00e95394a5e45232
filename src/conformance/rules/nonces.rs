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
