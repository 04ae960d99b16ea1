//! [`HostError`]: everything that can go wrong in the host backend besides the tool itself.

use std::path::PathBuf;

use devshell_vm_exec::ExecError;
use devshell_vm_session::SessionError;

/// An infrastructure failure of a [`crate::HostSandboxSession`].
///
/// The tool's own failure (non-zero exit, signal) is never an error: it is the
/// `ExitStatus` or `ToolOutcome` a run returns. A timeout is an error of
/// `run_rust_tool` (there is no exit status to report: [`SessionError::Timeout`]) and a
/// termination in the outcome of `run_tool`. Each message names what failed; the cause
/// is the [`std::error::Error::source`], printed once by whoever prints the chain.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// What every backend shares: the cwd, project directories, excludes, the sync
    /// around a run, timeouts and cancellations.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The export base or the session's staging directory could not be created.
    #[error("cannot create host staging directory {path}")]
    StagingCreate {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The staging directory could not be removed at shutdown.
    #[error("cannot remove host staging directory {path}")]
    StagingRemove {
        /// The directory that could not be removed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The tool could not be found or started (it never ran).
    #[error("cannot run `{program}`")]
    Exec {
        /// The program as requested.
        program: String,
        /// The exec failure (for a missing program it names the `PATH` searched).
        #[source]
        source: ExecError,
    },
    /// The tool could not be run confined (the sandbox could not start, the requested
    /// isolation mode is unavailable, the fetch phase failed).
    #[error("cannot run `{program}` confined")]
    Sandbox {
        /// The program as requested.
        program: String,
        /// What went wrong.
        #[source]
        source: devshell_vm_sandbox::SandboxError,
    },
}
