//! Command line and the resolved, validated options the server runs with.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgGroup, Parser};
use devshell_vm_protocol::DEFAULT_MAX_FRAME_BYTES;

use crate::error::SidecarError;

/// The sidecar's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "devshell-vm-sidecar",
    version,
    about = "Serves the devshell-vm beta protocol (JSON lines) over a Unix socket, TCP or stdio.",
    group(ArgGroup::new("transport").required(true).multiple(false))
)]
pub struct Cli {
    /// Serve on a Unix socket created 0600 at PATH (its directory must belong to us or root and not be writable by others; a missing one is created 0700).
    #[arg(long, value_name = "PATH", group = "transport")]
    pub serve_socket: Option<PathBuf>,
    /// Serve on TCP (port 0 picks a free port; the bound address is logged to stderr).
    #[arg(long, value_name = "HOST:PORT", group = "transport")]
    pub serve_tcp: Option<String>,
    /// Serve one client on stdin/stdout; exits at end of input.
    #[arg(long, group = "transport")]
    pub serve_stdio: bool,
    /// Probe a running sidecar (TCP `HOST:PORT` or a Unix socket path) with a `health`
    /// request and exit 0 when it answers `ok` (for liveness and readiness probes).
    #[arg(long, value_name = "ADDRESS", group = "transport")]
    pub check: Option<String>,
    /// A directory `session_start` staging dirs must lie in (repeatable; default: the current directory).
    #[arg(long = "root", value_name = "DIR")]
    pub roots: Vec<PathBuf>,
    /// File holding the token TCP clients must send in `handshake` (a regular file of at most 4096 bytes, not accessible by others, not group-writable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve TCP without a token (only accepted on a loopback address).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Maximum size of one request line in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Connections served at once (at least 1; lowered to what the file descriptor limit allows); more are answered `busy` and closed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// TCP with a token: connections not yet authenticated held at once (default: a quarter of --max-connections, at least 1); more are answered `busy`.
    #[arg(long, value_name = "N")]
    pub max_unauthenticated: Option<usize>,
    /// TCP with a token: milliseconds a new connection has for its whole handshake (not per read).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub auth_timeout_ms: u64,
    /// wire-sync: most bytes of files one project copy may hold (pushes and pulls past it are refused).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WIRE_MAX_BYTES)]
    pub wire_max_bytes: u64,
    /// wire-sync: seconds a client's project copy is kept without a session before it is removed.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_WIRE_IDLE_SECS)]
    pub wire_idle_secs: u64,
    /// How `exec` runs its tools: auto, namespaces, landlock or off (default:
    /// `DEVSHELL_VM_ISOLATION`, else auto). A sidecar shared by several clients should
    /// never run with off.
    #[arg(long, value_name = "MODE")]
    pub isolation: Option<String>,
    /// Network of confined tools: off, fetch or on (default: `DEVSHELL_VM_NETWORK`, else fetch).
    #[arg(long, value_name = "POLICY")]
    pub network: Option<String>,
}

/// Default for `--wire-max-bytes`: 16 GiB.
pub const DEFAULT_WIRE_MAX_BYTES: u64 = 16 << 30;
/// Default for `--wire-idle-secs`: one day.
pub const DEFAULT_WIRE_IDLE_SECS: u64 = 24 * 60 * 60;
/// Largest token file read (a token is a short secret; anything longer is refused).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Default for `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP `HOST:PORT`.
    Tcp(String),
    /// Standard input and output (one client).
    Stdio,
}

/// A secret compared in constant time; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token (surrounding whitespace is not part of it).
    #[must_use]
    pub fn new(token: &str) -> Self {
        Self(token.trim().to_owned())
    }

    /// The secret itself (for deriving `wire-sync` store names; never logged).
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a client sent.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        let a = self.0.as_bytes();
        let b = candidate.as_bytes();
        let mut diff = u8::from(a.len() != b.len());
        for (i, &x) in a.iter().enumerate() {
            diff |= x ^ b.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Transport.
    pub listen: Listen,
    /// Canonical root directories (never `/`).
    pub roots: Vec<PathBuf>,
    /// Token required from TCP clients (`None` only with `insecure_no_auth` or non-TCP transports).
    pub token: Option<Token>,
    /// TCP without token on loopback.
    pub insecure_no_auth: bool,
    /// Request line cap.
    pub max_frame_bytes: usize,
    /// Concurrent connection cap (socket and TCP), as asked; the server lowers it to
    /// what the file descriptor budget allows (see `serve`).
    pub max_connections: usize,
    /// Of those, connections that have not authenticated yet (TCP with a token).
    pub max_unauthenticated: usize,
    /// Time a token-protected connection has for its whole handshake.
    pub auth_timeout: Duration,
    /// `DEVSHELL_VM_EXEC_TIMEOUT_MS`: deadline for `exec` requests without `timeout_ms`.
    pub default_timeout: Option<Duration>,
    /// `PATH` used to find `argv[0]` (unless the request's env sets `PATH`).
    pub path_var: Option<OsString>,
    /// wire-sync: byte bound of one project copy.
    pub wire_max_bytes: u64,
    /// wire-sync: idle time after which a project copy is removed.
    pub wire_idle: Duration,
    /// Confinement of every tool `exec` runs (`--isolation`, `--network`,
    /// `DEVSHELL_VM_LIMIT_*`, the toolchain homes).
    pub isolation: IsolationOptions,
}

/// How the sidecar confines the tools it runs.
#[derive(Debug, Clone)]
pub struct IsolationOptions {
    /// Isolation mode.
    pub isolation: devshell_vm_config::Isolation,
    /// Network policy.
    pub network: devshell_vm_config::NetworkPolicy,
    /// Limits of each run.
    pub limits: devshell_vm_config::Limits,
    /// The toolchain's cargo home (shared read-only).
    pub cargo_home: Option<PathBuf>,
    /// The toolchain's rustup home (shared read-only).
    pub rustup_home: Option<PathBuf>,
}

impl IsolationOptions {
    /// No confinement, no network policy, default limits: for embedders and tests whose
    /// sidecar never runs a tool (the fuzz harness), or that choose `--isolation off`.
    #[must_use]
    pub fn off() -> Self {
        Self {
            isolation: devshell_vm_config::Isolation::Off,
            network: devshell_vm_config::NetworkPolicy::On,
            limits: devshell_vm_config::Limits::default(),
            cargo_home: None,
            rustup_home: None,
        }
    }
}

impl Options {
    /// Validates `cli` against the file system and the environment (through
    /// `devshell-vm-config`).
    ///
    /// # Errors
    /// [`SidecarError::Usage`] for inconsistent flags, [`SidecarError::Root`],
    /// [`SidecarError::TokenFile`] or [`SidecarError::Config`].
    pub fn from_cli(cli: Cli) -> Result<Self, SidecarError> {
        let listen = match (cli.serve_socket, cli.serve_tcp, cli.serve_stdio) {
            (Some(path), None, false) => Listen::Unix(path),
            (None, Some(addr), false) => Listen::Tcp(addr),
            (None, None, true) => Listen::Stdio,
            _ => {
                return Err(SidecarError::Usage(
                    "exactly one of --serve-socket, --serve-tcp, --serve-stdio is required".into(),
                ));
            }
        };
        if cli.max_connections == 0 {
            return Err(SidecarError::Usage(
                "--max-connections 0 would refuse every client (at least 1)".into(),
            ));
        }
        if cli.max_unauthenticated == Some(0) {
            return Err(SidecarError::Usage(
                "--max-unauthenticated 0 would refuse every TCP client (at least 1)".into(),
            ));
        }
        if cli.max_frame_bytes < 1024 {
            return Err(SidecarError::Usage(format!(
                "--max-frame-bytes {} is too small (at least 1024)",
                cli.max_frame_bytes
            )));
        }
        let is_tcp = matches!(listen, Listen::Tcp(_));
        if cli.insecure_no_auth && !is_tcp {
            return Err(SidecarError::Usage(
                "--insecure-no-auth only applies to --serve-tcp".into(),
            ));
        }
        if cli.insecure_no_auth && cli.token_file.is_some() {
            return Err(SidecarError::Usage(
                "--insecure-no-auth and --token-file contradict each other".into(),
            ));
        }
        if is_tcp && !cli.insecure_no_auth && cli.token_file.is_none() {
            return Err(SidecarError::Usage(
                "--serve-tcp needs --token-file (or --insecure-no-auth on a loopback address)"
                    .into(),
            ));
        }
        let token = cli.token_file.as_deref().map(read_token).transpose()?;
        let roots = resolve_roots(&cli.roots)?;
        let default_timeout =
            devshell_vm_config::exec_timeout_ms_from_env()?.map(Duration::from_millis);
        let (path_var, config) = match devshell_vm_config::VmConfig::from_env() {
            Ok(config) => (config.path.clone(), config),
            Err(err) => {
                crate::log::log_line!("warning: {err}; using PATH=/usr/local/bin:/usr/bin:/bin");
                (
                    Some(OsString::from("/usr/local/bin:/usr/bin:/bin")),
                    devshell_vm_config::VmConfig::host_fallback_from_env(),
                )
            }
        };
        let isolation = IsolationOptions {
            isolation: match cli.isolation.as_deref() {
                Some(mode) => mode.parse()?,
                None => config.isolation,
            },
            network: match cli.network.as_deref() {
                Some(policy) => policy.parse()?,
                None => config.network,
            },
            limits: config.limits,
            cargo_home: config.cargo_home_dir(),
            rustup_home: config.rustup_home_dir(),
        };
        Ok(Self {
            listen,
            roots,
            token,
            insecure_no_auth: cli.insecure_no_auth,
            max_frame_bytes: cli.max_frame_bytes,
            max_connections: cli.max_connections,
            max_unauthenticated: cli
                .max_unauthenticated
                .unwrap_or(cli.max_connections / 4)
                .clamp(1, cli.max_connections),
            auth_timeout: Duration::from_millis(cli.auth_timeout_ms.max(1)),
            default_timeout,
            path_var,
            wire_max_bytes: cli.wire_max_bytes,
            wire_idle: Duration::from_secs(cli.wire_idle_secs.max(1)),
            isolation,
        })
    }
}

/// Reads the token: a regular file (not a device, FIFO or directory: `/dev/zero` would
/// never end), at most [`MAX_TOKEN_FILE_BYTES`], and not accessible by others nor
/// writable by its group (as ssh wants of a key: a secret everyone can read is not one;
/// group read is allowed for Secret volumes mounted with a group).
fn read_token(path: &Path) -> Result<Token, SidecarError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let refuse = |reason: String| SidecarError::TokenFile {
        path: path.to_owned(),
        reason,
    };
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| refuse(err.to_string()))?;
    let meta = file.metadata().map_err(|err| refuse(err.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(refuse(
            "not a regular file (a device, FIFO, socket or directory is never read)".into(),
        ));
    }
    // Group read stays allowed: a Kubernetes Secret mounted with `fsGroup` is 0440.
    if meta.mode() & 0o027 != 0 {
        return Err(refuse(format!(
            "has mode {:o}: a token file must not be readable by others or writable by its group (chmod 600 or 640)",
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(refuse(format!(
            "is {} bytes; a token file holds at most {MAX_TOKEN_FILE_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows after the check.
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(err.to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(refuse(format!(
            "holds more than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| refuse("is not UTF-8 text".into()))?;
    let token = Token::new(&text);
    if token.0.is_empty() {
        return Err(refuse("the file is empty".into()));
    }
    Ok(token)
}

fn resolve_roots(given: &[PathBuf]) -> Result<Vec<PathBuf>, SidecarError> {
    let given: Vec<PathBuf> = if given.is_empty() {
        vec![std::env::current_dir().map_err(|source| SidecarError::Io {
            context: "reading the current directory (the default --root)".into(),
            source,
        })?]
    } else {
        given.to_vec()
    };
    let mut roots = Vec::with_capacity(given.len());
    for path in given {
        let canonical = std::fs::canonicalize(&path).map_err(|err| SidecarError::Root {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        if !canonical.is_dir() {
            return Err(SidecarError::Root {
                path,
                reason: "not a directory".into(),
            });
        }
        if canonical == Path::new("/") {
            return Err(SidecarError::Root {
                path,
                reason: "`/` would allow every directory; give a narrower --root".into(),
            });
        }
        roots.push(canonical);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let t = Token::new("  abc\n");
        assert!(t.matches("abc"));
        assert!(!t.matches("abd"));
        assert!(!t.matches("ab"));
        assert!(!t.matches("abcd"));
        assert!(!t.matches(""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
