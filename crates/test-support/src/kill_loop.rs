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

/// Content of input file number `version` for the kill loops: 1,000 to 60,999 bytes,
/// starting with `v{version}:{len}:` so a torn or mixed-up file is recognisable.
#[must_use]
pub fn versioned(version: u32) -> Vec<u8> {
    let len = 1000 + (version as usize * 7919) % 60_000;
    let mut out = format!("v{version}:{len}:").into_bytes();
    out.resize(len, b'0' + u8::try_from(version % 10).unwrap_or(0));
    out
}

/// Whether `content` is a [`versioned`] content or a prefix of one (what a torn read
/// or write leaves); the empty content counts as a prefix.
#[must_use]
pub fn is_a_version_or_prefix(content: &[u8]) -> bool {
    let text = String::from_utf8_lossy(content);
    let Some(version) = text
        .strip_prefix('v')
        .and_then(|rest| rest.split(':').next())
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return content.is_empty();
    };
    versioned(version).starts_with(content)
}

/// The child side of [`kill_in_phases`]: loads the last saved VFS image at `image` (or
/// builds the first one: `{root}/in`, `{root}/out`, `{root}/round` = `0` and the `seed`
/// files, paths relative to `root`), then forever: rewrites `files` input files
/// `{root}/in/f{n}` with [`versioned`]`(round * 1000 + n)` and `{root}/round`, prints
/// `push`, calls `run_round` (which runs the tool through the backend under test and
/// passes every chunk of the tool's streamed stdout to the marker callback it is given),
/// checks that the tool exited with 0, prints `pulled`, saves the image and prints
/// `saved N`.
///
/// # Panics
/// When the image cannot be loaded or saved, or `run_round` fails or the tool did not
/// exit with 0 (the error or the tool's stderr is shown): the parent sees the child end
/// by itself and fails.
#[cfg(feature = "child-rounds")]
pub fn child_rounds<E: std::fmt::Display>(
    image: &std::path::Path,
    root: &str,
    seed: &[(&str, &[u8])],
    files: u32,
    mut run_round: impl FnMut(
        &mut devshell_vm_vfs::Vfs,
        &mut dyn FnMut(&[u8]),
    ) -> Result<devshell_vm_exec::ExecOutcome, E>,
) -> ! {
    use std::io::Write as _;
    let mut vfs = if image.exists() {
        devshell_vm_vfs::image::load(image).expect("the saved image is never torn")
    } else {
        let mut vfs = devshell_vm_vfs::Vfs::new();
        vfs.mkdir(&format!("{root}/in")).expect("mkdir in");
        vfs.mkdir(&format!("{root}/out")).expect("mkdir out");
        vfs.write_file(&format!("{root}/round"), "0")
            .expect("round");
        for (name, content) in seed {
            vfs.write_file(&format!("{root}/{name}"), *content)
                .expect("seed file");
        }
        vfs
    };
    let round_file = format!("{root}/round");
    let mut round: u32 = std::str::from_utf8(&vfs.read_file(&round_file).expect("round"))
        .expect("round is text")
        .parse()
        .expect("round is a number");
    let marker = |text: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    loop {
        round += 1;
        for f in 0..files {
            vfs.write_file(&format!("{root}/in/f{f}"), versioned(round * 1000 + f))
                .expect("write input");
        }
        vfs.write_file(&round_file, round.to_string())
            .expect("write round");
        marker("push");
        let mut forward = |bytes: &[u8]| {
            for line in String::from_utf8_lossy(bytes).lines() {
                marker(line);
            }
        };
        match run_round(&mut vfs, &mut forward) {
            Ok(outcome) => assert!(
                outcome.termination == devshell_vm_exec::Termination::Exited(0),
                "round {round}: the tool ended with {}: {}",
                outcome.termination,
                String::from_utf8_lossy(&outcome.stderr)
            ),
            Err(err) => panic!("round {round}: {err}"),
        }
        marker("pulled");
        devshell_vm_vfs::image::save(&vfs, image).expect("save the image");
        marker(&format!("saved {round}"));
    }
}
