//! The beta JSON-lines wire protocol: message types and line framing.
//!
//! Every frame is one JSON object on one UTF-8 line ending in `\n`. Requests
//! ([`Request`]) and replies ([`Reply`]) are tagged by their `op` field. The
//! types cover every version 1 message (see `shared/design/protocol-v1.md`)
//! plus the negotiated extensions:
//!
//! - `handshake` may carry `capabilities` and `token`; `handshake_ok` answers
//!   with the `capabilities` the sidecar will use ([`negotiate_capabilities`],
//!   [`KNOWN_CAPABILITIES`]).
//! - [`CAP_EXEC_STREAM`]: `exec_output` frames ([`ExecOutput`]) carry the child's
//!   stdout and stderr, in order, before `exec_result`.
//! - [`CAP_GUEST_FS_V2`]: `guest_fs` operations `stat`, `exists` and `rename`
//!   (with `to_path`), the reply fields `stat` and `exists`, and `path` on
//!   `guest_fs_error` (which of the two `rename` paths failed).
//! - [`CAP_SYNC_VERIFY`]: `sync_ok` reports `mismatches` found while checking a
//!   `sync_request` manifest against the staging directory.
//! - [`CAP_WIRE_SYNC`]: Mode S without a shared file system: `wire_*` requests, BLAKE3
//!   content addressing and length-prefixed binary bulk frames (see [`write_blob`],
//!   [`LineReader::read_blob`] and `docs/arch/wire-sync.md`).
//! - [`CAP_WIRE_SYNC_STREAM`]: a full `wire_push` with `stream: true` is followed at
//!   once by the bulk frames of its blobs (no `wire_need` round trip).
//! - `health` / `health_ok`: a liveness check any peer may send, even before the
//!   handshake (it reveals nothing and changes nothing).
//!
//! A peer that did not announce a capability never receives the frames or
//! fields that belong to it. Unknown fields are ignored on input (no
//! `deny_unknown_fields`), and every field added after v1 is optional and left
//! out of the JSON when absent.
//!
//! The line codec ([`LineReader`], [`write_frame`]) caps a frame's size
//! ([`DEFAULT_MAX_FRAME_BYTES`]) and reports an oversized or non-UTF-8 line as a
//! [`ProtocolError`] after skipping to the next newline, so one bad line never
//! tears down a connection.
//!
//! ```
//! use devshell_vm_protocol::{parse_request, Request, Reply, ExecResult, encode_reply};
//!
//! let line = r#"{"argv":["true"],"op":"exec","session_id":"pid-1","guest_cwd":"/workspace","env":{}}"#;
//! let Request::Exec(exec) = parse_request(line)? else { panic!("not an exec") };
//! assert_eq!(exec.argv, ["true"]);
//! let reply = Reply::ExecResult(ExecResult { session_id: exec.session_id, exit_code: 0, signal: None });
//! assert_eq!(
//!     encode_reply(&reply),
//!     r#"{"op":"exec_result","session_id":"pid-1","exit_code":0,"signal":null}"#
//! );
//! # Ok::<(), devshell_vm_protocol::ProtocolError>(())
//! ```

mod codec;
mod codes;
mod error;
mod message;
mod wire;

pub use codec::{DEFAULT_MAX_FRAME_BYTES, LineReader, write_frame, write_line};
pub use codes::{ErrorCode, GuestFsErrorCode, negotiate_capabilities};
pub use error::ProtocolError;
pub use message::{
    Direction, ErrorReply, Exec, ExecOutput, ExecResult, GuestFs, GuestFsErrorReply, GuestFsOk,
    GuestFsOperation, GuestKindWire, GuestStat, Handshake, HandshakeOk, ManifestAction,
    ManifestEntry, OutputStream, Reply, Request, SessionOk, SessionShutdown, SessionStart,
    ShutdownOk, SyncMismatch, SyncOk, SyncRequest, decode_base64, encode_base64, encode_reply,
    encode_request, parse_reply, parse_request,
};
pub use wire::{
    BULK_MARKER, BlobRef, FRAME_DATA, FRAME_HEADER_LEN, FRAME_LAST, HashedBlob, Health, HealthOk,
    MAX_CHUNK, Manifest, WireBlobs, WireChanges, WireEntry, WireKind, WireNeed, WireProject,
    WireProjectOk, WirePull, WirePullDone, WirePullOk, WirePush, WirePushOk, WireStart,
    WireStarted, WireWant, check_relative_path, digest_hex, is_digest_hex, read_blobs_hashed,
    verify_blob, write_blob, write_blob_piece,
};

/// The protocol version this crate speaks (sent in `handshake` and `handshake_ok`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Capability: `exec_output` frames stream the child's output before `exec_result`.
pub const CAP_EXEC_STREAM: &str = "exec-stream";
/// Capability: `guest_fs` operations `stat`, `exists`, `rename` and their reply fields.
pub const CAP_GUEST_FS_V2: &str = "guest-fs-v2";
/// Capability: `sync_ok` carries `mismatches` found while verifying a manifest.
pub const CAP_SYNC_VERIFY: &str = "sync-verify";
/// Capability: Mode S over the connection (`wire_*` requests and bulk frames; see
/// `docs/arch/wire-sync.md`).
pub const CAP_WIRE_SYNC: &str = "wire-sync";
/// Capability (with [`CAP_WIRE_SYNC`]): a full `wire_push` may carry its blobs right
/// after its line (`stream: true`), without waiting for `wire_need`
/// (`docs/arch/wire-sync.md`, §5).
pub const CAP_WIRE_SYNC_STREAM: &str = "wire-sync-stream";

/// Every capability this crate knows, in the order a client usually requests them.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    CAP_EXEC_STREAM,
    CAP_GUEST_FS_V2,
    CAP_SYNC_VERIFY,
    CAP_WIRE_SYNC,
    CAP_WIRE_SYNC_STREAM,
];

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
