//! Ctrl-C forwarding, in its own test binary because it signals this process.

use std::path::Path;
use std::time::Duration;

use devshell_vm_exec::{Termination, ToolRequest, resolve_program, run};
use nix::sys::signal::{Signal, raise};

#[test]
fn sigint_to_the_caller_is_forwarded_to_the_tool_and_the_caller_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("started");
    let sh = resolve_program(
        "sh",
        Some(std::ffi::OsStr::new("/usr/bin:/bin")),
        Path::new("/"),
    )
    .expect("sh");
    let request = ToolRequest::new("sh", ["-c", "touch started; exec sleep 30"])
        .forward_interrupts(true)
        .timeout(Some(Duration::from_secs(20)));
    let watcher_marker = marker.clone();
    let interrupter = std::thread::spawn(move || {
        while !watcher_marker.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        raise(Signal::SIGINT).expect("raise SIGINT");
    });
    let outcome = run(&sh, &request, dir.path(), &mut |_, _| {}, None).expect("spawn");
    interrupter.join().expect("interrupter");
    assert_eq!(
        outcome.termination,
        Termination::Signaled(Signal::SIGINT as i32)
    );
}
