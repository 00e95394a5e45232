//! RFC 8785 (JSON Canonicalization Scheme, "JCS") canonical JSON, and a strict JSON parser.
//!
//! The rules are documented on [`parse_strict_json`] and [`canonical_json`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;

use serde_json::{Map, Number, Value};

use crate::codes::{self, Code};

/// Largest JSON text [`parse_strict_json`] accepts, in bytes (1 MiB).
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// Deepest nesting of arrays and objects [`parse_strict_json`] accepts; the outermost array or
/// object is level 1.
pub const MAX_JSON_DEPTH: usize = 64;

/// Longest object key or JSON pointer quoted in an error, in characters; longer ones are cut
/// and end with `…`.
const MAX_QUOTED_CHARS: usize = 128;

/// Why JSON text was refused.
///
/// Lines and columns are 1-based; columns count characters (Unicode scalar values), not bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CanonicalError {
    /// The text is not JSON (RFC 8259).
    #[error("invalid JSON at line {line}, column {column}: {problem}")]
    Syntax {
        /// Line of the offending character.
        line: usize,
        /// Column of the offending character.
        column: usize,
        /// What is wrong.
        problem: &'static str,
    },
    /// An object has the same key twice.
    #[error("duplicate key `{key}` in the object at `{object}` (line {line}, column {column})")]
    DuplicateKey {
        /// The repeated key (cut to 128 characters).
        key: String,
        /// JSON pointer (RFC 6901) of the object holding it; `""` is the top level.
        object: String,
        /// Line of the second occurrence.
        line: usize,
        /// Column of the second occurrence.
        column: usize,
    },
    /// Arrays and objects are nested deeper than [`MAX_JSON_DEPTH`].
    #[error("JSON nested deeper than {max} levels at line {line}, column {column}")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Line of the first array or object past the limit.
        line: usize,
        /// Column of the first array or object past the limit.
        column: usize,
    },
    /// The text is longer than [`MAX_JSON_BYTES`].
    #[error("JSON text is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A number too large in magnitude for an IEEE 754 double.
    #[error("number `{number}` at line {line}, column {column} does not fit a double")]
    NumberOutOfRange {
        /// The number as written (cut to 128 characters).
        number: String,
        /// Line of the number.
        line: usize,
        /// Column of the number.
        column: usize,
    },
}

impl CanonicalError {
    /// The stable code (see [`codes`](crate::codes)).
    pub fn code(&self) -> Code {
        codes::MALFORMED_JSON
    }
}

/// Parses JSON text strictly.
///
/// Reads RFC 8259 JSON into a [`serde_json::Value`] and refuses what a
/// lenient parser would silently accept and what would let two parties disagree about a
/// document:
///
/// - **duplicate object keys** ([`CanonicalError::DuplicateKey`]): with duplicates, one reader
///   keeps the first value and another the last, so a reviewer could see one amount while an
///   executor uses another;
/// - documents larger than [`MAX_JSON_BYTES`] (1 MiB) ([`CanonicalError::TooLarge`]);
/// - arrays and objects nested more than [`MAX_JSON_DEPTH`] (64) levels
///   ([`CanonicalError::TooDeep`]; the top-level array or object is level 1);
/// - numbers whose magnitude does not fit an IEEE 754 double (`1e400`)
///   ([`CanonicalError::NumberOutOfRange`]);
/// - everything RFC 8259 forbids: a byte-order mark, comments, trailing commas, single quotes,
///   unescaped control characters in strings, unpaired UTF-16 surrogates in `\u` escapes,
///   leading zeros, `NaN`/`Infinity`, and any text after the value.
///
/// Numbers are read the way `serde_json` reads them (an integer literal that fits `u64` or
/// `i64` stays an integer, `-0` and every other number becomes an `f64`), except that decimal
/// to binary conversion is always correctly rounded (Rust's `str::parse::<f64>`), so the same
/// text gives the same double in every language and the canonical form is reproducible.
///
/// ```
/// use agent_handoff::action::{parse_strict_json, CanonicalError};
///
/// let value = parse_strict_json(r#"{"amount": "4200.50", "to": "acme"}"#).unwrap();
/// assert_eq!(value["to"], "acme");
///
/// let err = parse_strict_json(r#"{"to": "acme", "to": "mallory"}"#).unwrap_err();
/// assert!(matches!(err, CanonicalError::DuplicateKey { ref key, .. } if key == "to"));
/// ```
pub fn parse_strict_json(text: &str) -> Result<Value, CanonicalError> {
    if text.len() > MAX_JSON_BYTES {
        return Err(CanonicalError::TooLarge {
            len: text.len(),
            max: MAX_JSON_BYTES,
        });
    }
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos < parser.bytes.len() {
        return Err(parser.syntax(parser.pos, "unexpected text after the JSON value"));
    }
    Ok(value)
}

/// Writes the RFC 8785 canonical form of `value`:
///
/// - no whitespace;
/// - object members sorted by the UTF-16 code units of their keys (not by UTF-8 bytes, not by
///   locale), recursively; array order is kept;
/// - strings: `"` and `\` escaped as `\"` and `\\`; U+0008, U+0009, U+000A, U+000C, U+000D as
///   `\b`, `\t`, `\n`, `\f`, `\r`; the other characters below U+0020 as `\u00xx` with
///   lowercase hex; every other character (including `/`, U+007F and non-ASCII) as its UTF-8
///   bytes, unescaped and not Unicode-normalised;
/// - `null`, `true`, `false` as themselves;
/// - numbers as ECMAScript's `Number.prototype.toString` prints the double: the shortest digits
///   that read back to the same double (ties between two equally short and equally close
///   candidates go to the even digit), plain notation for `1e-7 <= |x| < 1e21` (`0.000001`,
///   `999999999999999900000`), exponent notation with an explicit sign otherwise (`1e-7`,
///   `1e+21`, `1.7976931348623157e+308`), and `-0` as `0`.
///
/// Two cases fall outside RFC 8785, which models every number as a double:
///
/// - **Integers beyond ±(2^53 − 1)** held as `u64`/`i64` are written exactly, in plain decimal.
///   A double cannot hold them, so a JCS implementation that reads them as doubles would print
///   a rounded value. Writing them exactly keeps the canonical form injective (two different
///   integers never share a canonical form, hence never a digest). Documents that must be
///   reproduced by other JCS implementations should keep integers within
///   ±9007199254740991 (I-JSON, RFC 7493); [`ActionRequest`](super::ActionRequest) validation
///   refuses larger ones.
/// - **Non-finite numbers** cannot occur: a `serde_json::Value` cannot hold NaN or an infinity
///   (`serde_json` turns them into `null` on construction), and the strict parser refuses
///   numbers that overflow a double.
///
/// The writer is iterative, so a deeply nested value built in code cannot overflow the stack.
///
/// ```
/// use agent_handoff::action::{canonical_json, parse_strict_json};
///
/// let value = parse_strict_json(r#"{ "b": [1E30, 4.50, 2e-3], "a": "\u20ac" }"#).unwrap();
/// assert_eq!(canonical_json(&value), r#"{"a":"€","b":[1e+30,4.5,0.002]}"#.as_bytes());
/// ```
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    write_canonical(value, &mut out);
    out
}

/// Appends the canonical form of `value` to `out` (see [`canonical_json`]).
pub(crate) fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    enum Task<'a> {
        Value(&'a Value),
        Key(&'a str),
        Byte(u8),
    }
    let mut stack = vec![Task::Value(value)];
    while let Some(task) = stack.pop() {
        match task {
            Task::Byte(b) => out.push(b),
            Task::Key(key) => {
                write_string(key, out);
                out.push(b':');
            }
            Task::Value(value) => match value {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Number(n) => write_number(n, out),
                Value::String(s) => write_string(s, out),
                Value::Array(items) => {
                    out.push(b'[');
                    stack.push(Task::Byte(b']'));
                    for (i, item) in items.iter().enumerate().rev() {
                        stack.push(Task::Value(item));
                        if i > 0 {
                            stack.push(Task::Byte(b','));
                        }
                    }
                }
                Value::Object(map) => {
                    out.push(b'{');
                    stack.push(Task::Byte(b'}'));
                    let mut members: Vec<(&String, &Value)> = map.iter().collect();
                    members.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
                    for (i, (key, item)) in members.into_iter().enumerate().rev() {
                        stack.push(Task::Value(item));
                        stack.push(Task::Key(key));
                        if i > 0 {
                            stack.push(Task::Byte(b','));
                        }
                    }
                }
            },
        }
    }
}

/// Appends the canonical form of a name → value map (an object) to `out`.
pub(crate) fn write_canonical_map(map: &BTreeMap<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| cmp_utf16(a.0, b.0));
    out.push(b'{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_canonical(value, out);
    }
    out.push(b'}');
}

/// Orders strings by their UTF-16 code units, as RFC 8785 sorts object keys.
///
/// UTF-16 order equals code point order except that U+E000..=U+FFFF sort after every
/// supplementary character (whose first code unit is a surrogate, U+D800..=U+DBFF), so those
/// are lifted above U+10FFFF before comparing.
fn cmp_utf16(a: &str, b: &str) -> Ordering {
    fn key(c: char) -> u32 {
        let c = u32::from(c);
        if (0xE000..=0xFFFF).contains(&c) {
            c + 0x20_0000
        } else {
            c
        }
    }
    a.chars().map(key).cmp(b.chars().map(key))
}

/// Writes a JSON string as RFC 8785 escapes it.
pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0A => b"\\n",
            0x0C => b"\\f",
            0x0D => b"\\r",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes a number: integers exactly, doubles as ECMAScript prints them.
fn write_number(n: &Number, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        out.extend_from_slice(es6_number(f).as_bytes());
    }
}

/// `Number.prototype.toString(x)` (ECMA-262, Number::toString with radix 10) for a finite
/// double; non-finite input (which a `serde_json::Value` cannot hold) gives `null`.
pub(crate) fn es6_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    let (digits, n) = shortest_digits(x.abs());
    let k = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    let mut out = String::with_capacity(digits.len() + 8);
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        // An integer below 1e21: the digits, then zeros.
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        // The decimal point falls inside the digits.
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        // A small fraction: `0.` and up to five zeros before the digits.
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        // Exponent notation with an explicit sign.
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

/// The shortest decimal digits `s` (no leading or trailing zeros) and exponent `n` with
/// `x = 0.s × 10^n` read back as `x`; among equally short candidates the closest to `x`, and
/// on an exact tie the one with an even last digit, as ECMA-262 recommends and V8 does.
///
/// Rust's `{:e}` already gives the shortest, closest digits but resolves an exact tie upwards
/// (`1424953923781206.25` → `…206.3`, where ECMAScript prints `…206.2`), so ties are detected
/// from the exact binary value and resolved to the even neighbour here.
fn shortest_digits(x: f64) -> (String, i32) {
    let (digits, n) = split_exp(&format!("{x:e}"));
    // A tie needs a k-digit neighbour at half a decimal unit to read back as x, so the unit
    // is at most one ULP <= x * 2^-52 < 10^n * 2^-52, hence 10^k > 2^52 and k >= 16.
    // (Subnormals have exact expansions of hundreds of digits and never tie.)
    if digits.len() < 16 {
        return (digits, n);
    }
    let k = digits.len() as i64;
    // A tie means x's exact decimal expansion has exactly k + 1 <= 18 significant digits, the
    // last a 5. Such an x prints exactly with 18 digits, so the cheap 18-digit rendering
    // rules out all other cases; only candidates that pass it get the exact expansion.
    let looks_tied = |text: &str| {
        let (d, dn) = split_exp(text);
        let upto = i64::from(dn) - i64::from(n) + k + 1;
        (upto >= 1 && d.len() as i64 == upto && d.ends_with('5')).then_some((d, dn))
    };
    if looks_tied(&format!("{x:.17e}")).is_none() {
        return (digits, n);
    }
    // A double's exact decimal expansion has at most 767 significant digits; with 800 digits
    // after the point `{:.800e}` is exact (trailing zeros only), so no rounding happens.
    let Some((exact, exact_n)) = looks_tied(&format!("{x:.800e}")) else {
        return (digits, n);
    };
    // x lies exactly halfway between two k-digit neighbours: `lower` and `lower + 1` units.
    let lower = &exact[..exact.len() - 1];
    let lower_odd = lower.as_bytes().last().is_some_and(|d| (d - b'0') % 2 == 1);
    let candidate = if lower_odd {
        increment_digits(lower)
    } else {
        lower.to_owned()
    };
    let candidate_n = i64::from(exact_n) + (candidate.len() as i64 - lower.len() as i64);
    // Place the candidate digits back at their scale and keep them only if they read back as x.
    let exponent = candidate_n - candidate.len() as i64;
    let reads_back = format!("{candidate}e{exponent}")
        .parse::<f64>()
        .is_ok_and(|y| y.to_bits() == x.to_bits());
    let trimmed = candidate.trim_end_matches('0');
    if reads_back && !trimmed.is_empty() && trimmed.len() <= digits.len() {
        let candidate_n = i32::try_from(candidate_n).unwrap_or(n);
        (trimmed.to_owned(), candidate_n)
    } else {
        (digits, n)
    }
}

/// Splits Rust's `{:e}` output `d.ddde±x` into the significant digits without trailing zeros
/// and the exponent `n` such that the value is `0.digits × 10^n`.
fn split_exp(text: &str) -> (String, i32) {
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    (digits, exp + 1)
}

/// Adds one to a string of decimal digits (`"129"` → `"130"`, `"99"` → `"100"`).
fn increment_digits(digits: &str) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    let mut out = String::with_capacity(bytes.len() + 1);
    out.push('1');
    out.push_str(&String::from_utf8_lossy(&bytes));
    out
}

/// Cuts text quoted in an error message to [`MAX_QUOTED_CHARS`] characters.
pub(crate) fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED_CHARS {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX_QUOTED_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// Escapes one JSON pointer reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub(crate) fn escape_pointer_token(token: &str, out: &mut String) {
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// A recursive-descent parser over the bytes of valid UTF-8 text; recursion is bounded by
/// [`MAX_JSON_DEPTH`].
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    /// Line and column (1-based, in characters) of a byte offset.
    fn line_column(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.bytes.len());
        let before = &self.bytes[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Count characters: every byte that does not continue a UTF-8 sequence starts one.
        let column = before[line_start..]
            .iter()
            .filter(|&&b| (b & 0xC0) != 0x80)
            .count()
            + 1;
        (line, column)
    }

    fn syntax(&self, at: usize, problem: &'static str) -> CanonicalError {
        let (line, column) = self.line_column(at);
        CanonicalError::Syntax {
            line,
            column,
            problem,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Parses one value starting at the current position (no leading whitespace); `depth` is
    /// the number of arrays and objects already open around it.
    fn value(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        match self.peek() {
            None => Err(self.syntax(self.pos, "unexpected end of input, expected a value")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(0xEF) if self.pos == 0 && self.bytes.starts_with(&[0xEF, 0xBB, 0xBF]) => {
                Err(self.syntax(self.pos, "a byte-order mark is not allowed"))
            }
            Some(_) => Err(self.syntax(self.pos, "expected a value")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, CanonicalError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.syntax(self.pos, "expected a value"))
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_JSON_DEPTH {
            let (line, column) = self.line_column(self.pos);
            return Err(CanonicalError::TooDeep {
                max: MAX_JSON_DEPTH,
                line,
                column,
            });
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        self.check_depth(depth)?;
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            let index = items.len();
            let item = self
                .value(depth)
                .map_err(|e| prefix_object_path(e, &index.to_string()))?;
            items.push(item);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.syntax(self.pos, "unexpected end of input in an array")),
                Some(_) => return Err(self.syntax(self.pos, "expected `,` or `]` in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, CanonicalError> {
        self.check_depth(depth)?;
        self.pos += 1; // '{'
        let mut map = Map::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_whitespace();
            let key_at = self.pos;
            match self.peek() {
                Some(b'"') => {}
                None => return Err(self.syntax(self.pos, "unexpected end of input in an object")),
                Some(_) => return Err(self.syntax(self.pos, "expected a string key in an object")),
            }
            let key = self.string()?;
            if map.contains_key(&key) {
                let (line, column) = self.line_column(key_at);
                return Err(CanonicalError::DuplicateKey {
                    key: clip(&key),
                    object: String::new(),
                    line,
                    column,
                });
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.syntax(self.pos, "expected `:` after an object key"));
            }
            self.pos += 1;
            self.skip_whitespace();
            let item = self.value(depth).map_err(|e| prefix_object_path(e, &key))?;
            map.insert(key, item);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                None => return Err(self.syntax(self.pos, "unexpected end of input in an object")),
                Some(_) => return Err(self.syntax(self.pos, "expected `,` or `}` in an object")),
            }
        }
    }

    /// Parses a string literal at the current position (which holds `"`).
    fn string(&mut self) -> Result<String, CanonicalError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.syntax(self.pos, "unexpected end of input in a string"));
            };
            match b {
                b'"' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(&self.text[run_start..self.pos]);
                    self.escape(&mut out)?;
                    run_start = self.pos;
                }
                0x00..=0x1F => {
                    return Err(
                        self.syntax(self.pos, "control characters must be escaped in strings")
                    );
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Parses one escape sequence (the current position holds `\`) and appends its character.
    fn escape(&mut self, out: &mut String) -> Result<(), CanonicalError> {
        let at = self.pos;
        self.pos += 1;
        let Some(b) = self.peek() else {
            return Err(self.syntax(self.pos, "unexpected end of input in a string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(self.syntax(at, "unpaired UTF-16 surrogate in an escape"));
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.syntax(at, "unpaired UTF-16 surrogate in an escape"));
                        }
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code).ok_or_else(|| self.syntax(at, "invalid escape"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.syntax(at, "unpaired UTF-16 surrogate in an escape"));
                    }
                    code => {
                        char::from_u32(code).ok_or_else(|| self.syntax(at, "invalid escape"))?
                    }
                }
            }
            _ => return Err(self.syntax(at, "invalid escape in a string")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, CanonicalError> {
        let mut code = 0u32;
        for _ in 0..4 {
            let digit = self
                .peek()
                .and_then(|b| char::from(b).to_digit(16))
                .ok_or_else(|| self.syntax(self.pos, "`\\u` must be followed by 4 hex digits"))?;
            code = code * 16 + digit;
            self.pos += 1;
        }
        Ok(code)
    }

    /// Parses a number by the RFC 8259 grammar
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<Value, CanonicalError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(self.syntax(self.pos, "numbers must not have leading zeros"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax(self.pos, "expected a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax(self.pos, "expected a digit after the decimal point"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax(self.pos, "expected a digit in the exponent"));
            }
            self.digits();
        }
        let literal = &self.text[start..self.pos];
        if integer {
            if negative {
                if let Ok(i) = literal.parse::<i64>() {
                    // `-0` is read as the double -0.0, as serde_json does.
                    if i != 0 {
                        return Ok(Value::Number(i.into()));
                    }
                }
            } else if let Ok(u) = literal.parse::<u64>() {
                return Ok(Value::Number(u.into()));
            }
        }
        let parsed = literal.parse::<f64>().ok();
        match parsed.and_then(Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => {
                let (line, column) = self.line_column(start);
                Err(CanonicalError::NumberOutOfRange {
                    number: clip(literal),
                    line,
                    column,
                })
            }
        }
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Adds one reference token in front of the object path of a [`CanonicalError::DuplicateKey`]
/// as the error travels out of nested values.
fn prefix_object_path(error: CanonicalError, token: &str) -> CanonicalError {
    match error {
        CanonicalError::DuplicateKey {
            key,
            object,
            line,
            column,
        } => {
            let mut path = String::with_capacity(token.len() + object.len() + 1);
            path.push('/');
            escape_pointer_token(token, &mut path);
            path.push_str(&object);
            CanonicalError::DuplicateKey {
                key,
                object: path,
                line,
                column,
            }
        }
        other => other,
    }
}

/// Debug-formats a value as its canonical JSON text, for `Debug` impls that show JSON.
pub(crate) struct DebugJson<'a>(pub(crate) &'a Value);

impl fmt::Debug for DebugJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&canonical_json(self.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonical_json(&parse_strict_json(text).unwrap())).unwrap()
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
    const APPENDIX_B: &[(u64, &str)] = &[
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
    ];

    #[test]
    fn numbers_follow_rfc_8785_appendix_b() {
        for &(bits, expected) in APPENDIX_B {
            let x = f64::from_bits(bits);
            assert_eq!(es6_number(x), expected, "bits {bits:016x}");
            // Through a Value too (integers that fit u64/i64 are not doubles, skip -0/0).
            if let Some(n) = Number::from_f64(x) {
                let mut out = Vec::new();
                write_number(&n, &mut out);
                assert_eq!(out, expected.as_bytes(), "bits {bits:016x}");
            }
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the literals are the RFC's input text
    fn numbers_use_es6_layout_at_the_boundaries() {
        for (x, expected) in [
            (1e30, "1e+30"),
            (4.50, "4.5"),
            (2e-3, "0.002"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (333333333.33333329, "333333333.3333333"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123e18, "123000000000000000000"),
            (1.25e21, "1.25e+21"),
            (1e-27, "1e-27"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (100.0, "100"),
            (-0.0, "0"),
            (5e-324, "5e-324"),
        ] {
            assert_eq!(es6_number(x), expected, "{x:e}");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the literals are exact binary values
    fn exact_ties_resolve_to_the_even_digit() {
        // 1424953923781206.25 is halfway between …206.2 and …206.3 (17 digits either way).
        assert_eq!(es6_number(1424953923781206.25), "1424953923781206.2");
        // 1424953923781206.75 is halfway between …206.7 and …206.8: the even one is .8.
        assert_eq!(es6_number(1424953923781206.75), "1424953923781206.8");
        assert_eq!(es6_number(-1424953923781206.25), "-1424953923781206.2");
    }

    #[test]
    fn integers_print_exactly_even_beyond_double_precision() {
        assert_eq!(canon("9007199254740993"), "9007199254740993");
        assert_eq!(canon("18446744073709551615"), "18446744073709551615");
        assert_eq!(canon("-9223372036854775808"), "-9223372036854775808");
        // Beyond u64 the parser falls back to a double, like serde_json.
        assert_eq!(canon("18446744073709551616"), "18446744073709552000");
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("1.0"), "1");
        assert_eq!(canon("1E2"), "100");
    }

    #[test]
    fn cyberphone_values() {
        let input = "{\n  \"numbers\": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001],\n  \"escaping\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n  \"literals\": [null, true, false]\n}";
        assert_eq!(
            canon(input),
            "{\"escaping\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\",\"literals\":[null,true,false],\"numbers\":[1e+30,4.5,333333333.3333333,0.002,1e-27]}"
        );
    }

    #[test]
    fn cyberphone_weird_keys_sort_by_utf16() {
        let input = "{\n  \"\\u20ac\": \"Euro Sign\",\n  \"1\": \"One\",\n  \"\\u0080\": \"Control\\u007f\",\n  \"\\ud83d\\ude02\": \"Smiley\",\n  \"\\u00f6\": \"Latin Small Letter O With Diaeresis\",\n  \"\\ufb33\": \"Hebrew Letter Dalet With Dagesh\",\n  \"</script>\": \"Browser Challenge\"\n}\n";
        assert_eq!(
            canon(input),
            "{\"1\":\"One\",\"</script>\":\"Browser Challenge\",\"\u{80}\":\"Control\u{7f}\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😂\":\"Smiley\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn cyberphone_structures_arrays_french_unicode() {
        assert_eq!(
            canon("{\n  \"1\": {\"f\": {\"f\": \"hi\",\"F\": 5} ,\"\\n\": 56.0},\n  \"10\": { },\n  \"\": \"empty\",\n  \"a\": { },\n  \"111\": [ { } ],\n  \"A\": { }\n}"),
            "{\"\":\"empty\",\"1\":{\"\\n\":56,\"f\":{\"F\":5,\"f\":\"hi\"}},\"10\":{},\"111\":[{}],\"A\":{},\"a\":{}}"
        );
        assert_eq!(
            canon("[\n  56,\n  {\n    \"d\": true,\n    \"10\": null,\n    \"1\": [ ]\n  }\n]"),
            "[56,{\"1\":[],\"10\":null,\"d\":true}]"
        );
        assert_eq!(
            canon("{\n  \"peach\": \"This sorting order\",\n  \"péché\": \"is wrong according to French\",\n  \"pêche\": \"but canonicalization MUST\",\n  \"sin\":   \"ingnore locale\"\n}\n"),
            "{\"peach\":\"This sorting order\",\"péché\":\"is wrong according to French\",\"pêche\":\"but canonicalization MUST\",\"sin\":\"ingnore locale\"}"
        );
        assert_eq!(
            canon("{\n  \"Unnormalized Unicode\":\"\\u1e0d\\u0307\"\n}\n"),
            "{\"Unnormalized Unicode\":\"\u{1e0d}\u{307}\"}"
        );
    }

    #[test]
    fn control_characters_use_short_or_lowercase_escapes() {
        let value = Value::String("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f} \"\\/\u{7f}\u{2028}".into());
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f \\\"\\\\/\u{7f}\u{2028}\""
        );
    }

    #[test]
    fn utf16_order_puts_supplementary_characters_before_the_private_use_area() {
        assert_eq!(cmp_utf16("\u{1F600}", "\u{E000}"), Ordering::Less);
        assert_eq!(cmp_utf16("\u{D7FF}", "\u{1F600}"), Ordering::Less);
        assert_eq!(cmp_utf16("\u{FFFF}", "\u{10000}"), Ordering::Greater);
        assert_eq!(cmp_utf16("a", "ab"), Ordering::Less);
        assert_eq!(cmp_utf16("B", "a"), Ordering::Less);
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_place() {
        let err = parse_strict_json("{\"a\": 1,\n \"b\": {\"x\": [ {\"k\": 1, \"k\": 2} ]}}")
            .unwrap_err();
        assert_eq!(
            err,
            CanonicalError::DuplicateKey {
                key: "k".into(),
                object: "/b/x/0".into(),
                line: 2,
                column: 24,
            }
        );
        // Keys equal after unescaping are duplicates too.
        assert!(matches!(
            parse_strict_json(r#"{"a": 1, "\u0061": 2}"#),
            Err(CanonicalError::DuplicateKey { key, object, .. }) if key == "a" && object.is_empty()
        ));
        // Keys with `/` and `~` are escaped in the object path.
        assert!(matches!(
            parse_strict_json(r#"{"a/b~": {"k": 1, "k": 1}}"#),
            Err(CanonicalError::DuplicateKey { object, .. }) if object == "/a~1b~0"
        ));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(parse_strict_json(&ok).is_ok());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(
            parse_strict_json(&deep),
            Err(CanonicalError::TooDeep {
                max: MAX_JSON_DEPTH,
                line: 1,
                column: MAX_JSON_DEPTH + 1,
            })
        );
        // Far deeper input fails the same way instead of overflowing the stack.
        let abyss = "{\"a\":".repeat(100_000);
        assert!(matches!(
            parse_strict_json(&abyss),
            Err(CanonicalError::TooDeep { .. })
        ));
    }

    #[test]
    fn size_is_bounded() {
        let big = format!("\"{}\"", "a".repeat(MAX_JSON_BYTES - 1));
        assert_eq!(
            parse_strict_json(&big),
            Err(CanonicalError::TooLarge {
                len: MAX_JSON_BYTES + 1,
                max: MAX_JSON_BYTES,
            })
        );
        let fits = format!("\"{}\"", "a".repeat(MAX_JSON_BYTES - 2));
        assert!(parse_strict_json(&fits).is_ok());
    }

    #[test]
    fn malformed_text_is_refused_with_a_position() {
        for (text, problem) in [
            ("", "unexpected end of input, expected a value"),
            ("{\"a\":1,}", "expected a string key in an object"),
            ("[1,]", "expected a value"),
            ("[01]", "numbers must not have leading zeros"),
            ("[1.]", "expected a digit after the decimal point"),
            ("[1e]", "expected a digit in the exponent"),
            ("[.5]", "expected a value"),
            ("[+1]", "expected a value"),
            ("NaN", "expected a value"),
            ("[Infinity]", "expected a value"),
            ("{'a':1}", "expected a string key in an object"),
            ("\"a\tb\"", "control characters must be escaped in strings"),
            ("\"\\x\"", "invalid escape in a string"),
            ("\"\\u12\"", "`\\u` must be followed by 4 hex digits"),
            ("\"\\ud800\"", "unpaired UTF-16 surrogate in an escape"),
            ("\"\\udc00\"", "unpaired UTF-16 surrogate in an escape"),
            (
                "\"\\ud800\\u0041\"",
                "unpaired UTF-16 surrogate in an escape",
            ),
            ("{} {}", "unexpected text after the JSON value"),
            ("/* c */ 1", "expected a value"),
            ("\u{feff}{}", "a byte-order mark is not allowed"),
            ("[tru]", "expected a value"),
            ("{\"a\" 1}", "expected `:` after an object key"),
            ("[1 2]", "expected `,` or `]` in an array"),
            ("{\"a\":1 \"b\":2}", "expected `,` or `}` in an object"),
            ("\"abc", "unexpected end of input in a string"),
            ("[1", "unexpected end of input in an array"),
            ("{\"a\":1", "unexpected end of input in an object"),
        ] {
            match parse_strict_json(text) {
                Err(CanonicalError::Syntax { problem: p, .. }) => {
                    assert_eq!(p, problem, "for {text:?}")
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert_eq!(
            parse_strict_json("{\n  \"é\": tru\n}"),
            Err(CanonicalError::Syntax {
                line: 2,
                column: 8,
                problem: "expected a value"
            })
        );
    }

    #[test]
    fn overflowing_numbers_are_refused_and_underflow_reads_as_zero() {
        assert!(matches!(
            parse_strict_json("[1e400]"),
            Err(CanonicalError::NumberOutOfRange { number, line: 1, column: 2 }) if number == "1e400"
        ));
        assert!(matches!(
            parse_strict_json("-1e309"),
            Err(CanonicalError::NumberOutOfRange { .. })
        ));
        assert_eq!(canon("1e-400"), "0");
    }

    #[test]
    fn parsing_agrees_with_serde_json_on_valid_documents() {
        let text = r#"{"a": [1, -2, 3.5, 1e2, -0.0, 18446744073709551615, -9223372036854775808,
            "x\u00e9\ud83d\ude02\n", true, false, null, {}], "b": {"c": {"d": []}}}"#;
        let ours = parse_strict_json(text).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn canonical_writer_handles_values_deeper_than_the_parser_allows() {
        let mut value = Value::Null;
        for _ in 0..10_000 {
            value = Value::Array(vec![value]);
        }
        let out = canonical_json(&value);
        assert_eq!(out.len(), 2 * 10_000 + 4);
        // Dropping a deep Value recurses in serde_json; unwind it iteratively.
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn clip_cuts_long_text() {
        assert_eq!(clip("abc"), "abc");
        let long = "é".repeat(200);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
