//! Human-readable reports: sizes, durations, sync summaries, and the progress line shown
//! for syncs that take longer than a second.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use devshell_vm::{SyncObserver, SyncProgress, SyncReport, Termination, ToolOutcome};

/// After this long a sync gets a progress line.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);
/// At most one progress line per this interval.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A pause this long between callbacks means a new sync began.
const NEW_SYNC_GAP: Duration = Duration::from_millis(300);

/// `1.5 KiB`, `12.0 MiB`, `800 B`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)] // display only
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `850 ms`, `2.4 s`.
pub(crate) fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `3 files (1.2 KiB)` plus deletions when any.
fn files(count: u64, size: u64, deleted: u64) -> String {
    let noun = if count == 1 { "file" } else { "files" };
    let mut text = format!("{count} {noun} ({})", bytes(size));
    if deleted > 0 {
        let _ = write!(text, ", {deleted} deleted");
    }
    text
}

/// One-line push summary: what was written to the backend's workspace.
pub(crate) fn push_summary(report: &SyncReport) -> String {
    format!(
        "pushed {} in {}",
        files(report.files_written, report.bytes_written, report.deleted),
        duration(report.duration)
    )
}

/// One-line pull summary: what came back into memory.
pub(crate) fn pull_summary(report: Option<&SyncReport>) -> String {
    match report {
        Some(report) => {
            let mut text = format!(
                "pulled {} in {}",
                files(report.files_written, report.bytes_written, report.deleted),
                duration(report.duration)
            );
            if !report.skipped.is_empty() {
                let _ = write!(text, ", {} skipped", report.skipped.len());
            }
            text
        }
        None => "nothing pulled".to_owned(),
    }
}

/// How the tool ended, for a report line.
pub(crate) fn termination(termination: Termination) -> String {
    match termination {
        Termination::Exited(0) => "ok".to_owned(),
        Termination::Exited(code) => format!("exit code {code}"),
        Termination::Signaled(signal) => format!("killed by signal {signal}"),
        Termination::TimedOut => "timed out".to_owned(),
        Termination::Cancelled => "cancelled".to_owned(),
    }
}

/// The skipped entries of a pull, one line each (non-UTF-8 names and the like).
pub(crate) fn print_skipped(outcome: &ToolOutcome) {
    if let Some(pull) = &outcome.pull {
        for skipped in &pull.skipped {
            eprintln!(
                "devshell-vm: skipped {}: {}",
                skipped.path.display(),
                skipped.reason
            );
        }
    }
}

/// State of the progress observer.
struct Progress {
    started: Instant,
    last_call: Instant,
    last_line: Option<Instant>,
    last_files: u64,
}

/// An observer that prints `devshell-vm: syncing… N files, SIZE` to stderr once a sync
/// has run for more than a second, then at most once a second.
pub(crate) fn progress_observer() -> SyncObserver {
    let now = Instant::now();
    let state = Mutex::new(Progress {
        started: now,
        last_call: now,
        last_line: None,
        last_files: 0,
    });
    Arc::new(move |progress: &SyncProgress| {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let new_sync = progress.files_done < state.last_files
            || now.duration_since(state.last_call) > NEW_SYNC_GAP;
        if new_sync {
            state.started = now;
            state.last_line = None;
        }
        state.last_call = now;
        state.last_files = progress.files_done;
        let due = now.duration_since(state.started) >= PROGRESS_AFTER
            && state
                .last_line
                .is_none_or(|at| now.duration_since(at) >= PROGRESS_EVERY);
        if due {
            state.last_line = Some(now);
            eprintln!(
                "devshell-vm: syncing… {} files, {}",
                progress.files_done,
                bytes(progress.bytes_done)
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(duration(Duration::from_millis(2400)), "2.4 s");
        assert_eq!(files(1, 10, 0), "1 file (10 B)");
        assert_eq!(files(2, 2048, 3), "2 files (2.0 KiB), 3 deleted");
    }
}
