//! Behaviour of `push_full`, `push_incremental` and pull on real directories.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

mod support;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devshell_vm_sync::{
    SyncProgress, SyncState, VmSyncError, pull_workspace_to_vfs, push_full, push_incremental,
};
use devshell_vm_vfs::{NodeKind, Vfs};
use support::{assert_same, host_mtime, host_snapshot, old_time, vfs_snapshot};

/// A small project: files with modes and old mtimes, an empty dir, a symlink.
fn sample_vfs() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/w/app/src/bin").unwrap();
    vfs.mkdir("/w/app/empty").unwrap();
    vfs.write_file_with(
        "/w/app/Cargo.toml",
        b"[package]\nname = \"app\"\n".to_vec(),
        0o644,
        old_time(1),
    )
    .unwrap();
    vfs.write_file_with(
        "/w/app/src/main.rs",
        b"fn main() {}\n".to_vec(),
        0o644,
        old_time(2),
    )
    .unwrap();
    vfs.write_file_with(
        "/w/app/src/bin/tool.rs",
        b"fn main() { std::process::exit(3) }\n".to_vec(),
        0o600,
        old_time(3),
    )
    .unwrap();
    vfs.write_file_with(
        "/w/app/run.sh",
        b"#!/bin/sh\necho hi\n".to_vec(),
        0o755,
        old_time(4),
    )
    .unwrap();
    vfs.write_file_with("/w/app/empty.txt", Vec::new(), 0o644, old_time(5))
        .unwrap();
    vfs.symlink_with("src/main.rs", "/w/app/link", old_time(6))
        .unwrap();
    vfs.symlink_with("../../outside", "/w/app/src/dangling", old_time(7))
        .unwrap();
    vfs.set_mode("/w/app/src/bin", 0o750).unwrap();
    vfs
}

fn staging() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn push_full_makes_an_exact_copy_with_modes_mtimes_and_symlinks() {
    let dir = staging();
    let vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    let report = push_full(&vfs, "/w/app", &mut state).unwrap();
    assert_eq!(report.files_written, 7, "{report}");
    let leaf = dir.path().join("app");
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&leaf),
        "vfs vs host",
    );
    assert_eq!(
        fs::metadata(leaf.join("src/bin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert!(
        fs::symlink_metadata(leaf.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(state.synced_generation("/w/app"), Some(vfs.generation()));
}

#[test]
fn push_full_deletes_host_extras_inside_the_leaf_only() {
    let dir = staging();
    let vfs = sample_vfs();
    let leaf = dir.path().join("app");
    fs::create_dir_all(leaf.join("stale/deep")).unwrap();
    fs::write(leaf.join("stale/deep/x"), "x").unwrap();
    fs::write(leaf.join("extra.rs"), "x").unwrap();
    fs::write(dir.path().join("beside.txt"), "keep").unwrap();
    fs::create_dir(leaf.join("Cargo.toml")).unwrap(); // a dir where the VFS has a file
    let mut state = SyncState::new(dir.path());
    let report = push_full(&vfs, "/w/app", &mut state).unwrap();
    assert!(report.deleted >= 5, "{report}");
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&leaf),
        "after full push",
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("beside.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn push_of_a_missing_vfs_path_fails_before_touching_the_host() {
    let dir = staging();
    let leaf = dir.path().join("gone");
    fs::create_dir(&leaf).unwrap();
    fs::write(leaf.join("precious"), "data").unwrap();
    let vfs = Vfs::new();
    let mut state = SyncState::new(dir.path());
    let err = push_full(&vfs, "/gone", &mut state).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::NotFound { vfs_path } if vfs_path == "/gone"),
        "{err}"
    );
    let err = push_incremental(&vfs, "/gone", &mut state).unwrap_err();
    assert!(matches!(err, VmSyncError::NotFound { .. }), "{err}");
    assert_eq!(fs::read_to_string(leaf.join("precious")).unwrap(), "data");
    let mut vfs = Vfs::new();
    vfs.write_file("/file", b"x".to_vec()).unwrap();
    let err = push_full(&vfs, "/file", &mut state).unwrap_err();
    assert!(matches!(err, VmSyncError::NotADirectory { .. }), "{err}");
}

#[test]
fn root_maps_to_the_staging_dir_and_collisions_are_errors() {
    let dir = staging();
    let mut vfs = Vfs::new();
    vfs.mkdir("/a/app").unwrap();
    vfs.mkdir("/b/app").unwrap();
    vfs.write_file("/a/app/one", b"1".to_vec()).unwrap();
    vfs.write_file("/b/app/two", b"2".to_vec()).unwrap();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/a/app", &mut state).unwrap();
    let err = push_full(&vfs, "/b/app", &mut state).unwrap_err();
    assert!(matches!(err, VmSyncError::LeafCollision { .. }), "{err}");
    assert!(
        dir.path().join("app/one").exists(),
        "the first leaf is intact"
    );
    assert!(!dir.path().join("app/two").exists());

    let root_dir = staging();
    let mut root_state = SyncState::new(root_dir.path());
    push_full(&vfs, "/", &mut root_state).unwrap();
    assert_eq!(fs::read(root_dir.path().join("a/app/one")).unwrap(), b"1");
    assert_eq!(root_state.leaf_dir("/").unwrap(), root_dir.path());
}

#[test]
fn incremental_push_applies_only_the_journal() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");
    let main_ino = fs::metadata(leaf.join("src/main.rs")).unwrap().ino();

    let noop = push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert!(noop.is_noop(), "{noop}");

    vfs.write_file(
        "/w/app/Cargo.toml",
        b"[package]\nname = \"app2\"\n".to_vec(),
    )
    .unwrap();
    let one = push_incremental(&vfs, "/w/app", &mut state).unwrap();
    // An overwrite is not a deletion.
    assert_eq!((one.files_written, one.deleted), (1, 0), "{one}");
    assert_eq!(
        fs::metadata(leaf.join("src/main.rs")).unwrap().ino(),
        main_ino,
        "untouched file kept"
    );
    assert_eq!(
        host_mtime(&fs::metadata(leaf.join("src/main.rs")).unwrap()),
        old_time(2)
    );
    assert_eq!(
        host_mtime(&fs::metadata(leaf.join("Cargo.toml")).unwrap()),
        vfs.stat("/w/app/Cargo.toml").unwrap().mtime,
        "an edited file carries its edit time"
    );

    // Every kind of change at once.
    vfs.rename("/w/app/src/bin", "/w/app/src/tools").unwrap();
    vfs.remove("/w/app/empty.txt").unwrap();
    vfs.set_mode("/w/app/run.sh", 0o700).unwrap();
    vfs.set_mtime("/w/app/src/main.rs", old_time(99)).unwrap();
    vfs.mkdir("/w/app/new/empty/dir").unwrap();
    vfs.remove("/w/app/link").unwrap();
    vfs.mkdir("/w/app/link").unwrap(); // symlink -> dir
    vfs.remove("/w/app/empty").unwrap();
    vfs.write_file("/w/app/empty", b"now a file".to_vec())
        .unwrap(); // dir -> file
    vfs.symlink("/etc/passwd", "/w/app/abs-link").unwrap();
    vfs.set_mtime("/w/app/src", old_time(50)).unwrap();
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&leaf),
        "after incremental push",
    );
    assert_eq!(
        host_mtime(&fs::metadata(leaf.join("src")).unwrap()),
        old_time(50),
        "directory mtimes are restored after their entries change"
    );
    assert!(
        fs::symlink_metadata(leaf.join("abs-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn incremental_push_falls_back_to_full_when_history_is_gone_or_leaf_vanished() {
    let dir = staging();
    let mut vfs = sample_vfs();
    vfs.set_history_limit(1);
    let mut state = SyncState::new(dir.path());
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    for i in 0..4 {
        vfs.write_file(&format!("/w/app/f{i}"), b"x".to_vec())
            .unwrap();
        vfs.remove(&format!("/w/app/f{i}")).unwrap();
    }
    vfs.write_file("/w/app/kept", b"k".to_vec()).unwrap();
    let report = push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert!(report.files_written >= 7, "full push expected: {report}");
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&dir.path().join("app")),
        "after fallback",
    );

    fs::remove_dir_all(dir.path().join("app")).unwrap();
    vfs.write_file("/w/app/kept", b"k2".to_vec()).unwrap();
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&dir.path().join("app")),
        "after leaf loss",
    );
}

#[test]
fn pull_mirrors_host_changes_and_reads_only_what_moved() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");

    let noop = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert!(noop.is_noop(), "{noop}");
    assert_eq!(noop.bytes_read, 0);

    // A tool changes things.
    fs::write(leaf.join("src/main.rs"), "fn main() { println!(\"x\"); }\n").unwrap();
    fs::create_dir_all(leaf.join("target/debug")).unwrap();
    fs::write(leaf.join("target/debug/app"), b"\x7fELF...").unwrap();
    fs::set_permissions(
        leaf.join("target/debug/app"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::remove_file(leaf.join("empty.txt")).unwrap();
    fs::remove_dir_all(leaf.join("src/bin")).unwrap();
    fs::write(leaf.join("src/bin"), "file now").unwrap(); // dir -> file
    fs::remove_file(leaf.join("link")).unwrap();
    fs::create_dir(leaf.join("link")).unwrap(); // symlink -> dir
    fs::remove_file(leaf.join("run.sh")).unwrap();
    symlink("Cargo.toml", leaf.join("run.sh")).unwrap(); // file -> symlink
    fs::set_permissions(leaf.join("Cargo.toml"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("/etc/passwd", leaf.join("escape")).unwrap();

    let report = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_same(
        &host_snapshot(&leaf),
        &vfs_snapshot(&vfs, "/w/app"),
        "host vs vfs after pull",
    );
    assert_eq!(
        vfs.read_link("/w/app/escape").unwrap(),
        "/etc/passwd",
        "a link is recorded as a link"
    );
    assert!(
        report.files_read <= 4,
        "only new or changed files are read: {report}"
    );
    assert_eq!(vfs.stat("/w/app/target/debug/app").unwrap().mode, 0o755);

    // Nothing pulled is pushed back, and the next pull is a no-op.
    let push = push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert!(push.is_noop(), "pulled changes pushed back: {push}");
    // Files written in the same clock tick as the scan are "racy" and read once more;
    // after the clock moved on, a pull reads nothing.
    std::thread::sleep(Duration::from_millis(30));
    let racy = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_eq!(racy.files_written, 0, "{racy}");
    let again = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_eq!(again.bytes_read, 0, "{again}");
    assert!(again.is_noop(), "{again}");
}

#[test]
fn pull_skips_non_utf8_names_and_special_files_and_reports_them() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");
    let bad = leaf.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    fs::write(&bad, "x").unwrap();
    nix::unistd::mkfifo(
        &leaf.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    fs::write(leaf.join("good.txt"), "fine").unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.path == bad && s.reason.contains("UTF-8"))
    );
    assert!(report.skipped.iter().any(|s| s.path == leaf.join("fifo")));
    assert_eq!(&vfs.read_file("/w/app/good.txt").unwrap()[..], b"fine");
    assert!(!vfs.exists("/w/app/fifo"));
    // push_full removes what cannot exist in the VFS.
    push_full(&vfs, "/w/app", &mut state).unwrap();
    assert!(!bad.exists() && !leaf.join("fifo").exists());
}

#[test]
fn excluded_paths_are_neither_pulled_nor_deleted() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    state.set_excludes(&["target/", "*.log"]).unwrap();
    push_full(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");
    fs::create_dir_all(leaf.join("target/debug")).unwrap();
    fs::write(leaf.join("target/debug/big"), vec![7u8; 4096]).unwrap();
    fs::write(leaf.join("src/build.log"), "log").unwrap();
    fs::write(leaf.join("src/lib.rs"), "pub fn f() {}").unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_eq!(report.files_read, 1, "{report}");
    assert!(!vfs.exists("/w/app/target"));
    assert!(!vfs.exists("/w/app/src/build.log"));
    vfs.write_file("/w/app/src/lib.rs", b"pub fn g() {}".to_vec())
        .unwrap();
    push_full(&vfs, "/w/app", &mut state).unwrap();
    assert!(
        leaf.join("target/debug/big").exists(),
        "push_full keeps excluded host paths"
    );
    assert!(leaf.join("src/build.log").exists());
    assert!(matches!(
        state.set_excludes(&["../x"]),
        Err(VmSyncError::InvalidExclude { .. })
    ));
}

#[test]
fn a_failed_pull_leaves_the_vfs_untouched_and_names_the_path() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");
    fs::write(leaf.join("a-small.txt"), "small").unwrap();
    fs::remove_file(leaf.join("empty.txt")).unwrap();
    fs::write(leaf.join("src/main.rs"), "changed").unwrap();
    fs::write(leaf.join("z-big.bin"), vec![1u8; 4096]).unwrap();
    state.set_max_file_size(1024);
    let before = vfs.clone();
    let generation = vfs.generation();
    let err = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::FileTooLarge { path, .. } if *path == leaf.join("z-big.bin")),
        "{err}"
    );
    assert!(
        vfs.same_tree(&before),
        "the VFS changed although the pull failed"
    );
    assert_eq!(vfs.generation(), generation);
    // Once the cause is gone the same pull succeeds completely.
    fs::remove_file(leaf.join("z-big.bin")).unwrap();
    pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_same(
        &host_snapshot(&leaf),
        &vfs_snapshot(&vfs, "/w/app"),
        "after the retry",
    );
}

#[test]
fn pull_without_a_manifest_adds_but_never_deletes() {
    let dir = staging();
    let leaf = dir.path().join("app");
    fs::create_dir_all(leaf.join("src")).unwrap();
    fs::write(leaf.join("src/new.rs"), "new").unwrap();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    let report = pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert_eq!(report.deleted, 0, "{report}");
    assert_eq!(&vfs.read_file("/w/app/src/new.rs").unwrap()[..], b"new");
    assert!(vfs.exists("/w/app/Cargo.toml"), "VFS-only files survive");
    // The VFS has more than the host, so the next push is a full one.
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&leaf),
        "after the push",
    );
}

#[test]
fn unpushed_vfs_edits_survive_a_pull_and_are_pushed_later() {
    let dir = staging();
    let mut vfs = sample_vfs();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/w/app", &mut state).unwrap();
    let leaf = dir.path().join("app");
    vfs.write_file("/w/app/vfs-only.rs", b"edit".to_vec())
        .unwrap();
    fs::write(leaf.join("host-only.rs"), "tool").unwrap();
    pull_workspace_to_vfs(&mut state, "/w/app", &mut vfs).unwrap();
    assert!(vfs.exists("/w/app/vfs-only.rs") && vfs.exists("/w/app/host-only.rs"));
    push_incremental(&vfs, "/w/app", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/w/app"),
        &host_snapshot(&leaf),
        "after the push",
    );
}

#[test]
fn observer_sees_progress_of_a_large_push() {
    let dir = staging();
    let mut vfs = Vfs::new();
    vfs.mkdir("/big").unwrap();
    for i in 0..3000 {
        vfs.write_file(&format!("/big/f{i:04}"), vec![0u8; 10])
            .unwrap();
    }
    let seen: Arc<Mutex<Vec<SyncProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let mut state = SyncState::new(dir.path());
    state.set_observer(Box::new(move |p| sink.lock().unwrap().push(*p)));
    push_full(&vfs, "/big", &mut state).unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "{seen:?}");
    assert_eq!(seen.last().unwrap().files_done, 3000);
    assert!(seen.windows(2).all(|w| w[0].files_done <= w[1].files_done));
}

#[test]
fn vfs_root_kind_is_respected() {
    let dir = staging();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/p", &mut state).unwrap();
    fs::write(dir.path().join("p/x"), "x").unwrap();
    pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(vfs.stat("/p/x").unwrap().kind, NodeKind::File);
}

#[test]
fn large_leaves_are_scanned_in_parallel_with_the_same_result() {
    // More than 2,000 recorded entries: the pull scans with several threads.
    let dir = staging();
    let mut vfs = Vfs::new();
    for d in 0..60 {
        vfs.mkdir(&format!("/big/d{d:02}/sub")).unwrap();
        for f in 0..40 {
            vfs.write_file_with(
                &format!("/big/d{d:02}/f{f:02}"),
                vec![u8::try_from(d).unwrap(); 64],
                0o644,
                old_time(f),
            )
            .unwrap();
        }
    }
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/big", &mut state).unwrap();
    assert!(state.manifest_len("/big") > 2000);
    let leaf = dir.path().join("big");
    for d in (0..60).step_by(7) {
        fs::write(leaf.join(format!("d{d:02}/f00")), format!("changed {d}")).unwrap();
        fs::remove_file(leaf.join(format!("d{d:02}/f01"))).unwrap();
        fs::remove_dir(leaf.join(format!("d{d:02}/sub"))).unwrap();
        fs::write(leaf.join(format!("d{d:02}/sub")), "now a file").unwrap();
        fs::create_dir_all(leaf.join(format!("d{d:02}/new/deeper"))).unwrap();
        fs::write(leaf.join(format!("d{d:02}/new/deeper/x")), "x").unwrap();
    }
    fs::remove_dir_all(leaf.join("d59")).unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/big", &mut vfs).unwrap();
    assert_same(
        &host_snapshot(&leaf),
        &vfs_snapshot(&vfs, "/big"),
        "after a parallel pull",
    );
    assert_eq!(report.files_read, 3 * 9, "{report}");
    let push = push_incremental(&vfs, "/big", &mut state).unwrap();
    assert!(push.is_noop(), "{push}");
}

/// A tree large enough for the parallel full push: nested directories with their own
/// modes, files of several modes and sizes, symlinks and an empty directory.
fn wide_vfs() -> Vfs {
    let mut vfs = Vfs::new();
    for d in 0..30 {
        vfs.mkdir(&format!("/wide/d{d:02}/inner/deep")).unwrap();
        vfs.mkdir(&format!("/wide/d{d:02}/empty")).unwrap();
        for f in 0..25 {
            let mode = if f % 5 == 0 { 0o755 } else { 0o644 };
            vfs.write_file_with(
                &format!("/wide/d{d:02}/f{f:02}"),
                vec![u8::try_from(f).unwrap(); f * 37],
                mode,
                old_time(u64::try_from(d * 100 + f).unwrap()),
            )
            .unwrap();
        }
        vfs.write_file_with(
            &format!("/wide/d{d:02}/inner/deep/leaf.rs"),
            b"fn x() {}\n".to_vec(),
            0o600,
            old_time(9),
        )
        .unwrap();
        vfs.symlink_with("../f00", &format!("/wide/d{d:02}/inner/up"), old_time(8))
            .unwrap();
        vfs.set_mode(&format!("/wide/d{d:02}/inner"), 0o750)
            .unwrap();
        vfs.set_mtime(&format!("/wide/d{d:02}"), old_time(7))
            .unwrap();
    }
    vfs
}

#[test]
fn parallel_full_push_over_a_changed_leaf_equals_the_vfs_and_records_everything() {
    let dir = staging();
    let vfs = wide_vfs();
    let leaf = dir.path().join("wide");
    // The host copy holds extras, type swaps and stale content.
    fs::create_dir_all(leaf.join("d03/f04")).unwrap();
    fs::write(leaf.join("d03/f04/inside"), "dir where a file belongs").unwrap();
    fs::create_dir_all(leaf.join("d05")).unwrap();
    fs::write(leaf.join("d05/inner"), "file where a dir belongs").unwrap();
    fs::create_dir_all(leaf.join("gone/sub")).unwrap();
    fs::write(leaf.join("gone/sub/x"), "extra").unwrap();
    fs::create_dir_all(leaf.join("d07")).unwrap();
    fs::write(leaf.join("d07/f01"), "stale").unwrap();
    symlink("/etc", leaf.join("d07/extra-link")).unwrap();
    for threads in [1, 4] {
        let mut state = SyncState::new(dir.path());
        state.set_threads(threads);
        let report = push_full(&vfs, "/wide", &mut state).unwrap();
        assert_eq!(
            report.files_written,
            30 * (25 + 2),
            "threads {threads}: {report}"
        );
        if threads == 1 {
            // extras: d03/f04 (+inside), d05/inner, gone (+sub, +x), d07/extra-link;
            // the stale d07/f01 is overwritten, which is not a deletion
            assert_eq!(report.deleted, 7, "{report}");
        }
        assert_same(
            &vfs_snapshot(&vfs, "/wide"),
            &host_snapshot(&leaf),
            &format!("parallel push with {threads} threads"),
        );
        // Every entry is recorded: the next pull reads nothing and changes nothing.
        assert_eq!(state.manifest_len("/wide"), 1 + 30 * (4 + 25 + 2));
        let mut copy = vfs.clone();
        let pull = pull_workspace_to_vfs(&mut state, "/wide", &mut copy).unwrap();
        assert_eq!((pull.files_read, pull.deleted), (0, 0), "{pull}");
        assert_same(
            &vfs_snapshot(&copy, "/wide"),
            &vfs_snapshot(&vfs, "/wide"),
            "vfs after a no-op pull",
        );
    }
}

#[test]
fn parallel_full_push_stops_at_a_failure_and_names_the_path() {
    let dir = staging();
    let mut vfs = wide_vfs();
    // Longer than any host file name may be (255 bytes): the write fails in a writer
    // thread, whoever runs the test (root included).
    let long = format!("/wide/d11/inner/{}", "n".repeat(300));
    vfs.write_file_with(&long, b"x".to_vec(), 0o644, old_time(1))
        .unwrap();
    let mut state = SyncState::new(dir.path());
    state.set_threads(4);
    let err = push_full(&vfs, "/wide", &mut state).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::Io { path, .. } if path.ends_with(&long[1..])),
        "{err:?}"
    );
    assert_eq!(state.synced_generation("/wide"), None);
    // Nothing outside the leaf, and the next push after the fix is complete.
    let entries: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("wide")]);
    vfs.remove(&long).unwrap();
    push_full(&vfs, "/wide", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/wide"),
        &host_snapshot(&dir.path().join("wide")),
        "after the failed push was repaired",
    );
}

#[test]
fn observer_sees_progress_of_a_large_pull_in_order() {
    let dir = staging();
    let mut vfs = Vfs::new();
    vfs.mkdir("/pulled").unwrap();
    let mut state = SyncState::new(dir.path());
    push_full(&vfs, "/pulled", &mut state).unwrap();
    // Many new host files in many directories: the scan runs on several threads.
    let leaf = dir.path().join("pulled");
    for d in 0..40 {
        fs::create_dir(leaf.join(format!("d{d:02}"))).unwrap();
        for f in 0..30 {
            fs::write(
                leaf.join(format!("d{d:02}/f{f:02}")),
                [u8::try_from(f).unwrap(); 3],
            )
            .unwrap();
        }
    }
    let seen: Arc<Mutex<Vec<SyncProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    state.set_threads(4);
    state.set_observer(Box::new(move |p| sink.lock().unwrap().push(*p)));
    let report = pull_workspace_to_vfs(&mut state, "/pulled", &mut vfs).unwrap();
    assert_eq!(report.files_read, 1200, "{report}");
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.files_done, last.bytes_done), (1200, 3600));
    assert!(
        seen.windows(2)
            .all(|w| w[0].files_done <= w[1].files_done && w[0].bytes_done <= w[1].bytes_done),
        "{seen:?}"
    );
}
