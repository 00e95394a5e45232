//! Shared helpers for the facade tests: a deterministic policy engine, a directory of people
//! with tokens, a manual clock shared by the engine and the store, and a store wrapper that
//! can interpose a write between another caller's read and commit (a deterministic race).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agent_handoff::action::{ActionRequest, DigestKey, IdempotencyKey, Requester};
use agent_handoff::audit::{AuditEvent, ChainHead, Checkpoint, CheckpointKey, RawEvent};
use agent_handoff::backend::{
    CommitListener, Committed, DecisionRow, TicketFilter, TicketPage, Write,
};
use agent_handoff::policy::{
    MatchedRule, Outcome, PolicyEngine, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement,
    Ruling,
};
use agent_handoff::ticket::Ticket;
use agent_handoff::token::{TokenKey, TokenKeyRing};
use agent_handoff::{
    AgentId, Clock, Credential, DecisionLinks, GroupName, Handoff, Limits, ManualClock, PersonId,
    RuleId, SqliteOptions, SqliteStore, StaticDirectory, Store, StoreError, TicketId, Timestamp,
};
use async_trait::async_trait;

/// Where every test clock starts: 2023-11-14T22:13:20Z.
pub const START: i64 = 1_700_000_000_000;

pub const MIN: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);

/// A review requirement: `approvals` of `group`.
pub fn req(group: &str, approvals: u32) -> ReviewRequirement {
    ReviewRequirement {
        groups: [GroupName::new(group).unwrap()].into(),
        approvals,
    }
}

/// A review outcome: every requirement, a deadline, an approval ttl, veto on.
pub fn review(reqs: &[ReviewRequirement], deadline: Duration, approval_ttl: Duration) -> Outcome {
    Outcome::Review(ReviewPlan {
        requirements: reqs.iter().cloned().collect(),
        deadline,
        approval_ttl,
        veto: true,
    })
}

/// Like [`review`] with veto off.
pub fn review_no_veto(
    reqs: &[ReviewRequirement],
    deadline: Duration,
    approval_ttl: Duration,
) -> Outcome {
    match review(reqs, deadline, approval_ttl) {
        Outcome::Review(plan) => Outcome::Review(ReviewPlan {
            veto: false,
            ..plan
        }),
        _ => unreachable!(),
    }
}

pub fn allow(grant_ttl: Duration) -> Outcome {
    Outcome::Allow { grant_ttl }
}

pub fn deny(reason: &str) -> Outcome {
    Outcome::Deny {
        reason: reason.into(),
    }
}

/// A policy engine that maps action kinds to fixed outcomes, independent of any policy file
/// format. Clones share the table, so a test can make the policy stricter after approval.
#[derive(Clone)]
pub struct KindPolicy {
    table: Arc<RwLock<BTreeMap<String, Outcome>>>,
    default: Outcome,
}

impl KindPolicy {
    /// Unknown kinds are denied (default deny).
    pub fn new() -> Self {
        Self {
            table: Arc::default(),
            default: deny("no rule matches"),
        }
    }

    pub fn with(self, kind: &str, outcome: Outcome) -> Self {
        self.set(kind, outcome);
        self
    }

    /// Replaces the outcome for a kind (the engine sees it at once).
    pub fn set(&self, kind: &str, outcome: Outcome) {
        self.table.write().unwrap().insert(kind.to_owned(), outcome);
    }
}

impl PolicyEngine for KindPolicy {
    fn evaluate(&self, request: &ActionRequest) -> Ruling {
        let kind = request.kind().as_str();
        let table = self.table.read().unwrap();
        let (outcome, rule) = match table.get(kind) {
            Some(o) => (o.clone(), kind.to_owned()),
            None => (self.default.clone(), "default".to_owned()),
        };
        Ruling {
            outcome,
            matched: vec![MatchedRule {
                rule: RuleId::new(rule).unwrap(),
                reasons: vec![format!("kind `{kind}`")],
                fail_closed: None,
            }],
            policy: self.policy_ref(),
        }
    }

    fn policy_ref(&self) -> PolicyRef {
        PolicyRef {
            version: "test-1".into(),
            hash: PolicyHash([7; 32]),
        }
    }
}

/// The standard kinds used across the tests.
pub fn standard_policy() -> KindPolicy {
    KindPolicy::new()
        .with("db.read", allow(5 * MIN))
        .with("payment.send", deny("payments over the limit are denied"))
        // 2 of dba, an hour to decide, approvals last 30 minutes.
        .with("db.drop", review(&[req("dba", 2)], HOUR, 30 * MIN))
        // 1 of dba.
        .with("db.update", review(&[req("dba", 1)], HOUR, 30 * MIN))
        // 2 of dba AND 1 of finance.
        .with(
            "db.migrate",
            review(&[req("dba", 2), req("finance", 1)], HOUR, 30 * MIN),
        )
        // 1 of finance.
        .with("invoice.pay", review(&[req("finance", 1)], HOUR, 30 * MIN))
}

/// People of the standard directory and their groups. `pat` is the principal the standard
/// agent acts for (known to hosts as `pat@example.com`) and is also a DBA, so self-approval
/// is possible to attempt.
pub const PEOPLE: &[(&str, &[&str])] = &[
    ("alice", &["dba"]),
    ("bob", &["dba"]),
    ("carol", &["dba"]),
    ("dave", &["finance"]),
    ("erin", &["marketing"]),
    ("olga", &["operators"]),
    ("pat", &["dba"]),
];

/// A directory with [`PEOPLE`], one token each, and `pat`'s alias and Feishu user.
pub fn directory() -> (StaticDirectory, BTreeMap<&'static str, Credential>) {
    let mut dir = StaticDirectory::new();
    let mut creds = BTreeMap::new();
    for (person, groups) in PEOPLE {
        dir.add_person(person, groups.iter().copied()).unwrap();
        let token = dir.issue_token(person).unwrap();
        creds.insert(*person, Credential::token(token.expose()));
    }
    dir.add_alias("pat@example.com", "pat").unwrap();
    dir.add_platform_user("feishu", "ou_pat", "pat").unwrap();
    (dir, creds)
}

/// A chat channel the tests trust blindly: the user it proves is the `x-test-user` header.
/// A real verifier checks the platform's signature first; the harness registers this one for
/// `feishu`, so tests can present a platform credential without building callbacks.
#[derive(Debug)]
pub struct TestChannel(pub &'static str);

#[async_trait]
impl agent_handoff::PlatformVerifier for TestChannel {
    fn platform(&self) -> &str {
        self.0
    }

    async fn verify(
        &self,
        request: &agent_handoff::backend::PlatformRequest<'_>,
    ) -> Result<String, agent_handoff::IdentityError> {
        request
            .header("x-test-user")
            .map(str::to_owned)
            .ok_or(agent_handoff::IdentityError::Unknown)
    }
}

/// Adds `n` DBAs named `dba-00` … with a token each.
pub fn add_dbas(dir: &mut StaticDirectory, n: usize) -> Vec<Credential> {
    (0..n)
        .map(|i| {
            let person = format!("dba-{i:02}");
            dir.add_person(&person, ["dba"]).unwrap();
            Credential::token(dir.issue_token(&person).unwrap().expose())
        })
        .collect()
}

/// Where decision links lead in the tests.
pub const LINK_BASE: &str = "https://review.example/decide";

/// The test deployment's token keys: `k1` signs.
pub fn token_ring() -> TokenKeyRing {
    TokenKeyRing::new(TokenKey::new("k1", &[11u8; 32]).unwrap(), []).unwrap()
}

/// Decision links to [`LINK_BASE`], signed by [`token_ring`], tokens lasting 15 minutes.
pub fn decision_links() -> DecisionLinks {
    DecisionLinks {
        base_url: LINK_BASE.into(),
        ring: token_ring(),
        token_ttl: 15 * MIN,
    }
}

/// The test deployment's key for keyed digests.
pub fn digest_key() -> DigestKey {
    DigestKey::from_bytes([23u8; 32])
}

pub fn checkpoint_key() -> CheckpointKey {
    CheckpointKey::new("test.example/audit", &[42u8; 32]).unwrap()
}

/// Where the store lives.
pub enum Backing {
    Memory,
    File,
}

/// An engine on a manual clock shared with its store.
pub struct Harness {
    pub handoff: Handoff,
    pub clock: ManualClock,
    pub policy: KindPolicy,
    pub creds: BTreeMap<&'static str, Credential>,
    /// Credentials of the extra DBAs (`Setup::extra_dbas`).
    pub dbas: Vec<Credential>,
    pub store: Arc<dyn Store>,
    pub interpose: Option<Arc<Interpose>>,
    _dir: Option<tempfile::TempDir>,
}

pub struct Setup {
    pub backing: Backing,
    pub limits: Limits,
    pub policy: KindPolicy,
    pub interpose: bool,
    /// DBAs `dba-00` … added to the standard directory.
    pub extra_dbas: usize,
}

/// Decision-link settings of a [`Harness`] (kept out of [`Setup`], which other tests build
/// field by field).
#[derive(Default)]
pub struct LinkSetup {
    /// Decision links configured in the builder (e.g. [`decision_links`]).
    pub links: Option<DecisionLinks>,
    /// The keyed-digest key configured in the builder (e.g. [`digest_key`]).
    pub digest_key: Option<DigestKey>,
}

impl LinkSetup {
    /// [`decision_links`] and [`digest_key`].
    pub fn standard() -> Self {
        Self {
            links: Some(decision_links()),
            digest_key: Some(digest_key()),
        }
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            backing: Backing::Memory,
            limits: Limits::default(),
            policy: standard_policy(),
            interpose: false,
            extra_dbas: 0,
        }
    }
}

impl Harness {
    pub async fn new() -> Self {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Self {
        Self::with_links(setup, LinkSetup::default()).await
    }

    /// A harness whose engine also has decision links and a digest key as `links` says.
    pub async fn with_links(setup: Setup, links: LinkSetup) -> Self {
        let clock = ManualClock::new(Timestamp::from_unix_millis(START));
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let options = SqliteOptions::new().with_clock(Arc::clone(&shared));
        let (sqlite, dir) = match setup.backing {
            Backing::Memory => (SqliteStore::in_memory_with(options).await.unwrap(), None),
            Backing::File => {
                let dir = tempfile::tempdir().unwrap();
                let store = SqliteStore::open_with(dir.path().join("handoff.sqlite3"), options)
                    .await
                    .unwrap();
                (store, Some(dir))
            }
        };
        let (interpose, store): (Option<Arc<Interpose>>, Arc<dyn Store>) = if setup.interpose {
            let i = Arc::new(Interpose::new(sqlite));
            (Some(Arc::clone(&i)), i)
        } else {
            (None, Arc::new(sqlite))
        };
        let (mut directory, creds) = directory();
        let dbas = add_dbas(&mut directory, setup.extra_dbas);
        let mut builder = Handoff::builder()
            .shared_store(Arc::clone(&store))
            .policy(setup.policy.clone())
            .identity(directory)
            .shared_clock(shared)
            .limits(setup.limits)
            .checkpoint_key("test.example/audit", checkpoint_key())
            .platform_verifier(TestChannel("feishu"));
        if let Some(links) = links.links {
            builder = builder.decision_links(links);
        }
        if let Some(key) = links.digest_key {
            builder = builder.digest_key(key);
        }
        let handoff = builder.build().unwrap();
        Self {
            handoff,
            clock,
            policy: setup.policy,
            creds,
            dbas,
            store,
            interpose,
            _dir: dir,
        }
    }

    /// The database file of a [`Backing::File`] harness.
    pub fn store_path(&self) -> std::path::PathBuf {
        self._dir
            .as_ref()
            .expect("a file-backed harness")
            .path()
            .join("handoff.sqlite3")
    }

    /// The credential the test channel of `platform` proves for `user`.
    pub async fn platform_cred(&self, platform: &str, user: &str) -> Credential {
        self.handoff
            .platform_credential(platform, &[("x-test-user".into(), user.into())], b"")
            .await
            .unwrap()
    }

    pub fn cred(&self, person: &str) -> &Credential {
        &self.creds[person]
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The stored ticket.
    pub async fn ticket(&self, id: TicketId) -> Ticket {
        self.store.ticket(id).await.unwrap().expect("ticket exists")
    }

    /// Kinds of the ticket's audit events, in chain order.
    pub async fn audit_kinds(&self, id: TicketId) -> Vec<String> {
        self.store
            .ticket_audit(id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.record().kind.clone())
            .collect()
    }

    pub async fn audit(&self, id: TicketId) -> Vec<AuditEvent> {
        self.store.ticket_audit(id).await.unwrap()
    }

    /// Every audit event of the store, decoded.
    pub async fn all_audit(&self) -> Vec<AuditEvent> {
        self.store
            .audit_events(1, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|raw| AuditEvent::decode(raw).unwrap())
            .collect()
    }

    pub async fn head(&self) -> ChainHead {
        self.store.audit_head().await.unwrap()
    }

    pub async fn decisions(&self, id: TicketId) -> Vec<DecisionRow> {
        self.store.decisions(id).await.unwrap()
    }

    /// Every ticket of the store.
    pub async fn all_tickets(&self) -> Vec<Ticket> {
        all_tickets(self.store.as_ref(), TicketFilter::default()).await
    }
}

/// Pages through a listing.
pub async fn all_tickets(store: &dyn Store, mut filter: TicketFilter) -> Vec<Ticket> {
    let mut out = Vec::new();
    loop {
        let page = store.list_tickets(&filter).await.unwrap();
        out.extend(page.tickets);
        match page.next {
            Some(next) => filter.after = Some(next),
            None => return out,
        }
    }
}

pub fn agent_id(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

pub fn person(name: &str) -> PersonId {
    PersonId::new(name).unwrap()
}

pub fn persons(names: &[&str]) -> BTreeSet<PersonId> {
    names.iter().map(|n| person(n)).collect()
}

/// A request of `kind` under `key` with some parameters.
pub fn request(kind: &str, key: &str) -> ActionRequest {
    ActionRequest::builder(kind, idem(key))
        .target("postgres://prod/orders")
        .parameters(serde_json::json!({ "table": "orders", "limit": 1000 }))
        .reason("the test says so")
        .build()
        .unwrap()
}

pub fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(idem(text)).unwrap()
}

/// A valid idempotency key (at least 8 bytes) from a short test name.
pub fn idem(text: &str) -> String {
    format!("idempotency-{text}")
}

/// Yields until `cond` holds, up to a generous number of scheduler turns (no wall clock).
pub async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store that runs a hook (once) right before the next ticket-changing commit goes through:
/// a deterministic stand-in for another process writing between this caller's read and its
/// compare-and-swap. It can also answer the next ticket read with an older snapshot: a read
/// that completed just before another writer's commit.
pub struct Interpose {
    inner: SqliteStore,
    hook: Mutex<Option<Hook>>,
    stale: Mutex<Option<Ticket>>,
    fail: Mutex<bool>,
}

impl std::fmt::Debug for Interpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interpose").finish_non_exhaustive()
    }
}

impl Interpose {
    pub fn new(inner: SqliteStore) -> Self {
        Self {
            inner,
            hook: Mutex::new(None),
            stale: Mutex::new(None),
            fail: Mutex::new(false),
        }
    }

    /// Fails the next commit that writes a ticket with a backend error (a transient store
    /// failure: a full disk, a lost connection), writing nothing.
    pub fn fail_next_commit(&self) {
        *self.fail.lock().unwrap() = true;
    }

    /// Answers the next `ticket()` read with `snapshot` instead of the stored ticket.
    pub fn serve_once(&self, snapshot: Ticket) {
        *self.stale.lock().unwrap() = Some(snapshot);
    }

    /// Runs `hook` before the next commit that writes a ticket.
    pub fn before_next_commit(&self, hook: impl Future<Output = ()> + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::pin(hook));
    }

    pub fn armed(&self) -> bool {
        self.hook.lock().unwrap().is_some()
    }
}

#[async_trait]
impl Store for Interpose {
    fn contract_version(&self) -> u32 {
        self.inner.contract_version()
    }
    async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        let hook = if write.ticket.is_some() {
            self.hook.lock().unwrap().take()
        } else {
            None
        };
        if let Some(hook) = hook {
            hook.await;
        }
        if write.ticket.is_some() && std::mem::take(&mut *self.fail.lock().unwrap()) {
            return Err(StoreError::backend(std::io::Error::other("disk full")));
        }
        self.inner.commit(write).await
    }
    fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock()
    }
    async fn freezes(&self) -> Result<Vec<agent_handoff::backend::Freeze>, StoreError> {
        self.inner.freezes().await
    }
    async fn ticket(&self, id: TicketId) -> Result<Option<Ticket>, StoreError> {
        if let Some(snapshot) = self.stale.lock().unwrap().take() {
            return Ok(Some(snapshot));
        }
        self.inner.ticket(id).await
    }
    async fn ticket_by_key(
        &self,
        requester: &Requester,
        key: &IdempotencyKey,
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
    ) -> Result<Vec<agent_handoff::backend::OutboxEntry>, StoreError> {
        self.inner.claim_outbox(now, lease, limit).await
    }
    async fn ticket_outbox(
        &self,
        ticket: TicketId,
    ) -> Result<Vec<agent_handoff::backend::OutboxEntry>, StoreError> {
        self.inner.ticket_outbox(ticket).await
    }
    async fn outbox_receipt(
        &self,
        ticket: TicketId,
        channel: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.outbox_receipt(ticket, channel).await
    }
    async fn health(&self) -> Result<agent_handoff::backend::StoreHealth, StoreError> {
        self.inner.health().await
    }
    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown().await
    }
    fn on_commit(&self, listener: CommitListener) {
        self.inner.on_commit(listener);
    }
}
