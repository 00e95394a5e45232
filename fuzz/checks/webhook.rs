//! Standard Webhooks: header verification (`src/notify/webhook/signature.rs`).
//!
//! Input: a mode byte, then
//!
//! - mode `0` (parts): `id \xff timestamp \xff signature-header \xff body`, verified with
//!   [`WebhookVerifier::verify_parts`];
//! - mode `1` (headers): `body \xff name \xff value \xff name \xff value …`, verified with
//!   [`WebhookVerifier::verify`] (missing, repeated and differently cased header names);
//! - mode `2` (secret text): [`WebhookSecret::parse`];
//! - otherwise (mint): a secret, id, time and body read from the bytes are signed with
//!   [`WebhookSigner`], verified, then one byte of one header or of the body is edited and the
//!   edit is checked as in mode `0`.
//!
//! Properties:
//!
//! - verification never panics, and its answer is exactly the one an independent reading of
//!   the specification gives (id and timestamp form, header limits, then **authentic iff one
//!   listed `v1` entry is exactly `v1,` + base64 of the HMAC-SHA256 of `id.timestamp.body`
//!   under one of the secrets**, then the window) — so nothing verifies that was not signed
//!   with a held secret, and an empty, truncated, over-long or re-spelled tag never does;
//! - header lookup finds each of the three headers case-insensitively and refuses a missing
//!   or repeated one, in the order id, timestamp, signature;
//! - secrets: a parsed secret is 24 to 64 bytes and its text form parses back to it;
//! - a signed delivery verifies with the id and timestamp it was signed with, inside the
//!   window, and is refused as too old or too new outside it.

use std::time::Duration;

use agent_handoff::notify::webhook::{
    VerifiedWebhook, WebhookSecret, WebhookSecretError, WebhookSignError, WebhookSigner,
    WebhookVerifier, WebhookVerifyError, DEFAULT_TOLERANCE, HEADER_ID, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, MAX_SECRET_LEN, MAX_SIGNATURES, MAX_SIGNATURE_HEADER_LEN, MIN_SECRET_LEN,
};
use agent_handoff::Timestamp;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::input::{edit_byte, field_text, fields, Input};

/// The secrets of `tests/vectors/webhook_standard_v1.json`, so its cases are valid seeds.
const SECRETS: [&str; 2] = [
    "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
];

/// Instants (Unix ms) the parts and headers modes verify at: near each golden vector, and
/// extremes.
const NOWS: [i64; 5] = [
    1_649_367_553_000,
    1_700_000_299_999,
    1_674_087_231_000,
    0,
    i64::MAX,
];

fn secret_bytes(text: &str) -> Vec<u8> {
    let b64 = text.strip_prefix("whsec_").expect("whsec_ prefix");
    STANDARD.decode(b64).expect("padded test secrets")
}

/// Runs the check on one fuzzer input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let rest = input.rest();
    let secrets: Vec<Vec<u8>> = SECRETS.iter().map(|s| secret_bytes(s)).collect();
    match mode {
        0 => {
            let parts: Vec<&[u8]> = rest.splitn(4, |&b| b == 0xFF).collect();
            let text = |i| field_text(&parts, i);
            let body = parts.get(3).copied().unwrap_or_default();
            for now in NOWS {
                let _ = check_parts(&secrets, &text(0), &text(1), &text(2), body, now);
            }
        }
        1 => check_headers(&secrets, rest),
        2 => check_secret_text(&String::from_utf8_lossy(rest)),
        _ => check_minted(input_after_mode(data)),
    }
}

fn input_after_mode(data: &[u8]) -> Input<'_> {
    let mut input = Input::new(data);
    input.byte();
    input
}

fn verifier(secrets: &[Vec<u8>]) -> WebhookVerifier {
    WebhookVerifier::new(
        secrets
            .iter()
            .map(|s| WebhookSecret::from_bytes(s).expect("valid test secret")),
    )
    .expect("1 to 16 secrets")
}

/// 1 to 256 printable ASCII characters, no `.` (it separates the signed parts).
fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'.')
}

/// What the specification says `verify_parts` must answer.
fn expected(
    secrets: &[Vec<u8>],
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<VerifiedWebhook, WebhookVerifyError> {
    if !id_ok(id) {
        return Err(WebhookVerifyError::BadId);
    }
    let canonical = !timestamp.is_empty()
        && timestamp.bytes().all(|b| b.is_ascii_digit())
        && (timestamp == "0" || !timestamp.starts_with('0'));
    let ts: i64 = match timestamp.parse() {
        Ok(ts) if canonical => ts,
        _ => return Err(WebhookVerifyError::BadTimestamp),
    };
    let entries: Vec<&str> = signature.split(' ').filter(|e| !e.is_empty()).collect();
    if signature.len() > MAX_SIGNATURE_HEADER_LEN || entries.len() > MAX_SIGNATURES {
        return Err(WebhookVerifyError::BadSignatureHeader);
    }
    let authentic = secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        entries.iter().any(|e| *e == want)
    });
    if !authentic {
        return Err(WebhookVerifyError::NoValidSignature);
    }
    let age = i128::from(now_ms.div_euclid(1000)) - i128::from(ts);
    let tolerance = i128::from(DEFAULT_TOLERANCE.as_secs());
    if age > tolerance {
        return Err(WebhookVerifyError::TooOld { timestamp: ts });
    }
    if -age > tolerance {
        return Err(WebhookVerifyError::TooNew { timestamp: ts });
    }
    // Build the success value through the library (its fields are not constructible here).
    Ok(verifier(secrets)
        .verify_parts(
            id,
            timestamp,
            signature,
            body,
            Timestamp::from_unix_millis(now_ms),
        )
        .expect("an authentic message inside the window verifies"))
}

fn check_parts(
    secrets: &[Vec<u8>],
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<VerifiedWebhook, WebhookVerifyError> {
    let got = verifier(secrets).verify_parts(
        id,
        timestamp,
        signature,
        body,
        Timestamp::from_unix_millis(now_ms),
    );
    let want = expected(secrets, id, timestamp, signature, body, now_ms);
    assert_eq!(
        got,
        want,
        "verify_parts({id:?}, {timestamp:?}, {signature:?}, {} body bytes) at {now_ms} ms",
        body.len()
    );
    if let Ok(ok) = &got {
        assert_eq!(ok.id, id);
        assert_eq!(ok.timestamp.to_string(), timestamp);
    }
    got
}

fn check_headers(secrets: &[Vec<u8>], rest: &[u8]) {
    let parts = fields(rest);
    let body = parts[0];
    let pairs: Vec<(String, String)> = parts[1..]
        .chunks(2)
        .map(|kv| {
            (
                String::from_utf8_lossy(kv[0]).into_owned(),
                kv.get(1)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    // The reference lookup: each name exactly once, compared ASCII case-insensitively.
    let lookup = |name: &'static str| -> Result<&str, WebhookVerifyError> {
        let mut found = pairs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (None, _) => Err(WebhookVerifyError::MissingHeader { name }),
            (Some(_), Some(_)) => Err(WebhookVerifyError::DuplicateHeader { name }),
            (Some((_, v)), None) => Ok(v.as_str()),
        }
    };
    for now in NOWS {
        let got = verifier(secrets).verify(&pairs, body, Timestamp::from_unix_millis(now));
        let want = (|| {
            let id = lookup(HEADER_ID)?;
            let ts = lookup(HEADER_TIMESTAMP)?;
            let sig = lookup(HEADER_SIGNATURE)?;
            check_parts(secrets, id, ts, sig, body, now)
        })();
        assert_eq!(got, want, "verify({pairs:?}) at {now} ms");
    }
}

fn check_secret_text(text: &str) {
    match WebhookSecret::parse(text) {
        Ok(secret) => {
            let shown = secret.expose_whsec();
            let again = WebhookSecret::parse(&shown).expect("the text form parses");
            assert_eq!(again.expose_whsec(), shown);
            let len = secret_bytes(&shown).len();
            assert!((MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len));
            assert!(
                !format!("{secret:?}").contains(&shown[6..]),
                "Debug shows the secret"
            );
        }
        Err(WebhookSecretError::Prefix) => assert!(!text.starts_with("whsec_")),
        Err(WebhookSecretError::Base64 | WebhookSecretError::Length { .. }) => {
            assert!(text.starts_with("whsec_"))
        }
        Err(other) => panic!("unexpected secret error {other:?}"),
    }
}

fn check_minted(mut input: Input<'_>) {
    let secret_raw = input.chunk().to_vec();
    let secret = match WebhookSecret::from_bytes(&secret_raw) {
        Ok(secret) => secret,
        Err(e) => {
            assert!(
                !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret_raw.len()),
                "{e:?}"
            );
            return;
        }
    };
    let id = input.text();
    let now = Timestamp::from_unix_millis(input.i64());
    let which = input.byte();
    let pos = input.u16();
    let value = input.byte();
    let body = input.rest();
    let golden = WebhookSecret::parse(SECRETS[0]).expect("golden secret");
    let signer = WebhookSigner::new([secret, golden]).expect("two secrets");
    let headers = match signer.headers(&id, now, body) {
        Ok(headers) => {
            assert!(id_ok(&id) && now.as_unix_seconds() >= 0);
            headers
        }
        Err(WebhookSignError::InvalidId) => {
            assert!(!id_ok(&id), "refused a valid id {id:?}");
            return;
        }
        Err(WebhookSignError::BeforeEpoch) => {
            assert!(now.as_unix_seconds() < 0);
            return;
        }
        Err(other) => panic!("unexpected sign error {other:?}"),
    };
    assert_eq!(headers.id, id);
    assert_eq!(headers.timestamp, now.as_unix_seconds().to_string());
    assert_eq!(headers.signature.split(' ').count(), 2);
    // The receiver holding only the first secret accepts it, as signed.
    let held = [secret_raw];
    let ok = verifier(&held)
        .verify(&headers.to_pairs(), body, now)
        .expect("a signed delivery verifies");
    assert_eq!(
        (ok.id.as_str(), ok.timestamp),
        (id.as_str(), now.as_unix_seconds())
    );
    check_parts(
        &held,
        &headers.id,
        &headers.timestamp,
        &headers.signature,
        body,
        now.as_unix_millis(),
    )
    .expect("a signed delivery verifies");
    // Outside the window, refused by time (it is authentic).
    let past = DEFAULT_TOLERANCE + Duration::from_secs(1);
    let later = now.saturating_add(past);
    if later.as_unix_seconds() - now.as_unix_seconds() > 300 {
        assert_eq!(
            verifier(&held).verify(&headers.to_pairs(), body, later),
            Err(WebhookVerifyError::TooOld {
                timestamp: now.as_unix_seconds()
            })
        );
    }
    // One edited byte in one part: the reference decides.
    let mut parts = [
        headers.id.clone().into_bytes(),
        headers.timestamp.clone().into_bytes(),
        headers.signature.clone().into_bytes(),
        body.to_vec(),
    ];
    let part = usize::from(which % 4);
    if let Some(edited) = edit_byte(&parts[part], pos, value) {
        // Header values are text: an edit that lossy UTF-8 decoding undoes (one invalid byte
        // for another) changes nothing.
        let same =
            part < 3 && String::from_utf8_lossy(&edited) == String::from_utf8_lossy(&parts[part]);
        parts[part] = edited;
        let text = |i: usize| String::from_utf8_lossy(&parts[i]).into_owned();
        let result = check_parts(
            &held,
            &text(0),
            &text(1),
            &text(2),
            &parts[3],
            now.as_unix_millis(),
        );
        // Editing the id, the timestamp, the body or the held secret's tag breaks it; only an
        // edit of the other secret's tag (or of the separator space) may leave it verifying.
        if part != 2 && !same {
            assert!(result.is_err(), "an edited delivery verified: part {part}");
        }
    }
}
