//! Replays the stored corpus of the `config_env` fuzz target(s) on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#[path = "../fuzz/checks/config_env.rs"]
mod config_env;

fn replay(target: &str, check: fn(&[u8])) {
    devshell_vm_test_support::fuzz::replay_corpus(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        target,
        check,
    );
}

#[test]
fn config_env_corpus_replays() {
    replay("config_env", config_env::check);
}
