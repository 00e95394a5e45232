//! Why a policy document was refused, and where.

use std::fmt;

use super::locate::{self, FieldPath, SpanIndex};

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
    let index = SpanIndex::toml(text);
    let syntax = toml::de::DeTable::parse(text).is_err();
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
        let index = SpanIndex::json(text);
        // serde_json's position is the last character it read: inside the offending key or
        // value, or the closing brace of an object missing a field.
        let offset = locate::offset_of_line_column(text, error.line(), error.column());
        let path = index.path_at(offset).unwrap_or_default();
        let rule = path.rule_index().and_then(|i| index.rule_id(i));
        (Some(error.line()), path, rule)
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
