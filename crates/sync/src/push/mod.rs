//! VFS → host: [`push_full`] and [`push_incremental`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use devshell_vm_vfs::{Content, NodeKind, Vfs, VfsError};
use nix::dir::Dir;
use nix::errno::Errno;

use crate::VmSyncError;
use crate::hostio::{self, HostKind, HostMeta, Ts};
use crate::report::{SyncProgress, SyncReport};
use crate::state::{
    Excludes, LeafState, MEntry, SyncState, canonical_vfs_path, check_rel, join_rel, leaf_name,
    rel_of, split_rel, vfs_join,
};

/// Below this many files and symlinks a full push runs on the calling thread alone.
const PARALLEL_MIN_FILES: usize = 64;
/// Most files of one directory a writer takes at once.
const CHUNK_FILES: usize = 64;
/// About how many content bytes a writer takes at once (one larger file is one chunk).
const CHUNK_BYTES: u64 = 8 << 20;
/// Files written between two progress reports of a full push.
const PROGRESS_FILES: u64 = 1024;

/// How a push's writer threads stop: the first error any of them met (kept), or a stop
/// without one (an abandoned push).
#[derive(Default)]
struct WriterStop {
    stopped: AtomicBool,
    error: Mutex<Option<VmSyncError>>,
}

impl WriterStop {
    /// Records `err` unless an earlier error is recorded, and stops the writers.
    fn fail(&self, err: VmSyncError) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(err);
        }
        drop(slot);
        self.stop();
    }

    /// Stops the writers without an error.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Whether the writers must stop.
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The first error recorded, if any.
    fn take_error(&self) -> Option<VmSyncError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

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

/// Forgets what is known about a leaf after a failed sync: the next push is full, and
/// the next pull deletes nothing in the VFS.
pub(crate) fn invalidate(leaf: &mut LeafState) {
    leaf.manifest = None;
    leaf.synced_generation = None;
}

/// After a push that failed half-way: the host copy may hold truncated files, or old
/// ones the push had not reached yet, which a pull would take for edits made by a tool.
/// Pulls are refused ([`VmSyncError::IncompletePush`](crate::VmSyncError::IncompletePush))
/// until a push succeeds; the next push is a full one and repairs the leaf.
pub(crate) fn push_failed(leaf: &mut LeafState) {
    invalidate(leaf);
    leaf.push_incomplete = true;
}

// The full push (plan + parallel writers) and the incremental push live in their own
// files; both use the helpers above.
mod full;
mod incremental;
mod streamed;

use full::full_push_inner;
pub use incremental::push_incremental;
pub use streamed::{KeptOnDisk, STREAM_MAX_DIRS, StreamEntry, StreamedPush};
