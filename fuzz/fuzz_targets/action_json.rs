//! Fuzz target `action_json`: the check in `fuzz/checks/action.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/action_json/` and `fuzz/regressions/action_json/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/action.rs"]
mod action;
#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| action::check(data));
