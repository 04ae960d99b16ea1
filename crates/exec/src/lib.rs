//! Run one tool invocation the way every devshell-vm backend needs it.
//!
//! The host backend, the sidecar daemon and the Lima backend all spawn tools with
//! the same requirements, so they share this crate instead of three near-copies:
//!
//! * the child runs in **its own process group**, so a timeout, a cancel or a
//!   forwarded Ctrl-C reaches every process the tool started (cargo → rustc → …);
//! * a **deadline is exact**: when it passes the whole group is killed with
//!   `SIGKILL` and [`run`] returns at once, even if a grandchild that escaped the
//!   kill still holds the output pipes (the earlier sidecar answered a 200 ms
//!   timeout after 3 s because it waited for the pipes to close);
//! * output is **inherited, captured, streamed** to a callback in arrival order,
//!   or discarded, per stream; streamed output is **back-pressured**: the queue between
//!   the pipe readers and the callback holds [`OUTPUT_QUEUE_EVENTS`] chunks of at most
//!   [`OUTPUT_CHUNK_BYTES`], so a slow callback makes the tool block on its pipe instead
//!   of growing memory (capture, by its nature, keeps everything);
//! * the group is **not** a containment boundary: a descendant that calls `setsid(2)`
//!   (or `setpgid`) leaves the group, so a timeout, a cancel or [`CancelHandle::kill_now`]
//!   does not reach it. Containing such processes needs the isolation layer (a cgroup
//!   or PID namespace), which this crate does not provide;
//! * the group **dies with the process running it**: one reaper per process (`/bin/sh`
//!   reading a socket only this process holds, told each run's group) kills it with
//!   `SIGKILL` if this process dies during the run, a `kill -9` included;
//! * stdin is `/dev/null` unless the caller asks to inherit it (a child reading
//!   the protocol pipe's stdin ate requests in the earlier sidecar);
//! * exits, signals, timeouts and cancellations are kept apart in
//!   [`Termination`]; an infrastructure failure (the program is missing, the
//!   spawn failed) is an [`ExecError`], never an exit code.
//!
//! ```
//! use devshell_vm_exec::{run, resolve_program, OutputMode, Termination, ToolRequest};
//! let dir = std::env::temp_dir();
//! let request = ToolRequest::new("sh", ["-c", "echo hello; exit 3"]).stdout(OutputMode::Capture);
//! let path = std::ffi::OsStr::new("/usr/bin:/bin");
//! let program = resolve_program("sh", Some(path), &dir).expect("sh in /usr/bin or /bin");
//! let outcome = run(&program, &request, &dir, &mut |_, _| {}, None).expect("spawned");
//! assert_eq!(outcome.termination, Termination::Exited(3));
//! assert_eq!(outcome.stdout, b"hello\n");
//! ```
//!
//! Boundary: this crate knows nothing about workspaces, sync or protocols. It
//! does not read the process environment; `PATH` for [`resolve_program`] is passed
//! in by the caller (from `VmConfig`).

mod interrupts;
mod request;
mod runner;

pub use interrupts::{
    ForwardGuard as InterruptForwarding, InterruptWatch, cancel_on_interrupt,
    interrupt_handlers_installed, take_pending as take_pending_interrupts,
};
pub use request::{OutputMode, StdinMode, ToolRequest};
pub use runner::{
    CancelHandle, ExecOutcome, NoExitStatus, OUTPUT_CHUNK_BYTES, OUTPUT_QUEUE_EVENTS, ProgramCache,
    StreamEvent, StreamKind, Termination, resolve_program, run, spawn_output_reader,
};

use std::path::PathBuf;

/// Why a tool could not be run (as opposed to the tool running and failing).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program is not on the search path, or the given path is not an executable file.
    #[error("program `{program}` not found (searched PATH: {searched})")]
    ProgramNotFound {
        /// The program name as requested.
        program: String,
        /// The search path that was used, for the message.
        searched: String,
    },
    /// The operating system refused to start the program.
    #[error("could not start `{program}`")]
    Spawn {
        /// The resolved program path.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or signalling the child failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
