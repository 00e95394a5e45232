//! Standard Webhooks v1: the golden vectors in `tests/vectors/webhook_standard_v1.json` (the
//! specification's own vector plus rotation cases, computed independently with Python's `hmac`
//! and OpenSSL) are produced by signing and accepted by verification; every malformed, altered,
//! stale or forged delivery is refused with its own error, and nothing panics.
#![cfg(feature = "webhook")]

use std::time::Duration;

use agent_handoff::notify::webhook::{
    sign, WebhookSecret, WebhookSecretError, WebhookSignError, WebhookSigner, WebhookVerifier,
    WebhookVerifierError, WebhookVerifyError, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use agent_handoff::Timestamp;
use proptest::prelude::*;
use serde::Deserialize;

const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const SPEC_TS: i64 = 1_649_367_553;
const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const SPEC_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    secrets: Vec<String>,
    msg_id: String,
    timestamp: i64,
    body: String,
    signature: String,
}

fn vectors() -> Vec<Case> {
    let v: Vectors =
        serde_json::from_str(include_str!("vectors/webhook_standard_v1.json")).unwrap();
    v.cases
}

fn secret(text: &str) -> WebhookSecret {
    text.parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_millis(secs * 1000)
}

fn spec_verifier() -> WebhookVerifier {
    WebhookVerifier::new([secret(SPEC_SECRET)]).unwrap()
}

fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        (HEADER_ID, id),
        (HEADER_TIMESTAMP, ts),
        (HEADER_SIGNATURE, sig),
    ]
}

fn verify_spec(sig: &str) -> Result<(), WebhookVerifyError> {
    spec_verifier()
        .verify_parts(SPEC_ID, &SPEC_TS.to_string(), sig, SPEC_BODY, at(SPEC_TS))
        .map(|_| ())
}

#[test]
fn spec_golden_vector_signs_and_verifies() {
    let s = secret(SPEC_SECRET);
    assert_eq!(sign(&s, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
    let ok = spec_verifier()
        .verify(
            &headers(SPEC_ID, "1649367553", SPEC_SIG),
            SPEC_BODY,
            at(SPEC_TS),
        )
        .unwrap();
    assert_eq!(ok.id, SPEC_ID);
    assert_eq!(ok.timestamp, SPEC_TS);
}

#[test]
fn file_vectors_sign_and_verify() {
    for case in vectors() {
        let secrets: Vec<_> = case.secrets.iter().map(|s| secret(s)).collect();
        let expected: Vec<&str> = case.signature.split(' ').collect();
        assert_eq!(secrets.len(), expected.len(), "{}", case.name);
        for (s, want) in secrets.iter().zip(&expected) {
            assert_eq!(
                sign(s, &case.msg_id, case.timestamp, case.body.as_bytes()),
                *want,
                "{}",
                case.name
            );
        }
        let signed = WebhookSigner::new(secrets.clone())
            .unwrap()
            .headers(&case.msg_id, at(case.timestamp), case.body.as_bytes())
            .unwrap();
        assert_eq!(signed.id, case.msg_id);
        assert_eq!(signed.timestamp, case.timestamp.to_string());
        assert_eq!(signed.signature, case.signature, "{}", case.name);
        // Each secret alone accepts the whole header (the receiver may be on either side of a
        // rotation).
        for s in &secrets {
            let verifier = WebhookVerifier::new([s.clone()]).unwrap();
            let pairs = signed.to_pairs();
            verifier
                .verify(&pairs, case.body.as_bytes(), at(case.timestamp))
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        }
    }
}

#[test]
fn secret_text_form_round_trips_and_padding_is_optional() {
    for case in vectors() {
        for text in &case.secrets {
            assert_eq!(&secret(text).expose_whsec(), text);
            let unpadded = text.trim_end_matches('=');
            assert_eq!(&secret(unpadded).expose_whsec(), text);
        }
    }
    let raw = [7u8; 32];
    let s = WebhookSecret::from_bytes(&raw).unwrap();
    assert_eq!(secret(&s.expose_whsec()).expose_whsec(), s.expose_whsec());
}

#[test]
fn secrets_are_checked() {
    assert_eq!(
        WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap_err(),
        WebhookSecretError::Prefix
    );
    assert_eq!(
        WebhookSecret::parse("whsec_not base64!").unwrap_err(),
        WebhookSecretError::Base64
    );
    assert_eq!(
        WebhookSecret::from_bytes(&[1; 23]).unwrap_err(),
        WebhookSecretError::Length { len: 23 }
    );
    assert_eq!(
        WebhookSecret::from_bytes(&[1; 65]).unwrap_err(),
        WebhookSecretError::Length { len: 65 }
    );
    assert!(WebhookSecret::from_bytes(&[1; 24]).is_ok());
    assert!(WebhookSecret::from_bytes(&[1; 64]).is_ok());
    assert!(matches!(
        WebhookSecret::parse(&format!("whsec_{}", "A".repeat(400))),
        Err(WebhookSecretError::Length { .. })
    ));
    assert!(matches!(
        WebhookVerifier::new([]),
        Err(WebhookVerifierError::SecretCount { count: 0 })
    ));
    assert!(matches!(
        WebhookSigner::new([]),
        Err(WebhookSignError::SecretCount { count: 0 })
    ));
}

#[test]
fn any_listed_signature_under_any_secret_is_enough() {
    let other = WebhookSecret::from_bytes(&[42; 32]).unwrap();
    let other_sig = sign(&other, SPEC_ID, SPEC_TS, SPEC_BODY);
    // Receiver knows both secrets, sender signed with one.
    let both = WebhookVerifier::new([other.clone(), secret(SPEC_SECRET)]).unwrap();
    both.verify_parts(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, at(SPEC_TS))
        .unwrap();
    // Sender lists several signatures, the valid one last, with odd spacing and unknown versions.
    let header = format!(
        "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==  {other_sig} v2,abc  {SPEC_SIG} "
    );
    verify_spec(&header).unwrap();
    // Only the other secret's signature: refused by a receiver that does not know it.
    assert_eq!(
        verify_spec(&other_sig),
        Err(WebhookVerifyError::NoValidSignature)
    );
}

#[test]
fn empty_truncated_overlong_and_non_base64_signatures_are_refused() {
    let b64 = SPEC_SIG.strip_prefix("v1,").unwrap();
    let refused = [
        String::new(),
        " ".into(),
        "v1,".into(),
        "v1".into(),
        ",".into(),
        format!("v1,{}", &b64[..43]),
        format!("v1,{}", &b64[..40]),
        format!("v1,{}", b64.trim_end_matches('=')),
        format!("v1,{b64}A"),
        format!("v1,{b64}{b64}"),
        format!("v1,{}", "!".repeat(44)),
        format!("v1,{}", b64.replace('/', "_").replace('+', "-")),
        format!("v1,{}==", &b64[..42]),
        // The right tag under another version prefix, or with the prefix in another case.
        format!("v2,{b64}"),
        format!("V1,{b64}"),
        format!("v1a,{b64}"),
        b64.to_string(),
        // The tag base64-encoded twice, hex, or with the wrong secret.
        "v1,b5d648e3f843ca000980ee5363189277a49dd240d6ea13de9c37be6d36b72a4c".into(),
        "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=".into(),
    ];
    for sig in refused {
        assert_eq!(
            verify_spec(&sig),
            Err(WebhookVerifyError::NoValidSignature),
            "{sig:?}"
        );
    }
    // More than the allowed number of entries, or an enormous header, is refused unparsed.
    let many = vec![SPEC_SIG; 17].join(" ");
    assert_eq!(
        verify_spec(&many),
        Err(WebhookVerifyError::BadSignatureHeader)
    );
    let huge = format!("{SPEC_SIG} {}", "x".repeat(5000));
    assert_eq!(
        verify_spec(&huge),
        Err(WebhookVerifyError::BadSignatureHeader)
    );
}

#[test]
fn headers_must_be_present_once_and_match_case_insensitively() {
    let v = spec_verifier();
    let now = at(SPEC_TS);
    let all = headers(SPEC_ID, "1649367553", SPEC_SIG);
    for missing in [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE] {
        let partial: Vec<_> = all.iter().filter(|(k, _)| *k != missing).cloned().collect();
        assert_eq!(
            v.verify(&partial, SPEC_BODY, now),
            Err(WebhookVerifyError::MissingHeader { name: missing })
        );
    }
    let mut twice = all.clone();
    twice.push(("Webhook-Signature", SPEC_SIG));
    assert_eq!(
        v.verify(&twice, SPEC_BODY, now),
        Err(WebhookVerifyError::DuplicateHeader {
            name: HEADER_SIGNATURE
        })
    );
    let shouting: Vec<(String, String)> = all
        .iter()
        .map(|(k, val)| (k.to_ascii_uppercase(), val.to_string()))
        .collect();
    v.verify(&shouting, SPEC_BODY, now).unwrap();
}

#[test]
fn ids_and_timestamps_are_parsed_strictly() {
    let v = spec_verifier();
    let now = at(SPEC_TS);
    for id in ["", "msg.1", "msg 1", "msg\n1"] {
        assert_eq!(
            v.verify_parts(id, "1649367553", SPEC_SIG, SPEC_BODY, now),
            Err(WebhookVerifyError::BadId),
            "{id:?}"
        );
    }
    for ts in [
        "",
        "abc",
        "-1649367553",
        "+1649367553",
        "01649367553",
        "1649367553.0",
        " 1649367553",
        "1649367553000000000000",
    ] {
        assert_eq!(
            v.verify_parts(SPEC_ID, ts, SPEC_SIG, SPEC_BODY, now),
            Err(WebhookVerifyError::BadTimestamp),
            "{ts:?}"
        );
    }
}

#[test]
fn tolerance_window_is_five_minutes_each_way_by_default() {
    let v = spec_verifier();
    let check = |now: Timestamp| {
        v.verify_parts(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, now)
            .map(|_| ())
    };
    check(at(SPEC_TS + 300)).unwrap();
    check(at(SPEC_TS - 300)).unwrap();
    // 300.999 s is still 300 whole seconds.
    check(Timestamp::from_unix_millis((SPEC_TS + 300) * 1000 + 999)).unwrap();
    assert_eq!(
        check(at(SPEC_TS + 301)),
        Err(WebhookVerifyError::TooOld { timestamp: SPEC_TS })
    );
    assert_eq!(
        check(at(SPEC_TS - 301)),
        Err(WebhookVerifyError::TooNew { timestamp: SPEC_TS })
    );
    assert_eq!(
        check(Timestamp::from_unix_millis(i64::MAX)),
        Err(WebhookVerifyError::TooOld { timestamp: SPEC_TS })
    );
    assert_eq!(
        check(Timestamp::from_unix_millis(i64::MIN)),
        Err(WebhookVerifyError::TooNew { timestamp: SPEC_TS })
    );

    let strict = spec_verifier().with_tolerance(Duration::from_secs(10));
    strict
        .verify_parts(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, at(SPEC_TS + 10))
        .unwrap();
    assert!(matches!(
        strict.verify_parts(SPEC_ID, "1649367553", SPEC_SIG, SPEC_BODY, at(SPEC_TS + 11)),
        Err(WebhookVerifyError::TooOld { .. })
    ));
}

#[test]
fn window_is_judged_only_for_authentic_messages() {
    // A forged signature on a stale message says "forged", not "too old".
    let forged = "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=";
    assert_eq!(
        spec_verifier().verify_parts(SPEC_ID, "1649367553", forged, SPEC_BODY, at(0)),
        Err(WebhookVerifyError::NoValidSignature)
    );
}

#[test]
fn signer_checks_ids_and_time() {
    let signer = WebhookSigner::new([secret(SPEC_SECRET)]).unwrap();
    for id in ["", "a.b", "a b", "ü"] {
        assert_eq!(
            signer.headers(id, at(SPEC_TS), SPEC_BODY).unwrap_err(),
            WebhookSignError::InvalidId,
            "{id:?}"
        );
    }
    assert_eq!(
        signer
            .headers(SPEC_ID, Timestamp::from_unix_millis(-1), SPEC_BODY)
            .unwrap_err(),
        WebhookSignError::BeforeEpoch
    );
    // Milliseconds are dropped: the header carries whole seconds.
    let h = signer
        .headers(
            SPEC_ID,
            Timestamp::from_unix_millis(SPEC_TS * 1000 + 999),
            SPEC_BODY,
        )
        .unwrap();
    assert_eq!(h.timestamp, "1649367553");
    assert_eq!(h.signature, SPEC_SIG);
}

#[test]
fn non_utf8_bodies_are_signed_as_bytes() {
    let s = secret(SPEC_SECRET);
    let body = [0xff, 0xfe, 0x00, 0x80];
    let sig = sign(&s, SPEC_ID, SPEC_TS, &body);
    spec_verifier()
        .verify_parts(SPEC_ID, "1649367553", &sig, &body, at(SPEC_TS))
        .unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn ensure<T: Send + Sync>() {}
    ensure::<WebhookSecret>();
    ensure::<WebhookSigner>();
    ensure::<WebhookVerifier>();
    ensure::<WebhookVerifyError>();
}

const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-:";
const B64_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn replace_byte(text: &str, index: usize, with: u8) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[index] = with;
    String::from_utf8(bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_single_byte_change_is_refused(
        body in proptest::collection::vec(any::<u8>(), 1..200),
        id in "[A-Za-z0-9_]{1,40}",
        ts in 0i64..4_000_000_000,
        pos in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        pick in any::<prop::sample::Index>(),
    ) {
        let s = secret(SPEC_SECRET);
        let v = spec_verifier();
        let sig = sign(&s, &id, ts, &body);
        let ts_text = ts.to_string();
        let now = at(ts);
        prop_assert!(v.verify_parts(&id, &ts_text, &sig, &body, now).is_ok());

        // Body: any byte altered.
        let mut altered = body.clone();
        let i = pos.index(altered.len());
        altered[i] ^= flip;
        prop_assert_eq!(
            v.verify_parts(&id, &ts_text, &sig, &altered, now),
            Err(WebhookVerifyError::NoValidSignature)
        );

        // Id: any character replaced by another id character.
        let i = pos.index(id.len());
        let c = ID_CHARS[pick.index(ID_CHARS.len())];
        if c != id.as_bytes()[i] {
            let other = replace_byte(&id, i, c);
            prop_assert_eq!(
                v.verify_parts(&other, &ts_text, &sig, &body, now),
                Err(WebhookVerifyError::NoValidSignature)
            );
        }

        // Timestamp: any digit replaced by another digit (a leading zero is malformed).
        let i = pos.index(ts_text.len());
        let d = b'0' + (ts_text.as_bytes()[i] - b'0' + 1 + pick.index(9) as u8) % 10;
        let other = replace_byte(&ts_text, i, d);
        let result = v.verify_parts(&id, &other, &sig, &body, now);
        prop_assert!(matches!(
            result,
            Err(WebhookVerifyError::NoValidSignature | WebhookVerifyError::BadTimestamp)
        ), "{:?}", result);

        // Signature: any character of the whole `v1,<base64>` replaced.
        let i = pos.index(sig.len());
        let c = B64_CHARS[pick.index(B64_CHARS.len())];
        if c != sig.as_bytes()[i] {
            let other = replace_byte(&sig, i, c);
            prop_assert_eq!(
                v.verify_parts(&id, &ts_text, &other, &body, now),
                Err(WebhookVerifyError::NoValidSignature)
            );
        }
    }

    #[test]
    fn random_header_values_never_panic_nor_verify(
        id in ".{0,300}",
        ts in ".{0,30}",
        sig in ".{0,5000}",
        body in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let result = spec_verifier().verify(&headers(&id, &ts, &sig), &body, at(SPEC_TS));
        prop_assert!(result.is_err());
    }

    #[test]
    fn random_signature_lists_never_panic_nor_verify(
        entries in proptest::collection::vec("(v1|v1a|v2|)[,]?[A-Za-z0-9+/=]{0,50}", 0..20),
    ) {
        let header = entries.join(" ");
        prop_assert!(verify_spec(&header).is_err());
    }

    #[test]
    fn random_secret_text_never_panics(text in "(whsec_)?.{0,200}") {
        let _ = WebhookSecret::parse(&text);
    }
}
