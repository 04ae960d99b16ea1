//! [`VmExecutionSession`]: the one interface every session offers to callers of this
//! crate (the seed's trait, grown), implemented once for every backend by a blanket
//! impl over [`devshell_vm_session::Backend`].

use std::process::ExitStatus;

use devshell_vm_exec::ToolRequest;
use devshell_vm_session::{Backend, SyncObserver};
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

use crate::VmError;

/// Abstraction for a devshell execution session (host staging dir, γ VM, or β sidecar).
///
/// Every backend session implements it through the blanket impl below; a caller's own
/// session type (as the earlier library's callers wrote them) implements
/// `run_rust_tool` and gets the rest from the defaults.
pub trait VmExecutionSession {
    /// Prepares the session for tools run from `vfs_cwd` (e.g. start the VM, create the
    /// staging directory, first push), so the first run pays only for its own changes.
    /// Calling it is optional: every run prepares what it needs.
    ///
    /// # Errors
    /// Backend-specific failures while preparing VM or staging state.
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        let _ = (vfs, vfs_cwd);
        Ok(())
    }

    /// Runs `program args…` (normally `cargo` or `rustup`) with cwd matching `vfs_cwd`
    /// and the caller's stdio; afterwards `vfs` holds what the tool changed (Mode S),
    /// also when it failed. Ctrl-C is forwarded only after
    /// [`Self::set_forward_interrupts`]`(true)`.
    ///
    /// # Errors
    /// Infrastructure failures (sync, spawn, missing program, transport), and
    /// [`VmError::Timeout`] when the configured exec timeout killed the tool. A tool
    /// that exits non-zero is `Ok` with that status.
    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, VmError>;

    /// The options form of [`Self::run_rust_tool`] for embedders: environment additions,
    /// stdio inherit/capture, a timeout (`None`: the configured one), and a typed outcome
    /// (exit code or signal, timed out, captured output, duration, push and pull reports).
    ///
    /// Every backend session implements it. The default, for a caller's own session
    /// type written against the earlier library's trait (which had only
    /// `run_rust_tool`), refuses with [`VmError::BackendNotImplemented`] rather than run
    /// the request some other way.
    ///
    /// # Errors
    /// Infrastructure failures only; the tool's failure or timeout is in the outcome.
    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError> {
        let _ = (vfs, vfs_cwd, request);
        Err(VmError::BackendNotImplemented(
            "this session implements only run_rust_tool (the earlier library's trait); \
             implement VmExecutionSession::run_tool for options and typed outcomes",
        ))
    }

    /// Installs a progress callback for the session's pushes and pulls (front ends show
    /// a progress line for long syncs with it). The default ignores it (a session that
    /// does not sync reports no progress).
    fn set_sync_observer(&mut self, observer: SyncObserver) {
        let _ = observer;
    }

    /// Paths (globs relative to the project root, e.g. `target/**`) that pulls leave out
    /// of the VFS. The default accepts none (a session that does not sync has nothing
    /// to leave out): it refuses any pattern rather than ignore it.
    ///
    /// # Errors
    /// An invalid pattern; nothing changes then.
    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), VmError> {
        if globs.is_empty() {
            Ok(())
        } else {
            Err(VmError::BackendNotImplemented(
                "this session does not sync, so it cannot exclude paths from pulls",
            ))
        }
    }

    /// Whether [`Self::run_rust_tool`] forwards `SIGINT`/`SIGTERM`/`SIGHUP` to the tool
    /// (installing process-wide handlers for it). Off by default: a library call leaves
    /// the application's signal handlers alone. The default ignores the setting.
    fn set_forward_interrupts(&mut self, forward: bool) {
        let _ = forward;
    }

    /// Tears the session down (remove staging, close connections, stop the VM when
    /// configured).
    ///
    /// # Errors
    /// Backend-specific failures during shutdown.
    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        let _ = (vfs, vfs_cwd);
        Ok(())
    }
}

/// Every backend session (host, β, Lima — and a boxed one) is a [`VmExecutionSession`]:
/// one impl, forwarding to the [`Backend`] trait the backends implement, with each
/// backend's error converted into [`VmError`].
impl<B> VmExecutionSession for B
where
    B: Backend,
    VmError: From<B::Error>,
{
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        Ok(Backend::ensure_ready(self, vfs, vfs_cwd)?)
    }

    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, VmError> {
        Ok(Backend::run_rust_tool(self, vfs, vfs_cwd, program, args)?)
    }

    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError> {
        Ok(Backend::run_tool(self, vfs, vfs_cwd, request)?)
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        Backend::set_sync_observer(self, observer);
    }

    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), VmError> {
        Ok(Backend::set_pull_excludes(self, globs)?)
    }

    fn set_forward_interrupts(&mut self, forward: bool) {
        Backend::set_forward_interrupts(self, forward);
    }

    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        Ok(Backend::shutdown(self, vfs, vfs_cwd)?)
    }
}
