//! The contract rules, one async function each (see the [suite](super) for how to run them).
//!
//! Every rule opens the stores it needs through the [`Harness`] with a fresh [`Env`] and
//! panics (an assertion) when the store breaks it, or answers [`Skipped`] when the harness
//! lacks what the rule needs (a durable store, commit listeners, a way to misfile an event).
//! Each rule's documentation says what a store must do; a failing test is named after the
//! rule it broke.

mod audit;
mod freezes;
mod group_commit;
mod idempotency;
mod lifecycle;
mod nonces;
mod outbox;
mod reads;
mod rebase;
mod time;
mod writes;

pub use audit::*;
pub use freezes::*;
pub use group_commit::*;
pub use idempotency::*;
pub use lifecycle::*;
pub use nonces::*;
pub use outbox::*;
pub use reads::*;
pub use rebase::*;
pub use time::*;
pub use writes::*;

/// What every rule file uses.
mod prelude {
    pub(super) use std::collections::{BTreeMap, BTreeSet};
    pub(super) use std::sync::Arc;

    pub(super) use serde_json::json;

    pub(super) use super::{
        all_pages, assert_unchanged, proposed, records, records_between, snapshot,
    };
    pub(super) use crate::audit::{
        Actor, AuditEvent, AuditRecord, AuditText, ChainHead, Checkpoint, CheckpointKey, TextRef,
        TextRow, TextState,
    };
    pub(super) use crate::backend::{
        Clock, ClockAlarm, Committed, FreezeChange, FreezeScope, ManualClock, NonceUse,
        OutboxOutcome, OutboxRow, OutboxStatus, OutboxUpdate, Rebase, Store, StoreError,
        TicketFilter, TicketWrite, Write,
    };
    pub(super) use crate::conformance::fixtures::*;
    pub(super) use crate::conformance::{Checked, Env, Harness, Misfile, Skipped};
    pub(super) use crate::id::TicketId;
    pub(super) use crate::ticket::{Event, StateName, Ticket};
    pub(super) use crate::timestamp::Timestamp;
}

use prelude::*;

/// Commits a proposal and returns its ticket.
async fn proposed<S: Store + ?Sized>(
    store: &S,
    agent_name: &str,
    key: &str,
    ruling: crate::policy::Ruling,
    now: Timestamp,
) -> Ticket {
    let p = propose(agent_name, key, ruling, now);
    store.commit(insert(&p)).await.unwrap();
    p.ticket
}

fn records(events: &[AuditEvent]) -> Vec<AuditRecord> {
    events.iter().map(|e| e.record().clone()).collect()
}

/// The decoded records of stored events `from..=to`, with their texts.
async fn records_between<S: Store + ?Sized>(store: &S, from: u64, to: u64) -> Vec<AuditRecord> {
    let raw = store
        .audit_events(from, usize::try_from(to + 1 - from).unwrap())
        .await
        .unwrap();
    let texts = store.audit_texts(from, to).await.unwrap();
    raw.into_iter()
        .map(|r| {
            let mine: Vec<_> = texts.iter().filter(|t| t.seq == r.seq).cloned().collect();
            AuditEvent::decode_with_texts(r, mine)
                .unwrap()
                .record()
                .clone()
        })
        .collect()
}

/// A refused write left everything as it was: same head, same decisions for `ticket`, same
/// outbox backlog.
struct Snapshot {
    head: ChainHead,
    backlog: u64,
    decisions: usize,
}

async fn snapshot<S: Store + ?Sized>(store: &S, ticket: TicketId) -> Snapshot {
    Snapshot {
        head: store.audit_head().await.unwrap(),
        backlog: store.health().await.unwrap().outbox_backlog,
        decisions: store.decisions(ticket).await.unwrap().len(),
    }
}

async fn assert_unchanged<S: Store + ?Sized>(store: &S, ticket: TicketId, before: &Snapshot) {
    let after = snapshot(store, ticket).await;
    assert_eq!(after.head, before.head, "no audit row was written");
    assert_eq!(after.backlog, before.backlog, "no outbox row was written");
    assert_eq!(after.decisions, before.decisions, "no decision was written");
}

/// Every page of a listing, following the cursor.
async fn all_pages<S: Store + ?Sized>(store: &S, mut filter: TicketFilter) -> (Vec<Ticket>, usize) {
    let mut tickets = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_tickets(&filter).await.unwrap();
        pages += 1;
        if filter.limit > 0 {
            assert!(
                page.tickets.len() <= filter.limit,
                "a page holds at most `limit`"
            );
        }
        tickets.extend(page.tickets);
        match page.next {
            Some(cursor) => filter.after = Some(cursor),
            None => return (tickets, pages),
        }
        assert!(pages < 1_000, "the cursor must advance");
    }
}
