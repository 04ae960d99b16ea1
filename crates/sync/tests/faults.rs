//! Fault injection (issue 15): the file system fails under the sync engine, and the
//! process running it is killed. After each fault the VFS is either unchanged or what
//! the last successful sync says, the next push repairs staging, and nothing outside
//! staging changes.
//!
//! Some cases need another process: a child that runs with a limit (`prlimit`), without
//! the root's permission override (`setpriv`), or that is killed with SIGKILL. The
//! child is this test binary again, running the ignored test [`fault_child`] with
//! [`CHILD_ENV`] naming what to do. ENOSPC uses a small tmpfs that the test mounts:
//! these tests need root (CI runs as root) and fail, saying so, without it.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use devshell_vm_sync::{
    SyncState, VmSyncError, pull_workspace_to_vfs, push_full, push_incremental,
};
use devshell_vm_test_support::kill_loop::{is_a_version_or_prefix, versioned};
use devshell_vm_vfs::Vfs;
use support::{assert_same, host_snapshot, vfs_snapshot};

/// Names the child's job.
const CHILD_ENV: &str = "DEVSHELL_VM_SYNC_FAULT_CHILD";
/// The directory the child works in.
const DIR_ENV: &str = "DEVSHELL_VM_SYNC_FAULT_DIR";

/// The error and every cause, as one line (each level prints its own words once).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (CI runs as root): run the sync tests as root"
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
    assert!(
        out.status.success(),
        "child job {job} failed ({:?}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child job {job} did not run:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Not a test on its own: the body of the child processes the fault tests start.
#[test]
#[ignore = "run by the fault tests as a child process (prlimit, setpriv, SIGKILL)"]
#[allow(
    clippy::disallowed_methods,
    reason = "the child's job comes from its parent test, not from user configuration"
)]
fn fault_child() {
    let job = std::env::var(CHILD_ENV).expect("started by a fault test with its job");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the job's directory"));
    match job.as_str() {
        "budget" => child_budget(&dir),
        "eacces-pull" => child_eacces_pull(&dir),
        "eacces-push" => child_eacces_push(&dir),
        "sync-loop" => child_sync_loop(&dir),
        other => panic!("unknown child job {other}"),
    }
}

// ---------------------------------------------------------------------------------
// Finding 3: the workspace size budget.

/// Two sparse 3 GiB files (the probe's case) under a 2 GiB address-space limit: with a
/// 1 GiB budget the pull fails before reading, instead of the process aborting when
/// the allocation fails.
#[test]
fn workspace_budget_fails_a_pull_before_it_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("staging/proj");
    std::fs::create_dir_all(&leaf).unwrap();
    for name in ["big-1", "big-2"] {
        let file = std::fs::File::create(leaf.join(name)).unwrap();
        file.set_len(3 << 30).unwrap();
    }
    std::fs::write(leaf.join("small.txt"), b"small").unwrap();
    run_child(&["prlimit", "--as=2147483648", "--"], "budget", dir.path());
}

fn child_budget(dir: &Path) {
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").unwrap();
    vfs.write_file("/proj/kept.txt", b"kept".to_vec()).unwrap();
    let before = vfs_snapshot(&vfs, "/");
    let mut state = SyncState::new(dir.join("staging"));
    state.set_max_workspace_bytes(1 << 30);
    let err = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap_err();
    assert!(
        matches!(err, VmSyncError::WorkspaceTooLarge { limit, .. } if limit == 1 << 30),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("1073741824") && shown.contains("DEVSHELL_VM_WORKSPACE_MAX_BYTES"),
        "{shown}"
    );
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "the VFS is unchanged");
}

#[test]
fn workspace_budget_counts_unchanged_files_and_skips_excluded_ones() {
    let staging = tempfile::tempdir().unwrap();
    let leaf = staging.path().join("proj");
    std::fs::create_dir_all(leaf.join("target")).unwrap();
    std::fs::write(leaf.join("a"), vec![b'a'; 60_000]).unwrap();
    std::fs::write(leaf.join("target/huge"), vec![b't'; 500_000]).unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_excludes(&["target/"]).unwrap();
    state.set_max_workspace_bytes(100_000);
    assert_eq!(state.max_workspace_bytes(), 100_000);
    pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).expect("60 kB of 100 kB");
    // Another 60 kB: the unchanged 60 kB still count.
    std::fs::write(leaf.join("b"), vec![b'b'; 60_000]).unwrap();
    let before = vfs_snapshot(&vfs, "/");
    let err = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap_err();
    assert!(
        matches!(err, VmSyncError::WorkspaceTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "the VFS is unchanged");
    // A bigger budget lets the same pull through.
    state.set_max_workspace_bytes(200_000);
    pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();
    assert_eq!(vfs.read_file("/proj/b").unwrap().len(), 60_000);
    assert!(!vfs.exists("/proj/target/huge"));
}

// ---------------------------------------------------------------------------------
// ENOSPC on a small tmpfs; finding 4.

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> Self {
        require_root("mounting a small tmpfs for ENOSPC");
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={bytes}").as_str()),
        )
        .unwrap_or_else(|e| panic!("mount tmpfs on {}: {e}", dir.path().display()));
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Finding 4: after a push that failed with ENOSPC, a pull on the same state must not
/// import the truncated copy the push left; the next push (with space) repairs staging.
#[test]
fn pull_after_a_push_that_hit_enospc_imports_nothing_half_written() {
    let fs = SmallFs::mount(1 << 20);
    let staging = fs.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj/src").unwrap();
    vfs.write_file("/proj/src/lib.rs", b"pub fn v1() {}".to_vec())
        .unwrap();
    vfs.write_file("/proj/notes.txt", b"notes v1".to_vec())
        .unwrap();
    let mut state = SyncState::new(&staging);
    push_incremental(&vfs, "/proj", &mut state).unwrap();
    pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();

    // An edit bigger than the file system: the push fails half-way.
    let big: Vec<u8> = (0..3_000_000_u32).map(|i| (i % 251) as u8).collect();
    vfs.write_file("/proj/src/lib.rs", big.clone()).unwrap();
    vfs.write_file("/proj/notes.txt", b"notes v2".to_vec())
        .unwrap();
    let err = push_incremental(&vfs, "/proj", &mut state).unwrap_err();
    assert!(chain(&err).contains("No space left"), "{}", chain(&err));
    let before = vfs_snapshot(&vfs, "/");

    let pulled = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs);
    assert!(
        vfs_snapshot(&vfs, "/") == before,
        "a pull after the failed push changed the VFS (result {pulled:?})"
    );
    assert!(
        matches!(pulled, Err(VmSyncError::IncompletePush { .. })),
        "{pulled:?}"
    );
    assert_eq!(&vfs.read_file("/proj/src/lib.rs").unwrap()[..], &big[..]);

    // With the edit made small again the next push repairs staging, and pulls work.
    vfs.write_file("/proj/src/lib.rs", b"pub fn v3() {}".to_vec())
        .unwrap();
    push_incremental(&vfs, "/proj", &mut state).unwrap();
    assert_same(
        &host_snapshot(&staging.join("proj")),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after the repairing push",
    );
    let report = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();
    assert_eq!(
        report.files_written, 0,
        "nothing to import after the repair"
    );
}

/// ENOSPC during a pull's read cannot happen (reads allocate memory, not disk), but a
/// full file system during a full push of many files must leave everything outside
/// the leaf alone and be repaired by the next push.
#[test]
fn enospc_mid_full_push_touches_nothing_outside_the_leaf_and_is_repaired() {
    let fs = SmallFs::mount(256 << 10);
    let staging = fs.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let outside = fs.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), b"outside the leaf").unwrap();
    std::fs::write(staging.join("sibling.txt"), b"next to the leaf").unwrap();
    let outside_before = host_snapshot(&outside);

    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").unwrap();
    for i in 0..100 {
        vfs.write_file(&format!("/proj/f{i:03}"), vec![b'x'; 8192])
            .unwrap();
    }
    let mut state = SyncState::new(&staging);
    let err = push_full(&vfs, "/proj", &mut state).unwrap_err();
    assert!(chain(&err).contains("No space left"), "{}", chain(&err));
    assert_eq!(host_snapshot(&outside), outside_before);
    assert_eq!(
        std::fs::read(staging.join("sibling.txt")).unwrap(),
        b"next to the leaf"
    );
    let before = vfs_snapshot(&vfs, "/");
    assert!(matches!(
        pull_workspace_to_vfs(&mut state, "/proj", &mut vfs),
        Err(VmSyncError::IncompletePush { .. })
    ));
    assert_eq!(vfs_snapshot(&vfs, "/"), before);
    // Fewer files fit: the next push repairs the leaf exactly.
    for i in 20..100 {
        vfs.remove(&format!("/proj/f{i:03}")).unwrap();
    }
    push_incremental(&vfs, "/proj", &mut state).unwrap();
    assert_same(
        &host_snapshot(&staging.join("proj")),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after the repairing push",
    );
    assert_eq!(host_snapshot(&outside), outside_before);
}

// ---------------------------------------------------------------------------------
// EACCES mid-walk (a child without CAP_DAC_OVERRIDE, so modes apply to root too).

const NO_DAC: &[&str] = &[
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
];

#[test]
fn eacces_mid_pull_fails_naming_the_directory_and_leaves_the_vfs() {
    require_root("dropping CAP_DAC_OVERRIDE with setpriv");
    let dir = tempfile::tempdir().unwrap();
    run_child(NO_DAC, "eacces-pull", dir.path());
}

fn child_eacces_pull(dir: &Path) {
    let staging = dir.join("staging");
    let leaf = staging.join("proj");
    for sub in ["a", "m/deep", "z"] {
        std::fs::create_dir_all(leaf.join(sub)).unwrap();
        std::fs::write(leaf.join(sub).join("file.txt"), sub.as_bytes()).unwrap();
    }
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").unwrap();
    vfs.write_file("/proj/mine.txt", b"mine".to_vec()).unwrap();
    let mut state = SyncState::new(&staging);
    std::fs::set_permissions(leaf.join("m"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = vfs_snapshot(&vfs, "/");
    let err = pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap_err();
    assert!(
        chain(&err).contains("Permission denied") && chain(&err).contains("proj/m"),
        "{err}"
    );
    assert_eq!(vfs_snapshot(&vfs, "/"), before, "all or nothing");
    std::fs::set_permissions(leaf.join("m"), std::fs::Permissions::from_mode(0o755)).unwrap();
    pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();
    assert_eq!(
        &vfs.read_file("/proj/m/deep/file.txt").unwrap()[..],
        b"m/deep"
    );
    assert_eq!(&vfs.read_file("/proj/mine.txt").unwrap()[..], b"mine");
}

#[test]
fn eacces_mid_push_is_reported_and_the_next_push_repairs() {
    require_root("dropping CAP_DAC_OVERRIDE with setpriv");
    let dir = tempfile::tempdir().unwrap();
    run_child(NO_DAC, "eacces-push", dir.path());
}

fn child_eacces_push(dir: &Path) {
    let staging = dir.join("staging");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();
    let mut vfs = Vfs::new();
    for sub in ["a", "m", "z"] {
        vfs.mkdir(&format!("/proj/{sub}")).unwrap();
        vfs.write_file(&format!("/proj/{sub}/file.txt"), sub.as_bytes().to_vec())
            .unwrap();
    }
    let mut state = SyncState::new(&staging);
    push_full(&vfs, "/proj", &mut state).unwrap();
    vfs.write_file("/proj/m/file.txt", b"edited".to_vec())
        .unwrap();
    vfs.write_file("/proj/m/new.txt", b"new".to_vec()).unwrap();
    vfs.write_file("/proj/a/file.txt", b"a2".to_vec()).unwrap();
    let m = staging.join("proj/m");
    std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o555)).unwrap();
    let err = push_incremental(&vfs, "/proj", &mut state).unwrap_err();
    assert!(chain(&err).contains("Permission denied"), "{}", chain(&err));
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    let before = vfs_snapshot(&vfs, "/");
    assert!(matches!(
        pull_workspace_to_vfs(&mut state, "/proj", &mut vfs),
        Err(VmSyncError::IncompletePush { .. })
    ));
    assert_eq!(vfs_snapshot(&vfs, "/"), before);
    std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o755)).unwrap();
    push_incremental(&vfs, "/proj", &mut state).unwrap();
    assert_same(
        &host_snapshot(&staging.join("proj")),
        &vfs_snapshot(&vfs, "/proj"),
        "staging after the repairing push",
    );
}

// ---------------------------------------------------------------------------------
// Files vanishing or changing between the scan and the read.

#[test]
fn files_changing_and_vanishing_during_pulls_never_tear_the_vfs() {
    let staging = tempfile::tempdir().unwrap();
    let leaf = staging.path().join("proj");
    std::fs::create_dir_all(&leaf).unwrap();
    let names: Vec<String> = (0..24).map(|i| format!("f{i:02}")).collect();
    for name in &names {
        std::fs::write(leaf.join(name), versioned(0)).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let leaf = leaf.clone();
        let names = names.clone();
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut version = 1_u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = &names[version as usize % names.len()];
                let path = leaf.join(name);
                match version % 4 {
                    // In place: truncate, then write (a reader can see it part-way).
                    0 => {
                        let mut f = std::fs::File::create(&path).unwrap();
                        for chunk in versioned(version).chunks(4096) {
                            f.write_all(chunk).unwrap();
                        }
                    }
                    // Vanish.
                    1 => {
                        let _ = std::fs::remove_file(&path);
                    }
                    // Atomic replace.
                    2 => {
                        let tmp = leaf.join(format!(".tmp-{name}"));
                        std::fs::write(&tmp, versioned(version)).unwrap();
                        std::fs::rename(&tmp, &path).unwrap();
                    }
                    // Replaced by a directory, then back.
                    _ => {
                        let _ = std::fs::remove_file(&path);
                        if std::fs::create_dir(&path).is_ok() {
                            std::fs::remove_dir(&path).unwrap();
                        }
                        std::fs::write(&path, versioned(version)).unwrap();
                    }
                }
                version += 1;
            }
        })
    };
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_excludes(&[".tmp-*"]).unwrap();
    let (mut ok, mut changed) = (0, 0);
    let start = Instant::now();
    while ok + changed < 300 && start.elapsed() < Duration::from_mins(1) {
        let before = vfs_snapshot(&vfs, "/");
        match pull_workspace_to_vfs(&mut state, "/proj", &mut vfs) {
            Ok(_) => {
                ok += 1;
                for entry in vfs.list_dir("/proj").unwrap() {
                    let path = format!("/proj/{}", entry.name);
                    if let Ok(content) = vfs.read_file(&path) {
                        assert!(
                            is_a_version_or_prefix(&content),
                            "{path}: torn content ({} bytes)",
                            content.len()
                        );
                    }
                }
            }
            Err(err) => {
                assert!(
                    matches!(
                        err,
                        VmSyncError::ChangedDuringRead { .. } | VmSyncError::Io { .. }
                    ),
                    "unexpected error kind: {err:?}"
                );
                assert_eq!(
                    vfs_snapshot(&vfs, "/"),
                    before,
                    "a failed pull changed the VFS"
                );
                changed += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(ok > 0, "no pull succeeded under churn ({changed} failed)");
    // Quiet again: one pull makes the VFS exactly the host.
    pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();
    let host: BTreeMap<_, _> = host_snapshot(&leaf);
    assert_same(&host, &vfs_snapshot(&vfs, "/proj"), "after the churn");
}

// ---------------------------------------------------------------------------------
// SIGKILL at random points mid-push and mid-pull.

/// The child's loop: load the last saved VFS (or build the first one), then forever:
/// edit the VFS, push, let a "tool" edit staging, pull, save the VFS image atomically.
fn child_sync_loop(dir: &Path) {
    let image = dir.join("vfs.img");
    let staging = dir.join("staging");
    let mut vfs = if image.exists() {
        devshell_vm_vfs::image::load(&image).expect("the saved image is never torn")
    } else {
        let mut vfs = Vfs::new();
        for d in 0..8 {
            vfs.mkdir(&format!("/proj/d{d}")).unwrap();
            for f in 0..40 {
                vfs.write_file(&format!("/proj/d{d}/f{f}"), versioned(d * 100 + f))
                    .unwrap();
            }
        }
        vfs
    };
    let mut state = SyncState::new(&staging);
    let mut round = 0_u32;
    loop {
        round += 1;
        for f in 0..10 {
            let path = format!("/proj/d{}/f{}", (round + f) % 8, (round * 7 + f) % 40);
            vfs.write_file(&path, versioned(round * 1000 + f)).unwrap();
        }
        push_incremental(&vfs, "/proj", &mut state).unwrap();
        let tool_dir = staging.join(format!("proj/d{}", round % 8));
        std::fs::write(tool_dir.join(format!("out{}", round % 5)), versioned(round)).unwrap();
        pull_workspace_to_vfs(&mut state, "/proj", &mut vfs).unwrap();
        devshell_vm_vfs::image::save(&vfs, &image).unwrap();
    }
}

#[test]
fn sigkill_mid_push_or_pull_is_repaired_by_the_next_push() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"never touched").unwrap();
    let outside_before = host_snapshot(&outside);
    // A deterministic sequence of kill delays (xorshift), 5 ms to 800 ms after the
    // child started (its first round starts after it built the tree: the first
    // iteration waits for one saved image, so later ones start from real state).
    let mut seed = 0x2545_f491_u64;
    let mut delays = Vec::new();
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        delays.push(Duration::from_millis(5 + seed % 800));
    }
    let image = dir.path().join("vfs.img");
    for (iteration, delay) in delays.iter().enumerate() {
        let mut worker = child(&[], "sync-loop", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if iteration == 0 {
            let start = Instant::now();
            while !image.exists() {
                assert!(
                    start.elapsed() < Duration::from_mins(2),
                    "the sync loop never saved an image"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        std::thread::sleep(*delay);
        let _ = worker.kill(); // SIGKILL
        let out = worker.wait_with_output().unwrap();
        // The loop never ends by itself: anything but SIGKILL is a failure in the child.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "iteration {iteration}: the sync loop failed on its own:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            host_snapshot(&outside),
            outside_before,
            "iteration {iteration}: something outside staging changed"
        );
        // The VFS as of the last successful pull (or the start).
        if image.exists() {
            let vfs = devshell_vm_vfs::image::load(&image)
                .unwrap_or_else(|e| panic!("iteration {iteration}: torn image: {e}"));
            // A fresh state (the killed process's state is gone): the next push repairs
            // whatever the kill left in staging.
            let mut state = SyncState::new(dir.path().join("staging"));
            push_incremental(&vfs, "/proj", &mut state).unwrap();
            assert_same(
                &host_snapshot(&dir.path().join("staging/proj")),
                &vfs_snapshot(&vfs, "/proj"),
                &format!("iteration {iteration}: staging after the repairing push"),
            );
        }
    }
    assert!(
        dir.path().join("vfs.img").exists(),
        "no sync round completed in any iteration"
    );
}
