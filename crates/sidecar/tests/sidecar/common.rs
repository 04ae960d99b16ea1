//! A raw line client for the sidecar and small helpers shared by the test modules.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devshell_vm_test_support::sidecar::{SidecarBuilder, SidecarProcess};
use serde_json::{Value, json};

/// The sidecar binary built for this test run.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_devshell-vm-sidecar"))
}

/// A builder rooted at `root`.
pub(crate) fn builder(root: &Path) -> SidecarBuilder {
    SidecarProcess::builder(bin()).root(root)
}

/// A bound on reads so a hung sidecar fails the test instead of hanging it.
const READ_LIMIT: Duration = Duration::from_mins(1);

/// One client connection speaking raw JSON lines.
pub(crate) struct Client {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
    child: Option<Child>,
}

impl Client {
    pub(crate) fn unix(path: &Path) -> Self {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        Self {
            reader: BufReader::new(Box::new(stream)),
            writer: Box::new(writer),
            child: None,
        }
    }

    pub(crate) fn tcp(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_LIMIT)).unwrap();
        let writer = stream.try_clone().unwrap();
        Self {
            reader: BufReader::new(Box::new(stream)),
            writer: Box::new(writer),
            child: None,
        }
    }

    pub(crate) fn of(sidecar: &SidecarProcess) -> Self {
        match (sidecar.socket_path(), sidecar.tcp_addr()) {
            (Some(path), _) => Self::unix(path),
            (None, Some(addr)) => Self::tcp(addr),
            (None, None) => unreachable!("a sidecar listens somewhere"),
        }
    }

    /// Spawns `command` (a `--serve-stdio` sidecar) and talks over its pipes.
    pub(crate) fn stdio(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stdio sidecar");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Drain the log so the sidecar never blocks on a full stderr pipe.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Self {
            reader: BufReader::new(Box::new(stdout)),
            writer: Box::new(stdin),
            child: Some(child),
        }
    }

    /// The stdio child, if any.
    pub(crate) fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Closes both pipes and hands back the stdio child without killing it.
    pub(crate) fn detach(mut self) -> Child {
        self.child.take().expect("a stdio client")
    }

    /// Closes the writing side (stdio: the sidecar's stdin).
    pub(crate) fn close_input(&mut self) {
        self.writer = Box::new(std::io::sink());
    }

    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send to sidecar");
        self.writer.flush().expect("flush to sidecar");
    }

    pub(crate) fn send(&mut self, frame: &Value) {
        let mut line = serde_json::to_vec(frame).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next reply line, parsed; `None` at end of stream.
    pub(crate) fn try_recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read reply");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "reply line without newline: {line:?}");
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {line:?}")),
        )
    }

    pub(crate) fn recv(&mut self) -> Value {
        self.try_recv().expect("the sidecar closed the connection")
    }

    pub(crate) fn call(&mut self, frame: &Value) -> Value {
        self.send(frame);
        self.recv()
    }

    pub(crate) fn handshake(
        &mut self,
        capabilities: Option<&[&str]>,
        token: Option<&str>,
    ) -> Value {
        let mut frame =
            json!({"op":"handshake","version":1,"client":"sidecar-tests","client_version":"0"});
        if let Some(caps) = capabilities {
            frame["capabilities"] = json!(caps);
        }
        if let Some(token) = token {
            frame["token"] = json!(token);
        }
        self.call(&frame)
    }

    pub(crate) fn session(&mut self, staging: &Path) -> Value {
        self.call(&json!({
            "op":"session_start","session_id":"pid-1","staging_dir": staging.to_str().unwrap(),
            "guest_workspace":"/workspace","backend":"beta-stub","backend_config":{}
        }))
    }

    /// Handshake with every capability + session on `staging`, asserting success.
    pub(crate) fn ready(&mut self, staging: &Path) {
        let hs = self.handshake(Some(&["exec-stream", "guest-fs-v2", "sync-verify"]), None);
        assert_eq!(hs["op"], "handshake_ok", "{hs}");
        let s = self.session(staging);
        assert_eq!(s["op"], "session_ok", "{s}");
    }

    /// Sends `exec` and collects (`exec_output` frames, final frame).
    pub(crate) fn exec(&mut self, argv: &[&str], extra: &Value) -> (Vec<Value>, Value) {
        let mut frame =
            json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace","argv":argv,"env":{}});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                frame[k] = v.clone();
            }
        }
        self.send(&frame);
        let mut outputs = Vec::new();
        loop {
            let reply = self.recv();
            if reply["op"] == "exec_output" {
                outputs.push(reply);
            } else {
                return (outputs, reply);
            }
        }
    }

    pub(crate) fn fs(&mut self, operation: &str, path: &str, extra: &Value) -> Value {
        let mut frame =
            json!({"op":"guest_fs","session_id":"pid-1","operation":operation,"guest_path":path});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                frame[k] = v.clone();
            }
        }
        self.call(&frame)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Concatenated decoded data of the `exec_output` frames of one stream.
pub(crate) fn stream_text(outputs: &[Value], stream: &str) -> String {
    let mut bytes = Vec::new();
    for frame in outputs.iter().filter(|f| f["stream"] == stream) {
        bytes.extend(
            devshell_vm_protocol::decode_base64(
                "data_base64",
                frame["data_base64"].as_str().unwrap(),
            )
            .unwrap(),
        );
    }
    String::from_utf8(bytes).unwrap()
}

/// Asserts `reply` is `{"op": op, "code": code}` and returns its message.
#[track_caller]
pub(crate) fn assert_error(reply: &Value, op: &str, code: &str) -> String {
    assert_eq!(reply["op"], op, "expected {op}/{code}, got {reply}");
    assert_eq!(reply["code"], code, "expected {op}/{code}, got {reply}");
    reply["message"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `condition` holds, failing with `what` after `limit` (polling, not a fixed sleep).
#[track_caller]
pub(crate) fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process `pid` is alive (a zombie counts as dead).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z' | 'X'))
        }
    }
}

/// A staging root with a fresh staging dir inside.
pub(crate) struct Staging {
    pub(crate) root: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

pub(crate) fn staging() -> Staging {
    let root = tempfile::Builder::new()
        .prefix("sidecar-root-")
        .tempdir()
        .unwrap();
    let dir = std::fs::canonicalize(root.path()).unwrap().join("staging");
    std::fs::create_dir(&dir).unwrap();
    Staging { root, dir }
}
