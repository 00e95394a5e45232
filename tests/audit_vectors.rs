//! Golden vectors for the audit chain and checkpoint formats, computed independently (Python
//! `hashlib`/`hmac`/`base64` following the formats in `src/audit/mod.rs`), so a verifier in
//! another language has something to check itself against.

use agent_handoff::audit::{
    verify, Actor, AuditRecord, Chain, ChainHash, ChainHead, Checkpoint, CheckpointKey, RawEvent,
};
use agent_handoff::{PersonId, Timestamp};

const BYTES_1: &str = r#"{"actor":{"type":"system"},"at":1700000000000,"data":{"n":1},"kind":"proposed","seq":1,"ticket":null}"#;
const BYTES_2: &str = r#"{"actor":{"id":"alice","type":"reviewer"},"at":1700000001000,"data":{},"kind":"voted","seq":2,"ticket":"01890a5d-ac96-774b-bcce-b302099a8057"}"#;
const HASH_1: &str = "2528b384c6457e41b483e3c0a930e459ffc07090f4e7d2da63f45b993b79217b";
const HASH_2: &str = "23fd266e88b8feff8654784cfb0a1ae46f1cd24916c76689840a9d610cb0b132";
const CHECKPOINT: &str = "audit.example.com/prod\n2\nI/0mboi4/v+GVHhM+woa5G8c0kkWx2aJhAqdYQywsTI=\n\n\u{2014} audit.example.com/2025-01 VK/sRvxOp7uD3kUrxZI1YDxQ2FQ7VNHQfxwyyY/55PSHU6Dt\n";

fn hash(hex: &str) -> ChainHash {
    ChainHash::from_hex(hex).unwrap()
}

fn key() -> CheckpointKey {
    let secret: Vec<u8> = (0u8..32).collect();
    CheckpointKey::new("audit.example.com/2025-01", &secret).unwrap()
}

#[test]
fn appending_the_golden_records_yields_the_golden_bytes_and_hashes() {
    let mut chain = Chain::new();
    let first = chain
        .append(AuditRecord::new(
            None,
            Timestamp::from_unix_millis(1_700_000_000_000),
            "proposed",
            Actor::System,
            serde_json::json!({"n": 1}),
        ))
        .unwrap();
    let second = chain
        .append(AuditRecord::new(
            Some("01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap()),
            Timestamp::from_unix_millis(1_700_000_001_000),
            "voted",
            Actor::Reviewer(PersonId::new("alice").unwrap()),
            serde_json::json!({}),
        ))
        .unwrap();
    assert_eq!(first.bytes(), BYTES_1.as_bytes());
    assert_eq!(second.bytes(), BYTES_2.as_bytes());
    assert_eq!(first.prev_hash(), &ChainHash::GENESIS);
    assert_eq!(first.hash(), &hash(HASH_1));
    assert_eq!(second.hash(), &hash(HASH_2));
    assert_eq!(
        chain.head(),
        ChainHead {
            seq: 2,
            hash: hash(HASH_2)
        }
    );
}

#[test]
fn stored_golden_rows_verify_without_any_json() {
    let rows = vec![
        RawEvent {
            seq: 1,
            bytes: BYTES_1.as_bytes().to_vec(),
            prev_hash: ChainHash::GENESIS,
            hash: hash(HASH_1),
        },
        RawEvent {
            seq: 2,
            bytes: BYTES_2.as_bytes().to_vec(),
            prev_hash: hash(HASH_1),
            hash: hash(HASH_2),
        },
    ];
    let summary = verify(&rows).unwrap();
    assert_eq!(summary.count, 2);
    assert_eq!(summary.head.hash, hash(HASH_2));
}

#[test]
fn golden_checkpoint_is_reproduced_and_verifies() {
    let head = ChainHead {
        seq: 2,
        hash: hash(HASH_2),
    };
    let signed = Checkpoint::sign("audit.example.com/prod", head, &key()).unwrap();
    assert_eq!(signed.to_text(), CHECKPOINT);
    assert_eq!(key().key_id(), 0x54af_ec46);
    let parsed = Checkpoint::parse(CHECKPOINT).unwrap();
    assert_eq!(parsed.origin(), "audit.example.com/prod");
    assert_eq!(parsed.verify(&[key()]).unwrap(), head);
}

/// A text kept beside the chain (see `agent_handoff::audit`, "Texts"): the event holds its
/// commitment `HMAC-SHA256(salt, name ‖ 0x00 ‖ JCS(value))` under its name, never the value.
/// Event 3 of the golden chain, a rejection whose feedback names an IBAN, sealed with the salt
/// `00 01 … 1f`.
const TEXT_VALUE: &str = "transfer to DE89 3704 0044 0532 0130 00 rejected: \u{2028} \"quoted\"";
const TEXT_COMMITMENT: &str = "b4b167ef895c0a88d4bdc9c859a28489abfb41333efe5c7f2fd42a2705182a23";
const BYTES_3: &str = r#"{"actor":{"id":"alice","type":"reviewer"},"at":1700000002000,"data":{"feedback":{"commitment":"b4b167ef895c0a88d4bdc9c859a28489abfb41333efe5c7f2fd42a2705182a23"},"vote":"reject"},"kind":"voted","seq":3,"ticket":"01890a5d-ac96-774b-bcce-b302099a8057"}"#;
const HASH_3: &str = "debe0ddf13eb5cdaf29f5997242d3513b298a34e401a2bcf514a837573a17e13";

#[test]
fn a_sealed_text_is_committed_in_the_golden_form() {
    use agent_handoff::audit::{AuditEvent, TextRow, TextState};

    let salt: [u8; 32] = std::array::from_fn(|i| i as u8);
    let mut record = AuditRecord::new(
        Some("01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap()),
        Timestamp::from_unix_millis(1_700_000_002_000),
        "voted",
        Actor::Reviewer(PersonId::new("alice").unwrap()),
        serde_json::json!({ "vote": "reject", "feedback": null }),
    )
    .with_text("feedback", TEXT_VALUE);
    record.seal(|| salt);
    assert_eq!(
        record.text("feedback").unwrap().commitment().as_deref(),
        Some(TEXT_COMMITMENT)
    );
    let mut chain = Chain::resume(ChainHead {
        seq: 2,
        hash: hash(HASH_2),
    });
    let third = chain.append(record.clone()).unwrap();
    assert_eq!(third.bytes(), BYTES_3.as_bytes());
    assert_eq!(third.hash(), &hash(HASH_3));
    // Read back from a side-table row, the text opens the commitment in the bytes.
    let row = TextRow::of(3, record.text("feedback").unwrap()).unwrap();
    let back = AuditEvent::decode_with_texts(third.raw().clone(), [row]).unwrap();
    assert_eq!(back.text("feedback").unwrap().state(), TextState::Kept);
    assert_eq!(back.text("feedback").unwrap().as_str(), Some(TEXT_VALUE));
}
