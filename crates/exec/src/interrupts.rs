//! Interrupt forwarding: while a tool runs with `forward_interrupts`, this process
//! catches `SIGINT`, `SIGTERM` and `SIGHUP` instead of dying, and the run loop
//! forwards them to the tool's process group.
//!
//! Why: the tool runs in its own process group, so Ctrl-C at the terminal reaches
//! only this process. Dying there would skip the pull that brings the tool's
//! output back into the VFS; forwarding stops the tool and lets the session finish.
//!
//! The previous dispositions are restored when the last forwarding run ends.
// Installing a signal handler is inherently unsafe (the handler must be
// async-signal-safe); ours only stores into an atomic.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::CancelHandle;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// Signals forwarded to the tool.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Bit per pending signal number, set by the handler, taken by [`take_pending`].
static PENDING: AtomicU32 = AtomicU32::new(0);

/// How many runs currently forward, and the dispositions to restore.
static INSTALLED: Mutex<(usize, Vec<(Signal, SigAction)>)> = Mutex::new((0, Vec::new()));

extern "C" fn record_signal(signal: nix::libc::c_int) {
    if let Ok(bit) = u32::try_from(signal)
        && bit < 32
    {
        PENDING.fetch_or(1 << bit, Ordering::SeqCst);
    }
}

/// Keeps the forwarding handlers installed while alive.
pub(crate) struct ForwardGuard(());

impl ForwardGuard {
    /// Installs the handlers (once for all concurrent runs).
    pub(crate) fn install() -> Result<Self, nix::Error> {
        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if installed.0 == 0 {
            let action = SigAction::new(
                SigHandler::Handler(record_signal),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            let mut previous = Vec::with_capacity(FORWARDED.len());
            for signal in FORWARDED {
                // SAFETY: `record_signal` only performs an atomic fetch_or, which is
                // async-signal-safe.
                match unsafe { sigaction(signal, &action) } {
                    Ok(old) => previous.push((signal, old)),
                    Err(err) => {
                        restore(&previous);
                        return Err(err);
                    }
                }
            }
            installed.1 = previous;
        }
        installed.0 += 1;
        Ok(Self(()))
    }
}

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        installed.0 -= 1;
        if installed.0 == 0 {
            let previous = std::mem::take(&mut installed.1);
            restore(&previous);
        }
    }
}

fn restore(previous: &[(Signal, SigAction)]) {
    for (signal, old) in previous {
        // SAFETY: re-installing the disposition that was in place before.
        // Failure leaves our harmless recording handler; nothing else to do.
        let _ = unsafe { sigaction(*signal, old) };
    }
}

/// Fires a [`CancelHandle`] when this process receives `SIGINT`, `SIGTERM` or
/// `SIGHUP`, for as long as it lives; the signals do not kill this process meanwhile.
///
/// For backends whose tool runs elsewhere (a sidecar, a VM): there is no local
/// process group to forward the signal to, so Ctrl-C cancels the remote run instead,
/// and the caller still finishes its work (e.g. pulls what the tool wrote).
/// Concurrent watches and forwarding runs share one set of pending signals: a
/// signal reaches whichever of them looks first.
pub struct InterruptWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _handlers: ForwardGuard,
}

impl std::fmt::Debug for InterruptWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptWatch").finish_non_exhaustive()
    }
}

/// Starts an [`InterruptWatch`] that cancels `cancel` on the first interrupt.
///
/// # Errors
/// [`crate::ExecError::Io`] when the signal handlers cannot be installed.
pub fn cancel_on_interrupt(cancel: &CancelHandle) -> Result<InterruptWatch, crate::ExecError> {
    let handlers = ForwardGuard::install().map_err(|err| crate::ExecError::Io {
        context: "installing interrupt handlers".to_owned(),
        source: err.into(),
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = Arc::clone(&stop);
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if !take_pending().is_empty() {
                    cancel.cancel();
                }
                std::thread::sleep(WATCH_TICK);
            }
        })
    };
    Ok(InterruptWatch {
        stop,
        thread: Some(thread),
        _handlers: handlers,
    })
}

impl Drop for InterruptWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often an [`InterruptWatch`] looks for pending signals.
const WATCH_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// Signals received since the last call (each at most once).
pub(crate) fn take_pending() -> Vec<Signal> {
    let bits = PENDING.swap(0, Ordering::SeqCst);
    FORWARDED
        .into_iter()
        .filter(|signal| {
            u32::try_from(*signal as i32).is_ok_and(|n| n < 32 && bits & (1 << n) != 0)
        })
        .collect()
}
