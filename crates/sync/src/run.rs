//! The Mode S cycle every backend uses: push what changed, run the tool, always pull.

use std::fmt;
use std::path::Path;

use devshell_vm_exec::ExecOutcome;
use devshell_vm_vfs::Vfs;

use crate::report::SyncReport;
use crate::state::SyncState;
use crate::{VmSyncError, pull_workspace_to_vfs, push_incremental};

/// What one synced tool run did.
#[derive(Debug)]
#[must_use]
pub struct ToolOutcome {
    /// How the tool ended (a non-zero exit or a timeout is an outcome, not an error).
    pub exec: ExecOutcome,
    /// The push before the run.
    pub push: SyncReport,
    /// The pull after the run. [`run_synced`] always pulls, so it always fills this;
    /// `None` is for callers that build an outcome without syncing back (Mode P).
    pub pull: Option<SyncReport>,
}

/// Why [`run_synced`] failed. `E` is the runner's own error type (spawn failures,
/// transport errors...).
#[derive(Debug)]
pub enum SyncedRunError<E> {
    /// The push before the run failed; the tool did not run and the VFS is unchanged.
    Push(VmSyncError),
    /// The runner failed (the tool could not be run, or its transport broke). The pull
    /// was still attempted afterwards, since the tool may have changed files before
    /// failing; its result is in `pull`.
    Run {
        /// The runner's error.
        error: E,
        /// The push before the run.
        push: SyncReport,
        /// The pull after the failed run.
        pull: Result<SyncReport, VmSyncError>,
    },
    /// The tool ran but pulling its changes back failed; the VFS is unchanged (pulls are
    /// all-or-nothing) and the tool's outcome is kept.
    Pull {
        /// The pull's error.
        error: VmSyncError,
        /// How the tool ended.
        exec: ExecOutcome,
        /// The push before the run.
        push: SyncReport,
    },
}

impl<E: fmt::Display> fmt::Display for SyncedRunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Push(error) => write!(f, "sync to the staging directory failed: {error}"),
            Self::Run { error, pull, .. } => {
                write!(f, "tool run failed: {error}")?;
                if let Err(pull_error) = pull {
                    write!(f, " (and syncing back afterwards failed: {pull_error})")?;
                }
                Ok(())
            }
            Self::Pull { error, .. } => {
                write!(f, "syncing the tool's changes back failed: {error}")
            }
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SyncedRunError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Push(error) | Self::Pull { error, .. } => Some(error),
            Self::Run { error, .. } => Some(error),
        }
    }
}

/// Runs one tool against the VFS subtree at `vfs_path` in Mode S: [`push_incremental`],
/// then `run` with the host leaf directory, then — always, also after a non-zero exit,
/// a timeout or a runner error — [`pull_workspace_to_vfs`].
///
/// # Errors
/// [`SyncedRunError::Push`] (nothing ran), [`SyncedRunError::Run`] (runner error, pull
/// attempted), [`SyncedRunError::Pull`] (tool outcome kept, VFS unchanged).
#[expect(
    clippy::result_large_err,
    reason = "the error keeps the tool outcome and sync reports; one per tool run"
)]
pub fn run_synced<E>(
    vfs: &mut Vfs,
    vfs_path: &str,
    state: &mut SyncState,
    run: impl FnOnce(&Path) -> Result<ExecOutcome, E>,
) -> Result<ToolOutcome, SyncedRunError<E>> {
    let push = push_incremental(vfs, vfs_path, state).map_err(SyncedRunError::Push)?;
    let leaf = state
        .leaf_dir(
            &vfs.normalize(vfs_path)
                .map_err(|e| SyncedRunError::Push(e.into()))?,
        )
        .map_err(SyncedRunError::Push)?;
    let ran = run(&leaf);
    let pull = pull_workspace_to_vfs(state, vfs_path, vfs);
    match (ran, pull) {
        (Ok(exec), Ok(pull)) => Ok(ToolOutcome {
            exec,
            push,
            pull: Some(pull),
        }),
        (Ok(exec), Err(error)) => Err(SyncedRunError::Pull { error, exec, push }),
        (Err(error), pull) => Err(SyncedRunError::Run { error, push, pull }),
    }
}
