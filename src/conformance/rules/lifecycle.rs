//! Shutdown, reopen and commit listeners: acknowledged commits survive, the chain continues,
//! listeners hear each durable change.

use super::prelude::*;

/// After shutdown every commit is refused with `Closed`; shutting down again is fine.
pub async fn shutdown_refuses_later_commits(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    store.shutdown().await.unwrap();
    let p = propose("agent-a", "b", review(), ts(T0));
    assert!(matches!(
        store.commit(insert(&p)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.commit(Write::default()).await,
        Err(StoreError::Closed)
    ));
    store.shutdown().await.unwrap();
    Ok(())
}

/// Shutdown while commits are in flight: each commit is either acknowledged or refused with
/// `Closed`, and after a reopen exactly the acknowledged ones are there.
pub async fn shutdown_keeps_every_acknowledged_commit(h: Harness) -> Checked {
    h.require_durable()?;
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let mut outcomes: Vec<(Ticket, bool)> = Vec::new();
    for i in 0..8 {
        outcomes.push((
            proposed(&*store, "agent-a", &format!("first-{i}"), review(), now).await,
            true,
        ));
    }
    let proposals: Vec<_> = (0..48)
        .map(|i| propose("agent-a", &format!("racing-{i}"), review(), now))
        .collect();
    let handles: Vec<_> = proposals
        .iter()
        .map(|p| {
            let store = Arc::clone(&store);
            let write = insert(p);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    tokio::task::yield_now().await;
    store.shutdown().await.unwrap();
    for (p, handle) in proposals.iter().zip(handles) {
        match handle.await.unwrap() {
            Ok(_) => outcomes.push((p.ticket.clone(), true)),
            Err(StoreError::Closed) => outcomes.push((p.ticket.clone(), false)),
            Err(e) => panic!("a commit racing shutdown failed otherwise: {e:?}"),
        }
    }
    drop(store);

    let reopened = h.open(&env).await;
    for (ticket, acknowledged) in &outcomes {
        let stored = reopened.ticket(ticket.id()).await.unwrap();
        if *acknowledged {
            assert_eq!(
                stored.as_ref(),
                Some(ticket),
                "an acknowledged commit survives"
            );
        } else {
            assert_eq!(stored, None, "a refused commit left nothing");
        }
    }
    let acknowledged = outcomes.iter().filter(|(_, ok)| *ok).count() as u64;
    let per_ticket = propose("agent-a", "x", review(), now).audit.len() as u64;
    assert_eq!(
        verify_chain(&*reopened).await.count,
        acknowledged * per_ticket
    );
    reopened.shutdown().await.unwrap();
    Ok(())
}

/// After a reopen the head is where it was, the next events chain onto it, and the tickets,
/// keys and compare-and-swap versions are intact.
pub async fn chain_continues_across_reopen(h: Harness) -> Checked {
    h.require_durable()?;
    let env = Env::new();
    let now = ts(T0);
    let store = h.open(&env).await;
    let a = proposed(&*store, "agent-a", "a", review(), now).await;
    proposed(&*store, "agent-a", "b", allow(), now).await;
    let head = store.audit_head().await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = h.open(&env).await;
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", None), a.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(&a)
    );
    let twin = propose("agent-a", "a", review(), now);
    assert!(matches!(
        store.commit(insert(&twin)).await,
        Err(StoreError::DuplicateKey { existing }) if existing == a.id()
    ));
    let next = approve(&a, "alice", now);
    let committed = store.commit(update(&a, &next)).await.unwrap();
    assert_eq!(committed.head.seq, head.seq + next.audit.len() as u64);
    assert_eq!(
        records_between(&*store, head.seq + 1, committed.head.seq).await,
        next.audit
    );
    let raw = store.audit_events(head.seq + 1, 1).await.unwrap();
    assert_eq!(
        raw[0].prev_hash, head.hash,
        "the first new event links to the old head"
    );
    assert_eq!(verify_chain(&*store).await.head, committed.head);
    store.shutdown().await.unwrap();
    drop(store);

    let store = h.open(&env).await;
    assert_eq!(store.audit_head().await.unwrap(), committed.head);
    assert_eq!(
        store.ticket(a.id()).await.unwrap().as_ref(),
        Some(&next.ticket)
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// Listeners registered with `on_commit` hear the tickets each durable commit changed, once,
/// before the committing caller is answered; a refused write and a write without a ticket are
/// not heard; a listener that panics takes nothing down (the next commits are answered and
/// heard by the others). (Needs [`Harness::with_commit_listeners`].)
pub async fn commit_listeners_hear_each_durable_change_before_its_caller(h: Harness) -> Checked {
    h.require_commit_listeners()?;
    let env = Env::new();
    let store = h.open(&env).await;
    let heard: Arc<std::sync::Mutex<Vec<TicketId>>> = Arc::default();
    let sink = Arc::clone(&heard);
    store.on_commit(Arc::new(move |ids: &[TicketId]| {
        sink.lock().unwrap().extend_from_slice(ids)
    }));
    let heard_now = || heard.lock().unwrap().clone();
    let p = propose("agent-a", "a", review(), ts(T0));
    store.commit(insert(&p)).await.unwrap();
    assert_eq!(
        heard_now(),
        [p.ticket.id()],
        "heard before the caller was answered"
    );
    let next = approve(&p.ticket, "alice", ts(T0));
    store.commit(update(&p.ticket, &next)).await.unwrap();
    assert_eq!(heard_now(), [p.ticket.id(), p.ticket.id()]);
    // A refused write and a write without a ticket are not heard.
    store.commit(update(&p.ticket, &next)).await.unwrap_err();
    store
        .commit(Write::new().with_audit_records(vec![marker(1, ts(T0))]))
        .await
        .unwrap();
    assert_eq!(heard_now(), [p.ticket.id(), p.ticket.id()]);

    // A listener that panics does not take the store down.
    store.on_commit(Arc::new(|_: &[TicketId]| panic!("listener bug")));
    let q = propose("agent-a", "b", review(), ts(T0));
    store.commit(insert(&q)).await.unwrap();
    let r = propose("agent-a", "c", review(), ts(T0));
    store.commit(insert(&r)).await.unwrap();
    assert!(store.ticket(r.ticket.id()).await.unwrap().is_some());
    assert_eq!(heard_now()[2..], [q.ticket.id(), r.ticket.id()]);
    store.shutdown().await.unwrap();
    Ok(())
}
