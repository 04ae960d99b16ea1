//! The typed values: [`Backend`], [`WorkspaceMode`], [`Transport`].
//!
//! Each parses with [`FromStr`]; a parse error is a [`ConfigError`] naming the
//! variable the value normally comes from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::ConfigError;
use crate::vars::{
    ENV_DEVSHELL_VM_BACKEND, ENV_DEVSHELL_VM_SOCKET, ENV_DEVSHELL_VM_WORKSPACE_MODE,
};

/// Which execution backend a session uses. Every variant exists in every build;
/// a backend that was not compiled into the facade is an error there, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Host sandbox: a private staging directory on this machine.
    Host,
    /// Same as [`Backend::Host`] today (the earlier project's meaning).
    Auto,
    /// γ: a Lima VM driven through `limactl`.
    Lima,
    /// β: the `devshell-vm-sidecar` daemon over a Unix socket, TCP or stdio.
    Beta,
}

/// What `DEVSHELL_VM_BACKEND` accepts.
pub(crate) const BACKEND_ACCEPTED: &str = "host, auto, lima, beta (trimmed, any case)";

impl Backend {
    /// Every backend, in documentation order.
    pub const ALL: [Backend; 4] = [Backend::Host, Backend::Auto, Backend::Lima, Backend::Beta];

    /// The backend used when `DEVSHELL_VM_BACKEND` is unset: `lima` on Unix.
    #[cfg(unix)]
    pub const PLATFORM_DEFAULT: Backend = Backend::Lima;
    /// The backend used when `DEVSHELL_VM_BACKEND` is unset: `host` off Unix.
    #[cfg(not(unix))]
    pub const PLATFORM_DEFAULT: Backend = Backend::Host;

    /// The lowercase name, as accepted by [`FromStr`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Host => "host",
            Backend::Auto => "auto",
            Backend::Lima => "lima",
            Backend::Beta => "beta",
        }
    }

    /// `true` for the VM backends (`lima`, `beta`), the only ones where Mode P applies.
    #[must_use]
    pub const fn is_vm(self) -> bool {
        matches!(self, Backend::Lima | Backend::Beta)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = ConfigError;

    /// Parses `host`, `auto`, `lima` or `beta`, trimmed, any case. The error names
    /// `DEVSHELL_VM_BACKEND`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Backend::ALL
            .into_iter()
            .find(|b| t.eq_ignore_ascii_case(b.as_str()))
            .ok_or_else(|| {
                ConfigError::new(
                    ENV_DEVSHELL_VM_BACKEND,
                    s,
                    "unknown backend",
                    BACKEND_ACCEPTED,
                )
            })
    }
}

/// How the workspace is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WorkspaceMode {
    /// Mode S: the in-memory VFS is authoritative; changes are pushed to the
    /// guest before each tool run and pulled back after it.
    #[default]
    Sync,
    /// Mode P: the guest tree is authoritative; file operations go to the guest.
    Guest,
}

/// What `DEVSHELL_VM_WORKSPACE_MODE` accepts.
pub(crate) const WORKSPACE_MODE_ACCEPTED: &str = "sync, guest (trimmed, any case)";

impl WorkspaceMode {
    /// The lowercase name, as accepted by [`FromStr`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkspaceMode::Sync => "sync",
            WorkspaceMode::Guest => "guest",
        }
    }
}

impl fmt::Display for WorkspaceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkspaceMode {
    type Err = ConfigError;

    /// Parses `sync` or `guest`, trimmed, any case. The error names
    /// `DEVSHELL_VM_WORKSPACE_MODE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        [WorkspaceMode::Sync, WorkspaceMode::Guest]
            .into_iter()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()))
            .ok_or_else(|| {
                ConfigError::new(
                    ENV_DEVSHELL_VM_WORKSPACE_MODE,
                    s,
                    "unknown workspace mode",
                    WORKSPACE_MODE_ACCEPTED,
                )
            })
    }
}

/// How β Mode S moves files (`DEVSHELL_VM_BETA_SYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BetaSync {
    /// Shared staging when the sidecar sees it, else `wire-sync` when offered.
    #[default]
    Auto,
    /// Always the shared staging directory (the v1 way).
    Shared,
    /// Always `wire-sync` (an error when the sidecar does not offer it).
    Wire,
}

/// What `DEVSHELL_VM_BETA_SYNC` accepts.
pub(crate) const BETA_SYNC_ACCEPTED: &str = "auto, shared, wire (trimmed, any case)";

impl BetaSync {
    /// The lowercase name, as accepted by [`FromStr`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            BetaSync::Auto => "auto",
            BetaSync::Shared => "shared",
            BetaSync::Wire => "wire",
        }
    }
}

impl fmt::Display for BetaSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BetaSync {
    type Err = ConfigError;

    /// Parses `auto`, `shared` or `wire`, trimmed, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        [BetaSync::Auto, BetaSync::Shared, BetaSync::Wire]
            .into_iter()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()))
            .ok_or_else(|| {
                ConfigError::new(
                    crate::vars::ENV_DEVSHELL_VM_BETA_SYNC,
                    s,
                    "unknown beta sync mode",
                    BETA_SYNC_ACCEPTED,
                )
            })
    }
}

/// Where the β client finds the sidecar (`DEVSHELL_VM_SOCKET`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A Unix domain socket at this absolute path.
    Unix(PathBuf),
    /// TCP to `host:port`. `host` is a name or address; IPv6 without brackets.
    Tcp {
        /// Host name or address (IPv6 stored without brackets).
        host: String,
        /// Port, 1-65535.
        port: u16,
    },
    /// Spawn the sidecar with `--serve-stdio` and talk over its pipes.
    Stdio,
}

/// What `DEVSHELL_VM_SOCKET` accepts.
pub(crate) const SOCKET_ACCEPTED: &str = "stdio, tcp:HOST:PORT, tcp://HOST:PORT (port 1-65535, non-empty host, IPv6 in brackets), or an absolute Unix socket path";

impl fmt::Display for Transport {
    /// Formats in the canonical form [`FromStr`] reads back: the path,
    /// `tcp://HOST:PORT` (IPv6 hosts in brackets) or `stdio`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Unix(path) => write!(f, "{}", path.display()),
            Transport::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Transport::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Transport::Stdio => f.write_str("stdio"),
        }
    }
}

impl FromStr for Transport {
    type Err = ConfigError;

    /// Parses the value of `DEVSHELL_VM_SOCKET` (trimmed). The error names that variable.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            |problem: &str| ConfigError::new(ENV_DEVSHELL_VM_SOCKET, s, problem, SOCKET_ACCEPTED);
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        if t.eq_ignore_ascii_case("stdio") {
            return Ok(Transport::Stdio);
        }
        if let Some(rest) =
            strip_prefix_ignore_case(t, "tcp://").or_else(|| strip_prefix_ignore_case(t, "tcp:"))
        {
            let (host, port) = parse_host_port(rest).map_err(|p| err(&p))?;
            return Ok(Transport::Tcp { host, port });
        }
        let path = Path::new(t);
        if path.is_absolute() {
            Ok(Transport::Unix(path.to_path_buf()))
        } else {
            Err(err("a Unix socket path must be absolute"))
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `HOST:PORT` / `[V6]:PORT` and validates both parts.
fn parse_host_port(rest: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
        let (host, tail) = after_bracket
            .split_once(']')
            .ok_or_else(|| "missing ']' after an IPv6 host".to_string())?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| "missing ':PORT' after the host".to_string())?;
        (host, port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| "missing ':PORT' after the host".to_string())?;
        if host.contains(':') {
            return Err("an IPv6 host must be written in brackets, e.g. tcp://[::1]:9847".into());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if let Some(bad) = host
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | '[' | ']' | '@' | '?' | '#'))
    {
        return Err(format!("host contains {bad:?}"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0 is out of range".into()),
        Ok(p) => Ok((host.to_string(), p)),
        Err(_) => Err(format!("port {port} is out of range")),
    }
}
