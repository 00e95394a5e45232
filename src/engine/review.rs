//! The reviewer side: decide with a credential, list what is pending, read a ticket.

use std::collections::BTreeSet;

use tracing::Instrument;

use super::error::DecideError;
use std::time::Duration;

use super::{DriveError, Driven, Handoff, Inner};
use crate::action::ActionDigest;
use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::backend::lock;
use crate::backend::{Credential, DecisionRow, IdentityError, StoreError, TicketFilter, Write};
use crate::codes;
use crate::id::TicketId;
use crate::policy::Ruling;
use crate::ticket::{Event, Reviewer, StateName, Ticket, Verdict};
use crate::timestamp::Timestamp;

/// What a reviewer's or operator's decision did, from [`Handoff::decide`] and
/// [`Handoff::decide_with_token`]: the ticket after it, and whether it changed anything.
///
/// A reviewer repeating a vote already on record (a retried request, a second link of the
/// same verdict) is answered like the first time — idempotent — but as
/// [`Repeated`](Decided::Repeated): it is counted once.
// One value per decision, moved once: boxing the ticket would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Decided {
    /// The decision was recorded: a vote counted, an edit applied, a ticket decided.
    Recorded(Ticket),
    /// The ticket already recorded this very decision: nothing changed (through a decision
    /// token, only the token's use was recorded).
    Repeated(Ticket),
}

impl Decided {
    /// The ticket after the decision.
    pub fn ticket(&self) -> &Ticket {
        match self {
            Decided::Recorded(t) | Decided::Repeated(t) => t,
        }
    }

    /// The ticket after the decision, by value.
    pub fn into_ticket(self) -> Ticket {
        match self {
            Decided::Recorded(t) | Decided::Repeated(t) => t,
        }
    }

    /// Whether this repeated a decision already on record.
    pub fn is_repeated(&self) -> bool {
        matches!(self, Decided::Repeated(_))
    }

    pub(crate) fn of(ticket: Ticket, repeated: bool) -> Self {
        if repeated {
            Decided::Repeated(ticket)
        } else {
            Decided::Recorded(ticket)
        }
    }
}

/// A ticket with its decisions and audit history.
#[derive(Debug, Clone)]
pub struct TicketDetails {
    /// The ticket.
    pub ticket: Ticket,
    /// Every decision asked for, accepted or refused, oldest first.
    pub decisions: Vec<DecisionRow>,
    /// The ticket's audit events, in chain order, each with the texts kept beside it
    /// ([`AuditEvent::texts`]): a rejection's feedback, an execution's error or output, a
    /// cancel or revoke reason, the expected and observed precondition values of a failed
    /// `begin` — or, for a text erased or edited outside the library, which it is. For a
    /// history of any length in constant memory, see [`Handoff::ticket_history`].
    pub audit: Vec<AuditEvent>,
}

impl Handoff {
    /// Applies a reviewer's verdict. The credential is verified first (never a ready-made
    /// reviewer), then the state machine rules.
    ///
    /// `expected_version` is the ticket version the reviewer looked at; it is refused with
    /// [`DecideError::StaleVersion`] only if the action, the requirements or the state changed
    /// since (other reviewers' votes in between do not matter). Without it, the version read
    /// when the call starts stands in: a verdict that loses a race to another reviewer's vote
    /// is re-applied, but never to an action or requirements that changed under it (an edit),
    /// which is refused with [`DecideError::StaleVersion`]. Votes commute: many reviewers
    /// voting at once are all counted, none answered with a version conflict (the store
    /// re-applies a vote that lost its compare-and-swap to another, see
    /// [`Write::rebase`](crate::backend::Write::rebase)). Every refusal is recorded in the
    /// audit trail — a person in none of the ticket's groups once per ticket and minute, their
    /// further attempts counted (see [`Limits`](crate::Limits#coalesced-refusals)); a repeated
    /// identical vote is accepted once and answered with the same ticket, as
    /// [`Decided::Repeated`].
    ///
    /// A feedback over [`MAX_FEEDBACK_LEN`](crate::limits::MAX_FEEDBACK_LEN) is refused with
    /// [`DecideError::Limit`] before anything else (nothing is recorded).
    pub async fn decide(
        &self,
        ticket: TicketId,
        credential: &Credential,
        verdict: Verdict,
        expected_version: Option<u64>,
    ) -> Result<Decided, DecideError> {
        let span =
            tracing::info_span!("decide", ticket = %ticket, reviewer = tracing::field::Empty);
        let _op = crate::failpoint::operation("decide");
        async {
            verdict.check()?;
            let reviewer = self.authenticate(Some(ticket), credential).await?;
            tracing::Span::current().record("reviewer", tracing::field::display(&reviewer.person));
            self.decide_as(ticket, reviewer, verdict, expected_version)
                .await
        }
        .instrument(span)
        .await
    }

    /// Verifies a credential; a refusal is audited (as an unauthenticated actor), one row each
    /// up to [`Limits::unauthenticated_audit_per_minute`](super::Limits), then coalesced.
    pub(crate) async fn authenticate(
        &self,
        ticket: Option<TicketId>,
        credential: &Credential,
    ) -> Result<Reviewer, DecideError> {
        self.verify_credential(ticket, credential)
            .await
            .map_err(|e| match e {
                AuthError::Refused(e) => DecideError::Unauthenticated(e),
                AuthError::Store(e) => DecideError::Store(e),
            })
    }

    /// [`authenticate`](Self::authenticate) with only the errors it can have.
    pub(crate) async fn verify_credential(
        &self,
        ticket: Option<TicketId>,
        credential: &Credential,
    ) -> Result<Reviewer, AuthError> {
        match self.inner.identity.verify(credential).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let record = self.inner.refusal_record(
                    ticket,
                    Actor::Unauthenticated,
                    codes::UNAUTHENTICATED,
                    serde_json::json!({ "error": e.to_string() }),
                );
                let records = self.inner.flood_records(record);
                if !records.is_empty() {
                    self.inner
                        .audit_only(records)
                        .await
                        .map_err(AuthError::Store)?;
                }
                Err(AuthError::Refused(e))
            }
        }
    }

    pub(crate) async fn decide_as(
        &self,
        id: TicketId,
        reviewer: Reviewer,
        verdict: Verdict,
        expected_version: Option<u64>,
    ) -> Result<Decided, DecideError> {
        let inner = &self.inner;
        let verdict_name = verdict_name(&verdict).to_owned();
        let person = reviewer.person.clone();
        // What the reviewer decided on: the version the caller saw, or else the one first read
        // here. `drive` re-reads the ticket after a lost compare-and-swap; the decision may be
        // re-applied to the newer ticket only if the action and its requirements are still the
        // ones decided on (votes commute with votes, not with an edit nobody showed them).
        let mut decided_on: Option<(u64, ActionDigest, Ruling)> = None;
        let driven = inner
            .drive::<DecideError>(
                id,
                Some((Some(person.clone()), verdict_name.clone())),
                None,
                |ticket, _now| {
                    let stale = || DecideError::StaleVersion {
                        expected: expected_version
                            .or(decided_on.as_ref().map(|d| d.0))
                            .unwrap_or(ticket.version()),
                        current: ticket.version(),
                    };
                    if let Some(expected) = expected_version {
                        if expected < ticket.material_version() || expected > ticket.version() {
                            return Err(stale());
                        }
                    }
                    match &decided_on {
                        Some((_, digest, ruling))
                            if *digest != ticket.action_digest() || ruling != ticket.ruling() =>
                        {
                            return Err(stale());
                        }
                        Some(_) => {}
                        None => {
                            decided_on = Some((
                                ticket.version(),
                                ticket.action_digest(),
                                ticket.ruling().clone(),
                            ));
                        }
                    }
                    Ok(verdict_event(inner, ticket, &reviewer, &verdict))
                },
            )
            .await;
        match driven {
            Ok(Driven::Applied { ticket, repeated }) => {
                crate::failpoint::failpoint("decide.committed");
                Ok(Decided::of(ticket, repeated))
            }
            Ok(Driven::Refused(refusal)) => {
                tracing::info!(refusal = %refusal.code(), "decision refused");
                Err(DecideError::Refused(refusal))
            }
            Err(DriveError::NotFound(id)) => {
                let record = inner.refusal_record(
                    Some(id),
                    Actor::Reviewer(person),
                    codes::NOT_FOUND,
                    serde_json::Value::Null,
                );
                inner.audit_only(vec![record]).await?;
                Err(DecideError::NotFound(id))
            }
            Err(DriveError::Pre(e)) => {
                if let DecideError::StaleVersion { expected, current } = &e {
                    // Audited, and a decision like every other refusal of an authenticated
                    // reviewer.
                    let record = inner.refusal_record(
                        Some(id),
                        Actor::Reviewer(person.clone()),
                        codes::STALE_VERSION,
                        serde_json::json!({ "expected": expected, "current": current }),
                    );
                    inner
                        .store
                        .commit(Write {
                            decision: Some(
                                DecisionRow::new(id, Some(person), verdict_name, record.at)
                                    .with_refusal(codes::STALE_VERSION.as_str()),
                            ),
                            audit: vec![record],
                            ..Write::default()
                        })
                        .await?;
                }
                Err(e)
            }
            Err(DriveError::Store(StoreError::Frozen { reason, .. })) => {
                let ticket = inner
                    .store
                    .ticket(id)
                    .await?
                    .ok_or(DecideError::NotFound(id))?;
                let refused = super::freeze::Refused::Event {
                    ticket: id,
                    event: frozen_event(&verdict),
                    state: StateName::Pending.as_str(),
                    decision: Some((&person, &verdict_name)),
                };
                inner
                    .refused_frozen(ticket.requester().agent(), refused)
                    .await?;
                tracing::info!(refusal = "frozen", "decision refused");
                Err(DecideError::Frozen { reason })
            }
            Err(DriveError::Store(e)) => Err(DecideError::Store(e)),
        }
    }

    /// Pending tickets the credential's holder can review (a requirement names one of their
    /// groups), newest first.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn pending_for(&self, credential: &Credential) -> Result<Vec<Ticket>, DecideError> {
        let reviewer = self.authenticate(None, credential).await?;
        let now = self.inner.clock.now();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for group in &reviewer.groups {
            let mut filter = TicketFilter {
                states: vec![StateName::Pending],
                group: Some(group.clone()),
                limit: 500,
                ..TicketFilter::default()
            };
            loop {
                let page = self.inner.store.list_tickets(&filter).await?;
                for t in page.tickets {
                    if matches!(t.state_at(now), crate::ticket::TicketState::Pending)
                        && seen.insert(t.id())
                    {
                        out.push(t);
                    }
                }
                match page.next {
                    Some(next) => filter.after = Some(next),
                    None => break,
                }
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse((t.created_at(), t.id())));
        Ok(out)
    }

    /// A ticket with its decisions and audit history.
    #[tracing::instrument(level = "debug", skip_all, fields(ticket = %id))]
    pub async fn ticket(&self, id: TicketId) -> Result<Option<TicketDetails>, StoreError> {
        let Some(ticket) = self.inner.store.ticket(id).await? else {
            return Ok(None);
        };
        Ok(Some(TicketDetails {
            decisions: self.inner.store.decisions(id).await?,
            audit: self.inner.store.ticket_audit(id).await?,
            ticket,
        }))
    }
}

/// Why a credential could not be verified.
pub(crate) enum AuthError {
    /// The verifier refused it (audited).
    Refused(IdentityError),
    /// Recording the refusal failed.
    Store(StoreError),
}

/// Refused credentials in the current one-minute window.
#[derive(Debug, Default)]
pub(crate) struct Flood {
    window_start: Option<Timestamp>,
    written: u32,
    /// Refusals counted but not written, since `suppressed_since`.
    suppressed: u64,
    suppressed_since: Option<Timestamp>,
}

impl Inner {
    /// The audit rows to write for one refused credential: the refusal itself while the
    /// window's budget lasts (preceded by a summary of the refusals suppressed before), or
    /// nothing once it is spent (the refusal is counted for the next summary).
    pub(crate) fn flood_records(&self, record: AuditRecord) -> Vec<AuditRecord> {
        let limit = self.limits.unauthenticated_audit_per_minute;
        if limit == 0 {
            return vec![record];
        }
        let now = record.at;
        let mut flood = lock(&self.unauthenticated);
        let window_over = flood
            .window_start
            .is_none_or(|start| now >= start.saturating_add(Duration::from_secs(60)));
        if window_over {
            flood.window_start = Some(now);
            flood.written = 0;
        }
        if flood.written >= limit {
            flood.suppressed += 1;
            flood.suppressed_since.get_or_insert(now);
            return Vec::new();
        }
        flood.written += 1;
        let mut records = Vec::with_capacity(2);
        if flood.suppressed > 0 {
            let since = flood.suppressed_since.take().unwrap_or(now);
            records.push(AuditRecord {
                texts: Vec::new(),
                ticket: None,
                at: now,
                kind: crate::audit::kind::REFUSED.to_owned(),
                actor: Actor::Unauthenticated,
                data: serde_json::json!({
                    "refusal": codes::UNAUTHENTICATED,
                    "detail": {
                        "coalesced": std::mem::take(&mut flood.suppressed),
                        "since": since.as_unix_millis(),
                    },
                }),
            });
        }
        records.push(record);
        records
    }

    /// The summary row of refusals counted but not written, once their window is over at
    /// `now` (`None` while it lasts, or if nothing was counted). Without it, the count of a
    /// flood that stopped would wait for a refusal that may never come.
    pub(crate) fn flood_summary_due(&self, now: Timestamp) -> Option<AuditRecord> {
        let mut flood = lock(&self.unauthenticated);
        let over = flood
            .window_start
            .is_none_or(|start| now >= start.saturating_add(Duration::from_secs(60)));
        if flood.suppressed == 0 || !over {
            return None;
        }
        let since = flood.suppressed_since.take().unwrap_or(now);
        Some(AuditRecord {
            texts: Vec::new(),
            ticket: None,
            at: now,
            kind: crate::audit::kind::REFUSED.to_owned(),
            actor: Actor::Unauthenticated,
            data: serde_json::json!({
                "refusal": codes::UNAUTHENTICATED,
                "detail": {
                    "coalesced": std::mem::take(&mut flood.suppressed),
                    "since": since.as_unix_millis(),
                },
            }),
        })
    }
}

/// The machine event for a reviewer's verdict on `ticket`. An approval with edits is re-ruled
/// here (the machine applies the stricter ruling); invalid edited parameters are passed on for
/// the machine to refuse and audit.
pub(crate) fn verdict_event(
    inner: &Inner,
    ticket: &Ticket,
    reviewer: &Reviewer,
    verdict: &Verdict,
) -> Event {
    match verdict {
        Verdict::ApproveWithEdits { parameters } => {
            let ruling = ticket
                .request()
                .with_parameters(parameters.clone())
                .map(|edited| inner.policy.evaluate(&edited))
                .ok();
            match ruling {
                Some(ruling) => Event::Edit {
                    reviewer: reviewer.clone(),
                    parameters: parameters.clone(),
                    ruling,
                },
                // Invalid parameters: let the machine refuse (and audit) it.
                None => Event::Edit {
                    reviewer: reviewer.clone(),
                    parameters: parameters.clone(),
                    ruling: ticket.ruling().clone(),
                },
            }
        }
        other => Event::Vote {
            reviewer: reviewer.clone(),
            verdict: other.clone(),
        },
    }
}

/// The machine event of a verdict, as refusal rows name it.
pub(crate) fn frozen_event(v: &Verdict) -> &'static str {
    match v {
        Verdict::ApproveWithEdits { .. } => "edit",
        _ => "vote",
    }
}

/// The name of a verdict in decision rows and audit records.
pub(crate) fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::ApproveWithEdits { .. } => "approve_with_edits",
        Verdict::Reject { .. } => "reject",
        Verdict::RequestChanges { .. } => "request_changes",
    }
}
