//! [`SessionHolder`]: the session of one REPL or script run, an enum over the backend
//! types compiled in.
//!
//! Adding a backend: one `#[cfg(feature = …)]` variant, one arm in [`dispatch!`], one
//! `*_session` constructor pair in [`backends`] (the compiled-in one and the
//! `BackendNotImplemented` one), and the arms the compiler then asks for in the
//! predicates below (guest-primary checks, `exec_lima_interactive_shell`).

use std::process::ExitStatus;

use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::{Backend, VmConfig};
use devshell_vm_exec::ToolRequest;
use devshell_vm_guest_fs::GuestFsOps;
use devshell_vm_session::SyncObserver;
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

use crate::{VmError, VmExecutionSession};

/// Active VM / sandbox backend for one REPL or script run.
#[derive(Debug)]
pub enum SessionHolder {
    /// Host staging directory on this machine ([`HostSandboxSession`]).
    Host(HostSandboxSession),
    /// β: the `devshell-vm-sidecar` daemon ([`devshell_vm_backend_beta::BetaSession`]).
    #[cfg(feature = "beta")]
    Beta(devshell_vm_backend_beta::BetaSession),
    /// γ: a Lima VM driven through `limactl` ([`devshell_vm_backend_lima::GammaSession`];
    /// boxed, it is the largest session).
    #[cfg(all(unix, feature = "lima"))]
    Gamma(Box<devshell_vm_backend_lima::GammaSession>),
}

/// Why [`SessionHolder::from_config_or_host`] gave the host backend instead of the
/// configured one. [`HostFallback::summary`] is one short line; [`HostFallback::detail`]
/// the rest (for a verbose mode).
#[derive(Debug)]
#[non_exhaustive]
pub enum HostFallback {
    /// The Lima backend was asked for (the default) and `limactl` is not on the search
    /// path.
    LimaNotInstalled {
        /// The search path that was used (`PATH`).
        searched: String,
    },
    /// The configured backend cannot be used for another reason.
    Unavailable(VmError),
}

impl HostFallback {
    /// One short line: `Lima not installed; using the host backend (set
    /// DEVSHELL_VM_BACKEND=host to silence)`, or the error and `using the host backend`.
    #[must_use]
    pub fn summary(&self) -> String {
        match self {
            Self::LimaNotInstalled { .. } => "Lima not installed; using the host backend \
                (set DEVSHELL_VM_BACKEND=host to silence)"
                .to_owned(),
            Self::Unavailable(err) => {
                format!(
                    "{} — using the host backend instead",
                    crate::error_chain(err)
                )
            }
        }
    }

    /// What the summary leaves out (the search path for a missing `limactl`).
    #[must_use]
    pub fn detail(&self) -> Option<String> {
        match self {
            Self::LimaNotInstalled { searched } => Some(format!(
                "limactl was searched for in PATH: {searched}; install Lima \
                 (https://lima-vm.io) or set DEVSHELL_VM_LIMACTL to its path"
            )),
            Self::Unavailable(_) => None,
        }
    }
}

/// Runs `$body` with `$session` bound to the inner session of whichever variant
/// `$holder` is. Each backend variant adds one `#[cfg]` arm here.
macro_rules! dispatch {
    ($holder:expr, $session:ident => $body:expr) => {
        match $holder {
            SessionHolder::Host($session) => $body,
            #[cfg(feature = "beta")]
            SessionHolder::Beta($session) => $body,
            #[cfg(all(unix, feature = "lima"))]
            SessionHolder::Gamma($session) => $body,
        }
    };
}

impl SessionHolder {
    /// Builds the session `config` asks for.
    ///
    /// * VM off, or backend `host` / `auto` → [`SessionHolder::Host`].
    /// * `lima` / `beta` → that backend when compiled in (features `lima`, `beta`);
    ///   otherwise [`VmError::BackendNotImplemented`] naming the feature to enable. A
    ///   compiled-in backend that cannot run here (no `limactl`, no socket) is
    ///   [`VmError::BackendUnavailable`].
    ///
    /// Nothing is started or created on disk yet; see [`Self::ensure_ready`].
    ///
    /// # Errors
    /// As above.
    pub fn try_from_config(config: &VmConfig) -> Result<Self, VmError> {
        if config.use_host_sandbox() {
            return Ok(Self::new_host_with(config));
        }
        match config.backend {
            Backend::Host | Backend::Auto => Ok(Self::new_host_with(config)),
            Backend::Lima => backends::lima_session(config),
            Backend::Beta => backends::beta_session(config),
        }
    }

    /// Like [`Self::try_from_config`], but a backend that cannot be used here gives the
    /// host backend (same configuration) plus a [`HostFallback`] saying why, for the front
    /// end to word: one short line, the details (such as the search path) on request.
    #[must_use]
    pub fn from_config_or_host(config: &VmConfig) -> (Self, Option<HostFallback>) {
        #[cfg(all(unix, feature = "lima"))]
        if !config.use_host_sandbox() && config.backend == Backend::Lima {
            return match backends::gamma_session_or_lima_error(config) {
                Ok(session) => (Self::Gamma(Box::new(session)), None),
                Err(devshell_vm_backend_lima::LimaError::LimactlNotFound { searched }) => (
                    Self::new_host_with(config),
                    Some(HostFallback::LimaNotInstalled { searched }),
                ),
                Err(err) => (
                    Self::new_host_with(config),
                    Some(HostFallback::Unavailable(err.into())),
                ),
            };
        }
        match Self::try_from_config(config) {
            Ok(session) => (session, None),
            Err(err) => (
                Self::new_host_with(config),
                Some(HostFallback::Unavailable(err)),
            ),
        }
    }

    /// Host backend configured from the process environment (`PATH`, export base,
    /// exec timeout), whatever backend the environment asks for. If the environment does
    /// not parse, [`VmConfig::host_fallback_from_env`] is used (default settings, but
    /// `PATH` and the cache locations kept); use [`Self::new_host_with`] to pass a config.
    #[must_use]
    pub fn new_host() -> Self {
        let config = VmConfig::from_env().unwrap_or_else(|_| VmConfig::host_fallback_from_env());
        Self::new_host_with(&config)
    }

    /// Host backend configured from `config` (its backend field is not consulted).
    #[must_use]
    pub fn new_host_with(config: &VmConfig) -> Self {
        Self::Host(HostSandboxSession::new(config))
    }

    /// Short name of the active backend: `host`, `lima` or `beta`.
    #[must_use]
    pub const fn backend_name(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            #[cfg(feature = "beta")]
            Self::Beta(_) => "beta",
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(_) => "lima",
        }
    }

    /// See [`VmExecutionSession::ensure_ready`].
    ///
    /// # Errors
    /// Backend-specific failures while preparing VM or staging state.
    pub fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        dispatch!(self, s => VmExecutionSession::ensure_ready(s, vfs, vfs_cwd))
    }

    /// See [`VmExecutionSession::run_rust_tool`].
    ///
    /// # Errors
    /// Infrastructure failures and [`VmError::Timeout`]; a failing tool is `Ok`.
    pub fn run_rust_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        program: &str,
        args: &[String],
    ) -> Result<ExitStatus, VmError> {
        dispatch!(self, s => VmExecutionSession::run_rust_tool(s, vfs, vfs_cwd, program, args))
    }

    /// See [`VmExecutionSession::run_tool`].
    ///
    /// # Errors
    /// Infrastructure failures only.
    pub fn run_tool(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
    ) -> Result<ToolOutcome, VmError> {
        dispatch!(self, s => VmExecutionSession::run_tool(s, vfs, vfs_cwd, request))
    }

    /// See [`VmExecutionSession::set_sync_observer`].
    pub fn set_sync_observer(&mut self, observer: SyncObserver) {
        dispatch!(self, s => VmExecutionSession::set_sync_observer(s, observer));
    }

    /// See [`VmExecutionSession::set_pull_excludes`].
    ///
    /// # Errors
    /// An invalid pattern; nothing changes then.
    pub fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), VmError> {
        dispatch!(self, s => VmExecutionSession::set_pull_excludes(s, globs))
    }

    /// See [`VmExecutionSession::set_forward_interrupts`] (the CLI turns it on; a library
    /// caller that leaves it off keeps its own signal handlers).
    pub fn set_forward_interrupts(&mut self, forward: bool) {
        dispatch!(self, s => VmExecutionSession::set_forward_interrupts(s, forward));
    }

    /// How the last tool run of this session was confined — the mechanisms in force, and
    /// the resource limit that stopped the tool when one did — for the host backend,
    /// which confines its tools itself. `None` before the first run and for the Lima and
    /// β backends (their tools run in the VM or behind the sidecar, which reports its own
    /// confinement in its log).
    #[must_use]
    pub fn last_run_confinement(&self) -> Option<(String, Option<String>)> {
        match self {
            Self::Host(session) => session.last_run().map(|run| {
                (
                    run.mechanisms.to_string(),
                    run.limit.map(|limit| limit.to_string()),
                )
            }),
            #[allow(unreachable_patterns, reason = "other variants exist with features")]
            _ => None,
        }
    }

    /// See [`VmExecutionSession::shutdown`].
    ///
    /// # Errors
    /// Backend-specific failures during shutdown.
    pub fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), VmError> {
        dispatch!(self, s => VmExecutionSession::shutdown(s, vfs, vfs_cwd))
    }

    /// γ **or** β guest-primary (Mode P): the session's [`GuestFsOps`] and guest mount.
    ///
    /// Returns `None` for the host backend and for Mode S sessions. The mount is owned so
    /// the returned trait object does not alias a borrow of the session.
    #[must_use]
    pub fn guest_primary_fs_ops_mut(&mut self) -> Option<(&mut dyn GuestFsOps, String)> {
        match self {
            Self::Host(_) => None,
            #[cfg(feature = "beta")]
            Self::Beta(s) if !s.syncs_vfs_with_host_workspace() => {
                let mount = s.guest_mount().to_owned();
                Some((s as &mut dyn GuestFsOps, mount))
            }
            #[cfg(feature = "beta")]
            Self::Beta(_) => None,
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(g) if !g.syncs_vfs_with_host_workspace() => {
                let mount = g.guest_mount().to_owned();
                Some((&mut **g as &mut dyn GuestFsOps, mount))
            }
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(_) => None,
        }
    }

    /// When γ runs in guest-primary mode (Mode P), the Lima session itself (for direct
    /// guest file operations and its Lima-specific calls).
    ///
    /// Returns `None` for the host backend, β, and Mode S γ.
    #[cfg(all(unix, feature = "lima"))]
    #[must_use]
    pub fn guest_primary_gamma_mut(
        &mut self,
    ) -> Option<&mut devshell_vm_backend_lima::GammaSession> {
        match self {
            Self::Gamma(g) if !g.syncs_vfs_with_host_workspace() => Some(&mut **g),
            _ => None,
        }
    }

    /// `true` when **any** VM session runs in guest-primary mode (no VFS↔host sync).
    #[must_use]
    pub const fn is_guest_primary(&self) -> bool {
        match self {
            Self::Host(_) => false,
            #[cfg(feature = "beta")]
            Self::Beta(s) => !s.syncs_vfs_with_host_workspace(),
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(g) => !g.syncs_vfs_with_host_workspace(),
        }
    }

    /// `true` when γ (Lima) runs in guest-primary mode.
    #[must_use]
    pub const fn is_guest_primary_gamma(&self) -> bool {
        match self {
            Self::Host(_) => false,
            #[cfg(feature = "beta")]
            Self::Beta(_) => false,
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(g) => !g.syncs_vfs_with_host_workspace(),
        }
    }

    /// When `DEVSHELL_VM_ISOLATION=auto` settled for less than namespaces, why and what
    /// confines tools instead — once per session (the host backend; a sidecar logs its
    /// own). Front ends print it so a degrade is never silent.
    pub fn take_isolation_note(&mut self) -> Option<String> {
        match self {
            Self::Host(session) => session.take_isolation_note(),
            #[allow(unreachable_patterns, reason = "other variants exist with features")]
            _ => None,
        }
    }

    /// `true` when using the host staging backend ([`HostSandboxSession`]) rather than γ/β.
    #[must_use]
    pub const fn is_host_only(&self) -> bool {
        matches!(self, Self::Host(_))
    }

    /// `true` when this is a Lima (γ) session, in either mode.
    #[must_use]
    pub const fn is_lima(&self) -> bool {
        match self {
            Self::Host(_) => false,
            #[cfg(feature = "beta")]
            Self::Beta(_) => false,
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(_) => true,
        }
    }

    /// Replaces this process with an interactive `limactl shell` in the guest workspace.
    ///
    /// On success it does not return. It returns the error of the `exec`, or an
    /// [`std::io::ErrorKind::Unsupported`] error when this is not a Lima session.
    #[must_use]
    pub fn exec_lima_interactive_shell(&self) -> std::io::Error {
        match self {
            Self::Host(_) => std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "exec_lima_interactive_shell: this is a host session, not a Lima (gamma) session",
            ),
            #[cfg(feature = "beta")]
            Self::Beta(_) => std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "exec_lima_interactive_shell: this is a beta (sidecar) session, not a Lima (gamma) session",
            ),
            #[cfg(all(unix, feature = "lima"))]
            Self::Gamma(g) => {
                use std::os::unix::process::CommandExt;
                g.interactive_shell_command().exec()
            }
        }
    }
}

/// Constructors of the optional backends: the real one when the feature is on, a
/// [`VmError::BackendNotImplemented`] naming the feature when it is off.
pub(crate) mod backends {
    use devshell_vm_config::VmConfig;

    use crate::{SessionHolder, VmError};

    /// [`VmError::BackendNotImplemented`] text for `lima` without the `lima` feature.
    /// Always compiled, so the CI run (all features) checks it too.
    #[cfg_attr(any(not(unix), feature = "lima"), allow(dead_code))]
    pub(crate) const LIMA_NOT_COMPILED: &str = "DEVSHELL_VM_BACKEND=lima requires building \
        devshell-vm with `--features lima` (a default feature); or set DEVSHELL_VM_BACKEND=host";

    /// [`VmError::BackendNotImplemented`] text for `beta` without the `beta` feature.
    #[cfg_attr(feature = "beta", allow(dead_code))]
    pub(crate) const BETA_NOT_COMPILED: &str = "DEVSHELL_VM_BACKEND=beta requires building \
        devshell-vm with `--features beta` (a default feature); or set DEVSHELL_VM_BACKEND=host";

    /// Lima compiled in: a [`SessionHolder::Gamma`]. The workspace parent is resolved
    /// here with [`crate::workspace_parent_for_config`], so the session mounts exactly the
    /// directory [`crate::vm_workspace_host_root`] and `DEVSHELL_WORKSPACE_ROOT` name.
    /// Without `limactl` the backend is [`VmError::BackendUnavailable`] (the `_or_host`
    /// constructors fall back to the host backend); with `DEVSHELL_VM_EAGER` the instance
    /// is checked and started now, and its failures are [`VmError::Lima`].
    #[cfg(all(unix, feature = "lima"))]
    pub(super) fn lima_session(config: &VmConfig) -> Result<SessionHolder, VmError> {
        new_gamma_session(config).map(|session| SessionHolder::Gamma(Box::new(session)))
    }

    /// The [`devshell_vm_backend_lima::GammaSession`] behind [`lima_session`] (also used
    /// by [`crate::LimaGuestFsOps::new`]).
    #[cfg(all(unix, feature = "lima"))]
    pub(crate) fn new_gamma_session(
        config: &VmConfig,
    ) -> Result<devshell_vm_backend_lima::GammaSession, VmError> {
        use devshell_vm_backend_lima::LimaError;
        match gamma_session_or_lima_error(config) {
            Ok(session) => Ok(session),
            Err(err @ LimaError::LimactlNotFound { .. }) => Err(VmError::BackendUnavailable {
                backend: devshell_vm_config::Backend::Lima,
                reason: err.to_string(),
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// [`new_gamma_session`] with the Lima error kept as it is.
    #[cfg(all(unix, feature = "lima"))]
    pub(super) fn gamma_session_or_lima_error(
        config: &VmConfig,
    ) -> Result<devshell_vm_backend_lima::GammaSession, devshell_vm_backend_lima::LimaError> {
        let config = VmConfig {
            workspace_parent: Some(crate::workspace_parent_for_config(
                config,
                &config.lima_instance,
            )),
            ..config.clone()
        };
        devshell_vm_backend_lima::GammaSession::new(&config)
    }

    #[cfg(all(unix, not(feature = "lima")))]
    pub(super) fn lima_session(_config: &VmConfig) -> Result<SessionHolder, VmError> {
        Err(VmError::BackendNotImplemented(LIMA_NOT_COMPILED))
    }

    #[cfg(not(unix))]
    pub(super) fn lima_session(_config: &VmConfig) -> Result<SessionHolder, VmError> {
        Err(VmError::BackendNotImplemented(
            "the lima backend is only supported on Linux and macOS; set DEVSHELL_VM_BACKEND=host",
        ))
    }

    /// β compiled in: a [`SessionHolder::Beta`] (nothing is connected yet). A config
    /// the β client cannot use (no `DEVSHELL_VM_SOCKET`, no sidecar binary for `stdio`,
    /// an unreadable token file) is [`VmError::BackendUnavailable`] with the reason.
    #[cfg(feature = "beta")]
    pub(super) fn beta_session(config: &VmConfig) -> Result<SessionHolder, VmError> {
        devshell_vm_backend_beta::BetaSession::new(config)
            .map(SessionHolder::Beta)
            .map_err(|err| VmError::BackendUnavailable {
                backend: devshell_vm_config::Backend::Beta,
                reason: err.to_string(),
            })
    }

    #[cfg(not(feature = "beta"))]
    pub(super) fn beta_session(_config: &VmConfig) -> Result<SessionHolder, VmError> {
        Err(VmError::BackendNotImplemented(BETA_NOT_COMPILED))
    }
}

#[cfg(test)]
mod tests {
    use devshell_vm_config::{Backend, VmConfig};

    use super::SessionHolder;

    #[cfg(all(unix, feature = "lima"))]
    #[test]
    fn missing_limactl_is_a_short_notice_with_the_path_as_detail() {
        use super::HostFallback;

        let empty = tempfile::tempdir().expect("tempdir");
        let config = VmConfig {
            enabled: true,
            backend: Backend::Lima,
            limactl: None,
            path: Some(empty.path().as_os_str().to_owned()),
            export_base: Some(empty.path().to_path_buf()),
            ..VmConfig::host_only()
        };
        let (session, notice) = SessionHolder::from_config_or_host(&config);
        assert!(session.is_host_only());
        let notice = notice.expect("a notice");
        assert!(
            matches!(notice, HostFallback::LimaNotInstalled { .. }),
            "{notice:?}"
        );
        assert_eq!(
            notice.summary(),
            "Lima not installed; using the host backend (set DEVSHELL_VM_BACKEND=host to silence)"
        );
        let detail = notice.detail().expect("detail");
        assert!(
            detail.contains(&empty.path().display().to_string()),
            "{detail}"
        );
    }

    #[test]
    fn a_usable_backend_gives_no_notice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = VmConfig {
            enabled: true,
            backend: Backend::Host,
            export_base: Some(dir.path().to_path_buf()),
            ..VmConfig::host_only()
        };
        let (session, notice) = SessionHolder::from_config_or_host(&config);
        assert!(session.is_host_only());
        assert!(notice.is_none(), "{notice:?}");
    }
}
