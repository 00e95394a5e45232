//! Audit chain verification throughput, next to bare SHA-256 over the same bytes in the same
//! run. Goal: at least 1 M events/s for ~600-byte events.
//!
//! `cargo bench --bench audit` runs criterion, then times `verify` and the bare SHA-256 pass
//! in 21 interleaved rounds (the order alternating from round to round) and prints the fastest
//! and median rates of both, and one `REPORT|` line (see `benches/support/headline.rs`): the
//! fastest rounds and their ratio. Fastest, because other work on a shared machine only ever
//! slows a round down (the store benches headline their rates the same way); on a loaded
//! machine the medians fall with the share of CPU the bench gets.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_handoff::audit::{kind, verify, Actor, AuditRecord, Chain, RawEvent};
use agent_handoff::{AgentId, TicketId, Timestamp};
use criterion::{Criterion, Throughput};
use sha2::{Digest as _, Sha256};

#[path = "support/headline.rs"]
mod headline;
use headline::{per_second, quantile, report, Goal};

const EVENTS: usize = 100_000;
const TARGET_BYTES: usize = 600;

fn record(i: u64, pad: usize) -> AuditRecord {
    AuditRecord::new(
        Some(TicketId::from_uuid(uuid::Uuid::from_u128(
            0x0189_0a5d_ac96_774b_bcce_b302_0000_0000 + u128::from(i),
        ))),
        Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        kind::VOTED,
        Actor::Agent(AgentId::new("billing-agent").unwrap()),
        serde_json::json!({
            "ruling": {"outcome": "review", "policy_hash": "9f2c4e1a7b3d5f60"},
            "digest": "4d73a72e7b1475461acdca94a8f20ad4736abf9110b4f0f104c70b39424ebc22",
            "note": "x".repeat(pad),
        }),
    )
}

/// 100k chained events whose canonical bytes are about 600 bytes each.
fn build() -> Vec<RawEvent> {
    let base = {
        let mut probe = Chain::new();
        probe.append(record(1, 0)).unwrap().bytes().len()
    };
    let pad = TARGET_BYTES.saturating_sub(base);
    let mut chain = Chain::new();
    (1..=EVENTS as u64)
        .map(|i| chain.append(record(i, pad)).unwrap().into())
        .collect()
}

fn sha256_each(events: &[RawEvent]) -> u8 {
    let mut acc = 0u8;
    for event in events {
        acc ^= Sha256::digest(&event.bytes)[0];
    }
    acc
}

fn benches(c: &mut Criterion, events: &[RawEvent]) {
    let mut group = c.benchmark_group("audit_verify_100k");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("verify", |b| {
        b.iter(|| verify(black_box(events)).unwrap());
    });
    group.bench_function("sha256_baseline", |b| {
        b.iter(|| sha256_each(black_box(events)));
    });
    group.finish();

    let mut group = c.benchmark_group("audit_append_10k");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(10);
    let pad = TARGET_BYTES - 200;
    let records: Vec<AuditRecord> = (1..=10_000).map(|i| record(i, pad)).collect();
    group.bench_function("append", |b| {
        b.iter(|| {
            let mut chain = Chain::new();
            for r in &records {
                black_box(chain.append(r.clone()).unwrap());
            }
            chain.head()
        });
    });
    group.finish();
}

/// One timing of `f`, in events per second.
fn rate(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

/// `rounds` timings of each contender, back to back, the order alternating from round to
/// round; each contender's rates sorted.
fn interleaved(rounds: usize, contenders: &mut [&mut dyn FnMut()]) -> Vec<Vec<f64>> {
    let mut rates = vec![Vec::with_capacity(rounds); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let k = if round % 2 == 0 {
                k
            } else {
                contenders.len() - 1 - k
            };
            rates[k].push(rate(&mut *contenders[k]));
        }
    }
    for r in &mut rates {
        r.sort_by(f64::total_cmp);
    }
    rates
}

fn main() {
    let events = build();
    let mean = events.iter().map(|e| e.bytes.len()).sum::<usize>() / events.len();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &events);
    c.final_summary();

    // Under `cargo test --benches` criterion only smoke-tests; skip the timed summary there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = 21;
    let rates = interleaved(
        rounds,
        &mut [
            &mut || {
                black_box(verify(black_box(&events)).unwrap());
            },
            &mut || {
                black_box(sha256_each(black_box(&events)));
            },
        ],
    );
    let (verify_rates, sha_rates) = (&rates[0], &rates[1]);
    let fastest = |r: &[f64]| r.last().copied().unwrap_or(0.0);
    let (verify_rate, sha_rate) = (fastest(verify_rates), fastest(sha_rates));
    println!(
        "audit verify: fastest {} (median {}) of {rounds} rounds of {EVENTS} events, mean {mean} bytes; bare SHA-256 over the same bytes: fastest {} (median {}); verify / SHA-256 = {:.2} (fastest over fastest; medians {:.2})",
        per_second(verify_rate),
        per_second(quantile(verify_rates, 0.5)),
        per_second(sha_rate),
        per_second(quantile(sha_rates, 0.5)),
        verify_rate / sha_rate,
        quantile(verify_rates, 0.5) / quantile(sha_rates, 0.5),
    );
    report(
        "audit",
        &format!("verify, events/s ({mean}-byte events, fastest of {rounds} rounds)"),
        &per_second(verify_rate),
        Some(&format!("raw SHA-256 {}", per_second(sha_rate))),
        Some(verify_rate / sha_rate),
        Some(Goal {
            text: "≥ 1 M/s",
            met: verify_rate >= 1e6,
        }),
    );
}
