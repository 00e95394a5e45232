//! Audit chain verification throughput, next to bare SHA-256 over the same bytes in the same
//! run. Goal: at least 1 M events/s for ~600-byte events.
//!
//! `cargo bench --bench audit` runs criterion, then prints events/s for both and their ratio.

use std::hint::black_box;
use std::time::{Duration, Instant};

use agent_handoff::audit::{kind, verify, Actor, AuditRecord, Chain, RawEvent};
use agent_handoff::{AgentId, TicketId, Timestamp};
use criterion::{Criterion, Throughput};
use sha2::{Digest as _, Sha256};

const EVENTS: usize = 100_000;
const TARGET_BYTES: usize = 600;

fn record(i: u64, pad: usize) -> AuditRecord {
    AuditRecord {
        ticket: Some(TicketId::from_uuid(uuid::Uuid::from_u128(
            0x0189_0a5d_ac96_774b_bcce_b302_0000_0000 + u128::from(i),
        ))),
        at: Timestamp::from_unix_millis(1_700_000_000_000 + i as i64),
        kind: kind::VOTED.into(),
        actor: Actor::Agent(AgentId::new("billing-agent").unwrap()),
        data: serde_json::json!({
            "ruling": {"outcome": "review", "policy_hash": "9f2c4e1a7b3d5f60"},
            "digest": "4d73a72e7b1475461acdca94a8f20ad4736abf9110b4f0f104c70b39424ebc22",
            "note": "x".repeat(pad),
        }),
    }
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

/// Best of `rounds` timings of `f`, in events per second.
fn rate(rounds: usize, mut f: impl FnMut()) -> f64 {
    let best = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::MAX);
    EVENTS as f64 / best.as_secs_f64()
}

fn main() {
    let events = build();
    let mean = events.iter().map(|e| e.bytes.len()).sum::<usize>() / events.len();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &events);
    c.final_summary();

    // Under `cargo test --benches` criterion only smoke-tests; skip the timed summary there.
    if std::env::args().any(|a| a == "--bench") {
        let verify_rate = rate(5, || {
            black_box(verify(black_box(&events)).unwrap());
        });
        let sha_rate = rate(5, || {
            black_box(sha256_each(black_box(&events)));
        });
        println!(
            "audit verify: {:.2} M events/s ({} events, mean {} bytes); bare SHA-256 over the same bytes: {:.2} M/s; verify/SHA-256 = {:.2}; goal >= 1 M events/s: {}",
            verify_rate / 1e6,
            EVENTS,
            mean,
            sha_rate / 1e6,
            verify_rate / sha_rate,
            if verify_rate >= 1e6 { "met" } else { "NOT met" },
        );
    }
}
