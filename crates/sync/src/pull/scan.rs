//! The scan: one job per host directory, `lstat` and read what moved.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the parts share the parent's imports and types"
)]
use super::*;

impl<'m> Scan<'_, 'm> {
    fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.leaf_path.to_path_buf()
        } else {
            self.leaf_path.join(rel)
        }
    }

    /// A scanning thread: takes directory jobs until none are left (or one failed).
    pub(super) fn work(&self) {
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
        self.count_workspace_bytes(&meta)?;
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
        if meta.size >= self.lazy_min_size
            && meta.mtime < self.started
            && let Some(deferred) = self.defer_file(dir, raw_name, rel, meta)?
        {
            let (read_meta, lazy) = deferred;
            out.files_deferred += 1;
            out.bytes_deferred += lazy.len();
            // Not compared with the VFS (that would read it): replaced in any case.
            if kind_changed {
                out.ops.push(PullOp::Remove {
                    rel: rel.to_owned(),
                });
            }
            out.ops.push(PullOp::File {
                rel: rel.to_owned(),
                content: Pulled::Lazy(lazy),
                mode: read_meta.mode,
                mtime: read_meta.mtime.to_system_time(),
            });
            out.record(rel, read_meta);
            return Ok(());
        }
        // The open descriptor may show a bigger file than the `lstat` that was counted:
        // then it changed during the pull, and nothing past the counted size is read.
        let (read_meta, content) = match hostio::read_file_at(dir, raw_name, meta.size) {
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
                    // A lazy node is not read just to compare: it is replaced.
                    && !node.is_lazy_unread()
                    && node
                        .content()
                        .is_ok_and(|c| c.is_some_and(|c| c[..] == content[..]))
            });
        if !same_in_vfs {
            if kind_changed {
                out.ops.push(PullOp::Remove {
                    rel: rel.to_owned(),
                });
            }
            out.ops.push(PullOp::File {
                rel: rel.to_owned(),
                content: Pulled::Read(content),
                mode: read_meta.mode,
                mtime,
            });
        }
        out.record(rel, read_meta);
        Ok(())
    }

    /// Opens a changed file to be read on demand: `None` (read it now instead) when the
    /// descriptor cap is reached or the process or system is out of descriptors.
    fn defer_file(
        &self,
        dir: BorrowedFd<'_>,
        raw_name: &CStr,
        rel: &str,
        meta: HostMeta,
    ) -> Result<Option<(HostMeta, Arc<LazyContent>)>, VmSyncError> {
        let Some(slot) = LazySlot::reserve() else {
            return Ok(None);
        };
        let file = match hostio::open_file_at(dir, raw_name) {
            Ok(file) => file,
            Err(Errno::EMFILE | Errno::ENFILE) => {
                drop(slot);
                self.free_descriptors();
                return Ok(None);
            }
            Err(Errno::ELOOP) => {
                return Err(VmSyncError::ChangedDuringRead {
                    path: self.host_path(rel),
                });
            }
            Err(errno) => return Err(VmSyncError::errno(self.host_path(rel), errno)),
        };
        // The manifest records what this `fstat` sees, before the content's identity
        // is taken: a change in between makes the next pull look again.
        let read_meta = hostio::stat_fd(file.as_fd())
            .map_err(|errno| VmSyncError::errno(self.host_path(rel), errno))?;
        // Counted at the `lstat` size: a bigger file now changed during the pull.
        if read_meta.kind != HostKind::File || read_meta.size > meta.size {
            return Err(VmSyncError::ChangedDuringRead {
                path: self.host_path(rel),
            });
        }
        let host_path = self.host_path(rel);
        let lazy = LazyContent::new(file, slot, host_path.clone(), vfs_join(self.vfs_root, rel))
            .map_err(|err| VmSyncError::io(host_path, err))?;
        let lazy = Arc::new(lazy);
        self.deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&lazy));
        Ok(Some((read_meta, lazy)))
    }

    /// The process ran out of descriptors: lower the lazy cap below what is open now,
    /// and read half of this pull's deferred contents (the newest; each read closes its
    /// descriptor), so the eager reads that follow have descriptors to use.
    fn free_descriptors(&self) {
        devshell_vm_vfs::lazy::lower_lazy_fd_limit(devshell_vm_vfs::lazy::open_lazy_fds() / 2);
        let deferred = self.deferred.lock().unwrap_or_else(PoisonError::into_inner);
        let unread: Vec<&Arc<LazyContent>> = deferred
            .iter()
            .rev()
            .filter(|lazy| !lazy.is_loaded())
            .collect();
        for lazy in unread.iter().take(unread.len().div_ceil(2)) {
            // A failure leaves it unread; the pull goes on (its reader sees the error).
            let _ = lazy.content();
        }
    }

    /// Adds a regular file's size to the workspace total (other kinds count nothing);
    /// fails once it passes the budget.
    fn count_workspace_bytes(&self, meta: &HostMeta) -> Result<(), VmSyncError> {
        if meta.kind != HostKind::File {
            return Ok(());
        }
        let size = meta.size;
        let total = self
            .workspace_bytes
            .fetch_add(size, Ordering::Relaxed)
            .saturating_add(size);
        if total > self.max_workspace_bytes {
            return Err(VmSyncError::WorkspaceTooLarge {
                leaf: self.leaf_path.to_owned(),
                at_least: total,
                limit: self.max_workspace_bytes,
            });
        }
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
