//! [`SessionError`]: the failures every backend shares (cwd, project directories,
//! excludes, sync around a run, timeouts and cancellations).

use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_exec::Termination;
use devshell_vm_sync::VmSyncError;

/// A failure of the shared session layer. Each backend's error type wraps it
/// transparently (`#[error(transparent)]`), so the words are the same for every backend
/// and each cause is printed once: a variant's message never repeats its source's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The VFS cwd is not usable (missing, not a directory, invalid path).
    #[error("invalid VFS working directory `{cwd}`")]
    Cwd {
        /// The cwd as given by the caller.
        cwd: String,
        /// Why it is unusable.
        #[source]
        source: Box<VmSyncError>,
    },
    /// A project's staging subdirectory could not be created.
    #[error("cannot create the project directory {path}")]
    ProjectDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A pull-exclude glob is invalid; nothing changed.
    #[error("invalid pull exclude pattern")]
    Exclude {
        /// The rejection from the sync engine (names the pattern).
        #[source]
        source: Box<VmSyncError>,
    },
    /// Pushing the project before a run failed; the tool did not run.
    #[error("sync of VFS `{vfs_path}` to the backend's workspace failed")]
    Push {
        /// The VFS project root being synced.
        vfs_path: String,
        /// The sync failure.
        #[source]
        source: Box<VmSyncError>,
    },
    /// The tool ran, but its results could not be pulled back into the VFS (which is
    /// unchanged: pulls are all-or-nothing). How the tool ended is in the message.
    #[error(
        "`{program}` finished ({termination}) but pulling its results into VFS `{vfs_path}` failed"
    )]
    PullAfterRun {
        /// The program that ran.
        program: String,
        /// How it ended.
        termination: Termination,
        /// The VFS project root.
        vfs_path: String,
        /// The pull failure.
        #[source]
        source: Box<VmSyncError>,
    },
    /// The tool ran past its timeout; it was killed. What it wrote before that was
    /// pulled into the VFS.
    #[error("`{program}` timed out after {timeout:?} and was killed")]
    Timeout {
        /// The program that timed out.
        program: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The tool was cancelled (cancel handle, or an interrupt when forwarding is on);
    /// what it wrote was still pulled.
    #[error("`{program}` was cancelled and killed")]
    Cancelled {
        /// The program that was cancelled.
        program: String,
    },
}
