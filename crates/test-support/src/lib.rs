//! Test and benchmark helpers shared by devshell-vm crates (not shipped).
//!
//! * [`cargo_bin`] — the path of a workspace binary (the sidecar, the limactl
//!   stand-in, the CLI) for tests of *other* packages, which Cargo's
//!   `CARGO_BIN_EXE_*` does not cover. It builds the binary first, so a test never
//!   runs a stale or missing one.
//! * [`bench`](mod@bench) — the tiny measurement harness every `harness = false` benchmark
//!   uses: medians over repeated runs, peak RSS, tmpfs and disk scratch dirs.
//! * [`lifeline`] — [`lifeline::spawn_tied`] starts a daemon that ends with the test
//!   process however it ends; every sidecar a test starts goes through it.
//! * [`special`] — FIFOs and devices for the guest-fs special-file checks.
//! * [`kill_loop`] — SIGKILL of a child running sync rounds, inside its push or its
//!   pull, for the backends' fault tests.

pub mod bench;
pub mod fuzz;
pub mod kill_loop;
pub mod lifeline;
pub mod nobody;
pub mod sidecar;
pub mod special;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The Cargo target directory and profile directory this test binary was built in,
/// derived from its own path (`<target>/<profile>/deps/<test>-<hash>`).
///
/// # Panics
/// When the running executable is not inside a Cargo target directory.
#[must_use]
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe is readable");
    let deps = exe.parent().expect("test binary has a parent dir");
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    profile_dir.to_path_buf()
}

/// Builds (if needed) and returns the path of binary `bin` of workspace package
/// `package`, in the same target directory and profile as the running test.
///
/// Runs `cargo build` once per (package, bin) per process; cargo makes it a
/// no-op when the binary is fresh.
///
/// # Panics
/// When cargo fails to build the binary (the test cannot run without it, so it
/// fails loudly instead of skipping).
#[must_use]
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<(String, String), PathBuf>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = built.get_or_insert_with(HashMap::new);
    let key = (package.to_owned(), bin.to_owned());
    if let Some(path) = cache.get(&key) {
        return path.clone();
    }
    let profile_dir = target_profile_dir();
    let target_dir = profile_dir.parent().expect("profile dir has a parent");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile dir name is UTF-8");
    let mut command = Command::new("cargo");
    command
        .args([
            "build",
            "--quiet",
            "--package",
            package,
            "--bin",
            bin,
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(workspace_root());
    if profile == "release" {
        command.arg("--release");
    }
    let status = command
        .status()
        .unwrap_or_else(|err| panic!("cannot run cargo to build {package}/{bin}: {err}"));
    assert!(
        status.success(),
        "building {package}/{bin} failed: {status}"
    );
    let path = profile_dir.join(bin);
    assert!(
        path.is_file(),
        "cargo built {package}/{bin} but {} is missing",
        path.display()
    );
    cache.insert(key, path.clone());
    path
}

/// The workspace root (the directory holding the root `Cargo.toml`).
///
/// # Panics
/// Never in this workspace: the crate's manifest dir is `<root>/crates/test-support`.
#[must_use]
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/test-support lies two levels below the workspace root")
}

/// The whole message of an error and its causes, `": "`-joined (each error's own
/// words, once), the way a front end prints it.
#[must_use]
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Asserts that no message in `err`'s source chain repeats the words of one below it
/// (each cause is printed once when the chain is printed), and returns the chain.
///
/// # Panics
/// When a message contains the message of one of its sources.
#[must_use]
pub fn assert_causes_once(err: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        messages.push(e.to_string());
        current = e.source();
    }
    for (i, upper) in messages.iter().enumerate() {
        for lower in &messages[i + 1..] {
            assert!(
                lower.is_empty() || !upper.contains(lower.as_str()),
                "cause printed twice: {upper:?} contains its source's message {lower:?} (chain: {messages:?})"
            );
        }
    }
    chain(err)
}
