//! Real processes: exit codes, signals, capture, streaming, deadlines, cancellation.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devshell_vm_exec::{
    CancelHandle, ExecError, NoExitStatus, OutputMode, StreamKind, Termination, ToolRequest,
    resolve_program, run,
};

fn sh() -> PathBuf {
    resolve_program(
        "sh",
        Some(std::ffi::OsStr::new("/usr/bin:/bin")),
        Path::new("/"),
    )
    .expect("sh must exist in /usr/bin or /bin")
}

fn run_sh(
    script: &str,
    configure: impl FnOnce(ToolRequest) -> ToolRequest,
) -> devshell_vm_exec::ExecOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = configure(ToolRequest::new("sh", ["-c", script]));
    run(&sh(), &request, dir.path(), &mut |_, _| {}, None).expect("spawn sh")
}

/// Whether `pid` is gone or a zombie (a zombie has no running code left).
fn process_is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn exit_code_and_captured_output_are_reported() {
    let outcome = run_sh("printf out; printf err >&2; exit 7", |r| {
        r.stdout(OutputMode::Capture).stderr(OutputMode::Capture)
    });
    assert_eq!(outcome.termination, Termination::Exited(7));
    assert_eq!(outcome.stdout, b"out");
    assert_eq!(outcome.stderr, b"err");
    assert!(!outcome.success());
    assert_eq!(outcome.exit_status().and_then(|s| s.code()), Some(7));
    assert_eq!(outcome.v1_code_and_signal(), (7, None));
}

#[test]
fn negative_and_large_codes_are_not_clamped_to_success() {
    let outcome = run_sh("exit 255", |r| r);
    assert_eq!(outcome.termination, Termination::Exited(255));
    assert!(!outcome.success());
}

#[test]
fn death_by_signal_is_a_signal_not_an_exit_code() {
    let outcome = run_sh("kill -TERM $$", |r| r);
    assert_eq!(outcome.termination, Termination::Signaled(15));
    assert_eq!(outcome.v1_code_and_signal(), (143, Some(15)));
    assert_eq!(outcome.exit_status().and_then(|s| s.signal()), Some(15));
}

#[test]
fn stdin_is_null_by_default() {
    // `cat` would block forever on an inherited terminal or pipe.
    let outcome = run_sh("cat; echo end", |r| {
        r.stdout(OutputMode::Capture)
            .timeout(Some(Duration::from_secs(20)))
    });
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(outcome.stdout, b"end\n");
}

#[test]
fn environment_additions_reach_the_tool_and_arguments_are_not_reparsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "printf '%s|%s' \"$GREETING\" \"$1\"",
            "sh",
            "a b $HOME 'q'",
        ],
    )
    .env("GREETING", "hi there")
    .stdout(OutputMode::Capture);
    let outcome = run(&sh(), &request, dir.path(), &mut |_, _| {}, None).expect("spawn");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout),
        "hi there|a b $HOME 'q'"
    );
}

#[test]
fn runs_in_the_given_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = ToolRequest::new("sh", ["-c", "pwd -P"]).stdout(OutputMode::Capture);
    let outcome = run(&sh(), &request, dir.path(), &mut |_, _| {}, None).expect("spawn");
    let expected = dir.path().canonicalize().expect("canonical");
    assert_eq!(
        String::from_utf8_lossy(&outcome.stdout).trim_end(),
        expected.to_string_lossy()
    );
}

#[test]
fn streamed_chunks_arrive_in_order_per_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done",
        ],
    )
    .stdout(OutputMode::Stream)
    .stderr(OutputMode::Stream);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let outcome = run(
        &sh(),
        &request,
        dir.path(),
        &mut |kind, chunk| match kind {
            StreamKind::Stdout => out.extend_from_slice(chunk),
            StreamKind::Stderr => err.extend_from_slice(chunk),
        },
        None,
    )
    .expect("spawn");
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "out1\nout2\nout3\nout4\nout5\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&err),
        "err1\nerr2\nerr3\nerr4\nerr5\n"
    );
    assert!(
        outcome.stdout.is_empty(),
        "streamed output is not also captured"
    );
}

#[test]
fn timeout_kills_the_group_even_when_a_grandchild_holds_the_pipe() {
    // The grandchild prints its pid, then both it and the shell sleep far past the deadline.
    let outcome = run_sh("sleep 30 & echo $!; sleep 30", |r| {
        r.stdout(OutputMode::Capture)
            .timeout(Some(Duration::from_millis(300)))
    });
    assert_eq!(outcome.termination, Termination::TimedOut);
    assert!(
        outcome.exit_status().is_none(),
        "a timeout is not an exit status"
    );
    // Correctness bound, not a speed target: the run must not wait for the 30 s sleeps.
    assert!(
        outcome.duration < Duration::from_secs(10),
        "returned after {:?}",
        outcome.duration
    );
    let grandchild: u32 = String::from_utf8_lossy(&outcome.stdout)
        .trim()
        .parse()
        .expect("grandchild pid");
    // SIGKILL delivery is asynchronous; give the kernel a moment before looking.
    let mut dead = false;
    for _ in 0..100 {
        if process_is_dead(grandchild) {
            dead = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dead, "grandchild {grandchild} survived the timeout");
}

#[test]
fn a_daemon_holding_the_pipe_after_a_normal_exit_does_not_hang_the_run() {
    // The subshell's `sleep` leaves the process group's leader behind but keeps stdout open.
    let outcome = run_sh("(sleep 5 &); echo done", |r| r.stdout(OutputMode::Capture));
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(outcome.stdout, b"done\n");
    assert!(
        outcome.duration < Duration::from_secs(4),
        "waited {:?} for a daemon's pipe",
        outcome.duration
    );
}

#[test]
fn cancel_handle_stops_the_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancelHandle::new();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        trigger.cancel();
    });
    let request = ToolRequest::new("sleep", ["30"]);
    let sleep = resolve_program(
        "sleep",
        Some(std::ffi::OsStr::new("/usr/bin:/bin")),
        dir.path(),
    )
    .expect("sleep exists");
    let outcome = run(&sleep, &request, dir.path(), &mut |_, _| {}, Some(&cancel)).expect("spawn");
    canceller.join().expect("canceller");
    assert_eq!(outcome.termination, Termination::Cancelled);
    assert!(outcome.duration < Duration::from_secs(10));
}

#[test]
fn missing_programs_are_errors_naming_the_program() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Some(std::ffi::OsStr::new("/nonexistent-dir"));
    for program in ["no-such-tool-xyz", "", "./missing", "bad\0name"] {
        match resolve_program(program, path, dir.path()) {
            Err(ExecError::ProgramNotFound {
                program: named,
                searched,
            }) => {
                assert_eq!(named, program);
                assert_eq!(searched, "/nonexistent-dir");
            }
            other => panic!("{program:?}: expected ProgramNotFound, got {other:?}"),
        }
    }
    // A non-executable file is not a program.
    std::fs::write(dir.path().join("data.txt"), "x").expect("write");
    assert!(matches!(
        resolve_program("./data.txt", path, dir.path()),
        Err(ExecError::ProgramNotFound { .. })
    ));
}

#[test]
fn relative_program_paths_resolve_against_cwd() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("tool.sh");
    std::fs::write(&script, "#!/bin/sh\necho from-script\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let program = resolve_program("./tool.sh", None, dir.path()).expect("found");
    let request = ToolRequest::new("./tool.sh", Vec::<String>::new()).stdout(OutputMode::Capture);
    let outcome = run(&program, &request, dir.path(), &mut |_, _| {}, None).expect("spawn");
    assert_eq!(outcome.stdout, b"from-script\n");
}

#[test]
fn spawn_failure_is_an_error_not_an_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = ToolRequest::new("ghost", Vec::<String>::new());
    let err = run(
        Path::new("/nonexistent/ghost"),
        &request,
        dir.path(),
        &mut |_, _| {},
        None,
    )
    .expect_err("cannot spawn");
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
}

#[test]
fn an_interactive_request_shares_the_terminal_and_forwards_interrupts() {
    let request = ToolRequest::interactive("cargo", ["build"]);
    assert_eq!(request.stdin, devshell_vm_exec::StdinMode::Inherit);
    assert_eq!(request.stdout, OutputMode::Inherit);
    assert_eq!(request.stderr, OutputMode::Inherit);
    assert!(request.forward_interrupts);
    assert_eq!(request.args, ["build"]);
}

#[test]
fn an_outcome_says_why_it_has_no_exit_status() {
    let timed_out = run_sh("sleep 30", |r| r.timeout(Some(Duration::from_millis(100))));
    assert_eq!(
        timed_out.exit_status_or_reason(),
        Err(NoExitStatus::TimedOut)
    );
    let exited = run_sh("exit 3", |r| r);
    assert_eq!(
        exited.exit_status_or_reason().map(|status| status.code()),
        Ok(Some(3))
    );
}

#[test]
fn a_request_keeps_its_own_timeout_over_the_session_default() {
    let second = Some(Duration::from_secs(1));
    let default = Some(Duration::from_secs(9));
    let own = ToolRequest::new("true", Vec::<String>::new())
        .timeout(second)
        .or_timeout(default);
    assert_eq!(own.timeout, second);
    let none = ToolRequest::new("true", Vec::<String>::new()).or_timeout(default);
    assert_eq!(none.timeout, default);
    let still_none = ToolRequest::new("true", Vec::<String>::new()).or_timeout(None);
    assert_eq!(still_none.timeout, None);
}

/// Issue 15, finding 2: a slow consumer of streamed output must hold the tool on its
/// pipe, not let the reader threads buffer everything it prints.
#[test]
fn slow_stream_consumer_blocks_the_tool_on_its_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("finished");
    // 64 MiB of output, then a marker file: the marker appears only once every byte
    // has been taken from the pipe.
    let script = format!(
        "head -c 67108864 /dev/zero; echo done > '{}'",
        marker.display()
    );
    let request = ToolRequest::new("sh", ["-c", script.as_str()]).stdout(OutputMode::Stream);
    let mut calls = 0_u64;
    let mut total = 0_u64;
    let mut finished_while_stalled = None;
    let outcome = run(
        &sh(),
        &request,
        dir.path(),
        &mut |_, chunk| {
            calls += 1;
            total += chunk.len() as u64;
            if calls == 1 {
                // Stall the consumer: with an unbounded queue the readers would drain
                // the whole 64 MiB meanwhile and the tool would finish.
                std::thread::sleep(Duration::from_secs(1));
                finished_while_stalled = Some(marker.exists());
            }
        },
        None,
    )
    .expect("spawn sh");
    assert_eq!(outcome.termination, Termination::Exited(0));
    assert_eq!(total, 64 << 20, "every byte is still delivered");
    assert_eq!(
        finished_while_stalled,
        Some(false),
        "the tool ran to the end while the consumer was stalled: output was buffered without bound"
    );
}

#[test]
fn kill_now_kills_the_running_group_from_another_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancelHandle::new();
    assert_eq!(cancel.process_group(), None);
    let watcher = cancel.clone();
    let killer = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while watcher.process_group().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "run never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(watcher.kill_now(), "a running group was signalled");
    });
    let request = ToolRequest::new("sh", ["-c", "sleep 1000"]);
    let outcome = run(&sh(), &request, dir.path(), &mut |_, _| {}, Some(&cancel)).expect("spawn");
    killer.join().expect("killer thread");
    assert_eq!(outcome.termination, Termination::Cancelled);
    assert_eq!(
        cancel.process_group(),
        None,
        "cleared when the run returned"
    );
}
