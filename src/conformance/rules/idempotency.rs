//! Idempotency: one ticket per key and requester, also under races.

use super::prelude::*;

/// A second ticket under an agent's key is refused with the existing ticket's id and writes
/// nothing; the same key under another agent is another ticket.
pub async fn idempotency_key_is_unique_per_agent(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let first = proposed(&*store, "agent-a", "same-key", review(), now).await;
    let before = snapshot(&*store, first.id()).await;

    let again = propose("agent-a", "same-key", allow(), now);
    let mut write = insert(&again);
    write.outbox.push(outbox(again.ticket.id(), now));
    match store.commit(write).await {
        Err(StoreError::DuplicateKey { existing }) => assert_eq!(existing, first.id()),
        other => panic!("expected a duplicate key, got {other:?}"),
    }
    assert_unchanged(&*store, first.id(), &before).await;
    assert_eq!(store.ticket(again.ticket.id()).await.unwrap(), None);

    let other = proposed(&*store, "agent-b", "same-key", review(), now).await;
    let key = first.idempotency_key();
    assert_eq!(
        store
            .ticket_by_key(&agent("agent-a"), key)
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );
    assert_eq!(
        store.ticket_by_key(&agent("agent-b"), key).await.unwrap(),
        Some(other)
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// Sixteen concurrent inserts under one key: one wins, every other is told the winner's id,
/// and only the winner's audit records exist.
pub async fn concurrent_inserts_with_one_key_create_one_ticket(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let proposals: Vec<_> = (0..16)
        .map(|_| propose("agent-a", "race", review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let winners: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one insert wins: {results:?}");
    let winner = &proposals[winners[0]].ticket;
    for (i, r) in results.iter().enumerate() {
        if i != winners[0] {
            assert!(
                matches!(r, Err(StoreError::DuplicateKey { existing }) if *existing == winner.id()),
                "{r:?}"
            );
            assert_eq!(store.ticket(proposals[i].ticket.id()).await.unwrap(), None);
        }
    }
    assert_eq!(
        store
            .ticket_by_key(&agent("agent-a"), winner.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(winner)
    );
    let summary = verify_chain(&*store).await;
    assert_eq!(summary.count, proposals[winners[0]].audit.len() as u64);
    store.shutdown().await.unwrap();
    Ok(())
}
