//! The crate's one error type: failures that stop the sidecar from starting or serving.
//! (Per-request failures are answered with `error` frames and never become a `SidecarError`.)

use std::io;
use std::path::PathBuf;

/// Why the sidecar cannot start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The command line is inconsistent (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// An environment variable the sidecar reads holds a bad value.
    #[error(transparent)]
    Config(#[from] devshell_vm_config::ConfigError),
    /// A `--root` directory is unusable.
    #[error("--root {path}: {reason}")]
    Root {
        /// The directory as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The token file cannot be used.
    #[error("--token-file {path}: {reason}")]
    TokenFile {
        /// The file as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The Unix socket path cannot be used safely.
    #[error("--serve-socket {path}: {reason}")]
    SocketPath {
        /// The socket path as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Binding or listening failed.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address or path.
        address: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `--check`: the sidecar at the address is not healthy (exit status 1).
    #[error("health check of {address} failed: {reason}")]
    Check {
        /// The probed address.
        address: String,
        /// What failed.
        reason: String,
    },
    /// Another system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl SidecarError {
    /// The process exit status for this error: 2 for usage errors, 1 otherwise.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}
