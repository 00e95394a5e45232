//! agent-handoff's policy engine and cedar-policy on the same 50 rules and the same requests,
//! in one run. Goal: ours ≥ 20× faster at 50 rules.
//!
//! `cd crates/bench-peers && cargo bench -- --warm-up-time 1 --measurement-time 3`
//!
//! Criterion runs first (its figures are means over the request mix). Then, for the headline,
//! every evaluation of each contender is timed on its own, the mix in rotation, in 10
//! interleaved slices per contender (so a burst of other work hits all of them alike), 3 s per
//! contender in all (1 s with `AGENT_HANDOFF_BENCH_QUICK=1`); the p50 is the median of those
//! samples less the timer's own cost. The ratio is cedar's p50 over ours. Two `REPORT|` lines
//! (format in `benches/support/headline.rs` of the main crate): against `is_authorized` on a
//! prebuilt request (the goal's line), and against Cedar end to end.
//!
//! - `ours/evaluate`: `Policy::evaluate` → a full `Ruling` (outcome, every matched rule with
//!   reasons, policy version and hash).
//! - `cedar/is_authorized`: `Authorizer::is_authorized` on a prebuilt `Request`, plus reading
//!   the satisfied policies (the measurement REFERENCE.md quotes, ~52 µs at 50 policies).
//! - `cedar/end_to_end`: what a Cedar adapter behind our `PolicyEngine` trait would do per
//!   action: build the context and request from the `ActionRequest`, authorize, read the
//!   satisfied policies.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_handoff::policy::Policy;
use bench_peers::{requests, rules, to_toml, CedarEngine};
use criterion::{BenchmarkId, Criterion};

#[path = "../../../benches/support/headline.rs"]
mod headline;
use headline::{nanos, quantile, report, Goal};

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

/// The cedar-policy version this crate was built with, from its lock file.
fn cedar_version() -> &'static str {
    let lock = include_str!("../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("name = \"cedar-policy\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("?", |v| v.trim_matches('"'))
}

/// Each contender timed call by call (`f(i)` for the i-th call), in `slices` interleaved
/// slices of `budget / slices` each; every contender's samples (ns) sorted.
fn interleaved_samples(
    contenders: &mut [&mut dyn FnMut(usize)],
    slices: u32,
    budget: Duration,
) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new(); contenders.len()];
    for (k, f) in contenders.iter_mut().enumerate() {
        // Warm-up.
        for i in 0..1000 {
            f(i);
        }
        out[k].reserve(1 << 20);
    }
    for slice in 0..slices {
        for k in 0..contenders.len() {
            let k = if slice % 2 == 0 {
                k
            } else {
                contenders.len() - 1 - k
            };
            let until = Instant::now() + budget / slices;
            let samples = &mut out[k];
            let f = &mut contenders[k];
            loop {
                for _ in 0..64 {
                    let i = samples.len();
                    let start = Instant::now();
                    f(i);
                    samples.push(start.elapsed().as_nanos() as u64);
                }
                if Instant::now() >= until {
                    break;
                }
            }
        }
    }
    for s in &mut out {
        s.sort_unstable();
    }
    out
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    // Under `cargo test --benches` criterion only smoke-tests; skip the timed headline there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let budget = if headline::quick() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let (ours, cedar, mix) = setup();
    let prebuilt: Vec<_> = mix
        .iter()
        .map(|a| cedar.request(a).expect("cedar request"))
        .collect();
    let n = mix.len();
    let samples = interleaved_samples(
        &mut [
            &mut |i| {
                black_box(&mix[i % n]);
            },
            &mut |i| {
                black_box(ours.evaluate(black_box(&mix[i % n])));
            },
            &mut |i| {
                black_box(cedar.matched(black_box(&prebuilt[i % n])));
            },
            &mut |i| {
                let request = cedar
                    .request(black_box(&mix[i % n]))
                    .expect("cedar request");
                black_box(cedar.matched(&request));
            },
        ],
        10,
        budget,
    );
    let timer = quantile(&samples[0], 0.5);
    let p50 = |s: &[u64]| quantile(s, 0.5).saturating_sub(timer).max(1) as f64;
    let (ours_p50, cedar_p50, e2e_p50) = (p50(&samples[1]), p50(&samples[2]), p50(&samples[3]));
    let version = cedar_version();
    println!();
    println!(
        "p50 per evaluation at {RULES} rules, net of the timer ({}): ours {} ({} samples), cedar-policy {version} is_authorized {} ({} samples), end to end {} ({} samples)",
        nanos(timer as f64),
        nanos(ours_p50),
        samples[1].len(),
        nanos(cedar_p50),
        samples[2].len(),
        nanos(e2e_p50),
        samples[3].len(),
    );
    println!(
        "ours is {:.1}x faster than cedar is_authorized, {:.1}x faster than cedar end to end (p50 over p50)",
        cedar_p50 / ours_p50,
        e2e_p50 / ours_p50
    );
    report(
        "policy vs cedar",
        &format!("{RULES} rules, p50 (cedar: is_authorized, request prebuilt)"),
        &nanos(ours_p50),
        Some(&format!("cedar-policy {version} {}", nanos(cedar_p50))),
        Some(cedar_p50 / ours_p50),
        Some(Goal {
            text: "≥ 20×",
            met: cedar_p50 / ours_p50 >= 20.0,
        }),
    );
    report(
        "policy vs cedar",
        &format!("{RULES} rules, p50 (cedar end to end: request built from the action)"),
        &nanos(ours_p50),
        Some(&format!("cedar-policy {version} {}", nanos(e2e_p50))),
        Some(e2e_p50 / ours_p50),
        None,
    );
}
