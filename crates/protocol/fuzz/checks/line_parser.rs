//! The line parser check, shared by the `line_parser` fuzz target and the stable test
//! that replays its corpus (`tests/fuzz_corpus.rs`): arbitrary bytes (with newlines,
//! invalid UTF-8 and oversized lines) must never panic, every error must be
//! recoverable, and every parsed message must re-encode and re-parse to itself.

use devshell_vm_protocol::{LineReader, encode_reply, encode_request, parse_reply, parse_request};

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    // Small cap so the oversized path is exercised often.
    let max = usize::from(data.first().copied().unwrap_or(0)) * 4;
    let mut reader = LineReader::with_max_frame_bytes(data, max);
    loop {
        match reader.read_line() {
            Ok(None) => break,
            Ok(Some(line)) => {
                assert!(line.len() <= max, "line over the cap returned");
                assert!(!line.contains('\n'), "newline inside a line");
                if let Ok(req) = parse_request(&line) {
                    let again = parse_request(&encode_request(&req)).expect("re-parse request");
                    assert_eq!(again, req);
                }
                if let Ok(rep) = parse_reply(&line) {
                    let again = parse_reply(&encode_reply(&rep)).expect("re-parse reply");
                    assert_eq!(again, rep);
                }
            }
            Err(err) => assert!(
                err.is_recoverable(),
                "unrecoverable error on in-memory input: {err}"
            ),
        }
    }
    // The whole input as one line, uncapped.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_request(text);
        let _ = parse_reply(text);
    }
}
