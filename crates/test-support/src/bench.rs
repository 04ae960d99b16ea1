//! A small benchmark harness: repeated timing with medians, peak RSS, scratch dirs.
//!
//! Benchmarks print one line per measurement (`suite/case: median … (n=…)`), so
//! the output can be pasted into `docs/BENCHMARKS.md` as is. Medians, not means:
//! the machines are shared and noisy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Runs `setup` then times `measured`, `runs` times; returns the sorted samples.
pub fn sample<S>(
    runs: usize,
    mut setup: impl FnMut() -> S,
    mut measured: impl FnMut(S),
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let state = setup();
        let started = Instant::now();
        measured(state);
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

/// The median of sorted samples (zero for none).
#[must_use]
pub fn median(sorted: &[Duration]) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// Formats a duration with a unit that keeps three significant digits.
#[must_use]
pub fn fmt_duration(duration: Duration) -> String {
    let nanos = duration.as_secs_f64() * 1e9;
    if nanos < 1e3 {
        format!("{nanos:.0} ns")
    } else if nanos < 1e6 {
        format!("{:.2} µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.2} ms", nanos / 1e6)
    } else {
        format!("{:.3} s", nanos / 1e9)
    }
}

/// Prints `label: median (min … max, n)` and returns the median.
#[must_use = "the median is usually recorded"]
pub fn report(label: &str, sorted: &[Duration]) -> Duration {
    let med = median(sorted);
    let (min, max) = (
        sorted.first().copied().unwrap_or_default(),
        sorted.last().copied().unwrap_or_default(),
    );
    println!(
        "{label}: median {} (min {}, max {}, n={})",
        fmt_duration(med),
        fmt_duration(min),
        fmt_duration(max),
        sorted.len()
    );
    med
}

/// Throughput in MB/s (10^6 bytes per second) for `bytes` moved in `duration`.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn mb_per_s(bytes: u64, duration: Duration) -> f64 {
    bytes as f64 / 1e6 / duration.as_secs_f64().max(1e-12)
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
#[must_use]
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Scratch directories for file-heavy benchmarks: one on tmpfs (`/dev/shm`) and
/// one on the normal disk (the system temp dir), each removed on drop.
///
/// # Panics
/// When either directory cannot be created (a benchmark cannot run without it).
#[must_use]
pub fn scratch_dirs(prefix: &str) -> Vec<(&'static str, tempfile::TempDir)> {
    let tmpfs = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/dev/shm")
        .expect("/dev/shm must be a writable tmpfs for file-heavy benchmarks");
    let disk = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(disk_scratch_parent())
        .expect("the disk scratch dir must be writable");
    vec![("tmpfs", tmpfs), ("disk", disk)]
}

/// Parent for on-disk scratch dirs: `/var/tmp` (disk-backed on these machines).
#[must_use]
pub fn disk_scratch_parent() -> PathBuf {
    PathBuf::from("/var/tmp")
}
