//! Replays the stored corpus of the `guest_path` fuzz target(s) on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#[path = "../fuzz/checks/guest_path.rs"]
mod guest_path;

fn replay(target: &str, check: fn(&[u8])) {
    devshell_vm_test_support::fuzz::replay_corpus(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        target,
        check,
    );
}

#[test]
fn guest_path_corpus_replays() {
    replay("guest_path", guest_path::check);
}
