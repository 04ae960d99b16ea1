//! Typed devshell-vm configuration read from `DEVSHELL_VM*` environment variables.
//!
//! This crate is the **only** place in the workspace that reads the process
//! environment (`clippy.toml` bans `std::env::var*` elsewhere). Everything else
//! receives a [`VmConfig`]. Parsing works over any [`EnvSource`] — a map, an array
//! of pairs or a closure — so tests build configurations without mutating global
//! state:
//!
//! ```
//! use std::collections::BTreeMap;
//! use devshell_vm_config::{Backend, Transport, VmConfig, WorkspaceMode};
//!
//! let env = BTreeMap::from([
//!     ("DEVSHELL_VM_BACKEND".to_string(), "beta".to_string()),
//!     ("DEVSHELL_VM_SOCKET".to_string(), "tcp://127.0.0.1:9847".to_string()),
//!     ("DEVSHELL_VM_WORKSPACE_MODE".to_string(), "guest".to_string()),
//! ]);
//! let cfg = VmConfig::from_source(&env)?;
//! assert_eq!(cfg.backend, Backend::Beta);
//! assert_eq!(cfg.socket, Some(Transport::Tcp { host: "127.0.0.1".into(), port: 9847 }));
//! assert_eq!(cfg.workspace_mode_effective(), WorkspaceMode::Guest);
//!
//! let err = VmConfig::from_source(&[("DEVSHELL_VM", "maybe")]).unwrap_err();
//! assert_eq!((err.variable, err.value.as_str()), ("DEVSHELL_VM", "maybe"));
//! # Ok::<(), devshell_vm_config::ConfigError>(())
//! ```
//!
//! # Rules shared by every variable
//!
//! - **Empty means unset.** A variable set to the empty string, or to only
//!   whitespace, gets its default. (The earlier project read an empty
//!   `DEVSHELL_VM` as *off*, an empty `DEVSHELL_VM_BACKEND` as *host* and an
//!   empty `DEVSHELL_VM_LIMA_HINTS` as *off*; here all three mean "use the
//!   default", like every other variable.)
//! - **One boolean parser** ([`parse_bool`]): `1`, `true`, `yes`, `on` and `0`,
//!   `false`, `no`, `off`, trimmed, any case. Every flag uses it (the earlier
//!   project's `DEVSHELL_VM_STOP_ON_EXIT` and `DEVSHELL_VM_INTERNAL_REPL` did not
//!   accept `on`; they do now).
//! - **Never a silent default.** Any other value is a [`ConfigError`] naming the
//!   variable, the value, the problem and what is accepted. Non-UTF-8 values are
//!   errors for text variables and kept verbatim for path variables. A value
//!   holding a NUL byte (possible only from a map or closure source) is an error
//!   for every variable.
//! - **Same defaults in every build**: there is no `cfg(test)` behaviour.
//!
//! # Variables
//!
//! | Variable | Accepted | Default | Effect |
//! |---|---|---|---|
//! | `DEVSHELL_VM` | boolean | on | Master switch; off → every session uses the host sandbox. |
//! | `DEVSHELL_VM_BACKEND` | `host`, `auto`, `lima`, `beta` | `lima` on Unix, `host` elsewhere | `host`/`auto`: host sandbox; `lima`: Lima VM via `limactl`; `beta`: the sidecar. |
//! | `DEVSHELL_VM_EAGER` | boolean | off | Start the VM session at creation instead of on the first tool run. |
//! | `DEVSHELL_VM_LIMA_INSTANCE` | 1-76 of `A-Za-z0-9._-`, starting alphanumeric | `devshell-rust` | Lima instance; sanitised form names the cache workspace dir. |
//! | `DEVSHELL_VM_WORKSPACE_MODE` | `sync`, `guest` | `sync` | Requested mode; `guest` applies only with the VM on and backend `lima`/`beta` ([`VmConfig::workspace_mode_effective`]). |
//! | `DEVSHELL_VM_EXEC_TIMEOUT_MS` | positive integer | none | Per-tool-run timeout; β `exec.timeout_ms`. |
//! | `DEVSHELL_VM_SOCKET` | `stdio`, `tcp:H:P`, `tcp://H:P`, absolute Unix path | unset | β transport ([`Transport`]). |
//! | `DEVSHELL_VM_GUEST_WORKSPACE` | absolute guest path, no `..` | `/workspace` | Guest mount point. |
//! | `DEVSHELL_VM_WORKSPACE_PARENT` | absolute host path | unset | Host workspace root shared with the guest. |
//! | `DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT` | boolean | on | Without a parent: use the cwd's cargo workspace root, else the cache dir. |
//! | `DEVSHELL_VM_BETA_SESSION_STAGING` | non-empty text | unset | Overrides β `session_start.staging_dir`. |
//! | `DEVSHELL_VM_BETA_SYNC` | `auto`, `shared`, `wire` | `auto` | How β Mode S moves files: shared staging or `wire-sync` over the connection. |
//! | `DEVSHELL_VM_LIMACTL` | path | `limactl` on `PATH` | The `limactl` binary. |
//! | `DEVSHELL_VM_STOP_ON_EXIT` | boolean | off | Stop the Lima instance at session shutdown. |
//! | `DEVSHELL_VM_LIMA_HINTS` | boolean | on | Lima diagnostic hints. |
//! | `DEVSHELL_VM_AUTO_BUILD_ESSENTIAL` | boolean | on | Install `build-essential` in the guest when `gcc` is missing. |
//! | `DEVSHELL_VM_INTERNAL_REPL` | boolean | off | Do not `exec` into `limactl shell` for an interactive TTY. |
//! | `DEVSHELL_VM_SIDECAR_BIN` | path | unset | Sidecar the β client spawns for `DEVSHELL_VM_SOCKET=stdio`. |
//! | `DEVSHELL_VM_TOKEN_FILE` | path | unset | File holding the β TCP auth token. |
//! | `DEVSHELL_EXPORT_BASE` | absolute host path | see [`VmConfig::export_base_dir`] | Parent of host staging dirs and `vm-workspace/`. |
//!
//! Also read, verbatim: `HOME`, `XDG_CACHE_HOME`, `TMPDIR` (export-base
//! fallbacks), `LIMA_HOME` (Lima's data dir) and `PATH` (tool lookup).
//!
//! Accepted and **ignored** (no effect; listed in
//! [`VmConfig::ignored_variables`] when set): the earlier project's todo-specific
//! `DEVSHELL_VM_AUTO_TODO_PATH`, `DEVSHELL_VM_GUEST_TODO_HINT`,
//! `DEVSHELL_VM_AUTO_BUILD_TODO_GUEST`, `DEVSHELL_VM_GUEST_HOST_DIR`, and its
//! Windows-only `DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP`, `DEVSHELL_VM_LINUX_BINARY`,
//! `DEVSHELL_VM_REPO_ROOT`, `DEVSHELL_VM_CONTAINER_IMAGE`,
//! `DEVSHELL_VM_PULL_TIMEOUT_SECS`, `DEVSHELL_VM_STDIO_TRANSPORT`,
//! `DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME`.
//!
//! [`VARIABLES`] holds the same table as data (the README's variable table is checked
//! against it).

mod config;
mod error;
mod isolation;
mod source;
mod types;
mod vars;

#[cfg(all(test, unix))]
mod tests;

pub use config::{
    DEFAULT_GUEST_WORKSPACE, DEFAULT_LIMA_INSTANCE, DEFAULT_WORKSPACE_MAX_BYTES, ENV_CARGO_HOME,
    ENV_HOME, ENV_LIMA_HOME, ENV_PATH, ENV_RUSTUP_HOME, ENV_TMPDIR, ENV_XDG_CACHE_HOME,
    EXPORT_DIR_NAME, VmConfig, exec_timeout_ms_from_env, exec_timeout_ms_from_source, parse_bool,
    sanitize_instance_dir_name, workspace_max_bytes_from_env, workspace_max_bytes_from_source,
    workspace_mode_from_env, workspace_mode_from_source,
};
pub use error::{ConfigError, MAX_QUOTED_CHARS};
pub use isolation::{
    DEFAULT_LIMIT_CPU_SECS, DEFAULT_LIMIT_MEMORY, DEFAULT_LIMIT_PIDS, DEFAULT_LIMIT_WRITE,
    Isolation, Limits, NetworkPolicy, parse_count, parse_size,
};
pub use source::{EnvSource, inherited_environment};
pub use types::{Backend, BetaSync, Transport, WorkspaceMode};
pub use vars::*;

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
