//! Validation and compilation of a [`RawPolicy`] into the form the evaluator runs.
//!
//! Everything that can be decided once is decided here: globs are split, names parsed into
//! enums, amounts and durations parsed, rules sorted by id (so matches come out in id order
//! with no sorting at evaluation time) and indexed by the first segment of their kind globs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::document::{
    OneOrMany, RawAttribute, RawNumber, RawOutcome, RawPolicy, RawReview, RawRule, RawScalar,
    RawWhen,
};
use super::duration;
use super::error::{Problem, ProblemKind, Problems};
use super::glob::KindGlob;
use super::limits::*;
use super::locate::FieldPath;
use super::ruling::{Outcome, PolicyRef, ReviewPlan, ReviewRequirement};
use crate::action::{Amount, Environment, Reversibility, Sensitivity};
use crate::id::{GroupName, RuleId};

/// The id reserved for the document's default outcome in explanations.
pub(crate) const DEFAULT_RULE_ID: &str = "default";

/// Impact thresholds: unit → the least amount, sorted by unit.
pub(crate) type Thresholds = Box<[(Box<str>, Amount)]>;

/// First kind segment → candidate rule indices (ascending).
pub(crate) type KindIndex = HashMap<Box<str>, Box<[u32]>>;

/// A validated, compiled policy.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) policy: PolicyRef,
    pub(crate) allow_unreviewed_high_risk: bool,
    pub(crate) default: Outcome,
    /// Sorted by id.
    pub(crate) rules: Box<[Rule]>,
    /// First kind segment → the candidate rules for kinds starting with it (ascending indices).
    pub(crate) by_first: KindIndex,
    /// Candidates for kinds whose first segment has no bucket: rules without a kind condition
    /// or with a glob starting with a wildcard.
    pub(crate) others: Box<[u32]>,
}

/// One compiled rule: every `Some` condition must hold.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) id: RuleId,
    pub(crate) kinds: Option<Box<[KindGlob]>>,
    pub(crate) environments: Option<Box<[Environment]>>,
    pub(crate) sensitivity_at_least: Option<Sensitivity>,
    /// Sorted by unit.
    pub(crate) impact_at_least: Option<Thresholds>,
    pub(crate) reversibility: Option<Box<[Reversibility]>>,
    pub(crate) confidence_below: Option<f64>,
    pub(crate) attributes: Box<[(Box<str>, AttributeTest)]>,
    pub(crate) outcome: Outcome,
    /// Reason texts prepared at load time, so explaining a match costs one copy each.
    pub(crate) reasons: Prepared,
}

/// Reason texts (or their request-independent parts) for a rule's conditions.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Parallel to `kinds`: "` matches `glob`" (the reason is "kind `" + kind + this).
    pub(crate) kind_suffix: Box<[Box<str>]>,
    /// Parallel to `environments`: the whole reason when the request has that environment.
    pub(crate) environment: Box<[Box<str>]>,
    /// Indexed by the request's sensitivity (`Sensitivity as usize`): the whole reason.
    pub(crate) sensitivity: Box<[Box<str>]>,
    /// Parallel to `reversibility`: the whole reason.
    pub(crate) reversibility: Box<[Box<str>]>,
}

/// "`a`" for one value, "one of `a`, `b`" for more.
pub(crate) fn listed<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let items: Vec<S> = items.collect();
    let mut out = String::new();
    if items.len() > 1 {
        out.push_str("one of ");
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('`');
        out.push_str(item.as_ref());
        out.push('`');
    }
    out
}

fn prepare(
    kinds: Option<&[KindGlob]>,
    environments: Option<&[Environment]>,
    sensitivity_at_least: Option<Sensitivity>,
    reversibility: Option<&[Reversibility]>,
) -> Prepared {
    let kind_suffix = kinds
        .unwrap_or_default()
        .iter()
        .map(|g| format!("` matches `{}`", g.as_str()).into())
        .collect();
    let environment = environments
        .map(|envs| {
            let list = listed(envs.iter().map(Environment::as_str));
            envs.iter()
                .map(|e| format!("environment `{e}` is {list}").into())
                .collect()
        })
        .unwrap_or_default();
    let sensitivity = sensitivity_at_least
        .map(|min| {
            ALL_SENSITIVITIES
                .iter()
                .map(|s| {
                    format!(
                        "sensitivity `{}` is at least `{}`",
                        s.as_str(),
                        min.as_str()
                    )
                    .into()
                })
                .collect()
        })
        .unwrap_or_default();
    let reversibility = reversibility
        .map(|revs| {
            let list = listed(revs.iter().map(|r| r.as_str()));
            revs.iter()
                .map(|r| format!("reversibility `{}` is {list}", r.as_str()).into())
                .collect()
        })
        .unwrap_or_default();
    Prepared {
        kind_suffix,
        environment,
        sensitivity,
        reversibility,
    }
}

/// Every sensitivity, in order (`Sensitivity as usize` indexes this).
const ALL_SENSITIVITIES: [Sensitivity; 4] = [
    Sensitivity::Public,
    Sensitivity::Internal,
    Sensitivity::Confidential,
    Sensitivity::Regulated,
];

/// The test on one custom attribute.
#[derive(Debug)]
pub(crate) enum AttributeTest {
    /// Equal to one of these (one value: equality).
    OneOf(Scalars),
    /// A number within the bounds (`at_least <= x < below`).
    Range {
        at_least: Option<Number>,
        below: Option<Number>,
    },
}

/// A homogeneous list of scalars.
#[derive(Debug)]
pub(crate) enum Scalars {
    Str(Box<[Box<str>]>),
    Int(Box<[i64]>),
    Bool(Box<[bool]>),
}

/// A threshold, kept exact when written as an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            #[allow(clippy::cast_precision_loss)] // thresholds beyond 2^53 compare approximately
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl From<RawNumber> for Number {
    fn from(n: RawNumber) -> Self {
        match n {
            RawNumber::Int(i) => Number::Int(i),
            RawNumber::Float(f) => Number::Float(f),
        }
    }
}

/// A check of one field: its value, or the one problem it has.
type Result<T> = std::result::Result<T, Box<Problem>>;

fn problem(kind: ProblemKind, path: &FieldPath, message: impl Into<String>) -> Box<Problem> {
    Box::new(Problem::new(kind, path.clone(), message))
}

/// Validates and compiles a document, reporting every problem it finds (see [`Problems`]).
pub(crate) fn compile(
    raw: RawPolicy,
    policy: PolicyRef,
) -> std::result::Result<Compiled, Problems> {
    let mut problems = Problems::default();
    let opt_in = raw.allow_unreviewed_high_risk;
    let default = compile_top(&raw.version, raw.default, opt_in, &mut problems);
    let total = raw.rule.len();
    let mut rules = compile_rules(
        raw.rule.into_iter().enumerate(),
        Vec::new(),
        total,
        Some(opt_in),
        &mut problems,
    );
    let default = match default {
        Some(default) if problems.is_empty() => default,
        _ => return Err(problems),
    };
    rules.sort_by(|a: &Rule, b: &Rule| a.id.cmp(&b.id));
    let (by_first, others) = index(&rules);
    Ok(Compiled {
        policy,
        allow_unreviewed_high_risk: opt_in,
        default,
        rules: rules.into(),
        by_first,
        others,
    })
}

/// Checks the parts of a document that was read part by part because it did not read whole:
/// the top level (`None` if it did not read), each rule that did, with its position among the
/// `total` rules, and the ids (with positions) of the rules that did not. Adds their problems
/// to `problems`.
pub(crate) fn check_parts(
    top: Option<RawPolicy<serde::de::IgnoredAny>>,
    rules: Vec<(usize, RawRule)>,
    unread_ids: Vec<(usize, String)>,
    total: usize,
    problems: &mut Problems,
) {
    // Without the top level, the opt-in is unknown: high-risk allows are not judged.
    let opt_in = top.as_ref().map(|t| t.allow_unreviewed_high_risk);
    if let Some(top) = top {
        compile_top(
            &top.version,
            top.default,
            top.allow_unreviewed_high_risk,
            problems,
        );
    }
    compile_rules(rules.into_iter(), unread_ids, total, opt_in, problems);
}

/// The document-level fields: the version and the default outcome (`None` if it has a
/// problem).
fn compile_top(
    version: &str,
    default: RawOutcome,
    opt_in: bool,
    problems: &mut Problems,
) -> Option<Outcome> {
    let root = FieldPath::root();
    problems.check(check_text(
        version,
        &root.key("version"),
        "version",
        MAX_VERSION_BYTES,
    ));
    let default_path = root.key("default");
    let default = compile_outcome(default, &default_path, problems)?;
    if matches!(default, Outcome::Allow { .. }) && !opt_in {
        problems.add(
            ProblemKind::HighRiskAllow,
            &default_path.key("allow"),
            "an `allow` default lets every unmatched action through, including production and irreversible ones; set `allow_unreviewed_high_risk = true` to mean it",
        );
        return None;
    }
    Some(default)
}

/// The rules (each with its position among `total`), compiled; problems go to `problems`, and
/// a rule with a problem is left out. `opt_in: None` skips the high-risk allow check.
fn compile_rules(
    rules: impl Iterator<Item = (usize, RawRule)>,
    taken: Vec<(usize, String)>,
    total: usize,
    opt_in: Option<bool>,
    problems: &mut Problems,
) -> Vec<Rule> {
    let rules_path = FieldPath::root().key("rule");
    if total > MAX_RULES {
        problems.add(
            ProblemKind::OutOfBounds,
            &rules_path,
            format!("{total} rules; at most {MAX_RULES} are allowed"),
        );
        return Vec::new();
    }
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(total);
    for (i, id) in taken {
        seen.entry(id).or_insert(i);
    }
    let mut compiled = Vec::with_capacity(total);
    for (i, raw_rule) in rules {
        let path = rules_path.index(i);
        let id_text = raw_rule.id.clone();
        let first = problems.len();
        let rule = compile_rule(raw_rule, &path, opt_in, &mut seen, i, problems);
        // Name the rule in its problems when its id is readable.
        if RuleId::new(id_text.as_str()).is_ok() {
            problems.name_rule_since(first, &id_text);
        }
        compiled.extend(rule);
    }
    compiled
}

fn check_text(text: &str, path: &FieldPath, what: &str, max: usize) -> Result<()> {
    if text.trim().is_empty() {
        return Err(problem(
            ProblemKind::InvalidValue,
            path,
            format!("{what} must not be empty"),
        ));
    }
    if text.len() > max {
        return Err(problem(
            ProblemKind::OutOfBounds,
            path,
            format!("{what} is {} bytes; at most {max} are allowed", text.len()),
        ));
    }
    // Descriptions and reasons may span lines; a version is one line.
    let multiline = what != "version";
    if text
        .chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t')))
    {
        return Err(problem(
            ProblemKind::InvalidValue,
            path,
            format!("{what} contains a control character"),
        ));
    }
    Ok(())
}

fn compile_rule(
    raw: RawRule,
    path: &FieldPath,
    opt_in: Option<bool>,
    seen: &mut HashMap<String, usize>,
    position: usize,
    problems: &mut Problems,
) -> Option<Rule> {
    let first = problems.len();
    let id_path = path.key("id");
    let id = problems.check(
        RuleId::new(raw.id.as_str())
            .map_err(|e| problem(ProblemKind::InvalidValue, &id_path, e.to_string())),
    );
    if let Some(id) = &id {
        if id.as_str() == DEFAULT_RULE_ID {
            let mut p = problem(
                ProblemKind::DuplicateRuleId,
                &id_path,
                "the id `default` is reserved for the document's default outcome",
            );
            p.rule = Some(raw.id.clone());
            problems.push(*p);
        } else if let Some(first) = seen.get(id.as_str()).filter(|&&first| first < position) {
            let mut p = problem(
                ProblemKind::DuplicateRuleId,
                &id_path,
                format!("rule id `{id}` is already used by `rule[{first}]`"),
            );
            p.rule = Some(raw.id.clone());
            problems.push(*p);
        } else {
            seen.insert(raw.id.clone(), position);
        }
    }
    if let Some(description) = &raw.description {
        problems.check(check_text(
            description,
            &path.key("description"),
            "description",
            MAX_TEXT_BYTES,
        ));
    }
    let when = path.key("when");
    let RawWhen {
        kind,
        environment,
        sensitivity_at_least,
        impact_at_least,
        reversibility,
        confidence_below,
        attributes,
    } = raw.when;

    let kinds = kind.map(|list| {
        parse_list(&list, &when.key("kind"), "kind", problems, |text, p| {
            KindGlob::parse(text).map_err(|m| {
                problem(
                    ProblemKind::InvalidGlob,
                    p,
                    format!("kind glob `{}`: {m}", truncate(text)),
                )
            })
        })
    });
    let environments = environment.map(|list| {
        parse_list(
            &list,
            &when.key("environment"),
            "environment",
            problems,
            |text, p| {
                Environment::parse(text).map_err(|m| problem(ProblemKind::InvalidValue, p, m))
            },
        )
    });
    let sensitivity_at_least = sensitivity_at_least
        .map(|text| problems.check(parse_sensitivity(&text, &when.key("sensitivity_at_least"))));
    let reversibility = reversibility.map(|list| {
        parse_list(
            &list,
            &when.key("reversibility"),
            "reversibility",
            problems,
            parse_reversibility,
        )
    });
    let impact_at_least = impact_at_least.map(|map| {
        let p = when.key("impact_at_least");
        if map.0.is_empty() {
            problems.add(
                ProblemKind::InvalidValue,
                &p,
                "`impact_at_least` must name at least one unit",
            );
            return None;
        }
        if map.0.len() > MAX_LIST_LEN {
            problems.add(
                ProblemKind::OutOfBounds,
                &p,
                format!("more than {MAX_LIST_LEN} units"),
            );
            return None;
        }
        let mut thresholds = Vec::with_capacity(map.0.len());
        let mut ok = true;
        for (unit, amount) in map.0 {
            ok &= problems
                .check(check_name(&unit, &p.key(&unit), "impact unit"))
                .is_some();
            thresholds.push((Box::<str>::from(unit), amount));
        }
        // BTreeMap iteration order: already sorted by unit.
        ok.then(|| thresholds.into_boxed_slice())
    });
    let confidence_below = confidence_below.map(|c| {
        if c > 0.0 && c <= 1.0 {
            Some(c)
        } else {
            problems.add(
                ProblemKind::OutOfBounds,
                &when.key("confidence_below"),
                format!("confidence_below must be greater than 0 and at most 1, got {c}"),
            );
            None
        }
    });
    let attributes = match attributes {
        None => Some(Box::default()),
        Some(map) => {
            let p = when.key("attributes");
            if map.0.len() > MAX_LIST_LEN {
                problems.add(
                    ProblemKind::OutOfBounds,
                    &p,
                    format!("more than {MAX_LIST_LEN} attributes"),
                );
                None
            } else {
                let mut tests = Vec::with_capacity(map.0.len());
                let mut ok = true;
                for (name, raw_test) in map.0 {
                    let ap = p.key(&name);
                    ok &= problems
                        .check(check_name(&name, &ap, "attribute name"))
                        .is_some();
                    match problems.check(compile_attribute(raw_test, &ap)) {
                        Some(test) => tests.push((Box::<str>::from(name), test)),
                        None => ok = false,
                    }
                }
                ok.then(|| tests.into_boxed_slice())
            }
        }
    };

    let then = path.key("then");
    let outcome = compile_outcome(raw.then, &then, problems);
    // Judged only when the conditions it depends on are known (a condition with a problem
    // would otherwise read as "matches anything") and the opt-in is.
    if let (Some(Outcome::Allow { .. }), Some(false), Some(environments), Some(reversibility)) = (
        &outcome,
        opt_in,
        known(&environments),
        known(&reversibility),
    ) {
        let reaches_production =
            environments.is_none_or(|envs| envs.contains(&Environment::Production));
        let reaches_irreversible =
            reversibility.is_none_or(|r| r.contains(&Reversibility::Irreversible));
        if reaches_production || reaches_irreversible {
            let what = match (reaches_production, reaches_irreversible) {
                (true, true) => "production and irreversible",
                (true, false) => "production",
                _ => "irreversible",
            };
            problems.add(
                ProblemKind::HighRiskAllow,
                &then.key("allow"),
                format!(
                    "this `allow` rule can match {what} actions without review; limit `when.environment` (leaving out `production`) and `when.reversibility` (leaving out `irreversible`), or set `allow_unreviewed_high_risk = true` to mean it"
                ),
            );
        }
    }
    if problems.len() > first {
        return None;
    }
    // No problem was recorded, so every field that was given compiled.
    let kinds = kinds.map(Option::unwrap_or_default);
    let environments = environments.map(Option::unwrap_or_default);
    let sensitivity_at_least = sensitivity_at_least.flatten();
    let reversibility = reversibility.map(Option::unwrap_or_default);
    let impact_at_least = impact_at_least.flatten();
    let confidence_below = confidence_below.flatten();
    let reasons = prepare(
        kinds.as_deref(),
        environments.as_deref(),
        sensitivity_at_least,
        reversibility.as_deref(),
    );
    Some(Rule {
        reasons,
        id: id?,
        kinds,
        environments,
        sensitivity_at_least,
        impact_at_least,
        reversibility,
        confidence_below,
        attributes: attributes?,
        outcome: outcome?,
    })
}

/// A list condition as far as it is known: `Some(None)` when absent (it matches anything),
/// `Some(Some(list))` when given, `None` when given with a problem.
fn known<T>(condition: &Option<Option<Box<[T]>>>) -> Option<Option<&[T]>> {
    match condition {
        None => Some(None),
        Some(Some(list)) => Some(Some(list)),
        Some(None) => None,
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

fn check_name(name: &str, path: &FieldPath, what: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(problem(
            ProblemKind::InvalidValue,
            path,
            format!(
                "{what} `{}` must be 1 to {MAX_NAME_BYTES} bytes without control characters",
                truncate(name)
            ),
        ));
    }
    Ok(())
}

/// Parses each item of a non-empty, bounded list, naming `field[i]` (or `field` for a single
/// value) on error; every item's problem is recorded. `None` if there was one.
fn parse_list<T>(
    list: &OneOrMany,
    path: &FieldPath,
    field: &str,
    problems: &mut Problems,
    mut parse: impl FnMut(&str, &FieldPath) -> Result<T>,
) -> Option<Box<[T]>> {
    if list.items.is_empty() {
        problems.add(
            ProblemKind::InvalidValue,
            path,
            format!("`{field}` must list at least one value (an empty list would never match); leave it out to match any"),
        );
        return None;
    }
    if list.items.len() > MAX_LIST_LEN {
        problems.add(
            ProblemKind::OutOfBounds,
            path,
            format!("`{field}` lists more than {MAX_LIST_LEN} values"),
        );
        return None;
    }
    let mut out = Vec::with_capacity(list.items.len());
    let mut ok = true;
    for (i, item) in list.items.iter().enumerate() {
        let p = if list.list {
            path.index(i)
        } else {
            path.clone()
        };
        match problems.check(parse(item, &p)) {
            Some(v) => out.push(v),
            None => ok = false,
        }
    }
    ok.then(|| out.into_boxed_slice())
}

fn parse_sensitivity(text: &str, path: &FieldPath) -> Result<Sensitivity> {
    Ok(match text {
        "public" => Sensitivity::Public,
        "internal" => Sensitivity::Internal,
        "confidential" => Sensitivity::Confidential,
        "regulated" => Sensitivity::Regulated,
        other => {
            return Err(problem(
                ProblemKind::InvalidValue,
                path,
                format!(
                "sensitivity `{}` is not one of `public`, `internal`, `confidential`, `regulated`",
                truncate(other)
            ),
            ))
        }
    })
}

fn parse_reversibility(text: &str, path: &FieldPath) -> Result<Reversibility> {
    Ok(match text {
        "reversible" => Reversibility::Reversible,
        "compensable" => Reversibility::Compensable,
        "irreversible" => Reversibility::Irreversible,
        other => {
            return Err(problem(
                ProblemKind::InvalidValue,
                path,
                format!(
                    "reversibility `{}` is not one of `reversible`, `compensable`, `irreversible`",
                    truncate(other)
                ),
            ))
        }
    })
}

fn compile_attribute(raw: RawAttribute, path: &FieldPath) -> Result<AttributeTest> {
    match raw {
        RawAttribute::Equals(value) => scalars(vec![value], path, false),
        RawAttribute::OneOf(values) => scalars(values, path, true),
        RawAttribute::Range { at_least, below } => {
            if at_least.is_none() && below.is_none() {
                return Err(problem(
                    ProblemKind::InvalidValue,
                    path,
                    "a numeric attribute test needs `at_least`, `below` or both",
                ));
            }
            if let (Some(lo), Some(hi)) = (at_least, below) {
                let (lo, hi) = (Number::from(lo), Number::from(hi));
                let empty = match (lo, hi) {
                    (Number::Int(a), Number::Int(b)) => a >= b,
                    _ => lo.as_f64() >= hi.as_f64(),
                };
                if empty {
                    return Err(problem(
                        ProblemKind::InvalidValue,
                        path,
                        "`at_least` must be less than `below` (otherwise nothing matches)",
                    ));
                }
            }
            Ok(AttributeTest::Range {
                at_least: at_least.map(Number::from),
                below: below.map(Number::from),
            })
        }
    }
}

fn scalars(values: Vec<RawScalar>, path: &FieldPath, list: bool) -> Result<AttributeTest> {
    let Some(first) = values.first() else {
        return Err(problem(
            ProblemKind::InvalidValue,
            path,
            "a membership list must not be empty (it would never match)",
        ));
    };
    if values.len() > MAX_LIST_LEN {
        return Err(problem(
            ProblemKind::OutOfBounds,
            path,
            format!("more than {MAX_LIST_LEN} values"),
        ));
    }
    let expected = first.type_name();
    let item_path = |i: usize| if list { path.index(i) } else { path.clone() };
    for (i, v) in values.iter().enumerate() {
        if v.type_name() != expected {
            return Err(problem(
                ProblemKind::InvalidValue,
                &item_path(i),
                format!(
                    "a membership list holds one type; this is a {} in a list of {expected}s",
                    v.type_name()
                ),
            ));
        }
        if let RawScalar::Str(s) = v {
            if s.len() > MAX_NAME_BYTES {
                return Err(problem(
                    ProblemKind::OutOfBounds,
                    &item_path(i),
                    format!("attribute value longer than {MAX_NAME_BYTES} bytes"),
                ));
            }
        }
    }
    let set = match first {
        RawScalar::Str(_) => Scalars::Str(
            values
                .into_iter()
                .filter_map(|v| match v {
                    RawScalar::Str(s) => Some(s.into_boxed_str()),
                    _ => None,
                })
                .collect(),
        ),
        RawScalar::Int(_) => Scalars::Int(
            values
                .into_iter()
                .filter_map(|v| match v {
                    RawScalar::Int(i) => Some(i),
                    _ => None,
                })
                .collect(),
        ),
        RawScalar::Bool(_) => Scalars::Bool(
            values
                .into_iter()
                .filter_map(|v| match v {
                    RawScalar::Bool(b) => Some(b),
                    _ => None,
                })
                .collect(),
        ),
    };
    Ok(AttributeTest::OneOf(set))
}

fn compile_outcome(raw: RawOutcome, path: &FieldPath, problems: &mut Problems) -> Option<Outcome> {
    let given = [
        raw.allow.is_some(),
        raw.review.is_some(),
        raw.deny.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        problems.add(
            ProblemKind::InvalidValue,
            path,
            format!("an outcome has exactly one of `allow`, `review` or `deny`; {given} given"),
        );
        return None;
    }
    if let Some(allow) = raw.allow {
        let p = path.key("allow").key("grant_ttl");
        let grant_ttl = problems.check(parse_duration(
            &allow.grant_ttl,
            &p,
            "grant_ttl",
            MIN_GRANT_TTL,
            MAX_GRANT_TTL,
        ))?;
        return Some(Outcome::Allow { grant_ttl });
    }
    if let Some(review) = raw.review {
        return compile_review(review, &path.key("review"), problems).map(Outcome::Review);
    }
    let deny = raw.deny?;
    problems.check(check_text(
        &deny.reason,
        &path.key("deny").key("reason"),
        "reason",
        MAX_TEXT_BYTES,
    ))?;
    Some(Outcome::Deny {
        reason: deny.reason,
    })
}

fn compile_review(raw: RawReview, path: &FieldPath, problems: &mut Problems) -> Option<ReviewPlan> {
    let first = problems.len();
    if !(MIN_APPROVALS..=MAX_APPROVALS).contains(&raw.approvals) {
        problems.add(
            ProblemKind::OutOfBounds,
            &path.key("approvals"),
            format!(
                "approvals must be {MIN_APPROVALS} to {MAX_APPROVALS}, got {}",
                raw.approvals
            ),
        );
    }
    let groups_path = path.key("groups");
    let groups: Option<BTreeSet<GroupName>> = if raw.groups.items.len() > MAX_GROUPS {
        problems.add(
            ProblemKind::OutOfBounds,
            &groups_path,
            format!("at most {MAX_GROUPS} groups per requirement"),
        );
        None
    } else {
        parse_list(&raw.groups, &groups_path, "groups", problems, |text, p| {
            GroupName::new(text).map_err(|e| problem(ProblemKind::InvalidValue, p, e.to_string()))
        })
        .map(|groups| groups.into_vec().into_iter().collect())
    };
    let deadline = problems.check(parse_duration(
        &raw.deadline,
        &path.key("deadline"),
        "deadline",
        MIN_DEADLINE,
        MAX_DEADLINE,
    ));
    let approval_ttl = problems.check(parse_duration(
        &raw.approval_ttl,
        &path.key("approval_ttl"),
        "approval_ttl",
        MIN_APPROVAL_TTL,
        MAX_APPROVAL_TTL,
    ));
    if problems.len() > first {
        return None;
    }
    Some(ReviewPlan {
        requirements: [ReviewRequirement {
            groups: groups?,
            approvals: raw.approvals,
        }]
        .into(),
        deadline: deadline?,
        approval_ttl: approval_ttl?,
        veto: raw.veto.unwrap_or(true),
    })
}

fn parse_duration(
    text: &str,
    path: &FieldPath,
    what: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration> {
    let d = duration::parse(text).map_err(|m| problem(ProblemKind::InvalidValue, path, m))?;
    if d < min || d > max {
        return Err(problem(
            ProblemKind::OutOfBounds,
            path,
            format!(
                "{what} `{text}` is outside {}..={}",
                duration::format(min),
                duration::format(max)
            ),
        ));
    }
    Ok(d)
}

/// Builds the first-segment index over rules sorted by id.
fn index(rules: &[Rule]) -> (KindIndex, Box<[u32]>) {
    let mut buckets: HashMap<Box<str>, Vec<u32>> = HashMap::new();
    let mut any: Vec<u32> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        // MAX_RULES keeps indices far below u32::MAX.
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let firsts: Option<HashSet<&str>> = rule
            .kinds
            .as_ref()
            .and_then(|globs| globs.iter().map(KindGlob::first_literal).collect());
        match firsts {
            None => any.push(i),
            Some(firsts) => {
                for first in firsts {
                    buckets.entry(first.into()).or_default().push(i);
                }
            }
        }
    }
    let by_first = buckets
        .into_iter()
        .map(|(first, mut bucket)| {
            bucket.extend_from_slice(&any);
            bucket.sort_unstable();
            bucket.dedup();
            (first, bucket.into_boxed_slice())
        })
        .collect();
    (by_first, any.into_boxed_slice())
}
