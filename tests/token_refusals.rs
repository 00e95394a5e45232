//! Each token refusal is reachable and distinct; no alteration of a token is accepted; no input
//! makes verification panic.

use std::time::Duration;

use agent_handoff::action::KeyedDigest;
use agent_handoff::token::{
    KeyError, MalformedToken, TokenClaims, TokenError, TokenKey, TokenKeyRing, TokenNonce,
    VerdictKind, MAX_TOKEN_LEN,
};
use agent_handoff::{PersonId, TicketId, Timestamp};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;

const ISSUED: i64 = 1_700_000_000_000;
const EXPIRES: i64 = ISSUED + 600_000;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(ISSUED + 1_000)
}

fn digest() -> KeyedDigest {
    KeyedDigest::from_bytes([0xA5; 32])
}

fn claims() -> TokenClaims {
    TokenClaims {
        ticket: TicketId::from_uuid(uuid::Uuid::from_u128(
            0x0189_0a5d_ac96_774b_bcce_b302_099a_8057,
        )),
        reviewer: Some(PersonId::new("alice").unwrap()),
        verdict: VerdictKind::Approve,
        digest: digest(),
        issued_at: Timestamp::from_unix_millis(ISSUED),
        expires_at: Timestamp::from_unix_millis(EXPIRES),
        nonce: TokenNonce::from_bytes([0x11; 16]),
    }
}

fn key(id: &str, fill: u8) -> TokenKey {
    TokenKey::new(id, &[fill; 32]).unwrap()
}

fn ring() -> TokenKeyRing {
    TokenKeyRing::new(key("k2", 2), [key("k1", 1)]).unwrap()
}

fn token() -> String {
    ring().sign(&claims()).unwrap()
}

fn malformed(text: &str) -> MalformedToken {
    match ring().open(text, now()) {
        Err(TokenError::Malformed(m)) => m,
        other => panic!("expected a malformed refusal for {text:?}, got {other:?}"),
    }
}

/// The token with its payload bytes replaced (the signature kept).
fn with_payload(edit: impl FnOnce(&mut Vec<u8>)) -> String {
    let token = token();
    let (head, signature) = token.rsplit_once('.').unwrap();
    let mut payload = URL_SAFE_NO_PAD.decode(&head[4..]).unwrap();
    edit(&mut payload);
    format!("ah1.{}.{signature}", URL_SAFE_NO_PAD.encode(payload))
}

#[test]
fn a_valid_token_verifies() {
    assert_eq!(ring().verify(&token(), now(), &digest()).unwrap(), claims());
}

#[test]
fn malformed_tokens_are_refused_before_any_key_is_used() {
    let good = token();
    let (head, signature) = good.rsplit_once('.').unwrap();

    assert_eq!(
        malformed(&"a".repeat(MAX_TOKEN_LEN + 1)),
        MalformedToken::TooLong
    );
    assert_eq!(malformed(""), MalformedToken::VersionPrefix);
    assert_eq!(
        malformed(&good.replacen("ah1.", "ah2.", 1)),
        MalformedToken::VersionPrefix
    );
    assert_eq!(malformed(&good[4..]), MalformedToken::VersionPrefix);
    assert_eq!(malformed(head), MalformedToken::MissingSignature);

    // Empty, truncated and over-long signatures.
    assert_eq!(
        malformed(&format!("{head}.")),
        MalformedToken::SignatureLength
    );
    assert_eq!(
        malformed(&format!("{head}.{}", &signature[..42])),
        MalformedToken::SignatureLength
    );
    assert_eq!(
        malformed(&format!("{head}.{signature}A")),
        MalformedToken::SignatureLength
    );
    assert_eq!(
        malformed(&format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]))),
        MalformedToken::SignatureLength
    );

    // Not base64url: a bad character, standard-alphabet characters, non-canonical last char.
    assert_eq!(
        malformed(&format!("{head}.{}*", &signature[..42])),
        MalformedToken::Base64
    );
    assert_eq!(
        malformed(&format!("ah1.{}+.{signature}", &head[4..])),
        MalformedToken::Base64
    );
    // Bad payloads (valid base64, signature irrelevant).
    let cases = [
        with_payload(|p| {
            p.pop();
        }),
        with_payload(|p| p.push(0)),
        with_payload(|p| p[0] = 0),
        with_payload(|p| p[1] = b'/'),
        with_payload(|p| p[3 + 16] = 9),
        with_payload(|p| {
            let n = p.len();
            p[n - 1] = 0xff;
        }),
        with_payload(|p| p.clear()),
    ];
    for case in cases {
        assert!(
            matches!(malformed(&case), MalformedToken::Payload(_)),
            "{case}"
        );
    }
}

#[test]
fn the_noncanonical_signature_encoding_is_a_base64_error() {
    let good = token();
    let (head, signature) = good.rsplit_once('.').unwrap();
    // Decode the 32 bytes, then spell the last character with its unused low bits set.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = signature.as_bytes()[42];
    let index = alphabet.iter().position(|&c| c == last).unwrap();
    assert_eq!(
        index & 0b11,
        0,
        "a canonical encoder leaves the 2 low bits clear"
    );
    let altered = char::from(alphabet[index | 0b01]);
    let text = format!("{head}.{}{altered}", &signature[..42]);
    assert_eq!(malformed(&text), MalformedToken::Base64);
}

#[test]
fn an_unknown_key_id_is_refused_by_name() {
    let other = TokenKeyRing::new(key("k9", 9), []).unwrap();
    let foreign = other.sign(&claims()).unwrap();
    assert_eq!(
        ring().open(&foreign, now()).unwrap_err(),
        TokenError::UnknownKey {
            key_id: "k9".into()
        }
    );
}

#[test]
fn retired_keys_still_verify_and_a_rotated_out_key_does_not() {
    let old = TokenKeyRing::new(key("k1", 1), []).unwrap();
    let token = old.sign(&claims()).unwrap();
    assert!(ring().verify(&token, now(), &digest()).is_ok());
    let later = TokenKeyRing::new(key("k3", 3), [key("k2", 2)]).unwrap();
    assert!(matches!(
        later.open(&token, now()),
        Err(TokenError::UnknownKey { .. })
    ));
}

#[test]
fn a_wrong_secret_or_altered_signature_is_a_bad_signature() {
    let impostor = TokenKeyRing::new(key("k2", 0x42), []).unwrap();
    let forged = impostor.sign(&claims()).unwrap();
    assert_eq!(
        ring().open(&forged, now()).unwrap_err(),
        TokenError::BadSignature
    );

    let good = token();
    let (head, signature) = good.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let altered = format!("{head}.{first}{}", &signature[1..]);
    assert_eq!(
        ring().open(&altered, now()).unwrap_err(),
        TokenError::BadSignature
    );

    // A payload changed under a kept signature (here: the verdict) is a bad signature.
    let reject = with_payload(|p| p[3 + 16] = 3 /* reject */);
    assert_eq!(
        ring().open(&reject, now()).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn expiry_is_checked_at_the_exact_instant() {
    let ring = ring();
    let token = token();
    let at = |ms| Timestamp::from_unix_millis(ms);
    assert!(ring.open(&token, at(EXPIRES - 1)).is_ok());
    assert_eq!(
        ring.open(&token, at(EXPIRES)).unwrap_err(),
        TokenError::Expired {
            expires_at: at(EXPIRES)
        }
    );
    assert!(matches!(
        ring.open(&token, at(EXPIRES + 86_400_000)),
        Err(TokenError::Expired { .. })
    ));
}

#[test]
fn a_token_from_the_future_is_not_yet_valid_beyond_the_skew() {
    let ring = ring().with_max_skew(Duration::from_secs(30));
    let token = token();
    let at = |ms| Timestamp::from_unix_millis(ms);
    assert!(ring.open(&token, at(ISSUED - 30_000)).is_ok());
    assert_eq!(
        ring.open(&token, at(ISSUED - 30_001)).unwrap_err(),
        TokenError::NotYetValid {
            issued_at: at(ISSUED)
        }
    );
}

#[test]
fn signature_is_checked_before_time() {
    // An expired forgery reports the forgery, not the expiry.
    let impostor = TokenKeyRing::new(key("k2", 0x42), []).unwrap();
    let forged = impostor.sign(&claims()).unwrap();
    let late = Timestamp::from_unix_millis(EXPIRES + 1);
    assert_eq!(
        ring().open(&forged, late).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn a_changed_action_is_a_digest_mismatch_and_the_nonce_stays_readable() {
    let ring = ring();
    let token = token();
    let edited = KeyedDigest::from_bytes([0x5A; 32]);
    assert_eq!(
        ring.verify(&token, now(), &edited).unwrap_err(),
        TokenError::DigestMismatch
    );
    let authentic = ring.open(&token, now()).unwrap();
    assert_eq!(
        authentic.check_digest(&edited),
        Err(TokenError::DigestMismatch)
    );
    // The store can still burn the nonce and compare the bound reviewer.
    assert_eq!(authentic.nonce(), claims().nonce);
    assert_eq!(authentic.reviewer().map(PersonId::as_str), Some("alice"));
    assert_eq!(
        authentic.check_digest(&digest()).unwrap().verdict,
        VerdictKind::Approve
    );
}

#[test]
fn group_chat_tokens_carry_no_reviewer() {
    let mut c = claims();
    c.reviewer = None;
    c.verdict = VerdictKind::RequestChanges;
    let token = ring().sign(&c).unwrap();
    let authentic = ring().open(&token, now()).unwrap();
    assert_eq!(authentic.reviewer(), None);
    assert_eq!(authentic.check_digest(&digest()).unwrap(), c);
}

#[test]
fn keys_need_a_valid_id_and_a_32_byte_secret() {
    assert_eq!(
        TokenKey::new("k", &[0; 31]).unwrap_err(),
        KeyError::SecretTooShort { len: 31 }
    );
    assert!(TokenKey::new("k", &[0; 32]).is_ok());
    for bad in ["", "has space", "slash/", &"x".repeat(33)] {
        assert!(matches!(
            TokenKey::new(bad, &[0; 32]),
            Err(KeyError::InvalidId { .. })
        ));
    }
    assert!(matches!(
        TokenKeyRing::new(key("a", 1), [key("b", 2), key("a", 3)]),
        Err(KeyError::DuplicateId { .. })
    ));
}

#[test]
fn types_are_send_and_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<TokenKeyRing>();
    ensure::<TokenKey>();
    ensure::<TokenError>();
    ensure::<agent_handoff::token::AuthenticToken>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_single_byte_change_is_refused(position in any::<prop::sample::Index>(), byte in 0u8..128) {
        let good = token();
        let mut bytes = good.clone().into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let text = String::from_utf8(bytes).unwrap();
        prop_assert!(ring().verify(&text, now(), &digest()).is_err());
    }

    #[test]
    fn any_truncation_or_extension_is_refused(cut in any::<prop::sample::Index>(), extra in "[A-Za-z0-9_.-]{1,4}") {
        let good = token();
        let cut = cut.index(good.len());
        prop_assert!(ring().open(&good[..cut], now()).is_err());
        let longer = format!("{good}{extra}");
        prop_assert!(ring().open(&longer, now()).is_err());
    }

    #[test]
    fn random_strings_never_verify(text in any::<String>()) {
        prop_assert!(ring().open(&text, now()).is_err());
    }

    #[test]
    fn random_token_shaped_strings_never_verify(
        payload in "[A-Za-z0-9_-]{0,200}",
        signature in "[A-Za-z0-9_-]{0,60}",
    ) {
        let text = format!("ah1.{payload}.{signature}");
        prop_assert!(ring().open(&text, now()).is_err());
    }

    #[test]
    fn random_payloads_under_a_random_signature_never_verify(
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        signature in any::<[u8; 32]>(),
    ) {
        let text = format!(
            "ah1.{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        );
        prop_assert!(ring().open(&text, now()).is_err());
    }
}
