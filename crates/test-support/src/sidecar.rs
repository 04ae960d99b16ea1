//! Start a real `devshell-vm-sidecar` process for a test and wait until it accepts.
//!
//! Readiness is an event, not a sleep: the sidecar logs `listening on unix:PATH` or
//! `listening on tcp:ADDR` to stderr right after binding (for TCP it binds port 0
//! itself and logs the port it got, so there is no pick-a-port race). A reader
//! thread keeps draining stderr into [`SidecarProcess::logs`] so the sidecar never
//! blocks on a full pipe.
//!
//! ```no_run
//! use devshell_vm_test_support::sidecar::{SidecarProcess, sidecar_bin};
//! let staging = tempfile::tempdir().unwrap();
//! let sidecar = SidecarProcess::builder(sidecar_bin()).root(staging.path()).start_unix();
//! let stream = std::os::unix::net::UnixStream::connect(sidecar.socket_path().unwrap()).unwrap();
//! # drop(stream);
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// How long to wait for the sidecar to report that it listens (it normally takes
/// milliseconds; the bound only turns a hang into a clear failure).
const READY_LIMIT: Duration = Duration::from_mins(1);

/// The path of the sidecar binary, built if needed (for tests of other packages;
/// inside `devshell-vm-sidecar` prefer `env!("CARGO_BIN_EXE_devshell-vm-sidecar")`).
#[must_use]
pub fn sidecar_bin() -> PathBuf {
    crate::cargo_bin("devshell-vm-sidecar", "devshell-vm-sidecar")
}

/// Where a started sidecar listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidecarAddress {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (loopback in tests).
    Tcp(SocketAddr),
}

/// Options for starting a sidecar.
#[derive(Debug, Clone)]
pub struct SidecarBuilder {
    bin: PathBuf,
    roots: Vec<PathBuf>,
    token: Option<String>,
    insecure_no_auth: bool,
    max_frame_bytes: Option<usize>,
    env: Vec<(String, String)>,
    socket_dir_mode: u32,
    extra_args: Vec<String>,
}

impl SidecarBuilder {
    /// Adds a `--root` directory.
    #[must_use]
    pub fn root(mut self, dir: &Path) -> Self {
        self.roots.push(dir.to_owned());
        self
    }

    /// Requires `token` (written to a file passed as `--token-file`).
    #[must_use]
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Starts TCP with `--insecure-no-auth`.
    #[must_use]
    pub fn insecure_no_auth(mut self) -> Self {
        self.insecure_no_auth = true;
        self
    }

    /// Sets `--max-frame-bytes`.
    #[must_use]
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = Some(bytes);
        self
    }

    /// Sets an environment variable for the sidecar process only.
    #[must_use]
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Mode of the socket's directory (default 0700). The sidecar refuses to serve in a
    /// directory that is not 0700, so another mode makes [`Self::start_unix`] panic; a
    /// test that needs other uids to reach the socket opens the directory up after start.
    #[must_use]
    pub fn socket_dir_mode(mut self, mode: u32) -> Self {
        self.socket_dir_mode = mode;
        self
    }

    /// Appends raw arguments.
    #[must_use]
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts `--serve-socket` on a fresh socket in a temporary directory.
    ///
    /// # Panics
    /// When the sidecar cannot be started or does not report that it listens.
    #[must_use]
    pub fn start_unix(self) -> SidecarProcess {
        let dir = tempfile::Builder::new()
            .prefix("sidecar-sock-")
            .tempdir()
            .expect("create socket dir");
        std::fs::set_permissions(
            dir.path(),
            std::fs::Permissions::from_mode(self.socket_dir_mode),
        )
        .expect("chmod socket dir");
        let socket = dir.path().join("sidecar.sock");
        let args = vec!["--serve-socket".to_owned(), socket.display().to_string()];
        self.spawn(args, dir)
    }

    /// Starts `--serve-tcp 127.0.0.1:0` (the sidecar picks the port and logs it).
    ///
    /// # Panics
    /// When the sidecar cannot be started or does not report that it listens.
    #[must_use]
    pub fn start_tcp(self) -> SidecarProcess {
        let dir = tempfile::Builder::new()
            .prefix("sidecar-tcp-")
            .tempdir()
            .expect("create scratch dir");
        let args = vec!["--serve-tcp".to_owned(), "127.0.0.1:0".to_owned()];
        self.spawn(args, dir)
    }

    /// The command line and environment for `--serve-stdio` (the caller spawns it
    /// with piped stdin/stdout).
    #[must_use]
    pub fn stdio_command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--serve-stdio");
        self.common_args(&mut command, None);
        command
    }

    fn common_args(&self, command: &mut Command, token_file: Option<&Path>) {
        for root in &self.roots {
            command.arg("--root").arg(root);
        }
        if let Some(file) = token_file {
            command.arg("--token-file").arg(file);
        }
        if self.insecure_no_auth {
            command.arg("--insecure-no-auth");
        }
        if let Some(bytes) = self.max_frame_bytes {
            command.arg("--max-frame-bytes").arg(bytes.to_string());
        }
        command.args(&self.extra_args);
        for (name, value) in &self.env {
            command.env(name, value);
        }
    }

    fn spawn(self, mut args: Vec<String>, dir: tempfile::TempDir) -> SidecarProcess {
        let token_file = self.token.as_ref().map(|token| {
            let file = dir.path().join("token");
            std::fs::write(&file, format!("{token}\n")).expect("write token file");
            // The sidecar refuses a token file others can read.
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600 token file");
            file
        });
        let mut command = Command::new(&self.bin);
        command.args(args.drain(..));
        self.common_args(&mut command, token_file.as_deref());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Tied to the test process: a sidecar never outlives the test binary, even when
        // a handle is leaked or the binary is killed.
        let mut child = crate::lifeline::spawn_tied(command)
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.bin.display()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<SidecarAddress>();
        let log_sink = Arc::clone(&logs);
        thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = ready.as_ref()
                    && let Some(address) = parse_listening(&line)
                {
                    let _ = tx.send(address);
                    ready = None;
                }
                let mut logs = log_sink.lock().unwrap_or_else(PoisonError::into_inner);
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        if let Ok(address) = ready_rx.recv_timeout(READY_LIMIT) {
            SidecarProcess {
                child,
                address,
                logs,
                _dir: dir,
            }
        } else {
            let _ = child.kill();
            let status = child.wait();
            let text = logs.lock().unwrap_or_else(PoisonError::into_inner).clone();
            panic!("sidecar did not report a listening address ({status:?}); stderr:\n{text}");
        }
    }
}

fn parse_listening(line: &str) -> Option<SidecarAddress> {
    let rest = line.split_once("listening on ")?.1;
    if let Some(path) = rest.strip_prefix("unix:") {
        return Some(SidecarAddress::Unix(PathBuf::from(path.trim_end())));
    }
    let addr = rest.strip_prefix("tcp:")?;
    let addr = addr.split_whitespace().next()?;
    addr.parse().ok().map(SidecarAddress::Tcp)
}

/// A running sidecar; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct SidecarProcess {
    child: Child,
    address: SidecarAddress,
    logs: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl SidecarProcess {
    /// A builder for the binary at `bin`.
    #[must_use]
    pub fn builder(bin: impl Into<PathBuf>) -> SidecarBuilder {
        SidecarBuilder {
            bin: bin.into(),
            roots: Vec::new(),
            token: None,
            insecure_no_auth: false,
            max_frame_bytes: None,
            env: Vec::new(),
            socket_dir_mode: 0o700,
            extra_args: Vec::new(),
        }
    }

    /// Where it listens.
    #[must_use]
    pub fn address(&self) -> &SidecarAddress {
        &self.address
    }

    /// The socket path for a Unix sidecar.
    #[must_use]
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.address {
            SidecarAddress::Unix(path) => Some(path),
            SidecarAddress::Tcp(_) => None,
        }
    }

    /// The TCP address for a TCP sidecar.
    #[must_use]
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.address {
            SidecarAddress::Tcp(addr) => Some(*addr),
            SidecarAddress::Unix(_) => None,
        }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote to stderr so far.
    #[must_use]
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether it is still running.
    ///
    /// # Panics
    /// When the process status cannot be read.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends SIGTERM and waits for the exit.
    ///
    /// # Panics
    /// When `kill` cannot be run or waiting fails.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed: {status}");
        self.child.wait().expect("wait for the sidecar")
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        assert_eq!(
            parse_listening("devshell-vm-sidecar: listening on unix:/tmp/x/s.sock"),
            Some(SidecarAddress::Unix("/tmp/x/s.sock".into()))
        );
        assert_eq!(
            parse_listening(
                "devshell-vm-sidecar: listening on tcp:127.0.0.1:4100 (token required)"
            ),
            Some(SidecarAddress::Tcp("127.0.0.1:4100".parse().unwrap()))
        );
        assert_eq!(parse_listening("devshell-vm-sidecar: serving stdio"), None);
    }
}
