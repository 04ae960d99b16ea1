//! Fuzzes the workspace image loader (see `checks/image_load.rs`).
//!
//! Run: `cargo xtask fuzz image_load --secs 60`

#![no_main]

#[path = "../checks/image_load.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
