//! Policy documents: load (TOML or JSON) → compile → evaluate a few fixed requests.
//!
//! Input: the document text (lossy UTF-8), no mode byte, so the seeds are plain policy files.
//!
//! Properties:
//!
//! - nothing panics;
//! - a refusal is a non-empty list of typed [`PolicyError`]s in document order (lines never
//!   decrease), at most [`limits::MAX_REPORTED_PROBLEMS`], without repeats; each one's line,
//!   when given, lies inside the text; TOML problems always name a line, and so do JSON
//!   problems other than syntax errors;
//! - a loaded policy carries the SHA-256 of the exact text; every ruling names that policy,
//!   lists its rules sorted by id without repeats, is deterministic, equals the default when
//!   no rule took part and is at least as strict as the default when the default took part,
//!   and stays within the documented bounds (approvals 1–16 from 1–16 groups, deadlines and
//!   ttls within their limits);
//! - **no unreviewed high-risk allow**: unless the document opts in with
//!   `allow_unreviewed_high_risk = true`, a production or irreversible action is never
//!   allowed without review;
//! - TOML and JSON are one schema: a TOML document that loads, converted value for value to
//!   JSON, loads too and rules the same on every request.

use agent_handoff::action::{ActionRequest, Environment, Reversibility};
use agent_handoff::policy::{
    limits, Outcome, Policy, PolicyEngine, PolicyError, PolicyErrors, Ruling,
};
use sha2::{Digest as _, Sha256};

/// The requests every loaded policy rules on: worst case, a development read, payments in two
/// currencies with attributes, a custom environment, zero amounts and confidences.
const REQUESTS: [&str; 6] = [
    r#"{"kind": "db.table.drop", "idempotency_key": "fuzz-req-1"}"#,
    r#"{"kind": "db.read", "idempotency_key": "fuzz-req-2", "environment": "development",
        "reversibility": "reversible", "sensitivity": "public", "confidence": 0.99,
        "impact": {"amount": "1", "unit": "rows"}}"#,
    r#"{"kind": "payment.send", "idempotency_key": "fuzz-req-3", "environment": "production",
        "reversibility": "compensable", "sensitivity": "confidential", "confidence": 0.5,
        "impact": {"amount": "4200.50", "unit": "USD"},
        "attributes": {"team": "payments", "risk": 7, "tier": "gold", "vip": true}}"#,
    r#"{"kind": "payment.send.batch", "idempotency_key": "fuzz-req-4", "environment": "staging",
        "reversibility": "irreversible", "impact": {"amount": "20000", "unit": "EUR"},
        "attributes": {"risk": "high", "team": ["a", "b"]}}"#,
    r#"{"kind": "a", "idempotency_key": "fuzz-req-5", "environment": "sandbox-1",
        "reversibility": "reversible", "sensitivity": "internal", "confidence": 1}"#,
    r#"{"kind": "deploy.service.restart", "idempotency_key": "fuzz-req-6",
        "environment": "development", "reversibility": "compensable", "sensitivity": "internal",
        "impact": {"amount": "0", "unit": "USD"}, "confidence": 0, "attributes": {"risk": 0}}"#,
];

fn requests() -> Vec<ActionRequest> {
    REQUESTS
        .iter()
        .map(|r| ActionRequest::from_json(r).expect("valid fixed request"))
        .collect()
}

/// Runs the check on one fuzzer input, read as TOML.
pub fn check_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let loaded = Policy::from_toml(&text);
    check_loaded(&text, &loaded, true);
    if let Ok(policy) = &loaded {
        check_same_as_json(&text, policy);
    }
}

/// Runs the check on one fuzzer input, read as JSON.
pub fn check_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_loaded(&text, &Policy::from_json(&text), false);
}

fn check_loaded(text: &str, loaded: &Result<Policy, PolicyErrors>, toml: bool) {
    let policy = match loaded {
        Ok(policy) => policy,
        Err(errors) => {
            let all = errors.as_slice();
            assert!(!all.is_empty(), "a refusal without a problem");
            assert!(all.len() <= limits::MAX_REPORTED_PROBLEMS);
            assert_eq!(errors.first(), &all[0]);
            let lines: Vec<usize> = all.iter().map(|e| e.line().unwrap_or(0)).collect();
            assert!(
                lines.windows(2).all(|w| w[0] <= w[1]),
                "problems not in document order: {errors}"
            );
            for (i, e) in all.iter().enumerate() {
                assert!(!all[..i].contains(e), "problem reported twice: {e:?}");
                check_error(text, e, toml);
            }
            return;
        }
    };
    let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    assert_eq!(
        policy.hash().0,
        hash,
        "the policy hash is not SHA-256 of the text"
    );
    assert_eq!(policy.policy_ref().hash, policy.hash());
    assert!(policy.rules_len() <= limits::MAX_RULES);
    check_outcome_bounds(policy.default_outcome());
    for request in requests() {
        let ruling = policy.evaluate(&request);
        assert_eq!(
            policy.evaluate(&request),
            ruling,
            "evaluation is not deterministic"
        );
        assert_eq!(PolicyEngine::evaluate(policy, &request), ruling);
        check_ruling(policy, &request, &ruling);
    }
}

fn check_error(text: &str, e: &PolicyError, toml: bool) {
    let lines = text.split('\n').count();
    if let Some(line) = e.line() {
        assert!(
            (1..=lines).contains(&line),
            "{e}: line {line} outside 1..={lines}"
        );
    }
    let must_have_line = toml || !matches!(e, PolicyError::Syntax { .. });
    assert!(
        !must_have_line || e.line().is_some(),
        "refusal without a line: {e:?}"
    );
    assert!(!e.message().is_empty(), "refusal without a message: {e:?}");
    assert!(e.to_string().contains(e.message()));
}

fn check_ruling(policy: &Policy, request: &ActionRequest, ruling: &Ruling) {
    assert_eq!(ruling.policy.version, policy.version());
    assert_eq!(ruling.policy.hash, policy.hash());
    let ids: Vec<&str> = ruling.matched.iter().map(|m| m.rule.as_str()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "matched rules not sorted by id without repeats: {ids:?}"
    );
    if ruling.matched.is_empty() {
        assert_eq!(&ruling.outcome, policy.default_outcome());
    }
    if ruling.decided_by_default() {
        assert!(
            ruling
                .outcome
                .is_at_least_as_strict_as(policy.default_outcome()),
            "the default took part but the ruling is looser: {ruling:?}"
        );
    }
    check_outcome_bounds(&ruling.outcome);
    let high_risk = *request.environment() == Environment::Production
        || request.reversibility() == Reversibility::Irreversible;
    if high_risk && !policy.allows_unreviewed_high_risk() {
        assert!(
            !matches!(ruling.outcome, Outcome::Allow { .. }),
            "a high-risk action was allowed without review and without the opt-in: {ruling:?}"
        );
    }
}

fn check_outcome_bounds(outcome: &Outcome) {
    match outcome {
        Outcome::Allow { grant_ttl } => {
            assert!((limits::MIN_GRANT_TTL..=limits::MAX_GRANT_TTL).contains(grant_ttl))
        }
        Outcome::Review(plan) => {
            assert!(
                !plan.requirements.is_empty(),
                "a review nobody has to approve"
            );
            assert!((limits::MIN_DEADLINE..=limits::MAX_DEADLINE).contains(&plan.deadline));
            assert!(
                (limits::MIN_APPROVAL_TTL..=limits::MAX_APPROVAL_TTL).contains(&plan.approval_ttl)
            );
            for req in &plan.requirements {
                assert!((limits::MIN_APPROVALS..=limits::MAX_APPROVALS).contains(&req.approvals));
                assert!(
                    (1..=limits::MAX_GROUPS).contains(&req.groups.len()),
                    "{req:?}"
                );
            }
        }
        Outcome::Deny { .. } => {}
    }
}

/// The TOML document as JSON, value for value, loads and rules the same.
fn check_same_as_json(text: &str, policy: &Policy) {
    let table: toml::Table = toml::from_str(text).expect("a loaded TOML document is TOML");
    let json = serde_json::to_string(&table).expect("TOML values serialise as JSON");
    let from_json = Policy::from_json(&json)
        .unwrap_or_else(|e| panic!("the same document in JSON is refused: {e}\n{json}"));
    assert_eq!(from_json.version(), policy.version());
    assert_eq!(from_json.rules_len(), policy.rules_len());
    assert_eq!(from_json.default_outcome(), policy.default_outcome());
    assert_eq!(
        from_json.allows_unreviewed_high_risk(),
        policy.allows_unreviewed_high_risk()
    );
    for request in requests() {
        let a = policy.evaluate(&request);
        let b = from_json.evaluate(&request);
        assert_eq!(a.outcome, b.outcome, "TOML and JSON rule differently");
        assert_eq!(a.matched, b.matched, "TOML and JSON rule differently");
    }
}
