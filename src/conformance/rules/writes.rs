//! Writes and reads of one ticket: the contract version, read-back, compare-and-swap, and
//! refused writes that leave nothing behind.

use super::prelude::*;

/// A store states the contract version it implements, and this suite is the contract of
/// [`STORE_CONTRACT_VERSION`]: a store that passes it implements that version (the engine
/// refuses a store that states an older one).
pub async fn states_the_store_contract_version_it_implements(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    assert_eq!(
        store.contract_version(),
        crate::STORE_CONTRACT_VERSION,
        "the store states another contract version than the one this suite checks"
    );
    Ok(())
}

/// A committed insert reads back by id and by key with its audit records, stamped with the
/// store clock's time and chained onto the head.
pub async fn insert_then_read_back(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    assert_eq!(store.audit_head().await.unwrap(), ChainHead::GENESIS);

    let p = propose("agent-a", "key-1", review(), now);
    let id = p.ticket.id();
    let mut write = insert(&p);
    write.outbox.push(outbox(id, now));
    let committed = store.commit(write).await.unwrap();

    assert_eq!(
        committed.at, now,
        "the commit time comes from the store's clock"
    );
    assert_eq!(committed.head.seq, p.audit.len() as u64);
    assert_eq!(store.audit_head().await.unwrap(), committed.head);
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&p.ticket));
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-a", None), p.ticket.idempotency_key())
            .await
            .unwrap()
            .as_ref(),
        Some(&p.ticket)
    );
    assert_eq!(store.ticket(new_id()).await.unwrap(), None);
    assert_eq!(
        store
            .ticket_by_key(&requester("agent-b", None), p.ticket.idempotency_key())
            .await
            .unwrap(),
        None,
        "keys are scoped per requester"
    );
    assert_eq!(records(&store.ticket_audit(id).await.unwrap()), p.audit);
    assert!(store.decisions(id).await.unwrap().is_empty());
    assert_eq!(verify_chain(&*store).await.count, p.audit.len() as u64);
    store.shutdown().await.unwrap();
    Ok(())
}

/// `Update` replaces the ticket only at the expected version; a stale version, an unknown id or
/// a new version other than `expected + 1` is refused and writes nothing.
pub async fn update_is_a_compare_and_swap_on_the_version(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let approved = approve(&v1, "alice", now);
    let v3 = begin(&approved.ticket, ts(T0 + 10_000), now);
    let before = snapshot(&*store, id).await;

    // A new version that does not follow the expected one.
    for (ticket, expected) in [(&v3.ticket, 1), (&v1, 1), (&approved.ticket, 0)] {
        let write = Write::new()
            .with_ticket(TicketWrite::Update {
                ticket: Box::new(ticket.clone()),
                expected_version: expected,
            })
            .with_audit_records(approved.audit.clone())
            .with_decision(decision(id, "alice", "approve", now));
        let err = store.commit(write).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidWrite(_)),
            "version {} from expected {expected}: {err:?}",
            ticket.version()
        );
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&v1));

    // The right version wins once.
    let mut good = update(&v1, &approved);
    good.decision = Some(decision(id, "alice", "approve", now));
    store.commit(good).await.unwrap();
    assert_eq!(
        store.ticket(id).await.unwrap().as_ref(),
        Some(&approved.ticket)
    );

    // A change computed from version 1 is now stale.
    let before = snapshot(&*store, id).await;
    let rejected = reject(&v1, "bob", now);
    let mut stale = update(&v1, &rejected);
    stale.decision = Some(decision(id, "bob", "reject", now));
    stale.outbox.push(outbox(id, now));
    match store.commit(stale).await {
        Err(StoreError::VersionConflict { ticket, expected }) => {
            assert_eq!((ticket, expected), (id, 1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(
        store.ticket(id).await.unwrap().as_ref(),
        Some(&approved.ticket)
    );

    // An update of a ticket that was never inserted.
    let ghost = propose("agent-a", "key-2", review(), now);
    let ghost_id = ghost.ticket.id();
    let ghost_v2 = approve(&ghost.ticket, "alice", now);
    match store.commit(update(&ghost.ticket, &ghost_v2)).await {
        Err(StoreError::NotFound(missing)) => assert_eq!(missing, ghost_id),
        other => panic!("expected not found, got {other:?}"),
    }
    assert_eq!(store.ticket(ghost_id).await.unwrap(), None);
    assert_unchanged(&*store, id, &before).await;

    // The next version in sequence still works.
    store.commit(update(&approved.ticket, &v3)).await.unwrap();
    assert_eq!(store.ticket(id).await.unwrap().as_ref(), Some(&v3.ticket));
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// Whatever refuses a write — a lost compare-and-swap, an unknown ticket, a used key, a reused
/// nonce, a passed limit, a malformed version — none of its parts is written: no ticket, no
/// decision, no audit row, no outbox row, and none of its nonces is consumed.
pub async fn refused_write_writes_nothing(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review(), now).await;
    let id = v1.id();
    let v2 = approve(&v1, "alice", now);
    store.commit(update(&v1, &v2)).await.unwrap();
    let used = nonce();
    store
        .commit(
            Write::new()
                .with_nonces(vec![used])
                .with_audit_records(vec![marker(0, now)]),
        )
        .await
        .unwrap();

    // Every refused write carries a fresh nonce, a decision, audit records, an outbox row.
    let mut fresh = Vec::new();
    let mut dressed = |mut write: Write, ticket: TicketId, n: u64| {
        let own = nonce();
        fresh.push(own);
        write.nonces.insert(0, own);
        write.decision = Some(decision(ticket, "carol", "approve", now));
        write.audit.push(marker(n, now));
        write.outbox.push(outbox(ticket, now));
        write
    };
    let stale = dressed(update(&v1, &reject(&v1, "bob", now)), id, 1);
    let ghost = propose("agent-a", "key-ghost", review(), now);
    let unknown = dressed(
        update(&ghost.ticket, &approve(&ghost.ticket, "alice", now)),
        ghost.ticket.id(),
        2,
    );
    let twin = propose("agent-a", "key-1", review(), now);
    let duplicate = dressed(insert(&twin), twin.ticket.id(), 3);
    let mut reused = dressed(
        update(&v2.ticket, &begin(&v2.ticket, ts(T0 + 9_000), now)),
        id,
        4,
    );
    reused.nonces.push(used); // after a fresh one, so a partial write would show
    let mut late = dressed(
        update(&v2.ticket, &begin(&v2.ticket, ts(T0 + 9_000), now)),
        id,
        5,
    );
    late.valid_before = Some(now);
    // Writes version 2 again, from version 2.
    let malformed = dressed(update(&v2.ticket, &v2), id, 6);

    let before = snapshot(&*store, id).await;
    type IsExpected = fn(&StoreError) -> bool;
    let cases: [(&str, Write, IsExpected); 6] = [
        ("stale version", stale, |e| {
            matches!(e, StoreError::VersionConflict { .. })
        }),
        ("unknown ticket", unknown, |e| {
            matches!(e, StoreError::NotFound(_))
        }),
        ("used key", duplicate, |e| {
            matches!(e, StoreError::DuplicateKey { .. })
        }),
        ("reused nonce", reused, |e| {
            matches!(e, StoreError::NonceReused)
        }),
        ("too late", late, |e| {
            matches!(e, StoreError::TooLate { .. })
        }),
        ("malformed version", malformed, |e| {
            matches!(e, StoreError::InvalidWrite(_))
        }),
    ];
    for (what, write, expected) in cases {
        let err = store.commit(write).await.unwrap_err();
        assert!(expected(&err), "{what}: unexpected {err:?}");
        assert_unchanged(&*store, id, &before).await;
        assert_eq!(
            store.ticket(id).await.unwrap().as_ref(),
            Some(&v2.ticket),
            "{what}: the ticket is unchanged"
        );
    }
    assert_eq!(store.ticket(ghost.ticket.id()).await.unwrap(), None);
    assert_eq!(store.ticket(twin.ticket.id()).await.unwrap(), None);
    assert_eq!(
        store.decisions(ghost.ticket.id()).await.unwrap(),
        Vec::new()
    );

    // None of the refused writes consumed its nonce.
    store
        .commit(
            Write::new()
                .with_nonces(fresh)
                .with_audit_records(vec![marker(7, now)]),
        )
        .await
        .expect("the nonces of refused writes are still unused");
    let summary = verify_chain(&*store).await;
    assert_eq!(summary.count, before.head.seq + 1);
    store.shutdown().await.unwrap();
    Ok(())
}

/// A write that fails after its audit rows were chained (here: an outbox id that is already
/// taken) leaves no trace, and the next write chains onto the head as it was.
pub async fn failed_write_rolls_back_its_audit_rows(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let first = propose("agent-a", "key-1", review(), now);
    let row = outbox(first.ticket.id(), now);
    let mut write = insert(&first);
    write.outbox.push(row.clone());
    store.commit(write).await.unwrap();
    let before = snapshot(&*store, first.ticket.id()).await;

    let second = propose("agent-a", "key-2", review(), now);
    let mut clash = insert(&second);
    clash.audit.push(marker(1, now));
    clash.outbox.push(row);
    store
        .commit(clash)
        .await
        .expect_err("an outbox id is unique");
    assert_unchanged(&*store, first.ticket.id(), &before).await;
    assert_eq!(store.ticket(second.ticket.id()).await.unwrap(), None);
    assert!(store
        .ticket_audit(second.ticket.id())
        .await
        .unwrap()
        .is_empty());

    let third = propose("agent-a", "key-3", review(), now);
    let committed = store.commit(insert(&third)).await.unwrap();
    assert_eq!(
        committed.head.seq,
        before.head.seq + third.audit.len() as u64
    );
    assert_eq!(
        records_between(&*store, before.head.seq + 1, committed.head.seq).await,
        third.audit
    );
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}
