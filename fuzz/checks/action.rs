//! Action requests from model output: [`parse_strict_json`], [`canonical_json`] and
//! [`ActionRequest::from_json`].
//!
//! Input: JSON text (lossy UTF-8), no mode byte, so the seeds are plain JSON files.
//!
//! Properties:
//!
//! - nothing panics;
//! - a refusal names a location inside the text (1-based line, column in characters);
//! - the strict parser accepts a subset of what `serde_json` accepts, with the same value
//!   (a syntax error for us is a syntax error for `serde_json`);
//! - canonical JSON is a fixed point: it parses strictly, and canonicalising it again gives
//!   the same bytes;
//! - an accepted request: the digest is SHA-256 of its canonical bytes, which are canonical
//!   JSON; the digest's text form parses back; serialising the request (compact or pretty)
//!   and reading it back gives an equal request with the same digest; re-applying its own
//!   parameters changes nothing; every sensitive value is replaced whole in the redacted
//!   parameters and the commitments;
//! - `from_json` refuses as malformed exactly the texts the strict parser refuses, with the
//!   same error.

use agent_handoff::action::{
    canonical_json, parse_strict_json, ActionDigest, ActionRequest, CanonicalError,
    ValidationError, REDACTED,
};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::input::assert_location;

/// Runs the check on one fuzzer input.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let strict = check_strict(&text);
    check_request(&text, strict.as_ref().err());
}

fn check_strict(text: &str) -> Result<Value, CanonicalError> {
    let parsed = parse_strict_json(text);
    match &parsed {
        Ok(value) => {
            let theirs: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("serde_json refuses what we accept: {e}"));
            assert_eq!(&theirs, value, "serde_json reads another value");
            check_canonical_fixed_point(value);
        }
        Err(e @ CanonicalError::Syntax { line, column, .. }) => {
            assert_location(text, *line, *column, e);
            assert!(
                serde_json::from_str::<Value>(text).is_err(),
                "serde_json accepts what we call a syntax error: {e}"
            );
        }
        Err(
            e @ (CanonicalError::DuplicateKey { line, column, .. }
            | CanonicalError::TooDeep { line, column, .. }
            | CanonicalError::NumberOutOfRange { line, column, .. }),
        ) => assert_location(text, *line, *column, e),
        Err(CanonicalError::TooLarge { len, max }) => {
            assert_eq!(*len, text.len());
            assert!(len > max);
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
    parsed
}

fn check_canonical_fixed_point(value: &Value) -> Vec<u8> {
    let canonical = canonical_json(value);
    let text = std::str::from_utf8(&canonical).expect("canonical JSON is UTF-8");
    let again = parse_strict_json(text)
        .unwrap_or_else(|e| panic!("canonical JSON does not parse: {e}: {text}"));
    assert_eq!(
        canonical_json(&again),
        canonical,
        "canonicalisation is not idempotent"
    );
    canonical
}

fn check_request(text: &str, strict_error: Option<&CanonicalError>) {
    let request = match ActionRequest::from_json(text) {
        Ok(request) => request,
        Err(ValidationError::Malformed(e)) => {
            assert_eq!(
                Some(&e),
                strict_error,
                "from_json and the strict parser disagree"
            );
            return;
        }
        Err(_) => {
            assert!(
                strict_error.is_none(),
                "a strict parse error was not reported as such"
            );
            return;
        }
    };
    assert!(strict_error.is_none());
    let digest = request.digest();
    let bytes = ActionDigest::canonical_bytes(&request);
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest.to_string(),
        hex,
        "the digest is SHA-256 of the canonical bytes"
    );
    assert_eq!(hex.parse::<ActionDigest>(), Ok(digest));
    let document: Value = serde_json::from_slice(&bytes).expect("the digested document is JSON");
    assert_eq!(
        check_canonical_fixed_point(&document),
        bytes,
        "digested bytes not canonical"
    );

    for form in [
        serde_json::to_string(&request),
        serde_json::to_string_pretty(&request),
    ] {
        let form = form.expect("a request serialises");
        let back = ActionRequest::from_json(&form)
            .unwrap_or_else(|e| panic!("a serialised request is refused: {e}: {form}"));
        assert_eq!(back, request, "round trip changed the request");
        assert_eq!(back.digest(), digest);
    }
    assert_eq!(
        request
            .with_parameters(request.parameters().clone())
            .as_ref(),
        Ok(&request)
    );

    let redacted = request.redacted_parameters();
    let committed = request.committed_parameters(&[7; 32]);
    for pointer in request.sensitive_pointers() {
        assert!(
            request.parameters().pointer(pointer).is_some(),
            "sensitive pointer {pointer:?} resolves to nothing"
        );
        // Some prefix of the pointer (itself, or an outer sensitive value) was replaced whole.
        let prefixes = pointer
            .match_indices('/')
            .map(|(i, _)| &pointer[..i])
            .chain([pointer.as_str()]);
        let covered = prefixes.clone().any(|p| {
            redacted.pointer(p) == Some(&Value::from(REDACTED))
                && request.parameters().pointer(p).is_some()
        });
        assert!(covered, "sensitive value at {pointer:?} is not redacted");
        let sealed = prefixes.clone().any(|p| {
            committed
                .pointer(p)
                .and_then(|v| v.get("commitment"))
                .and_then(Value::as_str)
                .is_some_and(|c| c.len() == 64)
        });
        assert!(sealed, "sensitive value at {pointer:?} is not committed");
    }
}
