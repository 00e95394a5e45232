//! Consequence-driven, versioned policy: which actions are allowed, need review, or are denied.
//!
//! A [`Policy`] is loaded from a TOML or JSON document ([`Policy::from_toml`],
//! [`Policy::from_json`]), validated and compiled once, then rules on actions with
//! [`Policy::evaluate`] (also available through the [`PolicyEngine`] trait, so other engines
//! can be plugged in instead).
//!
//! # The document
//!
//! ```toml
//! version = "2026-11-25.1"
//! # opt-in required for allow outcomes that can reach production or irreversible actions
//! allow_unreviewed_high_risk = false
//!
//! [default]
//! review = { approvals = 1, groups = ["oncall"], deadline = "30m", approval_ttl = "15m" }
//!
//! [[rule]]
//! id = "prod-table-drop"
//! description = "Dropping a production table needs two DBAs"
//! when = { kind = ["db.table.drop", "db.*.truncate"], environment = ["production"] }
//! then.review = { approvals = 2, groups = ["dba"], deadline = "1h", approval_ttl = "30m" }
//!
//! [[rule]]
//! id = "big-payment"
//! when = { kind = "payment.*", impact_at_least = { USD = "10000", EUR = 9000 } }
//! then.deny = { reason = "payments of 10k or more go through treasury, not agents" }
//! ```
//!
//! The JSON form has the same fields (`{"version": …, "default": {"review": {…}}, "rule":
//! [{"id": …, "when": {…}, "then": {"deny": {…}}}]}`). Unknown fields are refused everywhere,
//! and so are duplicate keys.
//!
//! Top level:
//!
//! | field | meaning |
//! |---|---|
//! | `version` | required; the document's version, recorded in every ruling (1 to 128 bytes) |
//! | `default` | required; a full outcome, applied when no rule matches |
//! | `allow_unreviewed_high_risk` | optional, default `false`; see *Opt-in* below |
//! | `rule` | the rules (at most [`limits::MAX_RULES`]) |
//!
//! A rule has a unique `id` (`default` is reserved), an optional `description`, an optional
//! `when` (conditions; a rule without conditions matches every action) and a `then` outcome.
//! Every condition given must hold:
//!
//! | `when` key | holds when |
//! |---|---|
//! | `kind` | the action kind matches one of the globs (a string or a list) |
//! | `environment` | the environment is one of those listed |
//! | `sensitivity_at_least` | the data sensitivity is at least this (`public` < `internal` < `confidential` < `regulated`) |
//! | `impact_at_least` | the stated impact, in its unit, is at least the threshold for that unit (`{ USD = "10000", rows = 1000 }`; decimal strings or integers, never floats) |
//! | `reversibility` | the reversibility is one of those listed (`reversible`, `compensable`, `irreversible`) |
//! | `confidence_below` | the agent's stated confidence is below this (`0 < x <= 1`) |
//! | `attributes` | for each named custom attribute: equal to the scalar (`team = "payments"`), one of the list (`tier = ["gold", "platinum"]`), or within numeric bounds (`risk = { at_least = 5, below = 10 }`) |
//!
//! **Kind globs** are dotted segments: a literal segment matches itself, `*` matches exactly
//! one segment, and a final `**` matches zero or more remaining segments. So `payment.*`
//! matches `payment.send` but neither `payment` nor `payment.send.batch`; `*.read` matches
//! `db.read` but not `db.table.read`; `db.**` matches `db`, `db.read` and `db.table.drop`.
//! Wildcards are whole segments (`pay*` is refused).
//!
//! **Outcomes** (`then`, and `default`) have exactly one of:
//!
//! - `allow = { grant_ttl = "5m" }` — proceed without review; the grant is usable for
//!   `grant_ttl` ([`limits::MIN_GRANT_TTL`]..=[`limits::MAX_GRANT_TTL`]).
//! - `review = { approvals = 2, groups = ["dba"], deadline = "1h", approval_ttl = "30m",
//!   veto = true }` — `approvals` distinct reviewers (1 to 16), each in at least one of
//!   `groups`; unanswered by `deadline` (1 minute to 30 days) means denied; approvals lapse
//!   after `approval_ttl` (1 minute to 30 days); `veto` (default `true`) lets one eligible
//!   rejection reject.
//! - `deny = { reason = "…" }` — refused, with the reason shown to the agent.
//!
//! Durations are strings of digits and units `d`, `h`, `m`, `s` in that order: `"90s"`,
//! `"30m"`, `"1h30m"`, `"2d"`. All bounds are in [`limits`].
//!
//! # Semantics
//!
//! - **Every matching rule counts**, and rule order never matters. Outcomes combine with
//!   [`Outcome::join`]: deny beats review beats allow. Review requirements are kept as a
//!   **set**, every one of which must be met — a rule asking two from `dba` and another asking
//!   one from `finance` need both, never "either group". Deadlines and ttls take the shortest;
//!   veto is on if any contributing review has it.
//! - **The default applies only when no rule definitively matched.**
//! - **Absent facts count as the worst case**: an action with no stated impact is unbounded
//!   (every `impact_at_least` holds); one with no stated confidence has confidence zero
//!   (every `confidence_below` holds).
//! - **Fail closed.** Each condition is *true*, *false* or *unknown* (it cannot be evaluated:
//!   the action's impact is in a unit the rule has no threshold for, a custom attribute the
//!   rule tests is absent, or its value has a type the test cannot compare — a numeric
//!   threshold against a string, a string list against a number). A rule is *matched* if all
//!   its conditions are true, *unmatched* if any is false, and *unknown* otherwise. The
//!   outcome is the join of every matched rule, every unknown rule, and the default if no rule
//!   was matched. Because a join is never looser than any of its parts, and unknown rules do
//!   not keep the default out, an unevaluable rule can only make the ruling stricter than
//!   either way it could have evaluated — never looser. Unknown rules are listed in
//!   [`Ruling::matched`] with [`MatchedRule::fail_closed`] saying why.
//!
//! # Opt-in for unreviewed high-risk actions
//!
//! An `allow` default, or an `allow` rule that *can match* production or irreversible actions,
//! is refused unless the document sets `allow_unreviewed_high_risk = true`. A rule can match
//! production unless its `environment` list leaves `production` out, and can match
//! irreversible actions unless its `reversibility` list leaves `irreversible` out (so an
//! auto-allow for reads is written `environment = ["development"], reversibility =
//! ["reversible"]`).
//!
//! # Rulings
//!
//! A [`Ruling`] carries the outcome, every contributing rule with one reason per condition
//! (sorted by rule id, so rulings are deterministic), and the policy's version and SHA-256
//! content hash (of the exact source text). Empty `matched` means the default decided alone;
//! [`Ruling::decided_by_default`] also covers the fail-closed case where the default took part
//! next to rules that could not be evaluated.
//!
//! # Errors
//!
//! Loading refuses a document with [`PolicyErrors`]: every problem found, each a
//! [`PolicyError`] naming the rule id, the field path (`rule[3].then.review.approvals`) and
//! the line.

mod compile;
mod document;
mod duration;
mod error;
mod eval;
mod glob;
pub mod limits;
mod locate;
mod parts;
mod ruling;

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use error::{PolicyError, PolicyErrors};
pub use ruling::{
    MatchedRule, Outcome, PolicyEngine, PolicyHash, PolicyRef, ReviewPlan, ReviewRequirement,
    Ruling,
};

use crate::action::ActionRequest;
use compile::Compiled;
use error::ProblemKind;
use locate::SpanIndex;

/// A loaded, validated and compiled policy document. Cheap to clone (shared).
///
/// See the [module documentation](self) for the document format and the semantics.
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Compiled>,
}

#[derive(Clone, Copy)]
pub(crate) enum Format {
    Toml,
    Json,
}

impl Policy {
    /// Loads a TOML document.
    ///
    /// ```
    /// use agent_handoff::policy::Policy;
    ///
    /// let policy = Policy::from_toml(r#"
    ///     version = "1"
    ///     default.deny = { reason = "not covered by policy" }
    ///     [[rule]]
    ///     id = "payments"
    ///     when.kind = "payment.*"
    ///     then.review = { approvals = 1, groups = ["finance"], deadline = "1h", approval_ttl = "30m" }
    /// "#)?;
    /// assert_eq!(policy.version(), "1");
    /// assert_eq!(policy.rules_len(), 1);
    /// # Ok::<(), agent_handoff::policy::PolicyErrors>(())
    /// ```
    ///
    /// A refused document reports every problem found ([`PolicyErrors`]), not only the
    /// first:
    ///
    /// ```
    /// use agent_handoff::policy::Policy;
    ///
    /// let errors = Policy::from_toml(r#"
    ///     version = "1"
    ///     default.deny = { reason = "not covered by policy" }
    ///     [[rule]]
    ///     id = "payments"
    ///     when.kind = "payment.*"
    ///     then.review = { approvals = 0, groups = ["finance"], deadline = "1 hour", approval_ttl = "30m" }
    ///     [[rule]]
    ///     id = "drops"
    ///     when.knd = "db.table.drop"
    ///     then.deny = { reason = "never" }
    /// "#).unwrap_err();
    /// let fields: Vec<&str> = errors.iter().map(|e| e.field()).collect();
    /// assert_eq!(
    ///     fields,
    ///     ["rule[0].then.review.approvals", "rule[0].then.review.deadline", "rule[1].when.knd"],
    /// );
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, PolicyErrors> {
        Self::load(text, Format::Toml)
    }

    /// Loads a JSON document (the same schema as TOML).
    pub fn from_json(text: &str) -> Result<Self, PolicyErrors> {
        Self::load(text, Format::Json)
    }

    fn load(text: &str, format: Format) -> Result<Self, PolicyErrors> {
        if text.len() > limits::MAX_DOCUMENT_BYTES {
            return Err(error::build(
                ProblemKind::OutOfBounds,
                None,
                String::new(),
                None,
                format!(
                    "the document is {} bytes; at most {} are allowed",
                    text.len(),
                    limits::MAX_DOCUMENT_BYTES
                ),
            )
            .into());
        }
        let whole: Result<document::RawPolicy, PolicyError> = match format {
            Format::Toml => toml::from_str(text).map_err(|e| error::from_toml_error(text, &e)),
            Format::Json => {
                serde_json::from_str(text).map_err(|e| error::from_json_error(text, &e))
            }
        };
        let raw = match whole {
            Ok(raw) => raw,
            // Not well-formed: nothing further can be read.
            Err(e @ PolicyError::Syntax { .. }) => return Err(e.into()),
            Err(e) => {
                let (errors, more) = parts::problems(text, format, e);
                return Err(PolicyErrors::new(errors, more));
            }
        };
        let policy_ref = PolicyRef {
            version: raw.version.clone(),
            hash: PolicyHash(Sha256::digest(text.as_bytes()).into()),
        };
        match compile::compile(raw, policy_ref) {
            Ok(compiled) => Ok(Self {
                inner: Arc::new(compiled),
            }),
            Err(problems) => {
                let index = match format {
                    Format::Toml => SpanIndex::toml(text),
                    Format::Json => SpanIndex::json(text),
                };
                let (errors, more) = problems.locate(text, &index);
                Err(PolicyErrors::new(errors, more))
            }
        }
    }

    /// Rules on one action. Pure: the same policy and request always give the same ruling.
    pub fn evaluate(&self, request: &ActionRequest) -> Ruling {
        self.inner.evaluate(request)
    }

    /// The document's `version` field.
    pub fn version(&self) -> &str {
        &self.inner.policy.version
    }

    /// SHA-256 of the document's source text.
    pub fn hash(&self) -> PolicyHash {
        self.inner.policy.hash
    }

    /// How many rules the document has.
    pub fn rules_len(&self) -> usize {
        self.inner.rules.len()
    }

    /// The outcome applied when no rule matches.
    pub fn default_outcome(&self) -> &Outcome {
        &self.inner.default
    }

    /// Whether the document opted in to unreviewed high-risk `allow` outcomes.
    pub fn allows_unreviewed_high_risk(&self) -> bool {
        self.inner.allow_unreviewed_high_risk
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("version", &self.inner.policy.version)
            .field("hash", &format_args!("{}", self.inner.policy.hash))
            .field("rules", &self.inner.rules.len())
            .finish()
    }
}

impl PolicyEngine for Policy {
    fn evaluate(&self, request: &ActionRequest) -> Ruling {
        self.inner.evaluate(request)
    }

    fn policy_ref(&self) -> PolicyRef {
        self.inner.policy.clone()
    }
}
