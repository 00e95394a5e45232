//! Freezes: checked inside the committing write, set with their audit row, held across a
//! reopen.

use super::prelude::*;

fn freeze_write(scope: FreezeScope, reason: &str, n: u64) -> Write {
    let mut write =
        Write::default().with_freeze_change(FreezeChange::set(scope, reason, Some(person("olga"))));
    write.audit.push(marker(n, ts(T0)));
    write
}

fn lift_write(scope: FreezeScope, n: u64) -> Write {
    let mut write = Write::default().with_freeze_change(FreezeChange::lift(scope));
    write.audit.push(marker(n, ts(T0)));
    write
}

fn guarded(p: &crate::ticket::Transition, agent_name: &str) -> Write {
    insert(p).with_freeze_guard(agent(agent_name))
}

/// A write guarded for an agent is refused whole (`Frozen`) while a freeze of that agent or of
/// every agent is in force, and lands once it is lifted; unguarded writes and other agents'
/// are not touched. `freezes` lists what is in force.
pub async fn a_freeze_refuses_guarded_writes_until_lifted(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    assert!(store.freezes().await.unwrap().is_empty());
    let a = FreezeScope::Agent(agent("agent-a"));
    store
        .commit(freeze_write(a.clone(), "agent a misbehaves", 1))
        .await
        .unwrap();
    let freezes = store.freezes().await.unwrap();
    assert_eq!(freezes.len(), 1);
    assert_eq!(
        (
            &freezes[0].scope,
            freezes[0].reason.as_str(),
            freezes[0].since
        ),
        (&a, "agent a misbehaves", ts(T0))
    );
    assert_eq!(freezes[0].by, Some(person("olga")));

    let p = propose("agent-a", "a", review(), ts(T0));
    let before = snapshot(&*store, p.ticket.id()).await;
    let mut write = guarded(&p, "agent-a");
    write.nonces.push(nonce());
    write.outbox.push(outbox(p.ticket.id(), ts(T0)));
    match store.commit(write.clone()).await {
        Err(StoreError::Frozen { scope, reason }) => {
            assert_eq!((scope, reason.as_str()), (a.clone(), "agent a misbehaves"));
        }
        other => panic!("expected frozen, got {other:?}"),
    }
    assert_unchanged(&*store, p.ticket.id(), &before).await;
    assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
    // Another agent, and an unguarded write of the frozen one (a rejection, a finish).
    proposed(&*store, "agent-b", "b", review(), ts(T0)).await;
    let unguarded = proposed(&*store, "agent-a", "c", review(), ts(T0)).await;
    store
        .commit(update(&unguarded, &reject(&unguarded, "bob", ts(T0))))
        .await
        .unwrap();

    // Every agent.
    store
        .commit(freeze_write(FreezeScope::All, "incident", 2))
        .await
        .unwrap();
    let q = propose("agent-b", "d", review(), ts(T0));
    assert!(matches!(
        store.commit(guarded(&q, "agent-b")).await,
        Err(StoreError::Frozen {
            scope: FreezeScope::All,
            ..
        })
    ));
    let listed: Vec<FreezeScope> = store
        .freezes()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.scope)
        .collect();
    assert_eq!(listed, [FreezeScope::All, a.clone()], "global first");

    store.commit(lift_write(FreezeScope::All, 3)).await.unwrap();
    store.commit(guarded(&q, "agent-b")).await.unwrap();
    assert!(matches!(
        store.commit(write.clone()).await,
        Err(StoreError::Frozen { .. })
    ));
    store.commit(lift_write(a, 4)).await.unwrap();
    // Lifting what is not frozen changes nothing.
    store.commit(lift_write(FreezeScope::All, 5)).await.unwrap();
    assert!(store.freezes().await.unwrap().is_empty());
    store.commit(write).await.unwrap();
    assert!(store.ticket(p.ticket.id()).await.unwrap().is_some());
    store.shutdown().await.unwrap();
    Ok(())
}

/// The freeze and its audit row are one write: a freeze write refused for another reason sets
/// no freeze.
pub async fn a_freeze_is_set_with_its_audit_row_or_not_at_all(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let used = nonce();
    store.commit(Write::new().with_nonce(used)).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let mut write = freeze_write(FreezeScope::All, "incident", 1);
    write.nonces.push(used);
    assert!(matches!(
        store.commit(write).await,
        Err(StoreError::NonceReused)
    ));
    assert!(store.freezes().await.unwrap().is_empty());
    assert_eq!(store.audit_head().await.unwrap(), head);
    let p = propose("agent-a", "a", review(), ts(T0));
    store.commit(guarded(&p, "agent-a")).await.unwrap();
    store.shutdown().await.unwrap();
    Ok(())
}

/// Guarded writes racing a freeze: each one either committed before the freeze's write (its
/// audit rows come before the freeze's in the chain) or was refused `Frozen` — never after.
pub async fn guarded_writes_racing_a_freeze_commit_before_it_or_not_at_all(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let proposals: Vec<_> = (0..72)
        .map(|i| propose("agent-a", &format!("k{i}"), review(), ts(T0)))
        .collect();
    // Some before, many racing, some after.
    for p in &proposals[..8] {
        store.commit(guarded(p, "agent-a")).await.unwrap();
    }
    let mut racing = Vec::new();
    for (i, p) in proposals[8..64].iter().enumerate() {
        let (store, write) = (Arc::clone(&store), guarded(p, "agent-a"));
        racing.push(tokio::spawn(async move {
            for _ in 0..i % 7 {
                tokio::task::yield_now().await;
            }
            store.commit(write).await
        }));
    }
    let freezer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            store
                .commit(freeze_write(
                    FreezeScope::Agent(agent("agent-a")),
                    "race",
                    99,
                ))
                .await
        })
    };
    let mut outcomes = Vec::new();
    for r in racing {
        outcomes.push(r.await.unwrap());
    }
    let frozen_at = freezer.await.unwrap().unwrap().head.seq;
    for p in &proposals[64..] {
        assert!(matches!(
            store.commit(guarded(p, "agent-a")).await,
            Err(StoreError::Frozen { .. })
        ));
    }
    let mut before = 8;
    for (p, outcome) in proposals[8..64].iter().zip(&outcomes) {
        match outcome {
            Ok(committed) => {
                before += 1;
                assert!(
                    committed.head.seq < frozen_at,
                    "a guarded write committed after the freeze"
                );
            }
            Err(StoreError::Frozen { .. }) => {
                assert_eq!(store.ticket(p.ticket.id()).await.unwrap(), None);
            }
            Err(e) => panic!("a guarded write failed otherwise: {e:?}"),
        }
    }
    for p in &proposals {
        let events = store.ticket_audit(p.ticket.id()).await.unwrap();
        assert!(
            events.iter().all(|e| e.seq() < frozen_at),
            "audit rows of a guarded write after the freeze's"
        );
    }
    let listed = all_pages(&*store, TicketFilter::default()).await.0.len();
    assert_eq!(listed, before, "exactly the writes answered Ok are stored");
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// Durable: a freeze holds across a reopen (a restart does not unfreeze), and so does its lift.
pub async fn freezes_hold_across_reopen(h: Harness) -> Checked {
    h.require_durable()?;
    let env = Env::new();
    let store = h.open(&env).await;
    store
        .commit(freeze_write(FreezeScope::All, "incident", 1))
        .await
        .unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = h.open(&env).await;
    assert_eq!(store.freezes().await.unwrap().len(), 1);
    let p = propose("agent-a", "a", review(), ts(T0));
    assert!(matches!(
        store.commit(guarded(&p, "agent-a")).await,
        Err(StoreError::Frozen { .. })
    ));
    store.commit(lift_write(FreezeScope::All, 2)).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    let store = h.open(&env).await;
    assert!(store.freezes().await.unwrap().is_empty());
    store.commit(guarded(&p, "agent-a")).await.unwrap();
    store.shutdown().await.unwrap();
    Ok(())
}
