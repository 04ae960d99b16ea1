//! Fuzz the line codec and the request/reply parsers (see `checks/line_parser.rs`).
#![no_main]

#[path = "../checks/line_parser.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
