//! [`GammaSession`]: one Lima instance, its workspace mount, Mode S and Mode P.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use devshell_vm_config::{VmConfig, WorkspaceMode};
use devshell_vm_exec::{CancelHandle, StreamKind, ToolRequest};
use devshell_vm_session::{
    Backend, ProjectTable, SyncObserver, join_slash, run_cycle, with_cargo_target_dir,
};
use devshell_vm_sync::{StagingDir, SyncReport, ToolOutcome, VmSyncError, clean_stale_staging};
use devshell_vm_vfs::Vfs;

use crate::channel::Channel;
use crate::limactl::{LimaVersion, Limactl};
use crate::{LimaError, workspace_parent_for_instance};

mod exec;
mod guest_fs;
mod lifecycle;
mod supervise;

/// Name of the sidecar binary looked up on `PATH` when `DEVSHELL_VM_SIDECAR_BIN` is unset.
pub const SIDECAR_BIN_NAME: &str = "devshell-vm-sidecar";

/// Numbers the staging dirs of this process's sessions.
static NEXT_STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Directory under the workspace parent that holds the sessions' Mode S staging dirs.
pub const STAGING_DIR_NAME: &str = ".devshell-vm";

/// Prefix of each session's staging directory in [`STAGING_DIR_NAME`].
const STAGING_PREFIX: &str = "s-";

/// How long [`GammaSession::ensure_running`] waits for a booting instance's ssh and mount.
const READY_TIMEOUT: Duration = Duration::from_mins(2);

/// Pause between two readiness probes.
const READY_POLL: Duration = Duration::from_millis(250);

/// Exit status of the channel's start script when the guest architecture differs.
const ARCH_MISMATCH: i32 = 86;

/// How the session reaches the guest for file operations and captured commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    /// Not tried yet (opened on first use).
    NotOpened,
    /// The sidecar answers over one long-lived `limactl shell`.
    Open,
    /// No channel: one `limactl shell` per operation, with the reason.
    Fallback(String),
}

/// What decides the scope of a Mode S pull. On a Linux host the staging directory is
/// watched with inotify here on the host (`devshell_vm_sync::watch`): the guest's writes
/// reach it through the host-side server of the mount (9p, virtiofsd, sftp-server for
/// reverse-sshfs), which makes ordinary file system calls on the host, so they raise
/// events like local writes and a pull lists only the directories a run changed. On
/// other hosts (macOS: no inotify) every pull scans in full.
type PullTracker = devshell_vm_sync::watch::ChangeTracker;

/// A Lima (γ) session: tools run in the guest through `limactl shell`, with the VFS
/// synced into the host workspace parent that the instance mounts (Mode S), or guest
/// file operations straight on the guest tree (Mode P). See the crate docs.
#[allow(
    clippy::struct_excessive_bools,
    reason = "one flag per configuration knob and per once-per-session step"
)]
pub struct GammaSession {
    instance: String,
    limactl: Limactl,
    workspace_parent: PathBuf,
    mount: String,
    mode: WorkspaceMode,
    exec_timeout: Option<Duration>,
    stop_on_exit: bool,
    lima_hints: bool,
    auto_build_essential: bool,
    lima_home: Option<PathBuf>,
    home: Option<PathBuf>,
    sidecar_bin: Option<PathBuf>,
    channel: Option<Channel>,
    channel_state: ChannelState,
    running: bool,
    /// `limactl --version`, read once per session (`None` when it did not parse).
    lima_version: Option<LimaVersion>,
    /// Whether [`Self::lima_version`] was read.
    lima_version_read: bool,
    /// The guest architecture `limactl list` reported (empty until known).
    guest_arch: String,
    provisioned: bool,
    forward_interrupts: bool,
    projects: ProjectTable<PullTracker>,
    staging: Option<StagingDir>,
    notices: Box<dyn Write + Send>,
    diagnostics: Vec<String>,
}

impl fmt::Debug for GammaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GammaSession")
            .field("instance", &self.instance)
            .field("limactl", &self.limactl.path)
            .field("workspace_parent", &self.workspace_parent)
            .field("mount", &self.mount)
            .field("mode", &self.mode)
            .field("channel", &self.channel_state)
            .field("running", &self.running)
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

impl GammaSession {
    /// A session for `config`: resolves `limactl` (`DEVSHELL_VM_LIMACTL`, else `PATH`),
    /// the workspace parent ([`workspace_parent_for_instance`]), the guest mount and the
    /// sidecar binary (`DEVSHELL_VM_SIDECAR_BIN`, else `devshell-vm-sidecar` on `PATH`).
    /// Nothing is started unless `DEVSHELL_VM_EAGER` is on, in which case the instance is
    /// checked and started now.
    ///
    /// # Errors
    /// [`LimaError::LimactlNotFound`]; with eager start, every error of
    /// [`Self::ensure_running`].
    pub fn new(config: &VmConfig) -> Result<Self, LimaError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let search_path = config.tool_search_path();
        let limactl = match &config.limactl {
            Some(path) => path.clone(),
            None => which::which_in("limactl", search_path.as_ref(), &cwd).map_err(|_| {
                LimaError::LimactlNotFound {
                    searched: search_path.as_ref().map_or_else(
                        || "<unset>".to_owned(),
                        |p| p.to_string_lossy().into_owned(),
                    ),
                }
            })?,
        };
        let sidecar_bin = config
            .sidecar_bin
            .clone()
            .or_else(|| which::which_in(SIDECAR_BIN_NAME, search_path.as_ref(), &cwd).ok());
        let mut session = Self {
            instance: config.lima_instance.clone(),
            limactl: Limactl::new(limactl, config.lima_home.clone()),
            workspace_parent: workspace_parent_for_instance(config),
            mount: config.guest_workspace.clone(),
            mode: config.workspace_mode_effective(),
            exec_timeout: config.exec_timeout,
            stop_on_exit: config.stop_on_exit,
            lima_hints: config.lima_hints,
            auto_build_essential: config.auto_build_essential,
            lima_home: config.lima_home.clone(),
            home: config.home.clone(),
            sidecar_bin,
            channel: None,
            channel_state: ChannelState::NotOpened,
            running: false,
            lima_version: None,
            lima_version_read: false,
            guest_arch: String::new(),
            provisioned: false,
            forward_interrupts: false,
            projects: ProjectTable::with_max_workspace_bytes(config.workspace_max_bytes),
            staging: None,
            notices: Box::new(std::io::stderr()),
            diagnostics: Vec::new(),
        };
        if config.eager_start {
            session.ensure_running()?;
        }
        Ok(session)
    }

    /// Where the session writes one-line notices (starting the VM, installing packages,
    /// falling back to one shell per operation). Default: stderr.
    pub fn set_notice_writer(&mut self, writer: Box<dyn Write + Send>) {
        self.notices = writer;
    }

    /// Turns the long-lived sidecar channel off (every guest operation then spawns one
    /// `limactl shell`) or back on. Closing an open channel takes effect at once.
    pub fn set_channel_enabled(&mut self, enabled: bool) {
        if enabled {
            if matches!(self.channel_state, ChannelState::Fallback(_)) {
                self.channel_state = ChannelState::NotOpened;
            }
        } else {
            if let Some(channel) = self.channel.take() {
                channel.close();
            }
            self.channel_state = ChannelState::Fallback("disabled by the caller".to_owned());
        }
    }

    /// `true` in Mode S (the VFS is synced with the host workspace around each run);
    /// `false` in Mode P (the guest tree is authoritative).
    #[must_use]
    pub const fn syncs_vfs_with_host_workspace(&self) -> bool {
        matches!(self.mode, WorkspaceMode::Sync)
    }

    /// The guest mount point (e.g. `/workspace`).
    #[must_use]
    pub fn guest_mount(&self) -> &str {
        &self.mount
    }

    /// The host directory the instance mounts at [`Self::guest_mount`].
    #[must_use]
    pub fn workspace_parent(&self) -> &Path {
        &self.workspace_parent
    }

    /// The `limactl` binary in use.
    #[must_use]
    pub fn limactl_path(&self) -> &Path {
        &self.limactl.path
    }

    /// The Lima instance name.
    #[must_use]
    pub fn lima_instance_name(&self) -> &str {
        &self.instance
    }

    /// How many `limactl` processes this session has spawned so far.
    #[must_use]
    pub fn limactl_spawns(&self) -> u64 {
        self.limactl.spawns
    }

    /// What the session found out about the guest and Lima, one line per fact (the
    /// `limactl` release, the sidecar binary's format and target, stray login output,
    /// why the channel is not used): for `devshell-vm doctor`-style reports.
    #[must_use]
    pub fn diagnostics(&self) -> String {
        self.diagnostics.join("\n")
    }

    fn diagnose(&mut self, line: String) {
        if !self.diagnostics.contains(&line) {
            self.diagnostics.push(line);
        }
    }

    /// The state of the long-lived channel.
    #[must_use]
    pub fn channel_state(&self) -> &ChannelState {
        &self.channel_state
    }

    fn notice(&mut self, line: &str) {
        let _ = writeln!(self.notices, "devshell-vm: {line}");
    }
}

impl Backend for GammaSession {
    type Error = LimaError;

    /// Runs `request` (its timeout, or the session's) in the guest: in Mode S the
    /// shared push–run–pull cycle around `limactl shell` in the project's staging leaf,
    /// in Mode P in the guest image of the cwd.
    fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, LimaError> {
        let request = request.clone().or_timeout(self.exec_timeout);
        self.ensure_running()?;
        if !self.syncs_vfs_with_host_workspace() {
            let guest_dir = self.guest_dir_mode_p(vfs, vfs_cwd)?;
            let exec = self.exec_in_guest(&guest_dir, &request, on_output, cancel)?;
            return Ok(ToolOutcome {
                exec,
                push: SyncReport::default(),
                pull: None,
            });
        }
        let at = self.locate(vfs, vfs_cwd)?;
        // The runner needs the whole session (`exec_in_guest`): the table is set aside
        // for the cycle and put back afterwards.
        let mut projects = std::mem::take(&mut self.projects);
        let result = run_cycle(projects.get_mut(at.index), vfs, &request.program, |leaf| {
            let guest_leaf = self.guest_path_of_host(leaf)?;
            let guest_dir = join_slash(&guest_leaf, &at.relative_cwd);
            let request = with_cargo_target_dir(&request, join_slash(&guest_leaf, "target"));
            self.exec_in_guest(&guest_dir, &request, on_output, cancel)
        });
        self.projects = projects;
        result
            .map(|cycle| cycle.outcome)
            .map_err(devshell_vm_session::CycleError::into_error)
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

    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), LimaError> {
        Ok(self.projects.set_excludes(globs)?)
    }

    /// Prepares the session: the instance runs, and (once, when
    /// `DEVSHELL_VM_AUTO_BUILD_ESSENTIAL` is on) the guest has a C toolchain for cargo's
    /// linker — if `gcc` is missing and the guest has `apt-get`, the session says so and
    /// then runs `sudo -n apt-get install -y build-essential` with its output shown. In
    /// Mode S the project of `vfs_cwd` is pushed too.
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), LimaError> {
        self.ensure_running()?;
        self.provision()?;
        if self.syncs_vfs_with_host_workspace() {
            let at = self.locate(vfs, vfs_cwd)?;
            let project = self.projects.get_mut(at.index);
            project.push(vfs)?;
        }
        Ok(())
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        self.projects.set_observer(observer);
    }

    /// Every run already pulled its results: closes the guest channel and, with
    /// `DEVSHELL_VM_STOP_ON_EXIT`, stops the Lima instance ([`GammaSession::shutdown`]).
    fn shutdown(&mut self, _vfs: &mut Vfs, _vfs_cwd: &str) -> Result<(), LimaError> {
        GammaSession::shutdown(self)
    }
}

impl Drop for GammaSession {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            channel.close();
        }
        // A staging directory is removed by its own drop (best effort; a leftover is
        // removed by the next session's stale scan).
        self.staging = None;
    }
}

// ---------------------------------------------------------------------- interactive

impl GammaSession {
    /// The guest working directory for an interactive shell started from host directory
    /// `host_cwd`: its image under the mount when it lies under the workspace parent,
    /// else the mount itself.
    #[must_use]
    pub fn interactive_workdir(&self, host_cwd: &Path) -> String {
        let parent = canonical(&self.workspace_parent);
        let cwd = canonical(host_cwd);
        match cwd.strip_prefix(&parent) {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                join_slash(&self.mount, &rel.to_string_lossy())
            }
            _ => self.mount.clone(),
        }
    }

    /// The seed's pair: the interactive shell's guest workdir (for the process's current
    /// directory) and the inner command, the guest user's own login shell.
    #[must_use]
    pub fn lima_interactive_shell_workdir_and_inner(&self) -> (String, String) {
        let cwd = std::env::current_dir().unwrap_or_else(|_| self.workspace_parent.clone());
        (
            self.interactive_workdir(&cwd),
            "exec \"${SHELL:-/bin/sh}\" --login".to_owned(),
        )
    }

    /// `limactl shell --workdir <workdir> <instance>`: Lima then runs the guest user's
    /// login shell there. Used by the facade's `exec_lima_interactive_shell`.
    #[must_use]
    pub fn interactive_shell_command(&self) -> Command {
        let (workdir, _) = self.lima_interactive_shell_workdir_and_inner();
        self.limactl.command([
            "shell".to_owned(),
            "--workdir".to_owned(),
            workdir,
            self.instance.clone(),
        ])
    }
}

// ---------------------------------------------------------------------- helpers

/// The session's staging directory inside the workspace parent (so the guest sees it
/// under the mount): `<parent>/.devshell-vm/s-<pid>-<nanos>-<n>` (held with an owner
/// lock file beside it, see [`StagingDir`]), created on first use, with a
/// `.gitignore` of `*` in `.devshell-vm/` (the parent is often the user's repository).
/// Mode S syncs only in there: a push mirrors the VFS into its own leaf and deletes
/// what the VFS does not have, which must never happen to the user's files (the
/// earlier project's `push_full` could wipe the repository). Staging dirs whose owner
/// is gone are removed when a new one is created.
fn staging_or_create(
    staging: &mut Option<StagingDir>,
    workspace_parent: &Path,
) -> Result<PathBuf, LimaError> {
    if let Some(dir) = &*staging {
        return Ok(dir.path().to_path_buf());
    }
    let base = workspace_parent.join(STAGING_DIR_NAME);
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LimaError::WorkspaceParent { path, source }
    };
    std::fs::create_dir_all(&base).map_err(err(&base))?;
    let ignore = base.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n").map_err(err(&ignore))?;
    }
    let _ = clean_stale_staging(&base, STAGING_PREFIX);
    let dir = StagingDir::create(&base, STAGING_PREFIX)
        .map_err(|e| workspace_parent_error(e, base.clone()))?;
    let path = dir.path().to_path_buf();
    *staging = Some(dir);
    Ok(path)
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// A staging failure as [`LimaError::WorkspaceParent`] (`fallback` names the path for
/// the variants that carry none).
fn workspace_parent_error(err: VmSyncError, fallback: PathBuf) -> LimaError {
    let (path, source) = err.into_io_parts(fallback);
    LimaError::WorkspaceParent { path, source }
}
