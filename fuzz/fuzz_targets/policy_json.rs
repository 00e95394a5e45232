//! Fuzz target `policy_json`: the check in `fuzz/checks/policy.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/policy_json/` and `fuzz/regressions/policy_json/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;
#[allow(dead_code)] // each policy target runs one of the two entry points
#[path = "../checks/policy.rs"]
mod policy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::check_json(data));
