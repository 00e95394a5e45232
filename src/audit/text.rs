//! Free text and values an event is about, kept beside the chain: the event holds a salted
//! commitment of each, the store keeps the plaintext and its salt in a side table.

use std::fmt;

use serde_json::{Map, Value};

use super::chain::{AuditEvent, RawEvent};
use super::record::AuditRecord;
use crate::action::commitment;

/// Longest name of a text, in bytes.
pub const MAX_TEXT_NAME_LEN: usize = 64;

/// Where a text is kept: the event's sequence number and the member of its data that holds
/// the commitment (`feedback`, `error`, `reason`, `output`, `expected`, `observed`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct TextRef {
    /// The event's sequence number.
    pub seq: u64,
    /// The member of the event's data.
    pub name: String,
}

impl TextRef {
    /// The text `name` of event `seq`.
    pub fn new(seq: u64, name: impl Into<String>) -> Self {
        Self {
            seq,
            name: name.into(),
        }
    }
}

impl fmt::Display for TextRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.seq, self.name)
    }
}

/// Where a text stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TextState {
    /// Attached to a record not yet committed: it has no salt, and the record no commitment of
    /// it, until the record is [sealed](AuditRecord::seal).
    Pending,
    /// Kept, and it opens the commitment the chained event holds.
    Kept,
    /// Erased by the audited erase operation: the value and its salt are gone, the commitment
    /// stays in the chain and can no longer be opened. `by` is the sequence number of the
    /// `text_erased` event that records it.
    Erased {
        /// The erasing event.
        by: u64,
    },
    /// The side table holds a text that does not open the event's commitment (or that the
    /// event has no commitment for): it was edited outside the library. Its value is withheld.
    Altered,
    /// The event holds a commitment but the side table has no row for it: the row was removed
    /// outside the audited erase operation.
    Missing,
}

#[derive(Clone, PartialEq)]
enum Content {
    Pending(Value),
    Kept { value: Value, salt: [u8; 32] },
    Erased { by: u64 },
    Altered,
    Missing,
}

/// A free text or a value an audited event is about — a reviewer's feedback, an execution's
/// error or output, a cancel reason, the precondition values seen at a failed `begin` — kept
/// **beside** the event, outside its hashed bytes.
///
/// The event's `data` holds, under the text's name, its salted commitment
///
/// ```text
/// {"commitment": hex(HMAC-SHA256(key = salt, message = name ‖ 0x00 ‖ JCS(value)))}
/// ```
///
/// (the form of the committed parameters, `name` in UTF-8, `JCS` the RFC 8785 canonical JSON,
/// a fresh random 32-byte salt per text), so the plaintext can be erased without breaking the
/// chain, and whoever keeps value and salt can prove what the event was about.
///
/// `Debug` never shows the value (it may hold what the redaction rules hide elsewhere).
#[derive(Clone, PartialEq)]
pub struct AuditText {
    name: String,
    content: Content,
}

impl AuditText {
    /// A text not yet sealed: [`AuditRecord::seal`] draws its salt and writes its commitment.
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        Self {
            name: name.into(),
            content: Content::Pending(value.into()),
        }
    }

    /// A text sealed with `salt` (what a store reads back for a kept text).
    pub fn sealed(name: impl Into<String>, value: impl Into<Value>, salt: [u8; 32]) -> Self {
        Self {
            name: name.into(),
            content: Content::Kept {
                value: value.into(),
                salt,
            },
        }
    }

    fn with(name: String, content: Content) -> Self {
        Self { name, content }
    }

    /// The member of the event's data that holds its commitment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it stands.
    pub fn state(&self) -> TextState {
        match &self.content {
            Content::Pending(_) => TextState::Pending,
            Content::Kept { .. } => TextState::Kept,
            Content::Erased { by } => TextState::Erased { by: *by },
            Content::Altered => TextState::Altered,
            Content::Missing => TextState::Missing,
        }
    }

    /// The value, while kept (or pending); `None` once erased, or when the stored one does not
    /// open its commitment.
    pub fn value(&self) -> Option<&Value> {
        match &self.content {
            Content::Pending(value) | Content::Kept { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value as text, for the texts that are strings (feedback, errors, reasons).
    pub fn as_str(&self) -> Option<&str> {
        self.value().and_then(Value::as_str)
    }

    /// The salt of a kept text (with the value, it opens the commitment: keep it as secret as
    /// the value).
    pub fn salt(&self) -> Option<&[u8; 32]> {
        match &self.content {
            Content::Kept { salt, .. } => Some(salt),
            _ => None,
        }
    }

    /// The commitment of a kept text, 64 lowercase hex digits.
    pub fn commitment(&self) -> Option<String> {
        match &self.content {
            Content::Kept { value, salt } => Some(commitment(salt, &self.name, value)),
            _ => None,
        }
    }

    /// Whether `data` (an event's data) holds this kept text's commitment under its name.
    fn opens(&self, data: &Value) -> bool {
        match (self.commitment(), committed(data, &self.name)) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => false,
        }
    }
}

impl fmt::Debug for AuditText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("AuditText");
        s.field("name", &self.name).field("state", &self.state());
        if let Some(value) = self.value() {
            s.field(
                "value",
                &format_args!("<hidden: {} bytes>", value.to_string().len()),
            );
        }
        s.finish()
    }
}

/// The commitment hex `data[name]` holds, if it has the form `{"commitment": "<hex>"}`.
fn committed<'a>(data: &'a Value, name: &str) -> Option<&'a str> {
    let object = data.get(name)?.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object
        .get("commitment")?
        .as_str()
        .filter(|hex| is_commitment_hex(hex))
}

fn is_commitment_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The names of `data`'s top-level members that hold a commitment.
fn commitment_names(data: &Value) -> impl Iterator<Item = &str> {
    data.as_object()
        .into_iter()
        .flat_map(Map::keys)
        .filter(move |name| committed(data, name).is_some())
        .map(String::as_str)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TEXT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A record's texts are not in the form a store keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit text `{name}`: {problem}")]
pub struct TextError {
    /// The text's name (cut to 64 characters).
    pub name: String,
    /// What is wrong.
    pub problem: &'static str,
}

impl AuditRecord {
    /// Attaches a text to be kept beside the event (see [`AuditText`]); `data` must be an
    /// object without a member `name` (or with `null` there), where [`seal`](Self::seal) puts
    /// the commitment.
    pub fn with_text(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.texts.push(AuditText::new(name, value));
        self
    }

    /// The attached text called `name`.
    pub fn text(&self, name: &str) -> Option<&AuditText> {
        self.texts.iter().find(|t| t.name == name)
    }

    /// Whether a text still needs its salt and commitment.
    pub fn needs_sealing(&self) -> bool {
        self.texts
            .iter()
            .any(|t| matches!(t.content, Content::Pending(_)))
    }

    /// Seals every pending text: draws its salt from `salt` and writes its commitment into
    /// `data` under its name. Texts end sorted by name. Pure: the caller brings the
    /// randomness (the facade draws 32 bytes from the operating system per text).
    pub fn seal(&mut self, mut salt: impl FnMut() -> [u8; 32]) {
        for text in &mut self.texts {
            let Content::Pending(value) = &mut text.content else {
                continue;
            };
            let value = std::mem::take(value);
            let salt = salt();
            let hex = commitment(&salt, &text.name, &value);
            if let Some(data) = self.data.as_object_mut() {
                data.insert(text.name.clone(), serde_json::json!({ "commitment": hex }));
            }
            text.content = Content::Kept { value, salt };
        }
        self.texts.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Checks that every text is sealed and opens the commitment `data` holds under its name,
    /// with a valid name (1 to 64 of `a-z 0-9 _`) used once: what a store checks before
    /// keeping a record's texts, so it never keeps one the chain does not commit to.
    pub fn check_texts(&self) -> Result<(), TextError> {
        let fail = |name: &str, problem| TextError {
            name: name.chars().take(64).collect(),
            problem,
        };
        for (i, text) in self.texts.iter().enumerate() {
            if !valid_name(&text.name) {
                return Err(fail(
                    &text.name,
                    "names are 1 to 64 of `a-z`, `0-9` and `_`",
                ));
            }
            if self.texts[..i].iter().any(|t| t.name == text.name) {
                return Err(fail(&text.name, "attached twice"));
            }
            match text.content {
                Content::Kept { .. } if text.opens(&self.data) => {}
                Content::Kept { .. } => {
                    return Err(fail(&text.name, "the data does not hold its commitment"))
                }
                Content::Pending(_) => return Err(fail(&text.name, "not sealed")),
                _ => return Err(fail(&text.name, "not a kept text")),
            }
        }
        Ok(())
    }
}

/// A row of a store's side table of texts: what it keeps of one text.
///
/// `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct TextRow {
    /// The event's sequence number.
    pub seq: u64,
    /// The text's name.
    pub name: String,
    /// The value's JSON text; `None` once erased.
    pub value: Option<String>,
    /// The salt; `None` once erased.
    pub salt: Option<[u8; 32]>,
    /// The sequence number of the `text_erased` event, once erased.
    pub erased_by: Option<u64>,
}

impl TextRow {
    /// The row that keeps a sealed text of event `seq`; `None` for a text that is not kept.
    pub fn of(seq: u64, text: &AuditText) -> Option<Self> {
        match &text.content {
            Content::Kept { value, salt } => Some(Self {
                seq,
                name: text.name.clone(),
                value: Some(value.to_string()),
                salt: Some(*salt),
                erased_by: None,
            }),
            _ => None,
        }
    }

    /// Where it is kept.
    pub fn text_ref(&self) -> TextRef {
        TextRef::new(self.seq, self.name.clone())
    }
}

impl fmt::Debug for TextRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextRow")
            .field("seq", &self.seq)
            .field("name", &self.name)
            .field(
                "value",
                &self
                    .value
                    .as_ref()
                    .map(|v| format!("<hidden: {} bytes>", v.len())),
            )
            .field("erased_by", &self.erased_by)
            .finish_non_exhaustive()
    }
}

impl AuditEvent {
    /// Decodes a stored event and attaches its texts from the side table (rows of other
    /// events are ignored): each row becomes a [`TextState::Kept`] text if its value opens the
    /// commitment the event holds under its name, [`Erased`](TextState::Erased) if it was
    /// erased, [`Altered`](TextState::Altered) otherwise (value withheld); a commitment
    /// without a row is [`Missing`](TextState::Missing). Never fails because of a text.
    pub fn decode_with_texts(
        raw: RawEvent,
        rows: impl IntoIterator<Item = TextRow>,
    ) -> Result<Self, super::DecodeError> {
        let mut event = Self::decode(raw)?;
        event.attach_texts(rows);
        Ok(event)
    }

    /// Attaches texts from side-table rows, as [`decode_with_texts`](Self::decode_with_texts)
    /// does (replacing any attached before).
    pub fn attach_texts(&mut self, rows: impl IntoIterator<Item = TextRow>) {
        let seq = self.seq();
        let data = &self.record().data;
        let mut texts: Vec<AuditText> = Vec::new();
        for row in rows {
            if row.seq != seq || texts.iter().any(|t| t.name == row.name) {
                continue;
            }
            texts.push(text_of(row, data));
        }
        for name in commitment_names(data) {
            if !texts.iter().any(|t| t.name == name) {
                texts.push(AuditText::with(name.to_owned(), Content::Missing));
            }
        }
        texts.sort_by(|a, b| a.name.cmp(&b.name));
        self.record_mut().texts = texts;
    }

    /// The texts attached (see [`AuditText`]).
    pub fn texts(&self) -> &[AuditText] {
        &self.record().texts
    }

    /// The attached text called `name`.
    pub fn text(&self, name: &str) -> Option<&AuditText> {
        self.record().text(name)
    }
}

/// What a side-table row says, checked against the event's data.
fn text_of(row: TextRow, data: &Value) -> AuditText {
    if let Some(by) = row.erased_by {
        return AuditText::with(row.name, Content::Erased { by });
    }
    let kept = match (row.value, row.salt) {
        (Some(value), Some(salt)) => serde_json::from_str::<Value>(&value)
            .ok()
            .map(|value| AuditText::sealed(row.name.clone(), value, salt)),
        _ => None,
    };
    match kept {
        Some(text) if text.opens(data) => text,
        _ => AuditText::with(row.name, Content::Altered),
    }
}

/// Whether a side-table row opens the commitment `data` holds (for verification): the same
/// judgement as [`AuditEvent::attach_texts`], without building the text.
pub(crate) fn row_opens(row: &TextRow, data: &Value) -> bool {
    if row.erased_by.is_some() {
        return committed(data, &row.name).is_some();
    }
    match (&row.value, row.salt) {
        (Some(value), Some(salt)) => serde_json::from_str::<Value>(value)
            .ok()
            .and_then(|value| {
                committed(data, &row.name)
                    .map(|theirs| commitment(&salt, &row.name, &value) == theirs)
            })
            .unwrap_or(false),
        _ => false,
    }
}

/// The names of the commitments an event's data holds (for verification).
pub(crate) fn committed_names(data: &Value) -> Vec<String> {
    commitment_names(data).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Chain};
    use crate::timestamp::Timestamp;
    use serde_json::json;

    fn record() -> AuditRecord {
        AuditRecord::new(
            None,
            Timestamp::EPOCH,
            "voted",
            Actor::System,
            json!({ "vote": "reject", "feedback": null }),
        )
        .with_text("feedback", "the IBAN DE89… is wrong")
    }

    #[test]
    fn sealing_puts_the_commitment_in_the_data_and_keeps_the_value_beside_it() {
        let mut r = record();
        assert!(r.needs_sealing());
        assert!(r.check_texts().is_err());
        r.seal(|| [7; 32]);
        r.check_texts().unwrap();
        let text = r.text("feedback").unwrap();
        assert_eq!(text.state(), TextState::Kept);
        assert_eq!(
            r.data["feedback"]["commitment"].as_str().unwrap(),
            commitment(&[7; 32], "feedback", &json!("the IBAN DE89… is wrong"))
        );
        assert!(!format!("{r:?}").contains("DE89"));
        // The chain hashes the commitment, never the text.
        let event = Chain::new().append(r).unwrap();
        assert!(!String::from_utf8_lossy(event.bytes()).contains("DE89"));
    }

    #[test]
    fn rows_read_back_are_checked_against_the_commitment() {
        let mut r = record();
        r.seal(|| [7; 32]);
        let event = Chain::new().append(r.clone()).unwrap();
        let row = TextRow::of(1, &r.texts[0]).unwrap();
        let back = AuditEvent::decode_with_texts(event.raw().clone(), [row.clone()]).unwrap();
        assert_eq!(back.record(), &r);

        let mut edited = row.clone();
        edited.value = Some("\"nothing to see\"".into());
        let back = AuditEvent::decode_with_texts(event.raw().clone(), [edited]).unwrap();
        assert_eq!(back.text("feedback").unwrap().state(), TextState::Altered);
        assert_eq!(back.text("feedback").unwrap().value(), None);

        let erased = TextRow {
            value: None,
            salt: None,
            erased_by: Some(9),
            ..row
        };
        let back = AuditEvent::decode_with_texts(event.raw().clone(), [erased]).unwrap();
        assert_eq!(
            back.text("feedback").unwrap().state(),
            TextState::Erased { by: 9 }
        );

        let back = AuditEvent::decode_with_texts(event.raw().clone(), []).unwrap();
        assert_eq!(back.text("feedback").unwrap().state(), TextState::Missing);
    }

    #[test]
    fn unsealed_misnamed_or_uncommitted_texts_are_refused() {
        let mut r = record();
        r.seal(|| [1; 32]);
        let mut wrong = r.clone();
        wrong.data["feedback"] = json!({ "commitment": "00".repeat(32) });
        assert!(wrong.check_texts().is_err());
        let mut bad_name = AuditRecord::new(None, Timestamp::EPOCH, "x", Actor::System, json!({}))
            .with_text("Bad Name", "x");
        bad_name.seal(|| [1; 32]);
        assert!(bad_name.check_texts().is_err());
        let mut twice = AuditRecord::new(None, Timestamp::EPOCH, "x", Actor::System, json!({}))
            .with_text("a", "x")
            .with_text("a", "y");
        twice.seal(|| [1; 32]);
        assert!(twice.check_texts().is_err());
    }
}
