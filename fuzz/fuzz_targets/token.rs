//! Fuzz target `token`: the check in `fuzz/checks/token.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/token/` and `fuzz/regressions/token/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;
#[path = "../checks/token.rs"]
mod token;

libfuzzer_sys::fuzz_target!(|data: &[u8]| token::check(data));
