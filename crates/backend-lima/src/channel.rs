//! The long-lived channel: one `limactl shell` running `devshell-vm-sidecar --serve-stdio`
//! in the guest, spoken to with the β protocol (`devshell-vm-protocol` types and codec).
//!
//! A small client on purpose: handshake, `session_start`, `guest_fs` and `exec`. The β
//! backend's client is built for sockets and reconnects; this one owns a child process
//! and, when the child dies, the session falls back to one `limactl shell` per operation.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};

use devshell_vm_guest_fs::{GuestFsError, GuestKind, GuestMetadata};
use devshell_vm_protocol::{
    CAP_EXEC_STREAM, CAP_GUEST_FS_V2, ErrorReply, Exec, GuestFs, GuestFsOk, GuestFsOperation,
    GuestKindWire, Handshake, LineReader, OutputStream, PROTOCOL_VERSION, Reply, Request,
    SessionStart, encode_base64, parse_reply, write_frame,
};

/// A running sidecar in the guest and the conversation with it.
pub(crate) struct Channel {
    child: Child,
    stdin: ChildStdin,
    reader: LineReader<BufReader<ChildStdout>>,
    session_id: String,
    guest_fs_v2: bool,
    exec_stream: bool,
    stray_lines: usize,
}

/// At most this many lines of stray output (a guest login profile writing to stdout)
/// are skipped before the handshake reply; more is refused as a broken channel.
const MAX_STRAY_LINES: usize = 200;

/// How an `exec` over the channel ended.
pub(crate) struct ChannelExec {
    pub(crate) exit_code: i32,
    pub(crate) signal: Option<i32>,
}

impl Channel {
    /// Takes over a spawned `limactl shell … devshell-vm-sidecar --serve-stdio` child
    /// (stdin and stdout piped), handshakes and starts a session rooted at `mount`.
    pub(crate) fn open(mut child: Child, mount: &str) -> Result<Self, String> {
        let stdin = child.stdin.take().ok_or("sidecar stdin is not piped")?;
        let stdout = child.stdout.take().ok_or("sidecar stdout is not piped")?;
        let mut channel = Self {
            child,
            stdin,
            reader: LineReader::new(BufReader::new(stdout)),
            session_id: format!("lima-{}", std::process::id()),
            guest_fs_v2: false,
            exec_stream: false,
            stray_lines: 0,
        };
        match channel.start(mount) {
            Ok(()) => Ok(channel),
            Err(message) => {
                channel.kill();
                Err(message)
            }
        }
    }

    fn start(&mut self, mount: &str) -> Result<(), String> {
        let handshake = Request::Handshake(Handshake {
            version: PROTOCOL_VERSION,
            client: "devshell-vm-backend-lima".to_owned(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Some(vec![CAP_GUEST_FS_V2.to_owned(), CAP_EXEC_STREAM.to_owned()]),
            token: None,
        });
        write_frame(&mut self.stdin, &handshake).map_err(|e| format!("sending handshake: {e}"))?;
        // `limactl shell` runs `$SHELL --login`: whatever the guest's login profile
        // prints to stdout arrives before the sidecar's first frame. The first frame is
        // the one line that parses as a reply; the lines before it are counted and
        // skipped (a bounded number), never taken for replies.
        let reply = loop {
            let line = match self.reader.read_line() {
                Ok(Some(line)) => line,
                Ok(None) if self.stray_lines > 0 => {
                    return Err(format!(
                        "the sidecar closed the channel after {} line(s) of other output (a login profile printing to stdout?)",
                        self.stray_lines
                    ));
                }
                Ok(None) => return Err("the sidecar closed the channel".to_owned()),
                Err(e) => return Err(format!("reading the handshake reply: {e}")),
            };
            match parse_reply(&line) {
                Ok(reply @ (Reply::HandshakeOk(_) | Reply::Error(_))) => break reply,
                _ if self.stray_lines < MAX_STRAY_LINES => self.stray_lines += 1,
                _ => {
                    return Err(format!(
                        "more than {MAX_STRAY_LINES} lines of output that are not the sidecar's before its handshake reply (last: {line:?}); silence the guest's login profile on stdout"
                    ));
                }
            }
        };
        let Reply::HandshakeOk(ok) = reply else {
            return Err(format!("handshake answered with {}", describe(&reply)));
        };
        let caps = ok.capabilities.unwrap_or_default();
        self.guest_fs_v2 = caps.iter().any(|c| c == CAP_GUEST_FS_V2);
        self.exec_stream = caps.iter().any(|c| c == CAP_EXEC_STREAM);
        let reply = self.call(&Request::SessionStart(SessionStart {
            session_id: self.session_id.clone(),
            staging_dir: mount.to_owned(),
            guest_workspace: mount.to_owned(),
            backend: "lima".to_owned(),
            backend_config: serde_json::Value::Object(serde_json::Map::new()),
        }))?;
        match reply {
            Reply::SessionOk(_) => Ok(()),
            other => Err(format!("session_start answered with {}", describe(&other))),
        }
    }

    /// Lines of stray output skipped before the handshake reply.
    pub(crate) fn stray_lines(&self) -> usize {
        self.stray_lines
    }

    /// `true` when the sidecar offers `stat`, `exists` and `rename`.
    pub(crate) fn has_guest_fs_v2(&self) -> bool {
        self.guest_fs_v2
    }

    /// Sends one request and reads one reply.
    fn call(&mut self, request: &Request) -> Result<Reply, String> {
        write_frame(&mut self.stdin, request)
            .map_err(|e| format!("sending {}: {e}", request.op()))?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> Result<Reply, String> {
        match self.reader.read_line() {
            Ok(Some(line)) => parse_reply(&line).map_err(|e| format!("bad reply {line:?}: {e}")),
            Ok(None) => Err("the sidecar closed the channel".to_owned()),
            Err(e) => Err(format!("reading a reply: {e}")),
        }
    }

    /// One `guest_fs` operation; `Err(Ok(e))` is the operation's error, `Err(Err(m))` a
    /// broken channel.
    pub(crate) fn guest_fs(
        &mut self,
        operation: GuestFsOperation,
        path: &str,
        content: Option<&[u8]>,
        to_path: Option<&str>,
    ) -> Result<GuestFsOk, Result<GuestFsError, String>> {
        let request = Request::GuestFs(GuestFs {
            session_id: self.session_id.clone(),
            operation,
            guest_path: path.to_owned(),
            content_base64: content.map(encode_base64),
            to_path: to_path.map(str::to_owned),
        });
        match self.call(&request).map_err(Err)? {
            Reply::GuestFsOk(ok) => Ok(ok),
            Reply::GuestFsError(err) => {
                // The sidecar prefixes its message with the guest path it is about
                // (`<path>: detail`), which tells a rename's source from its target.
                let error_path = match to_path {
                    Some(to) if err.message.starts_with(&format!("{to}:")) => to,
                    _ => path,
                };
                Err(Ok(GuestFsError::from_wire(
                    err.code.as_str(),
                    error_path,
                    &err.message,
                )))
            }
            Reply::Error(err) => Err(Ok(GuestFsError::Internal {
                message: format!("sidecar error {}: {}", err.code, err.message),
            })),
            other => Err(Err(format!("guest_fs answered with {}", describe(&other)))),
        }
    }

    /// Runs `argv` in `guest_cwd`; output chunks (with `exec-stream`) go to `on_output`
    /// in order. `Ok(Err(reply))` is the sidecar refusing or failing the exec (the channel
    /// is fine); `Err(message)` a broken channel.
    pub(crate) fn exec(
        &mut self,
        guest_cwd: &str,
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        timeout_ms: Option<u64>,
        on_output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<Result<ChannelExec, ErrorReply>, String> {
        let request = Request::Exec(Exec {
            session_id: self.session_id.clone(),
            guest_cwd: Some(guest_cwd.to_owned()),
            argv,
            env,
            timeout_ms,
        });
        write_frame(&mut self.stdin, &request).map_err(|e| format!("sending exec: {e}"))?;
        loop {
            match self.read_reply()? {
                Reply::ExecOutput(chunk) => {
                    let data = chunk.data().map_err(|e| format!("bad exec_output: {e}"))?;
                    on_output(chunk.stream, &data);
                }
                Reply::ExecResult(result) => {
                    return Ok(Ok(ChannelExec {
                        exit_code: result.exit_code,
                        signal: result.signal,
                    }));
                }
                Reply::Error(err) => return Ok(Err(err)),
                other => return Err(format!("exec answered with {}", describe(&other))),
            }
        }
    }

    /// `true` while the sidecar process is alive.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends the conversation: closes stdin (the sidecar exits at end of input) and reaps
    /// the child, killing it if it does not exit.
    pub(crate) fn close(mut self) {
        let _ = self.stdin.flush();
        drop(self.stdin);
        for _ in 0..50 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `exec-stream` was negotiated (without it the sidecar's exec output is lost).
    pub(crate) fn streams_exec_output(&self) -> bool {
        self.exec_stream
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("pid", &self.child.id())
            .field("session_id", &self.session_id)
            .field("guest_fs_v2", &self.guest_fs_v2)
            .field("exec_stream", &self.exec_stream)
            .finish_non_exhaustive()
    }
}

/// Metadata from a `stat` reply.
pub(crate) fn metadata_from(ok: &GuestFsOk, path: &str) -> Result<GuestMetadata, GuestFsError> {
    let stat = ok.stat.as_ref().ok_or_else(|| GuestFsError::Internal {
        message: format!("stat of {path:?}: the sidecar sent no stat field"),
    })?;
    let kind = match stat.kind {
        GuestKindWire::Dir => GuestKind::Dir,
        GuestKindWire::File => GuestKind::File,
        GuestKindWire::Symlink => GuestKind::Symlink,
        #[allow(unreachable_patterns, reason = "the wire kind may grow")]
        _ => {
            return Err(GuestFsError::Internal {
                message: format!("stat of {path:?}: unknown kind"),
            });
        }
    };
    Ok(GuestMetadata {
        kind,
        size: stat.size,
    })
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Error(err) => format!("error {}: {}", err.code, err.message),
        other => format!("unexpected {}", other.op()),
    }
}
