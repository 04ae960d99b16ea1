//! [`ToolOutcome`]: what one synced tool run did (the Mode S cycle itself lives in
//! `devshell-vm-session`).

use devshell_vm_exec::ExecOutcome;

use crate::report::SyncReport;

/// What one synced tool run did.
#[derive(Debug)]
#[must_use]
pub struct ToolOutcome {
    /// How the tool ended (a non-zero exit or a timeout is an outcome, not an error).
    pub exec: ExecOutcome,
    /// The push before the run.
    pub push: SyncReport,
    /// The pull after the run (Mode S always pulls, so it fills this; an empty report
    /// when a change watch proved the pull unnecessary). `None` for runs without
    /// syncing back (Mode P).
    pub pull: Option<SyncReport>,
}
