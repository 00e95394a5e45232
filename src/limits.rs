//! The bounds on free text and values callers hand the library besides action requests (whose
//! bounds are in [`action::limits`](crate::action::limits)).
//!
//! Everything a caller gives is stored — in the ticket row and, as salted commitments with the
//! plaintext kept beside the event, in the audit trail — and read back on every look at the
//! ticket. So every text and every value is bounded here, and a call over a bound is refused
//! with a [`LimitError`] **before anything is written** (no ticket change, no audit row, no
//! spent token): a 1 MiB error text or a value nested 130 levels deep can never make a
//! ticket, its history or a listing page unreadable.
//!
//! | what | bound |
//! |---|---|
//! | reject / request-changes feedback | [`MAX_FEEDBACK_LEN`] bytes (4 KiB) |
//! | an execution's error text (`finish`, `resolve`) | [`MAX_ERROR_LEN`] bytes (16 KiB) |
//! | a cancel, revoke, freeze, clock-rebase or erase reason | [`MAX_REASON_LEN`] bytes (1 KiB) |
//! | an execution's output (`finish`, `resolve`) | [`MAX_VALUE_DEPTH`] levels, [`MAX_VALUE_BYTES`] bytes of canonical JSON |
//! | the observed values of an action's preconditions (`begin`), taken as one object | [`MAX_VALUE_DEPTH`] levels each, [`MAX_VALUE_BYTES`] bytes of canonical JSON |
//!
//! Lengths are bytes of UTF-8. Values are bounded as the parameters of an action request are:
//! the same depth (the value itself is level 1) and the same canonical size. Observed values
//! are looked at only for the names the action expects (the others are dropped, never stored).
//!
//! [`ExecutionOutcome::check`](crate::ticket::ExecutionOutcome::check) and
//! [`Verdict::check`](crate::ticket::Verdict::check) let a host check a value before handing
//! it over.

use serde_json::Value;

use crate::action::canonical_json;

/// Longest feedback of a rejection or a change request, in bytes (4 KiB).
pub const MAX_FEEDBACK_LEN: usize = 4 * 1024;

/// Longest error text of an execution's outcome, in bytes (16 KiB). `AgentHandle::run` cuts a
/// longer error of the action at a character boundary to fit (ending it with `…`).
pub const MAX_ERROR_LEN: usize = 16 * 1024;

/// Longest reason of a cancellation, a revocation, a freeze, a clock rebase or an erasure, in
/// bytes (1 KiB).
/// (Not the action's justification: see [`action::limits::MAX_REASON_LEN`](crate::action::limits::MAX_REASON_LEN).)
pub const MAX_REASON_LEN: usize = 1024;

/// Deepest nesting of arrays and objects in an output or an observed precondition value (the
/// value itself is level 1): the bound of action parameters.
pub const MAX_VALUE_DEPTH: usize = crate::action::limits::MAX_VALUE_DEPTH;

/// Longest canonical JSON of an output, or of the observed precondition values taken as one
/// object, in bytes (64 KiB): the bound of action parameters.
pub const MAX_VALUE_BYTES: usize = crate::action::limits::MAX_CANONICAL_BYTES;

/// A text or a value over its bound. Nothing was written.
///
/// Codes ([`code`](Self::code)): [`TOO_LARGE`](crate::codes::TOO_LARGE) for a text or a value
/// too long, [`TOO_DEEP`](crate::codes::TOO_DEEP) for a value nested too deep — the codes of
/// action requests over their bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// A text longer than its bound.
    #[error("`{field}` is {len} bytes; at most {max} are accepted")]
    TextTooLong {
        /// Which text (`feedback`, `error`, `reason`).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A value nested deeper than [`MAX_VALUE_DEPTH`].
    #[error("`{field}` is nested deeper than {max} levels")]
    ValueTooDeep {
        /// Which value (`output`, `observed`).
        field: &'static str,
        /// The bound.
        max: usize,
    },
    /// A value whose canonical JSON is longer than [`MAX_VALUE_BYTES`].
    #[error("canonical `{field}` is {len} bytes; at most {max} are accepted")]
    ValueTooLarge {
        /// Which value (`output`, `observed`).
        field: &'static str,
        /// Its canonical length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl LimitError {
    /// The stable code (see [`codes`](crate::codes)): `too_large` or `too_deep`.
    pub fn code(&self) -> crate::codes::Code {
        match self {
            LimitError::TextTooLong { .. } | LimitError::ValueTooLarge { .. } => {
                crate::codes::TOO_LARGE
            }
            LimitError::ValueTooDeep { .. } => crate::codes::TOO_DEEP,
        }
    }
}

/// Checks a text against its bound.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), LimitError> {
    if text.len() > max {
        return Err(LimitError::TextTooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// Checks a value's depth (without recursion: a value built in code may be arbitrarily deep)
/// and then its canonical size.
pub(crate) fn check_value(field: &'static str, value: &Value) -> Result<(), LimitError> {
    check_depth(field, value)?;
    let len = canonical_json(value).len();
    if len > MAX_VALUE_BYTES {
        return Err(LimitError::ValueTooLarge {
            field,
            len,
            max: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks that no array or object in `value` lies deeper than [`MAX_VALUE_DEPTH`].
pub(crate) fn check_depth(field: &'static str, value: &Value) -> Result<(), LimitError> {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        let too_deep = || LimitError::ValueTooDeep {
            field,
            max: MAX_VALUE_DEPTH,
        };
        match value {
            Value::Array(items) => {
                if depth + 1 > MAX_VALUE_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) => {
                if depth + 1 > MAX_VALUE_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(map.values().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes at a character boundary, ending a cut text with `…`.
pub(crate) fn clip_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!([v]);
        }
        v
    }

    #[test]
    fn depth_is_counted_from_the_value_itself() {
        assert!(check_value("output", &nested(MAX_VALUE_DEPTH)).is_ok());
        assert_eq!(
            check_value("output", &nested(MAX_VALUE_DEPTH + 1)),
            Err(LimitError::ValueTooDeep {
                field: "output",
                max: MAX_VALUE_DEPTH
            })
        );
        assert!(check_value("output", &nested(1_000)).is_err());
        assert!(check_value("output", &json!("scalar")).is_ok());
    }

    #[test]
    fn size_is_the_canonical_length() {
        let fits = json!("x".repeat(MAX_VALUE_BYTES - 2));
        assert!(check_value("output", &fits).is_ok());
        let over = json!("x".repeat(MAX_VALUE_BYTES - 1));
        assert!(matches!(
            check_value("output", &over),
            Err(LimitError::ValueTooLarge { len, .. }) if len == MAX_VALUE_BYTES + 1
        ));
    }

    #[test]
    fn clipping_keeps_character_boundaries() {
        assert_eq!(clip_text("short", 10), "short");
        let clipped = clip_text(&"é".repeat(100), 11);
        assert!(clipped.len() <= 11 && clipped.ends_with('…'), "{clipped}");
        assert!(check_text(
            "error",
            &clip_text(&"x".repeat(20_000), MAX_ERROR_LEN),
            MAX_ERROR_LEN
        )
        .is_ok());
    }
}
