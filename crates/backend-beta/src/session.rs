//! [`BetaSession`]: the public session type (see the crate docs).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use devshell_vm_config::{Transport, VmConfig, WorkspaceMode};
use devshell_vm_exec::{
    CancelHandle, ExecOutcome, OutputMode, StreamKind, Termination, ToolRequest,
};
use devshell_vm_guest_fs::{logical_to_guest, normalize_guest_path};
use devshell_vm_protocol::{Direction, ErrorCode, Exec, OutputStream, Reply, Request, SyncRequest};
use devshell_vm_session::{
    Backend, CARGO_TARGET_DIR, ProjectTable, SessionError, SyncObserver, join_slash, run_cycle,
};
use devshell_vm_sync::{SyncReport, ToolOutcome};
use devshell_vm_vfs::Vfs;

use crate::BetaError;
use crate::conn::{Capabilities, Endpoint, ExecEnd};
use crate::link::Link;
use crate::manifest;

/// Default deadline for connecting (Unix socket and TCP).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for every reply except `exec`.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_mins(1);
/// Extra time an `exec` with a timeout may take to be answered (the sidecar kills the
/// group at the timeout and replies `exec_timeout`).
pub const EXEC_GRACE: Duration = Duration::from_secs(30);

/// Name of the sidecar binary looked up on `PATH` for the stdio transport.
const SIDECAR_PROGRAM: &str = "devshell-vm-sidecar";
/// Per project (Mode S): the VFS generation the staging copy matches (after the last
/// push/pull), for the `sync_request` manifest of the next push. The sidecar has no
/// change watch, so every run pulls (the default [`devshell_vm_session::PullGate`]).
#[derive(Debug, Default, Clone, Copy)]
struct SyncedGeneration(Option<u64>);

impl devshell_vm_session::PullGate for SyncedGeneration {}

/// A β session: one sidecar connection (reopened when it breaks) and, in Mode S, the
/// sync state of each project it ran tools in. See the crate docs.
pub struct BetaSession {
    /// Boxed: the connection state is large and sessions live in enums of backends.
    pub(crate) link: Box<Link>,
    exec_timeout: Option<Duration>,
    forward_interrupts: bool,
    projects: ProjectTable<SyncedGeneration>,
    /// Mode S over the connection (`wire-sync`), when the link uses it.
    wire: crate::wire::WireClient,
}

impl fmt::Debug for BetaSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BetaSession")
            .field("transport", &self.link.endpoint.transport)
            .field("mode", &self.link.mode)
            .field("mount", &self.link.mount)
            .field("staging", &self.link.staging)
            .field("connected", &self.link.conn.is_some())
            .field("projects", &self.projects)
            .finish_non_exhaustive()
    }
}

impl BetaSession {
    /// A session configured from `config`: transport (`DEVSHELL_VM_SOCKET`), token file,
    /// sidecar binary for stdio, staging directory, guest mount, workspace mode and exec
    /// timeout. Nothing is connected or created on disk until the first use.
    ///
    /// # Errors
    /// [`BetaError::NoTransport`] without a socket, [`BetaError::SidecarNotFound`] for
    /// stdio without a sidecar binary, [`BetaError::TokenFile`] for an unreadable or
    /// empty token file, [`BetaError::Staging`] for a relative or non-UTF-8 staging
    /// override, [`BetaError::GuestPath`] for an invalid guest mount.
    pub fn new(config: &VmConfig) -> Result<Self, BetaError> {
        let transport = config.socket.clone().ok_or(BetaError::NoTransport)?;
        let sidecar = match transport {
            Transport::Stdio => Some(resolve_sidecar(config)?),
            Transport::Unix(_) | Transport::Tcp { .. } => None,
        };
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let (staging, owns_staging) = match &config.beta_session_staging {
            Some(dir) => {
                let path = PathBuf::from(dir);
                if !path.is_absolute() {
                    return Err(BetaError::Staging {
                        path,
                        reason: "DEVSHELL_VM_BETA_SESSION_STAGING must be an absolute path"
                            .to_owned(),
                    });
                }
                (path, false)
            }
            None => (
                config.export_base_dir().join(format!(
                    "devshell-vm-beta-{}-{}",
                    std::process::id(),
                    next_session_number()
                )),
                true,
            ),
        };
        let staging_wire = staging
            .to_str()
            .ok_or_else(|| BetaError::Staging {
                path: staging.clone(),
                reason: "the path is not UTF-8 and cannot be sent to the sidecar".to_owned(),
            })?
            .to_owned();
        let mount = normalize_guest_path(&config.guest_workspace)?;
        Ok(Self {
            link: Box::new(Link {
                endpoint: Endpoint {
                    transport,
                    sidecar,
                    token,
                    connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                    io_timeout: DEFAULT_IO_TIMEOUT,
                    want_wire: config.workspace_mode_effective() == WorkspaceMode::Sync
                        && config.beta_sync != devshell_vm_config::BetaSync::Shared,
                },
                staging,
                staging_wire,
                owns_staging,
                staging_created: false,
                mount,
                mode: config.workspace_mode_effective(),
                conn: None,
                connects: 0,
                sync: config.beta_sync,
                client_id: crate::wire::client_id(),
            }),
            exec_timeout: config.exec_timeout,
            forward_interrupts: false,
            projects: ProjectTable::with_max_workspace_bytes(config.workspace_max_bytes),
            wire: crate::wire::WireClient::default(),
        })
    }

    /// Sets the deadline for every reply except `exec` (default [`DEFAULT_IO_TIMEOUT`])
    /// and for connecting (Unix socket and TCP). Applies from the next request.
    pub fn set_io_timeout(&mut self, timeout: Duration) {
        self.link.endpoint.io_timeout = timeout;
        self.link.endpoint.connect_timeout = timeout;
        if let Some(conn) = self.link.conn.as_mut() {
            conn.set_io_timeout(timeout);
        }
    }

    /// The guest mount (`DEVSHELL_VM_GUEST_WORKSPACE`, normalised), where the staging
    /// directory appears on the sidecar's side.
    #[must_use]
    pub fn guest_mount(&self) -> &str {
        &self.link.mount
    }

    /// `true` in Mode S (the VFS is synced with the staging workspace around each run),
    /// `false` in Mode P (the guest tree is the source of truth).
    #[must_use]
    pub const fn syncs_vfs_with_host_workspace(&self) -> bool {
        matches!(self.link.mode, WorkspaceMode::Sync)
    }

    /// The workspace mode in effect.
    #[must_use]
    pub fn workspace_mode(&self) -> WorkspaceMode {
        self.link.mode
    }

    /// The host staging directory shared with the sidecar.
    #[must_use]
    pub fn staging_dir(&self) -> &Path {
        &self.link.staging
    }

    /// `true` while a connection is open.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.link.conn.is_some()
    }

    /// How many connections this session has opened so far (1 after the first use; each
    /// reconnect after a failure adds one).
    #[must_use]
    pub fn connections_opened(&self) -> u64 {
        self.link.connects
    }

    /// Process id of the sidecar this session spawned (stdio transport, while connected).
    #[must_use]
    pub fn sidecar_pid(&self) -> Option<u32> {
        self.link
            .conn
            .as_ref()
            .and_then(crate::conn::Connection::child_pid)
    }

    /// Opens the connection if needed and returns the capabilities agreed with the
    /// sidecar (all `false` for a v1 sidecar).
    ///
    /// # Errors
    /// Connection, handshake and `session_start` failures.
    pub fn capabilities(&mut self) -> Result<Capabilities, BetaError> {
        self.link.capabilities()
    }

    /// `(server, server_version)` from the sidecar's `handshake_ok` (opening the
    /// connection if needed).
    ///
    /// # Errors
    /// Connection, handshake and `session_start` failures.
    pub fn server(&mut self) -> Result<(String, String), BetaError> {
        Ok(self.link.connection()?.server.clone())
    }

    /// The project of `vfs_cwd` (created with its staging subdirectory on first use).
    fn locate(
        &mut self,
        vfs: &Vfs,
        vfs_cwd: &str,
    ) -> Result<devshell_vm_session::Located, BetaError> {
        let Self { link, projects, .. } = self;
        projects.project_for(
            vfs,
            vfs_cwd,
            || {
                link.prepare_staging()?;
                Ok::<_, BetaError>(link.staging.clone())
            },
            SyncedGeneration::default,
        )
    }

    /// Mode P: exec in the guest image of the cwd, no sync.
    fn run_guest_primary(
        &mut self,
        vfs: &Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, BetaError> {
        let (root, cwd) = devshell_vm_session::locate_guest_primary(vfs, vfs_cwd)?;
        let guest_cwd = logical_to_guest(&self.link.mount, &root, &cwd)?;
        let exec = exec_on_guest(&mut self.link, &guest_cwd, request, None, on_output, cancel)?;
        Ok(ToolOutcome {
            exec,
            push: SyncReport::default(),
            pull: None,
        })
    }

    /// `true` when Mode S runs over the connection (`wire-sync`) rather than through a
    /// shared staging directory (opens the connection if needed; see
    /// `DEVSHELL_VM_BETA_SYNC`).
    ///
    /// # Errors
    /// Connection, handshake and session start failures.
    pub fn uses_wire_sync(&mut self) -> Result<bool, BetaError> {
        self.link.uses_wire()
    }

    /// Bytes `(sent, received)` on the current connection so far (zeros when none is
    /// open): what a push, an exec or a pull cost on the wire.
    #[must_use]
    pub fn connection_bytes(&self) -> (u64, u64) {
        self.link.bytes()
    }

    /// Mode S: the shared cycle with the remote exec in the middle.
    fn run_synced(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, BetaError> {
        if self.link.uses_wire()? {
            let Self { link, wire, .. } = self;
            return wire.run(link, vfs, vfs_cwd, |link, guest_cwd, relative_cwd| {
                let target_dir = target_dir_from(relative_cwd);
                exec_on_guest(
                    link,
                    guest_cwd,
                    request,
                    Some(&target_dir),
                    on_output,
                    cancel,
                )
            });
        }
        let at = self.locate(vfs, vfs_cwd)?;
        let staging = self.link.staging.clone();
        let Self { link, projects, .. } = self;
        let project = projects.get_mut(at.index);
        let vfs_root = project.vfs_root().to_owned();
        let entries = manifest::entries(vfs, &vfs_root, &project.state, &staging, project.extra.0);
        let leaf = leaf_name(&vfs_root);
        let target_dir = target_dir_from(&at.relative_cwd);
        let relative_cwd = at.relative_cwd;

        let result = run_cycle(project, vfs, &request.program, |leaf_dir| {
            let guest_leaf = guest_path_of(&link.mount, &staging, leaf_dir)?;
            let guest_cwd = join_slash(&guest_leaf, &relative_cwd);
            sync_ack(link, Direction::PushToGuest, &leaf, Some(entries))?;
            let exec = exec_on_guest(
                link,
                &guest_cwd,
                request,
                Some(&target_dir),
                on_output,
                cancel,
            )?;
            // The data is already in the shared staging dir: a failed pull
            // acknowledgement must not cost the tool's results. A broken connection is
            // dropped and reconnected by the next call.
            let _ = sync_ack(link, Direction::PullFromGuest, &leaf, None);
            Ok::<_, BetaError>(exec)
        });
        // Whatever happened after a successful push, staging and the VFS were compared
        // by a pull (or nothing ran): the next manifest starts from here.
        if !matches!(
            result,
            Err(devshell_vm_session::CycleError::Session(
                SessionError::Push { .. }
            ))
        ) {
            project.extra = SyncedGeneration(Some(vfs.generation()));
        }
        result
            .map(|cycle| cycle.outcome)
            .map_err(devshell_vm_session::CycleError::into_error)
    }

    /// Tears the session down: `session_shutdown` to the sidecar (a connection that is
    /// already gone is fine), drop the connection (a spawned sidecar is stopped and
    /// reaped), forget the sync state, and in Mode S remove the staging directory this
    /// session created. Every run already pulled its results, so the VFS is complete.
    /// The session stays usable: a later call connects again.
    ///
    /// # Errors
    /// [`BetaError::Remote`] when the sidecar refused the shutdown,
    /// [`BetaError::Staging`] when the staging directory cannot be removed.
    pub fn shutdown(&mut self, _vfs: &mut Vfs, _vfs_cwd: &str) -> Result<(), BetaError> {
        let remote = self.link.shutdown();
        self.projects.clear();
        self.wire.clear();
        let local = self.remove_owned_staging();
        remote.and(local)
    }

    fn remove_owned_staging(&mut self) -> Result<(), BetaError> {
        if !(self.link.owns_staging
            && self.link.staging_created
            && self.link.mode == WorkspaceMode::Sync)
        {
            return Ok(());
        }
        self.link.staging_created = false;
        match std::fs::remove_dir_all(&self.link.staging) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(BetaError::Staging {
                path: self.link.staging.clone(),
                reason: format!("cannot remove it: {err}"),
            }),
        }
    }
}

impl Backend for BetaSession {
    type Error = BetaError;

    /// Runs `request` (its timeout, or the session's) through the sidecar: in Mode S the
    /// shared push–run–pull cycle, in Mode P an exec in the guest image of the cwd. A
    /// cancel handle closes the connection (the sidecar kills the tool's process
    /// group; the outcome is `Termination::Cancelled` and the next call reconnects).
    /// With [`ToolRequest::forward_interrupts`] and no cancel handle, this process's
    /// interrupts cancel the remote run (there is no local process group to forward
    /// them to) and the pull still happens.
    fn run_tool_with(
        &mut self,
        vfs: &mut Vfs,
        vfs_cwd: &str,
        request: &ToolRequest,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<ToolOutcome, BetaError> {
        let request = request.clone().or_timeout(self.exec_timeout);
        let interrupt_cancel = CancelHandle::new();
        let interrupt_watch = if request.forward_interrupts && cancel.is_none() {
            Some(
                devshell_vm_exec::cancel_on_interrupt(&interrupt_cancel)
                    .map_err(BetaError::InterruptHandlers)?,
            )
        } else {
            None
        };
        let cancel = cancel.or(interrupt_watch.as_ref().map(|_| &interrupt_cancel));
        match self.link.mode {
            WorkspaceMode::Guest => {
                self.run_guest_primary(vfs, vfs_cwd, &request, on_output, cancel)
            }
            WorkspaceMode::Sync => self.run_synced(vfs, vfs_cwd, &request, on_output, cancel),
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

    fn set_pull_excludes(&mut self, globs: &[&str]) -> Result<(), BetaError> {
        self.projects.set_excludes(globs)?;
        self.wire.set_excludes(globs);
        Ok(())
    }

    /// Connects, handshakes, starts the sidecar session and, in Mode S, pushes the
    /// project (announced with `sync_request`), so the first run pays only for its own
    /// changes.
    fn ensure_ready(&mut self, vfs: &Vfs, vfs_cwd: &str) -> Result<(), BetaError> {
        self.link.connection()?;
        if self.link.mode == WorkspaceMode::Guest {
            return Ok(());
        }
        if self.link.uses_wire()? {
            self.wire.push(&mut self.link, vfs, vfs_cwd)?;
            return Ok(());
        }
        let at = self.locate(vfs, vfs_cwd)?;
        let staging = self.link.staging.clone();
        let project = self.projects.get_mut(at.index);
        let vfs_root = project.vfs_root().to_owned();
        let entries = manifest::entries(vfs, &vfs_root, &project.state, &staging, project.extra.0);
        project.push(vfs)?;
        project.extra = SyncedGeneration(Some(vfs.generation()));
        sync_ack(
            &mut self.link,
            Direction::PushToGuest,
            &leaf_name(&vfs_root),
            Some(entries),
        )
    }

    fn set_sync_observer(&mut self, observer: SyncObserver) {
        self.projects.set_observer(observer);
    }

    fn shutdown(&mut self, vfs: &mut Vfs, vfs_cwd: &str) -> Result<(), BetaError> {
        BetaSession::shutdown(self, vfs, vfs_cwd)
    }
}

impl Drop for BetaSession {
    fn drop(&mut self) {
        // Dropping the connection stops a spawned sidecar; staging is best effort.
        self.link.conn = None;
        let _ = self.remove_owned_staging();
    }
}

/// Process-wide counter for default staging directory names.
fn next_session_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The sidecar binary for the stdio transport.
fn resolve_sidecar(config: &VmConfig) -> Result<PathBuf, BetaError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let program = config.sidecar_bin.as_deref().map_or_else(
        || SIDECAR_PROGRAM.to_owned(),
        |p| p.to_string_lossy().into_owned(),
    );
    let search_path = config.tool_search_path();
    devshell_vm_exec::resolve_program(&program, search_path.as_deref(), &cwd).map_err(|_| {
        BetaError::SidecarNotFound {
            program: program.clone(),
            searched: search_path.as_deref().map_or_else(
                || "<no PATH>".to_owned(),
                |p: &OsStr| p.to_string_lossy().into_owned(),
            ),
        }
    })
}

/// Reads the token (trimmed) from `path`.
fn read_token(path: &Path) -> Result<String, BetaError> {
    let text = std::fs::read_to_string(path).map_err(|err| BetaError::TokenFile {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(BetaError::TokenFile {
            path: path.to_path_buf(),
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Last segment of a VFS path (`""` for `/`): the v1 `vfs_cwd_leaf`.
fn leaf_name(vfs_path: &str) -> String {
    vfs_path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// The project's `target/` relative to a cwd `relative_cwd` below the project root.
fn target_dir_from(relative_cwd: &str) -> String {
    let depth = relative_cwd.split('/').filter(|s| !s.is_empty()).count();
    format!("{}target", "../".repeat(depth))
}

/// The guest path of host path `host` inside `staging` (mapped onto `mount`).
fn guest_path_of(mount: &str, staging: &Path, host: &Path) -> Result<String, BetaError> {
    let rel = host.strip_prefix(staging).map_err(|_| BetaError::Staging {
        path: host.to_path_buf(),
        reason: format!("is not inside the staging directory {}", staging.display()),
    })?;
    let mut segments = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => {
                segments.push(name.to_str().ok_or_else(|| BetaError::Staging {
                    path: host.to_path_buf(),
                    reason: "the path is not UTF-8".to_owned(),
                })?);
            }
            _ => {
                return Err(BetaError::Staging {
                    path: host.to_path_buf(),
                    reason: "unexpected path component".to_owned(),
                });
            }
        }
    }
    Ok(join_slash(mount, &segments.join("/")))
}

/// `sync_request` acknowledgement; with `sync-verify`, mismatches are an error.
fn sync_ack(
    link: &mut Link,
    direction: Direction,
    leaf: &str,
    manifest: Option<Vec<devshell_vm_protocol::ManifestEntry>>,
) -> Result<(), BetaError> {
    let reply = link.call(|session_id| {
        Request::SyncRequest(SyncRequest {
            session_id,
            direction,
            vfs_cwd_leaf: leaf.to_owned(),
            manifest,
        })
    })?;
    match reply {
        Reply::SyncOk(ok) => match ok.mismatches {
            Some(mismatches) if !mismatches.is_empty() => {
                let m = &mismatches[0];
                Err(BetaError::SyncMismatch {
                    count: mismatches.len(),
                    first: format!(
                        "{} ({}; expected size {:?}, found {:?})",
                        m.path, m.problem, m.expected_size, m.actual_size
                    ),
                })
            }
            _ => Ok(()),
        },
        Reply::Error(err) => Err(BetaError::Remote {
            during: "sync_request".to_owned(),
            code: err.code.to_string(),
            message: err.message,
        }),
        other => Err(link.unexpected("sync_request", &other)),
    }
}

/// Where one output chunk goes, per the request's output modes.
fn deliver(
    mode: OutputMode,
    kind: StreamKind,
    data: &[u8],
    captured: &mut Vec<u8>,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
) {
    match mode {
        OutputMode::Inherit => {
            // Best effort, like a child writing to our inherited stream.
            let _ = match kind {
                StreamKind::Stdout => std::io::stdout().lock().write_all(data),
                StreamKind::Stderr => std::io::stderr().lock().write_all(data),
            };
        }
        OutputMode::Capture => captured.extend_from_slice(data),
        OutputMode::Stream => on_output(kind, data),
        OutputMode::Null => {}
    }
}

/// Runs `request` in `guest_cwd` and maps the final frame to an [`ExecOutcome`].
/// `target_dir` (Mode S) is set as `CARGO_TARGET_DIR` unless the request sets it. It is
/// relative to the cwd: guest paths are not paths on the sidecar's file system when the
/// sidecar runs on this host (only `guest_cwd` is mapped), and a `CARGO_TARGET_DIR` in
/// the sidecar's own environment must not send the build output out of staging.
fn exec_on_guest(
    link: &mut Link,
    guest_cwd: &str,
    request: &ToolRequest,
    target_dir: Option<&str>,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: Option<&CancelHandle>,
) -> Result<ExecOutcome, BetaError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(dir) = target_dir {
        env.insert(CARGO_TARGET_DIR.to_owned(), dir.to_owned());
    }
    for (name, value) in &request.env {
        env.insert(name.clone(), value.clone());
    }
    let mut argv = Vec::with_capacity(request.args.len() + 1);
    argv.push(request.program.clone());
    argv.extend(request.args.iter().cloned());
    // `0` means "no timeout" on the wire: a sub-millisecond timeout is sent as 1 ms.
    let timeout_ms = request
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
    let budget = request.timeout.map(|t| t.saturating_add(EXEC_GRACE));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let end = {
        let mut sink = |stream: OutputStream, data: &[u8]| match stream {
            OutputStream::Stdout => deliver(
                request.stdout,
                StreamKind::Stdout,
                data,
                &mut stdout,
                on_output,
            ),
            OutputStream::Stderr => deliver(
                request.stderr,
                StreamKind::Stderr,
                data,
                &mut stderr,
                on_output,
            ),
        };
        link.exec(
            |session_id| Exec {
                session_id,
                guest_cwd: Some(guest_cwd.to_owned()),
                argv,
                env,
                timeout_ms,
            },
            budget,
            cancel,
            &mut sink,
        )?
    };
    let termination = match end {
        ExecEnd::Result(result) => match result.signal {
            Some(signal) => Termination::Signaled(signal),
            None => Termination::Exited(result.exit_code),
        },
        ExecEnd::Error(err) if err.code == ErrorCode::ExecTimeout => Termination::TimedOut,
        ExecEnd::Error(err) => {
            return Err(BetaError::Exec {
                program: request.program.clone(),
                code: err.code.to_string(),
                message: err.message,
            });
        }
        ExecEnd::Cancelled => Termination::Cancelled,
    };
    Ok(ExecOutcome {
        termination,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_join() {
        assert_eq!(leaf_name("/a/app"), "app");
        assert_eq!(leaf_name("/"), "");
        assert_eq!(target_dir_from(""), "target");
        assert_eq!(target_dir_from("src/bin"), "../../target");
    }

    #[test]
    fn guest_path_of_maps_under_mount_and_refuses_outside() {
        let staging = Path::new("/tmp/st");
        assert_eq!(
            guest_path_of("/workspace", staging, Path::new("/tmp/st/0/app")).unwrap(),
            "/workspace/0/app"
        );
        assert_eq!(
            guest_path_of("/workspace", staging, Path::new("/tmp/st")).unwrap(),
            "/workspace"
        );
        assert!(matches!(
            guest_path_of("/workspace", staging, Path::new("/tmp/other")),
            Err(BetaError::Staging { .. })
        ));
    }
}
