//! Issue 15: without isolation, a `kill -9` of the process running a tool must not leave
//! the tool's process group running. A child process (this test binary again) runs a
//! tool that starts a background grandchild and sleeps; the test kills the child with
//! SIGKILL and expects the whole group gone.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use devshell_vm_exec::{ToolRequest, resolve_program, run};
use nix::sys::signal::killpg;
use nix::unistd::Pid;

const DIR_ENV: &str = "DEVSHELL_VM_EXEC_PARENT_DEATH_DIR";

/// Not a test on its own: the process the test kills.
#[test]
#[ignore = "run by the_tools_group_dies_with_the_process_running_it"]
#[allow(
    clippy::disallowed_methods,
    reason = "the directory comes from the parent test, not from user configuration"
)]
fn parent_death_child() {
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("started by the test"));
    let program = resolve_program("sh", Some(std::ffi::OsStr::new("/usr/bin:/bin")), &dir).unwrap();
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "sleep 300 & echo $$ > group.tmp && mv group.tmp group; wait",
        ],
    );
    let _ = run(&program, &request, &dir, &mut |_, _| {}, None);
}

#[test]
fn the_tools_group_dies_with_the_process_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "parent_death_child",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .spawn()
        .unwrap();
    let group_file = dir.path().join("group");
    let start = Instant::now();
    while !group_file.exists() {
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "the tool never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let group: i32 = std::fs::read_to_string(&group_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let group = Pid::from_raw(group);
    assert!(killpg(group, None).is_ok(), "the tool's group runs");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let start = Instant::now();
    while group_has_live_members(group.as_raw()) {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = killpg(group, nix::sys::signal::Signal::SIGKILL);
            panic!("the tool's process group outlived the process that ran it by 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process of group `group` is still running. Killed members may stay zombies
/// for a while when they were re-parented to a child subreaper that does not reap them
/// (`cargo xtask ci` is one), and `kill(-group, 0)` succeeds on zombies; so this reads
/// `/proc/<pid>/stat`: field 3 is the state, field 5 the process group.
fn group_has_live_members(group: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields
            .first()
            .is_some_and(|state| *state != "Z" && *state != "X")
            && fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(group)
    })
}

/// The pids of this process's reaper children (`sh -c … devshell-vm-reaper`).
fn reapers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Field 4 (after the parenthesised name) is the parent pid.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if parent.as_deref() == Some(me.as_str())
            && String::from_utf8_lossy(&cmdline).contains("devshell-vm-reaper")
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn one_reaper_serves_every_run_and_a_killed_one_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let program = resolve_program(
        "true",
        Some(std::ffi::OsStr::new("/usr/bin:/bin")),
        dir.path(),
    )
    .unwrap();
    let request = ToolRequest::new("true", Vec::<String>::new());
    for _ in 0..5 {
        run(&program, &request, dir.path(), &mut |_, _| {}, None).unwrap();
    }
    let first = reapers();
    assert_eq!(first.len(), 1, "one reaper for five runs: {first:?}");
    nix::sys::signal::kill(Pid::from_raw(first[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{}/stat", first[0]))
        .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the reaper did not die"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The next run notices (its registration fails) and starts another.
    run(&program, &request, dir.path(), &mut |_, _| {}, None).unwrap();
    let second = reapers();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0], first[0]);
}
