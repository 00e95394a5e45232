//! The audit side of the operator API: verifying the chain against every checkpoint (and one
//! kept elsewhere), taking checkpoints that never vouch for a cut or rewritten chain, and
//! erasing texts kept beside the chain.

use std::fmt;
use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;

use serde::Serialize;

use super::error::{AuditError, DecideError};
use super::operator::check_reason;
use super::Handoff;
use crate::audit::{
    kind, Actor, AuditEvent, AuditRecord, ChainHash, ChainHead, Checkpoint, CheckpointError,
    CheckpointKey, RawEvent, TextRef, TextRow, Verifier, VerifyError,
};
use crate::backend::{Credential, Store, StoreError, Write};

/// Audit page size when streaming the chain.
pub(crate) const PAGE: usize = 4096;

/// Checkpoints read per page while verifying.
const CHECKPOINT_PAGE: usize = 256;

/// The result of verifying the audit chain: what was checked, and what lowers the assurance
/// without being a proven break ([`findings`](Self::findings)). A broken chain is not a
/// report but an [`AuditError`].
///
/// `Display` prints it for a command line (one summary line, then one line per finding);
/// `Serialize` gives an operator page its JSON (findings tagged by their `code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditReport {
    /// Events verified.
    pub events: u64,
    /// The head after the last event.
    pub head: ChainHead,
    /// Size of the newest checkpoint the chain was checked against (saved in the store, or
    /// given to [`Handoff::verify_audit_against`]), if any.
    pub checkpoint_size: Option<u64>,
    /// How many checkpoints the chain was checked against: it passes through every one.
    pub checkpoints: u64,
    /// What lowers the assurance of the answer (empty: none).
    pub findings: Vec<AuditFinding>,
}

impl AuditReport {
    /// Whether the chain verified with nothing found (no finding).
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chain verified: {} events, head {} at seq {}",
            self.events, self.head.hash, self.head.seq
        )?;
        match self.checkpoint_size {
            Some(size) => write!(
                f,
                "; passes through {} checkpoint(s), the newest at size {size}",
                self.checkpoints
            )?,
            None => f.write_str("; no checkpoint checked")?,
        }
        for finding in &self.findings {
            write!(f, "\n  {}: {finding}", finding.code())?;
        }
        Ok(())
    }
}

/// Something a verification found that does not break the chain but lowers what its answer is
/// worth. Each has a stable [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditFinding {
    /// No checkpoint was checked (none saved, none given): a chain whose tail was cut, or
    /// that was rewritten wholesale with recomputed hashes, would verify just as well. Take
    /// checkpoints ([`Handoff::checkpoint`]) and keep copies outside the database
    /// ([`Handoff::verify_audit_against`]). Code: `no_checkpoint`.
    NoCheckpoint,
    /// A saved checkpoint bears no signature by the configured key (signed by a retired or an
    /// unknown key), so the chain could not be checked against it. Code:
    /// `untrusted_checkpoint`.
    UntrustedCheckpoint {
        /// Its size.
        size: u64,
        /// The names of the keys that signed it.
        signers: Vec<String>,
    },
    /// Texts kept beside events do not open the commitments the events hold: the side table
    /// was edited outside the library. Reads show them as altered and withhold their values.
    /// Code: `altered_texts`.
    AlteredTexts {
        /// How many.
        count: u64,
        /// The first one.
        first: TextRef,
    },
    /// Events hold commitments of texts the side table has no row for: rows were deleted
    /// outside the audited erase operation. Code: `missing_texts`.
    MissingTexts {
        /// How many.
        count: u64,
        /// The first one.
        first: TextRef,
    },
}

impl AuditFinding {
    /// The stable snake-case code: `no_checkpoint`, `untrusted_checkpoint`, `altered_texts`,
    /// `missing_texts`.
    pub fn code(&self) -> &'static str {
        match self {
            AuditFinding::NoCheckpoint => "no_checkpoint",
            AuditFinding::UntrustedCheckpoint { .. } => "untrusted_checkpoint",
            AuditFinding::AlteredTexts { .. } => "altered_texts",
            AuditFinding::MissingTexts { .. } => "missing_texts",
        }
    }
}

impl fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditFinding::NoCheckpoint => f.write_str(
                "no checkpoint was checked: a cut-off tail or a wholesale rewrite would verify too",
            ),
            AuditFinding::UntrustedCheckpoint { size, signers } => write!(
                f,
                "the checkpoint at size {size} is signed by no configured key (signed by `{}`)",
                signers.join("`, `")
            ),
            AuditFinding::AlteredTexts { count, first } => write!(
                f,
                "{count} text(s) kept beside the chain do not open their commitments (first: `{first}`)"
            ),
            AuditFinding::MissingTexts { count, first } => write!(
                f,
                "{count} committed text(s) have no row beside the chain (first: `{first}`)"
            ),
        }
    }
}

/// The store's checkpoints, fed to a verifier page by page as the events reach them, so the
/// chain is checked against every one in constant memory.
pub(crate) struct CheckpointFeed {
    store: Arc<dyn Store>,
    origin: String,
    key: Option<CheckpointKey>,
    /// The smallest size not read yet.
    next: u64,
    done: bool,
    /// Checkpoints checked (trusted and fed).
    pub(crate) checked: u64,
    /// Size of the newest one checked.
    pub(crate) newest: Option<u64>,
    pub(crate) findings: Vec<AuditFinding>,
}

impl CheckpointFeed {
    pub(crate) fn new(handoff: &Handoff) -> Self {
        Self {
            store: Arc::clone(&handoff.inner.store),
            origin: handoff.inner.origin.clone(),
            key: handoff.inner.checkpoint_key.clone(),
            next: 0,
            done: false,
            checked: 0,
            newest: None,
            findings: Vec::new(),
        }
    }

    /// Adds a checkpoint kept outside the store: it must verify (origin and signature).
    pub(crate) fn kept(
        &mut self,
        verifier: &mut Verifier,
        kept: &Checkpoint,
    ) -> Result<(), AuditError> {
        let key = self.key.as_ref().ok_or(AuditError::NoCheckpointKey)?;
        let head = kept.verify_for(&self.origin, std::slice::from_ref(key))?;
        self.checked_one(verifier, head);
        Ok(())
    }

    fn checked_one(&mut self, verifier: &mut Verifier, head: ChainHead) {
        verifier.add_expected_head(head);
        self.checked += 1;
        self.newest = Some(self.newest.map_or(head.seq, |n| n.max(head.seq)));
    }

    /// Feeds every saved checkpoint of size up to `seq` (call it before pushing event `seq`).
    /// One signed by a trusted key that does not verify, or of another origin, is an error;
    /// one signed by no configured key is a finding.
    pub(crate) async fn up_to(
        &mut self,
        verifier: &mut Verifier,
        seq: u64,
    ) -> Result<(), AuditError> {
        while !self.done && self.next <= seq {
            let page = self.store.checkpoints(self.next, CHECKPOINT_PAGE).await?;
            self.done = page.len() < CHECKPOINT_PAGE;
            for cp in page {
                self.next = cp.size().saturating_add(1);
                let key = self.key.as_ref().ok_or(AuditError::NoCheckpointKey)?;
                match cp.verify_for(&self.origin, std::slice::from_ref(key)) {
                    Ok(head) => self.checked_one(verifier, head),
                    Err(CheckpointError::NoTrustedSignature) => {
                        self.findings.push(AuditFinding::UntrustedCheckpoint {
                            size: cp.size(),
                            signers: cp.signers().map(str::to_owned).collect(),
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if self.next == u64::MAX {
                self.done = true;
            }
        }
        Ok(())
    }

    /// Feeds the rest (checkpoints beyond the end of the chain make it `Truncated`) and adds
    /// the finding of no checkpoint checked at all.
    pub(crate) async fn finish(&mut self, verifier: &mut Verifier) -> Result<(), AuditError> {
        self.up_to(verifier, u64::MAX).await?;
        if self.checked == 0 {
            self.findings.push(AuditFinding::NoCheckpoint);
        }
        Ok(())
    }
}

/// The texts of verified events, checked against the commitments the events hold.
#[derive(Default)]
struct TextCheck {
    altered: Option<(u64, TextRef)>,
    missing: Option<(u64, TextRef)>,
}

impl TextCheck {
    /// Checks the side-table rows of a page of verified, consecutive events.
    async fn page(&mut self, store: &dyn Store, events: &[RawEvent]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let rows = store.audit_texts(first.seq, last.seq).await?;
        let mut rows = rows.into_iter().peekable();
        for event in events {
            let mut mine: Vec<TextRow> = Vec::new();
            while let Some(row) = rows.next_if(|r| r.seq <= event.seq) {
                if row.seq == event.seq {
                    mine.push(row);
                } else {
                    // A row of no event in this page: the chain has no such event.
                    note(&mut self.altered, row.text_ref());
                }
            }
            // Only events that hold a commitment can have texts: the rest are not decoded.
            let holds = holds_commitment(&event.bytes);
            if mine.is_empty() && !holds {
                continue;
            }
            let data = AuditEvent::decode(event.clone())
                .map(|e| e.record().data.clone())
                .unwrap_or_default();
            for row in &mine {
                if !crate::audit::row_opens(row, &data) {
                    note(&mut self.altered, row.text_ref());
                }
            }
            for name in crate::audit::committed_names(&data) {
                if !mine.iter().any(|r| r.name == name) {
                    note(&mut self.missing, TextRef::new(event.seq, name));
                }
            }
        }
        for row in rows {
            note(&mut self.altered, row.text_ref());
        }
        Ok(())
    }

    fn findings(self) -> impl Iterator<Item = AuditFinding> {
        let altered = self
            .altered
            .map(|(count, first)| AuditFinding::AlteredTexts { count, first });
        let missing = self
            .missing
            .map(|(count, first)| AuditFinding::MissingTexts { count, first });
        altered.into_iter().chain(missing)
    }
}

fn note(slot: &mut Option<(u64, TextRef)>, text: TextRef) {
    match slot {
        Some((count, _)) => *count += 1,
        None => *slot = Some((1, text)),
    }
}

/// Whether an event's bytes hold a commitment member (texts are committed as
/// `{"commitment":"<hex>"}`; canonical bytes have no whitespace). The standard library's
/// substring search, so verification stays about as fast as hashing.
fn holds_commitment(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| text.contains("{\"commitment\":\""))
}

impl Handoff {
    /// Verifies the whole audit chain from the store, page by page in constant memory:
    /// every event's link and hash, and that the chain passes through **every** saved
    /// checkpoint (each of the configured origin, its signature checked with the configured
    /// key). A truncated or rewritten chain is an error naming the first bad event; the texts
    /// kept beside the chain are checked against their commitments.
    ///
    /// What verified but lowers the assurance is reported as [`AuditReport::findings`]: no
    /// checkpoint at all (then a cut tail verifies too), a checkpoint signed by no configured
    /// key, altered or missing texts. The checkpoints are read from the same database: to
    /// detect a tail cut together with its checkpoints, keep a checkpoint elsewhere and use
    /// [`verify_audit_against`](Self::verify_audit_against).
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn verify_audit(&self) -> Result<AuditReport, AuditError> {
        self.verify_chain(None).await
    }

    /// [`verify_audit`](Self::verify_audit), also against a checkpoint kept outside the
    /// database (from [`checkpoint`](Self::checkpoint), stored elsewhere): it must be of the
    /// configured origin and signed by the configured key, and the chain must pass through
    /// it — a chain whose tail was cut (with or without the checkpoint rows) is
    /// [`Truncated`](VerifyError::Truncated), a rewritten one
    /// [`Rewritten`](VerifyError::Rewritten).
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn verify_audit_against(&self, kept: &Checkpoint) -> Result<AuditReport, AuditError> {
        self.verify_chain(Some(kept)).await
    }

    async fn verify_chain(&self, kept: Option<&Checkpoint>) -> Result<AuditReport, AuditError> {
        let store = &self.inner.store;
        let mut verifier = Verifier::new();
        let mut feed = CheckpointFeed::new(self);
        if let Some(kept) = kept {
            feed.kept(&mut verifier, kept)?;
        }
        let mut texts = TextCheck::default();
        // One page is read while the one before it is hashed: the store's read of the next
        // page starts on its own thread before this one's verification runs.
        let mut from = 1;
        let mut page = store.audit_events(from, PAGE).await;
        loop {
            let events = match page {
                Ok(events) => events,
                Err(StoreError::MisfiledAuditEvent { seq }) => {
                    // The events stored before it may hold an earlier break: check them first.
                    let before = self.events_before(from, seq).await?;
                    feed.up_to(&mut verifier, seq).await?;
                    for event in &before {
                        verifier.push(event)?;
                    }
                    return Err(VerifyError::Misfiled { seq }.into());
                }
                Err(e) => return Err(e.into()),
            };
            let more = events.len() == PAGE;
            let next_from = events.last().map_or(from, |e| e.seq + 1);
            let mut next = more.then(|| Box::pin(store.audit_events(next_from, PAGE)));
            let mut early = None;
            if let Some(next) = next.as_mut() {
                // Polled once, so the read is on its way while this page is verified.
                early = match std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                };
            }
            if let Some(last) = events.last() {
                feed.up_to(&mut verifier, last.seq).await?;
            }
            for event in &events {
                verifier.push(event)?;
            }
            texts.page(store.as_ref(), &events).await?;
            let Some(next) = next else { break };
            page = match early {
                Some(result) => result,
                None => next.await,
            };
            from = next_from;
        }
        feed.finish(&mut verifier).await?;
        let summary = verifier.finish()?;
        let mut findings = feed.findings;
        findings.extend(texts.findings());
        Ok(AuditReport {
            events: summary.count,
            head: summary.head,
            checkpoint_size: feed.newest,
            checkpoints: feed.checked,
            findings,
        })
    }

    /// The stored events from `from` up to (not including) the misfiled event `misfiled`: the
    /// longest page from `from` that the store answers without reaching it. Rows may be missing
    /// (a deleted event), so the count is found by bisection, not by subtracting seqs.
    async fn events_before(&self, from: u64, misfiled: u64) -> Result<Vec<RawEvent>, StoreError> {
        let (mut ok, mut bad) = (
            Vec::new(),
            usize::try_from(misfiled - from).unwrap_or(PAGE) + 1,
        );
        let mut lo = 0;
        while lo + 1 < bad {
            let mid = lo + (bad - lo) / 2;
            match self.inner.store.audit_events(from, mid).await {
                Ok(page) => {
                    lo = mid;
                    ok = page;
                }
                Err(StoreError::MisfiledAuditEvent { .. }) => bad = mid,
                Err(e) => return Err(e),
            }
        }
        Ok(ok)
    }

    /// Signs the current chain head with the checkpoint key and saves it in the store — after
    /// verifying the chain from the newest saved checkpoint signed by that key (from the first
    /// event if there is none) up to that head: a chain that no longer passes through that
    /// checkpoint (its tail was cut and traffic went on, or it was rewritten) is refused with
    /// [`AuditError::CheckpointRefused`] and the refusal audited, so a routine checkpoint can
    /// never vouch for a truncation. A saved checkpoint that names the key but does not verify
    /// (forged), or is of another origin, is refused likewise.
    ///
    /// Return the checkpoint to keep a copy outside the database, for
    /// [`verify_audit_against`](Self::verify_audit_against).
    #[tracing::instrument(level = "info", skip_all)]
    pub async fn checkpoint(&self) -> Result<Checkpoint, AuditError> {
        let key = self
            .inner
            .checkpoint_key
            .as_ref()
            .ok_or(AuditError::NoCheckpointKey)?;
        let head = self.inner.store.audit_head().await?;
        let checked = match self.trusted_base(key).await {
            Ok(base) => self.verify_since(base, head).await.map_err(|source| {
                AuditError::CheckpointRefused {
                    previous: base.map(|b| b.seq),
                    source,
                }
            }),
            Err(e) => Err(e),
        };
        let verified = match checked {
            Ok(verified) => verified,
            Err(e @ (AuditError::CheckpointRefused { .. } | AuditError::Checkpoint(_))) => {
                tracing::error!(error = %e, "checkpoint refused");
                let (previous, seq) = match &e {
                    AuditError::CheckpointRefused { previous, source } => (*previous, source.seq()),
                    _ => (None, None),
                };
                let record = AuditRecord::new(
                    None,
                    self.inner.clock.now(),
                    kind::REFUSED,
                    Actor::System,
                    serde_json::json!({
                        "refusal": "checkpoint_refused",
                        "detail": {
                            "previous": previous,
                            "seq": seq,
                            "head": head.seq,
                            "error": e.to_string(),
                        },
                    }),
                );
                self.inner.audit_only(vec![record]).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let cp = Checkpoint::sign(&self.inner.origin, verified, key)?;
        self.inner.store.save_checkpoint(&cp).await?;
        Ok(cp)
    }

    /// The head of the newest saved checkpoint signed by `key` for this origin: the base a new
    /// checkpoint is verified from. Checkpoints signed by other keys are passed over.
    async fn trusted_base(&self, key: &CheckpointKey) -> Result<Option<ChainHead>, AuditError> {
        let origin = &self.inner.origin;
        let keys = std::slice::from_ref(key);
        let Some(latest) = self.inner.store.latest_checkpoint().await? else {
            return Ok(None);
        };
        match latest.verify_for(origin, keys) {
            Ok(head) => return Ok(Some(head)),
            Err(CheckpointError::NoTrustedSignature) => {}
            Err(e) => return Err(e.into()),
        }
        // The newest is not ours (a rotated key): the newest of ours before it.
        let (mut base, mut from) = (None, 0);
        loop {
            let page = self.inner.store.checkpoints(from, CHECKPOINT_PAGE).await?;
            for cp in &page {
                from = cp.size().saturating_add(1);
                match cp.verify_for(origin, keys) {
                    Ok(head) => base = Some(head),
                    Err(CheckpointError::NoTrustedSignature) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if page.len() < CHECKPOINT_PAGE {
                return Ok(base);
            }
        }
    }

    /// Verifies the chain from `base` (its event at `base.seq` must hash to it) up to `head`'s
    /// sequence number; returns the head verified.
    async fn verify_since(
        &self,
        base: Option<ChainHead>,
        head: ChainHead,
    ) -> Result<ChainHead, VerifyError> {
        let store = &self.inner.store;
        let read = |e: StoreError| match e {
            StoreError::MisfiledAuditEvent { seq } => VerifyError::Misfiled { seq },
            e => VerifyError::Read {
                after: 0,
                source: Box::new(e),
            },
        };
        let (mut verifier, mut from) = match base {
            None => (Verifier::new(), 1),
            Some(base) if base.seq == 0 => (Verifier::new().expect_head(base), 1),
            Some(base) => {
                if head.seq < base.seq {
                    return Err(VerifyError::Truncated {
                        checkpoint_size: base.seq,
                        chain_size: head.seq,
                    });
                }
                // Resumed just before the checkpoint's own event, trusting its stored
                // `prev_hash` only to hash it: its hash must then be the checkpoint's.
                let first = store.audit_events(base.seq, 1).await.map_err(read)?;
                let prev = first
                    .first()
                    .filter(|e| e.seq == base.seq)
                    .map_or(ChainHash::GENESIS, |e| e.prev_hash);
                let start = ChainHead {
                    seq: base.seq - 1,
                    hash: prev,
                };
                (Verifier::resume(start).expect_head(base), base.seq)
            }
        };
        'pages: loop {
            let page = store.audit_events(from, PAGE).await.map_err(read)?;
            let full = page.len() == PAGE;
            for event in &page {
                if event.seq > head.seq {
                    break 'pages;
                }
                verifier.push(event)?;
                from = event.seq + 1;
            }
            if !full {
                break;
            }
        }
        Ok(verifier.finish()?.head)
    }

    /// Erases a text kept beside an audit event (a feedback, an error, a reason, precondition
    /// values): its value and salt are dropped from the store's side table, and a
    /// `text_erased` event (filed under the same ticket, with the operator and `reason` —
    /// itself a text) records it. The event's commitment stays in the chain, which still
    /// verifies; the ticket's history shows the text as [erased](crate::audit::TextState::Erased).
    ///
    /// Needs an operator credential (a refusal is audited). Returns the sequence number of
    /// the `text_erased` event. A text that is not kept (no such event or text, or erased
    /// already) is [`DecideError::NoSuchText`]; a reason over
    /// [`MAX_REASON_LEN`](crate::limits::MAX_REASON_LEN) is refused first.
    ///
    /// The ticket row (mutable, outside the chain) keeps the current state's own copy of such
    /// a text (a failed ticket's error, a rejection's feedback).
    #[tracing::instrument(level = "info", skip_all, fields(text = %text))]
    pub async fn erase_text(
        &self,
        credential: &Credential,
        text: &TextRef,
        reason: &str,
    ) -> Result<u64, DecideError> {
        check_reason(reason)?;
        let event = self
            .inner
            .store
            .audit_events(text.seq, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == text.seq)
            .and_then(|raw| AuditEvent::decode(raw).ok())
            .ok_or_else(|| DecideError::NoSuchText(text.clone()))?;
        let ticket = event.record().ticket;
        let op = self.operator(ticket, credential).await?;
        let record = AuditRecord::new(
            ticket,
            self.inner.clock.now(),
            kind::TEXT_ERASED,
            Actor::Operator(op.person),
            serde_json::json!({
                "text": { "seq": text.seq, "name": text.name },
                "reason": serde_json::Value::Null,
            }),
        )
        .with_text("reason", reason);
        let write = Write {
            audit: vec![record],
            ..Write::default()
        }
        .with_erasure(text.clone());
        match self.inner.commit(write).await {
            Ok(committed) => Ok(committed.head.seq),
            Err(StoreError::NoSuchText(t)) => Err(DecideError::NoSuchText(t)),
            Err(e) => Err(e.into()),
        }
    }
}
