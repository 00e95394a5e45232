//! Policy evaluation speed on generated 10 / 100 / 1000-rule policies and a realistic mix of
//! requests (goal: p50 ≤ 1 µs per evaluation at 100 rules).
//!
//! `cargo bench --bench policy -- --warm-up-time 1 --measurement-time 3`
//!
//! Criterion runs first: each of its iterations evaluates the next request of a fixed mix, so
//! its figures are means over the mix. Then, for the headline, every evaluation is timed on
//! its own (the mix in rotation, for 2 s per policy, 0.5 s with `AGENT_HANDOFF_BENCH_QUICK=1`)
//! and the p50 is the median of those samples, less the timer's own cost (the median of as
//! many empty timed regions, printed beside it). The bench ends with one `REPORT|` line per
//! policy size (see `benches/support/headline.rs`). Cedar on an equivalent rule set is
//! measured by the peer benchmark in `crates/bench-peers`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_handoff::action::ActionRequest;
use agent_handoff::policy::Policy;
use criterion::{BenchmarkId, Criterion, Throughput};

#[path = "support/requests.rs"]
mod request_mix;
use request_mix::requests;

#[path = "support/headline.rs"]
mod headline;
use headline::{nanos, quantile, report, Goal};

/// Policy sizes benched.
const SIZES: [usize; 3] = [10, 100, 1000];
/// At most this many timed evaluations per policy in the headline sampling.
const MAX_SAMPLES: usize = 2_000_000;

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
    for n in SIZES {
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

/// Times `f` on its own `MAX_SAMPLES` times or for `budget`, whichever ends first, after a
/// tenth of `budget` of warm-up. Returns the sorted samples in nanoseconds.
fn timed_samples(budget: Duration, mut f: impl FnMut(usize)) -> Vec<u64> {
    let warm_until = Instant::now() + budget / 10;
    let mut i = 0usize;
    while Instant::now() < warm_until {
        f(i);
        i += 1;
    }
    let mut samples = Vec::with_capacity(MAX_SAMPLES);
    let until = Instant::now() + budget;
    while samples.len() < MAX_SAMPLES && (samples.len() % 1024 != 0 || Instant::now() < until) {
        let start = Instant::now();
        f(samples.len());
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    samples
}

/// Per-evaluation latency of `policy` over the request mix, evaluations timed one by one.
struct Latency {
    /// Raw quantiles (ns), timer cost included.
    p50: u64,
    p90: u64,
    p99: u64,
    /// Mean over the samples (ns), timer cost included.
    mean: f64,
    /// Median cost of an empty timed region (ns).
    timer: u64,
    samples: usize,
}

fn latency(policy: &Policy, requests: &[ActionRequest], budget: Duration) -> Latency {
    let timer = timed_samples(budget / 4, |i| {
        black_box(&requests[i % requests.len()]);
    });
    let samples = timed_samples(budget, |i| {
        black_box(policy.evaluate(black_box(&requests[i % requests.len()])));
    });
    Latency {
        p50: quantile(&samples, 0.5),
        p90: quantile(&samples, 0.9),
        p99: quantile(&samples, 0.99),
        mean: samples.iter().sum::<u64>() as f64 / samples.len() as f64,
        timer: quantile(&timer, 0.5),
        samples: samples.len(),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_evaluate(&mut c);
    c.final_summary();

    // Under `cargo test --benches` criterion only smoke-tests; skip the timed headline there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let budget = if headline::quick() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(2)
    };
    let mut lines = Vec::new();
    for n in SIZES {
        let policy = Policy::from_toml(&policy_text(n)).unwrap();
        let requests = requests((n / 10).max(2));
        let l = latency(&policy, &requests, budget);
        let net = l.p50.saturating_sub(l.timer) as f64;
        println!(
            "policy evaluate, {n} rules: p50 {} net of the timer (raw p50 {}, p90 {}, p99 {}, mean {}; timer {}; {} evaluations timed one by one over {} requests)",
            nanos(net),
            nanos(l.p50 as f64),
            nanos(l.p90 as f64),
            nanos(l.p99 as f64),
            nanos(l.mean),
            nanos(l.timer as f64),
            l.samples,
            requests.len(),
        );
        lines.push((n, net));
    }
    for (n, net) in lines {
        let goal = (n == 100).then_some(Goal {
            text: "≤ 1 µs",
            met: net <= 1000.0,
        });
        report(
            "policy",
            &format!("evaluate, {} rules, p50", thousands(n)),
            &nanos(net),
            None,
            None,
            goal,
        );
    }
}

/// `1 000` for 1000.
fn thousands(n: usize) -> String {
    if n >= 1000 {
        format!("{} {:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}
