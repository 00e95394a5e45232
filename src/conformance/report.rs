//! [`Report`]: what [`run`](super::run) found, rule by rule.

use std::fmt;

use super::Skipped;

/// The outcome of every rule [`run`](super::run) ran, in order.
#[derive(Debug, Clone)]
pub struct Report {
    outcomes: Vec<RuleOutcome>,
}

/// One rule's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleOutcome {
    /// The rule (its function in [`rules`](super::rules)).
    pub rule: &'static str,
    /// What came of it.
    pub outcome: Outcome,
}

/// What came of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The store kept the rule.
    Passed,
    /// The rule did not apply to the harness.
    Skipped(Skipped),
    /// The store broke the rule.
    Failed {
        /// The panic message of the assertion that failed.
        message: String,
    },
}

impl Report {
    pub(super) fn new(outcomes: Vec<RuleOutcome>) -> Self {
        Self { outcomes }
    }

    /// Every rule's outcome, in the order run.
    pub fn outcomes(&self) -> &[RuleOutcome] {
        &self.outcomes
    }

    /// The rules the store broke.
    pub fn failed(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Failed { .. }))
    }

    /// The rules that did not apply.
    pub fn skipped(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// The rules the store kept.
    pub fn passed(&self) -> Vec<&'static str> {
        self.with(|o| matches!(o, Outcome::Passed))
    }

    /// The failure message of `rule`, if it failed.
    pub fn failure(&self, rule: &str) -> Option<&str> {
        self.outcomes.iter().find_map(|o| match &o.outcome {
            Outcome::Failed { message } if o.rule == rule => Some(message.as_str()),
            _ => None,
        })
    }

    /// Panics, listing every broken rule with its message, unless the store kept them all.
    pub fn assert_passed(&self) {
        assert!(self.failed().is_empty(), "{self}");
    }

    fn with(&self, keep: impl Fn(&Outcome) -> bool) -> Vec<&'static str> {
        self.outcomes
            .iter()
            .filter(|o| keep(&o.outcome))
            .map(|o| o.rule)
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failed();
        writeln!(
            f,
            "store conformance: {} passed, {} failed, {} skipped",
            self.passed().len(),
            failed.len(),
            self.skipped().len()
        )?;
        for o in &self.outcomes {
            match &o.outcome {
                Outcome::Passed => {}
                Outcome::Skipped(why) => writeln!(f, "  skipped {}: {why}", o.rule)?,
                Outcome::Failed { message } => writeln!(f, "  FAILED  {}: {message}", o.rule)?,
            }
        }
        Ok(())
    }
}

/// The message a panicking rule task left.
pub(super) fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
