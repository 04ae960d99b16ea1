//! Interrupt forwarding: while a tool runs with `forward_interrupts`, this process
//! catches `SIGINT`, `SIGTERM` and `SIGHUP` instead of dying, and the run loop
//! forwards them to the tool's process group.
//!
//! Why: the tool runs in its own process group, so Ctrl-C at the terminal reaches
//! only this process. Dying there would skip the pull that brings the tool's
//! output back into the VFS; forwarding stops the tool and lets the session finish.
//!
//! Only a request that asks for it ([`crate::ToolRequest::forward_interrupts`]) touches
//! signal dispositions; a library caller that never asks keeps its own handlers
//! untouched. The handlers come from `signal-hook` (no `unsafe` here):
//!
//! * one [`signal_hook::flag::register`] per signal records it as pending;
//! * one [`signal_hook::flag::register_conditional_default`] per signal performs the
//!   signal's default action (terminate) when no forwarding run is active, so between
//!   runs Ctrl-C still ends the process as it did before the first run.
//!
//! `signal-hook` never removes its handler once installed (it chains to the handler
//! that was there before, which an application that installed its own keeps getting),
//! so the registration happens once per process, on the first forwarding run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use nix::sys::signal::Signal;

use crate::CancelHandle;

/// Signals forwarded to the tool.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The process-wide registration: one pending flag per forwarded signal, and the
/// "no run forwards now" condition under which the default action applies.
struct Registration {
    pending: [Arc<AtomicBool>; 3],
    idle: Arc<AtomicBool>,
}

/// The registration, once made (`Err` keeps the reason it failed, reported every time).
static REGISTRATION: OnceLock<Result<Registration, String>> = OnceLock::new();

/// Forwarding runs and watches alive now.
static ACTIVE: Mutex<usize> = Mutex::new(0);

fn registration() -> Result<&'static Registration, std::io::Error> {
    let made = REGISTRATION.get_or_init(|| {
        let registration = Registration {
            pending: std::array::from_fn(|_| Arc::new(AtomicBool::new(false))),
            idle: Arc::new(AtomicBool::new(true)),
        };
        for (signal, flag) in FORWARDED.iter().zip(&registration.pending) {
            let number = *signal as i32;
            // Order matters: the conditional default is registered first so that, when
            // idle, the process terminates exactly as without us.
            signal_hook::flag::register_conditional_default(number, Arc::clone(&registration.idle))
                .and_then(|_| signal_hook::flag::register(number, Arc::clone(flag)))
                .map_err(|err| format!("registering a handler for {signal}: {err}"))?;
        }
        Ok(registration)
    });
    made.as_ref()
        .map_err(|reason| std::io::Error::other(reason.clone()))
}

/// Keeps interrupt forwarding active while alive: `SIGINT`, `SIGTERM` and `SIGHUP` are
/// recorded instead of ending the process, and [`crate::take_pending_interrupts`] hands them out
/// for forwarding (what [`crate::run`] does with `forward_interrupts`; the sandbox crate
/// forwards them to its init). Public as `InterruptForwarding`.
#[derive(Debug)]
pub struct ForwardGuard(());

impl ForwardGuard {
    /// Registers the handlers (once per process) and marks one more forwarding run.
    ///
    /// # Errors
    /// When the handlers cannot be registered.
    pub fn install() -> Result<Self, std::io::Error> {
        let registration = registration()?;
        let mut active = ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *active == 0 {
            // Signals that arrived while idle terminated the process (default action) or
            // were chained to the application's own handler; none is pending for us.
            for flag in &registration.pending {
                flag.store(false, Ordering::SeqCst);
            }
        }
        *active += 1;
        registration.idle.store(false, Ordering::SeqCst);
        Ok(Self(()))
    }
}

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        let mut active = ACTIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *active = active.saturating_sub(1);
        if *active == 0
            && let Some(Ok(registration)) = REGISTRATION.get()
        {
            registration.idle.store(true, Ordering::SeqCst);
        }
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
    let handlers = ForwardGuard::install().map_err(|source| crate::ExecError::Io {
        context: "installing interrupt handlers".to_owned(),
        source,
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

/// `true` once this process has registered its forwarding handlers (a forwarding run
/// or an [`InterruptWatch`] happened). A library caller that never asked for
/// forwarding sees `false`: its own signal dispositions were never touched.
#[must_use]
pub fn interrupt_handlers_installed() -> bool {
    REGISTRATION.get().is_some_and(Result::is_ok)
}

/// Signals received since the last call (each at most once), while an
/// [`InterruptForwarding`](ForwardGuard) is alive.
#[must_use]
pub fn take_pending() -> Vec<Signal> {
    let Some(Ok(registration)) = REGISTRATION.get() else {
        return Vec::new();
    };
    FORWARDED
        .into_iter()
        .zip(&registration.pending)
        .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
        .map(|(signal, _)| signal)
        .collect()
}
