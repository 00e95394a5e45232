//! Feishu / Lark protocol parts against the golden vectors in `tests/vectors/feishu_crypto.json`
//! (made by `tests/vectors/feishu_vectors.py` with Python and cross-checked with OpenSSL and
//! `sha256sum`) and the published decryption example from Feishu's documentation: custom-bot
//! signatures, callback signatures (the legacy SHA-1 scheme and the Verification-Token mix-up
//! fail), AES-256-CBC bodies, and the callback verifier end to end on the pinned
//! `card.action.trigger` payload (`tests/vectors/feishu_card_action.json`).
#![cfg(feature = "feishu")]

use std::time::Duration;

use agent_handoff::notify::feishu::{
    Callback, CallbackSignatureError, CustomBotSecret, DecryptError, EncryptKey,
    FeishuCallbackError, FeishuCallbackVerifier, FeishuSecretError, HEADER_NONCE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
};
use agent_handoff::Timestamp;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Vectors {
    custom_bot: Vec<BotCase>,
    published_decrypt: Published,
    encrypt_key: String,
    verification_token: String,
    card_action: SignedBody,
    url_verification: EncryptedBody,
}

#[derive(Deserialize)]
struct BotCase {
    secret: String,
    timestamp: i64,
    sign: String,
    wrong_scheme_sign: String,
}

#[derive(Deserialize)]
struct Published {
    encrypt_key: String,
    encrypt: String,
    plaintext: String,
}

#[derive(Deserialize)]
struct SignedBody {
    iv_hex: String,
    plaintext: String,
    body: String,
    timestamp: String,
    nonce: String,
    signature: String,
    legacy_sha1_signature: String,
    sha256_with_verification_token: String,
    hmac_sha256_with_encrypt_key: String,
}

#[derive(Deserialize)]
struct EncryptedBody {
    iv_hex: String,
    plaintext: String,
    body: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/feishu_crypto.json")).unwrap()
}

fn card_action_json() -> Value {
    serde_json::from_str(include_str!("vectors/feishu_card_action.json")).unwrap()
}

fn key() -> EncryptKey {
    EncryptKey::new(vectors().encrypt_key).unwrap()
}

fn verifier() -> FeishuCallbackVerifier {
    let v = vectors();
    FeishuCallbackVerifier::new(
        v.verification_token,
        EncryptKey::new(v.encrypt_key).unwrap(),
    )
    .unwrap()
}

fn iv(hex: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn encrypt_field(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["encrypt"].as_str().unwrap().to_owned()
}

const TS: i64 = 1_700_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(secs * 1000)
}

const TOLERANCE: Duration = Duration::from_secs(300);

fn signed_headers(sig: &str, ts: &str, nonce: &str) -> Vec<(String, String)> {
    vec![
        (HEADER_SIGNATURE.into(), sig.into()),
        (HEADER_TIMESTAMP.into(), ts.into()),
        (HEADER_NONCE.into(), nonce.into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// Headers signing `body` with the golden key at `TS` (for non-golden variations).
fn sign_body(body: &[u8]) -> Vec<(String, String)> {
    let nonce = "test-nonce";
    let sig = key().callback_signature(&TS.to_string(), nonce, body);
    signed_headers(&sig, &TS.to_string(), nonce)
}

// ---------------------------------------------------------------- custom bot

#[test]
fn custom_bot_sign_matches_golden_vectors_and_not_the_common_mistake() {
    for case in vectors().custom_bot {
        let secret = CustomBotSecret::new(case.secret.clone()).unwrap();
        let sign = secret.sign(case.timestamp);
        assert_eq!(sign, case.sign, "{}", case.secret);
        assert_ne!(sign, case.wrong_scheme_sign);
    }
    assert_eq!(
        CustomBotSecret::new("").unwrap_err(),
        FeishuSecretError::Empty
    );
    let debug = format!(
        "{:?}",
        CustomBotSecret::new("golden-custom-bot-secret").unwrap()
    );
    assert!(!debug.contains("golden"), "{debug}");
}

// ---------------------------------------------------------------- decryption

#[test]
fn published_documentation_vector_decrypts() {
    let p = vectors().published_decrypt;
    let key = EncryptKey::new(p.encrypt_key).unwrap();
    assert_eq!(key.decrypt(&p.encrypt).unwrap(), p.plaintext.as_bytes());
}

#[test]
fn golden_bodies_decrypt_and_encrypt_to_the_same_text() {
    let v = vectors();
    let key = key();
    for (body, plaintext, iv_hex) in [
        (
            &v.card_action.body,
            &v.card_action.plaintext,
            &v.card_action.iv_hex,
        ),
        (
            &v.url_verification.body,
            &v.url_verification.plaintext,
            &v.url_verification.iv_hex,
        ),
    ] {
        let encrypt = encrypt_field(body);
        assert_eq!(key.decrypt(&encrypt).unwrap(), plaintext.as_bytes());
        assert_eq!(key.encrypt(plaintext.as_bytes(), iv(iv_hex)), encrypt);
    }
    // The encrypted card action is exactly the pinned payload.
    let plain: Value = serde_json::from_str(&v.card_action.plaintext).unwrap();
    assert_eq!(plain, card_action_json());
}

#[test]
fn bad_ciphertexts_are_refused_with_typed_errors() {
    let key = key();
    let published = vectors().published_decrypt.encrypt;
    assert_eq!(key.decrypt("not base64!"), Err(DecryptError::Base64));
    assert_eq!(
        key.decrypt(published.trim_end_matches('=')),
        Err(DecryptError::Base64)
    );
    assert_eq!(key.decrypt(""), Err(DecryptError::TooShort { len: 0 }));
    assert_eq!(
        key.decrypt(&STANDARD.encode([0u8; 16])),
        Err(DecryptError::TooShort { len: 16 })
    );
    assert_eq!(
        key.decrypt(&STANDARD.encode([0u8; 31])),
        Err(DecryptError::TooShort { len: 31 })
    );
    assert_eq!(
        key.decrypt(&STANDARD.encode([0u8; 33])),
        Err(DecryptError::NotBlockAligned { len: 33 })
    );
    // The published ciphertext under another key does not unpad.
    assert_eq!(key.decrypt(&published), Err(DecryptError::BadPadding));
    // A valid ciphertext whose last block was altered.
    let mut data = STANDARD.decode(&published).unwrap();
    *data.last_mut().unwrap() ^= 1;
    let test_key = EncryptKey::new("test key").unwrap();
    assert_eq!(
        test_key.decrypt(&STANDARD.encode(&data)),
        Err(DecryptError::BadPadding)
    );
    // A genuine ciphertext of 16 bytes with its padding block dropped: the last decrypted byte
    // is `f`, not a padding length.
    let good = test_key.encrypt(b"0123456789abcdef", [1; 16]);
    let mut data = STANDARD.decode(&good).unwrap();
    data.truncate(32);
    assert_eq!(
        test_key.decrypt(&STANDARD.encode(&data)),
        Err(DecryptError::BadPadding)
    );
    assert_eq!(EncryptKey::new("").unwrap_err(), FeishuSecretError::Empty);
}

// ---------------------------------------------------------------- callback signatures

#[test]
fn callback_signature_matches_golden_vector() {
    let v = vectors().card_action;
    let key = key();
    assert_eq!(
        key.callback_signature(&v.timestamp, &v.nonce, v.body.as_bytes()),
        v.signature
    );
    assert_eq!(
        key.verify_callback_signature(
            &v.signature,
            &v.timestamp,
            &v.nonce,
            v.body.as_bytes(),
            at(TS),
            TOLERANCE
        ),
        Ok(TS)
    );
    // Hex case does not matter.
    assert!(key
        .verify_callback_signature(
            &v.signature.to_ascii_uppercase(),
            &v.timestamp,
            &v.nonce,
            v.body.as_bytes(),
            at(TS),
            TOLERANCE
        )
        .is_ok());
}

#[test]
fn legacy_and_mixed_up_schemes_fail_where_sha256_is_expected() {
    let v = vectors().card_action;
    let key = key();
    let check = |sig: &str| {
        key.verify_callback_signature(
            sig,
            &v.timestamp,
            &v.nonce,
            v.body.as_bytes(),
            at(TS),
            TOLERANCE,
        )
    };
    assert_eq!(
        check(&v.legacy_sha1_signature),
        Err(CallbackSignatureError::MalformedSignature)
    );
    // Even padded to the right length, the SHA-1 digest is not the SHA-256 one.
    assert_eq!(
        check(&format!("{}{}", v.legacy_sha1_signature, "0".repeat(24))),
        Err(CallbackSignatureError::BadSignature)
    );
    assert_eq!(
        check(&v.sha256_with_verification_token),
        Err(CallbackSignatureError::BadSignature)
    );
    // HMAC-SHA256 keyed with the Encrypt Key is not the scheme either.
    assert_eq!(
        check(&v.hmac_sha256_with_encrypt_key),
        Err(CallbackSignatureError::BadSignature)
    );
    assert_eq!(check(""), Err(CallbackSignatureError::MalformedSignature));
}

#[test]
fn callback_window_and_header_forms() {
    let v = vectors().card_action;
    let key = key();
    let check = |ts: &str, nonce: &str, now: Timestamp, tol: Duration| {
        let sig = key.callback_signature(ts, nonce, v.body.as_bytes());
        key.verify_callback_signature(&sig, ts, nonce, v.body.as_bytes(), now, tol)
    };
    assert_eq!(
        check(&v.timestamp, &v.nonce, at(TS + 300), TOLERANCE),
        Ok(TS)
    );
    assert_eq!(
        check(&v.timestamp, &v.nonce, at(TS - 300), TOLERANCE),
        Ok(TS)
    );
    assert_eq!(
        check(&v.timestamp, &v.nonce, at(TS + 301), TOLERANCE),
        Err(CallbackSignatureError::TooOld { timestamp: TS })
    );
    assert_eq!(
        check(&v.timestamp, &v.nonce, at(TS - 301), TOLERANCE),
        Err(CallbackSignatureError::TooNew { timestamp: TS })
    );
    assert_eq!(
        check(&v.timestamp, &v.nonce, at(TS + 30), Duration::from_secs(10)),
        Err(CallbackSignatureError::TooOld { timestamp: TS })
    );
    // Milliseconds are not seconds: a millisecond timestamp is far in the future.
    assert!(matches!(
        check("1700000000000", &v.nonce, at(TS), TOLERANCE),
        Err(CallbackSignatureError::TooNew { .. })
    ));
    for ts in [
        "",
        "abc",
        "-1700000000",
        "01700000000",
        "1700000000.5",
        "99999999999999999999",
    ] {
        assert_eq!(
            check(ts, &v.nonce, at(TS), TOLERANCE),
            Err(CallbackSignatureError::BadTimestamp),
            "{ts:?}"
        );
    }
    for nonce in [String::new(), "a\nb".into(), "n".repeat(257)] {
        assert_eq!(
            check(&v.timestamp, &nonce, at(TS), TOLERANCE),
            Err(CallbackSignatureError::BadNonce),
            "{nonce:?}"
        );
    }
    // A forged signature on a stale request says "forged", not "too old".
    assert_eq!(
        key.verify_callback_signature(
            &"ab".repeat(32),
            &v.timestamp,
            &v.nonce,
            v.body.as_bytes(),
            at(0),
            TOLERANCE
        ),
        Err(CallbackSignatureError::BadSignature)
    );
}

// ---------------------------------------------------------------- callback verifier

#[test]
fn golden_card_action_is_verified_and_parsed() {
    let v = vectors().card_action;
    let headers = signed_headers(&v.signature, &v.timestamp, &v.nonce);
    let callback = verifier()
        .verify(&headers, v.body.as_bytes(), at(TS + 2))
        .unwrap();
    let Callback::CardAction(action) = callback else {
        panic!("not a card action: {callback:?}");
    };
    let expected = card_action_json();
    let event = &expected["event"];
    assert_eq!(action.event_id, expected["header"]["event_id"]);
    assert_eq!(action.nonce, v.nonce);
    assert_eq!(action.request_timestamp, TS);
    assert_eq!(action.operator_open_id, event["operator"]["open_id"]);
    assert_eq!(
        action.operator_user_id.as_deref(),
        event["operator"]["user_id"].as_str()
    );
    assert_eq!(
        action.operator_union_id.as_deref(),
        event["operator"]["union_id"].as_str()
    );
    assert_eq!(
        action.tenant_key.as_deref(),
        event["operator"]["tenant_key"].as_str()
    );
    assert_eq!(action.action_tag.as_deref(), Some("button"));
    assert_eq!(action.action_name.as_deref(), Some("reject"));
    assert_eq!(action.action_value, event["action"]["value"]);
    assert_eq!(
        action.open_message_id.as_deref(),
        event["context"]["open_message_id"].as_str()
    );
    assert_eq!(
        action.open_chat_id.as_deref(),
        event["context"]["open_chat_id"].as_str()
    );
    assert_eq!(action.update_token.as_deref(), event["token"].as_str());

    // Debug hides the decision token and the card update token.
    let debug = format!("{action:?}");
    assert!(!debug.contains("ah1."), "{debug}");
    assert!(!debug.contains("c-295ee"), "{debug}");
    assert!(debug.contains("ou_3c14f3a59eaf2825dbe25359f15ed8b1"));
}

#[test]
fn header_names_are_case_insensitive() {
    let v = vectors().card_action;
    let headers = [
        ("x-lark-signature", v.signature.as_str()),
        ("x-lark-request-timestamp", v.timestamp.as_str()),
        ("x-lark-request-nonce", v.nonce.as_str()),
    ];
    assert!(matches!(
        verifier().verify(&headers, v.body.as_bytes(), at(TS)),
        Ok(Callback::CardAction(_))
    ));
}

#[test]
fn url_verification_is_answered_with_the_challenge() {
    let v = vectors();
    let no_headers: [(&str, &str); 0] = [];
    let callback = verifier()
        .verify(&no_headers, v.url_verification.body.as_bytes(), at(TS))
        .unwrap();
    assert_eq!(
        callback,
        Callback::UrlVerification {
            challenge: "1b6aef1a-401f-406a-be41-f48911eabcef".into()
        }
    );
    let response: Value = serde_json::from_str(&callback.challenge_response().unwrap()).unwrap();
    assert_eq!(
        response,
        json!({"challenge": "1b6aef1a-401f-406a-be41-f48911eabcef"})
    );
    // Unencrypted too (an app that just set its Encrypt Key may still get one).
    let plain = v.url_verification.plaintext.as_bytes();
    assert!(matches!(
        verifier().verify(&no_headers, plain, at(TS)),
        Ok(Callback::UrlVerification { .. })
    ));
    // Signed ones are checked like any other request.
    assert!(matches!(
        verifier().verify(&sign_body(plain), plain, at(TS)),
        Ok(Callback::UrlVerification { .. })
    ));
    // The token must be this app's.
    let wrong = json!({"challenge": "x", "token": "someone-else", "type": "url_verification"});
    assert_eq!(
        verifier().verify(&no_headers, wrong.to_string().as_bytes(), at(TS)),
        Err(FeishuCallbackError::BadVerificationToken)
    );
    let encrypted = json!({"encrypt": key().encrypt(wrong.to_string().as_bytes(), [5; 16])});
    assert_eq!(
        verifier().verify(&no_headers, encrypted.to_string().as_bytes(), at(TS)),
        Err(FeishuCallbackError::BadVerificationToken)
    );
    let tokenless = json!({"challenge": "x", "type": "url_verification"});
    assert_eq!(
        verifier().verify(&no_headers, tokenless.to_string().as_bytes(), at(TS)),
        Err(FeishuCallbackError::MalformedPayload { field: "token" })
    );
}

#[test]
fn card_actions_must_be_signed_with_all_three_headers() {
    let v = vectors().card_action;
    let body = v.body.as_bytes();
    let no_headers: [(&str, &str); 0] = [];
    assert_eq!(
        verifier().verify(&no_headers, body, at(TS)),
        Err(FeishuCallbackError::MissingHeader {
            name: HEADER_SIGNATURE
        })
    );
    // Unsigned JSON that is not a URL verification, whatever its shape.
    assert_eq!(
        verifier().verify(&no_headers, br#"{"type": 5, "schema": []}"#, at(TS)),
        Err(FeishuCallbackError::MissingHeader {
            name: HEADER_SIGNATURE
        })
    );
    // The plaintext payload without headers, too.
    assert_eq!(
        verifier().verify(&no_headers, v.plaintext.as_bytes(), at(TS)),
        Err(FeishuCallbackError::MissingHeader {
            name: HEADER_SIGNATURE
        })
    );
    let full = signed_headers(&v.signature, &v.timestamp, &v.nonce);
    for name in [HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_NONCE] {
        let partial: Vec<_> = full.iter().filter(|(k, _)| k != name).cloned().collect();
        assert_eq!(
            verifier().verify(&partial, body, at(TS)),
            Err(FeishuCallbackError::MissingHeader { name })
        );
        let mut twice = full.clone();
        twice.push((name.to_ascii_lowercase(), "x".into()));
        assert_eq!(
            verifier().verify(&twice, body, at(TS)),
            Err(FeishuCallbackError::DuplicateHeader { name })
        );
    }
}

#[test]
fn wrong_scheme_altered_or_stale_card_actions_are_refused() {
    let v = vectors().card_action;
    let body = v.body.as_bytes();
    let verify = |sig: &str, body: &[u8], now: Timestamp| {
        verifier().verify(&signed_headers(sig, &v.timestamp, &v.nonce), body, now)
    };
    assert_eq!(
        verify(&v.legacy_sha1_signature, body, at(TS)),
        Err(FeishuCallbackError::Signature(
            CallbackSignatureError::MalformedSignature
        ))
    );
    assert_eq!(
        verify(&v.sha256_with_verification_token, body, at(TS)),
        Err(FeishuCallbackError::Signature(
            CallbackSignatureError::BadSignature
        ))
    );
    // Another encrypted payload under the same headers.
    let mut other = card_action_json();
    other["event"]["operator"]["open_id"] = json!("ou_attacker");
    let other_body =
        json!({"encrypt": key().encrypt(other.to_string().as_bytes(), [0; 16])}).to_string();
    assert_eq!(
        verify(&v.signature, other_body.as_bytes(), at(TS)),
        Err(FeishuCallbackError::Signature(
            CallbackSignatureError::BadSignature
        ))
    );
    assert_eq!(
        verify(&v.signature, body, at(TS + 3600)),
        Err(FeishuCallbackError::Signature(
            CallbackSignatureError::TooOld { timestamp: TS }
        ))
    );
    let lenient = verifier().with_tolerance(Duration::from_secs(7200));
    assert!(lenient
        .verify(
            &signed_headers(&v.signature, &v.timestamp, &v.nonce),
            body,
            at(TS + 3600)
        )
        .is_ok());
}

#[test]
fn signed_plaintext_bodies_are_accepted() {
    let body = card_action_json().to_string();
    let headers = sign_body(body.as_bytes());
    assert!(matches!(
        verifier().verify(&headers, body.as_bytes(), at(TS)),
        Ok(Callback::CardAction(_))
    ));
}

#[test]
fn authenticated_payloads_are_checked() {
    let check = |payload: Value| {
        let body =
            json!({"encrypt": key().encrypt(payload.to_string().as_bytes(), [3; 16])}).to_string();
        verifier().verify(&sign_body(body.as_bytes()), body.as_bytes(), at(TS))
    };
    let base = card_action_json();

    let mut p = base.clone();
    p["header"]["token"] = json!("other-app-token");
    assert_eq!(check(p), Err(FeishuCallbackError::BadVerificationToken));

    let mut p = base.clone();
    p["header"].as_object_mut().unwrap().remove("token");
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::MalformedPayload {
            field: "header.token"
        })
    );

    let mut p = base.clone();
    p["header"]["event_type"] = json!("im.message.receive_v1");
    p["event"] = json!({"message": {"message_id": "om_1"}});
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::UnsupportedEvent {
            event_type: "im.message.receive_v1".into()
        })
    );

    let mut p = base.clone();
    p.as_object_mut().unwrap().remove("schema");
    assert_eq!(check(p), Err(FeishuCallbackError::UnsupportedSchema));

    let mut p = base.clone();
    p["header"]["event_id"] = json!("");
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::MalformedPayload {
            field: "header.event_id"
        })
    );

    let mut p = base.clone();
    p["event"]["operator"]
        .as_object_mut()
        .unwrap()
        .remove("open_id");
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::MalformedPayload {
            field: "event.operator.open_id"
        })
    );

    let mut p = base.clone();
    p["event"]["operator"] = json!("ou_x");
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::MalformedPayload { field: "event" })
    );

    let mut p = base.clone();
    p["event"].as_object_mut().unwrap().remove("action");
    assert_eq!(
        check(p),
        Err(FeishuCallbackError::MalformedPayload {
            field: "event.action"
        })
    );

    // Optional parts may be absent.
    let mut p = base.clone();
    p["event"].as_object_mut().unwrap().remove("context");
    p["event"].as_object_mut().unwrap().remove("token");
    p["event"]["action"]
        .as_object_mut()
        .unwrap()
        .remove("value");
    let Ok(Callback::CardAction(action)) = check(p) else {
        panic!("minimal card action refused");
    };
    assert_eq!(action.action_value, Value::Null);
    assert_eq!(action.open_message_id, None);
    assert_eq!(action.update_token, None);
}

#[test]
fn bodies_that_are_not_json_or_do_not_decrypt_are_refused() {
    let check = |body: &[u8]| verifier().verify(&sign_body(body), body, at(TS));
    assert_eq!(check(b"not json"), Err(FeishuCallbackError::NotJson));
    assert_eq!(
        check(b"[1,2]"),
        Err(FeishuCallbackError::MalformedPayload { field: "body" })
    );
    assert_eq!(
        check(br#"{"encrypt": 5}"#),
        Err(FeishuCallbackError::MalformedPayload { field: "encrypt" })
    );
    assert_eq!(
        check(br#"{"encrypt": "!!!"}"#),
        Err(FeishuCallbackError::Decrypt(DecryptError::Base64))
    );
    let not_json = json!({"encrypt": key().encrypt(b"hello world", [0; 16])}).to_string();
    assert_eq!(
        check(not_json.as_bytes()),
        Err(FeishuCallbackError::NotJson)
    );
    let other_key = EncryptKey::new("another key").unwrap();
    let foreign = json!({"encrypt": other_key.encrypt(b"{\"a\":1}", [0; 16])}).to_string();
    assert!(matches!(
        check(foreign.as_bytes()),
        Err(FeishuCallbackError::Decrypt(_) | FeishuCallbackError::NotJson)
    ));
}

#[test]
fn body_size_is_limited_before_anything_else() {
    let v = vectors().card_action;
    let small = verifier().with_max_body_len(100);
    assert_eq!(
        small.verify(
            &signed_headers(&v.signature, &v.timestamp, &v.nonce),
            v.body.as_bytes(),
            at(TS)
        ),
        Err(FeishuCallbackError::BodyTooLarge {
            len: v.body.len(),
            max: 100
        })
    );
}

#[test]
fn configuration_is_checked_and_debug_hides_secrets() {
    assert_eq!(
        FeishuCallbackVerifier::new("", key()).unwrap_err(),
        FeishuSecretError::Empty
    );
    let debug = format!("{:?}", verifier());
    assert!(!debug.contains("golden"), "{debug}");
    fn ensure<T: Send + Sync>() {}
    ensure::<FeishuCallbackVerifier>();
    ensure::<EncryptKey>();
    ensure::<CustomBotSecret>();
    ensure::<Callback>();
    ensure::<FeishuCallbackError>();
}

fn replace_byte(text: &str, index: usize, with: u8) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[index] = with;
    String::from_utf8(bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_byte_change_to_a_signed_callback_is_refused(
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        pick in any::<prop::sample::Index>(),
    ) {
        let v = vectors().card_action;
        let key = key();
        let ok = |sig: &str, ts: &str, nonce: &str, body: &[u8]| {
            key.verify_callback_signature(sig, ts, nonce, body, at(TS), TOLERANCE).is_ok()
        };
        prop_assert!(ok(&v.signature, &v.timestamp, &v.nonce, v.body.as_bytes()));

        let mut body = v.body.clone().into_bytes();
        let i = pos.index(body.len());
        body[i] ^= flip;
        prop_assert!(!ok(&v.signature, &v.timestamp, &v.nonce, &body));

        let i = pos.index(v.nonce.len());
        let c = b"abcdef0123456789-"[pick.index(17)];
        if c != v.nonce.as_bytes()[i] {
            prop_assert!(!ok(&v.signature, &v.timestamp, &replace_byte(&v.nonce, i, c), v.body.as_bytes()));
        }

        let i = pos.index(v.timestamp.len());
        let d = b'0' + (v.timestamp.as_bytes()[i] - b'0' + 1 + pick.index(9) as u8) % 10;
        prop_assert!(!ok(&v.signature, &replace_byte(&v.timestamp, i, d), &v.nonce, v.body.as_bytes()));

        let i = pos.index(v.signature.len());
        let c = b"0123456789abcdef"[pick.index(16)];
        if c != v.signature.as_bytes()[i] {
            prop_assert!(!ok(&replace_byte(&v.signature, i, c), &v.timestamp, &v.nonce, v.body.as_bytes()));
        }
    }

    #[test]
    fn decrypting_random_input_never_panics(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let key = key();
        let _ = key.decrypt(&text);
        let _ = key.decrypt(&STANDARD.encode(&bytes));
    }

    #[test]
    fn random_requests_never_panic_nor_pass_as_card_actions(
        sig in ".{0,80}",
        ts in "[0-9]{0,12}",
        nonce in ".{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        with_headers in any::<bool>(),
    ) {
        let headers = if with_headers { signed_headers(&sig, &ts, &nonce) } else { Vec::new() };
        let result = verifier().verify(&headers, &body, at(TS));
        prop_assert!(!matches!(result, Ok(Callback::CardAction(_))));
    }

    #[test]
    fn random_json_under_a_valid_signature_never_panics(
        value in prop_oneof![
            Just(json!(null)),
            any::<i64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::from),
        ],
        field in prop::sample::select(vec![
            "/schema", "/header", "/header/token", "/header/event_id", "/header/event_type",
            "/event", "/event/operator", "/event/operator/open_id", "/event/action",
            "/event/action/value", "/event/context", "/event/token", "/type", "/challenge",
        ]),
    ) {
        let mut payload = card_action_json();
        if let Some(slot) = payload.pointer_mut(field) {
            *slot = value;
        }
        let body = payload.to_string();
        let _ = verifier().verify(&sign_body(body.as_bytes()), body.as_bytes(), at(TS));
    }
}
