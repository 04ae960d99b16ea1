//! Lifecycle: the instance exists, runs, mounts the workspace; start, provision, stop.

use std::path::PathBuf;
use std::process::Stdio;

use crate::LimaError;
use crate::limactl::{InstanceInfo, LimaVersion, shell_argv, status_text};

use super::{
    ChannelState, GammaSession, READY_POLL, READY_TIMEOUT, canonical, workspace_parent_error,
};

impl GammaSession {
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
        self.lima_version()?;
        let info =
            self.limactl
                .list(&self.instance)?
                .ok_or_else(|| LimaError::InstanceMissing {
                    instance: self.instance.clone(),
                    workspace_parent: self.workspace_parent.display().to_string(),
                    mount: self.mount.clone(),
                })?;
        // Status (and Lima's own errors) first: a Broken instance, or one whose
        // lima.yaml does not load, has no `config` to look for the mount in
        // (`pkg/store/instance.go` L51-L68, `pkg/limatype/lima_instance.go` L44-L45 of
        // v2.2.0).
        if !info.errors.is_empty() || !matches!(info.status.as_str(), "Running" | "Stopped") {
            if info.errors.is_empty() {
                return Err(LimaError::UnexpectedStatus {
                    instance: self.instance.clone(),
                    status: info.status.clone(),
                });
            }
            return Err(LimaError::InstanceBroken {
                instance: self.instance.clone(),
                status: info.status.clone(),
                errors: info.errors.join("; "),
            });
        }
        self.check_mount(&info)?;
        self.guest_arch.clone_from(&info.arch);
        if info.status == "Stopped" {
            self.start(&info)?;
        }
        self.wait_until_usable()?;
        self.running = true;
        Ok(())
    }

    /// The Lima release, read once per session with `limactl --version` (and noted in
    /// [`Self::diagnostics`]).
    pub(super) fn lima_version(&mut self) -> Result<Option<LimaVersion>, LimaError> {
        if self.lima_version_read {
            return Ok(self.lima_version);
        }
        let version = self.limactl.version()?;
        self.lima_version = version;
        self.lima_version_read = true;
        let line = match version {
            Some(v) => format!("limactl {v} ({})", self.limactl.path.display()),
            None => format!(
                "limactl {}: `--version` did not parse; assuming the newest behaviour",
                self.limactl.path.display()
            ),
        };
        self.diagnose(line);
        Ok(version)
    }

    /// Lima reports `Running` as soon as the host agent's PID file exists
    /// (`pkg/store/instance.go` L62-L68 of v2.2.0), before ssh answers and the mounts
    /// are up: waits (bounded, [`READY_TIMEOUT`]) until `test -d <mount>` succeeds in
    /// the guest. ssh's 255 and a mount point not there yet are retried; anything else
    /// is an error.
    pub(super) fn wait_until_usable(&mut self) -> Result<(), LimaError> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        let mut told = false;
        loop {
            let argv = shell_argv(
                "/",
                &self.instance,
                &[],
                "test",
                &["-d".to_owned(), self.mount.clone()],
            );
            let out = self.limactl.output(&argv, None)?;
            self.limactl.check_root(&out.stderr)?;
            if out.status.success() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(LimaError::NotReady {
                    instance: self.instance.clone(),
                    mount: self.mount.clone(),
                    waited: READY_TIMEOUT,
                    last: format!(
                        "{}: {}",
                        status_text(out.status),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            if !told {
                told = true;
                let line = format!(
                    "Lima instance {:?} is booting (ssh or the mount {} not ready yet); waiting up to {} s",
                    self.instance,
                    self.mount,
                    READY_TIMEOUT.as_secs()
                );
                self.notice(&line);
            }
            std::thread::sleep(READY_POLL);
        }
    }

    pub(super) fn check_mount(&mut self, info: &InstanceInfo) -> Result<(), LimaError> {
        let want_host = canonical(&self.workspace_parent);
        let found = info.config.mounts.iter().find(|m| {
            m.guest_point().trim_end_matches('/') == self.mount.trim_end_matches('/')
                && canonical(&self.expand_home(&m.location)) == want_host
        });
        if let Some(mount) = found {
            // Lima's default is `writable: false` (`pkg/limayaml/defaults.go` L803 of
            // v2.2.0); Mode S writes the workspace through the mount.
            if self.syncs_vfs_with_host_workspace() && mount.writable != Some(true) {
                return Err(LimaError::MountReadOnly {
                    instance: self.instance.clone(),
                    workspace_parent: self.workspace_parent.display().to_string(),
                    mount: self.mount.clone(),
                });
            }
            if self.syncs_vfs_with_host_workspace()
                && info.config.mount_type.as_deref() == Some("reverse-sshfs")
                && mount.sshfs.as_ref().and_then(|o| o.cache) != Some(false)
            {
                // sshfs caches attributes and directory entries: a file pushed on the
                // host just before the run may look stale or missing in the guest.
                let line = format!(
                    "Lima instance {:?} mounts {} with reverse-sshfs and its cache on (Lima's default): a file pushed just before a run can look stale in the guest; set `sshfs: {{cache: false}}` on that mount in lima.yaml, or use mountType 9p or virtiofs",
                    self.instance, self.mount
                );
                self.notice(&line);
                self.diagnose(line);
            }
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

    pub(super) fn expand_home(&self, location: &str) -> PathBuf {
        match (location.strip_prefix('~'), &self.home) {
            (Some(rest), Some(home)) => home.join(rest.trim_start_matches('/')),
            _ => PathBuf::from(location),
        }
    }

    pub(super) fn start(&mut self, info: &InstanceInfo) -> Result<(), LimaError> {
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

    pub(super) fn lima_dir(&self) -> PathBuf {
        self.lima_home.clone().unwrap_or_else(|| {
            self.home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".lima")
        })
    }

    pub(super) fn provision(&mut self) -> Result<(), LimaError> {
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
}
