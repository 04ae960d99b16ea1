//! devshell-vm: keep a Rust project **in memory** and still run `cargo` on it in
//! isolation, one session at a time.
//!
//! A [`Vfs`] holds the project tree. A [`SessionHolder`] runs a tool against it:
//! in Mode S (sync) the session pushes what changed in the VFS to the backend's
//! workspace, runs the tool there, and pulls back what the tool changed — build output
//! included — so after `cargo build` the binary is in the VFS. Unchanged files keep their
//! mtimes both ways, so a second build finds everything fresh and an edit recompiles
//! exactly the crate it touches.
//!
//! Backends (chosen at run time from [`VmConfig`], i.e. `DEVSHELL_VM*` variables):
//!
//! * **host** — a private staging directory on this machine
//!   ([`HostSandboxSession`]); always compiled in, needs nothing;
//! * **lima** (γ) — a Lima VM driven through `limactl` (feature `lima`);
//! * **beta** (β) — a `devshell-vm-sidecar` daemon over a socket or stdio (feature `beta`).
//!
//! # Example
//!
//! Load a small crate into the VFS, build it with the host backend, read the binary back:
//!
//! ```
//! use devshell_vm::{Backend, SessionHolder, Vfs, VmConfig};
//!
//! let export_base = tempfile::tempdir()?; // the session's staging dirs go here
//! let config = VmConfig {
//!     backend: Backend::Host,
//!     export_base: Some(export_base.path().to_path_buf()),
//!     ..VmConfig::from_env()? // PATH (to find cargo), HOME, ...
//! };
//!
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/hello/src")?;
//! vfs.write_file(
//!     "/hello/Cargo.toml",
//!     b"[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_vec(),
//! )?;
//! vfs.write_file("/hello/src/main.rs", b"fn main() { println!(\"hi\"); }\n".to_vec())?;
//!
//! let mut session = SessionHolder::try_from_config(&config)?;
//! let args = ["build".to_owned(), "--quiet".to_owned()];
//! let status = session.run_rust_tool(&mut vfs, "/hello/src", "cargo", &args)?;
//! assert!(status.success());
//!
//! let binary = vfs.read_file("/hello/target/debug/hello")?;
//! assert!(binary.starts_with(b"\x7fELF") || binary.starts_with(&[0xcf, 0xfa, 0xed, 0xfe]));
//! session.shutdown(&mut vfs, "/hello")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Cargo features
//!
//! | Feature | Default | Adds |
//! |---|---|---|
//! | `lima` | yes | the Lima (γ) backend, `DEVSHELL_VM_BACKEND=lima` (Unix only) |
//! | `beta` | yes | the β sidecar client, `DEVSHELL_VM_BACKEND=beta` |
//!
//! With `default-features = false` only the host backend is compiled; asking for
//! another one is [`VmError::BackendNotImplemented`] with a message naming the feature
//! to enable (never a panic or a compile error).
//!
//! # Choosing a session
//!
//! [`try_session_rc`] builds the configured session from the process environment and
//! reports failures to the caller's stderr; [`try_session_rc_or_host`] falls back to the
//! host backend with a one-line note, so a fresh machine without Lima still works.
//! With `DEVSHELL_VM` unset the configured backend is `lima`.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod holder;
#[cfg(all(unix, feature = "lima"))]
mod lima_ops;
mod session;
mod workspace;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

pub use error::{VmError, VmSessionInitError};
pub use holder::{HostFallback, SessionHolder};
pub use session::VmExecutionSession;
pub use workspace::{
    ENV_DEVSHELL_WORKSPACE_ROOT, export_devshell_workspace_root_env, vm_workspace_host_root,
    workspace_parent_for_config, workspace_parent_for_instance, workspace_root_env_for,
};

pub use devshell_vm_backend_host::{HostError, HostSandboxSession};
/// The Lima (γ) session type ([`SessionHolder::Gamma`]), as the seed re-exported it.
#[cfg(all(unix, feature = "lima"))]
pub use devshell_vm_backend_lima::GammaSession;
pub use devshell_vm_config::{
    Backend, ConfigError, ENV_DEVSHELL_EXPORT_BASE, ENV_DEVSHELL_VM,
    ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL, ENV_DEVSHELL_VM_AUTO_BUILD_TODO_GUEST,
    ENV_DEVSHELL_VM_AUTO_TODO_PATH, ENV_DEVSHELL_VM_BACKEND, ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
    ENV_DEVSHELL_VM_CONTAINER_IMAGE, ENV_DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME,
    ENV_DEVSHELL_VM_EAGER, ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, ENV_DEVSHELL_VM_GUEST_HOST_DIR,
    ENV_DEVSHELL_VM_GUEST_TODO_HINT, ENV_DEVSHELL_VM_GUEST_WORKSPACE,
    ENV_DEVSHELL_VM_INTERNAL_REPL, ENV_DEVSHELL_VM_LIMA_HINTS, ENV_DEVSHELL_VM_LIMA_INSTANCE,
    ENV_DEVSHELL_VM_LIMACTL, ENV_DEVSHELL_VM_LINUX_BINARY, ENV_DEVSHELL_VM_REPO_ROOT,
    ENV_DEVSHELL_VM_SIDECAR_BIN, ENV_DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP, ENV_DEVSHELL_VM_SOCKET,
    ENV_DEVSHELL_VM_STDIO_TRANSPORT, ENV_DEVSHELL_VM_STOP_ON_EXIT, ENV_DEVSHELL_VM_TOKEN_FILE,
    ENV_DEVSHELL_VM_WORKSPACE_MODE, ENV_DEVSHELL_VM_WORKSPACE_PARENT,
    ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT, ENV_EXPORT_BASE, EnvSource, Transport, VmConfig,
    WorkspaceMode, exec_timeout_ms_from_env, workspace_mode_from_env,
};
pub use devshell_vm_exec::{OutputMode, StdinMode, Termination, ToolRequest};
pub use devshell_vm_guest_fs::{
    GuestFsError, GuestFsOps, MockGuestFsOps, guest_path_is_under_mount,
    guest_project_dir_on_guest, normalize_guest_path,
};
pub use devshell_vm_session::{
    Backend as SessionBackend, SessionError, SyncObserver, project_root,
};
pub use devshell_vm_sync::{
    SyncProgress, SyncReport, ToolOutcome, VmSyncError, pull_workspace_to_vfs, push_full,
    push_incremental,
};
pub use devshell_vm_vfs::{IntoContent, Vfs};
#[cfg(all(unix, feature = "lima"))]
pub use lima_ops::LimaGuestFsOps;

/// The configuration crate (every `DEVSHELL_VM*` name and its parsing).
pub use devshell_vm_config as config;
/// Tool execution (process groups, timeouts, capture).
pub use devshell_vm_exec as exec;
/// Guest path rules and the [`GuestFsOps`] contract.
pub use devshell_vm_guest_fs as guest_fs;
/// What every backend shares: project roots, the Mode S cycle, the backend trait.
pub use devshell_vm_session as session_layer;
/// Push and pull between the VFS and a host directory.
pub use devshell_vm_sync as sync;
/// The in-memory workspace tree and its image format.
pub use devshell_vm_vfs as vfs;

/// The whole message of `err` and its causes, `": "`-joined: every error in this
/// workspace prints its own words once and leaves the cause to
/// [`std::error::Error::source`], so this is how a front end shows everything.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Builds the configured [`SessionHolder`] from the process environment.
///
/// On failure (invalid environment, backend not compiled in or unavailable — e.g. the
/// default Lima backend without `limactl`) writes `devshell-vm: <reason>` to `stderr` and
/// returns [`VmSessionInitError`]. `DEVSHELL_VM=off` or `DEVSHELL_VM_BACKEND=host` force
/// the host backend.
///
/// # Errors
/// [`VmSessionInitError`] when the session cannot be built (already reported).
pub fn try_session_rc(
    stderr: &mut dyn Write,
) -> Result<Rc<RefCell<SessionHolder>>, VmSessionInitError> {
    let config = match VmConfig::from_env() {
        Ok(config) => config,
        Err(err) => {
            let _ = writeln!(stderr, "devshell-vm: {}", error_chain(&VmError::from(err)));
            return Err(VmSessionInitError);
        }
    };
    try_session_rc_from_config(&config, stderr)
}

/// [`try_session_rc`] for an explicit configuration.
///
/// # Errors
/// [`VmSessionInitError`] when the session cannot be built (already reported).
pub fn try_session_rc_from_config(
    config: &VmConfig,
    stderr: &mut dyn Write,
) -> Result<Rc<RefCell<SessionHolder>>, VmSessionInitError> {
    match SessionHolder::try_from_config(config) {
        Ok(session) => Ok(Rc::new(RefCell::new(session))),
        Err(err) => {
            let _ = writeln!(stderr, "devshell-vm: {}", error_chain(&err));
            Err(VmSessionInitError)
        }
    }
}

/// Like [`try_session_rc`], but when the configured backend cannot be used it writes one
/// line saying why and returns a [`SessionHolder::Host`] session instead.
#[must_use]
pub fn try_session_rc_or_host(stderr: &mut dyn Write) -> Rc<RefCell<SessionHolder>> {
    match VmConfig::from_env() {
        Ok(config) => session_or_host(&config, stderr),
        Err(err) => {
            let _ = writeln!(
                stderr,
                "devshell-vm: {}; using the host backend with default settings (PATH and HOME kept)",
                error_chain(&VmError::from(err))
            );
            Rc::new(RefCell::new(SessionHolder::new_host_with(
                &VmConfig::host_fallback_from_env(),
            )))
        }
    }
}

/// [`try_session_rc_or_host`] for an explicit configuration (the host fallback uses the
/// same configuration: export base, `PATH`, exec timeout).
#[must_use]
pub fn try_session_rc_or_host_from_config(
    config: &VmConfig,
    stderr: &mut dyn Write,
) -> Rc<RefCell<SessionHolder>> {
    session_or_host(config, stderr)
}

fn session_or_host(config: &VmConfig, stderr: &mut dyn Write) -> Rc<RefCell<SessionHolder>> {
    let session = SessionHolder::try_from_config(config).unwrap_or_else(|err| {
        let _ = writeln!(
            stderr,
            "devshell-vm: {} — using the host backend instead",
            error_chain(&err)
        );
        SessionHolder::new_host_with(config)
    });
    Rc::new(RefCell::new(session))
}

/// `true` when an interactive front end should hand the terminal to
/// `limactl shell` ([`SessionHolder::exec_lima_interactive_shell`]): a TTY, not a
/// script run, `DEVSHELL_VM_INTERNAL_REPL` off, and a Lima session.
#[must_use]
pub fn should_delegate_lima_shell(
    vm_session: &Rc<RefCell<SessionHolder>>,
    is_tty: bool,
    run_script: bool,
) -> bool {
    let internal_repl = VmConfig::from_env().is_ok_and(|config| config.internal_repl);
    should_delegate_lima_shell_with(vm_session, is_tty, run_script, internal_repl)
}

/// [`should_delegate_lima_shell`] with `DEVSHELL_VM_INTERNAL_REPL` given explicitly.
#[must_use]
pub fn should_delegate_lima_shell_with(
    vm_session: &Rc<RefCell<SessionHolder>>,
    is_tty: bool,
    run_script: bool,
    internal_repl: bool,
) -> bool {
    if run_script || !is_tty || internal_repl {
        return false;
    }
    vm_session.borrow().is_lima()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    fn host_config(base: &std::path::Path) -> VmConfig {
        VmConfig {
            export_base: Some(base.to_path_buf()),
            ..VmConfig::host_only()
        }
    }

    #[test]
    fn disabled_or_host_backends_give_a_host_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        for backend in [Backend::Host, Backend::Auto] {
            let config = VmConfig {
                enabled: true,
                backend,
                ..host_config(dir.path())
            };
            let session = SessionHolder::try_from_config(&config).expect("host session");
            assert!(session.is_host_only());
            assert!(!session.is_guest_primary());
            assert!(!session.is_guest_primary_gamma());
            assert_eq!(session.backend_name(), "host");
        }
        let off = VmConfig {
            enabled: false,
            backend: Backend::Lima,
            ..host_config(dir.path())
        };
        assert!(
            SessionHolder::try_from_config(&off)
                .expect("host")
                .is_host_only()
        );
    }

    #[test]
    fn vm_backends_are_errors_until_available_and_fall_back_to_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        for backend in [Backend::Lima, Backend::Beta] {
            let config = VmConfig {
                enabled: true,
                backend,
                ..host_config(dir.path())
            };
            let err = SessionHolder::try_from_config(&config).expect_err("no vm session here");
            let message = err.to_string();
            assert!(
                matches!(
                    err,
                    VmError::BackendNotImplemented(_) | VmError::BackendUnavailable { .. }
                ),
                "{message}"
            );
            assert!(message.contains(backend.as_str()), "{message}");

            let mut stderr = Vec::new();
            let rc = try_session_rc_from_config(&config, &mut stderr);
            assert_eq!(rc.err(), Some(VmSessionInitError));
            assert!(String::from_utf8_lossy(&stderr).starts_with("devshell-vm: "));

            let mut stderr = Vec::new();
            let session = try_session_rc_or_host_from_config(&config, &mut stderr);
            assert!(session.borrow().is_host_only());
            let note = String::from_utf8(stderr).expect("utf8");
            assert_eq!(note.lines().count(), 1, "{note}");
            assert!(note.contains("using the host backend"), "{note}");
        }
    }

    /// Runs in every build (CI tests with all features): the texts the not-compiled
    /// constructors return name the feature to enable and the host way out.
    #[test]
    fn not_compiled_messages_name_the_feature() {
        for (message, feature, backend) in [
            (
                holder::backends::LIMA_NOT_COMPILED,
                "--features lima",
                "=lima",
            ),
            (
                holder::backends::BETA_NOT_COMPILED,
                "--features beta",
                "=beta",
            ),
        ] {
            let text = VmError::BackendNotImplemented(message).to_string();
            assert!(text.contains(feature), "{text}");
            assert!(text.contains(backend), "{text}");
            assert!(text.contains("DEVSHELL_VM_BACKEND=host"), "{text}");
        }
    }

    #[cfg(not(feature = "lima"))]
    #[test]
    fn lima_without_the_feature_names_the_feature() {
        let config = VmConfig {
            enabled: true,
            backend: Backend::Lima,
            ..VmConfig::host_only()
        };
        let err = SessionHolder::try_from_config(&config).expect_err("not compiled in");
        assert!(err.to_string().contains("--features lima"), "{err}");
    }

    #[cfg(not(feature = "beta"))]
    #[test]
    fn beta_without_the_feature_names_the_feature() {
        let config = VmConfig {
            enabled: true,
            backend: Backend::Beta,
            ..VmConfig::host_only()
        };
        let err = SessionHolder::try_from_config(&config).expect_err("not compiled in");
        assert!(err.to_string().contains("--features beta"), "{err}");
    }

    #[test]
    fn host_session_is_never_delegated_or_guest_primary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = Rc::new(RefCell::new(SessionHolder::new_host_with(&host_config(
            dir.path(),
        ))));
        assert!(!should_delegate_lima_shell_with(
            &session, true, false, false
        ));
        assert!(session.borrow_mut().guest_primary_fs_ops_mut().is_none());
        let err = session.borrow().exec_lima_interactive_shell();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    }

    #[test]
    fn errors_keep_their_source_chain() {
        let timeout = devshell_vm_backend_host::HostError::Session(SessionError::Timeout {
            program: "cargo".to_owned(),
            timeout: std::time::Duration::from_secs(3),
        });
        assert!(matches!(VmError::from(timeout), VmError::Timeout { .. }));

        let config_err = VmConfig::from_source(&[("DEVSHELL_VM", "maybe")]).expect_err("bad");
        let err = VmError::from(config_err);
        assert!(err.source().is_some());
        let text = error_chain(&err);
        assert!(text.contains("DEVSHELL_VM"), "{text}");
        assert_eq!(
            text.matches("maybe").count(),
            1,
            "the bad value once: {text}"
        );
    }
}

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
