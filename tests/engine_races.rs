//! Regressions found by an independent review of the facade: a `wait` whose ticket read
//! raced an approval just before the deadline, and an idempotent replay across principals.
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_handoff::action::IdempotencyKey;
use agent_handoff::audit::{AuditEvent, ChainHead, Checkpoint, RawEvent};
use agent_handoff::backend::{
    CommitListener, Committed, DecisionRow, TicketFilter, TicketPage, Write,
};
use agent_handoff::ticket::{StateName, Ticket, Verdict};
use agent_handoff::{
    AgentId, Clock, Decision, ExecuteError, Handoff, ManualClock, Proposal, ProposeError,
    SqliteOptions, SqliteStore, Store, StoreError, TicketId, Timestamp,
};
use async_trait::async_trait;
use support::*;

/// Delegates to a SQLite store; the next `ticket()` call returns a snapshot taken earlier
/// (a read that completed just before another writer's commit).
#[derive(Debug)]
struct StaleOnce {
    inner: SqliteStore,
    snapshot: Mutex<Option<Ticket>>,
}

#[async_trait]
impl Store for StaleOnce {
    async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        self.inner.commit(write).await
    }
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        if let Some(t) = self.snapshot.lock().unwrap().take() {
            return Ok(Some(t));
        }
        self.inner.ticket(id).await
    }
    async fn ticket_by_key(
        &self,
        a: &AgentId,
        k: &IdempotencyKey,
    ) -> Result<Option<Ticket>, StoreError> {
        self.inner.ticket_by_key(a, k).await
    }
    async fn list_tickets(&self, f: &TicketFilter) -> Result<TicketPage, StoreError> {
        self.inner.list_tickets(f).await
    }
    async fn decisions(&self, t: TicketId) -> Result<Vec<DecisionRow>, StoreError> {
        self.inner.decisions(t).await
    }
    async fn audit_events(&self, from: u64, limit: usize) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.audit_events(from, limit).await
    }
    async fn ticket_audit(&self, t: TicketId) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.ticket_audit(t).await
    }
    async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        self.inner.audit_head().await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<TicketId>, StoreError> {
        self.inner.due(now, limit).await
    }
    async fn save_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        self.inner.save_checkpoint(c).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn claim_outbox(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<agent_handoff::backend::OutboxEntry>, StoreError> {
        self.inner.claim_outbox(now, lease, limit).await
    }
    async fn ticket_outbox(
        &self,
        t: TicketId,
    ) -> Result<Vec<agent_handoff::backend::OutboxEntry>, StoreError> {
        self.inner.ticket_outbox(t).await
    }
    async fn outbox_receipt(
        &self,
        t: TicketId,
        c: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.outbox_receipt(t, c).await
    }
    async fn health(&self) -> Result<agent_handoff::backend::StoreHealth, StoreError> {
        self.inner.health().await
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
    fn on_commit(&self, l: CommitListener) {
        self.inner.on_commit(l)
    }
}

/// A waiter's read that completed just before the deadline, followed by an approval committed
/// before the deadline, must not be judged at a `now` past the deadline: the agent is told
/// what is durable (approved), not `Expired`.
#[tokio::test]
async fn wait_reports_an_approval_committed_just_before_the_deadline() {
    let clock = ManualClock::new(Timestamp::from_unix_millis(START));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let sqlite = SqliteStore::in_memory_with(SqliteOptions::new().with_clock(Arc::clone(&shared)))
        .await
        .unwrap();
    let store = Arc::new(StaleOnce {
        inner: sqlite,
        snapshot: Mutex::new(None),
    });
    let (dir, creds) = directory();
    let handoff = Handoff::builder()
        .shared_store(store.clone())
        .policy(standard_policy())
        .identity(dir)
        .shared_clock(shared)
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let Proposal::Pending(p) = agent.propose(request("db.update", "u-1")).await.unwrap() else {
        panic!("expected pending")
    };
    // The waiter's read completes at deadline - 1 min: pending.
    clock.advance(HOUR - MIN);
    let seen_by_waiter = store.ticket(p.id).await.unwrap().unwrap();
    // Alice approves before the deadline; the commit is accepted (valid_before = deadline).
    handoff
        .decide(p.id, &creds["alice"], Verdict::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        store.ticket(p.id).await.unwrap().unwrap().state().name(),
        StateName::Approved
    );
    // The waiter reads the clock only now, at the deadline.
    clock.advance(MIN);
    *store.snapshot.lock().unwrap() = Some(seen_by_waiter);
    let d = agent.wait(&p, Duration::ZERO).await.unwrap();
    // Durable state: approved, with a valid grant.
    assert!(
        handoff.grant(p.id).await.unwrap().is_some(),
        "ticket is approved and its grant valid"
    );
    assert!(
        matches!(d, Decision::Approved(_)),
        "agent was told {d:?} for an approved ticket"
    );
}

/// A replay is the same action by the same requester: a handle of the same agent bound to
/// another principal must not receive the first principal's ticket (here a grant the new
/// principal approved himself).
#[tokio::test]
async fn a_replay_by_the_same_agent_for_another_principal_is_a_conflict() {
    let h = Harness::new().await;
    let for_alice = h
        .handoff
        .agent(agent_id("assistant"), Some(person("alice")));
    let for_bob = h.handoff.agent(agent_id("assistant"), Some(person("bob")));
    let Proposal::Pending(p) = for_alice.propose(request("db.update", "k")).await.unwrap() else {
        panic!("expected pending")
    };
    // bob approves alice's request (not self-approval: alice is the principal).
    h.handoff
        .decide(p.id, h.cred("bob"), Verdict::Approve, None)
        .await
        .unwrap();
    // bob's own session proposes the same action under the same key...
    let replay = for_bob.propose(request("db.update", "k")).await;
    // ...and must not receive alice's ticket or its grant: a different requester.
    assert!(
        matches!(replay, Err(ProposeError::IdempotencyConflict { existing }) if existing == p.id),
        "bob's handle got {replay:?}"
    );
    // Nor can bob's handle begin the grant loaded by id.
    let grant = h.handoff.grant(p.id).await.unwrap().expect("approved");
    assert!(matches!(
        for_bob.begin(grant, BTreeMap::new()).await,
        Err(ExecuteError::NotFound(id)) if id == p.id
    ));
    // Alice's own session still replays it.
    assert!(matches!(
        for_alice.propose(request("db.update", "k")).await.unwrap(),
        Proposal::Allowed(_)
    ));
}
