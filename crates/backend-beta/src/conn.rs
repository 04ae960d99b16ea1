//! One connection to a sidecar: connect, handshake (version, capabilities, token),
//! `session_start`, strict request → reply exchanges, and the `exec` reply loop with
//! `exec_output` frames.
//!
//! Every failure of the byte stream is turned into a connection-failure
//! [`BetaError`] (see [`BetaError::is_connection_failure`]); the owner then drops the
//! connection, so a broken stream is never reused.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use devshell_vm_config::Transport;
use devshell_vm_exec::CancelHandle;
use devshell_vm_protocol::{
    BlobRef, CAP_EXEC_STREAM, CAP_GUEST_FS_V2, CAP_SYNC_VERIFY, CAP_WIRE_SYNC,
    CAP_WIRE_SYNC_STREAM, DEFAULT_MAX_FRAME_BYTES, ErrorReply, Exec, ExecResult, Handshake,
    KNOWN_CAPABILITIES, LineReader, OutputStream, PROTOCOL_VERSION, ProtocolError, Reply, Request,
    SessionStart, encode_request, parse_reply,
};

use crate::BetaError;
use crate::transport::{CANCELLED_MESSAGE, Channel, SidecarChild, TimedReader, TimedWriter};

/// Client name sent in `handshake`.
pub(crate) const CLIENT_NAME: &str = "devshell-vm-backend-beta";

/// How to reach a sidecar and how long to wait for it (`Debug` never shows the token).
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The configured transport.
    pub(crate) transport: Transport,
    /// For [`Transport::Stdio`]: the resolved sidecar binary.
    pub(crate) sidecar: Option<PathBuf>,
    /// The token sent in `handshake`, if configured.
    pub(crate) token: Option<String>,
    /// Connect deadline.
    pub(crate) connect_timeout: Duration,
    /// Deadline for every reply except `exec`.
    pub(crate) io_timeout: Duration,
    /// Whether to ask for `wire-sync` (Mode S without `DEVSHELL_VM_BETA_SYNC=shared`).
    pub(crate) want_wire: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("transport", &self.transport)
            .field("sidecar", &self.sidecar)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("want_wire", &self.want_wire)
            .finish()
    }
}

/// Capabilities both sides agreed on in the handshake.
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per negotiated capability, as the protocol lists them"
)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `exec-stream`: output comes back as `exec_output` frames.
    pub exec_stream: bool,
    /// `guest-fs-v2`: native `stat`, `exists`, `rename`.
    pub guest_fs_v2: bool,
    /// `sync-verify`: `sync_ok` reports manifest mismatches.
    pub sync_verify: bool,
    /// `wire-sync`: Mode S over the connection, without a shared directory.
    pub wire_sync: bool,
    /// `wire-sync-stream`: a full push into an empty copy sends its blobs at once.
    pub wire_sync_stream: bool,
}

/// How an `exec` exchange ended.
#[derive(Debug)]
pub(crate) enum ExecEnd {
    /// `exec_result`.
    Result(ExecResult),
    /// An `error` frame (`exec_timeout`, `exec_spawn`, ...).
    Error(ErrorReply),
    /// The cancel handle fired; the connection must be dropped (the sidecar then kills
    /// the process group).
    Cancelled,
}

/// An open, handshaken connection.
#[derive(Debug)]
pub(crate) struct Connection {
    // Field order is drop order: close our ends before stopping a spawned sidecar.
    lines: LineReader<TimedReader>,
    writer: TimedWriter,
    child: Option<SidecarChild>,
    transport: String,
    io_timeout: Duration,
    /// Agreed capabilities.
    pub(crate) caps: Capabilities,
    /// `true` when the session was started with `wire_start` (wire-sync).
    pub(crate) wire: bool,
    /// Server name and version from `handshake_ok`.
    pub(crate) server: (String, String),
    /// The session id once `session_start` succeeded.
    pub(crate) session_id: Option<String>,
}

impl Connection {
    /// Connects (spawning the sidecar for stdio, rooted at `stdio_root`) and handshakes.
    pub(crate) fn open(
        endpoint: &Endpoint,
        stdio_root: &std::path::Path,
    ) -> Result<Self, BetaError> {
        let transport = endpoint.transport.to_string();
        let connect_err = |source| BetaError::Connect {
            transport: transport.clone(),
            source,
        };
        let channel = match &endpoint.transport {
            Transport::Unix(path) => {
                Channel::unix(path, endpoint.connect_timeout).map_err(connect_err)?
            }
            Transport::Tcp { host, port } => {
                Channel::tcp(host, *port, endpoint.connect_timeout).map_err(connect_err)?
            }
            Transport::Stdio => {
                let program = endpoint.sidecar.clone().expect(
                    "a stdio endpoint always carries the resolved sidecar (set in BetaSession::new)",
                );
                Channel::stdio(&program, stdio_root)
                    .map_err(|source| BetaError::SidecarSpawn { program, source })?
            }
        };
        let Channel {
            reader,
            writer,
            child,
        } = channel;
        let mut conn = Self {
            lines: LineReader::with_max_frame_bytes(reader, DEFAULT_MAX_FRAME_BYTES),
            writer,
            child,
            transport,
            io_timeout: endpoint.io_timeout,
            caps: Capabilities::default(),
            wire: false,
            server: (String::new(), String::new()),
            session_id: None,
        };
        conn.handshake(endpoint.token.clone(), endpoint.want_wire)?;
        Ok(conn)
    }

    /// Sets the deadline for replies other than `exec`.
    pub(crate) fn set_io_timeout(&mut self, timeout: Duration) {
        self.io_timeout = timeout;
    }

    /// The transport as configured (for messages).
    pub(crate) fn transport(&self) -> &str {
        &self.transport
    }

    /// Process id of the spawned sidecar (stdio transport).
    pub(crate) fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(SidecarChild::id)
    }

    fn handshake(&mut self, token: Option<String>, want_wire: bool) -> Result<(), BetaError> {
        let capabilities = KNOWN_CAPABILITIES
            .iter()
            .filter(|c| want_wire || (**c != CAP_WIRE_SYNC && **c != CAP_WIRE_SYNC_STREAM))
            .map(|c| (*c).to_owned())
            .collect();
        let request = Request::Handshake(Handshake {
            version: PROTOCOL_VERSION,
            client: CLIENT_NAME.to_owned(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Some(capabilities),
            token,
        });
        match self.request(&request)? {
            Reply::HandshakeOk(ok) => {
                if ok.version != PROTOCOL_VERSION {
                    return Err(BetaError::VersionMismatch {
                        transport: self.transport.clone(),
                        version: ok.version,
                        supported: PROTOCOL_VERSION,
                    });
                }
                // Only what we asked for counts; a v1 sidecar sends no list at all.
                let agreed = ok.capabilities.unwrap_or_default();
                let has = |cap: &str| agreed.iter().any(|c| c == cap);
                self.caps = Capabilities {
                    exec_stream: has(CAP_EXEC_STREAM),
                    guest_fs_v2: has(CAP_GUEST_FS_V2),
                    sync_verify: has(CAP_SYNC_VERIFY),
                    wire_sync: has(CAP_WIRE_SYNC),
                    wire_sync_stream: has(CAP_WIRE_SYNC) && has(CAP_WIRE_SYNC_STREAM),
                };
                self.server = (ok.server, ok.server_version);
                Ok(())
            }
            Reply::Error(err) => Err(BetaError::Remote {
                during: "handshake".to_owned(),
                code: err.code.to_string(),
                message: err.message,
            }),
            other => Err(self.unexpected("handshake", &other)),
        }
    }

    /// Sends `session_start` and remembers the session id.
    pub(crate) fn start_session(&mut self, start: SessionStart) -> Result<(), BetaError> {
        let session_id = start.session_id.clone();
        match self.request(&Request::SessionStart(start))? {
            Reply::SessionOk(_) => {
                self.session_id = Some(session_id);
                Ok(())
            }
            Reply::Error(err) => Err(BetaError::Remote {
                during: "session_start".to_owned(),
                code: err.code.to_string(),
                message: err.message,
            }),
            other => Err(self.unexpected("session_start", &other)),
        }
    }

    /// Bytes `(sent, received)` on this connection so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.writer.count, self.lines.get_ref().count)
    }

    /// Sends `request` followed by `blobs` as bulk frames (`wire-sync`). The write
    /// deadline restarts for every blob, so a large batch is bounded by progress, not by
    /// one fixed time.
    pub(crate) fn send_with_blobs(
        &mut self,
        request: &Request,
        blobs: &[&[u8]],
    ) -> Result<(), BetaError> {
        self.send_line_with_blobs(request.op(), encode_request(request), blobs)
    }

    /// [`Self::send_with_blobs`] for a request already encoded as `line` (no newline):
    /// the line and the frames go out through one buffer.
    pub(crate) fn send_line_with_blobs(
        &mut self,
        during: &str,
        line: String,
        blobs: &[&[u8]],
    ) -> Result<(), BetaError> {
        if line.len() > DEFAULT_MAX_FRAME_BYTES {
            return Err(BetaError::FrameTooLarge {
                during: during.to_owned(),
                len: line.len(),
                limit: DEFAULT_MAX_FRAME_BYTES,
            });
        }
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.writer.deadline = Some(Instant::now() + self.io_timeout);
        let mut batch = std::io::BufWriter::with_capacity(256 * 1024, &mut self.writer);
        let mut result = batch.write_all(&bytes).map_err(|source| ProtocolError::Io {
            context: "writing a frame",
            source,
        });
        for blob in blobs {
            if result.is_err() {
                break;
            }
            batch.get_mut().deadline = Some(Instant::now() + self.io_timeout);
            result = devshell_vm_protocol::write_blob(&mut batch, blob);
        }
        let flushed = result.and_then(|()| {
            batch.flush().map_err(|source| ProtocolError::Io {
                context: "writing a bulk frame",
                source,
            })
        });
        drop(batch);
        flushed.map_err(|err| self.stream_error(during, err, self.io_timeout))
    }

    /// Reads the next reply of a `wire-sync` exchange (within the I/O deadline).
    pub(crate) fn read_wire_reply(&mut self, during: &str) -> Result<Reply, BetaError> {
        let deadline = Some(Instant::now() + self.io_timeout);
        self.read_reply(during, deadline, self.io_timeout)
    }

    /// Reads one announced blob (verifying length and digest); the deadline restarts
    /// for every blob.
    pub(crate) fn read_blob(
        &mut self,
        during: &str,
        blob: &BlobRef,
        max_size: u64,
    ) -> Result<std::sync::Arc<[u8]>, BetaError> {
        self.lines.get_mut().deadline = Some(Instant::now() + self.io_timeout);
        self.lines
            .read_blob_shared_unverified(blob, max_size)
            .and_then(|data| devshell_vm_protocol::verify_blob(blob, &data).map(|()| data))
            .map_err(|err| self.stream_error(during, err, self.io_timeout))
    }

    /// Reads the announced `blobs` in order and verifies them on a second thread while
    /// the next ones arrive (hashing a large pull — cargo's rlibs — would otherwise
    /// stall the socket). Returns the contents by digest.
    pub(crate) fn read_blobs(
        &mut self,
        during: &str,
        blobs: &[BlobRef],
        max_size: u64,
    ) -> Result<std::collections::HashMap<String, std::sync::Arc<[u8]>>, BetaError> {
        if blobs.len() < 2 {
            let mut found = std::collections::HashMap::new();
            for blob in blobs {
                found.insert(blob.digest.clone(), self.read_blob(during, blob, max_size)?);
            }
            return Ok(found);
        }
        let timeout = self.io_timeout;
        let mut found = std::collections::HashMap::with_capacity(blobs.len());
        let read = devshell_vm_protocol::read_blobs_hashed(
            &mut self.lines,
            blobs,
            max_size,
            false,
            |lines| lines.get_mut().deadline = Some(Instant::now() + timeout),
            |batch| {
                for (index, data, _) in batch {
                    found.insert(blobs[index].digest.clone(), data);
                }
            },
        );
        match read {
            Ok(()) => Ok(found),
            Err(err) => Err(self.stream_error(during, err, timeout)),
        }
    }

    /// A [`BetaError::Protocol`] for a reply that does not answer `during`.
    pub(crate) fn unexpected(&self, during: &str, reply: &Reply) -> BetaError {
        BetaError::Protocol {
            transport: self.transport.clone(),
            during: during.to_owned(),
            message: format!("unexpected reply `{}`", reply.op()),
        }
    }

    /// Sends one request and reads its one reply (within the I/O deadline).
    pub(crate) fn request(&mut self, request: &Request) -> Result<Reply, BetaError> {
        let during = request.op();
        self.send(request)?;
        let deadline = Some(Instant::now() + self.io_timeout);
        self.read_reply(during, deadline, self.io_timeout)
    }

    fn send(&mut self, request: &Request) -> Result<(), BetaError> {
        let during = request.op();
        let line = encode_request(request);
        if line.len() > DEFAULT_MAX_FRAME_BYTES {
            return Err(BetaError::FrameTooLarge {
                during: during.to_owned(),
                len: line.len(),
                limit: DEFAULT_MAX_FRAME_BYTES,
            });
        }
        self.writer.deadline = Some(Instant::now() + self.io_timeout);
        // One buffer, one write: no second copy of a large frame.
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        self.writer.write_all(&bytes).map_err(|source| {
            self.stream_error(
                during,
                ProtocolError::Io {
                    context: "writing a frame",
                    source,
                },
                self.io_timeout,
            )
        })
    }

    fn read_reply(
        &mut self,
        during: &str,
        deadline: Option<Instant>,
        budget: Duration,
    ) -> Result<Reply, BetaError> {
        self.lines.get_mut().deadline = deadline;
        let line = match self.lines.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(BetaError::ConnectionLost {
                    transport: self.transport.clone(),
                    during: during.to_owned(),
                    reason: "the sidecar closed the connection".to_owned(),
                });
            }
            Err(err) => return Err(self.stream_error(during, err, budget)),
        };
        parse_reply(&line).map_err(|err| BetaError::Protocol {
            transport: self.transport.clone(),
            during: during.to_owned(),
            message: format!("unreadable reply: {err}"),
        })
    }

    /// Maps a codec failure to the connection-failure error it means.
    fn stream_error(&self, during: &str, err: ProtocolError, budget: Duration) -> BetaError {
        match err {
            ProtocolError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut => {
                BetaError::Timeout {
                    transport: self.transport.clone(),
                    during: during.to_owned(),
                    after: budget,
                }
            }
            ProtocolError::Io { source, .. } => BetaError::ConnectionLost {
                transport: self.transport.clone(),
                during: during.to_owned(),
                reason: source.to_string(),
            },
            other => BetaError::Protocol {
                transport: self.transport.clone(),
                during: during.to_owned(),
                message: other.to_string(),
            },
        }
    }

    /// Runs one `exec`: sends it, hands `exec_output` chunks to `on_output` in order,
    /// and returns the final frame. `budget` bounds the whole exchange (`None`: no
    /// deadline, for tools without a timeout); `cancel` stops waiting when it fires.
    pub(crate) fn exec(
        &mut self,
        exec: Exec,
        budget: Option<Duration>,
        cancel: Option<&CancelHandle>,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<ExecEnd, BetaError> {
        self.send(&Request::Exec(exec))?;
        let deadline = budget.map(|b| Instant::now() + b);
        self.lines.get_mut().cancel = cancel.cloned();
        let result = self.exec_loop(deadline, budget.unwrap_or_default(), on_output);
        self.lines.get_mut().cancel = None;
        result
    }

    fn exec_loop(
        &mut self,
        deadline: Option<Instant>,
        budget: Duration,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<ExecEnd, BetaError> {
        loop {
            let reply = match self.read_reply("exec", deadline, budget) {
                Ok(reply) => reply,
                Err(BetaError::ConnectionLost { reason, .. }) if reason == CANCELLED_MESSAGE => {
                    return Ok(ExecEnd::Cancelled);
                }
                Err(err) => return Err(err),
            };
            match reply {
                Reply::ExecOutput(chunk) => {
                    let data = chunk.data().map_err(|err| BetaError::Protocol {
                        transport: self.transport.clone(),
                        during: "exec".to_owned(),
                        message: format!("bad exec_output frame: {err}"),
                    })?;
                    on_output(chunk.stream, &data);
                }
                Reply::ExecResult(result) => return Ok(ExecEnd::Result(result)),
                Reply::Error(err) => return Ok(ExecEnd::Error(err)),
                other => return Err(self.unexpected("exec", &other)),
            }
        }
    }
}
