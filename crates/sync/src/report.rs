//! What one sync call did: [`SyncReport`], [`Skipped`], and progress for observers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The result of one push or pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files (and symlinks) written: on the host for a push, into the VFS for a pull.
    pub files_written: u64,
    /// Bytes of file content written.
    pub bytes_written: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Entries deleted (a removed directory counts its whole subtree on the host, one on
    /// the VFS side).
    pub deleted: u64,
    /// Host files read (a pull reads only new or changed files).
    pub files_read: u64,
    /// Bytes of host file content read.
    pub bytes_read: u64,
    /// Host files a pull recorded without reading them (read on demand, see
    /// [`SyncState::set_lazy_min_size`](crate::SyncState::set_lazy_min_size)).
    pub files_deferred: u64,
    /// Bytes of those files.
    pub bytes_deferred: u64,
    /// Files an incremental push found in staging already (pulled without reading and
    /// not changed since): neither read nor written.
    pub files_unchanged: u64,
    /// Entries left out, with the reason (non-UTF-8 names, special files, ...).
    pub skipped: Vec<Skipped>,
    /// Wall-clock time of the call.
    pub duration: Duration,
    /// Directories listed by a pull (a full scan lists every directory of the leaf; a
    /// scoped pull only those that changed and new subtrees).
    pub dirs_scanned: u64,
    /// `true` when a pull scanned the whole leaf (no scope, no manifest yet, or a scope
    /// that could not be trusted).
    pub full_scan: bool,
}

/// One host entry a sync left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The host path (possibly not valid UTF-8).
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// Progress of a long sync, handed to the observer set with
/// [`SyncState::set_observer`](crate::SyncState::set_observer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncProgress {
    /// Files written or read so far in this call.
    pub files_done: u64,
    /// Bytes written or read so far in this call.
    pub bytes_done: u64,
}

impl SyncReport {
    /// `true` when the call wrote, created, deleted and read nothing.
    #[must_use]
    pub fn is_noop(&self) -> bool {
        self.files_written == 0
            && self.dirs_created == 0
            && self.deleted == 0
            && self.files_read == 0
    }
}

/// Human-readable byte count in binary units: `800 B`, `1.5 KiB`, `12.0 MiB`.
#[must_use]
pub fn human_bytes(n: u64) -> String {
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

impl fmt::Display for SyncReport {
    /// One line: `wrote 3 files (1.2 KiB), created 1 dir, deleted 2, read 0 files (0 B),
    /// skipped 0 in 1.31 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: u64, one: &'static str, many: &'static str| if n == 1 { one } else { many };
        write!(
            f,
            "wrote {} {} ({}), created {} {}, deleted {}, read {} {} ({}), skipped {} in {:.2} ms",
            self.files_written,
            plural(self.files_written, "file", "files"),
            human_bytes(self.bytes_written),
            self.dirs_created,
            plural(self.dirs_created, "dir", "dirs"),
            self.deleted,
            self.files_read,
            plural(self.files_read, "file", "files"),
            human_bytes(self.bytes_read),
            self.skipped.len(),
            self.duration.as_secs_f64() * 1000.0,
        )
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_units() {
        let report = SyncReport {
            files_written: 1,
            bytes_written: 1536,
            dirs_created: 2,
            deleted: 3,
            files_read: 0,
            bytes_read: 0,
            skipped: vec![Skipped {
                path: PathBuf::from("/s/a"),
                reason: "x".into(),
            }],
            duration: Duration::from_micros(1500),
            ..SyncReport::default()
        };
        assert_eq!(
            report.to_string(),
            "wrote 1 file (1.5 KiB), created 2 dirs, deleted 3, read 0 files (0 B), skipped 1 in 1.50 ms"
        );
        assert!(!report.is_noop());
        assert!(SyncReport::default().is_noop());
    }
}
