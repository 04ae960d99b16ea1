//! The full push: plan the subtree from memory, then writer threads create it.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the parts share the parent's imports and helpers"
)]
use super::*;

/// One file of a directory to write.
struct FileItem<'v> {
    rel: String,
    name_start: usize,
    content: &'v Content,
    mode: u32,
    mtime: Ts,
}

/// One symlink of a directory to create.
struct LinkItem<'v> {
    rel: String,
    name_start: usize,
    target: &'v str,
    mtime: Ts,
}

/// One directory of the plan: what to create in it, and its own mode and mtime (set
/// once everything below it is written).
struct DirTask<'v> {
    rel: String,
    /// Index of the parent task (`usize::MAX` for the leaf itself).
    parent: usize,
    mode: u32,
    mtime: Ts,
    subdirs: Vec<usize>,
    files: Vec<FileItem<'v>>,
    links: Vec<LinkItem<'v>>,
}

impl DirTask<'_> {
    fn name(&self) -> &str {
        split_rel(&self.rel).1
    }

    /// The file chunks of this directory: runs of at most [`CHUNK_FILES`] files and
    /// about [`CHUNK_BYTES`] bytes, so large directories spread over the writers.
    fn chunks(&self) -> Vec<std::ops::Range<usize>> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let mut bytes = 0u64;
        for (index, file) in self.files.iter().enumerate() {
            if index > start && (index - start >= CHUNK_FILES || bytes >= CHUNK_BYTES) {
                chunks.push(start..index);
                start = index;
                bytes = 0;
            }
            bytes += file.content.len() as u64;
        }
        if start < self.files.len() {
            chunks.push(start..self.files.len());
        }
        chunks
    }
}

/// What a writer recorded for the manifest.
enum Done {
    /// A directory's metadata after its mode and mtime were set.
    Dir(usize, HostMeta),
    /// A file (task, index in `files`).
    File(usize, usize, HostMeta),
    /// A symlink (task, index in `links`).
    Link(usize, usize, HostMeta),
}

/// A unit of work for the writers.
#[derive(Clone)]
enum Work {
    /// Create (or reuse and reconcile) a directory, create its symlinks, queue the rest.
    Open(usize),
    /// Write a run of files of an open directory.
    Files(usize, std::ops::Range<usize>),
}

/// The queue the writers share.
struct Queue {
    items: Vec<Work>,
    /// Items taken and not finished (they may still queue more).
    active: usize,
    /// Writers waiting for an item.
    waiting: usize,
}

/// Everything the writers of one full push share.
struct Plan<'a, 'v> {
    vfs: &'a Vfs,
    norm: &'a str,
    leaf_path: &'a Path,
    excludes: &'a Excludes,
    umask_bits: u32,
    tasks: Vec<DirTask<'v>>,
    /// Open descriptor of each directory, from its creation until its metadata is set.
    fds: Vec<Mutex<Option<Arc<OwnedFd>>>>,
    /// Per directory: whether this push created it (so it started empty).
    created: Vec<AtomicBool>,
    /// Per directory: file chunks and subdirectories not finished yet, plus one while
    /// its own `Open` step runs.
    pending: Vec<AtomicUsize>,
    queue: Mutex<Queue>,
    wake: Condvar,
    stop: WriterStop,
    files_done: AtomicU64,
    bytes_done: AtomicU64,
}

/// What one writer did.
#[derive(Default)]
struct WriterLog {
    done: Vec<Done>,
    files_written: u64,
    bytes_written: u64,
    dirs_created: u64,
    deleted: u64,
}

/// Builds the plan of a full push from the VFS alone (no host access): one task per
/// directory in pre-order, the leaf first.
fn plan_tasks<'v>(
    vfs: &'v Vfs,
    norm: &str,
    excludes: &Excludes,
) -> Result<Vec<DirTask<'v>>, VmSyncError> {
    let root_meta = vfs.stat(norm)?;
    let mut tasks = vec![DirTask {
        rel: String::new(),
        parent: usize::MAX,
        mode: root_meta.mode,
        mtime: Ts::from_system_time(root_meta.mtime),
        subdirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
    }];
    // Indices of the open directories along the current walk path.
    let mut stack: Vec<usize> = vec![0];
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
        while stack.len() > 1 && tasks[*stack.last().expect("non-empty")].rel != parent_rel {
            stack.pop();
        }
        let parent = *stack.last().expect("the leaf stays on the stack");
        let kind = entry.node.kind();
        if excludes.matches(&rel, kind == NodeKind::Dir) {
            if kind == NodeKind::Dir {
                skip_below = Some(rel);
            }
            continue;
        }
        let meta = entry.node.metadata();
        let mtime = Ts::from_system_time(meta.mtime);
        let name_start = rel.len() - name.len();
        match kind {
            NodeKind::Dir => {
                let index = tasks.len();
                tasks[parent].subdirs.push(index);
                tasks.push(DirTask {
                    rel,
                    parent,
                    mode: meta.mode,
                    mtime,
                    subdirs: Vec::new(),
                    files: Vec::new(),
                    links: Vec::new(),
                });
                stack.push(index);
            }
            NodeKind::File => {
                // A lazy content is read here, before the host is touched (it may be
                // read from the very staging file this push replaces).
                let Some(content) = entry.content()? else {
                    unreachable!("a file node has content");
                };
                tasks[parent].files.push(FileItem {
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
                tasks[parent].links.push(LinkItem {
                    rel,
                    name_start,
                    target,
                    mtime,
                });
            }
        }
    }
    Ok(tasks)
}

#[expect(
    clippy::too_many_lines,
    reason = "planning, the writers and merging their logs share one set of locals"
)]
pub(super) fn full_push_inner(
    vfs: &Vfs,
    norm: &str,
    state: &mut SyncState,
) -> Result<(SyncReport, MEntry), VmSyncError> {
    let observed_at = Ts::coarse_now();
    let generation = vfs.generation();
    let leaf = leaf_name(norm).to_owned();
    let leaf_path = state.leaf_path(&leaf);
    let excludes = state.excludes.clone();
    // The whole plan comes from memory before the host is touched.
    let tasks = plan_tasks(vfs, norm, &excludes)?;
    let staging_fd = open_staging(state.staging_dir(), true)?;
    let (leaf_fd, leaf_created, removed) = open_leaf_for_push(&staging_fd, &leaf, &leaf_path)?;
    drop(staging_fd);
    let leaf_meta =
        hostio::stat_fd(leaf_fd.as_fd()).map_err(|errno| VmSyncError::errno(&leaf_path, errno))?;
    let mut report = SyncReport {
        deleted: removed,
        dirs_created: u64::from(leaf_created && !leaf.is_empty()),
        ..SyncReport::default()
    };
    if !leaf_created {
        report.deleted += reconcile(vfs, norm, &leaf_path, &excludes, "", leaf_fd.as_fd())?;
    }
    let threads = state.threads.max(1);
    let umask_bits = state.umask_bits;
    let total_files: usize = tasks.iter().map(|t| t.files.len() + t.links.len()).sum();
    let writers = if total_files < PARALLEL_MIN_FILES {
        1
    } else {
        threads
    };
    let mut fds: Vec<Mutex<Option<Arc<OwnedFd>>>> = Vec::with_capacity(tasks.len());
    fds.resize_with(tasks.len(), || Mutex::new(None));
    *fds[0].get_mut().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(leaf_fd));
    let mut pending = Vec::with_capacity(tasks.len());
    pending.resize_with(tasks.len(), || AtomicUsize::new(0));
    let mut created = Vec::with_capacity(tasks.len());
    created.resize_with(tasks.len(), || AtomicBool::new(false));
    created[0] = AtomicBool::new(leaf_created);
    let plan = Plan {
        created,
        vfs,
        norm,
        leaf_path: &leaf_path,
        excludes: &excludes,
        umask_bits,
        tasks,
        fds,
        pending,
        queue: Mutex::new(Queue {
            items: vec![Work::Open(0)],
            active: 0,
            waiting: 0,
        }),
        wake: Condvar::new(),
        stop: WriterStop::default(),
        files_done: AtomicU64::new(0),
        bytes_done: AtomicU64::new(0),
    };
    let mut observer = state.observer_mut();
    let logs: Vec<WriterLog> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..writers)
            .map(|_| scope.spawn(|| plan.run(None)))
            .collect();
        // The calling thread writes too, and is the one that reports progress.
        let mut logs = vec![plan.run(observer.as_deref_mut())];
        for handle in handles {
            match handle.join() {
                Ok(log) => logs.push(log),
                Err(_) => {
                    plan.fail(VmSyncError::io(
                        plan.leaf_path,
                        std::io::Error::other("a writer thread panicked"),
                    ));
                }
            }
        }
        logs
    });
    if let Some(err) = plan.stop.take_error() {
        return Err(err);
    }
    let Plan { tasks, .. } = plan;
    // Merge: directories first, in pre-order (a parent is recorded before its
    // children), then files and symlinks.
    let mut manifest = MEntry::new(leaf_meta, generation, observed_at);
    let mut dir_meta: Vec<Option<HostMeta>> = vec![None; tasks.len()];
    for log in &logs {
        report.files_written += log.files_written;
        report.bytes_written += log.bytes_written;
        report.dirs_created += log.dirs_created;
        report.deleted += log.deleted;
        for done in &log.done {
            if let Done::Dir(index, meta) = done {
                dir_meta[*index] = Some(*meta);
            }
        }
    }
    for (task, meta) in tasks.iter().zip(&dir_meta) {
        let Some(meta) = meta else {
            return Err(VmSyncError::io(
                leaf_path.join(&task.rel),
                std::io::Error::other("directory was not finished"),
            ));
        };
        manifest.upsert(&task.rel, *meta, generation, observed_at);
    }
    for log in logs {
        for done in log.done {
            match done {
                Done::Dir(..) => {}
                Done::File(task, index, meta) => {
                    manifest.upsert(&tasks[task].files[index].rel, meta, generation, observed_at);
                }
                Done::Link(task, index, meta) => {
                    manifest.upsert(&tasks[task].links[index].rel, meta, generation, observed_at);
                }
            }
        }
    }
    if let Some(observer) = observer {
        observer(&SyncProgress {
            files_done: report.files_written,
            bytes_done: report.bytes_written,
        });
    }
    Ok((report, manifest))
}

/// Deletes host entries of an existing directory that the VFS directory lacks
/// (excluded ones stay). Names that are not UTF-8 cannot be in the VFS: extras. Returns
/// how many entries were removed.
fn reconcile(
    vfs: &Vfs,
    vfs_dir: &str,
    leaf_path: &Path,
    excludes: &Excludes,
    rel: &str,
    fd: BorrowedFd<'_>,
) -> Result<u64, VmSyncError> {
    let wanted: HashSet<String> = vfs.list_dir(vfs_dir)?.into_iter().map(|e| e.name).collect();
    let dir_path = leaf_path.join(rel);
    let listing_fd = fd
        .try_clone_to_owned()
        .map_err(|err| VmSyncError::io(&dir_path, err))?;
    let listing = Dir::from_fd(listing_fd).map_err(|errno| VmSyncError::errno(&dir_path, errno))?;
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
    let mut deleted = 0;
    for name in extras {
        let shown = dir_path.join(OsStr::from_bytes(name.to_bytes()));
        if let Some(utf8) = hostio::utf8_name(&name)
            && !excludes.is_empty()
        {
            let is_dir =
                hostio::lstat_at(fd, name.as_c_str()).is_ok_and(|m| m.kind == HostKind::Dir);
            if excludes.matches(&join_rel(rel, utf8), is_dir) {
                continue;
            }
        }
        deleted += hostio::remove_at(fd, name.as_c_str())
            .map_err(|errno| VmSyncError::errno(shown, errno))?;
    }
    Ok(deleted)
}

impl Plan<'_, '_> {
    /// Records the first failure and stops every writer.
    fn fail(&self, err: VmSyncError) {
        self.stop.fail(err);
        let _guard = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        self.wake.notify_all();
    }

    fn fd_of(&self, task: usize) -> Arc<OwnedFd> {
        self.fds[task]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .expect("a directory stays open until its pending work is done")
    }

    /// One writer: takes work until the plan is done or failed.
    fn run<'r, 'o: 'r>(
        &self,
        mut observer: Option<&'r mut (dyn FnMut(&SyncProgress) + Send + 'o)>,
    ) -> WriterLog {
        let mut log = WriterLog::default();
        let mut reported = 0u64;
        let mut more: Vec<Work> = Vec::new();
        loop {
            let item = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                loop {
                    if self.stop.stopped() {
                        return log;
                    }
                    if let Some(item) = queue.items.pop() {
                        queue.active += 1;
                        break item;
                    }
                    if queue.active == 0 {
                        if queue.waiting > 0 {
                            self.wake.notify_all();
                        }
                        return log;
                    }
                    queue.waiting += 1;
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                    queue.waiting -= 1;
                }
            };
            if let Err(err) = self.step(&item, &mut log, &mut more) {
                self.fail(err);
                return log;
            }
            {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                queue.active -= 1;
                let added = !more.is_empty();
                queue.items.append(&mut more);
                if queue.waiting > 0 && (added || queue.active == 0) {
                    self.wake.notify_all();
                }
            }
            if let Some(observer) = observer.as_mut() {
                let files = self.files_done.load(Ordering::Relaxed);
                if files >= reported + PROGRESS_FILES {
                    reported = files;
                    observer(&SyncProgress {
                        files_done: files,
                        bytes_done: self.bytes_done.load(Ordering::Relaxed),
                    });
                }
            }
        }
    }

    /// Does one unit of work; new work goes to `more`.
    fn step(
        &self,
        item: &Work,
        log: &mut WriterLog,
        more: &mut Vec<Work>,
    ) -> Result<(), VmSyncError> {
        match item {
            Work::Open(index) => {
                let index = *index;
                let task = &self.tasks[index];
                let fd = if index == 0 {
                    self.fd_of(0)
                } else {
                    let parent = self.fd_of(task.parent);
                    let at = |errno| VmSyncError::errno(self.leaf_path.join(&task.rel), errno);
                    // In a directory this push created nothing can be in the way.
                    let (fd, created, removed) =
                        if self.created[task.parent].load(Ordering::Acquire) {
                            (
                                hostio::create_dir_at(parent.as_fd(), task.name()).map_err(at)?,
                                true,
                                0,
                            )
                        } else {
                            hostio::ensure_dir_at(parent.as_fd(), task.name()).map_err(at)?
                        };
                    self.created[index].store(created, Ordering::Release);
                    log.deleted += removed;
                    if created {
                        log.dirs_created += 1;
                    } else {
                        log.deleted += reconcile(
                            self.vfs,
                            &vfs_join(self.norm, &task.rel),
                            self.leaf_path,
                            self.excludes,
                            &task.rel,
                            fd.as_fd(),
                        )?;
                    }
                    let fd = Arc::new(fd);
                    *self.fds[index]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&fd));
                    fd
                };
                for (link_index, link) in task.links.iter().enumerate() {
                    let (meta, removed) = hostio::create_symlink_at(
                        fd.as_fd(),
                        &link.rel[link.name_start..],
                        link.target,
                        link.mtime,
                    )
                    .map_err(|errno| VmSyncError::errno(self.leaf_path.join(&link.rel), errno))?;
                    log.deleted += removed;
                    log.files_written += 1;
                    log.done.push(Done::Link(index, link_index, meta));
                }
                drop(fd);
                let chunks = task.chunks();
                self.pending[index].store(chunks.len() + task.subdirs.len() + 1, Ordering::Release);
                more.extend(task.subdirs.iter().map(|&sub| Work::Open(sub)));
                more.extend(chunks.into_iter().map(|range| Work::Files(index, range)));
                self.release(index, log)
            }
            Work::Files(index, range) => {
                let index = *index;
                let task = &self.tasks[index];
                let fd = self.fd_of(index);
                for file_index in range.clone() {
                    let file = &task.files[file_index];
                    let path = || self.leaf_path.join(&file.rel);
                    let (mut handle, removed) = hostio::create_file_at(
                        fd.as_fd(),
                        &file.rel[file.name_start..],
                        file.mode,
                        false,
                    )
                    .map_err(|errno| VmSyncError::errno(path(), errno))?;
                    let meta = hostio::finish_file(
                        &mut handle,
                        file.content,
                        file.mode,
                        file.mtime,
                        self.umask_bits,
                    )
                    .map_err(|err| VmSyncError::io(path(), err))?;
                    log.deleted += removed;
                    log.files_written += 1;
                    log.bytes_written += file.content.len() as u64;
                    log.done.push(Done::File(index, file_index, meta));
                    self.files_done.fetch_add(1, Ordering::Relaxed);
                    self.bytes_done
                        .fetch_add(file.content.len() as u64, Ordering::Relaxed);
                }
                drop(fd);
                self.release(index, log)
            }
        }
    }

    /// One piece of directory `index` is done; when it was the last one, sets the
    /// directory's mode and mtime, closes it and tells its parent.
    fn release(&self, mut index: usize, log: &mut WriterLog) -> Result<(), VmSyncError> {
        loop {
            if self.pending[index].fetch_sub(1, Ordering::AcqRel) != 1 {
                return Ok(());
            }
            let task = &self.tasks[index];
            let fd = self.fds[index]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .expect("a directory is finished once");
            let meta = hostio::finish_dir(fd.as_fd(), task.mode, task.mtime)
                .map_err(|errno| VmSyncError::errno(self.leaf_path.join(&task.rel), errno))?;
            drop(fd);
            log.done.push(Done::Dir(index, meta));
            if task.parent == usize::MAX {
                return Ok(());
            }
            index = task.parent;
        }
    }
}
