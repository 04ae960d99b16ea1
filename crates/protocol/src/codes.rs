//! Error codes of `error` and `guest_fs_error` frames, and capability negotiation.
//!
//! Codes are an open set on the wire: a code this crate does not know parses as
//! the `Other` variant and serialises back unchanged, so a newer peer's codes
//! never make a frame unreadable.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! wire_code {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        ///
        /// Non-exhaustive: later versions add codes (unknown ones arrive as `Other`).
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "String", into = "String")]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A code this crate does not know (kept verbatim).
            Other(String),
        }

        impl $name {
            /// The code as it appears on the wire.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Other(code) => code,
                }
            }

            /// Every code this crate knows (without `Other`).
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];
        }

        impl From<String> for $name {
            fn from(code: String) -> Self {
                match code.as_str() {
                    $( $wire => Self::$variant, )+
                    _ => Self::Other(code),
                }
            }
        }

        impl From<&str> for $name {
            fn from(code: &str) -> Self {
                Self::from(code.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(code: $name) -> Self {
                match code {
                    $name::Other(code) => code,
                    known => known.as_str().to_owned(),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_code! {
    /// The `code` of an `{"op":"error"}` frame.
    ErrorCode {
        /// v1: the line was empty (or only whitespace).
        Empty => "empty",
        /// v1: the line was not a JSON object (also used for a non-UTF-8 line).
        Parse => "parse",
        /// v1: the `op` is not one the sidecar knows.
        UnknownOp => "unknown_op",
        /// v1: `exec` with an empty `argv`.
        Exec => "exec",
        /// v1: the request needs a session and none was started on this connection.
        NoSession => "no_session",
        /// v1: `guest_cwd` is outside the mount, has `.`/`..` components, escapes the staging dir or is not a directory.
        BadGuestCwd => "bad_guest_cwd",
        /// v1: the program could not be started.
        ExecSpawn => "exec_spawn",
        /// v1: the deadline passed; the whole process group was killed.
        ExecTimeout => "exec_timeout",
        /// v1: waiting for the child failed.
        ExecWait => "exec_wait",
        /// v1 draft: the handshake `version` is not supported.
        VersionMismatch => "version_mismatch",
        /// v1 draft: the staging directory could not be used.
        StagingIo => "staging_io",
        /// New: a line longer than the sidecar's maximum frame size (the line was skipped).
        FrameTooLarge => "frame_too_large",
        /// New: a known `op` whose fields are missing or of the wrong type.
        InvalidRequest => "invalid_request",
        /// New: missing or wrong token, or a request before the required handshake.
        Unauthorized => "unauthorized",
        /// New: `staging_dir` is `/`, outside every `--root`, or not a directory.
        BadStagingDir => "bad_staging_dir",
        /// New: `exec` `env` tried to set a dynamic-loader variable (`LD_*` and similar).
        ForbiddenEnv => "forbidden_env",
        /// New: `session_id` does not name this connection's session.
        WrongSession => "wrong_session",
        /// New: the sidecar is shutting down; the exec was killed.
        Shutdown => "shutdown",
        /// New: an internal failure of the sidecar (a bug or a resource limit).
        Internal => "internal",
        /// New: the sidecar serves its maximum number of connections; this one is closed.
        Busy => "busy",
        /// `wire-sync`: a delta push whose base is not the sidecar's state (send a full push).
        WireStale => "wire_stale",
        /// `wire-sync`: a bulk frame with a bad marker, type or length (the connection is closed).
        WireFrame => "wire_frame",
        /// `wire-sync`: a blob whose bytes do not match its digest (the connection is closed).
        WireDigest => "wire_digest",
        /// `wire-sync`: the project's copy would exceed the sidecar's size bound.
        WireQuota => "wire_quota",
        /// `wire-sync`: writing or scanning the sidecar's staging failed (disk full...); the copy was reset.
        WireIo => "wire_io",
        /// `wire-sync`: another connection is using this client's copy of the project.
        WireBusy => "wire_busy",
        /// `wire-sync`: an entry or path the sidecar refuses (bad path, missing digest...).
        WireInvalid => "wire_invalid",
        /// `wire-sync`: a request that needs an earlier step (`wire_project`, a pending push...).
        WireSequence => "wire_sequence",
    }
}

wire_code! {
    /// The `code` of a `{"op":"guest_fs_error"}` frame; each code has exactly one meaning.
    GuestFsErrorCode {
        /// The path (or one of its parents) does not exist.
        NotFound => "not_found",
        /// A directory was expected (`list_dir` on a file, a parent component is a file).
        NotADirectory => "not_a_directory",
        /// A file was expected (`read_file` or `write_file` on a directory).
        IsADirectory => "is_a_directory",
        /// The path is outside the mount, has `..` components, escapes the staging dir through a symlink, or is the mount itself where that is not allowed.
        InvalidPath => "invalid_path",
        /// Any other I/O failure (permissions, disk full...); the message names the path.
        IoError => "io_error",
        /// `content_base64` is not standard base64.
        InvalidBase64 => "invalid_base64",
        /// v1: the `operation` is not known (or was not negotiated).
        Unknown => "unknown",
        /// New: the target exists and the operation does not replace it (`rename` onto a directory...).
        AlreadyExists => "already_exists",
    }
}

/// The capabilities both sides will use: those `requested` by the client that
/// the server `offered`, in the client's order, without duplicates.
#[must_use]
pub fn negotiate_capabilities(requested: &[String], offered: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cap in requested {
        if offered.contains(&cap.as_str()) && !out.contains(cap) {
            out.push(cap.clone());
        }
    }
    out
}
