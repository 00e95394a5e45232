//! agent-handoff's policy engine and cedar-policy on the same 50 rules and the same requests,
//! in one run. Prints the ratio of medians at the end.
//!
//! `cd crates/bench-peers && cargo bench -- --warm-up-time 1 --measurement-time 3`
//!
//! - `ours/evaluate`: `Policy::evaluate` → a full `Ruling` (outcome, every matched rule with
//!   reasons, policy version and hash).
//! - `cedar/is_authorized`: `Authorizer::is_authorized` on a prebuilt `Request`, plus reading
//!   the satisfied policies (the measurement REFERENCE.md quotes, ~52 µs at 50 policies).
//! - `cedar/end_to_end`: what a Cedar adapter behind our `PolicyEngine` trait would do per
//!   action: build the context and request from the `ActionRequest`, authorize, read the
//!   satisfied policies.

use std::hint::black_box;
use std::path::PathBuf;

use agent_handoff::policy::Policy;
use bench_peers::{requests, rules, to_toml, CedarEngine};
use criterion::{BenchmarkId, Criterion};

const RULES: usize = 50;
const GROUP: &str = "peers-50-rules";

fn setup() -> (
    Policy,
    CedarEngine,
    Vec<agent_handoff::action::ActionRequest>,
) {
    let specs = rules(RULES);
    let ours = Policy::from_toml(&to_toml(&specs)).expect("our rendering loads");
    let cedar = CedarEngine::new(&specs).expect("the cedar rendering parses");
    assert_eq!(ours.rules_len(), RULES);
    let mix = requests((RULES / 10).max(2));
    // The two engines must agree on every request before their speed means anything.
    for action in &mix {
        let ruling = ours.evaluate(action);
        let mut our_ids: Vec<String> = ruling.matched.iter().map(|m| m.rule.to_string()).collect();
        our_ids.sort();
        let request = cedar.request(action).expect("cedar request");
        assert_eq!(
            cedar.errors(&request),
            0,
            "cedar evaluation errors for {}",
            action.kind().as_str()
        );
        let (cedar_ids, severity) = cedar.matched(&request);
        assert_eq!(
            our_ids,
            cedar_ids,
            "matched rules differ for {}",
            action.kind().as_str()
        );
        assert_eq!(
            ruling.outcome.severity(),
            severity,
            "outcome differs for {}",
            action.kind().as_str()
        );
    }
    (ours, cedar, mix)
}

fn bench(c: &mut Criterion) {
    let (ours, cedar, mix) = setup();
    let prebuilt: Vec<_> = mix
        .iter()
        .map(|a| cedar.request(a).expect("cedar request"))
        .collect();
    let mut group = c.benchmark_group(GROUP);

    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("ours", "evaluate"), |b| {
        b.iter(|| {
            i = (i + 1) % mix.len();
            black_box(ours.evaluate(black_box(&mix[i])))
        })
    });
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("cedar", "is_authorized"), |b| {
        b.iter(|| {
            i = (i + 1) % prebuilt.len();
            black_box(cedar.matched(black_box(&prebuilt[i])))
        })
    });
    let mut i = 0usize;
    group.bench_function(BenchmarkId::new("cedar", "end_to_end"), |b| {
        b.iter(|| {
            i = (i + 1) % mix.len();
            let request = cedar.request(black_box(&mix[i])).expect("cedar request");
            black_box(cedar.matched(&request))
        })
    });
    group.finish();
}

/// The median estimate (ns) criterion saved for one benchmark of this run.
fn median_ns(function: &str, parameter: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = target
        .join("criterion")
        .join(GROUP)
        .join(function)
        .join(parameter)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    if let (Some(ours), Some(cedar), Some(e2e)) = (
        median_ns("ours", "evaluate"),
        median_ns("cedar", "is_authorized"),
        median_ns("cedar", "end_to_end"),
    ) {
        println!();
        println!("medians at {RULES} rules: ours {ours:.0} ns, cedar is_authorized {cedar:.0} ns, cedar end-to-end {e2e:.0} ns");
        println!(
            "ours is {:.1}x faster than cedar is_authorized, {:.1}x faster than cedar end-to-end",
            cedar / ours,
            e2e / ours
        );
    }
}
