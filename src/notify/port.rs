//! The `Notifier` port: deliver one review card to one channel.

use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::card::ReviewCard;
use crate::backend::lock;
use crate::id::TicketId;

/// Delivers review cards to one channel (a signed webhook, a chat app, mail).
///
/// Called by the outbox worker once per attempt at an outbox row, after the transition that
/// wrote the row has committed. Delivery is **at least once**: the worker retries after errors
/// and after crashes, so an implementation must make repeats harmless by passing
/// [`Delivery::id`] to the channel as its deduplication key (the Standard Webhooks
/// `webhook-id`, the Feishu `uuid`), so a retry never posts twice.
///
/// Implementations do the I/O and nothing else: no retry loop (the worker owns backoff,
/// limits and the dead-row state), no sleeping, no audit writes. Report each failure with the
/// [`DeliveryError`] variant that says whether a retry can help. Errors and logs must not
/// contain secrets (channel credentials, decision links).
#[async_trait]
pub trait Notifier: Send + Sync + fmt::Debug {
    /// Delivers one card. `Ok` means the channel accepted it (or had already accepted the
    /// same [`Delivery::id`]); the receipt is stored with the outbox row and handed back as
    /// [`Delivery::previous_receipt`] when the card is later updated or closed.
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError>;
}

/// Why a delivery is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryKind {
    /// The ticket became pending (or an edit started a new round): ask for a review.
    RequestReview,
    /// The ticket is still pending but its review changed (an approval came in): update the
    /// card sent earlier.
    Update,
    /// The ticket left pending (decided, expired, cancelled): update the card sent earlier to
    /// its final state, without decision links.
    Close,
}

/// One card for one channel, as the outbox worker hands it to a [`Notifier`].
///
/// Serialisable, so an outbox row can carry it as its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delivery {
    /// The outbox row's id: stable across retries, the channel's deduplication key.
    pub id: Uuid,
    /// The ticket.
    pub ticket: TicketId,
    /// Why.
    pub kind: DeliveryKind,
    /// What to show (redacted; already bounded for the channel if it has a limit).
    pub card: ReviewCard,
    /// The channel's recipient (a chat id, a user id, an address), if the notifier is not
    /// configured with a fixed one.
    pub recipient: Option<String>,
    /// The receipt of the delivery that posted the card, for [`DeliveryKind::Update`] and
    /// [`DeliveryKind::Close`] (to edit that message instead of posting a new one).
    pub previous_receipt: Option<DeliveryReceipt>,
}

impl Delivery {
    /// A delivery of `card` (for the card's ticket) under the outbox row id `id`.
    pub fn new(id: Uuid, kind: DeliveryKind, card: ReviewCard) -> Self {
        Self {
            id,
            ticket: card.ticket,
            kind,
            card,
            recipient: None,
            previous_receipt: None,
        }
    }

    /// Sets the recipient.
    #[must_use]
    pub fn with_recipient(mut self, recipient: impl Into<String>) -> Self {
        self.recipient = Some(recipient.into());
        self
    }

    /// Sets the receipt of the earlier delivery to update.
    #[must_use]
    pub fn with_previous_receipt(mut self, receipt: DeliveryReceipt) -> Self {
        self.previous_receipt = Some(receipt);
        self
    }
}

/// What a channel returned for an accepted delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeliveryReceipt {
    /// The channel's id for the posted message (a Feishu `message_id`), needed to update the
    /// card later; `None` for channels without one (a webhook answering `204`).
    pub channel_message_id: Option<String>,
    /// Other channel-specific details a later update needs, opaque to the worker.
    pub channel_data: Option<Value>,
}

impl DeliveryReceipt {
    /// A receipt with the channel's message id, if it returned one.
    pub fn new(channel_message_id: Option<String>) -> Self {
        Self {
            channel_message_id,
            channel_data: None,
        }
    }

    /// Adds channel-specific details.
    #[must_use]
    pub fn with_channel_data(mut self, data: Value) -> Self {
        self.channel_data = Some(data);
        self
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a delivery failed, and whether retrying can help ([`is_retryable`](Self::is_retryable)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A failure that may pass: a timeout, a refused connection, a `5xx`, a channel error code
    /// documented as temporary. Retry with backoff.
    #[error("delivery failed and may succeed if retried: {reason}")]
    Transient {
        /// What happened (no secrets).
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The channel asked to slow down (`429`, a rate-limit error code). Retry, not before
    /// `retry_after` if the channel said.
    #[error("the channel is rate limiting deliveries{}", retry_hint(.retry_after))]
    RateLimited {
        /// How long the channel asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The channel refused this delivery for good (a `4xx` other than `408`/`429`, a card the
    /// channel rejects, a recipient that does not exist). Retrying the same delivery cannot
    /// help.
    #[error("the channel refused the delivery: {reason}")]
    Permanent {
        /// What happened (no secrets).
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The notifier cannot work as configured (bad URL, rejected credentials or signature, a
    /// missing permission). Retrying cannot help until an operator fixes the configuration; the
    /// worker should raise it in `health()` rather than burn the row's retries.
    #[error("the notifier is misconfigured: {reason}")]
    Misconfigured {
        /// What is wrong (no secrets).
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {} ms", d.as_millis()),
        None => String::new(),
    }
}

impl DeliveryError {
    /// A transient failure.
    pub fn transient(reason: impl Into<String>) -> Self {
        DeliveryError::Transient {
            reason: reason.into(),
            source: None,
        }
    }

    /// A rate limit, with the wait the channel asked for if any.
    pub fn rate_limited(retry_after: Option<Duration>) -> Self {
        DeliveryError::RateLimited { retry_after }
    }

    /// A permanent refusal.
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            reason: reason.into(),
            source: None,
        }
    }

    /// A configuration problem.
    pub fn misconfigured(reason: impl Into<String>) -> Self {
        DeliveryError::Misconfigured {
            reason: reason.into(),
            source: None,
        }
    }

    /// Attaches the underlying error (ignored by [`DeliveryError::RateLimited`], which has
    /// none).
    #[must_use]
    pub fn with_source(mut self, error: impl Into<BoxError>) -> Self {
        match &mut self {
            DeliveryError::Transient { source, .. }
            | DeliveryError::Permanent { source, .. }
            | DeliveryError::Misconfigured { source, .. } => *source = Some(error.into()),
            DeliveryError::RateLimited { .. } => {}
        }
        self
    }

    /// Whether retrying the same delivery later can succeed: `true` for
    /// [`Transient`](Self::Transient) and [`RateLimited`](Self::RateLimited), `false` for
    /// [`Permanent`](Self::Permanent) and [`Misconfigured`](Self::Misconfigured).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DeliveryError::Transient { .. } | DeliveryError::RateLimited { .. }
        )
    }

    /// The earliest sensible retry the channel asked for, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A stable snake-case code for audit records and metrics (`transient`, `rate_limited`,
    /// `permanent`, `misconfigured`).
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::Transient { .. } => "transient",
            DeliveryError::RateLimited { .. } => "rate_limited",
            DeliveryError::Permanent { .. } => "permanent",
            DeliveryError::Misconfigured { .. } => "misconfigured",
        }
    }
}

/// A [`Notifier`] that keeps deliveries in memory — a **test double** for tests and demos,
/// not a channel.
///
/// It behaves like a channel that deduplicates on [`Delivery::id`]: the first successful
/// delivery of an id is recorded and answered with a receipt whose message id is
/// `recorded-<id>`; a repeat of that id gets the same receipt and is not recorded again. It can
/// be told to fail the next attempts ([`fail_next`](Self::fail_next),
/// [`push_failure`](Self::push_failure)); every attempt, failed or not, is counted.
///
/// Clones share their state, so a test can keep one while the engine owns another.
///
/// ```
/// use std::sync::Arc;
/// use agent_handoff::notify::{Notifier, RecordingNotifier};
///
/// let recorder = RecordingNotifier::new();
/// recorder.fail_next(2); // the next two attempts fail with a transient error
/// let for_the_engine: Arc<dyn Notifier> = Arc::new(recorder.clone());
/// # drop(for_the_engine);
/// assert_eq!(recorder.attempts(), 0);
/// assert!(recorder.deliveries().is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecordingNotifier {
    state: Arc<Mutex<Recording>>,
}

#[derive(Debug, Default)]
struct Recording {
    delivered: Vec<Delivery>,
    receipts: HashMap<Uuid, DeliveryReceipt>,
    attempts: Vec<Uuid>,
    failures: VecDeque<DeliveryError>,
}

impl RecordingNotifier {
    /// An empty recorder that accepts every delivery.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the next `n` attempts with [`DeliveryError::Transient`] (after any failures
    /// already queued).
    pub fn fail_next(&self, n: usize) {
        let mut state = lock(&self.state);
        for i in 0..n {
            state.failures.push_back(DeliveryError::transient(format!(
                "injected failure {} of {n}",
                i + 1
            )));
        }
    }

    /// Fails the next attempt (after any failures already queued) with `error`.
    pub fn push_failure(&self, error: DeliveryError) {
        lock(&self.state).failures.push_back(error);
    }

    /// The deliveries accepted, one per delivery id, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state).delivered.clone()
    }

    /// How many times [`deliver`](Notifier::deliver) was called, failures and repeats included.
    pub fn attempts(&self) -> usize {
        lock(&self.state).attempts.len()
    }

    /// How many times [`deliver`](Notifier::deliver) was called for one delivery id.
    pub fn attempts_for(&self, id: Uuid) -> usize {
        lock(&self.state)
            .attempts
            .iter()
            .filter(|a| **a == id)
            .count()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn deliver(&self, delivery: &Delivery) -> Result<DeliveryReceipt, DeliveryError> {
        let mut state = lock(&self.state);
        state.attempts.push(delivery.id);
        if let Some(error) = state.failures.pop_front() {
            return Err(error);
        }
        if let Some(receipt) = state.receipts.get(&delivery.id) {
            return Ok(receipt.clone());
        }
        let receipt = DeliveryReceipt::new(Some(format!("recorded-{}", delivery.id)));
        state.receipts.insert(delivery.id, receipt.clone());
        state.delivered.push(delivery.clone());
        Ok(receipt)
    }
}
