//! Replaying a fuzz target's stored corpus on stable Rust (CI runs no fuzzing, but every
//! input a campaign kept, and every crash input saved under `fuzz/regressions/`, is
//! checked by an ordinary test). See docs/FUZZING.md.

use std::path::{Path, PathBuf};

/// Every file in `<crate>/fuzz/corpus/<target>`, `fuzz/seeds/<target>` and
/// `fuzz/regressions/<target>`, sorted.
///
/// # Panics
/// When a directory entry cannot be read.
#[must_use]
pub fn corpus_inputs(crate_dir: &Path, target: &str) -> Vec<PathBuf> {
    let fuzz = crate_dir.join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every stored input of `target` (at least 10 must be stored), naming
/// the input that fails.
///
/// # Panics
/// When fewer than 10 inputs are stored, when one cannot be read (one deleted since the
/// listing is skipped: a campaign on the same corpus replaces inputs), or when `check`
/// panics on one.
pub fn replay_corpus(crate_dir: &Path, target: &str, check: fn(&[u8])) {
    let files = corpus_inputs(crate_dir, target);
    assert!(
        files.len() >= 10,
        "the {target} corpus holds {} inputs: it must be stored in the repository (run `cargo xtask fuzz {target}`)",
        files.len()
    );
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(data) => data,
            // A campaign running on the same corpus replaces inputs by smaller ones
            // (libFuzzer's reduction deletes the old file): gone is not an input.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("cannot read corpus input {}: {err}", file.display()),
        };
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
