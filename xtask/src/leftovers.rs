//! The end-of-run check: no process a CI run started is still alive, and nothing is
//! left in the run's private `TMPDIR`.
//!
//! A process belongs to the run when its environment carries the run's marker
//! (`DEVSHELL_VM_CI_RUN=<id>`, inherited by everything the steps start unless a test
//! clears the environment), or when it descends from this process: xtask is a child
//! subreaper, so an orphaned daemon is re-parented to it instead of to init and stays
//! in its tree. Processes that merely exit late get a grace period; whatever is still
//! alive after it is named, killed (it is ours) and fails the run.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// How long a process may take to finish exiting after the last step.
const GRACE: Duration = Duration::from_secs(10);

/// A live process of this run.
struct Leftover {
    pid: i32,
    command: String,
}

/// Checks processes, then the temporary directory (which is removed either way).
pub(crate) fn check(run_id: &str, tmp: &Path) -> Result<(), String> {
    println!(
        "==> leftover check: processes of run {run_id}, files in {}",
        tmp.display()
    );
    let mut problems = Vec::new();
    let deadline = Instant::now() + GRACE;
    let mut found = scan(run_id);
    while !found.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        found = scan(run_id);
    }
    for leftover in &found {
        problems.push(format!(
            "process {} is still running after the run: {}",
            leftover.pid, leftover.command
        ));
        // Ours (marker or descendant): end it so the machine is left clean.
        let _ = kill(Pid::from_raw(leftover.pid), Signal::SIGKILL);
    }
    reap();
    match std::fs::read_dir(tmp) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                problems.push(format!(
                    "left behind in TMPDIR: {}",
                    tmp.join(name).display()
                ));
            }
        }
        Err(err) => problems.push(format!("cannot list {}: {err}", tmp.display())),
    }
    if let Err(err) = std::fs::remove_dir_all(tmp) {
        problems.push(format!("cannot remove {}: {err}", tmp.display()));
    }
    if problems.is_empty() {
        println!("    no process or temporary file outlived the run");
        Ok(())
    } else {
        Err(format!(
            "the run left things behind (a test must tie its daemons and temp dirs to itself):\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// Reaps orphans re-parented to us that have exited (zombies are not alive).
fn reap() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status.pid().is_none() {
            break;
        }
    }
}

/// The live processes of this run other than xtask itself.
#[allow(clippy::similar_names, reason = "pid, ppid: the kernel's names")]
fn scan(run_id: &str) -> Vec<Leftover> {
    reap();
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let marker = format!("{}={run_id}", crate::RUN_MARKER);
    let mut parents: HashMap<i32, i32> = HashMap::new();
    let mut marked = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some((state, ppid)) = stat(pid) else {
            continue;
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        parents.insert(pid, ppid);
        // Unreadable environments (other users' processes) simply do not match.
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ"))
            && environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
        {
            marked.push(pid);
        }
    }
    let descends_from_me = |mut pid: i32| {
        for _ in 0..4096 {
            match parents.get(&pid) {
                Some(&parent) if parent == me => return true,
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let mut pids: Vec<i32> = parents
        .keys()
        .copied()
        .filter(|pid| marked.contains(pid) || descends_from_me(*pid))
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .map(|pid| Leftover {
            pid,
            command: command_line(pid),
        })
        .collect()
}

/// State and parent pid from `/proc/PID/stat` (the command name may hold spaces and
/// parentheses, so the fields are read after the last `)`).
#[allow(clippy::similar_names, reason = "pid, ppid: the kernel's names")]
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    if text.is_empty() {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map_or_else(|_| "?".to_owned(), |c| format!("[{}]", c.trim()))
    } else {
        text.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// The check finds a process of the run by its marker even after it was orphaned
    /// (re-parented away from us), and does not find it under another run's id.
    #[test]
    fn an_orphan_with_the_marker_is_found() {
        let run_id = format!("test-{}", std::process::id());
        // `sh` starts a sleep in the background and exits: the sleep is an orphan.
        let status = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .env(crate::RUN_MARKER, &run_id)
            .stdout(Stdio::piped())
            .output()
            .expect("sh runs");
        let pid: i32 = String::from_utf8_lossy(&status.stdout)
            .trim()
            .parse()
            .expect("sh printed the sleep's pid");
        let found = scan(&run_id);
        let other = scan("another-run");
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        assert!(
            found
                .iter()
                .any(|l| l.pid == pid && l.command.contains("sleep 30")),
            "the orphaned sleep {pid} was not found"
        );
        assert!(
            other.iter().all(|l| l.pid != pid),
            "a process was attributed to another run"
        );
    }
}
