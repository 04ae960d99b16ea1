//! Fuzz guest path normalisation and the mount check (see `checks/guest_path.rs`).
#![no_main]

#[path = "../checks/guest_path.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
