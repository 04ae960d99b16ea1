//! Host backend: run `cargo` (or any tool) on an in-memory workspace in a private staging
//! directory on this machine.
//!
//! A [`HostSandboxSession`] owns one staging directory for its whole life:
//!
//! * created on first use under [`VmConfig::export_base_dir`] with mode `0700`, named
//!   after the process id so that directories of crashed processes are found and removed
//!   when a later session starts;
//! * for each run the **project root** of the VFS cwd is found with cargo's rule
//!   ([`devshell_vm_session::project_root`]), so a run from `src/` of a workspace member
//!   sees the whole workspace; the tool runs in the cwd's image inside that tree;
//! * the Mode S cycle of [`devshell_vm_session::run_cycle`]: a full push the first time,
//!   an incremental push before every later run, and a pull after every run — also when
//!   the tool failed, timed out or was interrupted with Ctrl-C. Unchanged files keep their
//!   mtimes both ways, so a second `cargo build` finds everything fresh. The pull costs
//!   what changed: the staging tree is watched with inotify, the pull after a run lists
//!   only the directories that saw events (and walks new subtrees), and a run after
//!   which nothing changed skips it (see `devshell_vm_sync::watch` and `docs/BENCHMARKS.md`).
//!   Any doubt — lost events, the watch limit — means a full scan;
//! * the tool is looked up on the configured `PATH` (the process's `PATH` when the
//!   configuration has none), runs in its own process group with the caller's stdio (by
//!   default) and is killed as a group at the configured exec timeout; the caller's
//!   Ctrl-C is forwarded to it only when asked
//!   ([`Backend::set_forward_interrupts`]; the CLI asks);
//! * [`HostSandboxSession::shutdown`] (or drop) removes the staging directory.
//!
//! Every tool runs **confined** through `devshell-vm-sandbox` (`DEVSHELL_VM_ISOLATION`,
//! default `auto`): one sandbox per session in which only the session's staging tree is
//! writable, the toolchain and system directories are read-only, `HOME` and `/tmp` are
//! private, the network follows `DEVSHELL_VM_NETWORK` (default `fetch`) and nothing the
//! tool started outlives the run ([`HostSandboxSession::last_run`],
//! [`HostSandboxSession::take_isolation_note`]; `docs/arch/isolation.md` says what each
//! mode does and does not isolate). With `DEVSHELL_VM_ISOLATION=off` the tool runs as
//! the caller, as before. The build output of `cargo` stays inside the
//! staging tree: every run sets `CARGO_TARGET_DIR` to the project's own `target/` (unless
//! the request sets it), so a `CARGO_TARGET_DIR` in the caller's environment cannot send
//! the build elsewhere and `target/` flows back into the VFS like any other output.
//!
//! ```no_run
//! use devshell_vm_backend_host::{Backend, HostSandboxSession};
//! use devshell_vm_config::VmConfig;
//! use devshell_vm_vfs::Vfs;
//!
//! let config = VmConfig::from_env()?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/hello/src")?;
//! vfs.write_file("/hello/Cargo.toml", "[package]\nname = \"hello\"\nedition = \"2021\"\n")?;
//! vfs.write_file("/hello/src/main.rs", b"fn main() { println!(\"hi\"); }\n")?;
//! let mut session = HostSandboxSession::new(&config);
//! let status = session.run_rust_tool(&mut vfs, "/hello/src", "cargo", &["build".to_owned()])?;
//! assert!(status.success());
//! assert!(vfs.exists("/hello/target/debug/hello"));
//! session.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod staging;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devshell_vm_config::VmConfig;
use devshell_vm_exec::{CancelHandle, ProgramCache, StreamKind, ToolRequest};
use devshell_vm_sandbox::{
    Confinement, Isolation, LimitHit, Limits, Mechanisms, Net, NetworkPolicy, Policy,
    SandboxOutcome,
};
use devshell_vm_session::{CycleOutcome, ProjectTable, run_cycle};
use devshell_vm_sync::watch::ChangeTracker;
use devshell_vm_sync::{StagingDir, ToolOutcome};
use devshell_vm_vfs::Vfs;

pub use devshell_vm_session::{Backend, SessionError, SyncObserver};
pub use error::HostError;
pub use staging::{STAGING_PREFIX, clean_stale as clean_stale_staging};

/// Host staging session: one private directory per session, synced with the VFS around
/// every tool run (see the crate docs).
pub struct HostSandboxSession {
    isolation: Box<IsolationSettings>,
    /// Boxed: a sandbox holds two policies and its state, and the facade keeps sessions
    /// in one enum.
    confinement: Option<Box<Confinement>>,
    last_run: Option<RunReport>,
    export_base: PathBuf,
    path_var: Option<OsString>,
    /// Programs found on `path_var`, remembered across runs (a shell's command hash).
    programs: ProgramCache,
    exec_timeout: Option<Duration>,
    forward_interrupts: bool,
    change_tracking: bool,
    staging: Option<StagingDir>,
    projects: ProjectTable<ChangeTracker>,
    stats: SessionStats,
}

/// The confinement settings of a session, from [`VmConfig`].
#[derive(Debug, Clone)]
struct IsolationSettings {
    isolation: Isolation,
    network: NetworkPolicy,
    limits: Limits,
    cargo_home: Option<PathBuf>,
    rustup_home: Option<PathBuf>,
}

/// How the last tool run was confined, and which limit (if any) stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunReport {
    /// The limit that stopped the tool, when one did and this can be told.
    pub limit: Option<LimitHit>,
    /// The mechanisms in force.
    pub mechanisms: Mechanisms,
}

/// Counters of a session, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Tool runs that reached the tool (successful push).
    pub runs: u64,
    /// Runs after which the pull was skipped because inotify saw no host change.
    pub pulls_skipped: u64,
    /// Runs whose pull looked only at the directories inotify saw change.
    pub pulls_scoped: u64,
    /// Runs without a usable inotify watch (inotify unavailable, e.g. the per-user
    /// instance or watch limit reached): they always pull.
    pub unwatched_runs: u64,
}

impl fmt::Debug for HostSandboxSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSandboxSession")
            .field("export_base", &self.export_base)
            .field("exec_timeout", &self.exec_timeout)
            .field("staging", &self.staging_dir())
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

impl HostSandboxSession {
    /// A session configured from `config`: its export base
    /// ([`VmConfig::export_base_dir`]), its `PATH` for tool lookup
    /// ([`VmConfig::tool_search_path`]) and its exec timeout. Nothing is created on disk
    /// until the first use.
    #[must_use]
    pub fn new(config: &VmConfig) -> Self {
        Self {
            isolation: Box::new(IsolationSettings {
                isolation: config.isolation,
                network: config.network,
                limits: config.limits,
                cargo_home: config.cargo_home_dir(),
                rustup_home: config.rustup_home_dir(),
            }),
            confinement: None,
            last_run: None,
            export_base: config.export_base_dir(),
            path_var: config.tool_search_path(),
            programs: ProgramCache::new(config.tool_search_path().as_deref()),
            exec_timeout: config.exec_timeout,
            forward_interrupts: false,
            change_tracking: true,
            staging: None,
            projects: ProjectTable::with_max_workspace_bytes(config.workspace_max_bytes),
            stats: SessionStats::default(),
        }
    }

    /// How the last run was confined and which limit stopped it (`None` before the first
    /// run reached the tool).
    #[must_use]
    pub fn last_run(&self) -> Option<RunReport> {
        self.last_run
    }

    /// When `DEVSHELL_VM_ISOLATION=auto` had to settle for less than namespaces, why and
    /// what is in force instead — returned once per session (the first call after the
    /// sandbox started), so a front end can report it once, never silently.
    pub fn take_isolation_note(&mut self) -> Option<String> {
        self.confinement
            .as_mut()
            .and_then(|c| c.take_degrade_note())
    }

    /// Run and skipped-pull counters of this session.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Whether pulls follow inotify's record of what changed (on by default). Off, every
    /// pull scans the whole project tree — for benchmarks, and for file systems where
    /// inotify does not see every write (a network mount shared with other writers).
    pub fn set_change_tracking(&mut self, enabled: bool) {
        self.change_tracking = enabled;
        for project in self.projects.iter_mut() {
            project.extra.set_enabled(enabled);
        }
    }

    /// The session's staging directory, once created.
    #[must_use]
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_ref().map(StagingDir::path)
    }

    /// Removes the staging directory. The session stays usable: a later run creates a new
    /// staging directory and pushes in full again.
    ///
    /// # Errors
    /// [`HostError::StagingRemove`] when the directory cannot be removed.
    pub fn shutdown(&mut self) -> Result<(), HostError> {
        self.projects.clear();
        self.confinement = None;
        if let Some(dir) = self.staging.take() {
            let fallback = dir.path().to_path_buf();
            dir.remove().map_err(|err| {
                let (path, source) = err.into_io_parts(fallback);
                HostError::StagingRemove { path, source }
            })?;
        }
        Ok(())
    }

    /// The project for `vfs_cwd` and the cwd below its root, creating the staging
    /// directory on first use.
    fn locate(
        &mut self,
        vfs: &Vfs,
        vfs_cwd: &str,
    ) -> Result<devshell_vm_session::Located, HostError> {
        let Self {
            staging,
            export_base,
            projects,
            ..
        } = self;
        projects.project_for(
            vfs,
            vfs_cwd,
            || {
                if let Some(dir) = staging {
                    return Ok(dir.path().to_path_buf());
                }
                let _ = staging::clean_stale(export_base);
                let dir = staging::create(export_base)?;
                let path = dir.path().to_path_buf();
                *staging = Some(dir);
                Ok::<_, HostError>(path)
            },
            || {
                let mut tracker = ChangeTracker::new();
                tracker.set_enabled(self.change_tracking);
                tracker
            },
        )
    }
}

impl Backend for HostSandboxSession {
    type Error = HostError;

    fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, HostError> {
        let at = self.locate(vfs, vfs_cwd)?;
        let timeout = request.timeout.or(self.exec_timeout);
        let staging = self
            .staging_dir()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut confinement = match self.confinement.take() {
            Some(c) => c,
            None => Box::new(new_confinement(
                &self.isolation,
                &staging,
                &self.export_base,
                self.path_var.as_deref(),
            )),
        };
        let mut report = None;
        let programs = &mut self.programs;
        let project = self.projects.get_mut(at.index);
        let cycle = run_cycle(project, vfs, &request.program, |leaf| {
            let outcome = run_in_leaf(
                leaf,
                &at.relative_cwd,
                request,
                timeout,
                programs,
                &mut confinement,
                on_output,
                cancel,
            )?;
            report = Some(RunReport {
                limit: outcome.limit,
                mechanisms: outcome.mechanisms,
            });
            Ok::<_, HostError>(outcome.exec)
        });
        self.confinement = Some(confinement);
        if report.is_some() {
            self.last_run = report;
        }
        if project.extra.unwatched() {
            self.stats.unwatched_runs += 1;
        }
        match cycle {
            Ok(CycleOutcome {
                outcome,
                pull_skipped,
                pull_scoped,
            }) => {
                self.stats.runs += 1;
                self.stats.pulls_skipped += u64::from(pull_skipped);
                self.stats.pulls_scoped += u64::from(pull_scoped && !pull_skipped);
                Ok(outcome)
            }
            Err(err) => {
                if !matches!(
                    err,
                    devshell_vm_session::CycleError::Session(SessionError::Push { .. })
                ) {
                    self.stats.runs += 1;
                }
                Err(err.into_error())
            }
        }
    }

    fn exec_timeout(&self) -> Option<Duration> {
        self.exec_timeout
    }

    fn set_forward_interrupts(&mut self, forward: bool) {
        self.forward_interrupts = forward;
    }

    fn forwards_interrupts(&self) -> bool {
        self.forward_interrupts
    }

    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), HostError> {
        Ok(self.projects.set_excludes(globs)?)
    }

    /// Creates the staging directory (cleaning stale ones whose owner is gone first) and
    /// pushes the project of `vfs_cwd` in full, so the first run only pays for what
    /// changed since.
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), HostError> {
        let at = self.locate(vfs, vfs_cwd)?;
        let project = self.projects.get_mut(at.index);
        project.push(vfs)?;
        Ok(())
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        self.projects.set_observer(observer);
    }

    /// Every run already pulled its results, so nothing is left to bring back: removes
    /// the staging directory ([`HostSandboxSession::shutdown`]).
    fn shutdown(&mut self, _vfs: &mut Vfs, _vfs_cwd: &str) -> Result<(), HostError> {
        HostSandboxSession::shutdown(self)
    }
}

/// The session's confinement for its staging directory: the staging tree writable (and
/// nothing else of the export base), the caller's toolchain read-only, the caller's
/// environment as the base of the tool's. Nothing starts until the first run.
fn new_confinement(
    settings: &IsolationSettings,
    staging: &Path,
    export_base: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Confinement {
    let mut policy = Policy::new(
        settings.isolation,
        Net::None,
        settings.limits,
        staging,
        export_base,
    );
    policy.cargo_home.clone_from(&settings.cargo_home);
    policy.rustup_home.clone_from(&settings.rustup_home);
    policy.env = devshell_vm_config::inherited_environment();
    policy.add_search_path(path_var);
    Confinement::new(policy, settings.network)
}

/// Resolves the program and runs it confined in `leaf/relative_cwd`, with
/// `CARGO_TARGET_DIR` pointed at the project's own `target/` and the session's timeout
/// when the request has none.
#[allow(
    clippy::too_many_arguments,
    reason = "the cycle's closure hands its parts over"
)]
fn run_in_leaf(
    leaf: &Path,
    relative_cwd: &str,
    request: &ToolRequest,
    timeout: Option<Duration>,
    programs: &mut ProgramCache,
    confinement: &mut Confinement,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: Option<&CancelHandle>,
) -> Result<SandboxOutcome, HostError> {
    let host_cwd = if relative_cwd.is_empty() {
        leaf.to_path_buf()
    } else {
        leaf.join(relative_cwd)
    };
    let program = programs
        .resolve(&request.program, &host_cwd)
        .map_err(|source| HostError::Exec {
            program: request.program.clone(),
            source,
        })?;
    let mut request =
        devshell_vm_session::with_cargo_target_dir(request, leaf.join("target").to_string_lossy());
    request.timeout = timeout;
    confinement
        .run(&program, &request, &host_cwd, leaf, on_output, cancel)
        .map_err(|source| HostError::Sandbox {
            program: request.program.clone(),
            source,
        })
}

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
