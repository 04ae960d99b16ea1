//! Real cargo against a synced staging leaf: the build output (`target/`, inside the
//! leaf) is pulled into the VFS and pushed back; cargo must see an edited source as
//! dirty and an untouched tree as fresh, also after a full re-push with a new manifest
//! (every file rewritten with its old mtime). Offline, no dependencies.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::path::Path;
use std::process::Command;

use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_full, push_incremental};
use devshell_vm_vfs::Vfs;

const CRATE: &str = "/proj/hello";

/// Runs `cargo build -v` in the leaf with `target/` inside it; returns stderr.
fn cargo_build(leaf: &Path) -> String {
    let output = Command::new("cargo")
        .args(["build", "-v", "--offline"])
        .current_dir(leaf)
        .env("CARGO_TARGET_DIR", leaf.join("target"))
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("this test needs `cargo` on PATH");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "cargo build failed:\n{stderr}");
    stderr
}

fn compiled(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.trim_start().starts_with("Compiling hello"))
}

fn fresh(stderr: &str) -> bool {
    stderr
        .lines()
        .any(|l| l.trim_start().starts_with("Fresh hello"))
}

#[test]
fn cargo_rebuilds_exactly_what_changed_across_sync_round_trips() {
    let staging = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir(&format!("{CRATE}/src")).unwrap();
    vfs.write_file(
        &format!("{CRATE}/Cargo.toml"),
        b"[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
            .to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{CRATE}/src/main.rs"),
        b"fn main() { println!(\"{}\", hello::greeting()); }\n".to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{CRATE}/src/lib.rs"),
        b"pub fn greeting() -> &'static str { \"one\" }\n".to_vec(),
    )
    .unwrap();
    let mut state = SyncState::new(staging.path());
    let leaf = state.leaf_dir(CRATE).unwrap();

    // 1. First build.
    push_incremental(&vfs, CRATE, &mut state).unwrap();
    let first = cargo_build(&leaf);
    assert!(compiled(&first), "first build must compile:\n{first}");
    let pulled = pull_workspace_to_vfs(&mut state, CRATE, &mut vfs).unwrap();
    assert!(
        vfs.exists(&format!("{CRATE}/target/debug/hello")),
        "build output pulled: {pulled}"
    );
    assert!(pulled.files_written > 0);

    // 2. No edit: push is a no-op and cargo reports the crate fresh.
    let push = push_incremental(&vfs, CRATE, &mut state).unwrap();
    assert!(
        push.is_noop(),
        "nothing changed, yet the push wrote: {push}"
    );
    let second = cargo_build(&leaf);
    assert!(
        !compiled(&second) && fresh(&second),
        "untouched tree must be fresh:\n{second}"
    );
    pull_workspace_to_vfs(&mut state, CRATE, &mut vfs).unwrap();

    // 3. One source edited in the VFS: cargo recompiles the crate.
    vfs.write_file(
        &format!("{CRATE}/src/lib.rs"),
        b"pub fn greeting() -> &'static str { \"two\" }\n".to_vec(),
    )
    .unwrap();
    let push = push_incremental(&vfs, CRATE, &mut state).unwrap();
    assert_eq!(push.files_written, 1, "{push}");
    let third = cargo_build(&leaf);
    assert!(compiled(&third), "edited source must be rebuilt:\n{third}");
    pull_workspace_to_vfs(&mut state, CRATE, &mut vfs).unwrap();
    let run = Command::new(leaf.join("target/debug/hello"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "two\n",
        "the rebuilt binary has the edit"
    );

    // 4. A new session (no manifest) re-pushes everything, target/ included, from the
    //    VFS: all files are rewritten with their recorded mtimes, so cargo stays fresh.
    let mut new_state = SyncState::new(staging.path());
    let full = push_full(&vfs, CRATE, &mut new_state).unwrap();
    assert!(full.files_written > 3, "{full}");
    let fourth = cargo_build(&leaf);
    assert!(
        !compiled(&fourth) && fresh(&fourth),
        "a full re-push must keep cargo fresh:\n{fourth}"
    );

    // 5. And an edit after that is still seen.
    pull_workspace_to_vfs(&mut new_state, CRATE, &mut vfs).unwrap();
    vfs.write_file(
        &format!("{CRATE}/src/main.rs"),
        b"fn main() { println!(\"three\"); }\n".to_vec(),
    )
    .unwrap();
    push_incremental(&vfs, CRATE, &mut new_state).unwrap();
    let fifth = cargo_build(&leaf);
    assert!(
        compiled(&fifth),
        "edit after a full push must be rebuilt:\n{fifth}"
    );
}
