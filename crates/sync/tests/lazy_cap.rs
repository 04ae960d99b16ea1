//! The lazy-descriptor cap reached: pulls read eagerly and still succeed (its own test
//! binary, the cap is process-wide).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

mod support;

use std::fs;
use std::time::Duration;

use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_incremental};
use devshell_vm_vfs::Vfs;
use devshell_vm_vfs::lazy::{open_lazy_fds, set_lazy_fd_limit};
use support::{host_snapshot, vfs_snapshot};

#[test]
fn at_the_cap_files_are_read_during_the_pull() {
    set_lazy_fd_limit(3);
    let staging = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_lazy_min_size(1024);
    push_incremental(&vfs, "/p", &mut state).unwrap();
    let leaf = staging.path().join("p");
    for i in 0..10u8 {
        fs::write(leaf.join(format!("f{i}")), vec![i; 4096]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(15));
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_deferred, 3, "{report:?}");
    assert_eq!(report.files_read, 7, "{report:?}");
    assert_eq!(open_lazy_fds(), 3);
    assert_eq!(vfs_snapshot(&vfs, "/p"), host_snapshot(&leaf));
    // Reading frees the slots; the next large file can be deferred again.
    assert_eq!(open_lazy_fds(), 0);
    fs::write(leaf.join("g"), vec![9u8; 4096]).unwrap();
    std::thread::sleep(Duration::from_millis(15));
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_deferred, 1, "{report:?}");
}

#[test]
fn out_of_descriptors_reads_eagerly() {
    // EMFILE from open: RLIMIT_NOFILE is lowered in a child process (this binary
    // running `emfile_child`) so that this test process keeps its own limit.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "emfile_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("child checked EMFILE"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child of [`out_of_descriptors_reads_eagerly`] (it lowers this process's
/// descriptor limit).
#[test]
#[ignore = "run in a child process by out_of_descriptors_reads_eagerly"]
fn emfile_child() {
    let staging = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_lazy_min_size(1024);
    push_incremental(&vfs, "/p", &mut state).unwrap();
    let leaf = staging.path().join("p");
    for i in 0..40u8 {
        fs::write(leaf.join(format!("f{i:02}")), vec![i; 2048]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(15));
    // Descriptors in use now, plus a few for the pull's own directories: the lazy
    // opens run out long before the 40 files, and the cap (left high) is not the
    // reason.
    set_lazy_fd_limit(10_000);
    let in_use = fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let limit = in_use + 12;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert!(report.files_deferred > 0, "{report:?}");
    assert!(
        report.files_read > 0,
        "some files read after EMFILE: {report:?}"
    );
    assert_eq!(report.files_deferred + report.files_read, 40);
    assert_eq!(vfs_snapshot(&vfs, "/p"), host_snapshot(&leaf));
    println!("child checked EMFILE");
}
