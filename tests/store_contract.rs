//! The store contract evolves safely and the facade keeps its invariants: a store states the
//! contract version it implements and the builder refuses an older one; `Write` and its parts
//! are built through constructors; `Handoff::store()` offers reads only; `Debug` of outbox rows
//! never prints the live decision tokens their cards carry.

mod support;

use std::sync::Arc;
use std::time::Duration;

use agent_handoff::audit::{Actor, AuditEvent, AuditRecord, ChainHead, Checkpoint, RawEvent};
use agent_handoff::backend::{
    CommitListener, Committed, DecisionRow, NonceUse, OutboxEntry, OutboxOutcome, OutboxRow,
    OutboxUpdate, StoreHealth, TicketFilter, TicketPage, TicketWrite, Write,
};
use agent_handoff::notify::RecordingNotifier;
use agent_handoff::ticket::Ticket;
use agent_handoff::{
    Clock, Error, Handoff, ManualClock, Proposal, SqliteOptions, SqliteStore, Store, StoreError,
    TicketId, Timestamp, STORE_CONTRACT_VERSION,
};
use async_trait::async_trait;
use support::*;

/// A store written against an older contract: it works, but it would not know a newer
/// contract's parts of a write.
#[derive(Debug)]
struct OlderStore {
    inner: SqliteStore,
    version: u32,
}

#[async_trait]
impl Store for OlderStore {
    fn contract_version(&self) -> u32 {
        self.version
    }
    async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        self.inner.commit(write).await
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn freezes(&self) -> Result<Vec<agent_handoff::backend::Freeze>, StoreError> {
        self.inner.freezes().await
    }
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        self.inner.ticket(id).await
    }
    async fn ticket_by_key(
        &self,
        requester: &agent_handoff::action::Requester,
        key: &agent_handoff::action::IdempotencyKey,
    ) -> Result<Option<Ticket>, StoreError> {
        self.inner.ticket_by_key(requester, key).await
    }
    async fn prune_nonces(&self, limit: usize) -> Result<usize, StoreError> {
        self.inner.prune_nonces(limit).await
    }
    async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage, StoreError> {
        self.inner.list_tickets(filter).await
    }
    async fn decisions(&self, ticket: TicketId) -> Result<Vec<DecisionRow>, StoreError> {
        self.inner.decisions(ticket).await
    }
    async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.audit_events(from, limit).await
    }
    async fn ticket_audit_page(
        &self,
        ticket: TicketId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.ticket_audit_page(ticket, after, limit).await
    }
    async fn audit_texts(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<agent_handoff::audit::TextRow>, StoreError> {
        self.inner.audit_texts(from, to).await
    }
    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.inner.save_checkpoint(checkpoint).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn checkpoints(&self, from: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.checkpoints(from, limit).await
    }
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.claim_outbox(now, lease, limit).await
    }
    async fn ticket_outbox(&self, ticket: TicketId) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.ticket_outbox(ticket).await
    }
    async fn outbox_receipt(
        &self,
        ticket: TicketId,
        channel: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.outbox_receipt(ticket, channel).await
    }
    async fn health(&self) -> Result<StoreHealth, StoreError> {
        self.inner.health().await
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
    fn on_commit(&self, listener: CommitListener) {
        self.inner.on_commit(listener);
    }
}

fn builder_on(store: impl Store + 'static) -> agent_handoff::HandoffBuilder {
    Handoff::builder()
        .store(store)
        .policy(standard_policy())
        .identity(directory().0)
}

#[tokio::test]
async fn a_store_older_than_the_engine_needs_is_refused_at_build() {
    const { assert!(STORE_CONTRACT_VERSION >= 1) };
    let old = OlderStore {
        inner: SqliteStore::in_memory().await.unwrap(),
        version: STORE_CONTRACT_VERSION - 1,
    };
    match builder_on(old).build() {
        Err(
            e @ Error::StoreContract {
                implemented,
                required,
            },
        ) => {
            assert_eq!(implemented, STORE_CONTRACT_VERSION - 1);
            assert_eq!(required, STORE_CONTRACT_VERSION);
            assert_eq!(e.code(), agent_handoff::codes::STORE_CONTRACT_TOO_OLD);
            assert!(e.to_string().contains("contract version"), "{e}");
        }
        other => panic!("an old store was accepted: {other:?}"),
    }
    // The same store stating the current contract is accepted, and the bundled store states it.
    let current = OlderStore {
        inner: SqliteStore::in_memory().await.unwrap(),
        version: STORE_CONTRACT_VERSION,
    };
    let handoff = builder_on(current).build().unwrap();
    assert_eq!(handoff.store().contract_version(), STORE_CONTRACT_VERSION);
    let sqlite = SqliteStore::in_memory().await.unwrap();
    assert_eq!(sqlite.contract_version(), STORE_CONTRACT_VERSION);
}

/// Integrators and tests build every part of a write through constructors (the types are
/// `#[non_exhaustive]`, so struct literals do not compile outside the crate), and a store
/// commits what they built.
#[tokio::test]
async fn writes_and_their_parts_are_built_with_constructors_and_commit() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    // The test keeps the store itself to commit raw writes: the facade offers none.
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::new(clock.clone())))
            .await
            .unwrap(),
    );
    let handoff = Handoff::builder()
        .shared_store(Arc::clone(&store))
        .policy(standard_policy())
        .identity(directory().0)
        .shared_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id("ops"), None);
    let proposal = agent
        .propose(request("db.drop", "contract-1"))
        .await
        .unwrap();
    let id = proposal.ticket();
    let ticket = handoff.store().ticket(id).await.unwrap().unwrap();
    let now = clock.now();

    let row = OutboxRow::new(
        uuid::Uuid::from_u128(9),
        id,
        "ops",
        serde_json::json!({}),
        now,
    );
    let record = AuditRecord::new(
        Some(id),
        now,
        "test.note",
        Actor::System,
        serde_json::json!({}),
    );
    let decision =
        DecisionRow::new(id, Some(person("alice")), "approve", now).with_refusal("not_eligible");
    let nonce = NonceUse::new([3; 16], now.saturating_add(Duration::from_secs(60)));
    let write = Write::new()
        .with_ticket(TicketWrite::update(ticket.clone(), ticket.version() + 7))
        .with_decision(decision.clone())
        .with_audit(record.clone())
        .with_outbox(row.clone())
        .with_nonce(nonce)
        .with_valid_before(now.saturating_add(Duration::from_secs(60)));
    assert_eq!(write.audit, std::slice::from_ref(&record));
    assert_eq!(write.outbox, std::slice::from_ref(&row));
    assert_eq!(write.nonces, [nonce]);
    assert_eq!(write.decision.as_ref(), Some(&decision));
    assert!(matches!(write.ticket, Some(TicketWrite::Update { .. })));
    // A malformed compare-and-swap built this way is refused whole, like any other.
    assert!(store.commit(write).await.is_err());
    assert!(handoff.store().decisions(id).await.unwrap().is_empty());
    // Without the ticket change, it commits: the decision, record, row and nonce are stored.
    let write = Write::new()
        .with_decision(decision.clone())
        .with_audit_records([record])
        .with_outbox_rows([row])
        .with_nonces([nonce]);
    store.commit(write).await.unwrap();
    assert!(handoff
        .store()
        .decisions(id)
        .await
        .unwrap()
        .contains(&decision));
    assert_eq!(handoff.store().ticket_outbox(id).await.unwrap().len(), 1);
    let update = OutboxUpdate::new(
        uuid::Uuid::from_u128(9),
        0,
        OutboxOutcome::Dead {
            error: "gave up".into(),
        },
    );
    assert_eq!(
        Write::new()
            .with_outbox_update(update.clone())
            .outbox_updates,
        [update]
    );
    let _ = TicketWrite::insert(ticket);
}

/// `Debug` of outbox rows and entries hides the payload — a review card whose decision links
/// carry live tokens — and the channel's receipt.
#[tokio::test]
async fn debug_of_outbox_rows_never_shows_a_decision_token() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::clone(&shared)))
        .await
        .unwrap();
    let handoff = Handoff::builder()
        .store(store)
        .policy(standard_policy())
        .identity(directory().0)
        .shared_clock(shared)
        .digest_key(digest_key())
        .decision_links(decision_links())
        .notifier("room", RecordingNotifier::new())
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id("ops"), None);
    let Proposal::Pending(pending) = agent.propose(request("db.drop", "debug-1")).await.unwrap()
    else {
        panic!("a pending ticket")
    };
    let entries = handoff.store().ticket_outbox(pending.id).await.unwrap();
    assert_eq!(entries.len(), 1);
    // The payload does hold live tokens: the card's links.
    let payload = entries[0].row.payload.to_string();
    let token_start = payload
        .find("t=ah1.")
        .expect("the card carries a decision link")
        + 2;
    let token: String = payload[token_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    assert!(token.len() > 40, "{token}");
    for shown in [
        format!("{:?}", entries[0]),
        format!("{:#?}", entries[0]),
        format!("{:?}", entries[0].row),
        format!("{entries:?}"),
    ] {
        assert!(!shown.contains(&token), "a decision token leaked: {shown}");
        assert!(
            !shown.contains(LINK_BASE),
            "a decision link leaked: {shown}"
        );
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("room"), "the rest is still shown: {shown}");
    }
}
