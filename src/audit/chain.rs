//! The hash chain itself: hashes, heads, stored events and appending.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::record::{Actor, AuditRecord};
use crate::action::{parse_strict_json, write_canonical, write_string};

/// The largest sequence number a chain can reach (`i64::MAX`): stores keep sequence numbers in
/// signed 64-bit integer columns.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// A SHA-256 value of the chain: an event hash, a `prev_hash`, or a head.
///
/// Shown (and serialised) as 64 lowercase hex digits. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash([u8; 32]);

impl ChainHash {
    /// The `prev_hash` of event 1 and the hash of an empty chain:
    /// `SHA-256("agent-handoff/audit-chain/v1")` (the 28 ASCII bytes, no terminator) =
    /// `4d73a72e7b1475461acdca94a8f20ad4736abf9110b4f0f104c70b39424ebc22`.
    ///
    /// A domain-separated constant rather than 32 zero bytes, so a chain of another system that
    /// starts from zeros can never be mistaken for one of ours.
    pub const GENESIS: ChainHash = ChainHash([
        0x4d, 0x73, 0xa7, 0x2e, 0x7b, 0x14, 0x75, 0x46, 0x1a, 0xcd, 0xca, 0x94, 0xa8, 0xf2, 0x0a,
        0xd4, 0x73, 0x6a, 0xbf, 0x91, 0x10, 0xb4, 0xf0, 0xf1, 0x04, 0xc7, 0x0b, 0x39, 0x42, 0x4e,
        0xbc, 0x22,
    ]);

    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of event `seq` whose canonical bytes are `bytes`, linked to `prev_hash`:
    ///
    /// ```text
    /// hash = SHA-256( prev_hash (32 bytes) ‖ seq (8 bytes, unsigned big-endian) ‖ bytes )
    /// ```
    ///
    /// The sequence number is hashed beside the bytes so that the stored `seq` column is bound
    /// to the hash without parsing the bytes during verification.
    pub fn link(prev_hash: &ChainHash, seq: u64, bytes: &[u8]) -> ChainHash {
        let digest = Sha256::new()
            .chain_update(prev_hash.0)
            .chain_update(seq.to_be_bytes())
            .chain_update(bytes)
            .finalize();
        ChainHash(digest.into())
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, InvalidHash> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(InvalidHash);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(InvalidHash)?;
            let lo = hex_value(pair[1]).ok_or(InvalidHash)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl std::str::FromStr for ChainHash {
    type Err = InvalidHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// Text that is not 64 hex digits was given as a chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a chain hash must be 64 hex digits")]
pub struct InvalidHash;

/// Where a chain ends: the sequence number of its last event (0 for an empty chain, so it is
/// also the number of events) and that event's hash ([`ChainHash::GENESIS`] when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the last event; equals the number of events in the chain.
    pub seq: u64,
    /// Hash of the last event.
    pub hash: ChainHash,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: ChainHash::GENESIS,
    };
}

impl Default for ChainHead {
    fn default() -> Self {
        Self::GENESIS
    }
}

/// An audit event as a store keeps it: sequence number, canonical bytes and the two hashes,
/// not decoded. This is all verification looks at; decode it with [`AuditEvent::decode`] to
/// read the record.
///
/// The fields are public because a stored row is untrusted input: only
/// [`verify`](super::verify()) says whether it is intact.
#[derive(Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The canonical JSON bytes of the event (see the [module docs](super)).
    pub bytes: Vec<u8>,
    /// Hash of the previous event ([`ChainHash::GENESIS`] for event 1).
    pub prev_hash: ChainHash,
    /// `ChainHash::link(prev_hash, seq, bytes)`.
    pub hash: ChainHash,
}

impl fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes never hold secrets (the chain keeps salted commitments only).
        f.debug_struct("RawEvent")
            .field("seq", &self.seq)
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .field("prev_hash", &self.prev_hash)
            .field("hash", &self.hash)
            .finish()
    }
}

impl AsRef<RawEvent> for RawEvent {
    fn as_ref(&self) -> &RawEvent {
        self
    }
}

/// A chained audit event: the [`AuditRecord`] with its sequence number, canonical bytes,
/// `prev_hash` and hash.
///
/// Built only by [`Chain::append`] or by decoding stored bytes ([`AuditEvent::decode`]), so the
/// record always says what the hashed bytes say.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    raw: RawEvent,
    record: AuditRecord,
}

impl AuditEvent {
    /// Decodes a stored event's canonical bytes into its record.
    ///
    /// This does not check the hashes (that is [`verify`](super::verify())); it refuses bytes
    /// that are not a JSON object with exactly the members `seq`, `ticket`, `at`, `kind`,
    /// `actor` and `data`, and bytes whose `seq` differs from the stored one.
    pub fn decode(raw: RawEvent) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(&raw.bytes).map_err(|_| DecodeError {
            seq: raw.seq,
            problem: "bytes are not UTF-8".into(),
        })?;
        let fail = |problem: String| DecodeError {
            seq: raw.seq,
            problem,
        };
        let value = parse_strict_json(text).map_err(|e| fail(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(fail("bytes are not a JSON object".into()));
        };
        const MEMBERS: [&str; 6] = ["actor", "at", "data", "kind", "seq", "ticket"];
        if object.len() != MEMBERS.len() || !MEMBERS.iter().all(|m| object.contains_key(*m)) {
            return Err(fail(
                "expected exactly the members seq, ticket, at, kind, actor, data".into(),
            ));
        }
        let seq = object
            .remove("seq")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| fail("missing or invalid `seq`".into()))?;
        if seq != raw.seq {
            return Err(fail(format!("bytes say seq {seq}")));
        }
        let record: AuditRecord =
            serde_json::from_value(Value::Object(object)).map_err(|e| fail(e.to_string()))?;
        Ok(Self { raw, record })
    }

    /// Position in the chain, from 1.
    pub fn seq(&self) -> u64 {
        self.raw.seq
    }

    /// The record: ticket, time, kind, actor and data.
    pub fn record(&self) -> &AuditRecord {
        &self.record
    }

    /// The canonical bytes that were hashed.
    pub fn bytes(&self) -> &[u8] {
        &self.raw.bytes
    }

    /// Hash of the previous event.
    pub fn prev_hash(&self) -> &ChainHash {
        &self.raw.prev_hash
    }

    /// This event's hash.
    pub fn hash(&self) -> &ChainHash {
        &self.raw.hash
    }

    /// The chain head once this event is appended.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.raw.seq,
            hash: self.raw.hash,
        }
    }

    pub(super) fn record_mut(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// The stored form.
    pub fn raw(&self) -> &RawEvent {
        &self.raw
    }

    /// Splits into the stored form and the record.
    pub fn into_parts(self) -> (RawEvent, AuditRecord) {
        (self.raw, self.record)
    }
}

impl AsRef<RawEvent> for AuditEvent {
    fn as_ref(&self) -> &RawEvent {
        &self.raw
    }
}

impl From<AuditEvent> for RawEvent {
    fn from(event: AuditEvent) -> Self {
        event.raw
    }
}

/// Stored bytes that are not a well-formed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit event {seq} cannot be decoded: {problem}")]
pub struct DecodeError {
    /// The stored sequence number.
    pub seq: u64,
    /// What is wrong.
    pub problem: String,
}

/// The chain reached [`MAX_SEQ`] events; nothing more can be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain is full at seq {seq}")]
pub struct ChainFull {
    /// The head's sequence number.
    pub seq: u64,
}

/// The appending side of the chain. Pure: it only holds the head; the store persists the events
/// it returns, and keeps the head (resume with [`Chain::resume`]).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    head: ChainHead,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after `head` (the store's last event). The head is trusted as given: verify the
    /// stored chain first if it may have been tampered with.
    pub fn resume(head: ChainHead) -> Self {
        Self { head }
    }

    /// The current head.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Chains `record` as the next event and advances the head.
    ///
    /// The record's `data` must hold no sensitive values (store salted commitments, e.g. the
    /// action's committed parameters), so that erasing a secret never breaks verification.
    pub fn append(&mut self, record: AuditRecord) -> Result<AuditEvent, ChainFull> {
        let seq = match self.head.seq.checked_add(1) {
            Some(seq) if seq <= MAX_SEQ => seq,
            _ => return Err(ChainFull { seq: self.head.seq }),
        };
        let bytes = canonical_bytes(seq, &record);
        let prev_hash = self.head.hash;
        let hash = ChainHash::link(&prev_hash, seq, &bytes);
        self.head = ChainHead { seq, hash };
        Ok(AuditEvent {
            raw: RawEvent {
                seq,
                bytes,
                prev_hash,
                hash,
            },
            record,
        })
    }
}

/// The canonical JSON (RFC 8785) of the event, the bytes that are hashed: written directly,
/// members in their canonical order (`actor`, `at`, `data`, `kind`, `seq`, `ticket`), so
/// appending neither copies the record's data nor can fail. It equals
/// `canonical_json(&canonical_value(seq, record))` (tested), and `actor`'s members mirror
/// `Actor`'s serde form (tested).
fn canonical_bytes(seq: u64, record: &AuditRecord) -> Vec<u8> {
    use std::io::Write as _;
    let (tag, id) = actor_parts(&record.actor);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"actor\":{");
    if let Some(id) = id {
        out.extend_from_slice(b"\"id\":");
        write_string(id, &mut out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"type\":");
    write_string(tag, &mut out);
    // Writing to a Vec cannot fail; integers are canonical as plain decimals.
    let _ = write!(out, "}},\"at\":{},\"data\":", record.at.as_unix_millis());
    write_canonical(&record.data, &mut out);
    out.extend_from_slice(b",\"kind\":");
    write_string(&record.kind, &mut out);
    let _ = write!(out, ",\"seq\":{seq},\"ticket\":");
    match &record.ticket {
        Some(ticket) => write_string(&ticket.to_string(), &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    out
}

/// `Actor`'s serde tag and id.
fn actor_parts(actor: &Actor) -> (&'static str, Option<&str>) {
    match actor {
        Actor::Agent(id) => ("agent", Some(id.as_str())),
        Actor::Reviewer(id) => ("reviewer", Some(id.as_str())),
        Actor::Operator(id) => ("operator", Some(id.as_str())),
        Actor::Policy => ("policy", None),
        Actor::System => ("system", None),
        Actor::Unauthenticated => ("unauthenticated", None),
    }
}

/// The JSON object whose canonical form is hashed, as a value: the reference
/// [`canonical_bytes`] is tested against.
#[cfg(test)]
fn canonical_value(seq: u64, record: &AuditRecord) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("actor".into(), actor_value(&record.actor));
    object.insert("at".into(), Value::from(record.at.as_unix_millis()));
    object.insert("data".into(), record.data.clone());
    object.insert("kind".into(), Value::from(record.kind.as_str()));
    object.insert("seq".into(), Value::from(seq));
    object.insert(
        "ticket".into(),
        match &record.ticket {
            Some(ticket) => Value::from(ticket.to_string()),
            None => Value::Null,
        },
    );
    Value::Object(object)
}

#[cfg(test)]
fn actor_value(actor: &Actor) -> Value {
    let (tag, id) = actor_parts(actor);
    let mut object = serde_json::Map::new();
    if let Some(id) = id {
        object.insert("id".into(), Value::from(id));
    }
    object.insert("type".into(), Value::from(tag));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentId, PersonId, Timestamp};

    #[test]
    fn genesis_is_the_documented_domain_separated_hash() {
        let expected: [u8; 32] = Sha256::digest(b"agent-handoff/audit-chain/v1").into();
        assert_eq!(ChainHash::GENESIS.as_bytes(), &expected);
        assert_eq!(
            ChainHash::GENESIS.to_string(),
            "4d73a72e7b1475461acdca94a8f20ad4736abf9110b4f0f104c70b39424ebc22"
        );
    }

    #[test]
    fn link_hashes_prev_then_big_endian_seq_then_bytes() {
        let prev = ChainHash::from_bytes([7; 32]);
        let mut input = vec![7u8; 32];
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        input.extend_from_slice(b"{}");
        let expected: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(ChainHash::link(&prev, 258, b"{}").as_bytes(), &expected);
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let h = ChainHash::link(&ChainHash::GENESIS, 1, b"x");
        assert_eq!(ChainHash::from_hex(&h.to_string()), Ok(h));
        assert_eq!(ChainHash::from_hex(&h.to_string().to_uppercase()), Ok(h));
        assert!(ChainHash::from_hex("00").is_err());
        assert!(ChainHash::from_hex(&"g".repeat(64)).is_err());
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<ChainHash>(&json).unwrap(), h);
    }

    #[test]
    fn actor_value_matches_the_serde_form() {
        let actors = [
            Actor::Agent(AgentId::new("bot").unwrap()),
            Actor::Reviewer(PersonId::new("alice").unwrap()),
            Actor::Operator(PersonId::new("olga").unwrap()),
            Actor::Policy,
            Actor::System,
            Actor::Unauthenticated,
        ];
        for actor in actors {
            assert_eq!(actor_value(&actor), serde_json::to_value(&actor).unwrap());
        }
    }

    #[test]
    fn canonical_bytes_equal_the_canonical_form_of_the_event_value() {
        use crate::TicketId;
        let actors = [
            Actor::Agent(AgentId::new("bot").unwrap()),
            Actor::Reviewer(PersonId::new("alice").unwrap()),
            Actor::Operator(PersonId::new("olga").unwrap()),
            Actor::Policy,
            Actor::System,
            Actor::Unauthenticated,
        ];
        let data = [
            serde_json::json!(null),
            serde_json::json!({}),
            serde_json::json!({"z": [1, 2.5, -3e-7, 1e30], "a": {"é": "\u{2028}\"\\", "€": true, "a": null}}),
            serde_json::json!("a string with \u{1F600} and \u{0001}"),
        ];
        let tickets = [None, Some(TicketId::from_uuid(uuid::Uuid::from_u128(42)))];
        for (i, actor) in actors.iter().enumerate() {
            for (j, data) in data.iter().enumerate() {
                for ticket in tickets {
                    let record = AuditRecord {
                        texts: Vec::new(),
                        ticket,
                        at: Timestamp::from_unix_millis(1_700_000_000_000 - (i * j) as i64 * 7),
                        kind: if j % 2 == 0 {
                            "voted"
                        } else {
                            "kind \"quoted\""
                        }
                        .into(),
                        actor: actor.clone(),
                        data: data.clone(),
                    };
                    for seq in [1, 9_007_199_254_740_991] {
                        assert_eq!(
                            String::from_utf8(canonical_bytes(seq, &record)).unwrap(),
                            String::from_utf8(crate::action::canonical_json(&canonical_value(
                                seq, &record
                            )))
                            .unwrap(),
                        );
                    }
                }
            }
        }
        // Before the epoch too.
        let record = AuditRecord {
            texts: Vec::new(),
            ticket: None,
            at: Timestamp::from_unix_millis(-5),
            kind: "x".into(),
            actor: Actor::System,
            data: serde_json::json!(1),
        };
        assert_eq!(
            canonical_bytes(3, &record),
            crate::action::canonical_json(&canonical_value(3, &record))
        );
    }

    #[test]
    fn append_links_events_and_decode_round_trips() {
        let mut chain = Chain::new();
        let record = AuditRecord {
            texts: Vec::new(),
            ticket: None,
            at: Timestamp::from_unix_millis(1_700_000_000_000),
            kind: "proposed".into(),
            actor: Actor::System,
            data: serde_json::json!({"n": 1}),
        };
        let first = chain.append(record.clone()).unwrap();
        let second = chain.append(record.clone()).unwrap();
        assert_eq!(first.seq(), 1);
        assert_eq!(first.prev_hash(), &ChainHash::GENESIS);
        assert_eq!(second.prev_hash(), first.hash());
        assert_eq!(chain.head(), second.head());
        assert_eq!(
            std::str::from_utf8(first.bytes()).unwrap(),
            r#"{"actor":{"type":"system"},"at":1700000000000,"data":{"n":1},"kind":"proposed","seq":1,"ticket":null}"#
        );
        let decoded = AuditEvent::decode(second.raw().clone()).unwrap();
        assert_eq!(decoded, second);
    }

    #[test]
    fn decode_refuses_a_seq_that_differs_from_the_bytes() {
        let mut chain = Chain::new();
        let event = chain
            .append(AuditRecord {
                texts: Vec::new(),
                ticket: None,
                at: Timestamp::EPOCH,
                kind: "x".into(),
                actor: Actor::Policy,
                data: Value::Null,
            })
            .unwrap();
        let mut raw = event.raw().clone();
        raw.seq = 2;
        assert_eq!(AuditEvent::decode(raw).unwrap_err().seq, 2);
        let mut raw = event.raw().clone();
        raw.bytes = br#"{"seq":1}"#.to_vec();
        assert!(AuditEvent::decode(raw).is_err());
        // Six members, but `ticket` swapped for an unknown one (would default to `None`).
        let mut raw = event.raw().clone();
        raw.bytes =
            br#"{"actor":{"type":"policy"},"at":0,"data":null,"kind":"x","seq":1,"tickte":null}"#
                .to_vec();
        assert!(AuditEvent::decode(raw.clone()).is_err());
        raw.bytes =
            br#"{"actor":{"type":"policy"},"at":0,"data":null,"kind":"x","seq":1,"ticket":null}"#
                .to_vec();
        assert!(AuditEvent::decode(raw).is_ok());
    }

    #[test]
    fn a_full_chain_refuses_to_append() {
        let mut chain = Chain::resume(ChainHead {
            seq: MAX_SEQ,
            hash: ChainHash::GENESIS,
        });
        let record = AuditRecord {
            texts: Vec::new(),
            ticket: None,
            at: Timestamp::EPOCH,
            kind: "x".into(),
            actor: Actor::System,
            data: Value::Null,
        };
        assert_eq!(
            chain.append(record).unwrap_err(),
            ChainFull { seq: MAX_SEQ }
        );
        assert_eq!(chain.head().seq, MAX_SEQ);
    }
}
