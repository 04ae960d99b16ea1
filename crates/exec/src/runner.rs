//! Spawning, waiting, deadlines and output plumbing.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::interrupts::{self, ForwardGuard};
use crate::{ExecError, OutputMode, StdinMode, ToolRequest};

/// How often the wait loop looks at cancel handles and forwarded interrupts when
/// nothing else wakes it. Output and exit wake it immediately.
const TICK: Duration = Duration::from_millis(20);

/// After the tool itself exits, how long to keep reading output that descendants
/// may still write before abandoning the pipes (a daemon may hold them forever).
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// After `SIGKILL` of the group, how long to wait for the tool to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(2);

/// Size of one read from a tool's pipe (and so the largest output chunk).
pub const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;

/// Events (output chunks, mostly) queued between the pipe readers and the caller of
/// [`run`]. When the caller's `on_output` is slow, the queue fills, the reader threads
/// stop reading and the tool blocks on its full pipe: output is back-pressured end to
/// end, and the memory a run holds for output is bounded by about
/// `(OUTPUT_QUEUE_EVENTS + 2) * OUTPUT_CHUNK_BYTES` (the queue plus one buffer per
/// reader thread), whatever the tool prints.
pub const OUTPUT_QUEUE_EVENTS: usize = 4;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The tool exited with this code.
    Exited(i32),
    /// The tool was terminated by this signal number (not by us).
    Signaled(i32),
    /// The deadline passed; the process group was killed.
    TimedOut,
    /// A [`CancelHandle`] fired; the process group was killed.
    Cancelled,
}

impl std::fmt::Display for Termination {
    /// `exit code 3`, `killed by signal 9`, `timed out`, `cancelled`: the words every
    /// backend uses when it reports how a tool ended.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exit code {code}"),
            Self::Signaled(signal) => write!(f, "killed by signal {signal}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Why an outcome carries no exit status of the tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoExitStatus {
    /// The deadline passed and the process group was killed.
    TimedOut,
    /// A [`CancelHandle`] fired and the process group was killed.
    Cancelled,
}

/// The result of a run that started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// How the run ended.
    pub termination: Termination,
    /// Captured stdout (empty unless [`OutputMode::Capture`]).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless [`OutputMode::Capture`]).
    pub stderr: Vec<u8>,
    /// Wall time from spawn to return.
    pub duration: Duration,
}

impl ExecOutcome {
    /// `true` when the tool exited with code 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The equivalent [`ExitStatus`]; `None` for timeouts and cancellations, which
    /// are not exit statuses of the tool.
    #[must_use]
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit_status_or_reason().ok()
    }

    /// The equivalent [`ExitStatus`], or why there is none: what every backend's
    /// `run_rust_tool` turns into its own timeout or cancellation error.
    ///
    /// # Errors
    /// [`NoExitStatus`] for a timed-out or cancelled run.
    pub fn exit_status_or_reason(&self) -> Result<ExitStatus, NoExitStatus> {
        match self.termination {
            Termination::Exited(code) => Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Termination::Signaled(signal) => Ok(ExitStatus::from_raw(signal & 0x7f)),
            Termination::TimedOut => Err(NoExitStatus::TimedOut),
            Termination::Cancelled => Err(NoExitStatus::Cancelled),
        }
    }

    /// The β protocol v1 encoding: `(exit_code, signal)` with `128 + n` for a signal.
    /// Timeouts and cancellations report `SIGKILL`, which is what ended the tool.
    #[must_use]
    pub fn v1_code_and_signal(&self) -> (i32, Option<i32>) {
        match self.termination {
            Termination::Exited(code) => (code, None),
            Termination::Signaled(signal) => (128 + signal, Some(signal)),
            Termination::TimedOut | Termination::Cancelled => {
                let kill = Signal::SIGKILL as i32;
                (128 + kill, Some(kill))
            }
        }
    }
}

/// Cancels a running [`run`] from another thread: the process group is killed and
/// the run returns [`Termination::Cancelled`]. Cloning shares the same flag.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    cancelled: AtomicBool,
    /// Process group of the run using this handle while its tool runs (0: none).
    group: AtomicI32,
}

impl CancelHandle {
    /// A handle that has not fired.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the handle (idempotent).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether the handle has fired.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Fires the handle and sends `SIGKILL` to the process group of the tool that a
    /// [`run`] with this handle is running right now, from the calling thread: for a
    /// caller that must stop tools even when the thread running them is stuck (a
    /// server's shutdown deadline). Returns whether a group was signalled.
    #[must_use = "tells whether a running tool was signalled"]
    pub fn kill_now(&self) -> bool {
        self.cancel();
        let group = self.0.group.load(Ordering::SeqCst);
        group > 0 && killpg(Pid::from_raw(group), Signal::SIGKILL).is_ok()
    }

    /// The process group of the tool a [`run`] with this handle is running, if any.
    #[must_use]
    pub fn process_group(&self) -> Option<i32> {
        let group = self.0.group.load(Ordering::SeqCst);
        (group > 0).then_some(group)
    }
}

/// Records the running group in a cancel handle and clears it when the run returns.
struct GroupRecord<'a>(Option<&'a CancelHandle>);

impl<'a> GroupRecord<'a> {
    fn set(cancel: Option<&'a CancelHandle>, group: Pid) -> Self {
        if let Some(cancel) = cancel {
            cancel.0.group.store(group.as_raw(), Ordering::SeqCst);
        }
        Self(cancel)
    }
}

impl Drop for GroupRecord<'_> {
    fn drop(&mut self) {
        if let Some(cancel) = self.0 {
            cancel.0.group.store(0, Ordering::SeqCst);
        }
    }
}

/// Finds `program` the way a shell would: a name containing `/` is taken relative
/// to `cwd` and must be an executable file; a bare name is searched in `path_var`
/// (a `PATH`-style list; `None` means an empty search path).
///
/// # Errors
/// [`ExecError::ProgramNotFound`] naming the program and the search path.
pub fn resolve_program(
    program: &str,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, ExecError> {
    let not_found = || ExecError::ProgramNotFound {
        program: program.to_owned(),
        searched: path_var.map_or_else(
            || "<empty>".to_owned(),
            |p| p.to_string_lossy().into_owned(),
        ),
    };
    if program.is_empty() || program.contains('\0') {
        return Err(not_found());
    }
    if program.contains('/') {
        let candidate = cwd.join(program);
        return if is_executable_file(&candidate) {
            Ok(candidate)
        } else {
            Err(not_found())
        };
    }
    which::which_in(program, path_var, cwd).map_err(|_| not_found())
}

/// A [`resolve_program`] that remembers what it found, like a shell's command hash: a
/// bare name found once is reused while the file it found is still an executable file
/// (one `statx`), instead of searching every `PATH` entry on every run. A program
/// installed later *earlier* on the search path than the one remembered is seen by a new
/// cache (a new session), as in `bash` after `hash -r`. Nothing is remembered when the
/// search path has a relative entry (its meaning depends on the working directory) or
/// for names containing `/` (resolved against `cwd` each time, one `statx` anyway).
#[derive(Debug, Clone, Default)]
pub struct ProgramCache {
    path_var: Option<std::ffi::OsString>,
    cacheable: bool,
    found: std::collections::HashMap<String, PathBuf>,
}

impl ProgramCache {
    /// Bounds the number of remembered names (a long-lived session running generated
    /// program names must not grow without end).
    const MAX_ENTRIES: usize = 256;

    /// A cache searching `path_var` (a `PATH`-style list; `None`: an empty search path).
    #[must_use]
    pub fn new(path_var: Option<&OsStr>) -> Self {
        let cacheable =
            path_var.is_some_and(|p| std::env::split_paths(p).all(|dir| dir.is_absolute()));
        Self {
            path_var: path_var.map(OsStr::to_os_string),
            cacheable,
            found: std::collections::HashMap::new(),
        }
    }

    /// The search path this cache uses.
    #[must_use]
    pub fn path_var(&self) -> Option<&OsStr> {
        self.path_var.as_deref()
    }

    /// [`resolve_program`] for `program` in `cwd`, answered from the cache when the
    /// remembered file is still an executable file.
    ///
    /// # Errors
    /// As [`resolve_program`].
    pub fn resolve(&mut self, program: &str, cwd: &Path) -> Result<PathBuf, ExecError> {
        if !self.cacheable || program.contains('/') {
            return resolve_program(program, self.path_var.as_deref(), cwd);
        }
        if let Some(path) = self.found.get(program) {
            if is_executable_file(path) {
                return Ok(path.clone());
            }
            self.found.remove(program);
        }
        let path = resolve_program(program, self.path_var.as_deref(), cwd)?;
        if self.found.len() >= Self::MAX_ENTRIES {
            self.found.clear();
        }
        self.found.insert(program.to_owned(), path.clone());
        Ok(path)
    }
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Events from the helper threads to the wait loop.
enum Event {
    Stream(StreamEvent),
    Exited(std::io::Result<ExitStatus>),
}

/// Runs `program` (already resolved, see [`resolve_program`]) in `cwd` as described
/// by `request`, in its own process group.
///
/// `on_output` receives chunks of streams set to [`OutputMode::Stream`], on the
/// calling thread, in arrival order. `cancel` kills the group when fired.
///
/// Returns when the tool has exited and its output has been drained (abandoning
/// pipes that descendants keep open longer than a short grace period), or at the
/// deadline / cancellation, right after killing the group.
///
/// # Errors
/// [`ExecError::Spawn`] when the process cannot be started, [`ExecError::Io`] when
/// installing interrupt forwarding or waiting fails.
pub fn run(
    program: &Path,
    request: &ToolRequest,
    cwd: &Path,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: Option<&CancelHandle>,
) -> Result<ExecOutcome, ExecError> {
    let forward_guard = if request.forward_interrupts {
        Some(ForwardGuard::install().map_err(|source| ExecError::Io {
            context: "installing interrupt forwarding".to_owned(),
            source,
        })?)
    } else {
        None
    };

    let mut command = Command::new(program);
    command
        .args(&request.args)
        .current_dir(cwd)
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(match request.stdin {
            StdinMode::Null => Stdio::null(),
            StdinMode::Inherit => Stdio::inherit(),
        })
        .stdout(stdio_for(request.stdout))
        .stderr(stdio_for(request.stderr));

    let started = Instant::now();
    let deadline = request.timeout.map(|t| started + t);
    let mut child = command.spawn().map_err(|source| ExecError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    let group = Pid::from_raw(i32::try_from(child.id()).map_err(|_| ExecError::Io {
        context: format!("child pid {} out of range", child.id()),
        source: std::io::Error::other("pid out of range"),
    })?);

    // Kills the group if this process dies during the run; stopped when the run ends.
    let _reaper = GroupReaper::start(group);
    // Restores the terminal to this process group when dropped (after the wait below).
    let _terminal = TerminalHandover::take(request.stdin, group);
    let _recorded = GroupRecord::set(cancel, group);

    // Bounded: a slow `on_output` back-pressures the readers and so the tool.
    let (sender, events) = mpsc::sync_channel(OUTPUT_QUEUE_EVENTS);
    let open_streams = spawn_readers(&mut child, &sender);
    spawn_waiter(child, sender);

    let mut state = WaitState {
        request,
        group,
        deadline,
        cancel,
        forwarding: forward_guard.is_some(),
        open_streams,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let termination = state.wait(&events, on_output)?;
    drop(forward_guard);
    Ok(ExecOutcome {
        termination,
        stdout: state.stdout,
        stderr: state.stderr,
        duration: started.elapsed(),
    })
}

/// Kills the tool's process group if this process dies while the tool runs (a `kill -9`
/// of the embedding application must not leave the tool running; with isolation the
/// sandbox's init does this, without it this is the only guard).
///
/// One reaper serves the whole process: a tiny `/bin/sh` in its own process group,
/// started on first use, whose stdin is one end of a socket pair only this process holds
/// (close-on-exec). Each run registers its group (`add <pgid>`) and unregisters it when
/// it ends (`del <pgid>`): two short writes, a few µs, instead of a process per run. When
/// this process dies, however it dies, the socket closes, `read` returns end-of-file and
/// the reaper kills every group still registered, then exits. Writes use `MSG_NOSIGNAL`,
/// so a reaper that was killed never raises `SIGPIPE` in the embedding application; it is
/// replaced on the next run. Like the timeout's kill, this does not reach a descendant
/// that left the group (`setsid`). Without `/bin/sh` there is no reaper.
struct GroupReaper {
    group: i32,
}

/// The process-wide reaper: the `sh` child and our end of its stdin.
struct SharedReaper {
    child: Child,
    feed: std::os::unix::net::UnixStream,
}

static REAPER: std::sync::Mutex<Option<SharedReaper>> = std::sync::Mutex::new(None);

/// The reaper's program: a set of groups kept in a string, builtins only.
const REAPER_SCRIPT: &str = r#"g=' '
while read -r op id; do
  case $op in
    add) g="$g$id " ;;
    del) n=' '; for x in $g; do [ "$x" = "$id" ] || n="$n$x "; done; g=$n ;;
  esac
done
for x in $g; do kill -9 "-$x" 2>/dev/null; done"#;

impl SharedReaper {
    fn spawn() -> Option<Self> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().ok()?;
        let child = Command::new("/bin/sh")
            .args(["-c", REAPER_SCRIPT, "devshell-vm-reaper"])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()?;
        Some(Self { child, feed: ours })
    }

    fn send(&self, line: &[u8]) -> bool {
        use std::os::fd::AsRawFd;
        let mut rest = line;
        while !rest.is_empty() {
            match nix::sys::socket::send(
                self.feed.as_raw_fd(),
                rest,
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Sends `line` to the process-wide reaper, starting (or replacing a dead) one.
fn tell_reaper(line: &str) -> bool {
    let mut guard = REAPER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..2 {
        if guard.is_none() {
            *guard = SharedReaper::spawn();
        }
        let Some(reaper) = guard.as_ref() else {
            return false;
        };
        if reaper.send(line.as_bytes()) {
            return true;
        }
        // Gone (killed by someone): reap it and start another.
        if let Some(mut dead) = guard.take() {
            let _ = dead.child.kill();
            let _ = dead.child.wait();
        }
    }
    false
}

impl GroupReaper {
    fn start(group: Pid) -> Option<Self> {
        let group = group.as_raw();
        tell_reaper(&format!("add {group}\n")).then_some(Self { group })
    }
}

impl Drop for GroupReaper {
    fn drop(&mut self) {
        let _ = tell_reaper(&format!("del {}\n", self.group));
    }
}

/// Foreground handover of the controlling terminal. The tool runs in its own process
/// group; with an inherited stdin that is this process's terminal, that group would be a
/// *background* group and the first read from the terminal would stop the tool with
/// `SIGTTIN` (an interactive `cargo run` hung until the timeout). While the tool runs its
/// group is made the terminal's foreground group — as a shell does for a job — and on
/// drop this process's group takes the terminal back. Ctrl-C at the terminal then reaches
/// the tool's group directly. Nothing happens when stdin is not inherited, not a
/// terminal, or this process is not in the foreground itself.
struct TerminalHandover {
    ours: Pid,
}

impl TerminalHandover {
    fn take(stdin: StdinMode, tool_group: Pid) -> Option<Self> {
        use std::os::fd::AsFd;
        if stdin != StdinMode::Inherit {
            return None;
        }
        let terminal = std::io::stdin();
        if !nix::unistd::isatty(terminal.as_fd()).unwrap_or(false) {
            return None;
        }
        let ours = nix::unistd::getpgrp();
        if nix::unistd::tcgetpgrp(terminal.as_fd()).ok()? != ours {
            return None;
        }
        nix::unistd::tcsetpgrp(terminal.as_fd(), tool_group).ok()?;
        // The tool may have read the terminal before it became the foreground group and
        // been stopped by SIGTTIN: let it continue (harmless when it was not stopped).
        let _ = killpg(tool_group, Signal::SIGCONT);
        Some(Self { ours })
    }
}

impl Drop for TerminalHandover {
    fn drop(&mut self) {
        use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
        use std::os::fd::AsFd;
        // This process is a background group now; `tcsetpgrp` from the background sends
        // SIGTTOU (which would stop us) unless the signal is blocked.
        let mut block = SigSet::empty();
        block.add(Signal::SIGTTOU);
        let mut previous = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut previous)).is_ok() {
            let _ = nix::unistd::tcsetpgrp(std::io::stdin().as_fd(), self.ours);
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
        }
    }
}

fn stdio_for(mode: OutputMode) -> Stdio {
    match mode {
        OutputMode::Inherit => Stdio::inherit(),
        OutputMode::Capture | OutputMode::Stream => Stdio::piped(),
        OutputMode::Null => Stdio::null(),
    }
}

/// Starts one reader thread per piped stream; returns how many are open.
fn spawn_readers(child: &mut Child, sender: &SyncSender<Event>) -> usize {
    let mut open = 0;
    if let Some(stdout) = child.stdout.take() {
        open += 1;
        spawn_output_reader::<ChildStdout, Event>(stdout, StreamKind::Stdout, sender.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        open += 1;
        spawn_output_reader::<ChildStderr, Event>(stderr, StreamKind::Stderr, sender.clone());
    }
    open
}

/// What an output reader thread ([`spawn_output_reader`]) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A chunk of at most [`OUTPUT_CHUNK_BYTES`] read from the stream.
    Output(StreamKind, Vec<u8>),
    /// The stream reached end-of-file (or a read error ended it).
    Closed,
}

impl From<StreamEvent> for Event {
    fn from(event: StreamEvent) -> Self {
        Self::Stream(event)
    }
}

/// Starts a thread that reads `pipe` (a tool's stdout or stderr) in chunks of
/// [`OUTPUT_CHUNK_BYTES`] and sends each as [`StreamEvent::Output`] into `sender`, then
/// [`StreamEvent::Closed`] at end-of-file. The queue is the caller's: a bounded one
/// ([`OUTPUT_QUEUE_EVENTS`]) makes a slow consumer block the reader, and so the tool on
/// its pipe, instead of growing this process. The thread stops reading when the
/// receiver is gone. [`run`] uses it, and so does the sandbox crate for confined runs
/// (its events carry more kinds, hence the `From` bound).
pub fn spawn_output_reader<R, E>(mut pipe: R, kind: StreamKind, sender: SyncSender<E>)
where
    R: Read + Send + 'static,
    E: From<StreamEvent> + Send + 'static,
{
    thread::spawn(move || {
        let mut buffer = vec![0_u8; OUTPUT_CHUNK_BYTES];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    // Blocks while the queue is full: the tool then blocks on its pipe.
                    let chunk = StreamEvent::Output(kind, buffer[..n].to_vec());
                    if sender.send(chunk.into()).is_err() {
                        // The run returned (deadline or abandoned pipe); stop reading.
                        return;
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(StreamEvent::Closed.into());
    });
}

fn spawn_waiter(mut child: Child, sender: SyncSender<Event>) {
    thread::spawn(move || {
        let _ = sender.send(Event::Exited(child.wait()));
    });
}

struct WaitState<'a> {
    request: &'a ToolRequest,
    group: Pid,
    deadline: Option<Instant>,
    cancel: Option<&'a CancelHandle>,
    forwarding: bool,
    open_streams: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl WaitState<'_> {
    fn wait(
        &mut self,
        events: &Receiver<Event>,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
    ) -> Result<Termination, ExecError> {
        let mut exited: Option<Termination> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if let Some(termination) = exited
                && (self.open_streams == 0 || drain_until.is_some_and(|t| Instant::now() >= t))
            {
                return Ok(termination);
            }
            if exited.is_none() {
                if let Some(forced) = self.forced_stop() {
                    return self.kill_and_reap(events, on_output, forced);
                }
                self.forward_interrupts();
            }
            let wake = self.next_wake(drain_until);
            match events.recv_timeout(wake) {
                Ok(Event::Stream(StreamEvent::Output(kind, chunk))) => {
                    self.deliver(kind, &chunk, on_output);
                }
                Ok(Event::Stream(StreamEvent::Closed)) => {
                    self.open_streams = self.open_streams.saturating_sub(1);
                }
                Ok(Event::Exited(status)) => {
                    let status = termination_of(status)?;
                    // Killed through `CancelHandle::kill_now` before this loop noticed
                    // the cancellation: report the cancellation, not the SIGKILL.
                    let cancelled = self.cancel.is_some_and(CancelHandle::is_cancelled);
                    exited = Some(if cancelled && status == Termination::Signaled(9) {
                        Termination::Cancelled
                    } else {
                        status
                    });
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ExecError::Io {
                        context: format!("waiting for `{}`", self.request.program),
                        source: std::io::Error::other("wait thread ended without a status"),
                    });
                }
            }
        }
    }

    /// A timeout or cancellation that must stop the tool now.
    fn forced_stop(&self) -> Option<Termination> {
        if self.cancel.is_some_and(CancelHandle::is_cancelled) {
            return Some(Termination::Cancelled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(Termination::TimedOut);
        }
        None
    }

    fn forward_interrupts(&self) {
        if self.forwarding {
            for signal in interrupts::take_pending() {
                let _ = killpg(self.group, signal);
            }
        }
    }

    fn next_wake(&self, drain_until: Option<Instant>) -> Duration {
        let now = Instant::now();
        let mut wake = if self.cancel.is_some() || self.forwarding {
            TICK
        } else {
            Duration::from_hours(1)
        };
        for limit in [self.deadline, drain_until].into_iter().flatten() {
            wake = wake.min(limit.saturating_duration_since(now));
        }
        wake
    }

    fn deliver(
        &mut self,
        kind: StreamKind,
        chunk: &[u8],
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
    ) {
        let mode = match kind {
            StreamKind::Stdout => self.request.stdout,
            StreamKind::Stderr => self.request.stderr,
        };
        match (mode, kind) {
            (OutputMode::Capture, StreamKind::Stdout) => self.stdout.extend_from_slice(chunk),
            (OutputMode::Capture, StreamKind::Stderr) => self.stderr.extend_from_slice(chunk),
            (OutputMode::Stream, _) => on_output(kind, chunk),
            (OutputMode::Inherit | OutputMode::Null, _) => {}
        }
    }

    /// Kills the group, waits briefly for the tool to be reaped (so no zombie is
    /// left), keeps output that is already buffered, and returns `forced`.
    fn kill_and_reap(
        &mut self,
        events: &Receiver<Event>,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        forced: Termination,
    ) -> Result<Termination, ExecError> {
        if let Err(errno) = killpg(self.group, Signal::SIGKILL)
            && errno != nix::errno::Errno::ESRCH
        {
            return Err(ExecError::Io {
                context: format!("killing process group of `{}`", self.request.program),
                source: errno.into(),
            });
        }
        let give_up = Instant::now() + REAP_GRACE;
        loop {
            match events.recv_timeout(give_up.saturating_duration_since(Instant::now())) {
                Ok(Event::Stream(StreamEvent::Output(kind, chunk))) => {
                    self.deliver(kind, &chunk, on_output);
                }
                Ok(Event::Stream(StreamEvent::Closed)) => {}
                Ok(Event::Exited(_)) | Err(_) => return Ok(forced),
            }
        }
    }
}

fn termination_of(status: std::io::Result<ExitStatus>) -> Result<Termination, ExecError> {
    let status = status.map_err(|source| ExecError::Io {
        context: "waiting for the tool".to_owned(),
        source,
    })?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signaled(signal),
        (None, None) => Termination::Exited(-1),
    })
}
