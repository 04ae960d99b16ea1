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

use devshell_vm_vfs::{Content, MAX_DEPTH, NodeKind, Vfs, VfsError};
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
        content: Content,
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

impl<'m> Scan<'_, 'm> {
    fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.leaf_path.to_path_buf()
        } else {
            self.leaf_path.join(rel)
        }
    }

    /// A scanning thread: takes directory jobs until none are left (or one failed).
    fn work(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if self.failed.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(job) = queue.jobs.pop() {
                        queue.active += 1;
                        break job;
                    }
                    if queue.active == 0 {
                        return;
                    }
                    queue.idle += 1;
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                    queue.idle -= 1;
                }
            };
            let outcome = self.scan_dir(job);
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.active -= 1;
            match outcome {
                Ok(result) => self
                    .results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(result),
                Err(err) => {
                    self.failed.store(true, Ordering::Relaxed);
                    self.error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(err);
                }
            }
            // Waiters need to hear about the end of the scan or a failure; new jobs
            // wake them in `push_job`.
            let wake = queue.idle > 0
                && ((queue.jobs.is_empty() && queue.active == 0)
                    || self.failed.load(Ordering::Relaxed));
            drop(queue);
            if wake {
                self.wake.notify_all();
            }
        }
    }

    fn push_job(&self, job: DirJob<'m>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.jobs.push(job);
        let wake = queue.idle > 0;
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Opens a job's directory; for the leaf itself also compares its own metadata.
    fn open_job_dir(
        &self,
        source: DirSource,
        rel: &str,
        known: Option<&MEntry>,
        out: &mut DirResult,
    ) -> Result<OwnedFd, VmSyncError> {
        Ok(match source {
            DirSource::Open(fd) => {
                // The leaf itself: its own metadata is checked here.
                let meta = hostio::stat_fd(fd.as_fd())
                    .map_err(|errno| VmSyncError::errno(self.leaf_path, errno))?;
                let (mode, mtime) = (meta.mode, meta.mtime.to_system_time());
                match known {
                    Some(entry) if entry.meta == meta && !entry.racy => {}
                    Some(_) => {
                        out.ops.push(PullOp::DirMeta {
                            rel: String::new(),
                            mode,
                            mtime,
                        });
                        out.record("", meta);
                    }
                    None => {
                        out.ops.push(PullOp::Mkdir {
                            rel: String::new(),
                            mode,
                            mtime,
                        });
                        out.record("", meta);
                    }
                }
                fd
            }
            DirSource::Opened(fd) => fd,
            DirSource::At(parent, name) => {
                match hostio::open_dir_at(parent.as_fd(), name.as_c_str()) {
                    Ok(fd) => fd,
                    Err(Errno::ELOOP | Errno::ENOTDIR) => {
                        return Err(VmSyncError::ChangedDuringRead {
                            path: self.host_path(rel),
                        });
                    }
                    Err(errno) => return Err(VmSyncError::errno(self.host_path(rel), errno)),
                }
            }
        })
    }

    /// Scans one host directory against its manifest entry.
    fn scan_dir(&self, job: DirJob<'m>) -> Result<DirResult, VmSyncError> {
        let DirJob {
            source,
            rel,
            known,
            depth,
        } = job;
        let mut out = DirResult::default();
        self.dirs_scanned.fetch_add(1, Ordering::Relaxed);
        let dir_fd = self.open_job_dir(source, &rel, known, &mut out)?;
        let dir_fd = Arc::new(dir_fd);
        let known_children = known.and_then(|k| k.children.as_ref());
        let listing_fd = dir_fd
            .try_clone()
            .map_err(|err| VmSyncError::io(self.host_path(&rel), err))?;
        let listing = Dir::from_fd(listing_fd)
            .map_err(|errno| VmSyncError::errno(self.host_path(&rel), errno))?;
        let mut seen_known = 0usize;
        let mut child_rel = rel.clone();
        // Owning iteration: the listing descriptor is closed at the end, not rewound.
        for entry in listing {
            let entry = entry.map_err(|errno| VmSyncError::errno(self.host_path(&rel), errno))?;
            let raw_name = entry.file_name();
            if hostio::is_dot_or_dotdot(raw_name) {
                continue;
            }
            let Some(name) = hostio::utf8_name(raw_name) else {
                let path = self
                    .host_path(&rel)
                    .join(std::ffi::OsStr::from_bytes(raw_name.to_bytes()));
                out.skip(
                    path,
                    "name is not valid UTF-8 (the VFS holds UTF-8 names only)",
                );
                continue;
            };
            child_rel.truncate(rel.len());
            if !rel.is_empty() {
                child_rel.push('/');
            }
            child_rel.push_str(name);
            let known_child = known_children.and_then(|c| c.get(name));
            if known_child.is_some() {
                seen_known += 1;
            }
            self.scan_entry(
                &dir_fd,
                raw_name,
                &child_rel,
                known_child,
                depth + 1,
                &mut out,
            )?;
        }
        // Recorded entries not seen in the listing were deleted on the host.
        if let Some(children) = known_children
            && seen_known < children.len()
        {
            for (name, child) in children {
                let child_rel = join_rel(&rel, name);
                if self
                    .excludes
                    .matches(&child_rel, child.meta.kind == HostKind::Dir)
                {
                    continue;
                }
                match hostio::lstat_at(dir_fd.as_fd(), name.as_ref()) {
                    Err(Errno::ENOENT) => out.remove(&child_rel),
                    // Created after the listing: the next pull sees it.
                    Ok(_) => {}
                    Err(errno) => {
                        return Err(VmSyncError::errno(self.host_path(&child_rel), errno));
                    }
                }
            }
        }
        out.rel = rel;
        Ok(out)
    }

    /// In a scoped pull, a known directory replaced under the same name (new inode): its
    /// recorded subtree says nothing about the new one, so the scan stops and the pull
    /// starts over in full.
    fn replaced_dir(&self, known: Option<&MEntry>, meta: &HostMeta) -> bool {
        let replaced = self.scoped
            && known.is_some_and(|k| {
                k.meta.kind == HostKind::Dir && (k.meta.ino != meta.ino || k.meta.dev != meta.dev)
            });
        if replaced {
            self.replaced.store(true, Ordering::Relaxed);
            self.failed.store(true, Ordering::Relaxed);
        }
        replaced
    }

    fn scan_entry(
        &self,
        dir: &Arc<OwnedFd>,
        raw_name: &CStr,
        rel: &str,
        known: Option<&'m MEntry>,
        depth: usize,
        out: &mut DirResult,
    ) -> Result<(), VmSyncError> {
        let meta = match hostio::lstat_at(dir.as_fd(), raw_name) {
            Ok(meta) => meta,
            // Vanished since the listing: the manifest still has it (if it did), so the
            // next pull mirrors the deletion.
            Err(Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(VmSyncError::errno(self.host_path(rel), errno)),
        };
        if !self.excludes.is_empty() && self.excludes.matches(rel, meta.kind == HostKind::Dir) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            out.skip(
                self.host_path(rel),
                format!("deeper than the VFS allows ({MAX_DEPTH} components)"),
            );
            return Ok(());
        }
        let unchanged = known.is_some_and(|k| k.meta == meta && !k.racy);
        let kind_changed = known.is_some_and(|k| k.meta.kind != meta.kind);
        match meta.kind {
            HostKind::Other => {
                out.skip(
                    self.host_path(rel),
                    "special file (FIFO, socket or device) is not synced",
                );
                if known.is_some() {
                    out.remove(rel);
                }
            }
            HostKind::Dir => {
                let (mode, mtime) = (meta.mode, meta.mtime.to_system_time());
                if self.replaced_dir(known, &meta) {
                    return Ok(());
                }
                if known.is_none() || kind_changed {
                    if kind_changed {
                        out.ops.push(PullOp::Remove {
                            rel: rel.to_owned(),
                        });
                    }
                    out.ops.push(PullOp::Mkdir {
                        rel: rel.to_owned(),
                        mode,
                        mtime,
                    });
                    out.record(rel, meta);
                } else if !unchanged {
                    out.ops.push(PullOp::DirMeta {
                        rel: rel.to_owned(),
                        mode,
                        mtime,
                    });
                    out.record(rel, meta);
                }
                // A scoped pull descends only into what the manifest does not know.
                if !self.scoped || known.is_none() || kind_changed {
                    self.push_job(DirJob {
                        source: DirSource::At(Arc::clone(dir), raw_name.to_owned()),
                        rel: rel.to_owned(),
                        known: known.filter(|k| k.meta.kind == HostKind::Dir),
                        depth,
                    });
                }
            }
            HostKind::File if !unchanged => {
                self.scan_file(dir.as_fd(), raw_name, rel, meta, kind_changed, out)?;
            }
            HostKind::Symlink if !unchanged => {
                let target = hostio::read_link_at(dir.as_fd(), raw_name)
                    .map_err(|errno| VmSyncError::errno(self.host_path(rel), errno))?;
                let Ok(target) = target.into_string() else {
                    out.skip(self.host_path(rel), "symlink target is not valid UTF-8");
                    if known.is_some() {
                        out.remove(rel);
                    }
                    return Ok(());
                };
                let mtime = meta.mtime.to_system_time();
                let same_in_vfs = self
                    .vfs
                    .node(&vfs_join(self.vfs_root, rel))
                    .is_ok_and(|node| {
                        node.link_target() == Some(target.as_str())
                            && node.metadata().mtime == mtime
                    });
                if !same_in_vfs {
                    if kind_changed {
                        out.ops.push(PullOp::Remove {
                            rel: rel.to_owned(),
                        });
                    }
                    out.ops.push(PullOp::Symlink {
                        rel: rel.to_owned(),
                        target,
                        mtime,
                    });
                }
                out.record(rel, meta);
            }
            HostKind::File | HostKind::Symlink => {}
        }
        Ok(())
    }

    /// Reads a new or changed file and queues it unless the VFS already has it.
    fn scan_file(
        &self,
        dir: BorrowedFd<'_>,
        raw_name: &CStr,
        rel: &str,
        meta: HostMeta,
        kind_changed: bool,
        out: &mut DirResult,
    ) -> Result<(), VmSyncError> {
        if meta.size > self.max_file_size {
            return Err(VmSyncError::FileTooLarge {
                path: self.host_path(rel),
                size: meta.size,
                limit: self.max_file_size,
            });
        }
        let (read_meta, content) = match hostio::read_file_at(dir, raw_name) {
            Ok(read) => read,
            Err(ReadError::Changed) => {
                return Err(VmSyncError::ChangedDuringRead {
                    path: self.host_path(rel),
                });
            }
            Err(ReadError::Io(err)) => return Err(VmSyncError::io(self.host_path(rel), err)),
        };
        out.files_read += 1;
        out.bytes_read += content.len() as u64;
        self.progress(content.len() as u64);
        let mtime = read_meta.mtime.to_system_time();
        let same_in_vfs = self
            .vfs
            .node(&vfs_join(self.vfs_root, rel))
            .is_ok_and(|node| {
                let vfs_meta = node.metadata();
                vfs_meta.kind == NodeKind::File
                    && vfs_meta.mode == read_meta.mode
                    && vfs_meta.mtime == mtime
                    && node.content().is_some_and(|c| c[..] == content[..])
            });
        if !same_in_vfs {
            if kind_changed {
                out.ops.push(PullOp::Remove {
                    rel: rel.to_owned(),
                });
            }
            out.ops.push(PullOp::File {
                rel: rel.to_owned(),
                content,
                mode: read_meta.mode,
                mtime,
            });
        }
        out.record(rel, read_meta);
        Ok(())
    }

    /// Counts one file read and tells the observer every [`PROGRESS_EVERY`] files.
    fn progress(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
        let files = self.files_read.fetch_add(1, Ordering::Relaxed) + 1;
        if files.is_multiple_of(PROGRESS_EVERY)
            && let Some(observer) = self
                .observer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
        {
            // The counters are read again under the lock: they only grow, so reports
            // reach the observer in non-decreasing order whichever thread sends them.
            observer(&SyncProgress {
                files_done: self.files_read.load(Ordering::Relaxed),
                bytes_done: self.bytes_read.load(Ordering::Relaxed),
            });
        }
    }
}

/// Removes whatever is at `path` in the VFS (nothing there is fine).
fn remove_if_present(vfs: &mut Vfs, path: &str) -> Result<bool, VfsError> {
    match vfs.remove(path) {
        Ok(()) => Ok(true),
        Err(VfsError::NotFound { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Makes sure the parent directory of `path` exists in the VFS (it can be missing when
/// the VFS was edited since the last push).
fn ensure_parent(vfs: &mut Vfs, path: &str) -> Result<(), VfsError> {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    };
    match vfs.stat(parent) {
        Ok(meta) if meta.kind == NodeKind::Dir => Ok(()),
        Ok(_) => {
            vfs.remove(parent)?;
            vfs.mkdir(parent)
        }
        Err(VfsError::NotFound { .. }) => vfs.mkdir(parent),
        Err(err) => Err(err),
    }
}

/// Applies gathered changes to the VFS.
fn apply(
    vfs: &mut Vfs,
    root: &str,
    ops: Vec<PullOp>,
    report: &mut SyncReport,
) -> Result<(), VmSyncError> {
    for op in ops {
        match op {
            PullOp::Remove { rel } => {
                if !rel.is_empty() && remove_if_present(vfs, &vfs_join(root, &rel))? {
                    report.deleted += 1;
                }
            }
            PullOp::Mkdir { rel, mode, mtime } => {
                let path = vfs_join(root, &rel);
                match vfs.stat(&path) {
                    Ok(meta) if meta.kind == NodeKind::Dir => {}
                    Ok(_) => {
                        vfs.remove(&path)?;
                        report.deleted += 1;
                        vfs.mkdir(&path)?;
                        report.dirs_created += 1;
                    }
                    Err(VfsError::NotFound { .. }) => {
                        vfs.mkdir(&path)?;
                        report.dirs_created += 1;
                    }
                    Err(err) => return Err(err.into()),
                }
                set_dir_meta(vfs, &path, mode, mtime)?;
            }
            PullOp::DirMeta { rel, mode, mtime } => {
                let path = vfs_join(root, &rel);
                match vfs.stat(&path) {
                    Ok(meta) if meta.kind == NodeKind::Dir => {}
                    Ok(_) => {
                        vfs.remove(&path)?;
                        vfs.mkdir(&path)?;
                    }
                    Err(VfsError::NotFound { .. }) => vfs.mkdir(&path)?,
                    Err(err) => return Err(err.into()),
                }
                set_dir_meta(vfs, &path, mode, mtime)?;
            }
            PullOp::File {
                rel,
                content,
                mode,
                mtime,
            } => {
                let path = vfs_join(root, &rel);
                ensure_parent(vfs, &path)?;
                if vfs.stat(&path).is_ok_and(|meta| meta.kind == NodeKind::Dir) {
                    vfs.remove(&path)?;
                    report.deleted += 1;
                }
                report.bytes_written += content.len() as u64;
                vfs.write_file_with(&path, content, mode, mtime)?;
                report.files_written += 1;
            }
            PullOp::Symlink { rel, target, mtime } => {
                let path = vfs_join(root, &rel);
                ensure_parent(vfs, &path)?;
                remove_if_present(vfs, &path)?;
                vfs.symlink_with(&target, &path, mtime)?;
                report.files_written += 1;
            }
        }
    }
    Ok(())
}

/// Sets mode and mtime of a VFS directory when they differ.
fn set_dir_meta(vfs: &mut Vfs, path: &str, mode: u32, mtime: SystemTime) -> Result<(), VfsError> {
    let meta = vfs.stat(path)?;
    if meta.mode != mode {
        vfs.set_mode(path, mode)?;
    }
    if meta.mtime != mtime {
        vfs.set_mtime(path, mtime)?;
    }
    Ok(())
}
