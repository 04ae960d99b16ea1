//! β backend: [`BetaSession`], the client of the `devshell-vm-sidecar` daemon.
//!
//! The sidecar runs tools for us, typically inside a container or VM that shares a
//! **staging directory** with this host. A session speaks the JSON-lines protocol of
//! [`devshell_vm_protocol`] over the transport `DEVSHELL_VM_SOCKET` names
//! ([`devshell_vm_config::Transport`]):
//!
//! * a Unix socket path, `tcp:HOST:PORT` / `tcp://HOST:PORT`, or
//! * `stdio`: the session spawns `devshell-vm-sidecar --serve-stdio --root <staging>`
//!   (`DEVSHELL_VM_SIDECAR_BIN`, else `devshell-vm-sidecar` on the configured `PATH`) and
//!   owns it: the child is stopped and reaped when the connection is dropped.
//!
//! **Connection.** Opened on first use: connect (with a deadline), `handshake` with the
//! protocol version, the capabilities this client knows and the token of
//! `DEVSHELL_VM_TOKEN_FILE`, then `session_start` with the staging directory and the
//! guest mount. Every reply has a deadline ([`BetaSession::set_io_timeout`]); `exec` has
//! the tool's timeout plus a grace period, or none when the tool has no timeout. A
//! broken, timed-out or garbled connection is reported **once** as a typed error
//! ([`BetaError::is_connection_failure`]) and dropped; the next call reconnects,
//! handshakes and starts the session again. A v1 sidecar (no `capabilities` in its
//! `handshake_ok`) works: the client then uses only v1 operations.
//!
//! **Mode S** (`DEVSHELL_VM_WORKSPACE_MODE=sync`, the default): for each run the project
//! root of the VFS cwd is found with cargo's rule ([`devshell_vm_session::project_root`]);
//! each project has its own subdirectory of staging. The cycle is
//! [`devshell_vm_session::run_cycle`]: `push_incremental` into staging on this host, then
//! `sync_request` `push_to_guest` with a **manifest** of what changed (a sidecar with
//! `sync-verify` checks the sizes and the run stops with [`BetaError::SyncMismatch`] when
//! staging is not really shared), `exec` in the guest image of the cwd, `sync_request`
//! `pull_from_guest`, and the host-side pull — also when the tool failed or timed out.
//! `CARGO_TARGET_DIR` points at the project's own `target/` in staging unless the request
//! sets it, so build output flows back into the VFS.
//!
//! **Mode P** (`guest`): no sync. The session implements
//! [`GuestFsOps`](devshell_vm_guest_fs::GuestFsOps) over `guest_fs` requests (native
//! `stat`/`exists`/`rename` when the sidecar offers `guest-fs-v2`, the trait's portable
//! fallbacks otherwise), and tools run in
//! [`logical_to_guest`](devshell_vm_guest_fs::logical_to_guest)`(mount, project root, cwd)`.
//!
//! **Exit status.** Never clamped: an `exec_result` with a `signal` is
//! [`Termination::Signaled`](devshell_vm_exec::Termination::Signaled), otherwise the code
//! is kept as sent (negative included); an `exec_timeout` error frame is
//! [`Termination::TimedOut`](devshell_vm_exec::Termination::TimedOut); a transport failure
//! is an `Err`, never a status.
//!
//! **Output.** With `exec-stream`, the tool's stdout and stderr arrive as frames and go
//! where the [`devshell_vm_exec::ToolRequest`] says (inherit: this process's stdout and
//! stderr; capture; stream callback; null). A sidecar without it writes the tool's output
//! to its own stderr (v1 behaviour), and captured output stays empty.
//!
//! **Mode S without a shared directory (`wire-sync`).** When the sidecar offers the
//! `wire-sync` capability and cannot see the staging directory (it refuses it, or a
//! random probe written into it does not read back) — or when
//! `DEVSHELL_VM_BETA_SYNC=wire` — the session starts with `wire_start` instead of
//! `session_start` and the workspace travels over the connection: the push sends what
//! the VFS journal reports since the generation the sidecar acknowledged (a full
//! manifest when the sidecar's copy is not exactly that state), the sidecar answers which
//! BLAKE3 digests it lacks, and only those contents travel, in binary bulk frames; after
//! the tool, the pull brings back the changes with their contents and applies them to a
//! clone of the VFS that replaces it only when everything arrived and applied. The
//! sidecar keeps the copy for the client's next session. `DEVSHELL_VM_BETA_SYNC=shared`
//! keeps the v1 behaviour. Specification: `docs/arch/wire-sync.md`.
//! [`BetaSession::uses_wire_sync`] and [`BetaSession::connection_bytes`] expose the
//! choice and its cost.
//!
//! **Staging directory.** `DEVSHELL_VM_BETA_SESSION_STAGING` when set (created if
//! missing, never removed), else a private `0700` directory
//! `devshell-vm-beta-<pid>-<n>` under
//! [`VmConfig::export_base_dir`](devshell_vm_config::VmConfig::export_base_dir), removed at
//! shutdown in Mode S. The sidecar must see it at the same path and accept it (its
//! `--root`); for `stdio` the session passes it as `--root` itself.
//!
//! Not supported over the wire (yet): the tool's stdin is always `/dev/null`
//! ([`devshell_vm_exec::StdinMode::Inherit`] is ignored), and Ctrl-C is not forwarded;
//! a [`devshell_vm_exec::CancelHandle`] passed to [`Backend::run_tool_with`] stops a
//! run by closing the connection, which makes the sidecar kill the process group.
//!
//! ```no_run
//! use devshell_vm_backend_beta::{Backend, BetaSession};
//! use devshell_vm_config::VmConfig;
//! use devshell_vm_vfs::Vfs;
//!
//! let config = VmConfig::from_env()?; // DEVSHELL_VM_BACKEND=beta DEVSHELL_VM_SOCKET=/run/devshell.sock
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/hello/src")?;
//! vfs.write_file("/hello/Cargo.toml", "[package]\nname = \"hello\"\nedition = \"2021\"\n")?;
//! vfs.write_file("/hello/src/main.rs", b"fn main() {}\n")?;
//! let mut session = BetaSession::new(&config)?;
//! let status = session.run_rust_tool(&mut vfs, "/hello", "cargo", &["build".to_owned()])?;
//! assert!(status.success());
//! assert!(vfs.exists("/hello/target/debug/hello"));
//! session.shutdown(&mut vfs, "/hello")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod conn;
mod error;
mod guest_fs;
mod link;
mod manifest;
mod session;
mod transport;
mod wire;

pub use conn::Capabilities;
pub use devshell_vm_session::{Backend, SessionError, SyncObserver};
pub use error::BetaError;
pub use session::{BetaSession, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, EXEC_GRACE};

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
