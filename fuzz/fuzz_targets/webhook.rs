//! Fuzz target `webhook`: the check in `fuzz/checks/webhook.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/webhook/` and `fuzz/regressions/webhook/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;
#[path = "../checks/webhook.rs"]
mod webhook;

libfuzzer_sys::fuzz_target!(|data: &[u8]| webhook::check(data));
