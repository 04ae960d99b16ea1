//! One client connection: its session state, request dispatch and replies.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use devshell_vm_exec::{CancelHandle, ExecError, OutputMode, StreamKind, Termination, ToolRequest};
use devshell_vm_protocol::{
    CAP_EXEC_STREAM, CAP_GUEST_FS_V2, CAP_SYNC_VERIFY, CAP_WIRE_SYNC, CAP_WIRE_SYNC_STREAM,
    ErrorCode, Exec, ExecOutput, ExecResult, Handshake, HandshakeOk, LineReader, ManifestAction,
    OutputStream, PROTOCOL_VERSION, ProtocolError, Reply, Request, SessionOk, SessionStart,
    ShutdownOk, SyncMismatch, SyncOk, SyncRequest, encode_base64, negotiate_capabilities,
    parse_request, write_frame,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::SFlag;

use crate::confine::{Staging, guest_components, kind_of, normalize_mount, open_dir_at};
use crate::options::Options;

mod wire_conn;

/// Capabilities this sidecar offers.
pub(crate) const OFFERED: &[&str] = &[
    CAP_EXEC_STREAM,
    CAP_GUEST_FS_V2,
    CAP_SYNC_VERIFY,
    CAP_WIRE_SYNC,
    CAP_WIRE_SYNC_STREAM,
];

/// Server name sent in `handshake_ok`.
pub(crate) const SERVER_NAME: &str = "devshell-vm-sidecar";

/// Environment variables the dynamic loader (or libc at startup) obeys; `exec` may not set them.
const LOADER_VARIABLES: &[&str] = &[
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
];

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: Options,
    /// `wire-sync` project copies.
    pub(crate) wire: crate::wire::WireStores,
    shutting_down: AtomicBool,
    running: Mutex<HashMap<u64, CancelHandle>>,
    idle: Condvar,
    next_exec: AtomicU64,
    next_conn: AtomicU64,
    open_connections: std::sync::atomic::AtomicUsize,
    /// The effective connection cap (`--max-connections` lowered to the fd budget).
    connection_cap: usize,
    unauthenticated: std::sync::atomic::AtomicUsize,
    /// `exec` is answered with an error (the in-memory server for fuzzing).
    pub(crate) exec_disabled: bool,
}

/// Counts a connection that has not authenticated yet; released on authentication or
/// when the connection ends, whichever comes first.
#[derive(Debug)]
pub(crate) struct UnauthenticatedSlot {
    shared: std::sync::Arc<Shared>,
    held: AtomicBool,
}

impl UnauthenticatedSlot {
    /// Takes a slot, or `None` when `max_unauthenticated` connections are waiting.
    pub(crate) fn take(shared: &std::sync::Arc<Shared>) -> Option<Self> {
        let limit = shared.options.max_unauthenticated;
        shared
            .unauthenticated
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| Self {
                shared: std::sync::Arc::clone(shared),
                held: AtomicBool::new(true),
            })
    }

    /// Gives the slot back (idempotent).
    pub(crate) fn release(&self) {
        if self.held.swap(false, Ordering::SeqCst) {
            self.shared.unauthenticated.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Counts a connection as open while alive.
#[derive(Debug)]
pub(crate) struct ConnectionSlot<'a>(&'a Shared);

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shared {
    pub(crate) fn new(options: Options, connection_cap: usize) -> Self {
        let wire = crate::wire::WireStores::new(
            options
                .roots
                .first()
                .map_or(Path::new("/nonexistent"), PathBuf::as_path),
            options.wire_max_bytes,
            options.wire_idle,
        );
        Self {
            wire,
            options,
            connection_cap,
            unauthenticated: std::sync::atomic::AtomicUsize::new(0),
            exec_disabled: false,
            shutting_down: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
            idle: Condvar::new(),
            next_exec: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            open_connections: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The effective connection cap.
    pub(crate) fn connection_cap(&self) -> usize {
        self.connection_cap
    }

    /// Takes a connection slot, or `None` when the connection cap is reached.
    pub(crate) fn try_connection_slot(&self) -> Option<ConnectionSlot<'_>> {
        let limit = self.connection_cap;
        self.open_connections
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self))
    }

    /// `true` once SIGTERM/SIGINT started the shutdown.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub(crate) fn open_connection_count(&self) -> usize {
        self.open_connections.load(Ordering::SeqCst)
    }

    /// A fresh connection id for logs.
    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks the server as stopping and kills every running exec.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for cancel in running.values() {
            cancel.cancel();
        }
    }

    /// Kills the process group of every exec still running, from this thread (for the
    /// end of the shutdown grace period); returns how many groups were signalled.
    pub(crate) fn kill_remaining(&self) -> usize {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.values().filter(|cancel| cancel.kill_now()).count()
    }

    /// Waits until no exec is running (or `limit` passed); returns whether all ended.
    pub(crate) fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        while !running.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            running = self
                .idle
                .wait_timeout(running, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn register(&self, cancel: &CancelHandle) -> Option<u64> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if self.shutting_down.load(Ordering::SeqCst) {
            return None;
        }
        let id = self.next_exec.fetch_add(1, Ordering::Relaxed);
        running.insert(id, cancel.clone());
        Some(id)
    }

    fn deregister(&self, id: u64) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.remove(&id);
        if running.is_empty() {
            self.idle.notify_all();
        }
    }
}

/// Writes one log line to stderr, tagged with the connection id.
pub(crate) fn log(conn: u64, message: &str) {
    crate::log::line(&format!("devshell-vm-sidecar[conn {conn}]: {message}"));
}

/// A connection's transport facts.
pub(crate) struct Peer {
    /// Connection id (for logs).
    pub(crate) id: u64,
    /// Whether `handshake` must carry the token before anything else is served.
    pub(crate) requires_token: bool,
    /// Watched while an exec runs: when it reports hang-up, the client is gone.
    pub(crate) hangup: Option<Hangup>,
    /// Called once the token was accepted (lifts the handshake read deadline).
    pub(crate) on_authenticated: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("requires_token", &self.requires_token)
            .field("hangup", &self.hangup)
            .finish_non_exhaustive()
    }
}

/// What tells that a client went away: a descriptor and the poll events meaning so
/// (`POLLHUP`/`POLLERR` always count).
#[derive(Debug)]
pub(crate) struct Hangup {
    /// A duplicate of the connection's socket, or of stdout for stdio.
    pub(crate) fd: OwnedFd,
    /// Extra events that mean "gone" (`POLLRDHUP` for TCP, where a closed peer shows only that).
    pub(crate) events: PollFlags,
}

struct Session {
    id: String,
    staging: Staging,
    /// `wire-sync` sessions: the client's store and the project copies checked out.
    wire: Option<wire_conn::WireSession>,
    /// The session's sandbox, started on its first `exec` (see [`confinement_for`]).
    confinement: std::sync::Mutex<Option<devshell_vm_sandbox::Confinement>>,
}

/// The confinement of a session's tools: the staging dir read-write (nothing else of the
/// roots), the toolchain read-only, the sidecar's options for mode, network and limits.
fn confinement_for(options: &Options, staging: &Path) -> devshell_vm_sandbox::Confinement {
    let settings = &options.isolation;
    let scratch = staging.parent().unwrap_or(staging);
    let mut policy = devshell_vm_sandbox::Policy::new(
        settings.isolation,
        devshell_vm_sandbox::Net::None,
        settings.limits,
        staging,
        scratch,
    );
    policy.cargo_home.clone_from(&settings.cargo_home);
    policy.rustup_home.clone_from(&settings.rustup_home);
    policy.env = devshell_vm_config::inherited_environment();
    policy.add_search_path(options.path_var.as_deref());
    devshell_vm_sandbox::Confinement::new(policy, settings.network)
}

/// Runs a prepared tool through the session's confinement.
fn run_confined(
    session: &Session,
    options: &Options,
    prepared: &PreparedExec,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: &CancelHandle,
) -> Result<devshell_vm_exec::ExecOutcome, ExecError> {
    let mut guard = session
        .confinement
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let confinement =
        guard.get_or_insert_with(|| confinement_for(options, session.staging.host_path()));
    if let Some(note) = confinement.take_degrade_note() {
        eprintln!("devshell-vm-sidecar: {note}");
    }
    // Unconfined, the child changes into the directory this process holds open (no
    // path re-resolution); a confined tool does not share our descriptors.
    let cwd = if options.isolation.isolation == devshell_vm_config::Isolation::Off {
        &prepared.cwd
    } else {
        &prepared.real_cwd
    };
    confinement
        .run(
            &prepared.program,
            &prepared.request,
            cwd,
            &prepared.real_cwd,
            on_output,
            Some(cancel),
        )
        .map(|outcome| outcome.exec)
        .map_err(|err| match err {
            devshell_vm_sandbox::SandboxError::Exec(inner) => inner,
            other => ExecError::Io {
                context: chain(&other),
                source: std::io::Error::other("confined run failed"),
            },
        })
}

struct Conn<'a> {
    /// Set once the connection's wire copies were checked back in.
    wire_done: bool,
    shared: &'a Shared,
    peer: Peer,
    authenticated: bool,
    capabilities: Vec<String>,
    session: Option<Session>,
}

/// Serves one connection until end of input or a transport failure.
pub(crate) fn serve_connection<R: Read, W: Write + Send>(
    shared: &Shared,
    peer: Peer,
    reader: R,
    mut writer: W,
) {
    let id = peer.id;
    let mut reader = LineReader::with_max_frame_bytes(reader, shared.options.max_frame_bytes);
    let mut conn = Conn {
        wire_done: false,
        shared,
        authenticated: !peer.requires_token,
        peer,
        capabilities: Vec::new(),
        session: None,
    };
    log(id, "connected");
    loop {
        let request = match reader.read_line() {
            Ok(None) => {
                log(id, "closed by peer");
                return;
            }
            Ok(Some(line)) => parse_request(&line),
            Err(err) => Err(err),
        };
        let outcome = match request {
            Ok(request) => conn.dispatch(request, &mut reader, &mut writer),
            Err(err) if err.is_recoverable() => {
                log(id, &format!("bad frame: {err}"));
                write_frame(
                    &mut writer,
                    &Reply::error(err.error_code(), err.to_string()),
                )
            }
            Err(err) => {
                log(id, &format!("closing: {err}"));
                return;
            }
        };
        if let Err(err) = outcome {
            log(id, &format!("closing: {err}"));
            return;
        }
    }
}

/// Why an exec ended without an `exec_result` the client can still receive.
enum ExecEnd {
    Reply(Reply),
    ClientGone,
}

impl Conn<'_> {
    fn dispatch<R: Read, W: Write + Send>(
        &mut self,
        request: Request,
        reader: &mut LineReader<R>,
        writer: &mut W,
    ) -> Result<(), ProtocolError> {
        if matches!(request, Request::Health(_)) {
            return write_frame(writer, &self.health());
        }
        if !self.authenticated && !matches!(request, Request::Handshake(_)) {
            return write_frame(
                writer,
                &Reply::error(
                    ErrorCode::Unauthorized,
                    "this transport requires a handshake with the token first",
                ),
            );
        }
        let reply = match request {
            Request::Handshake(hs) => self.handshake(&hs),
            Request::SessionStart(start) => self.session_start(&start),
            Request::WireStart(start) if self.has(CAP_WIRE_SYNC) => self.wire_start(&start),
            other if other.op().starts_with("wire_") && !self.has(CAP_WIRE_SYNC) => Reply::error(
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {:?} (the wire-sync capability was not negotiated)",
                    other.op()
                ),
            ),
            other => {
                let Some(session) = &self.session else {
                    return write_frame(
                        writer,
                        &Reply::error(
                            ErrorCode::NoSession,
                            format!("{} needs a session: send session_start first", other.op()),
                        ),
                    );
                };
                let asked = other.session_id().unwrap_or_default();
                if asked != session.id {
                    return write_frame(
                        writer,
                        &Reply::error(
                            ErrorCode::WrongSession,
                            format!(
                                "session_id {asked:?} is not this connection's session {:?}",
                                session.id
                            ),
                        ),
                    );
                }
                match other {
                    Request::SyncRequest(sync) => self.sync(&sync),
                    Request::Exec(exec) => return self.exec(&exec, writer),
                    Request::GuestFs(fs) => crate::guest_fs::handle(
                        &session.staging,
                        &fs,
                        self.has(CAP_GUEST_FS_V2),
                        self.shared.options.max_frame_bytes,
                    ),
                    Request::SessionShutdown(_) => {
                        log(self.peer.id, &format!("session {:?} ended", session.id));
                        self.end_session();
                        Reply::ShutdownOk(ShutdownOk {})
                    }
                    wire @ (Request::WireProject(_)
                    | Request::WirePush(_)
                    | Request::WireBlobs(_)
                    | Request::WirePull(_)
                    | Request::WireWant(_)
                    | Request::WirePullDone(_)) => {
                        return self.wire_request(wire, reader, writer);
                    }
                    Request::Handshake(_)
                    | Request::SessionStart(_)
                    | Request::WireStart(_)
                    | Request::Health(_) => {
                        unreachable!("handled above")
                    }
                }
            }
        };
        write_frame(writer, &reply)
    }

    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    fn handshake(&mut self, hs: &Handshake) -> Reply {
        if hs.version != PROTOCOL_VERSION {
            return Reply::error(
                ErrorCode::VersionMismatch,
                format!(
                    "protocol version {} is not supported (this sidecar speaks {PROTOCOL_VERSION})",
                    hs.version
                ),
            );
        }
        if self.peer.requires_token {
            let ok = match (&self.shared.options.token, &hs.token) {
                (Some(expected), Some(given)) => expected.matches(given),
                _ => false,
            };
            if !ok {
                self.authenticated = false;
                log(self.peer.id, "handshake refused: missing or wrong token");
                return Reply::error(ErrorCode::Unauthorized, "missing or wrong token");
            }
            if !self.authenticated
                && let Some(lift) = &self.peer.on_authenticated
            {
                lift();
            }
            self.authenticated = true;
        }
        self.capabilities = hs
            .capabilities
            .as_deref()
            .map(|requested| negotiate_capabilities(requested, OFFERED))
            .unwrap_or_default();
        log(
            self.peer.id,
            &format!(
                "handshake from {:?} {:?} (capabilities: {:?})",
                hs.client, hs.client_version, self.capabilities
            ),
        );
        Reply::HandshakeOk(HandshakeOk {
            version: PROTOCOL_VERSION,
            server: SERVER_NAME.to_owned(),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: hs.capabilities.as_ref().map(|_| self.capabilities.clone()),
        })
    }

    fn session_start(&mut self, start: &SessionStart) -> Reply {
        self.end_session();
        if start.staging_dir.is_empty() {
            // v1: an empty staging dir clears the session.
            return Reply::SessionOk(SessionOk {
                session_id: start.session_id.clone(),
            });
        }
        let mount = match normalize_mount(&start.guest_workspace) {
            Ok(mount) => mount,
            Err(reason) => {
                return Reply::error(
                    ErrorCode::InvalidRequest,
                    format!("guest_workspace {:?}: {reason}", start.guest_workspace),
                );
            }
        };
        let staging = match self.open_staging(&start.staging_dir, mount) {
            Ok(staging) => staging,
            Err(message) => {
                log(self.peer.id, &format!("session_start refused: {message}"));
                return Reply::error(ErrorCode::BadStagingDir, message);
            }
        };
        log(
            self.peer.id,
            &format!(
                "session {:?} started: staging {} mounted at {:?}",
                start.session_id,
                staging.host_path().display(),
                staging.mount()
            ),
        );
        self.session = Some(Session {
            id: start.session_id.clone(),
            staging,
            wire: None,
            confinement: std::sync::Mutex::new(None),
        });
        Reply::SessionOk(SessionOk {
            session_id: start.session_id.clone(),
        })
    }

    fn open_staging(&self, staging_dir: &str, mount: String) -> Result<Staging, String> {
        let given = Path::new(staging_dir);
        if !given.is_absolute() {
            return Err(format!(
                "staging_dir {staging_dir:?} is not an absolute path"
            ));
        }
        let canonical = std::fs::canonicalize(given)
            .map_err(|err| format!("staging_dir {staging_dir:?}: {err}"))?;
        self.check_inside_roots(staging_dir, &canonical)?;
        let staging = Staging::open(&canonical, mount)
            .map_err(|errno| format!("staging_dir {staging_dir:?}: {}", errno.desc()))?;
        // The directory actually opened (a component may have been swapped since canonicalize).
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", staging.root_fd().as_raw_fd()));
        if let Ok(opened) = std::fs::read_link(&proc_path) {
            self.check_inside_roots(staging_dir, &opened)?;
        }
        Ok(staging)
    }

    fn check_inside_roots(&self, staging_dir: &str, real: &Path) -> Result<(), String> {
        if real == Path::new("/") {
            return Err(format!("staging_dir {staging_dir:?} resolves to `/`"));
        }
        if !real.is_dir() {
            return Err(format!("staging_dir {staging_dir:?} is not a directory"));
        }
        let roots = &self.shared.options.roots;
        if real.starts_with(self.shared.wire.base()) {
            return Err(format!(
                "staging_dir {staging_dir:?} is inside the sidecar's wire-sync stores"
            ));
        }
        if roots.iter().any(|root| real.starts_with(root)) {
            Ok(())
        } else {
            Err(format!(
                "staging_dir {staging_dir:?} resolves to {} outside the allowed roots {}",
                real.display(),
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    fn sync(&self, sync: &SyncRequest) -> Reply {
        let session = self.session.as_ref().expect("checked by dispatch");
        let Some(manifest) = &sync.manifest else {
            return Reply::SyncOk(SyncOk::default());
        };
        let mut mismatches = Vec::new();
        for entry in manifest {
            let mismatch = |problem: &str, actual_size: Option<u64>| SyncMismatch {
                path: entry.path.clone(),
                problem: problem.to_owned(),
                expected_size: entry.size,
                actual_size,
            };
            let climbs = entry.path.split('/').any(|part| part == "..");
            let components = if climbs {
                Err(String::new())
            } else if entry.path.starts_with('/') {
                guest_components(session.staging.mount(), &entry.path)
            } else {
                guest_components("/", &format!("/{}", entry.path))
            };
            let Ok(components) = components else {
                mismatches.push(mismatch("invalid_path", None));
                continue;
            };
            let found = session.staging.resolve(&components, false, false);
            let stat = match found {
                Ok(resolved) if resolved.name.is_none() => None,
                Ok(resolved) => resolved.stat,
                Err(crate::confine::Denied::NotFound | crate::confine::Denied::NotADirectory) => {
                    None
                }
                Err(_) => {
                    mismatches.push(mismatch("invalid_path", None));
                    continue;
                }
            };
            match (entry.action, stat) {
                (ManifestAction::Delete, None) => {}
                (ManifestAction::Delete, Some(_)) => mismatches.push(mismatch("not_deleted", None)),
                (ManifestAction::Upsert, None) => mismatches.push(mismatch("missing", None)),
                (ManifestAction::Upsert, Some(stat)) => {
                    let kind = kind_of(&stat);
                    let actual = u64::try_from(stat.st_size).unwrap_or(0);
                    match entry.size {
                        Some(expected) if kind == SFlag::S_IFREG && expected != actual => {
                            mismatches.push(mismatch("size", Some(actual)));
                        }
                        Some(_) if kind == SFlag::S_IFDIR => {
                            mismatches.push(mismatch("not_a_file", None));
                        }
                        _ => {}
                    }
                }
            }
        }
        log(
            self.peer.id,
            &format!(
                "sync {:?} {:?}: {} manifest entries, {} mismatches",
                sync.direction,
                sync.vfs_cwd_leaf,
                manifest.len(),
                mismatches.len()
            ),
        );
        if self.has(CAP_SYNC_VERIFY) {
            Reply::SyncOk(SyncOk {
                mismatches: Some(mismatches),
            })
        } else {
            for m in &mismatches {
                log(
                    self.peer.id,
                    &format!("sync mismatch (not reported to a v1 client): {m:?}"),
                );
            }
            Reply::SyncOk(SyncOk::default())
        }
    }

    fn exec<W: Write + Send>(&mut self, exec: &Exec, writer: &mut W) -> Result<(), ProtocolError> {
        if self.shared.exec_disabled {
            return write_frame(
                writer,
                &Reply::error(ErrorCode::Exec, "exec is disabled on this server"),
            );
        }
        let prepared = match self.prepare_exec(exec) {
            Ok(prepared) => prepared,
            Err(reply) => return write_frame(writer, &reply),
        };
        let cancel = CancelHandle::new();
        let Some(exec_id) = self.shared.register(&cancel) else {
            return write_frame(
                writer,
                &Reply::error(ErrorCode::Shutdown, "the sidecar is shutting down"),
            );
        };
        let result = match self.run_exec(exec, prepared, &cancel, writer) {
            ExecEnd::Reply(reply) => write_frame(writer, &reply),
            ExecEnd::ClientGone => Err(ProtocolError::Io {
                context: "streaming exec output",
                source: std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "client went away mid-exec",
                ),
            }),
        };
        // Only now: a shutdown waits until the reply is out.
        self.shared.deregister(exec_id);
        result
    }

    /// Validates an `exec` and resolves its cwd and program.
    fn prepare_exec(&self, exec: &Exec) -> Result<PreparedExec, Reply> {
        let session = self.session.as_ref().expect("checked by dispatch");
        let conn_id = self.peer.id;
        let Some((program_name, args)) = exec.argv.split_first() else {
            return Err(Reply::error(ErrorCode::Exec, "argv is empty"));
        };
        if let Err((code, message)) = check_env(&exec.env) {
            log(conn_id, &format!("exec refused: {message}"));
            return Err(Reply::error(code, message));
        }
        let guest_cwd = exec
            .guest_cwd
            .clone()
            .unwrap_or_else(|| session.staging.mount().to_owned());
        let (cwd_fd, fallback) = open_guest_cwd(&session.staging, &guest_cwd)
            .map_err(|message| Reply::error(ErrorCode::BadGuestCwd, message))?;
        // The child changes into the directory we hold open: no path re-resolution.
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", cwd_fd.as_raw_fd()));
        let real = std::fs::read_link(&proc_path).ok();
        let real_cwd = real.clone().unwrap_or_else(|| fallback.clone());
        let cwd = if real.is_some() { proc_path } else { fallback };
        let timeout = match exec.timeout_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => self.shared.options.default_timeout,
        };
        let path_var: Option<OsString> = exec
            .env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| self.shared.options.path_var.clone());
        let program = devshell_vm_exec::resolve_program(program_name, path_var.as_deref(), &cwd)
            .map_err(|err| {
                let message = chain(&err);
                log(conn_id, &format!("exec refused: {message}"));
                Reply::error(ErrorCode::ExecSpawn, message)
            })?;
        let mut request = ToolRequest::new(program_name.clone(), args.iter().cloned())
            .stdout(OutputMode::Stream)
            .stderr(OutputMode::Stream)
            .timeout(timeout);
        if !exec.env.contains_key("PWD")
            && let Some(real) = real.as_deref().and_then(Path::to_str)
        {
            request = request.env("PWD", real);
        }
        for (name, value) in &exec.env {
            request = request.env(name.clone(), value.clone());
        }
        Ok(PreparedExec {
            program,
            request,
            cwd,
            real_cwd,
            cwd_fd,
            timeout,
            guest_cwd,
        })
    }

    fn run_exec<W: Write + Send>(
        &self,
        exec: &Exec,
        prepared: PreparedExec,
        cancel: &CancelHandle,
        writer: &mut W,
    ) -> ExecEnd {
        let watcher = self
            .peer
            .hangup
            .as_ref()
            .and_then(|hangup| HangupWatcher::start(hangup, cancel.clone()));
        let started = Instant::now();
        let session = self.session.as_ref().expect("checked by dispatch");
        let options = &self.shared.options;
        let (outcome, client_gone) = if self.has(CAP_EXEC_STREAM) {
            run_streaming(
                &prepared,
                &exec.session_id,
                cancel,
                writer,
                session,
                options,
            )
        } else {
            let outcome = run_confined(
                session,
                options,
                &prepared,
                &mut |_, chunk: &[u8]| {
                    // v1: child output goes to the sidecar's stderr.
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(chunk);
                    let _ = err.flush();
                },
                cancel,
            );
            (outcome, false)
        };
        let hung_up = watcher.is_some_and(HangupWatcher::stop);
        let gone = hung_up || client_gone;
        let summary = format!("exec {:?} in {}", exec.argv, prepared.guest_cwd);
        let end = if gone {
            log(
                self.peer.id,
                &format!("{summary}: client went away, process group killed"),
            );
            ExecEnd::ClientGone
        } else {
            let reply = exec_reply(&exec.session_id, outcome, prepared.timeout);
            log(
                self.peer.id,
                &format!(
                    "{summary}: {} after {:?}",
                    describe(&reply),
                    started.elapsed()
                ),
            );
            ExecEnd::Reply(reply)
        };
        drop(prepared.cwd_fd);
        end
    }
}

/// `exec_output` frames queued between the run and the connection's writer thread.
const STREAM_QUEUE_FRAMES: usize = 16;

/// Runs `prepared` with `exec-stream`: output chunks become `exec_output` frames,
/// written by a separate thread so that a client that stops reading never stalls the
/// run itself. When the queue is full, the run waits for the client — but never past
/// its deadline or a cancellation (hang-up, SIGTERM): then the frame is dropped and
/// the run goes on to kill the process group at once. Returns the outcome and whether
/// the client went away (a write failed).
fn run_streaming<W: Write + Send>(
    prepared: &PreparedExec,
    session_id: &str,
    cancel: &CancelHandle,
    writer: &mut W,
    session: &Session,
    options: &Options,
) -> (Result<devshell_vm_exec::ExecOutcome, ExecError>, bool) {
    let deadline = prepared.timeout.map(|t| Instant::now() + t);
    let gone = AtomicBool::new(false);
    let (frames, queue) = std::sync::mpsc::sync_channel::<Vec<u8>>(STREAM_QUEUE_FRAMES);
    let outcome = thread::scope(|scope| {
        let gone = &gone;
        scope.spawn(move || {
            for frame in queue {
                if writer
                    .write_all(&frame)
                    .and_then(|()| writer.flush())
                    .is_err()
                {
                    gone.store(true, Ordering::SeqCst);
                    cancel.cancel();
                    // Dropping the queue makes further sends fail at once.
                    return;
                }
            }
        });
        let mut on_output = |kind: StreamKind, chunk: &[u8]| {
            let frame = Reply::ExecOutput(ExecOutput {
                session_id: session_id.to_owned(),
                stream: match kind {
                    StreamKind::Stdout => OutputStream::Stdout,
                    StreamKind::Stderr => OutputStream::Stderr,
                },
                data_base64: encode_base64(chunk),
            });
            let mut pending = devshell_vm_protocol::encode_reply(&frame).into_bytes();
            pending.push(b'\n');
            loop {
                match frames.try_send(pending) {
                    Ok(()) | Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                    Err(std::sync::mpsc::TrySendError::Full(back)) => {
                        let overdue = deadline.is_some_and(|d| Instant::now() >= d);
                        if overdue || cancel.is_cancelled() {
                            // The run is being stopped: do not wait for a client that
                            // does not read.
                            return;
                        }
                        pending = back;
                        thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        };
        let outcome = run_confined(session, options, prepared, &mut on_output, cancel);
        // Closing the queue lets the writer thread finish; the scope waits for it, so
        // every queued frame is out before the final reply.
        drop(frames);
        outcome
    });
    (outcome, gone.load(Ordering::SeqCst))
}

/// An `exec` ready to run.
struct PreparedExec {
    program: PathBuf,
    request: ToolRequest,
    /// `/proc/self/fd/N` of `cwd_fd` (or the checked real path without /proc).
    cwd: PathBuf,
    /// The checked real path of the cwd: what a confined tool (which does not share this
    /// process's descriptors) changes into; inside the sandbox only the staging dir is
    /// writable and nothing outside it is visible, so no symlink can lead out.
    real_cwd: PathBuf,
    cwd_fd: OwnedFd,
    timeout: Option<Duration>,
    guest_cwd: String,
}

/// The reply for a finished run.
fn exec_reply(
    session_id: &str,
    outcome: Result<devshell_vm_exec::ExecOutcome, ExecError>,
    timeout: Option<Duration>,
) -> Reply {
    match outcome {
        Ok(outcome) => match outcome.termination {
            Termination::Exited(_) | Termination::Signaled(_) => {
                let (exit_code, signal) = outcome.v1_code_and_signal();
                Reply::ExecResult(ExecResult {
                    session_id: session_id.to_owned(),
                    exit_code,
                    signal,
                })
            }
            Termination::TimedOut => Reply::error(
                ErrorCode::ExecTimeout,
                format!(
                    "timed out after {} ms; the process group was killed",
                    timeout.map_or(0, |t| t.as_millis())
                ),
            ),
            Termination::Cancelled => Reply::error(
                ErrorCode::Shutdown,
                "the sidecar is shutting down; the process group was killed",
            ),
        },
        Err(err @ (ExecError::ProgramNotFound { .. } | ExecError::Spawn { .. })) => {
            Reply::error(ErrorCode::ExecSpawn, chain(&err))
        }
        Err(err) => Reply::error(ErrorCode::ExecWait, chain(&err)),
    }
}

/// A short description of an exec reply for the log.
fn describe(reply: &Reply) -> String {
    match reply {
        Reply::ExecResult(r) => match r.signal {
            Some(signal) => format!("exit {} (signal {signal})", r.exit_code),
            None => format!("exit {}", r.exit_code),
        },
        Reply::Error(e) => format!("error {}: {}", e.code, e.message),
        other => other.op().to_owned(),
    }
}

/// Refuses loader variables and malformed names or values.
fn check_env(env: &BTreeMap<String, String>) -> Result<(), (ErrorCode, String)> {
    for (name, value) in env {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err((
                ErrorCode::InvalidRequest,
                format!("env variable {name:?} has an invalid name or value"),
            ));
        }
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("LD_")
            || upper.starts_with("DYLD_")
            || LOADER_VARIABLES.contains(&upper.as_str())
        {
            return Err((
                ErrorCode::ForbiddenEnv,
                format!("env may not set the loader variable {name}"),
            ));
        }
    }
    Ok(())
}

/// Resolves `guest_cwd` to an open directory inside the staging dir, plus its
/// lexical host path (used only where `/proc` is missing).
fn open_guest_cwd(staging: &Staging, guest_cwd: &str) -> Result<(OwnedFd, PathBuf), String> {
    let components = guest_components(staging.mount(), guest_cwd)
        .map_err(|reason| format!("guest_cwd {guest_cwd:?}: {reason}"))?;
    let fallback = components
        .iter()
        .fold(staging.host_path().to_owned(), |path, c| path.join(c));
    let resolved = staging
        .resolve(&components, true, false)
        .map_err(|denied| format!("guest_cwd {guest_cwd:?}: {}", denied.describe()))?;
    let Some(name) = resolved.name else {
        return Ok((resolved.dir, fallback));
    };
    match resolved.stat.as_ref().map(kind_of) {
        Some(SFlag::S_IFDIR) => open_dir_at(&resolved.dir, &name)
            .map(|fd| (fd, fallback))
            .map_err(|errno| format!("guest_cwd {guest_cwd:?}: {}", errno.desc())),
        Some(_) => Err(format!("guest_cwd {guest_cwd:?} is not a directory")),
        None => Err(format!("guest_cwd {guest_cwd:?} does not exist")),
    }
}

/// Watches a connection for hang-up while an exec runs and fires the cancel handle.
struct HangupWatcher {
    wake: OwnedFd,
    thread: thread::JoinHandle<bool>,
}

impl HangupWatcher {
    fn start(hangup: &Hangup, cancel: CancelHandle) -> Option<Self> {
        let conn = hangup.fd.try_clone().ok()?;
        let gone = hangup.events | PollFlags::POLLHUP | PollFlags::POLLERR;
        let (wake_read, wake) = nix::unistd::pipe().ok()?;
        let thread = thread::Builder::new()
            .name("hangup-watch".into())
            .spawn(move || {
                loop {
                    let mut fds = [
                        PollFd::new(conn.as_fd(), gone),
                        PollFd::new(wake_read.as_fd(), PollFlags::POLLIN),
                    ];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) => {}
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return false,
                    }
                    // nix reports `None` when the kernel set a bit it has no name for:
                    // here that can only be the POLLRDHUP we asked for.
                    let peer_gone = fds[0]
                        .revents()
                        .is_none_or(|events| events.intersects(gone));
                    if peer_gone {
                        cancel.cancel();
                        return true;
                    }
                    if fds[0]
                        .revents()
                        .is_some_and(|events| events.contains(PollFlags::POLLNVAL))
                    {
                        return false;
                    }
                    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        return false;
                    }
                }
            })
            .ok()?;
        Some(Self { wake, thread })
    }

    /// Stops watching; returns whether the peer hung up.
    fn stop(self) -> bool {
        let _ = nix::unistd::write(&self.wake, b"x");
        self.thread.join().unwrap_or(false)
    }
}

/// An error and its causes, `": "`-joined (each error prints its own words once), for
/// messages sent to the client and for the log.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
