//! Listeners, the accept loops, peer checks and shutdown on SIGTERM.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use devshell_vm_protocol::{ErrorCode, Reply, write_frame};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::Mode;

use crate::conn::{Hangup, Peer, Shared, log, serve_connection};
use crate::error::SidecarError;
use crate::options::{Listen, Options};
use crate::signals::Signals;
use nix::poll::PollFlags;

/// How long a SIGTERM shutdown waits for killed execs to answer their clients.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the server until SIGTERM/SIGINT (socket and TCP) or end of input (stdio).
///
/// SIGTERM and SIGINT are caught (see the `signals` module) and handled by a
/// dedicated thread.
///
/// # Errors
/// [`SidecarError`] when the listener cannot be set up.
pub fn serve(options: Options) -> Result<(), SidecarError> {
    let signals = crate::signals::install().map_err(|errno| SidecarError::Io {
        context: "installing the SIGTERM/SIGINT handler".into(),
        source: errno.into(),
    })?;
    let shared = Arc::new(Shared::new(options));
    crate::wire::WireStores::spawn_sweeper(Arc::clone(&shared));
    match shared.options.listen.clone() {
        Listen::Unix(path) => serve_unix(&shared, &path, signals),
        Listen::Tcp(address) => serve_tcp(&shared, &address, signals),
        Listen::Stdio => {
            spawn_signal_thread(Arc::clone(&shared), signals, None);
            eprintln!("devshell-vm-sidecar: serving stdio");
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
            Ok(())
        }
    }
}

/// Receives SIGTERM/SIGINT: kills running execs, lets them answer, removes the
/// socket, exits 0.
fn spawn_signal_thread(shared: Arc<Shared>, signals: Signals, socket: Option<SocketFile>) {
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match signals.wait() {
                    Ok(signal) => {
                        eprintln!("devshell-vm-sidecar: {signal}: shutting down");
                        break;
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(errno) => {
                        eprintln!("devshell-vm-sidecar: waiting for signals failed: {errno}");
                        return;
                    }
                }
            }
            shared.begin_shutdown();
            if !shared.wait_idle(SHUTDOWN_GRACE) {
                eprintln!("devshell-vm-sidecar: some execs did not end within {SHUTDOWN_GRACE:?}");
            }
            if let Some(socket) = socket {
                socket.remove();
            }
            eprintln!("devshell-vm-sidecar: stopped");
            std::process::exit(0);
        });
    if let Err(err) = spawned {
        eprintln!("devshell-vm-sidecar: cannot start the signal thread: {err}");
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

/// Checks (or creates) the socket's directory — owned by us, mode 0700 — and clears a
/// stale socket (never a path that is not a socket).
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
    if meta.uid() != euid {
        return Err(socket_error(
            path,
            format!(
                "directory {} is owned by uid {}, not by this sidecar (uid {euid})",
                parent.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(socket_error(
            path,
            format!(
                "directory {} has mode {:o}; the socket directory must be 0700 (private to uid {euid})",
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
    eprintln!("devshell-vm-sidecar: listening on unix:{}", path.display());
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
    eprintln!("devshell-vm-sidecar: accept failed: {err}");
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

fn spawn_connection<S: Stream>(shared: &Arc<Shared>, id: u64, stream: S, requires_token: bool) {
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("conn-{id}"))
        .spawn(move || {
            let Some(_slot) = shared.try_connection_slot() else {
                refuse_busy(stream, id, shared.options.max_connections);
                return;
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
                    return;
                }
            };
            // An unauthenticated peer must complete the handshake in time, so idle
            // connections without the token cannot hold the connection slots.
            let on_authenticated: Option<Box<dyn Fn() + Send>> = if requires_token {
                match (
                    stream.read_deadline(Some(shared.options.auth_timeout)),
                    stream.split(),
                ) {
                    (Ok(()), Ok(control)) => Some(Box::new(move || {
                        let _ = control.read_deadline(None);
                    })),
                    (Err(err), _) | (_, Err(err)) => {
                        log(id, &format!("cannot set the handshake deadline: {err}"));
                        return;
                    }
                }
            } else {
                None
            };
            let peer = Peer {
                id,
                requires_token,
                hangup,
                on_authenticated,
            };
            serve_connection(&shared, peer, stream, io::BufWriter::new(writer));
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
    eprintln!(
        "devshell-vm-sidecar: listening on tcp:{local}{}",
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
