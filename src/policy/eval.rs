//! Evaluation of a compiled policy against one action request.
//!
//! Each condition is True, False or Unknown (cannot be evaluated). The hot path decides a
//! rule with no allocation; reasons are only written for rules that contribute to the ruling.

use std::fmt::Write as _;

use serde_json::Value;

use super::compile::{listed, AttributeTest, Compiled, Number, Rule, Scalars};
use super::glob::SplitKind;
use super::ruling::{MatchedRule, Outcome, Ruling};
use crate::action::ActionRequest;

/// How one rule (or one condition) relates to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every condition holds.
    Match,
    /// Some condition does not hold.
    NoMatch,
    /// No condition fails, but at least one could not be evaluated.
    Unknown,
}

/// Hits collected on the stack before spilling to the heap.
const INLINE_HITS: usize = 16;

impl Compiled {
    /// The candidate rules for a kind (ascending indices, so ascending ids).
    fn candidates(&self, first: &str) -> &[u32] {
        self.by_first.get(first).map_or(&self.others, |b| b)
    }

    pub(crate) fn evaluate(&self, request: &ActionRequest) -> Ruling {
        let kind = request.kind().as_str();
        let split = SplitKind::new(kind);
        let parts = split.parts();
        let mut inline = [0u32; INLINE_HITS];
        let mut spilled: Vec<u32> = Vec::new();
        let mut hits = 0usize;
        let mut definite = false;
        let mut max_severity = 0u8;
        for &i in self.candidates(parts.first().copied().unwrap_or(kind)) {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            let verdict = rule.check(request, parts);
            if verdict == Verdict::NoMatch {
                continue;
            }
            definite |= verdict == Verdict::Match;
            max_severity = max_severity.max(rule.outcome.severity());
            if hits < INLINE_HITS {
                inline[hits] = i;
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&inline);
                }
                spilled.push(i);
            }
            hits += 1;
        }
        let hit_list: &[u32] = if hits <= INLINE_HITS {
            &inline[..hits]
        } else {
            &spilled
        };

        // The default joins when no rule definitively matched (Unknown rules only tighten).
        let default_joins = !definite;
        if default_joins {
            max_severity = max_severity.max(self.default.severity());
        }
        // Joining is monotone and lower severities are absorbed, so only the outcomes at the
        // highest severity need to be joined; in id order, so deny reasons read the same way
        // whatever the rule order in the document.
        let mut outcome: Option<Outcome> = None;
        let mut join = |o: &Outcome| {
            if o.severity() == max_severity {
                outcome = Some(match outcome.take() {
                    None => o.clone(),
                    Some(acc) => acc.join(o.clone()),
                });
            }
        };
        if default_joins {
            join(&self.default);
        }
        let mut matched = Vec::with_capacity(hit_list.len());
        for &i in hit_list {
            if let Some(rule) = self.rules.get(i as usize) {
                join(&rule.outcome);
                matched.push(rule.explain(request, kind, parts));
            }
        }
        Ruling {
            outcome: outcome.unwrap_or_else(|| self.default.clone()),
            matched,
            policy: self.policy.clone(),
        }
    }
}

impl Rule {
    fn condition_count(&self) -> usize {
        usize::from(self.kinds.is_some())
            + usize::from(self.environments.is_some())
            + usize::from(self.sensitivity_at_least.is_some())
            + usize::from(self.reversibility.is_some())
            + usize::from(self.confidence_below.is_some())
            + usize::from(self.impact_at_least.is_some())
            + self.attributes.len()
    }

    /// The fast check: no allocation, stops at the first failing condition.
    #[inline]
    pub(crate) fn check(&self, request: &ActionRequest, parts: &[&str]) -> Verdict {
        if let Some(globs) = &self.kinds {
            if !globs.iter().any(|g| g.matches_segments(parts)) {
                return Verdict::NoMatch;
            }
        }
        if let Some(envs) = &self.environments {
            if !envs.contains(request.environment()) {
                return Verdict::NoMatch;
            }
        }
        if let Some(min) = self.sensitivity_at_least {
            if request.sensitivity() < min {
                return Verdict::NoMatch;
            }
        }
        if let Some(allowed) = &self.reversibility {
            if !allowed.contains(&request.reversibility()) {
                return Verdict::NoMatch;
            }
        }
        if let Some(limit) = self.confidence_below {
            // Absent confidence counts as zero, which is below every limit (limits are > 0).
            if let Some(c) = request.confidence() {
                if c.get() >= limit {
                    return Verdict::NoMatch;
                }
            }
        }
        let mut unknown = false;
        if let Some(thresholds) = &self.impact_at_least {
            // Absent impact counts as unbounded: at least every threshold.
            if let Some(impact) = request.impact() {
                match thresholds.iter().find(|(unit, _)| **unit == *impact.unit) {
                    Some((_, min)) => {
                        if impact.amount < *min {
                            return Verdict::NoMatch;
                        }
                    }
                    None => unknown = true,
                }
            }
        }
        for (name, test) in self.attributes.iter() {
            match request.attributes().get(&**name).map(|v| test.check(v)) {
                Some(Verdict::NoMatch) => return Verdict::NoMatch,
                Some(Verdict::Match) => {}
                None | Some(Verdict::Unknown) => unknown = true,
            }
        }
        if unknown {
            Verdict::Unknown
        } else {
            Verdict::Match
        }
    }

    /// Why the rule contributes: one reason per condition that holds, and what could not be
    /// evaluated. Only called for rules whose [`check`](Self::check) is not `NoMatch`.
    fn explain(&self, request: &ActionRequest, kind: &str, parts: &[&str]) -> MatchedRule {
        let mut reasons = Vec::with_capacity(self.condition_count());
        let mut unknown: Vec<String> = Vec::new();
        let prepared = &self.reasons;
        if let Some(globs) = &self.kinds {
            let suffix = globs
                .iter()
                .position(|g| g.matches_segments(parts))
                .and_then(|i| prepared.kind_suffix.get(i));
            if let Some(suffix) = suffix {
                let mut reason = String::with_capacity(6 + kind.len() + suffix.len());
                reason.push_str("kind `");
                reason.push_str(kind);
                reason.push_str(suffix);
                reasons.push(reason);
            }
        }
        if let Some(envs) = &self.environments {
            let env = request.environment();
            if let Some(r) = envs
                .iter()
                .position(|e| e == env)
                .and_then(|i| prepared.environment.get(i))
            {
                reasons.push(String::from(&**r));
            }
        }
        if self.sensitivity_at_least.is_some() {
            if let Some(r) = prepared.sensitivity.get(request.sensitivity() as usize) {
                reasons.push(String::from(&**r));
            }
        }
        if let Some(allowed) = &self.reversibility {
            let rev = request.reversibility();
            if let Some(r) = allowed
                .iter()
                .position(|a| *a == rev)
                .and_then(|i| prepared.reversibility.get(i))
            {
                reasons.push(String::from(&**r));
            }
        }
        if let Some(limit) = self.confidence_below {
            reasons.push(match request.confidence() {
                Some(c) => format!("confidence {} is below {limit}", c.get()),
                None => format!("confidence not stated, counted as 0 (below {limit})"),
            });
        }
        if let Some(thresholds) = &self.impact_at_least {
            match request.impact() {
                None => reasons.push(format!(
                    "impact not stated, counted as unbounded (at least {})",
                    listed_thresholds(thresholds)
                )),
                Some(impact) => match thresholds.iter().find(|(unit, _)| **unit == *impact.unit) {
                    Some((unit, min)) => reasons.push(format!(
                        "impact {} {unit} is at least {min} {unit}",
                        impact.amount
                    )),
                    None => unknown.push(format!(
                        "impact unit `{}` has no threshold in this rule (it has {})",
                        short(&impact.unit),
                        listed_thresholds(thresholds)
                    )),
                },
            }
        }
        for (name, test) in self.attributes.iter() {
            match request.attributes().get(&**name) {
                None => unknown.push(format!("attribute `{}` is absent", short(name))),
                Some(value) => match test.explain(value) {
                    Ok(reason) => reasons.push(format!("attribute `{}` {reason}", short(name))),
                    Err(why) => unknown.push(format!("attribute `{}` {why}", short(name))),
                },
            }
        }
        if reasons.is_empty() && unknown.is_empty() {
            reasons.push("the rule has no conditions: it matches every action".to_owned());
        }
        let fail_closed = (!unknown.is_empty()).then(|| {
            let mut text = String::from("could not evaluate: ");
            text.push_str(&unknown.join("; "));
            text.push_str("; the rule is assumed to match (fail closed)");
            text
        });
        MatchedRule {
            rule: self.id.clone(),
            reasons,
            fail_closed,
        }
    }
}

impl AttributeTest {
    /// Whether `value` passes: `Unknown` when the value's type cannot be compared.
    #[inline]
    fn check(&self, value: &Value) -> Verdict {
        let holds = match (self, value) {
            (AttributeTest::OneOf(Scalars::Str(set)), Value::String(s)) => {
                set.iter().any(|x| **x == **s)
            }
            (AttributeTest::OneOf(Scalars::Bool(set)), Value::Bool(b)) => set.contains(b),
            (AttributeTest::OneOf(Scalars::Int(set)), Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    set.contains(&i)
                } else if n.is_u64() {
                    false // above i64::MAX: equals no listed integer
                } else {
                    #[allow(clippy::cast_precision_loss)]
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    #[allow(clippy::cast_precision_loss, clippy::float_cmp)]
                    set.iter().any(|&x| x as f64 == f)
                }
            }
            (AttributeTest::Range { at_least, below }, Value::Number(n)) => {
                at_least.is_none_or(|lo| compare(n, lo).is_ge())
                    && below.is_none_or(|hi| compare(n, hi).is_lt())
            }
            _ => return Verdict::Unknown,
        };
        if holds {
            Verdict::Match
        } else {
            Verdict::NoMatch
        }
    }

    /// The reason text after "attribute `name` ", or why it could not be evaluated.
    fn explain(&self, value: &Value) -> Result<String, String> {
        let shown = show_value(value);
        match (self, self.check(value)) {
            (_, Verdict::Unknown) => Err(match self {
                AttributeTest::Range { .. } => {
                    format!("is {shown}, not a number, so a numeric threshold cannot be evaluated")
                }
                AttributeTest::OneOf(set) => format!(
                    "is {shown}, which cannot be compared with {}",
                    set.describe()
                ),
            }),
            (AttributeTest::OneOf(set), _) => Ok(format!("{shown} is {}", set.describe())),
            (AttributeTest::Range { at_least, below }, _) => {
                let mut text = shown;
                if let Some(lo) = at_least {
                    let _ = write!(text, " is at least {}", show_number(*lo));
                }
                if let Some(hi) = below {
                    let _ = write!(
                        text,
                        "{} below {}",
                        if at_least.is_some() { " and" } else { " is" },
                        show_number(*hi)
                    );
                }
                Ok(text)
            }
        }
    }
}

/// Compares a JSON number with a threshold: exactly when both are integers.
fn compare(n: &serde_json::Number, threshold: Number) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match threshold {
        Number::Int(t) => {
            if let Some(i) = n.as_i64() {
                return i.cmp(&t);
            }
            if n.is_u64() {
                return Ordering::Greater; // above i64::MAX
            }
            n.as_f64()
                .and_then(|f| f.partial_cmp(&threshold.as_f64()))
                .unwrap_or(Ordering::Less)
        }
        Number::Float(t) => n
            .as_f64()
            .and_then(|f| f.partial_cmp(&t))
            .unwrap_or(Ordering::Less),
    }
}

impl Scalars {
    fn describe(&self) -> String {
        match self {
            Scalars::Str(v) => listed(v.iter().map(|s| format!("{:?}", short(s)))),
            Scalars::Int(v) => listed(v.iter().map(i64::to_string)),
            Scalars::Bool(v) => listed(v.iter().map(bool::to_string)),
        }
    }
}

fn listed_thresholds(thresholds: &[(Box<str>, crate::action::Amount)]) -> String {
    let mut out = String::new();
    for (i, (unit, min)) in thresholds.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        let _ = write!(out, "{min} {unit}");
    }
    out
}

/// At most 64 characters of request-controlled text in explanations.
fn short(text: &str) -> String {
    if text.chars().count() <= 64 {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(63).collect();
        s.push('…');
        s
    }
}

fn show_value(value: &Value) -> String {
    format!("`{}`", short(&value.to_string()))
}

fn show_number(n: Number) -> String {
    match n {
        Number::Int(i) => i.to_string(),
        Number::Float(f) => f.to_string(),
    }
}
