//! The write limit: bytes a run writes to disk-backed files (in practice the project's
//! staging tree, the only disk-backed tree a namespaces sandbox can write), summed over
//! every process of the run.
//!
//! The kernel counts, per process, the bytes of page-cache pages it dirtied in files
//! of disk-backed file systems (`write_bytes` in `/proc/<pid>/io`; tmpfs and pipes do not
//! count) and, when a parent reaps a child, adds the child's count to the parent's. So
//! the sandbox's process tree — the outer child, the init and every living descendant —
//! holds, summed, everything any process of the sandbox has written: the init reaps
//! every process of a run, so nothing is lost when processes end, and after the run the
//! sum is exact.
//!
//! During a run the embedder sums the tree every [`WRITE_POLL`] and stops the run when
//! the sum passed the limit. Detection latency is that period plus the walk: a tool
//! writing at `R` bytes/s can write about `R × 50 ms` past the limit before it is killed
//! (on this machine's disk, tens of MiB for a tool writing flat out; a build far less).
//! A run that ends between two polls over the limit is not stopped, but its outcome
//! still names the limit (the count after the run is exact). Counts are in pages: a
//! 1-byte file counts 4 KiB, and rewriting a page still waiting for writeback counts
//! once.

use std::time::Duration;

/// How often a run's written bytes are summed while a write limit is set.
pub(crate) const WRITE_POLL: Duration = Duration::from_millis(50);

/// The written bytes of one run, watched against its limit.
#[derive(Debug)]
pub(crate) struct WriteWatch {
    root: i32,
    baseline: u64,
    limit: u64,
    /// The run was stopped because it passed the limit.
    pub(crate) tripped: bool,
}

impl WriteWatch {
    /// Starts watching the tree under `root` (host pid of the sandbox's outer process)
    /// for a run that may write `limit` bytes.
    pub(crate) fn start(root: i32, limit: u64) -> Self {
        Self {
            root,
            baseline: tree_write_bytes(root),
            limit,
            tripped: false,
        }
    }

    /// Bytes written since the run started.
    pub(crate) fn written(&self) -> u64 {
        tree_write_bytes(self.root).saturating_sub(self.baseline)
    }

    /// Whether the run has written more than its limit.
    pub(crate) fn exceeded(&self) -> bool {
        self.written() > self.limit
    }
}

/// `write_bytes` of `pid` (its threads and reaped children included), 0 when it is gone.
fn write_bytes(pid: i32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/io")) else {
        return 0;
    };
    text.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The children of every thread of `pid`.
fn children(pid: i32, out: &mut Vec<i32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("children");
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
}

/// The sum of `write_bytes` over `root` and its living descendants. A process that ends
/// during the walk may be missed once (its count moves to its parent, already read);
/// the next walk sees it there.
pub(crate) fn tree_write_bytes(root: i32) -> u64 {
    let mut total = 0_u64;
    let mut stack = vec![root];
    let mut seen = 0_usize;
    while let Some(pid) = stack.pop() {
        seen += 1;
        if seen > 1 << 16 {
            break; // far beyond any pids limit; never loop on a changing tree
        }
        total = total.saturating_add(write_bytes(pid));
        children(pid, &mut stack);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_childs_writes_count_in_its_parents_total() {
        // Next to the test binary: disk-backed (a tmpfs `/tmp` would count nothing).
        let exe = std::env::current_exe().expect("test binary path");
        let dir = tempfile::tempdir_in(exe.parent().expect("a directory")).expect("temp dir");
        let me = i32::try_from(std::process::id()).expect("pid");
        let before = tree_write_bytes(me);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg("head -c 3000000 /dev/zero > a; head -c 1000000 /dev/zero > b")
            .current_dir(dir.path())
            .status()
            .expect("sh runs");
        assert!(status.success());
        let written = tree_write_bytes(me) - before;
        assert!(
            (4_000_000..4_200_000).contains(&written),
            "counted {written} bytes for 4,000,000 written"
        );
    }
}
