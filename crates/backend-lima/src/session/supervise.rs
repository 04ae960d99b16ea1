//! Timed and cancellable runs that stop the guest process for real.
//!
//! Killing `limactl shell` does not kill the guest command: ssh runs it without a pty
//! (`-t` only when limactl's stdout is a terminal, Lima's `cmd/limactl/shell.go`
//! L442-L445 of v2.2.0), so when the client goes away sshd only closes the command's
//! stdin and output pipes; `sleep 300` (or a `cargo build` holding its build-directory
//! lock) keeps running. So a timed or cancellable run is wrapped in a small POSIX-sh
//! supervisor in the guest ([`SUPERVISOR`]) and `limactl` gets a **lifeline** as stdin:
//! a pipe this process holds open and never writes. At the deadline or a cancel the
//! lifeline is closed (and `limactl`'s process group killed): ssh's end of the channel
//! goes away, the supervisor's watcher reads end of file and kills the guest process
//! group (`kill -KILL 0`: sshd runs the command as the leader of a session and group of
//! its own, and the supervisor starts no job control, so the group is the run).
//!
//! The tool itself gets `/dev/null` as stdin (a timed run never reads the terminal),
//! so only requests with [`StdinMode::Null`](devshell_vm_exec::StdinMode) and no Ctrl-C
//! forwarding take this path.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use devshell_vm_exec::{
    CancelHandle, ExecOutcome, OutputMode, StreamKind, Termination, ToolRequest,
};

use crate::LimaError;

/// The guest side: `sh -c SUPERVISOR devshell-vm-supervise PROGRAM ARGS…`. Keeps the
/// original stdin (the lifeline) on fd 3 for a watcher and gives the tool `/dev/null`;
/// when the lifeline ends, the watcher kills the whole process group; when the tool
/// ends first, the watcher is killed and the tool's status returned.
pub(super) const SUPERVISOR: &str = "exec 3<&0 </dev/null
( while read -r _ <&3; do :; done; kill -KILL 0 ) >/dev/null 2>&1 &
w=$!
\"$@\" 3<&-
s=$?
kill -KILL \"$w\" 2>/dev/null
exit \"$s\"";

/// `$0` of the supervisor (shows in the guest's process list).
pub(super) const SUPERVISOR_NAME: &str = "devshell-vm-supervise";

/// How often the deadline and the cancel handle are checked.
const POLL: Duration = Duration::from_millis(20);

/// Runs `limactl ARGV` with a lifeline stdin and the request's output modes, deadline
/// and cancel handle (see the module docs).
pub(super) fn run(
    limactl: &Path,
    lima_home: Option<&PathBuf>,
    argv: &[OsString],
    request: &ToolRequest,
    on_output: &mut dyn FnMut(StreamKind, &[u8]),
    cancel: Option<&CancelHandle>,
) -> Result<ExecOutcome, LimaError> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let started = Instant::now();
    let mut command = Command::new(limactl);
    command
        .args(argv)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(stdio_for(request.stdout))
        .stderr(stdio_for(request.stderr));
    if let Some(home) = lima_home {
        command.env("LIMA_HOME", home);
    }
    let mut child = command.spawn().map_err(|source| LimaError::Spawn {
        program: limactl.to_path_buf(),
        source,
    })?;
    let mut lifeline = child.stdin.take();
    let (tx, rx) = mpsc::channel::<(StreamKind, Vec<u8>)>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(reader(out, StreamKind::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(reader(err, StreamKind::Stderr, tx.clone()));
    }
    drop(tx);
    let deadline = request.timeout.map(|t| started + t);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut deliver = |kind: StreamKind, data: &[u8]| {
        let (mode, buffer) = match kind {
            StreamKind::Stdout => (request.stdout, &mut stdout),
            StreamKind::Stderr => (request.stderr, &mut stderr),
        };
        match mode {
            OutputMode::Capture => buffer.extend_from_slice(data),
            OutputMode::Stream => on_output(kind, data),
            OutputMode::Inherit | OutputMode::Null => {}
        }
    };
    let mut stopped: Option<Termination> = None;
    let status = loop {
        match rx.recv_timeout(POLL) {
            Ok((kind, data)) => deliver(kind, &data),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().map_err(|source| LimaError::Io {
            context: format!("waiting for {}", limactl.display()),
            source,
        })? {
            break status;
        }
        if stopped.is_none() {
            let why = if cancel.is_some_and(CancelHandle::is_cancelled) {
                Some(Termination::Cancelled)
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some(Termination::TimedOut)
            } else {
                None
            };
            if let Some(why) = why {
                stopped = Some(why);
                // Closing the lifeline is what stops the guest; killing limactl's group
                // (ssh with it) ends the host side.
                drop(lifeline.take());
                kill_group(child.id());
            }
        }
    };
    drop(lifeline);
    // The readers end when every holder of the pipes is gone.
    for (kind, data) in rx {
        deliver(kind, &data);
    }
    for handle in readers {
        let _ = handle.join();
    }
    let termination = match (stopped, status.code(), status.signal()) {
        (Some(why), _, _) => why,
        (None, Some(code), _) => Termination::Exited(code),
        (None, None, Some(signal)) => Termination::Signaled(signal),
        (None, None, None) => Termination::Exited(-1),
    };
    Ok(ExecOutcome {
        termination,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

fn stdio_for(mode: OutputMode) -> Stdio {
    match mode {
        OutputMode::Inherit => Stdio::inherit(),
        OutputMode::Null => Stdio::null(),
        OutputMode::Capture | OutputMode::Stream => Stdio::piped(),
    }
}

fn reader(
    mut from: impl Read + Send + 'static,
    kind: StreamKind,
    tx: mpsc::Sender<(StreamKind, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0_u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((kind, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// `SIGKILL` to `limactl`'s process group (it leads one of its own).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
