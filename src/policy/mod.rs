//! Consequence-driven, versioned policy: which actions are allowed, need review, or are denied.
// CONTRACT STUB — helper B owns this module (except ruling.rs types, which others use).

mod ruling;

pub use ruling::{
    MatchedRule, Outcome, PolicyEngine, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement,
    Ruling,
};

use crate::action::ActionRequest;

/// A loaded, validated and compiled policy document.
#[derive(Debug, Clone)]
pub struct Policy {}

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Placeholder.
    #[error("invalid policy")]
    Invalid,
}

impl Policy {
    /// Loads a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let _ = text;
        todo!()
    }

    /// Loads a JSON document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let _ = text;
        todo!()
    }
}

impl PolicyEngine for Policy {
    fn evaluate(&self, request: &ActionRequest) -> Ruling {
        let _ = request;
        todo!()
    }

    fn policy_ref(&self) -> PolicyRef {
        todo!()
    }
}
