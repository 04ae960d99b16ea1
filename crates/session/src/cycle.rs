//! The Mode S cycle around one tool run: push what changed, run, always pull — with an
//! optional [`PullGate`] that may prove a pull unnecessary.

use std::path::Path;
use std::time::Instant;

use devshell_vm_exec::ExecOutcome;
use devshell_vm_sync::{
    PullScope, SyncReport, ToolOutcome, VmSyncError, pull_workspace_to_vfs_scoped,
};
use devshell_vm_vfs::Vfs;

use crate::SessionError;
use crate::table::Project;

/// Watches a project's staging directory for the cycle: a backend that can tell what
/// changed on its side since the push (the host backend's inotify watch) limits the pull
/// to those directories ([`PullScope::Dirs`]) or skips it (an empty set). Every method
/// has a default that scans everything, so `()` is the gate of a backend without a
/// watcher.
pub trait PullGate {
    /// Before the push: note whatever changed since the last pull (it must not be lost
    /// by a skipped pull later).
    fn before_push(&mut self) {}

    /// After a successful push into the project's staging directory `leaf`.
    fn after_push(&mut self, leaf: &Path, report: &SyncReport) {
        let _ = (leaf, report);
    }

    /// After the run: which directories of staging may have changed since the push.
    /// [`PullScope::Dirs`] with an empty set skips the pull; any doubt must answer
    /// [`PullScope::Full`].
    fn pull_scope(&mut self) -> PullScope {
        PullScope::Full
    }

    /// After a pull (or a skipped one); `ok` tells whether it succeeded.
    fn after_pull(&mut self, ok: bool) {
        let _ = ok;
    }
}

impl PullGate for () {}

/// The inotify change tracking of `devshell-vm-sync` as the cycle's gate.
impl PullGate for devshell_vm_sync::watch::ChangeTracker {
    fn before_push(&mut self) {
        devshell_vm_sync::watch::ChangeTracker::before_push(self);
    }

    fn after_push(&mut self, leaf: &Path, report: &SyncReport) {
        devshell_vm_sync::watch::ChangeTracker::after_push(self, leaf, !report.is_noop());
    }

    fn pull_scope(&mut self) -> PullScope {
        devshell_vm_sync::watch::ChangeTracker::pull_scope(self)
    }

    fn after_pull(&mut self, ok: bool) {
        devshell_vm_sync::watch::ChangeTracker::after_pull(self, ok);
    }
}

/// What one cycle did.
#[derive(Debug)]
#[must_use]
pub struct CycleOutcome {
    /// The tool's outcome with the push and pull reports.
    pub outcome: ToolOutcome,
    /// `true` when the gate proved the pull unnecessary (the pull report is empty).
    pub pull_skipped: bool,
    /// `true` when the pull was limited to the directories the gate named.
    pub pull_scoped: bool,
}

/// Why a cycle failed: the session layer's own failure (push, pull after the run), or
/// the runner's error (then the pull was still attempted: the tool may have written
/// files before failing).
#[derive(Debug)]
pub enum CycleError<E> {
    /// A push or pull failure.
    Session(SessionError),
    /// The runner's error.
    Run(E),
}

impl<E> CycleError<E> {
    /// One error type for both cases.
    pub fn into_error<T>(self) -> T
    where
        T: From<SessionError> + From<E>,
    {
        match self {
            Self::Session(err) => T::from(err),
            Self::Run(err) => T::from(err),
        }
    }
}

/// Runs one tool against `project` in Mode S: [`crate::Project::push`] (full the first
/// time), `run` with the project's staging directory, then — always, also after a
/// non-zero exit, a timeout or a runner error — a pull
/// ([`devshell_vm_sync::pull_workspace_to_vfs_scoped`]) of what the gate says may have
/// changed (everything, by default). `program` names the tool in errors.
///
/// # Errors
/// [`CycleError::Session`] with [`SessionError::Push`] (nothing ran, VFS unchanged) or
/// [`SessionError::PullAfterRun`] (the tool ran, VFS unchanged); [`CycleError::Run`]
/// with the runner's error.
pub fn run_cycle<X: PullGate, E>(
    project: &mut Project<X>,
    vfs: &mut Vfs,
    program: &str,
    run: impl FnOnce(&Path) -> Result<ExecOutcome, E>,
) -> Result<CycleOutcome, CycleError<E>> {
    let vfs_root = project.vfs_root().to_owned();
    let push_error = |source: VmSyncError| {
        CycleError::Session(SessionError::Push {
            vfs_path: vfs_root.clone(),
            source: Box::new(source),
        })
    };
    project.extra.before_push();
    let push = project.push(vfs).map_err(CycleError::Session)?;
    let leaf = project.state.leaf_dir(&vfs_root).map_err(push_error)?;
    project.extra.after_push(&leaf, &push);

    let ran = run(&leaf);

    let started = Instant::now();
    let scope = project.extra.pull_scope();
    let pull_skipped = matches!(&scope, PullScope::Dirs(dirs) if dirs.is_empty());
    let pull_scoped = matches!(scope, PullScope::Dirs(_));
    let pull = if pull_skipped {
        Ok(SyncReport {
            duration: started.elapsed(),
            ..SyncReport::default()
        })
    } else {
        pull_workspace_to_vfs_scoped(&mut project.state, &vfs_root, vfs, &scope)
    };
    project.extra.after_pull(pull.is_ok());
    match (ran, pull) {
        (Ok(exec), Ok(pull)) => Ok(CycleOutcome {
            outcome: ToolOutcome {
                exec,
                push,
                pull: Some(pull),
            },
            pull_skipped,
            pull_scoped,
        }),
        (Ok(exec), Err(source)) => Err(CycleError::Session(SessionError::PullAfterRun {
            program: program.to_owned(),
            termination: exec.termination,
            vfs_path: vfs_root,
            source: Box::new(source),
        })),
        (Err(error), _) => Err(CycleError::Run(error)),
    }
}
