//! Test helpers: a real `devshell-vm-sidecar` process on a Unix socket or TCP, configs
//! built from maps, and a tiny crate for `cargo build`.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use devshell_vm_config::VmConfig;
use devshell_vm_vfs::Vfs;

pub use devshell_vm_test_support::sidecar::{SidecarProcess, sidecar_bin};

/// A sidecar on a fresh Unix socket (shared test-support helper), confined to `root`,
/// and its socket path as `DEVSHELL_VM_SOCKET` text.
pub fn unix_sidecar(root: &Path) -> (SidecarProcess, String) {
    let sidecar = SidecarProcess::builder(sidecar_bin())
        .root(root)
        .start_unix();
    let socket = sidecar
        .socket_path()
        .expect("unix sidecar has a socket")
        .to_str()
        .expect("UTF-8 socket path")
        .to_owned();
    (sidecar, socket)
}

/// A sidecar on loopback TCP requiring `token`, confined to `root`, and its address as
/// `DEVSHELL_VM_SOCKET` text.
pub fn tcp_sidecar(root: &Path, token: &str) -> (SidecarProcess, String) {
    let sidecar = SidecarProcess::builder(sidecar_bin())
        .root(root)
        .token(token)
        .start_tcp();
    let addr = sidecar.tcp_addr().expect("tcp sidecar has an address");
    (sidecar, format!("tcp://{addr}"))
}

/// A sidecar on a Unix socket path chosen by the test, so it can be killed and started
/// again on the same path (the shared helper picks a fresh path each time). Stopped
/// (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Sidecar {
    child: Option<Child>,
    /// The Unix socket path, for `--serve-socket`.
    pub socket: Option<PathBuf>,
}

impl Sidecar {
    /// Starts `devshell-vm-sidecar <listen args> --root <root> <extra>` and waits for its
    /// "listening on" line (returned).
    fn start(listen: &[&str], root: &Path, extra: &[&str]) -> (Self, String) {
        let mut child = Command::new(sidecar_bin())
            .args(listen)
            .arg("--root")
            .arg(root)
            .args(extra)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn devshell-vm-sidecar");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[sidecar] {line}");
                if line.contains("listening on")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_mins(1)) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("sidecar did not report listening (exit: {status:?})");
        };
        (
            Self {
                child: Some(child),
                socket: None,
            },
            line,
        )
    }

    /// A sidecar on Unix socket `socket` (its directory must be private), confined to `root`.
    pub fn unix_at(socket: &Path, root: &Path) -> Self {
        let socket_arg = socket.to_str().expect("UTF-8 socket path");
        let (mut sidecar, _) = Self::start(&["--serve-socket", socket_arg], root, &[]);
        sidecar.socket = Some(socket.to_path_buf());
        sidecar
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the sidecar at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            for _ in 0..200 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A β config from `pairs` plus `DEVSHELL_VM_BACKEND=beta`.
pub fn config(pairs: &[(&str, &str)]) -> VmConfig {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("DEVSHELL_VM_BACKEND".into(), "beta".into());
    for (k, v) in pairs {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    VmConfig::from_source(&env).expect("test config parses")
}

/// A private temp dir (0700) holding a socket directory and a sidecar root.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("beta-test-")
            .tempdir()
            .expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).expect("mkdir root");
        let sockdir = tmp.path().join("sock");
        std::fs::create_dir(&sockdir).expect("mkdir sock");
        std::fs::set_permissions(
            &sockdir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod sock dir");
        let socket = sockdir.join("sidecar.sock");
        Self { tmp, root, socket }
    }

    /// A staging dir path inside the root (not yet created).
    pub fn staging(&self, name: &str) -> String {
        self.root
            .join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }
}

/// Cargo.toml and main.rs of a tiny crate named `hello` with no dependencies.
pub fn write_hello_crate(vfs: &mut Vfs, dir: &str) {
    vfs.mkdir(&format!("{dir}/src")).expect("mkdir");
    vfs.write_file(
        &format!("{dir}/Cargo.toml"),
        b"[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"
            .to_vec(),
    )
    .expect("write Cargo.toml");
    vfs.write_file(
        &format!("{dir}/src/main.rs"),
        b"fn main() {\n    println!(\"hello from beta\");\n    std::process::exit(7);\n}\n"
            .to_vec(),
    )
    .expect("write main.rs");
}
