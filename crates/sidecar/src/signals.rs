//! SIGTERM/SIGINT delivery to a thread, through a self-pipe.
//!
//! Why not `sigwait`: that needs the signals blocked in every thread, and a
//! blocked mask is inherited by the tools the sidecar spawns (a child of ours
//! would then ignore `kill -TERM`). A handler that only writes one byte to a pipe
//! leaves every mask alone; `exec` resets the handler to the default in children.
// Installing a signal handler is inherently unsafe (the handler must be
// async-signal-safe); ours only does an atomic store and write(2).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Write end of the pipe, for the handler (-1 before installation).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The last signal received.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a live local byte.
        let _ = unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// Receives SIGTERM and SIGINT after [`install`].
#[derive(Debug)]
pub(crate) struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

/// Installs the handlers for SIGTERM and SIGINT (once per process).
pub(crate) fn install() -> Result<Signals, Errno> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    WAKE_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: `on_signal` only performs an atomic store and write(2), both
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(Signals {
        read,
        _write: write,
    })
}

impl Signals {
    /// Blocks until a signal arrives; returns it.
    pub(crate) fn wait(&self) -> Result<Signal, Errno> {
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(&self.read, &mut byte) {
                Ok(0) => return Err(Errno::EPIPE),
                Ok(_) => {
                    return Signal::try_from(RECEIVED.load(Ordering::SeqCst));
                }
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno),
            }
        }
    }
}
