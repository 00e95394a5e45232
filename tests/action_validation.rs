//! Validation, strict parsing, redaction and commitments of action requests, through the
//! public API. Every `ValidationError` variant is reached here.

use agent_handoff::action::limits::{
    MAX_CANONICAL_BYTES, MAX_ENTRIES, MAX_EXPECTED_EFFECT_LEN, MAX_JSON_BYTES, MAX_NAME_LEN,
    MAX_POINTER_LEN, MAX_REASON_LEN, MAX_RISK_FACTORS, MAX_RISK_FACTOR_LEN, MAX_ROLLBACK_PLAN_LEN,
    MAX_SAFE_INTEGER, MAX_SENSITIVE_POINTERS, MAX_TARGETS, MAX_TARGET_LEN, MAX_UNIT_LEN,
    MAX_VALUE_DEPTH,
};
use agent_handoff::action::{
    canonical_json, ActionRequest, ActionRequestBuilder, Amount, CanonicalError, Environment,
    Impact, Justification, ValidationError, REDACTED,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

fn base() -> ActionRequestBuilder {
    ActionRequest::builder("payment.send", "invoice-2024-0042")
}

fn build_err(builder: ActionRequestBuilder) -> ValidationError {
    builder.build().unwrap_err()
}

fn json_err(text: &str) -> ValidationError {
    ActionRequest::from_json(text).unwrap_err()
}

/// A minimal valid JSON request with `extra` members spliced in.
fn with_members(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{{"kind": "payment.send", "idempotency_key": "invoice-2024-0042"{sep}{extra}}}"#)
}

fn nested(depth: usize) -> Value {
    let mut v = Value::Null;
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Kind, key, confidence
// ---------------------------------------------------------------------------------------------

#[test]
fn kind_key_and_confidence_are_checked_by_builder_and_parser() {
    assert_eq!(
        build_err(ActionRequest::builder("", "invoice-2024-0042")),
        ValidationError::EmptyKind
    );
    assert!(matches!(
        build_err(ActionRequest::builder("Payment.Send", "invoice-2024-0042")),
        ValidationError::InvalidKind { .. }
    ));
    assert_eq!(
        build_err(ActionRequest::builder("payment.send", "short")),
        ValidationError::IdempotencyKeyTooShort { len: 5 }
    );
    assert_eq!(
        build_err(ActionRequest::builder("payment.send", "k".repeat(256))),
        ValidationError::IdempotencyKeyTooLong { len: 256 }
    );
    assert_eq!(
        build_err(ActionRequest::builder("payment.send", "has a space")),
        ValidationError::IdempotencyKeyCharacters
    );
    assert_eq!(
        build_err(base().confidence(1.01)),
        ValidationError::ConfidenceOutOfRange(1.01)
    );
    assert_eq!(
        json_err(r#"{"kind": "", "idempotency_key": "invoice-2024-0042"}"#),
        ValidationError::EmptyKind
    );
    assert_eq!(
        json_err(r#"{"kind": "a.b", "idempotency_key": "short"}"#),
        ValidationError::IdempotencyKeyTooShort { len: 5 }
    );
    assert_eq!(
        json_err(&with_members(r#""confidence": -0.5"#)),
        ValidationError::ConfidenceOutOfRange(-0.5)
    );
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

#[test]
fn parameters_must_be_an_object() {
    assert_eq!(
        build_err(base().parameters(json!([1, 2]))),
        ValidationError::ParametersNotObject
    );
    assert_eq!(
        json_err(&with_members(r#""parameters": "drop everything""#)),
        ValidationError::ParametersNotObject
    );
}

#[test]
fn parameters_size_is_bounded_canonically() {
    // `{"s":"…"}` is 8 bytes plus the string.
    let fits = base().parameters(json!({ "s": "a".repeat(MAX_CANONICAL_BYTES - 8) }));
    assert!(fits.build().is_ok());
    let over = base().parameters(json!({ "s": "a".repeat(MAX_CANONICAL_BYTES - 7) }));
    assert_eq!(
        build_err(over),
        ValidationError::TooLarge {
            field: "parameters",
            len: MAX_CANONICAL_BYTES + 1
        }
    );
    // Whitespace in the text does not count: only the canonical form does.
    let padded = with_members(&format!(
        r#""parameters": {{ "s" :    "{}"  }}"#,
        "a".repeat(MAX_CANONICAL_BYTES - 8)
    ));
    assert!(ActionRequest::from_json(&padded).is_ok());
}

#[test]
fn parameters_depth_is_bounded() {
    // The parameters object is level 1.
    let ok = base().parameters(json!({ "a": nested(MAX_VALUE_DEPTH - 1) }));
    assert!(ok.build().is_ok());
    let deep = base().parameters(json!({ "a": nested(MAX_VALUE_DEPTH) }));
    assert_eq!(
        build_err(deep),
        ValidationError::TooDeep {
            field: "parameters"
        }
    );
    // Through JSON text too (within the parser's own 64 levels).
    let text = with_members(&format!(
        r#""parameters": {{"a": {}}}"#,
        serde_json::to_string(&nested(MAX_VALUE_DEPTH)).unwrap()
    ));
    assert_eq!(
        json_err(&text),
        ValidationError::TooDeep {
            field: "parameters"
        }
    );
    // Far deeper than the limit: still the same typed refusal.
    let err = build_err(base().parameters(json!({ "a": nested(1_000) })));
    assert_eq!(
        err,
        ValidationError::TooDeep {
            field: "parameters"
        }
    );
}

#[test]
fn integers_beyond_two_to_the_53_are_refused_with_their_place() {
    assert!(base()
        .parameters(json!({"max": MAX_SAFE_INTEGER, "min": -(MAX_SAFE_INTEGER as i64)}))
        .build()
        .is_ok());
    assert_eq!(
        build_err(base().parameters(json!({"ids": [1, {"big": MAX_SAFE_INTEGER + 1}]}))),
        ValidationError::UnsafeInteger {
            field: "parameters",
            pointer: "/ids/1/big".into()
        }
    );
    assert_eq!(
        json_err(&with_members(r#""parameters": {"a/b": -9007199254740992}"#)),
        ValidationError::UnsafeInteger {
            field: "parameters",
            pointer: "/a~1b".into()
        }
    );
    assert_eq!(
        build_err(base().attribute("order_id", json!(u64::MAX))),
        ValidationError::UnsafeInteger {
            field: "attributes",
            pointer: "/order_id".into()
        }
    );
    assert_eq!(
        build_err(base().precondition("rows", json!({"n": i64::MIN}))),
        ValidationError::UnsafeInteger {
            field: "preconditions",
            pointer: "/rows/n".into()
        }
    );
    // Doubles are doubles: 1e300 is fine.
    assert!(base().parameters(json!({"big": 1e300})).build().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Sensitive pointers
// ---------------------------------------------------------------------------------------------

fn secrets() -> Value {
    json!({
        "card": {"number": "4111111111111111", "cvc": "123"},
        "tokens": ["tok_a", "tok_b"],
        "a/b": {"m~n": "slash-and-tilde"},
        "": "empty-key",
        "plain": "visible"
    })
}

#[test]
fn sensitive_pointers_must_be_rfc_6901() {
    for bad in ["card", "card/number", "/card/~2", "/card~", "/~", "#/card"] {
        assert_eq!(
            build_err(base().parameters(secrets()).sensitive(bad)),
            ValidationError::BadPointer {
                pointer: bad.into()
            },
            "{bad}"
        );
    }
    for good in [
        "",
        "/card",
        "/card/number",
        "/tokens/0",
        "/tokens/1",
        "/a~1b/m~0n",
        "/",
    ] {
        assert!(
            base().parameters(secrets()).sensitive(good).build().is_ok(),
            "{good}"
        );
    }
}

#[test]
fn sensitive_pointers_must_resolve() {
    for missing in [
        "/card/numbr",
        "/tokens/2",
        "/tokens/-",
        "/tokens/01",
        "/tokens/+1",
        "/plain/x",
        "/a/b",
        "/card/number/0",
    ] {
        assert_eq!(
            build_err(base().parameters(secrets()).sensitive(missing)),
            ValidationError::PointerNotFound {
                pointer: missing.into()
            },
            "{missing}"
        );
    }
    assert_eq!(
        json_err(&with_members(
            r#""parameters": {"password": "hunter2"}, "sensitive": ["/pasword"]"#
        )),
        ValidationError::PointerNotFound {
            pointer: "/pasword".into()
        }
    );
}

#[test]
fn sensitive_pointer_list_is_bounded_and_without_repeats() {
    assert_eq!(
        build_err(
            base()
                .parameters(secrets())
                .sensitive("/plain")
                .sensitive("/plain")
        ),
        ValidationError::DuplicatePointer {
            pointer: "/plain".into()
        }
    );
    let long_key = "k".repeat(MAX_POINTER_LEN);
    assert_eq!(
        build_err(
            base()
                .parameters(json!({ long_key.clone(): 1 }))
                .sensitive(format!("/{long_key}"))
        ),
        ValidationError::PointerTooLong {
            len: MAX_POINTER_LEN + 1
        }
    );
    let many: serde_json::Map<String, Value> = (0..=MAX_SENSITIVE_POINTERS)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    let mut builder = base().parameters(Value::Object(many));
    for i in 0..MAX_SENSITIVE_POINTERS {
        builder = builder.sensitive(format!("/k{i}"));
    }
    assert!(builder.clone().build().is_ok());
    assert_eq!(
        build_err(builder.sensitive(format!("/k{MAX_SENSITIVE_POINTERS}"))),
        ValidationError::TooManySensitivePointers {
            count: MAX_SENSITIVE_POINTERS + 1
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Targets, justification, attributes, preconditions, impact, environment
// ---------------------------------------------------------------------------------------------

#[test]
fn targets_are_bounded() {
    let mut builder = base();
    for i in 0..MAX_TARGETS {
        builder = builder.target(format!("t{i}"));
    }
    assert!(builder.clone().build().is_ok());
    assert_eq!(
        build_err(builder.target("one too many")),
        ValidationError::TooManyTargets {
            count: MAX_TARGETS + 1
        }
    );
    assert_eq!(
        build_err(base().target("ok").target("")),
        ValidationError::EmptyTarget { index: 1 }
    );
    assert!(base().target("t".repeat(MAX_TARGET_LEN)).build().is_ok());
    assert_eq!(
        build_err(base().target("t".repeat(MAX_TARGET_LEN + 1))),
        ValidationError::TargetTooLong {
            index: 0,
            len: MAX_TARGET_LEN + 1
        }
    );
    for bad in [
        "db\nprod",
        "a\u{0}b",
        "esc\u{1b}[31m",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        assert_eq!(
            build_err(base().target(bad)),
            ValidationError::TargetControlCharacter { index: 0 },
            "{bad:?}"
        );
    }
    assert!(base().target("ünïcödé:€ with spaces").build().is_ok());
}

#[test]
fn justification_texts_are_bounded() {
    let j = |f: &dyn Fn(&mut Justification)| {
        let mut j = Justification::default();
        f(&mut j);
        base().justification(j)
    };
    assert!(j(&|j| j.reason = "r".repeat(MAX_REASON_LEN))
        .build()
        .is_ok());
    assert_eq!(
        build_err(j(&|j| j.reason = "r".repeat(MAX_REASON_LEN + 1))),
        ValidationError::TextTooLong {
            field: "justification.reason",
            len: MAX_REASON_LEN + 1,
            max: MAX_REASON_LEN
        }
    );
    assert_eq!(
        build_err(j(
            &|j| j.expected_effect = "e".repeat(MAX_EXPECTED_EFFECT_LEN + 1)
        )),
        ValidationError::TextTooLong {
            field: "justification.expected_effect",
            len: MAX_EXPECTED_EFFECT_LEN + 1,
            max: MAX_EXPECTED_EFFECT_LEN
        }
    );
    assert_eq!(
        build_err(j(
            &|j| j.rollback_plan = Some("p".repeat(MAX_ROLLBACK_PLAN_LEN + 1))
        )),
        ValidationError::TextTooLong {
            field: "justification.rollback_plan",
            len: MAX_ROLLBACK_PLAN_LEN + 1,
            max: MAX_ROLLBACK_PLAN_LEN
        }
    );
    assert!(j(&|j| j.risk_factors = vec!["r".into(); MAX_RISK_FACTORS])
        .build()
        .is_ok());
    assert_eq!(
        build_err(j(
            &|j| j.risk_factors = vec!["r".into(); MAX_RISK_FACTORS + 1]
        )),
        ValidationError::TooManyRiskFactors {
            count: MAX_RISK_FACTORS + 1
        }
    );
    assert_eq!(
        build_err(j(
            &|j| j.risk_factors = vec!["ok".into(), "r".repeat(MAX_RISK_FACTOR_LEN + 1)]
        )),
        ValidationError::RiskFactorTooLong {
            index: 1,
            len: MAX_RISK_FACTOR_LEN + 1
        }
    );
    // The reason shorthand is bounded too.
    assert!(matches!(
        build_err(base().reason("r".repeat(MAX_REASON_LEN + 1))),
        ValidationError::TextTooLong {
            field: "justification.reason",
            ..
        }
    ));
}

#[test]
fn attribute_and_precondition_names_and_counts_are_bounded() {
    for field in ["attributes", "preconditions"] {
        let add = |b: ActionRequestBuilder, name: String, value: Value| {
            if field == "attributes" {
                b.attribute(name, value)
            } else {
                b.precondition(name, value)
            }
        };
        let mut builder = base();
        for i in 0..MAX_ENTRIES {
            builder = add(builder, format!("n{i}"), json!(i));
        }
        assert!(builder.clone().build().is_ok());
        assert_eq!(
            build_err(add(builder, "one.more".into(), json!(0))),
            ValidationError::TooManyEntries {
                field,
                count: MAX_ENTRIES + 1
            }
        );
        assert!(add(base(), "Vendor_tier.v2-x".into(), json!(1))
            .build()
            .is_ok());
        assert!(add(base(), "n".repeat(MAX_NAME_LEN), json!(1))
            .build()
            .is_ok());
        for (name, problem) in [
            ("", "names must not be empty"),
            (
                "has space",
                "only `A-Z`, `a-z`, `0-9`, `_`, `.` and `-` are allowed",
            ),
            (
                "é",
                "only `A-Z`, `a-z`, `0-9`, `_`, `.` and `-` are allowed",
            ),
            (
                "a/b",
                "only `A-Z`, `a-z`, `0-9`, `_`, `.` and `-` are allowed",
            ),
        ] {
            match build_err(add(base(), name.into(), json!(1))) {
                ValidationError::InvalidName {
                    field: f,
                    name: n,
                    problem: p,
                } => {
                    assert_eq!((f, n.as_str(), p), (field, name, problem));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            build_err(add(base(), "n".repeat(MAX_NAME_LEN + 1), json!(1))),
            ValidationError::InvalidName {
                problem: "names are at most 128 bytes",
                ..
            }
        ));
        // Values: depth and canonical size of the whole map.
        assert_eq!(
            build_err(add(base(), "deep".into(), nested(MAX_VALUE_DEPTH + 1))),
            ValidationError::TooDeep { field }
        );
        assert!(add(base(), "deep".into(), nested(MAX_VALUE_DEPTH))
            .build()
            .is_ok());
        // `{"s":"…"}` is 8 bytes plus the string.
        let fits = add(
            base(),
            "s".into(),
            json!("a".repeat(MAX_CANONICAL_BYTES - 8)),
        );
        assert!(fits.build().is_ok());
        let over = add(
            base(),
            "s".into(),
            json!("a".repeat(MAX_CANONICAL_BYTES - 7)),
        );
        assert!(matches!(
            build_err(over),
            ValidationError::TooLarge { len, .. } if len == MAX_CANONICAL_BYTES + 1
        ));
    }
}

#[test]
fn impact_unit_is_bounded() {
    let unit = |u: &str| base().impact(Impact::new(Amount::parse("1").unwrap(), u));
    assert!(unit("EUR_cents").build().is_ok());
    assert!(unit(&"U".repeat(MAX_UNIT_LEN)).build().is_ok());
    for (u, problem) in [
        ("", "units must not be empty"),
        ("US D", "only `A-Z`, `a-z`, `0-9` and `_` are allowed"),
        ("€", "only `A-Z`, `a-z`, `0-9` and `_` are allowed"),
        (
            "rows.deleted",
            "only `A-Z`, `a-z`, `0-9` and `_` are allowed",
        ),
    ] {
        assert_eq!(
            build_err(unit(u)),
            ValidationError::InvalidUnit {
                unit: u.into(),
                problem
            }
        );
    }
    assert!(matches!(
        build_err(unit(&"U".repeat(MAX_UNIT_LEN + 1))),
        ValidationError::InvalidUnit {
            problem: "units are at most 32 bytes",
            ..
        }
    ));
    assert!(matches!(
        json_err(&with_members(r#""impact": {"amount": "1", "unit": ""}"#)),
        ValidationError::InvalidUnit { .. }
    ));
}

#[test]
fn field_names_say_which_fact_was_wrong() {
    let field_of = |members: &str| match json_err(&with_members(members)) {
        ValidationError::Field { field, .. } => field,
        other => panic!("{members}: {other:?}"),
    };
    assert_eq!(field_of(r#""environment": "Prod!""#), "environment");
    assert_eq!(field_of(r#""sensitivity": "secret""#), "sensitivity");
    assert_eq!(field_of(r#""reversibility": "maybe""#), "reversibility");
    assert_eq!(
        field_of(r#""impact": {"amount": 12.5, "unit": "USD"}"#),
        "impact.amount"
    );
    assert_eq!(
        field_of(r#""impact": {"amount": -3, "unit": "USD"}"#),
        "impact.amount"
    );
    assert_eq!(
        field_of(r#""impact": {"amount": "1e3", "unit": "USD"}"#),
        "impact.amount"
    );
    // A custom environment built in code is held to the same rules as a parsed one.
    for bad in ["production", "Prod Env", ""] {
        assert!(matches!(
            build_err(base().environment(Environment::Custom(bad.into()))),
            ValidationError::Field {
                field: "environment",
                ..
            }
        ));
    }
    assert!(base()
        .environment(Environment::Custom("eu-prod".into()))
        .build()
        .is_ok());
}

// ---------------------------------------------------------------------------------------------
// Strict JSON and unknown fields
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_keys_are_refused_at_top_level_and_nested() {
    assert!(matches!(
        json_err(r#"{"kind": "payment.send", "kind": "payment.refund", "idempotency_key": "invoice-2024-0042"}"#),
        ValidationError::Malformed(CanonicalError::DuplicateKey { key, object, .. })
            if key == "kind" && object.is_empty()
    ));
    assert!(matches!(
        json_err(&with_members(r#""parameters": {"to": {"iban": "DE1", "iban": "DE2"}}"#)),
        ValidationError::Malformed(CanonicalError::DuplicateKey { key, object, .. })
            if key == "iban" && object == "/parameters/to"
    ));
    assert!(matches!(
        json_err(&with_members(r#""attributes": {"tier": 1, "tier": 2}"#)),
        ValidationError::Malformed(CanonicalError::DuplicateKey { .. })
    ));
}

#[test]
fn malformed_and_oversized_text_is_refused() {
    assert!(matches!(
        json_err(r#"{"kind": "payment.send",}"#),
        ValidationError::Malformed(CanonicalError::Syntax {
            line: 1,
            column: 25,
            ..
        })
    ));
    let huge = with_members(&format!(
        r#""justification": {{"reason": "{}"}}"#,
        "r".repeat(MAX_JSON_BYTES)
    ));
    assert!(matches!(
        json_err(&huge),
        ValidationError::Malformed(CanonicalError::TooLarge { .. })
    ));
    let deep = with_members(&format!(r#""parameters": {{"a": {}}}"#, "[".repeat(70)));
    assert!(matches!(
        json_err(&deep),
        ValidationError::Malformed(CanonicalError::TooDeep { .. })
    ));
}

#[test]
fn unknown_fields_are_refused() {
    assert_eq!(
        json_err(&with_members(
            r#""requester": {"agent": "root", "principal": "ceo"}"#
        )),
        ValidationError::UnknownField {
            field: "requester".into()
        }
    );
    assert_eq!(
        json_err(&with_members(
            r#""justification": {"reason": "x", "approved_by": "ceo"}"#
        )),
        ValidationError::UnknownField {
            field: "justification.approved_by".into()
        }
    );
    assert_eq!(
        json_err(&with_members(
            r#""impact": {"amount": "1", "unit": "USD", "currency": "EUR"}"#
        )),
        ValidationError::UnknownField {
            field: "impact.currency".into()
        }
    );
    // The serde path refuses them too (a store can never add fields either).
    let err =
        serde_json::from_str::<ActionRequest>(&with_members(r#""requester": "root""#)).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `requester`"),
        "{err}"
    );
}

#[test]
fn shape_errors_are_json_errors() {
    assert!(matches!(
        json_err(r#"{"idempotency_key": "invoice-2024-0042"}"#),
        ValidationError::Json(msg) if msg.contains("missing field `kind`")
    ));
    assert!(matches!(
        json_err(&with_members(r#""targets": "one""#)),
        ValidationError::Json(_)
    ));
    // Only an object is a request (serde would also read a struct from an array).
    assert!(matches!(json_err("[]"), ValidationError::Json(_)));
    assert!(matches!(
        json_err(r#"["payment.send", "invoice-2024-0042"]"#),
        ValidationError::Json(msg) if msg.contains("JSON object")
    ));
}

#[test]
fn absent_members_take_the_worst_case_defaults() {
    let parsed = ActionRequest::from_json(&with_members("")).unwrap();
    let built = base().build().unwrap();
    assert_eq!(parsed, built);
    let nulls = ActionRequest::from_json(&with_members(
        r#""environment": null, "impact": null, "confidence": null"#,
    ))
    .unwrap();
    assert_eq!(nulls, built);
}

#[test]
fn deserialisation_validates_like_the_builder() {
    let valid = base()
        .parameters(json!({"password": "hunter2"}))
        .sensitive("/password")
        .build()
        .unwrap();
    let mut v = serde_json::to_value(&valid).unwrap();
    assert_eq!(
        serde_json::from_value::<ActionRequest>(v.clone()).unwrap(),
        valid
    );
    v["sensitive"] = json!(["/pasword"]);
    let err = serde_json::from_value::<ActionRequest>(v.clone()).unwrap_err();
    assert!(err.to_string().contains("matches nothing"), "{err}");
    v["sensitive"] = json!([]);
    v["targets"] = json!([""]);
    assert!(serde_json::from_value::<ActionRequest>(v).is_err());
}

// ---------------------------------------------------------------------------------------------
// Reviewer edits
// ---------------------------------------------------------------------------------------------

#[test]
fn with_parameters_revalidates_and_keeps_the_rest() {
    let request = base()
        .parameters(json!({"to": "acme", "password": "hunter2"}))
        .sensitive("/password")
        .reason("pay")
        .build()
        .unwrap();
    let edited = request
        .with_parameters(json!({"to": "acme-corp", "password": "hunter2"}))
        .unwrap();
    assert_eq!(edited.parameters()["to"], "acme-corp");
    assert_eq!(edited.sensitive_pointers(), request.sensitive_pointers());
    assert_eq!(edited.justification(), request.justification());
    assert_ne!(edited.digest(), request.digest());
    // Dropping the sensitive value would leave a dangling pointer.
    assert_eq!(
        request.with_parameters(json!({"to": "acme"})).unwrap_err(),
        ValidationError::PointerNotFound {
            pointer: "/password".into()
        }
    );
    assert_eq!(
        request.with_parameters(json!(null)).unwrap_err(),
        ValidationError::ParametersNotObject
    );
    assert!(matches!(
        request.with_parameters(json!({"password": "x", "n": u64::MAX})),
        Err(ValidationError::UnsafeInteger { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Redaction, commitments, Debug
// ---------------------------------------------------------------------------------------------

fn secret_request() -> ActionRequest {
    base()
        .parameters(secrets())
        .sensitive("/card/number")
        .sensitive("/card")
        .sensitive("/tokens/1")
        .sensitive("/a~1b/m~0n")
        .sensitive("/")
        .build()
        .unwrap()
}

#[test]
fn redaction_replaces_whole_values() {
    let redacted = secret_request().redacted_parameters();
    assert_eq!(
        redacted,
        json!({
            "card": REDACTED,
            "tokens": ["tok_a", REDACTED],
            "a/b": {"m~n": REDACTED},
            "": REDACTED,
            "plain": "visible"
        })
    );
    let root = base()
        .parameters(json!({"x": 1}))
        .sensitive("")
        .build()
        .unwrap();
    assert_eq!(root.redacted_parameters(), json!(REDACTED));
    assert_eq!(REDACTED, "[redacted]");
}

#[test]
fn commitments_are_salted_hmacs_of_pointer_and_canonical_value() {
    let request = secret_request();
    let salt = [0x5a; 32];
    let committed = request.committed_parameters(&salt);
    let expected = |pointer: &str, value: &Value| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&salt).unwrap();
        mac.update(pointer.as_bytes());
        mac.update(&[0]);
        mac.update(&canonical_json(value));
        let bytes = mac.finalize().into_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        json!({ "commitment": hex })
    };
    let params = secrets();
    assert_eq!(
        committed,
        json!({
            "card": expected("/card", &params["card"]),
            "tokens": ["tok_a", expected("/tokens/1", &json!("tok_b"))],
            "a/b": {"m~n": expected("/a~1b/m~0n", &json!("slash-and-tilde"))},
            "": expected("/", &json!("empty-key")),
            "plain": "visible"
        })
    );
    // Pinned value, so a change of the scheme cannot go unnoticed.
    assert_eq!(
        committed["tokens"][1]["commitment"],
        expected("/tokens/1", &json!("tok_b"))["commitment"]
    );
    let text = committed.to_string();
    for secret in [
        "4111111111111111",
        "\"123\"",
        "tok_b",
        "slash-and-tilde",
        "empty-key",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    // Another salt, other commitments; same salt, same commitments.
    assert_ne!(request.committed_parameters(&[0x5b; 32]), committed);
    assert_eq!(request.committed_parameters(&salt), committed);
    // The same value under another pointer commits differently.
    assert_ne!(expected("/a", &json!("v")), expected("/b", &json!("v")));
}

#[test]
fn commitment_golden_value() {
    let request = base()
        .parameters(json!({"pin": "1234"}))
        .sensitive("/pin")
        .build()
        .unwrap();
    let committed = request.committed_parameters(&[0u8; 32]);
    // HMAC-SHA256(key = 32 zero bytes, "/pin" ‖ 0x00 ‖ "\"1234\"").
    assert_eq!(
        committed,
        json!({"pin": {"commitment": "1d625fd21c8a1ce8f285daceb3f14d1b98620e0e81346bf6ad94765b67c559db"}})
    );
}

#[test]
fn debug_never_shows_sensitive_values() {
    let request = base()
        .parameters(json!({"user": "alice", "password": "hunter2-very-secret", "pins": [9911]}))
        .sensitive("/password")
        .sensitive("/pins/0")
        .build()
        .unwrap();
    for text in [format!("{request:?}"), format!("{request:#?}")] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("9911"), "{text}");
        assert!(text.contains("alice"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
    }
    // The builder hides them too, before validation.
    let builder = base()
        .parameters(json!({"password": "hunter2-very-secret"}))
        .sensitive("/password");
    assert!(!format!("{builder:?}").contains("hunter2"));
    // A builder whose pointer misses hides all parameters.
    let typo = base()
        .parameters(json!({"password": "hunter2-very-secret"}))
        .sensitive("/pasword");
    assert!(!format!("{typo:#?}").contains("hunter2"));
}

#[test]
fn errors_read_well() {
    assert_eq!(
        ValidationError::UnknownField {
            field: "requester".into()
        }
        .to_string(),
        "unknown field `requester` in action request"
    );
    assert_eq!(
        ValidationError::TargetTooLong {
            index: 2,
            len: 2000
        }
        .to_string(),
        "target 2 is 2000 bytes; at most 1024 are allowed"
    );
    assert_eq!(
        ValidationError::UnsafeInteger {
            field: "parameters",
            pointer: "/id".into()
        }
        .to_string(),
        "integer at `/id` in `parameters` is beyond ±9007199254740991; put large identifiers in strings"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn ensure<T: Send + Sync + 'static>() {}
    ensure::<ActionRequest>();
    ensure::<ActionRequestBuilder>();
    ensure::<ValidationError>();
    ensure::<CanonicalError>();
    ensure::<agent_handoff::action::ActionDigest>();
    ensure::<agent_handoff::action::KeyedDigest>();
    ensure::<agent_handoff::action::DigestKey>();
    ensure::<agent_handoff::action::ParseDigestError>();
}
