//! Issue 18: the Lima backend against the stand-in's models of how real Lima behaves
//! (each mode of the stand-in cites Lima's source; see docs/arch/lima.md). One test (or
//! group) per point of the issue.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Fixture, INSTANCE, MOUNT, Notices};
use devshell_vm_backend_lima::Backend as _;
use devshell_vm_backend_lima::{ChannelState, GammaSession, LimaError};
use devshell_vm_exec::{CancelHandle, OutputMode, Termination, ToolRequest};
use devshell_vm_guest_fs::GuestFsOps as _;
use devshell_vm_vfs::Vfs;
use serde_json::json;

fn open(fixture: &Fixture, guest_mode: bool) -> (GammaSession, Notices) {
    let mut session = GammaSession::new(&fixture.config(guest_mode)).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    (session, notices)
}

fn captured(program: &str, args: &[&str]) -> ToolRequest {
    ToolRequest::new(program, args.iter().copied())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

fn vfs_with_dir(dir: &str) -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir(dir).expect("mkdir");
    vfs
}

fn mkdir_p(fixture: &Fixture) {
    std::fs::create_dir_all(fixture.parent.path().join("p")).expect("mkdir p");
}

/// Processes on this machine (the stand-in's guest shares the pid namespace) whose
/// command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == want) {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no process runs `argv`; returns the ones still left.
fn left_after(argv: &[&str]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_running(argv);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unique_sleep() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "300.{}{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- 1. kills reach the guest

#[test]
fn a_timed_out_run_leaves_nothing_in_the_guest() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let secs = unique_sleep();
    let request = captured("sleep", &[&secs]).timeout(Some(Duration::from_secs(1)));
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
    assert_eq!(outcome.exec.termination, Termination::TimedOut);
    let left = left_after(&["sleep", &secs]);
    assert!(
        left.is_empty(),
        "`sleep {secs}` still runs in the guest: {left:?}"
    );
}

#[test]
fn a_cancelled_run_leaves_nothing_in_the_guest() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let secs = unique_sleep();
    let cancel = CancelHandle::new();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        trigger.cancel();
    });
    let outcome = session
        .run_tool_with(
            &mut vfs,
            "/p",
            &captured("sleep", &[&secs]),
            &mut |_, _| {},
            Some(&cancel),
        )
        .expect("run");
    canceller.join().expect("canceller");
    assert_eq!(outcome.exec.termination, Termination::Cancelled);
    let left = left_after(&["sleep", &secs]);
    assert!(
        left.is_empty(),
        "`sleep {secs}` still runs in the guest: {left:?}"
    );
}

#[test]
fn a_supervised_run_keeps_output_status_and_environment() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let request = captured("sh", &["-c", "echo \"out $A\"; echo err >&2; pwd; exit 7"])
        .env("A", "x y")
        .timeout(Some(Duration::from_mins(1)));
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
    assert_eq!(outcome.exec.termination, Termination::Exited(7));
    assert_eq!(
        String::from_utf8_lossy(&outcome.exec.stdout),
        format!("out x y\n{MOUNT}/p\n")
    );
    assert_eq!(String::from_utf8_lossy(&outcome.exec.stderr), "err\n");
}

// ---------------------------------------------------------------- 2. versions and boot

fn set_version(fixture: &Fixture, version: &str) {
    std::fs::write(fixture.lima_home.path().join("standin-version"), version).expect("version");
}

fn stop_from_outside(fixture: &Fixture) {
    let mut state = fixture.instance();
    state["status"] = json!("Stopped");
    fixture.set_instance(state);
}

/// Lima 2.0.3 exits 0 having run nothing when `shell` meets a stopped instance: the
/// run must not be reported as the tool's success.
#[test]
fn lima_2_0_3_never_reports_success_for_a_tool_that_never_ran() {
    let mut version_reads = Vec::new();
    for version in ["1.0.7", "1.2.3", "2.0.2", "2.0.3", "2.1.0", "2.2.0"] {
        let fixture = Fixture::new("Running");
        mkdir_p(&fixture);
        set_version(&fixture, version);
        let (mut session, _) = open(&fixture, true);
        let mut vfs = vfs_with_dir("/p");
        let first = session
            .run_tool(&mut vfs, "/p", &captured("true", &[]))
            .expect("first run");
        assert!(first.exec.success(), "{version}: {first:?}");
        stop_from_outside(&fixture);
        let marker = fixture.parent.path().join("p/ran");
        let outcome = session.run_tool(
            &mut vfs,
            "/p",
            &captured("sh", &["-c", &format!("echo yes > {MOUNT}/p/ran")]),
        );
        match outcome {
            Ok(outcome) => {
                assert!(outcome.exec.success(), "{version}: {outcome:?}");
                assert!(
                    marker.is_file(),
                    "Lima {version}: the run reported success but the tool never ran"
                );
            }
            Err(e) => panic!("Lima {version}: the instance should have been started again: {e}"),
        }
        version_reads.push((
            version,
            fixture
                .invocations()
                .iter()
                .filter(|argv| argv.first().map(String::as_str) == Some("--version"))
                .count(),
        ));
    }
    for (version, reads) in version_reads {
        assert_eq!(reads, 1, "{version}: `limactl --version` once per session");
    }
}

/// `Running` as soon as the host agent's PID file exists, before ssh answers: the first
/// run must wait (bounded) until the guest mount is usable.
#[test]
fn a_run_right_after_boot_waits_until_the_mount_answers() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let mut state = fixture.instance();
    state["ready_after_ms"] = json!(1500);
    state["started_at_ms"] = json!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis()
            .to_string()
            .parse::<u64>()
            .expect("ms")
    );
    fixture.set_instance(state);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("echo", &["booted"]))
        .expect("the run waits for the boot instead of failing");
    assert_eq!(String::from_utf8_lossy(&outcome.exec.stdout), "booted\n");
}

// ---------------------------------------------------------------- 3. broken instances

#[test]
fn a_broken_instance_reports_limas_errors_not_a_missing_mount() {
    let fixture = Fixture::new("Running");
    let mut state = fixture.instance();
    state["yaml_error"] = json!("field `mounts[0].location` must be an absolute path");
    fixture.set_instance(state);
    let (mut session, _) = open(&fixture, true);
    let err = session.ensure_running().expect_err("broken");
    let text = err.to_string();
    assert!(matches!(err, LimaError::InstanceBroken { .. }), "{err:?}");
    assert!(text.contains("must be an absolute path"), "{text}");
    assert!(text.contains("Unknown"), "{text}");

    let fixture = Fixture::new("Running");
    let mut state = fixture.instance();
    state["status"] = json!("Broken");
    state["errors"] = json!(["open ha.pid: no such file or directory"]);
    fixture.set_instance(state);
    let (mut session, _) = open(&fixture, true);
    let err = session.ensure_running().expect_err("broken");
    assert!(matches!(err, LimaError::InstanceBroken { .. }), "{err:?}");
    assert!(err.to_string().contains("ha.pid"), "{err}");
}

#[test]
fn an_unknown_instance_is_missing_before_and_after_lima_0_23() {
    for version in ["0.22.0", "0.23.0", "2.2.0"] {
        let fixture = Fixture::new("Running");
        set_version(&fixture, version);
        std::fs::remove_dir_all(fixture.lima_home.path().join(INSTANCE)).expect("rm");
        let (mut session, _) = open(&fixture, true);
        let err = session.ensure_running().expect_err("missing");
        assert!(
            matches!(err, LimaError::InstanceMissing { .. }),
            "{version}: {err:?}"
        );
    }
}

// ---------------------------------------------------------------- 4. ssh's exit codes

/// A guest command killed by a signal arrives as 255 (no exit-status from sshd): the
/// run is not "ssh failed" since ssh still answers, and says what 255 can mean.
#[test]
fn a_guest_command_killed_by_a_signal_is_not_an_ssh_failure() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, notices) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("sh", &["-c", "kill -KILL $$"]))
        .expect("not an ssh failure");
    assert_eq!(outcome.exec.termination, Termination::Exited(255));
    assert!(
        notices.text().contains("killed by a signal"),
        "{}",
        notices.text()
    );
}

#[test]
fn arguments_that_look_like_limactl_flags_reach_the_tool() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(
            &mut vfs,
            "/p",
            &captured("echo", &["--debug", "-y", "--tty", "--tty=false", "--yes"]),
        )
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&outcome.exec.stdout),
        "--debug -y --tty --tty=false --yes\n"
    );
}

/// Run by [`terminal_runs_merge_stderr_and_keep_the_status`] under a pty (`script`);
/// ignored on its own because it needs that terminal.
#[test]
#[ignore = "run under a pty by terminal_runs_merge_stderr_and_keep_the_status"]
fn inner_terminal_run() {
    assert!(
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        "needs a terminal: run through terminal_runs_merge_stderr_and_keep_the_status"
    );
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let request = ToolRequest::new("sh", ["-c", "echo to-out; echo to-err >&2; exit 3"]);
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
    assert_eq!(outcome.exec.termination, Termination::Exited(3));
    println!("INNER-TERMINAL-RUN-OK");
}

#[test]
fn terminal_runs_merge_stderr_and_keep_the_status() {
    let script = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect(
            "these tests need util-linux `script` for a pty; install util-linux (.ci/run does)",
        );
    let me = std::env::current_exe().expect("test binary");
    let inner = format!(
        "{} --exact inner_terminal_run --include-ignored --nocapture --test-threads=1",
        me.display()
    );
    let out = std::process::Command::new(script)
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("INNER-TERMINAL-RUN-OK"), "{text}");
    // Through Lima's `ssh -t` the guest's stderr comes back on the terminal with stdout,
    // with the pty's `\r\n` line ends.
    assert!(text.contains("to-out\r"), "{text:?}");
    assert!(text.contains("to-err\r"), "{text:?}");
}

// ---------------------------------------------------------------- 5. the guest is not the host

#[test]
fn mode_s_refuses_a_read_only_mount_naming_the_setting() {
    let fixture = Fixture::new("Running");
    let mut state = fixture.instance();
    state["mounts"][0]["writable"] = json!(false);
    fixture.set_instance(state);
    let (mut session, _) = open(&fixture, false);
    let err = session.ensure_running().expect_err("read-only mount");
    let text = err.to_string();
    assert!(text.contains("writable: true"), "{text}");
    assert!(text.contains("lima.yaml"), "{text}");
}

/// reverse-sshfs caches attributes and entries by default: Mode S says so (a push just
/// before a run may look stale); `cache: false` or 9p/virtiofs say nothing.
#[test]
fn mode_s_warns_about_a_cached_reverse_sshfs_mount() {
    for (cache, warned) in [(None, true), (Some(true), true), (Some(false), false)] {
        let fixture = Fixture::new("Running");
        let mut state = fixture.instance();
        state["mount_type"] = json!("reverse-sshfs");
        if let Some(cache) = cache {
            state["mounts"][0]["sshfs"] = json!({ "cache": cache });
        }
        fixture.set_instance(state);
        let (mut session, notices) = open(&fixture, false);
        session.ensure_running().expect("runs");
        assert_eq!(
            notices.text().contains("sshfs: {cache: false}"),
            warned,
            "cache {cache:?}: {}",
            notices.text()
        );
    }
    let fixture = Fixture::new("Running");
    let (mut session, notices) = open(&fixture, false);
    session.ensure_running().expect("runs");
    assert!(
        !notices.text().contains("reverse-sshfs"),
        "{}",
        notices.text()
    );
}

#[test]
fn a_sidecar_the_guest_cannot_run_is_refused_before_copying() {
    let fixture = Fixture::new("Running");
    mkdir_p(&fixture);
    let dir = tempfile::tempdir().expect("tmp");
    // A Mach-O 64-bit executable header (what a macOS host builds).
    let macho = dir.path().join("devshell-vm-sidecar");
    let mut bytes = vec![0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01];
    bytes.resize(64, 0);
    std::fs::write(&macho, &bytes).expect("write");
    let mut config = fixture.config(true);
    config.sidecar_bin = Some(macho);
    let mut session = GammaSession::new(&config).expect("session");
    session.set_notice_writer(Box::new(Notices::default()));
    let _ = session.list_dir(MOUNT).expect("falls back");
    let ChannelState::Fallback(reason) = session.channel_state().clone() else {
        panic!("expected a fallback, got {:?}", session.channel_state());
    };
    assert!(reason.contains("Mach-O"), "{reason}");
    assert!(reason.contains("musl"), "{reason}");
    assert!(
        !fixture.subcommands().iter().any(|c| c == "copy"),
        "the binary must be refused before `limactl copy`: {:?}",
        fixture.subcommands()
    );
    assert!(
        session.diagnostics().contains("Mach-O"),
        "{}",
        session.diagnostics()
    );
}

/// A login profile that prints to stdout must not corrupt guest file reads or the
/// channel handshake.
#[test]
fn login_profile_output_does_not_corrupt_reads_or_the_channel() {
    for with_sidecar in [false, true] {
        let fixture = Fixture::new("Running");
        mkdir_p(&fixture);
        let profile = fixture.guest_home.path().join(".profile");
        let mut text = std::fs::read_to_string(&profile).expect("profile");
        text.push_str("echo 'Welcome to Ubuntu!'\necho '{\"op\":\"not-a-reply\"}'\n");
        std::fs::write(&profile, text).expect("profile");
        std::fs::write(fixture.parent.path().join("p/data"), b"exact\ncontent").expect("data");
        let mut config = fixture.config(true);
        if with_sidecar {
            config.sidecar_bin = Some(common::sidecar());
        }
        let mut session = GammaSession::new(&config).expect("session");
        session.set_notice_writer(Box::new(Notices::default()));
        let got = session
            .read_file(&format!("{MOUNT}/p/data"))
            .expect("read_file");
        assert_eq!(got, b"exact\ncontent", "sidecar: {with_sidecar}");
        if with_sidecar {
            assert_eq!(session.channel_state(), &ChannelState::Open);
        }
    }
}

// ---------------------------------------------------------------- 6. root

#[test]
fn limactl_refusing_root_is_said_clearly() {
    let fixture = Fixture::new("Running");
    std::fs::write(fixture.lima_home.path().join("standin-as-root"), "").expect("mode");
    let (mut session, _) = open(&fixture, true);
    let err = session.ensure_running().expect_err("refused");
    assert!(
        matches!(err, LimaError::LimactlRefusesRoot { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("root"), "{err}");
}
