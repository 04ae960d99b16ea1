//! SIGTERM/SIGINT delivery to a thread, with the `signal-hook` crate.
//!
//! Why not `sigwait`: that needs the signals blocked in every thread, and a blocked
//! mask is inherited by the tools the sidecar spawns (a child of ours would then ignore
//! `kill -TERM`). `signal-hook` installs handlers that only write to a self-pipe,
//! leaving every mask alone; `exec` resets handlers to the default in children.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals as Iterator;

/// Receives SIGTERM and SIGINT after [`install`].
pub(crate) struct Signals(Iterator);

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals([SIGTERM, SIGINT])")
    }
}

/// Installs the handlers for SIGTERM and SIGINT.
pub(crate) fn install() -> std::io::Result<Signals> {
    Iterator::new([SIGTERM, SIGINT]).map(Signals)
}

impl Signals {
    /// Blocks until a signal arrives; returns its name, or `None` when the iterator was
    /// closed.
    pub(crate) fn wait(&mut self) -> Option<&'static str> {
        self.0.forever().next().map(|signal| match signal {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            _ => "signal",
        })
    }
}
