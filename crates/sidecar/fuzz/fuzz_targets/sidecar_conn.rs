//! Fuzz the sidecar's request handling end to end (see `checks/sidecar_conn.rs`).
#![no_main]

#[path = "../checks/sidecar_conn.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
