//! The transition function.
// CONTRACT STUB — helper C implements.

use super::event::Event;
use super::state::PrincipalCheck;
use super::Ticket;
use crate::action::{ActionRequest, Requester};
use crate::audit::AuditRecord;
use crate::id::TicketId;
use crate::policy::Ruling;
use crate::timestamp::Timestamp;

/// Side effects a transition asks the driver to perform (as data).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// The ticket became pending: notify its reviewers.
    RequestReview,
    /// The ticket left pending: update or close review cards.
    CloseReview,
}

/// A successful transition.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The ticket after the event.
    pub ticket: Ticket,
    /// What to append to the audit chain, in order.
    pub audit: Vec<AuditRecord>,
    /// What the driver should do after committing.
    pub effects: Vec<Effect>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Placeholder.
    #[error("refused")]
    Placeholder,
}

/// A refusal, with what must still be recorded.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// The audit records of the refusal (always at least one).
    pub audit: Vec<AuditRecord>,
    /// A ticket change to persist despite the refusal (lazy expiry, `Stale` at begin).
    pub ticket: Option<Ticket>,
}

/// Creates a ticket for a proposal from the policy's ruling.
pub fn open(
    id: TicketId,
    requester: Requester,
    principal: PrincipalCheck,
    request: ActionRequest,
    ruling: Ruling,
    now: Timestamp,
) -> Transition {
    let _ = (id, requester, principal, request, ruling, now);
    todo!()
}

/// Applies one event.
pub fn apply(ticket: &Ticket, event: Event, now: Timestamp) -> Result<Transition, Refused> {
    let _ = (ticket, event, now);
    todo!()
}
