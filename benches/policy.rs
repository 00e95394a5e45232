//! Policy evaluation speed on generated 10 / 100 / 1000-rule policies and a realistic mix of
//! requests (target: p50 <= 1 µs per evaluation at 100 rules).
//!
//! `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`
//!
//! Each iteration evaluates the next request of a fixed mix, so the reported time is the
//! average over the mix. Cedar on an equivalent rule set is measured by the peer benchmark in
//! `crates/bench-peers`.

use std::hint::black_box;

use agent_handoff::policy::Policy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "support/requests.rs"]
mod request_mix;
use request_mix::requests;

/// A policy of exactly `n` rules over `n / 10` services (at least 2), in six realistic
/// shapes, plus two rules that apply across services.
fn policy_text(n: usize) -> String {
    let services = (n / 10).max(2);
    let mut text = String::from(
        "version = \"bench\"\n\n[default]\nreview = { approvals = 1, groups = [\"oncall\"], deadline = \"30m\", approval_ttl = \"15m\" }\n",
    );
    let globals = [
        "[[rule]]\nid = \"exports\"\nwhen = { kind = \"*.*.export\", sensitivity_at_least = \"confidential\" }\nthen.review = { approvals = 1, groups = [\"security\"], deadline = \"2h\", approval_ttl = \"30m\" }\n",
        "[[rule]]\nid = \"regulated-prod\"\nwhen = { environment = \"production\", sensitivity_at_least = \"regulated\" }\nthen.review = { approvals = 1, groups = [\"security\"], deadline = \"2h\", approval_ttl = \"30m\" }\n",
    ];
    for rule in globals.iter().take(n) {
        text.push('\n');
        text.push_str(rule);
    }
    for i in 0..n.saturating_sub(globals.len()) {
        let s = i % services;
        let shape = (i / services) % 6;
        let round = i / (services * 6);
        let id = format!("r{i:05}");
        let body = match shape {
            0 => format!(
                "when = {{ kind = [\"svc{s}.*.read\", \"svc{s}.read\"], environment = [\"development\"], reversibility = [\"reversible\"] }}\nthen.allow = {{ grant_ttl = \"{}m\" }}",
                5 + round
            ),
            1 => format!(
                "when = {{ kind = [\"svc{s}.table.drop\", \"svc{s}.*.truncate\"], environment = [\"production\"] }}\nthen.review = {{ approvals = 2, groups = [\"dba\"], deadline = \"1h\", approval_ttl = \"30m\" }}"
            ),
            2 => format!(
                "when = {{ kind = \"svc{s}.payment.*\", impact_at_least = {{ USD = \"{}\", EUR = \"9000\" }} }}\nthen.deny = {{ reason = \"large payments go through treasury\" }}",
                10_000 + round * 1000
            ),
            3 => format!(
                "when = {{ kind = \"svc{s}.**\", sensitivity_at_least = \"confidential\" }}\nthen.review = {{ approvals = 1, groups = [\"privacy\"], deadline = \"4h\", approval_ttl = \"1h\" }}"
            ),
            4 => format!(
                "when = {{ kind = \"svc{s}.deploy\", attributes = {{ team = [\"payments\", \"ledger\"], risk = {{ at_least = {} }} }} }}\nthen.review = {{ approvals = 1, groups = [\"release\"], deadline = \"1h\", approval_ttl = \"1h\", veto = false }}",
                5 + round % 5
            ),
            _ => format!(
                "when = {{ kind = \"svc{s}.*.write\", confidence_below = 0.7 }}\nthen.review = {{ approvals = 1, groups = [\"oncall\"], deadline = \"30m\", approval_ttl = \"15m\" }}"
            ),
        };
        text.push_str(&format!("\n[[rule]]\nid = \"{id}\"\n{body}\n"));
    }
    text
}

fn bench_evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let policy = Policy::from_toml(&policy_text(n)).unwrap();
        assert_eq!(policy.rules_len(), n);
        let requests = requests((n / 10).max(2));
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("evaluate", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % requests.len();
                black_box(policy.evaluate(black_box(&requests[i])))
            })
        });
    }
    let text = policy_text(100);
    group.bench_function("load_toml/100", |b| {
        b.iter(|| black_box(Policy::from_toml(black_box(&text)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_evaluate);
criterion_main!(benches);
