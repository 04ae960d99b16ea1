//! Human-readable reports: sizes, durations, sync summaries.

use std::fmt::Write as _;
use std::time::Duration;

use devshell_vm::{SyncReport, Termination, ToolOutcome};

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
