//! Peak memory of `Handoff::verify_audit` over a real SQLite store of 100 k and 1 M audit
//! events: verification pages through the chain, so its peak RSS must stay flat as the chain
//! grows (goal: the 1 M figure at most 1.2 × the 100 k one).
//!
//! `cargo bench --bench audit_rss` (about a minute; ~1.2 GB in `$TMPDIR`, deleted at the end).
//! `AGENT_HANDOFF_BENCH_RSS_EVENTS=100000,1000000` sets the chain sizes (ascending; the first
//! and the last are compared). Under `cargo test --benches` it runs at 1 000 and 10 000
//! events as a smoke test.
//!
//! **The fixture** is written by the store itself: `SqliteStore::commit` of audit-only
//! `Write`s of 1 000 records each (the store chains them onto its head and inserts them with
//! its own statements and commit times, as it does for every write), so the `audit_events`
//! table holds exactly what a store holds. Each record is the `proposed` record that
//! `ticket::open` makes for a production `db.row.update` under a policy loaded from TOML — the
//! record a real `propose` chains (about 880 bytes). The `tickets` table stays empty: verifying
//! the chain reads only `audit_events`. The store is built to the smallest size, closed,
//! measured, then reopened and extended to the next size.
//!
//! **The measurement** runs in a fresh process for each size, so the fixture's build does not
//! count: the bench re-executes itself (`AGENT_HANDOFF_RSS_CHILD=<database>`), and the child
//! opens the store, builds a `Handoff`, runs `verify_audit`, checks the event count, and reads
//! its peak resident set (`VmHWM` in `/proc/self/status`) after opening and at the end. When
//! `/usr/bin/time` exists the child runs under `/usr/bin/time -v`, whose "Maximum resident set
//! size" is printed beside `VmHWM` as a cross-check (it covers the child's whole life, the
//! read-only pass below included, so it can only be the larger). After the peak is read, the child pages
//! through the same events once more without verifying (`Store::audit_events`, 4 096 a page,
//! as `verify_audit` does), which splits the verification time into reading and hashing. Ends
//! with `REPORT|` lines (see `benches/support/headline.rs`): the peak RSS at the largest size
//! against the smallest, and `verify_audit`'s rate at the largest (one timed run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agent_handoff::action::Requester;
use agent_handoff::audit::AuditRecord;
use agent_handoff::backend::Write;
use agent_handoff::policy::Policy;
use agent_handoff::ticket::{open, PrincipalCheck};
use agent_handoff::{
    AgentId, Handoff, PersonId, SqliteStore, StaticDirectory, Store, TicketId, Timestamp,
};
use tempfile::TempDir;

#[path = "support/headline.rs"]
mod headline;
#[path = "support/refund.rs"]
mod refund;
use headline::{duration, kib, per_second, report, Goal};
use refund::request;

/// The child's mode: the database to verify.
const CHILD: &str = "AGENT_HANDOFF_RSS_CHILD";
/// The child's expected event count.
const EXPECT: &str = "AGENT_HANDOFF_RSS_EXPECT";
/// Audit records per committed write while building the fixture.
const PER_WRITE: u64 = 1000;
/// Events per page of the read-only pass (the page `verify_audit` uses).
const READ_PAGE: usize = 4096;
/// The goal: peak RSS at the largest size over the smallest.
const FLAT: f64 = 1.2;

const POLICY: &str = r#"
version = "rss-bench"

[default]
review = { approvals = 1, groups = ["oncall"], deadline = "30m", approval_ttl = "15m" }

[[rule]]
id = "production-writes-need-review"
when = { kind = "db.*.update", environment = "production" }
then.review = { approvals = 1, groups = ["ops"], deadline = "1h", approval_ttl = "1h" }
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY).expect("the bench policy loads")
}

/// The audit records a real propose of request `n` chains (one `proposed` record).
fn proposed(policy: &Policy, n: u64, now: Timestamp) -> Vec<AuditRecord> {
    let request = request(n);
    let ruling = policy.evaluate(&request);
    let mut rest = [0u8; 10];
    rest[2..].copy_from_slice(&n.to_be_bytes());
    let ms = u64::try_from(now.as_unix_millis()).unwrap_or(0);
    let id = TicketId::from_uuid(uuid::Builder::from_unix_timestamp_millis(ms, &rest).into_uuid());
    let requester = Requester::new(
        AgentId::new("billing-agent").unwrap(),
        Some(PersonId::new("alice").unwrap()),
    );
    let principal = PrincipalCheck::Person(PersonId::new("alice").unwrap());
    open(id, requester, principal, request, ruling, now).audit
}

/// Appends records `from..to` (one proposal each) to the store, `PER_WRITE` per commit.
async fn extend(store: &SqliteStore, policy: &Policy, from: u64, to: u64) {
    let mut n = from;
    while n < to {
        let end = (n + PER_WRITE).min(to);
        let now = Timestamp::from_unix_millis(1_800_000_000_000 + n as i64);
        let audit = (n..end).flat_map(|i| proposed(policy, i, now));
        store
            .commit(Write::new().with_audit_records(audit))
            .await
            .expect("the fixture commits");
        n = end;
    }
}

/// A field of `/proc/self/status` in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The child: open, verify, report peak RSS on one line of stdout.
fn child(path: &str, expect: u64) {
    runtime().block_on(async {
        let store = SqliteStore::open(path).await.expect("the store opens");
        let handoff = Handoff::builder()
            .store(store)
            .policy(policy())
            .identity(StaticDirectory::new())
            .build()
            .unwrap();
        let opened = status_kib("VmHWM");
        let start = Instant::now();
        let report = handoff.verify_audit().await.expect("the chain verifies");
        let took = start.elapsed();
        assert_eq!(report.events, expect, "events verified");
        let peak = status_kib("VmHWM");
        // For the figures only, after the peak was read: the same pages read without
        // verifying, to split verify_audit's time into reading and hashing.
        let start = Instant::now();
        let (mut from, mut read) = (1, 0u64);
        loop {
            let page = handoff.store().audit_events(from, READ_PAGE).await.unwrap();
            read += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == READ_PAGE => from = last.seq + 1,
                _ => break,
            }
        }
        let read_took = start.elapsed();
        assert_eq!(read, expect, "events read");
        handoff.shutdown().await.unwrap();
        println!(
            "RSS_CHILD opened_hwm_kib={opened} hwm_kib={peak} verify_us={} read_us={}",
            took.as_micros(),
            read_took.as_micros()
        );
    });
}

/// What one child run saw.
struct Measured {
    events: u64,
    /// Peak RSS after opening, before verifying (KiB).
    opened: u64,
    /// Peak RSS at the end (KiB).
    peak: u64,
    /// `/usr/bin/time -v`'s maximum resident set size (KiB), if it ran under it.
    time_v: Option<u64>,
    verify: Duration,
    /// The same pages read from the store without verifying.
    read: Duration,
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn measure(path: &Path, events: u64) -> Measured {
    let exe = std::env::current_exe().unwrap();
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.arg("-v").arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .env(CHILD, path)
        .env(EXPECT, events.to_string())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RSS_CHILD"))
        .unwrap_or_else(|| panic!("no RSS_CHILD line: {stdout}"));
    let time_v = stderr.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Maximum resident set size (kbytes):")
            .and_then(|v| v.trim().parse().ok())
    });
    Measured {
        events,
        opened: field(line, "opened_hwm_kib").parse().unwrap(),
        peak: field(line, "hwm_kib").parse().unwrap(),
        time_v,
        verify: Duration::from_micros(field(line, "verify_us").parse().unwrap()),
        read: Duration::from_micros(field(line, "read_us").parse().unwrap()),
    }
}

/// `1 M`, `100 k`, `2 500`.
fn count(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{} M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{} k", n / 1000)
    } else {
        n.to_string()
    }
}

fn main() {
    if let Ok(path) = std::env::var(CHILD) {
        let expect = std::env::var(EXPECT).unwrap().parse().unwrap();
        child(&path, expect);
        return;
    }
    let timed = std::env::args().any(|a| a == "--bench");
    let mut sizes: Vec<u64> = match std::env::var("AGENT_HANDOFF_BENCH_RSS_EVENTS") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("AGENT_HANDOFF_BENCH_RSS_EVENTS: counts")
            })
            .collect(),
        Err(_) if timed => vec![100_000, 1_000_000],
        Err(_) => vec![1_000, 10_000],
    };
    sizes.sort_unstable();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("audit.sqlite3");
    let policy = policy();
    let rt = runtime();
    let mut built = 0;
    let mut results = Vec::new();
    for &size in &sizes {
        let start = Instant::now();
        rt.block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            extend(&store, &policy, built, size).await;
            store.shutdown().await.unwrap();
        });
        let took = start.elapsed();
        let bytes: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "fixture: {} audit events ({} more written by SqliteStore::commit, {PER_WRITE} per write, in {:.1?}); database files {:.2} GB",
            count(size),
            count(size - built),
            took,
            bytes as f64 / 1e9
        );
        built = size;
        let m = measure(&path, size);
        println!(
            "verify_audit over {} events: peak RSS {} (VmHWM; {} after opening, before verifying; /usr/bin/time -v max RSS {}); verify took {} ({}); reading the same pages alone {} ({})",
            count(m.events),
            kib(m.peak),
            kib(m.opened),
            m.time_v.map_or_else(|| "n/a".into(), kib),
            duration(m.verify),
            per_second(m.events as f64 / m.verify.as_secs_f64()),
            duration(m.read),
            per_second(m.events as f64 / m.read.as_secs_f64()),
        );
        results.push(m);
    }
    // Under `cargo test --benches` (a debug build, sizes below a few pages) the figures mean
    // nothing: the run only checks that the fixture builds and verifies.
    let (true, Some(small), Some(large)) = (timed, results.first(), results.last()) else {
        return;
    };
    let ratio = large.peak as f64 / small.peak as f64;
    println!(
        "verify_audit peak RSS: {} events / {} events = {ratio:.2} for {:.0}× the events",
        count(large.events),
        count(small.events),
        large.events as f64 / small.events as f64
    );
    report(
        "scale",
        &format!("verify_audit peak RSS, {} events", count(large.events)),
        &kib(large.peak),
        Some(&format!(
            "{} events {}",
            count(small.events),
            kib(small.peak)
        )),
        Some(ratio),
        Some(Goal {
            text: "flat (≤ 1.2×)",
            met: ratio <= FLAT,
        }),
    );
    report(
        "scale",
        &format!(
            "verify_audit from SQLite, events/s, {} events (one run)",
            count(large.events)
        ),
        &per_second(large.events as f64 / large.verify.as_secs_f64()),
        None,
        None,
        None,
    );
}
