//! Replays the stored corpus of the `line_parser`, `requests` and `wire_frames` fuzz targets on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#[path = "../fuzz/checks/line_parser.rs"]
mod line_parser;
#[path = "../fuzz/checks/requests.rs"]
mod requests;
#[path = "../fuzz/checks/wire_frames.rs"]
mod wire_frames;

fn replay(target: &str, check: fn(&[u8])) {
    devshell_vm_test_support::fuzz::replay_corpus(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        target,
        check,
    );
}

#[test]
fn line_parser_corpus_replays() {
    replay("line_parser", line_parser::check);
}

#[test]
fn requests_corpus_replays() {
    replay("requests", requests::check);
}

#[test]
fn wire_frames_corpus_replays() {
    replay("wire_frames", wire_frames::check);
}
