//! The audit export: [`verify_jsonl`] (with and without a signed checkpoint),
//! [`verify_jsonl_against`] (the same, with the checkpoint's origin checked) and
//! [`Checkpoint::parse`].
//!
//! Input: a mode byte, then
//!
//! - mode `0` (export): the rest is a JSON Lines export, verified without a checkpoint;
//! - mode `1` (checkpoint): the rest is checkpoint text;
//! - otherwise (tamper): a chain of 1 to 6 events built from the bytes is exported and its
//!   head signed; then the bytes say how to tamper with the export (edit a byte, delete,
//!   duplicate, swap or insert lines, cut the tail, substitute another genuine chain), and the
//!   tampered export is verified with and without the checkpoint.
//!
//! Properties:
//!
//! - nothing panics, and the verdict is exactly that of an independent verifier written from
//!   the module docs (`hash = SHA-256(prev_hash ‖ u64_be(seq) ‖ bytes)`, from
//!   `SHA-256("agent-handoff/audit-chain/v1")`): the same error kind, naming the same line or
//!   the same first bad event, or the same count and head;
//! - **tampering is detected and the first bad event named**: an export that verifies against
//!   the checkpoint holds exactly the events that were signed; one that verifies without it
//!   holds a prefix of them; a refusal about an event names the first event that differs from
//!   the genuine chain;
//! - a checkpoint that parses prints back to the same text; one that verifies was signed with
//!   the key over exactly its origin and head.

use std::io::BufRead as _;

use agent_handoff::audit::{
    from_jsonl, to_jsonl, verify_jsonl, verify_jsonl_against, Actor, AuditRecord, Chain, ChainHash,
    ChainHead, Checkpoint, CheckpointError, CheckpointKey, ExportError, RawEvent, VerifyError,
    VerifyJsonlError,
};
use agent_handoff::{AgentId, PersonId, TicketId, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::input::{edit_byte, Input};

const ORIGIN: &str = "fuzz.example/audit";

fn key() -> CheckpointKey {
    CheckpointKey::new("fuzz-2025", &[0x5a; 32]).expect("valid key")
}

/// Runs the check on one fuzzer input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() {
        0 => {
            check_export(input.rest(), None);
        }
        1 => check_checkpoint(&String::from_utf8_lossy(input.rest())),
        _ => check_tampered(input),
    }
}

/// The verdicts, as the independent verifier states them.
#[derive(Debug, PartialEq)]
enum Verdict {
    Ok {
        count: u64,
        head: ChainHead,
    },
    Io,
    Malformed {
        line: u64,
    },
    SeqRepeat {
        seq: u64,
        expected: u64,
    },
    SeqGap {
        seq: u64,
        expected: u64,
    },
    PrevMismatch {
        seq: u64,
    },
    HashMismatch {
        seq: u64,
    },
    Rewritten {
        seq: u64,
    },
    Truncated {
        checkpoint_size: u64,
        chain_size: u64,
    },
}

fn genesis() -> ChainHash {
    ChainHash::from_bytes(Sha256::digest(b"agent-handoff/audit-chain/v1").into())
}

fn link(prev: &ChainHash, seq: u64, bytes: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(bytes);
    ChainHash::from_bytes(h.finalize().into())
}

/// Lines as `BufRead::lines` gives them (split at `\n`, a `\r` right before the `\n` dropped,
/// no empty last line after a final newline; an unterminated last line keeps its `\r`), still
/// as bytes.
fn raw_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    let mut lines: Vec<&[u8]> = lines
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    if !last.is_empty() {
        lines.push(last);
    }
    lines
}

/// The events of an export in order, up to the first line that cannot be read.
fn events(data: &[u8]) -> (Vec<RawEvent>, bool) {
    let mut out = Vec::new();
    for line in raw_lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            return (out, false);
        };
        if line.trim().is_empty() {
            continue;
        }
        match from_jsonl(line) {
            Ok(event) => out.push(event),
            Err(_) => return (out, false),
        }
    }
    (out, true)
}

/// The independent verifier.
fn reference(data: &[u8], expected: Option<ChainHead>) -> Verdict {
    let (mut seq, mut hash) = (0u64, genesis());
    let mut count = 0;
    let mut reached = expected.is_none_or(|e| e.seq == 0 && e.hash == hash);
    for (n, line) in raw_lines(data).into_iter().enumerate() {
        let Ok(line) = std::str::from_utf8(line) else {
            return Verdict::Io;
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = from_jsonl(line) else {
            return Verdict::Malformed { line: n as u64 + 1 };
        };
        let next = seq + 1;
        if event.seq < next {
            return Verdict::SeqRepeat {
                seq: event.seq,
                expected: next,
            };
        }
        if event.seq > next {
            return Verdict::SeqGap {
                seq: event.seq,
                expected: next,
            };
        }
        if event.prev_hash != hash {
            return Verdict::PrevMismatch { seq: event.seq };
        }
        if link(&hash, event.seq, &event.bytes) != event.hash {
            return Verdict::HashMismatch { seq: event.seq };
        }
        (seq, hash) = (event.seq, event.hash);
        count += 1;
        if let Some(want) = expected {
            if want.seq == seq {
                if want.hash != hash {
                    return Verdict::Rewritten { seq };
                }
                reached = true;
            }
        }
    }
    if let Some(want) = expected {
        if !reached {
            if want.seq > seq {
                return Verdict::Truncated {
                    checkpoint_size: want.seq,
                    chain_size: seq,
                };
            }
            return Verdict::Rewritten { seq: want.seq };
        }
    }
    Verdict::Ok {
        count,
        head: ChainHead { seq, hash },
    }
}

fn verdict(result: Result<agent_handoff::audit::VerifySummary, VerifyJsonlError>) -> Verdict {
    match result {
        Ok(summary) => Verdict::Ok {
            count: summary.count,
            head: summary.head,
        },
        Err(VerifyJsonlError::Export(ExportError::Io(_))) => Verdict::Io,
        Err(VerifyJsonlError::Export(ExportError::Malformed { line, .. })) => {
            Verdict::Malformed { line }
        }
        Err(VerifyJsonlError::Chain(e)) => match e {
            VerifyError::SeqRepeat { seq, expected } => Verdict::SeqRepeat { seq, expected },
            VerifyError::SeqGap { seq, expected } => Verdict::SeqGap { seq, expected },
            VerifyError::PrevMismatch { seq } => Verdict::PrevMismatch { seq },
            VerifyError::HashMismatch { seq } => Verdict::HashMismatch { seq },
            VerifyError::Rewritten { seq } => Verdict::Rewritten { seq },
            VerifyError::Truncated {
                checkpoint_size,
                chain_size,
            } => Verdict::Truncated {
                checkpoint_size,
                chain_size,
            },
            other => panic!("unexpected chain error {other:?}"),
        },
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Verifies `data` (with the checkpoint, if any) and compares with the reference.
fn check_export(data: &[u8], checkpoint: Option<&Checkpoint>) -> Verdict {
    assert_eq!(genesis(), ChainHash::GENESIS);
    let keys = [key()];
    let got = verdict(verify_jsonl(data, checkpoint.map(|cp| (cp, &keys[..]))));
    let expected = checkpoint.map(|cp| cp.verify(&keys).expect("a signed checkpoint"));
    let want = reference(data, expected);
    assert_eq!(got, want, "verify_jsonl disagrees with the reference");
    if let Some(cp) = checkpoint {
        // The origin-checking twin agrees for the chain the checkpoint is of, and refuses the
        // checkpoint for any other.
        let against = verdict(verify_jsonl_against(
            data,
            std::slice::from_ref(cp),
            &keys,
            ORIGIN,
        ));
        assert_eq!(
            against, want,
            "verify_jsonl_against disagrees with the reference"
        );
        assert!(matches!(
            verify_jsonl_against(data, std::slice::from_ref(cp), &keys, "fuzz.example/other"),
            Err(VerifyJsonlError::Checkpoint(
                CheckpointError::WrongOrigin { .. }
            ))
        ));
    }
    // `lines()` and the reference split alike.
    let read: Vec<Vec<u8>> = data
        .lines()
        .map_while(Result::ok)
        .map(String::into_bytes)
        .collect();
    let mine = raw_lines(data);
    assert!(read.len() <= mine.len());
    for (a, b) in read.iter().zip(&mine) {
        assert_eq!(a.as_slice(), *b);
    }
    got
}

fn check_checkpoint(text: &str) {
    let Ok(cp) = Checkpoint::parse(text) else {
        return;
    };
    assert_eq!(cp.to_text(), text, "a parsed checkpoint prints differently");
    assert_eq!(Checkpoint::parse(&cp.to_text()).as_ref(), Ok(&cp));
    if let Ok(head) = cp.verify(&[key()]) {
        assert_eq!(head, cp.head());
        let ours = Checkpoint::sign(cp.origin(), head, &key()).expect("a signed origin is valid");
        let line = ours
            .to_text()
            .lines()
            .last()
            .expect("a signature line")
            .to_owned();
        assert!(
            text.lines().any(|l| l == line),
            "verified without our signature"
        );
    }
}

fn record(input: &mut Input<'_>, i: usize) -> AuditRecord {
    let ticket_bytes: [u8; 16] = input.array();
    let id = input.text();
    let actor = match input.byte() % 6 {
        0 => AgentId::new(id).map(Actor::Agent).unwrap_or(Actor::System),
        1 => PersonId::new(id)
            .map(Actor::Reviewer)
            .unwrap_or(Actor::System),
        2 => PersonId::new(id)
            .map(Actor::Operator)
            .unwrap_or(Actor::System),
        3 => Actor::Policy,
        4 => Actor::Unauthenticated,
        _ => Actor::System,
    };
    AuditRecord::new(
        (ticket_bytes[0] % 2 == 0)
            .then(|| TicketId::from_uuid(uuid::Uuid::from_bytes(ticket_bytes))),
        Timestamp::from_unix_millis(input.i64()),
        input.text(),
        actor,
        serde_json::json!({ "note": input.text(), "i": i }),
    )
}

fn export(events: &[RawEvent]) -> Vec<Vec<u8>> {
    events.iter().map(|e| to_jsonl(e).into_bytes()).collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

fn check_tampered(mut input: Input<'_>) {
    let n = 1 + usize::from(input.byte() % 6);
    let mut chain = Chain::new();
    let genuine: Vec<RawEvent> = (0..n)
        .map(|i| {
            chain
                .append(record(&mut input, i))
                .expect("room")
                .raw()
                .clone()
        })
        .collect();
    let head = chain.head();
    let checkpoint = Checkpoint::sign(ORIGIN, head, &key()).expect("valid origin");
    let mut other = Chain::new();
    let impostor: Vec<RawEvent> = (0..n)
        .map(|i| {
            let mut r = record(&mut Input::new(&[]), i);
            r.kind = "impostor".into();
            other.append(r).expect("room").raw().clone()
        })
        .collect();

    let mut lines = export(&genuine);
    // The genuine export verifies both ways.
    assert_eq!(
        check_export(&join(&lines), Some(&checkpoint)),
        Verdict::Ok {
            count: n as u64,
            head
        }
    );
    assert_eq!(
        check_export(&join(&lines), None),
        Verdict::Ok {
            count: n as u64,
            head
        }
    );

    // Events of another genuine chain link correctly at its own positions, so once one is
    // spliced in, only the checkpoint can tell (the chain alone is not expected to).
    let mut foreign = false;
    for _ in 0..=input.byte() % 3 {
        let op = input.byte();
        let i = usize::from(input.byte());
        let j = usize::from(input.byte());
        let len = lines.len().max(1);
        match op % 8 {
            0 => {
                let (pos, value) = (input.u16(), input.byte());
                if let Some(line) = lines.get_mut(i % len) {
                    if let Some(edited) = edit_byte(line, pos, value) {
                        *line = edited;
                    }
                }
            }
            1 if !lines.is_empty() => {
                lines.remove(i % len);
            }
            2 if !lines.is_empty() => {
                let copy = lines[i % len].clone();
                lines.insert((j % (len + 1)).min(lines.len()), copy);
            }
            3 if !lines.is_empty() => lines.swap(i % len, j % len),
            4 => lines.truncate(i % (len + 1)),
            5 => lines.insert((i % (len + 1)).min(lines.len()), b" \t".to_vec()),
            6 => {
                foreign = true;
                let line = to_jsonl(&impostor[i % impostor.len()]).into_bytes();
                lines.insert((j % (len + 1)).min(lines.len()), line);
            }
            7 => {
                foreign = true;
                lines = export(&impostor[..=(i % impostor.len())]);
            }
            _ => {}
        }
    }
    let tampered = join(&lines);
    let (seen, readable) = events(&tampered);
    for (cp, complete) in [(Some(&checkpoint), true), (None, false)] {
        match check_export(&tampered, cp) {
            Verdict::Ok { count, .. } => {
                assert!(readable);
                assert_eq!(count as usize, seen.len());
                if complete {
                    assert_eq!(
                        seen, genuine,
                        "a tampered export verified against the checkpoint"
                    );
                } else if !foreign {
                    assert!(genuine.starts_with(&seen), "a tampered export verified");
                }
            }
            Verdict::SeqRepeat { seq, .. }
            | Verdict::SeqGap { seq, .. }
            | Verdict::PrevMismatch { seq }
            | Verdict::HashMismatch { seq }
                if !foreign =>
            {
                // The first event that differs from the genuine chain is the one named.
                let first = seen
                    .iter()
                    .zip(&genuine)
                    .position(|(a, b)| a != b)
                    .unwrap_or(genuine.len().min(seen.len()));
                assert_eq!(
                    seen.get(first).map(|e| e.seq),
                    Some(seq),
                    "the refusal names another event than the first bad one"
                );
            }
            Verdict::Truncated {
                checkpoint_size,
                chain_size,
            } => {
                assert!(complete);
                assert_eq!(checkpoint_size, n as u64);
                assert_eq!(chain_size as usize, seen.len());
                assert!(foreign || genuine.starts_with(&seen));
            }
            Verdict::Rewritten { seq } => {
                assert!(complete);
                assert_eq!(seq, n as u64);
                assert_ne!(seen.get(n - 1), genuine.get(n - 1));
            }
            Verdict::Io | Verdict::Malformed { .. } => assert!(!readable),
            _ => {}
        }
    }
}
