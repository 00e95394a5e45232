//! Escaping agent-written text for each channel's markup.
//!
//! Everything an agent writes — its reason, expected effect, risk factors, rollback plan, and
//! also targets and parameter values — is untrusted text. Shown on a review card it must read
//! as exactly what it is: no link whose label hides its destination, no mention that pings a
//! whole group, no bold "APPROVED BY SECURITY" line, no invisible characters that reorder what
//! the reviewer reads. [`Markup::escape`] makes a piece of text inert for one markup language.
//!
//! # What every markup gets
//!
//! Before the markup-specific escaping, the text is normalised and defanged the same way for
//! every markup:
//!
//! - `\r\n` and lone `\r` become `\n`. U+2028 and U+2029 become U+FFFD `�`, not a line
//!   break: text that must stay on one line (a target, a parameter value inside JSON) could
//!   otherwise start a line that looks like a verified fact.
//! - Other control characters (C0 except tab and newline, DEL, C1) and the invisible
//!   characters that can reorder or hide text — bidirectional embeddings, overrides, isolates
//!   and marks (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069), zero-width spaces and
//!   joiners used as separators (U+200B, U+2060–U+2064, U+FEFF) — become U+FFFD `�`, so
//!   tampering stays visible. (U+200C and U+200D stay: scripts and emoji need them.)
//! - URLs are defanged visibly, so no renderer turns them into links: `://` becomes
//!   `[:]//` and `www.` (any case) becomes `www[.]`. `https://evil.example` reads
//!   `https[:]//evil.example`.
//! - An `@` followed by a letter, digit or `_` gets a zero-width space (U+200B) after it, so
//!   `@all`, `@_all`, `@everyone`, `@here` and `user@example.com` never ping anybody or become
//!   mail links, and still read the same.
//!
//! Bare domain names without a scheme or `www.` (`evil.example`) are left as they are; a
//! renderer that links those shows the real destination as the link text.
//!
//! # Per markup
//!
//! - [`Markup::PlainText`]: nothing else, except that a `<` followed by a letter, digit, `!`,
//!   `@`, `#`, `/` or `?` gets a zero-width space after it, so chat platforms that parse tags
//!   in plain messages (Feishu `<at user_id="all">`, Slack `<!channel>`, `<@U123>`) see none.
//! - [`Markup::Markdown`] (CommonMark, and GitHub Flavored Markdown): every ASCII punctuation
//!   character is backslash-escaped (CommonMark §2.4 allows exactly these). That neutralises
//!   emphasis, code spans, links, images, autolinks (`<…>`), raw HTML, entity references
//!   (`&amp;`), headings, block quotes, lists, tables, strikethrough and thematic breaks at any
//!   position, including the start of a line.
//! - [`Markup::LarkMd`] (Feishu / Lark card markdown, `"tag": "lark_md"` and the `markdown`
//!   component): characters with a meaning are written as HTML character references, which
//!   the card renderer shows as the literal character: `&` `&amp;`, `<` `&lt;`, `>` `&gt;`,
//!   `*` `&#42;`, `_` `&#95;`, `~` `&#126;`, `` ` `` `&#96;`, `[` `&#91;`, `]` `&#93;`,
//!   `(` `&#40;`, `)` `&#41;`, `\` `&#92;`, `@` `&#64;`, `#` `&#35;`, `|` `&#124;`, `$` `&#36;`;
//!   at the start of a line (after spaces) also `-` `&#45;`, `+` `&#43;`, `=` `&#61;`, and the
//!   `.` of `1.` `&#46;`. Tags such as `<at id=all></at>`, `<font>`, `<link>` can therefore not
//!   be written, `&` cannot start an entity of the agent's choosing, and `[label](url)` or
//!   `$urlVal` links cannot be formed.
//!
//! Newlines are kept (they are line breaks in every markup); what the card renderer does to
//! keep a multi-line claim visibly inside its own block is up to the renderer.

use std::fmt;

/// A channel's markup language, for escaping untrusted text ([`escape`](Self::escape)).
///
/// ```
/// use agent_handoff::notify::Markup;
///
/// let attack = "[Approve](https://evil.example) <at id=all></at> @all **urgent**";
/// assert_eq!(
///     Markup::Markdown.escape(attack),
///     "\\[Approve\\]\\(https\\[\\:\\]\\/\\/evil\\.example\\) \\<at id\\=all\\>\\<\\/at\\> \
///      \\@\u{200B}all \\*\\*urgent\\*\\*",
/// );
/// assert_eq!(
///     Markup::LarkMd.escape("<at id=all></at> @_all"),
///     "&lt;at id=all&gt;&lt;/at&gt; &#64;\u{200B}&#95;all",
/// );
/// assert_eq!(Markup::PlainText.escape("see https://x.example"), "see https[:]//x.example");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Markup {
    /// Plain text, for channels that render no markup but may still link URLs or parse
    /// mention tags (SMS, mail `text/plain`, Feishu `text` messages, logs).
    PlainText,
    /// CommonMark / GitHub Flavored Markdown.
    Markdown,
    /// Feishu / Lark card markdown (`lark_md` text and the `markdown` component).
    LarkMd,
}

/// Zero-width space, inserted after `@` (and `<` in plain text) to break mentions and tags.
const ZWSP: char = '\u{200B}';

impl Markup {
    /// Every markup, for tests and loops over channels.
    pub const ALL: [Markup; 3] = [Markup::PlainText, Markup::Markdown, Markup::LarkMd];

    /// Makes untrusted text inert in this markup: rendered, it shows the text (normalised and
    /// defanged as described in the [module docs](self)) and nothing else — no links, mentions,
    /// formatting or tags of the writer's choosing.
    pub fn escape(self, text: &str) -> String {
        let defanged = defang(text);
        let mut out = String::with_capacity(defanged.len() + defanged.len() / 4);
        match self {
            Markup::PlainText => {
                let mut chars = defanged.chars().peekable();
                while let Some(c) = chars.next() {
                    out.push(c);
                    if c == '<'
                        && chars.peek().is_some_and(|&n| {
                            n.is_alphanumeric() || matches!(n, '!' | '@' | '#' | '/' | '?')
                        })
                    {
                        out.push(ZWSP);
                    }
                }
            }
            Markup::Markdown => {
                for c in defanged.chars() {
                    if c.is_ascii_punctuation() {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Markup::LarkMd => {
                let mut line = LineStart::Start;
                for c in defanged.chars() {
                    let entity = match (c, line) {
                        ('-', LineStart::Start) => Some("&#45;"),
                        ('+', LineStart::Start) => Some("&#43;"),
                        ('=', LineStart::Start) => Some("&#61;"),
                        ('.', LineStart::Digits) => Some("&#46;"),
                        _ => lark_entity(c),
                    };
                    match entity {
                        Some(e) => out.push_str(e),
                        None => out.push(c),
                    }
                    line = match (c, line) {
                        ('\n', _) => LineStart::Start,
                        (' ' | '\t', LineStart::Start) => LineStart::Start,
                        ('0'..='9', LineStart::Start | LineStart::Digits) => LineStart::Digits,
                        _ => LineStart::Other,
                    };
                }
            }
        }
        out
    }

    /// `text` in bold. `text` must be trusted (a label written by this crate), or escaped.
    pub(crate) fn bold(self, text: &str) -> String {
        match self {
            Markup::PlainText => text.to_owned(),
            Markup::Markdown | Markup::LarkMd => format!("**{text}**"),
        }
    }

    /// A link with a trusted `label`, or `label: url` as text when the markup has no links or
    /// the URL is not `http(s)`. The URL is percent-encoded where the markup's link syntax
    /// would otherwise end early; in plain text it is left as it is.
    pub(crate) fn link(self, label: &str, url: &str) -> String {
        let web = url.starts_with("https://") || url.starts_with("http://");
        match self {
            Markup::Markdown | Markup::LarkMd if web => {
                format!("[{label}]({})", encode_link_destination(url))
            }
            Markup::PlainText => format!("{label}: {url}"),
            _ => format!("{label}: {}", self.escape(url)),
        }
    }
}

impl fmt::Display for Markup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Markup::PlainText => "plain text",
            Markup::Markdown => "markdown",
            Markup::LarkMd => "lark_md",
        })
    }
}

/// Where a lark_md line is, for the characters that only mean something at its start.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LineStart {
    /// At the start of a line, or after leading spaces.
    Start,
    /// After leading spaces and digits (an ordered-list number).
    Digits,
    /// Anywhere else.
    Other,
}

fn lark_entity(c: char) -> Option<&'static str> {
    Some(match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        '*' => "&#42;",
        '_' => "&#95;",
        '~' => "&#126;",
        '`' => "&#96;",
        '[' => "&#91;",
        ']' => "&#93;",
        '(' => "&#40;",
        ')' => "&#41;",
        '\\' => "&#92;",
        '@' => "&#64;",
        '#' => "&#35;",
        '|' => "&#124;",
        '$' => "&#36;",
        _ => return None,
    })
}

/// Whether a character is replaced by U+FFFD: controls other than tab and newline, and the
/// invisible characters that reorder or hide text.
fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Normalises line ends and hidden characters, defangs URLs and breaks `@` mentions; the
/// result is the text every markup then escapes.
fn defang(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\u{2028}' | '\u{2029}' => out.push('\u{FFFD}'),
            c if is_hidden(c) => out.push('\u{FFFD}'),
            ':' if starts_with_two_slashes(&chars) => out.push_str("[:]"),
            '.' if ends_with_www(&out) => out.push_str("[.]"),
            '@' => {
                out.push('@');
                if chars
                    .peek()
                    .is_some_and(|&n| n.is_alphanumeric() || n == '_')
                {
                    out.push(ZWSP);
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn starts_with_two_slashes(chars: &std::iter::Peekable<std::str::Chars<'_>>) -> bool {
    let mut ahead = chars.clone();
    ahead.next() == Some('/') && ahead.next() == Some('/')
}

/// Whether `out` ends with `www` in any case (so the `.` about to be written would make
/// `www.`).
fn ends_with_www(out: &str) -> bool {
    out.len() >= 3
        && out.is_char_boundary(out.len() - 3)
        && out[out.len() - 3..].eq_ignore_ascii_case("www")
}

/// Percent-encodes what would end or break a markdown link destination: controls, spaces,
/// `<`, `>`, `(`, `)`, `\`, `"`, `` ` ``, `[`, `]` and non-ASCII.
fn encode_link_destination(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for b in url.bytes() {
        let keep = b.is_ascii_graphic()
            && !matches!(
                b,
                b'<' | b'>' | b'(' | b')' | b'\\' | b'"' | b'`' | b'[' | b']'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defang_breaks_urls_and_mentions_only() {
        assert_eq!(
            defang("HTTPS://a.b WWW.x wwwx. a@b @ x"),
            "HTTPS[:]//a.b WWW[.]x wwwx. a@\u{200B}b @ x"
        );
        assert_eq!(
            defang("a\r\nb\rc\u{2028}d\u{2029}e"),
            "a\nb\nc\u{FFFD}d\u{FFFD}e"
        );
        assert_eq!(
            defang("x\u{202E}y\u{0}z\u{200B}"),
            "x\u{FFFD}y\u{FFFD}z\u{FFFD}"
        );
        assert_eq!(
            defang("emoji \u{1F468}\u{200D}\u{1F469}"),
            "emoji \u{1F468}\u{200D}\u{1F469}"
        );
        assert_eq!(defang("ratio 1:2, c:/x, a: //b"), "ratio 1:2, c:/x, a: //b");
    }

    #[test]
    fn lark_line_starts() {
        let m = Markup::LarkMd;
        assert_eq!(
            m.escape("- a\n  + b\n12. c\nx - y 3. z"),
            "&#45; a\n  &#43; b\n12&#46; c\nx - y 3. z"
        );
        assert_eq!(m.escape("=== \n1) x"), "&#61;== \n1&#41; x");
    }

    #[test]
    fn link_destinations_cannot_close_early() {
        assert_eq!(
            Markup::Markdown.link("Approve", "https://h.example/d?t=a b)c<d>"),
            "[Approve](https://h.example/d?t=a%20b%29c%3Cd%3E)"
        );
        assert_eq!(
            Markup::LarkMd.link("Approve", "javascript:alert(1)"),
            "Approve: javascript:alert&#40;1&#41;"
        );
        assert_eq!(
            Markup::PlainText.link("Approve", "https://h/x"),
            "Approve: https://h/x"
        );
    }
}
