//! [`VmError`] (every session failure) and [`VmSessionInitError`] (the seed's marker).

use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_backend_host::HostError;
use devshell_vm_config::{Backend, ConfigError};
use devshell_vm_guest_fs::GuestFsError;
use devshell_vm_session::SessionError;
use devshell_vm_sync::VmSyncError;

/// Errors from VM session operations.
///
/// Each error in the chain carries its own words once: a variant that wraps a backend
/// error is transparent (it prints the backend's message), and a variant with a cause
/// does not repeat the cause's text. Print the whole chain — [`crate::error_chain`]
/// does it — to show everything.
///
/// A tool that runs and fails is **not** an error: it is the exit status (or outcome)
/// of the run. Variants are added by the backends compiled in (features `lima`, `beta`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The configuration (environment) is invalid.
    #[error("invalid devshell-vm configuration")]
    Config(#[source] ConfigError),
    /// The host backend failed (staging directory, program lookup, spawn, sync).
    #[error(transparent)]
    Host(HostError),
    /// Syncing the VFS with the backend's workspace failed.
    #[error(transparent)]
    Sync(VmSyncError),
    /// A guest file operation failed.
    #[error(transparent)]
    GuestFs(GuestFsError),
    /// The Lima (γ) backend failed (instance missing or stopped and not startable, mount
    /// missing, guest unreachable, workdir or program missing in the guest, sync).
    #[cfg(all(unix, feature = "lima"))]
    #[error(transparent)]
    Lima(Box<devshell_vm_backend_lima::LimaError>),
    /// The β backend failed (connection, handshake, sync, the sidecar refused a request).
    #[cfg(feature = "beta")]
    #[error(transparent)]
    Beta(devshell_vm_backend_beta::BetaError),
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
    #[error("workspace root {path}")]
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
            HostError::Session(session) => Self::from(session),
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
            LimaError::Session(SessionError::Timeout { program, timeout }) => {
                Self::Timeout { program, timeout }
            }
            LimaError::Session(SessionError::Cancelled { program }) => Self::Cancelled { program },
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
            BetaError::Session(SessionError::Timeout { program, timeout }) => {
                Self::Timeout { program, timeout }
            }
            BetaError::Session(SessionError::Cancelled { program }) => Self::Cancelled { program },
            other => Self::Beta(other),
        }
    }
}

impl From<SessionError> for VmError {
    /// Timeouts and cancellations become [`VmError::Timeout`] / [`VmError::Cancelled`];
    /// the other shared failures are reported as the host backend's (their words are the
    /// same for every backend).
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Timeout { program, timeout } => Self::Timeout { program, timeout },
            SessionError::Cancelled { program } => Self::Cancelled { program },
            other => Self::Host(HostError::Session(other)),
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
