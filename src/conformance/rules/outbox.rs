//! The outbox: claims with leases, per-ticket-and-channel order, outcomes recorded once.

use super::prelude::*;

/// An outbox row of `ticket` on `channel`, due at `due`.
fn outbox_on(ticket: TicketId, channel: &str, due: Timestamp) -> OutboxRow {
    let mut row = outbox(ticket, due);
    row.channel = channel.into();
    row
}

/// Claims return due pending rows, oldest due first, at most `limit`; a claim leases them
/// (due moves to `now + lease`) so they are not claimed again until the lease ends.
pub async fn outbox_claims_due_rows_oldest_first_and_leases_them(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let lease = std::time::Duration::from_secs(60);
    let mut ids = Vec::new();
    for (i, due) in [T0 + 3_000, T0 + 1_000, T0 + 2_000, T0 + 50_000]
        .into_iter()
        .enumerate()
    {
        let p = propose("agent-a", &format!("outbox-{i}"), review(), ts(T0));
        let row = outbox_on(p.ticket.id(), "ops", ts(due));
        ids.push(row.id);
        let mut w = insert(&p);
        w.outbox.push(row);
        store.commit(w).await.unwrap();
    }

    assert!(store
        .claim_outbox(ts(T0), lease, 10)
        .await
        .unwrap()
        .is_empty());
    let now = ts(T0 + 3_000);
    let first = store.claim_outbox(now, lease, 2).await.unwrap();
    let claimed: Vec<_> = first.iter().map(|e| e.row.id).collect();
    assert_eq!(
        claimed,
        [ids[1], ids[2]],
        "oldest due first, at most the limit"
    );
    for e in &first {
        assert_eq!(e.status, OutboxStatus::Pending);
        assert_eq!(e.attempts, 0);
        assert_eq!(e.row.due, now.saturating_add(lease), "leased");
        assert_eq!(e.row.channel, "ops");
    }
    let second = store.claim_outbox(now, lease, 10).await.unwrap();
    assert_eq!(
        second.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        [ids[0]],
        "claimed rows are not claimed again during their lease"
    );
    assert!(store.claim_outbox(now, lease, 10).await.unwrap().is_empty());
    // A lease that ran out (a crashed worker) makes the rows claimable again (with the
    // fourth row, due meanwhile).
    let later = now.saturating_add(lease);
    let again: BTreeSet<_> = store
        .claim_outbox(later, lease, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.row.id)
        .collect();
    assert_eq!(again, ids.iter().copied().collect::<BTreeSet<_>>());
    // Claims changed nothing but the due time.
    let health = store.health().await.unwrap();
    assert_eq!((health.outbox_backlog, health.outbox_dead), (4, 0));
    Ok(())
}

/// A ticket's rows on one channel are claimed one at a time, in the order written: the next
/// only once the earlier one is no longer pending. Other channels are independent.
pub async fn outbox_claims_a_tickets_rows_per_channel_in_order(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let lease = std::time::Duration::from_secs(60);
    let p = propose("agent-a", "ordered", review(), ts(T0));
    let id = p.ticket.id();
    let rows = [
        outbox_on(id, "ops", ts(T0 + 5)),
        outbox_on(id, "room", ts(T0 + 5)),
        outbox_on(id, "ops", ts(T0)),
    ];
    let mut w = insert(&p);
    w.outbox.extend(rows.iter().cloned());
    store.commit(w).await.unwrap();

    let stored = store.ticket_outbox(id).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        "rows of a ticket in the order written"
    );
    assert_eq!(stored[0].row, rows[0]);

    let now = ts(T0 + 10);
    let first = store.claim_outbox(now, lease, 10).await.unwrap();
    let claimed: BTreeSet<_> = first.iter().map(|e| e.row.id).collect();
    assert_eq!(claimed, BTreeSet::from([rows[0].id, rows[1].id]));
    // The later `ops` row waits while the earlier one is pending, even past its lease.
    let after_lease = now.saturating_add(lease);
    let retry: Vec<_> = store
        .claim_outbox(after_lease, lease, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.row.id)
        .collect();
    assert!(!retry.contains(&rows[2].id));
    let ops_first = store
        .ticket_outbox(id)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.row.id == rows[0].id)
        .unwrap();
    store
        .commit(Write::new().with_outbox_updates(vec![OutboxUpdate::new(
            rows[0].id,
            ops_first.attempts,
            OutboxOutcome::Delivered {
                receipt: json!({ "channel_message_id": "m-1" }),
            },
        )]))
        .await
        .unwrap();
    let next = store.claim_outbox(after_lease, lease, 10).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.row.id).collect::<Vec<_>>(),
        [rows[2].id]
    );
    Ok(())
}

/// Outcomes: delivered keeps the receipt (the newest per ticket and channel is readable),
/// a retry counts the attempt and moves the due time, dead counts in health. Each applies
/// only to a pending row at the claimed attempts count; otherwise the whole write — audit
/// rows included — is refused with `OutboxConflict`.
pub async fn outbox_outcomes_are_recorded_once_with_their_audit_rows(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let p = propose("agent-a", "outcomes", review(), ts(T0));
    let id = p.ticket.id();
    let rows = [
        outbox_on(id, "ops", ts(T0)),
        outbox_on(id, "room", ts(T0)),
        outbox_on(id, "mail", ts(T0)),
    ];
    let mut w = insert(&p);
    w.outbox.extend(rows.iter().cloned());
    store.commit(w).await.unwrap();
    assert_eq!(store.outbox_receipt(id, "ops").await.unwrap(), None);

    let outcome = |row: &OutboxRow, attempts: u32, outcome: OutboxOutcome, n: u64| {
        Write::new()
            .with_outbox_updates(vec![OutboxUpdate::new(row.id, attempts, outcome)])
            .with_audit_records(vec![marker(n, ts(T0 + 1))])
    };
    let receipt = json!({ "channel_message_id": "m-ops" });
    store
        .commit(outcome(
            &rows[0],
            0,
            OutboxOutcome::Delivered {
                receipt: receipt.clone(),
            },
            1,
        ))
        .await
        .unwrap();
    let head = store.audit_head().await.unwrap();
    // A second outcome for the same claim (another worker) is refused whole.
    match store
        .commit(outcome(
            &rows[0],
            0,
            OutboxOutcome::Retry {
                due: ts(T0 + 9),
                error: "late".into(),
            },
            2,
        ))
        .await
    {
        Err(StoreError::OutboxConflict { id: conflict }) => assert_eq!(conflict, rows[0].id),
        other => panic!("expected OutboxConflict, got {other:?}"),
    }
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "no audit row for a refused outcome"
    );
    assert_eq!(
        store.outbox_receipt(id, "ops").await.unwrap(),
        Some(receipt)
    );
    assert_eq!(store.outbox_receipt(id, "room").await.unwrap(), None);

    // Retry: attempts + 1, due moved, error kept; a stale attempts count is refused.
    store
        .commit(outcome(
            &rows[1],
            0,
            OutboxOutcome::Retry {
                due: ts(T0 + 60_000),
                error: "timeout".into(),
            },
            3,
        ))
        .await
        .unwrap();
    assert!(matches!(
        store
            .commit(outcome(
                &rows[1],
                0,
                OutboxOutcome::Dead {
                    error: "stale".into()
                },
                4
            ))
            .await,
        Err(StoreError::OutboxConflict { .. })
    ));
    assert!(store
        .claim_outbox(ts(T0 + 59_999), std::time::Duration::from_secs(1), 10)
        .await
        .unwrap()
        .iter()
        .all(|e| e.row.id != rows[1].id));
    // Dead.
    store
        .commit(outcome(
            &rows[2],
            0,
            OutboxOutcome::Dead {
                error: "permanent".into(),
            },
            5,
        ))
        .await
        .unwrap();

    let stored = store.ticket_outbox(id).await.unwrap();
    let by_id = |i: usize| stored.iter().find(|e| e.row.id == rows[i].id).unwrap();
    assert_eq!(
        (by_id(0).status, by_id(0).attempts),
        (OutboxStatus::Delivered, 0)
    );
    assert_eq!(
        (by_id(1).status, by_id(1).attempts, by_id(1).row.due),
        (OutboxStatus::Pending, 1, ts(T0 + 60_000))
    );
    assert_eq!(by_id(1).last_error.as_deref(), Some("timeout"));
    assert_eq!(
        (by_id(2).status, by_id(2).attempts),
        (OutboxStatus::Dead, 1)
    );
    let health = store.health().await.unwrap();
    assert_eq!((health.outbox_backlog, health.outbox_dead), (1, 1));
    verify_chain(store.as_ref()).await;
    Ok(())
}

/// Workers claiming at the same time never get the same row: eight workers claiming small
/// batches at one instant until nothing is left hold every due row exactly once between them.
pub async fn concurrent_claims_never_hand_a_row_to_two_workers(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let lease = std::time::Duration::from_secs(60);
    let mut ids = BTreeSet::new();
    for i in 0..12 {
        let p = propose("agent-a", &format!("claims-{i}"), review(), ts(T0));
        let mut w = insert(&p);
        for channel in ["ops", "room", "mail", "chat"] {
            let row = outbox_on(p.ticket.id(), channel, ts(T0));
            ids.insert(row.id);
            w.outbox.push(row);
        }
        store.commit(w).await.unwrap();
    }
    let now = ts(T0 + 1);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_outbox(now, lease, 3).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch.into_iter().map(|e| e.row.id));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<_> = claimed.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        claimed.len(),
        "a row was handed to two workers during its lease"
    );
    assert_eq!(distinct, ids, "every due row was claimed");
    store.shutdown().await.unwrap();
    Ok(())
}
