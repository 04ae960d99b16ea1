//! [`HostError`]: everything that can go wrong in the host backend besides the tool itself.

use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_exec::ExecError;
use devshell_vm_sync::VmSyncError;

/// An infrastructure failure of a [`crate::HostSandboxSession`].
///
/// The tool's own failure (non-zero exit, signal) is never an error: it is the
/// `ExitStatus` or `ToolOutcome` a run returns. A timeout is an error of
/// [`crate::HostSandboxSession::run_rust_tool`] (there is no exit status to report) and
/// a flag in the outcome of [`crate::HostSandboxSession::run_tool`].
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The export base or the session's staging directory could not be created.
    #[error("cannot create host staging directory {path}: {source}")]
    StagingCreate {
        /// The directory that could not be created.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The staging directory could not be removed at shutdown.
    #[error("cannot remove host staging directory {path}: {source}")]
    StagingRemove {
        /// The directory that could not be removed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The VFS cwd is not usable (missing, not a directory, invalid path).
    #[error("invalid VFS working directory `{cwd}`: {source}")]
    Cwd {
        /// The cwd as given by the caller.
        cwd: String,
        /// Why it is unusable.
        #[source]
        source: Box<VmSyncError>,
    },
    /// Pushing the project to staging or pulling it back failed.
    #[error("sync of VFS `{vfs_path}` with the host staging directory failed: {source}")]
    Sync {
        /// The VFS project root being synced.
        vfs_path: String,
        /// The sync failure.
        #[source]
        source: Box<VmSyncError>,
    },
    /// The tool could not be found or started (it never ran).
    #[error("cannot run `{program}`: {source}")]
    Exec {
        /// The program as requested.
        program: String,
        /// The exec failure (for a missing program it names the `PATH` searched).
        #[source]
        source: ExecError,
    },
    /// The tool ran, but its results could not be pulled back into the VFS. The tool's
    /// outcome is lost as a value, so it is described in the message.
    #[error(
        "`{program}` finished ({termination}) but pulling its results into VFS `{vfs_path}` failed: {source}"
    )]
    PullAfterRun {
        /// The program that ran.
        program: String,
        /// How it ended, for the message.
        termination: String,
        /// The VFS project root.
        vfs_path: String,
        /// The pull failure.
        #[source]
        source: Box<VmSyncError>,
    },
    /// The tool ran past the exec timeout; its whole process group was killed. What it
    /// wrote before that was still pulled into the VFS.
    #[error("`{program}` timed out after {timeout:?}; its process group was killed")]
    Timeout {
        /// The program that timed out.
        program: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The tool was cancelled through a cancel handle; what it wrote was still pulled.
    #[error("`{program}` was cancelled; its process group was killed")]
    Cancelled {
        /// The program that was cancelled.
        program: String,
    },
    /// A pull-exclude glob is invalid.
    #[error("invalid pull exclude pattern: {source}")]
    Exclude {
        /// The rejection from the sync engine (names the pattern).
        #[source]
        source: Box<VmSyncError>,
    },
}
