//! Idempotency: one ticket per key and requester, also under races.

use super::prelude::*;

/// Keys are scoped by the whole requester, agent and principal. A second ticket under one
/// requester's key is refused with that requester's ticket and writes nothing — also when the
/// requester has no principal ("no principal" is a value: a `UNIQUE` index over a `NULL`
/// would let both in) — while the same key under another agent, or the same agent acting for
/// another principal, or for none, is another requester's own ticket.
pub async fn idempotency_key_is_unique_per_requester(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let requesters: [(&str, Option<&str>); 4] = [
        ("agent-a", None),
        ("agent-a", Some("carol")),
        ("agent-a", Some("pat")),
        ("agent-b", None),
    ];
    let mut firsts = Vec::new();
    for (agent_name, principal) in requesters {
        let first = propose_for(agent_name, principal, "same-key", review(), now);
        store.commit(insert(&first)).await.unwrap_or_else(|e| {
            panic!("{agent_name} for {principal:?}: its own key is free, got {e:?}")
        });
        firsts.push(first.ticket);
    }
    for ((agent_name, principal), first) in requesters.into_iter().zip(&firsts) {
        let before = snapshot(&*store, first.id()).await;
        // The same requester again (twice without a principal, for the first requester).
        let again = propose_for(agent_name, principal, "same-key", allow(), now);
        let mut write = insert(&again);
        write.outbox.push(outbox(again.ticket.id(), now));
        match store.commit(write).await {
            Err(StoreError::DuplicateKey { existing }) => assert_eq!(
                existing,
                first.id(),
                "{agent_name} for {principal:?}: its own ticket"
            ),
            other => {
                panic!("{agent_name} for {principal:?}: expected a duplicate key, got {other:?}")
            }
        }
        assert_unchanged(&*store, first.id(), &before).await;
        assert_eq!(store.ticket(again.ticket.id()).await.unwrap(), None);
        assert_eq!(
            store
                .ticket_by_key(&requester(agent_name, principal), first.idempotency_key())
                .await
                .unwrap()
                .as_ref(),
            Some(first),
            "{agent_name} for {principal:?} reads its own ticket"
        );
    }
    assert_eq!(
        store
            .ticket_by_key(
                &requester("agent-a", Some("dave")),
                firsts[0].idempotency_key()
            )
            .await
            .unwrap(),
        None,
        "a requester that never used the key finds nothing"
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
            .ticket_by_key(&requester("agent-a", None), winner.idempotency_key())
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

/// Sixteen concurrent inserts under one key by an agent acting for a principal: one ticket.
pub async fn concurrent_inserts_with_one_key_and_a_principal_create_one_ticket(
    h: Harness,
) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let proposals: Vec<_> = (0..16)
        .map(|_| propose_for("agent-a", Some("pat"), "race", review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        match h.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(StoreError::DuplicateKey { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    assert_eq!(
        store
            .ticket_by_key(
                &requester("agent-a", Some("pat")),
                proposals[0].ticket.idempotency_key()
            )
            .await
            .unwrap()
            .map(|t| t.id()),
        Some(proposals[winners[0]].ticket.id())
    );
    store.shutdown().await.unwrap();
    Ok(())
}
