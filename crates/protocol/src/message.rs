//! Request and reply types, and the functions that parse and encode one line.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::codes::{ErrorCode, GuestFsErrorCode};
use crate::error::{ProtocolError, prefix};
use crate::wire::{
    Health, HealthOk, WireBlobs, WireChanges, WireNeed, WireProject, WireProjectOk, WirePull,
    WirePullDone, WirePullOk, WirePush, WirePushOk, WireStart, WireStarted, WireWant,
};

// ---------------------------------------------------------------- requests

/// A request frame (client → sidecar), tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// `handshake`: first frame of a connection.
    Handshake(Handshake),
    /// `session_start`: bind the connection to a staging directory.
    SessionStart(SessionStart),
    /// `sync_request`: acknowledge (and optionally verify) a sync through the shared staging dir.
    SyncRequest(SyncRequest),
    /// `exec`: run a program in the staging dir.
    Exec(Exec),
    /// `guest_fs`: one file operation under the mount.
    GuestFs(GuestFs),
    /// `session_shutdown`: forget the session.
    SessionShutdown(SessionShutdown),
    /// `wire-sync`: start a session whose staging the sidecar keeps.
    WireStart(WireStart),
    /// `wire-sync`: open the sidecar's copy of a project.
    WireProject(WireProject),
    /// `wire-sync`: push changes.
    WirePush(WirePush),
    /// `wire-sync`: blobs the sidecar asked for (bulk frames follow).
    WireBlobs(WireBlobs),
    /// `wire-sync`: pull the tool's changes.
    WirePull(WirePull),
    /// `wire-sync`: ask for pulled contents the client lacks.
    WireWant(WireWant),
    /// `wire-sync`: the pull is applied.
    WirePullDone(WirePullDone),
    /// Liveness check (answered before authentication).
    Health(Health),
}

impl Request {
    /// Every request `op` this crate knows.
    pub const OPS: &'static [&'static str] = &[
        "handshake",
        "session_start",
        "sync_request",
        "exec",
        "guest_fs",
        "session_shutdown",
        "wire_start",
        "wire_project",
        "wire_push",
        "wire_blobs",
        "wire_pull",
        "wire_want",
        "wire_pull_done",
        "health",
    ];

    /// The frame's `op`.
    #[must_use]
    pub fn op(&self) -> &'static str {
        match self {
            Self::WireStart(_) => "wire_start",
            Self::WireProject(_) => "wire_project",
            Self::WirePush(_) => "wire_push",
            Self::WireBlobs(_) => "wire_blobs",
            Self::WirePull(_) => "wire_pull",
            Self::WireWant(_) => "wire_want",
            Self::WirePullDone(_) => "wire_pull_done",
            Self::Health(_) => "health",
            Self::Handshake(_) => "handshake",
            Self::SessionStart(_) => "session_start",
            Self::SyncRequest(_) => "sync_request",
            Self::Exec(_) => "exec",
            Self::GuestFs(_) => "guest_fs",
            Self::SessionShutdown(_) => "session_shutdown",
        }
    }

    /// The `session_id` the request names (`None` for `handshake`).
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Handshake(_) | Self::Health(_) => None,
            Self::WireStart(r) => Some(&r.session_id),
            Self::WireProject(r) => Some(&r.session_id),
            Self::WirePush(r) => Some(&r.session_id),
            Self::WireBlobs(r) => Some(&r.session_id),
            Self::WirePull(r) => Some(&r.session_id),
            Self::WireWant(r) => Some(&r.session_id),
            Self::WirePullDone(r) => Some(&r.session_id),
            Self::SessionStart(r) => Some(&r.session_id),
            Self::SyncRequest(r) => Some(&r.session_id),
            Self::Exec(r) => Some(&r.session_id),
            Self::GuestFs(r) => Some(&r.session_id),
            Self::SessionShutdown(r) => Some(&r.session_id),
        }
    }
}

/// `handshake`: protocol version, client identity, and (new) capabilities and token.
///
/// `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Handshake {
    /// Protocol version (1).
    pub version: u32,
    /// Client name (v1 clients send `cargo-devshell`).
    pub client: String,
    /// Client version string.
    pub client_version: String,
    /// New: capabilities the client would like to use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// New: the shared secret a TCP sidecar requires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for Handshake {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            client: String::new(),
            client_version: String::new(),
            capabilities: None,
            token: None,
        }
    }
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("version", &self.version)
            .field("client", &self.client)
            .field("client_version", &self.client_version)
            .field("capabilities", &self.capabilities)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn default_guest_workspace() -> String {
    "/workspace".to_owned()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// `session_start`: the staging directory both sides share and the guest mount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStart {
    /// Client-chosen id (v1 clients send `pid-<pid>`).
    #[serde(default)]
    pub session_id: String,
    /// Host directory shared with the guest; an empty string clears the session (v1).
    pub staging_dir: String,
    /// Where the staging dir appears in the guest (default `/workspace`).
    #[serde(default = "default_guest_workspace")]
    pub guest_workspace: String,
    /// Backend name (v1 sends `beta-stub`); informational.
    #[serde(default)]
    pub backend: String,
    /// Backend configuration object; informational.
    #[serde(default = "empty_object")]
    pub backend_config: serde_json::Value,
}

/// Direction of a `sync_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Host → guest (before `exec`).
    PushToGuest,
    /// Guest → host (after `exec`).
    PullFromGuest,
}

/// What a manifest entry says happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestAction {
    /// The path was created or changed and should now have `size` bytes.
    Upsert,
    /// The path was deleted and should now be absent.
    Delete,
}

/// One `manifest` entry of a `sync_request`.
///
/// `path` is relative to the staging dir (e.g. `leaf/src/main.rs`); an absolute
/// path is a guest path under the session's `guest_workspace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The path (see the type docs).
    pub path: String,
    /// Upsert or delete.
    pub action: ManifestAction,
    /// Expected size in bytes of a regular file (upserts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Modification time in milliseconds since the Unix epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_unix_ms: Option<i64>,
}

/// `sync_request`: data moves through the shared staging dir; this acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// Push or pull.
    pub direction: Direction,
    /// Last segment of the VFS cwd (the staging leaf).
    #[serde(default)]
    pub vfs_cwd_leaf: String,
    /// Optional list of paths to verify in staging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Vec<ManifestEntry>>,
}

/// `exec`: run `argv` with its cwd at the mapped `guest_cwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// Guest directory to run in (default: the mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cwd: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables (loader variables are refused).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Deadline in milliseconds; `0` means none; absent means the sidecar's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A `guest_fs` operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum GuestFsOperation {
    /// v1: sorted names of a directory's entries (dotfiles included).
    ListDir,
    /// v1: whole file as base64.
    ReadFile,
    /// v1: create or truncate a file (missing parents are created).
    WriteFile,
    /// v1: `mkdir -p`.
    Mkdir,
    /// v1: recursive remove.
    Remove,
    /// `guest-fs-v2`: kind and size, without following a final symlink.
    Stat,
    /// `guest-fs-v2`: whether the path exists (a dangling symlink exists).
    Exists,
    /// `guest-fs-v2`: rename `guest_path` to `to_path`.
    Rename,
    /// An operation this crate does not know (answered with code `unknown`).
    Other(String),
}

impl GuestFsOperation {
    /// The operation as it appears on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::ListDir => "list_dir",
            Self::ReadFile => "read_file",
            Self::WriteFile => "write_file",
            Self::Mkdir => "mkdir",
            Self::Remove => "remove",
            Self::Stat => "stat",
            Self::Exists => "exists",
            Self::Rename => "rename",
            Self::Other(op) => op,
        }
    }

    /// `true` for the operations that need the `guest-fs-v2` capability.
    #[must_use]
    pub fn is_v2(&self) -> bool {
        matches!(self, Self::Stat | Self::Exists | Self::Rename)
    }
}

impl From<String> for GuestFsOperation {
    fn from(op: String) -> Self {
        match op.as_str() {
            "list_dir" => Self::ListDir,
            "read_file" => Self::ReadFile,
            "write_file" => Self::WriteFile,
            "mkdir" => Self::Mkdir,
            "remove" => Self::Remove,
            "stat" => Self::Stat,
            "exists" => Self::Exists,
            "rename" => Self::Rename,
            _ => Self::Other(op),
        }
    }
}

impl From<GuestFsOperation> for String {
    fn from(op: GuestFsOperation) -> Self {
        match op {
            GuestFsOperation::Other(op) => op,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for GuestFsOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `guest_fs`: one file operation on a guest path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFs {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// What to do.
    pub operation: GuestFsOperation,
    /// Absolute guest path under the mount.
    pub guest_path: String,
    /// Standard base64 content for `write_file` (absent means an empty file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// `guest-fs-v2`: destination of `rename`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_path: Option<String>,
}

impl GuestFs {
    /// The decoded `content_base64` (empty when absent).
    ///
    /// # Errors
    /// [`ProtocolError::Base64`] when the field is not standard base64.
    pub fn content(&self) -> Result<Vec<u8>, ProtocolError> {
        match &self.content_base64 {
            None => Ok(Vec::new()),
            Some(text) => decode_base64("content_base64", text),
        }
    }
}

/// `session_shutdown`: forget the session (`stop_vm` is informational).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionShutdown {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// Whether the client would like the VM stopped.
    #[serde(default)]
    pub stop_vm: bool,
}

// ---------------------------------------------------------------- replies

/// A reply frame (sidecar → client), tagged by `op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to `handshake`.
    HandshakeOk(HandshakeOk),
    /// Answer to `session_start`.
    SessionOk(SessionOk),
    /// Answer to `sync_request`.
    SyncOk(SyncOk),
    /// `exec-stream`: a chunk of child output, before `exec_result`.
    ExecOutput(ExecOutput),
    /// Answer to `exec`.
    ExecResult(ExecResult),
    /// Successful `guest_fs`.
    GuestFsOk(GuestFsOk),
    /// Failed `guest_fs`.
    GuestFsError(GuestFsErrorReply),
    /// Answer to `session_shutdown`.
    ShutdownOk(ShutdownOk),
    /// Any request-level failure.
    Error(ErrorReply),
    /// `wire-sync`: answer to `wire_start`.
    WireStarted(WireStarted),
    /// `wire-sync`: answer to `wire_project` (boxed: the largest reply).
    WireProjectOk(Box<WireProjectOk>),
    /// `wire-sync`: digests a push needs.
    WireNeed(WireNeed),
    /// `wire-sync`: blobs (bulk frames follow), answer to `wire_want`.
    WireBlobs(WireBlobs),
    /// `wire-sync`: the push is applied.
    WirePushOk(WirePushOk),
    /// `wire-sync`: the changes of a pull, bulk frames follow (boxed: a large reply).
    WireChanges(Box<WireChanges>),
    /// `wire-sync`: the pull is committed.
    WirePullOk(WirePullOk),
    /// Answer to `health`.
    HealthOk(HealthOk),
}

impl Reply {
    /// Every reply `op` this crate knows.
    pub const OPS: &'static [&'static str] = &[
        "handshake_ok",
        "session_ok",
        "sync_ok",
        "exec_output",
        "exec_result",
        "guest_fs_ok",
        "guest_fs_error",
        "shutdown_ok",
        "error",
        "wire_started",
        "wire_project_ok",
        "wire_need",
        "wire_blobs",
        "wire_push_ok",
        "wire_changes",
        "wire_pull_ok",
        "health_ok",
    ];

    /// The frame's `op`.
    #[must_use]
    pub fn op(&self) -> &'static str {
        match self {
            Self::HandshakeOk(_) => "handshake_ok",
            Self::SessionOk(_) => "session_ok",
            Self::SyncOk(_) => "sync_ok",
            Self::ExecOutput(_) => "exec_output",
            Self::ExecResult(_) => "exec_result",
            Self::GuestFsOk(_) => "guest_fs_ok",
            Self::GuestFsError(_) => "guest_fs_error",
            Self::ShutdownOk(_) => "shutdown_ok",
            Self::Error(_) => "error",
            Self::WireStarted(_) => "wire_started",
            Self::WireProjectOk(_) => "wire_project_ok",
            Self::WireNeed(_) => "wire_need",
            Self::WireBlobs(_) => "wire_blobs",
            Self::WirePushOk(_) => "wire_push_ok",
            Self::WireChanges(_) => "wire_changes",
            Self::WirePullOk(_) => "wire_pull_ok",
            Self::HealthOk(_) => "health_ok",
        }
    }

    /// An `error` frame.
    #[must_use]
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorReply {
            code,
            message: message.into(),
        })
    }

    /// A `guest_fs_error` frame (without the `guest-fs-v2` `path` field).
    #[must_use]
    pub fn guest_fs_error(code: GuestFsErrorCode, message: impl Into<String>) -> Self {
        Self::GuestFsError(GuestFsErrorReply {
            code,
            message: message.into(),
            path: None,
        })
    }
}

/// `handshake_ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeOk {
    /// Protocol version (1).
    #[serde(default = "default_version")]
    pub version: u32,
    /// Server name (`devshell-vm` for v1 sidecars, `devshell-vm-sidecar` for ours).
    #[serde(default)]
    pub server: String,
    /// Server version string.
    #[serde(default)]
    pub server_version: String,
    /// New: the capabilities the sidecar will use (only sent when the client asked for some).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

/// `session_ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOk {
    /// The session id from the request.
    #[serde(default)]
    pub session_id: String,
}

/// A manifest entry whose staging state does not match (`sync-verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMismatch {
    /// The manifest path.
    pub path: String,
    /// What was wrong: `missing`, `size`, `not_a_file`, `not_deleted` or `invalid_path`.
    pub problem: String,
    /// The manifest's size, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_size: Option<u64>,
    /// The size found in staging, when the path is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<u64>,
}

/// `sync_ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncOk {
    /// `sync-verify`: manifest entries that did not match staging (empty = all matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatches: Option<Vec<SyncMismatch>>,
}

/// Which output stream an `exec_output` chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The child's stdout.
    Stdout,
    /// The child's stderr.
    Stderr,
}

/// `exec_output` (`exec-stream`): a chunk of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// The bytes, standard base64.
    pub data_base64: String,
}

impl ExecOutput {
    /// The decoded bytes.
    ///
    /// # Errors
    /// [`ProtocolError::Base64`] when `data_base64` is not standard base64.
    pub fn data(&self) -> Result<Vec<u8>, ProtocolError> {
        decode_base64("data_base64", &self.data_base64)
    }
}

/// `exec_result`: exit code, and the signal number when killed by one (code = 128 + signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// Exit code (128 + signal for a signal death).
    pub exit_code: i32,
    /// Signal number, or `null` (always present on the wire, as in v1).
    #[serde(default)]
    pub signal: Option<i32>,
}

/// Kind of a guest path in a `stat` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestKindWire {
    /// A directory.
    Dir,
    /// A regular file (or anything that is neither a directory nor a symlink).
    File,
    /// A symbolic link (not followed).
    Symlink,
}

/// `guest-fs-v2` `stat` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStat {
    /// Directory, file or symlink.
    pub kind: GuestKindWire,
    /// Size in bytes (`lstat` size).
    pub size: u64,
    /// Permission bits (`& 0o7777`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Modification time in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_unix_ms: Option<i64>,
}

/// `guest_fs_ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFsOk {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// `list_dir`: sorted names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// `read_file`: the content, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// `guest-fs-v2` `stat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<GuestStat>,
    /// `guest-fs-v2` `exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
}

impl GuestFsOk {
    /// The decoded `content_base64` (`None` when absent).
    ///
    /// # Errors
    /// [`ProtocolError::Base64`] when the field is not standard base64.
    pub fn content(&self) -> Result<Option<Vec<u8>>, ProtocolError> {
        self.content_base64
            .as_deref()
            .map(|text| decode_base64("content_base64", text))
            .transpose()
    }
}

/// `guest_fs_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFsErrorReply {
    /// What failed (one meaning per code).
    pub code: GuestFsErrorCode,
    /// Human-readable detail naming the path.
    #[serde(default)]
    pub message: String,
    /// `guest-fs-v2`: the normalised guest path the error is about (for `rename`,
    /// `guest_path` or `to_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `shutdown_ok`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownOk {}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What failed.
    pub code: ErrorCode,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
}

// ---------------------------------------------------------------- functions

/// Standard base64 (with padding) of `bytes`.
#[must_use]
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64; `field` names the field in the error.
///
/// # Errors
/// [`ProtocolError::Base64`] when `text` is not standard base64.
pub fn decode_base64(field: &'static str, text: &str) -> Result<Vec<u8>, ProtocolError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|err| ProtocolError::Base64 {
            field,
            message: err.to_string(),
        })
}

/// Parses one request line (surrounding whitespace, including `\r`, is ignored).
///
/// # Errors
/// [`ProtocolError::Empty`], [`ProtocolError::Json`], [`ProtocolError::MissingOp`],
/// [`ProtocolError::UnknownOp`] or [`ProtocolError::InvalidFields`]; use
/// [`ProtocolError::error_code`] for the `error` frame's code.
pub fn parse_request(line: &str) -> Result<Request, ProtocolError> {
    // The bulky `wire-sync` requests (thousands of entries) are parsed straight into
    // their struct: the tagged enum would first buffer the whole object.
    match leading_op(line) {
        Some("wire_push") => {
            if let Ok(push) = serde_json::from_str(line.trim()) {
                return Ok(Request::WirePush(push));
            }
        }
        Some("wire_blobs") => {
            if let Ok(blobs) = serde_json::from_str(line.trim()) {
                return Ok(Request::WireBlobs(blobs));
            }
        }
        _ => {}
    }
    parse_tagged(line, Request::OPS)
}

/// The `op` of a line that starts with it (as every line our encoder writes does), read
/// without parsing the rest; `None` otherwise (the general parser then decides).
fn leading_op(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("{\"op\":\"")?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// Parses one reply line (surrounding whitespace is ignored).
///
/// # Errors
/// As [`parse_request`], for reply ops.
pub fn parse_reply(line: &str) -> Result<Reply, ProtocolError> {
    // As in `parse_request`: the bulky `wire-sync` replies skip the tagged enum's buffer.
    match leading_op(line) {
        Some("wire_need") => {
            if let Ok(need) = serde_json::from_str(line.trim()) {
                return Ok(Reply::WireNeed(need));
            }
        }
        Some("wire_changes") => {
            if let Ok(changes) = serde_json::from_str(line.trim()) {
                return Ok(Reply::WireChanges(Box::new(changes)));
            }
        }
        Some("wire_blobs") => {
            if let Ok(blobs) = serde_json::from_str(line.trim()) {
                return Ok(Reply::WireBlobs(blobs));
            }
        }
        _ => {}
    }
    parse_tagged(line, Reply::OPS)
}

fn parse_tagged<T: serde::de::DeserializeOwned>(
    line: &str,
    ops: &[&str],
) -> Result<T, ProtocolError> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return Err(ProtocolError::Empty);
    }
    // Fast path: the frame is well formed.
    let first_err = match serde_json::from_str::<T>(trimmed) {
        Ok(message) => return Ok(message),
        Err(err) => err,
    };
    // Classify the failure.
    let value: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|err| ProtocolError::Json {
            message: err.to_string(),
            prefix: prefix(trimmed),
        })?;
    let Some(object) = value.as_object() else {
        return Err(ProtocolError::Json {
            message: "not a JSON object".to_owned(),
            prefix: prefix(trimmed),
        });
    };
    let Some(op) = object.get("op").and_then(serde_json::Value::as_str) else {
        return Err(ProtocolError::MissingOp {
            prefix: prefix(trimmed),
        });
    };
    if !ops.contains(&op) {
        return Err(ProtocolError::UnknownOp { op: op.to_owned() });
    }
    Err(ProtocolError::InvalidFields {
        op: op.to_owned(),
        message: first_err.to_string(),
    })
}

/// One JSON line (without `\n`) for `request`.
///
/// # Panics
/// Never: every field serialises (maps have string keys).
#[must_use]
pub fn encode_request(request: &Request) -> String {
    serde_json::to_string(request).expect("request types serialise infallibly (string keys only)")
}

/// One JSON line (without `\n`) for `reply`.
///
/// # Panics
/// Never: every field serialises (maps have string keys).
#[must_use]
pub fn encode_reply(reply: &Reply) -> String {
    serde_json::to_string(reply).expect("reply types serialise infallibly (string keys only)")
}
