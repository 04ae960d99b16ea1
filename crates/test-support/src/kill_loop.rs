//! SIGKILL at chosen points of a child process that runs sync rounds in a loop (the
//! backends' fault tests, issue 15).
//!
//! The child prints one marker line per phase on stdout, flushed: `push` when a run
//! starts (its push comes first), `tool-start` and `tool-end` (printed by the tool
//! itself, streamed; the pull follows `tool-end` at once), `pulled` when the run
//! returned, and `saved N` when round `N`'s VFS image is on disk. [`kill_in_phases`]
//! starts the child again and again and kills it with SIGKILL a random fraction of a
//! phase's measured length after that phase's marker, alternating between the push and
//! the pull; after each kill the caller's check runs. Where each kill landed is read
//! from the last marker the child printed before it died.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a kill landed: after which marker the child died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Landed {
    /// After `push`: inside the push.
    Push,
    /// After `tool-start`: while the tool ran.
    Tool,
    /// After `tool-end`: inside the pull.
    Pull,
    /// After `pulled`: while the image was saved (or between rounds).
    Save,
}

/// Kills `iterations` children made by `spawn` (each inherits the previous one's saved
/// state), alternately inside the push and inside the pull, and calls `check(iteration)`
/// after each kill. Returns how many kills landed in each phase.
///
/// # Panics
/// When a child does not reach its kill point within two minutes, ends by itself
/// (anything but SIGKILL means the child failed: its stderr is shown), or `check`
/// panics.
pub fn kill_in_phases(
    iterations: u32,
    mut spawn: impl FnMut() -> Command,
    mut check: impl FnMut(u32),
) -> BTreeMap<Landed, u32> {
    // Deterministic kill points (xorshift).
    let mut seed = 0x9e37_79b9_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut landed = BTreeMap::new();
    let (mut push_len, mut pull_len) = (Duration::from_millis(20), Duration::from_millis(20));
    for iteration in 0..iterations {
        let mut worker = spawn()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child loop");
        let mut lines = BufReader::new(worker.stdout.take().expect("piped stdout")).lines();
        let want_pull = iteration % 2 == 1;
        let trigger = if want_pull { "tool-end" } else { "push" };
        let window = if want_pull { pull_len } else { push_len };
        let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let delay = Duration::from_micros(next() % window_us);
        // Whole rounds first (they measure the phases), then the kill in the next one.
        let skip_rounds = 1 + next() % 2;
        let mut saved = 0;
        let (mut push_at, mut end_at) = (None, None);
        let started = Instant::now();
        let mut reached = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let now = Instant::now();
            match line.as_str() {
                "push" => push_at = Some(now),
                "tool-start" => {
                    if let Some(at) = push_at {
                        push_len = now - at;
                    }
                }
                "tool-end" => end_at = Some(now),
                "pulled" => {
                    if let Some(at) = end_at {
                        pull_len = now - at;
                    }
                }
                l if l.starts_with("saved ") => saved += 1,
                _ => {}
            }
            if saved >= skip_rounds && line == trigger {
                std::thread::sleep(delay);
                reached = true;
                break;
            }
            if started.elapsed() > Duration::from_mins(2) {
                break;
            }
        }
        let _ = worker.kill(); // SIGKILL
        let mut last = trigger.to_owned();
        for line in lines.map_while(Result::ok) {
            if !line.is_empty() && !line.starts_with("saved") {
                last = line;
            }
        }
        let status = worker.wait().expect("reap the child loop");
        let mut stderr = String::new();
        if let Some(mut pipe) = worker.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        assert!(
            reached,
            "iteration {iteration}: the child loop never reached `{trigger}` ({status:?}):\n{stderr}"
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "iteration {iteration}: the child loop ended on its own:\n{stderr}"
        );
        let at = match last.as_str() {
            "push" => Landed::Push,
            "tool-start" => Landed::Tool,
            "tool-end" => Landed::Pull,
            _ => Landed::Save,
        };
        *landed.entry(at).or_insert(0) += 1;
        check(iteration);
    }
    landed
}
