//! Action-kind globs: `payment.*`, `*.read`, `db.**`.
//!
//! A glob is a dotted list of segments, matched segment by segment against an
//! [`ActionKind`](crate::action::ActionKind):
//!
//! - a literal segment (`a-z 0-9 _ -`, 1 to 64 characters) matches exactly that segment;
//! - `*` matches exactly one segment, whatever it is;
//! - `**`, allowed only as the last segment, matches zero or more remaining segments
//!   (`db.**` matches `db`, `db.read` and `db.table.drop`; `**` alone matches every kind).
//!
//! Wildcards are whole segments: `pay*` and `*ment` are refused, as are `**` in any position
//! but the last, empty segments and more than 16 segments.

use std::fmt;

/// Most segments in a glob (the bound on [`ActionKind`](crate::action::ActionKind) segments).
const MAX_KIND_SEGMENTS: usize = 16;
/// Most characters in one segment (the bound on [`ActionKind`](crate::action::ActionKind)).
const MAX_SEGMENT_LEN: usize = 64;

/// One segment of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
}

/// A compiled kind glob.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KindGlob {
    source: Box<str>,
    segments: Box<[Segment]>,
    /// Ends in `**`: any number of further segments (including none).
    rest: bool,
}

impl KindGlob {
    /// Parses a glob; the error says what is wrong (without repeating the glob).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a kind glob must not be empty".into());
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > MAX_KIND_SEGMENTS {
            return Err(format!("more than {MAX_KIND_SEGMENTS} segments"));
        }
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => return Err("empty segment (two dots, or a leading or trailing dot)".into()),
                "**" if i == last => rest = true,
                "**" => return Err("`**` is only allowed as the last segment".into()),
                "*" => segments.push(Segment::One),
                literal => {
                    if literal.contains('*') {
                        return Err("`*` must be a whole segment (`payment.*`, not `pay*`)".into());
                    }
                    if literal.len() > MAX_SEGMENT_LEN {
                        return Err(format!("segment longer than {MAX_SEGMENT_LEN} characters"));
                    }
                    if !literal.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    }) {
                        return Err(format!(
                            "segment `{literal}` has a character outside `a-z`, `0-9`, `_` and `-`"
                        ));
                    }
                    segments.push(Segment::Literal(literal.into()));
                }
            }
        }
        Ok(Self {
            source: text.into(),
            segments: segments.into(),
            rest,
        })
    }

    /// The glob as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The literal first segment, if the glob starts with one (used to index rules).
    pub(crate) fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(s)) => Some(s),
            _ => None,
        }
    }

    /// Whether a kind, already split into its dot-separated segments, matches. Compares from
    /// the last segment, which tells kinds of one family apart soonest.
    #[inline]
    pub(crate) fn matches_segments(&self, parts: &[&str]) -> bool {
        let fits = if self.rest {
            parts.len() >= self.segments.len()
        } else {
            parts.len() == self.segments.len()
        };
        fits && self
            .segments
            .iter()
            .zip(parts)
            .rev()
            .all(|(segment, part)| match segment {
                Segment::One => true,
                Segment::Literal(lit) => same(lit, part),
            })
    }

    /// Whether `kind` (a validated dotted kind) matches.
    #[cfg(test)]
    pub(crate) fn matches(&self, kind: &str) -> bool {
        let mut parts = kind.split('.');
        for segment in self.segments.iter() {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::One, Some(_)) => {}
                (Segment::Literal(lit), Some(part)) => {
                    if **lit != *part {
                        return false;
                    }
                }
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Byte equality without a call into `memcmp` (segments are short).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// A kind split into segments once per evaluation (on the stack for up to 16 segments).
pub(crate) struct SplitKind<'k> {
    inline: [&'k str; MAX_KIND_SEGMENTS],
    len: usize,
    spilled: Vec<&'k str>,
}

impl<'k> SplitKind<'k> {
    pub(crate) fn new(kind: &'k str) -> Self {
        let mut split = Self {
            inline: [""; MAX_KIND_SEGMENTS],
            len: 0,
            spilled: Vec::new(),
        };
        for part in kind.split('.') {
            if split.len < MAX_KIND_SEGMENTS {
                split.inline[split.len] = part;
            } else {
                if split.spilled.is_empty() {
                    split.spilled.extend_from_slice(&split.inline);
                }
                split.spilled.push(part);
            }
            split.len += 1;
        }
        split
    }

    pub(crate) fn parts(&self) -> &[&'k str] {
        if self.len <= MAX_KIND_SEGMENTS {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl fmt::Debug for KindGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KindGlob({:?})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, kind: &str) -> bool {
        let g = KindGlob::parse(glob).unwrap();
        let split = SplitKind::new(kind);
        assert_eq!(
            g.matches(kind),
            g.matches_segments(split.parts()),
            "{glob} vs {kind}"
        );
        g.matches(kind)
    }

    #[test]
    fn star_is_exactly_one_segment() {
        assert!(m("payment.*", "payment.send"));
        assert!(!m("payment.*", "payment"));
        assert!(!m("payment.*", "payment.send.batch"));
        assert!(m("*.read", "db.read"));
        assert!(!m("*.read", "db.table.read"));
        assert!(!m("*.read", "read"));
        assert!(m("db.*.drop", "db.table.drop"));
        assert!(!m("db.*.drop", "db.table.truncate"));
    }

    #[test]
    fn trailing_double_star_is_any_rest() {
        assert!(m("db.**", "db"));
        assert!(m("db.**", "db.read"));
        assert!(m("db.**", "db.table.drop"));
        assert!(!m("db.**", "dbx.read"));
        assert!(m("**", "anything.at.all"));
        assert!(m("*.**", "x"));
        assert!(m("*.table.**", "db.table.drop.cascade"));
        assert!(!m("*.table.**", "db.index.drop"));
    }

    #[test]
    fn literals_match_whole_segments_only() {
        assert!(m("db.table.drop", "db.table.drop"));
        assert!(!m("db.table.drop", "db.table.dropx"));
        assert!(!m("db.table", "db.table.drop"));
        assert!(!m("payment", "payments"));
    }

    #[test]
    fn malformed_globs_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "pay*",
            "*ment.send",
            "a.**.b",
            "***",
            "A.b",
            "a b",
            "a.b/c",
        ] {
            assert!(KindGlob::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(KindGlob::parse(&vec!["a"; 17].join(".")).is_err());
        assert!(KindGlob::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn split_kinds_keep_every_segment() {
        assert_eq!(SplitKind::new("a.b.c").parts(), ["a", "b", "c"]);
        let long = vec!["s"; 20].join(".");
        assert_eq!(
            SplitKind::new(&long).parts().len(),
            20,
            "more than 16 spill to the heap"
        );
        assert!(m("**", &long));
        assert!(!m("s.*", &long));
    }

    #[test]
    fn first_literal_is_used_for_indexing() {
        assert_eq!(KindGlob::parse("db.*").unwrap().first_literal(), Some("db"));
        assert_eq!(KindGlob::parse("*.read").unwrap().first_literal(), None);
        assert_eq!(KindGlob::parse("**").unwrap().first_literal(), None);
    }
}
