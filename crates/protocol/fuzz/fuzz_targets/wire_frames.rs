//! Fuzz the `wire-sync` bulk frames and the lines that announce them (see
//! `checks/wire_frames.rs`).
#![no_main]

#[path = "../checks/wire_frames.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
