//! Every public name of the seed's `devshell::vm` module is reachable from `devshell_vm`
//! with the same meaning (this file fails to compile when one goes missing), and a
//! session type written against the seed's trait — only `run_rust_tool` (plus the new
//! `run_tool`) — still works through the defaults.

use std::process::ExitStatus;

use devshell_vm::{
    HostSandboxSession, SessionHolder, ToolOutcome, ToolRequest, Vfs, VmConfig, VmError,
    VmExecutionSession, VmSessionInitError, WorkspaceMode,
};

#[test]
fn seed_env_names_are_re_exported_with_their_variable_names() {
    let names = [
        (devshell_vm::ENV_DEVSHELL_VM, "DEVSHELL_VM"),
        (devshell_vm::ENV_DEVSHELL_VM_BACKEND, "DEVSHELL_VM_BACKEND"),
        (
            devshell_vm::ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
            "DEVSHELL_VM_BETA_SESSION_STAGING",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_CONTAINER_IMAGE,
            "DEVSHELL_VM_CONTAINER_IMAGE",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME,
            "DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME",
        ),
        (devshell_vm::ENV_DEVSHELL_VM_EAGER, "DEVSHELL_VM_EAGER"),
        (
            devshell_vm::ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            "DEVSHELL_VM_EXEC_TIMEOUT_MS",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_LIMA_INSTANCE,
            "DEVSHELL_VM_LIMA_INSTANCE",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_LINUX_BINARY,
            "DEVSHELL_VM_LINUX_BINARY",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_REPO_ROOT,
            "DEVSHELL_VM_REPO_ROOT",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP,
            "DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP",
        ),
        (devshell_vm::ENV_DEVSHELL_VM_SOCKET, "DEVSHELL_VM_SOCKET"),
        (
            devshell_vm::ENV_DEVSHELL_VM_STDIO_TRANSPORT,
            "DEVSHELL_VM_STDIO_TRANSPORT",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_WORKSPACE_MODE,
            "DEVSHELL_VM_WORKSPACE_MODE",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_LIMA_HINTS,
            "DEVSHELL_VM_LIMA_HINTS",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL,
            "DEVSHELL_VM_AUTO_BUILD_ESSENTIAL",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_AUTO_BUILD_TODO_GUEST,
            "DEVSHELL_VM_AUTO_BUILD_TODO_GUEST",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_AUTO_TODO_PATH,
            "DEVSHELL_VM_AUTO_TODO_PATH",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_GUEST_HOST_DIR,
            "DEVSHELL_VM_GUEST_HOST_DIR",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_GUEST_TODO_HINT,
            "DEVSHELL_VM_GUEST_TODO_HINT",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_GUEST_WORKSPACE,
            "DEVSHELL_VM_GUEST_WORKSPACE",
        ),
        (devshell_vm::ENV_DEVSHELL_VM_LIMACTL, "DEVSHELL_VM_LIMACTL"),
        (
            devshell_vm::ENV_DEVSHELL_VM_STOP_ON_EXIT,
            "DEVSHELL_VM_STOP_ON_EXIT",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_WORKSPACE_PARENT,
            "DEVSHELL_VM_WORKSPACE_PARENT",
        ),
        (
            devshell_vm::ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT,
            "DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT",
        ),
    ];
    for (constant, name) in names {
        assert_eq!(constant, name);
    }
}

#[test]
fn seed_functions_and_types_are_reachable() {
    // Functions the seed exported, as function values (signature drift fails to compile
    // where the seed's callers would).
    let _: fn(&str) -> std::path::PathBuf = devshell_vm::workspace_parent_for_instance;
    let _: fn() -> std::path::PathBuf = devshell_vm::vm_workspace_host_root;
    let _ = devshell_vm::try_session_rc;
    let _ = devshell_vm::try_session_rc_or_host;
    let _ = devshell_vm::should_delegate_lima_shell;
    let _ = devshell_vm::export_devshell_workspace_root_env;
    let _ = devshell_vm::exec_timeout_ms_from_env;
    let _ = devshell_vm::workspace_mode_from_env;
    let _ = devshell_vm::push_full;
    let _ = devshell_vm::push_incremental;
    let _ = devshell_vm::pull_workspace_to_vfs;
    let _ = devshell_vm::guest_path_is_under_mount;
    let _ = devshell_vm::guest_project_dir_on_guest;
    let _ = devshell_vm::normalize_guest_path;
    let _ = devshell_vm::sync::push_full;
    let _: Option<devshell_vm::VmSyncError> = None;
    let _: Option<devshell_vm::GuestFsError> = None;
    let _: Option<&dyn devshell_vm::GuestFsOps> = None;
    let mut mock = devshell_vm::MockGuestFsOps::new("/workspace").expect("valid mount");
    devshell_vm::GuestFsOps::write_file(&mut mock, "/workspace/a", b"x").expect("mock write");
    #[cfg(all(unix, feature = "lima"))]
    {
        let _: Option<devshell_vm::GammaSession> = None;
        let _: Option<devshell_vm::LimaGuestFsOps> = None;
    }
    assert_eq!(
        WorkspaceMode::Sync,
        VmConfig::host_only().workspace_mode_effective()
    );
    assert_eq!(VmSessionInitError.to_string(), "vm session init failed");
    let err = VmError::BackendNotImplemented("x");
    assert_eq!(err.to_string(), "vm backend not implemented: x");
}

/// A session written against the seed's trait: the seed's defaults for `ensure_ready`
/// and `shutdown` still apply.
struct Recorder {
    host: HostSandboxSession,
    runs: usize,
}

impl VmExecutionSession for Recorder {
    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, VmError> {
        self.runs += 1;
        Ok(self.host.run_rust_tool(vfs, vfs_cwd, program, args)?)
    }

    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError> {
        self.runs += 1;
        Ok(self.host.run_tool(vfs, vfs_cwd, request)?)
    }
}

#[test]
fn a_seed_style_session_gets_the_default_methods() {
    let base = tempfile::tempdir().expect("tempdir");
    let config = VmConfig {
        export_base: Some(base.path().to_path_buf()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    };
    let mut session = Recorder {
        host: HostSandboxSession::new(&config),
        runs: 0,
    };
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    session
        .ensure_ready(&vfs, "/p")
        .expect("default ensure_ready");
    assert!(
        session.host.staging_dir().is_none(),
        "the default does nothing"
    );
    let status = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "echo hi > f".to_owned()],
        )
        .expect("run");
    assert!(status.success());
    assert_eq!(&*vfs.read_file("/p/f").expect("pulled"), b"hi\n");
    session.shutdown(&mut vfs, "/p").expect("default shutdown");
    assert_eq!(session.runs, 1);
    // And the holder still dispatches to the real host session.
    let holder = SessionHolder::new_host_with(&config);
    assert!(holder.is_host_only());
}
