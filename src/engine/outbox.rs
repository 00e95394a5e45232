//! The durable outbox: review cards written with the transitions that need them, and the
//! delivery worker that hands them to the configured [`Notifier`]s.
//!
//! - **Written atomically.** A transition whose effects ask for notification (a ticket
//!   became pending: [`Effect::RequestReview`]; it left pending — decided, expired,
//!   cancelled: [`Effect::CloseReview`]) carries one outbox row per configured channel in the
//!   same [`Write`](crate::backend::Write) as the ticket change, so a committed ticket always
//!   has its notifications, and a refused write has none.
//! - **Identical bytes on every attempt.** A row's payload is the serialised [`Delivery`]
//!   (the redacted [`ReviewCard`] as of the transition), built once at write time; its id is
//!   the row id, which channels use to deduplicate. Only the earlier delivery's receipt is
//!   added at delivery time (for updates and closes), once that delivery has been recorded.
//! - **At least once.** [`Handoff::deliver_due`] claims due rows (leased, so a crashed worker's
//!   rows are claimed again later), delivers them, and records each outcome with its audit
//!   record (`notified`, `delivery_failed`, `gave_up`) in one write. A delivery the channel
//!   accepted but whose outcome was never recorded is delivered again under the same id.
//! - **Retries.** Exponential backoff with jitter, at least what the channel asked for
//!   (`retry_after`), up to [`Limits::delivery_max_attempts`](super::Limits); then the row is
//!   dead and counted in [`Handoff::health`]. A failure retrying cannot fix (permanent,
//!   misconfigured) makes the row dead at once.
//! - **Panics.** A notifier that panics fails its attempt like a transient failure (audited
//!   as `delivery_failed` with error `notifier_panicked`, retried with backoff, dead after the
//!   last attempt); the pass, and a worker from [`Handoff::spawn_delivery_worker`], go on.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::error::{Error, LinkError};
use super::{Handoff, Inner, Limits};
use crate::audit::{kind, Actor, AuditRecord};
use crate::backend::{OutboxEntry, OutboxOutcome, OutboxRow, OutboxUpdate, StoreError, Write};
use crate::notify::{Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, ReviewCard};
use crate::ticket::{Effect, Ticket};
use crate::timestamp::Timestamp;

/// What one [`Handoff::deliver_due`](crate::Handoff::deliver_due) pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryReport {
    /// Rows claimed for an attempt.
    pub claimed: usize,
    /// Rows the channel accepted.
    pub delivered: usize,
    /// Rows that failed and will be retried.
    pub retried: usize,
    /// Rows given up (retries exhausted, or a failure retrying cannot fix).
    pub dead: usize,
    /// Rows whose outcome another worker recorded first (this outcome was dropped).
    pub conflicts: usize,
}

/// Rows claimed per store round trip.
const BATCH: usize = 64;
/// Claim rounds per [`Handoff::deliver_due`] call, so one call always ends.
const MAX_ROUNDS: usize = 16;
/// The longest `retry_after` honoured: a channel asking for more is retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest channel name.
const MAX_CHANNEL_NAME: usize = 128;

/// A configured notification channel.
pub(crate) struct Channel {
    pub(crate) name: String,
    pub(crate) notifier: Arc<dyn Notifier>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("notifier", &self.notifier)
            .finish()
    }
}

/// Refuses channel configurations that cannot work.
pub(crate) fn check(channels: &[Channel], has_digest_key: bool) -> Result<(), Error> {
    if channels.is_empty() {
        return Ok(());
    }
    if !has_digest_key {
        return Err(Error::Build(
            "notifiers need a digest key (review cards carry the keyed digest)",
        ));
    }
    for (i, channel) in channels.iter().enumerate() {
        if channel.name.is_empty()
            || channel.name.len() > MAX_CHANNEL_NAME
            || channel.name.chars().any(char::is_control)
        {
            return Err(Error::Build(
                "a notifier channel name must be 1 to 128 characters without control characters",
            ));
        }
        if channels[..i].iter().any(|c| c.name == channel.name) {
            return Err(Error::Build("two notifiers share one channel name"));
        }
    }
    Ok(())
}

/// A fresh outbox row id: UUID v7 (time-ordered), 74 random bits.
fn new_row_id(now: Timestamp) -> Result<Uuid, StoreError> {
    let mut random = [0u8; 10];
    getrandom::fill(&mut random).map_err(|e| StoreError::Corrupt(format!("random: {e}")))?;
    let ms = u64::try_from(now.as_unix_millis()).unwrap_or(0);
    Ok(uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
}

impl Inner {
    /// The outbox rows a transition's effects ask for: one per effect and channel, each with
    /// the card of `ticket` (the ticket after the transition) as of `now`. Empty without
    /// channels.
    pub(crate) fn notifications(
        &self,
        ticket: &Ticket,
        effects: &[Effect],
        now: Timestamp,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows = Vec::new();
        if self.channels.is_empty() {
            return Ok(rows);
        }
        // The builder refuses channels without a digest key.
        let Some(key) = &self.digest_key else {
            return Ok(rows);
        };
        for effect in effects {
            let (kind, links) = match effect {
                Effect::RequestReview => {
                    (DeliveryKind::RequestReview, self.card_links(ticket, now)?)
                }
                Effect::CloseReview => (DeliveryKind::Close, Vec::new()),
                #[allow(unreachable_patterns)] // `Effect` is non-exhaustive
                _ => continue,
            };
            let card = ReviewCard::from_ticket(ticket, now, key, &links);
            for channel in &self.channels {
                let id = new_row_id(now)?;
                let delivery = Delivery::new(id, kind, card.clone());
                let payload = serde_json::to_value(&delivery).map_err(|e| {
                    StoreError::InvalidWrite(format!("delivery does not serialise: {e}"))
                })?;
                rows.push(OutboxRow {
                    id,
                    ticket: ticket.id(),
                    channel: channel.name.clone(),
                    payload,
                    due: now,
                });
            }
        }
        Ok(rows)
    }

    /// Verdict-only decision links for a card sent to a channel (a group: the reviewer is
    /// whoever authenticates), when decision links are configured.
    fn card_links(
        &self,
        ticket: &Ticket,
        now: Timestamp,
    ) -> Result<Vec<crate::notify::DecisionLink>, StoreError> {
        if self.links.is_none() {
            return Ok(Vec::new());
        }
        match self.mint_links(ticket, None, now) {
            Ok(links) => Ok(links.iter().map(|l| l.to_card_link()).collect()),
            // Not pending at `now`: the card offers no decision anyway.
            Err(LinkError::NotPending { .. }) => Ok(Vec::new()),
            Err(e) => Err(StoreError::backend(e)),
        }
    }
}

/// Why an attempt failed, as the worker records it.
struct Failure {
    /// Stable code for the audit record (`transient`, `permanent`, `unknown_channel`…).
    code: &'static str,
    /// Whether a later attempt can succeed.
    retryable: bool,
    /// The wait the channel asked for.
    retry_after: Option<Duration>,
    /// For the row's `last_error` (no secrets: notifiers keep them out of their errors).
    message: String,
}

impl From<DeliveryError> for Failure {
    fn from(e: DeliveryError) -> Self {
        Failure {
            code: e.code(),
            retryable: e.is_retryable(),
            retry_after: e.retry_after(),
            message: e.to_string(),
        }
    }
}

/// The wait before attempt `failed + 1`, after `failed` failed attempts: `base · 2^(failed-1)`
/// capped at the maximum, drawn uniformly between half and all of it, and at least the
/// channel's `retry_after` (itself capped at a day).
pub(crate) fn backoff(limits: &Limits, failed: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failed.saturating_sub(1).min(30);
    let full = limits
        .delivery_backoff_base
        .saturating_mul(1u32 << exp)
        .min(limits.delivery_backoff_max);
    let half = full / 2;
    let span = u64::try_from((full - half).as_millis()).unwrap_or(u64::MAX);
    let mut bytes = [0u8; 8];
    // Without randomness, no jitter: the full wait.
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) if span > 0 => Duration::from_millis(u64::from_le_bytes(bytes) % (span + 1)),
        _ => full - half,
    };
    let wait = half + jitter;
    match retry_after {
        Some(asked) => wait.max(asked.min(MAX_RETRY_AFTER)),
        None => wait,
    }
}

/// Polls a future inside [`std::panic::catch_unwind`]: a panic while polling ends it with the
/// panic's payload instead of unwinding into the caller.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        // The future is never polled again after a panic (it is answered `Ready`), so no
        // broken invariant of it can be observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// What one attempt came to.
enum Tally {
    Delivered,
    Retried,
    Dead,
    Conflict,
}

impl Handoff {
    /// Delivers the outbox rows that are due: claims them (oldest first; a ticket's rows per
    /// channel in order), hands each to its channel's [`Notifier`], and records each outcome
    /// with its audit record in one write — `notified` (channel, delivery id, the channel's
    /// message id), `delivery_failed` (attempt, whether a retry can help, error code) and,
    /// when the row is given up, `gave_up`.
    ///
    /// A retryable failure is retried after an exponential backoff with jitter (at least the
    /// channel's `retry_after`), up to [`Limits::delivery_max_attempts`]; a permanent or
    /// misconfiguration failure, or the last attempt's failure, makes the row dead (counted in
    /// [`health`](Self::health)). A row for a channel this engine does not have is retried
    /// like a transient failure (another process, or a restart with the channel restored, may
    /// deliver it).
    ///
    /// Drive it yourself (after commits, on a timer), or use
    /// [`spawn_delivery_worker`](Self::spawn_delivery_worker). Several workers, in one process
    /// or several, may run at once: a claimed row is leased for
    /// [`Limits::delivery_lease`], and an outcome recorded by another worker first is dropped
    /// (counted in [`DeliveryReport::conflicts`]).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn deliver_due(&self) -> Result<DeliveryReport, StoreError> {
        let _op = crate::failpoint::operation("deliver");
        let mut report = DeliveryReport::default();
        for _ in 0..MAX_ROUNDS {
            let now = self.inner.clock.now();
            let claimed = self
                .inner
                .store
                .claim_outbox(now, self.inner.limits.delivery_lease, BATCH)
                .await?;
            let n = claimed.len();
            if n > 0 {
                crate::failpoint::failpoint("deliver.claimed");
            }
            for entry in claimed {
                report.claimed += 1;
                match self.deliver_one(entry).await? {
                    Tally::Delivered => report.delivered += 1,
                    Tally::Retried => report.retried += 1,
                    Tally::Dead => report.dead += 1,
                    Tally::Conflict => report.conflicts += 1,
                }
            }
            // A delivered row may have unblocked the next row of its ticket and channel (a
            // close waiting for its card), so claim again until nothing is due.
            if n == 0 {
                break;
            }
        }
        Ok(report)
    }

    /// Runs [`deliver_due`](Self::deliver_due) every `every` on the current tokio runtime until
    /// the returned handle is aborted.
    #[cfg(feature = "tokio")]
    pub fn spawn_delivery_worker(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.deliver_due().await {
                    tracing::warn!(error = %e, "outbox delivery pass failed");
                }
                let next = this.inner.clock.now().saturating_add(every);
                this.inner.clock.sleep_until(next).await;
            }
        })
    }

    async fn deliver_one(&self, entry: OutboxEntry) -> Result<Tally, StoreError> {
        let inner = &self.inner;
        let row = &entry.row;
        let attempt = entry.attempts.saturating_add(1);
        let channel = inner.channels.iter().find(|c| c.name == row.channel);
        let delivery = serde_json::from_value::<Delivery>(row.payload.clone());
        let kind = delivery.as_ref().ok().map(|d| d.kind);
        let result: Result<DeliveryReceipt, Failure> = match (channel, delivery) {
            (_, Err(e)) => Err(Failure {
                code: "corrupt_payload",
                retryable: false,
                retry_after: None,
                message: format!("outbox payload does not decode: {e}"),
            }),
            (None, Ok(_)) => Err(Failure {
                code: "unknown_channel",
                retryable: true,
                retry_after: None,
                message: format!("no notifier is configured for channel `{}`", row.channel),
            }),
            (Some(channel), Ok(mut delivery)) => {
                if delivery.kind != DeliveryKind::RequestReview
                    && delivery.previous_receipt.is_none()
                {
                    delivery.previous_receipt = inner
                        .store
                        .outbox_receipt(row.ticket, &row.channel)
                        .await?
                        .and_then(|r| serde_json::from_value(r).ok());
                }
                // A notifier that panics fails this attempt (retried like a transient
                // failure); it must not take the delivery worker, and every row behind this
                // one, down with it.
                match CatchUnwind(channel.notifier.deliver(&delivery)).await {
                    Ok(delivered) => delivered.map_err(Failure::from),
                    Err(_panic) => Err(Failure {
                        code: "notifier_panicked",
                        retryable: true,
                        retry_after: None,
                        message: format!("the notifier of channel `{}` panicked", row.channel),
                    }),
                }
            }
        };
        if result.is_ok() {
            crate::failpoint::failpoint("deliver.notified");
        }
        let now = inner.clock.now();
        let record = |kind_name: &str, data: serde_json::Value| AuditRecord {
            texts: Vec::new(),
            ticket: Some(row.ticket),
            at: now,
            kind: kind_name.to_owned(),
            actor: Actor::System,
            data,
        };
        let (outcome, audit, tally) = match result {
            Ok(receipt) => {
                tracing::info!(ticket = %row.ticket, channel = %row.channel, delivery = %row.id, attempt, "review card delivered");
                let data = json!({
                    "channel": row.channel,
                    "delivery": row.id.to_string(),
                    "delivery_kind": kind,
                    "attempt": attempt,
                    "message_id": receipt.channel_message_id,
                });
                let receipt = serde_json::to_value(&receipt).map_err(|e| {
                    StoreError::InvalidWrite(format!("receipt does not serialise: {e}"))
                })?;
                (
                    OutboxOutcome::Delivered { receipt },
                    vec![record(kind::NOTIFIED, data)],
                    Tally::Delivered,
                )
            }
            Err(failure) => {
                let last = !failure.retryable || attempt >= inner.limits.delivery_max_attempts;
                let next = (!last).then(|| {
                    now.saturating_add(backoff(&inner.limits, attempt, failure.retry_after))
                });
                tracing::warn!(
                    ticket = %row.ticket, channel = %row.channel, delivery = %row.id, attempt,
                    error = failure.code, retryable = failure.retryable, given_up = last,
                    "review card delivery failed"
                );
                let mut audit = vec![record(
                    kind::DELIVERY_FAILED,
                    json!({
                        "channel": row.channel,
                        "delivery": row.id.to_string(),
                        "delivery_kind": kind,
                        "attempt": attempt,
                        "retryable": failure.retryable,
                        "error": failure.code,
                        "next_attempt_at": next.map(Timestamp::as_unix_millis),
                    }),
                )];
                match next {
                    Some(due) => (
                        OutboxOutcome::Retry {
                            due,
                            error: failure.message,
                        },
                        audit,
                        Tally::Retried,
                    ),
                    None => {
                        audit.push(record(
                            kind::GAVE_UP,
                            json!({
                                "channel": row.channel,
                                "delivery": row.id.to_string(),
                                "delivery_kind": kind,
                                "attempts": attempt,
                                "error": failure.code,
                            }),
                        ));
                        (
                            OutboxOutcome::Dead {
                                error: failure.message,
                            },
                            audit,
                            Tally::Dead,
                        )
                    }
                }
            }
        };
        let write = Write {
            outbox_updates: vec![OutboxUpdate {
                id: row.id,
                attempts: entry.attempts,
                outcome,
            }],
            audit,
            ..Write::default()
        };
        match inner.store.commit(write).await {
            Ok(_) => {
                crate::failpoint::failpoint("deliver.recorded");
                Ok(tally)
            }
            Err(StoreError::OutboxConflict { .. }) => Ok(Tally::Conflict),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(base_s: u64, max_s: u64) -> Limits {
        Limits {
            delivery_backoff_base: Duration::from_secs(base_s),
            delivery_backoff_max: Duration::from_secs(max_s),
            ..Limits::default()
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let l = limits(10, 60);
        for _ in 0..200 {
            for (failed, full) in [(1, 10), (2, 20), (3, 40), (4, 60), (30, 60), (u32::MAX, 60)] {
                let w = backoff(&l, failed, None);
                let full = Duration::from_secs(full);
                assert!(
                    w >= full / 2 && w <= full,
                    "{failed}: {w:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn backoff_jitters() {
        let l = limits(10, 60);
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(&l, 3, None)).collect();
        assert!(waits.len() > 1, "fifty draws were all equal: no jitter");
    }

    #[test]
    fn backoff_honours_retry_after_up_to_a_day() {
        let l = limits(1, 2);
        let asked = Duration::from_secs(300);
        assert_eq!(backoff(&l, 1, Some(asked)), asked);
        let huge = Duration::from_secs(10 * 24 * 3600);
        assert_eq!(backoff(&l, 1, Some(huge)), MAX_RETRY_AFTER);
        let short = Duration::from_millis(1);
        assert!(backoff(&l, 1, Some(short)) >= Duration::from_millis(500));
    }

    #[test]
    fn zero_base_retries_at_once() {
        assert_eq!(backoff(&limits(0, 60), 5, None), Duration::ZERO);
    }
}
