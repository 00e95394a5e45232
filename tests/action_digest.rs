//! The action digest through the public API: golden vectors, what changes it and what does
//! not, keyed digests, and exact serde round trips.

use agent_handoff::action::{
    canonical_json, parse_strict_json, ActionDigest, ActionRequest, Amount, DigestKey, Environment,
    Impact, Justification, KeyedDigest, Reversibility, Sensitivity, ACTION_DIGEST_FORMAT,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------------
// Golden vectors
// ---------------------------------------------------------------------------------------------

/// The request of the `ActionDigest` documentation example.
fn vector_1() -> ActionRequest {
    ActionRequest::builder("payment.send", "invoice-2024-0042")
        .target("vendor:acme")
        .parameters(
            json!({"iban": "DE89370400440532013000", "amount": "4200.50", "currency": "USD"}),
        )
        .sensitive("/iban")
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .impact(Impact::new(Amount::parse("4200.50").unwrap(), "USD"))
        .reversibility(Reversibility::Compensable)
        .confidence(0.93)
        .attribute("vendor_tier", json!("new"))
        .precondition("balance_at_least", json!("5000"))
        .reason("pay the March invoice")
        .build()
        .unwrap()
}

const VECTOR_1_BYTES: &[u8] = include_bytes!("vectors/action_digest_v1.json");
const VECTOR_1_DIGEST: &str = "eab5f43cd01530b3c4d605354d1b51d81f8a76a009cb27d25d6c3e2e5283638a";

/// A request with the hard cases: keys that sort differently in UTF-16 and UTF-8, every kind of
/// escape, ES6 number forms, a custom environment, an impact in integer minor units, no
/// confidence.
const VECTOR_2_REQUEST: &str = r#"{
  "kind": "crm.contact.update",
  "idempotency_key": "vector-2-unicode",
  "targets": ["crm:contact/42", "\u00fcn\u00efc\u00f6d\u00e9:\u20ac"],
  "parameters": {
    "\u20ac": "euro", "\ud83d\ude02": "smiley", "\ufb33": "dalet",
    "a": [1E30, 4.50, 2e-3, 0.000001, 1e-7, -0.0, 9007199254740991, -9007199254740991,
          333333333.33333329, 1e21, 1.0],
    "ctl": "\u0000\b\t\n\u000b\f\r\u001f\"\\\/\u007f",
    "nested": {"z": null, "y": true, "x": false, "w": {}, "v": []}
  },
  "environment": "eu-prod",
  "sensitivity": "public",
  "impact": {"amount": 420050, "unit": "EUR_cents"},
  "reversibility": "reversible",
  "attributes": {"b.c": [], "A-1": {"k": "v"}},
  "preconditions": {},
  "justification": {"reason": "fix a typo", "risk_factors": ["none"]}
}"#;

const VECTOR_2_BYTES: &[u8] = include_bytes!("vectors/action_digest_v1_unicode.json");
const VECTOR_2_DIGEST: &str = "d971bc1eb1e4d0ce5772f7b4f190e4210354d42060c55b462513001537fef576";

#[test]
fn golden_vector_1_canonical_bytes_and_digest() {
    let request = vector_1();
    assert_eq!(
        String::from_utf8(ActionDigest::canonical_bytes(&request)).unwrap(),
        String::from_utf8(VECTOR_1_BYTES.to_vec()).unwrap()
    );
    assert_eq!(request.digest().to_string(), VECTOR_1_DIGEST);
    // The digest is plain SHA-256 of the checked-in bytes.
    let sha: [u8; 32] = Sha256::digest(VECTOR_1_BYTES).into();
    assert_eq!(request.digest(), ActionDigest::from_bytes(sha));
    assert_eq!(ActionDigest::of(&request), request.digest());
}

#[test]
fn golden_vector_2_canonical_bytes_and_digest() {
    let request = ActionRequest::from_json(VECTOR_2_REQUEST).unwrap();
    assert_eq!(
        String::from_utf8(ActionDigest::canonical_bytes(&request)).unwrap(),
        String::from_utf8(VECTOR_2_BYTES.to_vec()).unwrap()
    );
    assert_eq!(request.digest().to_string(), VECTOR_2_DIGEST);
    let sha: [u8; 32] = Sha256::digest(VECTOR_2_BYTES).into();
    assert_eq!(request.digest(), ActionDigest::from_bytes(sha));
}

#[test]
fn golden_vectors_are_their_own_canonical_form() {
    // Re-canonicalising the checked-in bytes gives them back unchanged: they are JCS output.
    for bytes in [VECTOR_1_BYTES, VECTOR_2_BYTES] {
        let text = std::str::from_utf8(bytes).unwrap();
        assert_eq!(canonical_json(&parse_strict_json(text).unwrap()), bytes);
    }
}

#[test]
fn digested_document_has_exactly_the_documented_members() {
    let doc = parse_strict_json(std::str::from_utf8(VECTOR_1_BYTES).unwrap()).unwrap();
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "attributes",
            "confidence",
            "environment",
            "format",
            "impact",
            "kind",
            "parameters",
            "preconditions",
            "reversibility",
            "sensitivity",
            "targets"
        ]
    );
    assert_eq!(doc["format"], ACTION_DIGEST_FORMAT);
    // Neither the justification, nor the idempotency key, nor the sensitive pointers.
    let text = std::str::from_utf8(VECTOR_1_BYTES).unwrap();
    assert!(!text.contains("March"));
    assert!(!text.contains("invoice-2024-0042"));
    assert!(!text.contains("/iban"));
}

#[test]
fn absent_impact_and_confidence_are_null() {
    let request = ActionRequest::builder("db.table.drop", "drop-orders-1")
        .build()
        .unwrap();
    let doc: Value = serde_json::from_slice(&ActionDigest::canonical_bytes(&request)).unwrap();
    assert_eq!(doc["impact"], Value::Null);
    assert_eq!(doc["confidence"], Value::Null);
    assert_eq!(doc["targets"], json!([]));
    assert_eq!(doc["attributes"], json!({}));
    assert_eq!(doc["preconditions"], json!({}));
    assert_eq!(doc["environment"], "production");
    assert_eq!(doc["sensitivity"], "regulated");
    assert_eq!(doc["reversibility"], "irreversible");
}

// ---------------------------------------------------------------------------------------------
// Specific equalities and differences
// ---------------------------------------------------------------------------------------------

fn with_impact(amount: &str) -> ActionRequest {
    ActionRequest::builder("payment.send", "invoice-2024-0042")
        .impact(Impact::new(Amount::parse(amount).unwrap(), "USD"))
        .build()
        .unwrap()
}

#[test]
fn equal_amounts_in_different_spellings_digest_the_same() {
    assert_eq!(
        with_impact("4200.50").digest(),
        with_impact("4200.5").digest()
    );
    assert_eq!(
        with_impact("04200.500").digest(),
        with_impact("4200.5").digest()
    );
    assert_ne!(
        with_impact("4200.51").digest(),
        with_impact("4200.5").digest()
    );
    assert_ne!(
        with_impact("42005").digest(),
        with_impact("4200.5").digest()
    );
    // Integer minor units in JSON and the same digits as a string are the same amount.
    let json = |amount: &str| {
        ActionRequest::from_json(&format!(
            r#"{{"kind": "payment.send", "idempotency_key": "invoice-2024-0042",
                "impact": {{"amount": {amount}, "unit": "USD_cents"}}}}"#
        ))
        .unwrap()
        .digest()
    };
    assert_eq!(json("420050"), json("\"420050\""));
    assert_eq!(json("420050"), json("\"420050.000\""));
}

#[test]
fn justification_idempotency_key_and_sensitive_marks_are_not_digested() {
    let base = vector_1();
    let other = ActionRequest::builder("payment.send", "another-key-9999")
        .target("vendor:acme")
        .parameters(
            json!({"iban": "DE89370400440532013000", "amount": "4200.50", "currency": "USD"}),
        )
        .environment(Environment::Production)
        .sensitivity(Sensitivity::Confidential)
        .impact(Impact::new(Amount::parse("4200.5").unwrap(), "USD"))
        .reversibility(Reversibility::Compensable)
        .confidence(0.93)
        .attribute("vendor_tier", json!("new"))
        .precondition("balance_at_least", json!("5000"))
        .justification(Justification {
            reason: "something else entirely".into(),
            expected_effect: "money moves".into(),
            risk_factors: vec!["wrong vendor".into()],
            rollback_plan: Some("refund".into()),
        })
        .sensitive("/amount")
        .build()
        .unwrap();
    assert_ne!(base, other);
    assert_eq!(base.digest(), other.digest());
}

#[test]
fn a_parameter_string_is_not_an_amount() {
    // Parameters are digested as given: "4200.50" and "4200.5" are different strings there.
    let p = |amount: &str| {
        ActionRequest::builder("payment.send", "invoice-2024-0042")
            .parameters(json!({ "amount": amount }))
            .build()
            .unwrap()
            .digest()
    };
    assert_ne!(p("4200.50"), p("4200.5"));
}

#[test]
fn number_spellings_that_read_as_the_same_double_digest_the_same() {
    let d = |number: &str| {
        ActionRequest::from_json(&format!(
            r#"{{"kind": "x.y", "idempotency_key": "numbers-1", "parameters": {{"n": {number}}}}}"#
        ))
        .unwrap()
        .digest()
    };
    assert_eq!(d("1"), d("1.0"));
    assert_eq!(d("1"), d("1E0"));
    assert_eq!(d("100"), d("1e2"));
    assert_eq!(d("0.5"), d("5e-1"));
    assert_eq!(d("0"), d("-0"));
    assert_ne!(d("0.1"), d("0.10000000000000002"));
}

// ---------------------------------------------------------------------------------------------
// Keyed digests and text forms
// ---------------------------------------------------------------------------------------------

#[test]
fn keyed_digests_depend_on_key_and_digest_and_verify() {
    let key = DigestKey::from_bytes([7; 32]);
    let digest = vector_1().digest();
    let keyed = key.keyed(&digest);
    assert_eq!(keyed, key.keyed(&digest));
    assert!(key.verify(&digest, &keyed));
    assert!(keyed.verify(&key.keyed(&digest)));
    assert!(!key.verify(&with_impact("1").digest(), &keyed));
    assert!(!DigestKey::from_bytes([8; 32]).verify(&digest, &keyed));
    assert_ne!(keyed.as_bytes(), digest.as_bytes());
    // Text form round trip.
    let text = keyed.to_string();
    assert_eq!(text.parse::<KeyedDigest>().unwrap(), keyed);
    assert!(format!("{keyed:?}").starts_with(&format!("KeyedDigest({}", &text[..8])));
}

#[test]
fn digest_text_form_round_trips() {
    let digest = vector_1().digest();
    assert_eq!(digest.to_string(), VECTOR_1_DIGEST);
    assert_eq!(VECTOR_1_DIGEST.parse::<ActionDigest>().unwrap(), digest);
    assert_eq!(format!("{digest:?}"), "ActionDigest(eab5f43c…)");
    assert_eq!(
        serde_json::to_string(&digest).unwrap(),
        format!("\"{VECTOR_1_DIGEST}\"")
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

const MAX_SAFE: i64 = (1 << 53) - 1;

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE..=MAX_SAFE).prop_map(Value::from),
        (0u64..1000).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\/a]{0,6}".prop_map(Value::String),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,4}",
        "\\PC{0,6}",
        "[\\u{e000}-\\u{e010}\\u{1f600}-\\u{1f610}]{1,3}"
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn parameters() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(json_key(), json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn facts_map() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec(("[A-Za-z0-9_.-]{1,12}", json_value()), 0..4)
}

fn environment() -> impl Strategy<Value = Environment> {
    prop_oneof![
        Just(Environment::Development),
        Just(Environment::Staging),
        Just(Environment::Production),
        "[a-z0-9_-]{1,10}".prop_map(|name| Environment::parse(&name).unwrap()),
    ]
}

fn sensitivity() -> impl Strategy<Value = Sensitivity> {
    prop_oneof![
        Just(Sensitivity::Public),
        Just(Sensitivity::Internal),
        Just(Sensitivity::Confidential),
        Just(Sensitivity::Regulated),
    ]
}

fn reversibility() -> impl Strategy<Value = Reversibility> {
    prop_oneof![
        Just(Reversibility::Reversible),
        Just(Reversibility::Compensable),
        Just(Reversibility::Irreversible),
    ]
}

fn impact() -> impl Strategy<Value = Option<Impact>> {
    prop::option::of(
        ("[0-9]{1,10}(\\.[0-9]{1,5})?", "[A-Za-z0-9_]{1,8}")
            .prop_map(|(amount, unit)| Impact::new(Amount::parse(&amount).unwrap(), unit)),
    )
}

fn justification() -> impl Strategy<Value = Justification> {
    (
        "\\PC{0,20}",
        "\\PC{0,20}",
        prop::collection::vec("\\PC{0,10}", 0..3),
        prop::option::of("\\PC{0,10}"),
    )
        .prop_map(
            |(reason, expected_effect, risk_factors, rollback_plan)| Justification {
                reason,
                expected_effect,
                risk_factors,
                rollback_plan,
            },
        )
}

/// Every JSON pointer into `value` except the root.
fn pointers(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let escape = |t: &str| t.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{prefix}/{}", escape(k));
                out.push(p.clone());
                pointers(v, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(v, &p, out);
            }
        }
        _ => {}
    }
}

prop_compose! {
    fn request()(
        kind in "[a-z0-9_-]{1,8}(\\.[a-z0-9_-]{1,8}){0,3}",
        key in "[!-~]{8,20}",
        targets in prop::collection::vec("\\PC{1,16}", 0..4),
        parameters in parameters(),
        facts in (environment(), sensitivity(), impact(), reversibility(),
                  prop::option::of(0.0f64..=1.0)),
        justification in justification(),
        attributes in facts_map(),
        preconditions in facts_map(),
        sensitive_picks in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) -> ActionRequest {
        let (environment, sensitivity, impact, reversibility, confidence) = facts;
        let mut all = Vec::new();
        pointers(&parameters, "", &mut all);
        let mut builder = ActionRequest::builder(kind, key)
            .parameters(parameters)
            .environment(environment)
            .sensitivity(sensitivity)
            .reversibility(reversibility)
            .justification(justification);
        for t in targets {
            builder = builder.target(t);
        }
        if let Some(impact) = impact {
            builder = builder.impact(impact);
        }
        if let Some(c) = confidence {
            builder = builder.confidence(c);
        }
        for (name, value) in attributes {
            builder = builder.attribute(name, value);
        }
        for (name, value) in preconditions {
            builder = builder.precondition(name, value);
        }
        if !all.is_empty() {
            let mut picked: Vec<String> =
                sensitive_picks.iter().map(|i| all[i.index(all.len())].clone()).collect();
            picked.sort();
            picked.dedup();
            for p in picked {
                builder = builder.sensitive(p);
            }
        }
        builder.build().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Messy JSON: same document, different text
// ---------------------------------------------------------------------------------------------

struct Messy(u64);

impl Messy {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn ws(&mut self, out: &mut String) {
        out.push_str(["", "", " ", "\n", "\t", "\r\n  ", "   "][self.pick(7)]);
    }

    fn string(&mut self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            let escape = matches!(c, '"' | '\\' | '\u{0}'..='\u{1f}') || self.pick(4) == 0;
            if !escape {
                out.push(c);
                continue;
            }
            match (c, self.pick(2)) {
                ('"', 0) => out.push_str("\\\""),
                ('\\', 0) => out.push_str("\\\\"),
                ('\n', 0) => out.push_str("\\n"),
                ('/', 0) => out.push_str("\\/"),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        if self.pick(2) == 0 {
                            out.push_str(&format!("\\u{unit:04x}"));
                        } else {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                }
            }
        }
        out.push('"');
    }

    fn value(&mut self, v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                    let text = match self.pick(3) {
                        // Display has no exponent: large integral doubles would read back
                        // as (unsafe) integers, a different JSON value.
                        0 if f.abs() < 1e15 => format!("{f}"),
                        0 => format!("{f:?}"),
                        1 => format!("{f:e}"),
                        _ => format!("{f:?}"),
                    };
                    out.push_str(&text);
                } else if self.pick(3) == 0 {
                    // An integer written as a double (exact below 2^53).
                    out.push_str(&format!("{n}e0"));
                } else {
                    out.push_str(&n.to_string());
                }
            }
            Value::String(s) => self.string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.value(item, out);
                    self.ws(out);
                }
                out.push(']');
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                for i in (1..entries.len()).rev() {
                    let j = self.pick(i + 1);
                    entries.swap(i, j);
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.ws(out);
                    self.string(k, out);
                    self.ws(out);
                    out.push(':');
                    self.ws(out);
                    self.value(item, out);
                    self.ws(out);
                }
                out.push('}');
            }
        }
    }
}

fn messy_text(request: &ActionRequest, seed: u64) -> String {
    let value = serde_json::to_value(request).unwrap();
    let mut out = String::new();
    let mut messy = Messy(seed | 1);
    messy.ws(&mut out);
    messy.value(&value, &mut out);
    messy.ws(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Mutations of one digested field
// ---------------------------------------------------------------------------------------------

/// Changes one leaf (or empty container) of `value` to a different value of the same kind.
fn mutate_leaf(value: &mut Value, pick: &mut Messy) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            let i = pick.pick(items.len());
            mutate_leaf(&mut items[i], pick);
        }
        Value::Object(map) if !map.is_empty() => {
            let i = pick.pick(map.len());
            let key = map.keys().nth(i).unwrap().clone();
            mutate_leaf(map.get_mut(&key).unwrap(), pick);
        }
        Value::Array(items) => items.push(Value::Null),
        Value::Object(map) => {
            map.insert("k".into(), Value::Null);
        }
        Value::Null => *value = Value::Bool(false),
        Value::Bool(b) => *b = !*b,
        Value::String(s) => s.push('x'),
        Value::Number(n) => {
            *value = if let Some(u) = n.as_u64() {
                Value::from(if u < MAX_SAFE as u64 { u + 1 } else { u - 1 })
            } else if let Some(i) = n.as_i64() {
                Value::from(i + 1)
            } else {
                // The neighbouring double: the smallest possible change.
                let f = n.as_f64().unwrap();
                let bits = f.to_bits();
                let next = f64::from_bits(bits + 1);
                Value::from(if next.is_finite() {
                    next
                } else {
                    f64::from_bits(bits - 1)
                })
            };
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Kind,
    Target,
    Parameter,
    Environment,
    Sensitivity,
    ImpactAmount,
    ImpactUnit,
    Reversibility,
    Confidence,
    Attribute,
    Precondition,
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Kind),
        Just(Field::Target),
        Just(Field::Parameter),
        Just(Field::Environment),
        Just(Field::Sensitivity),
        Just(Field::ImpactAmount),
        Just(Field::ImpactUnit),
        Just(Field::Reversibility),
        Just(Field::Confidence),
        Just(Field::Attribute),
        Just(Field::Precondition),
    ]
}

/// The request with one digested field changed, through its JSON form.
fn mutate(request: &ActionRequest, field: Field, seed: u64) -> ActionRequest {
    let mut pick = Messy(seed | 1);
    let mut v = serde_json::to_value(request).unwrap();
    let obj = v.as_object_mut().unwrap();
    let cycle = |current: &Value, all: &[&str]| {
        let i = all.iter().position(|s| current == *s).map_or(0, |i| i + 1);
        Value::from(all[i % all.len()])
    };
    match field {
        Field::Kind => {
            let kind = format!("{}.x", obj["kind"].as_str().unwrap());
            let kind = if kind.split('.').count() > 16 {
                "other".into()
            } else {
                kind
            };
            obj.insert("kind".into(), Value::from(kind));
        }
        Field::Target => {
            let targets = obj["targets"].as_array_mut().unwrap();
            if targets.is_empty() {
                targets.push(Value::from("t"));
            } else {
                let i = pick.pick(targets.len());
                mutate_leaf(&mut targets[i], &mut pick);
            }
        }
        Field::Parameter => mutate_leaf(obj.get_mut("parameters").unwrap(), &mut pick),
        Field::Environment => {
            let next = cycle(
                &obj["environment"],
                &["development", "staging", "production", "eu-1"],
            );
            obj.insert("environment".into(), next);
        }
        Field::Sensitivity => {
            let next = cycle(
                &obj["sensitivity"],
                &["public", "internal", "confidential", "regulated"],
            );
            obj.insert("sensitivity".into(), next);
        }
        Field::Reversibility => {
            let next = cycle(
                &obj["reversibility"],
                &["reversible", "compensable", "irreversible"],
            );
            obj.insert("reversibility".into(), next);
        }
        Field::ImpactAmount | Field::ImpactUnit => {
            if obj["impact"].is_null() {
                obj.insert("impact".into(), json!({"amount": "1", "unit": "USD"}));
            } else if let Field::ImpactAmount = field {
                let amount = obj["impact"]["amount"].as_str().unwrap();
                // One more digit in the integer part: a different amount.
                obj["impact"]["amount"] = Value::from(format!("1{amount}"));
            } else {
                let unit = obj["impact"]["unit"].as_str().unwrap();
                obj["impact"]["unit"] = Value::from(format!("{unit}X"));
            }
        }
        Field::Confidence => {
            let next = match obj["confidence"].as_f64() {
                None => Value::from(0.5),
                Some(c) if c <= 0.0 => Value::from(0.5),
                Some(c) if c < 1.0 => Value::from(f64::from_bits(c.to_bits() + 1)),
                Some(c) => Value::from(f64::from_bits(c.to_bits() - 1)),
            };
            obj.insert("confidence".into(), next);
        }
        Field::Attribute | Field::Precondition => {
            let name = if let Field::Attribute = field {
                "attributes"
            } else {
                "preconditions"
            };
            let map = obj.get_mut(name).unwrap().as_object_mut().unwrap();
            if map.is_empty() || pick.pick(3) == 0 {
                let fresh = (0..)
                    .map(|i| format!("new{i}"))
                    .find(|n| !map.contains_key(n))
                    .unwrap();
                map.insert(fresh, Value::Null);
            } else {
                let i = pick.pick(map.len());
                let key = map.keys().nth(i).unwrap().clone();
                mutate_leaf(map.get_mut(&key).unwrap(), &mut pick);
            }
        }
    }
    serde_json::from_value(v).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn key_order_whitespace_and_escapes_never_change_the_digest(
        request in request(),
        seed in any::<u64>(),
    ) {
        let text = messy_text(&request, seed);
        let parsed = ActionRequest::from_json(&text).unwrap();
        prop_assert_eq!(parsed.digest(), request.digest(), "{}", text);
    }

    #[test]
    fn changing_any_digested_field_changes_the_digest(
        request in request(),
        field in field(),
        seed in any::<u64>(),
    ) {
        let mutated = mutate(&request, field, seed);
        prop_assert_ne!(&mutated, &request);
        prop_assert_ne!(mutated.digest(), request.digest(), "{:?}", field);
    }

    #[test]
    fn changing_the_justification_never_changes_the_digest(
        request in request(),
        justification in justification(),
        key in "[!-~]{8,20}",
    ) {
        let mut v = serde_json::to_value(&request).unwrap();
        v["justification"] = serde_json::to_value(&justification).unwrap();
        v["idempotency_key"] = Value::from(key);
        let changed: ActionRequest = serde_json::from_value(v).unwrap();
        prop_assert_eq!(changed.digest(), request.digest());
    }

    #[test]
    fn serde_round_trips_exactly(request in request()) {
        // Through the strict parser: exact for every double.
        let text = serde_json::to_string(&request).unwrap();
        let back = ActionRequest::from_json(&text).unwrap();
        prop_assert_eq!(&back, &request);
        let value = parse_strict_json(&text).unwrap();
        let back: ActionRequest = serde_json::from_value(value).unwrap();
        prop_assert_eq!(&back, &request);
        // Through a serde Value (no text in between).
        let back: ActionRequest =
            serde_json::from_value(serde_json::to_value(&request).unwrap()).unwrap();
        prop_assert_eq!(&back, &request);
        prop_assert_eq!(back.digest(), request.digest());
    }

    #[test]
    fn canonical_form_is_a_fixed_point(value in json_value()) {
        let once = canonical_json(&value);
        let text = String::from_utf8(once.clone()).unwrap();
        let again = canonical_json(&parse_strict_json(&text).unwrap());
        prop_assert_eq!(once, again);
    }

    #[test]
    fn canonical_numbers_read_back_as_the_same_double(bits in any::<u64>()) {
        let f = f64::from_bits(bits);
        prop_assume!(f.is_finite());
        let text = String::from_utf8(canonical_json(&Value::from(f))).unwrap();
        let back: f64 = text.parse().unwrap();
        prop_assert!(back == f, "{} -> {}", f, text);
        // Never longer than Rust's shortest round-trip digits.
        let rust = format!("{:e}", f.abs());
        let rust_digits = rust.split('e').next().unwrap().replace('.', "");
        let ours: String = text.chars().take_while(|c| *c != 'e').filter(char::is_ascii_digit).collect();
        prop_assert!(ours.trim_start_matches('0').trim_end_matches('0').len() <= rust_digits.len());
    }
}

#[test]
fn serde_json_text_round_trip_with_decimal_doubles() {
    // `serde_json::from_str` without its `float_roundtrip` feature may read some doubles one
    // ULP off; decimal-looking doubles such as these are read exactly either way.
    let request = ActionRequest::builder("x.y", "round-trip-1")
        .parameters(json!({"a": 0.1, "b": 4200.5, "c": -3.25, "d": 1e-7, "e": [1.5, 2.0]}))
        .confidence(0.93)
        .build()
        .unwrap();
    let text = serde_json::to_string(&request).unwrap();
    let back: ActionRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(back, request);
    let map: Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert!(map.contains_key("sensitive"));
}
