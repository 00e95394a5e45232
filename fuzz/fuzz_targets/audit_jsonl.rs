//! Fuzz target `audit_jsonl`: the check in `fuzz/checks/audit.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/audit_jsonl/` and `fuzz/regressions/audit_jsonl/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/audit.rs"]
mod audit;
#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| audit::check(data));
