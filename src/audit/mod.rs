//! Tamper-evident audit trail: a SHA-256 hash chain over canonical event bytes, streaming
//! verification, and signed checkpoints of the head.
//!
//! # Event bytes
//!
//! Event `seq` (from 1) chaining an [`AuditRecord`] stores the RFC 8785 (JCS) canonical JSON
//! ([`crate::action::canonical_json`]) of this object, and keeps those bytes with the event:
//!
//! ```json
//! {"actor":{"id":"alice","type":"reviewer"},"at":1700000000000,"data":{…},"kind":"voted","seq":7,"ticket":"0189…"}
//! ```
//!
//! `actor` is `{"type": "agent"|"reviewer"|"operator", "id": …}` or `{"type":
//! "policy"|"system"|"unauthenticated"}`; `at` is Unix milliseconds; `ticket` is a UUID string
//! or `null`. Verification hashes the stored bytes as they are and never re-serialises, so a
//! verifier needs no JSON library; [`AuditEvent::decode`] reads them back.
//!
//! Sensitive values and free text never enter the chain: `data` holds salted commitments (the
//! action module's committed parameters, and the commitments of texts, below), so a secret can
//! be erased without breaking the chain.
//!
//! # Texts
//!
//! Free text and values an event is about — a reviewer's feedback, an execution's error text
//! and output, a cancel, revoke, freeze or erase reason, the expected and observed precondition
//! values of a failed `begin` — are [`AuditText`]s: kept beside the event in the store's side
//! table, bounded in size ([`crate::limits`]), and committed in the event's `data` under their
//! name as
//!
//! ```text
//! "feedback": {"commitment": hex(HMAC-SHA256(key = salt, message = "feedback" ‖ 0x00 ‖ JCS(value)))}
//! ```
//!
//! with a fresh random 32-byte salt per text (the form of committed parameters). A text absent
//! from an event (an approval's feedback) is `null`. Whoever keeps value and salt can prove
//! what the event said; the audited erase operation
//! ([`Handoff::erase_text`](crate::Handoff::erase_text)) drops both, and the chain still
//! verifies. Read back, a text is [`Kept`](TextState::Kept) only if it opens its commitment.
//!
//! | event kind | texts |
//! |---|---|
//! | `voted` | `feedback` (reject, request changes) |
//! | `cancelled`, `revoked`, `frozen`, `clock_rebased`, `text_erased`, `rejected` by a freeze | `reason` |
//! | `execution_finished`, `resolved` | `error` (failed) or `output` (succeeded, unless `null`) |
//! | `stale` (`reason: "preconditions"`) | `expected`, `observed`: the action's precondition values and the values observed for the same names, each as one object |
//!
//! # Hashes
//!
//! ```text
//! prev_hash(1) = GENESIS = SHA-256("agent-handoff/audit-chain/v1")
//!              = 4d73a72e7b1475461acdca94a8f20ad4736abf9110b4f0f104c70b39424ebc22
//! hash(n)      = SHA-256( prev_hash(n) ‖ u64_be(n) ‖ bytes(n) )      prev_hash(n+1) = hash(n)
//! ```
//!
//! `prev_hash` is the 32 raw bytes, `u64_be(n)` the sequence number as 8 big-endian bytes, so the
//! stored `seq` is bound to the hash without parsing the bytes. The head of a chain of `n`
//! events is `(n, hash(n))`; an empty chain's head is `(0, GENESIS)`. An offline verifier in any
//! language: start with `(0, GENESIS)`; for each event check `seq = previous + 1`, `prev_hash =`
//! previous hash, `hash = SHA-256(prev_hash ‖ u64_be(seq) ‖ bytes)` ([`Verifier`]).
//!
//! A chain alone cannot show that its tail was cut off or that it was rewritten wholesale with
//! recomputed hashes: for that the head is signed and kept elsewhere.
//!
//! # Checkpoints
//!
//! A [`Checkpoint`] is a [C2SP signed note](https://c2sp.org/signed-note) whose text follows
//! [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint):
//!
//! ```text
//! audit.example.com/prod
//! 1024
//! kZbN3J0+gW5qAm2V7Qt0yv9sT0lqX6aQ4G1pH2cRrVc=
//!
//! — audit.example.com/2025-01 Qm2kAb…(base64 of 4-byte key id ‖ 32-byte HMAC)
//! ```
//!
//! Origin, size (decimal, no leading zeros), head hash (standard base64, padded), a blank line,
//! then one line per signature: em dash (U+2014), space, key name, space, standard base64 of the
//! 4-byte key id followed by `HMAC-SHA256(secret, note text)`, where the note text is the three
//! lines with their newlines. Verification follows signed-note: signatures by unknown keys are
//! ignored, a failing signature by a known key refuses the checkpoint, at least one must verify.
//!
//! Deviations from C2SP, and why:
//! - The third line is our chain head hash, not an RFC 6962 Merkle root (a hash chain, not a
//!   tree; an empty chain's hash is `GENESIS`, not `SHA-256("")`), so the checkpoint is not
//!   usable with tlog tooling that checks consistency or inclusion proofs.
//! - HMAC-SHA256 is symmetric: whoever can verify can also sign. It protects against someone who
//!   can rewrite the database but does not hold the key. No signature type byte is assigned for
//!   it; the key id is `SHA-256(key name ‖ 0x0a ‖ 0xff ‖ "agent-handoff/checkpoint/hmac-sha256")[:4]`
//!   (the `0xff` "unassigned type" byte followed by a long identifier, as signed-note
//!   recommends), computed from the name since there is no public key.
//! - Extension lines are refused when parsing (we never write them).

mod chain;
mod checkpoint;
mod export;
mod record;
mod text;
mod verify;

pub use chain::{
    AuditEvent, Chain, ChainFull, ChainHash, ChainHead, DecodeError, InvalidHash, RawEvent, MAX_SEQ,
};
pub use checkpoint::{
    Checkpoint, CheckpointError, CheckpointKey, KeyError, MAX_CHECKPOINT_LEN,
    MAX_CHECKPOINT_SIGNATURES, MIN_CHECKPOINT_SECRET_LEN,
};
pub use export::{
    from_jsonl, to_jsonl, verify_jsonl, verify_jsonl_against, ExportError, VerifyJsonlError,
};
pub use record::{kind, Actor, AuditRecord};
pub(crate) use text::{committed_names, row_opens};
pub use text::{AuditText, TextError, TextRef, TextRow, TextState, MAX_TEXT_NAME_LEN};
pub use verify::{try_verify, verify, Verifier, VerifyError, VerifySummary};
