//! The golden vectors in `tests/vectors/token_v1.json` (computed independently with Python's
//! `hmac`/`base64`) are produced by signing and accepted by verification.

use agent_handoff::action::KeyedDigest;
use agent_handoff::token::{TokenClaims, TokenKey, TokenKeyRing, TokenNonce, VerdictKind};
use agent_handoff::{PersonId, Timestamp};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    key_id: String,
    secret_hex: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    ticket: String,
    reviewer: Option<String>,
    verdict: VerdictKind,
    digest_hex: String,
    issued_at_ms: i64,
    expires_at_ms: i64,
    nonce_hex: String,
    token: String,
}

fn unhex<const N: usize>(text: &str) -> [u8; N] {
    assert_eq!(text.len(), 2 * N);
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn load() -> (TokenKeyRing, Vec<(TokenClaims, String)>) {
    let vectors: Vectors = serde_json::from_str(include_str!("vectors/token_v1.json")).unwrap();
    let secret: [u8; 32] = unhex(&vectors.secret_hex);
    let ring = TokenKeyRing::new(TokenKey::new(vectors.key_id, &secret).unwrap(), []).unwrap();
    let cases = vectors
        .cases
        .into_iter()
        .map(|c| {
            let claims = TokenClaims {
                ticket: c.ticket.parse().unwrap(),
                reviewer: c.reviewer.map(|r| PersonId::new(r).unwrap()),
                verdict: c.verdict,
                digest: KeyedDigest::from_bytes(unhex(&c.digest_hex)),
                issued_at: Timestamp::from_unix_millis(c.issued_at_ms),
                expires_at: Timestamp::from_unix_millis(c.expires_at_ms),
                nonce: TokenNonce::from_bytes(unhex(&c.nonce_hex)),
            };
            (claims, c.token)
        })
        .collect();
    (ring, cases)
}

#[test]
fn signing_the_golden_claims_gives_the_golden_tokens() {
    let (ring, cases) = load();
    assert_eq!(cases.len(), 2);
    for (claims, token) in cases {
        assert_eq!(ring.sign(&claims).unwrap(), token);
    }
}

#[test]
fn the_golden_tokens_verify_to_the_golden_claims() {
    let (ring, cases) = load();
    for (claims, token) in cases {
        let now = claims
            .issued_at
            .saturating_add(std::time::Duration::from_secs(1));
        assert_eq!(ring.verify(&token, now, &claims.digest).unwrap(), claims);
    }
}
