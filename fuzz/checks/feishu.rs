//! Feishu / Lark callbacks: signature check, decryption and parsing (`src/notify/feishu/`).
//!
//! Input: a mode byte, then
//!
//! - mode `0` (request): a header byte (bits 0–2: `X-Lark-Signature`, `-Request-Timestamp`,
//!   `-Request-Nonce` present; bit 3: the timestamp header once more, lowercase), then
//!   `signature \xff timestamp \xff nonce \xff body`, verified by [`FeishuCallbackVerifier`];
//! - mode `1` (decrypt): the text of an `encrypt` field;
//! - mode `2` (custom bot): a secret, signed at a timestamp;
//! - otherwise (mint): a flag byte (bit 0: encrypt the body), an IV, a timestamp, a nonce and
//!   a plaintext read from the bytes become a correctly signed request; it is verified, and
//!   then one byte of it is edited.
//!
//! Properties:
//!
//! - nothing panics; the signature verdict (malformed, bad timestamp, bad nonce, bad
//!   signature, too old, too new, authentic) is exactly the one an independent reading of the
//!   scheme gives: `hex(SHA-256(timestamp ‖ nonce ‖ encrypt_key ‖ body))`, either case;
//! - an accepted card action was signed, lies inside the window, carries this app's
//!   verification token, and reports exactly the event id, operator, action value and nonce of
//!   the (decrypted) payload; an accepted URL verification carries the verification token;
//! - decryption is canonical: a ciphertext that decrypts is exactly what encrypting its
//!   plaintext again under its IV gives; and `decrypt(encrypt(p, iv)) == p`;
//! - encryption is transparent: a signed request answers the same whether its JSON object
//!   body is sent in clear or encrypted;
//! - a signed request with one byte edited is refused by the signature check;
//! - custom-bot signatures are `base64(HMAC-SHA256(key = timestamp + "\n" + secret, ""))`.

use agent_handoff::notify::feishu::{
    Callback, CallbackSignatureError, CustomBotSecret, DecryptError, EncryptKey,
    FeishuCallbackError, FeishuCallbackVerifier, CARD_ACTION_EVENT_TYPE, DEFAULT_MAX_BODY_LEN,
    DEFAULT_TOLERANCE, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MAX_NONCE_LEN,
};
use agent_handoff::Timestamp;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::input::{edit_byte, field_text, Input};

/// The keys of `tests/vectors/feishu_crypto.json`, so its requests are valid seeds.
const ENCRYPT_KEY: &str = "golden-encrypt-key";
const VERIFICATION_TOKEN: &str = "golden-verification-token";

/// Instants (Unix seconds) requests are verified at: the golden vectors' time, and extremes.
const NOWS: [i64; 3] = [1_700_000_000, 0, i64::MAX / 1000];

fn key() -> EncryptKey {
    EncryptKey::new(ENCRYPT_KEY).expect("non-empty key")
}

fn verifier() -> FeishuCallbackVerifier {
    FeishuCallbackVerifier::new(VERIFICATION_TOKEN, key()).expect("non-empty token")
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(secs.saturating_mul(1000))
}

/// Runs the check on one fuzzer input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() {
        0 => check_request(input),
        1 => check_decrypt(&String::from_utf8_lossy(input.rest())),
        2 => check_custom_bot(input),
        _ => check_minted(input),
    }
}

/// The signature scheme, read from the documentation.
fn expected_signature(
    signature: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    now: i64,
) -> Result<i64, CallbackSignatureError> {
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CallbackSignatureError::MalformedSignature);
    }
    let canonical = !timestamp.is_empty()
        && timestamp.bytes().all(|b| b.is_ascii_digit())
        && (timestamp == "0" || !timestamp.starts_with('0'));
    let ts: i64 = match timestamp.parse() {
        Ok(ts) if canonical => ts,
        _ => return Err(CallbackSignatureError::BadTimestamp),
    };
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || nonce.chars().any(char::is_control) {
        return Err(CallbackSignatureError::BadNonce);
    }
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(ENCRYPT_KEY.as_bytes());
    hasher.update(body);
    let want: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !want.eq_ignore_ascii_case(signature) {
        return Err(CallbackSignatureError::BadSignature);
    }
    let age = i128::from(now) - i128::from(ts);
    let tolerance = i128::from(DEFAULT_TOLERANCE.as_secs());
    if age > tolerance {
        return Err(CallbackSignatureError::TooOld { timestamp: ts });
    }
    if -age > tolerance {
        return Err(CallbackSignatureError::TooNew { timestamp: ts });
    }
    Ok(ts)
}

/// The JSON object a body stands for: itself, or the decryption of its `encrypt` field.
fn plaintext(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let Value::Object(mut outer) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    match outer.remove("encrypt") {
        None => Some(outer),
        Some(Value::String(e)) => match serde_json::from_slice(&key().decrypt(&e).ok()?).ok()? {
            Value::Object(inner) => Some(inner),
            _ => None,
        },
        Some(_) => None,
    }
}

/// Verifies one request at each of [`NOWS`] and checks the answer.
fn verify_and_check(headers: &[(&str, String)], body: &[u8]) {
    for now in NOWS {
        let got = verifier().verify(headers, body, at(now));
        check_answer(headers, body, now, &got);
    }
}

fn check_answer(
    headers: &[(&str, String)],
    body: &[u8],
    now: i64,
    got: &Result<Callback, FeishuCallbackError>,
) {
    let lookup = |name: &str| {
        let mut found = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(()),
            (Some((_, v)), None) => Ok(Some(v.as_str())),
        }
    };
    let (sig, ts, nonce) = (
        lookup(HEADER_SIGNATURE),
        lookup(HEADER_TIMESTAMP),
        lookup(HEADER_NONCE),
    );
    if body.len() > DEFAULT_MAX_BODY_LEN {
        assert!(matches!(got, Err(FeishuCallbackError::BodyTooLarge { .. })));
        return;
    }
    let (Ok(sig), Ok(ts), Ok(nonce)) = (sig, ts, nonce) else {
        assert!(
            matches!(got, Err(FeishuCallbackError::DuplicateHeader { .. })),
            "repeated header not refused: {got:?}"
        );
        return;
    };
    let signed = match (sig, ts, nonce) {
        (Some(sig), Some(ts), Some(nonce)) => {
            let want = expected_signature(sig, ts, nonce, body, now);
            // The library's own entry point gives the same verdict.
            assert_eq!(
                key().verify_callback_signature(sig, ts, nonce, body, at(now), DEFAULT_TOLERANCE),
                want
            );
            match want {
                Ok(ts) => Some((ts, nonce)),
                Err(e) => {
                    assert_eq!(got, &Err(FeishuCallbackError::Signature(e)));
                    return;
                }
            }
        }
        (None, None, None) => None,
        _ => {
            assert!(
                matches!(got, Err(FeishuCallbackError::MissingHeader { .. })),
                "partial signature headers not refused: {got:?}"
            );
            return;
        }
    };
    let Ok(callback) = got else {
        return;
    };
    let payload = plaintext(body).expect("an accepted body is a JSON object (maybe encrypted)");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match callback {
        Callback::UrlVerification { challenge } => {
            assert_eq!(
                text(payload.get("type")).as_deref(),
                Some("url_verification")
            );
            assert_eq!(
                text(payload.get("token")).as_deref(),
                Some(VERIFICATION_TOKEN)
            );
            assert_eq!(text(payload.get("challenge")).as_ref(), Some(challenge));
            let response: Value =
                serde_json::from_str(&callback.challenge_response().expect("a challenge"))
                    .expect("JSON response");
            assert_eq!(response["challenge"].as_str(), Some(challenge.as_str()));
        }
        Callback::CardAction(action) => {
            let (ts, nonce) = signed.expect("a card action is accepted only when signed");
            assert_eq!(action.request_timestamp, ts);
            assert_eq!(action.nonce, nonce);
            assert!((now - ts).abs() <= DEFAULT_TOLERANCE.as_secs() as i64);
            assert_eq!(text(payload.get("schema")).as_deref(), Some("2.0"));
            let header = payload.get("header").expect("header");
            assert_eq!(
                text(header.get("token")).as_deref(),
                Some(VERIFICATION_TOKEN)
            );
            assert_eq!(
                text(header.get("event_type")).as_deref(),
                Some(CARD_ACTION_EVENT_TYPE)
            );
            assert_eq!(
                text(header.get("event_id")).as_ref(),
                Some(&action.event_id)
            );
            assert!((1..=128).contains(&action.event_id.len()));
            let event = payload.get("event").expect("event");
            let operator = event.get("operator").expect("operator");
            assert_eq!(
                text(operator.get("open_id")).as_ref(),
                Some(&action.operator_open_id)
            );
            assert!(!action.operator_open_id.is_empty());
            let value = event["action"].get("value").cloned().unwrap_or(Value::Null);
            assert_eq!(action.action_value, value);
            assert!(
                !format!("{action:?}").contains("decision_token"),
                "Debug shows the value"
            );
        }
        other => panic!("unknown callback {other:?}"),
    }
}

fn check_request(mut input: Input<'_>) {
    let flags = input.byte();
    let parts: Vec<&[u8]> = input.rest().splitn(4, |&b| b == 0xFF).collect();
    let body = parts.get(3).copied().unwrap_or_default();
    let mut headers = Vec::new();
    let names = [HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_NONCE];
    for (i, name) in names.into_iter().enumerate() {
        if flags & (1 << i) != 0 {
            headers.push((name, field_text(&parts, i)));
        }
    }
    if flags & 8 != 0 {
        headers.push(("x-lark-request-timestamp", field_text(&parts, 1)));
    }
    verify_and_check(&headers, body);
    if let Some(Value::String(e)) = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(|v| v.get("encrypt"))
    {
        check_decrypt(e);
    }
}

fn check_decrypt(text: &str) {
    let key = key();
    match key.decrypt(text) {
        Ok(plain) => {
            let data = STANDARD.decode(text).expect("decrypted text is base64");
            let iv: [u8; 16] = data[..16].try_into().expect("an IV");
            assert_eq!(key.encrypt(&plain, iv), text, "decryption is not canonical");
        }
        Err(DecryptError::Base64) => assert!(STANDARD.decode(text).is_err()),
        Err(DecryptError::TooShort { len }) => {
            assert_eq!(STANDARD.decode(text).map(|d| d.len()), Ok(len));
            assert!(len < 32);
        }
        Err(DecryptError::NotBlockAligned { len }) => {
            assert_eq!(STANDARD.decode(text).map(|d| d.len()), Ok(len));
            assert!(len % 16 != 0);
        }
        Err(DecryptError::BadPadding) => {
            let len = STANDARD.decode(text).map(|d| d.len()).expect("base64");
            assert!(len >= 32 && len % 16 == 0);
        }
        Err(other) => panic!("unexpected decrypt error {other:?}"),
    }
}

fn check_custom_bot(mut input: Input<'_>) {
    let ts = input.i64();
    let secret = String::from_utf8_lossy(input.rest()).into_owned();
    let Ok(bot) = CustomBotSecret::new(secret.clone()) else {
        assert!(secret.is_empty());
        return;
    };
    let mac = Hmac::<Sha256>::new_from_slice(format!("{ts}\n{secret}").as_bytes())
        .expect("any key length");
    assert_eq!(bot.sign(ts), STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(format!("{bot:?}"), "CustomBotSecret(<redacted>)");
}

fn check_minted(mut input: Input<'_>) {
    let flags = input.byte();
    let iv: [u8; 16] = input.array();
    let ts = i64::from(u32::from_be_bytes(input.array()));
    let nonce = input.text();
    let pos = input.u16();
    let value = input.byte();
    let which = input.byte();
    let plain = input.rest();
    let key = key();
    assert_eq!(key.decrypt(&key.encrypt(plain, iv)).as_deref(), Ok(plain));

    let encrypted_body = serde_json::json!({ "encrypt": key.encrypt(plain, iv) })
        .to_string()
        .into_bytes();
    let body: Vec<u8> = if flags & 1 != 0 {
        encrypted_body.clone()
    } else {
        plain.to_vec()
    };
    let ts_text = ts.to_string();
    let signed = |body: &[u8]| -> Vec<(&str, String)> {
        vec![
            (
                HEADER_SIGNATURE,
                key.callback_signature(&ts_text, &nonce, body),
            ),
            (HEADER_TIMESTAMP, ts_text.clone()),
            (HEADER_NONCE, nonce.clone()),
        ]
    };
    let headers = signed(&body);
    let now = at(ts);
    let got = verifier().verify(&headers, &body, now);
    check_answer(&headers, &body, ts, &got);
    let nonce_ok =
        !nonce.is_empty() && nonce.len() <= MAX_NONCE_LEN && !nonce.chars().any(char::is_control);
    if !nonce_ok {
        assert_eq!(
            got,
            Err(FeishuCallbackError::Signature(
                CallbackSignatureError::BadNonce
            ))
        );
        return;
    }
    assert!(
        !matches!(
            got,
            Err(FeishuCallbackError::Signature(_) | FeishuCallbackError::Decrypt(_))
        ),
        "a correctly signed request was refused: {got:?}"
    );
    // Either case of hex digits verifies alike.
    let mut upper = headers.clone();
    upper[0].1 = upper[0].1.to_ascii_uppercase();
    assert_eq!(verifier().verify(&upper, &body, now), got);
    // Inside the window on both sides, refused just outside it.
    let tol = DEFAULT_TOLERANCE.as_secs() as i64;
    for (delta, fine) in [
        (tol, true),
        (-tol, true),
        (tol + 1, false),
        (-tol - 1, false),
    ] {
        let later = at(ts + delta);
        let shifted = verifier().verify(&headers, &body, later);
        check_answer(&headers, &body, ts + delta, &shifted);
        assert_eq!(shifted.is_ok(), fine && got.is_ok());
    }
    // Encryption is transparent for object bodies that do not themselves say `encrypt`.
    let is_plain_object = matches!(
        serde_json::from_slice::<Value>(plain),
        Ok(Value::Object(ref m)) if !m.contains_key("encrypt")
    );
    if is_plain_object && encrypted_body.len() <= DEFAULT_MAX_BODY_LEN {
        let clear = verifier().verify(&signed(plain), plain, now);
        let hidden = verifier().verify(&signed(&encrypted_body), &encrypted_body, now);
        assert_eq!(clear, hidden, "encrypting the body changed the answer");
    }
    // One edited byte of the signature, timestamp, nonce or body: the signature check refuses.
    let mut parts = [
        headers[0].1.clone().into_bytes(),
        headers[1].1.clone().into_bytes(),
        headers[2].1.clone().into_bytes(),
        body.clone(),
    ];
    let part = usize::from(which % 4);
    if let Some(edited) = edit_byte(&parts[part], pos, value) {
        // Header values are text: an edit that lossy UTF-8 decoding undoes (one invalid byte
        // for another) changes nothing, nor does changing the case of a hex digit of the
        // signature.
        let before = String::from_utf8_lossy(&parts[part]).into_owned();
        let after = String::from_utf8_lossy(&edited).into_owned();
        let same =
            part < 3 && (after == before || (part == 0 && after.eq_ignore_ascii_case(&before)));
        parts[part] = edited;
        let text = |i: usize| String::from_utf8_lossy(&parts[i]).into_owned();
        let edited_headers = vec![
            (HEADER_SIGNATURE, text(0)),
            (HEADER_TIMESTAMP, text(1)),
            (HEADER_NONCE, text(2)),
        ];
        let result = verifier().verify(&edited_headers, &parts[3], now);
        check_answer(&edited_headers, &parts[3], ts, &result);
        if !same {
            assert!(
                matches!(
                    result,
                    Err(FeishuCallbackError::Signature(_)
                        | FeishuCallbackError::BodyTooLarge { .. })
                ),
                "an edited request passed the signature check: part {part}, {result:?}"
            );
        }
    }
}
