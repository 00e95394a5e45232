//! Fuzz target `feishu`: the check in `fuzz/checks/feishu.rs` (which says what it proves), also
//! replayed over `fuzz/seeds/feishu/` and `fuzz/regressions/feishu/` by `tests/fuzz_regressions.rs`.
#![no_main]

#[path = "../checks/feishu.rs"]
mod feishu;
#[allow(dead_code)]
#[path = "../checks/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| feishu::check(data));
