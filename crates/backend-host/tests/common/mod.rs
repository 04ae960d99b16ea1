//! Helpers shared by this crate's test binaries (each binary uses some of them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::VmConfig;
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

pub(crate) fn config(base: &Path) -> VmConfig {
    VmConfig {
        export_base: Some(base.to_path_buf()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    }
}

pub(crate) fn sh_out(
    session: &mut HostSandboxSession,
    vfs: &mut Vfs,
    cwd: &str,
    script: &str,
) -> ToolOutcome {
    let request = ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    let outcome = session
        .run_tool(vfs, cwd, &request)
        .unwrap_or_else(|err| panic!("sh -c {script:?}: {err}"));
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "sh -c {script:?}: {}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    outcome
}

/// [`sh_out`] for runs whose outcome is not inspected.
pub(crate) fn sh(session: &mut HostSandboxSession, vfs: &mut Vfs, cwd: &str, script: &str) {
    let _ = sh_out(session, vfs, cwd, script);
}

pub(crate) fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            return Some(path);
        }
        if entry.file_type().ok()?.is_dir()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}
