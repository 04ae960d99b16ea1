//! Every public name of the seed's `devshell::vm` module is reachable from `devshell_vm`
//! with the same meaning (this file fails to compile when one goes missing), and a
//! session type written against the seed's trait — only `run_rust_tool` (plus the new
//! `run_tool`) — still works through the defaults.

#![allow(
    clippy::type_complexity,
    clippy::too_many_lines,
    clippy::items_after_statements,
    reason = "signatures are pinned as the earlier library wrote them, one after the other"
)]

use std::process::ExitStatus;

use devshell_vm::{
    HostSandboxSession, SessionHolder, ToolRequest, Vfs, VmConfig, VmError, VmExecutionSession,
    VmSessionInitError, WorkspaceMode,
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
    use std::cell::RefCell;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    use devshell_vm::vfs::{Node, VfsError};
    use devshell_vm::{GuestFsError, GuestFsOps};

    // Functions the seed exported, as typed function pointers: a changed signature fails
    // to compile here (docs/MIGRATION.md lists the ones that changed on purpose).
    let _: fn(&str) -> PathBuf = devshell_vm::workspace_parent_for_instance;
    let _: fn() -> PathBuf = devshell_vm::vm_workspace_host_root;
    let _: fn(&mut dyn Write) -> Result<Rc<RefCell<SessionHolder>>, VmSessionInitError> =
        devshell_vm::try_session_rc;
    let _: fn(&mut dyn Write) -> Rc<RefCell<SessionHolder>> = devshell_vm::try_session_rc_or_host;
    let _: fn(&Rc<RefCell<SessionHolder>>, bool, bool) -> bool =
        devshell_vm::should_delegate_lima_shell;
    let _: fn(&str, &str) -> bool = devshell_vm::guest_path_is_under_mount;
    // Changed on purpose (docs/MIGRATION.md): these return `Result` now.
    let _: fn() -> Result<(&'static str, PathBuf), VmError> =
        devshell_vm::export_devshell_workspace_root_env;
    let _: fn() -> Result<Option<u64>, devshell_vm::ConfigError> =
        devshell_vm::exec_timeout_ms_from_env;
    let _: fn() -> Result<WorkspaceMode, devshell_vm::ConfigError> =
        devshell_vm::workspace_mode_from_env;
    let _: fn(&str) -> Result<String, GuestFsError> = devshell_vm::normalize_guest_path;
    let _: fn(&str, &str) -> Result<String, GuestFsError> = devshell_vm::guest_project_dir_on_guest;
    type Push = fn(
        &Vfs,
        &str,
        &mut devshell_vm::sync::SyncState,
    ) -> Result<devshell_vm::SyncReport, devshell_vm::VmSyncError>;
    let _: Push = devshell_vm::push_full;
    let _: Push = devshell_vm::push_incremental;
    let _: Push = devshell_vm::sync::push_full;
    let _: fn(
        &mut devshell_vm::sync::SyncState,
        &str,
        &mut Vfs,
    ) -> Result<devshell_vm::SyncReport, devshell_vm::VmSyncError> =
        devshell_vm::pull_workspace_to_vfs;

    // `SessionHolder` and `VmExecutionSession`, method by method.
    let _: fn(&VmConfig) -> Result<SessionHolder, VmError> = SessionHolder::try_from_config;
    let _: fn() -> SessionHolder = SessionHolder::new_host;
    let _: fn(&mut SessionHolder, &Vfs, &str) -> Result<(), VmError> = SessionHolder::ensure_ready;
    let _: fn(&mut SessionHolder, &mut Vfs, &str, &str, &[String]) -> Result<ExitStatus, VmError> =
        SessionHolder::run_rust_tool;
    let _: fn(&mut SessionHolder, &mut Vfs, &str) -> Result<(), VmError> = SessionHolder::shutdown;
    let _: fn(&mut SessionHolder) -> Option<(&mut dyn GuestFsOps, String)> =
        SessionHolder::guest_primary_fs_ops_mut;
    let _: fn(&SessionHolder) -> bool = SessionHolder::is_guest_primary;
    let _: fn(&SessionHolder) -> bool = SessionHolder::is_guest_primary_gamma;
    let _: fn(&SessionHolder) -> bool = SessionHolder::is_host_only;
    let _: fn(&SessionHolder) -> std::io::Error = SessionHolder::exec_lima_interactive_shell;
    let _: fn(&mut HostSandboxSession, &Vfs, &str) -> Result<(), VmError> =
        <HostSandboxSession as VmExecutionSession>::ensure_ready;
    let _: fn(
        &mut HostSandboxSession,
        &mut Vfs,
        &str,
        &str,
        &[String],
    ) -> Result<ExitStatus, VmError> = <HostSandboxSession as VmExecutionSession>::run_rust_tool;
    let _: fn(&mut HostSandboxSession, &mut Vfs, &str) -> Result<(), VmError> =
        <HostSandboxSession as VmExecutionSession>::shutdown;

    // `devshell::vfs`, the earlier VFS's names.
    let _: fn() -> Vfs = Vfs::new;
    let _: fn(&mut Vfs, &str) -> Result<(), VfsError> = Vfs::mkdir;
    let _: fn(&mut Vfs, &str) -> Result<(), VfsError> = Vfs::set_cwd;
    let _: fn(&mut Vfs, &str) -> Result<(), VfsError> = Vfs::touch;
    let _: fn(&Vfs) -> &str = Vfs::cwd;
    let _: fn(&Vfs, &str) -> Result<Vec<u8>, VfsError> = Vfs::read_file_vec;
    let _: fn(&Vfs, &str) -> String = Vfs::resolve_to_absolute;
    let _: fn(&Vfs, &str) -> Result<Node, VfsError> = Vfs::resolve_absolute;
    let _: fn(&Vfs, &str, &Path) -> Result<(), VfsError> = Vfs::copy_tree_to_host;
    let _: fn(&str) -> String = devshell_vm::vfs::normalize_path;
    let _: fn(&str, &str) -> String = devshell_vm::vfs::resolve_path_with_cwd;
    // `write_file` takes every content shape the earlier callers passed.
    let _: fn(&mut Vfs, &str, Vec<u8>) -> Result<(), VfsError> = Vfs::write_file;
    let _: fn(&mut Vfs, &str, String) -> Result<(), VfsError> = Vfs::write_file;
    let _: fn(&mut Vfs, &str, devshell_vm::vfs::Content) -> Result<(), VfsError> = Vfs::write_file;
    fn write_slice<'a>() -> fn(&mut Vfs, &str, &'a [u8]) -> Result<(), VfsError> {
        Vfs::write_file
    }
    fn write_str<'a>() -> fn(&mut Vfs, &str, &'a str) -> Result<(), VfsError> {
        Vfs::write_file
    }
    fn write_literal<'a>() -> fn(&mut Vfs, &str, &'a [u8; 3]) -> Result<(), VfsError> {
        Vfs::write_file
    }
    let mut vfs = Vfs::new();
    vfs.mkdir("/a").expect("mkdir");
    write_slice()(&mut vfs, "/a/slice", &b"abc"[..]).expect("slice");
    write_str()(&mut vfs, "/a/str", "abc").expect("str");
    write_literal()(&mut vfs, "/a/lit", b"abc").expect("literal");
    for path in ["/a/slice", "/a/str", "/a/lit"] {
        assert_eq!(vfs.read_file_vec(path).expect("read"), b"abc");
    }

    // Guest file operations and the types.
    let _: Option<devshell_vm::VmSyncError> = None;
    let _: Option<GuestFsError> = None;
    let _: Option<&dyn GuestFsOps> = None;
    let mut mock = devshell_vm::MockGuestFsOps::new("/workspace").expect("valid mount");
    let _: fn(&mut devshell_vm::MockGuestFsOps, &str, &[u8]) -> Result<(), GuestFsError> =
        <devshell_vm::MockGuestFsOps as GuestFsOps>::write_file;
    let _: fn(&mut devshell_vm::MockGuestFsOps, &str) -> Result<Vec<u8>, GuestFsError> =
        <devshell_vm::MockGuestFsOps as GuestFsOps>::read_file;
    let _: fn(&mut devshell_vm::MockGuestFsOps, &str) -> Result<Vec<String>, GuestFsError> =
        <devshell_vm::MockGuestFsOps as GuestFsOps>::list_dir;
    GuestFsOps::write_file(&mut mock, "/workspace/a", b"x").expect("mock write");
    #[cfg(all(unix, feature = "lima"))]
    {
        let _: Option<devshell_vm::GammaSession> = None;
        let _: Option<devshell_vm::LimaGuestFsOps> = None;
        let _: fn(&mut SessionHolder) -> Option<&mut devshell_vm::GammaSession> =
            SessionHolder::guest_primary_gamma_mut;
        let _: fn(&devshell_vm::GammaSession) -> bool =
            devshell_vm::GammaSession::syncs_vfs_with_host_workspace;
        let _: fn(&devshell_vm::GammaSession) -> &str = devshell_vm::GammaSession::guest_mount;
        let _: fn(&devshell_vm::GammaSession) -> (String, String) =
            devshell_vm::GammaSession::lima_interactive_shell_workdir_and_inner;
    }
    assert_eq!(
        WorkspaceMode::Sync,
        VmConfig::host_only().workspace_mode_effective()
    );
    assert_eq!(VmSessionInitError.to_string(), "vm session init failed");
    let err = VmError::BackendNotImplemented("x");
    assert_eq!(err.to_string(), "vm backend not implemented: x");
}

/// A session written against the seed's trait (only `run_rust_tool`): it compiles
/// unchanged, and the seed's defaults for `ensure_ready` and `shutdown` still apply.
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
        self.host.run_rust_tool(vfs, vfs_cwd, program, args)
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
    // `run_tool` came later: a session written against the earlier trait refuses it
    // clearly instead of running the request some other way.
    let refused = session
        .run_tool(
            &mut vfs,
            "/p",
            &ToolRequest::new("true", Vec::<String>::new()),
        )
        .expect_err("not implemented by a seed-style session");
    assert!(
        matches!(refused, VmError::BackendNotImplemented(_)),
        "{refused}"
    );
    session.shutdown(&mut vfs, "/p").expect("default shutdown");
    assert_eq!(session.runs, 1);
    // And the holder still dispatches to the real host session.
    let holder = SessionHolder::new_host_with(&config);
    assert!(holder.is_host_only());
}
