//! Helpers shared by the integration tests: the binary with a clean environment and a
//! private export base, and readable failure output.

#![allow(dead_code, unreachable_pub)] // each test file uses a different subset

use std::path::Path;
use std::process::{Command, Output};

/// The `devshell-vm` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_devshell-vm");

/// `devshell-vm` with every `DEVSHELL_*` variable of this environment removed, the host
/// backend, and `export_base` for its staging directories. `CARGO_TARGET_DIR` is
/// removed so a cargo run inside builds into the workspace's own `target/`.
pub fn devshell(export_base: &Path) -> Command {
    let mut command = Command::new(BIN);
    #[expect(
        clippy::disallowed_methods,
        reason = "the child gets a clean environment: every DEVSHELL_* name set here is removed"
    )]
    let names = std::env::vars_os();
    for (name, _) in names {
        if name.to_string_lossy().starts_with("DEVSHELL_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("CARGO_TARGET_DIR")
        .env("DEVSHELL_VM_BACKEND", "host")
        .env("DEVSHELL_EXPORT_BASE", export_base);
    command
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Status, stdout and stderr, for assertion messages.
pub fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// Writes `files` (relative path, content) under `root`, creating directories.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, content).expect("write");
    }
}

/// A binary crate named `name` whose `src/main.rs` is `main_rs`, with the usual
/// `.gitignore` (`/target`).
pub fn write_crate(root: &Path, name: &str, main_rs: &str) {
    let manifest =
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n");
    write_tree(
        root,
        &[
            ("Cargo.toml", &manifest),
            ("src/main.rs", main_rs),
            (".gitignore", "/target\n"),
        ],
    );
}

pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
