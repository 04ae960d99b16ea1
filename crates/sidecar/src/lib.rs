//! The devshell-vm-sidecar daemon: serves the beta protocol (`devshell-vm-protocol`)
//! over a Unix socket, TCP or stdio, running tools and file operations inside a
//! staging directory it shares with the client.
//!
//! Guarantees, in the order a request meets them:
//!
//! - **Transport.** A Unix socket is created 0600 (umask around `bind`) in a directory
//!   owned by the sidecar's uid or root that group and others cannot write to (a
//!   missing one is created 0700); a path that is not a socket is never unlinked; each
//!   peer's uid (`SO_PEERCRED`) must equal the sidecar's. TCP requires the token from
//!   `--token-file` (a regular file of at most 4096 bytes, mode `0640` or stricter) in
//!   `handshake` before any other request, unless `--insecure-no-auth` was given for a
//!   loopback address. The whole handshake has one deadline (`--auth-timeout-ms`), and
//!   connections not yet authenticated have their own budget
//!   (`--max-unauthenticated`, default a quarter of the cap), so slow or idle clients
//!   cannot take every slot.
//! - **Limits.** The soft descriptor limit is raised to the hard one at start and the
//!   connection cap is lowered to what it allows ([`FDS_PER_CONNECTION`] each, after a
//!   quarter of the limit kept for the descriptors through which wire copies hold
//!   large files on disk; logged); a client beyond the cap gets `busy`. An `exec-stream` run holds at most about
//!   2 MiB of its output in the sidecar (16 queued frames of 64 KiB of output each, plus
//!   the exec crate's queue of 4 chunks); past that, the tool blocks on its pipe until
//!   the client reads.
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
//!   `error`/`shutdown`), waits at most [`SHUTDOWN_GRACE`] for them to answer, kills
//!   every process group still running, removes the socket and exits 0. Logging goes
//!   through a bounded queue to a writer thread: a full or closed stderr drops log
//!   lines (and counts them) but never blocks a connection or the shutdown.
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
mod log;
mod options;
mod server;
mod signals;
mod wire;

pub use check::check;
pub use error::SidecarError;
pub use options::{
    Cli, DEFAULT_MAX_CONNECTIONS, DEFAULT_WIRE_IDLE_SECS, DEFAULT_WIRE_MAX_BYTES, IsolationOptions,
    Listen, MAX_TOKEN_FILE_BYTES, Options, Token,
};
pub use server::{
    FDS_PER_CONNECTION, RESERVED_FDS, SHUTDOWN_GRACE, serve, serve_bytes_without_exec,
};

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
