//! Errors print each cause once: for a representative failure of every backend the
//! test walks `source()` and asserts no message repeats the words of a cause below it,
//! and that the whole chain (what a front end prints) names what failed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use devshell_vm::{SessionHolder, Vfs, VmConfig, VmError, error_chain};
use devshell_vm_test_support::assert_causes_once;

fn config(pairs: &[(&str, &str)]) -> VmConfig {
    let env: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    VmConfig {
        path: Some("/usr/local/bin:/usr/bin:/bin".into()),
        ..VmConfig::from_source(&env).unwrap()
    }
}

fn project() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file("/p/keep.txt", "keep").unwrap();
    vfs
}

fn check(err: &VmError, must_name: &[&str]) {
    let chain = assert_causes_once(err);
    assert_eq!(chain, error_chain(err));
    for word in must_name {
        assert!(chain.contains(word), "{word:?} missing from {chain:?}");
    }
}

#[test]
fn host_failures_print_each_cause_once() {
    let base = tempfile::tempdir().unwrap();
    let base_str = base.path().to_str().unwrap();
    let mut session = SessionHolder::try_from_config(&config(&[
        ("DEVSHELL_VM", "off"),
        ("DEVSHELL_EXPORT_BASE", base_str),
    ]))
    .unwrap();
    let mut vfs = project();

    // A missing program.
    let err = session
        .run_rust_tool(&mut vfs, "/p", "no-such-tool-devshell", &[])
        .unwrap_err();
    check(&err, &["no-such-tool-devshell", "PATH"]);

    // A sync failure: the tool removes its own working tree, so the pull fails.
    let err = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "rm -rf \"$PWD\"; exit 3".to_owned()],
        )
        .unwrap_err();
    check(&err, &["sh", "exit code 3", "/p"]);

    // A bad cwd.
    let err = session
        .run_rust_tool(&mut vfs, "/missing", "true", &[])
        .unwrap_err();
    check(&err, &["/missing"]);

    // A staging directory that cannot be created (the export base is a file).
    let file = base.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut session = SessionHolder::try_from_config(&config(&[
        ("DEVSHELL_VM", "off"),
        ("DEVSHELL_EXPORT_BASE", file.to_str().unwrap()),
    ]))
    .unwrap();
    let err = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .unwrap_err();
    check(&err, &["a-file"]);
}

#[cfg(feature = "beta")]
#[test]
fn a_dead_sidecar_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    let mut session = SessionHolder::try_from_config(&config(&[
        ("DEVSHELL_VM", "on"),
        ("DEVSHELL_VM_BACKEND", "beta"),
        ("DEVSHELL_VM_SOCKET", socket.to_str().unwrap()),
        ("DEVSHELL_EXPORT_BASE", dir.path().to_str().unwrap()),
    ]))
    .unwrap();
    let mut vfs = project();
    let err = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .unwrap_err();
    check(&err, &["gone.sock"]);
}

#[cfg(all(unix, feature = "lima"))]
#[test]
fn a_missing_limactl_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // Not on PATH at all: the backend is unavailable, with the search path named.
    let err = SessionHolder::try_from_config(&VmConfig {
        path: Some("/nonexistent-bin".into()),
        ..config(&[("DEVSHELL_VM", "on"), ("DEVSHELL_VM_BACKEND", "lima")])
    })
    .unwrap_err();
    check(&err, &["limactl", "/nonexistent-bin"]);

    // Configured but not runnable: the spawn failure is the cause, printed once.
    let missing = dir.path().join("limactl-missing");
    let mut session = SessionHolder::try_from_config(&config(&[
        ("DEVSHELL_VM", "on"),
        ("DEVSHELL_VM_BACKEND", "lima"),
        ("DEVSHELL_VM_LIMACTL", missing.to_str().unwrap()),
        ("DEVSHELL_VM_WORKSPACE_PARENT", dir.path().to_str().unwrap()),
    ]))
    .unwrap();
    let mut vfs = project();
    let err = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .unwrap_err();
    check(&err, &["limactl-missing"]);
}
