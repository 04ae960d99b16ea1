//! Listeners, the accept loops, peer checks, the connection budget and shutdown on
//! SIGTERM.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use devshell_vm_protocol::{ErrorCode, Reply, write_frame};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::Mode;

use crate::conn::{Hangup, Peer, Shared, UnauthenticatedSlot, log, serve_connection};
use crate::error::SidecarError;
use crate::log::log_line;
use crate::options::{Listen, Options};
use crate::signals::Signals;
use nix::poll::PollFlags;

/// How long a SIGTERM shutdown lets killed execs answer their clients. At its end every
/// tool still running is killed as a group (again) and the process exits 0, whatever
/// the clients or the log reader do: a SIGTERM ends the sidecar within this grace
/// period plus `EXIT_FLUSH` (a short flush of the log).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// At exit, how long the last log lines may take to reach stderr.
const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// Descriptors one connection may hold at its peak: the socket and its two duplicates,
/// the staging directory, an exec's cwd, its hang-up watcher (a duplicate and a pipe),
/// the tool's pipes while it is spawned, and directories held during a guest-fs walk.
pub const FDS_PER_CONNECTION: u64 = 16;

/// Descriptors kept for the process itself (stdio, the listener, the signal pipe, the
/// log, a spare to accept and answer `busy`).
pub const RESERVED_FDS: u64 = 32;

/// Runs the server until SIGTERM/SIGINT (socket and TCP) or end of input (stdio).
///
/// At start the soft `RLIMIT_NOFILE` is raised to the hard limit, and the connection
/// cap becomes the smaller of `--max-connections` and what the descriptor budget allows
/// (`(soft limit - RESERVED_FDS - lazy cap) / FDS_PER_CONNECTION`, where the lazy cap,
/// `devshell_vm_vfs::lazy::lazy_fd_limit`, bounds the descriptors through which wire
/// copies keep large files on disk), logged; a client beyond it is answered `busy`,
/// never dropped for lack of a descriptor.
///
/// SIGTERM and SIGINT are caught (see the `signals` module) and handled by a
/// dedicated thread.
///
/// # Errors
/// [`SidecarError`] when the listener cannot be set up.
pub fn serve(options: Options) -> Result<(), SidecarError> {
    let signals = crate::signals::install().map_err(|source| SidecarError::Io {
        context: "installing the SIGTERM/SIGINT handler".into(),
        source,
    })?;
    let cap = connection_cap(options.max_connections);
    let shared = Arc::new(Shared::new(options, cap));
    crate::wire::WireStores::spawn_sweeper(Arc::clone(&shared));
    match shared.options.listen.clone() {
        Listen::Unix(path) => serve_unix(&shared, &path, signals),
        Listen::Tcp(address) => serve_tcp(&shared, &address, signals),
        Listen::Stdio => {
            spawn_signal_thread(Arc::clone(&shared), signals, None);
            log_line!("serving stdio");
            let stdin = io::stdin();
            let stdout = io::stdout();
            // The client is gone when nobody reads our stdout any more (POLLERR on the
            // pipe's write end); end of stdin alone is not a hang-up (a script may pipe
            // its requests in and wait for the replies).
            let hangup = stdout.as_fd().try_clone_to_owned().ok().map(|fd| Hangup {
                fd,
                events: PollFlags::empty(),
            });
            let peer = Peer {
                id: shared.next_connection_id(),
                requires_token: false,
                hangup,
                on_authenticated: None,
            };
            // `Stdout` (not its lock): exec-stream frames are written from a helper thread.
            serve_connection(&shared, peer, stdin.lock(), stdout);
            crate::log::flush(EXIT_FLUSH);
            Ok(())
        }
    }
}

/// Serves one in-memory connection: the client sends `input` and closes; returns every
/// byte the server wrote. `exec` is answered with an error (no tool is ever run), so
/// arbitrary input is safe to feed: this is the request handling end to end (framing,
/// handshake and token, sessions, guest-fs, sync requests) for the fuzz target and
/// tests. Logging goes to stderr as usual.
#[doc(hidden)]
#[must_use]
pub fn serve_bytes_without_exec(options: Options, input: &[u8]) -> Vec<u8> {
    let requires_token = options.token.is_some();
    let mut shared = Shared::new(options, 1);
    shared.exec_disabled = true;
    let peer = Peer {
        id: shared.next_connection_id(),
        requires_token,
        hangup: None,
        on_authenticated: None,
    };
    let mut output = Vec::new();
    serve_connection(&shared, peer, input, &mut output);
    output
}

/// Raises the soft descriptor limit to the hard one and returns the connection cap the
/// resulting budget allows (never more than `asked`, at least 1), logging both.
fn connection_cap(asked: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(errno) => {
                log_line!("cannot raise the descriptor limit from {soft} to {hard}: {errno}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(errno) => {
            log_line!("cannot read the descriptor limit ({errno}); assuming 1024");
            1024
        }
    };
    // Computed now, from the raised limit (it is fixed at its first use).
    let lazy = u64::try_from(devshell_vm_vfs::lazy::lazy_fd_limit()).unwrap_or(u64::MAX);
    let budget = soft.saturating_sub(RESERVED_FDS.saturating_add(lazy)) / FDS_PER_CONNECTION;
    let cap = usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .clamp(1, asked);
    if cap < asked {
        log_line!(
            "connection cap {cap} (asked {asked}): descriptor limit {soft} allows {budget} connections at {FDS_PER_CONNECTION} descriptors each ({lazy} kept for files on disk)"
        );
    } else {
        log_line!("connection cap {cap} (descriptor limit {soft}, {lazy} kept for files on disk)");
    }
    cap
}

/// Receives SIGTERM/SIGINT: kills running execs, lets them answer for at most
/// [`SHUTDOWN_GRACE`], kills what is left, removes the socket, exits 0.
fn spawn_signal_thread(shared: Arc<Shared>, mut signals: Signals, socket: Option<SocketFile>) {
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Some(signal) = signals.wait() else {
                log_line!("waiting for signals failed: the signal iterator closed");
                return;
            };
            log_line!("{signal}: shutting down");
            shared.begin_shutdown();
            if !shared.wait_idle(SHUTDOWN_GRACE) {
                let killed = shared.kill_remaining();
                log_line!(
                    "execs did not end within {SHUTDOWN_GRACE:?}; {killed} process group(s) killed"
                );
            }
            if let Some(socket) = socket {
                socket.remove();
            }
            log_line!("stopped");
            crate::log::flush(EXIT_FLUSH);
            std::process::exit(0);
        });
    if let Err(err) = spawned {
        log_line!("cannot start the signal thread: {err}");
    }
}

/// The socket file we created (removed at shutdown only if it is still ours).
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.file_type().is_socket()
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn socket_error(path: &Path, reason: impl Into<String>) -> SidecarError {
    SidecarError::SocketPath {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks (or creates) the socket's directory and clears a stale socket (never a path
/// that is not a socket).
///
/// The directory must belong to us or to root and must not be writable by group or
/// others (who could otherwise replace the socket between our checks and a client's
/// connect). A readable, traversable directory (`0755`, as service managers and
/// container images create `/run/x`) is fine: the socket itself is created `0600`, and
/// every peer's uid is checked anyway. A missing directory is created `0700`.
fn prepare_socket_path(path: &Path) -> Result<(), SidecarError> {
    let euid = nix::unistd::geteuid().as_raw();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|err| {
                socket_error(path, format!("cannot create {}: {err}", parent.display()))
            })?;
    }
    let meta = std::fs::metadata(&parent)
        .map_err(|err| socket_error(path, format!("{}: {err}", parent.display())))?;
    if !meta.is_dir() {
        return Err(socket_error(
            path,
            format!("{} is not a directory", parent.display()),
        ));
    }
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(socket_error(
            path,
            format!(
                "directory {} is owned by uid {}, neither this sidecar (uid {euid}) nor root",
                parent.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(socket_error(
            path,
            format!(
                "directory {} has mode {:o}: others can write to it (and replace the socket); it must not be group- or world-writable",
                parent.display(),
                meta.mode() & 0o7777
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(socket_error(path, err.to_string())),
        Ok(existing) if !existing.file_type().is_socket() => Err(socket_error(
            path,
            "a file that is not a socket is in the way (it is left untouched)",
        )),
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(socket_error(
                    path,
                    "another server is listening on this socket",
                ));
            }
            std::fs::remove_file(path)
                .map_err(|err| socket_error(path, format!("cannot remove the stale socket: {err}")))
        }
    }
}

fn serve_unix(shared: &Arc<Shared>, path: &Path, signals: Signals) -> Result<(), SidecarError> {
    prepare_socket_path(path)?;
    // Created 0600 from the start: no window with wider permissions.
    let old_umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old_umask);
    let listener = bound.map_err(|source| SidecarError::Bind {
        address: path.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        SidecarError::Io {
            context: format!("chmod 0600 {}", path.display()),
            source,
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| SidecarError::Io {
        context: format!("stat {}", path.display()),
        source,
    })?;
    spawn_signal_thread(
        Arc::clone(shared),
        signals,
        Some(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        }),
    );
    log_line!("listening on unix:{}", path.display());
    let euid = nix::unistd::geteuid().as_raw();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                accept_failed(&err);
                continue;
            }
        };
        let id = shared.next_connection_id();
        match getsockopt(&stream, sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == euid => {}
            Ok(cred) => {
                log(
                    id,
                    &format!(
                        "refused peer uid {} pid {} (need uid {euid})",
                        cred.uid(),
                        cred.pid()
                    ),
                );
                refuse(
                    stream,
                    &format!("peer uid {} is not the sidecar's uid {euid}", cred.uid()),
                );
                continue;
            }
            Err(errno) => {
                log(
                    id,
                    &format!("refused: cannot read peer credentials: {errno}"),
                );
                refuse(stream, "cannot verify the peer's uid");
                continue;
            }
        }
        spawn_connection(shared, id, stream, false);
    }
    Ok(())
}

fn refuse<S: io::Write>(mut stream: S, message: &str) {
    let _ = write_frame(&mut stream, &Reply::error(ErrorCode::Unauthorized, message));
}

fn refuse_busy<S: io::Write>(mut stream: S, id: u64, limit: usize) {
    log(id, &format!("refused: {limit} connections already open"));
    let _ = write_frame(
        &mut stream,
        &Reply::error(
            ErrorCode::Busy,
            format!("the sidecar already serves {limit} connections; try again later"),
        ),
    );
}

fn accept_failed(err: &io::Error) {
    log_line!("accept failed: {err}");
    // Out of descriptors and similar: back off instead of spinning.
    thread::sleep(Duration::from_millis(50));
}

/// A socket-like stream a connection thread can split into reader and writer.
trait Stream: io::Read + io::Write + AsFd + Send + Sized + 'static {
    /// Poll events besides `POLLHUP`/`POLLERR` that mean the peer is gone.
    const GONE_EVENTS: PollFlags;
    fn split(&self) -> io::Result<Self>;
    fn read_deadline(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Stream for UnixStream {
    // A Unix peer that closes shows POLLHUP; a mere shutdown(SHUT_WR) does not.
    const GONE_EVENTS: PollFlags = PollFlags::empty();
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn read_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

impl Stream for std::net::TcpStream {
    // A closed TCP peer shows only POLLRDHUP (FIN); a half-close counts as gone.
    const GONE_EVENTS: PollFlags = PollFlags::from_bits_retain(libc::POLLRDHUP);
    fn split(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn read_deadline(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)
    }
}

/// A reader that enforces a deadline for the whole handshake, not per read: a client
/// that sends one byte before each per-read timeout would otherwise hold its slot
/// forever. Lifted once the token was accepted.
struct HandshakeDeadline<S: Stream> {
    inner: S,
    deadline: Option<Instant>,
    lifted: Arc<AtomicBool>,
}

impl<S: Stream> io::Read for HandshakeDeadline<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            if self.lifted.load(Ordering::SeqCst) {
                self.deadline = None;
                self.inner.read_deadline(None)?;
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the handshake deadline passed without a valid token",
                    ));
                }
                self.inner.read_deadline(Some(left))?;
            }
        }
        self.inner.read(buf)
    }
}

fn spawn_connection<S: Stream>(shared: &Arc<Shared>, id: u64, stream: S, requires_token: bool) {
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("conn-{id}"))
        .spawn(move || {
            let Some(_slot) = shared.try_connection_slot() else {
                refuse_busy(stream, id, shared.connection_cap());
                return;
            };
            // Connections that have not authenticated have their own, smaller budget,
            // so they can never take every slot.
            let unauthenticated = if requires_token {
                let Some(slot) = UnauthenticatedSlot::take(&shared) else {
                    log(
                        id,
                        &format!(
                            "refused: {} connections are already waiting to authenticate",
                            shared.options.max_unauthenticated
                        ),
                    );
                    let _ = write_frame(
                        &mut { stream },
                        &Reply::error(
                            ErrorCode::Busy,
                            "too many connections are authenticating; try again later",
                        ),
                    );
                    return;
                };
                Some(Arc::new(slot))
            } else {
                None
            };
            let (writer, hangup) = match (stream.split(), stream.as_fd().try_clone_to_owned()) {
                (Ok(writer), Ok(fd)) => (
                    writer,
                    Some(Hangup {
                        fd,
                        events: S::GONE_EVENTS,
                    }),
                ),
                (Err(err), _) | (_, Err(err)) => {
                    log(id, &format!("cannot set up the connection: {err}"));
                    refuse_busy(stream, id, shared.connection_cap());
                    return;
                }
            };
            // An unauthenticated peer must complete the whole handshake in time.
            let lifted = Arc::new(AtomicBool::new(false));
            let on_authenticated: Option<Box<dyn Fn() + Send>> =
                unauthenticated.map(|slot| -> Box<dyn Fn() + Send> {
                    let lifted = Arc::clone(&lifted);
                    Box::new(move || {
                        lifted.store(true, Ordering::SeqCst);
                        slot.release();
                    })
                });
            let reader = HandshakeDeadline {
                inner: stream,
                deadline: requires_token.then(|| Instant::now() + shared.options.auth_timeout),
                lifted,
            };
            let peer = Peer {
                id,
                requires_token,
                hangup,
                on_authenticated,
            };
            serve_connection(&shared, peer, reader, io::BufWriter::new(writer));
        });
    if let Err(err) = spawned {
        log(
            id,
            &format!("cannot start a thread for the connection: {err}"),
        );
    }
}

fn serve_tcp(shared: &Arc<Shared>, address: &str, signals: Signals) -> Result<(), SidecarError> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| SidecarError::Bind {
            address: address.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(SidecarError::Usage(format!(
            "--serve-tcp {address}: resolves to no address"
        )));
    }
    if shared.options.insecure_no_auth && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(SidecarError::Usage(format!(
            "--insecure-no-auth is only accepted on a loopback address, not {address}"
        )));
    }
    let listener = TcpListener::bind(&addrs[..]).map_err(|source| SidecarError::Bind {
        address: address.to_owned(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| SidecarError::Io {
        context: "reading the bound TCP address".into(),
        source,
    })?;
    spawn_signal_thread(Arc::clone(shared), signals, None);
    log_line!(
        "listening on tcp:{local}{}",
        if shared.options.token.is_some() {
            " (token required)"
        } else {
            " (no authentication, loopback only)"
        }
    );
    let requires_token = shared.options.token.is_some();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                accept_failed(&err);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_connection_id();
        if let Ok(peer) = stream.peer_addr() {
            log(id, &format!("tcp peer {peer}"));
        }
        spawn_connection(shared, id, stream, requires_token);
    }
    Ok(())
}
