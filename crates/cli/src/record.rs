//! `--report FILE`: a JSON account of one `devshell-vm run` for scripts and coding
//! agents. The schema is versioned (`"schema": 1`) and documented in the README
//! ("JSON report"); fields are only ever added within a version.

use std::path::{Path, PathBuf};
use std::time::Duration;

use devshell_vm::{SyncReport, Termination};
use serde::Serialize;

use crate::changes::ChangeSet;
use crate::writeback::{PathReason, WriteBackReport};

/// Version of the report's layout.
pub(crate) const SCHEMA: u32 = 1;

/// What `isolation` says, and when it is `null`.
const ISOLATION_NOTE: &str = "the confinement the host backend applied to the run \
    (DEVSHELL_VM_ISOLATION); null when no tool ran, or for the lima and beta backends, \
    whose tools run in the VM or behind the sidecar";

/// The whole report.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) schema: u32,
    pub(crate) devshell_vm_version: &'static str,
    /// The tool and its arguments.
    pub(crate) command: Vec<String>,
    /// Working directory of the tool in the workspace.
    pub(crate) cwd: String,
    pub(crate) input: Input,
    /// `host`, `lima` or `beta`; `null` when no session was opened.
    pub(crate) backend: Option<&'static str>,
    /// Isolation in force for the run (host backend); `null` otherwise.
    pub(crate) isolation: Option<String>,
    pub(crate) isolation_note: &'static str,
    pub(crate) outcome: Outcome,
    /// The exit status of `devshell-vm` itself.
    pub(crate) exit_code: u8,
    pub(crate) durations_ms: Durations,
    pub(crate) load: Option<LoadStats>,
    pub(crate) push: Option<SyncStats>,
    pub(crate) pull: Option<SyncStats>,
    /// Paths the tool created, modified and deleted (absolute workspace paths).
    pub(crate) changes: Option<ChangeSet>,
    pub(crate) write_back: Option<WriteBack>,
    /// The command's own error (infrastructure, refused write-back), if any.
    pub(crate) error: Option<String>,
}

/// Where the workspace came from.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Input {
    Dir {
        path: PathBuf,
        /// `false` with `--no-ignore`.
        ignore_files: bool,
        excludes: Vec<String>,
    },
    Image {
        path: PathBuf,
    },
    Empty,
}

/// How the tool ended.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// It exited with `code`.
    Exited { code: i32 },
    /// Signal `signal` killed it.
    Signaled { signal: i32 },
    /// The exec timeout killed it (and its process group).
    TimedOut { timeout_ms: Option<u64> },
    /// It was cancelled.
    Cancelled,
    /// A resource limit of the sandbox stopped it (`memory`, `pids`, `cpu time`, `file
    /// size`); `termination` says how it ended.
    Limit { limit: String, termination: String },
    /// It did not run, or its run could not be completed (see `error`).
    NotRun,
}

impl Outcome {
    pub(crate) fn of(termination: Termination, timeout: Option<Duration>) -> Self {
        match termination {
            Termination::Exited(code) => Self::Exited { code },
            Termination::Signaled(signal) => Self::Signaled { signal },
            Termination::TimedOut => Self::TimedOut {
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            },
            Termination::Cancelled => Self::Cancelled,
        }
    }
}

/// Durations in milliseconds; `null` for a step that did not happen.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Durations {
    pub(crate) load: Option<f64>,
    pub(crate) push: Option<f64>,
    pub(crate) run: Option<f64>,
    pub(crate) pull: Option<f64>,
    pub(crate) save: Option<f64>,
    pub(crate) write_back: Option<f64>,
    pub(crate) total: f64,
}

/// Milliseconds with microsecond precision.
pub(crate) fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// What loading `--dir` read and left out.
#[derive(Debug, Serialize)]
pub(crate) struct LoadStats {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) left_out_files: u64,
    pub(crate) left_out_bytes: u64,
    pub(crate) skipped: Vec<PathReason>,
}

/// Files and bytes one sync moved.
#[derive(Debug, Serialize)]
pub(crate) struct SyncStats {
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    pub(crate) dirs_created: u64,
    pub(crate) deleted: u64,
    pub(crate) skipped: Vec<PathReason>,
}

impl From<&SyncReport> for SyncStats {
    fn from(report: &SyncReport) -> Self {
        Self {
            files: report.files_written,
            bytes: report.bytes_written,
            dirs_created: report.dirs_created,
            deleted: report.deleted,
            skipped: report
                .skipped
                .iter()
                .map(|s| PathReason {
                    path: s.path.display().to_string(),
                    reason: s.reason.clone(),
                })
                .collect(),
        }
    }
}

/// The write-back: done (with what it did), refused (with the conflicts), or skipped.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum WriteBack {
    Done(WriteBackReport),
    Refused { conflicts: Vec<PathReason> },
    Skipped { reason: String },
    Failed { error: String },
}

impl Report {
    /// A report with nothing done yet.
    pub(crate) fn new(command: Vec<String>, cwd: String, input: Input) -> Self {
        Self {
            schema: SCHEMA,
            devshell_vm_version: env!("CARGO_PKG_VERSION"),
            command,
            cwd,
            input,
            backend: None,
            isolation: None,
            isolation_note: ISOLATION_NOTE,
            outcome: Outcome::NotRun,
            exit_code: 0,
            durations_ms: Durations::default(),
            load: None,
            push: None,
            pull: None,
            changes: None,
            write_back: None,
            error: None,
        }
    }

    /// Writes the report to `path` (pretty JSON, then a newline).
    pub(crate) fn write(&self, path: &Path) -> Result<(), crate::CliError> {
        let fail = |message: String| crate::CliError::Workspace {
            context: format!("writing report {}", path.display()),
            message,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|err| fail(err.to_string()))?;
        text.push('\n');
        std::fs::write(path, text).map_err(|err| fail(err.to_string()))
    }
}
