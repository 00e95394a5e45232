//! Decision tokens: parsing and verification against a key ring.
//!
//! Input: a mode byte, then
//!
//! - mode `0` (raw): the rest is token text (lossy UTF-8), opened at a few fixed instants;
//! - otherwise (mint): claims read from the bytes are signed with one of the ring's keys, the
//!   token is opened, then one byte of it is edited and the edit is checked as raw text.
//!
//! Properties:
//!
//! - `open` never panics, and its answer (malformed, unknown key, bad signature, expired, not
//!   yet valid, authentic) is the one an independent reading of the documented layout gives;
//! - **whatever opens was minted with the key**: re-signing the claims it carries with the key
//!   it names gives back exactly the text that was opened (one spelling per token);
//! - a minted token fits [`MAX_TOKEN_LEN`], opens within its validity period with the claims
//!   that were signed, yields its verdict only for its own digest, and is expired at
//!   `expires_at`.

use agent_handoff::action::KeyedDigest;
use agent_handoff::token::{
    MalformedToken, TokenClaims, TokenError, TokenKey, TokenKeyRing, TokenNonce, VerdictKind,
    DEFAULT_MAX_SKEW, MAX_TOKEN_LEN, TOKEN_PREFIX,
};
use agent_handoff::{PersonId, TicketId, Timestamp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::input::{edit_byte, Input};

/// The golden key of `tests/vectors/token_v1.json`, so the golden tokens are valid seeds.
const GOLDEN_ID: &str = "golden-2025";
const GOLDEN_SECRET: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
/// A retired key: tokens it signed still open.
const OLD_ID: &str = "k-old";
const OLD_SECRET: [u8; 32] = [0x42; 32];

/// Instants the raw mode opens tokens at: inside the golden tokens' validity, and extremes.
const NOWS: [i64; 4] = [1_700_000_300_000, 0, i64::MIN, i64::MAX];

fn key(id: &str) -> TokenKey {
    let secret = if id == GOLDEN_ID {
        &GOLDEN_SECRET
    } else {
        &OLD_SECRET
    };
    TokenKey::new(id, secret).expect("valid test key")
}

/// The ring signing with `id` and accepting the other key as retired.
fn ring_signing_with(id: &str) -> TokenKeyRing {
    let other = if id == GOLDEN_ID { OLD_ID } else { GOLDEN_ID };
    TokenKeyRing::new(key(id), [key(other)]).expect("distinct key ids")
}

fn secret_of(id: &str) -> Option<&'static [u8; 32]> {
    match id {
        GOLDEN_ID => Some(&GOLDEN_SECRET),
        OLD_ID => Some(&OLD_SECRET),
        _ => None,
    }
}

/// Runs the check on one fuzzer input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() {
        0 => check_text(&String::from_utf8_lossy(input.rest())),
        _ => check_minted(input),
    }
}

/// What an independent reading of the documented form says `open` must answer.
#[derive(Debug, PartialEq)]
enum Expected {
    Malformed,
    UnknownKey(String),
    BadSignature,
    Expired,
    NotYetValid,
    Authentic(String, TokenClaims),
}

/// Reads the payload layout of the module docs (`src/token/mod.rs`).
fn read_payload(payload: &[u8]) -> Option<(String, TokenClaims)> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            Some(h)
        }
        fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N).map(|s| s.try_into().expect("length checked"))
        }
    }
    let mut r = R(payload);
    let key_len = usize::from(r.take(1)?[0]);
    let key_id = std::str::from_utf8(r.take(key_len)?).ok()?;
    let key_ok = (1..=32).contains(&key_id.len())
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !key_ok {
        return None;
    }
    let ticket = TicketId::from_uuid(uuid::Uuid::from_bytes(r.arr()?));
    let verdict = match r.take(1)?[0] {
        1 => VerdictKind::Approve,
        2 => VerdictKind::ApproveWithEdits,
        3 => VerdictKind::Reject,
        4 => VerdictKind::RequestChanges,
        _ => return None,
    };
    let issued_at = Timestamp::from_unix_millis(i64::from_be_bytes(r.arr()?));
    let expires_at = Timestamp::from_unix_millis(i64::from_be_bytes(r.arr()?));
    let nonce = TokenNonce::from_bytes(r.arr()?);
    let digest = KeyedDigest::from_bytes(r.arr()?);
    let reviewer_len = usize::from(u16::from_be_bytes(r.arr()?));
    let reviewer = if reviewer_len == 0 {
        None
    } else {
        let text = std::str::from_utf8(r.take(reviewer_len)?).ok()?;
        Some(PersonId::new(text).ok()?)
    };
    if !r.0.is_empty() {
        return None;
    }
    let claims = TokenClaims {
        ticket,
        reviewer,
        verdict,
        digest,
        issued_at,
        expires_at,
        nonce,
    };
    Some((key_id.to_owned(), claims))
}

fn expected(text: &str, now: Timestamp) -> Expected {
    let parsed = (|| {
        if text.len() > MAX_TOKEN_LEN {
            return None;
        }
        let body = text.strip_prefix(TOKEN_PREFIX)?;
        let (payload_b64, sig_b64) = body.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig_b64).ok()?;
        if sig.len() != 32 {
            return None;
        }
        let payload = URL_SAFE_NO_PAD.decode(payload_b64).ok()?;
        let (key_id, claims) = read_payload(&payload)?;
        let signed = &text[..TOKEN_PREFIX.len() + payload_b64.len()];
        Some((key_id, claims, signed, sig))
    })();
    let Some((key_id, claims, signed, sig)) = parsed else {
        return Expected::Malformed;
    };
    let Some(secret) = secret_of(&key_id) else {
        return Expected::UnknownKey(key_id);
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signed.as_bytes());
    if mac.finalize().into_bytes().as_slice() != sig.as_slice() {
        return Expected::BadSignature;
    }
    if now >= claims.expires_at {
        return Expected::Expired;
    }
    if claims.issued_at > now.saturating_add(DEFAULT_MAX_SKEW) {
        return Expected::NotYetValid;
    }
    Expected::Authentic(key_id, claims)
}

/// Opens `text` at each of [`NOWS`] with the default ring and checks the answer.
fn check_text(text: &str) {
    let ring = ring_signing_with(GOLDEN_ID);
    for now in NOWS.map(Timestamp::from_unix_millis) {
        let got = ring.open(text, now);
        let want = expected(text, now);
        match (&got, &want) {
            (Err(TokenError::Malformed(_)), Expected::Malformed)
            | (Err(TokenError::BadSignature), Expected::BadSignature)
            | (Err(TokenError::Expired { .. }), Expected::Expired)
            | (Err(TokenError::NotYetValid { .. }), Expected::NotYetValid) => {}
            (Err(TokenError::UnknownKey { key_id }), Expected::UnknownKey(want_id)) => {
                assert_eq!(key_id, want_id);
            }
            (Ok(token), Expected::Authentic(key_id, claims)) => {
                assert_eq!(token.key_id(), key_id);
                assert_eq!(token.ticket(), claims.ticket);
                assert_eq!(token.reviewer(), claims.reviewer.as_ref());
                assert_eq!(token.nonce(), claims.nonce);
                assert_eq!(token.issued_at(), claims.issued_at);
                assert_eq!(token.expires_at(), claims.expires_at);
                // The verdict only comes with the right digest.
                assert_eq!(token.check_digest(&claims.digest).as_ref(), Ok(claims));
                let other = KeyedDigest::from_bytes(claims.digest.as_bytes().map(|b| !b));
                assert_eq!(token.check_digest(&other), Err(TokenError::DigestMismatch));
                // Whatever opens was minted with the key it names, and spelled exactly so.
                let minted = ring_signing_with(key_id)
                    .sign(claims)
                    .expect("an authentic token expires after its issue time");
                assert_eq!(minted, text, "an authentic token has exactly one spelling");
            }
            _ => panic!("open({text:?}) at {now:?} = {got:?}, expected {want:?}"),
        }
    }
}

fn check_minted(mut input: Input<'_>) {
    let key_id = if input.byte() % 2 == 0 {
        GOLDEN_ID
    } else {
        OLD_ID
    };
    let reviewer_text = input.text();
    let claims = TokenClaims {
        ticket: TicketId::from_uuid(uuid::Uuid::from_bytes(input.array())),
        reviewer: PersonId::new(reviewer_text).ok(),
        verdict: VerdictKind::ALL[usize::from(input.byte() % 4)],
        digest: KeyedDigest::from_bytes(input.array()),
        issued_at: Timestamp::from_unix_millis(input.i64()),
        expires_at: Timestamp::from_unix_millis(input.i64()),
        nonce: TokenNonce::from_bytes(input.array()),
    };
    let ring = ring_signing_with(key_id);
    let token = match ring.sign(&claims) {
        Ok(token) => token,
        Err(_) => {
            assert!(
                claims.expires_at <= claims.issued_at,
                "refused to sign {claims:?}"
            );
            return;
        }
    };
    assert!(claims.expires_at > claims.issued_at);
    assert!(
        token.len() <= MAX_TOKEN_LEN,
        "minted a token that cannot be opened: {} bytes",
        token.len()
    );
    // Any ring holding the key opens it, at issue time and until just before expiry.
    let verifier = ring_signing_with(GOLDEN_ID);
    let last = Timestamp::from_unix_millis(claims.expires_at.as_unix_millis() - 1);
    for now in [claims.issued_at, last] {
        let opened = verifier.open(&token, now).expect("a fresh token opens");
        assert_eq!(opened.key_id(), key_id);
        assert_eq!(opened.check_digest(&claims.digest), Ok(claims.clone()));
        assert_eq!(
            verifier.verify(&token, now, &claims.digest),
            Ok(claims.clone())
        );
    }
    assert_eq!(
        verifier.open(&token, claims.expires_at),
        Err(TokenError::Expired {
            expires_at: claims.expires_at
        })
    );
    // A ring that does not hold the key refuses it by name.
    let stranger = TokenKeyRing::new(TokenKey::new("stranger", &[7; 32]).expect("valid key"), [])
        .expect("one key");
    assert_eq!(
        stranger.open(&token, claims.issued_at),
        Err(TokenError::UnknownKey {
            key_id: key_id.to_owned()
        })
    );
    // The same key id with another secret: a bad signature, never an authentic token.
    let impostor = TokenKeyRing::new(TokenKey::new(key_id, &[9; 32]).expect("valid key"), [])
        .expect("one key");
    assert_eq!(
        impostor.open(&token, claims.issued_at),
        Err(TokenError::BadSignature)
    );
    check_text(&token);
    // One edited byte: whatever it gives must pass the raw checks (so it opens only if it is
    // itself a minted token, which an edit of an authentic one never is).
    let pos = input.u16();
    let value = input.byte();
    if let Some(edited) = edit_byte(token.as_bytes(), pos, value) {
        let edited = String::from_utf8_lossy(&edited);
        check_text(&edited);
        assert!(
            ring.open(&edited, claims.issued_at).is_err(),
            "an edited token opened: {edited}"
        );
    }
    // Too long is refused before anything else is looked at.
    let padded = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN + 1 - token.len()));
    assert_eq!(
        verifier.open(&padded, claims.issued_at),
        Err(TokenError::Malformed(MalformedToken::TooLong))
    );
}
