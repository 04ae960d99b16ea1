//! The crate's error type for tree operations.

use std::path::PathBuf;

/// Everything a [`Vfs`](crate::Vfs) operation can report. Every variant that concerns a
/// path names it (the canonical absolute VFS path, or the host path for [`VfsError::Io`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfsError {
    /// The path (or one of its parents) does not exist.
    #[error("no such file or directory: {path}")]
    NotFound {
        /// The path that was looked up.
        path: String,
    },
    /// A path component that must be a directory is a file or a symlink
    /// (the VFS never follows symlinks).
    #[error("not a directory: {path}")]
    NotADirectory {
        /// The component that is not a directory.
        path: String,
    },
    /// The operation needs a file but found a directory.
    #[error("is a directory: {path}")]
    IsADirectory {
        /// The directory.
        path: String,
    },
    /// The operation needs a regular file but found a symlink (never followed).
    #[error("is a symlink (the VFS never follows symlinks): {path}")]
    IsASymlink {
        /// The symlink.
        path: String,
    },
    /// `read_link` on something that is not a symlink.
    #[error("not a symlink: {path}")]
    NotASymlink {
        /// The node that is not a symlink.
        path: String,
    },
    /// The node to create exists already.
    #[error("already exists: {path}")]
    AlreadyExists {
        /// The existing node.
        path: String,
    },
    /// A rename would replace a non-empty directory.
    #[error("directory not empty: {path}")]
    DirectoryNotEmpty {
        /// The non-empty directory.
        path: String,
    },
    /// A path, name or symlink target is not acceptable.
    #[error("invalid path {path:?}: {reason}")]
    InvalidName {
        /// The path (or symlink target) as given.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A rename that cannot be done (into its own subtree, onto the root).
    #[error("cannot rename {from} to {to}: {reason}")]
    InvalidRename {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The root directory cannot be removed or renamed.
    #[error("the root directory cannot be removed or renamed")]
    RootNotRemovable,
    /// `changes_since` was asked about a generation older than the bounded deletion
    /// history (or one not from this tree's history); the caller must fall back to a
    /// full sync.
    #[error("change history since generation {since} is no longer kept; do a full sync")]
    HistoryUnavailable {
        /// The generation that was asked for.
        since: u64,
    },
    /// A file pulled without reading it (see [`lazy`](crate::lazy)) was changed in
    /// place on the host before its bytes were read: the version the pull saw is gone,
    /// and the VFS never hands out other bytes in its place.
    #[error(
        "the content of {path} changed on the host since it was pulled (read on demand from {}); pull again",
        origin.display()
    )]
    ContentChanged {
        /// The VFS path (for a bare [`NodeRef`](crate::NodeRef), the path the file was
        /// pulled at).
        path: String,
        /// The host file it was to be read from (it may no longer exist there).
        origin: PathBuf,
    },
    /// Host I/O failed (`copy_tree_to_host`, or reading a lazy content, which names the
    /// host file).
    #[error("I/O error at {}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
