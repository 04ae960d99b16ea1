//! [`VmConfig`]: every variable parsed and validated in one place.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::isolation::{
    COUNT_ACCEPTED, ISOLATION_ACCEPTED, NETWORK_ACCEPTED, SIZE_ACCEPTED, parse_count, parse_size,
};
use crate::source::ProcessEnv;
use crate::types::{BACKEND_ACCEPTED, WORKSPACE_MODE_ACCEPTED};
use crate::vars::{
    BOOL_ACCEPTED, ENV_DEVSHELL_EXPORT_BASE, ENV_DEVSHELL_VM, ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL,
    ENV_DEVSHELL_VM_BACKEND, ENV_DEVSHELL_VM_BETA_SESSION_STAGING, ENV_DEVSHELL_VM_BETA_SYNC,
    ENV_DEVSHELL_VM_EAGER, ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, ENV_DEVSHELL_VM_GUEST_WORKSPACE,
    ENV_DEVSHELL_VM_INTERNAL_REPL, ENV_DEVSHELL_VM_LIMA_HINTS, ENV_DEVSHELL_VM_LIMA_INSTANCE,
    ENV_DEVSHELL_VM_LIMACTL, ENV_DEVSHELL_VM_SIDECAR_BIN, ENV_DEVSHELL_VM_SOCKET,
    ENV_DEVSHELL_VM_STOP_ON_EXIT, ENV_DEVSHELL_VM_TOKEN_FILE, ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
    ENV_DEVSHELL_VM_WORKSPACE_MODE, ENV_DEVSHELL_VM_WORKSPACE_PARENT,
    ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT, VARIABLES, VarStatus,
};
use crate::vars::{
    ENV_DEVSHELL_VM_ISOLATION, ENV_DEVSHELL_VM_LIMIT_CPU_SECS, ENV_DEVSHELL_VM_LIMIT_MEMORY,
    ENV_DEVSHELL_VM_LIMIT_PIDS, ENV_DEVSHELL_VM_LIMIT_WRITE, ENV_DEVSHELL_VM_NETWORK,
};
use crate::{
    Backend, BetaSync, ConfigError, EnvSource, Isolation, Limits, NetworkPolicy, Transport,
    WorkspaceMode,
};

/// `HOME`: read for the export-base fallback.
pub const ENV_HOME: &str = "HOME";
/// `XDG_CACHE_HOME`: read for the export-base fallback (ignored when relative, per the XDG spec).
pub const ENV_XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// `LIMA_HOME`: where Lima keeps instances (for `lima.yaml` and log lookup).
pub const ENV_LIMA_HOME: &str = "LIMA_HOME";
/// `PATH`: for tool lookup (`limactl`, `cargo`).
pub const ENV_PATH: &str = "PATH";
/// `CARGO_HOME`: the caller's cargo home (default `$HOME/.cargo`), shared read-only with
/// confined tools.
pub const ENV_CARGO_HOME: &str = "CARGO_HOME";
/// `RUSTUP_HOME`: the caller's rustup home (default `$HOME/.rustup`), shared read-only
/// with confined tools.
pub const ENV_RUSTUP_HOME: &str = "RUSTUP_HOME";
/// `TMPDIR`: last export-base fallback (ignored when relative).
pub const ENV_TMPDIR: &str = "TMPDIR";

/// Default Lima instance name.
pub const DEFAULT_LIMA_INSTANCE: &str = "devshell-rust";
/// Default guest workspace mount point.
pub const DEFAULT_GUEST_WORKSPACE: &str = "/workspace";
/// Directory name under the cache/temp base that holds host staging and the VM workspace cache.
pub const EXPORT_DIR_NAME: &str = "cargo-devshell-exports";

const INSTANCE_ACCEPTED: &str =
    "1-76 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit";
const TIMEOUT_ACCEPTED: &str = "a positive integer number of milliseconds";
const BYTES_ACCEPTED: &str =
    "a positive integer number of bytes, optionally followed by K, M or G (powers of 1024)";

/// The workspace size budget when `DEVSHELL_VM_WORKSPACE_MAX_BYTES` is unset: 8 GiB (the
/// same default as the sync engine's `SyncState`).
pub const DEFAULT_WORKSPACE_MAX_BYTES: u64 = 8 << 30;
const GUEST_PATH_ACCEPTED: &str =
    "an absolute guest path (starting with /, not / itself) without .. components";
const HOST_ABS_ACCEPTED: &str = "an absolute host path";
const TEXT_ACCEPTED: &str = "non-empty UTF-8 text";
const PATH_ACCEPTED: &str = "a path (without NUL bytes)";
const MAX_INSTANCE_LEN: usize = 76;

/// Parsed and validated configuration. Build it with [`VmConfig::from_env`] (the
/// process environment), [`VmConfig::from_source`] (any [`EnvSource`], e.g. a map in
/// tests) or [`VmConfig::disabled`] and struct-update syntax.
///
/// Every variable and its default is described in the [crate docs](crate). A
/// variable set to the empty string (or only whitespace) counts as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one field per boolean variable, as the shared contract fixes"
)]
pub struct VmConfig {
    /// `DEVSHELL_VM` (default on).
    pub enabled: bool,
    /// `DEVSHELL_VM_BACKEND` (default [`Backend::PLATFORM_DEFAULT`]).
    pub backend: Backend,
    /// `DEVSHELL_VM_WORKSPACE_MODE`, as requested; see [`VmConfig::workspace_mode_effective`].
    pub workspace_mode: WorkspaceMode,
    /// `DEVSHELL_VM_EAGER` (default off).
    pub eager_start: bool,
    /// `DEVSHELL_VM_LIMA_INSTANCE` (default `devshell-rust`), validated.
    pub lima_instance: String,
    /// `DEVSHELL_VM_LIMACTL`, verbatim (default: look `limactl` up on `PATH`).
    pub limactl: Option<PathBuf>,
    /// `DEVSHELL_VM_GUEST_WORKSPACE` (default `/workspace`), absolute, no `..`.
    pub guest_workspace: String,
    /// `DEVSHELL_VM_WORKSPACE_PARENT`, absolute.
    pub workspace_parent: Option<PathBuf>,
    /// `DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT` (default on).
    pub workspace_use_cargo_root: bool,
    /// `DEVSHELL_VM_EXEC_TIMEOUT_MS`, a positive duration.
    pub exec_timeout: Option<Duration>,
    /// `DEVSHELL_VM_WORKSPACE_MAX_BYTES`: workspace size budget for pulls (`None`: the
    /// sync engine's default, [`DEFAULT_WORKSPACE_MAX_BYTES`]).
    pub workspace_max_bytes: Option<u64>,
    /// `DEVSHELL_VM_SOCKET`.
    pub socket: Option<Transport>,
    /// `DEVSHELL_VM_BETA_SESSION_STAGING`, verbatim.
    pub beta_session_staging: Option<String>,
    /// `DEVSHELL_VM_BETA_SYNC`: how β Mode S moves files.
    pub beta_sync: BetaSync,
    /// `DEVSHELL_VM_STOP_ON_EXIT` (default off).
    pub stop_on_exit: bool,
    /// `DEVSHELL_VM_LIMA_HINTS` (default on).
    pub lima_hints: bool,
    /// `DEVSHELL_VM_AUTO_BUILD_ESSENTIAL` (default on).
    pub auto_build_essential: bool,
    /// `DEVSHELL_VM_INTERNAL_REPL` (default off).
    pub internal_repl: bool,
    /// `DEVSHELL_VM_ISOLATION` (default [`Isolation::Auto`]).
    pub isolation: Isolation,
    /// `DEVSHELL_VM_NETWORK` (default [`NetworkPolicy::Fetch`]).
    pub network: NetworkPolicy,
    /// `DEVSHELL_VM_LIMIT_*` (defaults in [`Limits::default`]).
    pub limits: Limits,
    /// `DEVSHELL_EXPORT_BASE`, absolute; see [`VmConfig::export_base_dir`].
    pub export_base: Option<PathBuf>,
    /// `DEVSHELL_VM_SIDECAR_BIN`: the sidecar the β client spawns for the stdio transport.
    pub sidecar_bin: Option<PathBuf>,
    /// `DEVSHELL_VM_TOKEN_FILE`: file holding the β TCP auth token.
    pub token_file: Option<PathBuf>,
    /// `HOME`, verbatim.
    pub home: Option<PathBuf>,
    /// `XDG_CACHE_HOME`, verbatim.
    pub xdg_cache_home: Option<PathBuf>,
    /// `LIMA_HOME`, verbatim.
    pub lima_home: Option<PathBuf>,
    /// `PATH`, verbatim, for tool lookup. `None` (as in [`VmConfig::disabled`]) means
    /// the process's own `PATH` at lookup time ([`VmConfig::tool_search_path`]).
    pub path: Option<OsString>,
    /// `TMPDIR`, verbatim (last export-base fallback).
    pub tmpdir: Option<PathBuf>,
    /// `CARGO_HOME`, verbatim; see [`VmConfig::cargo_home_dir`].
    pub cargo_home: Option<PathBuf>,
    /// `RUSTUP_HOME`, verbatim; see [`VmConfig::rustup_home_dir`].
    pub rustup_home: Option<PathBuf>,
    /// Names of set variables that are accepted but have no effect (earlier
    /// project's todo-specific and Windows-only ones), so a front end can say so.
    pub ignored_variables: Vec<&'static str>,
}

impl Default for VmConfig {
    /// Same as [`VmConfig::disabled`].
    fn default() -> Self {
        Self::disabled()
    }
}

impl VmConfig {
    /// Reads the process environment.
    ///
    /// # Errors
    /// The first variable holding an unaccepted value, as a [`ConfigError`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    /// Reads any [`EnvSource`]. Variables are checked in [`crate::VARIABLES`]
    /// order; the first bad one is reported.
    ///
    /// # Errors
    /// The first variable holding an unaccepted value, as a [`ConfigError`].
    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let enabled = flag(env, ENV_DEVSHELL_VM, true)?;
        let backend = match text(env, ENV_DEVSHELL_VM_BACKEND)? {
            Some(v) => v.parse()?,
            None => Backend::PLATFORM_DEFAULT,
        };
        Ok(Self {
            enabled,
            backend,
            eager_start: flag(env, ENV_DEVSHELL_VM_EAGER, false)?,
            lima_instance: match text(env, ENV_DEVSHELL_VM_LIMA_INSTANCE)? {
                Some(v) => validate_instance(&v)?,
                None => DEFAULT_LIMA_INSTANCE.to_string(),
            },
            workspace_mode: workspace_mode_from_source(env)?,
            exec_timeout: exec_timeout_ms_from_source(env)?.map(Duration::from_millis),
            workspace_max_bytes: workspace_max_bytes_from_source(env)?,
            socket: match text(env, ENV_DEVSHELL_VM_SOCKET)? {
                Some(v) => Some(v.parse()?),
                None => None,
            },
            guest_workspace: match text(env, ENV_DEVSHELL_VM_GUEST_WORKSPACE)? {
                Some(v) => validate_guest_path(ENV_DEVSHELL_VM_GUEST_WORKSPACE, v)?,
                None => DEFAULT_GUEST_WORKSPACE.to_string(),
            },
            workspace_parent: abs_path(env, ENV_DEVSHELL_VM_WORKSPACE_PARENT)?,
            workspace_use_cargo_root: flag(env, ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT, true)?,
            beta_session_staging: text(env, ENV_DEVSHELL_VM_BETA_SESSION_STAGING)?,
            beta_sync: match text(env, ENV_DEVSHELL_VM_BETA_SYNC)? {
                Some(v) => v.parse()?,
                None => BetaSync::Auto,
            },
            limactl: dev_path(env, ENV_DEVSHELL_VM_LIMACTL)?,
            stop_on_exit: flag(env, ENV_DEVSHELL_VM_STOP_ON_EXIT, false)?,
            lima_hints: flag(env, ENV_DEVSHELL_VM_LIMA_HINTS, true)?,
            auto_build_essential: flag(env, ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL, true)?,
            internal_repl: flag(env, ENV_DEVSHELL_VM_INTERNAL_REPL, false)?,
            sidecar_bin: dev_path(env, ENV_DEVSHELL_VM_SIDECAR_BIN)?,
            token_file: dev_path(env, ENV_DEVSHELL_VM_TOKEN_FILE)?,
            isolation: match text(env, ENV_DEVSHELL_VM_ISOLATION)? {
                Some(v) => v.parse()?,
                None => Isolation::default(),
            },
            network: match text(env, ENV_DEVSHELL_VM_NETWORK)? {
                Some(v) => v.parse()?,
                None => NetworkPolicy::default(),
            },
            limits: limits_from_source(env)?,
            export_base: abs_path(env, ENV_DEVSHELL_EXPORT_BASE)?,
            home: any_path(env, ENV_HOME),
            xdg_cache_home: any_path(env, ENV_XDG_CACHE_HOME),
            lima_home: any_path(env, ENV_LIMA_HOME),
            path: raw(env, ENV_PATH),
            tmpdir: any_path(env, ENV_TMPDIR),
            cargo_home: any_path(env, ENV_CARGO_HOME),
            rustup_home: any_path(env, ENV_RUSTUP_HOME),
            ignored_variables: VARIABLES
                .iter()
                .filter(|v| v.status == VarStatus::Ignored && raw(env, v.name).is_some())
                .map(|v| v.name)
                .collect(),
        })
    }

    /// The configuration to fall back to when [`VmConfig::from_env`] fails: VM off,
    /// every `DEVSHELL_VM*` setting at its default, but the system variables read
    /// (`PATH`, so tools are still found by name; `HOME`, `XDG_CACHE_HOME`, `TMPDIR`,
    /// `LIMA_HOME`) and `DEVSHELL_EXPORT_BASE` when it holds a valid value.
    #[must_use]
    pub fn host_fallback_from_env() -> Self {
        Self::host_fallback_from_source(&ProcessEnv)
    }

    /// [`VmConfig::host_fallback_from_env`] over any [`EnvSource`].
    #[must_use]
    pub fn host_fallback_from_source(env: &dyn EnvSource) -> Self {
        Self {
            export_base: abs_path(env, ENV_DEVSHELL_EXPORT_BASE).ok().flatten(),
            home: any_path(env, ENV_HOME),
            xdg_cache_home: any_path(env, ENV_XDG_CACHE_HOME),
            lima_home: any_path(env, ENV_LIMA_HOME),
            path: raw(env, ENV_PATH),
            tmpdir: any_path(env, ENV_TMPDIR),
            cargo_home: any_path(env, ENV_CARGO_HOME),
            rustup_home: any_path(env, ENV_RUSTUP_HOME),
            ..Self::disabled()
        }
    }

    /// VM off, host backend, every other field at its default (nothing read from
    /// any environment: `home`, `path` and the like are `None`).
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            backend: Backend::Host,
            workspace_mode: WorkspaceMode::Sync,
            eager_start: false,
            lima_instance: DEFAULT_LIMA_INSTANCE.to_string(),
            limactl: None,
            guest_workspace: DEFAULT_GUEST_WORKSPACE.to_string(),
            workspace_parent: None,
            workspace_use_cargo_root: true,
            exec_timeout: None,
            workspace_max_bytes: None,
            socket: None,
            beta_session_staging: None,
            beta_sync: BetaSync::Auto,
            stop_on_exit: false,
            lima_hints: true,
            auto_build_essential: true,
            internal_repl: false,
            isolation: Isolation::Auto,
            network: NetworkPolicy::Fetch,
            limits: Limits::default(),
            export_base: None,
            sidecar_bin: None,
            token_file: None,
            home: None,
            xdg_cache_home: None,
            lima_home: None,
            path: None,
            tmpdir: None,
            cargo_home: None,
            rustup_home: None,
            ignored_variables: Vec::new(),
        }
    }

    /// The `PATH` backends search for tools: [`VmConfig::path`] when set, else the
    /// process's `PATH` now (so a config built without an environment, such as
    /// [`VmConfig::disabled`], still finds `cargo`). `None` only when neither exists.
    #[must_use]
    pub fn tool_search_path(&self) -> Option<OsString> {
        self.path.clone().or_else(crate::source::process_path)
    }

    /// The caller's cargo home: absolute `CARGO_HOME`, else `$HOME/.cargo` (absolute
    /// `HOME`), else `None`.
    #[must_use]
    pub fn cargo_home_dir(&self) -> Option<PathBuf> {
        self.tool_home(self.cargo_home.as_ref(), ".cargo")
    }

    /// The caller's rustup home: absolute `RUSTUP_HOME`, else `$HOME/.rustup` (absolute
    /// `HOME`), else `None`.
    #[must_use]
    pub fn rustup_home_dir(&self) -> Option<PathBuf> {
        self.tool_home(self.rustup_home.as_ref(), ".rustup")
    }

    fn tool_home(&self, explicit: Option<&PathBuf>, leaf: &str) -> Option<PathBuf> {
        if let Some(dir) = explicit.filter(|p| p.is_absolute()) {
            return Some(dir.clone());
        }
        self.home
            .as_ref()
            .filter(|h| h.is_absolute())
            .map(|h| h.join(leaf))
            .or_else(|| crate::source::process_home().map(|h| h.join(leaf)))
    }

    /// Same as [`VmConfig::disabled`]; reads better in tests of the host backend.
    #[must_use]
    pub fn host_only() -> Self {
        Self::disabled()
    }

    /// `true` when sessions use the host sandbox: the VM is off or the backend is
    /// `host` or `auto`.
    #[must_use]
    pub fn use_host_sandbox(&self) -> bool {
        !self.enabled || matches!(self.backend, Backend::Host | Backend::Auto)
    }

    /// The mode that applies: [`WorkspaceMode::Guest`] only when it was requested,
    /// the VM is on and the backend is `lima` or `beta`; otherwise
    /// [`WorkspaceMode::Sync`]. [`VmConfig::workspace_mode_fallback_reason`] says why
    /// a requested Guest mode did not apply.
    #[must_use]
    pub fn workspace_mode_effective(&self) -> WorkspaceMode {
        if self.workspace_mode_fallback_reason().is_none() {
            self.workspace_mode
        } else {
            WorkspaceMode::Sync
        }
    }

    /// When Guest mode was requested but cannot apply, a one-line reason a front
    /// end can print (the earlier project printed such a note in release builds).
    #[must_use]
    pub fn workspace_mode_fallback_reason(&self) -> Option<&'static str> {
        if self.workspace_mode != WorkspaceMode::Guest {
            None
        } else if !self.enabled {
            Some("DEVSHELL_VM_WORKSPACE_MODE=guest needs the VM on (DEVSHELL_VM); using sync mode")
        } else if !self.backend.is_vm() {
            Some(
                "DEVSHELL_VM_WORKSPACE_MODE=guest needs DEVSHELL_VM_BACKEND=lima or beta; using sync mode",
            )
        } else {
            None
        }
    }

    /// [`VmConfig::exec_timeout`] in whole milliseconds (what β `exec.timeout_ms` carries).
    #[must_use]
    pub fn exec_timeout_ms(&self) -> Option<u64> {
        self.exec_timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The parent of host-sandbox staging dirs and of the `vm-workspace/` cache:
    /// `DEVSHELL_EXPORT_BASE`, else `$XDG_CACHE_HOME/cargo-devshell-exports`, else
    /// `$HOME/.cache/cargo-devshell-exports`, else `<temp>/cargo-devshell-exports`
    /// where `<temp>` is `$TMPDIR` or `/tmp` (on non-Unix, the platform temp dir).
    /// Relative `XDG_CACHE_HOME`, `HOME` and `TMPDIR` values are skipped (the XDG
    /// spec calls relative values invalid). Pure: reads only this config.
    #[must_use]
    pub fn export_base_dir(&self) -> PathBuf {
        if let Some(base) = &self.export_base {
            return base.clone();
        }
        let absolute = |p: &Option<PathBuf>| p.as_ref().filter(|p| p.is_absolute()).cloned();
        if let Some(xdg) = absolute(&self.xdg_cache_home) {
            return xdg.join(EXPORT_DIR_NAME);
        }
        if let Some(home) = absolute(&self.home) {
            return home.join(".cache").join(EXPORT_DIR_NAME);
        }
        absolute(&self.tmpdir)
            .unwrap_or_else(platform_temp_dir)
            .join(EXPORT_DIR_NAME)
    }

    /// The Lima instance name made safe as one directory name: see
    /// [`sanitize_instance_dir_name`].
    #[must_use]
    pub fn sanitized_instance_dir_name(&self) -> String {
        sanitize_instance_dir_name(&self.lima_instance)
    }

    /// `<export base>/vm-workspace/<sanitised instance>`: the workspace shared with
    /// the guest when neither an explicit parent nor a cargo root applies.
    #[must_use]
    pub fn default_vm_workspace_cache_dir(&self) -> PathBuf {
        self.export_base_dir()
            .join("vm-workspace")
            .join(self.sanitized_instance_dir_name())
    }
}

/// Maps every character outside `[A-Za-z0-9_-]` to `_` (the earlier project's
/// rule for the cache workspace directory). An empty name becomes `_`, so the
/// result is always one non-empty path component other than `.` or `..`.
#[must_use]
pub fn sanitize_instance_dir_name(name: &str) -> String {
    if name.is_empty() {
        return "_".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The requested workspace mode from the process environment
/// (`DEVSHELL_VM_WORKSPACE_MODE`; unset means [`WorkspaceMode::Sync`]).
///
/// # Errors
/// A value other than `sync` or `guest`.
pub fn workspace_mode_from_env() -> Result<WorkspaceMode, ConfigError> {
    workspace_mode_from_source(&ProcessEnv)
}

/// [`workspace_mode_from_env`] over any [`EnvSource`].
///
/// # Errors
/// A value other than `sync` or `guest`.
pub fn workspace_mode_from_source(env: &dyn EnvSource) -> Result<WorkspaceMode, ConfigError> {
    match text(env, ENV_DEVSHELL_VM_WORKSPACE_MODE)? {
        Some(v) => v.parse(),
        None => Ok(WorkspaceMode::Sync),
    }
}

/// `DEVSHELL_VM_EXEC_TIMEOUT_MS` from the process environment: `None` when unset.
///
/// # Errors
/// A value that is not a positive integer (zero, negative, non-numeric, too large).
pub fn exec_timeout_ms_from_env() -> Result<Option<u64>, ConfigError> {
    exec_timeout_ms_from_source(&ProcessEnv)
}

/// [`exec_timeout_ms_from_env`] over any [`EnvSource`].
///
/// # Errors
/// A value that is not a positive integer (zero, negative, non-numeric, too large).
pub fn exec_timeout_ms_from_source(env: &dyn EnvSource) -> Result<Option<u64>, ConfigError> {
    let Some(v) = text(env, ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS)? else {
        return Ok(None);
    };
    let t = v.trim();
    let err = |problem: &str| {
        ConfigError::new(
            ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            v.as_str(),
            problem,
            TIMEOUT_ACCEPTED,
        )
    };
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("not a positive integer"));
    }
    match t.parse::<u64>() {
        Ok(0) => Err(err("zero is not a timeout (unset the variable for none)")),
        Ok(ms) => Ok(Some(ms)),
        Err(_) => Err(err("too large")),
    }
}

/// `DEVSHELL_VM_WORKSPACE_MAX_BYTES` from the process environment (`None` when unset).
///
/// # Errors
/// A value that is not a positive byte count.
pub fn workspace_max_bytes_from_env() -> Result<Option<u64>, ConfigError> {
    workspace_max_bytes_from_source(&ProcessEnv)
}

/// [`workspace_max_bytes_from_env`] over any [`EnvSource`].
///
/// # Errors
/// A value that is not a positive integer with an optional `K`, `M` or `G` suffix, or
/// that overflows 64 bits.
pub fn workspace_max_bytes_from_source(env: &dyn EnvSource) -> Result<Option<u64>, ConfigError> {
    let Some(v) = text(env, ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES)? else {
        return Ok(None);
    };
    let err = |problem: &str| {
        ConfigError::new(
            ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
            v.as_str(),
            problem,
            BYTES_ACCEPTED,
        )
    };
    let t = v.trim();
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'K' | b'k') => (&t[..t.len() - 1], 10),
        Some(b'M' | b'm') => (&t[..t.len() - 1], 20),
        Some(b'G' | b'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("not a positive byte count"));
    }
    let n: u64 = digits.parse().map_err(|_| err("too large"))?;
    if n == 0 {
        return Err(err(
            "zero would refuse every file (unset the variable for the default)",
        ));
    }
    n.checked_mul(1 << shift)
        .map(Some)
        .ok_or_else(|| err("too large"))
}

/// The one boolean parser: `1/true/yes/on` → `true`, `0/false/no/off` → `false`,
/// trimmed, any case. Anything else is an error naming `variable`.
///
/// # Errors
/// Any other value, including the empty string (callers treat an empty variable
/// as unset before calling this).
pub fn parse_bool(variable: &'static str, value: &str) -> Result<bool, ConfigError> {
    let t = value.trim();
    let any = |words: &[&str]| words.iter().any(|w| t.eq_ignore_ascii_case(w));
    if any(&["1", "true", "yes", "on"]) {
        Ok(true)
    } else if any(&["0", "false", "no", "off"]) {
        Ok(false)
    } else {
        Err(ConfigError::new(
            variable,
            value,
            "not a boolean",
            BOOL_ACCEPTED,
        ))
    }
}

/// The platform temp dir without reading the environment (Unix: `/tmp`).
#[cfg(unix)]
fn platform_temp_dir() -> PathBuf {
    PathBuf::from("/tmp")
}

/// The platform temp dir (off Unix, the standard library's answer).
#[cfg(not(unix))]
fn platform_temp_dir() -> PathBuf {
    std::env::temp_dir()
}

/// The raw value, `None` when unset, empty or only ASCII whitespace.
fn raw(env: &dyn EnvSource, name: &str) -> Option<OsString> {
    env.get_os(name)
        .filter(|v| !v.as_encoded_bytes().iter().all(u8::is_ascii_whitespace))
}

/// The error for a value holding a NUL byte. The process environment cannot carry
/// one, but other [`EnvSource`]s (maps, closures) can, and no variable accepts it.
fn nul_error(name: &'static str, value: &std::ffi::OsStr, accepted: &'static str) -> ConfigError {
    ConfigError::new(
        name,
        value.to_string_lossy(),
        "contains a NUL byte",
        accepted,
    )
}

/// `true` when the raw value holds a NUL byte.
fn has_nul(value: &std::ffi::OsStr) -> bool {
    value.as_encoded_bytes().contains(&0)
}

/// The value as text, `None` when unset or blank; non-UTF-8 and NUL bytes are errors.
fn text(env: &dyn EnvSource, name: &'static str) -> Result<Option<String>, ConfigError> {
    match raw(env, name) {
        None => Ok(None),
        Some(v) if has_nul(&v) => Err(nul_error(name, &v, accepted_for(name))),
        Some(v) => v.into_string().map(Some).map_err(|v| {
            ConfigError::new(
                name,
                v.to_string_lossy(),
                "not valid UTF-8",
                accepted_for(name),
            )
        }),
    }
}

/// The `DEVSHELL_VM_LIMIT_*` variables over their defaults.
fn limits_from_source(env: &dyn EnvSource) -> Result<Limits, ConfigError> {
    let defaults = Limits::default();
    let size = |name: &'static str, default: Option<u64>| -> Result<Option<u64>, ConfigError> {
        match text(env, name)? {
            Some(v) => parse_size(name, &v),
            None => Ok(default),
        }
    };
    let count = |name: &'static str, default: Option<u64>| -> Result<Option<u64>, ConfigError> {
        match text(env, name)? {
            Some(v) => parse_count(name, &v),
            None => Ok(default),
        }
    };
    Ok(Limits {
        memory: size(ENV_DEVSHELL_VM_LIMIT_MEMORY, defaults.memory)?,
        pids: count(ENV_DEVSHELL_VM_LIMIT_PIDS, defaults.pids)?,
        cpu_time: count(
            ENV_DEVSHELL_VM_LIMIT_CPU_SECS,
            defaults.cpu_time.map(|d| d.as_secs()),
        )?
        .map(Duration::from_secs),
        write: size(ENV_DEVSHELL_VM_LIMIT_WRITE, defaults.write)?,
    })
}

/// A `DEVSHELL_VM*` path taken verbatim (relative paths allowed, resolved by the
/// user of the field); a NUL byte is an error.
fn dev_path(env: &dyn EnvSource, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    match raw(env, name) {
        None => Ok(None),
        Some(v) if has_nul(&v) => Err(nul_error(name, &v, PATH_ACCEPTED)),
        Some(v) => Ok(Some(PathBuf::from(v))),
    }
}

/// A boolean flag with its default for unset/blank.
fn flag(env: &dyn EnvSource, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match text(env, name)? {
        Some(v) => parse_bool(name, &v),
        None => Ok(default),
    }
}

/// A path taken verbatim (relative paths allowed, resolved by the user of the field).
fn any_path(env: &dyn EnvSource, name: &str) -> Option<PathBuf> {
    raw(env, name).map(PathBuf::from)
}

/// A host path that must be absolute.
fn abs_path(env: &dyn EnvSource, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
    match raw(env, name) {
        None => Ok(None),
        Some(v) if has_nul(&v) => Err(nul_error(name, &v, HOST_ABS_ACCEPTED)),
        Some(v) if Path::new(&v).is_absolute() => Ok(Some(PathBuf::from(v))),
        Some(v) => Err(ConfigError::new(
            name,
            v.to_string_lossy(),
            "not an absolute path",
            HOST_ABS_ACCEPTED,
        )),
    }
}

fn validate_instance(v: &str) -> Result<String, ConfigError> {
    let err = |problem: String| {
        ConfigError::new(ENV_DEVSHELL_VM_LIMA_INSTANCE, v, problem, INSTANCE_ACCEPTED)
    };
    if v.len() > MAX_INSTANCE_LEN {
        return Err(err(format!("longer than {MAX_INSTANCE_LEN} characters")));
    }
    if let Some(bad) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(err(format!("contains {bad:?}")));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err("must start with a letter or digit".to_string()));
    }
    Ok(v.to_string())
}

fn validate_guest_path(name: &'static str, v: String) -> Result<String, ConfigError> {
    let problem = if !v.starts_with('/') {
        "not an absolute guest path"
    } else if v.split('/').any(|c| c == "..") {
        "contains a .. component"
    } else if v.split('/').all(|c| c.is_empty() || c == ".") {
        // Mode P confines every guest file operation to the mount: `/` would hand
        // the whole guest file system to the workspace.
        "is the guest's root directory"
    } else {
        return Ok(v);
    };
    Err(ConfigError::new(name, v, problem, GUEST_PATH_ACCEPTED))
}

/// What a variable accepts, for the not-UTF-8 error.
fn accepted_for(name: &str) -> &'static str {
    match name {
        ENV_DEVSHELL_VM_BACKEND => BACKEND_ACCEPTED,
        ENV_DEVSHELL_VM_WORKSPACE_MODE => WORKSPACE_MODE_ACCEPTED,
        ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS => TIMEOUT_ACCEPTED,
        ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES => BYTES_ACCEPTED,
        ENV_DEVSHELL_VM_SOCKET => crate::types::SOCKET_ACCEPTED,
        ENV_DEVSHELL_VM_LIMA_INSTANCE => INSTANCE_ACCEPTED,
        ENV_DEVSHELL_VM_GUEST_WORKSPACE => GUEST_PATH_ACCEPTED,
        ENV_DEVSHELL_VM_BETA_SESSION_STAGING => TEXT_ACCEPTED,
        ENV_DEVSHELL_VM_ISOLATION => ISOLATION_ACCEPTED,
        ENV_DEVSHELL_VM_NETWORK => NETWORK_ACCEPTED,
        ENV_DEVSHELL_VM_LIMIT_MEMORY | ENV_DEVSHELL_VM_LIMIT_WRITE => SIZE_ACCEPTED,
        ENV_DEVSHELL_VM_LIMIT_PIDS | ENV_DEVSHELL_VM_LIMIT_CPU_SECS => COUNT_ACCEPTED,
        _ => BOOL_ACCEPTED,
    }
}
