//! The exec timeout kills the tool's whole process group — grandchildren included — and
//! is reported as a timeout, never as an exit code; what the tool wrote is still pulled.

use std::time::{Duration, Instant};

use devshell_vm::{Termination, ToolRequest, Vfs, VmConfig, VmError};
use devshell_vm_tests::{host_config, host_session};

/// `true` while a live (non-zombie) host process runs `sleep 6061`. The grandchild is
/// found by its command line, not by the pid it wrote: with isolation on (the default)
/// the tool has its own pid namespace and its pids mean nothing on the host.
fn grandchild_alive() -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .any(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let live = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "Z" && state != "X")
            });
            live && cmdline == b"sleep\x006061\x00"
        })
}

/// Waits (bounded, generous) for the grandchild to disappear; the kill is synchronous but
/// reaping the orphan by init is not.
fn gone_within(limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !grandchild_alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !grandchild_alive()
}

const SCRIPT: &str = "sleep 6061 & echo $! > grandchild.pid; echo started > started.txt; wait";

#[test]
fn timeout_kills_grandchildren_and_still_pulls() {
    let base = tempfile::tempdir().expect("tempdir");
    let config = VmConfig {
        exec_timeout: Some(Duration::from_millis(700)),
        ..host_config(base.path())
    };
    let mut session = host_session(&config);
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").expect("mkdir");

    // The seed's method: a timeout is an error value, not an exit status.
    let err = session
        .run_rust_tool(
            &mut vfs,
            "/proj",
            "sh",
            &["-c".to_owned(), SCRIPT.to_owned()],
        )
        .expect_err("the tool must time out");
    assert!(
        matches!(&err, VmError::Timeout { program, timeout }
            if program == "sh" && *timeout == Duration::from_millis(700)),
        "{err:?}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    let started = vfs
        .read_file("/proj/started.txt")
        .expect("pulled after the timeout");
    assert_eq!(&*started, b"started\n");
    let pid: u32 = String::from_utf8_lossy(&vfs.read_file("/proj/grandchild.pid").expect("pid"))
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert!(pid > 0, "pid file holds a pid");
    assert!(
        gone_within(Duration::from_secs(10)),
        "grandchild (pid {pid} in the tool's view) survived the timeout"
    );

    // The options form: the outcome says "timed out" and carries the sync reports.
    vfs.remove("/proj/grandchild.pid")
        .expect("remove the first run's pid file");
    let request = ToolRequest::new("sh", ["-c", SCRIPT]).timeout(Some(Duration::from_millis(500)));
    let outcome = session
        .run_tool(&mut vfs, "/proj", &request)
        .expect("infrastructure ok");
    assert_eq!(outcome.exec.termination, Termination::TimedOut);
    assert!(outcome.pull.is_some());
    let pid: u32 = String::from_utf8_lossy(&vfs.read_file("/proj/grandchild.pid").expect("pid"))
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert!(pid > 0, "pid file holds a pid");
    assert!(
        gone_within(Duration::from_secs(10)),
        "grandchild (pid {pid} in the tool's view) survived the timeout"
    );
    session.shutdown(&mut vfs, "/proj").expect("shutdown");
}
