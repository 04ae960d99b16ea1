//! Fuzz the environment parser (see `checks/config_env.rs`).
#![no_main]

#[path = "../checks/config_env.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
