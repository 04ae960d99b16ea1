//! The one error type of this crate, [`GuestFsError`], and its kind, [`GuestFsErrorKind`].
//!
//! Every [`crate::GuestFsOps`] implementation reports the same situation with the same
//! variant; the table lives on the trait's documentation.

/// Errors from guest path helpers and guest file operations.
///
/// Path-carrying variants hold the path the operation was about: for [`InvalidPath`]
/// the path exactly as the caller gave it (it may not normalise at all); for
/// [`NotFound`], [`NotADirectory`] and [`IsADirectory`] the *normalised* guest path the
/// caller asked for (not the inner component that failed), so every implementation
/// reports the same value.
///
/// [`InvalidPath`]: GuestFsError::InvalidPath
/// [`NotFound`]: GuestFsError::NotFound
/// [`NotADirectory`]: GuestFsError::NotADirectory
/// [`IsADirectory`]: GuestFsError::IsADirectory
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFsError {
    /// The path is unusable: empty, contains NUL, not absolute, outside the guest mount
    /// (lexically or through a symlink), or names something the operation may not touch
    /// (such as removing the mount root).
    #[error("invalid guest path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given by the caller.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The path (or one of its parent directories) does not exist.
    #[error("guest path not found: {path:?}")]
    NotFound {
        /// The normalised guest path asked for.
        path: String,
    },
    /// A directory was needed but a non-directory was found (listing a file, or a
    /// parent component of the path is a file).
    #[error("not a directory on the guest: {path:?}")]
    NotADirectory {
        /// The normalised guest path asked for.
        path: String,
    },
    /// A file was needed but a directory was found (reading or writing a directory).
    #[error("is a directory on the guest: {path:?}")]
    IsADirectory {
        /// The normalised guest path asked for.
        path: String,
    },
    /// A guest command failed in a way that does not map to a more precise variant.
    #[error("guest command failed with status {status}: {stderr}")]
    GuestCommand {
        /// Exit status of the guest command.
        status: i32,
        /// Its standard error, lossily decoded.
        stderr: String,
    },
    /// The backend could not be reached or broke the conversation (VM not running,
    /// socket closed, protocol violation).
    #[error("guest transport failure: {message}")]
    Transport {
        /// What went wrong.
        message: String,
    },
    /// An unexpected condition inside an implementation (a bug or an unsupported case).
    #[error("internal guest fs error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

/// The variant of a [`GuestFsError`] without its data: convenient for matching in
/// tests and for mapping to wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestFsErrorKind {
    /// See [`GuestFsError::InvalidPath`].
    InvalidPath,
    /// See [`GuestFsError::NotFound`].
    NotFound,
    /// See [`GuestFsError::NotADirectory`].
    NotADirectory,
    /// See [`GuestFsError::IsADirectory`].
    IsADirectory,
    /// See [`GuestFsError::GuestCommand`].
    GuestCommand,
    /// See [`GuestFsError::Transport`].
    Transport,
    /// See [`GuestFsError::Internal`].
    Internal,
}

impl GuestFsError {
    /// Builds [`GuestFsError::InvalidPath`].
    #[must_use]
    pub fn invalid_path(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidPath {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The variant of this error.
    #[must_use]
    pub const fn kind(&self) -> GuestFsErrorKind {
        match self {
            Self::InvalidPath { .. } => GuestFsErrorKind::InvalidPath,
            Self::NotFound { .. } => GuestFsErrorKind::NotFound,
            Self::NotADirectory { .. } => GuestFsErrorKind::NotADirectory,
            Self::IsADirectory { .. } => GuestFsErrorKind::IsADirectory,
            Self::GuestCommand { .. } => GuestFsErrorKind::GuestCommand,
            Self::Transport { .. } => GuestFsErrorKind::Transport,
            Self::Internal { .. } => GuestFsErrorKind::Internal,
        }
    }

    /// The path this error is about, for the path-carrying variants.
    #[must_use]
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::InvalidPath { path, .. }
            | Self::NotFound { path }
            | Self::NotADirectory { path }
            | Self::IsADirectory { path } => Some(path),
            Self::GuestCommand { .. } | Self::Transport { .. } | Self::Internal { .. } => None,
        }
    }

    /// `true` for [`GuestFsError::NotFound`].
    #[must_use]
    pub const fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// The β protocol's `guest_fs_error` code for this error (`not_found`,
    /// `not_a_directory`, `is_a_directory`, `invalid_path`, else `io_error`).
    #[must_use]
    pub const fn wire_code(&self) -> &'static str {
        match self {
            Self::InvalidPath { .. } => "invalid_path",
            Self::NotFound { .. } => "not_found",
            Self::NotADirectory { .. } => "not_a_directory",
            Self::IsADirectory { .. } => "is_a_directory",
            Self::GuestCommand { .. } | Self::Transport { .. } | Self::Internal { .. } => {
                "io_error"
            }
        }
    }

    /// Rebuilds an error from a β `guest_fs_error` frame: `code` as sent, `path` the
    /// normalised guest path the request named, `message` the peer's text. Unknown
    /// codes become [`GuestFsError::Internal`] carrying code and message.
    #[must_use]
    pub fn from_wire(code: &str, path: &str, message: &str) -> Self {
        let path = path.to_owned();
        match code {
            "invalid_path" => Self::InvalidPath {
                path,
                reason: message.to_owned(),
            },
            "not_found" => Self::NotFound { path },
            "not_a_directory" => Self::NotADirectory { path },
            "is_a_directory" => Self::IsADirectory { path },
            other => Self::Internal {
                message: format!("{other} for {path:?}: {message}"),
            },
        }
    }
}
