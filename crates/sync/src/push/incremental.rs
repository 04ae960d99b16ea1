//! The incremental push: apply what the VFS journal lists since the last sync.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the parts share the parent's imports and helpers"
)]
use super::*;

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
            leaf.push_incomplete = false;
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(err) => {
            push_failed(leaf);
            Err(err)
        }
    }
}

/// `true` when `node` holds a lazy content whose staging file is what the manifest
/// records at `rel`, with the node's mode and mtime: the host has that version already.
fn lazy_in_staging(
    node: devshell_vm_vfs::NodeRef<'_>,
    rel: &str,
    manifest: &MEntry,
    meta: &devshell_vm_vfs::Metadata,
) -> bool {
    let Some(lazy) = node.lazy() else {
        return false;
    };
    let Some(entry) = manifest.get(rel) else {
        return false;
    };
    let identity = lazy.identity();
    let recorded = &entry.meta;
    let recorded_mtime_ns =
        i128::from(recorded.mtime.sec) * 1_000_000_000 + i128::from(recorded.mtime.nsec);
    recorded.kind == HostKind::File
        && recorded.dev == identity.dev
        && recorded.ino == identity.ino
        && recorded.size == identity.size
        && recorded_mtime_ns == identity.mtime_ns
        && recorded.mode == meta.mode
        && recorded.mtime == Ts::from_system_time(meta.mtime)
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
            NodeKind::File if lazy_in_staging(node, rel, manifest, &meta) => {
                // Pulled without reading, and the staging file the manifest records is
                // that very version: nothing to read, nothing to write.
                report.files_unchanged += 1;
            }
            NodeKind::File => {
                let Some(content) = node.content()? else {
                    unreachable!("a file node has content");
                };
                let (mut file, removed) = hostio::create_file_at(parent, name, meta.mode, false)
                    .map_err(host_err(rel))?;
                let host = hostio::finish_file(&mut file, content, meta.mode, mtime, umask_bits)
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
