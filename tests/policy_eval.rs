//! Evaluating policies: each condition, combination, requirement sets, fail-closed, worst-case
//! facts, the opt-in flag, and the example policy.

use std::collections::BTreeSet;
use std::time::Duration;

use agent_handoff::action::{
    ActionRequest, ActionRequestBuilder, Amount, Environment, Impact, Reversibility, Sensitivity,
};
use agent_handoff::policy::{
    Outcome, Policy, PolicyEngine, PolicyError, ReviewPlan, ReviewRequirement, Ruling,
};
use agent_handoff::GroupName;
use serde_json::json;
use sha2::{Digest, Sha256};

/// A default review by `oncall` (30m deadline) and the given rules.
fn policy(rules: &str) -> Policy {
    Policy::from_toml(&format!(
        "version = \"test\"\n[default]\nreview = {{ approvals = 1, groups = [\"oncall\"], deadline = \"30m\", approval_ttl = \"15m\" }}\n{rules}"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A request with mild facts (so only the conditions under test decide): development,
/// public, reversible, impact 1 USD, confidence 0.99.
fn mild(kind: &str) -> ActionRequestBuilder {
    ActionRequest::builder(kind, "idem-key-0001")
        .environment(Environment::Development)
        .sensitivity(Sensitivity::Public)
        .reversibility(Reversibility::Reversible)
        .impact(Impact::new(Amount::parse("1").unwrap(), "USD"))
        .confidence(0.99)
}

fn eval(policy: &Policy, request: ActionRequestBuilder) -> Ruling {
    policy.evaluate(&request.build().unwrap())
}

fn ids(ruling: &Ruling) -> Vec<&str> {
    ruling.matched.iter().map(|m| m.rule.as_str()).collect()
}

fn req(groups: &[&str], approvals: u32) -> ReviewRequirement {
    ReviewRequirement {
        groups: groups.iter().map(|g| GroupName::new(*g).unwrap()).collect(),
        approvals,
    }
}

fn plan(outcome: &Outcome) -> &ReviewPlan {
    match outcome {
        Outcome::Review(plan) => plan,
        other => panic!("review expected, got {other:?}"),
    }
}

const DENY: &str = "then.deny.reason = \"matched\"\n";

fn rule(id: &str, when: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\nwhen = {{ {when} }}\n{DENY}")
}

/// Whether a deny rule with this `when` matches the request.
fn matches(when: &str, request: ActionRequestBuilder) -> bool {
    let ruling = eval(&policy(&rule("r", when)), request);
    match &ruling.outcome {
        Outcome::Deny { .. } => {
            assert_eq!(ruling.matched.len(), 1);
            assert!(ruling.matched[0].fail_closed.is_none(), "{ruling:?}");
            true
        }
        _ => {
            assert!(ruling.matched.is_empty(), "{ruling:?}");
            false
        }
    }
}

#[test]
fn kind_globs_match_as_documented() {
    assert!(matches(r#"kind = "payment.*""#, mild("payment.send")));
    assert!(!matches(
        r#"kind = "payment.*""#,
        mild("payment.send.batch")
    ));
    assert!(!matches(r#"kind = "payment.*""#, mild("payments.send")));
    assert!(matches(r#"kind = "*.read""#, mild("db.read")));
    assert!(!matches(r#"kind = "*.read""#, mild("db.table.read")));
    assert!(matches(r#"kind = ["x.y", "db.**"]"#, mild("db.table.drop")));
    assert!(matches(r#"kind = "db.**""#, mild("db")));
    assert!(!matches(r#"kind = ["x.y", "db.**"]"#, mild("dbx.read")));
    assert!(matches(
        r#"kind = ["payment.*", "*.read"]"#,
        mild("file.read")
    ));
}

#[test]
fn environment_sensitivity_and_reversibility_conditions() {
    let env = r#"environment = ["staging", "production"]"#;
    assert!(matches(env, mild("a").environment(Environment::Production)));
    assert!(!matches(
        env,
        mild("a").environment(Environment::Development)
    ));
    assert!(!matches(
        env,
        mild("a").environment(Environment::parse("eu-prod").unwrap())
    ));
    assert!(matches(
        r#"environment = "eu-prod""#,
        mild("a").environment(Environment::parse("eu-prod").unwrap())
    ));

    let sens = r#"sensitivity_at_least = "confidential""#;
    assert!(matches(
        sens,
        mild("a").sensitivity(Sensitivity::Confidential)
    ));
    assert!(matches(sens, mild("a").sensitivity(Sensitivity::Regulated)));
    assert!(!matches(sens, mild("a").sensitivity(Sensitivity::Internal)));

    let rev = r#"reversibility = ["compensable", "irreversible"]"#;
    assert!(matches(
        rev,
        mild("a").reversibility(Reversibility::Irreversible)
    ));
    assert!(!matches(
        rev,
        mild("a").reversibility(Reversibility::Reversible)
    ));
}

#[test]
fn impact_thresholds_are_per_unit_and_exact() {
    let when = r#"impact_at_least = { USD = "10000", EUR = 9000 }"#;
    let usd = |a: &str| mild("payment.send").impact(Impact::new(Amount::parse(a).unwrap(), "USD"));
    assert!(matches(when, usd("10000")));
    assert!(matches(when, usd("10000.00")));
    assert!(!matches(when, usd("9999.99")));
    let eur = mild("x").impact(Impact::new(Amount::parse("9000").unwrap(), "EUR"));
    assert!(matches(when, eur));
}

#[test]
fn confidence_below_and_absent_confidence() {
    let when = "confidence_below = 0.8";
    assert!(matches(when, mild("a").confidence(0.5)));
    assert!(!matches(when, mild("a").confidence(0.8)));
    let absent = ActionRequest::builder("a", "idem-key-0001")
        .environment(Environment::Development)
        .build()
        .unwrap();
    let ruling = policy(&rule("r", when)).evaluate(&absent);
    assert!(
        matches!(ruling.outcome, Outcome::Deny { .. }),
        "absent confidence counts as zero"
    );
    assert!(
        ruling.matched[0].reasons[0].contains("not stated"),
        "{ruling:?}"
    );
}

#[test]
fn absent_impact_counts_as_unbounded() {
    let p = policy(&rule("big", r#"impact_at_least = { USD = "1000000000" }"#));
    let request = ActionRequest::builder("payment.send", "idem-key-0001")
        .build()
        .unwrap();
    let ruling = p.evaluate(&request);
    assert!(matches!(ruling.outcome, Outcome::Deny { .. }), "{ruling:?}");
    assert!(
        ruling.matched[0].fail_closed.is_none(),
        "absent impact is a definite match"
    );
    assert!(
        ruling.matched[0].reasons[0].contains("unbounded"),
        "{ruling:?}"
    );
}

#[test]
fn builder_defaults_are_the_worst_case() {
    let p = policy(&rule(
        "worst",
        r#"environment = "production", sensitivity_at_least = "regulated", reversibility = "irreversible", confidence_below = 0.01, impact_at_least = { USD = "1" }"#,
    ));
    let ruling = p.evaluate(
        &ActionRequest::builder("a.b", "idem-key-0001")
            .build()
            .unwrap(),
    );
    assert!(matches!(ruling.outcome, Outcome::Deny { .. }), "{ruling:?}");
    assert_eq!(
        ruling.matched[0].reasons.len(),
        5,
        "one reason per condition"
    );
}

#[test]
fn attribute_equality_membership_and_thresholds() {
    assert!(matches(
        r#"attributes = { team = "payments" }"#,
        mild("a").attribute("team", json!("payments"))
    ));
    assert!(!matches(
        r#"attributes = { team = "payments" }"#,
        mild("a").attribute("team", json!("search"))
    ));
    let tier = r#"attributes = { tier = ["gold", "platinum"] }"#;
    assert!(matches(
        tier,
        mild("a").attribute("tier", json!("platinum"))
    ));
    assert!(!matches(tier, mild("a").attribute("tier", json!("bronze"))));
    assert!(matches(
        r#"attributes = { pii = true }"#,
        mild("a").attribute("pii", json!(true))
    ));
    assert!(!matches(
        r#"attributes = { pii = true }"#,
        mild("a").attribute("pii", json!(false))
    ));
    assert!(matches(
        r#"attributes = { n = [1, 2] }"#,
        mild("a").attribute("n", json!(2))
    ));
    assert!(matches(
        r#"attributes = { n = 2 }"#,
        mild("a").attribute("n", json!(2.0))
    ));
    let risk = r#"attributes = { risk = { at_least = 5, below = 10 } }"#;
    assert!(matches(risk, mild("a").attribute("risk", json!(5))));
    assert!(matches(risk, mild("a").attribute("risk", json!(9.5))));
    assert!(!matches(risk, mild("a").attribute("risk", json!(10))));
    assert!(!matches(risk, mild("a").attribute("risk", json!(4.99))));
    assert!(matches(
        r#"attributes = { rows = { at_least = 1000000 } }"#,
        // The largest integer every JCS implementation agrees on (2^53 - 1).
        mild("a").attribute("rows", json!(9_007_199_254_740_991_u64))
    ));
}

#[test]
fn every_condition_must_hold() {
    let when = r#"kind = "db.*", environment = "production", sensitivity_at_least = "internal""#;
    let prod = || mild("db.drop").environment(Environment::Production);
    assert!(matches(when, prod().sensitivity(Sensitivity::Internal)));
    assert!(!matches(when, prod().sensitivity(Sensitivity::Public)));
    assert!(!matches(
        when,
        mild("db.drop").sensitivity(Sensitivity::Internal)
    ));
}

#[test]
fn a_rule_without_conditions_matches_everything() {
    let p = policy(&format!("[[rule]]\nid = \"all\"\n{DENY}"));
    let ruling = eval(&p, mild("anything.at.all"));
    assert_eq!(ids(&ruling), ["all"]);
    assert!(ruling.matched[0].reasons[0].contains("no conditions"));
}

// ---- combination ----

fn review_rule(
    id: &str,
    when: &str,
    approvals: u32,
    groups: &str,
    deadline: &str,
    ttl: &str,
    veto: bool,
) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nwhen = {{ {when} }}\nthen.review = {{ approvals = {approvals}, groups = [{groups}], deadline = \"{deadline}\", approval_ttl = \"{ttl}\", veto = {veto} }}\n"
    )
}

#[test]
fn requirement_sets_stay_separate() {
    let p = policy(&format!(
        "{}{}",
        review_rule("dba", r#"kind = "db.*""#, 2, r#""dba""#, "1h", "30m", false),
        review_rule(
            "finance",
            r#"environment = "development""#,
            1,
            r#""finance""#,
            "2h",
            "10m",
            false
        ),
    ));
    let ruling = eval(&p, mild("db.drop"));
    assert_eq!(ids(&ruling), ["dba", "finance"]);
    let plan = plan(&ruling.outcome);
    let expected: BTreeSet<_> = [req(&["dba"], 2), req(&["finance"], 1)].into();
    assert_eq!(
        plan.requirements, expected,
        "two requirements stay two, never one union"
    );
    assert_eq!(
        plan.deadline,
        Duration::from_secs(3600),
        "shortest deadline"
    );
    assert_eq!(
        plan.approval_ttl,
        Duration::from_secs(600),
        "shortest approval ttl"
    );
    assert!(!plan.veto, "no rule asked for veto");
}

#[test]
fn veto_is_on_if_any_rule_has_it_and_by_default() {
    let p = policy(&format!(
        "{}{}",
        review_rule("a", r#"kind = "db.*""#, 1, r#""dba""#, "1h", "30m", false),
        review_rule("b", r#"kind = "db.drop""#, 1, r#""dba""#, "1h", "30m", true),
    ));
    assert!(plan(&eval(&p, mild("db.drop")).outcome).veto);
    assert!(!plan(&eval(&p, mild("db.read")).outcome).veto);
    assert!(plan(p.default_outcome()).veto, "veto defaults to on");
}

#[test]
fn requirement_with_several_groups_is_one_requirement() {
    let p = policy(&review_rule(
        "either",
        "",
        2,
        r#""dba", "sre""#,
        "1h",
        "1h",
        true,
    ));
    let ruling = eval(&p, mild("x"));
    let expected: BTreeSet<_> = [req(&["dba", "sre"], 2)].into();
    assert_eq!(plan(&ruling.outcome).requirements, expected);
}

#[test]
fn deny_beats_review_beats_allow() {
    let allow = "[[rule]]\nid = \"allow\"\nwhen = { environment = \"development\", reversibility = \"reversible\" }\nthen.allow.grant_ttl = \"10m\"\n[[rule]]\nid = \"allow-short\"\nwhen = { kind = \"db.*\", environment = \"development\", reversibility = \"reversible\" }\nthen.allow.grant_ttl = \"2m\"\n";
    let review = review_rule(
        "review",
        r#"kind = "db.drop""#,
        1,
        r#""dba""#,
        "1h",
        "1h",
        true,
    );
    let deny = rule(
        "deny",
        r#"kind = "db.drop", sensitivity_at_least = "internal""#,
    );
    let p = policy(&format!("{allow}{review}{deny}"));

    let ruling = eval(&p, mild("db.read"));
    assert_eq!(
        ruling.outcome,
        Outcome::Allow {
            grant_ttl: Duration::from_secs(120)
        },
        "shortest grant ttl"
    );
    assert_eq!(ids(&ruling), ["allow", "allow-short"], "sorted by id");

    let ruling = eval(&p, mild("db.drop"));
    assert!(matches!(ruling.outcome, Outcome::Review(_)));
    assert_eq!(
        ids(&ruling),
        ["allow", "allow-short", "review"],
        "every matching rule is listed"
    );

    let ruling = eval(&p, mild("db.drop").sensitivity(Sensitivity::Internal));
    assert_eq!(
        ruling.outcome,
        Outcome::Deny {
            reason: "matched".into()
        }
    );
    assert_eq!(ids(&ruling), ["allow", "allow-short", "deny", "review"]);
}

#[test]
fn deny_reasons_of_several_rules_are_kept() {
    let p = policy(
        "[[rule]]\nid = \"b\"\nthen.deny.reason = \"second\"\n[[rule]]\nid = \"a\"\nthen.deny.reason = \"first\"\n",
    );
    assert_eq!(
        eval(&p, mild("x")).outcome,
        Outcome::Deny {
            reason: "first; second".into()
        }
    );
}

#[test]
fn default_applies_only_when_nothing_matches() {
    let p = policy(&review_rule(
        "db",
        r#"kind = "db.*""#,
        2,
        r#""dba""#,
        "1h",
        "1h",
        true,
    ));
    let ruling = eval(&p, mild("mail.send"));
    assert!(ruling.matched.is_empty());
    assert!(ruling.decided_by_default());
    assert_eq!(&ruling.outcome, p.default_outcome());
    let ruling = eval(&p, mild("db.read"));
    let expected: BTreeSet<_> = [req(&["dba"], 2)].into();
    assert_eq!(
        plan(&ruling.outcome).requirements,
        expected,
        "the default does not add `oncall`"
    );
    assert!(!ruling.decided_by_default());
}

// ---- fail closed ----

#[test]
fn numeric_threshold_against_a_string_fails_closed() {
    let p = policy(&rule(
        "risky",
        r#"attributes = { risk = { at_least = 5 } }"#,
    ));
    let ruling = eval(&p, mild("x").attribute("risk", json!("high")));
    assert!(
        matches!(ruling.outcome, Outcome::Deny { .. }),
        "assumed to match: {ruling:?}"
    );
    let why = ruling.matched[0].fail_closed.as_deref().expect("says why");
    assert!(
        why.contains("`risk`") && why.contains("not a number"),
        "{why}"
    );
    assert!(ruling.decided_by_default(), "the default took part as well");
}

#[test]
fn absent_attribute_fails_closed() {
    let p = policy(&review_rule(
        "team",
        r#"attributes = { team = "payments" }"#,
        2,
        r#""finance""#,
        "1h",
        "1h",
        true,
    ));
    let ruling = eval(&p, mild("x"));
    let why = ruling.matched[0].fail_closed.as_deref().expect("says why");
    assert!(why.contains("`team` is absent"), "{why}");
    let expected: BTreeSet<_> = [req(&["finance"], 2), req(&["oncall"], 1)].into();
    assert_eq!(
        plan(&ruling.outcome).requirements,
        expected,
        "the unknown rule and the default both apply"
    );
}

#[test]
fn type_mismatch_in_equality_fails_closed() {
    let p = policy(&rule("t", r#"attributes = { tier = ["gold"] }"#));
    let ruling = eval(&p, mild("x").attribute("tier", json!(3)));
    assert!(ruling.matched[0].fail_closed.is_some(), "{ruling:?}");
    assert!(matches!(ruling.outcome, Outcome::Deny { .. }));
}

#[test]
fn impact_unit_without_threshold_fails_closed() {
    let p = policy(&rule(
        "big",
        r#"kind = "payment.*", impact_at_least = { USD = "10000" }"#,
    ));
    let gbp = mild("payment.send").impact(Impact::new(Amount::parse("5").unwrap(), "GBP"));
    let ruling = eval(&p, gbp);
    assert!(matches!(ruling.outcome, Outcome::Deny { .. }), "{ruling:?}");
    let m = &ruling.matched[0];
    assert!(m.fail_closed.as_deref().unwrap().contains("`GBP`"), "{m:?}");
    assert!(
        m.reasons[0].contains("payment.*"),
        "conditions that held are still explained"
    );
}

#[test]
fn a_false_condition_beats_an_unknown_one() {
    let p = policy(&rule("r", r#"kind = "db.*", attributes = { team = "x" }"#));
    let ruling = eval(&p, mild("payment.send"));
    assert!(
        ruling.matched.is_empty(),
        "kind does not match, so the rule is simply unmatched"
    );
}

#[test]
fn an_unknown_allow_rule_cannot_loosen_the_default() {
    let p = policy(
        "[[rule]]\nid = \"cheap\"\nwhen = { environment = \"development\", reversibility = \"reversible\", attributes = { team = \"x\" } }\nthen.allow.grant_ttl = \"1h\"\n",
    );
    let ruling = eval(&p, mild("x"));
    assert_eq!(
        &ruling.outcome,
        p.default_outcome(),
        "still the default review"
    );
    assert_eq!(ids(&ruling), ["cheap"]);
    assert!(ruling.matched[0].fail_closed.is_some());
}

// ---- opt-in ----

#[test]
fn allow_that_can_reach_production_or_irreversible_needs_opt_in() {
    let base = "version = \"1\"\ndefault.deny.reason = \"no\"\n";
    let allow = |when: &str| {
        format!("[[rule]]\nid = \"reads\"\nwhen = {{ {when} }}\nthen.allow.grant_ttl = \"5m\"\n")
    };
    for when in [
        r#"kind = "*.read""#,
        r#"kind = "*.read", environment = "development""#,
        r#"kind = "*.read", reversibility = "reversible""#,
        r#"environment = ["development", "production"], reversibility = "reversible""#,
        r#"environment = "development", reversibility = ["reversible", "irreversible"]"#,
    ] {
        let e = Policy::from_toml(&format!("{base}{}", allow(when)))
            .unwrap_err()
            .into_vec()
            .remove(0);
        assert!(
            matches!(e, PolicyError::HighRiskAllow { .. }),
            "{when}: {e:?}"
        );
        assert_eq!((e.rule(), e.field()), (Some("reads"), "rule[0].then.allow"));
        let opted = format!("allow_unreviewed_high_risk = true\n{base}{}", allow(when));
        assert!(Policy::from_toml(&opted).is_ok(), "{when}: opt-in accepted");
    }
    let limited = allow(
        r#"kind = "*.read", environment = ["development", "staging"], reversibility = ["reversible", "compensable"]"#,
    );
    assert!(Policy::from_toml(&format!("{base}{limited}")).is_ok());

    let e = Policy::from_toml("version = \"1\"\ndefault.allow.grant_ttl = \"1m\"\n")
        .unwrap_err()
        .first()
        .clone();
    assert!(matches!(e, PolicyError::HighRiskAllow { .. }), "{e:?}");
    assert_eq!(
        (e.rule(), e.field(), e.line()),
        (None, "default.allow", Some(2))
    );
    let p = Policy::from_toml(
        "allow_unreviewed_high_risk = true\nversion = \"1\"\ndefault.allow.grant_ttl = \"1m\"\n",
    )
    .unwrap();
    assert!(p.allows_unreviewed_high_risk());
}

// ---- rulings ----

#[test]
fn ruling_records_version_hash_and_reasons() {
    let text = "version = \"2026-11-25.1\"\ndefault.deny.reason = \"no\"\n[[rule]]\nid = \"r\"\nwhen = { kind = \"payment.*\", environment = \"development\" }\nthen.deny.reason = \"x\"\n";
    let p = Policy::from_toml(text).unwrap();
    let expected: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    assert_eq!(p.hash().0, expected);
    let ruling = eval(&p, mild("payment.send"));
    assert_eq!(ruling.policy, p.policy_ref());
    assert_eq!(ruling.policy.version, "2026-11-25.1");
    assert_eq!(
        ruling.matched[0].reasons,
        [
            "kind `payment.send` matches `payment.*`",
            "environment `development` is `development`"
        ]
    );
    assert_eq!(ruling, eval(&p, mild("payment.send")), "deterministic");
    let debug = format!("{p:?}");
    assert!(
        debug.len() < 200 && debug.contains("2026-11-25.1") && debug.contains("rules: 1"),
        "{debug}"
    );
}

#[test]
fn policy_is_a_shareable_engine() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Policy>();
    let engine: Box<dyn PolicyEngine> = Box::new(policy(""));
    let ruling = engine.evaluate(&mild("x").build().unwrap());
    assert!(ruling.matched.is_empty());
    assert_eq!(ruling.policy.version, "test");
}

// ---- the example policy ----

fn example() -> Policy {
    Policy::from_toml(include_str!("../examples/policy.toml")).unwrap()
}

#[test]
fn example_dev_reads_are_allowed() {
    let ruling = eval(&example(), mild("db.read"));
    assert_eq!(
        ruling.outcome,
        Outcome::Allow {
            grant_ttl: Duration::from_secs(300)
        }
    );
    assert_eq!(ids(&ruling), ["dev-reads"]);
    let ruling = eval(
        &example(),
        mild("db.read").environment(Environment::Production),
    );
    assert!(
        ruling.decided_by_default(),
        "a production read goes to oncall: {ruling:?}"
    );
}

#[test]
fn example_production_table_drop_needs_two_dbas_and_security_for_regulated_data() {
    let drop = || {
        mild("db.table.drop")
            .environment(Environment::Production)
            .reversibility(Reversibility::Irreversible)
    };
    let ruling = eval(&example(), drop().sensitivity(Sensitivity::Internal));
    let expected: BTreeSet<_> = [req(&["dba"], 2)].into();
    assert_eq!(plan(&ruling.outcome).requirements, expected);
    let ruling = eval(&example(), drop().sensitivity(Sensitivity::Regulated));
    let expected: BTreeSet<_> = [req(&["dba"], 2), req(&["security"], 1)].into();
    assert_eq!(plan(&ruling.outcome).requirements, expected);
    assert_eq!(ids(&ruling), ["prod-table-drop", "regulated-data"]);
}

#[test]
fn example_payments_need_finance_and_big_ones_are_denied() {
    let pay = |amount: &str, unit: &str| {
        mild("payment.send")
            .environment(Environment::Production)
            .impact(Impact::new(Amount::parse(amount).unwrap(), unit))
    };
    let ruling = eval(&example(), pay("500", "USD"));
    let expected: BTreeSet<_> = [req(&["finance"], 1)].into();
    assert_eq!(plan(&ruling.outcome).requirements, expected);
    assert!(matches!(
        eval(&example(), pay("10000", "USD")).outcome,
        Outcome::Deny { .. }
    ));
    assert!(matches!(
        eval(&example(), pay("9000", "EUR")).outcome,
        Outcome::Deny { .. }
    ));
    let ruling = eval(&example(), pay("50", "GBP"));
    assert!(
        matches!(ruling.outcome, Outcome::Deny { .. }),
        "unknown unit fails closed"
    );
    assert!(ruling
        .fail_closed()
        .any(|m| m.rule.as_str() == "big-payment"));
    let unstated = ActionRequest::builder("payment.send", "idem-key-0001")
        .build()
        .unwrap();
    assert!(
        matches!(example().evaluate(&unstated).outcome, Outcome::Deny { .. }),
        "no impact = unbounded"
    );
}

#[test]
fn example_json_rules_like_example_toml() {
    let json = Policy::from_json(include_str!("../examples/policy.json")).unwrap();
    let toml = example();
    assert_eq!(json.version(), toml.version());
    assert_eq!(json.rules_len(), toml.rules_len());
    let requests = [
        mild("db.read"),
        mild("db.table.drop").environment(Environment::Production),
        mild("payment.send").impact(Impact::new(Amount::parse("20000").unwrap(), "USD")),
        mild("payment.send").impact(Impact::new(Amount::parse("5").unwrap(), "JPY")),
        mild("mail.send").sensitivity(Sensitivity::Regulated),
        mild("svc.cache.read"),
    ];
    for request in requests {
        let request = request.build().unwrap();
        let (a, b) = (json.evaluate(&request), toml.evaluate(&request));
        assert_eq!(
            (a.outcome, a.matched),
            (b.outcome, b.matched),
            "{}",
            request.kind().as_str()
        );
    }
}
