//! What a confined tool may see and use: [`Policy`], and what was in force: [`Mechanisms`].

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

pub use devshell_vm_config::{Isolation, Limits, NetworkPolicy};

/// The network a sandbox gives its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// No network: a private loopback only (namespaces), or every TCP bind/connect
    /// refused (Landlock) and every non-Unix socket refused (seccomp).
    None,
    /// The host's network.
    Host,
}

/// What a confined tool may see and use. Paths are absolute host paths and appear at the
/// same path inside the sandbox, so build output records the same paths confined or not.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Requested isolation mode.
    pub isolation: Isolation,
    /// Network of the tools.
    pub network: Net,
    /// Resource limits of each run.
    pub limits: Limits,
    /// Directories the tool may read and write (the project's staging tree).
    pub writable: Vec<PathBuf>,
    /// Extra directories or files the tool may read (the toolchain), on top of the
    /// system directories ([`SYSTEM_READ_ONLY`], [`ETC_FILES`]).
    pub readable: Vec<PathBuf>,
    /// The caller's cargo home: its `bin`, `registry`, `git` and `config.toml` are made
    /// available (read-only unless [`Policy::registry_writable`]) through a private
    /// `CARGO_HOME` inside the private `HOME`; credentials stay out.
    pub cargo_home: Option<PathBuf>,
    /// The caller's rustup home, read-only; also exported as `RUSTUP_HOME`.
    pub rustup_home: Option<PathBuf>,
    /// The registry and git caches are writable (the fetch phase only).
    pub registry_writable: bool,
    /// The environment tools start from (the caller's, usually); `HOME`, `TMPDIR`,
    /// `CARGO_HOME` and `RUSTUP_HOME` are replaced, and `CARGO_NET_OFFLINE=true` is added
    /// without network. Unconfined ([`Isolation::Off`]) tools
    /// inherit this process's live environment instead, like a plain spawn.
    pub env: Vec<(OsString, OsString)>,
    /// Where the Landlock mode creates the session's private `HOME` and `TMPDIR` (host
    /// directories, removed when the sandbox ends). Namespaces use private tmpfs mounts.
    pub scratch_dir: PathBuf,
}

/// System directories every mode lets a tool read (those that exist).
pub const SYSTEM_READ_ONLY: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files and directories under `/etc` a build needs (those that exist); the rest of `/etc`
/// (for example `shadow`, `ssh/`) is not visible with namespaces.
pub const ETC_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/os-release",
];

/// `HOME` inside a namespace sandbox (a private tmpfs).
pub const SANDBOX_HOME: &str = "/home/sandbox";

impl Policy {
    /// A policy for running tools on the project tree `project` with the caller's
    /// environment `env`: toolchain from `cargo_home`/`rustup_home`, everything else from
    /// `config` (isolation, network, limits).
    #[must_use]
    pub fn new(
        isolation: Isolation,
        network: Net,
        limits: Limits,
        project: &Path,
        scratch_dir: &Path,
    ) -> Self {
        Self {
            isolation,
            network,
            limits,
            writable: vec![project.to_path_buf()],
            readable: Vec::new(),
            cargo_home: None,
            rustup_home: None,
            registry_writable: false,
            env: Vec::new(),
            scratch_dir: scratch_dir.to_path_buf(),
        }
    }

    /// Makes the directories of a `PATH`-style list readable, so programs the caller
    /// finds on its `PATH` run inside too. Skipped: relative and missing entries, those
    /// under [`SYSTEM_READ_ONLY`] (already visible), `/`,
    /// and the caller's `HOME` (from [`Policy::env`]) or any directory above it, which
    /// would show the whole home.
    pub fn add_search_path(&mut self, path_var: Option<&std::ffi::OsStr>) {
        let home = self
            .env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v));
        for dir in path_var.map(std::env::split_paths).into_iter().flatten() {
            let covers_home = home.as_ref().is_some_and(|h| h.starts_with(&dir));
            let already_visible = SYSTEM_READ_ONLY.iter().any(|s| dir.starts_with(s));
            if dir.is_absolute()
                && !already_visible
                && dir != Path::new("/")
                && !covers_home
                && dir.is_dir()
                && !self.readable.contains(&dir)
            {
                self.readable.push(dir);
            }
        }
    }
}

/// The isolation that is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    /// User, mount, pid, ipc, uts (and, without network, net) namespaces.
    Namespaces,
    /// Landlock only.
    Landlock,
    /// None: the tool runs as the caller.
    Off,
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Namespaces => "namespaces",
            Self::Landlock => "landlock",
            Self::Off => "off",
        })
    }
}

/// How one limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// A cgroup of the run (all its processes together).
    Cgroup,
    /// A resource limit of each process.
    Rlimit,
    /// The embedder sums the run's counters while it runs and stops it past the limit
    /// (the write limit: bytes written to disk-backed files, `/proc/<pid>/io`).
    Watched,
    /// Not limited (configured `unlimited`).
    Unlimited,
}

/// How the network is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetEnforcement {
    /// A network namespace with only loopback.
    Namespace,
    /// Landlock refuses TCP bind and connect, and a seccomp filter refuses to create any
    /// socket but a Unix one (UDP, raw, netlink...). Unix sockets of the host that the
    /// tool can reach by path stay connectable.
    LandlockSeccomp,
    /// The host's network is reachable.
    Host,
}

/// Which mechanisms were in force for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mechanisms {
    /// The isolation mode in force.
    pub isolation: Effective,
    /// How the network is restricted.
    pub network: NetEnforcement,
    /// Memory limit.
    pub memory: Enforcement,
    /// Process limit.
    pub pids: Enforcement,
    /// CPU time limit.
    pub cpu: Enforcement,
    /// Write limit: bytes written by the whole run ([`Enforcement::Watched`]); each file
    /// is also capped at the same size by `RLIMIT_FSIZE`.
    pub write: Enforcement,
}

impl fmt::Display for Mechanisms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "isolation {}, network {:?}, memory {:?}, pids {:?}, cpu {:?}, write {:?}",
            self.isolation, self.network, self.memory, self.pids, self.cpu, self.write
        )
    }
}

/// The limit that stopped a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// The memory cgroup killed a process of the run.
    Memory,
    /// The pids cgroup refused a fork.
    Pids,
    /// The tool was killed for exceeding its CPU time (`SIGXCPU`/`SIGKILL` at the limit).
    CpuTime,
    /// The tool was killed for writing a file beyond the write limit (`SIGXFSZ`).
    FileSize,
    /// The run wrote more bytes to disk-backed files (the project tree) than the write
    /// limit, summed over all its files and processes; stopped by the watcher, or — when
    /// it ended before the next check — reported after the run.
    Written,
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::CpuTime => "cpu",
            Self::FileSize => "write (file size)",
            Self::Written => "write",
        })
    }
}
