//! Replays the stored corpus of the `image_load` fuzz target(s) on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#[path = "../fuzz/checks/image_load.rs"]
mod image_load;

fn replay(target: &str, check: fn(&[u8])) {
    devshell_vm_test_support::fuzz::replay_corpus(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        target,
        check,
    );
}

#[test]
fn image_load_corpus_replays() {
    replay("image_load", image_load::check);
}
