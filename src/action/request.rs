//! The proposed action and who proposes it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical::{
    canonical_json, clip, escape_pointer_token, parse_strict_json, CanonicalError, DebugJson,
};
use super::digest::{commitment, ActionDigest};
use super::facts::{
    Amount, Confidence, Environment, Impact, Justification, Reversibility, Sensitivity,
};
use super::limits::{
    MAX_CANONICAL_BYTES, MAX_ENTRIES, MAX_EXPECTED_EFFECT_LEN, MAX_NAME_LEN, MAX_POINTER_LEN,
    MAX_REASON_LEN, MAX_RISK_FACTORS, MAX_RISK_FACTOR_LEN, MAX_ROLLBACK_PLAN_LEN, MAX_SAFE_INTEGER,
    MAX_SENSITIVE_POINTERS, MAX_TARGETS, MAX_TARGET_LEN, MAX_UNIT_LEN, MAX_VALUE_DEPTH,
};
use crate::codes::{self, Code};
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
/// action (a UUID is 36), short enough to index. Keys are scoped per requester: the agent and
/// the principal it acts for (see [`Requester`]).
///
/// [`IdempotencyKey::new`] checks the bounds where a key is made;
/// [`ActionRequest::builder`] takes the key made so.
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

/// The key's text: so [`ActionRequest::builder`] takes a key validated where it was made.
impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
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

/// The string that replaces each sensitive value in
/// [`ActionRequest::redacted_parameters`] (and so in `Debug` output, cards and logs).
pub const REDACTED: &str = "[redacted]";

/// What the agent proposes to do. Immutable once built and validated.
///
/// Construct with [`ActionRequest::builder`] or parse with [`ActionRequest::from_json`]; both
/// validate, and so does deserialisation (a request read back from a store is checked again).
/// The requester is not part of it: see [`Requester`].
///
/// # JSON form
///
/// [`from_json`](Self::from_json) and serde read and write an object with these members
/// (only `kind` and `idempotency_key` are required; absent optional members take the
/// builder's worst-case defaults; any other member is refused):
///
/// ```json
/// {
///   "kind": "payment.send",
///   "idempotency_key": "invoice-2024-0042",
///   "targets": ["vendor:acme"],
///   "parameters": {"iban": "DE89370400440532013000", "amount": "4200.50"},
///   "sensitive": ["/iban"],
///   "environment": "production",
///   "sensitivity": "confidential",
///   "impact": {"amount": "4200.50", "unit": "USD"},
///   "reversibility": "compensable",
///   "confidence": 0.93,
///   "justification": {"reason": "pay the March invoice", "expected_effect": "",
///                     "risk_factors": [], "rollback_plan": null},
///   "preconditions": {"balance_at_least": "5000"},
///   "attributes": {"vendor_tier": "new"}
/// }
/// ```
///
/// # Validation
///
/// Beyond the kind, idempotency key and confidence checks, a request must satisfy (bounds in
/// [`limits`](super::limits)):
///
/// - parameters are a JSON object whose canonical JSON is at most 64 KiB, nested at most 32
///   levels, with no integer beyond ±(2^53 − 1);
/// - each sensitive pointer is RFC 6901 syntax (`""` or `/`-separated tokens where `~` is only
///   used in `~0` and `~1`), at most 1024 bytes, not repeated, and resolves to a value in the
///   parameters (a typo would otherwise leave a secret unredacted); at most 64 of them;
/// - 0 to 64 targets, each 1 to 1024 bytes without control characters;
/// - justification: reason and expected effect at most 4096 bytes, at most 32 risk factors of
///   at most 1024 bytes each, rollback plan at most 4096 bytes;
/// - at most 64 attributes and 64 preconditions, names 1 to 128 bytes of `A-Z a-z 0-9 _ . -`,
///   values nested at most 32 levels with no integer beyond ±(2^53 − 1), each map's canonical
///   JSON at most 64 KiB;
/// - impact unit 1 to 32 bytes of `A-Z a-z 0-9 _`;
/// - a custom environment is 1 to 64 of `a-z 0-9 - _` and none of the well-known names.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawActionRequest")]
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
    ///
    /// `idempotency_key` is text or an [`IdempotencyKey`]. A key made from host data (an order
    /// number, a job id) is best made with [`IdempotencyKey::new`], which checks its bounds
    /// ([`MIN_IDEMPOTENCY_KEY_LEN`](super::limits::MIN_IDEMPOTENCY_KEY_LEN) to
    /// [`MAX_IDEMPOTENCY_KEY_LEN`](super::limits::MAX_IDEMPOTENCY_KEY_LEN) bytes of printable
    /// ASCII) where the key is made, instead of at `build`:
    ///
    /// ```
    /// use agent_handoff::action::{ActionRequest, IdempotencyKey, ValidationError};
    ///
    /// let order = 42;
    /// assert!(matches!(
    ///     IdempotencyKey::new(format!("{order}")),
    ///     Err(ValidationError::IdempotencyKeyTooShort { len: 2 })
    /// ));
    /// let key = IdempotencyKey::new(format!("refund-order-{order:08}"))?;
    /// let request = ActionRequest::builder("payment.refund", key).build()?;
    /// assert_eq!(request.idempotency_key().as_str(), "refund-order-00000042");
    /// # Ok::<(), ValidationError>(())
    /// ```
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

    /// Parses a request from JSON text, typically model output.
    ///
    /// The text is read strictly ([`parse_strict_json`]: duplicate keys anywhere, more than
    /// 1 MiB or 64 levels are refused), members other than those of the
    /// [JSON form](Self#json-form) are refused (a model cannot smuggle in a `requester`), and
    /// the result is validated like [`ActionRequestBuilder::build`].
    ///
    /// ```
    /// use agent_handoff::action::{ActionRequest, ValidationError};
    ///
    /// let request = ActionRequest::from_json(r#"{
    ///     "kind": "db.table.drop", "idempotency_key": "drop-orders-2024",
    ///     "targets": ["postgres://prod/orders"], "reversibility": "irreversible"
    /// }"#).unwrap();
    /// assert_eq!(request.kind().as_str(), "db.table.drop");
    ///
    /// let err = ActionRequest::from_json(r#"{
    ///     "kind": "db.table.drop", "idempotency_key": "drop-orders-2024",
    ///     "requester": "admin"
    /// }"#).unwrap_err();
    /// assert_eq!(err, ValidationError::UnknownField { field: "requester".into() });
    /// ```
    pub fn from_json(text: &str) -> Result<Self, ValidationError> {
        let value = parse_strict_json(text).map_err(ValidationError::Malformed)?;
        if !value.is_object() {
            return Err(ValidationError::Json(
                "an action request must be a JSON object".into(),
            ));
        }
        check_known_fields(&value)?;
        let raw: RawActionRequest =
            serde_json::from_value(value).map_err(|e| ValidationError::Json(e.to_string()))?;
        Self::try_from(raw)
    }

    /// The action digest: SHA-256 over the canonical form of everything a ruling or a reviewer
    /// relies on (see [`ActionDigest`]).
    pub fn digest(&self) -> ActionDigest {
        ActionDigest::of(self)
    }

    /// The same request with other parameters (a reviewer's edit), validated again: the
    /// parameters must be an object within the bounds, and every sensitive pointer must still
    /// resolve in them.
    pub fn with_parameters(&self, parameters: Value) -> Result<ActionRequest, ValidationError> {
        let mut edited = self.clone();
        edited.parameters = parameters;
        edited.validate()?;
        Ok(edited)
    }

    /// The parameters with every sensitive value replaced by the string [`REDACTED`]: what
    /// cards, logs and `Debug` show.
    ///
    /// A sensitive value is replaced whole, whatever it is (a string, a number, an object), so
    /// no part of it remains; when one sensitive pointer lies inside another's value, the outer
    /// one is replaced. The pointer `""` (the whole parameters) gives the string `"[redacted]"`.
    pub fn redacted_parameters(&self) -> Value {
        let mut out = self.parameters.clone();
        for tokens in sensitive_roots(&self.sensitive) {
            if let Some(slot) = resolve_mut(&mut out, &tokens) {
                *slot = Value::from(REDACTED);
            }
        }
        out
    }

    /// The parameters with every sensitive value replaced by a salted commitment: what enters
    /// the audit chain.
    ///
    /// Each sensitive value `v` at pointer `p` (as written in
    /// [`sensitive_pointers`](Self::sensitive_pointers)) becomes
    ///
    /// ```text
    /// {"commitment": hex(HMAC-SHA256(key = salt, message = p ‖ 0x00 ‖ JCS(v)))}
    /// ```
    ///
    /// with `p` in UTF-8, `JCS(v)` the RFC 8785 canonical JSON of the value and `hex` 64
    /// lowercase digits. Nested sensitive pointers are handled as in
    /// [`redacted_parameters`](Self::redacted_parameters) (the outer value is committed).
    ///
    /// Whoever keeps the salt (a random 32 bytes per ticket, stored beside the ticket) and the
    /// value can later prove what was approved; dropping the salt (erasure on request) leaves
    /// commitments nobody can open or brute-force, and the audit chain, which hashes the
    /// commitments, still verifies.
    pub fn committed_parameters(&self, salt: &[u8; 32]) -> Value {
        let mut out = self.parameters.clone();
        for (pointer, tokens) in self.sensitive.iter().zip(decoded(&self.sensitive)) {
            let Some(tokens) = tokens else { continue };
            if has_sensitive_ancestor(&tokens, &self.sensitive) {
                continue;
            }
            let Some(value) = resolve(&self.parameters, &tokens) else {
                continue;
            };
            let sealed = serde_json::json!({ "commitment": commitment(salt, pointer, value) });
            if let Some(slot) = resolve_mut(&mut out, &tokens) {
                *slot = sealed;
            }
        }
        out
    }

    /// The action kind.
    pub fn kind(&self) -> &ActionKind {
        &self.kind
    }

    /// The resources the action touches (`postgres://prod/orders`, `vendor:acme`).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The action's parameters: always a JSON object. Sensitive values are in clear here; use
    /// [`redacted_parameters`](Self::redacted_parameters) for anything shown or logged.
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

impl fmt::Debug for ActionRequest {
    /// Shows the parameters redacted ([`ActionRequest::redacted_parameters`]), never the
    /// sensitive values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = self.redacted_parameters();
        f.debug_struct("ActionRequest")
            .field("kind", &self.kind.as_str())
            .field("targets", &self.targets)
            .field("parameters", &DebugJson(&redacted))
            .field("sensitive", &self.sensitive)
            .field("environment", &self.environment.as_str())
            .field("sensitivity", &self.sensitivity)
            .field("impact", &self.impact)
            .field("reversibility", &self.reversibility)
            .field("confidence", &self.confidence.map(Confidence::get))
            .field("justification", &self.justification)
            .field("idempotency_key", &self.idempotency_key.as_str())
            .field("preconditions", &DebugMap(&self.preconditions))
            .field("attributes", &DebugMap(&self.attributes))
            .finish()
    }
}

/// Debug-formats a name → JSON map with the values as JSON text.
struct DebugMap<'a>(&'a BTreeMap<String, Value>);

impl fmt::Debug for DebugMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, DebugJson(v))))
            .finish()
    }
}

/// Why an [`ActionRequest`] was refused at construction or parse time.
///
/// Messages quote at most 128 characters of the offending input.
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
    /// A field failed its own validation (environment, sensitivity or reversibility name,
    /// impact amount).
    #[error("field `{field}`: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The JSON has the wrong shape: a missing required member or a value of the wrong type.
    #[error("malformed action request: {0}")]
    Json(String),
    /// The JSON text itself was refused: malformed, duplicate keys, too large or too deep.
    #[error("malformed action request: {0}")]
    Malformed(CanonicalError),
    /// A member that is not part of the request's JSON form (such as `requester`).
    #[error("unknown field `{field}` in action request")]
    UnknownField {
        /// The member, with its parent for nested ones (`justification.note`).
        field: String,
    },
    /// A sensitive pointer longer than [`MAX_POINTER_LEN`] bytes.
    #[error("sensitive pointer is {len} bytes; at most {MAX_POINTER_LEN} are allowed")]
    PointerTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The same sensitive pointer twice.
    #[error("sensitive pointer `{pointer}` is listed twice")]
    DuplicatePointer {
        /// The pointer.
        pointer: String,
    },
    /// More than [`MAX_SENSITIVE_POINTERS`] sensitive pointers.
    #[error("{count} sensitive pointers; at most {MAX_SENSITIVE_POINTERS} are allowed")]
    TooManySensitivePointers {
        /// How many were given.
        count: usize,
    },
    /// More than [`MAX_TARGETS`] targets.
    #[error("{count} targets; at most {MAX_TARGETS} are allowed")]
    TooManyTargets {
        /// How many were given.
        count: usize,
    },
    /// An empty target.
    #[error("target {index} is empty")]
    EmptyTarget {
        /// Its position in `targets`.
        index: usize,
    },
    /// A target longer than [`MAX_TARGET_LEN`] bytes.
    #[error("target {index} is {len} bytes; at most {MAX_TARGET_LEN} are allowed")]
    TargetTooLong {
        /// Its position in `targets`.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A target with a control character (newlines, escapes, NUL, …).
    #[error("target {index} contains a control character")]
    TargetControlCharacter {
        /// Its position in `targets`.
        index: usize,
    },
    /// A justification text over its bound (reason, expected effect, rollback plan).
    #[error("`{field}` is {len} bytes; at most {max} are allowed")]
    TextTooLong {
        /// The field (`justification.reason`, `justification.expected_effect`,
        /// `justification.rollback_plan`).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// More than [`MAX_RISK_FACTORS`] risk factors.
    #[error("{count} risk factors; at most {MAX_RISK_FACTORS} are allowed")]
    TooManyRiskFactors {
        /// How many were given.
        count: usize,
    },
    /// A risk factor longer than [`MAX_RISK_FACTOR_LEN`] bytes.
    #[error(
        "`justification.risk_factors` item {index} is {len} bytes; at most {MAX_RISK_FACTOR_LEN} are allowed"
    )]
    RiskFactorTooLong {
        /// Its position in `risk_factors`.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// More than [`MAX_ENTRIES`] attributes or preconditions.
    #[error("{count} entries in `{field}`; at most {MAX_ENTRIES} are allowed")]
    TooManyEntries {
        /// `attributes` or `preconditions`.
        field: &'static str,
        /// How many were given.
        count: usize,
    },
    /// An attribute or precondition name that is empty, too long or has other characters than
    /// `A-Z a-z 0-9 _ . -`.
    #[error("name `{name}` in `{field}` is invalid: {problem}")]
    InvalidName {
        /// `attributes` or `preconditions`.
        field: &'static str,
        /// The name (cut to 128 characters).
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Parameters, attributes or preconditions whose canonical JSON is over
    /// [`MAX_CANONICAL_BYTES`].
    #[error("canonical `{field}` is {len} bytes; at most {MAX_CANONICAL_BYTES} are allowed")]
    TooLarge {
        /// `parameters`, `attributes` or `preconditions`.
        field: &'static str,
        /// Canonical length in bytes.
        len: usize,
    },
    /// JSON nested deeper than [`MAX_VALUE_DEPTH`] in the parameters, an attribute or a
    /// precondition.
    #[error("`{field}` is nested deeper than {MAX_VALUE_DEPTH} levels")]
    TooDeep {
        /// `parameters`, `attributes` or `preconditions`.
        field: &'static str,
    },
    /// An integer beyond ±(2^53 − 1), which other JSON implementations would read rounded.
    #[error(
        "integer at `{pointer}` in `{field}` is beyond ±9007199254740991; put large identifiers in strings"
    )]
    UnsafeInteger {
        /// `parameters`, `attributes` or `preconditions`.
        field: &'static str,
        /// JSON pointer of the integer within the field (for attributes and preconditions the
        /// first token is the name).
        pointer: String,
    },
    /// An impact unit that is empty, too long or has other characters than `A-Z a-z 0-9 _`.
    #[error("impact unit `{unit}` is invalid: {problem}")]
    InvalidUnit {
        /// The unit (cut to 128 characters).
        unit: String,
        /// What is wrong.
        problem: &'static str,
    },
}

impl ValidationError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        use ValidationError as V;
        match self {
            V::EmptyKind | V::InvalidKind { .. } => codes::INVALID_KIND,
            V::ConfidenceOutOfRange(_) => codes::INVALID_CONFIDENCE,
            V::IdempotencyKeyTooShort { .. }
            | V::IdempotencyKeyTooLong { .. }
            | V::IdempotencyKeyCharacters => codes::INVALID_IDEMPOTENCY_KEY,
            V::BadPointer { .. }
            | V::PointerNotFound { .. }
            | V::PointerTooLong { .. }
            | V::DuplicatePointer { .. }
            | V::TooManySensitivePointers { .. } => codes::INVALID_SENSITIVE_POINTER,
            V::ParametersNotObject => codes::INVALID_PARAMETERS,
            V::Field { .. } | V::InvalidName { .. } | V::InvalidUnit { .. } => codes::INVALID_FIELD,
            V::Json(_) | V::UnknownField { .. } => codes::MALFORMED_REQUEST,
            V::Malformed(e) => e.code(),
            V::TooManyTargets { .. }
            | V::EmptyTarget { .. }
            | V::TargetTooLong { .. }
            | V::TargetControlCharacter { .. } => codes::INVALID_TARGETS,
            V::TextTooLong { .. }
            | V::TooManyRiskFactors { .. }
            | V::RiskFactorTooLong { .. }
            | V::TooManyEntries { .. }
            | V::TooLarge { .. } => codes::TOO_LARGE,
            V::TooDeep { .. } => codes::TOO_DEEP,
            V::UnsafeInteger { .. } => codes::UNSAFE_INTEGER,
        }
    }
}

/// Builds and validates an [`ActionRequest`]; see [`ActionRequest::builder`].
#[derive(Clone)]
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

impl fmt::Debug for ActionRequestBuilder {
    /// Shows the parameters redacted where every sensitive pointer resolves, and hides them
    /// entirely otherwise (an unvalidated pointer might miss a secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all_resolve = decoded(&self.sensitive)
            .into_iter()
            .all(|t| t.is_some_and(|t| resolve(&self.parameters, &t).is_some()));
        let mut redacted = self.parameters.clone();
        if all_resolve {
            for tokens in sensitive_roots(&self.sensitive) {
                if let Some(slot) = resolve_mut(&mut redacted, &tokens) {
                    *slot = Value::from(REDACTED);
                }
            }
        } else {
            redacted = Value::from(REDACTED);
        }
        f.debug_struct("ActionRequestBuilder")
            .field("kind", &self.kind)
            .field("idempotency_key", &self.idempotency_key)
            .field("targets", &self.targets)
            .field("parameters", &DebugJson(&redacted))
            .field("sensitive", &self.sensitive)
            .field("environment", &self.environment.as_str())
            .field("sensitivity", &self.sensitivity)
            .field("impact", &self.impact)
            .field("reversibility", &self.reversibility)
            .field("confidence", &self.confidence)
            .field("justification", &self.justification)
            .field("preconditions", &DebugMap(&self.preconditions))
            .field("attributes", &DebugMap(&self.attributes))
            .finish()
    }
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

    /// Validates and builds the request; see [`ActionRequest`](ActionRequest#validation) for
    /// the rules.
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
    /// Checks the invariants that span fields (documented on [`ActionRequest`]). Kind,
    /// idempotency key and confidence are checked by their constructors.
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        validate_environment(&self.environment)?;
        self.validate_parameters()?;
        self.validate_sensitive()?;
        self.validate_targets()?;
        validate_justification(&self.justification)?;
        validate_entries("preconditions", &self.preconditions)?;
        validate_entries("attributes", &self.attributes)?;
        if let Some(impact) = &self.impact {
            validate_unit(&impact.unit)?;
        }
        Ok(())
    }

    fn validate_parameters(&self) -> Result<(), ValidationError> {
        if !self.parameters.is_object() {
            return Err(ValidationError::ParametersNotObject);
        }
        check_json_value("parameters", "", &self.parameters)?;
        let len = canonical_json(&self.parameters).len();
        if len > MAX_CANONICAL_BYTES {
            return Err(ValidationError::TooLarge {
                field: "parameters",
                len,
            });
        }
        Ok(())
    }

    fn validate_sensitive(&self) -> Result<(), ValidationError> {
        if self.sensitive.len() > MAX_SENSITIVE_POINTERS {
            return Err(ValidationError::TooManySensitivePointers {
                count: self.sensitive.len(),
            });
        }
        for (i, pointer) in self.sensitive.iter().enumerate() {
            if pointer.len() > MAX_POINTER_LEN {
                return Err(ValidationError::PointerTooLong { len: pointer.len() });
            }
            let Some(tokens) = pointer_tokens(pointer) else {
                return Err(ValidationError::BadPointer {
                    pointer: clip(pointer),
                });
            };
            if self.sensitive[..i].contains(pointer) {
                return Err(ValidationError::DuplicatePointer {
                    pointer: clip(pointer),
                });
            }
            if resolve(&self.parameters, &tokens).is_none() {
                return Err(ValidationError::PointerNotFound {
                    pointer: clip(pointer),
                });
            }
        }
        Ok(())
    }

    fn validate_targets(&self) -> Result<(), ValidationError> {
        if self.targets.len() > MAX_TARGETS {
            return Err(ValidationError::TooManyTargets {
                count: self.targets.len(),
            });
        }
        for (index, target) in self.targets.iter().enumerate() {
            if target.is_empty() {
                return Err(ValidationError::EmptyTarget { index });
            }
            if target.len() > MAX_TARGET_LEN {
                return Err(ValidationError::TargetTooLong {
                    index,
                    len: target.len(),
                });
            }
            if target.chars().any(char::is_control) {
                return Err(ValidationError::TargetControlCharacter { index });
            }
        }
        Ok(())
    }
}

/// A custom environment built in code must be what [`Environment::parse`] gives for its name,
/// so that its JSON form reads back the same (`Custom("production")` would read back as
/// `Production`).
fn validate_environment(environment: &Environment) -> Result<(), ValidationError> {
    if let Environment::Custom(name) = environment {
        match Environment::parse(name) {
            Ok(Environment::Custom(_)) => {}
            Ok(_) => {
                return Err(ValidationError::Field {
                    field: "environment",
                    problem: format!("`{name}` is a well-known environment, not a custom one"),
                })
            }
            Err(problem) => {
                return Err(ValidationError::Field {
                    field: "environment",
                    problem,
                })
            }
        }
    }
    Ok(())
}

fn validate_justification(j: &Justification) -> Result<(), ValidationError> {
    let text = |field: &'static str, value: &str, max: usize| {
        if value.len() > max {
            Err(ValidationError::TextTooLong {
                field,
                len: value.len(),
                max,
            })
        } else {
            Ok(())
        }
    };
    text("justification.reason", &j.reason, MAX_REASON_LEN)?;
    text(
        "justification.expected_effect",
        &j.expected_effect,
        MAX_EXPECTED_EFFECT_LEN,
    )?;
    if j.risk_factors.len() > MAX_RISK_FACTORS {
        return Err(ValidationError::TooManyRiskFactors {
            count: j.risk_factors.len(),
        });
    }
    for (index, risk) in j.risk_factors.iter().enumerate() {
        if risk.len() > MAX_RISK_FACTOR_LEN {
            return Err(ValidationError::RiskFactorTooLong {
                index,
                len: risk.len(),
            });
        }
    }
    if let Some(plan) = &j.rollback_plan {
        text("justification.rollback_plan", plan, MAX_ROLLBACK_PLAN_LEN)?;
    }
    Ok(())
}

fn validate_entries(
    field: &'static str,
    entries: &BTreeMap<String, Value>,
) -> Result<(), ValidationError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ValidationError::TooManyEntries {
            field,
            count: entries.len(),
        });
    }
    let mut size = 2; // `{` and `}`
    for (name, value) in entries {
        let problem = if name.is_empty() {
            Some("names must not be empty")
        } else if name.len() > MAX_NAME_LEN {
            Some("names are at most 128 bytes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            Some("only `A-Z`, `a-z`, `0-9`, `_`, `.` and `-` are allowed")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ValidationError::InvalidName {
                field,
                name: clip(name),
                problem,
            });
        }
        let mut prefix = String::from("/");
        escape_pointer_token(name, &mut prefix);
        check_json_value(field, &prefix, value)?;
        // `"name":value,` — names need no escaping (checked above).
        size += name.len() + 4 + canonical_json(value).len();
    }
    let len = size - usize::from(!entries.is_empty());
    if len > MAX_CANONICAL_BYTES {
        return Err(ValidationError::TooLarge { field, len });
    }
    Ok(())
}

fn validate_unit(unit: &str) -> Result<(), ValidationError> {
    let problem = if unit.is_empty() {
        Some("units must not be empty")
    } else if unit.len() > MAX_UNIT_LEN {
        Some("units are at most 32 bytes")
    } else if !unit.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Some("only `A-Z`, `a-z`, `0-9` and `_` are allowed")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ValidationError::InvalidUnit {
            unit: clip(unit),
            problem,
        }),
        None => Ok(()),
    }
}

/// Checks nesting depth and integer range of a JSON value without recursion (a value built in
/// code may be arbitrarily deep). `prefix` is the pointer of `value` within `field`.
fn check_json_value(
    field: &'static str,
    prefix: &str,
    value: &Value,
) -> Result<(), ValidationError> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    let mut unsafe_integer = false;
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => {
                if depth + 1 > MAX_VALUE_DEPTH {
                    return Err(ValidationError::TooDeep { field });
                }
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) => {
                if depth + 1 > MAX_VALUE_DEPTH {
                    return Err(ValidationError::TooDeep { field });
                }
                stack.extend(map.values().map(|v| (v, depth + 1)));
            }
            Value::Number(n) => unsafe_integer |= !is_safe_number(n),
            _ => {}
        }
    }
    if unsafe_integer {
        // The depth is bounded now, so finding the path recursively is safe.
        let mut pointer = prefix.to_owned();
        find_unsafe_integer(value, &mut pointer);
        return Err(ValidationError::UnsafeInteger { field, pointer });
    }
    Ok(())
}

fn is_safe_number(n: &serde_json::Number) -> bool {
    if let Some(u) = n.as_u64() {
        u <= MAX_SAFE_INTEGER
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs() <= MAX_SAFE_INTEGER
    } else {
        true
    }
}

/// Extends `pointer` with the path to the first unsafe integer in `value`; returns whether one
/// was found.
fn find_unsafe_integer(value: &Value, pointer: &mut String) -> bool {
    let len = pointer.len();
    match value {
        Value::Number(n) => return !is_safe_number(n),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                if find_unsafe_integer(item, pointer) {
                    return true;
                }
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                pointer.push('/');
                escape_pointer_token(key, pointer);
                if find_unsafe_integer(item, pointer) {
                    return true;
                }
                pointer.truncate(len);
            }
        }
        _ => {}
    }
    false
}

/// Decodes an RFC 6901 pointer into its reference tokens; `None` if the syntax is invalid
/// (not `""` and not starting with `/`, or a `~` not followed by `0` or `1`).
fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|raw| {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return None,
                    }
                } else {
                    token.push(c);
                }
            }
            Some(token)
        })
        .collect()
}

/// Decodes every pointer (invalid ones as `None`).
fn decoded(pointers: &[String]) -> Vec<Option<Vec<String>>> {
    pointers.iter().map(|p| pointer_tokens(p)).collect()
}

/// Whether another listed pointer designates a proper ancestor of `tokens`.
fn has_sensitive_ancestor(tokens: &[String], pointers: &[String]) -> bool {
    pointers.iter().any(|p| {
        pointer_tokens(p)
            .is_some_and(|other| other.len() < tokens.len() && tokens.starts_with(&other))
    })
}

/// The decoded sensitive pointers that have no sensitive ancestor: replacing these covers
/// every sensitive value exactly once.
fn sensitive_roots(pointers: &[String]) -> Vec<Vec<String>> {
    decoded(pointers)
        .into_iter()
        .flatten()
        .filter(|tokens| !has_sensitive_ancestor(tokens, pointers))
        .collect()
}

/// An RFC 6901 array index: `0` or digits without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    let ok = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if ok {
        token.parse().ok()
    } else {
        None
    }
}

fn resolve<'a>(root: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(root, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(array_index(token)?),
        _ => None,
    })
}

fn resolve_mut<'a>(root: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(root, |value, token| match value {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(array_index(token)?),
        _ => None,
    })
}

/// Refuses members outside the JSON form, naming the first one found, so that a model cannot
/// add fields that some later reader might honour.
fn check_known_fields(value: &Value) -> Result<(), ValidationError> {
    const TOP: &[&str] = &[
        "kind",
        "targets",
        "parameters",
        "environment",
        "sensitivity",
        "impact",
        "reversibility",
        "confidence",
        "justification",
        "idempotency_key",
        "sensitive",
        "preconditions",
        "attributes",
    ];
    const JUSTIFICATION: &[&str] = &["reason", "expected_effect", "risk_factors", "rollback_plan"];
    const IMPACT: &[&str] = &["amount", "unit"];
    fn check(value: Option<&Value>, known: &[&str], parent: &str) -> Result<(), ValidationError> {
        if let Some(Value::Object(map)) = value {
            if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
                let field = if parent.is_empty() {
                    clip(unknown)
                } else {
                    format!("{parent}.{}", clip(unknown))
                };
                return Err(ValidationError::UnknownField { field });
            }
        }
        Ok(())
    }
    check(Some(value), TOP, "")?;
    check(value.get("justification"), JUSTIFICATION, "justification")?;
    check(value.get("impact"), IMPACT, "impact")
}

/// The JSON form as read, before validation; see [`ActionRequest`](ActionRequest#json-form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionRequest {
    kind: String,
    idempotency_key: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default = "empty_object")]
    parameters: Value,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    sensitivity: Option<String>,
    #[serde(default)]
    impact: Option<RawImpact>,
    #[serde(default)]
    reversibility: Option<String>,
    #[serde(default)]
    confidence: Option<f64>,
    #[serde(default)]
    justification: Justification,
    #[serde(default)]
    sensitive: Vec<String>,
    #[serde(default)]
    preconditions: BTreeMap<String, Value>,
    #[serde(default)]
    attributes: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImpact {
    amount: Value,
    unit: String,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl TryFrom<RawActionRequest> for ActionRequest {
    type Error = ValidationError;

    fn try_from(raw: RawActionRequest) -> Result<Self, ValidationError> {
        let confidence = match raw.confidence {
            None => None,
            Some(c) => {
                Some(Confidence::new(c).map_err(|_| ValidationError::ConfidenceOutOfRange(c))?)
            }
        };
        let kind = ActionKind::new(raw.kind)?;
        let idempotency_key = IdempotencyKey::new(raw.idempotency_key)?;
        let environment = match raw.environment {
            None => Environment::Production,
            Some(name) => Environment::parse(&name).map_err(|problem| ValidationError::Field {
                field: "environment",
                problem,
            })?,
        };
        let sensitivity = match raw.sensitivity.as_deref() {
            None => Sensitivity::Regulated,
            Some("public") => Sensitivity::Public,
            Some("internal") => Sensitivity::Internal,
            Some("confidential") => Sensitivity::Confidential,
            Some("regulated") => Sensitivity::Regulated,
            Some(other) => {
                return Err(ValidationError::Field {
                    field: "sensitivity",
                    problem: format!(
                        "`{}` is not one of `public`, `internal`, `confidential`, `regulated`",
                        clip(other)
                    ),
                })
            }
        };
        let reversibility = match raw.reversibility.as_deref() {
            None => Reversibility::Irreversible,
            Some("reversible") => Reversibility::Reversible,
            Some("compensable") => Reversibility::Compensable,
            Some("irreversible") => Reversibility::Irreversible,
            Some(other) => {
                return Err(ValidationError::Field {
                    field: "reversibility",
                    problem: format!(
                        "`{}` is not one of `reversible`, `compensable`, `irreversible`",
                        clip(other)
                    ),
                })
            }
        };
        let impact = match raw.impact {
            None => None,
            Some(RawImpact { amount, unit }) => {
                let amount: Amount =
                    serde_json::from_value(amount).map_err(|e| ValidationError::Field {
                        field: "impact.amount",
                        problem: e.to_string(),
                    })?;
                Some(Impact::new(amount, unit))
            }
        };
        let request = ActionRequest {
            kind,
            targets: raw.targets,
            parameters: raw.parameters,
            environment,
            sensitivity,
            impact,
            reversibility,
            confidence,
            justification: raw.justification,
            idempotency_key,
            sensitive: raw.sensitive,
            preconditions: raw.preconditions,
            attributes: raw.attributes,
        };
        request.validate()?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_checks_do_not_recurse() {
        let mut value = Value::Null;
        for _ in 0..200_000 {
            value = Value::Array(vec![value]);
        }
        assert_eq!(
            check_json_value("parameters", "", &value),
            Err(ValidationError::TooDeep {
                field: "parameters"
            })
        );
        // serde_json drops values recursively: unwind this one by hand.
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn pointer_tokens_follow_rfc_6901() {
        let t = |p: &str| pointer_tokens(p);
        assert_eq!(t(""), Some(vec![]));
        assert_eq!(t("/"), Some(vec![String::new()]));
        assert_eq!(t("/a~1b/m~0n"), Some(vec!["a/b".into(), "m~n".into()]));
        // `~01` is `~1` decoded once, not `/`.
        assert_eq!(t("/~01"), Some(vec!["~1".into()]));
        assert_eq!(t("a"), None);
        assert_eq!(t("/~"), None);
        assert_eq!(t("/~2"), None);
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("10"), Some(10));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index("+1"), None);
        assert_eq!(array_index(""), None);
    }

    #[test]
    fn nested_sensitive_pointers_reduce_to_their_outermost() {
        let pointers: Vec<String> = ["/a/b", "/a", "/c/0", "/c/0/x", "/d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let roots = sensitive_roots(&pointers);
        assert_eq!(
            roots,
            vec![
                vec!["a".to_string()],
                vec!["c".to_string(), "0".to_string()],
                vec!["d".to_string()]
            ]
        );
    }
}
