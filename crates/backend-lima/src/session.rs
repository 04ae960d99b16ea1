//! [`GammaSession`]: one Lima instance, its workspace mount, Mode S and Mode P.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use devshell_vm_config::{VmConfig, WorkspaceMode};
use devshell_vm_exec::{
    CancelHandle, ExecOutcome, OutputMode, StdinMode, StreamKind, Termination, ToolRequest,
};
use devshell_vm_guest_fs::{
    GuestFsError, GuestFsOps, GuestMetadata, check_guest_path, logical_to_guest,
};
use devshell_vm_protocol::{ErrorReply, GuestFsOperation, OutputStream};
use devshell_vm_session::{
    Backend, ProjectTable, SessionError, SyncObserver, join_slash, run_cycle, with_cargo_target_dir,
};
use devshell_vm_sync::{StagingDir, SyncReport, ToolOutcome, VmSyncError, clean_stale_staging};
use devshell_vm_vfs::Vfs;

use crate::channel::{Channel, metadata_from};
use crate::guest_ops;
use crate::limactl::{InstanceInfo, Limactl, is_env_name, shell_argv, status_text};
use crate::{LimaError, workspace_parent_for_instance};

/// Name of the sidecar binary looked up on `PATH` when `DEVSHELL_VM_SIDECAR_BIN` is unset.
pub const SIDECAR_BIN_NAME: &str = "devshell-vm-sidecar";

/// Numbers the staging dirs of this process's sessions.
static NEXT_STAGING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Directory under the workspace parent that holds the sessions' Mode S staging dirs.
pub const STAGING_DIR_NAME: &str = ".devshell-vm";

/// Prefix of each session's staging directory in [`STAGING_DIR_NAME`].
const STAGING_PREFIX: &str = "s-";

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
    provisioned: bool,
    forward_interrupts: bool,
    projects: ProjectTable<()>,
    staging: Option<StagingDir>,
    notices: Box<dyn Write + Send>,
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
            provisioned: false,
            forward_interrupts: false,
            projects: ProjectTable::new(),
            staging: None,
            notices: Box::new(std::io::stderr()),
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

    /// The state of the long-lived channel.
    #[must_use]
    pub fn channel_state(&self) -> &ChannelState {
        &self.channel_state
    }

    fn notice(&mut self, line: &str) {
        let _ = writeln!(self.notices, "devshell-vm: {line}");
    }

    // ------------------------------------------------------------------ lifecycle

    /// Makes sure the instance exists, mounts the workspace parent at the guest mount,
    /// and runs — starting it non-interactively (`limactl start --tty=false`) when it is
    /// stopped, after saying so. Runs `limactl list --format json` once per session.
    ///
    /// # Errors
    /// [`LimaError::InstanceMissing`], [`LimaError::MountMissing`],
    /// [`LimaError::StartFailed`] (with the tail of `ha.stderr.log`),
    /// [`LimaError::UnexpectedStatus`], [`LimaError::WorkspaceParent`], and failures to
    /// run `limactl`.
    pub fn ensure_running(&mut self) -> Result<(), LimaError> {
        if self.running {
            return Ok(());
        }
        std::fs::create_dir_all(&self.workspace_parent).map_err(|source| {
            LimaError::WorkspaceParent {
                path: self.workspace_parent.clone(),
                source,
            }
        })?;
        let info =
            self.limactl
                .list(&self.instance)?
                .ok_or_else(|| LimaError::InstanceMissing {
                    instance: self.instance.clone(),
                    workspace_parent: self.workspace_parent.display().to_string(),
                    mount: self.mount.clone(),
                })?;
        self.check_mount(&info)?;
        match info.status.as_str() {
            "Running" => {}
            "Stopped" => self.start(&info)?,
            other => {
                return Err(LimaError::UnexpectedStatus {
                    instance: self.instance.clone(),
                    status: other.to_owned(),
                });
            }
        }
        self.running = true;
        Ok(())
    }

    fn check_mount(&self, info: &InstanceInfo) -> Result<(), LimaError> {
        let want_host = canonical(&self.workspace_parent);
        let ok = info.config.mounts.iter().any(|m| {
            m.guest_point().trim_end_matches('/') == self.mount.trim_end_matches('/')
                && canonical(&self.expand_home(&m.location)) == want_host
        });
        if ok {
            return Ok(());
        }
        let configured = if info.config.mounts.is_empty() {
            "none".to_owned()
        } else {
            info.config
                .mounts
                .iter()
                .map(|m| format!("{} → {}", m.location, m.guest_point()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(LimaError::MountMissing {
            instance: self.instance.clone(),
            workspace_parent: self.workspace_parent.display().to_string(),
            mount: self.mount.clone(),
            configured,
        })
    }

    fn expand_home(&self, location: &str) -> PathBuf {
        match (location.strip_prefix('~'), &self.home) {
            (Some(rest), Some(home)) => home.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(location),
        }
    }

    fn start(&mut self, info: &InstanceInfo) -> Result<(), LimaError> {
        let line = format!(
            "starting Lima instance {:?} (`limactl start --tty=false {}`); this can take a minute",
            self.instance, self.instance
        );
        self.notice(&line);
        let status = self.limactl.start(&self.instance)?;
        if status.success() {
            return Ok(());
        }
        let dir = if info.dir.is_empty() {
            self.lima_dir().join(&self.instance)
        } else {
            PathBuf::from(&info.dir)
        };
        let log = dir.join("ha.stderr.log");
        let log_tail = match std::fs::read_to_string(&log) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
            Err(e) => format!("(cannot read it: {e})"),
        };
        Err(LimaError::StartFailed {
            instance: self.instance.clone(),
            status: status_text(status),
            log,
            log_tail,
        })
    }

    fn lima_dir(&self) -> PathBuf {
        self.lima_home.clone().unwrap_or_else(|| {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".lima")
        })
    }

    fn provision(&mut self) -> Result<(), LimaError> {
        if self.provisioned || !self.auto_build_essential {
            return Ok(());
        }
        self.provisioned = true;
        let probe = "command -v gcc >/dev/null 2>&1 && echo gcc; command -v apt-get >/dev/null 2>&1 && echo apt; exit 0";
        let mount = self.mount.clone();
        let out = self.capture_in_guest(&mount, "/bin/sh", &["-c".to_owned(), probe.to_owned()])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().any(|l| l == "gcc") {
            return Ok(());
        }
        if !text.lines().any(|l| l == "apt") {
            let line = format!(
                "gcc is missing in Lima instance {:?} and it has no apt-get; install a C toolchain there for cargo's linker",
                self.instance
            );
            self.notice(&line);
            return Ok(());
        }
        let line = format!(
            "gcc is missing in Lima instance {:?}: installing build-essential there now (`sudo -n apt-get install -y build-essential`); set DEVSHELL_VM_AUTO_BUILD_ESSENTIAL=0 to skip this",
            self.instance
        );
        self.notice(&line);
        let argv = shell_argv(
            "/",
            &self.instance,
            &[],
            "sudo",
            &[
                "-n".to_owned(),
                "sh".to_owned(),
                "-c".to_owned(),
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y build-essential".to_owned(),
            ],
        );
        let mut command = self.limactl.command(argv);
        command.stdin(Stdio::null());
        self.limactl.spawned();
        let status = command.status().map_err(|source| LimaError::Spawn {
            program: self.limactl.path.clone(),
            source,
        })?;
        if !status.success() {
            let line = format!(
                "installing build-essential in {:?} failed ({}); install it by hand: `limactl shell {} sudo apt-get install -y build-essential`",
                self.instance,
                status_text(status),
                self.instance
            );
            self.notice(&line);
        }
        Ok(())
    }

    /// Ends the session: closes the channel and, with `DEVSHELL_VM_STOP_ON_EXIT`, stops
    /// the instance (after saying so). Every run already pulled its results, so there is
    /// nothing left to bring back. The session stays usable (it starts again on demand).
    ///
    /// # Errors
    /// [`LimaError::Limactl`] when `limactl stop` fails.
    pub fn shutdown(&mut self) -> Result<(), LimaError> {
        if let Some(channel) = self.channel.take() {
            channel.close();
            self.channel_state = ChannelState::NotOpened;
        }
        self.projects.clear();
        if let Some(dir) = self.staging.take() {
            let fallback = dir.path().to_path_buf();
            dir.remove()
                .map_err(|err| workspace_parent_error(err, fallback))?;
        }
        if self.stop_on_exit && self.running {
            let line = format!(
                "stopping Lima instance {:?} (DEVSHELL_VM_STOP_ON_EXIT)",
                self.instance
            );
            self.notice(&line);
            let out = self.limactl.stop(&self.instance)?;
            self.running = false;
            if !out.status.success() {
                return Err(LimaError::Limactl {
                    command: format!("limactl stop {}", self.instance),
                    status: status_text(out.status),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ tool runs

    /// Mode P: the guest directory of `vfs_cwd` (its project root's leaf under the mount,
    /// plus the cwd below it).
    fn guest_dir_mode_p(&self, vfs: &Vfs, vfs_cwd: &str) -> Result<String, LimaError> {
        let (root, cwd) = devshell_vm_session::locate_guest_primary(vfs, vfs_cwd)?;
        Ok(logical_to_guest(&self.mount, &root, &cwd)?)
    }

    /// The host path of a guest path under the mount (`None` outside it).
    fn host_path_of_guest(&self, guest: &str) -> Option<PathBuf> {
        let mount = devshell_vm_guest_fs::normalize_guest_path(&self.mount).ok()?;
        let guest = devshell_vm_guest_fs::normalize_guest_path(guest).ok()?;
        if !devshell_vm_guest_fs::guest_path_is_under_mount(&mount, &guest) {
            return None;
        }
        let rel = guest
            .strip_prefix(mount.trim_end_matches('/'))?
            .trim_start_matches('/');
        Some(if rel.is_empty() {
            self.workspace_parent.clone()
        } else {
            self.workspace_parent.join(rel)
        })
    }

    /// The guest path of a host path under the workspace parent.
    fn guest_path_of_host(&self, host: &Path) -> Result<String, LimaError> {
        let rel = host
            .strip_prefix(&self.workspace_parent)
            .map_err(|_| LimaError::Io {
                context: format!(
                    "{} is not under the workspace parent {}",
                    host.display(),
                    self.workspace_parent.display()
                ),
                source: std::io::Error::other("path outside the workspace parent"),
            })?;
        let rel = rel.to_str().ok_or_else(|| LimaError::Io {
            context: format!("{} is not valid UTF-8", host.display()),
            source: std::io::Error::other("non-UTF-8 path"),
        })?;
        Ok(join_slash(&self.mount, rel))
    }

    /// The project of `vfs_cwd` (created with its staging subdirectory on first use).
    fn locate(
        &mut self,
        vfs: &Vfs,
        vfs_cwd: &str,
    ) -> Result<devshell_vm_session::Located, LimaError> {
        let Self {
            projects,
            staging,
            workspace_parent,
            ..
        } = self;
        projects.project_for(
            vfs,
            vfs_cwd,
            || staging_or_create(staging, workspace_parent),
            || (),
        )
    }

    /// The session's Mode S staging directory on the host, once created.
    #[must_use]
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_ref().map(StagingDir::path)
    }

    /// Runs `request` in guest directory `guest_dir` through
    /// `limactl shell --workdir <guest_dir> <instance> -- [NAME=value…] command -- <program> <args…>`
    /// (see [`crate::shell_argv`]), with the request's stdio, timeout and interrupt
    /// forwarding. A missing workdir, an unreachable guest (ssh exit 255) and a missing
    /// program (exit 127) become errors, never the tool's status: when the guest shell
    /// exits 1, 255 or 127 — statuses a tool can also return — the session asks the guest
    /// once more (does the workdir exist? does `true` run? is the program on `PATH`?) and
    /// only reports the status as the tool's when the answer clears the infrastructure.
    ///
    /// # Errors
    /// [`LimaError::InvalidRequest`] for an environment name that is not a shell
    /// identifier; [`LimaError::WorkdirMissing`], [`LimaError::Ssh`],
    /// [`LimaError::ProgramMissing`]; spawn failures.
    pub fn exec_in_guest(
        &mut self,
        guest_dir: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ExecOutcome, LimaError> {
        self.exec_in_guest_inner(guest_dir, request, on_output, cancel, true)
    }

    /// [`Self::exec_in_guest`]; `may_restart`: when `limactl shell` refused because the
    /// instance stopped during the session (nothing ran), start it again and retry once.
    fn exec_in_guest_inner(
        &mut self,
        guest_dir: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
        may_restart: bool,
    ) -> Result<ExecOutcome, LimaError> {
        if let Some((name, _)) = request.env.iter().find(|(name, _)| !is_env_name(name)) {
            return Err(LimaError::InvalidRequest {
                reason: format!("environment name {name:?} is not a shell identifier"),
            });
        }
        if request.program.is_empty() || request.program.contains('\0') {
            return Err(LimaError::InvalidRequest {
                reason: format!("program {:?} is empty or contains NUL", request.program),
            });
        }
        if cancel.is_none()
            && let Some(result) = self.exec_over_channel(guest_dir, request, on_output)
        {
            return result;
        }
        let argv = shell_argv(
            guest_dir,
            &self.instance,
            &request.env,
            &request.program,
            &request.args,
        );
        let mut outer_args = Vec::with_capacity(argv.len());
        for a in argv {
            outer_args.push(a.into_string().map_err(|a| LimaError::InvalidRequest {
                reason: format!("argument {} is not UTF-8", a.display()),
            })?);
        }
        let mut outer = ToolRequest::new(self.limactl.path.to_string_lossy(), outer_args)
            .stdin(request.stdin)
            .stdout(request.stdout)
            .stderr(request.stderr)
            .timeout(request.timeout)
            .forward_interrupts(request.forward_interrupts);
        if let Some(home) = &self.lima_home {
            outer = outer.env("LIMA_HOME", home.to_string_lossy());
        }
        let cwd = std::env::temp_dir();
        // The host image of the workdir (under the mount), seen before and after the run:
        // a directory that existed before the run and is gone afterwards was removed by
        // the tool (Lima's `cd` had succeeded), so an exit 1 is then the tool's own.
        let host_image = self.host_path_of_guest(guest_dir);
        let existed_before = host_image.as_deref().is_some_and(Path::is_dir);
        self.limactl.spawned();
        let outcome = devshell_vm_exec::run(&self.limactl.path, &outer, &cwd, on_output, cancel)
            .map_err(|e| LimaError::Io {
                context: format!("running {}", self.limactl.path.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
        let removed_by_tool = existed_before && !host_image.as_deref().is_some_and(Path::is_dir);
        match outcome.termination {
            Termination::Exited(1) if removed_by_tool => {}
            Termination::Exited(1) if !self.guest_dir_exists(guest_dir)? => {
                if self.instance_stopped()? {
                    if may_restart {
                        let line = format!(
                            "Lima instance {:?} stopped during the session; starting it again",
                            self.instance
                        );
                        self.notice(&line);
                        self.running = false;
                        self.ensure_running()?;
                        return self
                            .exec_in_guest_inner(guest_dir, request, on_output, cancel, false);
                    }
                    return Err(LimaError::UnexpectedStatus {
                        instance: self.instance.clone(),
                        status: "Stopped".to_owned(),
                    });
                }
                return Err(LimaError::WorkdirMissing {
                    workdir: guest_dir.to_owned(),
                    instance: self.instance.clone(),
                });
            }
            Termination::Exited(255) => {
                self.check_ssh(&format!("running `{}`", request.program))?;
            }
            Termination::Exited(127)
                if !self.program_exists(guest_dir, &request.env, &request.program)? =>
            {
                return Err(LimaError::ProgramMissing {
                    program: request.program.clone(),
                    instance: self.instance.clone(),
                });
            }
            _ => {}
        }
        Ok(outcome)
    }

    /// Runs a short command in the guest with output captured: through the channel when
    /// it is open and `guest_dir` lies under the mount (the sidecar serves only its root),
    /// else one `limactl shell`.
    fn capture_in_guest(
        &mut self,
        guest_dir: &str,
        program: &str,
        args: &[String],
    ) -> Result<std::process::Output, LimaError> {
        let request = ToolRequest::new(program, args.iter().cloned())
            .stdout(OutputMode::Capture)
            .stderr(OutputMode::Capture);
        if let Some(result) = self.exec_over_channel(guest_dir, &request, &mut |_, _| {}) {
            let outcome = result?;
            let status = outcome.exit_status().ok_or_else(|| LimaError::Channel {
                instance: self.instance.clone(),
                message: format!("probe `{program}` ended without a status"),
            })?;
            return Ok(std::process::Output {
                status,
                stdout: outcome.stdout,
                stderr: outcome.stderr,
            });
        }
        let shell = shell_argv(guest_dir, &self.instance, &[], program, args);
        let out = self.limactl.output(&shell, None)?;
        if out.status.code() == Some(255) {
            self.check_ssh("probing the guest")?;
        }
        Ok(out)
    }

    /// Runs `request` over the channel when that is possible: the channel is open (or
    /// opens), it streams exec output (or the output is discarded anyway), the request
    /// needs no terminal input or Ctrl-C forwarding, and `guest_dir` lies under the mount.
    /// `None` means "use `limactl shell`".
    fn exec_over_channel(
        &mut self,
        guest_dir: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
    ) -> Option<Result<ExecOutcome, LimaError>> {
        if request.stdin != StdinMode::Null
            || request.forward_interrupts
            || !devshell_vm_guest_fs::guest_path_is_under_mount(&self.mount, guest_dir)
        {
            return None;
        }
        let discards = request.stdout == OutputMode::Null && request.stderr == OutputMode::Null;
        let started = std::time::Instant::now();
        let channel = self.channel_mut()?;
        if !channel.streams_exec_output() && !discards {
            return None;
        }
        let mut argv = vec![request.program.clone()];
        argv.extend(request.args.iter().cloned());
        let env: BTreeMap<String, String> = request.env.iter().cloned().collect();
        let timeout_ms = request
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let result = channel.exec(guest_dir, argv, env, timeout_ms, &mut |stream, data| {
            let (mode, kind, buffer) = match stream {
                OutputStream::Stdout => (request.stdout, StreamKind::Stdout, &mut stdout),
                OutputStream::Stderr => (request.stderr, StreamKind::Stderr, &mut stderr),
            };
            match mode {
                OutputMode::Capture => buffer.extend_from_slice(data),
                OutputMode::Stream => on_output(kind, data),
                OutputMode::Inherit => {
                    let _ = match kind {
                        StreamKind::Stdout => std::io::stdout().write_all(data),
                        StreamKind::Stderr => std::io::stderr().write_all(data),
                    };
                }
                OutputMode::Null => {}
            }
        });
        let termination = match result {
            Ok(Ok(done)) => match done.signal {
                Some(signal) => Termination::Signaled(signal),
                None => Termination::Exited(done.exit_code),
            },
            // The sidecar killed the process group at the deadline.
            Ok(Err(reply)) if reply.code.as_str() == "exec_timeout" => Termination::TimedOut,
            Ok(Err(reply)) => return Some(Err(self.exec_refused(guest_dir, request, &reply))),
            Err(broken) => {
                self.channel_broke(&broken);
                // The tool may have run partly: never run it a second time.
                return Some(Err(LimaError::Channel {
                    instance: self.instance.clone(),
                    message: broken,
                }));
            }
        };
        Some(Ok(ExecOutcome {
            termination,
            stdout,
            stderr,
            duration: started.elapsed(),
        }))
    }

    /// The error for a sidecar `error` reply to an `exec`.
    fn exec_refused(
        &self,
        guest_dir: &str,
        request: &ToolRequest,
        reply: &ErrorReply,
    ) -> LimaError {
        match reply.code.as_str() {
            "bad_guest_cwd" => LimaError::WorkdirMissing {
                workdir: guest_dir.to_owned(),
                instance: self.instance.clone(),
            },
            "exec_spawn"
                if reply.message.contains("No such file")
                    || reply.message.contains("not found") =>
            {
                LimaError::ProgramMissing {
                    program: request.program.clone(),
                    instance: self.instance.clone(),
                }
            }
            "forbidden_env" | "invalid_request" => LimaError::InvalidRequest {
                reason: format!("the guest sidecar refused the request: {}", reply.message),
            },
            code => LimaError::Channel {
                instance: self.instance.clone(),
                message: format!("exec failed: {code}: {}", reply.message),
            },
        }
    }

    fn guest_dir_exists(&mut self, dir: &str) -> Result<bool, LimaError> {
        if devshell_vm_guest_fs::guest_path_is_under_mount(&self.mount, dir)
            && let Some(result) = self.fs_channel(GuestFsOperation::Stat, dir, None, None)
        {
            return match result {
                Ok(ok) => Ok(metadata_from(&ok, dir)?.kind == devshell_vm_guest_fs::GuestKind::Dir),
                Err(GuestFsError::NotFound { .. } | GuestFsError::NotADirectory { .. }) => {
                    Ok(false)
                }
                Err(other) => Err(other.into()),
            };
        }
        let out = self.capture_in_guest("/", "test", &["-d".to_owned(), dir.to_owned()])?;
        Ok(out.status.success())
    }

    fn program_exists(
        &mut self,
        dir: &str,
        env: &[(String, String)],
        program: &str,
    ) -> Result<bool, LimaError> {
        // Through a login shell with the request's environment, like the tool run itself
        // (PATH from the guest profile, or the request's own PATH); `/bin/sh` by its path
        // so a request PATH without it still runs the probe.
        let argv = shell_argv(
            if self.guest_dir_exists(dir)? {
                dir
            } else {
                "/"
            },
            &self.instance,
            env,
            "/bin/sh",
            &[
                "-c".to_owned(),
                "command -v \"$1\" >/dev/null".to_owned(),
                "sh".to_owned(),
                program.to_owned(),
            ],
        );
        let out = self.limactl.output(&argv, None)?;
        if out.status.code() == Some(255) {
            self.check_ssh("probing for the program")?;
        }
        Ok(out.status.success())
    }

    /// `true` when `limactl list` no longer reports the instance running (it was
    /// stopped from outside the session).
    fn instance_stopped(&mut self) -> Result<bool, LimaError> {
        match self.limactl.list(&self.instance)? {
            Some(info) => Ok(info.status != "Running"),
            None => Err(LimaError::InstanceMissing {
                instance: self.instance.clone(),
                workspace_parent: self.workspace_parent.display().to_string(),
                mount: self.mount.clone(),
            }),
        }
    }

    /// After an exit status of 255: one `limactl shell … true`; if that fails with 255
    /// too, the guest is unreachable.
    fn check_ssh(&mut self, context: &str) -> Result<(), LimaError> {
        let argv = shell_argv("/", &self.instance, &[], "true", &[]);
        let out = self.limactl.output(&argv, None)?;
        if out.status.success() {
            Ok(())
        } else {
            if let Some(channel) = self.channel.take() {
                channel.close();
                self.channel_state = ChannelState::NotOpened;
            }
            Err(LimaError::Ssh {
                instance: self.instance.clone(),
                context: context.to_owned(),
            })
        }
    }

    // ------------------------------------------------------------------ channel

    /// The open channel, opening it on first use; `None` when it cannot be had.
    fn channel_mut(&mut self) -> Option<&mut Channel> {
        if self.channel_state == ChannelState::NotOpened {
            match self.open_channel() {
                Ok(channel) => {
                    self.channel = Some(channel);
                    self.channel_state = ChannelState::Open;
                }
                Err(reason) => {
                    let line = format!(
                        "no long-lived channel to Lima instance {:?} ({reason}); using one `limactl shell` per operation",
                        self.instance
                    );
                    // In Mode S the channel only saves a spawn on captured runs: say
                    // nothing unless a sidecar was configured and failed.
                    if self.lima_hints
                        && (!self.syncs_vfs_with_host_workspace() || self.sidecar_bin.is_some())
                    {
                        self.notice(&line);
                    }
                    self.channel_state = ChannelState::Fallback(reason);
                }
            }
        }
        if let Some(channel) = &mut self.channel {
            if channel.is_alive() {
                return self.channel.as_mut();
            }
            self.channel_broke("the sidecar process exited");
        }
        None
    }

    fn channel_broke(&mut self, message: &str) {
        if let Some(channel) = self.channel.take() {
            channel.close();
        }
        let line = format!(
            "the channel to Lima instance {:?} broke ({message}); using one `limactl shell` per operation",
            self.instance
        );
        self.notice(&line);
        self.channel_state = ChannelState::Fallback(message.to_owned());
    }

    fn open_channel(&mut self) -> Result<Channel, String> {
        let Some(sidecar) = self.sidecar_bin.clone() else {
            return Err(format!(
                "no sidecar binary: set DEVSHELL_VM_SIDECAR_BIN or put {SIDECAR_BIN_NAME} on PATH"
            ));
        };
        if !sidecar.is_file() {
            return Err(format!("sidecar {} does not exist", sidecar.display()));
        }
        self.ensure_running().map_err(|e| e.to_string())?;
        let (guest_bin, copied) = if let Ok(rel) = sidecar.strip_prefix(&self.workspace_parent) {
            (join_slash(&self.mount, &rel.to_string_lossy()), false)
        } else {
            // A name of its own per session: a running sidecar's file is never
            // overwritten (ETXTBSY) by another session's copy.
            let guest = format!(
                "/tmp/{SIDECAR_BIN_NAME}-{}-{}-{}",
                std::process::id(),
                NEXT_STAGING.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                devshell_vm_config::sanitize_instance_dir_name(&self.instance)
            );
            let out = self
                .limactl
                .copy_to_guest(&sidecar, &self.instance, &guest)
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "`limactl copy` of the sidecar failed ({}): {}",
                    status_text(out.status),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            (guest, true)
        };
        // Check the guest can run the binary (Linux, same architecture), then exec it. A
        // copied binary is opened, unlinked and run through /proc/self/fd, so it never
        // outlives the session in the guest's /tmp.
        let run = if copied {
            "exec 3<\"$0\" && rm -f -- \"$0\" && exec /proc/self/fd/3 --serve-stdio --root \"$1\""
        } else {
            "exec \"$0\" --serve-stdio --root \"$1\""
        };
        let script = format!(
            "case \"$(uname -s) $(uname -m)\" in \"Linux {arch}\") ;; *) echo \"guest $(uname -s) $(uname -m) cannot run the sidecar (Linux {arch})\" >&2; exit {ARCH_MISMATCH};; esac; {run}",
            arch = std::env::consts::ARCH
        );
        let argv = shell_argv(
            &self.mount,
            &self.instance,
            &[],
            "/bin/sh",
            &["-c".to_owned(), script, guest_bin, self.mount.clone()],
        );
        let mut command = self.limactl.command(argv);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        self.limactl.spawned();
        let child = command
            .spawn()
            .map_err(|e| format!("spawning limactl shell: {e}"))?;
        Channel::open(child, &self.mount)
    }

    // ------------------------------------------------------------------ guest fs

    fn fs_ready(&mut self, path: &str) -> Result<String, GuestFsError> {
        let normalized = check_guest_path(&self.mount, path)?;
        self.ensure_running().map_err(|e| GuestFsError::Transport {
            message: e.to_string(),
        })?;
        Ok(normalized)
    }

    /// One operation over the channel; `None` when there is no channel (or it broke).
    fn fs_channel(
        &mut self,
        op: GuestFsOperation,
        path: &str,
        content: Option<&[u8]>,
        to: Option<&str>,
    ) -> Option<Result<devshell_vm_protocol::GuestFsOk, GuestFsError>> {
        let v2 = op.is_v2();
        let channel = self.channel_mut()?;
        if v2 && !channel.has_guest_fs_v2() {
            return None;
        }
        match channel.guest_fs(op, path, content, to) {
            Ok(ok) => Some(Ok(ok)),
            Err(Ok(err)) => Some(Err(err)),
            Err(Err(broken)) => {
                self.channel_broke(&broken);
                None
            }
        }
    }

    /// One operation through its own `limactl shell` (the fallback).
    fn fs_shell(
        &mut self,
        op: &str,
        path: &str,
        to: Option<&str>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, GuestFsError> {
        let mut args = vec![
            "-c".to_owned(),
            guest_ops::SCRIPT.to_owned(),
            "devshell-vm-op".to_owned(),
            self.mount.clone(),
            op.to_owned(),
            path.to_owned(),
        ];
        if let Some(to) = to {
            args.push(to.to_owned());
        }
        let shell: Vec<OsString> = shell_argv("/", &self.instance, &[], "/bin/sh", &args);
        let out = self
            .limactl
            .output(&shell, Some(input.unwrap_or_default()))
            .map_err(|e| GuestFsError::Transport {
                message: e.to_string(),
            })?;
        match out.status.code() {
            Some(0) => Ok(out.stdout),
            Some(255) => Err(GuestFsError::Transport {
                message: format!(
                    "cannot reach Lima instance {:?} over ssh (exit 255): {}",
                    self.instance,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
            Some(code) => Err(guest_ops::error_for(code, path, to, &out.stderr)),
            None => Err(GuestFsError::Transport {
                message: format!("limactl shell ended by {}", status_text(out.status)),
            }),
        }
    }
}

impl GuestFsOps for GammaSession {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::ListDir, &path, None, None) {
            let mut names = result?.names.unwrap_or_default();
            names.sort();
            return Ok(names);
        }
        Ok(guest_ops::parse_names(
            &self.fs_shell("list_dir", &path, None, None)?,
        ))
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::ReadFile, &path, None, None) {
            return result?
                .content()
                .map(Option::unwrap_or_default)
                .map_err(|e| GuestFsError::Internal {
                    message: format!("read_file {path:?}: {e}"),
                });
        }
        self.fs_shell("read_file", &path, None, None)
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::WriteFile, &path, Some(data), None)
        {
            return result.map(|_| ());
        }
        self.fs_shell("write_file", &path, None, Some(data))
            .map(|_| ())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::Mkdir, &path, None, None) {
            return result.map(|_| ());
        }
        self.fs_shell("mkdir", &path, None, None).map(|_| ())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if path == self.mount {
            return Err(GuestFsError::invalid_path(
                path,
                "the guest mount itself cannot be removed",
            ));
        }
        if let Some(result) = self.fs_channel(GuestFsOperation::Remove, &path, None, None) {
            return result.map(|_| ());
        }
        self.fs_shell("remove", &path, None, None).map(|_| ())
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::Stat, &path, None, None) {
            return metadata_from(&result?, &path);
        }
        guest_ops::parse_stat(&self.fs_shell("stat", &path, None, None)?, &path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        let from = self.fs_ready(from)?;
        let to = check_guest_path(&self.mount, to)?;
        if from == self.mount {
            return Err(GuestFsError::invalid_path(
                from,
                "the guest mount itself cannot be moved",
            ));
        }
        if to == self.mount {
            return Err(GuestFsError::IsADirectory { path: to });
        }
        if let Some(result) = self.fs_channel(GuestFsOperation::Rename, &from, None, Some(&to)) {
            return result.map(|_| ());
        }
        self.fs_shell("rename", &from, Some(&to), None).map(|_| ())
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
            let vfs_root = project.vfs_root().to_owned();
            devshell_vm_sync::push_incremental(vfs, &vfs_root, &mut project.state).map_err(
                |source| SessionError::Push {
                    vfs_path: vfs_root,
                    source: Box::new(source),
                },
            )?;
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
