//! Replays the fuzz corpora through exactly the checks the fuzzer runs, on stable, without
//! libFuzzer.
//!
//! Each fuzz target in `fuzz/fuzz_targets/` calls one check function from `fuzz/checks/`; this
//! file includes the same files (`#[path]`), and for every target feeds the check every file
//! of `fuzz/seeds/<target>/` (the small committed seed corpus) and of
//! `fuzz/regressions/<target>/` (each input that once crashed or broke a property). What each
//! check proves is written at the top of its file.
//!
//! A new finding: copy the artifact libFuzzer wrote (`fuzz/artifacts/<target>/crash-…`) to
//! `fuzz/regressions/<target>/` under a name that says what it was, fix the library, and this
//! test keeps it fixed. Running the fuzzers themselves is described in `fuzz/README.md`.
//!
//! Run: `cargo test --all-features --test fuzz_regressions` (a few seconds; the webhook and
//! Feishu targets need their features). There is no big run: the big run is the fuzzer.

use std::fs;
use std::path::{Path, PathBuf};

// Some helpers serve only the webhook and Feishu checks, compiled with their features.
#[allow(dead_code)]
#[path = "../fuzz/checks/input.rs"]
mod input;

#[path = "../fuzz/checks/action.rs"]
mod action;
#[path = "../fuzz/checks/audit.rs"]
mod audit;
#[cfg(feature = "feishu")]
#[path = "../fuzz/checks/feishu.rs"]
mod feishu;
#[path = "../fuzz/checks/policy.rs"]
mod policy;
#[path = "../fuzz/checks/token.rs"]
mod token;
#[cfg(feature = "webhook")]
#[path = "../fuzz/checks/webhook.rs"]
mod webhook;

/// The files of `fuzz/<kind>/<target>/`, sorted; none if the folder does not exist.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("readable folder").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

/// Runs `check` on every seed and regression input of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let seeds = files("seeds", target);
    assert!(
        !seeds.is_empty(),
        "no seeds in fuzz/seeds/{target}/: the corpus moved?"
    );
    for path in seeds.iter().chain(&files("regressions", target)) {
        let data = fs::read(path).expect("readable input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
    }
}

#[test]
fn token() {
    replay("token", token::check);
}

#[test]
fn policy_toml() {
    replay("policy_toml", policy::check_toml);
}

#[test]
fn policy_json() {
    replay("policy_json", policy::check_json);
}

#[cfg(feature = "webhook")]
#[test]
fn webhook() {
    replay("webhook", webhook::check);
}

#[cfg(feature = "feishu")]
#[test]
fn feishu() {
    replay("feishu", feishu::check);
}

#[test]
fn action_json() {
    replay("action_json", action::check);
}

#[test]
fn audit_jsonl() {
    replay("audit_jsonl", audit::check);
}
