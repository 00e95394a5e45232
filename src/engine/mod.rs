//! The facade: [`Handoff`] wires the ports together and exposes the agent, reviewer and
//! operator APIs. It is the only layer that touches backends; every decision about a ticket
//! is made by the pure [`ticket`](crate::ticket) machine.

mod agent;
mod audit;
mod clock;
mod coalesce;
mod error;
#[cfg(feature = "feishu")]
mod feishu;
mod freeze;
mod history;
mod links;
mod no_say;
mod operator;
mod outbox;
mod platform;
mod review;
mod waiters;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::action::DigestKey;
use crate::audit::{Actor, AuditRecord, CheckpointKey};
use crate::backend::{
    lock, Clock, DecisionRow, IdentityVerifier, NonceUse, PlatformVerifier, Rebase, Store,
    StoreError, StoreReader, TicketWrite, Write, STORE_CONTRACT_VERSION,
};
use crate::codes::Code;
use crate::id::{AgentId, GroupName, TicketId};
use crate::notify::Notifier;
use crate::policy::PolicyEngine;
use crate::ticket::{apply, Event, Refusal, Ticket, TicketState, Transition};
use crate::timestamp::Timestamp;

pub use agent::{AgentHandle, ApprovedAction, Decision, Grant, PendingTicket, Permit, Proposal};
pub use audit::{AuditFinding, AuditReport};
pub use clock::ClockRebase;
pub use error::{
    AuditError, DecideError, Error, ExecuteError, LinkError, ProposeError, RunError, WaitError,
};
pub use history::{AuditStream, RawAuditStream, TicketHistory};
pub use links::{DecisionLinks, MintedLink, TokenPreview, TokenSubmission};
pub use operator::Health;
pub use outbox::DeliveryReport;
pub use review::{Decided, TicketDetails};

use waiters::Waiters;

/// How many times a transition is recomputed after losing a compare-and-swap race.
const MAX_RACES: usize = 32;

/// Limits and timings of a [`Handoff`].
///
/// # Coalesced refusals
///
/// Besides unauthenticated refusals ([`unauthenticated_audit_per_minute`]), two refusals of
/// *authenticated* people are coalesced, because they come from people who have no say on the
/// ticket and change nothing: a vote by a person in none of the ticket's required groups
/// (`not_eligible`, counted per ticket and person) and a decision link presented by someone
/// it was not issued to (`wrong_reviewer`, counted per link and person). One attempt per key
/// and minute is recorded (audit row and decision row); the others are refused the same way
/// but write nothing — no row, no spent token — and are counted into one `refused` row of
/// that person (`detail: {coalesced: n, since}`), written with the next recorded attempt
/// under the key after the minute or by the first [`Handoff::expire_due`] sweep after it.
///
/// [`unauthenticated_audit_per_minute`]: Limits::unauthenticated_audit_per_minute
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long an execution permit's lease lasts before it must be renewed (default 5 min).
    pub lease_ttl: Duration,
    /// Proposals per agent per minute (default 600; 0 disables the limit).
    pub proposals_per_minute: u32,
    /// Longest pause between store polls while waiting on a ticket that another process may
    /// decide (default 2 s). Same-process decisions wake waiters at once.
    pub max_poll_interval: Duration,
    /// Unauthenticated refusals — refused credentials, and decision tokens refused before any
    /// credential was checked (malformed, forged, expired) — audited one row each per minute
    /// (default 60; 0 audits every one). Beyond it the refusals are still refused but only
    /// counted, and the count is written as one `refused` row (`coalesced: n`) with the next
    /// refusal after the minute, or by the first [`Handoff::expire_due`] sweep after it,
    /// whichever comes first, so a flood of forged callbacks or links cannot fill the disk.
    /// A count not yet written when the process stops is lost (at most the refusals of the
    /// last window): run the sweeper.
    pub unauthenticated_audit_per_minute: u32,
    /// Refusals by a freeze (see [`Handoff::freeze`]) audited one row each per minute and per
    /// agent (default 60; 0 audits every one). Beyond it the refusals — of the agent's
    /// proposals, of approvals and begins of its tickets — are still refused but only
    /// counted, and the count is written as one `refused` row of the agent (`coalesced: n`)
    /// as for unauthenticated refusals, so a frozen agent retrying in a loop cannot fill the
    /// disk with fsync'd rows.
    pub frozen_audit_per_minute: u32,
    /// Delivery attempts per outbox row, the first included, before it is marked dead and
    /// counted in [`Health`] (default 8; at least 1 is made).
    pub delivery_max_attempts: u32,
    /// Wait after the first failed delivery; doubled after each further failure, with jitter
    /// (each wait is drawn between half and all of it) (default 5 s).
    pub delivery_backoff_base: Duration,
    /// Longest wait between two delivery attempts (default 10 min). A channel's
    /// `retry_after` is honoured even when longer (up to a day).
    pub delivery_backoff_max: Duration,
    /// How long a claimed outbox row is left to the worker that claimed it: if that worker
    /// crashes, the row is claimed again after this (default 2 min). Keep it above a
    /// notifier's own request timeout.
    pub delivery_lease: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(300),
            proposals_per_minute: 600,
            max_poll_interval: Duration::from_secs(2),
            unauthenticated_audit_per_minute: 60,
            frozen_audit_per_minute: 60,
            delivery_max_attempts: 8,
            delivery_backoff_base: Duration::from_secs(5),
            delivery_backoff_max: Duration::from_secs(600),
            delivery_lease: Duration::from_secs(120),
        }
    }
}

/// The human-approval gate. Cheap to clone; clones share everything.
///
/// Build one with [`Handoff::builder`]; give each agent a handle with [`Handoff::agent`].
#[derive(Clone)]
pub struct Handoff {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn Store>,
    policy: Arc<dyn PolicyEngine>,
    identity: Arc<dyn IdentityVerifier>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    operator_group: GroupName,
    checkpoint_key: Option<CheckpointKey>,
    origin: String,
    links: Option<DecisionLinks>,
    digest_key: Option<DigestKey>,
    channels: Vec<outbox::Channel>,
    platforms: Vec<Arc<dyn PlatformVerifier>>,
    waiters: Arc<Waiters>,
    frozen: Mutex<coalesce::Coalescer<AgentId>>,
    buckets: Mutex<HashMap<AgentId, agent::Bucket>>,
    unauthenticated: Mutex<review::Flood>,
    no_say: Mutex<no_say::NoSay>,
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff")
            .field("store", &self.inner.store)
            .field("policy", &self.inner.policy.policy_ref())
            .field("identity", &self.inner.identity)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Handoff`]. Store, policy and identity verifier are required.
#[must_use]
pub struct HandoffBuilder {
    store: Option<Arc<dyn Store>>,
    policy: Option<Arc<dyn PolicyEngine>>,
    identity: Option<Arc<dyn IdentityVerifier>>,
    clock: Option<Arc<dyn Clock>>,
    limits: Limits,
    operator_group: Option<GroupName>,
    checkpoint_key: Option<CheckpointKey>,
    origin: String,
    links: Option<DecisionLinks>,
    digest_key: Option<DigestKey>,
    channels: Vec<outbox::Channel>,
    platforms: Vec<Arc<dyn PlatformVerifier>>,
}

impl fmt::Debug for HandoffBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoffBuilder").finish_non_exhaustive()
    }
}

impl Handoff {
    /// Starts a builder.
    pub fn builder() -> HandoffBuilder {
        HandoffBuilder {
            store: None,
            policy: None,
            identity: None,
            clock: None,
            limits: Limits::default(),
            operator_group: None,
            checkpoint_key: None,
            origin: "agent-handoff".into(),
            links: None,
            digest_key: None,
            channels: Vec::new(),
            platforms: Vec::new(),
        }
    }

    /// The clock the engine reads: the one its store stamps commits with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Read access to the store. Every change goes through the facade's operations, which
    /// keep the ticket machine's, the policy's and the audit chain's invariants: a raw commit
    /// is not offered.
    pub fn store(&self) -> StoreReader {
        StoreReader::new(Arc::clone(&self.inner.store))
    }

    /// Flushes the store's pending writes and stops it accepting new ones (for every clone of
    /// this `Handoff`, and anything else sharing the store). Idempotent.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.store.shutdown().await
    }
}

impl HandoffBuilder {
    /// The durable store (required).
    pub fn store(mut self, store: impl Store + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// A store shared with other components.
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The policy engine (required).
    pub fn policy(mut self, policy: impl PolicyEngine + 'static) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// The identity verifier for reviewers, operators and principals (required).
    pub fn identity(mut self, identity: impl IdentityVerifier + 'static) -> Self {
        self.identity = Some(Arc::new(identity));
        self
    }

    /// The clock. Optional: by default the engine reads the clock its store stamps commits
    /// with ([`Store::clock`]; the bundled store's is set by
    /// [`SqliteOptions::with_clock`](crate::SqliteOptions::with_clock), default
    /// [`SystemClock`](crate::SystemClock)). Given here, it must be that same clock — the
    /// same [`Clock::id`]: clones of one [`ManualClock`](crate::ManualClock), or one
    /// `Arc<dyn Clock>` given to both — or [`build`](Self::build) refuses with
    /// [`Error::ClockMismatch`] (a store stamping another time would judge every deadline
    /// the engine computes against a clock it never read).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Like [`clock`](Self::clock), with a clock shared with other components.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Limits and timings.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The directory group whose members may use operator controls (default `operators`).
    pub fn operator_group(mut self, group: GroupName) -> Self {
        self.operator_group = Some(group);
        self
    }

    /// The key that signs audit checkpoints, and the origin line they carry.
    pub fn checkpoint_key(mut self, origin: impl Into<String>, key: CheckpointKey) -> Self {
        self.origin = origin.into();
        self.checkpoint_key = Some(key);
        self
    }

    /// Decision links: the page they lead to, the keys that sign their tokens and how long a
    /// token lasts (see [`Handoff::mint_links`]). Needs a [`digest_key`](Self::digest_key)
    /// too; without both, the link methods answer [`LinkError::NotConfigured`].
    pub fn decision_links(mut self, links: DecisionLinks) -> Self {
        self.links = Some(links);
        self
    }

    /// The secret key of the keyed action digests that leave the store (decision tokens,
    /// cards): see [`DigestKey`]. Keep it stable across restarts and nodes, or outstanding
    /// links stop verifying as current.
    pub fn digest_key(mut self, key: DigestKey) -> Self {
        self.digest_key = Some(key);
        self
    }

    /// A channel that tells reviewers about tickets: every ticket that becomes pending gets a
    /// review card on each configured channel, and the card is closed there when the ticket
    /// leaves pending (see [`Handoff::deliver_due`]). `name` identifies the channel in the
    /// outbox and the audit trail: keep it stable across restarts, or rows written for the old
    /// name find no notifier. Needs a [`digest_key`](Self::digest_key) (cards carry the keyed
    /// digest); with [`decision_links`](Self::decision_links) the cards carry verdict-only
    /// links (no reviewer bound: a channel is a group).
    pub fn notifier(self, name: impl Into<String>, notifier: impl Notifier + 'static) -> Self {
        self.shared_notifier(name, Arc::new(notifier))
    }

    /// Like [`notifier`](Self::notifier), with a notifier shared with other components.
    pub fn shared_notifier(mut self, name: impl Into<String>, notifier: Arc<dyn Notifier>) -> Self {
        self.channels.push(outbox::Channel {
            name: name.into(),
            notifier,
        });
        self
    }

    /// Trusts `verifier` to prove users of its platform: the one explicit step through which
    /// an integrator's channel (a Slack or Teams callback handler, a trusted proxy's identity
    /// header) produces platform credentials, with [`Handoff::platform_credential`]. See
    /// [`PlatformVerifier`] for what it must check. At most one per platform.
    pub fn platform_verifier(mut self, verifier: impl PlatformVerifier + 'static) -> Self {
        self.platforms.push(Arc::new(verifier));
        self
    }

    /// Builds the engine and subscribes to the store's commit notifications.
    ///
    /// Refused with [`Error::StoreContract`] if the store implements an older store contract
    /// than [`STORE_CONTRACT_VERSION`] (it would ignore parts of the writes it is given), and
    /// with [`Error::Build`] for a missing part or an inconsistent configuration, and with
    /// [`Error::ClockMismatch`] for a clock that is not the store's.
    pub fn build(self) -> Result<Handoff, Error> {
        let store = self.store.ok_or(Error::Build("a store is required"))?;
        let implemented = store.contract_version();
        if implemented < STORE_CONTRACT_VERSION {
            return Err(Error::StoreContract {
                implemented,
                required: STORE_CONTRACT_VERSION,
            });
        }
        let policy = self
            .policy
            .ok_or(Error::Build("a policy engine is required"))?;
        let identity = self
            .identity
            .ok_or(Error::Build("an identity verifier is required"))?;
        let operator_group = match self.operator_group {
            Some(g) => g,
            None => GroupName::new("operators").map_err(|_| Error::Build("operator group"))?,
        };
        if let Some(links) = &self.links {
            links.check()?;
        }
        outbox::check(&self.channels, self.digest_key.is_some())?;
        platform::check(&self.platforms)?;
        let store_clock = store.clock();
        let clock = match self.clock {
            None => store_clock,
            Some(clock) if clock.id() == store_clock.id() => clock,
            Some(_) => return Err(Error::ClockMismatch),
        };
        let waiters = Arc::new(Waiters::default());
        let w = Arc::clone(&waiters);
        store.on_commit(Arc::new(move |ids: &[TicketId]| w.changed(ids)));
        Ok(Handoff {
            inner: Arc::new(Inner {
                store,
                policy,
                identity,
                clock,
                limits: self.limits,
                operator_group,
                checkpoint_key: self.checkpoint_key,
                origin: self.origin,
                links: self.links,
                digest_key: self.digest_key,
                channels: self.channels,
                platforms: self.platforms,
                waiters,
                frozen: Mutex::default(),
                buckets: Mutex::default(),
                unauthenticated: Mutex::default(),
                no_say: Mutex::default(),
            }),
        })
    }
}

/// The result of driving one event through the machine and the store.
// Returned once per transition and immediately taken apart.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Driven {
    /// Committed, or — `repeated` — a repeat of what the ticket already records, which
    /// changes nothing (it writes only the spent nonce, if any).
    Applied { ticket: Ticket, repeated: bool },
    /// Refused by the machine; the refusal (and any forced change) was recorded.
    Refused(Refusal),
}

/// Failure before the machine could rule.
pub(crate) enum DriveError<E> {
    NotFound(TicketId),
    Pre(E),
    /// The store refused or failed. [`StoreError::NonceReused`] means a [`Spend`]'s nonce was
    /// consumed before: nothing of this write was recorded.
    Store(StoreError),
}

/// Single-use nonces to consume with whatever `drive` commits (the accepted transition, the
/// refusal's audit rows, or — for an accepted repeat that changes nothing — the nonces and the
/// decision row alone), so the token carrying them can never be used again.
#[derive(Clone)]
pub(crate) struct Spend {
    /// The nonces with their expiries: the token's use, and any the request itself carries
    /// (a Feishu callback's event id). The write must commit before the earliest expiry: the
    /// store may forget a nonce afterwards, so a later commit could not be told from a replay.
    pub(crate) nonces: Vec<NonceUse>,
    /// Added as `token` to the data of each audit record the write carries.
    pub(crate) note: serde_json::Value,
}

impl Spend {
    fn annotate(&self, mut audit: Vec<AuditRecord>) -> Vec<AuditRecord> {
        for record in &mut audit {
            if let Some(data) = record.data.as_object_mut() {
                data.insert("token".to_owned(), self.note.clone());
            }
        }
        audit
    }

    /// The earliest expiry of the nonces.
    fn limit(&self) -> Option<Timestamp> {
        self.nonces.iter().map(|n| n.expires).min()
    }
}

/// Who decided, and what they asked for, as a decision row records it.
pub(crate) type Asked = (Option<crate::id::PersonId>, String);

/// What `drive` writes for one event on one ticket, and answers once it is committed.
// Made once per attempt and taken apart at once (like `Driven`).
#[allow(clippy::large_enum_variant)]
enum Planned {
    /// Nothing to write (an accepted repeat without a token to spend).
    Nothing(Driven),
    /// Commit this, then answer that.
    Write(Write, Driven),
}

/// The earlier of two optional limits.
fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Inner {
    /// Loads a ticket, builds an event for it, applies it and commits the result with
    /// compare-and-swap; recomputes after a lost race or a passed deadline. Refusals are
    /// committed too (audit rows, forced changes such as expiry or `Stale`).
    ///
    /// Votes commute with votes (DESIGN §Ticket lifecycle): a vote's write carries a
    /// [`Rebase`] that lets the store re-apply it, inside its transaction, to a ticket other
    /// votes changed meanwhile, as long as nothing material (action, ruling, state) changed
    /// since `event_for` judged it; and a vote is recomputed here after every lost race, for as
    /// long as the ticket takes votes (until a state change or the deadline ends it). Other
    /// events give up after `MAX_RACES` lost races.
    ///
    /// With a `spend`, its nonces are consumed by the same write, whichever it is — also by an
    /// accepted repeat that otherwise writes nothing — and the write is valid only before the
    /// nonces' expiry (`event_for` must refuse once `now` reaches it, or the loop retries until
    /// it gives up). A nonce used before fails the write with [`StoreError::NonceReused`].
    ///
    /// A refusal of a person in none of the ticket's groups is coalesced (see `coalesce`): one
    /// is recorded per window, the others write nothing and consume no nonce.
    pub(crate) async fn drive<E>(
        self: &Arc<Self>,
        id: TicketId,
        decision: Option<Asked>,
        spend: Option<&Spend>,
        mut event_for: impl FnMut(&Ticket, Timestamp) -> Result<Event, E>,
    ) -> Result<Driven, DriveError<E>> {
        let mut last_err = None;
        // The store commits at `max(clock, last commit in the file)`: when this engine's clock
        // lags the file (another process whose clock runs ahead, or a clock set back between
        // runs), a write it judged in time can be `TooLate`. The retry then judges the ticket
        // at the store's commit time, so a late vote is refused as such instead of looping.
        let mut floor: Option<Timestamp> = None;
        let mut races = 0;
        while races < MAX_RACES {
            let ticket = match self.store.ticket(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Err(DriveError::NotFound(id)),
                Err(e) => return Err(DriveError::Store(e)),
            };
            let now = floor.map_or_else(|| self.clock.now(), |f| self.clock.now().max(f));
            let event = event_for(&ticket, now).map_err(DriveError::Pre)?;
            let commutes = matches!(event, Event::Vote { .. });
            let rebased = commutes.then(|| Arc::new(Mutex::new(None)));
            let rebase = rebased
                .as_ref()
                .map(|slot| self.rebase(&ticket, &event, &decision, spend, slot));
            let planned = self
                .plan(&ticket, event, now, decision.as_ref(), spend)
                .map_err(DriveError::Store)?;
            let (mut write, outcome) = match planned {
                Planned::Nothing(outcome) => return Ok(outcome),
                Planned::Write(write, outcome) => (write, outcome),
            };
            let mut admitted = None;
            if let (
                Driven::Refused(refusal @ Refusal::NotEligible { .. }),
                None,
                Some((Some(person), _)),
            ) = (&outcome, &write.ticket, &decision)
            {
                let key = no_say::Key {
                    ticket: id,
                    person: person.clone(),
                    code: refusal.code(),
                    token: None,
                };
                match lock(&self.no_say).admit(&key, now) {
                    no_say::Recorded::Coalesced => return Ok(outcome),
                    no_say::Recorded::Yes(summary) => {
                        write.audit.splice(0..0, summary.clone());
                        admitted = Some((key, summary));
                    }
                };
            }
            if matches!(write.ticket, Some(TicketWrite::Update { .. })) {
                write.rebase = rebase;
            }
            let committed = self.commit(write).await;
            if let (Err(_), Some((key, summary))) = (&committed, admitted) {
                // Nothing was recorded: the next attempt under the key is, with the count.
                lock(&self.no_say).undo(&key, summary);
            }
            match committed {
                Ok(_) => {
                    // The store may have applied the rebase instead: answer what it computed.
                    let rebased = rebased.and_then(|slot| lock(&slot).take());
                    return Ok(rebased.unwrap_or(outcome));
                }
                Err(e @ StoreError::VersionConflict { .. }) => {
                    last_err = Some(e);
                    if !commutes {
                        races += 1;
                    }
                }
                Err(StoreError::TooLate { at, limit }) => {
                    floor = Some(floor.map_or(at, |f| f.max(at)));
                    last_err = Some(StoreError::TooLate { at, limit });
                    races += 1;
                }
                Err(e) => return Err(DriveError::Store(e)),
            }
        }
        Err(DriveError::Store(last_err.unwrap_or(StoreError::Closed)))
    }

    /// The rebase of a vote computed on `read`: re-applied by the store to the ticket as
    /// committed while nothing material changed since `read` (the action, ruling and state the
    /// voter saw — a newer material version is what makes a caller's `expected_version`
    /// stale), the outcome left in `slot` for `drive` to answer.
    fn rebase(
        self: &Arc<Self>,
        read: &Ticket,
        event: &Event,
        decision: &Option<Asked>,
        spend: Option<&Spend>,
        slot: &Arc<Mutex<Option<Driven>>>,
    ) -> Rebase {
        let (inner, slot) = (Arc::clone(self), Arc::clone(slot));
        let (event, decision, spend) = (event.clone(), decision.clone(), spend.cloned());
        let material = read.material_version();
        Rebase::new(move |current: &Ticket, at: Timestamp| {
            if current.material_version() != material {
                return None;
            }
            let planned = inner
                .plan(
                    current,
                    event.clone(),
                    at,
                    decision.as_ref(),
                    spend.as_ref(),
                )
                .ok()?;
            let (mut write, outcome) = match planned {
                Planned::Nothing(outcome) => (Write::default(), outcome),
                Planned::Write(write, outcome) => (write, outcome),
            };
            // Applied by the store directly: its texts are sealed here, as `commit` does.
            seal(&mut write.audit).ok()?;
            *lock(&slot) = Some(outcome);
            Some(write)
        })
    }

    /// What applying `event` to `ticket` at `now` writes, and what the caller is answered.
    fn plan(
        &self,
        ticket: &Ticket,
        event: Event,
        now: Timestamp,
        decision: Option<&Asked>,
        spend: Option<&Spend>,
    ) -> Result<Planned, StoreError> {
        let id = ticket.id();
        // What a freeze refuses (approvals, begin) carries its check into the write.
        let unless_frozen = freeze::guard(&event, ticket);
        let nonces: Vec<NonceUse> = spend.map(|s| s.nonces.clone()).unwrap_or_default();
        let nonce_limit = spend.and_then(Spend::limit);
        let annotate = |audit: Vec<AuditRecord>| match spend {
            Some(spend) => spend.annotate(audit),
            None => audit,
        };
        let limit = time_limit(ticket).filter(|l| now < *l);
        let decision_row = |refusal: Option<&Refusal>| {
            decision.map(|(person, verdict)| DecisionRow {
                ticket: id,
                person: person.clone(),
                verdict: verdict.clone(),
                refusal: refusal.map(|r| r.code().as_str().to_owned()),
                at: now,
            })
        };
        Ok(match apply(ticket, event, now) {
            Ok(Transition {
                ticket: next,
                audit,
                effects,
            }) => {
                if next.version() == ticket.version() {
                    if nonces.is_empty() {
                        return Ok(Planned::Nothing(Driven::Applied {
                            ticket: next,
                            repeated: true,
                        }));
                    }
                    // An accepted repeat: nothing changes, but the token is spent, and
                    // its use goes into the chain with it.
                    let mut audit = audit;
                    audit.push(AuditRecord::new(
                        Some(id),
                        now,
                        crate::audit::kind::REPEATED,
                        decision
                            .and_then(|(p, _)| p.clone())
                            .map_or(Actor::Unauthenticated, Actor::Reviewer),
                        serde_json::json!({
                            "verdict": decision.map(|(_, v)| v.as_str()),
                        }),
                    ));
                    let write = Write {
                        decision: decision_row(None),
                        audit: annotate(audit),
                        nonces,
                        valid_before: earliest(limit, nonce_limit),
                        ..Write::default()
                    };
                    Planned::Write(
                        write,
                        Driven::Applied {
                            ticket: next,
                            repeated: true,
                        },
                    )
                } else {
                    let write = Write {
                        outbox: self.notifications(&next, &effects, now)?,
                        ticket: Some(TicketWrite::Update {
                            ticket: Box::new(next.clone()),
                            expected_version: ticket.version(),
                        }),
                        decision: decision_row(None),
                        audit: annotate(audit),
                        nonces,
                        valid_before: earliest(limit, nonce_limit),
                        unless_frozen,
                        ..Write::default()
                    };
                    Planned::Write(
                        write,
                        Driven::Applied {
                            ticket: next,
                            repeated: false,
                        },
                    )
                }
            }
            Err(refused) => {
                let outbox = match &refused.ticket {
                    Some(forced) => self.notifications(forced, &refused.effects, now)?,
                    None => Vec::new(),
                };
                let forced = refused.ticket.map(|t| TicketWrite::Update {
                    ticket: Box::new(t),
                    expected_version: ticket.version(),
                });
                let write = Write {
                    valid_before: earliest(
                        if forced.is_some() { limit } else { None },
                        nonce_limit,
                    ),
                    ticket: forced,
                    outbox,
                    decision: decision_row(Some(&refused.refusal)),
                    audit: annotate(refused.audit),
                    nonces,
                    ..Write::default()
                };
                Planned::Write(write, Driven::Refused(refused.refusal))
            }
        })
    }

    /// Seals the texts of the write's audit records (a fresh random salt each, the
    /// commitment into the record's data) and commits it. Every write whose records may carry
    /// texts goes through here; a store refuses unsealed texts.
    pub(crate) async fn commit(
        &self,
        mut write: Write,
    ) -> Result<crate::backend::Committed, StoreError> {
        seal(&mut write.audit)?;
        self.store.commit(write).await
    }

    /// Records audit rows that belong to no ticket change (refused credentials, freezes).
    pub(crate) async fn audit_only(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        self.commit(Write {
            audit: records,
            ..Write::default()
        })
        .await
        .map(|_| ())
    }

    pub(crate) fn refusal_record(
        &self,
        ticket: Option<TicketId>,
        actor: Actor,
        reason: Code,
        detail: serde_json::Value,
    ) -> AuditRecord {
        AuditRecord {
            texts: Vec::new(),
            ticket,
            at: self.clock.now(),
            kind: crate::audit::kind::REFUSED.to_owned(),
            actor,
            data: serde_json::json!({ "refusal": reason, "detail": detail }),
        }
    }
}

/// Seals every pending text of `records` with a salt from the operating system.
fn seal(records: &mut [AuditRecord]) -> Result<(), StoreError> {
    for record in records.iter_mut().filter(|r| r.needs_sealing()) {
        let pending = record.texts.len();
        let mut salts = vec![[0u8; 32]; pending];
        for salt in &mut salts {
            getrandom::fill(salt).map_err(|e| StoreError::Corrupt(format!("random: {e}")))?;
        }
        let mut salts = salts.into_iter();
        record.seal(|| salts.next().unwrap_or_default());
    }
    Ok(())
}

/// The instant after which a write computed on this ticket is no longer valid: the review
/// deadline, the grant's end, the lease's end. A write computed before it but committed at or
/// after it is refused by the store and recomputed, so time limits are judged at commit time.
fn time_limit(ticket: &Ticket) -> Option<Timestamp> {
    match ticket.state() {
        TicketState::Pending => ticket.deadline(),
        TicketState::Approved(a) => Some(a.valid_until),
        TicketState::Executing { lease_expires, .. } => Some(*lease_expires),
        _ => None,
    }
}

/// The facade is shared across tasks and threads.
const _: () = {
    const fn is<T: Send + Sync>() {}
    is::<Handoff>();
    is::<AgentHandle>();
    is::<DecisionLinks>();
    is::<MintedLink>();
    is::<TokenPreview>();
    is::<LinkError>();
};
