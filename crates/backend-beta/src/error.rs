//! The crate's one error type, [`BetaError`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use devshell_vm_guest_fs::GuestFsError;
use devshell_vm_session::SessionError;

/// Everything a [`crate::BetaSession`] can report.
///
/// Transport failures are kept apart from what the sidecar answered and from what the
/// tool did: [`BetaError::ConnectionLost`] and [`BetaError::Timeout`] mean the
/// connection is gone (it is reported once; the next call connects and handshakes
/// again), [`BetaError::Remote`] carries an `error` frame of a working connection, and
/// a tool's own exit code or signal is never an error of this type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BetaError {
    /// Ctrl-C handling for a run could not be set up.
    #[error("cannot watch for interrupts during the run")]
    InterruptHandlers(#[source] devshell_vm_exec::ExecError),
    /// What every backend shares: the cwd, project directories, excludes, the sync
    /// around a run, timeouts and cancellations.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No transport is configured (`DEVSHELL_VM_SOCKET` unset).
    #[error(
        "the beta backend needs DEVSHELL_VM_SOCKET (a Unix socket path, tcp:HOST:PORT, tcp://HOST:PORT or stdio)"
    )]
    NoTransport,
    /// Connecting to the sidecar failed.
    #[error("cannot connect to the sidecar at {transport}")]
    Connect {
        /// The transport, as `DEVSHELL_VM_SOCKET` spells it.
        transport: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The sidecar binary for the `stdio` transport was not found.
    #[error(
        "sidecar `{program}` not found for DEVSHELL_VM_SOCKET=stdio (set DEVSHELL_VM_SIDECAR_BIN or put it on PATH; searched {searched})"
    )]
    SidecarNotFound {
        /// The program name or path that was looked up.
        program: String,
        /// The search path used.
        searched: String,
    },
    /// The sidecar binary for the `stdio` transport could not be started.
    #[error("cannot start sidecar {}", program.display())]
    SidecarSpawn {
        /// The resolved sidecar path.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The connection broke (end of stream, reset, write failure) while `during` was in
    /// flight. The connection was dropped; the next call reconnects and handshakes again.
    #[error(
        "connection to the sidecar at {transport} lost during {during}: {reason} (the next call reconnects)"
    )]
    ConnectionLost {
        /// The transport.
        transport: String,
        /// The request op in flight (`handshake`, `exec`, ...).
        during: String,
        /// What happened.
        reason: String,
    },
    /// No reply within the deadline; the connection was dropped (the next call reconnects).
    #[error(
        "sidecar at {transport} did not answer {during} within {after:?}; connection dropped (the next call reconnects)"
    )]
    Timeout {
        /// The transport.
        transport: String,
        /// The request op in flight.
        during: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The sidecar sent something that is not a valid reply to the request; the
    /// connection was dropped.
    #[error("protocol violation by the sidecar at {transport} during {during}: {message}")]
    Protocol {
        /// The transport.
        transport: String,
        /// The request op in flight.
        during: String,
        /// What was wrong.
        message: String,
    },
    /// A request would exceed the protocol's frame limit (e.g. a `write_file` of a very
    /// large file); nothing was sent and the connection stays usable.
    #[error("{during} request of {len} bytes exceeds the frame limit of {limit} bytes")]
    FrameTooLarge {
        /// The request op.
        during: String,
        /// Encoded size of the request line.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The sidecar answered with an `error` frame (the connection stays usable).
    #[error("sidecar refused {during}: {code}: {message}")]
    Remote {
        /// The request op.
        during: String,
        /// The frame's `code` (e.g. `no_session`, `bad_staging_dir`, `unauthorized`).
        code: String,
        /// The frame's message.
        message: String,
    },
    /// The sidecar speaks a protocol version this client does not.
    #[error(
        "sidecar at {transport} speaks protocol version {version}; this client speaks {supported}"
    )]
    VersionMismatch {
        /// The transport.
        transport: String,
        /// The version in `handshake_ok`.
        version: u32,
        /// The version this client speaks.
        supported: u32,
    },
    /// The token file could not be read or is empty.
    #[error("cannot use token file {}: {reason}", path.display())]
    TokenFile {
        /// The file (`DEVSHELL_VM_TOKEN_FILE`).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The staging directory could not be created or used.
    #[error("staging directory {}: {reason}", path.display())]
    Staging {
        /// The host path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The sidecar found the staging directory different from what was pushed
    /// (`sync-verify`): the directory is probably not shared between the two sides.
    #[error(
        "sidecar sees staging differently from what was pushed ({count} mismatches, first: {first}); is the staging directory really shared?"
    )]
    SyncMismatch {
        /// Number of mismatching manifest entries.
        count: usize,
        /// The first mismatch, described.
        first: String,
    },
    /// The sidecar could not start the program (`exec_spawn`, `exec`, `bad_guest_cwd`...).
    #[error("sidecar could not run `{program}`: {code}: {message}")]
    Exec {
        /// The program.
        program: String,
        /// The `error` frame code.
        code: String,
        /// The frame's message.
        message: String,
    },
    /// `wire-sync` could not synchronise the project (a digest or tree mismatch, an entry
    /// that does not apply). The VFS was left as it was; the next run sends a full
    /// manifest and only the contents the sidecar lacks.
    #[error("wire sync of VFS path {vfs_path:?} failed: {reason} (the next run resynchronises)")]
    Wire {
        /// The project root in the VFS.
        vfs_path: String,
        /// What went wrong.
        reason: String,
    },
    /// `DEVSHELL_VM_BETA_SYNC=wire` but the sidecar does not offer `wire-sync`.
    #[error(
        "DEVSHELL_VM_BETA_SYNC=wire, but the sidecar at {transport} does not offer the wire-sync capability"
    )]
    WireUnavailable {
        /// The transport.
        transport: String,
    },
    /// A guest path could not be formed (Mode P cwd mapping).
    #[error(transparent)]
    GuestPath(#[from] GuestFsError),
}

impl BetaError {
    /// `true` when the connection was dropped because of this error (the next call
    /// reconnects): [`BetaError::ConnectionLost`], [`BetaError::Timeout`],
    /// [`BetaError::Protocol`].
    #[must_use]
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost { .. } | Self::Timeout { .. } | Self::Protocol { .. }
        )
    }
}
