//! Loading policy documents: every refusal names the rule id, the field and the line.

use std::time::Duration;

use agent_handoff::policy::{limits, Outcome, Policy, PolicyError, PolicyErrors};

/// The one problem a document with one mistake reports.
#[track_caller]
fn only(errors: PolicyErrors) -> PolicyError {
    assert_eq!(errors.as_slice().len(), 1, "one problem expected: {errors}");
    errors.into_vec().remove(0)
}

/// The part of a document every test shares (lines 1-4).
const HEAD: &str = r#"version = "2026-11-25.1"

[default]
review = { approvals = 1, groups = ["oncall"], deadline = "30m", approval_ttl = "15m" }
"#;

fn toml_err(body: &str) -> PolicyError {
    let text = format!("{HEAD}{body}");
    only(Policy::from_toml(&text).expect_err("the document must be refused"))
}

/// Asserts the error's variant, rule id, field and line.
#[track_caller]
fn assert_at(
    e: &PolicyError,
    variant: fn(&PolicyError) -> bool,
    rule: Option<&str>,
    field: &str,
    line: usize,
) {
    assert!(variant(e), "unexpected variant: {e:?}");
    assert_eq!(e.rule(), rule, "rule of {e:?}");
    assert_eq!(e.field(), field, "field of {e:?}");
    assert_eq!(e.line(), Some(line), "line of {e:?}");
    let text = e.to_string();
    assert!(text.contains(field), "display names the field: {text}");
    assert!(
        text.contains(&format!("(line {line})")),
        "display names the line: {text}"
    );
    if let Some(rule) = rule {
        assert!(
            text.contains(&format!("rule `{rule}`")),
            "display names the rule: {text}"
        );
    }
}

#[test]
fn a_valid_document_loads_with_its_version_and_default() {
    let policy = Policy::from_toml(&format!(
        "{HEAD}\n[[rule]]\nid = \"x\"\nwhen.kind = \"db.*\"\nthen.deny.reason = \"no\"\n"
    ))
    .unwrap();
    assert_eq!(policy.version(), "2026-11-25.1");
    assert_eq!(policy.rules_len(), 1);
    assert!(!policy.allows_unreviewed_high_risk());
    let Outcome::Review(plan) = policy.default_outcome() else {
        panic!("review default expected")
    };
    assert_eq!(plan.deadline, Duration::from_secs(1800));
    assert_eq!(plan.approval_ttl, Duration::from_secs(900));
    assert!(plan.veto, "veto defaults to on");
}

#[test]
fn misspelled_condition_is_an_unknown_field() {
    let e = toml_err(
        r#"
[[rule]]
id = "prod-table-drop"
when = { kind = ["db.table.drop"], enviroment = ["production"] }
then.review = { approvals = 2, groups = ["dba"], deadline = "1h", approval_ttl = "30m" }
"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::UnknownField { .. }),
        Some("prod-table-drop"),
        "rule[0].when.enviroment",
        8,
    );
    assert!(e.message().contains("`enviroment`"), "{e}");
}

#[test]
fn unknown_top_level_and_outcome_fields_are_refused() {
    let e = only(Policy::from_toml("versoin = \"1\"\ndefault.deny.reason = \"no\"\n").unwrap_err());
    assert_at(
        &e,
        |e| matches!(e, PolicyError::UnknownField { .. }),
        None,
        "versoin",
        1,
    );
    // After `[default]`, a misspelled opt-in lands in the default outcome's table.
    let e =
        only(Policy::from_toml(&format!("{HEAD}alow_unreviewed_high_risk = true\n")).unwrap_err());
    assert_at(
        &e,
        |e| matches!(e, PolicyError::UnknownField { .. }),
        None,
        "default.alow_unreviewed_high_risk",
        5,
    );
    let e = toml_err(
        "\n[[rule]]\nid = \"r\"\nthen.review = { approvals = 1, groups = [\"a\"], deadline = \"1h\", approval_ttl = \"1h\", quorum = 2 }\n",
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::UnknownField { .. }),
        Some("r"),
        "rule[0].then.review.quorum",
        8,
    );
}

#[test]
fn duplicate_rule_id_names_the_second_use() {
    let e = toml_err(
        r#"
[[rule]]
id = "payments"
when.kind = "payment.*"
then.review = { approvals = 1, groups = ["finance"], deadline = "4h", approval_ttl = "1h" }

[[rule]]
id = "payments"
when.kind = "refund.*"
then.review = { approvals = 1, groups = ["finance"], deadline = "4h", approval_ttl = "1h" }
"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::DuplicateRuleId { .. }),
        Some("payments"),
        "rule[1].id",
        12,
    );
    assert!(e.message().contains("rule[0]"), "{e}");
}

#[test]
fn reserved_default_id_is_refused() {
    let e = toml_err("\n[[rule]]\nid = \"default\"\nthen.deny.reason = \"x\"\n");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::DuplicateRuleId { .. }),
        Some("default"),
        "rule[0].id",
        7,
    );
}

#[test]
fn zero_approvals_is_out_of_bounds() {
    let e = toml_err(
        r#"
[[rule]]
id = "prod-table-drop"
when.kind = "db.table.drop"

[rule.then.review]
approvals = 0
groups = ["dba"]
deadline = "1h"
approval_ttl = "30m"
"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::OutOfBounds { .. }),
        Some("prod-table-drop"),
        "rule[0].then.review.approvals",
        11,
    );
    let e = toml_err("\n[[rule]]\nid = \"r\"\nthen.review = { approvals = 17, groups = [\"a\"], deadline = \"1h\", approval_ttl = \"1h\" }\n");
    assert!(matches!(e, PolicyError::OutOfBounds { .. }), "{e:?}");
}

#[test]
fn empty_group_name_is_invalid() {
    let e = toml_err(
        r#"
[[rule]]
id = "payments"
when.kind = "payment.*"
then.review = { approvals = 1, groups = ["finance", ""], deadline = "4h", approval_ttl = "1h" }
"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::InvalidValue { .. }),
        Some("payments"),
        "rule[0].then.review.groups[1]",
        9,
    );
    let e = toml_err("\n[[rule]]\nid = \"r\"\nthen.review = { approvals = 1, groups = [], deadline = \"1h\", approval_ttl = \"1h\" }\n");
    assert!(
        matches!(e, PolicyError::InvalidValue { .. }),
        "no groups: {e:?}"
    );
}

#[test]
fn durations_outside_bounds_or_malformed_are_refused() {
    let review = |deadline: &str, ttl: &str| {
        toml_err(&format!(
            "\n[[rule]]\nid = \"r\"\nthen.review = {{ approvals = 1, groups = [\"a\"], deadline = \"{deadline}\", approval_ttl = \"{ttl}\" }}\n"
        ))
    };
    let e = review("31d", "1h");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::OutOfBounds { .. }),
        Some("r"),
        "rule[0].then.review.deadline",
        8,
    );
    assert!(
        e.message().contains("1m..=30d"),
        "the bounds are stated: {e}"
    );
    let e = review("30s", "1h");
    assert!(matches!(e, PolicyError::OutOfBounds { .. }), "{e:?}");
    let e = review("1h", "0s");
    assert_eq!(e.field(), "rule[0].then.review.approval_ttl");
    let e = review("an hour", "1h");
    assert!(matches!(e, PolicyError::InvalidValue { .. }), "{e:?}");
    let e = toml_err("\n[[rule]]\nid = \"r\"\nwhen.environment = \"development\"\nwhen.reversibility = \"reversible\"\nthen.allow.grant_ttl = \"2d\"\n");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::OutOfBounds { .. }),
        Some("r"),
        "rule[0].then.allow.grant_ttl",
        10,
    );
    assert_eq!(limits::MAX_GRANT_TTL, Duration::from_secs(86_400));
}

#[test]
fn invalid_globs_name_the_list_entry() {
    for (glob, why) in [
        ("pay*", "whole segment"),
        ("db.**.drop", "last segment"),
        ("db..drop", "empty segment"),
        ("DB.drop", "character"),
    ] {
        let e = toml_err(&format!(
            "\n[[rule]]\nid = \"r\"\nwhen.kind = [\"payment.*\", \"{glob}\"]\nthen.deny.reason = \"x\"\n"
        ));
        assert_at(
            &e,
            |e| matches!(e, PolicyError::InvalidGlob { .. }),
            Some("r"),
            "rule[0].when.kind[1]",
            8,
        );
        assert!(e.message().contains(why), "{glob}: {e}");
    }
}

#[test]
fn outcome_must_be_exactly_one() {
    let e = toml_err("\n[[rule]]\nid = \"r\"\nthen = { }\n");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::InvalidValue { .. }),
        Some("r"),
        "rule[0].then",
        8,
    );
    let e = toml_err(
        "\n[[rule]]\nid = \"r\"\nthen.deny.reason = \"x\"\nthen.review = { approvals = 1, groups = [\"a\"], deadline = \"1h\", approval_ttl = \"1h\" }\n",
    );
    assert!(e.message().contains("2 given"), "{e}");
    let e = toml_err("\n[[rule]]\nid = \"r\"\nwhen.kind = \"x\"\n");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::Schema { .. }),
        Some("r"),
        "rule[0]",
        6,
    );
    assert!(e.message().contains("missing field `then`"), "{e}");
}

#[test]
fn wrong_types_are_schema_errors() {
    let e = toml_err(
        "\n[[rule]]\nid = \"r\"\nthen.review = { approvals = \"two\", groups = [\"a\"], deadline = \"1h\", approval_ttl = \"1h\" }\n",
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::Schema { .. }),
        Some("r"),
        "rule[0].then.review.approvals",
        8,
    );
    let e = toml_err("\n[[rule]]\nid = \"r\"\nwhen.impact_at_least = { USD = 10000.5 }\nthen.deny.reason = \"x\"\n");
    assert_at(
        &e,
        |e| matches!(e, PolicyError::InvalidValue { .. }),
        Some("r"),
        "rule[0].when.impact_at_least.USD",
        8,
    );
    assert!(e.message().contains("never floats"), "{e}");
}

#[test]
fn condition_values_are_validated() {
    let cases = [
        (
            "when.environment = [\"Prod!\"]",
            "rule[0].when.environment[0]",
        ),
        (
            "when.sensitivity_at_least = \"secret\"",
            "rule[0].when.sensitivity_at_least",
        ),
        (
            "when.reversibility = \"maybe\"",
            "rule[0].when.reversibility",
        ),
        ("when.kind = []", "rule[0].when.kind"),
        (
            "when.attributes = { tier = [\"gold\", 3] }",
            "rule[0].when.attributes.tier[1]",
        ),
        (
            "when.attributes = { risk = { } }",
            "rule[0].when.attributes.risk",
        ),
        (
            "when.attributes = { risk = { at_least = 5, below = 5 } }",
            "rule[0].when.attributes.risk",
        ),
    ];
    for (condition, field) in cases {
        let e = toml_err(&format!(
            "\n[[rule]]\nid = \"r\"\n{condition}\nthen.deny.reason = \"x\"\n"
        ));
        assert!(
            matches!(e, PolicyError::InvalidValue { .. }),
            "{condition}: {e:?}"
        );
        assert_eq!(e.field(), field, "{condition}");
        assert_eq!(e.line(), Some(8), "{condition}");
    }
    let e =
        toml_err("\n[[rule]]\nid = \"r\"\nwhen.confidence_below = 1.5\nthen.deny.reason = \"x\"\n");
    assert!(matches!(e, PolicyError::OutOfBounds { .. }), "{e:?}");
    let e = toml_err("\n[[rule]]\nid = \"r\"\nwhen.attributes = { risk = { at_least = 5, above = 1 } }\nthen.deny.reason = \"x\"\n");
    assert!(matches!(e, PolicyError::UnknownField { .. }), "{e:?}");
    assert_eq!(e.field(), "rule[0].when.attributes.risk");
    assert!(e.message().contains("`above`"), "{e}");
}

#[test]
fn empty_version_and_reason_are_refused() {
    let e = only(Policy::from_toml("version = \"\"\ndefault.deny.reason = \"no\"\n").unwrap_err());
    assert!(matches!(e, PolicyError::InvalidValue { .. }), "{e:?}");
    assert_eq!((e.rule(), e.field(), e.line()), (None, "version", Some(1)));
    let e =
        only(Policy::from_toml("version = \"1\\n2\"\ndefault.deny.reason = \"no\"\n").unwrap_err());
    assert_eq!(e.field(), "version", "a version is one line: {e}");
    let e = only(Policy::from_toml("version = \"1\"\ndefault.deny.reason = \"  \"\n").unwrap_err());
    assert_eq!((e.field(), e.line()), ("default.deny.reason", Some(2)));
}

#[test]
fn missing_default_is_refused() {
    let e = only(Policy::from_toml("version = \"1\"\n").unwrap_err());
    assert!(matches!(e, PolicyError::Schema { .. }), "{e:?}");
    assert!(e.message().contains("`default`"), "{e}");
}

#[test]
fn toml_syntax_errors_carry_the_line() {
    let e = toml_err("\n[[rule]]\nid = \"r\"\nwhen = { kind = [\"x\"]\nthen.deny.reason = \"x\"\n");
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
    assert_eq!(e.rule(), Some("r"));
    assert_eq!(e.line(), Some(9));
    let e = toml_err("\n[[rule]]\nid = \"r\"\nid = \"s\"\nthen.deny.reason = \"x\"\n");
    assert!(
        matches!(e, PolicyError::Syntax { .. }),
        "duplicate key: {e:?}"
    );
    assert_eq!(e.line(), Some(8));
}

#[test]
fn too_many_rules_are_refused() {
    let mut text = String::from(HEAD);
    for i in 0..=limits::MAX_RULES {
        text.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\nthen.deny.reason = \"x\"\n"
        ));
    }
    let e = only(Policy::from_toml(&text).unwrap_err());
    assert!(matches!(e, PolicyError::OutOfBounds { .. }), "{e:?}");
    assert_eq!((e.rule(), e.field()), (None, "rule"));
}

// ---- JSON ----

const JSON_HEAD: &str = r#""version": "2026-11-25.1",
  "default": {"deny": {"reason": "not covered"}},"#;

fn json_err(rules: &str) -> PolicyError {
    only(
        Policy::from_json(&format!(
            "{{\n  {JSON_HEAD}\n  \"rule\": [\n{rules}\n  ]\n}}"
        ))
        .expect_err("the document must be refused"),
    )
}

#[test]
fn json_unknown_field_names_rule_field_and_line() {
    let e = json_err(
        r#"    {"id": "ok", "then": {"deny": {"reason": "x"}}},
    {"id": "payments",
     "when": {"kind": "payment.*", "impact": {"USD": 5}},
     "then": {"deny": {"reason": "x"}}}"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::UnknownField { .. }),
        Some("payments"),
        "rule[1].when.impact",
        7,
    );
}

#[test]
fn json_semantic_errors_carry_lines_too() {
    let e = json_err(
        r#"    {"id": "drop",
     "then": {"review": {"approvals": 0, "groups": ["dba"], "deadline": "1h", "approval_ttl": "1h"}}}"#,
    );
    assert_at(
        &e,
        |e| matches!(e, PolicyError::OutOfBounds { .. }),
        Some("drop"),
        "rule[0].then.review.approvals",
        6,
    );
}

#[test]
fn json_duplicate_keys_are_refused() {
    let e = json_err(
        r#"    {"id": "r", "when": {"attributes": {"team": "a", "team": "b"}}, "then": {"deny": {"reason": "x"}}}"#,
    );
    assert!(matches!(e, PolicyError::Schema { .. }), "{e:?}");
    assert_eq!(e.field(), "rule[0].when.attributes.team");
    let e = json_err(r#"    {"id": "r", "id": "s", "then": {"deny": {"reason": "x"}}}"#);
    assert!(matches!(e, PolicyError::Schema { .. }), "{e:?}");
    assert!(e.message().contains("duplicate field"), "{e}");
}

#[test]
fn json_syntax_errors_carry_the_line() {
    let e = json_err(r#"    {"id": "r", "then": {"deny": {"reason": "x"}}},"#);
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
    assert_eq!(e.line(), Some(6));
    let e = only(Policy::from_json("").unwrap_err());
    assert!(matches!(e, PolicyError::Syntax { .. }), "{e:?}");
}

#[test]
fn toml_and_json_forms_are_the_same_schema() {
    let toml = Policy::from_toml(
        r#"
version = "7"
default.deny.reason = "no"
[[rule]]
id = "r"
when = { kind = "payment.*", impact_at_least = { USD = "10000" }, attributes = { tier = ["a", "b"], risk = { at_least = 5 } } }
then.review = { approvals = 2, groups = ["finance"], deadline = "1h", approval_ttl = "30m", veto = false }
"#,
    )
    .unwrap();
    let json = Policy::from_json(
        r#"{"version": "7", "default": {"deny": {"reason": "no"}}, "rule": [{"id": "r",
            "when": {"kind": "payment.*", "impact_at_least": {"USD": "10000"}, "attributes": {"tier": ["a", "b"], "risk": {"at_least": 5}}},
            "then": {"review": {"approvals": 2, "groups": ["finance"], "deadline": "1h", "approval_ttl": "30m", "veto": false}}}]}"#,
    )
    .unwrap();
    assert_eq!(toml.version(), json.version());
    assert_eq!(toml.rules_len(), json.rules_len());
    assert_ne!(toml.hash(), json.hash(), "the hash is of the source text");
}

#[test]
fn the_example_policy_loads() {
    let text = include_str!("../examples/policy.toml");
    let policy = Policy::from_toml(text).unwrap();
    assert_eq!(policy.rules_len(), 5);
    assert!(!policy.allows_unreviewed_high_risk());
}

// ---------------------------------------------------------------------------------------------
// A document with several mistakes reports every one of them, in document order.

/// (variant name, rule, field, line) of each problem.
fn problems(errors: &PolicyErrors) -> Vec<(&'static str, Option<String>, String, Option<usize>)> {
    errors
        .iter()
        .map(|e| {
            let variant = match e {
                PolicyError::Syntax { .. } => "syntax",
                PolicyError::UnknownField { .. } => "unknown_field",
                PolicyError::Schema { .. } => "schema",
                PolicyError::InvalidValue { .. } => "invalid_value",
                PolicyError::InvalidGlob { .. } => "invalid_glob",
                PolicyError::OutOfBounds { .. } => "out_of_bounds",
                PolicyError::DuplicateRuleId { .. } => "duplicate_rule_id",
                PolicyError::HighRiskAllow { .. } => "high_risk_allow",
                _ => "other",
            };
            (
                variant,
                e.rule().map(str::to_owned),
                e.field().to_owned(),
                e.line(),
            )
        })
        .collect()
}

fn p(
    variant: &'static str,
    rule: Option<&str>,
    field: &str,
    line: usize,
) -> (&'static str, Option<String>, String, Option<usize>) {
    (
        variant,
        rule.map(str::to_owned),
        field.to_owned(),
        Some(line),
    )
}

#[test]
fn three_value_mistakes_are_all_reported() {
    let errors = Policy::from_toml(&format!(
        "{HEAD}
[[rule]]
id = \"drops\"
when.kind = \"db.table.drop\"
then.review = {{ approvals = 0, groups = [\"dba\"], deadline = \"1h\", approval_ttl = \"30m\" }}

[[rule]]
id = \"payments\"
when = {{ kind = \"pay*\", environment = [\"Prod uction\"] }}
then.deny.reason = \"no\"
"
    ))
    .unwrap_err();
    assert_eq!(
        problems(&errors),
        [
            p(
                "out_of_bounds",
                Some("drops"),
                "rule[0].then.review.approvals",
                9
            ),
            p("invalid_glob", Some("payments"), "rule[1].when.kind", 13),
            p(
                "invalid_value",
                Some("payments"),
                "rule[1].when.environment[0]",
                13
            ),
        ],
        "{errors}"
    );
    assert_eq!(errors.first(), &errors.as_slice()[0]);
    assert_eq!(errors.more(), 0);
    let text = errors.to_string();
    assert!(
        text.starts_with("3 problems in the policy document:"),
        "{text}"
    );
    for e in &errors {
        assert!(text.contains(&e.to_string()), "{text}");
    }
    assert_eq!(errors.code().as_str(), "policy_invalid");
}

#[test]
fn shape_mistakes_in_several_rules_and_value_mistakes_elsewhere_are_all_reported() {
    let errors = Policy::from_toml(
        r#"version = "1"
default.review = { approvals = 1, groups = ["oncall"], deadline = "forever", approval_ttl = "15m" }

[[rule]]
id = "a"
when = { kinds = "db.*" }
then.deny.reason = "no"

[[rule]]
id = "b"
when.kind = "db.*"
then.review = { approvals = "two", groups = ["dba"], deadline = "1h", approval_ttl = "1h" }

[[rule]]
id = "c"
when.kind = "db.*"
then.allow.grant_ttl = "1 minute"

[[rule]]
id = "a"
then.deny.reason = "again"
"#,
    )
    .unwrap_err();
    assert_eq!(
        problems(&errors),
        [
            p("invalid_value", None, "default.review.deadline", 2),
            p("unknown_field", Some("a"), "rule[0].when.kinds", 6),
            p("schema", Some("b"), "rule[1].then.review.approvals", 12),
            p(
                "invalid_value",
                Some("c"),
                "rule[2].then.allow.grant_ttl",
                17
            ),
            p("duplicate_rule_id", Some("a"), "rule[3].id", 20),
        ],
        "{errors}"
    );
}

#[test]
fn json_documents_report_every_mistake_too() {
    let errors = Policy::from_json(
        r#"{
  "version": "1",
  "default": {"deny": {"reason": "not covered"}},
  "rule": [
    {"id": "a", "when": {"kind": "db.*"}, "then": {"deny": {"reson": "typo"}}},
    {"id": "b", "when": {"kind": "db.*", "confidence_below": 3}, "then": {"deny": {"reason": "x"}}},
    {"id": "c", "then": {"review": {"approvals": 1, "groups": [], "deadline": "1h", "approval_ttl": "1h"}}}
  ]
}"#,
    )
    .unwrap_err();
    assert_eq!(
        problems(&errors),
        [
            p("unknown_field", Some("a"), "rule[0].then.deny.reson", 5),
            p(
                "out_of_bounds",
                Some("b"),
                "rule[1].when.confidence_below",
                6
            ),
            p("invalid_value", Some("c"), "rule[2].then.review.groups", 7),
        ],
        "{errors}"
    );
}

/// A condition with a mistake is not judged as "matches anything": an allow rule whose
/// environment list has a typo reports the typo, not a high-risk allow it would not be.
#[test]
fn a_condition_with_a_mistake_does_not_add_a_high_risk_report() {
    let errors = Policy::from_toml(&format!(
        "{HEAD}\n[[rule]]\nid = \"reads\"\nwhen = {{ kind = \"db.read\", environment = [\"Development\"], reversibility = [\"reversible\"] }}\nthen.allow.grant_ttl = \"5m\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        problems(&errors),
        [p(
            "invalid_value",
            Some("reads"),
            "rule[0].when.environment[0]",
            8
        )],
        "{errors}"
    );
}

#[test]
fn a_document_full_of_mistakes_reports_a_bounded_number_and_counts_the_rest() {
    let mut text = HEAD.to_owned();
    let n = limits::MAX_REPORTED_PROBLEMS + 25;
    for i in 0..n {
        text.push_str(&format!(
            "\n[[rule]]\nid = \"r{i}\"\nthen.review = {{ approvals = 99, groups = [\"dba\"], deadline = \"1h\", approval_ttl = \"1h\" }}\n"
        ));
    }
    let errors = Policy::from_toml(&text).unwrap_err();
    assert_eq!(errors.as_slice().len(), limits::MAX_REPORTED_PROBLEMS);
    assert_eq!(errors.more(), 25);
    assert_eq!(errors.as_slice()[0].rule(), Some("r0"));
    assert!(errors.to_string().contains(&format!("{n} problems")));
    assert!(errors.to_string().ends_with("and 25 more"));
}
