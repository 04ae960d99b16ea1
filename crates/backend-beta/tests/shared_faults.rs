//! Fault injection against the β backend with a shared staging directory (issue 15):
//! the client pushes into and pulls from a directory the sidecar works in (the
//! `wire-sync` faults are in `tests/remote/`).
//!
//! * ENOSPC in staging and EACCES mid-walk: a child process in its own mount namespace
//!   (`unshare --mount --propagation private`, so the tmpfs can never leak) and without
//!   `CAP_DAC_OVERRIDE` (`setpriv`, so modes apply to root too) mounts a 1 MiB tmpfs,
//!   starts a sidecar on it and runs a `BetaSession` whose staging is on it;
//! * SIGKILL of the client process mid-push and mid-pull over many iterations
//!   ([`devshell_vm_test_support::kill_loop`]).
//!
//! After each: the VFS is unchanged or what the last successful run says, the next run
//! repairs staging (staging equals the VFS), nothing outside staging changed, and the
//! failure was a typed error.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;
#[path = "../../sync/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{config, unix_sidecar};
use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_session::SessionError;
use devshell_vm_test_support::chain;
use devshell_vm_test_support::kill_loop::{Landed, child_rounds, kill_in_phases, versioned};
use devshell_vm_vfs::Vfs;
use support::{assert_same, host_snapshot, vfs_snapshot};

const CHILD_ENV: &str = "DEVSHELL_VM_BETA_SHARED_FAULT_CHILD";
const DIR_ENV: &str = "DEVSHELL_VM_BETA_SHARED_FAULT_DIR";
const SOCKET_ENV: &str = "DEVSHELL_VM_BETA_SHARED_FAULT_SOCKET";

fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (CI runs as root): run the β tests as root"
    );
}

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
        "enospc-eacces" => child_enospc_eacces(&dir),
        "client-loop" => child_client_loop(&dir, &std::env::var(SOCKET_ENV).unwrap()),
        other => panic!("unknown child job {other}"),
    }
}

fn sh(script: &str) -> ToolRequest {
    ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

fn run_ok(session: &mut BetaSession, vfs: &mut Vfs, script: &str) {
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

/// The project's leaf in the shared staging directory (the directory holding `marker`).
fn leaf(staging: &Path) -> PathBuf {
    fn find(dir: &Path, depth: u32) -> Option<PathBuf> {
        if dir.join("marker").is_file() {
            return Some(dir.to_path_buf());
        }
        if depth == 0 {
            return None;
        }
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .find_map(|e| find(&e.path(), depth - 1))
    }
    find(staging, 3)
        .unwrap_or_else(|| panic!("no project leaf with a marker under {}", staging.display()))
}

#[test]
fn enospc_and_eacces_in_shared_staging_are_typed_and_repaired() {
    require_root("a tmpfs in a private mount namespace, without CAP_DAC_OVERRIDE");
    let dir = tempfile::tempdir().unwrap();
    let out = child(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
        ],
        "enospc-eacces",
        dir.path(),
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("fs")).unwrap().count(),
        0,
        "the child's tmpfs leaked into this namespace"
    );
}

fn child_enospc_eacces(dir: &Path) {
    let fs = dir.join("fs");
    std::fs::create_dir(&fs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &fs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m,mode=0700"),
    )
    .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", fs.display()));
    std::fs::create_dir(fs.join("outside")).unwrap();
    std::fs::write(fs.join("outside/keep"), b"outside staging").unwrap();
    let outside = host_snapshot(&fs.join("outside"));
    let staging = fs.join("staging");
    let (_sidecar, socket) = unix_sidecar(&fs);
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        (
            "DEVSHELL_VM_BETA_SESSION_STAGING",
            staging.to_str().unwrap(),
        ),
    ]))
    .unwrap();
    let mut vfs = Vfs::new();
    for sub in ["a", "m", "z"] {
        vfs.mkdir(&format!("/proj/{sub}")).unwrap();
        vfs.write_file(&format!("/proj/{sub}/file.txt"), sub.as_bytes().to_vec())
            .unwrap();
    }
    vfs.write_file("/proj/marker", b"marker".to_vec()).unwrap();
    run_ok(&mut session, &mut vfs, "echo built > a/out.txt");

    // ENOSPC: a push bigger than the file system fails before the tool runs.
    let big: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
    vfs.write_file("/proj/m/big.bin", big).unwrap();
    vfs.write_file("/proj/z/file.txt", b"z2".to_vec()).unwrap();
    let before = vfs_snapshot(&vfs, "/");
    let err = session
        .run_tool(&mut vfs, "/proj", &sh("echo ran > ran.txt"))
        .expect_err("a 3 MB push into 1 MB fails");
    let text = chain(&err);
    assert!(
        matches!(&err, BetaError::Session(SessionError::Push { .. })),
        "expected a typed push error, got {err:?}"
    );
    assert!(text.contains("No space left"), "{text}");
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "the VFS is unchanged");
    assert_eq!(host_snapshot(&fs.join("outside")), outside);
    vfs.remove("/proj/m/big.bin").unwrap();
    run_ok(
        &mut session,
        &mut vfs,
        "test ! -e ran.txt && echo ok > ok.txt",
    );
    assert_eq!(&vfs.read_file("/proj/z/file.txt").unwrap()[..], b"z2");
    assert_same(
        &host_snapshot(&leaf(&staging)),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after ENOSPC and the repairing run",
    );

    // EACCES mid-walk: the tool makes a directory of its output unreadable.
    let before = vfs_snapshot(&vfs, "/");
    let err = session
        .run_tool(
            &mut vfs,
            "/proj",
            &sh("echo changed > a/file.txt && echo new > m/new.txt && chmod 000 m"),
        )
        .expect_err("the pull cannot read m/");
    let text = chain(&err);
    assert!(
        matches!(&err, BetaError::Session(SessionError::PullAfterRun { .. })),
        "expected a typed pull error, got {err:?}"
    );
    assert!(
        text.contains("Permission denied") && text.contains("proj/m"),
        "{text}"
    );
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "all or nothing");
    std::fs::set_permissions(
        leaf(&staging).join("m"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    run_ok(&mut session, &mut vfs, "true");
    assert_eq!(&vfs.read_file("/proj/m/new.txt").unwrap()[..], b"new\n");
    assert_same(
        &host_snapshot(&leaf(&staging)),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after EACCES and the repairing run",
    );
    assert_eq!(host_snapshot(&fs.join("outside")), outside);
}

// ---------------------------------------------------------------------------------
// SIGKILL of the client mid-push and mid-pull.

const FILES_PER_ROUND: u32 = 100;

/// Markers for [`kill_in_phases`]: `push`, `tool-start`/`tool-end`, `pulled`, `saved N`.
fn child_client_loop(dir: &Path, socket: &str) {
    const ROOT: &str = "/proj";
    let staging = dir.join("staging");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", socket),
        (
            "DEVSHELL_VM_BETA_SESSION_STAGING",
            staging.to_str().unwrap(),
        ),
    ]))
    .unwrap();
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
        ROOT,
        &[("marker", b"marker")],
        FILES_PER_ROUND,
        |vfs, marker| {
            session
                .run_tool_with(vfs, ROOT, &request, &mut |_, bytes| marker(bytes), None)
                .map(|outcome| outcome.exec)
                .map_err(|err| chain(&err))
        },
    )
}

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
fn sigkill_of_the_client_with_shared_staging_leaves_the_last_good_vfs() {
    let dirs = common::Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let dir = dirs.root.join("client");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dirs.root.join("not-staging.txt"), b"keep").unwrap();
    let image = dir.join("vfs.img");
    let mut last_round = 0;
    let landed = kill_in_phases(
        16,
        || {
            let mut command = child(&[], "client-loop", &dir);
            command.env(SOCKET_ENV, &socket);
            command
        },
        |iteration| {
            let vfs = devshell_vm_vfs::image::load(&image)
                .unwrap_or_else(|e| panic!("iteration {iteration}: torn image: {e}"));
            let round = assert_image_is_one_round(&vfs, &format!("iteration {iteration}"));
            assert!(
                round >= last_round,
                "iteration {iteration}: the VFS went back"
            );
            last_round = round;
            assert_eq!(
                std::fs::read(dirs.root.join("not-staging.txt")).unwrap(),
                b"keep"
            );
        },
    );
    println!("client kills landed: {landed:?}; last saved round {last_round}");
    assert!(
        landed.get(&Landed::Push).copied().unwrap_or(0) >= 2
            && landed.get(&Landed::Pull).copied().unwrap_or(0) >= 2,
        "too few kills inside a push or a pull: {landed:?}"
    );
    // A new client: its first run repairs whatever the kills left in staging.
    let mut vfs = devshell_vm_vfs::image::load(&image).unwrap();
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        (
            "DEVSHELL_VM_BETA_SESSION_STAGING",
            dir.join("staging").to_str().unwrap(),
        ),
    ]))
    .unwrap();
    run_ok(&mut session, &mut vfs, "true");
    assert_same(
        &host_snapshot(&leaf(&dir.join("staging"))),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after the client kills",
    );
    assert_image_is_one_round(&vfs, "after the client kills");
}
