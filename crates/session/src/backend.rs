//! [`Backend`]: the one trait the host, Lima and β sessions implement.

use std::process::ExitStatus;
use std::time::Duration;

use devshell_vm_exec::{CancelHandle, NoExitStatus, StdinMode, StreamKind, ToolRequest};
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

use crate::{SessionError, SyncObserver};

/// A session that runs tools against a VFS. One method runs tools,
/// [`Backend::run_tool_with`]; `run_tool` and `run_rust_tool` are provided on top of it,
/// so every backend maps outcomes to errors with the same words. The settings every
/// backend must honour (progress observer, pull excludes, interrupt forwarding) are
/// required too, so no backend can drop one silently; preparing and shutting down have
/// defaults.
pub trait Backend {
    /// The backend's error type. The shared failures ([`SessionError`]) convert into it.
    type Error: std::error::Error + From<SessionError>;

    /// Runs one tool described by `request` from `vfs_cwd` (program, args, environment
    /// additions, stdio modes, timeout — `None` means the session's timeout), sending
    /// output of streams in [`devshell_vm_exec::OutputMode::Stream`] to `on_output`;
    /// `cancel` stops the run. In Mode S the VFS holds the tool's changes afterwards,
    /// also when it failed.
    ///
    /// # Errors
    /// Infrastructure failures only; the tool's failure, timeout or cancellation is in
    /// the outcome.
    fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, Self::Error>;

    /// [`Self::run_tool_with`] without streaming or cancellation.
    ///
    /// # Errors
    /// As [`Self::run_tool_with`].
    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, Self::Error> {
        self.run_tool_with(vfs, vfs_cwd, request, &mut |_, _| {}, None)
    }

    /// Runs `program args…` (normally `cargo` or `rustup`) from `vfs_cwd` with the
    /// caller's stdin, stdout and stderr and returns its exit status. Interrupts are
    /// forwarded to the tool only when [`Self::forwards_interrupts`] says so (the
    /// embedding application's signal handlers are left alone otherwise).
    ///
    /// # Errors
    /// Infrastructure failures, and [`SessionError::Timeout`] /
    /// [`SessionError::Cancelled`] (converted) when the tool was stopped: there is no
    /// exit status to report then. Its writes were pulled all the same.
    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, Self::Error> {
        let request = ToolRequest::new(program, args.iter().cloned())
            .stdin(StdinMode::Inherit)
            .forward_interrupts(self.forwards_interrupts())
            .or_timeout(self.exec_timeout());
        let outcome = self.run_tool(vfs, vfs_cwd, &request)?;
        outcome
            .exec
            .exit_status_or_reason()
            .map_err(|reason| stopped(program, reason, request.timeout).into())
    }

    /// The timeout applied to runs that do not set their own.
    fn exec_timeout(&self) -> Option<Duration> {
        None
    }

    /// Whether [`Self::run_rust_tool`] forwards this process's `SIGINT`/`SIGTERM`/
    /// `SIGHUP` to the tool (a local process group, or a cancel of a remote run),
    /// installing process-wide handlers for it. Every backend starts with `false`: a
    /// library call must not take over the application's signals unless the caller asks
    /// (the CLI asks).
    fn set_forward_interrupts(&mut self, forward: bool);

    /// The current [`Self::set_forward_interrupts`] setting.
    fn forwards_interrupts(&self) -> bool;

    /// Paths (globs relative to the project root, e.g. `target/**`) that pulls leave out
    /// of the VFS, for every project of the session. Default: none.
    ///
    /// # Errors
    /// [`SessionError::Exclude`] (converted) when a pattern is invalid; nothing changes.
    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), Self::Error>;

    /// Prepares the session for tools run from `vfs_cwd` (start the VM, create staging,
    /// the first push), so the first run pays only for its own changes. Optional.
    ///
    /// # Errors
    /// Backend failures while preparing.
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), Self::Error> {
        let _ = (vfs, vfs_cwd);
        Ok(())
    }

    /// Installs a progress callback for every push and pull, also of projects synced
    /// already.
    fn set_sync_observer(&mut self, observer: SyncObserver);

    /// Tears the session down (remove staging, close connections, stop the VM when
    /// configured). Every run already pulled its results.
    ///
    /// # Errors
    /// Backend failures during shutdown.
    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), Self::Error> {
        let _ = (vfs, vfs_cwd);
        Ok(())
    }
}

/// A boxed backend is a backend (the facade boxes the large Lima session).
impl<B: Backend + ?Sized> Backend for Box<B> {
    type Error = B::Error;

    fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, Self::Error> {
        (**self).run_tool_with(vfs, vfs_cwd, request, on_output, cancel)
    }

    fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, Self::Error> {
        (**self).run_tool(vfs, vfs_cwd, request)
    }

    fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, Self::Error> {
        (**self).run_rust_tool(vfs, vfs_cwd, program, args)
    }

    fn exec_timeout(&self) -> Option<Duration> {
        (**self).exec_timeout()
    }

    fn set_forward_interrupts(&mut self, forward: bool) {
        (**self).set_forward_interrupts(forward);
    }

    fn forwards_interrupts(&self) -> bool {
        (**self).forwards_interrupts()
    }

    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), Self::Error> {
        (**self).set_pull_excludes(globs)
    }

    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), Self::Error> {
        (**self).ensure_ready(vfs, vfs_cwd)
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        (**self).set_sync_observer(observer);
    }

    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), Self::Error> {
        (**self).shutdown(vfs, vfs_cwd)
    }
}

/// The error for a run that ended without an exit status.
#[must_use]
pub fn stopped(program: &str, reason: NoExitStatus, timeout: Option<Duration>) -> SessionError {
    match reason {
        NoExitStatus::TimedOut => SessionError::Timeout {
            program: program.to_owned(),
            timeout: timeout.unwrap_or_default(),
        },
        NoExitStatus::Cancelled => SessionError::Cancelled {
            program: program.to_owned(),
        },
    }
}
