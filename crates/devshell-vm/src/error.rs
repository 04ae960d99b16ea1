//! [`VmError`] (every session failure) and [`VmSessionInitError`] (the seed's marker).

use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_backend_host::HostError;
use devshell_vm_config::{Backend, ConfigError};
use devshell_vm_guest_fs::GuestFsError;
use devshell_vm_sync::VmSyncError;

/// Errors from VM session operations.
///
/// Display gives the whole message (the inner error's text included) so that
/// `eprintln!("{err}")` is enough; [`std::error::Error::source`] gives the wrapped
/// error for callers that walk the chain or match on the cause.
///
/// A tool that runs and fails is **not** an error: it is the exit status (or outcome)
/// of the run. Variants are added by the backends compiled in (features `lima`, `beta`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The configuration (environment) is invalid.
    #[error("invalid devshell-vm configuration: {0}")]
    Config(#[source] ConfigError),
    /// The host backend failed (staging directory, program lookup, spawn, sync).
    #[error("{0}")]
    Host(#[source] HostError),
    /// Syncing the VFS with the backend's workspace failed.
    #[error("{0}")]
    Sync(#[source] VmSyncError),
    /// A guest file operation failed.
    #[error("{0}")]
    GuestFs(#[source] GuestFsError),
    /// The Lima (γ) backend failed (instance missing or stopped and not startable, mount
    /// missing, guest unreachable, workdir or program missing in the guest, sync).
    #[cfg(all(unix, feature = "lima"))]
    #[error("{0}")]
    Lima(#[source] Box<devshell_vm_backend_lima::LimaError>),
    /// The β backend failed (connection, handshake, sync, the sidecar refused a request).
    #[cfg(feature = "beta")]
    #[error("{0}")]
    Beta(#[source] devshell_vm_backend_beta::BetaError),
    /// The backend was not compiled in, or does not exist on this OS. The message says
    /// which cargo feature to enable.
    #[error("vm backend not implemented: {0}")]
    BackendNotImplemented(&'static str),
    /// The backend is compiled in but cannot be used here (for example its tool is
    /// missing); [`crate::try_session_rc_or_host`] falls back to the host backend.
    #[error("DEVSHELL_VM_BACKEND={} is not available: {reason}", backend.as_str())]
    BackendUnavailable {
        /// The backend that was asked for.
        backend: Backend,
        /// Why it cannot be used, and what to do about it.
        reason: String,
    },
    /// The tool ran past the exec timeout and was killed with its whole process group.
    /// What it wrote before that is in the VFS.
    #[error("`{program}` timed out after {timeout:?}; its process group was killed")]
    Timeout {
        /// The program that timed out.
        program: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The tool was cancelled; what it wrote before that is in the VFS.
    #[error("`{program}` was cancelled")]
    Cancelled {
        /// The program that was cancelled.
        program: String,
    },
    /// The workspace root directory for the Lima mount could not be created or resolved.
    #[error("workspace root {path}: {source}")]
    WorkspaceRoot {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl From<HostError> for VmError {
    /// Timeouts and cancellations become [`VmError::Timeout`] / [`VmError::Cancelled`]
    /// (the same for every backend); everything else is [`VmError::Host`].
    fn from(err: HostError) -> Self {
        match err {
            HostError::Timeout { program, timeout } => Self::Timeout { program, timeout },
            HostError::Cancelled { program } => Self::Cancelled { program },
            other => Self::Host(other),
        }
    }
}

#[cfg(all(unix, feature = "lima"))]
impl From<devshell_vm_backend_lima::LimaError> for VmError {
    /// Timeouts and cancellations become [`VmError::Timeout`] / [`VmError::Cancelled`]
    /// (the same for every backend); everything else is [`VmError::Lima`].
    fn from(err: devshell_vm_backend_lima::LimaError) -> Self {
        use devshell_vm_backend_lima::LimaError;
        match err {
            LimaError::Timeout { program, timeout } => Self::Timeout { program, timeout },
            LimaError::Cancelled { program } => Self::Cancelled { program },
            other => Self::Lima(Box::new(other)),
        }
    }
}

#[cfg(feature = "beta")]
impl From<devshell_vm_backend_beta::BetaError> for VmError {
    /// Timeouts and cancellations become [`VmError::Timeout`] / [`VmError::Cancelled`]
    /// (the same for every backend); everything else is [`VmError::Beta`].
    fn from(err: devshell_vm_backend_beta::BetaError) -> Self {
        use devshell_vm_backend_beta::BetaError;
        match err {
            BetaError::ExecTimeout { program, timeout } => Self::Timeout { program, timeout },
            BetaError::Cancelled { program } => Self::Cancelled { program },
            other => Self::Beta(other),
        }
    }
}

impl From<ConfigError> for VmError {
    fn from(err: ConfigError) -> Self {
        Self::Config(err)
    }
}

impl From<VmSyncError> for VmError {
    fn from(err: VmSyncError) -> Self {
        Self::Sync(err)
    }
}

impl From<GuestFsError> for VmError {
    fn from(err: GuestFsError) -> Self {
        Self::GuestFs(err)
    }
}

/// Session construction failed and the reason was already written to the caller's
/// stderr by [`crate::try_session_rc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("vm session init failed")]
pub struct VmSessionInitError;
