//! Where things are in a document's source text: field paths, spans and line numbers.
//!
//! Only used on the error path: after serde or the compiler refused a document, the source is
//! re-read into a [`SpanIndex`] (every value's dotted path with the byte span of its key and
//! value) so the error can name the field, the rule id and the line.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Deepest nesting the index descends into (documents are shallow; this bounds recursion on
/// hostile input).
const MAX_DEPTH: usize = 32;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted field path such as `rule[3].then.review.approvals`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// This path with a key appended.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path with an index appended.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// If this path is inside `rule[i]`, that `i`.
    pub(crate) fn rule_index(&self) -> Option<usize> {
        match self.0.as_slice() {
            [Seg::Key(k), Seg::Index(i), ..] if k == "rule" => Some(*i),
            _ => None,
        }
    }

    fn parent(&self) -> Option<Self> {
        let mut segs = self.0.clone();
        segs.pop().map(|_| Self(segs))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    path: FieldPath,
    key: Option<Range<usize>>,
    value: Range<usize>,
    /// The value, when it is a string (used to find rule ids).
    text: Option<String>,
}

/// Every value of a document with its path and spans.
#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    entries: Vec<Entry>,
}

impl SpanIndex {
    /// Indexes a TOML document; a document with syntax errors is indexed as far as the
    /// parser could recover.
    pub(crate) fn toml(text: &str) -> Self {
        let (table, _errors) = DeTable::parse_recoverable(text);
        let mut index = Self::default();
        index.walk_table(&FieldPath::root(), table.get_ref(), 0);
        index
    }

    fn walk_table(&mut self, path: &FieldPath, table: &DeTable<'_>, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        for (key, value) in table.iter() {
            let child = path.key(key.get_ref());
            self.walk_value(child, Some(key.span()), value, depth + 1);
        }
    }

    fn walk_value(
        &mut self,
        path: FieldPath,
        key: Option<Range<usize>>,
        value: &Spanned<DeValue<'_>>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        match value.get_ref() {
            DeValue::Table(table) => self.walk_table(&path, table, depth),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_value(path.index(i), None, item, depth + 1);
                }
            }
            _ => {}
        }
        self.entries.push(Entry {
            path,
            key,
            value: value.span(),
            text: value.get_ref().as_str().map(str::to_owned),
        });
    }

    /// Indexes a JSON document; malformed text is indexed up to the first error.
    pub(crate) fn json(text: &str) -> Self {
        let mut scanner = JsonScanner {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            index: Self::default(),
        };
        let _complete = scanner.value(FieldPath::root(), None, 0);
        scanner.index
    }

    /// The deepest field whose key or value covers `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<FieldPath> {
        let covers = |r: &Range<usize>| {
            r.start <= offset && (offset < r.end || r.is_empty() && offset == r.start)
        };
        self.entries
            .iter()
            .filter(|e| covers(&e.value) || e.key.as_ref().is_some_and(covers))
            .max_by_key(|e| e.path.0.len())
            .map(|e| e.path.clone())
    }

    /// The byte offset where `path` (or its nearest indexed ancestor) is written: its key if
    /// it has one, else its value.
    pub(crate) fn offset_of(&self, path: &FieldPath) -> Option<usize> {
        let mut current = Some(path.clone());
        while let Some(p) = current {
            if let Some(e) = self.entries.iter().find(|e| e.path == p) {
                return Some(e.key.as_ref().unwrap_or(&e.value).start);
            }
            current = p.parent();
        }
        None
    }

    /// The byte span of the value at exactly `path`, if it is indexed.
    pub(crate) fn value_span(&self, path: &FieldPath) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|e| e.path == *path)
            .map(|e| e.value.clone())
    }

    /// The `id` string of `rule[i]`, if it has one.
    pub(crate) fn rule_id(&self, i: usize) -> Option<String> {
        let path = FieldPath::root().key("rule").index(i).key("id");
        self.entries
            .iter()
            .find(|e| e.path == path)
            .and_then(|e| e.text.clone())
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Byte offset of a 1-based line and column (serde_json's positions; its column counts bytes).
pub(crate) fn offset_of_line_column(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(nl) => start += nl + 1,
            None => return text.len(),
        }
    }
    (start + column.saturating_sub(1)).min(text.len())
}

/// A minimal JSON reader that records spans; stops at the first malformed token.
struct JsonScanner<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
    index: SpanIndex,
}

impl JsonScanner<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len()
            && matches!(self.bytes[self.pos], b' ' | b'\t' | b'\n' | b'\r')
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.bytes.get(self.pos) == Some(&b)).then(|| self.pos += 1)
    }

    /// Reads a string token; returns its span (quotes included) and decoded value.
    fn string(&mut self) -> Option<(Range<usize>, String)> {
        self.skip_ws();
        let start = self.pos;
        if self.bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        self.pos += 1;
        loop {
            match self.bytes.get(self.pos)? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        let raw = self.text.get(start..self.pos)?;
        let decoded: String = serde_json::from_str(raw).ok()?;
        Some((start..self.pos, decoded))
    }

    fn value(&mut self, path: FieldPath, key: Option<Range<usize>>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let start = self.pos;
        let mut text = None;
        let complete = match *self.bytes.get(self.pos)? {
            b'{' => {
                self.pos += 1;
                self.object_body(&path, depth)
            }
            b'[' => {
                self.pos += 1;
                self.array_body(&path, depth)
            }
            b'"' => {
                let (_, decoded) = self.string()?;
                text = Some(decoded);
                Some(())
            }
            _ => {
                while self.pos < self.bytes.len()
                    && (self.bytes[self.pos].is_ascii_alphanumeric()
                        || matches!(self.bytes[self.pos], b'-' | b'+' | b'.'))
                {
                    self.pos += 1;
                }
                (self.pos > start).then_some(())
            }
        };
        // A container cut short by an error still covers the error's position, so an error
        // inside it is attributed to it.
        let end = if complete.is_some() {
            self.pos
        } else {
            self.pos + 1
        };
        self.index.entries.push(Entry {
            path,
            key,
            value: start..end,
            text,
        });
        complete
    }

    fn object_body(&mut self, path: &FieldPath, depth: usize) -> Option<()> {
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let (key_span, name) = self.string()?;
            self.eat(b':')?;
            self.value(path.key(&name), Some(key_span), depth + 1)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    fn array_body(&mut self, path: &FieldPath, depth: usize) -> Option<()> {
        if self.eat(b']').is_some() {
            return Some(());
        }
        let mut i = 0;
        loop {
            self.value(path.index(i), None, depth + 1)?;
            i += 1;
            if self.eat(b',').is_none() {
                return self.eat(b']');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> FieldPath {
        let mut path = FieldPath::root();
        for s in segs {
            path = match s.parse::<usize>() {
                Ok(i) => path.index(i),
                Err(_) => path.key(s),
            };
        }
        path
    }

    #[test]
    fn paths_display_dotted_with_indices() {
        assert_eq!(
            p(&["rule", "3", "then", "review", "approvals"]).to_string(),
            "rule[3].then.review.approvals"
        );
        assert_eq!(
            p(&["rule", "0", "when", "attributes", "a.b"]).to_string(),
            "rule[0].when.attributes.\"a.b\""
        );
        assert_eq!(p(&["rule", "2"]).rule_index(), Some(2));
        assert_eq!(p(&["default"]).rule_index(), None);
    }

    #[test]
    fn toml_index_finds_lines_and_rule_ids() {
        let text = "version = \"1\"\n\n[[rule]]\nid = \"a\"\nwhen = { kind = [\"x\", \"y\"] }\nthen.review.approvals = 3\n";
        let index = SpanIndex::toml(text);
        let line = |segs: &[&str]| index.offset_of(&p(segs)).map(|o| line_of(text, o));
        assert_eq!(line(&["version"]), Some(1));
        assert_eq!(line(&["rule", "0", "id"]), Some(4));
        assert_eq!(line(&["rule", "0", "when", "kind", "1"]), Some(5));
        assert_eq!(line(&["rule", "0", "then", "review", "approvals"]), Some(6));
        assert_eq!(
            line(&["rule", "0", "then", "review", "deadline"]),
            Some(6),
            "falls back to the parent"
        );
        assert_eq!(index.rule_id(0).as_deref(), Some("a"));
        let at = text.find("\"y\"").unwrap();
        assert_eq!(
            index.path_at(at),
            Some(p(&["rule", "0", "when", "kind", "1"]))
        );
    }

    #[test]
    fn json_index_finds_lines_and_rule_ids() {
        let text = "{\n \"version\": \"1\",\n \"rule\": [\n  {\"id\": \"a\\u0062\",\n   \"when\": {\"kind\": [\"x\", \"y\"]}}\n ]\n}";
        let index = SpanIndex::json(text);
        let line = |segs: &[&str]| index.offset_of(&p(segs)).map(|o| line_of(text, o));
        assert_eq!(line(&["version"]), Some(2));
        assert_eq!(line(&["rule", "0", "id"]), Some(4));
        assert_eq!(line(&["rule", "0", "when", "kind", "1"]), Some(5));
        assert_eq!(
            index.rule_id(0).as_deref(),
            Some("ab"),
            "escapes are decoded"
        );
        let at = text.find("\"y\"").unwrap();
        assert_eq!(
            index.path_at(at),
            Some(p(&["rule", "0", "when", "kind", "1"]))
        );
    }

    #[test]
    fn malformed_json_is_indexed_up_to_the_error() {
        let text =
            "{\"version\": \"1\", \"rule\": [{\"id\": \"a\", \"when\": {\"kind\": [\"x\",, ]}}]}";
        let index = SpanIndex::json(text);
        assert_eq!(index.rule_id(0).as_deref(), Some("a"));
        assert_eq!(
            index.path_at(text.find(",,").unwrap() + 1),
            Some(p(&["rule", "0", "when", "kind", "1"])),
            "the missing second item is where the error is"
        );
    }

    #[test]
    fn line_and_column_convert_to_offsets() {
        let text = "ab\ncd\nef";
        assert_eq!(offset_of_line_column(text, 2, 2), 4);
        assert_eq!(line_of(text, 4), 2);
        assert_eq!(offset_of_line_column(text, 9, 1), text.len());
    }
}
