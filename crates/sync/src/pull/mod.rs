//! Host → VFS: [`pull_workspace_to_vfs`].
//!
//! The scan is split into one job per host directory; a few threads take jobs from a
//! shared stack when the leaf is large. Each job lists its directory, `lstat`s every
//! entry, reads the files whose metadata moved, and queues its subdirectories. The
//! per-directory results are put back in path order, so the gathered changes apply
//! parents before children and removals before re-creations.

use std::cmp::Ordering as CmpOrdering;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use devshell_vm_vfs::{Content, LazyContent, LazySlot, MAX_DEPTH, NodeKind, Vfs, VfsError};
use nix::dir::Dir;
use nix::errno::Errno;

use crate::VmSyncError;
use crate::hostio::{self, HostKind, HostMeta, ReadError, Ts};
use crate::push::invalidate;
use crate::report::{Skipped, SyncProgress, SyncReport};
use crate::state::{Excludes, MEntry, SyncState, join_rel, leaf_name, vfs_join};

/// Progress is reported after this many files read.
const PROGRESS_EVERY: u64 = 256;
/// Leaves with at least this many recorded entries are scanned by several threads.
const PARALLEL_MIN_ENTRIES: usize = 2000;

/// One change to make in the VFS, gathered before anything is applied.
enum PullOp {
    /// Remove the node (a host deletion, or the old kind before a type change).
    Remove { rel: String },
    /// Create a directory (replacing a non-directory) with this mode and mtime.
    Mkdir {
        rel: String,
        mode: u32,
        mtime: SystemTime,
    },
    /// An existing directory whose mode or mtime may have changed.
    DirMeta {
        rel: String,
        mode: u32,
        mtime: SystemTime,
    },
    /// Create or replace a file.
    File {
        rel: String,
        content: Pulled,
        mode: u32,
        mtime: SystemTime,
    },
    /// Create or replace a symlink.
    Symlink {
        rel: String,
        target: String,
        mtime: SystemTime,
    },
}

/// A pulled file's content: read during the pull, or recorded to be read on demand.
enum Pulled {
    Read(Content),
    Lazy(Arc<LazyContent>),
}

impl Pulled {
    fn len(&self) -> u64 {
        match self {
            Self::Read(content) => content.len() as u64,
            Self::Lazy(lazy) => lazy.len(),
        }
    }
}

/// A manifest change to make once the VFS has been updated.
struct Record {
    rel: String,
    /// `None`: forget the entry.
    meta: Option<HostMeta>,
}

/// Where a directory job finds its directory.
enum DirSource {
    /// Already open (the leaf).
    Open(OwnedFd),
    /// Already open, a directory below the leaf (a scoped pull's starting point; its own
    /// metadata is its parent's business).
    Opened(OwnedFd),
    /// Entry `name` of an open parent.
    At(Arc<OwnedFd>, CString),
}

/// One host directory to scan.
struct DirJob<'m> {
    source: DirSource,
    rel: String,
    known: Option<&'m MEntry>,
    depth: usize,
}

/// What scanning one directory found.
#[derive(Default)]
struct DirResult {
    rel: String,
    ops: Vec<PullOp>,
    records: Vec<Record>,
    skipped: Vec<Skipped>,
    files_read: u64,
    bytes_read: u64,
    files_deferred: u64,
    bytes_deferred: u64,
}

impl DirResult {
    fn skip(&mut self, path: PathBuf, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            path,
            reason: reason.into(),
        });
    }

    /// Mirrors the disappearance of a recorded entry.
    fn remove(&mut self, rel: &str) {
        self.ops.push(PullOp::Remove {
            rel: rel.to_owned(),
        });
        self.records.push(Record {
            rel: rel.to_owned(),
            meta: None,
        });
    }

    fn record(&mut self, rel: &str, meta: HostMeta) {
        self.records.push(Record {
            rel: rel.to_owned(),
            meta: Some(meta),
        });
    }
}

/// The job stack shared by the scanning threads.
struct Queue<'m> {
    jobs: Vec<DirJob<'m>>,
    /// Jobs taken but not finished.
    active: usize,
    /// Threads waiting for a job (wake-ups are only sent when someone waits).
    idle: usize,
}

type Observer<'a> = &'a mut (dyn FnMut(&SyncProgress) + Send);

/// Everything the scanning threads share.
struct Scan<'a, 'm> {
    vfs: &'a Vfs,
    vfs_root: &'a str,
    leaf_path: &'a Path,
    excludes: &'a Excludes,
    max_file_size: u64,
    /// Files at least this large whose mtime is older than `started` go lazy.
    lazy_min_size: u64,
    started: Ts,
    /// Every content this pull deferred (read some of them to free descriptors when
    /// the process runs out).
    deferred: Mutex<Vec<Arc<LazyContent>>>,
    /// The workspace size budget, and the bytes of regular files counted so far (each
    /// file is counted before it is read, so reads never pass the budget).
    max_workspace_bytes: u64,
    workspace_bytes: AtomicU64,
    queue: Mutex<Queue<'m>>,
    wake: Condvar,
    failed: AtomicBool,
    error: Mutex<Option<VmSyncError>>,
    results: Mutex<Vec<DirResult>>,
    files_read: AtomicU64,
    bytes_read: AtomicU64,
    observer: Mutex<Option<Observer<'a>>>,
    /// Scoped pull: recurse only into directories the manifest does not know.
    scoped: bool,
    /// A scoped pull met a directory replaced under the same name (new inode): its
    /// recorded subtree cannot be trusted, the pull starts over as a full scan.
    replaced: AtomicBool,
    dirs_scanned: AtomicU64,
}

/// Which part of a staging leaf a pull looks at.
///
/// A caller that watches the leaf (the host backend's inotify watch, a sidecar's own
/// watcher) knows which directories saw changes since the last pull and passes them as
/// [`PullScope::Dirs`]: the pull then lists only those directories (and walks whatever
/// subtrees are new under them), so its cost follows the change, not the tree. Any doubt
/// — lost events, an unwatched directory — must be [`PullScope::Full`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PullScope {
    /// Scan the whole leaf (the first pull, no watcher, lost events).
    #[default]
    Full,
    /// Only these directories (leaf-relative, `/`-separated, `""` for the leaf itself)
    /// saw entries created, changed, deleted or moved; an empty set means nothing
    /// changed. Each is listed and compared with the manifest without descending into
    /// its known subdirectories; directories the manifest does not know (new ones) are
    /// scanned whole. A directory that no longer exists stands for its parent; one the
    /// manifest does not know stands for its nearest known ancestor; a directory
    /// replaced under the same name (new inode) turns the pull into a full scan; a leaf
    /// without a manifest is always scanned in full.
    Dirs(std::collections::BTreeSet<String>),
}

/// Mirrors the staging leaf of `vfs_path` into the VFS: new and changed files, symlinks
/// (as symlinks) and directories with their modes and mtimes, deletions and type changes
/// (file ↔ directory ↔ symlink).
///
/// The leaf is scanned with metadata only (`lstat`, no symlink is ever followed) and
/// compared with the manifest; only entries whose metadata moved are read, so a pull
/// after a tool that changed nothing reads no file content. Deletions are mirrored only
/// for entries the manifest knows (a pull with no manifest adds and updates but deletes
/// nothing). Host names that are not UTF-8 and special files are skipped and listed in
/// [`SyncReport::skipped`]; excluded paths are not looked at.
///
/// All or nothing: every change is gathered (every changed file read) before the VFS is
/// touched; if anything fails, the VFS is unchanged and the error names the host path.
/// Afterwards the manifest records the new host state and, when the VFS had no unpushed
/// changes, the VFS generation, so what was pulled is not pushed back.
///
/// # Errors
/// [`VmSyncError::Io`] / [`VmSyncError::ChangedDuringRead`] /
/// [`VmSyncError::FileTooLarge`] naming the host path, [`VmSyncError::Escape`] when the
/// leaf was replaced by a symlink, [`VmSyncError::LeafNotADirectory`],
/// [`VmSyncError::LeafCollision`], [`VmSyncError::NotADirectory`] when the VFS path is a
/// file.
pub fn pull_workspace_to_vfs(
    state: &mut SyncState,
    vfs_path: &str,
    vfs: &mut Vfs,
) -> Result<SyncReport, VmSyncError> {
    pull_workspace_to_vfs_scoped(state, vfs_path, vfs, &PullScope::Full)
}

/// [`pull_workspace_to_vfs`] limited to the directories a change watcher saw change
/// ([`PullScope`]); with [`PullScope::Full`] it is exactly [`pull_workspace_to_vfs`].
/// The result is the same VFS a full pull would give, provided the scope names every
/// directory in which something was created, changed, deleted or moved since the last
/// pull. [`SyncReport::full_scan`] says whether the whole leaf was scanned.
///
/// # Errors
/// As [`pull_workspace_to_vfs`].
#[expect(
    clippy::too_many_lines,
    reason = "the gather and apply phases read best in one place"
)]
pub fn pull_workspace_to_vfs_scoped(
    state: &mut SyncState,
    vfs_path: &str,
    vfs: &mut Vfs,
    scope: &PullScope,
) -> Result<SyncReport, VmSyncError> {
    let started = Instant::now();
    let observed_at = Ts::coarse_now();
    let norm = vfs.normalize(vfs_path)?;
    match vfs.stat(&norm) {
        Ok(meta) if meta.kind != NodeKind::Dir => {
            return Err(VmSyncError::NotADirectory { vfs_path: norm });
        }
        Ok(_) | Err(VfsError::NotFound { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let leaf = leaf_name(&norm).to_owned();
    let leaf_path = state.leaf_path(&leaf);
    let bound = state.bind(&norm)?;
    if bound.push_incomplete {
        return Err(VmSyncError::IncompletePush { leaf: leaf_path });
    }
    // Unpushed VFS changes: the pull still applies host changes, but must not mark
    // the VFS generation as synced (those changes still need a push).
    let pending = match bound.synced_generation {
        Some(since) => vfs
            .changes_since(&norm, since)
            .map_or(true, |changes| !changes.is_empty()),
        None => true,
    };
    let leaf_fd = open_leaf_for_pull(state.staging_dir(), &leaf, &leaf_path)?;

    let max_file_size = state.max_file_size;
    let lazy_min_size = state.lazy_min_size;
    let max_workspace_bytes = state.max_workspace_bytes;
    let threads = state.threads;
    let SyncState {
        excludes,
        observer,
        leaves,
        ..
    } = state;
    let Some(leaf_state) = leaves.get_mut(&leaf) else {
        return Err(VmSyncError::NotFound { vfs_path: norm });
    };
    let base_depth = norm.split('/').filter(|c| !c.is_empty()).count();
    let scoped_jobs = match (scope, leaf_state.manifest.as_ref()) {
        (PullScope::Dirs(dirs), Some(manifest)) => Some(scoped_jobs(
            &leaf_fd, manifest, dirs, base_depth, &leaf_path,
        )?),
        _ => None,
    };
    let scoped = scoped_jobs.is_some();
    let jobs = scoped_jobs.unwrap_or_else(|| {
        vec![DirJob {
            source: DirSource::Open(leaf_fd),
            rel: String::new(),
            known: leaf_state.manifest.as_ref(),
            depth: base_depth,
        }]
    });
    let scanners = if leaf_state.entry_count >= PARALLEL_MIN_ENTRIES && (!scoped || jobs.len() > 1)
    {
        threads
    } else {
        1
    };
    let scan = Scan {
        vfs,
        vfs_root: &norm,
        leaf_path: &leaf_path,
        excludes,
        max_file_size,
        lazy_min_size,
        started: observed_at,
        deferred: Mutex::new(Vec::new()),
        max_workspace_bytes,
        workspace_bytes: AtomicU64::new(0),
        queue: Mutex::new(Queue {
            jobs,
            active: 0,
            idle: 0,
        }),
        wake: Condvar::new(),
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        results: Mutex::new(Vec::new()),
        files_read: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        observer: Mutex::new(observer.as_deref_mut().map(|o| o as Observer<'_>)),
        scoped,
        replaced: AtomicBool::new(false),
        dirs_scanned: AtomicU64::new(0),
    };
    if scanners > 1 {
        std::thread::scope(|threads| {
            for _ in 1..scanners {
                threads.spawn(|| scan.work());
            }
            scan.work();
        });
    } else {
        scan.work();
    }
    if scan.replaced.load(Ordering::Relaxed) {
        // Nothing was applied: start over, scanning everything.
        let mut report = pull_workspace_to_vfs_scoped(state, vfs_path, vfs, &PullScope::Full)?;
        report.duration = started.elapsed();
        return Ok(report);
    }
    if let Some(err) = scan
        .error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Err(err);
    }
    let dirs_scanned = scan.dirs_scanned.load(Ordering::Relaxed);
    let mut results = scan
        .results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    results.sort_unstable_by(|a, b| path_order(&a.rel, &b.rel));
    let mut report = SyncReport {
        dirs_scanned,
        full_scan: !scoped,
        ..SyncReport::default()
    };
    let mut ops = Vec::new();
    let mut records = Vec::new();
    for result in results {
        ops.extend(result.ops);
        records.extend(result.records);
        report.skipped.extend(result.skipped);
        report.files_read += result.files_read;
        report.bytes_read += result.bytes_read;
        report.files_deferred += result.files_deferred;
        report.bytes_deferred += result.bytes_deferred;
    }

    // Everything is in memory: apply.
    if let Err(err) = apply(vfs, &norm, ops, &mut report) {
        invalidate(leaf_state);
        return Err(err);
    }
    let generation = vfs.generation();
    let changed_manifest = !records.is_empty();
    if leaf_state.manifest.is_none()
        && let Some(root_meta) = records
            .first()
            .filter(|r| r.rel.is_empty())
            .and_then(|r| r.meta)
    {
        // A pull without a manifest records the leaf first.
        leaf_state.manifest = Some(MEntry::new(root_meta, generation, observed_at));
    }
    if let Some(manifest) = leaf_state.manifest.as_mut() {
        for record in records {
            match record.meta {
                Some(meta) => manifest.upsert(&record.rel, meta, generation, observed_at),
                None if record.rel.is_empty() => {}
                None => manifest.remove(&record.rel),
            }
        }
        // The count only decides how many threads scan; a scoped pull does not walk
        // the whole manifest to refresh it.
        if changed_manifest && !scoped {
            leaf_state.entry_count = manifest.len();
        }
    }
    if !pending {
        leaf_state.synced_generation = Some(generation);
    }
    if let Some(observer) = observer.as_deref_mut()
        && report.files_read > 0
    {
        observer(&SyncProgress {
            files_done: report.files_read,
            bytes_done: report.bytes_read,
        });
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// Pre-order of leaf-relative paths: component by component, so a directory sorts
/// right before everything below it.
fn path_order(a: &str, b: &str) -> CmpOrdering {
    a.split('/').cmp(b.split('/'))
}

/// The starting jobs of a scoped pull: every directory of `dirs`, mapped to its nearest
/// ancestor the manifest knows as a directory (a new directory is found, and scanned
/// whole, from there) and, when it no longer exists, to its parent.
fn scoped_jobs<'m>(
    leaf_fd: &OwnedFd,
    manifest: &'m MEntry,
    dirs: &std::collections::BTreeSet<String>,
    base_depth: usize,
    leaf_path: &Path,
) -> Result<Vec<DirJob<'m>>, VmSyncError> {
    let known_dir = |rel: &str| {
        manifest
            .get(rel)
            .filter(|entry| entry.meta.kind == HostKind::Dir)
    };
    let mut wanted: Vec<String> = Vec::new();
    for dir in dirs {
        let mut rel = dir.trim_matches('/').to_owned();
        while known_dir(&rel).is_none() && !rel.is_empty() {
            let cut = parent_rel(&rel).len();
            rel.truncate(cut);
        }
        wanted.push(rel);
    }
    let mut done = std::collections::BTreeSet::new();
    let mut jobs = Vec::new();
    while let Some(rel) = wanted.pop() {
        if !done.insert(rel.clone()) {
            continue;
        }
        let dup = leaf_fd
            .try_clone()
            .map_err(|err| VmSyncError::io(leaf_path, err))?;
        if rel.is_empty() {
            jobs.push(DirJob {
                source: DirSource::Open(dup),
                rel,
                known: Some(manifest),
                depth: base_depth,
            });
            continue;
        }
        let mut fd = dup;
        let mut gone = false;
        for name in rel.split('/') {
            match hostio::open_dir_at(fd.as_fd(), name) {
                Ok(next) => fd = next,
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                    gone = true;
                    break;
                }
                Err(errno) => return Err(VmSyncError::errno(leaf_path.join(&rel), errno)),
            }
        }
        if gone {
            // Deleted, moved or replaced by a non-directory: its parent saw that.
            wanted.push(parent_rel(&rel).to_owned());
            continue;
        }
        let depth = base_depth + rel.split('/').count();
        let known = known_dir(&rel);
        jobs.push(DirJob {
            source: DirSource::Opened(fd),
            rel,
            known,
            depth,
        });
    }
    Ok(jobs)
}

/// `a/b` → `a`, `a` → `""`.
fn parent_rel(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

/// Opens the leaf for reading: it must be a real directory.
fn open_leaf_for_pull(
    staging: &Path,
    leaf: &str,
    leaf_path: &Path,
) -> Result<OwnedFd, VmSyncError> {
    let staging_fd = nix::fcntl::open(
        staging,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| VmSyncError::errno(staging, errno))?;
    if leaf.is_empty() {
        return Ok(staging_fd);
    }
    match hostio::open_dir_at(staging_fd.as_fd(), leaf) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) => Err(VmSyncError::Escape {
            path: leaf_path.to_path_buf(),
        }),
        Err(Errno::ENOTDIR) => {
            // O_NOFOLLOW|O_DIRECTORY on a symlink may report ENOTDIR on some systems.
            match hostio::lstat_at(staging_fd.as_fd(), leaf) {
                Ok(meta) if meta.kind == HostKind::Symlink => Err(VmSyncError::Escape {
                    path: leaf_path.to_path_buf(),
                }),
                _ => Err(VmSyncError::LeafNotADirectory {
                    path: leaf_path.to_path_buf(),
                }),
            }
        }
        Err(errno) => Err(VmSyncError::errno(leaf_path, errno)),
    }
}

// The per-directory scan and the application of the gathered changes to the VFS live in
// their own files.
mod apply;
mod scan;

use apply::apply;
