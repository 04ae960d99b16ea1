//! The sidecar's log: lines to stderr that never block or abort the server.
//!
//! Every line goes through a bounded queue to one writer thread. A caller never waits:
//! when the queue is full (stderr is a pipe nobody reads), the line is dropped and
//! counted, and the count is written once the writer catches up. A write error (the
//! reader of the pipe is gone: `EPIPE`) discards the line instead of panicking as
//! `eprintln!` would. So a supervisor that restarts its log collector, or a test that
//! exits without reading, can never stall a connection or the SIGTERM shutdown.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 4096;

struct Logger {
    queue: SyncSender<String>,
    /// Lines accepted into the queue.
    queued: AtomicU64,
    /// Lines the writer has finished with (written or discarded).
    done: Mutex<u64>,
    progress: Condvar,
    /// Lines dropped because the queue was full.
    dropped: AtomicU64,
}

static LOGGER: OnceLock<Option<Logger>> = OnceLock::new();

fn logger() -> Option<&'static Logger> {
    LOGGER
        .get_or_init(|| {
            let (queue, lines) = sync_channel::<String>(QUEUE_LINES);
            let started = std::thread::Builder::new()
                .name("log".into())
                .spawn(move || writer(&lines));
            started.ok().map(|_| Logger {
                queue,
                queued: AtomicU64::new(0),
                done: Mutex::new(0),
                progress: Condvar::new(),
                dropped: AtomicU64::new(0),
            })
        })
        .as_ref()
}

fn writer(lines: &Receiver<String>) {
    let mut stderr = std::io::stderr();
    for line in lines {
        let Some(logger) = logger() else { return };
        let dropped = logger.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                stderr,
                "devshell-vm-sidecar: {dropped} log lines dropped (stderr was not being read)"
            );
        }
        // EPIPE, EIO...: the line is lost, the server goes on.
        let _ = stderr.write_all(line.as_bytes());
        let mut done = logger.done.lock().unwrap_or_else(PoisonError::into_inner);
        *done += 1;
        logger.progress.notify_all();
    }
}

/// Queues one line (a newline is added); never blocks.
pub(crate) fn line(message: &str) {
    let mut text = String::with_capacity(message.len() + 1);
    text.push_str(message);
    text.push('\n');
    let Some(logger) = logger() else { return };
    match logger.queue.try_send(text) {
        Ok(()) => {
            logger.queued.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            logger.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits until every line queued so far is written, but at most `limit`: used right
/// before the process exits, so the last lines are not lost when stderr is read, and
/// the exit is not held up when it is not.
pub(crate) fn flush(limit: Duration) {
    let Some(logger) = logger() else { return };
    let target = logger.queued.load(Ordering::Relaxed);
    let deadline = Instant::now() + limit;
    let mut done = logger.done.lock().unwrap_or_else(PoisonError::into_inner);
    while *done < target {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        done = logger
            .progress
            .wait_timeout(done, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// `devshell-vm-sidecar: message`.
macro_rules! log_line {
    ($($arg:tt)*) => {
        $crate::log::line(&format!("devshell-vm-sidecar: {}", format_args!($($arg)*)))
    };
}
pub(crate) use log_line;
