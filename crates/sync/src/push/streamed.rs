//! The streamed full push: a new tree whose file contents arrive while it is written.
//!
//! A remote sender (the sidecar's `wire-sync` receiver) knows the whole tree — paths,
//! kinds, modes, mtimes — before the first content byte arrives. [`StreamedPush::begin`]
//! creates every directory and symlink at once and starts writer threads;
//! [`StreamedPush::feed`] hands them contents as they arrive; [`StreamedPush::finish`]
//! sets the directories' modes and mtimes (after their children, deepest first) and
//! records the leaf as in sync with the VFS that holds the same tree, exactly as
//! [`push_full`](crate::push_full) would have. The disk writes overlap the transfer
//! instead of following it.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the parts share the parent's imports and helpers"
)]
use super::*;

use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::SystemTime;

use devshell_vm_vfs::{LazyContent, LazySlot};

/// Most directories a streamed push holds open at once (one descriptor each, for the
/// whole push). A larger tree takes the regular path.
pub const STREAM_MAX_DIRS: usize = 1024;

/// Batches of fed contents queued for the writers before [`StreamedPush::feed`] blocks
/// (back-pressure: memory stays bounded by the sender's batches, not the tree).
const QUEUE_BATCHES: usize = 8;

/// One entry of a streamed push, in pre-order (a directory before its contents), with
/// a path relative to the pushed VFS directory.
#[derive(Debug, Clone, Copy)]
pub struct StreamEntry<'a> {
    /// `/`-separated relative path (no empty, `.` or `..` components).
    pub rel: &'a str,
    /// File, directory or symlink.
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// A symlink's target.
    pub target: Option<&'a str>,
}

/// A directory of the tree: its descriptor stays open until [`StreamedPush::finish`].
struct StreamDir {
    rel: String,
    mode: u32,
    mtime: Ts,
    fd: OwnedFd,
}

/// A file to write: the entry index it was fed by, its directory and metadata.
struct StreamFile {
    rel: String,
    name_start: usize,
    dir: usize,
    mode: u32,
    mtime: Ts,
}

/// What the writers share.
struct Shared {
    leaf_path: PathBuf,
    /// The pushed VFS directory (for the VFS paths of files kept on disk).
    vfs_root: String,
    /// Files at least this large are kept readable from their descriptors.
    keep_min_size: u64,
    umask_bits: u32,
    dirs: Vec<StreamDir>,
    /// By entry index: the file's position in `files` (`None` for other kinds and
    /// excluded entries).
    file_of: Vec<Option<usize>>,
    files: Vec<StreamFile>,
    queue: Mutex<Receiver<Vec<(usize, Content)>>>,
    stop: WriterStop,
    /// Where each file kept on disk is also sent as soon as it is written.
    kept_to: Mutex<Option<std::sync::mpsc::Sender<KeptOnDisk>>>,
}

/// What one writer did: `(file, metadata after writing, the file kept on disk)`, bytes
/// written.
type Written = (Vec<(usize, HostMeta, Option<Arc<LazyContent>>)>, u64);

/// A file a streamed push wrote and left readable from its descriptor: its VFS path and
/// its content (unread, see [`StreamedPush::finish`]).
pub type KeptOnDisk = (String, Arc<LazyContent>);

/// A full push in progress whose file contents are fed while it runs (see the module
/// docs). Dropping it without [`Self::finish`] stops the writers; the leaf then counts
/// as a failed push (pulls refused, the next push is full).
pub struct StreamedPush {
    norm: String,
    shared: Arc<Shared>,
    sender: Option<SyncSender<Vec<(usize, Content)>>>,
    writers: Vec<JoinHandle<Written>>,
    links: Vec<(String, HostMeta)>,
    leaf_created: bool,
    started: Instant,
}

impl fmt::Debug for StreamedPush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamedPush")
            .field("vfs_path", &self.norm)
            .field("dirs", &self.shared.dirs.len())
            .field("files", &self.shared.files.len())
            .finish_non_exhaustive()
    }
}

impl StreamedPush {
    /// Starts a streamed full push of `entries` into the leaf of `vfs_path`: creates
    /// every directory and symlink and starts the writers. Returns `Ok(None)` (nothing
    /// touched) when the leaf already holds something or the tree has more than
    /// [`STREAM_MAX_DIRS`] directories: the caller then pushes the regular way.
    /// Excluded entries are left out, as by a full push. From here until
    /// [`Self::finish`] succeeds the leaf counts as a failed push.
    ///
    /// # Errors
    /// [`VmSyncError::InvalidName`] for a bad path, [`VmSyncError::WireApply`] for an
    /// entry out of order, [`VmSyncError::LeafCollision`], [`VmSyncError::Io`] naming the
    /// host path.
    #[expect(
        clippy::too_many_lines,
        reason = "checks, the tree's directories and symlinks, and the writers' start read in order"
    )]
    pub fn begin(
        state: &mut SyncState,
        vfs_path: &str,
        entries: &[StreamEntry<'_>],
    ) -> Result<Option<Self>, VmSyncError> {
        let started = Instant::now();
        let norm = canonical_vfs_path(vfs_path)?;
        let dir_count = entries.iter().filter(|e| e.kind == NodeKind::Dir).count();
        if dir_count >= STREAM_MAX_DIRS {
            return Ok(None);
        }
        state.bind(&norm)?;
        let leaf = leaf_name(&norm).to_owned();
        let leaf_path = state.leaf_path(&leaf);
        let staging_fd = open_staging(state.staging_dir(), true)?;
        let (leaf_fd, leaf_created, _) = open_leaf_for_push(&staging_fd, &leaf, &leaf_path)?;
        drop(staging_fd);
        if !leaf_created && !dir_is_empty(&leaf_fd, &leaf_path)? {
            return Ok(None);
        }
        push_failed(state.bind(&norm)?);
        let excludes = &state.excludes;
        let mut dirs = vec![StreamDir {
            rel: String::new(),
            mode: 0o755,
            mtime: Ts::from_system_time(SystemTime::UNIX_EPOCH),
            fd: leaf_fd,
        }];
        let mut dir_index: HashMap<&str, usize> = HashMap::from([("", 0)]);
        let mut file_of = vec![None; entries.len()];
        let mut files = Vec::new();
        let mut links = Vec::new();
        // Excluded directories, and every directory under one: their entries are left out.
        let mut skipped: HashSet<&str> = HashSet::new();
        for (index, entry) in entries.iter().enumerate() {
            check_rel(entry.rel)?;
            let (parent_rel, name) = split_rel(entry.rel);
            let is_dir = entry.kind == NodeKind::Dir;
            if skipped.contains(parent_rel) || excludes.matches(entry.rel, is_dir) {
                if is_dir {
                    skipped.insert(entry.rel);
                }
                continue;
            }
            let Some(&parent) = dir_index.get(parent_rel) else {
                return Err(VmSyncError::WireApply {
                    path: entry.rel.to_owned(),
                    reason: "its parent directory is not listed before it".to_owned(),
                });
            };
            let host = || leaf_path.join(entry.rel);
            let mtime = Ts::from_system_time(entry.mtime);
            match entry.kind {
                NodeKind::Dir => {
                    let fd = hostio::create_dir_at(dirs[parent].fd.as_fd(), name)
                        .map_err(|errno| VmSyncError::errno(host(), errno))?;
                    dir_index.insert(entry.rel, dirs.len());
                    dirs.push(StreamDir {
                        rel: entry.rel.to_owned(),
                        mode: entry.mode,
                        mtime,
                        fd,
                    });
                }
                NodeKind::File => {
                    file_of[index] = Some(files.len());
                    files.push(StreamFile {
                        rel: entry.rel.to_owned(),
                        name_start: entry.rel.len() - name.len(),
                        dir: parent,
                        mode: entry.mode,
                        mtime,
                    });
                }
                NodeKind::Symlink => {
                    let target = entry.target.unwrap_or_default();
                    let (meta, _) =
                        hostio::create_symlink_at(dirs[parent].fd.as_fd(), name, target, mtime)
                            .map_err(|errno| VmSyncError::errno(host(), errno))?;
                    links.push((entry.rel.to_owned(), meta));
                }
            }
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE_BATCHES);
        let writers = if files.len() < PARALLEL_MIN_FILES {
            1
        } else {
            state.threads.max(1)
        };
        let shared = Arc::new(Shared {
            leaf_path,
            vfs_root: norm.clone(),
            keep_min_size: state.lazy_min_size,
            umask_bits: state.umask_bits,
            dirs,
            file_of,
            files,
            queue: Mutex::new(receiver),
            stop: WriterStop::default(),
            kept_to: Mutex::new(None),
        });
        let writers = (0..writers)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || shared.write_fed())
            })
            .collect();
        Ok(Some(Self {
            norm,
            shared,
            sender: Some(sender),
            writers,
            links,
            leaf_created,
            started,
        }))
    }

    /// Also sends each file kept on disk (see [`Self::finish`]) to `to` as soon as it is
    /// written: a caller that builds its in-memory tree meanwhile can let it hold the
    /// descriptor instead of the bytes right away ([`Vfs::keep_on_disk`]), so their bytes
    /// are freed during the push rather than after it. [`Self::finish`] still returns
    /// them all. Files written before this call are not sent.
    pub fn send_kept_to(&self, to: std::sync::mpsc::Sender<KeptOnDisk>) {
        *self
            .shared
            .kept_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(to);
    }

    /// Hands the writers the content of the entries at these indices (into the
    /// `entries` given to [`Self::begin`]); blocks while they are behind. Indices of
    /// excluded entries are ignored. Returns `false` once a writer failed (the error is
    /// [`Self::finish`]'s); feeding more is then pointless.
    #[must_use = "false means a writer failed: stop feeding"]
    pub fn feed(&self, batch: Vec<(usize, Content)>) -> bool {
        if self.shared.stop.stopped() {
            return false;
        }
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.send(batch).is_ok())
    }

    /// Waits for the writers, sets every directory's mode and mtime (deepest first) and
    /// records the leaf as in sync with `vfs` — which must hold exactly the tree given
    /// to [`Self::begin`] under the same path, with the contents fed; its root's mode
    /// and mtime are the leaf's.
    ///
    /// Also returns the files of at least the state's lazy size
    /// ([`SyncState::set_lazy_min_size`]) that were written through a descriptor kept
    /// open for reading (within the process-wide cap of
    /// [`devshell_vm_vfs::lazy::lazy_fd_limit`]), each as an unread [`LazyContent`] of
    /// the bytes just written: a caller that keeps the tree in memory can let those
    /// files hold their bytes on disk instead ([`Vfs::keep_on_disk`]).
    ///
    /// # Errors
    /// The first write error, [`VmSyncError::WireApply`] for a file never fed, or
    /// [`VmSyncError::Io`] setting a directory's metadata. The leaf then counts as a
    /// failed push.
    pub fn finish(
        mut self,
        state: &mut SyncState,
        vfs: &Vfs,
    ) -> Result<(SyncReport, Vec<KeptOnDisk>), VmSyncError> {
        let observed_at = Ts::coarse_now();
        let generation = vfs.generation();
        let written = self.join();
        let shared = &self.shared;
        if let Some(err) = shared.stop.take_error() {
            return Err(err);
        }
        let mut report = SyncReport {
            dirs_created: (shared.dirs.len() - 1) as u64 + u64::from(self.leaf_created),
            files_written: self.links.len() as u64,
            ..SyncReport::default()
        };
        let mut file_meta: Vec<Option<HostMeta>> = vec![None; shared.files.len()];
        let mut kept = Vec::new();
        for (metas, bytes) in written {
            report.bytes_written += bytes;
            report.files_written += metas.len() as u64;
            for (file, meta, on_disk) in metas {
                file_meta[file] = Some(meta);
                if let Some(content) = on_disk {
                    kept.push((vfs_join(&shared.vfs_root, &shared.files[file].rel), content));
                }
            }
        }
        if let Some(missing) = file_meta.iter().position(Option::is_none) {
            return Err(VmSyncError::WireApply {
                path: shared.files[missing].rel.clone(),
                reason: "its content never arrived".to_owned(),
            });
        }
        let root = vfs.stat(&self.norm)?;
        // Deepest first (reverse pre-order): a directory's mtime is set after its
        // children's; the leaf (index 0) last, with the VFS root's mode and mtime.
        let mut dir_meta = Vec::with_capacity(shared.dirs.len());
        for (index, dir) in shared.dirs.iter().enumerate().rev() {
            let (mode, mtime) = if index == 0 {
                (root.mode, Ts::from_system_time(root.mtime))
            } else {
                (dir.mode, dir.mtime)
            };
            let meta = hostio::finish_dir(dir.fd.as_fd(), mode, mtime)
                .map_err(|errno| VmSyncError::errno(shared.leaf_path.join(&dir.rel), errno))?;
            dir_meta.push(meta);
        }
        dir_meta.reverse();
        let mut manifest = MEntry::new(dir_meta[0], generation, observed_at);
        for (dir, meta) in shared.dirs.iter().zip(&dir_meta).skip(1) {
            manifest.upsert(&dir.rel, *meta, generation, observed_at);
        }
        for (file, meta) in shared.files.iter().zip(file_meta.into_iter().flatten()) {
            manifest.upsert(&file.rel, meta, generation, observed_at);
        }
        for (rel, meta) in &self.links {
            manifest.upsert(rel, *meta, generation, observed_at);
        }
        let leaf = state.bind(&self.norm)?;
        leaf.entry_count = manifest.len();
        leaf.manifest = Some(manifest);
        leaf.synced_generation = Some(generation);
        leaf.push_incomplete = false;
        report.duration = self.started.elapsed();
        Ok((report, kept))
    }

    /// Closes the queue and waits for the writers; what each wrote.
    fn join(&mut self) -> Vec<Written> {
        drop(self.sender.take());
        let mut written = Vec::new();
        for writer in self.writers.drain(..) {
            match writer.join() {
                Ok(done) => written.push(done),
                Err(_) => self.shared.stop.fail(VmSyncError::io(
                    &self.shared.leaf_path,
                    std::io::Error::other("a writer thread panicked"),
                )),
            }
        }
        written
    }
}

impl Drop for StreamedPush {
    fn drop(&mut self) {
        if !self.writers.is_empty() {
            // Abandoned: stop the writers before the caller removes the tree.
            self.shared.stop.stop();
            let _ = self.join();
        }
    }
}

impl Shared {
    /// One writer: writes fed files until the queue closes or a writer fails.
    fn write_fed(&self) -> Written {
        let mut done = Vec::new();
        let mut bytes = 0u64;
        loop {
            let batch = {
                let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                queue.recv()
            };
            let Ok(batch) = batch else {
                return (done, bytes);
            };
            for (index, content) in batch {
                if self.stop.stopped() {
                    return (done, bytes);
                }
                let Some(file) = self.file_of.get(index).copied().flatten() else {
                    continue;
                };
                match self.write_one(file, &content) {
                    Ok((meta, on_disk)) => {
                        bytes += content.len() as u64;
                        done.push((file, meta, on_disk));
                    }
                    Err(err) => {
                        self.stop.fail(err);
                        return (done, bytes);
                    }
                }
            }
        }
    }

    /// Writes one file; a large one keeps its descriptor (opened for reading too) as an
    /// unread content when a lazy slot is free.
    fn write_one(
        &self,
        file: usize,
        content: &[u8],
    ) -> Result<(HostMeta, Option<Arc<LazyContent>>), VmSyncError> {
        let item = &self.files[file];
        let path = || self.leaf_path.join(&item.rel);
        let dir = self.dirs[item.dir].fd.as_fd();
        let slot = if content.len() as u64 >= self.keep_min_size {
            LazySlot::reserve()
        } else {
            None
        };
        let (mut handle, _) =
            hostio::create_file_at(dir, &item.rel[item.name_start..], item.mode, slot.is_some())
                .map_err(|errno| VmSyncError::errno(path(), errno))?;
        let meta =
            hostio::finish_file(&mut handle, content, item.mode, item.mtime, self.umask_bits)
                .map_err(|err| VmSyncError::io(path(), err))?;
        let vfs_path = || vfs_join(&self.vfs_root, &item.rel);
        let on_disk = slot.and_then(|slot| {
            // Only an `fstat` failure can stop this: the file then just stays in memory.
            LazyContent::new(handle, slot, path(), vfs_path())
                .ok()
                .map(Arc::new)
        });
        if let Some(content) = &on_disk
            && let Some(to) = self
                .kept_to
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
        {
            // A receiver gone just misses the early news: `finish` returns it too.
            let _ = to.send((vfs_path(), Arc::clone(content)));
        }
        Ok((meta, on_disk))
    }
}

/// Whether the open directory holds nothing but `.` and `..`.
fn dir_is_empty(fd: &OwnedFd, path: &Path) -> Result<bool, VmSyncError> {
    let listing_fd = fd.try_clone().map_err(|err| VmSyncError::io(path, err))?;
    let listing = Dir::from_fd(listing_fd).map_err(|errno| VmSyncError::errno(path, errno))?;
    for entry in listing {
        let entry = entry.map_err(|errno| VmSyncError::errno(path, errno))?;
        if !hostio::is_dot_or_dotdot(entry.file_name()) {
            return Ok(false);
        }
    }
    Ok(true)
}
