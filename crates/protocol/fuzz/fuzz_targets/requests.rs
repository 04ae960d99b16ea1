//! Fuzz every request type's parser (see `checks/requests.rs`).
#![no_main]

#[path = "../checks/requests.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
