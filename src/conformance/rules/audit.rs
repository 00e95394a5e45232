//! The audit chain's surroundings: checkpoints, texts kept beside their events, erasure, and
//! index columns checked against the hashed bytes.

use super::prelude::*;

/// Saved checkpoints read back exactly; the latest is the one of the longest chain, even when
/// an older one is saved afterwards.
pub async fn checkpoints_keep_the_newest(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let key = CheckpointKey::new("audit.test/2025", &[9; 32]).unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);

    proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
    let early = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
    store.save_checkpoint(&early).await.unwrap();
    assert_eq!(
        store.latest_checkpoint().await.unwrap().as_ref(),
        Some(&early)
    );

    proposed(&*store, "agent-a", "b", review(), ts(T0)).await;
    let late = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
    store.save_checkpoint(&late).await.unwrap();
    store.save_checkpoint(&early).await.unwrap();
    let latest = store.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!(latest, late);
    assert_eq!(
        latest.verify(&[key]).unwrap(),
        store.audit_head().await.unwrap()
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// Checkpoints are listed by size, smallest first, from a size on, a page at a time.
pub async fn checkpoints_are_listed_smallest_first(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let key = CheckpointKey::new("audit.test/2025", &[9; 32]).unwrap();
    assert!(store.checkpoints(0, 10).await.unwrap().is_empty());
    let mut saved = Vec::new();
    for i in 0..5 {
        proposed(&*store, "agent-a", &format!("c{i}"), review(), ts(T0)).await;
        let cp = Checkpoint::sign("audit.test", store.audit_head().await.unwrap(), &key).unwrap();
        saved.push(cp);
    }
    // Saved out of order, one twice.
    for i in [3, 0, 4, 1, 2, 3] {
        store.save_checkpoint(&saved[i]).await.unwrap();
    }
    assert_eq!(store.checkpoints(0, 100).await.unwrap(), saved);
    assert_eq!(store.checkpoints(0, 2).await.unwrap(), saved[..2]);
    let from = saved[2].size();
    assert_eq!(store.checkpoints(from, 2).await.unwrap(), saved[2..4]);
    assert_eq!(store.checkpoints(from + 1, 100).await.unwrap(), saved[3..]);
    assert!(store
        .checkpoints(saved[4].size() + 1, 100)
        .await
        .unwrap()
        .is_empty());
    store.shutdown().await.unwrap();
    Ok(())
}

/// A record carrying `texts`, sealed with fixed salts.
fn with_texts(ticket: Option<TicketId>, texts: &[(&str, serde_json::Value)]) -> AuditRecord {
    let mut data = serde_json::Map::new();
    data.insert("note".into(), json!("texts"));
    let mut record = AuditRecord::new(
        ticket,
        ts(T0),
        "test.texts",
        Actor::System,
        serde_json::Value::Object(data),
    );
    for (name, value) in texts {
        record = record.with_text(*name, value.clone());
    }
    let mut salt = 0u8;
    record.seal(|| {
        salt += 1;
        [salt; 32]
    });
    record
}

/// Texts are kept beside their events: the chained bytes hold only the commitments, the
/// side table the values and salts; a ticket's history (in pages) and `audit_texts` read them
/// back, and each opens its commitment.
pub async fn texts_are_kept_beside_their_events(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let t = proposed(&*store, "agent-a", "texts", review(), ts(T0)).await;
    let secret = "transfer to DE89 3704 0044 0532 0130 00 rejected";
    let first = with_texts(
        Some(t.id()),
        &[
            ("feedback", json!(secret)),
            (
                "observed",
                json!({ "row_count": 121, "f": 1.5, "deep": [[{ "x": null }]] }),
            ),
        ],
    );
    let second = with_texts(None, &[("reason", json!("é \u{0} \" \\ ünïcödé"))]);
    let third = with_texts(Some(t.id()), &[]);
    let write = Write::new().with_audit_records([
        first.clone(),
        marker(1, ts(T0)),
        second.clone(),
        third.clone(),
    ]);
    let head = store.commit(write).await.unwrap().head;

    // Never in the hashed bytes.
    for event in chain(&*store).await {
        assert!(
            !String::from_utf8_lossy(&event.bytes).contains("DE89"),
            "event {} holds the text",
            event.seq
        );
    }
    // Read back with the ticket's history, kept and opening the commitments.
    let history = store.ticket_audit(t.id()).await.unwrap();
    let kept = records(&history);
    assert_eq!(&kept[kept.len() - 2..], [first.clone(), third.clone()]);
    let event = &history[history.len() - 2];
    assert_eq!(event.text("feedback").unwrap().state(), TextState::Kept);
    assert_eq!(event.text("feedback").unwrap().as_str(), Some(secret));
    assert_eq!(
        event.record().data["feedback"]["commitment"].as_str(),
        event.text("feedback").unwrap().commitment().as_deref()
    );
    // In pages.
    let all = history.iter().map(AuditEvent::seq).collect::<Vec<_>>();
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.ticket_audit_page(t.id(), after, 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq();
        paged.extend(page);
    }
    assert_eq!(paged.iter().map(AuditEvent::seq).collect::<Vec<_>>(), all);
    assert_eq!(records(&paged), kept);
    // The side table by event.
    let rows = store.audit_texts(1, head.seq).await.unwrap();
    let names: Vec<(u64, &str)> = rows.iter().map(|r| (r.seq, r.name.as_str())).collect();
    let first_seq = head.seq - 3;
    assert_eq!(
        names,
        [
            (first_seq, "feedback"),
            (first_seq, "observed"),
            (first_seq + 2, "reason")
        ]
    );
    assert_eq!(
        rows[2],
        TextRow::of(first_seq + 2, second.text("reason").unwrap()).unwrap()
    );
    assert!(store
        .audit_texts(first_seq + 3, head.seq)
        .await
        .unwrap()
        .is_empty());
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// A record whose texts are not sealed, or whose data does not hold their commitments, or
/// with a text named twice or badly, refuses the whole write: nothing of it is kept.
pub async fn texts_not_committed_by_the_chain_are_refused(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let t = proposed(&*store, "agent-a", "refused-texts", review(), ts(T0)).await;
    let before = snapshot(&*store, t.id()).await;
    let unsealed = AuditRecord::new(None, ts(T0), "test.texts", Actor::System, json!({}))
        .with_text("feedback", "pending");
    let mut uncommitted = with_texts(None, &[("feedback", json!("x"))]);
    uncommitted.data["feedback"] = json!({ "commitment": "00".repeat(32) });
    let mut swapped = with_texts(None, &[("feedback", json!("x"))]);
    swapped.texts = vec![AuditText::sealed("feedback", "y", [1; 32])];
    let badly_named = with_texts(None, &[("Feed Back", json!("x"))]);
    for record in [unsealed, uncommitted, swapped, badly_named] {
        let write = Write::new()
            .with_decision(decision(t.id(), "bob", "reject", ts(T0)))
            .with_audit_records([marker(1, ts(T0)), record])
            .with_nonce(nonce());
        let err = store.commit(write).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidWrite(_)), "{err:?}");
        assert_unchanged(&*store, t.id(), &before).await;
    }
    assert!(store.audit_texts(1, u64::MAX / 2).await.unwrap().is_empty());
    store.shutdown().await.unwrap();
    Ok(())
}

/// An erasure drops a kept text's value and salt in the same write as its audit record,
/// naming that record as the erasing event; the chain is untouched and still verifies. A text
/// that is not kept (unknown, erased already) refuses the whole write; an erasure without an
/// audit record is refused.
pub async fn erasure_drops_a_text_and_names_the_erasing_event(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let t = proposed(&*store, "agent-a", "erase", review(), ts(T0)).await;
    let record = with_texts(
        Some(t.id()),
        &[("feedback", json!("secret")), ("reason", json!("kept"))],
    );
    let seq = store
        .commit(Write::new().with_audit(record))
        .await
        .unwrap()
        .head
        .seq;
    let text = TextRef::new(seq, "feedback");
    let erase = |text: TextRef| {
        Write::new()
            .with_audit(marker(9, ts(T0)))
            .with_erasure(text)
    };
    let by = store.commit(erase(text.clone())).await.unwrap().head.seq;
    let rows = store.audit_texts(seq, seq).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        TextRow {
            seq,
            name: "feedback".into(),
            value: None,
            salt: None,
            erased_by: Some(by),
        }
    );
    assert!(rows[1].value.is_some(), "the other text is kept");
    let history = store.ticket_audit(t.id()).await.unwrap();
    let event = history.iter().find(|e| e.seq() == seq).unwrap();
    assert_eq!(
        event.text("feedback").unwrap().state(),
        TextState::Erased { by }
    );
    assert_eq!(event.text("feedback").unwrap().value(), None);
    assert_eq!(event.text("reason").unwrap().as_str(), Some("kept"));

    // Erased already, never written: nothing of the write is kept.
    let head = store.audit_head().await.unwrap();
    for missing in [
        text.clone(),
        TextRef::new(seq, "output"),
        TextRef::new(head.seq + 5, "reason"),
    ] {
        let err = store.commit(erase(missing.clone())).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::NoSuchText(t) if *t == missing),
            "{err:?}"
        );
        assert_eq!(store.audit_head().await.unwrap(), head);
    }
    let err = store
        .commit(Write::default().with_erasure(TextRef::new(seq, "reason")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidWrite(_)), "{err:?}");
    assert!(store.audit_texts(seq, seq).await.unwrap()[1]
        .value
        .is_some());
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// The index columns a store files events under (ticket, kind, time) are copies of what the
/// hashed bytes say, kept for lookups, not evidence: an event whose column was edited behind
/// the store's back is named (`MisfiledAuditEvent`) by the chain pages that hold it and by the
/// history of the ticket it was moved into, never served there. (Needs
/// [`Harness::with_misfile`].)
pub async fn a_misfiled_event_is_named_not_served(h: Harness) -> Checked {
    h.require_durable()?;
    if !h.can_misfile() {
        return Err(Skipped::NoMisfile);
    }
    let other = new_id();
    for edit in [
        Misfile::Ticket(Some(other)),
        Misfile::Ticket(None),
        Misfile::Kind("voted".into()),
        Misfile::At(ts(T0 - 1)),
    ] {
        let env = Env::new();
        let store = h.open(&env).await;
        let a = proposed(&*store, "agent-a", "a", review(), ts(T0)).await;
        // The other ticket, under the id the edit names.
        let mut b = propose("agent-a", "b", review(), ts(T0));
        let records: Vec<AuditRecord> = b
            .audit
            .drain(..)
            .map(|mut r| {
                r.ticket = Some(other);
                r
            })
            .collect();
        store
            .commit(Write::new().with_audit_records(records))
            .await
            .unwrap();
        let seq = store.ticket_audit(a.id()).await.unwrap()[0].seq();
        let head = store.audit_head().await.unwrap();
        store.shutdown().await.unwrap();
        drop(store);

        h.misfile(&env, seq, edit.clone()).await?;
        let store = h.open(&env).await;
        let limit = usize::try_from(head.seq).unwrap();
        match store.audit_events(1, limit).await {
            Err(StoreError::MisfiledAuditEvent { seq: named }) => {
                assert_eq!(named, seq, "{edit:?}: the misfiled event is named");
            }
            other => panic!("{edit:?} of event {seq}: the chain page was served: {other:?}"),
        }
        let after = store
            .audit_events(seq + 1, limit)
            .await
            .expect("pages without the misfiled event are served");
        assert_eq!(after.len() as u64, head.seq - seq);
        if let Misfile::Ticket(Some(into)) = edit {
            match store.ticket_audit(into).await {
                Err(StoreError::MisfiledAuditEvent { seq: named }) => assert_eq!(named, seq),
                other => panic!("event {seq} moved into another ticket's history: {other:?}"),
            }
        }
        // Its own ticket's history serves only what names that ticket (or names the event).
        match store.ticket_audit(a.id()).await {
            Ok(events) => {
                for event in events {
                    assert_eq!(event.record().ticket, Some(a.id()), "event {}", event.seq());
                }
            }
            Err(StoreError::MisfiledAuditEvent { seq: named }) => assert_eq!(named, seq),
            Err(e) => panic!("{edit:?}: the history failed otherwise: {e:?}"),
        }
        store.shutdown().await.unwrap();
    }
    Ok(())
}
