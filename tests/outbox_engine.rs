//! The durable outbox through the facade: rows written with the transitions that need them,
//! delivered by `deliver_due` with receipts, retries with backoff, dead rows in `health()`,
//! delivery after a crash, no double posts, audit records, and no secret in any payload.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_handoff::action::ActionRequest;
use agent_handoff::audit::kind;
use agent_handoff::backend::{OutboxEntry, OutboxStatus};
use agent_handoff::notify::{
    Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, RecordingNotifier,
};
use agent_handoff::ticket::{StateName, Verdict};
use agent_handoff::{
    Clock, Error, Handoff, Limits, ManualClock, Proposal, SqliteOptions, SqliteStore, Store,
    TicketId, Timestamp,
};
use async_trait::async_trait;
use support::*;

const SECRET: &str = "hunter2-correct-horse-battery";

/// A database file, a manual clock, and engines built on them (several, to model restarts).
struct World {
    dir: tempfile::TempDir,
    clock: ManualClock,
    limits: Limits,
}

/// One running engine: its store and the notifiers of its channels.
struct Node {
    handoff: Handoff,
    store: Arc<dyn Store>,
    ops: RecordingNotifier,
    room: RecordingNotifier,
    creds: std::collections::BTreeMap<&'static str, agent_handoff::Credential>,
}

impl World {
    fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: ManualClock::new(Timestamp::from_unix_millis(START)),
            limits,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("handoff.sqlite3")
    }

    fn shared_clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    async fn store(&self) -> Arc<dyn Store> {
        let options = SqliteOptions::new().with_clock(self.shared_clock());
        Arc::new(SqliteStore::open_with(self.path(), options).await.unwrap())
    }

    /// An engine with channels `ops` and `room` (fresh recorders).
    async fn node(&self) -> Node {
        let (ops, room) = (RecordingNotifier::new(), RecordingNotifier::new());
        self.node_with(Arc::new(ops.clone()), ops, room).await
    }

    /// An engine whose `ops` channel is `notifier` (`ops` records what reaches the channel).
    async fn node_with(
        &self,
        notifier: Arc<dyn Notifier>,
        ops: RecordingNotifier,
        room: RecordingNotifier,
    ) -> Node {
        let store = self.store().await;
        let (directory, creds) = directory();
        let handoff = Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(standard_policy())
            .identity(directory)
            .shared_clock(self.shared_clock())
            .limits(self.limits.clone())
            .digest_key(digest_key())
            .decision_links(decision_links())
            .shared_notifier("ops", notifier)
            .notifier("room", room.clone())
            .build()
            .unwrap();
        Node {
            handoff,
            store,
            ops,
            room,
            creds,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).unwrap()
    }
}

impl Node {
    async fn propose(&self, request: ActionRequest) -> TicketId {
        let agent = self.handoff.agent(agent_id("ops-agent"), None);
        match agent.propose(request).await.unwrap() {
            Proposal::Pending(p) => p.id,
            other => panic!("expected a pending ticket, got {other:?}"),
        }
    }

    async fn approve(&self, id: TicketId, who: &str) {
        self.handoff
            .decide(id, &self.creds[who], Verdict::Approve, None)
            .await
            .unwrap();
    }

    async fn outbox(&self, id: TicketId) -> Vec<OutboxEntry> {
        self.store.ticket_outbox(id).await.unwrap()
    }

    async fn audit_kinds(&self, id: TicketId) -> Vec<String> {
        self.store
            .ticket_audit(id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.record().kind.clone())
            .collect()
    }

    async fn audit_data(&self, id: TicketId, of_kind: &str) -> Vec<serde_json::Value> {
        self.store
            .ticket_audit(id)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.record().kind == of_kind)
            .map(|e| e.record().data.clone())
            .collect()
    }
}

fn delivery_of(entry: &OutboxEntry) -> Delivery {
    serde_json::from_value(entry.row.payload.clone()).unwrap()
}

fn update(key: &str) -> ActionRequest {
    request("db.update", key)
}

/// A channel that accepts each delivery but answers the first `n` with a timeout error, as a
/// slow network does: the card is posted, the worker is told it failed.
#[derive(Debug)]
struct TimesOut {
    channel: RecordingNotifier,
    remaining: Mutex<usize>,
    seen: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl Notifier for TimesOut {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        self.seen
            .lock()
            .unwrap()
            .push(serde_json::to_vec(delivery).unwrap());
        let receipt = self.channel.deliver(delivery).await?;
        let mut remaining = self.remaining.lock().unwrap();
        if *remaining > 0 {
            *remaining -= 1;
            return Err(DeliveryError::transient(
                "timed out waiting for the channel",
            ));
        }
        Ok(receipt)
    }
}

// Rows written with their transitions.

#[tokio::test]
async fn a_pending_ticket_writes_one_outbox_row_per_channel_in_its_commit() {
    let world = World::new();
    let node = world.node().await;
    let id = node.propose(update("pending-1")).await;

    // Read before any delivery: the rows came with the ticket's commit.
    let rows = node.outbox(id).await;
    assert_eq!(rows.len(), 2);
    let channels: Vec<_> = rows.iter().map(|e| e.row.channel.as_str()).collect();
    assert_eq!(channels, ["ops", "room"]);
    for entry in &rows {
        assert_eq!(entry.status, OutboxStatus::Pending);
        assert_eq!(entry.attempts, 0);
        assert_eq!(entry.row.ticket, id);
        assert!(entry.row.due <= world.now());
        let delivery = delivery_of(entry);
        assert_eq!(delivery.id, entry.row.id, "the payload's id is the row id");
        assert_eq!(delivery.ticket, id);
        assert_eq!(delivery.kind, DeliveryKind::RequestReview);
        assert_eq!(delivery.recipient, None);
        assert_eq!(delivery.card.state, StateName::Pending);
        assert_eq!(delivery.card.links.len(), 3, "verdict-only decision links");
        assert!(delivery
            .card
            .links
            .iter()
            .all(|l| l.url.starts_with(LINK_BASE)));
    }
    assert_ne!(rows[0].row.id, rows[1].row.id);
    assert_eq!(node.ops.attempts() + node.room.attempts(), 0);
    let health = node.handoff.health().await.unwrap();
    assert_eq!(health.store.outbox_backlog, 2);

    // Tickets the policy decides at once need no review card.
    let agent = node.handoff.agent(agent_id("ops-agent"), None);
    let allowed = agent.propose(request("db.read", "read-1")).await.unwrap();
    let denied = agent
        .propose(request("payment.send", "pay-1"))
        .await
        .unwrap();
    for p in [allowed, denied] {
        let id = match p {
            Proposal::Allowed(g) => g.ticket(),
            Proposal::Denied { ticket, .. } => ticket,
            other => panic!("unexpected {other:?}"),
        };
        assert!(node.outbox(id).await.is_empty());
    }
}

#[tokio::test]
async fn deliver_due_delivers_each_card_once_and_records_the_receipt() {
    let world = World::new();
    let node = world.node().await;
    let id = node.propose(update("deliver-1")).await;

    let report = node.handoff.deliver_due().await.unwrap();
    assert_eq!(
        (
            report.claimed,
            report.delivered,
            report.retried,
            report.dead
        ),
        (2, 2, 0, 0)
    );
    for (recorder, channel) in [(&node.ops, "ops"), (&node.room, "room")] {
        let sent = recorder.deliveries();
        assert_eq!(sent.len(), 1, "{channel}");
        assert_eq!(sent[0].kind, DeliveryKind::RequestReview);
        assert_eq!(sent[0].ticket, id);
    }
    let rows = node.outbox(id).await;
    for entry in &rows {
        assert_eq!(entry.status, OutboxStatus::Delivered);
        let receipt: DeliveryReceipt =
            serde_json::from_value(entry.receipt.clone().expect("receipt kept")).unwrap();
        assert_eq!(
            receipt.channel_message_id,
            Some(format!("recorded-{}", entry.row.id))
        );
    }
    let notified = node.audit_data(id, kind::NOTIFIED).await;
    assert_eq!(notified.len(), 2);
    assert_eq!(notified[0]["channel"], "ops");
    assert_eq!(notified[0]["delivery"], rows[0].row.id.to_string());
    assert_eq!(
        notified[0]["message_id"],
        format!("recorded-{}", rows[0].row.id)
    );
    assert_eq!(node.handoff.health().await.unwrap().store.outbox_backlog, 0);

    // Nothing left: a second pass delivers nothing.
    let again = node.handoff.deliver_due().await.unwrap();
    assert_eq!(again.claimed, 0);
    assert_eq!(node.ops.attempts(), 1);
    node.handoff.verify_audit().await.unwrap();
}

#[tokio::test]
async fn leaving_pending_closes_the_card_with_the_earlier_receipt() {
    let world = World::new();
    let node = world.node().await;

    // Approved by quorum.
    let approved = node.propose(update("close-approve")).await;
    node.handoff.deliver_due().await.unwrap();
    let posted = node.outbox(approved).await[0].receipt.clone().unwrap();
    node.approve(approved, "alice").await;
    let rows = node.outbox(approved).await;
    assert_eq!(
        rows.len(),
        4,
        "a close row per channel, written with the approval"
    );
    let close = delivery_of(&rows[2]);
    assert_eq!(close.kind, DeliveryKind::Close);
    assert_eq!(close.card.state, StateName::Approved);
    assert!(
        close.card.links.is_empty(),
        "a closed card offers no decision"
    );
    assert_eq!(rows[2].status, OutboxStatus::Pending);

    node.handoff.deliver_due().await.unwrap();
    let sent = node.ops.deliveries();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].kind, DeliveryKind::Close);
    assert_eq!(sent[1].id, rows[2].row.id);
    let expected: DeliveryReceipt = serde_json::from_value(posted).unwrap();
    assert_eq!(sent[1].previous_receipt, Some(expected));

    // Expired: the sweep closes it.
    let expired = node.propose(update("close-expire")).await;
    node.handoff.deliver_due().await.unwrap();
    world.clock.advance(2 * HOUR);
    node.handoff.expire_due().await.unwrap();
    let rows = node.outbox(expired).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(delivery_of(&rows[3]).kind, DeliveryKind::Close);
    assert_eq!(delivery_of(&rows[3]).card.state, StateName::Expired);

    // Cancelled by its agent.
    let cancelled = node.propose(update("close-cancel")).await;
    let agent = node.handoff.agent(agent_id("ops-agent"), None);
    agent.cancel(cancelled, "not needed").await.unwrap();
    let rows = node.outbox(cancelled).await;
    assert_eq!(rows.len(), 4);
    assert_eq!(delivery_of(&rows[2]).kind, DeliveryKind::Close);
}

#[tokio::test]
async fn a_close_waits_for_the_card_it_closes() {
    let world = World::new();
    let node = world.node().await;
    node.ops.fail_next(1);
    let id = node.propose(update("ordered")).await;
    node.approve(id, "alice").await; // close rows written before any card went out

    // The card fails once; its close is not sent ahead of it.
    let report = node.handoff.deliver_due().await.unwrap();
    assert_eq!(report.retried, 1);
    let ops_rows: Vec<_> = node
        .outbox(id)
        .await
        .into_iter()
        .filter(|e| e.row.channel == "ops")
        .collect();
    assert_eq!(ops_rows[1].status, OutboxStatus::Pending);
    assert!(node.ops.deliveries().is_empty());

    world.clock.advance(HOUR);
    node.handoff.deliver_due().await.unwrap();
    let sent = node.ops.deliveries();
    assert_eq!(
        sent.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [DeliveryKind::RequestReview, DeliveryKind::Close]
    );
    assert_eq!(
        sent[1]
            .previous_receipt
            .as_ref()
            .unwrap()
            .channel_message_id,
        Some(format!("recorded-{}", sent[0].id))
    );
}

// Retries, backoff and dead rows.

fn retry_limits(max_attempts: u32) -> Limits {
    Limits {
        delivery_max_attempts: max_attempts,
        delivery_backoff_base: Duration::from_secs(10),
        delivery_backoff_max: Duration::from_secs(60),
        ..Limits::default()
    }
}

async fn ops_row(node: &Node, id: TicketId) -> OutboxEntry {
    node.outbox(id)
        .await
        .into_iter()
        .find(|e| e.row.channel == "ops")
        .unwrap()
}

#[tokio::test]
async fn a_failing_channel_is_retried_with_backoff_and_not_before_its_time() {
    let world = World::with_limits(retry_limits(5));
    let node = world.node().await;
    node.ops.fail_next(2);
    let id = node.propose(update("retry")).await;

    let t0 = world.now();
    let report = node.handoff.deliver_due().await.unwrap();
    assert_eq!((report.delivered, report.retried), (1, 1)); // room delivered, ops failed
    let row = ops_row(&node, id).await;
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 1));
    assert!(row
        .last_error
        .as_deref()
        .unwrap()
        .contains("injected failure"));
    let first_wait = row.row.due.saturating_duration_since(t0);
    assert!(
        first_wait >= Duration::from_secs(5) && first_wait <= Duration::from_secs(10),
        "first wait {first_wait:?} is base 10 s with jitter"
    );

    // Before its due time: not retried.
    world.clock.advance(Duration::from_secs(4));
    assert_eq!(node.handoff.deliver_due().await.unwrap().claimed, 0);
    assert_eq!(node.ops.attempts(), 1);

    world.clock.set(row.row.due);
    let t1 = world.now();
    assert_eq!(node.handoff.deliver_due().await.unwrap().retried, 1);
    let row = ops_row(&node, id).await;
    assert_eq!(row.attempts, 2);
    let second_wait = row.row.due.saturating_duration_since(t1);
    assert!(
        second_wait >= Duration::from_secs(10) && second_wait <= Duration::from_secs(20),
        "second wait {second_wait:?} doubles"
    );
    world.clock.set(row.row.due);
    assert_eq!(node.handoff.deliver_due().await.unwrap().delivered, 1);
    assert_eq!(ops_row(&node, id).await.status, OutboxStatus::Delivered);
    assert_eq!(node.ops.attempts(), 3);
    assert_eq!(node.ops.deliveries().len(), 1);

    let failed = node.audit_data(id, kind::DELIVERY_FAILED).await;
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0]["attempt"], 1);
    assert_eq!(failed[1]["attempt"], 2);
    assert_eq!(failed[0]["retryable"], true);
    assert_eq!(failed[0]["error"], "transient");
    assert_eq!(failed[0]["channel"], "ops");
    assert_eq!(node.audit_data(id, kind::NOTIFIED).await.len(), 2);
    node.handoff.verify_audit().await.unwrap();
}

#[tokio::test]
async fn a_rate_limit_is_waited_out() {
    let world = World::with_limits(retry_limits(5));
    let node = world.node().await;
    node.ops
        .push_failure(DeliveryError::rate_limited(Some(Duration::from_secs(300))));
    let id = node.propose(update("rate")).await;
    let t0 = world.now();
    node.handoff.deliver_due().await.unwrap();
    let row = ops_row(&node, id).await;
    assert!(row.row.due.saturating_duration_since(t0) >= Duration::from_secs(300));
    world.clock.advance(Duration::from_secs(299));
    assert_eq!(node.handoff.deliver_due().await.unwrap().claimed, 0);
    world.clock.advance(Duration::from_secs(1));
    assert_eq!(node.handoff.deliver_due().await.unwrap().delivered, 1);
    let failed = node.audit_data(id, kind::DELIVERY_FAILED).await;
    assert_eq!(failed[0]["error"], "rate_limited");
}

#[tokio::test]
async fn a_row_is_given_up_after_the_limit_and_shows_in_health() {
    let world = World::with_limits(retry_limits(3));
    let node = world.node().await;
    node.ops.fail_next(100);
    let id = node.propose(update("dead")).await;
    for attempt in 1..=3 {
        node.handoff.deliver_due().await.unwrap();
        assert_eq!(ops_row(&node, id).await.attempts, attempt);
        world.clock.advance(HOUR);
    }
    let row = ops_row(&node, id).await;
    assert_eq!(row.status, OutboxStatus::Dead);
    assert_eq!(node.handoff.deliver_due().await.unwrap().claimed, 0);
    assert_eq!(node.ops.attempts(), 3, "no attempt beyond the limit");
    let health = node.handoff.health().await.unwrap();
    assert_eq!(
        (health.store.outbox_dead, health.store.outbox_backlog),
        (1, 0)
    );

    let gave_up = node.audit_data(id, kind::GAVE_UP).await;
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0]["attempts"], 3);
    assert_eq!(gave_up[0]["channel"], "ops");
    let failed = node.audit_data(id, kind::DELIVERY_FAILED).await;
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[2]["next_attempt_at"], serde_json::Value::Null);
    let kinds = node.audit_kinds(id).await;
    assert_eq!(kinds.last().map(String::as_str), Some(kind::GAVE_UP));
    node.handoff.verify_audit().await.unwrap();
}

#[tokio::test]
async fn permanent_and_misconfigured_failures_give_up_at_once() {
    let world = World::with_limits(retry_limits(5));
    let node = world.node().await;
    node.ops
        .push_failure(DeliveryError::permanent("no such chat"));
    node.room
        .push_failure(DeliveryError::misconfigured("credentials rejected"));
    let id = node.propose(update("permanent")).await;
    let report = node.handoff.deliver_due().await.unwrap();
    assert_eq!((report.dead, report.retried), (2, 0));
    for entry in node.outbox(id).await {
        assert_eq!((entry.status, entry.attempts), (OutboxStatus::Dead, 1));
    }
    assert_eq!(node.handoff.health().await.unwrap().store.outbox_dead, 2);
    let failed = node.audit_data(id, kind::DELIVERY_FAILED).await;
    let codes: Vec<_> = failed.iter().map(|d| d["error"].clone()).collect();
    assert_eq!(codes, ["permanent", "misconfigured"]);
    assert!(failed.iter().all(|d| d["retryable"] == false));
    assert_eq!(node.audit_data(id, kind::GAVE_UP).await.len(), 2);
}

// Crashes and repeats.

#[tokio::test]
async fn a_crash_between_commit_and_delivery_still_delivers_after_restart() {
    let world = World::new();
    let first = world.node().await;
    let id = first.propose(update("crash")).await;
    let rows = first.outbox(id).await;
    // The process goes away before any delivery.
    first.store.shutdown().await.unwrap();
    drop(first);

    let second = world.node().await;
    let report = second.handoff.deliver_due().await.unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(second.ops.deliveries()[0].id, rows[0].row.id);
    assert_eq!(second.room.deliveries()[0].id, rows[1].row.id);
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_worker_is_retried_after_its_lease() {
    let world = World::new();
    let node = world.node().await;
    let id = node.propose(update("lease")).await;
    // A worker claims the rows and dies before delivering.
    let lease = world.limits.delivery_lease;
    let claimed = node
        .store
        .claim_outbox(world.now(), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        node.handoff.deliver_due().await.unwrap().claimed,
        0,
        "leased"
    );
    world.clock.advance(lease);
    assert_eq!(node.handoff.deliver_due().await.unwrap().delivered, 2);
    assert_eq!(node.ops.deliveries()[0].ticket, id);
}

#[tokio::test]
async fn a_delivery_retried_after_a_timeout_does_not_post_twice() {
    let world = World::new();
    let channel = RecordingNotifier::new();
    let flaky = Arc::new(TimesOut {
        channel: channel.clone(),
        remaining: Mutex::new(1),
        seen: Mutex::new(Vec::new()),
    });
    let node = world
        .node_with(flaky.clone(), channel.clone(), RecordingNotifier::new())
        .await;
    let id = node.propose(update("timeout")).await;
    assert_eq!(node.handoff.deliver_due().await.unwrap().retried, 1);
    world.clock.advance(HOUR);
    assert_eq!(node.handoff.deliver_due().await.unwrap().delivered, 1);

    let row = ops_row(&node, id).await;
    assert_eq!(
        channel.attempts_for(row.row.id),
        2,
        "delivered twice under one id"
    );
    assert_eq!(channel.deliveries().len(), 1, "the channel posted once");
    let seen = flaky.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "a retry sends the same bytes");
    assert_eq!(row.status, OutboxStatus::Delivered);
}

// Redaction.

#[tokio::test]
async fn no_sensitive_value_is_stored_in_the_outbox() {
    let world = World::new();
    let node = world.node().await;
    let request = ActionRequest::builder("db.update", idem("secret"))
        .target("postgres://prod/users")
        .parameters(serde_json::json!({ "user": "u-1", "password": SECRET }))
        .sensitive("/password")
        .reason("rotate the password")
        .build()
        .unwrap();
    let id = node.propose(request).await;
    node.handoff.deliver_due().await.unwrap();
    node.approve(id, "alice").await;
    node.handoff.deliver_due().await.unwrap();
    assert_eq!(node.outbox(id).await.len(), 4);

    let raw = world.raw();
    let mut s = raw
        .prepare("SELECT payload, coalesce(receipt, ''), coalesce(last_error, '') FROM outbox")
        .unwrap();
    let rows: Vec<(String, String, String)> = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 4);
    for (payload, receipt, error) in &rows {
        assert!(
            payload.contains("u-1"),
            "the card shows the other parameters"
        );
        for text in [payload, receipt, error] {
            assert!(
                !text.contains(SECRET),
                "secret stored in the outbox: {text}"
            );
        }
    }
    for d in node.ops.deliveries() {
        assert!(!serde_json::to_string(&d).unwrap().contains(SECRET));
        assert!(!format!("{d:?}").contains(SECRET));
    }
}

// Configuration.

#[tokio::test]
async fn notifiers_need_a_digest_key_and_distinct_names() {
    let world = World::new();
    let store = world.store().await;
    let base = || {
        let (directory, _) = directory();
        Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(standard_policy())
            .identity(directory)
            .shared_clock(world.shared_clock())
    };
    match base().notifier("ops", RecordingNotifier::new()).build() {
        Err(Error::Build(msg)) => assert!(msg.contains("digest key"), "{msg}"),
        other => panic!("expected a build error, got {other:?}"),
    }
    let twice = base()
        .digest_key(digest_key())
        .notifier("ops", RecordingNotifier::new())
        .notifier("ops", RecordingNotifier::new())
        .build();
    assert!(matches!(twice, Err(Error::Build(_))));
    let unnamed = base()
        .digest_key(digest_key())
        .notifier("", RecordingNotifier::new())
        .build();
    assert!(matches!(unnamed, Err(Error::Build(_))));
    // Without links, cards go out without decision links.
    let plain = base()
        .digest_key(digest_key())
        .notifier("ops", RecordingNotifier::new())
        .build()
        .unwrap();
    let agent = plain.agent(agent_id("ops-agent"), None);
    let id = match agent.propose(update("no-links")).await.unwrap() {
        Proposal::Pending(p) => p.id,
        other => panic!("{other:?}"),
    };
    let rows = store.ticket_outbox(id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(delivery_of(&rows[0]).card.links.is_empty());
}

#[tokio::test]
async fn an_engine_without_notifiers_writes_no_outbox_rows() {
    let world = World::new();
    let store = world.store().await;
    let (directory, _) = directory();
    let handoff = Handoff::builder()
        .shared_store(Arc::clone(&store))
        .policy(standard_policy())
        .identity(directory)
        .shared_clock(world.shared_clock())
        .digest_key(digest_key())
        .build()
        .unwrap();
    let agent = handoff.agent(agent_id("ops-agent"), None);
    let id = match agent.propose(update("silent")).await.unwrap() {
        Proposal::Pending(p) => p.id,
        other => panic!("{other:?}"),
    };
    assert!(store.ticket_outbox(id).await.unwrap().is_empty());
    assert_eq!(handoff.deliver_due().await.unwrap().claimed, 0);
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_worker_delivers_in_the_background() {
    let world = World::new();
    let node = world.node().await;
    let first = node.propose(update("worker-1")).await;
    let worker = node.handoff.spawn_delivery_worker(Duration::from_secs(1));
    let ops = node.ops.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| ops.deliveries().len() == 1),
    )
    .await
    .expect("first pass delivers");
    // Later rows go out on a later tick of the (manual) clock (advanced while waiting, since
    // the worker may still be finishing its first pass).
    let second = node.propose(update("worker-2")).await;
    let clock = world.clock.clone();
    let tick = || {
        clock.advance(Duration::from_millis(100));
        ops.deliveries().len() == 2
    };
    tokio::time::timeout(Duration::from_secs(20), until(tick))
        .await
        .expect("a later tick delivers");
    worker.abort();
    let tickets: Vec<_> = ops.deliveries().iter().map(|d| d.ticket).collect();
    assert_eq!(tickets, [first, second]);
}

/// A channel whose notifier panics on its first `n` deliveries, then delegates.
#[derive(Debug)]
struct Panics {
    channel: RecordingNotifier,
    remaining: Mutex<usize>,
}

#[async_trait]
impl Notifier for Panics {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let panic_now = {
            let mut remaining = self.remaining.lock().unwrap();
            let now = *remaining > 0;
            *remaining = remaining.saturating_sub(1);
            now
        };
        if panic_now {
            panic!("the notifier has a bug");
        }
        self.channel.deliver(delivery).await
    }
}

/// A notifier that panics fails that attempt, like a transient failure: the pass goes on
/// with the other rows, the row is retried after its backoff and delivered, the failure is
/// audited — and a background worker survives it.
#[tokio::test]
async fn a_panicking_notifier_fails_its_attempt_and_the_row_is_retried() {
    let world = World::with_limits(retry_limits(5));
    let ops = RecordingNotifier::new();
    let panics = Arc::new(Panics {
        channel: ops.clone(),
        remaining: Mutex::new(1),
    });
    let node = world
        .node_with(panics, ops.clone(), RecordingNotifier::new())
        .await;
    let id = node.propose(update("panics")).await;
    let report = node.handoff.deliver_due().await.expect("the pass survives");
    assert_eq!(
        (report.delivered, report.retried),
        (1, 1),
        "room delivered, ops retried"
    );
    let row = ops_row(&node, id).await;
    assert_eq!((row.status, row.attempts), (OutboxStatus::Pending, 1));
    let failed = node.audit_data(id, kind::DELIVERY_FAILED).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], "notifier_panicked");
    assert_eq!(failed[0]["retryable"], true);
    world.clock.set(row.row.due);
    assert_eq!(node.handoff.deliver_due().await.unwrap().delivered, 1);
    assert_eq!(ops.deliveries().len(), 1);
    node.handoff.verify_audit().await.unwrap();
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_worker_survives_a_panicking_notifier() {
    let world = World::with_limits(Limits {
        delivery_backoff_base: Duration::ZERO,
        ..Limits::default()
    });
    let ops = RecordingNotifier::new();
    let panics = Arc::new(Panics {
        channel: ops.clone(),
        remaining: Mutex::new(3),
    });
    let node = world
        .node_with(panics, ops.clone(), RecordingNotifier::new())
        .await;
    node.propose(update("worker-panics")).await;
    let worker = node.handoff.spawn_delivery_worker(Duration::from_secs(1));
    let clock = world.clock.clone();
    let seen = ops.clone();
    let tick = || {
        clock.advance(Duration::from_millis(100));
        seen.deliveries().len() == 1
    };
    tokio::time::timeout(Duration::from_secs(20), until(tick))
        .await
        .expect("delivered after three panics");
    assert!(!worker.is_finished(), "the worker is still running");
    worker.abort();
}
