//! Confinement settings: `DEVSHELL_VM_ISOLATION`, `DEVSHELL_VM_NETWORK` and the
//! `DEVSHELL_VM_LIMIT_*` limits. The sandbox crate enforces them; this module only
//! names and parses them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ConfigError;
use crate::vars::{ENV_DEVSHELL_VM_ISOLATION, ENV_DEVSHELL_VM_NETWORK};

/// What `DEVSHELL_VM_ISOLATION` accepts.
pub(crate) const ISOLATION_ACCEPTED: &str = "auto, namespaces, landlock, off (trimmed, any case)";
/// What `DEVSHELL_VM_NETWORK` accepts.
pub(crate) const NETWORK_ACCEPTED: &str = "off, fetch, on (trimmed, any case)";
/// What the size limits accept.
pub(crate) const SIZE_ACCEPTED: &str =
    "a positive byte count with an optional K, M, G or T suffix (powers of 1024), or unlimited";
/// What the count limits accept.
pub(crate) const COUNT_ACCEPTED: &str = "a positive integer, or unlimited";

/// How tools are confined (`DEVSHELL_VM_ISOLATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Isolation {
    /// The strongest this kernel and user allow: namespaces, else Landlock, else off;
    /// a degrade is reported once per session.
    #[default]
    Auto,
    /// User, mount, pid, ipc, uts (and net) namespaces; an error when unavailable.
    Namespaces,
    /// Landlock only (files and TCP); an error when unavailable.
    Landlock,
    /// No confinement: the tool runs as the caller.
    Off,
}

impl Isolation {
    /// Every mode, in documentation order.
    pub const ALL: [Isolation; 4] = [Self::Auto, Self::Namespaces, Self::Landlock, Self::Off];

    /// The lowercase name, as accepted by [`FromStr`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Namespaces => "namespaces",
            Self::Landlock => "landlock",
            Self::Off => "off",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Isolation {
    type Err = ConfigError;

    /// Parses a mode name, trimmed, any case. The error names `DEVSHELL_VM_ISOLATION`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()))
            .ok_or_else(|| {
                ConfigError::new(
                    ENV_DEVSHELL_VM_ISOLATION,
                    s,
                    "unknown isolation mode",
                    ISOLATION_ACCEPTED,
                )
            })
    }
}

/// What network a confined tool gets (`DEVSHELL_VM_NETWORK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NetworkPolicy {
    /// Never any network (only a private loopback).
    Off,
    /// A `cargo fetch` phase with network (no project code runs), then the tool with
    /// only a private loopback and `CARGO_NET_OFFLINE=true`.
    #[default]
    Fetch,
    /// The host's network, for the tool itself (build scripts and tests included).
    On,
}

impl NetworkPolicy {
    /// Every policy, in documentation order.
    pub const ALL: [NetworkPolicy; 3] = [Self::Off, Self::Fetch, Self::On];

    /// The lowercase name, as accepted by [`FromStr`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Fetch => "fetch",
            Self::On => "on",
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkPolicy {
    type Err = ConfigError;

    /// Parses a policy name, trimmed, any case. The error names `DEVSHELL_VM_NETWORK`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()))
            .ok_or_else(|| {
                ConfigError::new(
                    ENV_DEVSHELL_VM_NETWORK,
                    s,
                    "unknown network policy",
                    NETWORK_ACCEPTED,
                )
            })
    }
}

/// Resource limits of one confined run; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Memory of the whole run in bytes (`DEVSHELL_VM_LIMIT_MEMORY`).
    pub memory: Option<u64>,
    /// Processes and threads alive at once (`DEVSHELL_VM_LIMIT_PIDS`).
    pub pids: Option<u64>,
    /// CPU time of each process (`DEVSHELL_VM_LIMIT_CPU_SECS`).
    pub cpu_time: Option<Duration>,
    /// Bytes one run may write into the workspace (all its processes and files
    /// together), and also the largest single file and the size of the private `/tmp`
    /// and `HOME` (`DEVSHELL_VM_LIMIT_WRITE`).
    pub write: Option<u64>,
}

/// Default memory limit: 4 GiB.
pub const DEFAULT_LIMIT_MEMORY: u64 = 4 << 30;
/// Default process limit.
pub const DEFAULT_LIMIT_PIDS: u64 = 1024;
/// Default CPU time per process: one hour.
pub const DEFAULT_LIMIT_CPU_SECS: u64 = 3600;
/// Default write limit: 8 GiB.
pub const DEFAULT_LIMIT_WRITE: u64 = 8 << 30;

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: Some(DEFAULT_LIMIT_MEMORY),
            pids: Some(DEFAULT_LIMIT_PIDS),
            cpu_time: Some(Duration::from_secs(DEFAULT_LIMIT_CPU_SECS)),
            write: Some(DEFAULT_LIMIT_WRITE),
        }
    }
}

impl Limits {
    /// No limit at all.
    #[must_use]
    pub const fn unlimited() -> Self {
        Self {
            memory: None,
            pids: None,
            cpu_time: None,
            write: None,
        }
    }
}

fn is_unlimited(t: &str) -> bool {
    t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("none")
}

/// Parses a size limit (`4G`, `512M`, `1048576`, `unlimited`). `Ok(None)` is unlimited.
///
/// # Errors
/// A [`ConfigError`] naming `variable` when the value is not a positive size.
pub fn parse_size(variable: &'static str, value: &str) -> Result<Option<u64>, ConfigError> {
    let t = value.trim();
    if is_unlimited(t) {
        return Ok(None);
    }
    let bad = |problem: &str| ConfigError::new(variable, value, problem, SIZE_ACCEPTED);
    let upper = t.to_ascii_uppercase();
    let number = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match number.as_bytes().last() {
        Some(b'K') => (&number[..number.len() - 1], 10),
        Some(b'M') => (&number[..number.len() - 1], 20),
        Some(b'G') => (&number[..number.len() - 1], 30),
        Some(b'T') => (&number[..number.len() - 1], 40),
        _ => (number, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a size"));
    }
    let n: u64 = digits.parse().map_err(|_| bad("too large"))?;
    if n == 0 {
        return Err(bad("must be positive"));
    }
    n.checked_mul(1 << shift)
        .map(Some)
        .ok_or_else(|| bad("too large"))
}

/// Parses a count limit (`1024`, `unlimited`). `Ok(None)` is unlimited.
///
/// # Errors
/// A [`ConfigError`] naming `variable` when the value is not a positive integer.
pub fn parse_count(variable: &'static str, value: &str) -> Result<Option<u64>, ConfigError> {
    let t = value.trim();
    if is_unlimited(t) {
        return Ok(None);
    }
    let bad = |problem: &str| ConfigError::new(variable, value, problem, COUNT_ACCEPTED);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a positive integer"));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(bad("must be positive")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(bad("too large")),
    }
}
