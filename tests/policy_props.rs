//! Property tests of the policy evaluator against a small reference model.
//!
//! Random policies (as data, rendered to both TOML and JSON) and random requests:
//! - the compiled evaluator agrees with a naive reference evaluation of the documented
//!   semantics (outcome, matched rule ids, which ones failed closed);
//! - shuffling rule order never changes a ruling;
//! - TOML and JSON renderings of one policy rule identically;
//! - a rule that cannot be evaluated only ever tightens the ruling, compared with either way it
//!   could have evaluated;
//! - once some rule definitively matches, adding any rule never loosens the ruling, and adding
//!   a matching deny rule always denies.

use std::time::Duration;

use agent_handoff::action::{
    ActionRequest, Amount, Environment, Impact, Reversibility, Sensitivity,
};
use agent_handoff::policy::{Outcome, Policy, ReviewPlan, ReviewRequirement, Ruling};
use agent_handoff::GroupName;
use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::{json, Map, Value};

// ---- the generated model ----

#[derive(Debug, Clone)]
enum AttrSpec {
    Eq(String),
    OneOf(Vec<String>),
    AtLeast(i64),
}

#[derive(Debug, Clone)]
enum OutcomeSpec {
    Allow(u64),
    Review {
        approvals: u32,
        group: &'static str,
        deadline_min: u64,
        ttl_min: u64,
        veto: Option<bool>,
    },
    Deny(String),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    id: String,
    kind: Option<Vec<String>>,
    env: Option<Vec<&'static str>>,
    sens: Option<Sensitivity>,
    impact: Option<Vec<(&'static str, u64)>>,
    rev: Option<Vec<Reversibility>>,
    conf_tenths: Option<u8>,
    attrs: Vec<(&'static str, AttrSpec)>,
    outcome: OutcomeSpec,
}

#[derive(Debug, Clone)]
struct PolicySpec {
    default: OutcomeSpec,
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone)]
struct RequestSpec {
    kind: String,
    env: &'static str,
    sens: Sensitivity,
    rev: Reversibility,
    impact: Option<(&'static str, u64)>,
    conf_tenths: Option<u8>,
    attrs: Vec<(&'static str, Value)>,
}

const SEGMENTS: [&str; 4] = ["db", "pay", "read", "drop"];
const ENVS: [&str; 4] = ["development", "staging", "production", "eu-prod"];
const UNITS: [&str; 3] = ["USD", "EUR", "GBP"];
const SENS: [Sensitivity; 4] = [
    Sensitivity::Public,
    Sensitivity::Internal,
    Sensitivity::Confidential,
    Sensitivity::Regulated,
];
const REVS: [Reversibility; 3] = [
    Reversibility::Reversible,
    Reversibility::Compensable,
    Reversibility::Irreversible,
];

fn sens_name(s: Sensitivity) -> &'static str {
    s.as_str()
}

fn seg() -> impl Strategy<Value = String> {
    prop::sample::select(&SEGMENTS[..]).prop_map(str::to_owned)
}

fn kind_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(seg(), 1..=3).prop_map(|s| s.join("."))
}

fn glob_strategy() -> impl Strategy<Value = String> {
    let part = prop_oneof![3 => seg(), 1 => Just("*".to_owned())];
    (prop::collection::vec(part, 1..=3), any::<bool>()).prop_map(|(mut parts, rest)| {
        if rest {
            parts.push("**".into());
        }
        parts.join(".")
    })
}

fn outcome_strategy() -> impl Strategy<Value = OutcomeSpec> {
    prop_oneof![
        (1u64..=3).prop_map(|m| OutcomeSpec::Allow(m * 60)),
        (
            1u32..=3,
            prop::sample::select(&["dba", "finance", "oncall"][..]),
            1u64..=4,
            1u64..=4,
            prop::option::of(any::<bool>())
        )
            .prop_map(|(approvals, group, d, t, veto)| OutcomeSpec::Review {
                approvals,
                group,
                deadline_min: d * 10,
                ttl_min: t * 10,
                veto,
            }),
        prop::sample::select(&["no", "not here", "treasury"][..])
            .prop_map(|r| OutcomeSpec::Deny(r.to_owned())),
    ]
}

fn attr_strategy() -> impl Strategy<Value = Vec<(&'static str, AttrSpec)>> {
    let team = prop_oneof![
        prop::sample::select(&["a", "b"][..]).prop_map(|v| AttrSpec::Eq(v.to_owned())),
        Just(AttrSpec::OneOf(vec!["a".into(), "c".into()])),
    ];
    let risk = (0i64..=10).prop_map(AttrSpec::AtLeast);
    (prop::option::of(team), prop::option::of(risk)).prop_map(|(t, r)| {
        let mut v = Vec::new();
        if let Some(t) = t {
            v.push(("team", t));
        }
        if let Some(r) = r {
            v.push(("risk", r));
        }
        v
    })
}

fn rule_strategy() -> impl Strategy<Value = RuleSpec> {
    (
        prop::option::weighted(0.7, prop::collection::vec(glob_strategy(), 1..=2)),
        prop::option::weighted(0.3, subsequence(&ENVS[..], 1..=2)),
        prop::option::weighted(0.3, prop::sample::select(&SENS[..])),
        prop::option::weighted(
            0.3,
            subsequence(&UNITS[..2], 1..=2).prop_flat_map(|units| {
                let n = units.len();
                (Just(units), prop::collection::vec(0u64..=20, n))
            }),
        ),
        prop::option::weighted(0.3, subsequence(&REVS[..], 1..=2)),
        prop::option::weighted(0.2, 1u8..=10),
        attr_strategy(),
        outcome_strategy(),
    )
        .prop_map(
            |(kind, env, sens, impact, rev, conf, attrs, outcome)| RuleSpec {
                id: String::new(),
                kind,
                env,
                sens,
                impact: impact.map(|(units, amounts)| {
                    units
                        .into_iter()
                        .zip(amounts.into_iter().map(|a| a * 1000))
                        .collect()
                }),
                rev,
                conf_tenths: conf,
                attrs,
                outcome,
            },
        )
}

fn policy_strategy() -> impl Strategy<Value = PolicySpec> {
    (
        outcome_strategy(),
        prop::collection::vec(rule_strategy(), 0..=10),
    )
        .prop_map(|(default, mut rules)| {
            for (i, r) in rules.iter_mut().enumerate() {
                // Ids whose sort order differs from document order.
                r.id = format!("r{}", (i * 7) % 11);
            }
            PolicySpec { default, rules }
        })
}

fn request_strategy() -> impl Strategy<Value = RequestSpec> {
    let team = prop_oneof![
        Just(None),
        prop::sample::select(&["a", "b", "c"][..]).prop_map(|v| Some(json!(v))),
        Just(Some(json!(3))),
    ];
    let risk = prop_oneof![
        Just(None),
        (0i64..=12).prop_map(|v| Some(json!(v))),
        Just(Some(json!("high"))),
    ];
    (
        kind_strategy(),
        prop::sample::select(&ENVS[..]),
        prop::sample::select(&SENS[..]),
        prop::sample::select(&REVS[..]),
        prop::option::of((prop::sample::select(&UNITS[..]), 0u64..=25)),
        prop::option::of(0u8..=10),
        team,
        risk,
    )
        .prop_map(|(kind, env, sens, rev, impact, conf, team, risk)| {
            let mut attrs = Vec::new();
            if let Some(t) = team {
                attrs.push(("team", t));
            }
            if let Some(r) = risk {
                attrs.push(("risk", r));
            }
            RequestSpec {
                kind,
                env,
                sens,
                rev,
                impact: impact.map(|(u, a)| (u, a * 1000)),
                conf_tenths: conf,
                attrs,
            }
        })
}

// ---- rendering ----

fn outcome_json(o: &OutcomeSpec) -> Value {
    match o {
        OutcomeSpec::Allow(s) => json!({"allow": {"grant_ttl": format!("{s}s")}}),
        OutcomeSpec::Review {
            approvals,
            group,
            deadline_min,
            ttl_min,
            veto,
        } => {
            let mut r = json!({"approvals": approvals, "groups": [group],
                "deadline": format!("{deadline_min}m"), "approval_ttl": format!("{ttl_min}m")});
            if let Some(v) = veto {
                r["veto"] = json!(v);
            }
            json!({ "review": r })
        }
        OutcomeSpec::Deny(reason) => json!({"deny": {"reason": reason}}),
    }
}

fn rule_json(r: &RuleSpec) -> Value {
    let mut when = Map::new();
    if let Some(k) = &r.kind {
        when.insert("kind".into(), json!(k));
    }
    if let Some(e) = &r.env {
        when.insert("environment".into(), json!(e));
    }
    if let Some(s) = r.sens {
        when.insert("sensitivity_at_least".into(), json!(sens_name(s)));
    }
    if let Some(i) = &r.impact {
        let m: Map<String, Value> = i
            .iter()
            .map(|(u, a)| ((*u).to_owned(), json!(a.to_string())))
            .collect();
        when.insert("impact_at_least".into(), Value::Object(m));
    }
    if let Some(rv) = &r.rev {
        when.insert(
            "reversibility".into(),
            json!(rv.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
        );
    }
    if let Some(c) = r.conf_tenths {
        when.insert("confidence_below".into(), json!(f64::from(c) / 10.0));
    }
    if !r.attrs.is_empty() {
        let m: Map<String, Value> = r
            .attrs
            .iter()
            .map(|(n, a)| {
                let v = match a {
                    AttrSpec::Eq(s) => json!(s),
                    AttrSpec::OneOf(v) => json!(v),
                    AttrSpec::AtLeast(n) => json!({"at_least": n}),
                };
                ((*n).to_owned(), v)
            })
            .collect();
        when.insert("attributes".into(), Value::Object(m));
    }
    json!({"id": r.id, "when": when, "then": outcome_json(&r.outcome)})
}

fn policy_json(p: &PolicySpec) -> String {
    json!({
        "version": "prop",
        "allow_unreviewed_high_risk": true,
        "default": outcome_json(&p.default),
        "rule": p.rules.iter().map(rule_json).collect::<Vec<_>>(),
    })
    .to_string()
}

/// A JSON value as a TOML inline value (our generated values are TOML-compatible).
fn inline_toml(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let body: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), inline_toml(v)))
                .collect();
            format!("{{ {} }}", body.join(", "))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(inline_toml).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

fn policy_toml(p: &PolicySpec) -> String {
    let mut text = format!(
        "version = \"prop\"\nallow_unreviewed_high_risk = true\ndefault = {}\n",
        inline_toml(&outcome_json(&p.default))
    );
    for r in &p.rules {
        let v = rule_json(r);
        text.push_str(&format!(
            "\n[[rule]]\nid = {}\nwhen = {}\nthen = {}\n",
            v["id"],
            inline_toml(&v["when"]),
            inline_toml(&v["then"])
        ));
    }
    text
}

fn compile(p: &PolicySpec) -> Policy {
    Policy::from_json(&policy_json(p)).unwrap_or_else(|e| panic!("{e}\n{}", policy_json(p)))
}

fn request(r: &RequestSpec) -> ActionRequest {
    let mut b = ActionRequest::builder(r.kind.clone(), "idem-key-0001")
        .environment(Environment::parse(r.env).unwrap())
        .sensitivity(r.sens)
        .reversibility(r.rev);
    if let Some((unit, amount)) = r.impact {
        b = b.impact(Impact::new(Amount::from_units(amount), unit));
    }
    if let Some(c) = r.conf_tenths {
        b = b.confidence(f64::from(c) / 10.0);
    }
    for (n, v) in &r.attrs {
        b = b.attribute(*n, v.clone());
    }
    b.build().unwrap()
}

// ---- the reference model ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    True,
    False,
    Unknown,
}

fn glob_matches(glob: &str, kind: &str) -> bool {
    let g: Vec<&str> = glob.split('.').collect();
    let k: Vec<&str> = kind.split('.').collect();
    let (fixed, rest) = match g.last() {
        Some(&"**") => (&g[..g.len() - 1], true),
        _ => (&g[..], false),
    };
    if rest {
        k.len() >= fixed.len() && fixed.iter().zip(&k).all(|(p, s)| *p == "*" || p == s)
    } else {
        k.len() == fixed.len() && fixed.iter().zip(&k).all(|(p, s)| *p == "*" || p == s)
    }
}

fn reference_rule(r: &RuleSpec, q: &RequestSpec) -> Tri {
    let mut conds = Vec::new();
    if let Some(k) = &r.kind {
        conds.push(if k.iter().any(|g| glob_matches(g, &q.kind)) {
            Tri::True
        } else {
            Tri::False
        });
    }
    if let Some(e) = &r.env {
        conds.push(if e.contains(&q.env) {
            Tri::True
        } else {
            Tri::False
        });
    }
    if let Some(s) = r.sens {
        conds.push(if q.sens >= s { Tri::True } else { Tri::False });
    }
    if let Some(rv) = &r.rev {
        conds.push(if rv.contains(&q.rev) {
            Tri::True
        } else {
            Tri::False
        });
    }
    if let Some(c) = r.conf_tenths {
        conds.push(match q.conf_tenths {
            None => Tri::True,
            Some(qc) if qc < c => Tri::True,
            Some(_) => Tri::False,
        });
    }
    if let Some(thresholds) = &r.impact {
        conds.push(match q.impact {
            None => Tri::True,
            Some((unit, amount)) => match thresholds.iter().find(|(u, _)| *u == unit) {
                None => Tri::Unknown,
                Some((_, min)) if amount >= *min => Tri::True,
                Some(_) => Tri::False,
            },
        });
    }
    for (name, spec) in &r.attrs {
        let value = q.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        conds.push(match (spec, value) {
            (_, None) => Tri::Unknown,
            (AttrSpec::Eq(s), Some(Value::String(v))) => {
                if s == v {
                    Tri::True
                } else {
                    Tri::False
                }
            }
            (AttrSpec::OneOf(list), Some(Value::String(v))) => {
                if list.contains(v) {
                    Tri::True
                } else {
                    Tri::False
                }
            }
            (AttrSpec::AtLeast(min), Some(Value::Number(n))) => {
                if n.as_i64().unwrap() >= *min {
                    Tri::True
                } else {
                    Tri::False
                }
            }
            _ => Tri::Unknown,
        });
    }
    if conds.contains(&Tri::False) {
        Tri::False
    } else if conds.contains(&Tri::Unknown) {
        Tri::Unknown
    } else {
        Tri::True
    }
}

fn outcome_of(o: &OutcomeSpec) -> Outcome {
    match o {
        OutcomeSpec::Allow(s) => Outcome::Allow {
            grant_ttl: Duration::from_secs(*s),
        },
        OutcomeSpec::Review {
            approvals,
            group,
            deadline_min,
            ttl_min,
            veto,
        } => Outcome::Review(ReviewPlan {
            requirements: [ReviewRequirement {
                groups: [GroupName::new(*group).unwrap()].into(),
                approvals: *approvals,
            }]
            .into(),
            deadline: Duration::from_secs(deadline_min * 60),
            approval_ttl: Duration::from_secs(ttl_min * 60),
            veto: veto.unwrap_or(true),
        }),
        OutcomeSpec::Deny(r) => Outcome::Deny { reason: r.clone() },
    }
}

/// (outcome, matched ids in id order, ids that failed closed)
fn reference(p: &PolicySpec, q: &RequestSpec) -> (Outcome, Vec<String>, Vec<String>) {
    let mut hits: Vec<(&RuleSpec, Tri)> = p
        .rules
        .iter()
        .map(|r| (r, reference_rule(r, q)))
        .filter(|(_, t)| *t != Tri::False)
        .collect();
    hits.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let definite = hits.iter().any(|(_, t)| *t == Tri::True);
    let mut outcomes: Vec<Outcome> = Vec::new();
    if !definite {
        outcomes.push(outcome_of(&p.default));
    }
    outcomes.extend(hits.iter().map(|(r, _)| outcome_of(&r.outcome)));
    let outcome = outcomes
        .into_iter()
        .reduce(Outcome::join)
        .expect("the default or a rule");
    let ids = hits.iter().map(|(r, _)| r.id.clone()).collect();
    let unknown = hits
        .iter()
        .filter(|(_, t)| *t == Tri::Unknown)
        .map(|(r, _)| r.id.clone())
        .collect();
    (outcome, ids, unknown)
}

fn summary(r: &Ruling) -> (Outcome, Vec<String>, Vec<String>) {
    (
        r.outcome.clone(),
        r.matched.iter().map(|m| m.rule.to_string()).collect(),
        r.fail_closed().map(|m| m.rule.to_string()).collect(),
    )
}

/// Unique ids (the generator may repeat ids; keep the first of each).
fn dedup(mut p: PolicySpec) -> PolicySpec {
    let mut seen = std::collections::HashSet::new();
    p.rules.retain(|r| seen.insert(r.id.clone()));
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn evaluator_agrees_with_the_reference(p in policy_strategy().prop_map(dedup), q in request_strategy()) {
        let ruling = compile(&p).evaluate(&request(&q));
        prop_assert_eq!(summary(&ruling), reference(&p, &q));
        prop_assert_eq!(ruling.decided_by_default(), !ruling.matched.iter().any(|m| m.fail_closed.is_none()));
        for m in &ruling.matched {
            prop_assert!(!m.reasons.is_empty() || m.fail_closed.is_some(), "every contribution says why");
        }
    }

    #[test]
    fn shuffling_rules_never_changes_a_ruling(
        p in policy_strategy().prop_map(dedup),
        q in request_strategy(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = p.clone();
        // A deterministic shuffle from the seed (Fisher-Yates with an LCG).
        let mut state = seed | 1;
        for i in (1..shuffled.rules.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = usize::try_from(state >> 33).unwrap() % (i + 1);
            shuffled.rules.swap(i, j);
        }
        let a = compile(&p).evaluate(&request(&q));
        let b = compile(&shuffled).evaluate(&request(&q));
        prop_assert_eq!(&a.outcome, &b.outcome);
        prop_assert_eq!(&a.matched, &b.matched);
        prop_assert_eq!(&a.policy.version, &b.policy.version);
    }

    #[test]
    fn toml_and_json_rule_identically(p in policy_strategy().prop_map(dedup), q in request_strategy()) {
        let from_toml = Policy::from_toml(&policy_toml(&p));
        prop_assert!(from_toml.is_ok(), "{:?}\n{}", from_toml.err(), policy_toml(&p));
        let a = from_toml.unwrap().evaluate(&request(&q));
        let b = compile(&p).evaluate(&request(&q));
        prop_assert_eq!(a.outcome, b.outcome);
        prop_assert_eq!(a.matched, b.matched);
    }

    #[test]
    fn unknown_rules_only_tighten(p in policy_strategy().prop_map(dedup), q in request_strategy()) {
        let ruling = compile(&p).evaluate(&request(&q));
        for unknown in ruling.fail_closed() {
            let idx = p.rules.iter().position(|r| r.id == unknown.rule.as_str()).unwrap();
            // Had it evaluated to false: the rule is gone.
            let mut as_false = p.clone();
            as_false.rules.remove(idx);
            let f = compile(&as_false).evaluate(&request(&q));
            prop_assert!(ruling.outcome.is_at_least_as_strict_as(&f.outcome),
                "{:?} looser than {:?} without {}", ruling.outcome, f.outcome, unknown.rule);
            // Had it evaluated to true: drop the conditions it could not evaluate.
            let mut as_true = p.clone();
            as_true.rules[idx].attrs.clear();
            as_true.rules[idx].impact = None;
            let t = compile(&as_true).evaluate(&request(&q));
            prop_assert!(t.matched.iter().any(|m| m.rule == unknown.rule && m.fail_closed.is_none()));
            prop_assert!(ruling.outcome.is_at_least_as_strict_as(&t.outcome),
                "{:?} looser than {:?} with {} matched", ruling.outcome, t.outcome, unknown.rule);
        }
    }

    #[test]
    fn adding_rules_after_a_definite_match_never_loosens(
        p in policy_strategy().prop_map(dedup),
        extra in rule_strategy(),
        q in request_strategy(),
    ) {
        let before = compile(&p).evaluate(&request(&q));
        let mut more = p.clone();
        more.rules.push(RuleSpec { id: "added".into(), ..extra.clone() });
        let after = compile(&more).evaluate(&request(&q));
        if !before.decided_by_default() {
            prop_assert!(after.outcome.is_at_least_as_strict_as(&before.outcome),
                "{:?} looser than {:?}", after.outcome, before.outcome);
        }
        // A deny rule that definitively matches always denies.
        let mut denied = p.clone();
        denied.rules.push(RuleSpec { id: "added-deny".into(), outcome: OutcomeSpec::Deny("stop".into()), ..extra });
        let ruling = compile(&denied).evaluate(&request(&q));
        let added = ruling.matched.iter().find(|m| m.rule.as_str() == "added-deny");
        if added.is_some_and(|m| m.fail_closed.is_none()) {
            let denied = matches!(&ruling.outcome, Outcome::Deny { reason } if reason.contains("stop"));
            prop_assert!(denied, "{:?}", ruling.outcome);
        }
    }
}
