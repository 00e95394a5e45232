//! Fuzz target `policy_toml`: the check in `fuzz/checks/policy.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/policy_toml/` and `fuzz/regressions/policy_toml/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;
#[allow(dead_code)] // each policy target runs one of the two entry points
#[path = "../checks/policy.rs"]
mod policy;

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::check_toml(data));
