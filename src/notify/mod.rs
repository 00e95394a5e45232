//! Telling reviewers: review cards, the `Notifier` port and channel adapters.

mod card;
pub mod markup;

pub use card::{
    AgentClaims, CardFacts, CardParameters, CardRuling, CardTooLarge, DecisionLink, ReviewCard,
    AGENT_CLAIMS_LABEL, CARD_SCHEMA, PARAMETERS_FINGERPRINT_LABEL,
};
pub use markup::Markup;
