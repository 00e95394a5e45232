//! JSON Lines export of the chain, and the offline verifier for it.
//!
//! One event per line:
//!
//! ```json
//! {"seq":1,"prev_hash":"4d73…bc22","hash":"9f1c…","event":"{\"actor\":…}"}
//! ```
//!
//! `event` is the event's canonical bytes as a JSON string (they are UTF-8 JSON text), so the
//! exact hashed bytes survive the export; hashes are lowercase hex. A verifier in another
//! language parses each line, takes `event` as bytes, and applies the formula in the
//! [module docs](super).

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use super::chain::{ChainHash, RawEvent};
use super::checkpoint::{Checkpoint, CheckpointKey};
use super::verify::{Verifier, VerifyError, VerifySummary};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    prev_hash: ChainHash,
    hash: ChainHash,
    event: String,
}

/// Why an export line or file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A line is not a valid export record.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: String,
    },
    /// Reading failed.
    #[error("reading the export failed")]
    Io(#[from] std::io::Error),
}

/// One event as an export line (without the trailing newline).
pub fn to_jsonl(event: &RawEvent) -> String {
    let line = Line {
        seq: event.seq,
        prev_hash: event.prev_hash,
        hash: event.hash,
        // Canonical bytes are UTF-8 JSON; a lossy conversion could only alter invalid bytes,
        // and then verification of the exported line fails loudly, as it should.
        event: String::from_utf8_lossy(&event.bytes).into_owned(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// Parses one export line.
pub fn from_jsonl(line: &str) -> Result<RawEvent, String> {
    let parsed: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(RawEvent {
        seq: parsed.seq,
        bytes: parsed.event.into_bytes(),
        prev_hash: parsed.prev_hash,
        hash: parsed.hash,
    })
}

/// Verifies an exported chain read from `input`, in constant memory. With a checkpoint and its
/// keys, the checkpoint's signature must verify and the chain must pass through its head (a
/// truncated or rewritten export is refused). The checkpoint's origin is not looked at: see
/// [`verify_jsonl_against`].
pub fn verify_jsonl(
    input: impl BufRead,
    checkpoint: Option<(&Checkpoint, &[CheckpointKey])>,
) -> Result<VerifySummary, VerifyJsonlError> {
    let mut verifier = Verifier::new();
    if let Some((cp, keys)) = checkpoint {
        verifier = verifier.expect_head(cp.verify(keys)?);
    }
    verify_lines(input, verifier)
}

/// Verifies an exported chain called `origin` against checkpoints kept elsewhere (the
/// engine's [`verify_audit_against`](crate::Handoff::verify_audit_against) for an export):
/// each checkpoint must be of `origin` ([`CheckpointError::WrongOrigin`](super::CheckpointError::WrongOrigin)),
/// carry a verifying signature by one of `keys`, and the chain must pass through every one of
/// their heads — an export whose tail was cut ([`Truncated`](VerifyError::Truncated)) or that
/// was rewritten ([`Rewritten`](VerifyError::Rewritten)) is refused, whatever checkpoints the
/// exporting database still held. Constant memory in the length of the export.
pub fn verify_jsonl_against(
    input: impl BufRead,
    checkpoints: &[Checkpoint],
    keys: &[CheckpointKey],
    origin: &str,
) -> Result<VerifySummary, VerifyJsonlError> {
    let mut verifier = Verifier::new();
    for cp in checkpoints {
        verifier.add_expected_head(cp.verify_for(origin, keys)?);
    }
    verify_lines(input, verifier)
}

fn verify_lines(
    input: impl BufRead,
    mut verifier: Verifier,
) -> Result<VerifySummary, VerifyJsonlError> {
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(ExportError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        let event = from_jsonl(&line).map_err(|problem| ExportError::Malformed {
            line: n as u64 + 1,
            problem,
        })?;
        verifier.push(&event)?;
    }
    Ok(verifier.finish()?)
}

/// Why an exported chain did not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyJsonlError {
    /// The export could not be read.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The checkpoint is malformed or its signature does not verify.
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    /// The chain is broken (names the first bad event).
    #[error(transparent)]
    Chain(#[from] VerifyError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditRecord, Chain};
    use crate::timestamp::Timestamp;

    fn chain(n: usize) -> Vec<RawEvent> {
        let mut chain = Chain::new();
        (0..n)
            .map(|i| {
                chain
                    .append(AuditRecord {
                        texts: Vec::new(),
                        ticket: None,
                        at: Timestamp::from_unix_millis(i as i64),
                        kind: "proposed".into(),
                        actor: Actor::System,
                        data: serde_json::json!({ "note": "quote \" and ünïcödé", "i": i }),
                    })
                    .unwrap()
                    .raw()
                    .clone()
            })
            .collect()
    }

    #[test]
    fn export_round_trips_and_verifies() {
        let events = chain(5);
        let text: String = events.iter().map(|e| to_jsonl(e) + "\n").collect();
        for (line, event) in text.lines().zip(&events) {
            assert_eq!(&from_jsonl(line).unwrap(), event);
        }
        let summary = verify_jsonl(text.as_bytes(), None).unwrap();
        assert_eq!(summary.count, 5);
    }

    #[test]
    fn an_export_is_checked_against_every_kept_checkpoint_and_its_origin() {
        let events = chain(5);
        let key = CheckpointKey::new("k", &[3; 32]).unwrap();
        let at = |n: usize| {
            Checkpoint::sign(
                "prod",
                crate::audit::ChainHead {
                    seq: n as u64,
                    hash: events[n - 1].hash,
                },
                &key,
            )
            .unwrap()
        };
        let text: String = events.iter().map(|e| to_jsonl(e) + "\n").collect();
        let keys = std::slice::from_ref(&key);
        let both = [at(2), at(5)];
        assert_eq!(
            verify_jsonl_against(text.as_bytes(), &both, keys, "prod")
                .unwrap()
                .count,
            5
        );
        let cut: String = events[..4].iter().map(|e| to_jsonl(e) + "\n").collect();
        assert!(matches!(
            verify_jsonl_against(cut.as_bytes(), &both, keys, "prod"),
            Err(VerifyJsonlError::Chain(VerifyError::Truncated {
                checkpoint_size: 5,
                chain_size: 4
            }))
        ));
        assert!(matches!(
            verify_jsonl_against(text.as_bytes(), &both, keys, "staging"),
            Err(VerifyJsonlError::Checkpoint(
                crate::audit::CheckpointError::WrongOrigin { .. }
            ))
        ));
    }

    #[test]
    fn a_tampered_export_names_the_bad_event() {
        let events = chain(4);
        let mut lines: Vec<String> = events.iter().map(to_jsonl).collect();
        lines[2] = lines[2].replace("\\\"i\\\":2", "\\\"i\\\":9");
        let err = verify_jsonl(lines.join("\n").as_bytes(), None).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyJsonlError::Chain(VerifyError::HashMismatch { seq: 3 })
            ),
            "{err:?}"
        );
        let err = verify_jsonl("{\"seq\":1}\n".as_bytes(), None).unwrap_err();
        assert!(matches!(
            err,
            VerifyJsonlError::Export(ExportError::Malformed { line: 1, .. })
        ));
    }
}
