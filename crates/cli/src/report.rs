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

/// `1.5 KiB`, `12.0 MiB`, `800 B` (the sync report's own formatting).
pub(crate) use devshell_vm::sync::human_bytes as bytes;

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

impl Progress {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_call: now,
            last_line: None,
            last_files: 0,
        }
    }

    /// Takes one observer call at `now`; returns the line to print, if one is due: after a
    /// sync has run for [`PROGRESS_AFTER`], then at most every [`PROGRESS_EVERY`]. A drop
    /// in the file count or a pause of [`NEW_SYNC_GAP`] starts a new sync.
    fn observe(&mut self, progress: &SyncProgress, now: Instant) -> Option<String> {
        let new_sync = progress.files_done < self.last_files
            || now.duration_since(self.last_call) > NEW_SYNC_GAP;
        if new_sync {
            self.started = now;
            self.last_line = None;
        }
        self.last_call = now;
        self.last_files = progress.files_done;
        let due = now.duration_since(self.started) >= PROGRESS_AFTER
            && self
                .last_line
                .is_none_or(|at| now.duration_since(at) >= PROGRESS_EVERY);
        due.then(|| {
            self.last_line = Some(now);
            format!(
                "devshell-vm: syncing… {} files, {}",
                progress.files_done,
                bytes(progress.bytes_done)
            )
        })
    }
}

/// An observer that prints `devshell-vm: syncing… N files, SIZE` to stderr once a sync
/// has run for more than a second, then at most once a second.
pub(crate) fn progress_observer() -> SyncObserver {
    let state = Mutex::new(Progress::new(Instant::now()));
    Arc::new(move |progress: &SyncProgress| {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(line) = state.observe(progress, Instant::now()) {
            eprintln!("{line}");
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

    #[test]
    fn progress_lines_only_for_syncs_longer_than_a_second() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let p = |files: u64| SyncProgress {
            files_done: files,
            bytes_done: files * 1024,
        };
        let mut state = Progress::new(t0);
        // A short sync: calls every 100 ms for 0.9 s print nothing.
        for step in 0..10 {
            assert_eq!(state.observe(&p(step * 100), at(step * 100)), None);
        }
        // It keeps going past one second: one line, then one per second at most.
        let line = state.observe(&p(1000), at(1000)).expect("due after 1 s");
        assert_eq!(line, "devshell-vm: syncing… 1000 files, 1000.0 KiB");
        for step in 11..20 {
            assert_eq!(state.observe(&p(step * 100), at(step * 100)), None);
        }
        assert!(state.observe(&p(2000), at(2000)).is_some());
        // A pause starts a new sync, which again stays quiet for its first second.
        assert_eq!(state.observe(&p(1), at(3000)), None);
        assert_eq!(state.observe(&p(2), at(3200)), None);
        // So does a restart of the count without a pause.
        assert_eq!(state.observe(&p(3), at(3400)), None);
        assert_eq!(state.observe(&p(0), at(3600)), None);
        for step in 37..46 {
            assert_eq!(state.observe(&p(step), at(step * 100)), None);
        }
        assert!(state.observe(&p(50), at(4600)).is_some());
    }
}
