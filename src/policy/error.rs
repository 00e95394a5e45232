//! Why a policy document was refused, and where.

use std::fmt;

use super::locate::{self, FieldPath, SpanIndex};
use crate::codes::{self, Code};

/// Why a policy document was refused.
///
/// Every variant says where: the id of the rule concerned (`None` for document-level fields,
/// or when the rule has no readable id), the dotted field path (`rule[3].then.review.approvals`;
/// empty when the whole document is concerned) and the 1-based line in the source text when it
/// is known (always for TOML and JSON that is well-formed; for malformed JSON, where the parser
/// says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text is not well-formed TOML or JSON (including duplicate keys in TOML).
    #[error("malformed policy document{}: {message}", Where(.rule, .field, .line))]
    Syntax {
        /// The rule concerned, if known.
        rule: Option<String>,
        /// The field path, if known.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A field the schema does not know (typos are refused, never ignored).
    #[error("unknown field{}: {message}", Where(.rule, .field, .line))]
    UnknownField {
        /// The rule concerned, if known.
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A required field is missing, a field is repeated, or a value has the wrong type.
    #[error("wrong shape{}: {message}", Where(.rule, .field, .line))]
    Schema {
        /// The rule concerned, if known.
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A value is malformed: a duration, group or environment name, rule id, amount, an
    /// outcome with not exactly one of `allow` / `review` / `deny`, an empty list.
    #[error("invalid value{}: {message}", Where(.rule, .field, .line))]
    InvalidValue {
        /// The rule concerned, if known.
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An action-kind glob is malformed.
    #[error("invalid kind glob{}: {message}", Where(.rule, .field, .line))]
    InvalidGlob {
        /// The rule concerned.
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A number, duration or size is outside its documented bounds.
    #[error("out of bounds{}: {message}", Where(.rule, .field, .line))]
    OutOfBounds {
        /// The rule concerned, if any.
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Two rules share an id (or a rule uses the reserved id `default`).
    #[error("duplicate rule id{}: {message}", Where(.rule, .field, .line))]
    DuplicateRuleId {
        /// The repeated id.
        rule: Option<String>,
        /// The field path of the second use.
        field: String,
        /// 1-based line of the second use.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// An `allow` default, or an `allow` rule that can match production or irreversible
    /// actions, without `allow_unreviewed_high_risk = true`.
    #[error("unreviewed high-risk allow{}: {message}", Where(.rule, .field, .line))]
    HighRiskAllow {
        /// The rule concerned (`None` for the default).
        rule: Option<String>,
        /// The field path.
        field: String,
        /// 1-based line.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// Formats ` in rule `x` at `field` (line n)`, leaving out what is unknown.
struct Where<'a>(&'a Option<String>, &'a String, &'a Option<usize>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = self.0 {
            write!(f, " in rule `{rule}`")?;
        }
        if !self.1.is_empty() {
            write!(f, " at `{}`", self.1)?;
        }
        if let Some(line) = self.2 {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl PolicyError {
    fn parts(&self) -> (&Option<String>, &String, &Option<usize>, &String) {
        match self {
            PolicyError::Syntax {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::UnknownField {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::Schema {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::InvalidValue {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::InvalidGlob {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::OutOfBounds {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::DuplicateRuleId {
                rule,
                field,
                line,
                message,
            }
            | PolicyError::HighRiskAllow {
                rule,
                field,
                line,
                message,
            } => (rule, field, line, message),
        }
    }

    /// The id of the rule concerned, if any and known.
    pub fn rule(&self) -> Option<&str> {
        self.parts().0.as_deref()
    }

    /// The dotted field path (`rule[3].then.review.approvals`); empty for the whole document.
    pub fn field(&self) -> &str {
        self.parts().1
    }

    /// The 1-based line in the source text, when known.
    pub fn line(&self) -> Option<usize> {
        *self.parts().2
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        self.parts().3
    }

    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        match self {
            PolicyError::Syntax { .. } => codes::POLICY_SYNTAX,
            PolicyError::UnknownField { .. } => codes::POLICY_UNKNOWN_FIELD,
            PolicyError::Schema { .. } => codes::POLICY_SCHEMA,
            PolicyError::InvalidValue { .. } => codes::POLICY_INVALID_VALUE,
            PolicyError::InvalidGlob { .. } => codes::POLICY_INVALID_GLOB,
            PolicyError::OutOfBounds { .. } => codes::POLICY_OUT_OF_BOUNDS,
            PolicyError::DuplicateRuleId { .. } => codes::POLICY_DUPLICATE_RULE_ID,
            PolicyError::HighRiskAllow { .. } => codes::POLICY_HIGH_RISK_ALLOW,
        }
    }
}

/// Every problem found in a refused policy document, in document order: at least one, at most
/// [`MAX_REPORTED_PROBLEMS`](super::limits::MAX_REPORTED_PROBLEMS) (then [`more`](Self::more)
/// counts the rest).
///
/// Each part of a document is checked on its own — the top-level fields, each rule, each
/// condition, outcome and field within them — so a mistake in one part does not hide the
/// mistakes in another. Within one part whose shape is wrong (an unknown field, a missing one,
/// a value of the wrong type) only the first shape mistake is found, and a document that is
/// not well-formed TOML or JSON reports its first syntax error alone.
///
/// `Display` lists every problem, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
    more: usize,
}

impl PolicyErrors {
    /// Sorts `errors` into document order. `errors` must not be empty.
    pub(crate) fn new(mut errors: Vec<PolicyError>, more: usize) -> Self {
        debug_assert!(!errors.is_empty());
        // Document-level problems without a line first, then by line; stable otherwise.
        errors.sort_by_key(|e| e.line().unwrap_or(0));
        let mut unique: Vec<PolicyError> = Vec::with_capacity(errors.len());
        for e in errors {
            if !unique.contains(&e) {
                unique.push(e);
            }
        }
        Self {
            errors: unique,
            more,
        }
    }

    /// The first problem in document order.
    pub fn first(&self) -> &PolicyError {
        &self.errors[0]
    }

    /// Every problem reported, in document order.
    pub fn as_slice(&self) -> &[PolicyError] {
        &self.errors
    }

    /// Every problem reported, in document order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.errors.iter()
    }

    /// The problems reported, in document order.
    pub fn into_vec(self) -> Vec<PolicyError> {
        self.errors
    }

    /// How many further problems were found but not reported (beyond
    /// [`MAX_REPORTED_PROBLEMS`](super::limits::MAX_REPORTED_PROBLEMS)).
    pub fn more(&self) -> usize {
        self.more
    }

    /// The stable code of the refusal as a whole
    /// ([`POLICY_INVALID`](crate::codes::POLICY_INVALID)); each problem has its own
    /// ([`PolicyError::code`]).
    pub fn code(&self) -> Code {
        codes::POLICY_INVALID
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        Self::new(vec![e], 0)
    }
}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errors.len() == 1 && self.more == 0 {
            return write!(f, "{}", self.errors[0]);
        }
        write!(
            f,
            "{} problems in the policy document:",
            self.errors.len() + self.more
        )?;
        for e in &self.errors {
            write!(f, "\n- {e}")?;
        }
        if self.more > 0 {
            write!(f, "\n- … and {} more", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.first())
    }
}

/// Problems found so far. Compilation goes on after a problem, so one load reports them all;
/// each check of one field answers a `Result` with its one problem, and
/// [`check`](Self::check) records it and goes on. A section added to the document compiles
/// the same way: take `&mut Problems`, record, go on.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<Problem>,
    /// Problems beyond [`MAX_REPORTED_PROBLEMS`](super::limits::MAX_REPORTED_PROBLEMS).
    more: usize,
}

impl Problems {
    /// Records a problem of `kind` at `path`.
    pub(crate) fn add(&mut self, kind: ProblemKind, path: &FieldPath, message: impl Into<String>) {
        self.push(Problem::new(kind, path.clone(), message));
    }

    /// Records a problem.
    pub(crate) fn push(&mut self, problem: Problem) {
        if self.list.len() < super::limits::MAX_REPORTED_PROBLEMS {
            self.list.push(problem);
        } else {
            self.more += 1;
        }
    }

    /// The value of a check, or `None` once its problem is recorded.
    pub(crate) fn check<T>(&mut self, checked: Result<T, Box<Problem>>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(problem) => {
                self.push(*problem);
                None
            }
        }
    }

    /// How many problems were found (reported or not).
    pub(crate) fn len(&self) -> usize {
        self.list.len() + self.more
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Names rule `id` in the problems recorded since [`len`](Self::len) was `since`, where
    /// the compiler did not name one.
    pub(crate) fn name_rule_since(&mut self, since: usize, id: &str) {
        let since = since.min(self.list.len());
        for p in &mut self.list[since..] {
            if p.rule.is_none() {
                p.rule = Some(id.to_owned());
            }
        }
    }

    /// The problems, located in `text` through `index`, and the count of those not reported.
    pub(crate) fn locate(self, text: &str, index: &SpanIndex) -> (Vec<PolicyError>, usize) {
        let located = self
            .list
            .into_iter()
            .map(|p| p.locate(text, index))
            .collect();
        (located, self.more)
    }
}

/// Which [`PolicyError`] variant a problem becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    Syntax,
    UnknownField,
    Schema,
    InvalidValue,
    InvalidGlob,
    OutOfBounds,
    DuplicateRuleId,
    HighRiskAllow,
}

/// A problem found before its line is known.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) kind: ProblemKind,
    pub(crate) path: FieldPath,
    /// The rule id, when the compiler knows it; otherwise read from the source by index.
    pub(crate) rule: Option<String>,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(kind: ProblemKind, path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            kind,
            path,
            rule: None,
            message: message.into(),
        }
    }

    /// Turns the problem into an error, finding rule id and line through `index`.
    pub(crate) fn locate(self, text: &str, index: &SpanIndex) -> PolicyError {
        let rule = self
            .rule
            .or_else(|| self.path.rule_index().and_then(|i| index.rule_id(i)));
        let line = index
            .offset_of(&self.path)
            .map(|o| locate::line_of(text, o));
        build(self.kind, rule, self.path.to_string(), line, self.message)
    }
}

pub(crate) fn build(
    kind: ProblemKind,
    rule: Option<String>,
    field: String,
    line: Option<usize>,
    message: String,
) -> PolicyError {
    match kind {
        ProblemKind::Syntax => PolicyError::Syntax {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::UnknownField => PolicyError::UnknownField {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::Schema => PolicyError::Schema {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::InvalidValue => PolicyError::InvalidValue {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::InvalidGlob => PolicyError::InvalidGlob {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::OutOfBounds => PolicyError::OutOfBounds {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::DuplicateRuleId => PolicyError::DuplicateRuleId {
            rule,
            field,
            line,
            message,
        },
        ProblemKind::HighRiskAllow => PolicyError::HighRiskAllow {
            rule,
            field,
            line,
            message,
        },
    }
}

/// Classifies a serde error message: unknown fields, shape errors, and value errors raised by
/// our own deserialisers.
pub(crate) fn classify_serde(message: &str) -> ProblemKind {
    const SHAPE: [&str; 6] = [
        "invalid type",
        "missing field",
        "duplicate field",
        "invalid length",
        "invalid value",
        "duplicate key",
    ];
    if message.starts_with("unknown field") {
        ProblemKind::UnknownField
    } else if SHAPE.iter().any(|p| message.starts_with(p)) {
        ProblemKind::Schema
    } else {
        ProblemKind::InvalidValue
    }
}

/// A TOML error from `toml::from_str`, located.
pub(crate) fn from_toml_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let syntax = toml::de::DeTable::parse(text).is_err();
    toml_error(text, &SpanIndex::toml(text), error, syntax)
}

/// A TOML error (whose span, if any, is an offset into `text`), located through `index`.
pub(crate) fn toml_error(
    text: &str,
    index: &SpanIndex,
    error: &toml::de::Error,
    syntax: bool,
) -> PolicyError {
    let message = error.message().trim_end().to_owned();
    let kind = if syntax {
        ProblemKind::Syntax
    } else {
        classify_serde(&message)
    };
    let offset = error.span().map(|s| s.start);
    let path = offset.and_then(|o| index.path_at(o)).unwrap_or_default();
    let rule = path.rule_index().and_then(|i| index.rule_id(i));
    let line = offset.map(|o| locate::line_of(text, o));
    build(kind, rule, path.to_string(), line, message)
}

/// A JSON error from `serde_json::from_str`, located.
pub(crate) fn from_json_error(text: &str, error: &serde_json::Error) -> PolicyError {
    let index = if error.line() > 0 {
        SpanIndex::json(text)
    } else {
        SpanIndex::default()
    };
    json_error(text, &index, error, 0)
}

/// A JSON error from reading `text[base..]`, located in `text` through `index`.
pub(crate) fn json_error(
    text: &str,
    index: &SpanIndex,
    error: &serde_json::Error,
    base: usize,
) -> PolicyError {
    use serde_json::error::Category;
    let kind = match error.classify() {
        Category::Data => classify_serde(&error.to_string()),
        Category::Syntax | Category::Eof | Category::Io => ProblemKind::Syntax,
    };
    // serde_json appends " at line L column C" to its messages; the position is reported
    // separately here.
    let full = error.to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) if error.line() > 0 => full[..cut].to_owned(),
        _ => full,
    };
    let (line, path, rule) = if error.line() > 0 {
        // serde_json's position is the last character it read: inside the offending key or
        // value, or the closing brace of an object missing a field.
        let part = text.get(base..).unwrap_or_default();
        let offset = base + locate::offset_of_line_column(part, error.line(), error.column());
        let path = index.path_at(offset).unwrap_or_default();
        let rule = path.rule_index().and_then(|i| index.rule_id(i));
        (Some(locate::line_of(text, offset)), path, rule)
    } else {
        (None, FieldPath::root(), None)
    };
    build(kind, rule, path.to_string(), line, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_rule_field_and_line() {
        let e = PolicyError::OutOfBounds {
            rule: Some("prod-drop".into()),
            field: "rule[2].then.review.approvals".into(),
            line: Some(14),
            message: "approvals must be 1 to 16, got 0".into(),
        };
        assert_eq!(
            e.to_string(),
            "out of bounds in rule `prod-drop` at `rule[2].then.review.approvals` (line 14): approvals must be 1 to 16, got 0"
        );
        assert_eq!(e.rule(), Some("prod-drop"));
        assert_eq!(e.field(), "rule[2].then.review.approvals");
        assert_eq!(e.line(), Some(14));
        let doc = PolicyError::Syntax {
            rule: None,
            field: String::new(),
            line: None,
            message: "eof".into(),
        };
        assert_eq!(doc.to_string(), "malformed policy document: eof");
    }

    #[test]
    fn serde_messages_are_classified() {
        assert_eq!(
            classify_serde("unknown field `x`, expected `y`"),
            ProblemKind::UnknownField
        );
        assert_eq!(classify_serde("missing field `then`"), ProblemKind::Schema);
        assert_eq!(
            classify_serde("invalid type: string \"x\", expected u32"),
            ProblemKind::Schema
        );
        assert_eq!(
            classify_serde("amount `x` is not a non-negative decimal"),
            ProblemKind::InvalidValue
        );
    }
}
