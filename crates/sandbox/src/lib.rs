//! Run a tool confined on Linux: namespaces or Landlock, limits, a network policy, and
//! nothing outliving its run.
//!
//! A [`Sandbox`] belongs to one session. Starting it creates the confinement once:
//!
//! * **namespaces** (the default where the kernel allows them): a child of this process
//!   unshares user, mount, pid, ipc, uts (and, without network, net) namespaces, maps
//!   the caller's uid and gid, and forks **an init of ours as pid 1** of the new pid
//!   namespace. The init builds a new root on a tmpfs — system directories and the
//!   toolchain read-only, the project tree read-write at its own path, a private `/tmp`
//!   and `HOME`, a minimal `/dev`, a fresh `/proc` — pivots into it and waits for runs;
//! * **Landlock** (where user namespaces are not allowed): a child subreaper restricts
//!   itself with a Landlock ruleset (read-only system and toolchain paths, read-write
//!   project tree and private `HOME`/`TMPDIR`, TCP refused without network, signals and
//!   abstract sockets scoped), and without network a seccomp filter refusing every
//!   non-Unix socket (UDP, raw), and waits for runs;
//! * **off**: tools run as the caller, as `devshell_vm_exec::run` runs them.
//!
//! Each [`Sandbox::run`] sends the program, arguments, environment and limits over a
//! socket pair with the tool's stdin, stdout and stderr (and the run's cgroup files)
//! passed as descriptors (`SCM_RIGHTS`). The init forks the tool (its own session,
//! every capability dropped from the bounding set, `no_new_privs`, rlimits), reaps
//! every orphan, and when the tool ends — exit, timeout, cancel — **kills everything
//! the run left behind** (`kill(-1)` as pid 1; the subreaper kills its children until
//! none is left), `setsid` and double forks included. The init dies with the thread that
//! started it (`PR_SET_PDEATHSIG`), and the pid namespace dies with the init, so `kill
//! -9` of the embedding process leaves no tool running (namespaces mode). Creating the
//! namespaces costs milliseconds; doing it once per session keeps a run's overhead to a
//! fork and a few messages (see `docs/BENCHMARKS.md`).
//!
//! Limits: memory and pids in a per-run cgroup where this process can create one (v1 as
//! root, or a delegated v2 hierarchy), else `RLIMIT_DATA`/`RLIMIT_NPROC`; CPU time by
//! rlimit; bytes written by the whole run summed from the kernel's per-process write
//! counters every 50 ms (and each file capped by `RLIMIT_FSIZE`). The
//! [`SandboxOutcome`] says which limit stopped the tool when that can be told, and which
//! [`Mechanisms`] were in force.
//!
//! The init and the tools stay in the embedder's session (own process groups, no
//! `setsid`), so a tool shares the embedder's scheduler autogroup: in another one it
//! would wait for its own CPU turn after every wake-up, which made a no-op `cargo build`
//! tens of milliseconds slower on a loaded machine. The sandbox has no `/dev/tty`, and a
//! tool handed a terminal does start a session, so the terminal is never its
//! controlling one.
//!
//! ```no_run
//! use devshell_vm_exec::{OutputMode, ToolRequest};
//! use devshell_vm_sandbox::{Isolation, Limits, Net, Policy, Sandbox};
//! use std::path::Path;
//!
//! let project = Path::new("/tmp/project");
//! let policy = Policy::new(Isolation::Auto, Net::None, Limits::default(), project, Path::new("/tmp"));
//! let mut sandbox = Sandbox::start(policy)?;
//! if let Some(note) = sandbox.degraded() {
//!     eprintln!("{note}");
//! }
//! let request = ToolRequest::new("true", Vec::<String>::new()).stdout(OutputMode::Capture);
//! let outcome = sandbox.run(Path::new("/usr/bin/true"), &request, project, &mut |_, _| {}, None)?;
//! assert!(outcome.exec.success());
//! # Ok::<(), devshell_vm_sandbox::SandboxError>(())
//! ```
//!
//! Boundary: no knowledge of sessions, staging or sync; the caller decides the policy.
//! What each mode does and does not isolate: `docs/arch/isolation.md`.

mod cgroup;
mod child;
mod fetch;
mod policy;
mod sandbox;
mod written;

pub use fetch::{Confinement, FetchGate, needs_fetch};
pub use policy::{
    ETC_FILES, Effective, Enforcement, Isolation, LimitHit, Limits, Mechanisms, Net,
    NetEnforcement, NetworkPolicy, Policy, SANDBOX_HOME, SYSTEM_READ_ONLY,
};
pub use sandbox::{Sandbox, SandboxOutcome, resolve_program};

use std::path::PathBuf;

/// What Landlock-only confinement cannot do, for the degrade note and the docs.
pub const LANDLOCK_GAPS: &str = "no private /proc (host processes are visible, though not signalable or traceable), no private /tmp (TMPDIR points to a private directory), connecting to a host Unix socket by its path is not restricted, and kill -9 of the embedding process can leave tool processes running (network is cut for TCP by Landlock and for every other socket family by seccomp)";

/// Why a sandbox could not start or a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The requested isolation mode is not available on this machine.
    #[error("isolation mode `{mode}` is not available here: {reason}")]
    Unavailable {
        /// The mode requested.
        mode: Isolation,
        /// Why it is not available.
        reason: String,
    },
    /// Starting the sandbox failed.
    #[error("starting the sandbox: could not {what}")]
    Start {
        /// The step that failed.
        what: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A path cannot be passed to the kernel (it holds a NUL byte).
    #[error("path {path:?} cannot be used in the sandbox (it contains a NUL byte)")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The run request cannot be sent.
    #[error("bad run request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
    /// The program could not be resolved or run unconfined.
    #[error(transparent)]
    Exec(devshell_vm_exec::ExecError),
    /// The tool could not be started inside the sandbox.
    #[error("could not start `{program}` in `{cwd}` inside the sandbox")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Its working directory.
        cwd: PathBuf,
        /// The system error (from the sandbox's `chdir` or `execve`).
        #[source]
        source: std::io::Error,
    },
    /// The fetch phase (`cargo fetch` with network) failed.
    #[error(
        "fetch phase (`cargo fetch` with network, before the confined run) failed: {status}\n{stderr}"
    )]
    Fetch {
        /// How `cargo fetch` ended.
        status: devshell_vm_exec::Termination,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// A system call around the run failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

// The README's examples are compiled (and run where they can) as doctests, so the
// crate's front page on crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
