//! Per-run cgroups for the memory and pids limits, where this process may create them:
//! cgroup v1 controllers under `/sys/fs/cgroup/<controller>` (as root), or a cgroup v2
//! hierarchy this process can write (delegated). The tool joins by writing `0` to the
//! `cgroup.procs` descriptors it receives; after the run the counters say whether a limit
//! was hit and the directories are removed.

use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use devshell_vm_config::Limits;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Where per-run cgroups are made.
#[derive(Debug, Clone)]
pub(crate) enum Hierarchy {
    /// v1: one parent directory per controller (memory, pids).
    V1 { memory: PathBuf, pids: PathBuf },
    /// v2: one parent directory with memory and pids enabled for children.
    V2 { parent: PathBuf },
}

/// The cgroups of a sandbox's runs: created once, empty between runs (the init kills
/// everything at the end of each), removed when dropped. A run joins them through the
/// `cgroup.procs` descriptors; its limit hits are the counters' growth during the run.
#[derive(Debug)]
pub(crate) struct RunCgroups {
    dirs: Vec<PathBuf>,
    v2: bool,
    procs: Vec<OwnedFd>,
}

/// This process's cgroup path for a v1 controller (or `""` for v2), from `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_owned())
    })
}

/// Finds a hierarchy where this process can create a child cgroup with a working limit,
/// by creating and removing a probe. `None` when there is none (then rlimits apply).
pub(crate) fn probe() -> Option<Hierarchy> {
    let root = Path::new("/sys/fs/cgroup");
    let v1 = (|| {
        let memory = root
            .join("memory")
            .join(own_path("memory")?.trim_start_matches('/'));
        let pids = root
            .join("pids")
            .join(own_path("pids")?.trim_start_matches('/'));
        let candidate = Hierarchy::V1 { memory, pids };
        works(&candidate).then_some(candidate)
    })();
    if v1.is_some() {
        return v1;
    }
    for base in [root.join("unified"), root.to_path_buf()] {
        if !base.join("cgroup.controllers").exists() {
            continue;
        }
        let Some(own) = own_path("") else { continue };
        let candidate = Hierarchy::V2 {
            parent: base.join(own.trim_start_matches('/')),
        };
        if works(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn works(hierarchy: &Hierarchy) -> bool {
    RunCgroups::create(hierarchy, &Limits::unlimited()).is_ok()
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?
        .into())
}

/// Removes `devshell-vm-<pid>-…` cgroups under `parent` whose creating process is gone
/// (killed with -9, so its drop never ran). Only empty cgroups can be removed, so a
/// cgroup still holding a process is left alone; failures are ignored.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("devshell-vm-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if !alive {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

impl RunCgroups {
    /// Creates the cgroups with `limits`.
    pub(crate) fn create(hierarchy: &Hierarchy, limits: &Limits) -> std::io::Result<Self> {
        match hierarchy {
            Hierarchy::V1 { memory, pids } => {
                remove_stale(memory);
                remove_stale(pids);
            }
            Hierarchy::V2 { parent } => remove_stale(parent),
        }
        // Unique across processes and time: a process killed with -9 leaves its (empty)
        // cgroups behind, and a later process may get the same pid.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "devshell-vm-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut made = Self {
            dirs: Vec::new(),
            v2: matches!(hierarchy, Hierarchy::V2 { .. }),
            procs: Vec::new(),
        };
        let result = (|| {
            let mut fds = Vec::new();
            match hierarchy {
                Hierarchy::V1 { memory, pids } => {
                    let m = memory.join(&name);
                    fs::create_dir(&m)?;
                    made.dirs.push(m.clone());
                    if let Some(bytes) = limits.memory {
                        write(&m.join("memory.limit_in_bytes"), &bytes.to_string())?;
                        // Without swap accounting the file is absent: nothing to limit.
                        let memsw = m.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &bytes.to_string())?;
                        }
                    }
                    fds.push(open_procs(&m)?);
                    let p = pids.join(&name);
                    fs::create_dir(&p)?;
                    made.dirs.push(p.clone());
                    if let Some(max) = limits.pids {
                        write(&p.join("pids.max"), &max.to_string())?;
                    }
                    fds.push(open_procs(&p)?);
                }
                Hierarchy::V2 { parent } => {
                    let dir = parent.join(&name);
                    fs::create_dir(&dir)?;
                    made.dirs.push(dir.clone());
                    if !dir.join("memory.max").exists() || !dir.join("pids.max").exists() {
                        return Err(std::io::Error::other(
                            "memory and pids controllers are not enabled for child cgroups",
                        ));
                    }
                    if let Some(bytes) = limits.memory {
                        write(&dir.join("memory.max"), &bytes.to_string())?;
                        write(&dir.join("memory.swap.max"), "0").ok();
                    }
                    if let Some(max) = limits.pids {
                        write(&dir.join("pids.max"), &max.to_string())?;
                    }
                    fds.push(open_procs(&dir)?);
                }
            }
            Ok(fds)
        })();
        match result {
            Ok(fds) => {
                made.procs = fds;
                Ok(made)
            }
            Err(err) => Err(err), // dropping `made` removes what was created
        }
    }

    /// The `cgroup.procs` descriptors a tool writes `0` into to join.
    pub(crate) fn procs(&self) -> &[OwnedFd] {
        &self.procs
    }

    /// Reads a `key value` counter from a cgroup file of any of the run's directories.
    fn counter(&self, file: &str, key: &str) -> u64 {
        self.dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join(file)).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// The (memory OOM kills, refused forks) counters so far.
    pub(crate) fn counters(&self) -> (u64, u64) {
        let oom = if self.v2 {
            self.counter("memory.events", "oom_kill")
        } else {
            self.counter("memory.oom_control", "oom_kill")
        };
        (oom, self.counter("pids.events", "max"))
    }
}

impl Drop for RunCgroups {
    /// Removes the directories (they are empty once the init has killed everything; a
    /// cgroup stays busy for a moment while its last processes are torn down).
    fn drop(&mut self) {
        self.procs.clear();
        for dir in self.dirs.iter().rev() {
            for _ in 0..200 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }
}
