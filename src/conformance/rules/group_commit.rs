//! Group commit: concurrent writes land exactly the winners, each loser rolled back alone.

use super::prelude::*;

/// One write in the concurrent flood, and what the store must hold if it wins.
struct Contender {
    n: u64,
    write: Write,
    ticket: Ticket,
    own_nonce: crate::backend::NonceUse,
}

/// Many concurrent commits, half of them doomed (lost compare-and-swaps, reused nonces, used
/// keys, a taken outbox id that fails after the audit records were chained), land exactly the
/// winners: each contest has one winner, each winner's rows are all
/// there and contiguous in the chain at the head it was told, no loser left any row, and the
/// chain verifies.
pub async fn group_commit_isolates_each_callers_failure(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    for round in 0..3 {
        let mut pending = Vec::new();
        for i in 0..16 {
            let key = format!("setup-{round}-{i}");
            pending.push(proposed(&*store, "agent-a", &key, review(), now).await);
        }
        let setup_head = store.audit_head().await.unwrap();
        let setup_backlog = store.health().await.unwrap().outbox_backlog;

        let mut n = 0;
        let mut contender = |mut write: Write, ticket: Ticket, shared: Option<_>| {
            n += 1;
            let own = nonce();
            write.nonces.push(own);
            write.nonces.extend(shared);
            write.audit.push(marker(n, now));
            write.outbox.push(outbox(ticket.id(), now));
            Contender {
                n,
                write,
                ticket,
                own_nonce: own,
            }
        };
        // Contests of two: exactly one of each must land.
        let mut contests: Vec<(&str, [Contender; 2])> = Vec::new();
        for t in &pending {
            let yes = approve(t, "alice", now);
            let no = reject(t, "bob", now);
            let mut a = contender(update(t, &yes), yes.ticket.clone(), None);
            a.write.decision = Some(decision(t.id(), "alice", "approve", now));
            let mut b = contender(update(t, &no), no.ticket.clone(), None);
            b.write.decision = Some(decision(t.id(), "bob", "reject", now));
            contests.push(("version", [a, b]));
        }
        for i in 0..8 {
            let shared = nonce();
            let x = propose("agent-b", &format!("nonce-{round}-{i}-x"), review(), now);
            let y = propose("agent-b", &format!("nonce-{round}-{i}-y"), allow(), now);
            contests.push((
                "nonce",
                [
                    contender(insert(&x), x.ticket.clone(), Some(shared)),
                    contender(insert(&y), y.ticket.clone(), Some(shared)),
                ],
            ));
        }
        for i in 0..8 {
            let key = format!("key-{round}-{i}");
            let x = propose("agent-c", &key, review(), now);
            let y = propose("agent-c", &key, deny(), now);
            contests.push((
                "key",
                [
                    contender(insert(&x), x.ticket.clone(), None),
                    contender(insert(&y), y.ticket.clone(), None),
                ],
            ));
        }
        // Two inserts that share an outbox row id: the loser fails after its audit records
        // were chained, so its records must go and the next write must chain where it was.
        for i in 0..8 {
            let shared = uuid::Uuid::from_bytes(random16());
            let x = propose("agent-e", &format!("outbox-{round}-{i}-x"), review(), now);
            let y = propose("agent-e", &format!("outbox-{round}-{i}-y"), allow(), now);
            let mut a = contender(insert(&x), x.ticket.clone(), None);
            let mut b = contender(insert(&y), y.ticket.clone(), None);
            for c in [&mut a, &mut b] {
                let mut row = outbox(c.ticket.id(), now);
                row.id = shared;
                c.write.outbox.push(row);
            }
            contests.push(("outbox", [a, b]));
        }
        // Writes that cannot fail.
        let solos: Vec<Contender> = (0..8)
            .map(|i| {
                let p = propose("agent-d", &format!("solo-{round}-{i}"), allow(), now);
                contender(insert(&p), p.ticket.clone(), None)
            })
            .collect();

        // Fire everything at once, contest partners next to each other.
        let mut handles = BTreeMap::new();
        let spawn = |c: &Contender| {
            let store = Arc::clone(&store);
            let write = c.write.clone();
            tokio::spawn(async move { store.commit(write).await })
        };
        for (_, pair) in &contests {
            for c in pair {
                handles.insert(c.n, spawn(c));
            }
        }
        for c in &solos {
            handles.insert(c.n, spawn(c));
        }
        let mut results: BTreeMap<u64, Result<Committed, StoreError>> = BTreeMap::new();
        for (n, handle) in handles {
            results.insert(n, handle.await.unwrap());
        }

        let mut winners: Vec<&Contender> = Vec::new();
        let mut losers: Vec<&Contender> = Vec::new();
        for (kind, pair) in &contests {
            let ok: Vec<&Contender> = pair.iter().filter(|c| results[&c.n].is_ok()).collect();
            assert_eq!(ok.len(), 1, "exactly one {kind} contender lands");
            let (winner, loser) = if results[&pair[0].n].is_ok() {
                (&pair[0], &pair[1])
            } else {
                (&pair[1], &pair[0])
            };
            let err = results[&loser.n].as_ref().unwrap_err();
            match *kind {
                "version" => assert!(
                    matches!(err, StoreError::VersionConflict { ticket, expected: 1 }
                        if *ticket == winner.ticket.id()),
                    "{err:?}"
                ),
                "nonce" => assert!(matches!(err, StoreError::NonceReused), "{err:?}"),
                "outbox" => {} // any error: the contract only says it is refused whole
                _ => assert!(
                    matches!(err, StoreError::DuplicateKey { existing }
                        if *existing == winner.ticket.id()),
                    "{err:?}"
                ),
            }
            winners.push(winner);
            losers.push(loser);
        }
        for c in &solos {
            assert!(results[&c.n].is_ok(), "{:?}", results[&c.n]);
            winners.push(c);
        }

        // Each winner's ticket and decision, and nothing of the losers'.
        for w in &winners {
            assert_eq!(
                store.ticket(w.ticket.id()).await.unwrap().as_ref(),
                Some(&w.ticket)
            );
            if let Some(d) = &w.write.decision {
                assert_eq!(
                    store.decisions(w.ticket.id()).await.unwrap(),
                    vec![d.clone()]
                );
            }
        }
        for l in &losers {
            if matches!(l.write.ticket, Some(TicketWrite::Insert(_))) {
                assert_eq!(store.ticket(l.ticket.id()).await.unwrap(), None);
            }
        }

        // The chain holds exactly the winners' records, each write's contiguous at the head it
        // was acknowledged with, and verifies.
        let summary = verify_chain(&*store).await;
        let added: u64 = winners.iter().map(|w| w.write.audit.len() as u64).sum();
        assert_eq!(
            summary.head.seq,
            setup_head.seq + added,
            "no loser left a record"
        );
        let mut acked: Vec<(Committed, &Contender)> = winners
            .iter()
            .map(|w| (*results[&w.n].as_ref().unwrap(), *w))
            .collect();
        acked.sort_by_key(|(c, _)| c.head.seq);
        for window in acked.windows(2) {
            assert!(
                window[0].0.at <= window[1].0.at,
                "commit times follow the chain"
            );
        }
        for (committed, w) in &acked {
            let len = w.write.audit.len() as u64;
            assert_eq!(
                records_between(&*store, committed.head.seq + 1 - len, committed.head.seq).await,
                w.write.audit,
                "write {} sits at its acknowledged head",
                w.n
            );
        }
        assert_eq!(
            store.health().await.unwrap().outbox_backlog,
            setup_backlog
                + winners
                    .iter()
                    .map(|w| w.write.outbox.len() as u64)
                    .sum::<u64>()
        );

        // The winners consumed their nonces, the losers did not.
        for w in &winners {
            let reuse = Write::new().with_nonces(vec![w.own_nonce]);
            assert!(matches!(
                store.commit(reuse).await,
                Err(StoreError::NonceReused)
            ));
        }
        let unused = Write::new().with_nonces(losers.iter().map(|l| l.own_nonce));
        store
            .commit(unused)
            .await
            .expect("no loser consumed its nonce");
    }
    store.shutdown().await.unwrap();
    Ok(())
}
