//! Progress bars (`indicatif`, on stderr) for loading, pushing, pulling and saving.
//!
//! A bar appears only when stderr is a terminal, `--quiet` is off, and the step has
//! lasted longer than the delay (half a second; the hidden `--progress-delay-ms` option
//! changes it for tests). It is cleared when the step ends, so a terminal shows only the
//! summary lines afterwards and a pipe or file never sees a control sequence.
//!
//! Push and pull are fed by the session's sync observer ([`SyncProgress`]), which tells
//! how far a sync got but not which sync it is or when it ended. The push of a fresh
//! session writes every file of the project, so [`SyncBars::begin_run`] is given that
//! count: the bar ends when it is reached, before the tool starts writing to the
//! terminal. Should a backend count differently, a pause of [`PUSH_END_GAP`] after a push
//! callback ends the push bar instead (a watchdog thread clears it), and the next
//! callbacks belong to the pull. No bar ticks on its own while the tool runs.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devshell_vm::{SyncObserver, SyncProgress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::bytes;

/// How long a step runs before its bar appears.
pub(crate) const DEFAULT_DELAY: Duration = Duration::from_millis(500);
/// A pause this long after push progress means the push is over.
const PUSH_END_GAP: Duration = Duration::from_millis(300);

/// Whether and when bars are drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    enabled: bool,
    delay: Duration,
}

impl Progress {
    /// Bars on stderr when it is a terminal and `quiet` is off.
    pub(crate) fn for_stderr(quiet: bool, delay: Duration) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            delay,
        }
    }

    /// A spinner for a step the CLI runs itself (load, save): `VERB WHAT  N files, SIZE`.
    pub(crate) fn step(&self, verb: &str, what: &str) -> StepBar {
        if !self.enabled {
            return StepBar { inner: None };
        }
        let inner = Arc::new(StepInner {
            bar: Mutex::new(None),
            label: format!("{verb} {what}"),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            done: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        if self.delay.is_zero() {
            inner.reveal();
        } else {
            let waiter = Arc::clone(&inner);
            let delay = self.delay;
            let handle = std::thread::spawn(move || {
                let done = waiter.done.lock().unwrap_or_else(PoisonError::into_inner);
                let (done, _) = waiter
                    .wake
                    .wait_timeout_while(done, delay, |done| !*done)
                    .unwrap_or_else(PoisonError::into_inner);
                if !*done {
                    drop(done);
                    waiter.reveal();
                }
            });
            *inner.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        }
        StepBar { inner: Some(inner) }
    }

    /// Bars for the push and pull of tool runs.
    pub(crate) fn sync(&self) -> SyncBars {
        SyncBars {
            shared: Arc::new(Mutex::new(SyncShared {
                enabled: self.enabled,
                delay: self.delay,
                phase: Phase::Idle,
                push_total: 0,
                started: Instant::now(),
                last_call: None,
                last_files: 0,
                bar: None,
            })),
            watchdog: Mutex::new(None),
            running: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A spinner for one step; cleared by [`StepBar::finish`] (or when dropped).
#[derive(Debug)]
pub(crate) struct StepBar {
    inner: Option<Arc<StepInner>>,
}

#[derive(Debug)]
struct StepInner {
    bar: Mutex<Option<ProgressBar>>,
    label: String,
    files: AtomicU64,
    bytes: AtomicU64,
    done: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StepInner {
    fn message(&self) -> String {
        let files = self.files.load(Ordering::Relaxed);
        if files == 0 {
            String::new()
        } else {
            let noun = if files == 1 { "file" } else { "files" };
            format!(
                "{files} {noun}, {}",
                bytes(self.bytes.load(Ordering::Relaxed))
            )
        }
    }

    fn reveal(&self) {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}  {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(self.label.clone());
        bar.set_message(self.message());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar.tick();
        *self.bar.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar);
    }
}

impl StepBar {
    /// Counts `files` more files of `size` bytes in total.
    pub(crate) fn add(&self, files: u64, size: u64) {
        if let Some(inner) = &self.inner {
            inner.files.fetch_add(files, Ordering::Relaxed);
            inner.bytes.fetch_add(size, Ordering::Relaxed);
            if let Some(bar) = &*inner.bar.lock().unwrap_or_else(PoisonError::into_inner) {
                bar.set_message(inner.message());
            }
        }
    }

    /// Ends the step and clears its bar.
    pub(crate) fn finish(&self) {
        if let Some(inner) = &self.inner {
            *inner.done.lock().unwrap_or_else(PoisonError::into_inner) = true;
            inner.wake.notify_all();
            if let Some(handle) = inner
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                let _ = handle.join();
            }
            if let Some(bar) = inner
                .bar
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                bar.finish_and_clear();
            }
        }
    }
}

impl Drop for StepBar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Which sync the observer's callbacks belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Push,
    /// The push is over; the tool runs (no bar may be drawn).
    Tool,
    Pull,
}

#[derive(Debug)]
struct SyncShared {
    enabled: bool,
    delay: Duration,
    phase: Phase,
    push_total: u64,
    started: Instant,
    last_call: Option<Instant>,
    last_files: u64,
    bar: Option<ProgressBar>,
}

impl SyncShared {
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn end_push(&mut self, now: Instant) {
        self.clear();
        self.phase = Phase::Tool;
        self.last_call = None;
        self.started = now;
    }

    fn observe(&mut self, progress: &SyncProgress, now: Instant) {
        if self.phase == Phase::Push {
            let restarted = progress.files_done < self.last_files;
            let paused = self
                .last_call
                .is_some_and(|last| now.duration_since(last) > PUSH_END_GAP);
            if restarted || paused {
                self.end_push(now);
            }
        }
        if matches!(self.phase, Phase::Tool | Phase::Idle) {
            self.phase = Phase::Pull;
            self.started = now;
        }
        self.last_call = Some(now);
        self.last_files = progress.files_done;
        let push = self.phase == Phase::Push;
        if self.enabled && self.bar.is_none() && now.duration_since(self.started) >= self.delay {
            let bar = if push && self.push_total > 0 {
                let bar = ProgressBar::with_draw_target(
                    Some(self.push_total),
                    ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    ProgressStyle::with_template("pushing [{bar:30}] {pos}/{len} files, {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar
            } else {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(if push {
                        "pushing {pos} files, {msg}"
                    } else {
                        "pulling {pos} files, {msg}"
                    })
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            };
            bar.tick();
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(bytes(progress.bytes_done));
            bar.set_position(progress.files_done);
        }
        if push && self.push_total > 0 && progress.files_done >= self.push_total {
            self.end_push(now);
        }
    }
}

/// Push and pull bars fed by the session's sync observer.
#[derive(Debug)]
pub(crate) struct SyncBars {
    shared: Arc<Mutex<SyncShared>>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    running: Arc<AtomicBool>,
}

impl SyncBars {
    /// The observer to install with `SessionHolder::set_sync_observer`.
    pub(crate) fn observer(&self) -> SyncObserver {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |progress: &SyncProgress| {
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(progress, Instant::now());
        })
    }

    /// A tool run begins: its push writes up to `push_total` files (0 when unknown).
    pub(crate) fn begin_run(&self, push_total: u64) {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clear();
        shared.phase = Phase::Push;
        shared.push_total = push_total;
        shared.started = Instant::now();
        shared.last_call = None;
        shared.last_files = 0;
        if !shared.enabled {
            return;
        }
        drop(shared);
        self.running.store(true, Ordering::SeqCst);
        let running = Arc::clone(&self.running);
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::spawn(move || {
            while running.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                if shared.phase == Phase::Push
                    && shared.bar.is_some()
                    && shared
                        .last_call
                        .is_some_and(|last| now.duration_since(last) > PUSH_END_GAP)
                {
                    shared.end_push(now);
                }
            }
        });
        *self.watchdog.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }

    /// The tool run (push, tool, pull) is over: any bar is cleared.
    pub(crate) fn end_run(&self) {
        self.running.store(false, Ordering::SeqCst);
        if let Some(handle) = self
            .watchdog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = handle.join();
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.clear();
        shared.phase = Phase::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(delay_ms: u64) -> SyncShared {
        SyncShared {
            enabled: false,
            delay: Duration::from_millis(delay_ms),
            phase: Phase::Push,
            push_total: 100,
            started: Instant::now(),
            last_call: None,
            last_files: 0,
            bar: None,
        }
    }

    fn p(files: u64) -> SyncProgress {
        SyncProgress {
            files_done: files,
            bytes_done: files,
        }
    }

    #[test]
    fn the_push_ends_at_its_file_count_then_callbacks_are_the_pull() {
        let t0 = Instant::now();
        let mut state = shared(500);
        state.observe(&p(50), t0);
        assert_eq!(state.phase, Phase::Push);
        state.observe(&p(100), t0 + Duration::from_millis(10));
        assert_eq!(state.phase, Phase::Tool, "all files pushed");
        state.observe(&p(3), t0 + Duration::from_millis(20));
        assert_eq!(state.phase, Phase::Pull);
    }

    #[test]
    fn a_bar_appears_only_after_the_delay() {
        let t0 = Instant::now();
        let mut state = shared(500);
        state.enabled = true;
        state.push_total = 0;
        state.started = t0;
        state.observe(&p(10), t0 + Duration::from_millis(100));
        assert!(state.bar.is_none(), "a short sync draws nothing");
        state.observe(&p(20), t0 + Duration::from_millis(250));
        state.observe(&p(30), t0 + Duration::from_millis(400));
        assert!(state.bar.is_none());
        state.observe(&p(40), t0 + Duration::from_millis(550));
        assert!(state.bar.is_some(), "past the delay the bar is up");
        state.clear();
        assert!(state.bar.is_none());
    }

    #[test]
    fn a_pause_or_a_restarted_count_ends_a_push_of_unknown_size() {
        let t0 = Instant::now();
        let mut state = shared(500);
        state.push_total = 0;
        state.observe(&p(10), t0);
        state.observe(&p(20), t0 + Duration::from_millis(100));
        assert_eq!(state.phase, Phase::Push);
        state.observe(&p(30), t0 + Duration::from_millis(900));
        assert_eq!(state.phase, Phase::Pull, "a pause: the pull");

        let mut state = shared(500);
        state.push_total = 0;
        state.observe(&p(10), t0);
        state.observe(&p(2), t0 + Duration::from_millis(10));
        assert_eq!(state.phase, Phase::Pull, "the count restarted");
    }
}
