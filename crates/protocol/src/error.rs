//! The crate's one error type.

use std::io;

use crate::codes::ErrorCode;

/// Everything that can go wrong reading, parsing or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The line was empty or only whitespace.
    #[error("empty line")]
    Empty,
    /// The line is longer than the frame limit; it was skipped up to its newline.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes (line skipped)")]
    FrameTooLarge {
        /// The configured limit in bytes.
        limit: usize,
        /// Bytes seen on the line (including the part past the limit).
        len: usize,
    },
    /// The line is not valid UTF-8.
    #[error("line is not valid UTF-8 (first invalid byte at offset {valid_up_to})")]
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The line is not a JSON object.
    #[error("invalid JSON ({message}) in line starting {prefix:?}")]
    Json {
        /// `serde_json`'s description.
        message: String,
        /// The first 80 characters of the line.
        prefix: String,
    },
    /// The object has no string `op` field.
    #[error("frame has no string \"op\" field: {prefix:?}")]
    MissingOp {
        /// The first 80 characters of the line.
        prefix: String,
    },
    /// The `op` is not one this crate knows.
    #[error("unknown op {op:?}")]
    UnknownOp {
        /// The op as sent.
        op: String,
    },
    /// A known `op` with missing or mistyped fields.
    #[error("invalid {op} frame: {message}")]
    InvalidFields {
        /// The op as sent.
        op: String,
        /// `serde_json`'s description of the bad field.
        message: String,
    },
    /// A `*_base64` field is not standard base64.
    #[error("invalid base64 in {field}: {message}")]
    Base64 {
        /// The field name.
        field: &'static str,
        /// The decoder's description.
        message: String,
    },
    /// `wire-sync`: a bulk frame with a bad marker, type or length (the byte stream
    /// cannot be resynchronised: the connection must be dropped).
    #[error("bad bulk frame: {message}")]
    BulkFrame {
        /// What was wrong.
        message: String,
    },
    /// `wire-sync`: a blob's bytes do not hash to the digest announced for them.
    #[error("blob content hashes to {actual}, not to the announced digest {expected}")]
    BlobDigest {
        /// The announced digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Reading or writing the transport failed (the connection is unusable).
    #[error("transport I/O failed while {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ProtocolError {
    /// The `error` frame code a sidecar answers this failure with.
    #[must_use]
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Empty => ErrorCode::Empty,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::NotUtf8 { .. } | Self::Json { .. } | Self::MissingOp { .. } => ErrorCode::Parse,
            Self::UnknownOp { .. } => ErrorCode::UnknownOp,
            Self::InvalidFields { .. } | Self::Base64 { .. } => ErrorCode::InvalidRequest,
            Self::Io { .. } => ErrorCode::Internal,
            Self::BulkFrame { .. } => ErrorCode::WireFrame,
            Self::BlobDigest { .. } => ErrorCode::WireDigest,
        }
    }

    /// `true` when the connection can go on after this error (not after [`ProtocolError::Io`]
    /// or a bad bulk frame or blob, which leave the byte stream in an unknown place).
    #[must_use]
    pub fn is_recoverable(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. } | Self::BulkFrame { .. } | Self::BlobDigest { .. }
        )
    }
}

/// The first 80 characters of `line`, for error messages.
pub(crate) fn prefix(line: &str) -> String {
    line.chars().take(80).collect()
}
