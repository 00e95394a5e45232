//! Telling reviewers: review cards, the `Notifier` port and channel adapters.
//!
//! A ticket that needs review becomes a [`ReviewCard`] ([`ReviewCard::from_ticket`]): the
//! facts the host holds the agent to (kind, targets, environment, sensitivity, impact,
//! reversibility, redacted parameters, the keyed action digest, the ruling, the deadline and
//! the approvals still needed) kept apart from the agent's own, unverified account (reason,
//! expected effect, risks, rollback plan, confidence), plus decision links. Cards never carry
//! a sensitive parameter value or a bare SHA-256, are cut to a channel's size limit with
//! visible markers ([`ReviewCard::bounded`]), and serialise to JSON for webhook bodies.
//!
//! Agent-written text is escaped for each channel's markup with [`Markup::escape`] (see
//! [`markup`] for exactly what each markup gets), so it cannot inject links, mentions or
//! formatting.
//!
//! Delivery goes through the [`Notifier`] port: one [`Delivery`] (a card, why, and a stable
//! id the channel deduplicates on) in, a [`DeliveryReceipt`] or a [`DeliveryError`] that says
//! whether a retry can help out. The outbox worker drives it; [`RecordingNotifier`] is an
//! in-memory test double.

mod card;
pub mod markup;
mod port;

pub use card::{
    AgentClaims, CardFacts, CardParameters, CardRuling, CardTooLarge, DecisionLink, ReviewCard,
    AGENT_CLAIMS_LABEL, CARD_SCHEMA, PARAMETERS_FINGERPRINT_LABEL,
};
pub use markup::Markup;
pub use port::{
    Delivery, DeliveryError, DeliveryKind, DeliveryReceipt, Notifier, RecordingNotifier,
};

#[cfg(feature = "webhook")]
pub mod webhook;

#[cfg(feature = "feishu")]
pub mod feishu;
