//! Rebase: a write that lost its compare-and-swap is recomputed on the ticket as committed,
//! so writes that commute (reviewers' votes) never lose to each other.

use super::prelude::*;

/// decision row, with `nonces`.
fn vote_write(current: &Ticket, who: &str, at: Timestamp, nonces: Vec<NonceUse>) -> Write {
    let vote = approve(current, who, at);
    let mut write = update(current, &vote);
    write.decision = Some(decision(current.id(), who, "approve", at));
    write.nonces = nonces;
    write
}

/// A rebase that re-applies `who`'s approval to the ticket as committed, counting its calls
/// and recording the versions it was called on.
fn vote_rebase(
    who: &'static str,
    nonces: Vec<NonceUse>,
    calls: Arc<std::sync::Mutex<Vec<u64>>>,
) -> Rebase {
    Rebase::new(move |current: &Ticket, at: Timestamp| {
        calls.lock().unwrap().push(current.version());
        Some(vote_write(current, who, at, nonces.clone()))
    })
}

/// A write whose update expected an older version and carries a rebase is not refused: the
/// store calls the rebase with the ticket as committed and the commit time, and applies what
/// it returns instead — its ticket, decision, audit and outbox rows and nonces — and nothing
/// of the write it replaced.
pub async fn a_lost_compare_and_swap_is_rebased_on_the_ticket_as_committed(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    // Alice's vote lands first.
    store
        .commit(vote_write(&v1, "alice", now, Vec::new()))
        .await
        .unwrap();
    let v2 = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(v2.version(), 2);

    // Bob's vote was computed on version 1; its rebase recomputes it on what is stored.
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let token = nonce();
    let mut stale = vote_write(&v1, "bob", now, vec![token]);
    stale.outbox.push(outbox(id, now));
    let head = store.audit_head().await.unwrap();
    let committed = store
        .commit(stale.with_rebase(vote_rebase("bob", vec![token], Arc::clone(&calls))))
        .await
        .expect("rebased, not refused");
    assert_eq!(*calls.lock().unwrap(), vec![2], "called once, on version 2");

    let v3 = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(
        v3,
        approve(&v2, "bob", committed.at).ticket,
        "bob's vote on alice's"
    );
    assert_eq!(v3.version(), 3);
    let voters: Vec<&str> = v3.votes().iter().map(|v| v.person.as_str()).collect();
    assert_eq!(voters, ["alice", "bob"]);
    // The rebased write's rows, not the replaced one's: its audit records (computed on v2),
    // one decision row, no outbox row (the rebase wrote none), its nonce consumed.
    let written = records_between(&*store, head.seq + 1, committed.head.seq).await;
    assert_eq!(written, approve(&v2, "bob", committed.at).audit);
    assert_eq!(store.decisions(id).await.unwrap().len(), 2);
    assert_eq!(store.health().await.unwrap().outbox_backlog, 0);
    let mut again = insert(&propose("agent-a", "key-2", review(), now));
    again.nonces.push(token);
    assert!(matches!(
        store.commit(again).await,
        Err(StoreError::NonceReused)
    ));
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// A rebase that declines (`None`) leaves the write refused as a version conflict: nothing of
/// it is written and none of its nonces consumed. A write at the expected version never calls
/// its rebase.
pub async fn a_declined_rebase_is_a_version_conflict_and_writes_nothing(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fresh = vote_write(&v1, "alice", now, Vec::new()).with_rebase(vote_rebase(
        "alice",
        Vec::new(),
        Arc::clone(&calls),
    ));
    store.commit(fresh).await.unwrap();
    assert!(calls.lock().unwrap().is_empty(), "no conflict, no rebase");

    let before = snapshot(&*store, id).await;
    let token = nonce();
    let declined = Rebase::new(|_: &Ticket, _: Timestamp| None);
    let mut stale = vote_write(&v1, "bob", now, vec![token]);
    stale.outbox.push(outbox(id, now));
    match store.commit(stale.with_rebase(declined)).await {
        Err(StoreError::VersionConflict { ticket, expected }) => {
            assert_eq!((ticket, expected), (id, 1))
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_unchanged(&*store, id, &before).await;
    assert_eq!(store.ticket(id).await.unwrap().unwrap().version(), 2);
    let mut write = insert(&propose("agent-a", "key-2", review(), now));
    write.nonces.push(token);
    store
        .commit(write)
        .await
        .expect("the declined write consumed no nonce");
    store.shutdown().await.unwrap();
    Ok(())
}

/// Thirty-two writes computed on the same version of one ticket, committed at once (one
/// group commit, or racing transactions): each carries a rebase, so every one lands — one
/// vote each, version 1 + 32, one decision row and one `voted` record each.
pub async fn concurrent_rebased_writes_on_one_ticket_all_land(h: Harness) -> Checked {
    const N: usize = 32;
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", poll(), now).await;
    let id = v1.id();
    let names: Vec<&'static str> = (0..N)
        .map(|i| &*Box::leak(format!("dba-{i:02}").into_boxed_str()))
        .collect();
    let handles: Vec<_> = names
        .iter()
        .map(|&who| {
            let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
            let token = nonce();
            let write = vote_write(&v1, who, now, vec![token]).with_rebase(vote_rebase(
                who,
                vec![token],
                calls,
            ));
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.commit(write).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().expect("a rebased vote is never refused");
    }
    let t = store.ticket(id).await.unwrap().unwrap();
    assert_eq!(t.version(), 1 + N as u64);
    let voters: BTreeSet<&str> = t.votes().iter().map(|v| v.person.as_str()).collect();
    assert_eq!(voters, names.iter().copied().collect());
    assert_eq!(store.decisions(id).await.unwrap().len(), N);
    let voted = store
        .ticket_audit(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.record().kind == "voted")
        .count();
    assert_eq!(voted, N);
    assert_eq!(store.health().await.unwrap().nonces, N as u64);
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}
