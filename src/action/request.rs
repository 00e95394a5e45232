//! The proposed action and who proposes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::facts::{Confidence, Environment, Impact, Justification, Reversibility, Sensitivity};
use crate::id::{AgentId, PersonId};

/// Who proposes an action: the agent, and the human principal it acts for, if any.
///
/// Built by the host application (never parsed from model output) and bound to an agent
/// handle, so every proposal through that handle carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requester {
    agent: AgentId,
    principal: Option<PersonId>,
}

impl Requester {
    /// An agent acting on behalf of `principal` (a person id in the reviewer directory's
    /// namespace, or an id the directory can resolve into it), or on its own (`None`).
    pub fn new(agent: AgentId, principal: Option<PersonId>) -> Self {
        Self { agent, principal }
    }

    /// The agent.
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    /// The human the agent acts for, as given by the host.
    pub fn principal(&self) -> Option<&PersonId> {
        self.principal.as_ref()
    }
}

/// A caller-chosen key that makes retries of one proposal idempotent.
///
/// 8 to 255 bytes of printable ASCII (`!` to `~`, no spaces): long enough to be unique per
/// action (a UUID is 36), short enough to index. Keys are scoped per requester agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

/// Fewest bytes in an [`IdempotencyKey`].
pub const MIN_IDEMPOTENCY_KEY_LEN: usize = 8;
/// Most bytes in an [`IdempotencyKey`].
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl IdempotencyKey {
    /// Validates the bounds documented on the type.
    pub fn new(key: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        if key.len() < MIN_IDEMPOTENCY_KEY_LEN {
            return Err(ValidationError::IdempotencyKeyTooShort { len: key.len() });
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(ValidationError::IdempotencyKeyTooLong { len: key.len() });
        }
        if !key.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
            return Err(ValidationError::IdempotencyKeyCharacters);
        }
        Ok(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IdempotencyKey::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A dotted action kind such as `db.table.drop` or `payment.send`.
///
/// Segments are 1 to 64 of `a-z 0-9 _ -`, at most 16 segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ActionKind(String);

/// Most segments in an [`ActionKind`].
pub const MAX_KIND_SEGMENTS: usize = 16;

impl ActionKind {
    /// Validates a dotted kind: 1 to 16 segments of 1 to 64 characters from `a-z 0-9 _ -`.
    pub fn new(kind: impl Into<String>) -> Result<Self, ValidationError> {
        let kind = kind.into();
        if kind.is_empty() {
            return Err(ValidationError::EmptyKind);
        }
        let problem = if kind.split('.').count() > MAX_KIND_SEGMENTS {
            Some("more than 16 segments")
        } else if kind.split('.').any(|s| s.is_empty() || s.len() > 64) {
            Some("every dot-separated segment must be 1 to 64 characters")
        } else if !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            Some("only `a-z`, `0-9`, `_`, `-` and `.` are allowed")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(ValidationError::InvalidKind {
                kind: kind.chars().take(64).collect(),
                problem,
            }),
            None => Ok(Self(kind)),
        }
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// What the agent proposes to do. Immutable once built and validated.
///
/// Construct with [`ActionRequest::builder`] or parse with [`ActionRequest::from_json`]; both
/// validate. The requester is not part of it: see [`Requester`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)] // CONTRACT STUB: helper A makes Deserialize validating
pub struct ActionRequest {
    pub(crate) kind: ActionKind,
    pub(crate) targets: Vec<String>,
    pub(crate) parameters: Value,
    pub(crate) environment: Environment,
    pub(crate) sensitivity: Sensitivity,
    pub(crate) impact: Option<Impact>,
    pub(crate) reversibility: Reversibility,
    pub(crate) confidence: Option<Confidence>,
    pub(crate) justification: Justification,
    pub(crate) idempotency_key: IdempotencyKey,
    pub(crate) sensitive: Vec<String>,
    pub(crate) preconditions: BTreeMap<String, Value>,
    pub(crate) attributes: BTreeMap<String, Value>,
}

impl<'de> Deserialize<'de> for ActionKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ActionKind::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl ActionRequest {
    /// Starts a request for an action of `kind`, retried idempotently under `idempotency_key`.
    ///
    /// Defaults are the worst case: environment `production`, sensitivity `regulated`,
    /// reversibility `irreversible`, no stated impact (unbounded), no stated confidence (zero).
    /// Validation happens in [`ActionRequestBuilder::build`].
    pub fn builder(
        kind: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> ActionRequestBuilder {
        ActionRequestBuilder {
            kind: kind.into(),
            idempotency_key: idempotency_key.into(),
            targets: Vec::new(),
            parameters: Value::Object(Default::default()),
            environment: Environment::Production,
            sensitivity: Sensitivity::Regulated,
            impact: None,
            reversibility: Reversibility::Irreversible,
            confidence: None,
            justification: Justification::default(),
            sensitive: Vec::new(),
            preconditions: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// The action kind.
    pub fn kind(&self) -> &ActionKind {
        &self.kind
    }

    /// The resources the action touches (`postgres://prod/orders`, `vendor:acme`).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The action's parameters: always a JSON object.
    pub fn parameters(&self) -> &Value {
        &self.parameters
    }

    /// Where the action takes effect.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// The sensitivity of the data touched.
    pub fn sensitivity(&self) -> Sensitivity {
        self.sensitivity
    }

    /// The maximum impact, if the agent stated one (absent counts as unbounded in policy).
    pub fn impact(&self) -> Option<&Impact> {
        self.impact.as_ref()
    }

    /// Whether the effect can be undone.
    pub fn reversibility(&self) -> Reversibility {
        self.reversibility
    }

    /// The agent's confidence, if stated (absent counts as zero in policy).
    pub fn confidence(&self) -> Option<Confidence> {
        self.confidence
    }

    /// Why the agent wants it (not digested).
    pub fn justification(&self) -> &Justification {
        &self.justification
    }

    /// The idempotency key.
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.idempotency_key
    }

    /// JSON pointers (RFC 6901) into [`parameters`](Self::parameters) whose values are
    /// sensitive: redacted from cards, logs and the audit chain.
    pub fn sensitive_pointers(&self) -> &[String] {
        &self.sensitive
    }

    /// Preconditions: name → the value expected when execution begins.
    pub fn preconditions(&self) -> &BTreeMap<String, Value> {
        &self.preconditions
    }

    /// Custom attributes policy rules may match on.
    pub fn attributes(&self) -> &BTreeMap<String, Value> {
        &self.attributes
    }
}

/// Why an [`ActionRequest`] was refused at construction or parse time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The action kind is empty.
    #[error("action kind is empty")]
    EmptyKind,
    /// The action kind is not dotted lowercase segments.
    #[error("action kind `{kind}` is invalid: {problem}")]
    InvalidKind {
        /// The kind as given (cut to 64 characters).
        kind: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Confidence outside `0..=1`.
    #[error("confidence {0} is outside 0..=1")]
    ConfidenceOutOfRange(f64),
    /// Idempotency key shorter than 8 bytes.
    #[error("idempotency key is {len} bytes; at least 8 are required")]
    IdempotencyKeyTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// Idempotency key longer than 255 bytes.
    #[error("idempotency key is {len} bytes; at most 255 are allowed")]
    IdempotencyKeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Idempotency key with spaces, control or non-ASCII characters.
    #[error("idempotency key must be printable ASCII without spaces")]
    IdempotencyKeyCharacters,
    /// A sensitive-parameter pointer that is not valid RFC 6901 syntax.
    #[error("sensitive pointer `{pointer}` is not a valid JSON pointer")]
    BadPointer {
        /// The pointer.
        pointer: String,
    },
    /// A sensitive-parameter pointer that points at nothing in the parameters (a typo would
    /// otherwise leave a secret unredacted).
    #[error("sensitive pointer `{pointer}` matches nothing in the parameters")]
    PointerNotFound {
        /// The pointer.
        pointer: String,
    },
    /// Parameters are not a JSON object.
    #[error("parameters must be a JSON object")]
    ParametersNotObject,
    /// A field failed its own validation (environment name, amount, target, …).
    #[error("field `{field}`: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The JSON text itself is malformed, has duplicate keys, unknown fields, or is too deep.
    #[error("malformed action request: {0}")]
    Json(String),
}

/// Builds and validates an [`ActionRequest`]; see [`ActionRequest::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ActionRequestBuilder {
    kind: String,
    idempotency_key: String,
    targets: Vec<String>,
    parameters: Value,
    environment: Environment,
    sensitivity: Sensitivity,
    impact: Option<Impact>,
    reversibility: Reversibility,
    confidence: Option<f64>,
    justification: Justification,
    sensitive: Vec<String>,
    preconditions: BTreeMap<String, Value>,
    attributes: BTreeMap<String, Value>,
}

impl ActionRequestBuilder {
    /// Adds a target resource.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.targets.push(target.into());
        self
    }

    /// Sets the parameters (must be a JSON object).
    pub fn parameters(mut self, parameters: Value) -> Self {
        self.parameters = parameters;
        self
    }

    /// Sets the environment.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Sets the data sensitivity.
    pub fn sensitivity(mut self, sensitivity: Sensitivity) -> Self {
        self.sensitivity = sensitivity;
        self
    }

    /// Sets the maximum impact.
    pub fn impact(mut self, impact: Impact) -> Self {
        self.impact = Some(impact);
        self
    }

    /// Sets the reversibility.
    pub fn reversibility(mut self, reversibility: Reversibility) -> Self {
        self.reversibility = reversibility;
        self
    }

    /// Sets the agent's confidence (validated to `0..=1` by [`build`](Self::build)).
    pub fn confidence(mut self, confidence: f64) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// Sets the justification.
    pub fn justification(mut self, justification: Justification) -> Self {
        self.justification = justification;
        self
    }

    /// Sets why the action is needed (shorthand for the justification's `reason`).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.justification.reason = reason.into();
        self
    }

    /// Marks the parameter at this JSON pointer (RFC 6901) as sensitive.
    pub fn sensitive(mut self, pointer: impl Into<String>) -> Self {
        self.sensitive.push(pointer.into());
        self
    }

    /// Adds a precondition: the value `name` must have when execution begins.
    pub fn precondition(mut self, name: impl Into<String>, expected: Value) -> Self {
        self.preconditions.insert(name.into(), expected);
        self
    }

    /// Adds a custom attribute for policy rules.
    pub fn attribute(mut self, name: impl Into<String>, value: Value) -> Self {
        self.attributes.insert(name.into(), value);
        self
    }

    /// Validates and builds the request.
    pub fn build(self) -> Result<ActionRequest, ValidationError> {
        let confidence = match self.confidence {
            None => None,
            Some(c) => {
                Some(Confidence::new(c).map_err(|_| ValidationError::ConfidenceOutOfRange(c))?)
            }
        };
        let request = ActionRequest {
            kind: ActionKind::new(self.kind)?,
            targets: self.targets,
            parameters: self.parameters,
            environment: self.environment,
            sensitivity: self.sensitivity,
            impact: self.impact,
            reversibility: self.reversibility,
            confidence,
            justification: self.justification,
            idempotency_key: IdempotencyKey::new(self.idempotency_key)?,
            sensitive: self.sensitive,
            preconditions: self.preconditions,
            attributes: self.attributes,
        };
        request.validate()?;
        Ok(request)
    }
}

impl ActionRequest {
    /// Checks the invariants that span fields. CONTRACT STUB: helper A completes (pointer
    /// syntax and resolution, target bounds, text bounds, attribute and precondition names).
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if !self.parameters.is_object() {
            return Err(ValidationError::ParametersNotObject);
        }
        Ok(())
    }
}
