//! VFS → host: [`push_full`] and [`push_incremental`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use devshell_vm_vfs::{Content, NodeKind, Vfs, VfsError};
use nix::dir::Dir;
use nix::errno::Errno;

use crate::VmSyncError;
use crate::hostio::{self, HostKind, HostMeta, Ts};
use crate::report::{SyncProgress, SyncReport};
use crate::state::{
    Excludes, LeafState, MEntry, SyncState, check_rel, join_rel, leaf_name, rel_of, split_rel,
    vfs_join,
};

/// Files handed to the writer threads at once.
const BATCH_FILES: usize = 2048;
/// Content bytes handed to the writer threads at once.
const BATCH_BYTES: u64 = 64 << 20;
/// Finished directories (each holding an open descriptor) before a flush.
const BATCH_DIRS: usize = 256;
/// Below this many files a batch is written on the calling thread.
const PARALLEL_MIN_FILES: usize = 64;
/// Most files of one directory a writer takes at once.
const CHUNK_FILES: usize = 64;

/// Resolves `vfs_path` and checks it is an existing directory, before anything on the
/// host is touched.
fn checked_root(vfs: &Vfs, vfs_path: &str) -> Result<String, VmSyncError> {
    let norm = vfs.normalize(vfs_path)?;
    match vfs.stat(&norm) {
        Ok(meta) if meta.kind == NodeKind::Dir => Ok(norm),
        Ok(_) => Err(VmSyncError::NotADirectory { vfs_path: norm }),
        Err(VfsError::NotFound { .. } | VfsError::NotADirectory { .. }) => {
            Err(VmSyncError::NotFound { vfs_path: norm })
        }
        Err(err) => Err(err.into()),
    }
}

/// Opens (creating it if needed) the staging directory. It belongs to the caller, so
/// it may itself be reached through a symlink; nothing below it is.
fn open_staging(staging: &Path, create: bool) -> Result<OwnedFd, VmSyncError> {
    if create {
        std::fs::create_dir_all(staging).map_err(|err| VmSyncError::io(staging, err))?;
    }
    nix::fcntl::open(
        staging,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| VmSyncError::errno(staging, errno))
}

/// Opens the leaf for a push, creating it or replacing a non-directory in its place.
/// Returns the descriptor, whether it was created, and how many entries were removed.
fn open_leaf_for_push(
    staging_fd: &OwnedFd,
    leaf: &str,
    leaf_path: &Path,
) -> Result<(OwnedFd, bool, u64), VmSyncError> {
    if leaf.is_empty() {
        let fd = staging_fd
            .try_clone()
            .map_err(|err| VmSyncError::io(leaf_path, err))?;
        return Ok((fd, false, 0));
    }
    hostio::ensure_dir_at(staging_fd.as_fd(), leaf)
        .map_err(|errno| VmSyncError::errno(leaf_path, errno))
}

/// Makes the staging leaf of `vfs_path` an exact copy of the VFS subtree: every file,
/// directory and symlink with its mode and mtime, and host entries the VFS does not
/// have are deleted (except excluded ones). Nothing outside the leaf is touched, and the
/// VFS path is checked to be an existing directory before anything is deleted. Files
/// are written by a few threads in parallel; each is written once, from the VFS's own
/// buffer.
///
/// # Errors
/// [`VmSyncError::NotFound`] / [`VmSyncError::NotADirectory`] for the VFS path (the
/// host is untouched), [`VmSyncError::LeafCollision`], [`VmSyncError::Io`] naming the
/// host path. After an I/O error the leaf is in between; the next push is a full one.
pub fn push_full(
    vfs: &Vfs,
    vfs_path: &str,
    state: &mut SyncState,
) -> Result<SyncReport, VmSyncError> {
    let started = Instant::now();
    let norm = checked_root(vfs, vfs_path)?;
    state.bind(&norm)?;
    let result = full_push_inner(vfs, &norm, state);
    let leaf = state.bind(&norm)?;
    match result {
        Ok((mut report, manifest)) => {
            leaf.entry_count = manifest.len();
            leaf.manifest = Some(manifest);
            leaf.synced_generation = Some(vfs.generation());
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(err) => {
            invalidate(leaf);
            Err(err)
        }
    }
}

/// Forgets what is known about a leaf after a failed sync: the next push is full, and
/// the next pull deletes nothing in the VFS.
pub(crate) fn invalidate(leaf: &mut LeafState) {
    leaf.manifest = None;
    leaf.synced_generation = None;
}

/// One file to write.
struct FileJob<'v> {
    dir: Arc<OwnedFd>,
    rel: String,
    name_start: usize,
    content: &'v Content,
    mode: u32,
    mtime: Ts,
}

impl FileJob<'_> {
    fn name(&self) -> &str {
        &self.rel[self.name_start..]
    }
}

/// A directory being filled: its descriptor stays open until its mode and mtime are set.
struct DirFrame {
    rel: String,
    fd: Arc<OwnedFd>,
    mode: u32,
    mtime: Ts,
}

struct FullPush<'a, 'v> {
    leaf_path: &'a Path,
    excludes: &'a Excludes,
    umask_bits: u32,
    threads: usize,
    generation: u64,
    observed_at: Ts,
    report: SyncReport,
    manifest: MEntry,
    stack: Vec<DirFrame>,
    finished: Vec<DirFrame>,
    jobs: Vec<FileJob<'v>>,
    job_bytes: u64,
    observer: Option<&'a mut (dyn FnMut(&SyncProgress) + Send)>,
}

#[expect(
    clippy::too_many_lines,
    reason = "one pre-order walk; splitting it would scatter its state"
)]
fn full_push_inner(
    vfs: &Vfs,
    norm: &str,
    state: &mut SyncState,
) -> Result<(SyncReport, MEntry), VmSyncError> {
    let observed_at = Ts::coarse_now();
    let leaf = leaf_name(norm).to_owned();
    let leaf_path = state.leaf_path(&leaf);
    let staging_fd = open_staging(state.staging_dir(), true)?;
    let (leaf_fd, leaf_created, removed) = open_leaf_for_push(&staging_fd, &leaf, &leaf_path)?;
    let leaf_meta =
        hostio::stat_fd(leaf_fd.as_fd()).map_err(|errno| VmSyncError::errno(&leaf_path, errno))?;
    let root_meta = vfs.stat(norm)?;
    let excludes = state.excludes.clone();
    let umask_bits = state.umask_bits;
    let threads = state.threads;
    let observer = state.observer_mut();
    let mut push = FullPush {
        leaf_path: &leaf_path,
        excludes: &excludes,
        umask_bits,
        threads,
        generation: vfs.generation(),
        observed_at,
        report: SyncReport {
            deleted: removed,
            dirs_created: u64::from(leaf_created && !leaf.is_empty()),
            ..SyncReport::default()
        },
        manifest: MEntry::new(leaf_meta, vfs.generation(), observed_at),
        stack: Vec::new(),
        finished: Vec::new(),
        jobs: Vec::new(),
        job_bytes: 0,
        observer,
    };
    let leaf_fd = Arc::new(leaf_fd);
    if !leaf_created {
        push.reconcile(vfs, norm, "", leaf_fd.as_fd())?;
    }
    push.stack.push(DirFrame {
        rel: String::new(),
        fd: leaf_fd,
        mode: root_meta.mode,
        mtime: Ts::from_system_time(root_meta.mtime),
    });

    // Pre-order walk: directories are created (or reconciled) as they come, files are
    // queued for the writer threads, symlinks are made on the spot.
    let mut skip_below: Option<String> = None;
    for entry in vfs.walk(norm)?.skip(1) {
        let rel = rel_of(norm, &entry.path)
            .expect("walk stays below its start")
            .to_owned();
        if let Some(prefix) = &skip_below {
            if rel.len() > prefix.len()
                && rel.starts_with(prefix.as_str())
                && rel.as_bytes()[prefix.len()] == b'/'
            {
                continue;
            }
            skip_below = None;
        }
        check_rel(&rel)?;
        let (parent_rel, name) = split_rel(&rel);
        while push.stack.last().is_some_and(|top| top.rel != parent_rel) {
            let done = push.stack.pop().expect("checked non-empty");
            push.finished.push(done);
        }
        let kind = entry.node.kind();
        if push.excludes.matches(&rel, kind == NodeKind::Dir) {
            if kind == NodeKind::Dir {
                skip_below = Some(rel);
            }
            continue;
        }
        let parent = Arc::clone(
            &push
                .stack
                .last()
                .expect("the leaf frame is never popped here")
                .fd,
        );
        let meta = entry.node.metadata();
        let mtime = Ts::from_system_time(meta.mtime);
        match kind {
            NodeKind::Dir => {
                let (fd, created, removed) = hostio::ensure_dir_at(parent.as_fd(), name)
                    .map_err(|errno| VmSyncError::errno(push.leaf_path.join(&rel), errno))?;
                push.report.deleted += removed;
                if created {
                    push.report.dirs_created += 1;
                } else {
                    push.reconcile(vfs, &entry.path, &rel, fd.as_fd())?;
                }
                let dir_meta = hostio::stat_fd(fd.as_fd())
                    .map_err(|errno| VmSyncError::errno(push.leaf_path.join(&rel), errno))?;
                push.manifest
                    .upsert(&rel, dir_meta, push.generation, push.observed_at);
                push.stack.push(DirFrame {
                    rel,
                    fd: Arc::new(fd),
                    mode: meta.mode,
                    mtime,
                });
            }
            NodeKind::File => {
                let content = entry.node.content().expect("a file node has content");
                push.job_bytes += content.len() as u64;
                let name_start = rel.len() - name.len();
                push.jobs.push(FileJob {
                    dir: parent,
                    rel,
                    name_start,
                    content,
                    mode: meta.mode,
                    mtime,
                });
            }
            NodeKind::Symlink => {
                let target = entry
                    .node
                    .link_target()
                    .expect("a symlink node has a target");
                let (link_meta, removed) =
                    hostio::create_symlink_at(parent.as_fd(), name, target, mtime)
                        .map_err(|errno| VmSyncError::errno(push.leaf_path.join(&rel), errno))?;
                push.report.deleted += removed;
                push.report.files_written += 1;
                push.manifest
                    .upsert(&rel, link_meta, push.generation, push.observed_at);
            }
        }
        if push.jobs.len() >= BATCH_FILES
            || push.job_bytes >= BATCH_BYTES
            || push.finished.len() >= BATCH_DIRS
        {
            push.flush()?;
        }
    }
    while let Some(done) = push.stack.pop() {
        push.finished.push(done);
    }
    push.flush()?;
    let report = std::mem::take(&mut push.report);
    Ok((report, push.manifest))
}

impl FullPush<'_, '_> {
    /// Deletes host entries of an existing directory that the VFS directory lacks
    /// (excluded ones stay). Names that are not UTF-8 cannot be in the VFS: extras.
    fn reconcile(
        &mut self,
        vfs: &Vfs,
        vfs_dir: &str,
        rel: &str,
        fd: BorrowedFd<'_>,
    ) -> Result<(), VmSyncError> {
        let wanted: HashSet<String> = vfs.list_dir(vfs_dir)?.into_iter().map(|e| e.name).collect();
        let dir_path = self.leaf_path.join(rel);
        let listing_fd = fd
            .try_clone_to_owned()
            .map_err(|err| VmSyncError::io(&dir_path, err))?;
        let listing =
            Dir::from_fd(listing_fd).map_err(|errno| VmSyncError::errno(&dir_path, errno))?;
        let mut extras: Vec<CString> = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|errno| VmSyncError::errno(&dir_path, errno))?;
            let name = entry.file_name();
            if hostio::is_dot_or_dotdot(name)
                || hostio::utf8_name(name).is_some_and(|n| wanted.contains(n))
            {
                continue;
            }
            extras.push(name.to_owned());
        }
        for name in extras {
            let shown = dir_path.join(OsStr::from_bytes(name.to_bytes()));
            if let Some(utf8) = hostio::utf8_name(&name)
                && !self.excludes.is_empty()
            {
                let is_dir =
                    hostio::lstat_at(fd, name.as_c_str()).is_ok_and(|m| m.kind == HostKind::Dir);
                if self.excludes.matches(&join_rel(rel, utf8), is_dir) {
                    continue;
                }
            }
            self.report.deleted += hostio::remove_at(fd, name.as_c_str())
                .map_err(|errno| VmSyncError::errno(shown, errno))?;
        }
        Ok(())
    }

    /// Writes the queued files, then sets mode and mtime of the finished directories.
    fn flush(&mut self) -> Result<(), VmSyncError> {
        let jobs = std::mem::take(&mut self.jobs);
        self.job_bytes = 0;
        let results = write_files(&jobs, self.umask_bits, self.threads)
            .map_err(|(index, err)| VmSyncError::io(self.leaf_path.join(&jobs[index].rel), err))?;
        for (job, (meta, removed)) in jobs.iter().zip(results) {
            self.report.files_written += 1;
            self.report.bytes_written += job.content.len() as u64;
            self.report.deleted += removed;
            self.manifest
                .upsert(&job.rel, meta, self.generation, self.observed_at);
        }
        drop(jobs);
        for dir in std::mem::take(&mut self.finished) {
            let meta = hostio::finish_dir(dir.fd.as_fd(), dir.mode, dir.mtime)
                .map_err(|errno| VmSyncError::errno(self.leaf_path.join(&dir.rel), errno))?;
            self.manifest
                .upsert(&dir.rel, meta, self.generation, self.observed_at);
        }
        if let Some(observer) = self.observer.as_mut() {
            observer(&SyncProgress {
                files_done: self.report.files_written,
                bytes_done: self.report.bytes_written,
            });
        }
        Ok(())
    }
}

/// Per file: its metadata after writing and how many entries it replaced.
type WriteResult = std::io::Result<(HostMeta, u64)>;

/// Writes a batch of files, in parallel when it is large. Returns per job the new
/// metadata and how many entries were replaced, or the index of the first failure.
fn write_files(
    jobs: &[FileJob<'_>],
    umask_bits: u32,
    threads: usize,
) -> Result<Vec<(HostMeta, u64)>, (usize, std::io::Error)> {
    let write_one = |job: &FileJob<'_>| -> WriteResult {
        let (file, removed) = hostio::create_file_at(job.dir.as_fd(), job.name(), job.mode)?;
        let meta = hostio::finish_file(file, job.content, job.mode, job.mtime, umask_bits)?;
        Ok((meta, removed))
    };
    let writers = threads.max(1);
    if jobs.len() < PARALLEL_MIN_FILES || writers == 1 {
        return jobs
            .iter()
            .enumerate()
            .map(|(index, job)| write_one(job).map_err(|err| (index, err)))
            .collect();
    }
    // Writers take runs of files of one directory (at most CHUNK_FILES), so they mostly
    // create entries in different directories instead of contending for one.
    let mut chunks: Vec<std::ops::Range<usize>> = Vec::new();
    let mut start = 0;
    for index in 1..=jobs.len() {
        if index == jobs.len()
            || index - start >= CHUNK_FILES
            || !Arc::ptr_eq(&jobs[index].dir, &jobs[start].dir)
        {
            chunks.push(start..index);
            start = index;
        }
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut slots: Vec<Option<WriteResult>> = Vec::new();
    slots.resize_with(jobs.len(), || None);
    let work = || {
        let mut done = Vec::new();
        while !failed.load(Ordering::Relaxed) {
            let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            for index in chunk.clone() {
                let result = write_one(&jobs[index]);
                let failed_now = result.is_err();
                done.push((index, result));
                if failed_now {
                    failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        done
    };
    // The calling thread writes too, next to `writers - 1` helpers.
    let per_worker: Vec<Vec<(usize, WriteResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..writers).map(|_| scope.spawn(work)).collect();
        let mut all = vec![work()];
        all.extend(
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_default()),
        );
        all
    });
    for (index, result) in per_worker.into_iter().flatten() {
        slots[index] = Some(result);
    }
    let mut out = Vec::with_capacity(jobs.len());
    for (index, slot) in slots.into_iter().enumerate() {
        match slot {
            Some(Ok(value)) => out.push(value),
            Some(Err(err)) => return Err((index, err)),
            // A writer stopped early because another failed (or panicked).
            None => {
                return Err((
                    index,
                    std::io::Error::other("file was not written because another write failed"),
                ));
            }
        }
    }
    Ok(out)
}

/// Open directories along one path of the leaf, reused between consecutive lookups
/// (the journal lists paths in pre-order, so neighbours share most of their parents).
struct DirChain {
    chain: Vec<(String, OwnedFd)>,
}

impl DirChain {
    fn new(leaf_fd: OwnedFd) -> Self {
        Self {
            chain: vec![(String::new(), leaf_fd)],
        }
    }

    fn is_ancestor_or_self(ancestor: &str, rel: &str) -> bool {
        ancestor.is_empty()
            || rel == ancestor
            || (rel.len() > ancestor.len()
                && rel.starts_with(ancestor)
                && rel.as_bytes()[ancestor.len()] == b'/')
    }

    /// The directory at `rel`. With `create`, missing directories are created and
    /// non-directories (including symlinks) in the way are replaced; the relative paths
    /// of created directories are appended to `created`. Without `create`, `Ok(None)`
    /// when something on the way is missing or not a directory.
    fn open(
        &mut self,
        rel: &str,
        create: bool,
        created: &mut Vec<String>,
        removed: &mut u64,
    ) -> nix::Result<Option<BorrowedFd<'_>>> {
        while self.chain.len() > 1
            && !Self::is_ancestor_or_self(&self.chain.last().expect("non-empty").0, rel)
        {
            self.chain.pop();
        }
        let have = self.chain.last().expect("the leaf stays").0.len();
        let rest = if have == 0 {
            rel
        } else {
            rel.get(have + 1..).unwrap_or("")
        };
        for name in rest.split('/').filter(|c| !c.is_empty()) {
            let (base, parent) = self.chain.last().expect("the leaf stays");
            let next_rel = join_rel(base, name);
            let fd = if create {
                let (fd, was_created, gone) = hostio::ensure_dir_at(parent.as_fd(), name)?;
                *removed += gone;
                if was_created {
                    created.push(next_rel.clone());
                }
                fd
            } else {
                match hostio::open_dir_at(parent.as_fd(), name) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
                    Err(err) => return Err(err),
                }
            };
            self.chain.push((next_rel, fd));
        }
        Ok(Some(self.chain.last().expect("the leaf stays").1.as_fd()))
    }
}

/// Applies to the staging leaf only what the VFS journal says changed under `vfs_path`
/// since the last sync: creations, overwrites, deletions, renames (delete + create),
/// mode and mtime changes, empty directories and symlinks (created as symlinks). Files
/// keep the VFS mtime, so an edited file carries its edit time and an untouched one
/// keeps its old time: cargo rebuilds exactly what changed. Costs time proportional to
/// the changes. Falls back to [`push_full`] the first time, when the journal no longer
/// reaches back far enough, or when the leaf disappeared.
///
/// # Errors
/// As [`push_full`].
pub fn push_incremental(
    vfs: &Vfs,
    vfs_path: &str,
    state: &mut SyncState,
) -> Result<SyncReport, VmSyncError> {
    let started = Instant::now();
    let norm = checked_root(vfs, vfs_path)?;
    let leaf = state.bind(&norm)?;
    let Some(since) = leaf.synced_generation.filter(|_| leaf.manifest.is_some()) else {
        return push_full(vfs, &norm, state);
    };
    let changes = match vfs.changes_since(&norm, since) {
        Ok(changes) => changes,
        Err(VfsError::HistoryUnavailable { .. }) => return push_full(vfs, &norm, state),
        Err(err) => return Err(err.into()),
    };
    let leaf_path = state.leaf_path(leaf_name(&norm));
    // The leaf must still be a real directory (one lstat); otherwise start over.
    match std::fs::symlink_metadata(&leaf_path) {
        Ok(meta) if meta.is_dir() => {}
        _ => return push_full(vfs, &norm, state),
    }
    if changes.is_empty() {
        return Ok(SyncReport {
            duration: started.elapsed(),
            ..SyncReport::default()
        });
    }
    if changes.deleted.contains(&norm) {
        // The synced directory itself was replaced: nothing old can be kept.
        return push_full(vfs, &norm, state);
    }
    let result = incremental_inner(vfs, &norm, &leaf_path, &changes, state);
    let leaf = state.bind(&norm)?;
    match result {
        Ok(mut report) => {
            leaf.synced_generation = Some(changes.generation);
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(err) => {
            invalidate(leaf);
            Err(err)
        }
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "deletions, upserts and metadata fix-ups share one directory cache"
)]
fn incremental_inner(
    vfs: &Vfs,
    norm: &str,
    leaf_path: &Path,
    changes: &devshell_vm_vfs::Changes,
    state: &mut SyncState,
) -> Result<SyncReport, VmSyncError> {
    let observed_at = Ts::coarse_now();
    let generation = changes.generation;
    let host_err = |rel: &str| {
        let path: PathBuf = leaf_path.join(rel);
        move |errno: Errno| VmSyncError::errno(path, errno)
    };
    let leaf = leaf_name(norm).to_owned();
    let staging_fd = open_staging(state.staging_dir(), false)?;
    let leaf_fd = if leaf.is_empty() {
        staging_fd
    } else {
        hostio::open_dir_at(staging_fd.as_fd(), leaf.as_str()).map_err(host_err(""))?
    };
    let SyncState {
        excludes,
        observer,
        leaves,
        umask_bits,
        ..
    } = state;
    let umask_bits = *umask_bits;
    let mut report = SyncReport::default();
    let mut chain = DirChain::new(leaf_fd);
    // Directories whose entries changed (their mtime must be put back) and directories
    // whose own metadata must be set from the VFS.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut created_dirs: Vec<String> = Vec::new();
    let mut dir_meta: BTreeMap<String, (u32, Ts)> = BTreeMap::new();
    let leaf_state = leaves.get_mut(&leaf).expect("bound by the caller");
    let manifest = leaf_state.manifest.as_mut().expect("checked by the caller");

    for path in &changes.deleted {
        let Some(rel) = rel_of(norm, path) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        check_rel(rel)?;
        let (parent_rel, name) = split_rel(rel);
        let mut ignored = Vec::new();
        let Some(parent) = chain
            .open(parent_rel, false, &mut ignored, &mut report.deleted)
            .map_err(host_err(parent_rel))?
        else {
            manifest.remove(rel);
            continue;
        };
        if !excludes.is_empty() {
            let is_dir = hostio::lstat_at(parent, name).is_ok_and(|m| m.kind == HostKind::Dir);
            if excludes.covers(rel, is_dir) {
                continue;
            }
        }
        let removed = hostio::remove_at(parent, name).map_err(host_err(rel))?;
        if removed > 0 {
            report.deleted += removed;
            touched.insert(parent_rel.to_owned());
        }
        manifest.remove(rel);
    }

    let mut done = 0u64;
    for path in &changes.upserted {
        let Some(rel) = rel_of(norm, path) else {
            continue;
        };
        let node = vfs.node(path)?;
        let meta = node.metadata();
        let mtime = Ts::from_system_time(meta.mtime);
        if rel.is_empty() {
            dir_meta.insert(String::new(), (meta.mode, mtime));
            continue;
        }
        if excludes.covers(rel, meta.kind == NodeKind::Dir) {
            continue;
        }
        check_rel(rel)?;
        let (parent_rel, name) = split_rel(rel);
        created_dirs.clear();
        let parent = chain
            .open(parent_rel, true, &mut created_dirs, &mut report.deleted)
            .map_err(host_err(parent_rel))?
            .expect("create mode always yields a directory");
        match meta.kind {
            NodeKind::Dir => {
                let (fd, created, removed) =
                    hostio::ensure_dir_at(parent, name).map_err(host_err(rel))?;
                report.deleted += removed;
                if created {
                    report.dirs_created += 1;
                    touched.insert(parent_rel.to_owned());
                }
                let host = hostio::stat_fd(fd.as_fd()).map_err(host_err(rel))?;
                manifest.upsert(rel, host, generation, observed_at);
                dir_meta.insert(rel.to_owned(), (meta.mode, mtime));
            }
            NodeKind::File => {
                let content = node.content().expect("a file node has content");
                let (file, removed) =
                    hostio::create_file_at(parent, name, meta.mode).map_err(host_err(rel))?;
                let host = hostio::finish_file(file, content, meta.mode, mtime, umask_bits)
                    .map_err(|err| VmSyncError::io(leaf_path.join(rel), err))?;
                report.deleted += removed;
                report.files_written += 1;
                report.bytes_written += content.len() as u64;
                touched.insert(parent_rel.to_owned());
                manifest.upsert(rel, host, generation, observed_at);
            }
            NodeKind::Symlink => {
                let target = node.link_target().expect("a symlink node has a target");
                let (host, removed) = hostio::create_symlink_at(parent, name, target, mtime)
                    .map_err(host_err(rel))?;
                report.deleted += removed;
                report.files_written += 1;
                touched.insert(parent_rel.to_owned());
                manifest.upsert(rel, host, generation, observed_at);
            }
        }
        // Directories the host lacked although the VFS had them all along.
        for created in created_dirs.drain(..) {
            report.dirs_created += 1;
            touched.insert(split_rel(&created).0.to_owned());
            let vfs_meta = vfs.stat(&vfs_join(norm, &created))?;
            dir_meta.insert(
                created,
                (vfs_meta.mode, Ts::from_system_time(vfs_meta.mtime)),
            );
        }
        done += 1;
        if done.is_multiple_of(1024)
            && let Some(observer) = observer.as_mut()
        {
            observer(&SyncProgress {
                files_done: report.files_written,
                bytes_done: report.bytes_written,
            });
        }
    }
    if let Some(observer) = observer.as_mut()
        && report.files_written > 0
    {
        observer(&SyncProgress {
            files_done: report.files_written,
            bytes_done: report.bytes_written,
        });
    }

    // Put back directory metadata: own mode+mtime for changed directories, mtime for
    // directories whose entries changed.
    let dirs: BTreeSet<&String> = touched.iter().chain(dir_meta.keys()).collect();
    for rel in dirs {
        let mut ignored = Vec::new();
        let Some(fd) = chain
            .open(rel, false, &mut ignored, &mut report.deleted)
            .map_err(host_err(rel))?
        else {
            continue;
        };
        let host = if let Some(&(mode, mtime)) = dir_meta.get(rel) {
            hostio::finish_dir(fd, mode, mtime).map_err(host_err(rel))?
        } else {
            let vfs_meta = vfs.stat(&vfs_join(norm, rel))?;
            hostio::restore_dir_mtime(fd, Ts::from_system_time(vfs_meta.mtime))
                .map_err(host_err(rel))?
        };
        manifest.upsert(rel, host, generation, observed_at);
    }
    Ok(report)
}
