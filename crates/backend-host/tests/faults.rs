//! Fault injection against the host backend itself (issue 15): the faults of the sync
//! engine's own fault tests (`crates/sync/tests/faults.rs`), made to happen under a real
//! `HostSandboxSession` through the session layer (`run_cycle`: push, tool, pull):
//!
//! * ENOSPC in staging: a small tmpfs as the export base, mounted by a child process in
//!   its own private mount namespace (`unshare --mount --propagation private`), so the
//!   mount can never leak into the machine's namespace, even if the test is killed;
//! * EACCES mid-walk: the tool makes a directory of its output unreadable, in a child
//!   without `CAP_DAC_OVERRIDE` (`setpriv`), so modes apply to root too;
//! * EIO mid-walk: a real `EIO` from the kernel — a process's `/proc/PID/mem` (whose
//!   read at offset 0 fails with `EIO`) bind-mounted over a file of the tool's output
//!   while the tool runs, in the child's private mount namespace;
//! * files changing and vanishing between the scan and the read: a churning writer in
//!   staging while runs pull;
//! * SIGKILL of the process running the session, mid-push and mid-pull, at points
//!   picked from the session's own progress callbacks, over many iterations.
//!
//! After each: the VFS is unchanged or exactly what the last successful run says, the
//! next run repairs staging (staging equals the VFS), nothing outside staging changed,
//! and the failure was a typed error naming its cause.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
#[path = "../../sync/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::config;
use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::{HostError, HostSandboxSession, STAGING_PREFIX, SessionError};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_sync::VmSyncError;
use devshell_vm_test_support::chain;
use devshell_vm_test_support::kill_loop::{
    Landed, child_rounds, is_a_version_or_prefix, kill_in_phases, versioned,
};
use devshell_vm_vfs::Vfs;
use support::{assert_same, host_snapshot, vfs_snapshot};

/// Names the child's job.
const CHILD_ENV: &str = "DEVSHELL_VM_HOST_FAULT_CHILD";
/// The directory the child works in.
const DIR_ENV: &str = "DEVSHELL_VM_HOST_FAULT_DIR";

/// A private mount namespace for the child (tmpfs and bind mounts die with it).
const PRIVATE_NS: &[&str] = &["unshare", "--mount", "--propagation", "private", "--"];
/// A private mount namespace and no `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH`.
const PRIVATE_NS_NO_DAC: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
];

fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (CI runs as root): run the host backend's tests as root"
    );
}

/// This test binary, running [`fault_child`] with `job` in `dir`, behind `wrapper`.
fn child(wrapper: &[&str], job: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .args([
            "--ignored",
            "--exact",
            "fault_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, job)
        .env(DIR_ENV, dir);
    command
}

/// Runs a child job to its end and asserts that it passed.
fn run_child(wrapper: &[&str], job: &str, dir: &Path) {
    let out = child(wrapper, job, dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child job {job} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child job {job} did not run:\n{stdout}"
    );
}

/// Not a test on its own: the body of the child processes the fault tests start.
#[test]
#[ignore = "run by the fault tests as a child process (unshare, setpriv, SIGKILL)"]
#[allow(
    clippy::disallowed_methods,
    reason = "the child's job comes from its parent test, not from user configuration"
)]
fn fault_child() {
    let job = std::env::var(CHILD_ENV).expect("started by a fault test with its job");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the job's directory"));
    match job.as_str() {
        "enospc" => child_enospc(&dir),
        "eacces" => child_eacces(&dir),
        "eio" => child_eio(&dir),
        "session-loop" => child_session_loop(&dir),
        other => panic!("unknown child job {other}"),
    }
}

fn sh(script: &str) -> ToolRequest {
    ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

/// Runs `script` and asserts it exited 0.
fn run_ok(session: &mut HostSandboxSession, vfs: &mut Vfs, script: &str) {
    let outcome = session
        .run_tool(vfs, "/proj", &sh(script))
        .unwrap_or_else(|err| panic!("sh -c {script:?}: {}", chain(&err)));
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "sh -c {script:?}: {}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
}

/// The project's leaf directory in the session's staging.
fn leaf(session: &HostSandboxSession, marker: &str) -> PathBuf {
    let staging = session.staging_dir().expect("staging exists");
    common::find_file(staging, marker)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| panic!("{marker} not found under {}", staging.display()))
}

/// Staging holds exactly the VFS project.
fn assert_staging_is_the_vfs(session: &HostSandboxSession, vfs: &Vfs, marker: &str, what: &str) {
    assert_same(
        &host_snapshot(&leaf(session, marker)),
        &vfs_snapshot(vfs, "/proj"),
        what,
    );
}

fn project_vfs() -> Vfs {
    let mut vfs = Vfs::new();
    for sub in ["a", "m", "z"] {
        vfs.mkdir(&format!("/proj/{sub}")).unwrap();
        vfs.write_file(&format!("/proj/{sub}/file.txt"), sub.as_bytes().to_vec())
            .unwrap();
    }
    vfs.write_file("/proj/marker", b"marker".to_vec()).unwrap();
    vfs
}

// ---------------------------------------------------------------------------------
// ENOSPC in staging.

#[test]
fn enospc_in_staging_is_a_typed_push_error_and_the_next_run_repairs_staging() {
    require_root("mounting a small tmpfs in a private mount namespace");
    let dir = tempfile::tempdir().unwrap();
    run_child(PRIVATE_NS, "enospc", dir.path());
    // The tmpfs lived in the child's namespace only: here the export base is the empty
    // directory it was mounted on.
    let base = dir.path().join("export");
    assert_eq!(
        std::fs::read_dir(&base).unwrap().count(),
        0,
        "the child's tmpfs leaked into this namespace"
    );
}

fn child_enospc(dir: &Path) {
    let base = dir.join("export");
    std::fs::create_dir(&base).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &base,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", base.display()));
    // Outside staging, on the same full file system.
    std::fs::create_dir(base.join("outside")).unwrap();
    std::fs::write(base.join("outside/keep.txt"), b"outside staging").unwrap();
    let outside = host_snapshot(&base.join("outside"));

    let mut session = HostSandboxSession::new(&config(&base));
    let mut vfs = project_vfs();
    run_ok(&mut session, &mut vfs, "echo built > a/out.txt");
    assert_eq!(&vfs.read_file("/proj/a/out.txt").unwrap()[..], b"built\n");

    // An edit bigger than the file system: the push fails part-way, the tool never runs.
    let big: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
    vfs.write_file("/proj/m/big.bin", big).unwrap();
    vfs.write_file("/proj/z/file.txt", b"z2".to_vec()).unwrap();
    let before = vfs_snapshot(&vfs, "/");
    let err = session
        .run_tool(&mut vfs, "/proj", &sh("echo ran > ran.txt"))
        .expect_err("a 3 MB push into 1 MB fails");
    let text = chain(&err);
    assert!(
        matches!(&err, HostError::Session(SessionError::Push { source, .. })
            if matches!(**source, VmSyncError::Io { .. })),
        "expected a typed push error, got {err:?}"
    );
    assert!(text.contains("No space left"), "{text}");
    assert!(
        text.contains("/proj"),
        "the error names the project: {text}"
    );
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "the VFS is unchanged");
    assert_eq!(host_snapshot(&base.join("outside")), outside);

    // A second attempt fails the same way (nothing was half-imported meanwhile).
    let err = session
        .run_tool(&mut vfs, "/proj", &sh("echo ran > ran.txt"))
        .expect_err("still too big");
    assert!(chain(&err).contains("No space left"), "{}", chain(&err));
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "the VFS is unchanged");

    // Small again: the next run repairs staging, and the tool never ran before.
    vfs.remove("/proj/m/big.bin").unwrap();
    run_ok(
        &mut session,
        &mut vfs,
        "test ! -e ran.txt && echo ok > ok.txt",
    );
    assert_eq!(&vfs.read_file("/proj/ok.txt").unwrap()[..], b"ok\n");
    assert_eq!(&vfs.read_file("/proj/z/file.txt").unwrap()[..], b"z2");
    assert_staging_is_the_vfs(&session, &vfs, "marker", "staging after the repairing run");
    assert_eq!(host_snapshot(&base.join("outside")), outside);

    // The tool itself filling the disk is the tool's failure (its exit status), and what
    // it wrote is pulled.
    let outcome = session
        .run_tool(
            &mut vfs,
            "/proj",
            &sh("head -c 4000000 /dev/zero > fill.bin"),
        )
        .expect("the run itself works");
    assert_ne!(outcome.exec.termination, Termination::Exited(0));
    let filled = vfs.read_file("/proj/fill.bin").unwrap().len();
    assert!(filled > 0 && filled < 4_000_000, "{filled}");
    assert_staging_is_the_vfs(&session, &vfs, "marker", "staging after the tool filled it");
    session.shutdown().unwrap();
    assert_eq!(host_snapshot(&base.join("outside")), outside);
}

// ---------------------------------------------------------------------------------
// EACCES and EIO mid-walk.

#[test]
fn eacces_mid_pull_is_a_typed_pull_error_and_leaves_the_vfs() {
    require_root("dropping CAP_DAC_OVERRIDE with setpriv");
    let dir = tempfile::tempdir().unwrap();
    run_child(PRIVATE_NS_NO_DAC, "eacces", dir.path());
}

fn child_eacces(dir: &Path) {
    let base = dir.join("export");
    let mut session = HostSandboxSession::new(&config(&base));
    let mut vfs = project_vfs();
    run_ok(&mut session, &mut vfs, "true");
    let before = vfs_snapshot(&vfs, "/");
    let outcome = session.run_tool(
        &mut vfs,
        "/proj",
        &sh("echo changed > a/file.txt && echo new > m/new.txt && chmod 000 m"),
    );
    let err = outcome.expect_err("the pull cannot read m/");
    let text = chain(&err);
    assert!(
        matches!(
            &err,
            HostError::Session(SessionError::PullAfterRun {
                termination: Termination::Exited(0),
                ..
            })
        ),
        "expected a typed pull error after a tool that exited 0, got {err:?}"
    );
    assert!(
        text.contains("Permission denied") && text.contains("proj/m"),
        "the error names the cause and the directory: {text}"
    );
    assert_eq!(
        vfs_snapshot(&vfs, "/"),
        before,
        "all or nothing: the VFS is unchanged"
    );

    // The next run's tool restores the mode: its pull brings everything, and staging is
    // the VFS again.
    let leaf_dir = leaf(&session, "marker");
    std::fs::set_permissions(
        leaf_dir.join("m"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    run_ok(&mut session, &mut vfs, "true");
    assert_eq!(&vfs.read_file("/proj/m/new.txt").unwrap()[..], b"new\n");
    assert_eq!(
        &vfs.read_file("/proj/a/file.txt").unwrap()[..],
        b"changed\n"
    );
    assert_staging_is_the_vfs(&session, &vfs, "marker", "staging after the repair");
}

#[test]
fn eio_mid_pull_is_a_typed_pull_error_and_leaves_the_vfs() {
    require_root("bind mounts in a private mount namespace");
    let dir = tempfile::tempdir().unwrap();
    run_child(PRIVATE_NS, "eio", dir.path());
}

fn child_eio(dir: &Path) {
    let base = dir.join("export");
    let mut session = HostSandboxSession::new(&config(&base));
    let mut vfs = project_vfs();
    run_ok(&mut session, &mut vfs, "true");
    let before = vfs_snapshot(&vfs, "/");
    // This process's memory file: reading it at offset 0 fails with EIO (nothing is
    // mapped at address 0). Bind-mounted over a file of the tool's output while the
    // tool runs (tools run confined, so the mount is made here, in this process's
    // private namespace, when the tool says its output is written).
    let mem = format!("/proc/{}/mem", std::process::id());
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "echo changed > a/file.txt && echo data > m/eio.bin && echo ready && sleep 1",
        ],
    )
    .stdout(OutputMode::Stream)
    .stderr(OutputMode::Capture);
    let target = leaf(&session, "marker").join("m/eio.bin");
    let mut mounted = false;
    let err = session
        .run_tool_with(
            &mut vfs,
            "/proj",
            &request,
            &mut |_, bytes| {
                if !mounted && String::from_utf8_lossy(bytes).contains("ready") {
                    nix::mount::mount(
                        Some(mem.as_str()),
                        &target,
                        None::<&str>,
                        nix::mount::MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .unwrap_or_else(|e| panic!("bind {mem} over {}: {e}", target.display()));
                    mounted = true;
                }
            },
            None,
        )
        .expect_err("the pull cannot read m/eio.bin");
    assert!(mounted, "the tool never said it was ready");
    let text = chain(&err);
    assert!(
        matches!(&err, HostError::Session(SessionError::PullAfterRun { .. })),
        "expected a typed pull error, got {err:?}"
    );
    println!("EIO mid-pull reported as: {text}");
    assert!(
        text.contains("Input/output error") && text.contains("eio.bin"),
        "the error names EIO and the file: {text}"
    );
    assert_eq!(
        vfs_snapshot(&vfs, "/"),
        before,
        "all or nothing: the VFS is unchanged"
    );

    // The device comes back (unmount): the next run pulls everything.
    let leaf_dir = leaf(&session, "marker");
    nix::mount::umount2(
        &leaf_dir.join("m/eio.bin"),
        nix::mount::MntFlags::MNT_DETACH,
    )
    .unwrap();
    run_ok(&mut session, &mut vfs, "true");
    assert_eq!(&vfs.read_file("/proj/m/eio.bin").unwrap()[..], b"data\n");
    assert_eq!(
        &vfs.read_file("/proj/a/file.txt").unwrap()[..],
        b"changed\n"
    );
    assert_staging_is_the_vfs(&session, &vfs, "marker", "staging after the repair");
}

// ---------------------------------------------------------------------------------
// Files changing and vanishing between the scan and the read.

#[test]
fn files_churning_in_staging_during_runs_never_tear_the_vfs() {
    let base = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"keep").unwrap();
    let outside_before = host_snapshot(outside.path());
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = project_vfs();
    run_ok(&mut session, &mut vfs, "mkdir -p churn");
    let churn = leaf(&session, "marker").join("churn");
    let names: Vec<String> = (0..16).map(|i| format!("f{i:02}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let churn = churn.clone();
        let names = names.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut version = 1_u32;
            while !stop.load(Ordering::Relaxed) {
                let path = churn.join(&names[version as usize % names.len()]);
                match version % 3 {
                    // In place, in chunks: a reader can see it part-way.
                    0 => {
                        if let Ok(mut f) = std::fs::File::create(&path) {
                            for chunk in versioned(version).chunks(4096) {
                                let _ = f.write_all(chunk);
                            }
                        }
                    }
                    1 => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => {
                        let tmp = churn.join(format!(".tmp-{version}"));
                        if std::fs::write(&tmp, versioned(version)).is_ok() {
                            let _ = std::fs::rename(&tmp, &path);
                        }
                    }
                }
                version += 1;
            }
        })
    };
    session.set_pull_excludes(&["churn/.tmp-*"]).unwrap();
    let (mut ok, mut failed) = (0_u32, 0_u32);
    let mut versions = std::collections::BTreeSet::new();
    let start = Instant::now();
    while ok + failed < 150 && start.elapsed() < Duration::from_mins(1) {
        let before = vfs_snapshot(&vfs, "/");
        match session.run_tool(&mut vfs, "/proj", &sh("echo $$ > a/pid.txt")) {
            Ok(outcome) => {
                assert_eq!(outcome.exec.termination, Termination::Exited(0));
                ok += 1;
                for entry in vfs.list_dir("/proj/churn").unwrap() {
                    let path = format!("/proj/churn/{}", entry.name);
                    if let Ok(content) = vfs.read_file(&path) {
                        assert!(
                            is_a_version_or_prefix(&content),
                            "{path}: torn content ({} bytes)",
                            content.len()
                        );
                        versions.insert(content[..content.len().min(12)].to_vec());
                    }
                }
            }
            Err(err) => {
                // Typed: a push that met the churn, or a pull that saw a file change.
                let typed = match &err {
                    HostError::Session(
                        SessionError::Push { source, .. }
                        | SessionError::PullAfterRun { source, .. },
                    ) => matches!(
                        **source,
                        VmSyncError::ChangedDuringRead { .. } | VmSyncError::Io { .. }
                    ),
                    _ => false,
                };
                assert!(typed, "unexpected error under churn: {err:?}");
                assert_eq!(
                    vfs_snapshot(&vfs, "/"),
                    before,
                    "a failed run changed the VFS"
                );
                failed += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    println!(
        "churn: {ok} runs pulled, {failed} failed with a typed error, {} versions seen",
        versions.len()
    );
    assert!(ok > 0, "no run succeeded under churn ({failed} failed)");
    assert!(
        versions.len() > 10,
        "the churn never reached the VFS: {versions:?}"
    );
    // Quiet again: one run makes staging and the VFS equal.
    run_ok(&mut session, &mut vfs, "true");
    assert_staging_is_the_vfs(&session, &vfs, "marker", "after the churn");
    assert_eq!(host_snapshot(outside.path()), outside_before);
}

// ---------------------------------------------------------------------------------
// SIGKILL of the session's process mid-push and mid-pull.

/// Files the loop rewrites per round (the push) and the tool writes (the pull).
const FILES_PER_ROUND: u32 = 120;

/// The child's loop: load the last saved VFS (or build the first one); then forever:
/// edit the VFS, run a tool that copies the edit to its output through a
/// `HostSandboxSession` (push, tool, pull), save the VFS image atomically. Markers on
/// stdout let the parent kill inside a phase: `push` (the run starts with its push),
/// `tool-start` / `tool-end` (streamed by the tool itself; the pull follows at once),
/// `pulled` (the run returned), `saved N`.
fn child_session_loop(dir: &Path) {
    let mut session = HostSandboxSession::new(&config(&dir.join("export")));
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "echo tool-start; r=$(cat round); rm -f out/*; cp in/* out/; echo \"$r\" > out/round; echo tool-end",
        ],
    )
    .stdout(OutputMode::Stream)
    .stderr(OutputMode::Capture);
    child_rounds(
        &dir.join("vfs.img"),
        "/proj",
        &[("marker", b"marker")],
        FILES_PER_ROUND,
        |vfs, marker| {
            session
                .run_tool_with(vfs, "/proj", &request, &mut |_, bytes| marker(bytes), None)
                .map(|outcome| outcome.exec)
                .map_err(|err| chain(&err))
        },
    )
}

/// The image is one whole round: its output is the copy the tool made of the same
/// round's input (the pull of that round, not part of it), and the round's input.
fn assert_image_is_one_round(vfs: &Vfs, what: &str) -> u32 {
    let round: u32 = std::str::from_utf8(&vfs.read_file("/proj/round").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    if round == 0 {
        return 0;
    }
    assert_eq!(
        String::from_utf8_lossy(&vfs.read_file("/proj/out/round").unwrap()).trim(),
        round.to_string(),
        "{what}: the output is of another round"
    );
    for f in 0..FILES_PER_ROUND {
        let want = versioned(round * 1000 + f);
        for side in ["in", "out"] {
            assert_eq!(
                &vfs.read_file(&format!("/proj/{side}/f{f}")).unwrap()[..],
                &want[..],
                "{what}: /proj/{side}/f{f} is not round {round}'s"
            );
        }
    }
    round
}

#[test]
fn sigkill_of_the_session_mid_push_and_mid_pull_leaves_the_last_good_vfs() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("export");
    std::fs::create_dir(&base).unwrap();
    // Outside staging: a file in the export base and a directory beside it.
    std::fs::write(base.join("not-staging.txt"), b"keep").unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/keep"), b"keep").unwrap();
    let outside = host_snapshot(&dir.path().join("outside"));
    let image = dir.path().join("vfs.img");
    let mut last_round = 0;
    let landed = kill_in_phases(
        24,
        || child(&[], "session-loop", dir.path()),
        |iteration| {
            // The VFS: the last saved image, one whole round, never older than before.
            let vfs = devshell_vm_vfs::image::load(&image)
                .unwrap_or_else(|e| panic!("iteration {iteration}: torn image: {e}"));
            let round = assert_image_is_one_round(&vfs, &format!("iteration {iteration}"));
            assert!(
                round >= last_round,
                "iteration {iteration}: the VFS went back"
            );
            last_round = round;
            assert_eq!(host_snapshot(&dir.path().join("outside")), outside);
            assert_eq!(
                std::fs::read(base.join("not-staging.txt")).unwrap(),
                b"keep"
            );
        },
    );
    println!("kills landed: {landed:?}; last saved round {last_round}");
    assert!(
        landed.get(&Landed::Push).copied().unwrap_or(0) >= 3
            && landed.get(&Landed::Pull).copied().unwrap_or(0) >= 3,
        "too few kills inside a push or a pull: {landed:?}"
    );

    // A new session: the killed sessions' staging directories are removed (their owners
    // are dead), and the next run leaves staging equal to the VFS.
    let mut vfs = devshell_vm_vfs::image::load(&image).unwrap();
    let mut session = HostSandboxSession::new(&config(&base));
    run_ok(&mut session, &mut vfs, "true");
    let staging = session.staging_dir().unwrap().to_path_buf();
    let left: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(STAGING_PREFIX))
                && p.is_dir()
                && *p != staging
        })
        .collect();
    assert!(left.is_empty(), "stale staging left behind: {left:?}");
    assert_staging_is_the_vfs(&session, &vfs, "marker", "staging after the kills");
    assert_image_is_one_round(&vfs, "after the kills");
    assert_eq!(
        std::fs::read(base.join("not-staging.txt")).unwrap(),
        b"keep"
    );
}
