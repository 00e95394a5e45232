//! Reads: listings (filtered, paged, newest first), due tickets, decisions, per-ticket audit
//! and chain pages, health figures.

use super::prelude::*;

/// Listings return exactly the tickets matching every set filter (states, group, agent,
/// created range), newest first, each once across pages of any size.
pub async fn list_tickets_filters_and_pages_newest_first(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let agents = ["agent-a", "agent-b", "agent-c"];
    let mut all: Vec<Ticket> = Vec::new();
    for i in 0..30_i64 {
        // Pairs share a creation time, so order among equal times is exercised too.
        let created = ts(T0 + (i / 2) * 1_000);
        let ruling = match i % 5 {
            0 | 1 => review_by("dba"),
            2 => review_by("finance"),
            3 => allow(),
            _ => deny(),
        };
        let name = agents[(i % 3) as usize];
        let mut ticket = proposed(&*store, name, &format!("key-{i}"), ruling, created).await;
        if i % 5 == 1 {
            let next = approve(&ticket, "alice", created);
            store.commit(update(&ticket, &next)).await.unwrap();
            ticket = next.ticket;
        }
        all.push(ticket);
    }

    let groups_of = |t: &Ticket| -> BTreeSet<String> {
        t.plan()
            .map(|plan| {
                plan.requirements
                    .iter()
                    .flat_map(|r| r.groups.iter().map(|g| g.as_str().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let filters = [
        TicketFilter::default(),
        TicketFilter {
            states: vec![StateName::Pending],
            ..TicketFilter::default()
        },
        TicketFilter {
            states: vec![StateName::Approved, StateName::Rejected],
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("dba")),
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("finance")),
            states: vec![StateName::Pending],
            ..TicketFilter::default()
        },
        TicketFilter {
            agent: Some(agent("agent-b")),
            ..TicketFilter::default()
        },
        TicketFilter {
            created_from: Some(ts(T0 + 3_000)),
            created_before: Some(ts(T0 + 9_000)),
            ..TicketFilter::default()
        },
        TicketFilter {
            agent: Some(agent("agent-a")),
            group: Some(group("dba")),
            created_from: Some(ts(T0 + 1_000)),
            ..TicketFilter::default()
        },
        TicketFilter {
            group: Some(group("nobody")),
            ..TicketFilter::default()
        },
    ];
    for filter in filters {
        let mut expected: Vec<TicketId> = all
            .iter()
            .filter(|t| filter.states.is_empty() || filter.states.contains(&t.state().name()))
            .filter(|t| {
                filter
                    .group
                    .as_ref()
                    .is_none_or(|g| groups_of(t).contains(g.as_str()))
            })
            .filter(|t| {
                filter
                    .agent
                    .as_ref()
                    .is_none_or(|a| t.requester().agent() == a)
            })
            .filter(|t| filter.created_from.is_none_or(|f| t.created_at() >= f))
            .filter(|t| filter.created_before.is_none_or(|b| t.created_at() < b))
            .map(Ticket::id)
            .collect();
        expected.sort();
        for limit in [0, 1, 4, 7, 100] {
            let (listed, pages) = all_pages(
                &*store,
                TicketFilter {
                    limit,
                    ..filter.clone()
                },
            )
            .await;
            for pair in listed.windows(2) {
                assert!(
                    pair[0].created_at() >= pair[1].created_at(),
                    "newest first ({filter:?}, limit {limit})"
                );
            }
            for t in &listed {
                let stored = all.iter().find(|s| s.id() == t.id()).unwrap();
                assert_eq!(t, stored, "listings return the stored ticket");
            }
            let mut ids: Vec<TicketId> = listed.iter().map(Ticket::id).collect();
            ids.sort();
            assert_eq!(
                ids, expected,
                "each match exactly once ({filter:?}, limit {limit})"
            );
            if let Some(full_pages) = expected.len().checked_div(limit) {
                assert!(
                    pages <= full_pages + 2,
                    "no runaway paging ({filter:?}, limit {limit})"
                );
            }
        }
    }
    store.shutdown().await.unwrap();
    Ok(())
}

/// A ticket whose ruling changes (an edit re-ruled under a stricter policy that adds a group)
/// is listed under the new group.
pub async fn list_by_group_follows_a_ruling_change(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let v1 = proposed(&*store, "agent-a", "key-1", review_by("dba"), now).await;
    let by = |g: &str| TicketFilter {
        group: Some(group(g)),
        ..TicketFilter::default()
    };
    assert!(store
        .list_tickets(&by("finance"))
        .await
        .unwrap()
        .tickets
        .is_empty());

    let edited = step(
        &v1,
        Event::Edit {
            reviewer: reviewer("alice", &["dba"]),
            parameters: json!({ "table": "orders_archive" }),
            ruling: review_by("finance"),
        },
        now,
    );
    assert!(edited.ticket.plan().unwrap().requirements.len() == 2);
    store.commit(update(&v1, &edited)).await.unwrap();
    for g in ["dba", "finance"] {
        let page = store.list_tickets(&by(g)).await.unwrap();
        assert_eq!(
            page.tickets,
            vec![edited.ticket.clone()],
            "listed under {g}"
        );
    }
    store.shutdown().await.unwrap();
    Ok(())
}

/// `due` lists the tickets whose state changes by time alone at or before `now` — pending past
/// the review deadline, approved past the grant, executing past the lease — soonest first, at
/// most `limit`; terminal tickets never.
pub async fn due_lists_tickets_whose_time_is_up(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    // Due at T0 + 60 s (review deadline).
    let pending = proposed(&*store, "agent-a", "pending", review(), now).await;
    // Due at T0 + 30 s (grant).
    let approved = proposed(&*store, "agent-a", "approved", allow(), now).await;
    // Due at T0 + 45 s (lease).
    let allowed = proposed(&*store, "agent-a", "executing", allow(), now).await;
    let executing = begin(&allowed, ts(T0 + 45_000), now);
    store.commit(update(&allowed, &executing)).await.unwrap();
    // Never due.
    let denied = proposed(&*store, "agent-a", "denied", deny(), now).await;
    let decided = proposed(&*store, "agent-a", "decided", review(), now).await;
    let rejected = reject(&decided, "bob", now);
    store.commit(update(&decided, &rejected)).await.unwrap();
    assert_eq!(denied.state().name(), StateName::Rejected);

    let due = |at: i64, limit: usize| {
        let store = Arc::clone(&store);
        async move { store.due(ts(at), limit).await.unwrap() }
    };
    assert_eq!(due(T0 + 29_999, 10).await, vec![]);
    assert_eq!(due(T0 + 30_000, 10).await, vec![approved.id()]);
    assert_eq!(
        due(T0 + 45_000, 10).await,
        vec![approved.id(), executing.ticket.id()]
    );
    assert_eq!(
        due(T0 + 3_600_000, 10).await,
        vec![approved.id(), executing.ticket.id(), pending.id()]
    );
    assert_eq!(
        due(T0 + 3_600_000, 2).await,
        vec![approved.id(), executing.ticket.id()]
    );

    // Once decided, a ticket is no longer due.
    let done = reject(&pending, "bob", now);
    store.commit(update(&pending, &done)).await.unwrap();
    assert_eq!(
        due(T0 + 3_600_000, 10).await,
        vec![approved.id(), executing.ticket.id()]
    );
    store.shutdown().await.unwrap();
    Ok(())
}

/// The decisions of a ticket, accepted and refused, in the order they were committed.
pub async fn decisions_are_listed_oldest_first(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let a = proposed(&*store, "agent-a", "a", review(), now).await;
    let b = proposed(&*store, "agent-a", "b", review(), now).await;
    let mut refused = decision(a.id(), "mallory", "approve", now);
    refused.refusal = Some("not_eligible".into());
    let mut anonymous = decision(a.id(), "x", "reject", ts(T0 + 2));
    anonymous.person = None;
    anonymous.refusal = Some("unauthenticated".into());
    let accepted = decision(a.id(), "alice", "approve", ts(T0 + 1));
    let other = decision(b.id(), "bob", "reject", now);
    let expected_a = vec![refused.clone(), accepted.clone(), anonymous.clone()];
    for (ticket, d) in [
        (&a, refused),
        (&b, other.clone()),
        (&a, accepted),
        (&a, anonymous),
    ] {
        store
            .commit(Write::new().with_decision(d).with_audit({
                let mut record = marker(0, now);
                record.ticket = Some(ticket.id());
                record
            }))
            .await
            .unwrap();
    }
    assert_eq!(store.decisions(a.id()).await.unwrap(), expected_a);
    assert_eq!(store.decisions(b.id()).await.unwrap(), vec![other]);
    assert_eq!(store.decisions(new_id()).await.unwrap(), vec![]);
    store.shutdown().await.unwrap();
    Ok(())
}

/// `ticket_audit` returns one ticket's events in chain order (and no other ticket's);
/// `audit_events` pages through the whole chain from any point.
pub async fn ticket_audit_and_audit_pages_cover_the_chain(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let now = ts(T0);
    let mut expected: BTreeMap<TicketId, Vec<AuditRecord>> = BTreeMap::new();
    let mut tickets = Vec::new();
    for i in 0..3 {
        let p = propose("agent-a", &format!("key-{i}"), review(), now);
        store.commit(insert(&p)).await.unwrap();
        expected.insert(p.ticket.id(), p.audit.clone());
        tickets.push(p.ticket);
    }
    // Interleave later events of the tickets with events of no ticket.
    for (i, t) in tickets.iter().enumerate() {
        let next = if i == 1 {
            reject(t, "bob", now)
        } else {
            approve(t, "alice", now)
        };
        let mut write = update(t, &next);
        write.audit.push(marker(i as u64, now));
        store.commit(write).await.unwrap();
        expected.get_mut(&t.id()).unwrap().extend(next.audit);
    }
    for (id, records_expected) in &expected {
        let events = store.ticket_audit(*id).await.unwrap();
        assert_eq!(&records(&events), records_expected);
        assert!(events.windows(2).all(|w| w[0].seq() < w[1].seq()));
    }
    assert!(store.ticket_audit(new_id()).await.unwrap().is_empty());

    let all = chain(&*store).await;
    let head = store.audit_head().await.unwrap();
    assert_eq!(all.len() as u64, head.seq);
    for from in [1, 2, head.seq, head.seq + 1] {
        for limit in [1, 3, 1_000] {
            let page = store.audit_events(from, limit).await.unwrap();
            let want: Vec<_> = all
                .iter()
                .filter(|e| e.seq >= from)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(page, want, "audit_events({from}, {limit})");
        }
    }
    verify_chain(&*store).await;
    store.shutdown().await.unwrap();
    Ok(())
}

/// Health: pending tickets and the oldest one's creation, the outbox backlog, the chain length.
pub async fn health_reports_pending_backlog_and_chain_length(h: Harness) -> Checked {
    let env = Env::new();
    let store = h.open(&env).await;
    let empty = store.health().await.unwrap();
    assert_eq!(
        (
            empty.pending,
            empty.oldest_pending,
            empty.outbox_backlog,
            empty.outbox_dead,
            empty.audit_events
        ),
        (0, None, 0, 0, 0)
    );
    let mut rows = 0;
    let mut pending = Vec::new();
    for (i, (ruling, created)) in [
        (review(), T0 + 5_000),
        (allow(), T0),
        (review(), T0 + 2_000),
        (deny(), T0 + 1_000),
        (review(), T0 + 3_000),
    ]
    .into_iter()
    .enumerate()
    {
        let p = propose("agent-a", &format!("key-{i}"), ruling, ts(created));
        let mut write = insert(&p);
        for _ in 0..i {
            write.outbox.push(outbox(p.ticket.id(), ts(created)));
            rows += 1;
        }
        store.commit(write).await.unwrap();
        if p.ticket.state().name() == StateName::Pending {
            pending.push(p.ticket);
        }
    }
    // The oldest pending one is decided: the next oldest counts.
    let oldest = pending
        .iter()
        .min_by_key(|t| t.created_at())
        .unwrap()
        .clone();
    store
        .commit(update(&oldest, &reject(&oldest, "bob", ts(T0 + 6_000))))
        .await
        .unwrap();

    let health = store.health().await.unwrap();
    assert_eq!(health.pending, 2);
    assert_eq!(health.oldest_pending, Some(ts(T0 + 3_000)));
    assert_eq!(health.outbox_backlog, rows);
    assert_eq!(health.outbox_dead, 0);
    assert_eq!(health.audit_events, store.audit_head().await.unwrap().seq);
    store.shutdown().await.unwrap();
    Ok(())
}
