//! Byte transports to the sidecar (Unix socket, TCP, a spawned `--serve-stdio` child)
//! with real deadlines: every descriptor is non-blocking and waits go through `poll`, so
//! a read, a write or a connect never blocks past its deadline, on sockets and pipes
//! alike.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use devshell_vm_exec::CancelHandle;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How often a wait with a cancel handle looks at the handle.
const CANCEL_TICK: Duration = Duration::from_millis(25);

/// Grace periods for stopping a spawned sidecar: after closing its stdin, after SIGTERM.
const CHILD_EOF_GRACE: Duration = Duration::from_secs(2);
const CHILD_TERM_GRACE: Duration = Duration::from_secs(2);

/// Marker message of the error a wait returns when its cancel handle fired.
pub(crate) const CANCELLED_MESSAGE: &str = "cancelled by the caller";

/// The read side of a transport.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Unix(UnixStream),
    Tcp(TcpStream),
    Pipe(ChildStdout),
}

/// The write side of a transport.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Unix(UnixStream),
    Tcp(TcpStream),
    Pipe(ChildStdin),
}

impl AsFd for ReadHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
            Self::Pipe(p) => p.as_fd(),
        }
    }
}

impl AsFd for WriteHalf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Unix(s) => s.as_fd(),
            Self::Tcp(s) => s.as_fd(),
            Self::Pipe(p) => p.as_fd(),
        }
    }
}

/// Waits until `fd` is ready for `flags`, the deadline passes (`TimedOut`) or `cancel`
/// fires (an error whose message is [`CANCELLED_MESSAGE`]).
fn wait_ready(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    deadline: Option<Instant>,
    cancel: Option<&CancelHandle>,
) -> io::Result<()> {
    loop {
        if cancel.is_some_and(CancelHandle::is_cancelled) {
            return Err(io::Error::other(CANCELLED_MESSAGE));
        }
        let mut slice = match deadline {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "deadline passed waiting for the sidecar",
                    ));
                }
                Some(deadline - now)
            }
            None => None,
        };
        if cancel.is_some() {
            slice = Some(slice.map_or(CANCEL_TICK, |s| s.min(CANCEL_TICK)));
        }
        let timeout = match slice {
            // Round up so a sub-millisecond remainder does not spin.
            Some(s) => {
                PollTimeout::try_from(s.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(fd, flags)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Ready, or an error/hang-up condition the next read/write reports precisely.
            Ok(_) => return Ok(()),
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// Read side with a deadline and an optional cancel handle.
#[derive(Debug)]
pub(crate) struct TimedReader {
    half: ReadHalf,
    /// Reads fail with `TimedOut` after this instant (`None`: wait forever).
    pub(crate) deadline: Option<Instant>,
    /// Reads fail with [`CANCELLED_MESSAGE`] once this fires.
    pub(crate) cancel: Option<CancelHandle>,
    /// Bytes read so far.
    pub(crate) count: u64,
}

impl Read for TimedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let result = match &mut self.half {
                ReadHalf::Unix(s) => s.read(buf),
                ReadHalf::Tcp(s) => s.read(buf),
                ReadHalf::Pipe(p) => p.read(buf),
            };
            match result {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => wait_ready(
                    self.half.as_fd(),
                    PollFlags::POLLIN,
                    self.deadline,
                    self.cancel.as_ref(),
                )?,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    self.count += n as u64;
                    return Ok(n);
                }
                other => return other,
            }
        }
    }
}

/// Write side with a deadline.
#[derive(Debug)]
pub(crate) struct TimedWriter {
    half: WriteHalf,
    /// Writes fail with `TimedOut` after this instant.
    pub(crate) deadline: Option<Instant>,
    /// Bytes written so far.
    pub(crate) count: u64,
}

impl Write for TimedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let result = match &mut self.half {
                WriteHalf::Unix(s) => s.write(buf),
                WriteHalf::Tcp(s) => s.write(buf),
                WriteHalf::Pipe(p) => p.write(buf),
            };
            match result {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    wait_ready(self.half.as_fd(), PollFlags::POLLOUT, self.deadline, None)?;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    self.count += n as u64;
                    return Ok(n);
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sidecar spawned with `--serve-stdio`, stopped and reaped on drop.
#[derive(Debug)]
pub(crate) struct SidecarChild {
    child: Child,
}

impl SidecarChild {
    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `grace` for the child to exit; `true` when it did (and was reaped).
    fn wait_for(&mut self, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= until => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Drop for SidecarChild {
    /// Its stdin is already closed (the write half is dropped first): the sidecar sees end
    /// of input, kills any exec still running and exits. If it does not, SIGTERM (its
    /// clean shutdown), then SIGKILL; always reaped.
    fn drop(&mut self) {
        if self.wait_for(CHILD_EOF_GRACE) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if self.wait_for(CHILD_TERM_GRACE) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An open byte channel to a sidecar.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) reader: TimedReader,
    pub(crate) writer: TimedWriter,
    /// The spawned sidecar for the stdio transport; dropped after reader and writer.
    pub(crate) child: Option<SidecarChild>,
}

/// TCP keepalive probes, so an `exec` without a deadline still notices a peer that
/// vanished without closing the connection (on Linux after about a minute of silence).
fn set_keepalive(stream: &TcpStream) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
    tune_keepalive(stream)
}

/// Probe timing: first probe after 30 s idle, then every 10 s, give up after 3.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn tune_keepalive(stream: &TcpStream) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(stream, sockopt::TcpKeepIdle, &30).map_err(io::Error::from)?;
    setsockopt(stream, sockopt::TcpKeepInterval, &10).map_err(io::Error::from)?;
    setsockopt(stream, sockopt::TcpKeepCount, &3).map_err(io::Error::from)?;
    Ok(())
}

/// Elsewhere the system's keepalive timing applies.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[allow(clippy::unnecessary_wraps)]
fn tune_keepalive(_stream: &TcpStream) -> io::Result<()> {
    Ok(())
}

fn set_nonblocking_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

impl Channel {
    fn from_halves(read: ReadHalf, write: WriteHalf, child: Option<SidecarChild>) -> Self {
        Self {
            reader: TimedReader {
                half: read,
                deadline: None,
                cancel: None,
                count: 0,
            },
            writer: TimedWriter {
                half: write,
                deadline: None,
                count: 0,
            },
            child,
        }
    }

    /// Connects to a Unix socket within `timeout`. The socket is non-blocking from the
    /// start: a listener whose backlog is full (a stuck sidecar that no longer accepts)
    /// answers `EAGAIN`, retried until the deadline, instead of blocking forever.
    pub(crate) fn unix(path: &Path, timeout: Duration) -> io::Result<Self> {
        use nix::errno::Errno;
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket, sockopt,
        };
        use std::os::fd::AsRawFd;

        let deadline = Instant::now() + timeout;
        let address = UnixAddr::new(path).map_err(io::Error::from)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        loop {
            match connect(fd.as_raw_fd(), &address) {
                Ok(()) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "the socket's backlog stayed full for {timeout:?} (the sidecar does not accept)"
                            ),
                        ));
                    }
                    std::thread::sleep(left.min(CANCEL_TICK));
                }
                Err(Errno::EINPROGRESS) => {
                    wait_ready(fd.as_fd(), PollFlags::POLLOUT, Some(deadline), None)?;
                    let pending = getsockopt(&fd, sockopt::SocketError).map_err(io::Error::from)?;
                    if pending != 0 {
                        return Err(io::Error::from_raw_os_error(pending));
                    }
                    break;
                }
                Err(errno) => return Err(errno.into()),
            }
        }
        let stream = UnixStream::from(fd);
        let read = stream.try_clone()?;
        Ok(Self::from_halves(
            ReadHalf::Unix(read),
            WriteHalf::Unix(stream),
            None,
        ))
    }

    /// Connects over TCP, trying each resolved address until `timeout` is used up.
    pub(crate) fn tcp(host: &str, port: u16, timeout: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + timeout;
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port} resolved to no address"),
        );
        for addr in (host, port).to_socket_addrs()? {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::Error::new(io::ErrorKind::TimedOut, "connect deadline passed");
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    set_keepalive(&stream)?;
                    stream.set_nonblocking(true)?;
                    let read = stream.try_clone()?;
                    return Ok(Self::from_halves(
                        ReadHalf::Tcp(read),
                        WriteHalf::Tcp(stream),
                        None,
                    ));
                }
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// Spawns `program --serve-stdio --root <root>` in `root` and talks over its pipes.
    /// Its stderr (logs, and tool output when `exec-stream` is not negotiated) is ours.
    pub(crate) fn stdio(program: &PathBuf, root: &Path) -> io::Result<Self> {
        let mut child = Command::new(program)
            .arg("--serve-stdio")
            .arg("--root")
            .arg(root)
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("spawned sidecar has no stdio pipes"));
        };
        let child = SidecarChild { child };
        set_nonblocking_fd(stdin.as_fd())?;
        set_nonblocking_fd(stdout.as_fd())?;
        Ok(Self::from_halves(
            ReadHalf::Pipe(stdout),
            WriteHalf::Pipe(stdin),
            Some(child),
        ))
    }
}
