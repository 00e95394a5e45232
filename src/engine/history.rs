//! Streams over the audit trail: the whole chain (verified or raw) and one ticket's history,
//! read from the store a page at a time, so any length is read in constant memory.
//!
//! Each is a pull stream: `while let Some(item) = stream.next().await { … }`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use super::audit::{CheckpointFeed, PAGE};
use super::error::AuditError;
use super::Handoff;
use crate::audit::{AuditEvent, RawEvent, TextRow, Verifier, VerifyError};
use crate::backend::{Store, StoreError};
use crate::id::TicketId;

/// Events a ticket's history reads per page.
const HISTORY_PAGE: usize = 256;

impl Handoff {
    /// The whole chain, each event verified before it is handed out — its link and hash from
    /// the first event on, and the chain's passage through every saved checkpoint — decoded,
    /// with its texts attached. A break ends the stream with the [`AuditError`] that
    /// [`verify_audit`](Self::verify_audit) would give (the events before it were intact);
    /// after the last event the end is checked too (a checkpoint beyond it is
    /// [`Truncated`](VerifyError::Truncated)).
    pub fn audit_stream(&self) -> AuditStream {
        AuditStream {
            store: Arc::clone(&self.inner.store),
            feed: CheckpointFeed::new(self),
            verifier: Some(Verifier::new()),
            page: VecDeque::new(),
            texts: BTreeMap::new(),
            next: 1,
            exhausted: false,
        }
    }

    /// The stored events with `seq >= from`, as stored: not verified, not decoded (to export
    /// or copy the chain).
    pub fn raw_audit_stream(&self, from: u64) -> RawAuditStream {
        RawAuditStream {
            store: Arc::clone(&self.inner.store),
            page: VecDeque::new(),
            next: from,
            done: false,
        }
    }

    /// One ticket's audit history, in chain order, with the texts of each event attached
    /// (why a reviewer rejected, what a failed `begin` expected and observed, an execution's
    /// error). Not verified: [`verify_audit`](Self::verify_audit) vouches for the chain.
    pub fn ticket_history(&self, ticket: TicketId) -> TicketHistory {
        TicketHistory {
            store: Arc::clone(&self.inner.store),
            ticket,
            page: VecDeque::new(),
            after: 0,
            done: false,
        }
    }
}

/// The audit chain, verified event by event: see [`Handoff::audit_stream`].
pub struct AuditStream {
    store: Arc<dyn Store>,
    feed: CheckpointFeed,
    /// `None` once the stream ended (after its last event or an error).
    verifier: Option<Verifier>,
    page: VecDeque<RawEvent>,
    texts: BTreeMap<u64, Vec<TextRow>>,
    next: u64,
    exhausted: bool,
}

impl fmt::Debug for AuditStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditStream")
            .field("next", &self.next)
            .field("ended", &self.verifier.is_none())
            .finish_non_exhaustive()
    }
}

impl AuditStream {
    /// The next verified event; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<AuditEvent, AuditError>> {
        let result = self.step().await;
        if !matches!(result, Some(Ok(_))) {
            self.verifier = None;
        }
        result
    }

    async fn step(&mut self) -> Option<Result<AuditEvent, AuditError>> {
        let verifier = self.verifier.as_mut()?;
        if self.page.is_empty() && !self.exhausted {
            match self.store.audit_events(self.next, PAGE).await {
                Ok(page) => {
                    self.exhausted = page.len() < PAGE;
                    if let (Some(first), Some(last)) = (page.first(), page.last()) {
                        let rows = match self.store.audit_texts(first.seq, last.seq).await {
                            Ok(rows) => rows,
                            Err(e) => return Some(Err(e.into())),
                        };
                        self.texts.clear();
                        for row in rows {
                            self.texts.entry(row.seq).or_default().push(row);
                        }
                        if let Err(e) = self.feed.up_to(verifier, last.seq).await {
                            return Some(Err(e));
                        }
                    }
                    self.page = page.into();
                }
                Err(StoreError::MisfiledAuditEvent { seq }) => {
                    return Some(Err(VerifyError::Misfiled { seq }.into()))
                }
                Err(e) => return Some(Err(e.into())),
            }
        }
        let Some(raw) = self.page.pop_front() else {
            // The end: checkpoints beyond it, and the expected heads not reached.
            let mut verifier = self.verifier.take()?;
            if let Err(e) = self.feed.finish(&mut verifier).await {
                return Some(Err(e));
            }
            return verifier.finish().err().map(|e| Err(e.into()));
        };
        if let Err(e) = verifier.push(&raw) {
            return Some(Err(e.into()));
        }
        self.next = raw.seq + 1;
        let rows = self.texts.remove(&raw.seq).unwrap_or_default();
        let seq = raw.seq;
        Some(
            AuditEvent::decode_with_texts(raw, rows)
                .map_err(|e| StoreError::Corrupt(format!("audit event {seq}: {e}")).into()),
        )
    }
}

/// The stored chain, not verified: see [`Handoff::raw_audit_stream`].
pub struct RawAuditStream {
    store: Arc<dyn Store>,
    page: VecDeque<RawEvent>,
    next: u64,
    done: bool,
}

impl fmt::Debug for RawAuditStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAuditStream")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RawAuditStream {
    /// The next stored event; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<RawEvent, StoreError>> {
        if self.page.is_empty() && !self.done {
            match self.store.audit_events(self.next, PAGE).await {
                Ok(page) => {
                    self.done = page.len() < PAGE;
                    self.page = page.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let event = self.page.pop_front()?;
        self.next = event.seq + 1;
        Some(Ok(event))
    }
}

/// One ticket's history: see [`Handoff::ticket_history`].
pub struct TicketHistory {
    store: Arc<dyn Store>,
    ticket: TicketId,
    page: VecDeque<AuditEvent>,
    after: u64,
    done: bool,
}

impl fmt::Debug for TicketHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketHistory")
            .field("ticket", &self.ticket)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl TicketHistory {
    /// The ticket's next event, with its texts; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<AuditEvent, StoreError>> {
        if self.page.is_empty() && !self.done {
            match self
                .store
                .ticket_audit_page(self.ticket, self.after, HISTORY_PAGE)
                .await
            {
                Ok(page) => {
                    self.done = page.len() < HISTORY_PAGE;
                    self.page = page.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let event = self.page.pop_front()?;
        self.after = event.seq();
        Some(Ok(event))
    }
}
