//! The crate's one error type.

use std::io;
use std::path::PathBuf;

use devshell_vm_vfs::VfsError;

/// Everything a sync operation can report. Every variant names the path or value that
/// failed: a host path for host-side problems, a VFS path for tree-side ones.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmSyncError {
    /// Host I/O failed at `path` (nothing outside the staging leaf is ever touched, so
    /// `path` always lies inside it, or is the staging directory itself).
    #[error("I/O error at {}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The in-memory tree refused an operation.
    #[error(transparent)]
    Vfs(#[from] VfsError),
    /// Two different VFS paths map to the same staging leaf (`staging/<last segment>`),
    /// or one of them is the root (whose leaf is the staging directory itself).
    #[error(
        "staging leaf {} is already used by VFS path {existing:?}; {requested:?} maps to the same place",
        leaf.display()
    )]
    LeafCollision {
        /// The host leaf directory both paths map to.
        leaf: PathBuf,
        /// The VFS path already bound to it.
        existing: String,
        /// The VFS path that was refused.
        requested: String,
    },
    /// Something at `path` would lead outside the staging leaf: a symlink where a real
    /// directory was required (symlinks are never followed), or the staging leaf itself
    /// replaced by a symlink.
    #[error("refusing to leave the staging leaf through {}", path.display())]
    Escape {
        /// The host path that is a symlink (or otherwise leads out).
        path: PathBuf,
    },
    /// The VFS path to sync does not exist.
    #[error("VFS path to sync does not exist: {vfs_path}")]
    NotFound {
        /// The VFS path.
        vfs_path: String,
    },
    /// The VFS path to sync is not a directory.
    #[error("VFS path to sync is not a directory: {vfs_path}")]
    NotADirectory {
        /// The VFS path.
        vfs_path: String,
    },
    /// The staging leaf exists on the host but is not a directory (a tool replaced it).
    #[error("staging leaf {} is not a directory", path.display())]
    LeafNotADirectory {
        /// The host leaf path.
        path: PathBuf,
    },
    /// A name that may not appear in a synced tree: empty, `.`, `..`, containing `/`
    /// or NUL, or an absolute path where a relative one is needed.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name or path as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An exclude pattern could not be compiled or is not relative to the leaf.
    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    InvalidExclude {
        /// The pattern as given.
        pattern: String,
        /// Why it is refused.
        reason: String,
    },
    /// A host file is larger than the pull accepts
    /// ([`SyncState::set_max_file_size`](crate::SyncState::set_max_file_size)); the VFS
    /// was left untouched.
    #[error("host file {} is {size} bytes, more than the limit of {limit}", path.display())]
    FileTooLarge {
        /// The host path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A `wire-sync` change cannot be applied to the tree (a path whose parent is not a
    /// directory, a file whose content is missing or of the wrong size...).
    #[error("cannot apply the wire change at {path:?}: {reason}")]
    WireApply {
        /// The relative wire path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The files of the synced tree add up to more than the workspace size budget
    /// ([`SyncState::set_max_workspace_bytes`](crate::SyncState::set_max_workspace_bytes));
    /// the pull stopped before reading past the budget and the VFS was left untouched.
    #[error(
        "the workspace at {} holds more than {limit} bytes of files (at least {at_least}), over the workspace size budget; raise DEVSHELL_VM_WORKSPACE_MAX_BYTES or remove files",
        leaf.display()
    )]
    WorkspaceTooLarge {
        /// The staging leaf that was being pulled.
        leaf: PathBuf,
        /// Bytes counted when the budget was passed.
        at_least: u64,
        /// The budget.
        limit: u64,
    },
    /// The last push into this leaf failed half-way, so the host copy holds files that
    /// push wrote only in part (or not yet); a pull would import them. Push again (which
    /// repairs the leaf) before pulling. The VFS was left untouched.
    #[error(
        "staging leaf {} is incomplete after a failed push; push again before pulling",
        leaf.display()
    )]
    IncompletePush {
        /// The staging leaf.
        leaf: PathBuf,
    },
    /// A host file changed while the pull was reading it (the VFS was left untouched).
    #[error("host file changed while it was being read: {}", path.display())]
    ChangedDuringRead {
        /// The host path.
        path: PathBuf,
    },
}

impl VmSyncError {
    /// The host path and I/O error of an [`VmSyncError::Io`] (all that
    /// [`crate::StagingDir`] returns), for a caller whose own error carries a path and
    /// an `io::Error`; any other variant becomes an error of kind `Other` at `fallback`.
    #[must_use]
    pub fn into_io_parts(self, fallback: PathBuf) -> (PathBuf, io::Error) {
        match self {
            Self::Io { path, source } => (path, source),
            other => (fallback, io::Error::other(other.to_string())),
        }
    }

    /// Builds an [`VmSyncError::Io`] from a `nix` error number.
    pub(crate) fn errno(path: impl Into<PathBuf>, errno: nix::errno::Errno) -> Self {
        Self::Io {
            path: path.into(),
            source: io::Error::from(errno),
        }
    }

    /// Builds an [`VmSyncError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
