//! The devshell-vm-sidecar daemon: serves the beta protocol (`devshell-vm-protocol`)
//! over a Unix socket, TCP or stdio, running tools and file operations inside a
//! staging directory it shares with the client.
//!
//! Guarantees, in the order a request meets them:
//!
//! - **Transport.** A Unix socket is created 0600 in a 0700 directory owned by the
//!   sidecar's uid (a missing one is created so); a path that is not a socket is never
//!   unlinked; each peer's uid (`SO_PEERCRED`) must equal the sidecar's. TCP
//!   requires the token from `--token-file` in `handshake` before any other
//!   request, unless `--insecure-no-auth` was given for a loopback address.
//! - **Framing.** Lines are capped (`--max-frame-bytes`); an oversized line, a
//!   non-UTF-8 line, bad JSON, an empty line or an unknown op is answered with an
//!   `error` frame and the connection goes on. Every connection has its own
//!   thread and session; one connection's failure never touches another.
//! - **Sessions.** `staging_dir` must canonicalise inside a `--root` (never `/`);
//!   the directory is held open and every guest path is resolved from it without
//!   following a symlink out (see the `confine` module). Requests other than
//!   `handshake` and `session_start` need a session: `no_session` otherwise.
//! - **exec.** stdin is `/dev/null`; the child runs in its own process group
//!   (`devshell-vm-exec`) with its cwd at the held-open `guest_cwd`; loader
//!   variables in `env` are refused; the deadline (`timeout_ms`, else
//!   `DEVSHELL_VM_EXEC_TIMEOUT_MS`) is exact even when grandchildren keep the
//!   pipes; output streams back as `exec_output` frames with `exec-stream`, else
//!   goes to the sidecar's stderr as in v1; a client hang-up kills the group.
//! - **Shutdown.** SIGTERM or SIGINT kills running execs (their clients get
//!   `error`/`shutdown`), removes the socket and exits 0.
//!
//! - **wire-sync.** With the `wire-sync` capability a client may start its session with
//!   `wire_start` instead of a shared staging directory: the sidecar keeps, per client
//!   (token + client id) and project, a copy under `<first --root>/.devshell-vm-wire`
//!   (an in-memory mirror plus its staging tree, kept by `devshell-vm-sync`), receives
//!   pushes as content-addressed bulk frames (only the BLAKE3 digests it lacks), and
//!   sends the tool's changes back. A copy is bounded by `--wire-max-bytes`, outlives
//!   its connection for the client's next session, and is removed after
//!   `--wire-idle-secs` without one. See `docs/arch/wire-sync.md`.
//! - **Health.** `health` is answered at any time, without a token; `--check ADDRESS`
//!   sends it to a running sidecar and exits 0 on `ok` (container probes).
//!
//! The binary is a thin wrapper over [`Cli`], [`Options::from_cli`], [`serve`] and
//! [`check`].

mod check;
mod confine;
mod conn;
mod error;
mod guest_fs;
mod options;
mod server;
mod signals;
mod wire;

pub use check::check;
pub use error::SidecarError;
pub use options::{
    Cli, DEFAULT_MAX_CONNECTIONS, DEFAULT_WIRE_IDLE_SECS, DEFAULT_WIRE_MAX_BYTES, Listen, Options,
    Token,
};
pub use server::serve;

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
