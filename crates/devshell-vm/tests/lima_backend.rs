//! `DEVSHELL_VM_BACKEND=lima` through the facade, against the `limactl` stand-in of
//! `devshell-vm-backend-lima` (guest commands run in a private mount namespace where the
//! workspace parent is bound at `/workspace`): Mode S runs at the guest path, Mode P guest
//! file operations, the Lima-only predicates, and the host fallback without `limactl`.

#![cfg(all(unix, feature = "lima"))]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use devshell_vm::{SessionHolder, VmError, should_delegate_lima_shell_with};
use devshell_vm_config::VmConfig;
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_vfs::Vfs;

/// A `LIMA_HOME` with a running stand-in instance `t` mounting `parent` at `/workspace`.
fn lima_config(
    lima_home: &std::path::Path,
    parent: &std::path::Path,
    guest_mode: bool,
) -> VmConfig {
    let standin =
        devshell_vm_test_support::cargo_bin("devshell-vm-limactl-standin", "limactl-standin");
    std::fs::create_dir_all(lima_home.join("t")).unwrap();
    let state = format!(
        r#"{{"status":"Running","mounts":[{{"location":{:?},"mountPoint":"/workspace","writable":true}}],"home":{:?}}}"#,
        parent.to_str().unwrap(),
        lima_home.to_str().unwrap()
    );
    std::fs::write(lima_home.join("t/standin.json"), state).unwrap();
    let mut env = BTreeMap::from([
        ("DEVSHELL_VM_BACKEND".to_owned(), "lima".to_owned()),
        ("DEVSHELL_VM_LIMA_INSTANCE".to_owned(), "t".to_owned()),
        (
            "DEVSHELL_VM_LIMACTL".to_owned(),
            standin.to_str().unwrap().to_owned(),
        ),
        (
            "LIMA_HOME".to_owned(),
            lima_home.to_str().unwrap().to_owned(),
        ),
        (
            "DEVSHELL_VM_WORKSPACE_PARENT".to_owned(),
            parent.to_str().unwrap().to_owned(),
        ),
        ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
    ]);
    if guest_mode {
        env.insert("DEVSHELL_VM_WORKSPACE_MODE".to_owned(), "guest".to_owned());
    }
    VmConfig::from_source(&env).unwrap()
}

fn captured(program: &str, args: &[&str]) -> ToolRequest {
    ToolRequest::new(program, args.iter().copied())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

#[test]
fn lima_mode_s_runs_at_the_guest_path_and_syncs_back() {
    let (home, parent) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = lima_config(home.path(), parent.path(), false);
    let mut session = SessionHolder::try_from_config(&config).unwrap();
    assert_eq!(session.backend_name(), "lima");
    assert!(session.is_lima() && !session.is_host_only() && !session.is_guest_primary());
    assert!(!session.is_guest_primary_gamma());
    assert!(session.guest_primary_gamma_mut().is_none());
    assert!(session.guest_primary_fs_ops_mut().is_none());

    let mut vfs = Vfs::new();
    vfs.mkdir("/app/src").unwrap();
    vfs.write_file("/app/Cargo.toml", b"[package]\nname = \"app\"\n".to_vec())
        .unwrap();
    let request = captured(
        "sh",
        &[
            "-c",
            "pwd; cat ../Cargo.toml | head -1; echo made > out.txt",
        ],
    );
    let outcome = session.run_tool(&mut vfs, "/app/src", &request).unwrap();
    assert!(outcome.exec.success(), "{outcome:?}");
    // The run happened at the guest path of the session's staging dir inside the mount.
    let stdout = String::from_utf8_lossy(&outcome.exec.stdout).into_owned();
    assert!(
        stdout.starts_with("/workspace/.devshell-vm/") && stdout.ends_with("/app/src\n[package]\n"),
        "{stdout}"
    );
    assert_eq!(&*vfs.read_file("/app/src/out.txt").unwrap(), b"made\n");
    session.shutdown(&mut vfs, "/app").unwrap();
}

#[test]
fn lima_mode_p_serves_guest_file_operations() {
    let (home, parent) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = lima_config(home.path(), parent.path(), true);
    let session = SessionHolder::try_from_config(&config).unwrap();
    let session = std::rc::Rc::new(std::cell::RefCell::new(session));
    assert!(should_delegate_lima_shell_with(
        &session, true, false, false
    ));
    assert!(!should_delegate_lima_shell_with(
        &session, true, false, true
    ));
    assert!(!should_delegate_lima_shell_with(
        &session, false, false, false
    ));
    let mut session = session.borrow_mut();
    assert!(session.is_guest_primary() && session.is_guest_primary_gamma());
    {
        let (ops, mount) = session.guest_primary_fs_ops_mut().unwrap();
        assert_eq!(mount, "/workspace");
        ops.write_file("/workspace/p/notes.txt", b"hello").unwrap();
        assert_eq!(ops.read_file("/workspace/p/notes.txt").unwrap(), b"hello");
    }
    assert_eq!(
        std::fs::read(parent.path().join("p/notes.txt")).unwrap(),
        b"hello"
    );
    let gamma = session.guest_primary_gamma_mut().unwrap();
    assert_eq!(gamma.lima_instance_name(), "t");
}

#[test]
fn lima_without_limactl_is_unavailable_and_falls_back_to_host() {
    let env = BTreeMap::from([
        ("DEVSHELL_VM_BACKEND".to_owned(), "lima".to_owned()),
        ("PATH".to_owned(), "/nonexistent".to_owned()),
    ]);
    let config = VmConfig::from_source(&env).unwrap();
    let err = SessionHolder::try_from_config(&config).unwrap_err();
    assert!(matches!(err, VmError::BackendUnavailable { .. }), "{err}");
    assert!(err.to_string().contains("limactl not found"), "{err}");
    let mut stderr = Vec::new();
    let session = devshell_vm::try_session_rc_or_host_from_config(&config, &mut stderr);
    assert!(session.borrow().is_host_only());
}

#[test]
fn lima_guest_fs_ops_owns_a_session_and_delegates() {
    use devshell_vm::{GuestFsOps, LimaGuestFsOps};
    let (home, parent) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = lima_config(home.path(), parent.path(), true);
    let mut ops = LimaGuestFsOps::new(&config).unwrap();
    assert_eq!(ops.mount(), "/workspace");
    assert_eq!(ops.session().lima_instance_name(), "t");
    ops.mkdir("/workspace/q/sub").unwrap();
    ops.write_file("/workspace/q/sub/a.txt", b"via ops")
        .unwrap();
    assert_eq!(
        std::fs::read(parent.path().join("q/sub/a.txt")).unwrap(),
        b"via ops"
    );
    assert_eq!(ops.list_dir("/workspace/q/sub").unwrap(), ["a.txt"]);
    assert!(ops.exists("/workspace/q/sub/a.txt").unwrap());
    ops.rename("/workspace/q/sub/a.txt", "/workspace/q/b.txt")
        .unwrap();
    assert_eq!(ops.read_file("/workspace/q/b.txt").unwrap(), b"via ops");
    ops.remove("/workspace/q").unwrap();
    assert!(!parent.path().join("q").exists());
    let err = ops.read_file("/workspace/q/b.txt").unwrap_err();
    assert!(err.to_string().contains("/workspace/q/b.txt"), "{err}");

    let no_limactl = VmConfig::from_source(&BTreeMap::from([
        ("DEVSHELL_VM_BACKEND".to_owned(), "lima".to_owned()),
        ("PATH".to_owned(), "/nonexistent".to_owned()),
    ]))
    .unwrap();
    let err = LimaGuestFsOps::new(&no_limactl).unwrap_err();
    assert!(matches!(err, VmError::BackendUnavailable { .. }), "{err}");
}
