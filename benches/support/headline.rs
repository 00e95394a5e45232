//! The `REPORT|` lines every bench prints at the end of its run, one per headline figure, and
//! the helpers that format their figures. `scripts/bench-report` collects these lines from all
//! benches into one markdown table, so the format is a contract:
//!
//! ```text
//! REPORT| <area> | <measure> | <ours> | <baseline> | <ratio> | <goal> | <met> |
//! ```
//!
//! Absent fields are `—`; `<met>` is `yes`, `no`, or `—` when there is no goal. Included with
//! `#[path]` by the benches of this crate and by `crates/bench-peers`; each includer uses a
//! different subset, hence the `dead_code` allowance.

#![allow(dead_code)]

use std::time::Duration;

/// The placeholder for a field that does not apply.
pub const NONE: &str = "—";

/// A goal and whether this run met it.
pub struct Goal<'a> {
    /// How the goal reads in the table, e.g. `≤ 1 µs`.
    pub text: &'a str,
    /// Whether the figure met it.
    pub met: bool,
}

/// Prints one `REPORT|` line. `ratio` is ours over the baseline in the sense the measure
/// names (e.g. "how many times faster"), printed with a `×`.
pub fn report(
    area: &str,
    measure: &str,
    ours: &str,
    baseline: Option<&str>,
    ratio: Option<f64>,
    goal: Option<Goal<'_>>,
) {
    let ratio = ratio.map_or_else(|| NONE.to_owned(), times);
    let (goal, met) = match goal {
        Some(g) => (g.text.to_owned(), if g.met { "yes" } else { "no" }),
        None => (NONE.to_owned(), NONE),
    };
    println!(
        "REPORT| {area} | {measure} | {ours} | {} | {ratio} | {goal} | {met} |",
        baseline.unwrap_or(NONE)
    );
}

/// `123.5×`, `4.21×`, `0.70×`.
pub fn times(ratio: f64) -> String {
    if ratio >= 100.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// Three significant figures.
fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A duration in nanoseconds as `570 ns`, `62.8 µs`, `1.23 ms`, `4.56 s`.
pub fn nanos(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{} µs", sig3(ns / 1e3))
    } else if ns < 1e9 {
        format!("{} ms", sig3(ns / 1e6))
    } else {
        format!("{} s", sig3(ns / 1e9))
    }
}

/// A [`Duration`] as [`nanos`] does.
pub fn duration(d: Duration) -> String {
    nanos(d.as_secs_f64() * 1e9)
}

/// A rate per second as `1.52 M/s`, `52.8 k/s`, `950 /s`.
pub fn per_second(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{} M/s", sig3(rate / 1e6))
    } else if rate >= 1e3 {
        format!("{} k/s", sig3(rate / 1e3))
    } else {
        format!("{} /s", sig3(rate))
    }
}

/// A size in KiB as `38.2 MiB` or `950 KiB`.
pub fn kib(k: u64) -> String {
    if k >= 1024 {
        format!("{} MiB", sig3(k as f64 / 1024.0))
    } else {
        format!("{k} KiB")
    }
}

/// The value at quantile `q` (0..=1) of sorted samples: the nearest rank, so the median of
/// an odd count is its middle sample.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    assert!(!sorted.is_empty(), "no samples");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether this run should spend fewer seconds measuring (`AGENT_HANDOFF_BENCH_QUICK=1`, set
/// by `scripts/bench-report --quick`).
pub fn quick() -> bool {
    std::env::var("AGENT_HANDOFF_BENCH_QUICK").as_deref() == Ok("1")
}
