//! Tool runs: `limactl shell` (or the channel), the probes that tell infrastructure
//! failures from the tool's own status, and the long-lived channel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use devshell_vm_exec::{
    CancelHandle, ExecOutcome, OutputMode, StdinMode, StreamKind, Termination, ToolRequest,
};
use devshell_vm_guest_fs::{GuestFsError, logical_to_guest};
use devshell_vm_protocol::{ErrorReply, GuestFsOperation, OutputStream};
use devshell_vm_session::join_slash;
use devshell_vm_sync::StagingDir;
use devshell_vm_vfs::Vfs;

use crate::LimaError;
use crate::channel::{Channel, metadata_from};
use crate::limactl::{LimaVersion, is_env_name, shell_argv, status_text};

use super::{
    ARCH_MISMATCH, ChannelState, GammaSession, NEXT_STAGING, PullTracker, SIDECAR_BIN_NAME,
    staging_or_create,
};

impl GammaSession {
    // ------------------------------------------------------------------ tool runs

    /// Mode P: the guest directory of `vfs_cwd` (its project root's leaf under the mount,
    /// plus the cwd below it).
    pub(super) fn guest_dir_mode_p(&self, vfs: &Vfs, vfs_cwd: &str) -> Result<String, LimaError> {
        let (root, cwd) = devshell_vm_session::locate_guest_primary(vfs, vfs_cwd)?;
        Ok(logical_to_guest(&self.mount, &root, &cwd)?)
    }

    /// The host path of a guest path under the mount (`None` outside it).
    pub(super) fn host_path_of_guest(&self, guest: &str) -> Option<PathBuf> {
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
    pub(super) fn guest_path_of_host(&self, host: &Path) -> Result<String, LimaError> {
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
    pub(super) fn locate(
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
            PullTracker::default,
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
    pub(super) fn exec_in_guest_inner(
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
        // The host image of the workdir (under the mount), seen before and after the run:
        // a directory that existed before the run and is gone afterwards was removed by
        // the tool (Lima's `cd` had succeeded), so an exit 1 is then the tool's own.
        let host_image = self.host_path_of_guest(guest_dir);
        let existed_before = host_image.as_deref().is_some_and(Path::is_dir);
        let outcome = self.launch(guest_dir, request, on_output, cancel)?;
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
            // Lima 1.1.0 – 2.0.3 can exit 0 from `shell` on a stopped instance having run
            // nothing (see `LimaVersion::shell_may_exit_0_without_running`): on those
            // releases a 0 is only the tool's once the instance is known to run.
            Termination::Exited(0)
                if self
                    .lima_version()?
                    .is_some_and(LimaVersion::shell_may_exit_0_without_running)
                    && self.instance_stopped()? =>
            {
                if may_restart {
                    let line = format!(
                        "Lima instance {:?} stopped during the session (limactl shell exited 0 without running `{}`); starting it again",
                        self.instance, request.program
                    );
                    self.notice(&line);
                    self.running = false;
                    self.ensure_running()?;
                    return self.exec_in_guest_inner(guest_dir, request, on_output, cancel, false);
                }
                return Err(LimaError::UnexpectedStatus {
                    instance: self.instance.clone(),
                    status: "Stopped".to_owned(),
                });
            }
            Termination::Exited(255) => {
                self.check_ssh(&format!("running `{}`", request.program))?;
                // ssh answers: the 255 is the command's. OpenSSH exits 255 when the
                // remote command was killed by a signal (sshd sends no exit-status then),
                // so say what it may mean instead of guessing.
                let line = format!(
                    "`{}` in Lima instance {:?} ended with status 255: either it exited 255 or it was killed by a signal (ssh reports no exit status for a signal death)",
                    request.program, self.instance
                );
                self.notice(&line);
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

    /// Spawns the run: through the guest supervisor with a lifeline stdin when it is
    /// timed or cancellable (see `supervise`), else `limactl shell` with the caller's
    /// stdio through `devshell_vm_exec::run`.
    fn launch(
        &mut self,
        guest_dir: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ExecOutcome, LimaError> {
        // Timed and cancellable runs go through the guest supervisor with a lifeline
        // stdin, so a kill reaches the guest process (see `supervise`).
        let supervised = (request.timeout.is_some() || cancel.is_some())
            && request.stdin == StdinMode::Null
            && !request.forward_interrupts;
        let argv = if supervised {
            let mut args = vec![
                "-c".to_owned(),
                super::supervise::SUPERVISOR.to_owned(),
                super::supervise::SUPERVISOR_NAME.to_owned(),
                request.program.clone(),
            ];
            args.extend(request.args.iter().cloned());
            shell_argv(guest_dir, &self.instance, &request.env, "/bin/sh", &args)
        } else {
            shell_argv(
                guest_dir,
                &self.instance,
                &request.env,
                &request.program,
                &request.args,
            )
        };
        self.limactl.spawned();
        let outcome = if supervised {
            super::supervise::run(
                &self.limactl.path,
                self.lima_home.as_ref(),
                &argv,
                request,
                on_output,
                cancel,
            )?
        } else {
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
            devshell_vm_exec::run(&self.limactl.path, &outer, &cwd, on_output, cancel).map_err(
                |e| LimaError::Io {
                    context: format!("running {}", self.limactl.path.display()),
                    source: std::io::Error::other(e.to_string()),
                },
            )?
        };
        Ok(outcome)
    }

    /// Runs a short command in the guest with output captured: through the channel when
    /// it is open and `guest_dir` lies under the mount (the sidecar serves only its root),
    /// else one `limactl shell`.
    pub(super) fn capture_in_guest(
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
    pub(super) fn exec_over_channel(
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
    pub(super) fn exec_refused(
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

    pub(super) fn guest_dir_exists(&mut self, dir: &str) -> Result<bool, LimaError> {
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

    pub(super) fn program_exists(
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
    pub(super) fn instance_stopped(&mut self) -> Result<bool, LimaError> {
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
    pub(super) fn check_ssh(&mut self, context: &str) -> Result<(), LimaError> {
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
    pub(super) fn channel_mut(&mut self) -> Option<&mut Channel> {
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

    pub(super) fn channel_broke(&mut self, message: &str) {
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

    pub(super) fn open_channel(&mut self) -> Result<Channel, String> {
        let Some(sidecar) = self.sidecar_bin.clone() else {
            return Err(format!(
                "no sidecar binary: set DEVSHELL_VM_SIDECAR_BIN or put {SIDECAR_BIN_NAME} on PATH"
            ));
        };
        if !sidecar.is_file() {
            return Err(format!("sidecar {} does not exist", sidecar.display()));
        }
        self.ensure_running().map_err(|e| e.to_string())?;
        // What the binary is, checked on the host before it goes anywhere near the guest.
        let guest_arch = if self.guest_arch.is_empty() {
            std::env::consts::ARCH.to_owned()
        } else {
            self.guest_arch.clone()
        };
        let kind = crate::binary::inspect(&sidecar)
            .map_err(|e| format!("cannot read the sidecar {}: {e}", sidecar.display()))?;
        self.diagnose(format!(
            "sidecar {}: {}; guest: Linux {guest_arch}",
            sidecar.display(),
            kind.describe()
        ));
        let dynamic_glibc = match &kind {
            crate::binary::BinaryKind::Elf { arch, interpreter } if *arch == guest_arch => {
                interpreter.as_deref().is_some_and(|i| !i.contains("musl"))
            }
            other => {
                return Err(format!(
                    "the sidecar {} is {}, which the Linux {guest_arch} guest cannot run; {}",
                    sidecar.display(),
                    other.describe(),
                    crate::binary::static_build_hint(&guest_arch)
                ));
            }
        };
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
            "case \"$(uname -s) $(uname -m)\" in \"Linux {guest_arch}\") ;; *) echo \"guest $(uname -s) $(uname -m) cannot run the sidecar (Linux {guest_arch})\" >&2; exit {ARCH_MISMATCH};; esac; {run}"
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
        let channel = Channel::open(child, &self.mount).map_err(|reason| {
            if dynamic_glibc {
                format!(
                    "{reason} (the sidecar is linked against the host's glibc, which the guest may lack; {})",
                    crate::binary::static_build_hint(&guest_arch)
                )
            } else {
                reason
            }
        })?;
        if channel.stray_lines() > 0 {
            self.diagnose(format!(
                "the guest login profile printed {} line(s) to stdout before the sidecar started (skipped; they also reach the stdout of tools run through `limactl shell`)",
                channel.stray_lines()
            ));
        }
        Ok(channel)
    }
}
