//! [`VmExecutionSession`]: the one interface every backend session offers, and its
//! implementation for the backend types (backends never depend on this crate).

use std::process::ExitStatus;

use devshell_vm_backend_host::{HostSandboxSession, SyncObserver};
use devshell_vm_exec::ToolRequest;
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

use crate::VmError;

/// Abstraction for a devshell execution session (host staging dir, γ VM, or β sidecar).
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

    /// Runs `program args…` (normally `cargo` or `rustup`) with cwd matching `vfs_cwd`,
    /// the caller's stdio and Ctrl-C forwarded; afterwards `vfs` holds what the tool
    /// changed (Mode S), also when it failed.
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
    /// # Errors
    /// Infrastructure failures only; the tool's failure or timeout is in the outcome.
    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError>;

    /// Installs a progress callback for the session's pushes and pulls (front ends show
    /// a progress line for long syncs with it). The default ignores it (a session that
    /// does not sync reports no progress).
    fn set_sync_observer(&mut self, observer: SyncObserver) {
        let _ = observer;
    }

    /// Tears the session down (final pull where the backend needs one, remove staging,
    /// stop the VM when configured).
    ///
    /// # Errors
    /// Backend-specific failures during shutdown.
    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        let _ = (vfs, vfs_cwd);
        Ok(())
    }
}

/// A boxed session is a session ([`crate::SessionHolder::Gamma`] boxes the Lima one).
impl<T: VmExecutionSession + ?Sized> VmExecutionSession for Box<T> {
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        (**self).ensure_ready(vfs, vfs_cwd)
    }

    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, VmError> {
        (**self).run_rust_tool(vfs, vfs_cwd, program, args)
    }

    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError> {
        (**self).run_tool(vfs, vfs_cwd, request)
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        (**self).set_sync_observer(observer);
    }

    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        (**self).shutdown(vfs, vfs_cwd)
    }
}

/// Implements [`VmExecutionSession`] for a backend session type whose inherent methods
/// carry the same names (each backend's error converts into [`VmError`]). Only
/// `shutdown` differs between backends, so it is given as an expression over the
/// session and the trait's arguments.
macro_rules! delegate_session {
    ($(#[$attr:meta])* $ty:ty, shutdown($session:ident, $vfs:ident, $cwd:ident) => $shutdown:expr) => {
        $(#[$attr])*
        impl VmExecutionSession for $ty {
            fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), VmError> {
                Ok(<$ty>::ensure_ready(self, vfs, vfs_cwd)?)
            }

            fn run_rust_tool(
                &mut self,
                vfs: &mut Vfs,
                vfs_cwd: &str,
                program: &str,
                args: &[String],
            ) -> Result<ExitStatus, VmError> {
                Ok(<$ty>::run_rust_tool(self, vfs, vfs_cwd, program, args)?)
            }

            fn run_tool(
                &mut self,
                vfs: &mut Vfs,
                vfs_cwd: &str,
                request: &ToolRequest,
            ) -> Result<ToolOutcome, VmError> {
                Ok(<$ty>::run_tool(self, vfs, vfs_cwd, request)?)
            }

            fn set_sync_observer(&mut self, observer: SyncObserver) {
                <$ty>::set_sync_observer(self, observer);
            }

            fn shutdown(&mut self, $vfs: &mut Vfs, $cwd: &str) -> Result<(), VmError> {
                let $session = self;
                Ok($shutdown?)
            }
        }
    };
}

// Every run already pulled its results, so nothing is left to bring back: shutdown
// only removes the staging directory.
delegate_session!(HostSandboxSession, shutdown(session, _vfs, _cwd) => session.shutdown());

// Every run already pulled its results: shutdown ends the sidecar session, drops the
// connection (stopping a sidecar the session spawned) and, in Mode S, removes the
// staging directory the session created.
delegate_session!(
    #[cfg(feature = "beta")]
    devshell_vm_backend_beta::BetaSession,
    shutdown(session, vfs, cwd) => session.shutdown(vfs, cwd)
);

// Every run already pulled its results: shutdown closes the guest channel and, with
// `DEVSHELL_VM_STOP_ON_EXIT`, stops the Lima instance.
delegate_session!(
    #[cfg(all(unix, feature = "lima"))]
    devshell_vm_backend_lima::GammaSession,
    shutdown(session, _vfs, _cwd) => session.shutdown()
);
