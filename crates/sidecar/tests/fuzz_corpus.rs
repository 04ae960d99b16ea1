//! Replays the stored corpus of the `sidecar_conn` fuzz target(s) on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#[path = "../fuzz/checks/sidecar_conn.rs"]
mod sidecar_conn;

fn replay(target: &str, check: fn(&[u8])) {
    devshell_vm_test_support::fuzz::replay_corpus(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        target,
        check,
    );
}

#[test]
fn sidecar_conn_corpus_replays() {
    replay("sidecar_conn", sidecar_conn::check);
    // Nothing may outlive the test in TMPDIR.
    sidecar_conn::cleanup();
}
