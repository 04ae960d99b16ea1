//! The conformance suite every Mode S session (host, γ, β) must pass, so that all
//! backends are held to the same behaviour behind [`crate::VmExecutionSession`].
//!
//! Each check is a public function taking a *factory*: a closure returning a fresh
//! [`SessionHolder`] in Mode S (sync) whose tools can run `sh`. A check builds its own
//! VFS, calls the factory once, runs a few `sh` commands through the session and panics
//! with a message naming the step and what it saw when the session breaks the contract:
//!
//! * what a tool writes, deletes or renames comes back into the VFS, also when the tool
//!   fails — and a failure is an exit status, not an error;
//! * what the VFS changed between runs reaches the tool (edits and deletions);
//! * a run from a subdirectory sees the whole project (cargo's root rule) and runs in the
//!   subdirectory's image;
//! * a missing program is an error, never an exit status;
//! * output can be captured; a timeout is reported as [`Termination::TimedOut`] by
//!   `run_tool` and as [`VmError::Timeout`] by `run_rust_tool`, and what the tool wrote
//!   before it is still pulled;
//! * mode bits and mtimes round-trip (cargo's fingerprints depend on them).
//!
//! ```
//! use devshell_vm::{SessionHolder, VmConfig};
//! let base = tempfile::tempdir()?;
//! let config = VmConfig {
//!     export_base: Some(base.path().to_path_buf()),
//!     ..VmConfig::from_env()?
//! };
//! devshell_vm::conformance::run_all(&mut || SessionHolder::new_host_with(&config));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Or one `#[test]` per check with
//! [`vm_session_conformance_tests!`](crate::vm_session_conformance_tests).
//!
//! The suite is behind the cargo feature `conformance` (off by default, so test code is
//! not compiled into callers' builds); a crate adding a backend enables it in its
//! `[dev-dependencies]`: `devshell-vm = { version = "0.1", features = ["conformance"] }`.

#![allow(
    clippy::missing_panics_doc,
    reason = "every check panics on a contract violation by design; the module docs say so"
)]

use std::time::{Duration, SystemTime};

use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

use crate::{SessionHolder, VmError};

/// A factory of fresh Mode S sessions.
pub type Factory<'a> = dyn FnMut() -> SessionHolder + 'a;

/// One conformance check.
pub type Check = fn(&mut Factory<'_>);

/// Every check, by name, in the order [`run_all`] runs them.
pub const CHECKS: &[(&str, Check)] = &[
    ("tool_writes_come_back", tool_writes_come_back),
    (
        "failures_are_statuses_and_still_pull",
        failures_are_statuses_and_still_pull,
    ),
    ("vfs_changes_reach_the_tool", vfs_changes_reach_the_tool),
    (
        "subdirectory_sees_the_project",
        subdirectory_sees_the_project,
    ),
    ("missing_program_is_an_error", missing_program_is_an_error),
    ("output_capture_and_timeout", output_capture_and_timeout),
    ("modes_and_mtimes_round_trip", modes_and_mtimes_round_trip),
    ("pull_excludes_are_honoured", pull_excludes_are_honoured),
];

/// Runs every check of [`CHECKS`], each with a fresh session.
pub fn run_all(factory: &mut Factory<'_>) {
    for (_, check) in CHECKS {
        check(factory);
    }
}

fn fresh_vfs(files: &[(&str, &str)]) -> Vfs {
    let mut vfs = Vfs::new();
    for (path, text) in files {
        let parent = &path[..path.rfind('/').expect("check paths are absolute")];
        if !parent.is_empty() {
            vfs.mkdir(parent)
                .unwrap_or_else(|err| panic!("mkdir {parent}: {err}"));
        }
        vfs.write_file(path, text.as_bytes().to_vec())
            .unwrap_or_else(|err| panic!("write {path}: {err}"));
    }
    vfs
}

fn sh(session: &mut SessionHolder, vfs: &mut Vfs, cwd: &str, script: &str) -> ToolOutcome {
    let request = ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    session.run_tool(vfs, cwd, &request).unwrap_or_else(|err| {
        panic!(
            "[{}] run_tool(sh -c {script:?}) from {cwd}: infrastructure error: {err}",
            session.backend_name()
        )
    })
}

fn sh_ok(session: &mut SessionHolder, vfs: &mut Vfs, cwd: &str, script: &str) -> ToolOutcome {
    let outcome = sh(session, vfs, cwd, script);
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "[{}] sh -c {script:?} from {cwd} failed; stderr: {}",
        session.backend_name(),
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    outcome
}

fn read(vfs: &Vfs, path: &str, backend: &str, step: &str) -> Vec<u8> {
    vfs.read_file(path)
        .unwrap_or_else(|err| panic!("[{backend}] {step}: {path} not in the VFS: {err}"))
        .to_vec()
}

/// Pull excludes set on the session keep matching paths out of the VFS (every backend
/// honours them), and an invalid pattern is refused without changing anything.
pub fn pull_excludes_are_honoured(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    assert!(
        session.set_pull_excludes(&["[unclosed"]).is_err(),
        "[{backend}] an invalid exclude pattern must be refused"
    );
    session
        .set_pull_excludes(&["target/**", "*.o"])
        .unwrap_or_else(|err| panic!("[{backend}] set_pull_excludes: {err}"));
    let mut vfs = fresh_vfs(&[("/p/keep.txt", "keep\n")]);
    let _ = sh_ok(
        &mut session,
        &mut vfs,
        "/p",
        "mkdir -p target/debug && echo bin > target/debug/app && echo obj > x.o && echo src > new.rs",
    );
    let step = "after a tool wrote excluded and included files";
    assert_eq!(
        read(&vfs, "/p/new.rs", backend, step),
        b"src\n",
        "[{backend}] {step}"
    );
    assert!(
        !vfs.exists("/p/target/debug/app") && !vfs.exists("/p/x.o"),
        "[{backend}] {step}: an excluded path reached the VFS"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// New files, overwrites, deletions and renames by the tool come back into the VFS.
pub fn tool_writes_come_back(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[
        ("/p/keep.txt", "keep\n"),
        ("/p/old.txt", "old\n"),
        ("/p/gone.txt", "x\n"),
    ]);
    let _ = sh_ok(
        &mut session,
        &mut vfs,
        "/p",
        "mkdir -p new/deep && echo made > new/deep/f.txt && echo changed > keep.txt \
         && mv old.txt moved.txt && rm gone.txt",
    );
    let step = "after a tool created, changed, renamed and deleted files";
    assert_eq!(
        read(&vfs, "/p/new/deep/f.txt", backend, step),
        b"made\n",
        "[{backend}] {step}"
    );
    assert_eq!(
        read(&vfs, "/p/keep.txt", backend, step),
        b"changed\n",
        "[{backend}] {step}"
    );
    assert_eq!(
        read(&vfs, "/p/moved.txt", backend, step),
        b"old\n",
        "[{backend}] {step}"
    );
    assert!(
        !vfs.exists("/p/old.txt"),
        "[{backend}] {step}: renamed-away file still in the VFS"
    );
    assert!(
        !vfs.exists("/p/gone.txt"),
        "[{backend}] {step}: deleted file still in the VFS"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// A failing tool is an exit status; what it wrote before failing is pulled.
pub fn failures_are_statuses_and_still_pull(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/in.txt", "in\n")]);
    let status = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "echo partial > out.txt; exit 7".to_owned()],
        )
        .unwrap_or_else(|err| {
            panic!("[{backend}] a tool exiting 7 must be Ok(status), got Err({err})")
        });
    assert_eq!(
        status.code(),
        Some(7),
        "[{backend}] exit status of `exit 7`"
    );
    assert_eq!(
        read(&vfs, "/p/out.txt", backend, "after a failing tool"),
        b"partial\n",
        "[{backend}] writes of a failing tool"
    );
    let outcome = sh(&mut session, &mut vfs, "/p", "kill -9 $$");
    assert_eq!(
        outcome.exec.termination,
        Termination::Signaled(9),
        "[{backend}] a tool killed by SIGKILL"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// Edits and deletions made in the VFS between runs reach the tool.
pub fn vfs_changes_reach_the_tool(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/a.txt", "one\n"), ("/p/b.txt", "b\n")]);
    let _ = sh_ok(&mut session, &mut vfs, "/p", "cat a.txt > seen1.txt");
    vfs.write_file("/p/a.txt", b"two\n".to_vec())
        .expect("edit in the VFS");
    vfs.remove("/p/b.txt").expect("delete in the VFS");
    vfs.mkdir("/p/added/dir").expect("mkdir in the VFS");
    vfs.write_file("/p/added/dir/c.txt", b"c\n".to_vec())
        .expect("write in the VFS");
    let _ = sh_ok(
        &mut session,
        &mut vfs,
        "/p",
        "cat a.txt > seen2.txt; if [ -e b.txt ]; then echo present; else echo absent; fi > b-state.txt; \
         cat added/dir/c.txt > seen3.txt",
    );
    let step = "the second run";
    assert_eq!(
        read(&vfs, "/p/seen1.txt", backend, step),
        b"one\n",
        "[{backend}] first run saw a.txt"
    );
    assert_eq!(
        read(&vfs, "/p/seen2.txt", backend, step),
        b"two\n",
        "[{backend}] the VFS edit reached the tool"
    );
    assert_eq!(
        read(&vfs, "/p/b-state.txt", backend, step),
        b"absent\n",
        "[{backend}] the VFS deletion reached the tool"
    );
    assert_eq!(
        read(&vfs, "/p/seen3.txt", backend, step),
        b"c\n",
        "[{backend}] a new VFS directory reached the tool"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// A run from a subdirectory of a workspace member sees the workspace root's files and
/// runs in the subdirectory's image.
pub fn subdirectory_sees_the_project(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let manifest = "[workspace]\nmembers = [\"member\"]\n";
    let mut vfs = fresh_vfs(&[
        ("/ws/Cargo.toml", manifest),
        ("/ws/member/Cargo.toml", "[package]\nname = \"member\"\n"),
        ("/ws/member/src/lib.rs", ""),
    ]);
    let _ = sh_ok(
        &mut session,
        &mut vfs,
        "/ws/member/src",
        "cat ../../Cargo.toml > seen.txt",
    );
    assert_eq!(
        read(
            &vfs,
            "/ws/member/src/seen.txt",
            backend,
            "run from /ws/member/src"
        ),
        manifest.as_bytes(),
        "[{backend}] a run from a member's src/ must see the workspace manifest and write into its own cwd"
    );
    shutdown(&mut session, &mut vfs, "/ws");
}

/// A program that does not exist is an error, not an exit status such as 127.
pub fn missing_program_is_an_error(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/x.txt", "x\n")]);
    let result = session.run_rust_tool(&mut vfs, "/p", "devshell-vm-no-such-program", &[]);
    match result {
        Err(err) => assert!(
            err.to_string().contains("devshell-vm-no-such-program"),
            "[{backend}] the error should name the missing program: {err}"
        ),
        Ok(status) => {
            panic!("[{backend}] a missing program must be an error, got exit status {status}")
        }
    }
    assert_eq!(
        read(&vfs, "/p/x.txt", backend, "after a missing program"),
        b"x\n"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// `run_tool` captures output; a timeout kills the tool, is reported as a timeout, and what
/// the tool wrote before is pulled.
pub fn output_capture_and_timeout(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/x.txt", "x\n")]);
    let outcome = sh_ok(&mut session, &mut vfs, "/p", "echo out; echo err >&2");
    assert_eq!(outcome.exec.stdout, b"out\n", "[{backend}] captured stdout");
    assert_eq!(outcome.exec.stderr, b"err\n", "[{backend}] captured stderr");

    let request = ToolRequest::new("sh", ["-c", "echo before > before.txt; sleep 30"])
        .timeout(Some(Duration::from_millis(800)));
    let outcome = session
        .run_tool(&mut vfs, "/p", &request)
        .unwrap_or_else(|err| {
            panic!("[{backend}] a timeout is an outcome of run_tool, got Err({err})")
        });
    assert_eq!(
        outcome.exec.termination,
        Termination::TimedOut,
        "[{backend}] run_tool timeout"
    );
    assert_eq!(
        read(&vfs, "/p/before.txt", backend, "after a timeout"),
        b"before\n",
        "[{backend}] writes before a timeout are pulled"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// Modes set by the tool come back; mtimes of files nobody touched survive a run
/// unchanged, and the tool sees the VFS mtimes.
pub fn modes_and_mtimes_round_trip(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/script.sh", "#!/bin/sh\necho hi\n")]);
    let old = SystemTime::UNIX_EPOCH + Duration::from_mins(25_000_000); // 1_500_000_000 s
    vfs.write_file_with("/p/untouched.txt", b"u\n".to_vec(), 0o640, old)
        .expect("write with metadata");
    let outcome = sh_ok(
        &mut session,
        &mut vfs,
        "/p",
        "chmod 755 script.sh && ./script.sh && stat -c %Y untouched.txt",
    );
    let stdout = String::from_utf8_lossy(&outcome.exec.stdout).into_owned();
    assert_eq!(
        stdout, "hi\n1500000000\n",
        "[{backend}] the tool sees executable bits it set and the VFS mtime"
    );
    let script = vfs.stat("/p/script.sh").expect("stat script");
    assert_eq!(
        script.mode & 0o777,
        0o755,
        "[{backend}] chmod by the tool comes back"
    );
    let untouched = vfs.stat("/p/untouched.txt").expect("stat untouched");
    assert_eq!(
        untouched.mtime, old,
        "[{backend}] an untouched file keeps its mtime"
    );
    assert_eq!(
        untouched.mode & 0o777,
        0o640,
        "[{backend}] an untouched file keeps its mode"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

fn shutdown(session: &mut SessionHolder, vfs: &mut Vfs, cwd: &str) {
    let backend = session.backend_name();
    session
        .shutdown(vfs, cwd)
        .unwrap_or_else(|err| panic!("[{backend}] shutdown: {err}"));
}

/// The error type is part of the contract: a timeout through `run_rust_tool` is
/// [`VmError::Timeout`]. Needs a factory whose sessions have an exec timeout of at most a
/// few seconds configured (it runs `sleep 30`); not part of [`run_all`] for that reason.
pub fn rust_tool_timeout_is_timeout_error(factory: &mut Factory<'_>) {
    let mut session = factory();
    let backend = session.backend_name();
    let mut vfs = fresh_vfs(&[("/p/x.txt", "x\n")]);
    let result = session.run_rust_tool(
        &mut vfs,
        "/p",
        "sh",
        &[
            "-c".to_owned(),
            "echo before > before.txt; sleep 30".to_owned(),
        ],
    );
    match result {
        Err(VmError::Timeout { program, .. }) => assert_eq!(program, "sh", "[{backend}]"),
        Err(other) => panic!("[{backend}] expected VmError::Timeout, got {other:?}"),
        Ok(status) => panic!("[{backend}] expected VmError::Timeout, got exit status {status}"),
    }
    assert_eq!(
        read(&vfs, "/p/before.txt", backend, "after a timeout"),
        b"before\n"
    );
    shutdown(&mut session, &mut vfs, "/p");
}

/// One `#[test]` per conformance check, for a factory expression of type
/// `impl FnMut() -> SessionHolder` (feature `conformance`):
///
/// ```
/// // tests/host_conformance.rs
/// devshell_vm::vm_session_conformance_tests!(|| {
///     devshell_vm::SessionHolder::new_host_with(&devshell_vm::VmConfig::from_env().expect("env"))
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! vm_session_conformance_tests {
    ($factory:expr) => {
        $crate::vm_session_conformance_tests!(@each $factory;
            tool_writes_come_back,
            failures_are_statuses_and_still_pull,
            vfs_changes_reach_the_tool,
            subdirectory_sees_the_project,
            missing_program_is_an_error,
            output_capture_and_timeout,
            modes_and_mtimes_round_trip,
            pull_excludes_are_honoured
        );
    };
    (@each $factory:expr; $($check:ident),+) => {
        $(
            #[test]
            fn $check() {
                let mut factory = $factory;
                $crate::conformance::$check(&mut factory);
            }
        )+
    };
}
