//! Turning a fuzzer's byte string into structured input, without the `arbitrary` crate (the
//! checks are also compiled into the crate's plain tests, which only have the library's own
//! dependencies).
//!
//! Two shapes, both friendly to byte-level mutation:
//!
//! - [`fields`]: text fields separated by `0xFF`, a byte that never occurs in UTF-8, so a seed
//!   file is readable text with `\xff` between the parts;
//! - [`Input`]: a cursor reading fixed-size numbers and length-prefixed chunks; reading past
//!   the end yields zeros, so every byte string is a valid input.

/// Splits `data` at every `0xFF` byte.
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == 0xFF).collect()
}

/// The `i`-th field as text (lossy UTF-8), empty if absent.
pub fn field_text(fields: &[&[u8]], i: usize) -> String {
    fields
        .get(i)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default()
}

/// A cursor over fuzzer bytes.
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next byte, or 0 past the end.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((&b, tail)) => {
                self.rest = tail;
                b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-filled past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.rest.len());
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        out
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    /// A big-endian `i64`.
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.array())
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    /// A chunk whose length is the next byte.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.take(n)
    }

    /// A chunk as text (lossy UTF-8).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.chunk()).into_owned()
    }

    /// Whatever is left.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }
}

/// A one-byte edit of `text`: the byte at `pos % len` becomes `value` (a no-op on empty text).
/// Returns `None` when the edit would not change anything.
pub fn edit_byte(text: &[u8], pos: u16, value: u8) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    let i = usize::from(pos) % text.len();
    if text[i] == value {
        return None;
    }
    let mut out = text.to_vec();
    out[i] = value;
    Some(out)
}

/// The length in characters of each line of `text` (split at `\n`).
pub fn line_lengths(text: &str) -> Vec<usize> {
    text.split('\n').map(|l| l.chars().count()).collect()
}

/// Panics unless `(line, column)` (1-based, column in characters) lies in `text` or just past
/// the end of one of its lines.
pub fn assert_location(text: &str, line: usize, column: usize, what: &dyn std::fmt::Debug) {
    let lines = line_lengths(text);
    assert!(
        (1..=lines.len()).contains(&line),
        "{what:?}: line {line} outside 1..={}",
        lines.len()
    );
    let width = lines[line - 1];
    assert!(
        (1..=width + 1).contains(&column),
        "{what:?}: column {column} outside 1..={} on line {line}",
        width + 1
    );
}
