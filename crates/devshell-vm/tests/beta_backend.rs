//! `DEVSHELL_VM_BACKEND=beta` end to end through the facade: a `SessionHolder::Beta`
//! talking to a real `devshell-vm-sidecar` on a Unix socket builds a real crate with
//! `cargo` (Mode S) and serves guest file operations (Mode P).

#![cfg(feature = "beta")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use devshell_vm::{SessionHolder, VmError};
use devshell_vm_config::VmConfig;
use devshell_vm_test_support::sidecar::{SidecarProcess, sidecar_bin};
use devshell_vm_vfs::Vfs;

fn beta_config(pairs: &[(&str, &str)]) -> VmConfig {
    let mut env = BTreeMap::from([("DEVSHELL_VM_BACKEND".to_owned(), "beta".to_owned())]);
    for (k, v) in pairs {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    VmConfig::from_source(&env).unwrap()
}

#[test]
fn beta_backend_builds_a_crate_in_mode_s() {
    let root = tempfile::tempdir().unwrap();
    let sidecar = SidecarProcess::builder(sidecar_bin())
        .root(root.path())
        .start_unix();
    let staging = root.path().join("staging");
    let config = beta_config(&[
        (
            "DEVSHELL_VM_SOCKET",
            sidecar.socket_path().unwrap().to_str().unwrap(),
        ),
        (
            "DEVSHELL_VM_BETA_SESSION_STAGING",
            staging.to_str().unwrap(),
        ),
    ]);
    let mut session = SessionHolder::try_from_config(&config).unwrap();
    assert_eq!(session.backend_name(), "beta");
    assert!(!session.is_host_only() && !session.is_guest_primary() && !session.is_lima());
    assert!(session.guest_primary_fs_ops_mut().is_none());

    let mut vfs = Vfs::new();
    vfs.mkdir("/ws/app/src").unwrap();
    vfs.write_file(
        "/ws/app/Cargo.toml",
        b"[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_vec(),
    )
    .unwrap();
    vfs.write_file("/ws/app/src/main.rs", b"fn main() {}\n".to_vec())
        .unwrap();
    session.ensure_ready(&vfs, "/ws/app/src").unwrap();
    let status = session
        .run_rust_tool(
            &mut vfs,
            "/ws/app/src",
            "cargo",
            &["build".into(), "--offline".into(), "--quiet".into()],
        )
        .unwrap();
    assert!(status.success(), "cargo build failed: {status}");
    assert!(vfs.exists("/ws/app/target/debug/app"));
    let status = session
        .run_rust_tool(&mut vfs, "/ws/app", "sh", &["-c".into(), "exit 4".into()])
        .unwrap();
    assert_eq!(status.code(), Some(4));
    session.shutdown(&mut vfs, "/ws/app").unwrap();
}

#[test]
fn beta_backend_in_mode_p_exposes_guest_fs_ops() {
    let root = tempfile::tempdir().unwrap();
    let sidecar = SidecarProcess::builder(sidecar_bin())
        .root(root.path())
        .start_unix();
    let staging = root.path().join("guest");
    let config = beta_config(&[
        (
            "DEVSHELL_VM_SOCKET",
            sidecar.socket_path().unwrap().to_str().unwrap(),
        ),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        (
            "DEVSHELL_VM_BETA_SESSION_STAGING",
            staging.to_str().unwrap(),
        ),
        ("DEVSHELL_VM_EXEC_TIMEOUT_MS", "300"),
    ]);
    let mut session = SessionHolder::try_from_config(&config).unwrap();
    assert!(session.is_guest_primary() && !session.is_guest_primary_gamma());
    {
        let (ops, mount) = session.guest_primary_fs_ops_mut().unwrap();
        assert_eq!(mount, "/workspace");
        ops.write_file("/workspace/notes/a.txt", b"guest").unwrap();
        assert_eq!(ops.list_dir("/workspace/notes").unwrap(), ["a.txt"]);
    }
    assert_eq!(
        std::fs::read(staging.join("notes/a.txt")).unwrap(),
        b"guest"
    );
    // The configured exec timeout is the facade's typed timeout.
    let mut vfs = Vfs::new();
    let err = session
        .run_rust_tool(&mut vfs, "/", "sleep", &["30".into()])
        .unwrap_err();
    assert!(matches!(err, VmError::Timeout { .. }), "{err:?}");
}

#[test]
fn beta_without_a_socket_is_unavailable_not_a_panic() {
    let err = SessionHolder::try_from_config(&beta_config(&[])).unwrap_err();
    assert!(matches!(err, VmError::BackendUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("DEVSHELL_VM_SOCKET"), "{err}");
}
