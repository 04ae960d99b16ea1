//! Replays the stored corpus of the `guest_path` fuzz target(s) on stable Rust, so CI
//! (which runs no fuzzing) still checks every input a campaign kept, and every
//! crash input saved under `fuzz/regressions/`. See docs/FUZZING.md.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/guest_path.rs"]
mod guest_path;

/// Every file in `fuzz/corpus/<target>`, `fuzz/seeds/<target>` and
/// `fuzz/regressions/<target>`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= 10,
        "the {target} corpus holds {} inputs: it must be stored in the repository (run `cargo xtask fuzz {target}`)",
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("{target} input {} fails: {message}", file.display());
        }
    }
}

#[test]
fn guest_path_corpus_replays() {
    replay("guest_path", guest_path::check);
}
