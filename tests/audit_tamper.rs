//! Every kind of tampering with a stored chain is detected, and the first bad event is named.

use agent_handoff::audit::{
    kind, verify, Actor, AuditEvent, AuditRecord, Chain, ChainHead, Checkpoint, CheckpointError,
    CheckpointKey, RawEvent, Verifier, VerifyError,
};
use agent_handoff::{AgentId, PersonId, TicketId, Timestamp};
use proptest::prelude::*;

fn record(i: u64, pad: usize) -> AuditRecord {
    let actor = match i % 3 {
        0 => Actor::Agent(AgentId::new("billing-agent").unwrap()),
        1 => Actor::Reviewer(PersonId::new("alice").unwrap()),
        _ => Actor::System,
    };
    AuditRecord::new(
        Some(TicketId::from_uuid(uuid::Uuid::from_u128(
            0x0189_0a5d_ac96_774b_bcce_b302_099a_8057 + u128::from(i),
        ))),
        Timestamp::from_unix_millis(1_700_000_000_000 + i as i64 * 1000),
        kind::VOTED,
        actor,
        serde_json::json!({ "i": i, "note": "x".repeat(pad) }),
    )
}

fn build(n: u64) -> (Vec<RawEvent>, ChainHead) {
    let mut chain = Chain::new();
    let events = (1..=n)
        .map(|i| RawEvent::from(chain.append(record(i, 40)).unwrap()))
        .collect();
    (events, chain.head())
}

fn key() -> CheckpointKey {
    CheckpointKey::new("audit.test/k1", b"0123456789abcdef0123456789abcdef").unwrap()
}

/// Signs the head, renders and re-parses the text, and checks the signature: what a kept
/// checkpoint gives back.
fn kept_checkpoint(head: ChainHead) -> ChainHead {
    let text = Checkpoint::sign("audit.test", head, &key())
        .unwrap()
        .to_text();
    Checkpoint::parse(&text).unwrap().verify(&[key()]).unwrap()
}

#[test]
fn an_untouched_chain_verifies_and_matches_its_checkpoint() {
    let (events, head) = build(10);
    let summary = Verifier::new()
        .expect_head(kept_checkpoint(head))
        .verify(&events)
        .unwrap();
    assert_eq!(summary.count, 10);
    assert_eq!(summary.head, head);
}

#[test]
fn decoded_events_verify_too() {
    let (events, _) = build(3);
    let decoded: Vec<AuditEvent> = events
        .into_iter()
        .map(|raw| AuditEvent::decode(raw).unwrap())
        .collect();
    assert_eq!(decoded[1].record(), &record(2, 40));
    assert_eq!(verify(decoded).unwrap().count, 3);
}

#[test]
fn an_edited_data_byte_is_a_hash_mismatch_at_that_event() {
    let (mut events, _) = build(10);
    let i = events[4].bytes.len() - 5;
    events[4].bytes[i] ^= 0x01;
    assert!(matches!(
        verify(&events),
        Err(VerifyError::HashMismatch { seq: 5 })
    ));
}

#[test]
fn an_edited_hash_is_a_hash_mismatch_at_that_event() {
    let (mut events, _) = build(10);
    let mut bytes = *events[6].hash.as_bytes();
    bytes[0] ^= 0x80;
    events[6].hash = agent_handoff::audit::ChainHash::from_bytes(bytes);
    let err = verify(&events).unwrap_err();
    assert!(matches!(err, VerifyError::HashMismatch { seq: 7 }));
    assert_eq!(err.seq(), Some(7));
}

#[test]
fn an_edited_prev_hash_is_a_prev_mismatch_at_that_event() {
    let (mut events, _) = build(10);
    events[2].prev_hash = events[0].hash;
    assert!(matches!(
        verify(&events),
        Err(VerifyError::PrevMismatch { seq: 3 })
    ));
}

#[test]
fn an_edited_stored_seq_is_detected_even_if_renumbered_consistently() {
    // The seq column alone changed on every event from 4 on: continuity holds from there, but
    // the seq is part of the hash input.
    let (events, _) = build(10);
    let mut renumbered: Vec<RawEvent> = events[..3].to_vec();
    renumbered.extend(events[4..].iter().cloned().map(|mut e| {
        e.seq -= 1;
        e
    }));
    // Event 5 moved to seq 4: its prev_hash is event 4's hash, not event 3's.
    assert!(matches!(
        verify(&renumbered),
        Err(VerifyError::PrevMismatch { seq: 4 })
    ));
    // Same but with prev_hash patched too: now only the seq binding catches it.
    let mut patched = renumbered.clone();
    patched[3].prev_hash = events[2].hash;
    assert!(matches!(
        verify(&patched),
        Err(VerifyError::HashMismatch { seq: 4 })
    ));
}

#[test]
fn a_deleted_event_is_a_gap_at_the_next_one() {
    let (mut events, _) = build(10);
    events.remove(5);
    assert!(matches!(
        verify(&events),
        Err(VerifyError::SeqGap {
            seq: 7,
            expected: 6
        })
    ));
    let (mut events, _) = build(10);
    events.remove(0);
    assert!(matches!(
        verify(&events),
        Err(VerifyError::SeqGap {
            seq: 2,
            expected: 1
        })
    ));
}

#[test]
fn an_inserted_copy_is_a_repeat() {
    let (mut events, _) = build(10);
    let copy = events[3].clone();
    events.insert(4, copy);
    assert!(matches!(
        verify(&events),
        Err(VerifyError::SeqRepeat {
            seq: 4,
            expected: 5
        })
    ));
}

#[test]
fn an_inserted_forgery_is_caught_at_the_genuine_event_after_it() {
    // The forger links the new event correctly (the chain has no key), but cannot fix the
    // genuine event that follows without rewriting everything after it.
    let (events, _) = build(10);
    let mut forger = Chain::resume(ChainHead {
        seq: 5,
        hash: events[4].hash,
    });
    let forged = RawEvent::from(forger.append(record(99, 40)).unwrap());
    let mut tampered = events.clone();
    tampered.insert(5, forged.clone());
    assert!(matches!(
        verify(&tampered),
        Err(VerifyError::SeqRepeat {
            seq: 6,
            expected: 7
        })
    ));
    // Renumbering the genuine tail to make room: its prev_hash no longer fits.
    let mut renumbered = events[..5].to_vec();
    renumbered.push(forged);
    renumbered.extend(events[5..].iter().cloned().map(|mut e| {
        e.seq += 1;
        e
    }));
    assert!(matches!(
        verify(&renumbered),
        Err(VerifyError::PrevMismatch { seq: 7 })
    ));
}

#[test]
fn reordered_events_are_caught_at_the_first_misplaced_one() {
    let (mut events, _) = build(10);
    events.swap(2, 3);
    assert!(matches!(
        verify(&events),
        Err(VerifyError::SeqGap {
            seq: 4,
            expected: 3
        })
    ));
    // Swapping contents but keeping the seq column in order.
    let (mut events, _) = build(10);
    events.swap(2, 3);
    events[2].seq = 3;
    events[3].seq = 4;
    assert!(matches!(
        verify(&events),
        Err(VerifyError::PrevMismatch { seq: 3 })
    ));
}

#[test]
fn a_truncated_chain_fails_against_its_checkpoint() {
    let (mut events, head) = build(10);
    let checkpoint = kept_checkpoint(head);
    events.truncate(7);
    assert!(verify(&events).is_ok(), "truncation needs the checkpoint");
    let err = Verifier::new()
        .expect_head(checkpoint)
        .verify(&events)
        .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Truncated {
            checkpoint_size: 10,
            chain_size: 7
        }
    ));
    assert!(Verifier::new()
        .expect_head(checkpoint)
        .verify(Vec::<RawEvent>::new())
        .is_err());
}

#[test]
fn a_wholesale_rewrite_fails_against_its_checkpoint() {
    let (events, head) = build(10);
    let checkpoint = kept_checkpoint(head);
    // Rewrite from event 4 on, with recomputed hashes: internally consistent.
    let mut chain = Chain::resume(ChainHead {
        seq: 3,
        hash: events[2].hash,
    });
    let mut rewritten = events[..3].to_vec();
    for i in 4..=10 {
        let mut r = record(i, 40);
        if i == 4 {
            r.kind = kind::REJECTED.into();
        }
        rewritten.push(chain.append(r).unwrap().into());
    }
    assert!(verify(&rewritten).is_ok(), "a rewrite is consistent");
    let err = Verifier::new()
        .expect_head(checkpoint)
        .verify(&rewritten)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Rewritten { seq: 10 }));
    // A rewrite that also appends more events is caught at the checkpoint's size too.
    rewritten.push(chain.append(record(11, 40)).unwrap().into());
    assert!(matches!(
        Verifier::new().expect_head(checkpoint).verify(&rewritten),
        Err(VerifyError::Rewritten { seq: 10 })
    ));
}

#[test]
fn a_chain_that_grew_after_the_checkpoint_verifies() {
    let (events, _) = build(10);
    let checkpoint = kept_checkpoint(ChainHead {
        seq: 6,
        hash: events[5].hash,
    });
    let summary = Verifier::new()
        .expect_head(checkpoint)
        .verify(&events)
        .unwrap();
    assert_eq!(summary.head.seq, 10);
}

#[test]
fn a_checkpoint_forged_without_the_key_is_refused() {
    let (events, _) = build(3);
    let forged_head = ChainHead {
        seq: 3,
        hash: events[2].hash,
    };
    let wrong = CheckpointKey::new("audit.test/k1", &[0x55; 32]).unwrap();
    let text = Checkpoint::sign("audit.test", forged_head, &wrong)
        .unwrap()
        .to_text();
    assert_eq!(
        Checkpoint::parse(&text).unwrap().verify(&[key()]),
        Err(CheckpointError::BadSignature {
            key: "audit.test/k1".into()
        })
    );
}

#[test]
fn streaming_pages_and_fallible_sources_verify() {
    let (events, head) = build(25);
    let mut verifier = Verifier::new();
    for page in events.chunks(7) {
        for event in page {
            verifier.push(event).unwrap();
        }
    }
    assert_eq!(verifier.finish().unwrap().head, head);
    let source = events.iter().map(Ok::<_, std::io::Error>);
    assert_eq!(agent_handoff::audit::try_verify(source).unwrap().head, head);
}

#[derive(Debug, Clone)]
enum Tamper {
    FlipDataByte { index: usize, byte: usize },
    FlipHashByte { index: usize, byte: usize },
    FlipPrevByte { index: usize, byte: usize },
    Delete { index: usize },
    Swap { a: usize, b: usize },
    Duplicate { index: usize },
    SetSeq { index: usize, seq: u64 },
}

fn tamper_strategy() -> impl Strategy<Value = (u64, Vec<usize>, Tamper)> {
    (2u64..40).prop_flat_map(|n| {
        let idx = 0..n as usize;
        let tamper = prop_oneof![
            (idx.clone(), any::<usize>())
                .prop_map(|(index, byte)| Tamper::FlipDataByte { index, byte }),
            (idx.clone(), 0usize..32)
                .prop_map(|(index, byte)| Tamper::FlipHashByte { index, byte }),
            (idx.clone(), 0usize..32)
                .prop_map(|(index, byte)| Tamper::FlipPrevByte { index, byte }),
            idx.clone().prop_map(|index| Tamper::Delete { index }),
            (idx.clone(), idx.clone())
                .prop_filter("distinct", |(a, b)| a != b)
                .prop_map(|(a, b)| Tamper::Swap {
                    a: a.min(b),
                    b: a.max(b)
                }),
            idx.clone().prop_map(|index| Tamper::Duplicate { index }),
            (idx, any::<u64>()).prop_map(|(index, seq)| Tamper::SetSeq { index, seq }),
        ];
        (
            Just(n),
            proptest::collection::vec(0usize..300, n as usize),
            tamper,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_single_tampering_is_detected_at_the_right_event((n, pads, tamper) in tamper_strategy()) {
        let mut chain = Chain::new();
        let original: Vec<RawEvent> = pads
            .iter()
            .enumerate()
            .map(|(i, pad)| chain.append(record(i as u64 + 1, *pad)).unwrap().into())
            .collect();
        let checkpoint = chain.head();
        let mut events = original.clone();
        let seq = |i: usize| i as u64 + 1;
        // What the verifier must report.
        let expected: VerifyError = match tamper {
            Tamper::FlipDataByte { index, byte } => {
                let len = events[index].bytes.len();
                events[index].bytes[byte % len] ^= 0x20;
                VerifyError::HashMismatch { seq: seq(index) }
            }
            Tamper::FlipHashByte { index, byte } => {
                let mut h = *events[index].hash.as_bytes();
                h[byte] ^= 1;
                events[index].hash = agent_handoff::audit::ChainHash::from_bytes(h);
                VerifyError::HashMismatch { seq: seq(index) }
            }
            Tamper::FlipPrevByte { index, byte } => {
                let mut h = *events[index].prev_hash.as_bytes();
                h[byte] ^= 1;
                events[index].prev_hash = agent_handoff::audit::ChainHash::from_bytes(h);
                VerifyError::PrevMismatch { seq: seq(index) }
            }
            Tamper::Delete { index } => {
                events.remove(index);
                if index + 1 == n as usize {
                    VerifyError::Truncated { checkpoint_size: n, chain_size: n - 1 }
                } else {
                    VerifyError::SeqGap { seq: seq(index + 1), expected: seq(index) }
                }
            }
            Tamper::Swap { a, b } => {
                events.swap(a, b);
                VerifyError::SeqGap { seq: seq(b), expected: seq(a) }
            }
            Tamper::Duplicate { index } => {
                let copy = events[index].clone();
                events.insert(index + 1, copy);
                VerifyError::SeqRepeat { seq: seq(index), expected: seq(index + 1) }
            }
            Tamper::SetSeq { index, seq: new } => {
                prop_assume!(new != seq(index));
                events[index].seq = new;
                if new < seq(index) {
                    VerifyError::SeqRepeat { seq: new, expected: seq(index) }
                } else {
                    VerifyError::SeqGap { seq: new, expected: seq(index) }
                }
            }
        };
        let got = Verifier::new().expect_head(checkpoint).verify(&events);
        prop_assert_eq!(format!("{:?}", got), format!("{:?}", Err::<(), _>(expected)));
    }
}
