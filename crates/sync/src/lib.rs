//! Push and pull between the in-memory VFS and a host staging directory, costing what changed.
//!
//! A session keeps its project in a [`Vfs`](devshell_vm_vfs::Vfs) and runs tools in a
//! host directory (the *staging* directory, or a guest's shared mount). The VFS subtree
//! at path `P` lives at `staging/<last segment of P>` (the *leaf*; the root `/` maps to
//! the staging directory itself). [`SyncState`] is the manifest of one staging
//! directory: which VFS path owns each leaf, the VFS generation the host copy reflects,
//! and the host metadata (kind, size, mtime, ctime, mode, inode) of every synced entry.
//!
//! * [`push_full`] makes the leaf an exact copy (deleting host extras inside the leaf
//!   only, after checking the VFS path exists);
//! * [`push_incremental`] applies only what the VFS journal
//!   ([`Vfs::changes_since`](devshell_vm_vfs::Vfs::changes_since)) reports;
//! * [`StreamedPush`] writes a new tree whose file contents arrive while it runs (a
//!   remote sender's blobs), leaving the same tree and state as [`push_full`];
//! * [`pull_workspace_to_vfs`] scans the leaf with metadata only, reads just the
//!   entries whose metadata moved, and applies all changes or none; large changed files
//!   (at least [`SyncState::set_lazy_min_size`], default 64 KiB) are not even read: they
//!   enter the VFS as [`LazyContent`](devshell_vm_vfs::LazyContent), an open descriptor
//!   of the staging inode read when someone reads the file (`cargo check` writes tens of
//!   MiB of incremental caches that nobody reads through the VFS);
//!
//! Modes and mtimes travel both ways, so an untouched file keeps its mtime across every
//! round trip and an edited one carries its edit time: cargo rebuilds exactly what
//! changed.
//!
//! # Safety boundary
//! Nothing is read, written or deleted outside the leaf. All host access goes through
//! descriptors opened one component at a time with `O_NOFOLLOW`; symlinks inside the
//! leaf are synced as symlinks and never followed; a write replaces whatever entry is
//! in the way (symlink, hard link, directory) instead of writing through it. Names are
//! single components (no `/`, `.`, `..`, NUL); host names that are not UTF-8 are skipped
//! and reported.
//!
//! ```
//! use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_incremental};
//! use devshell_vm_vfs::Vfs;
//!
//! let staging = tempfile::tempdir()?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/proj/src")?;
//! vfs.write_file("/proj/src/main.rs", b"fn main() {}".to_vec())?;
//! let mut state = SyncState::new(staging.path());
//! let pushed = push_incremental(&vfs, "/proj", &mut state)?; // first time: full push
//! assert_eq!(pushed.files_written, 1);
//! std::fs::write(staging.path().join("proj/out.txt"), "built")?;
//! let pulled = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs)?;
//! assert_eq!(pulled.files_written, 1); // only the new file reaches the VFS
//! assert_eq!(&vfs.read_file("/proj/out.txt")?[..], b"built");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`watch`] (Linux): inotify change tracking of a staging leaf, so the pull after a run
//! looks only at the directories the run changed ([`pull_workspace_to_vfs_scoped`]).
//!
//! Staging directories themselves: [`StagingDir`] is a session's private directory under
//! a shared base, held with an owner lock, and [`clean_stale_staging`] removes the ones
//! whose owner is gone (crash, `kill -9`), also across pid namespaces.
//!
//! Boundary: this crate does host file I/O and nothing else; it spawns nothing (the
//! session layer's runner does). Dependencies: the VFS (the tree and its
//! journal), `devshell-vm-exec` (only for [`ExecOutcome`](devshell_vm_exec::ExecOutcome)
//! in [`ToolOutcome`]), `nix` (`openat`-family calls without `unsafe`), `globset`
//! (excludes), `thiserror`.

#![cfg(unix)]

mod error;
mod hostio;
mod pull;
mod push;
mod report;
mod run;
mod staging;
mod state;
#[cfg(target_os = "linux")]
pub mod watch;
/// Without inotify (not Linux): the same [`ChangeTracker`](watch::ChangeTracker)
/// interface, always answering a full scan, so callers need no platform switch.
#[cfg(not(target_os = "linux"))]
pub mod watch {
    use std::path::Path;

    use crate::PullScope;

    /// No change tracking on this platform: every pull scans in full.
    #[derive(Debug, Default)]
    pub struct ChangeTracker;

    impl ChangeTracker {
        /// A tracker that never narrows a pull.
        #[must_use]
        pub fn new() -> Self {
            Self
        }
        /// No effect.
        pub fn set_enabled(&mut self, _enabled: bool) {}
        /// Always `true`: nothing is watched.
        #[must_use]
        pub fn unwatched(&self) -> bool {
            true
        }
        /// No effect.
        pub fn before_push(&mut self) {}
        /// No effect.
        pub fn after_push(&mut self, _leaf: &Path, _wrote: bool) {}
        /// Always [`PullScope::Full`].
        pub fn pull_scope(&mut self) -> PullScope {
            PullScope::Full
        }
        /// No effect.
        pub fn after_pull(&mut self, _ok: bool) {}
    }
}
pub mod wire;

pub use error::VmSyncError;
pub use pull::{PullScope, pull_workspace_to_vfs, pull_workspace_to_vfs_scoped};
pub use push::{
    KeptOnDisk, STREAM_MAX_DIRS, StreamEntry, StreamedPush, push_full, push_incremental,
};
pub use report::{Skipped, SyncProgress, SyncReport, human_bytes};
pub use run::ToolOutcome;
pub use staging::{StagingDir, clean_stale_staging};
pub use state::{
    DEFAULT_LAZY_MIN_SIZE, DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_WORKSPACE_BYTES, SyncState,
};

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
