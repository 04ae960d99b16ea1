//! Host backend: run `cargo` (or any tool) on an in-memory workspace in a private staging
//! directory on this machine.
//!
//! A [`HostSandboxSession`] owns one staging directory for its whole life:
//!
//! * created on first use under [`VmConfig::export_base_dir`] with mode `0700`, named
//!   after the process id so that directories of crashed processes are found and removed
//!   when a later session starts;
//! * for each run the **project root** of the VFS cwd is found with cargo's rule
//!   ([`devshell_vm_sync::project_root`]), so a run from `src/` of a workspace member sees
//!   the whole workspace; the tool runs in the cwd's image inside that tree;
//! * the Mode S cycle of [`devshell_vm_sync::run_synced`]: a full push the first time,
//!   an incremental push before every later run, and a pull after every run — also when
//!   the tool failed, timed out or was interrupted with Ctrl-C. Unchanged files keep their
//!   mtimes both ways, so a second `cargo build` finds everything fresh. One refinement:
//!   the staging tree is watched with inotify, and a run after which nothing on the host
//!   changed (no write, no metadata change, no create/delete/rename, no lost events)
//!   skips the pull, whose metadata scan of every entry is the main cost of a no-op run
//!   on a large tree (see `docs/bench/host.md`). Any doubt means a full pull;
//! * the tool is looked up on the configured `PATH`, runs in its own process group with
//!   the caller's stdio (by default), is killed as a group at the configured exec timeout,
//!   and receives the caller's Ctrl-C;
//! * [`HostSandboxSession::shutdown`] (or drop) removes the staging directory.
//!
//! What this backend does **not** do: isolate. The tool runs as the caller, with the
//! caller's environment, network and file system access; "sandbox" in the type name is
//! the seed's name, kept for callers. The build output of `cargo` stays inside the
//! staging tree: every run sets `CARGO_TARGET_DIR` to the project's own `target/` (unless
//! the request sets it), so a `CARGO_TARGET_DIR` in the caller's environment cannot send
//! the build elsewhere and `target/` flows back into the VFS like any other output.
//!
//! ```no_run
//! use devshell_vm_backend_host::HostSandboxSession;
//! use devshell_vm_config::VmConfig;
//! use devshell_vm_vfs::Vfs;
//!
//! let config = VmConfig::from_env()?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/hello/src")?;
//! vfs.write_file("/hello/Cargo.toml", b"[package]\nname = \"hello\"\nedition = \"2021\"\n".to_vec())?;
//! vfs.write_file("/hello/src/main.rs", b"fn main() { println!(\"hi\"); }\n".to_vec())?;
//! let mut session = HostSandboxSession::new(&config);
//! let status = session.run_rust_tool(&mut vfs, "/hello/src", "cargo", &["build".to_owned()])?;
//! assert!(status.success());
//! assert!(vfs.exists("/hello/target/debug/hello"));
//! session.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod staging;
mod watch;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devshell_vm_config::VmConfig;
use devshell_vm_exec::{
    CancelHandle, ExecError, ExecOutcome, NoExitStatus, StreamKind, Termination, ToolRequest,
};
use devshell_vm_sync::{
    StagingDir, SyncProgress, SyncReport, SyncState, SyncedRunError, ToolOutcome, VmSyncError,
};
use devshell_vm_vfs::Vfs;

use watch::{Activity, TreeWatch};

pub use error::HostError;
pub use staging::{STAGING_PREFIX, clean_stale as clean_stale_staging};

/// A progress callback shared by every sync of a session (see
/// [`HostSandboxSession::set_sync_observer`]).
pub type SyncObserver = Arc<dyn Fn(&SyncProgress) + Send + Sync>;

/// Environment variable the session points at the project's own `target/`.
const CARGO_TARGET_DIR: &str = "CARGO_TARGET_DIR";

/// One synced project root of the session, its sync manifest and its change watch.
struct Project {
    /// Canonical VFS path of the project root.
    vfs_root: String,
    /// Manifest of the project's staging subdirectory.
    state: SyncState,
    /// inotify watch of the leaf, created after the first push; `None` before that or
    /// when inotify is unavailable (then every run pulls).
    watch: Option<TreeWatch>,
    /// Something may have changed on the host that no pull has seen yet.
    dirty: bool,
    /// Directories may have appeared that are not watched yet.
    needs_rewatch: bool,
}

impl Project {
    fn new(vfs_root: String, state: SyncState) -> Self {
        Self {
            vfs_root,
            state,
            watch: None,
            dirty: false,
            needs_rewatch: false,
        }
    }

    /// Incremental push (full the first time), keeping the watch in step: host changes
    /// seen before the push mark the project dirty (the next pull must not be skipped);
    /// the push's own events are drained; new directories get watches.
    fn push(&mut self, vfs: &Vfs) -> Result<(SyncReport, PathBuf), VmSyncError> {
        if let Some(watch) = &mut self.watch {
            match watch.take_activity() {
                Activity::None => {}
                Activity::Files => self.dirty = true,
                Activity::Structure => {
                    self.dirty = true;
                    self.needs_rewatch = true;
                }
            }
        }
        let push = devshell_vm_sync::push_incremental(vfs, &self.vfs_root, &mut self.state)?;
        let leaf = self.state.leaf_dir(&self.vfs_root)?;
        match &mut self.watch {
            None => {
                self.watch = TreeWatch::new(&leaf);
                if let Some(watch) = &mut self.watch {
                    watch.rewatch();
                }
            }
            Some(watch) => {
                let own = watch.take_activity();
                if own == Activity::Structure || push.dirs_created > 0 || self.needs_rewatch {
                    watch.rewatch();
                }
            }
        }
        self.needs_rewatch = false;
        Ok((push, leaf))
    }

    /// The Mode S cycle of [`devshell_vm_sync::run_synced`] — push, run, pull also after
    /// a failure — except that the pull is skipped when the watch proves that nothing on
    /// the host changed since the push (the no-op pull is the dominant cost of a run that
    /// writes nothing on a large tree). Counts the run and a skipped pull in `stats`.
    fn run_cycle(
        &mut self,
        vfs: &mut Vfs,
        program: &str,
        stats: &mut SessionStats,
        run: impl FnOnce(&Path) -> Result<ExecOutcome, LeafRunError>,
    ) -> Result<ToolOutcome, HostError> {
        let (push, leaf) = match self.push(vfs) {
            Ok(pushed) => pushed,
            Err(err) => {
                return Err(map_synced_error(
                    SyncedRunError::Push(err),
                    program,
                    &self.vfs_root,
                ));
            }
        };
        stats.runs += 1;
        let ran = run(&leaf);
        let started = Instant::now();
        let activity = match &mut self.watch {
            Some(watch) if watch.usable() => watch.take_activity(),
            _ => {
                stats.unwatched_runs += 1;
                Activity::Structure
            }
        };
        let skip = !self.dirty && activity == Activity::None;
        let pull = if skip {
            Ok(SyncReport {
                duration: started.elapsed(),
                ..SyncReport::default()
            })
        } else {
            self.dirty = true;
            let pulled =
                devshell_vm_sync::pull_workspace_to_vfs(&mut self.state, &self.vfs_root, vfs);
            if pulled.is_ok() {
                self.dirty = false;
                if activity == Activity::Structure
                    && let Some(watch) = &mut self.watch
                {
                    watch.rewatch();
                }
            }
            pulled
        };
        if skip {
            stats.pulls_skipped += 1;
        }
        let fail = |err| map_synced_error(err, program, &self.vfs_root);
        match (ran, pull) {
            (Ok(exec), Ok(pull)) => Ok(ToolOutcome {
                exec,
                push,
                pull: Some(pull),
            }),
            (Ok(exec), Err(error)) => Err(fail(SyncedRunError::Pull { error, exec, push })),
            (Err(error), pull) => Err(fail(SyncedRunError::Run { error, push, pull })),
        }
    }
}

/// Host staging session: one private directory per session, synced with the VFS around
/// every tool run (see the crate docs).
pub struct HostSandboxSession {
    export_base: PathBuf,
    path_var: Option<OsString>,
    exec_timeout: Option<Duration>,
    staging: Option<StagingDir>,
    projects: Vec<Project>,
    observer: Option<SyncObserver>,
    excludes: Vec<String>,
    stats: SessionStats,
}

/// Counters of a session, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Tool runs that reached the tool (successful push).
    pub runs: u64,
    /// Runs after which the pull was skipped because inotify saw no host change.
    pub pulls_skipped: u64,
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
            .field(
                "projects",
                &self
                    .projects
                    .iter()
                    .map(|p| p.vfs_root.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("excludes", &self.excludes)
            .finish_non_exhaustive()
    }
}

impl HostSandboxSession {
    /// A session configured from `config`: its export base
    /// ([`VmConfig::export_base_dir`]), its `PATH` for tool lookup and its exec timeout.
    /// Nothing is created on disk until the first use.
    #[must_use]
    pub fn new(config: &VmConfig) -> Self {
        Self {
            export_base: config.export_base_dir(),
            path_var: config.path.clone(),
            exec_timeout: config.exec_timeout,
            staging: None,
            projects: Vec::new(),
            observer: None,
            excludes: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    /// Run and skipped-pull counters of this session.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Installs a progress callback for every push and pull of this session (also for
    /// projects synced already).
    pub fn set_sync_observer(&mut self, observer: SyncObserver) {
        for project in &mut self.projects {
            project.state.set_observer(forwarding_observer(&observer));
        }
        self.observer = Some(observer);
    }

    /// Paths (globs relative to the project root) that pulls leave out of the VFS, e.g.
    /// `target/**` for embedders that do not want build output in memory. Default: none.
    ///
    /// # Errors
    /// [`HostError::Exclude`] when a pattern is invalid; nothing changes then.
    pub fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), HostError> {
        // Validate once on a throwaway state so a bad pattern changes nothing.
        SyncState::new(&self.export_base)
            .set_excludes(globs)
            .map_err(|source| HostError::Exclude {
                source: Box::new(source),
            })?;
        for project in &mut self.projects {
            project
                .state
                .set_excludes(globs)
                .map_err(|source| HostError::Exclude {
                    source: Box::new(source),
                })?;
        }
        self.excludes = globs.iter().map(|g| (*g).to_owned()).collect();
        Ok(())
    }

    /// The session's staging directory, once created.
    #[must_use]
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_ref().map(StagingDir::path)
    }

    /// The exec timeout applied to runs that do not set their own.
    #[must_use]
    pub fn exec_timeout(&self) -> Option<Duration> {
        self.exec_timeout
    }

    /// Prepares the session for tools run from `vfs_cwd`: creates the staging directory
    /// (cleaning stale ones whose owner is gone first) and pushes the project in full, so the
    /// first run only pays for what changed since.
    ///
    /// # Errors
    /// [`HostError::Cwd`], [`HostError::StagingCreate`], [`HostError::Sync`].
    pub fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), HostError> {
        let (index, _) = self.project_for(vfs, vfs_cwd)?;
        let project = &mut self.projects[index];
        let _pushed =
            devshell_vm_sync::push_incremental(vfs, &project.vfs_root, &mut project.state)
                .map_err(|source| HostError::Sync {
                    vfs_path: project.vfs_root.clone(),
                    source: Box::new(source),
                })?;
        Ok(())
    }

    /// Runs `program args…` from the VFS cwd `vfs_cwd` with the caller's stdin, stdout
    /// and stderr, forwarding Ctrl-C to it, and returns its exit status. The VFS holds
    /// the tool's changes afterwards, also when it failed.
    ///
    /// # Errors
    /// An infrastructure failure ([`HostError::Exec`] for a missing program,
    /// [`HostError::Sync`], ...), or [`HostError::Timeout`] when the configured exec
    /// timeout killed the tool (its writes were pulled all the same).
    pub fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, HostError> {
        let request =
            ToolRequest::interactive(program, args.iter().cloned()).or_timeout(self.exec_timeout);
        let outcome = self.run_tool(vfs, vfs_cwd, &request)?;
        outcome
            .exec
            .exit_status_or_reason()
            .map_err(|reason| match reason {
                NoExitStatus::TimedOut => HostError::Timeout {
                    program: program.to_owned(),
                    timeout: request.timeout.unwrap_or_default(),
                },
                NoExitStatus::Cancelled => HostError::Cancelled {
                    program: program.to_owned(),
                },
            })
    }

    /// Runs one tool described by `request` (program, args, environment additions,
    /// stdio modes, timeout — `None` means the session's exec timeout) from `vfs_cwd`
    /// and returns the whole outcome: how it ended (exit code, signal, timed out,
    /// cancelled), captured output, duration and the push and pull reports.
    ///
    /// # Errors
    /// Infrastructure failures only; the tool's failure or timeout is in the outcome.
    pub fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, HostError> {
        self.run_tool_with(vfs, vfs_cwd, request, &mut |_, _| {}, None)
    }

    /// [`Self::run_tool`] with a callback for output streams set to
    /// [`devshell_vm_exec::OutputMode::Stream`] and an optional cancel handle.
    ///
    /// # Errors
    /// As [`Self::run_tool`].
    pub fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, HostError> {
        let (index, relative_cwd) = self.project_for(vfs, vfs_cwd)?;
        let request = request.clone().or_timeout(self.exec_timeout);
        let path_var = self.path_var.clone();
        let project = &mut self.projects[index];

        project.run_cycle(vfs, &request.program, &mut self.stats, |leaf| {
            run_in_leaf(
                leaf,
                &relative_cwd,
                &request,
                path_var.as_deref(),
                on_output,
                cancel,
            )
        })
    }

    /// Removes the staging directory. The session stays usable: a later run creates a new
    /// staging directory and pushes in full again.
    ///
    /// # Errors
    /// [`HostError::StagingRemove`] when the directory cannot be removed.
    pub fn shutdown(&mut self) -> Result<(), HostError> {
        self.projects.clear();
        if let Some(dir) = self.staging.take() {
            let fallback = dir.path().to_path_buf();
            dir.remove().map_err(|err| {
                let (path, source) = err.into_io_parts(fallback);
                HostError::StagingRemove { path, source }
            })?;
        }
        Ok(())
    }

    /// The project (index into `self.projects`) for `vfs_cwd`, created with its own
    /// staging subdirectory on first use, and the cwd relative to the project root.
    fn project_for(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(usize, String), HostError> {
        let cwd = vfs.normalize(vfs_cwd).map_err(|source| HostError::Cwd {
            cwd: vfs_cwd.to_owned(),
            source: Box::new(VmSyncError::Vfs(source)),
        })?;
        let root = devshell_vm_sync::project_root(vfs, &cwd).map_err(|source| HostError::Cwd {
            cwd: vfs_cwd.to_owned(),
            source: Box::new(source),
        })?;
        let relative = relative_to(&root, &cwd);
        if let Some(index) = self.projects.iter().position(|p| p.vfs_root == root) {
            return Ok((index, relative));
        }
        let staging = self.staging_or_create()?;
        // One subdirectory per project root: two roots with the same last segment
        // (`/a/app`, `/b/app`) never share a leaf.
        let sub = staging.join(self.projects.len().to_string());
        staging::make_private_dir(&sub)?;
        let mut state = SyncState::new(sub);
        if !self.excludes.is_empty() {
            let globs: Vec<&str> = self.excludes.iter().map(String::as_str).collect();
            state
                .set_excludes(&globs)
                .map_err(|source| HostError::Exclude {
                    source: Box::new(source),
                })?;
        }
        if let Some(observer) = &self.observer {
            state.set_observer(forwarding_observer(observer));
        }
        self.projects.push(Project::new(root, state));
        Ok((self.projects.len() - 1, relative))
    }

    fn staging_or_create(&mut self) -> Result<PathBuf, HostError> {
        if let Some(dir) = &self.staging {
            return Ok(dir.path().to_path_buf());
        }
        let _ = staging::clean_stale(&self.export_base);
        let dir = staging::create(&self.export_base)?;
        let path = dir.path().to_path_buf();
        self.staging = Some(dir);
        Ok(path)
    }
}

/// Why a run inside the staging leaf did not produce an outcome.
#[derive(Debug)]
struct LeafRunError(ExecError);

/// Resolves the program and runs it in `leaf/relative_cwd`.
fn run_in_leaf(
    leaf: &Path,
    relative_cwd: &str,
    request: &ToolRequest,
    path_var: Option<&std::ffi::OsStr>,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: Option<&CancelHandle>,
) -> Result<ExecOutcome, LeafRunError> {
    let host_cwd = if relative_cwd.is_empty() {
        leaf.to_path_buf()
    } else {
        leaf.join(relative_cwd)
    };
    let program = devshell_vm_exec::resolve_program(&request.program, path_var, &host_cwd)
        .map_err(LeafRunError)?;
    let mut request = request.clone();
    if !request.env.iter().any(|(name, _)| name == CARGO_TARGET_DIR) {
        request.env.insert(
            0,
            (
                CARGO_TARGET_DIR.to_owned(),
                leaf.join("target").to_string_lossy().into_owned(),
            ),
        );
    }
    devshell_vm_exec::run(&program, &request, &host_cwd, on_output, cancel).map_err(LeafRunError)
}

fn map_synced_error(err: SyncedRunError<LeafRunError>, program: &str, vfs_root: &str) -> HostError {
    match err {
        SyncedRunError::Push(source) => HostError::Sync {
            vfs_path: vfs_root.to_owned(),
            source: Box::new(source),
        },
        SyncedRunError::Run { error, .. } => HostError::Exec {
            program: program.to_owned(),
            source: error.0,
        },
        SyncedRunError::Pull { exec, error, .. } => HostError::PullAfterRun {
            program: program.to_owned(),
            termination: describe(exec.termination),
            vfs_path: vfs_root.to_owned(),
            source: Box::new(error),
        },
    }
}

fn describe(termination: Termination) -> String {
    match termination {
        Termination::Exited(code) => format!("exit code {code}"),
        Termination::Signaled(signal) => format!("killed by signal {signal}"),
        Termination::TimedOut => "timed out".to_owned(),
        Termination::Cancelled => "cancelled".to_owned(),
    }
}

fn forwarding_observer(observer: &SyncObserver) -> Box<dyn FnMut(&SyncProgress) + Send> {
    let observer = Arc::clone(observer);
    Box::new(move |progress| observer(progress))
}

/// `cwd` relative to `root` (both canonical, `cwd` inside `root`): `""` for the root itself.
fn relative_to(root: &str, cwd: &str) -> String {
    let rest = cwd.strip_prefix(root).unwrap_or_default();
    rest.trim_start_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::relative_to;

    #[test]
    fn relative_cwd() {
        assert_eq!(relative_to("/", "/"), "");
        assert_eq!(relative_to("/", "/a/b"), "a/b");
        assert_eq!(relative_to("/p", "/p"), "");
        assert_eq!(relative_to("/p", "/p/src/x"), "src/x");
    }
}
