//! A sidecar that shares nothing with the client: its own mount namespace (`unshare` as
//! root) with a private tmpfs as its `--root`, reached over loopback TCP with a token.
//! Plus a TCP proxy between client and sidecar that can cut the connection, kill the
//! sidecar or flip a byte after a given number of bytes in one direction.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use devshell_vm_backend_beta::BetaSession;
use devshell_vm_config::VmConfig;
use devshell_vm_test_support::sidecar::sidecar_bin;

/// The token every test sidecar requires.
pub const TOKEN: &str = "wire-sync-test-token-3f9c";

/// Fails (never skips) when the test cannot build a private mount namespace.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests put the sidecar in its own mount namespace with a private tmpfs and need root (CI runs as root)"
    );
}

/// A sidecar in its own mount namespace whose `--root` is a private tmpfs mounted over
/// an empty directory: the client cannot see a single file of it.
pub struct RemoteSidecar {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub token_file: PathBuf,
    pub logs: Arc<Mutex<String>>,
    tmpfs_size: String,
    extra: Vec<String>,
}

impl RemoteSidecar {
    /// Starts one with a tmpfs of `tmpfs_size` (e.g. `512m`) and extra sidecar flags.
    pub fn start(tmpfs_size: &str, extra: &[&str]) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("wire-remote-")
            .tempdir()
            .expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
        // The sidecar refuses a token file others can read.
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod 600 token");
        std::fs::create_dir(dir.path().join("root")).expect("mkdir root");
        let mut sidecar = Self {
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            dir,
            token_file,
            logs: Arc::new(Mutex::new(String::new())),
            tmpfs_size: tmpfs_size.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        sidecar.spawn("127.0.0.1:0");
        sidecar
    }

    /// The mount point (empty from outside the sidecar's namespace).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn spawn(&mut self, listen: &str) {
        let script =
            r#"mount -t tmpfs -o "size=$1,mode=0700" wire-test "$2" && shift 2 && exec "$@""#;
        let mut command = Command::new("unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(&self.tmpfs_size)
            .arg(self.root())
            .arg(sidecar_bin())
            .args(["--serve-tcp", listen, "--root"])
            .arg(self.root())
            .arg("--token-file")
            .arg(&self.token_file)
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn unshare + sidecar");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let logs = Arc::clone(&self.logs);
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once("listening on tcp:").map(|(_, r)| r)
                    && let Some(sender) = tx.take()
                {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = sender.send(addr);
                }
                let mut logs = logs.lock().unwrap_or_else(PoisonError::into_inner);
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_mins(1)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("remote sidecar did not start; logs:\n{}", self.logs());
        };
        self.addr = addr.parse().expect("listening address");
        self.child = Some(child);
    }

    /// Kills the sidecar (SIGKILL): its namespace and tmpfs go with it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (a fresh, empty tmpfs: everything is lost).
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        self.spawn(&listen);
    }

    /// Process id of the `unshare` wrapper (the sidecar is exec'd into it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the sidecar logged so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for RemoteSidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A β config for `DEVSHELL_VM_SOCKET=tcp:ADDR` with the sidecar's token file.
pub fn config_for(addr: SocketAddr, token_file: &Path, extra: &[(&str, &str)]) -> VmConfig {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("DEVSHELL_VM_BACKEND".into(), "beta".into());
    env.insert("DEVSHELL_VM_SOCKET".into(), format!("tcp:{addr}"));
    env.insert(
        "DEVSHELL_VM_TOKEN_FILE".into(),
        token_file.to_str().expect("UTF-8").to_owned(),
    );
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    VmConfig::from_source(&env).expect("config parses")
}

/// A session on `addr` with a short I/O deadline (a fault shows in seconds).
pub fn session(addr: SocketAddr, token_file: &Path) -> BetaSession {
    let mut session = BetaSession::new(&config_for(addr, token_file, &[])).expect("session");
    session.set_io_timeout(Duration::from_secs(30));
    session
}

/// What the proxy does when a direction has carried its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close both sockets.
    Cut,
    /// Invert the next byte.
    Flip,
    /// Kill the process with this id (SIGKILL), then close.
    Kill(u32),
}

/// Direction of a proxied byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → sidecar.
    Up,
    /// Sidecar → client.
    Down,
}

/// A loopback TCP proxy in front of a sidecar; one fault can be armed at a time.
pub struct Proxy {
    pub addr: SocketAddr,
    armed: Arc<Mutex<Option<(Dir, u64, Fault)>>>,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
    pub fired: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let armed: Arc<Mutex<Option<(Dir, u64, Fault)>>> = Arc::new(Mutex::new(None));
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let fired = Arc::new(AtomicBool::new(false));
        let (a, u, d, f) = (
            Arc::clone(&armed),
            Arc::clone(&up),
            Arc::clone(&down),
            Arc::clone(&fired),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                for (dir, from, to, counter) in [
                    (Dir::Up, &client, &server, &u),
                    (Dir::Down, &server, &client, &d),
                ] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (armed, counter, fired) =
                        (Arc::clone(&a), Arc::clone(counter), Arc::clone(&f));
                    thread::spawn(move || pump(dir, from, to, &armed, &counter, &fired));
                }
            }
        });
        Self {
            addr,
            armed,
            up,
            down,
            fired,
        }
    }

    /// Arms `fault` for when `dir` has carried `after` more bytes (counted from now).
    pub fn arm(&self, dir: Dir, after: u64, fault: Fault) {
        let base = match dir {
            Dir::Up => self.up.load(Ordering::SeqCst),
            Dir::Down => self.down.load(Ordering::SeqCst),
        };
        self.fired.store(false, Ordering::SeqCst);
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((dir, base + after, fault));
    }

    /// Bytes carried so far `(up, down)`.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

fn pump(
    dir: Dir,
    mut from: TcpStream,
    mut to: TcpStream,
    armed: &Mutex<Option<(Dir, u64, Fault)>>,
    counter: &AtomicU64,
    fired: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let before = counter.load(Ordering::SeqCst);
        let mut chunk = &mut buf[..n];
        let trigger = {
            let mut guard = armed.lock().unwrap_or_else(PoisonError::into_inner);
            match *guard {
                Some((d, at, fault)) if d == dir && before + n as u64 > at => {
                    *guard = None;
                    Some((
                        usize::try_from(at.saturating_sub(before)).unwrap_or(0),
                        fault,
                    ))
                }
                _ => None,
            }
        };
        if let Some((offset, fault)) = trigger {
            fired.store(true, Ordering::SeqCst);
            match fault {
                Fault::Flip => chunk[offset] = !chunk[offset],
                Fault::Cut | Fault::Kill(_) => {
                    let _ = to.write_all(&chunk[..offset]);
                    if let Fault::Kill(pid) = fault
                        && let Ok(pid) = i32::try_from(pid)
                    {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        if to.write_all(chunk).is_err() {
            break;
        }
        chunk = &mut [];
        let _ = chunk;
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
