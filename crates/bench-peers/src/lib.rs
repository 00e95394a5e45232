//! One rule set and one request mix, rendered for agent-handoff's policy engine and for
//! cedar-policy, so the two can be benchmarked side by side (`benches/policy_vs_cedar.rs`).
//!
//! Rules are described once as [`RuleSpec`] and rendered to our TOML ([`to_toml`]) and to Cedar
//! policies ([`to_cedar`]), one `permit` per rule carrying `@id` and `@outcome` annotations.
//! Every policy is a `permit`, so Cedar's `reason()` lists every satisfied policy — the same
//! "all matching rules" our ruling lists. [`CedarEngine::matched`] and our ruling are checked
//! to agree on every request before anything is measured.
//!
//! Translation notes (all faithful on the request mix used here):
//! - kind globs become `like` patterns (Cedar's `*` also crosses dots; a trailing `.**`
//!   becomes `== "prefix" || like "prefix.*"`);
//! - amounts are integer cents and confidence integer per-mille (Cedar has no exact decimal
//!   of our range; integers are the cheapest thing for Cedar to compare);
//! - "absent impact = unbounded", "absent confidence = zero" and fail-closed on unknown units
//!   and absent attributes are written out with `has` and `if … then … else true`.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use agent_handoff::action::{ActionRequest, Amount};
use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request};
use serde_json::{json, Map, Value};

#[path = "../../../benches/support/requests.rs"]
mod request_mix;
pub use request_mix::requests;

/// An outcome, as both engines express it.
#[derive(Debug, Clone)]
pub enum OutcomeSpec {
    /// Allow for this many minutes.
    Allow(u32),
    /// Review by `approvals` of `group`.
    Review {
        /// How many.
        approvals: u32,
        /// Which group.
        group: &'static str,
    },
    /// Deny.
    Deny(&'static str),
}

impl OutcomeSpec {
    fn name(&self) -> &'static str {
        match self {
            OutcomeSpec::Allow(_) => "allow",
            OutcomeSpec::Review { .. } => "review",
            OutcomeSpec::Deny(_) => "deny",
        }
    }

    /// 0 allow, 1 review, 2 deny.
    pub fn severity(&self) -> u8 {
        match self {
            OutcomeSpec::Allow(_) => 0,
            OutcomeSpec::Review { .. } => 1,
            OutcomeSpec::Deny(_) => 2,
        }
    }
}

/// A test on a custom attribute.
#[derive(Debug, Clone)]
pub enum AttrSpec {
    /// One of these strings.
    OneOf(Vec<&'static str>),
    /// A number at least this.
    AtLeast(i64),
}

/// One rule, engine-neutral.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Rule id.
    pub id: String,
    /// Kind globs (empty: any kind).
    pub kinds: Vec<String>,
    /// Environments (None: any).
    pub environments: Option<Vec<&'static str>>,
    /// Sensitivity at least this level (0 public .. 3 regulated).
    pub sensitivity_at_least: Option<u8>,
    /// Impact at least, per unit, in whole units.
    pub impact_at_least: Option<Vec<(&'static str, u64)>>,
    /// Reversibilities (None: any).
    pub reversibility: Option<Vec<&'static str>>,
    /// Confidence below this, per mille.
    pub confidence_below_permille: Option<u32>,
    /// Custom attribute tests.
    pub attributes: Vec<(&'static str, AttrSpec)>,
    /// The outcome.
    pub outcome: OutcomeSpec,
}

/// `n` rules over `max(n / 10, 2)` services in six realistic shapes, plus two cross-service
/// rules (the same shapes as the main crate's `benches/policy.rs`).
pub fn rules(n: usize) -> Vec<RuleSpec> {
    let services = (n / 10).max(2);
    let mut out = vec![
        RuleSpec {
            id: "exports".into(),
            kinds: vec!["*.*.export".into()],
            sensitivity_at_least: Some(2),
            ..blank(OutcomeSpec::Review {
                approvals: 1,
                group: "security",
            })
        },
        RuleSpec {
            id: "regulated-prod".into(),
            environments: Some(vec!["production"]),
            sensitivity_at_least: Some(3),
            ..blank(OutcomeSpec::Review {
                approvals: 1,
                group: "security",
            })
        },
    ];
    out.truncate(n);
    for i in 0..n.saturating_sub(2) {
        let s = i % services;
        let shape = (i / services) % 6;
        let round = i / (services * 6);
        let id = format!("r{i:05}");
        let rule = match shape {
            0 => RuleSpec {
                kinds: vec![format!("svc{s}.*.read"), format!("svc{s}.read")],
                environments: Some(vec!["development"]),
                reversibility: Some(vec!["reversible"]),
                ..blank(OutcomeSpec::Allow(5 + u32::try_from(round).unwrap_or(0)))
            },
            1 => RuleSpec {
                kinds: vec![format!("svc{s}.table.drop"), format!("svc{s}.*.truncate")],
                environments: Some(vec!["production"]),
                ..blank(OutcomeSpec::Review {
                    approvals: 2,
                    group: "dba",
                })
            },
            2 => RuleSpec {
                kinds: vec![format!("svc{s}.payment.*")],
                impact_at_least: Some(vec![
                    ("EUR", 9000),
                    ("USD", 10_000 + u64::try_from(round).unwrap_or(0) * 1000),
                ]),
                ..blank(OutcomeSpec::Deny("large payments go through treasury"))
            },
            3 => RuleSpec {
                kinds: vec![format!("svc{s}.**")],
                sensitivity_at_least: Some(2),
                ..blank(OutcomeSpec::Review {
                    approvals: 1,
                    group: "privacy",
                })
            },
            4 => RuleSpec {
                kinds: vec![format!("svc{s}.deploy")],
                attributes: vec![
                    (
                        "risk",
                        AttrSpec::AtLeast(5 + i64::try_from(round % 5).unwrap_or(0)),
                    ),
                    ("team", AttrSpec::OneOf(vec!["payments", "ledger"])),
                ],
                ..blank(OutcomeSpec::Review {
                    approvals: 1,
                    group: "release",
                })
            },
            _ => RuleSpec {
                kinds: vec![format!("svc{s}.*.write")],
                confidence_below_permille: Some(700),
                ..blank(OutcomeSpec::Review {
                    approvals: 1,
                    group: "oncall",
                })
            },
        };
        out.push(RuleSpec { id, ..rule });
    }
    out
}

fn blank(outcome: OutcomeSpec) -> RuleSpec {
    RuleSpec {
        id: String::new(),
        kinds: Vec::new(),
        environments: None,
        sensitivity_at_least: None,
        impact_at_least: None,
        reversibility: None,
        confidence_below_permille: None,
        attributes: Vec::new(),
        outcome,
    }
}

const SENSITIVITIES: [&str; 4] = ["public", "internal", "confidential", "regulated"];

/// Our TOML document for the rules.
pub fn to_toml(rules: &[RuleSpec]) -> String {
    let mut text = String::from(
        "version = \"peers\"\n[default]\nreview = { approvals = 1, groups = [\"oncall\"], deadline = \"30m\", approval_ttl = \"15m\" }\n",
    );
    for r in rules {
        let mut when = Map::new();
        if !r.kinds.is_empty() {
            when.insert("kind".into(), json!(r.kinds));
        }
        if let Some(e) = &r.environments {
            when.insert("environment".into(), json!(e));
        }
        if let Some(s) = r.sensitivity_at_least {
            when.insert(
                "sensitivity_at_least".into(),
                json!(SENSITIVITIES[usize::from(s)]),
            );
        }
        if let Some(i) = &r.impact_at_least {
            let m: Map<String, Value> = i
                .iter()
                .map(|(u, a)| ((*u).to_owned(), json!(a.to_string())))
                .collect();
            when.insert("impact_at_least".into(), Value::Object(m));
        }
        if let Some(rv) = &r.reversibility {
            when.insert("reversibility".into(), json!(rv));
        }
        if let Some(c) = r.confidence_below_permille {
            when.insert("confidence_below".into(), json!(f64::from(c) / 1000.0));
        }
        if !r.attributes.is_empty() {
            let m: Map<String, Value> = r
                .attributes
                .iter()
                .map(|(n, a)| {
                    let v = match a {
                        AttrSpec::OneOf(v) => json!(v),
                        AttrSpec::AtLeast(x) => json!({ "at_least": x }),
                    };
                    ((*n).to_owned(), v)
                })
                .collect();
            when.insert("attributes".into(), Value::Object(m));
        }
        let then = match &r.outcome {
            OutcomeSpec::Allow(m) => format!("allow = {{ grant_ttl = \"{m}m\" }}"),
            OutcomeSpec::Review { approvals, group } => format!(
                "review = {{ approvals = {approvals}, groups = [\"{group}\"], deadline = \"1h\", approval_ttl = \"30m\" }}"
            ),
            OutcomeSpec::Deny(reason) => format!("deny = {{ reason = \"{reason}\" }}"),
        };
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"{}\"\nwhen = {}\nthen = {{ {then} }}\n",
            r.id,
            inline_toml(&Value::Object(when))
        );
    }
    text
}

fn inline_toml(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let body: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline_toml(v)))
                .collect();
            format!("{{ {} }}", body.join(", "))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(inline_toml).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

fn cedar_glob(glob: &str) -> String {
    match glob.strip_suffix(".**") {
        Some(prefix) => {
            format!("(context.kind == \"{prefix}\" || context.kind like \"{prefix}.*\")")
        }
        None => format!("context.kind like \"{glob}\""),
    }
}

fn cedar_set(field: &str, values: &[&str]) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("[{}].contains(context.{field})", list.join(", "))
}

/// The Cedar policies for the rules: one annotated `permit` each.
pub fn to_cedar(rules: &[RuleSpec]) -> String {
    let mut text = String::new();
    for r in rules {
        let mut conds: Vec<String> = Vec::new();
        if !r.kinds.is_empty() {
            let globs: Vec<String> = r.kinds.iter().map(|g| cedar_glob(g)).collect();
            conds.push(format!("({})", globs.join(" || ")));
        }
        if let Some(e) = &r.environments {
            conds.push(cedar_set("environment", e));
        }
        if let Some(s) = r.sensitivity_at_least {
            conds.push(format!("context.sensitivity >= {s}"));
        }
        if let Some(rv) = &r.reversibility {
            conds.push(cedar_set("reversibility", rv));
        }
        if let Some(c) = r.confidence_below_permille {
            conds.push(format!(
                "(if context has confidence then context.confidence < {c} else true)"
            ));
        }
        if let Some(thresholds) = &r.impact_at_least {
            let mut chain = String::from("true");
            for (unit, amount) in thresholds.iter().rev() {
                chain = format!(
                    "if context.impact.unit == \"{unit}\" then context.impact.amount >= {} else {chain}",
                    amount * 100
                );
            }
            conds.push(format!("(if context has impact then ({chain}) else true)"));
        }
        for (name, test) in &r.attributes {
            let check = match test {
                AttrSpec::OneOf(values) => cedar_set(&format!("attrs.{name}"), values),
                AttrSpec::AtLeast(x) => format!("context.attrs.{name} >= {x}"),
            };
            conds.push(format!(
                "(if context.attrs has {name} then {check} else true)"
            ));
        }
        let body = if conds.is_empty() {
            "true".to_owned()
        } else {
            conds.join(" && ")
        };
        let _ = write!(
            text,
            "@id(\"{}\")\n@outcome(\"{}\")\npermit(principal, action, resource) when {{\n  {body}\n}};\n\n",
            r.id,
            r.outcome.name()
        );
    }
    text
}

/// Whole cents of an amount (the bench's amounts have at most two decimals).
fn cents(amount: &Amount) -> i64 {
    let text = amount.to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = format!("{frac:0<2}");
    format!("{int}{}", &frac[..2]).parse().unwrap_or(i64::MAX)
}

/// Cedar's view of an action: the facts as a context record.
pub fn cedar_context(request: &ActionRequest) -> Value {
    let mut ctx = Map::new();
    ctx.insert("kind".into(), json!(request.kind().as_str()));
    ctx.insert("environment".into(), json!(request.environment().as_str()));
    ctx.insert("sensitivity".into(), json!(request.sensitivity() as u8));
    ctx.insert(
        "reversibility".into(),
        json!(request.reversibility().as_str()),
    );
    if let Some(impact) = request.impact() {
        ctx.insert(
            "impact".into(),
            json!({"unit": impact.unit, "amount": cents(&impact.amount)}),
        );
    }
    if let Some(c) = request.confidence() {
        // Per mille, rounded: 0.95 -> 950.
        let permille = (c.get() * 1000.0).round();
        ctx.insert("confidence".into(), json!(permille as i64));
    }
    ctx.insert(
        "attrs".into(),
        Value::Object(
            request
                .attributes()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    );
    Value::Object(ctx)
}

/// Cedar, wrapped the way a [`PolicyEngine`](agent_handoff::policy::PolicyEngine) adapter
/// would use it.
pub struct CedarEngine {
    policies: PolicySet,
    authorizer: Authorizer,
    entities: Entities,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
    /// Policy id → (rule id, outcome severity).
    rules: HashMap<PolicyId, (String, u8)>,
}

impl CedarEngine {
    /// Parses the Cedar rendering of `rules`.
    pub fn new(rules: &[RuleSpec]) -> Result<Self, String> {
        let policies = PolicySet::from_str(&to_cedar(rules)).map_err(|e| e.to_string())?;
        let mut map = HashMap::new();
        for policy in policies.policies() {
            let id = policy.annotation("id").unwrap_or_default().to_owned();
            let severity = match policy.annotation("outcome") {
                Some("deny") => 2,
                Some("review") => 1,
                _ => 0,
            };
            map.insert(policy.id().clone(), (id, severity));
        }
        let uid = |s: &str| EntityUid::from_str(s).map_err(|e| e.to_string());
        Ok(Self {
            policies,
            authorizer: Authorizer::new(),
            entities: Entities::empty(),
            principal: uid(r#"Agent::"bench""#)?,
            action: uid(r#"Action::"propose""#)?,
            resource: uid(r#"Action::"any""#)?,
            rules: map,
        })
    }

    /// A ready Cedar request for an action.
    pub fn request(&self, action: &ActionRequest) -> Result<Request, String> {
        let context =
            Context::from_json_value(cedar_context(action), None).map_err(|e| e.to_string())?;
        Request::new(
            self.principal.clone(),
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }

    /// `is_authorized`, then the matched rule ids (sorted) and the combined severity
    /// (2 deny / 1 review / 0 allow; the default review when nothing matched).
    pub fn matched(&self, request: &Request) -> (Vec<String>, u8) {
        let response = self
            .authorizer
            .is_authorized(request, &self.policies, &self.entities);
        let mut ids = Vec::new();
        let mut severity: Option<u8> = None;
        for policy in response.diagnostics().reason() {
            if let Some((id, s)) = self.rules.get(policy) {
                ids.push(id.clone());
                severity = Some(severity.map_or(*s, |x| x.max(*s)));
            }
        }
        ids.sort();
        (ids, severity.unwrap_or(1))
    }

    /// How many policy evaluation errors a request causes (should be none).
    pub fn errors(&self, request: &Request) -> usize {
        self.authorizer
            .is_authorized(request, &self.policies, &self.entities)
            .diagnostics()
            .errors()
            .count()
    }
}
