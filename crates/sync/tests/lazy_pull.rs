//! Pulls that record large files without reading them (lazy content) give the same
//! trees as pulls that read everything, on real files.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_incremental};
use devshell_vm_vfs::Vfs;
use proptest::prelude::*;
use support::{host_snapshot, vfs_snapshot};

/// Runs `script` with `sh` in `dir` (a real tool changing real files).
fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run sh");
    assert!(status.success(), "`{script}` failed: {status}");
}

/// Lets the coarse clock move past every mtime just written, so the pull may defer
/// them (files modified in the pull's own clock tick are read, by design).
fn settle() {
    std::thread::sleep(Duration::from_millis(15));
}

/// A project pushed to a fresh staging directory, with a state whose pulls defer
/// every file of at least `lazy_min` bytes.
fn project(lazy_min: u64) -> (tempfile::TempDir, SyncState, Vfs) {
    let staging = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p/a/b").unwrap();
    vfs.mkdir("/p/d").unwrap();
    // Old mtimes: pushed files are then not "racy" (re-read by the next pull).
    let old = support::old_time(3600);
    vfs.write_file_with("/p/f", vec![1u8; 5000], 0o644, old)
        .unwrap();
    vfs.write_file_with("/p/a/g", b"ag".to_vec(), 0o644, old)
        .unwrap();
    vfs.write_file_with("/p/a/b/h", vec![2u8; 70_000], 0o644, old)
        .unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_lazy_min_size(lazy_min);
    push_incremental(&vfs, "/p", &mut state).unwrap();
    (staging, state, vfs)
}

/// What a pull that reads everything makes of the leaf.
fn eager_pull(staging: &Path) -> Vfs {
    let mut state = SyncState::new(staging);
    state.set_lazy_min_size(u64::MAX);
    let mut vfs = Vfs::new();
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_deferred, 0);
    vfs
}

const DIRS: [&str; 4] = [".", "a", "a/b", "d"];
const NAMES: [&str; 4] = ["f", "g", "h", "big"];

fn action() -> impl Strategy<Value = String> {
    let path =
        (0..DIRS.len(), 0..NAMES.len()).prop_map(|(d, n)| format!("{}/{}", DIRS[d], NAMES[n]));
    prop_oneof![
        (path.clone(), 0..200_000_u32).prop_map(|(p, size)| format!(
            "mkdir -p \"$(dirname {p})\" && head -c {size} /dev/urandom > {p}"
        )),
        // In place: same inode, `O_TRUNC` or a patch in the middle.
        (path.clone(), "[a-z]{0,12}").prop_map(|(p, text)| format!(
            "[ -f {p} ] && printf '{text}' 1<> {p}; [ -f {p} ] && printf '{text}' > {p}"
        )),
        path.clone()
            .prop_map(|p| format!("printf Z | dd of={p} bs=1 seek=2 conv=notrunc 2>/dev/null")),
        (path.clone(), 0..100_000_u32).prop_map(|(p, size)| format!("truncate -s {size} {p}")),
        (
            path.clone(),
            prop::sample::select(vec!["600", "644", "755"])
        )
            .prop_map(|(p, mode)| format!("chmod {mode} {p}")),
        (path.clone(), 1_000_000_u32..2_000_000).prop_map(|(p, t)| format!("touch -h -d @{t} {p}")),
        (path.clone(), path.clone())
            .prop_map(|(a, b)| format!("mkdir -p \"$(dirname {b})\" && mv -f {a} {b}")),
        (1..DIRS.len()).prop_map(|d| format!("rm -rf {}", DIRS[d])),
        (path.clone(), "[a-z]{1,6}")
            .prop_map(|(p, t)| format!("mkdir -p \"$(dirname {p})\" && ln -sfn '{t}' {p}")),
        path.prop_map(|p| format!("rm -f {p}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Rounds of tool actions; after each, the lazy pull (every settled file deferred)
    /// equals a pull that reads everything and the tree on disk; between rounds an
    /// edit in the VFS is pushed back (so pulled lazy nodes meet a push), and the host
    /// then equals the VFS.
    #[test]
    fn lazy_pulls_equal_eager_pulls(
        rounds in prop::collection::vec(prop::collection::vec(action(), 1..6), 1..4),
        edit_between in any::<bool>(),
    ) {
        let (staging, mut state, mut vfs) = project(0);
        let leaf = staging.path().join("p");
        for (round, script) in rounds.iter().enumerate() {
            // One new file every round, so every round defers something.
            sh(&leaf, &format!("{} ; head -c 1000 /dev/urandom > fresh{round}; true", script.join(" ; ")));
            settle();
            let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
            // Threshold 0 and every file settled: nothing is read during the pull.
            prop_assert!(report.files_deferred > 0, "{:?}", report);
            prop_assert_eq!(report.files_read, 0, "{:?}", report);
            let lazy_side = vfs_snapshot(&vfs, "/p");
            prop_assert_eq!(&lazy_side, &vfs_snapshot(&eager_pull(staging.path()), "/p"), "round {}", round);
            prop_assert_eq!(&lazy_side, &host_snapshot(&leaf), "round {}", round);
            if edit_between {
                vfs.write_file(&format!("/p/edit{round}"), b"from the VFS".to_vec()).unwrap();
            }
            push_incremental(&vfs, "/p", &mut state).unwrap();
            prop_assert_eq!(&vfs_snapshot(&vfs, "/p"), &host_snapshot(&leaf), "after push {}", round);
        }
    }
}

#[test]
fn large_changed_files_are_deferred_and_read_on_demand() {
    let (staging, mut state, mut vfs) = project(64 * 1024);
    let leaf = staging.path().join("p");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    fs::write(leaf.join("big.rmeta"), &big).unwrap();
    fs::write(leaf.join("small"), b"small").unwrap();
    settle();
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_deferred, 1, "{report:?}");
    assert_eq!(report.bytes_deferred, big.len() as u64);
    assert_eq!(
        report.files_read, 1,
        "only the small file is read: {report:?}"
    );
    assert_eq!(report.bytes_read, 5);
    assert!(vfs.node("/p/big.rmeta").unwrap().is_lazy_unread());
    assert_eq!(vfs.stat("/p/big.rmeta").unwrap().size, big.len() as u64);
    // A VFS edit elsewhere makes the next push incremental over the pulled nodes too
    // (the pull could not mark the tree synced): the lazy one is in staging already.
    vfs.write_file("/p/x", b"x".to_vec()).unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_written, 0);
    push_incremental(&vfs, "/p", &mut state).unwrap();
    assert!(
        vfs.node("/p/big.rmeta").unwrap().is_lazy_unread(),
        "push read it"
    );
    // The staging directory disappears (session end): the content is still there.
    drop(staging);
    assert_eq!(&vfs.read_file("/p/big.rmeta").unwrap()[..], &big[..]);
}

#[test]
fn a_push_after_a_pull_with_pending_edits_neither_reads_nor_writes_lazy_files() {
    let (staging, mut state, mut vfs) = project(64 * 1024);
    let leaf = staging.path().join("p");
    fs::write(leaf.join("big"), vec![5u8; 200_000]).unwrap();
    settle();
    // An unpushed VFS edit: the pull cannot mark the tree synced, so the next push
    // walks the pulled files too.
    vfs.write_file("/p/edited", b"edit".to_vec()).unwrap();
    let pulled = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(pulled.files_deferred, 1, "{pulled:?}");
    let ino_before = std::os::unix::fs::MetadataExt::ino(&fs::metadata(leaf.join("big")).unwrap());
    let pushed = push_incremental(&vfs, "/p", &mut state).unwrap();
    assert_eq!(pushed.files_unchanged, 1, "{pushed:?}");
    assert!(
        vfs.node("/p/big").unwrap().is_lazy_unread(),
        "the push read it"
    );
    let ino_after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(leaf.join("big")).unwrap());
    assert_eq!(ino_before, ino_after, "the push rewrote it");
    assert_eq!(fs::read(leaf.join("edited")).unwrap(), b"edit");
    // A push that must write it (staging lost): read from the kept descriptor.
    let expected = fs::read(leaf.join("big")).unwrap();
    fs::remove_dir_all(&leaf).unwrap();
    let pushed = push_incremental(&vfs, "/p", &mut state).unwrap();
    assert!(pushed.files_written >= 3, "{pushed:?}");
    assert_eq!(fs::read(leaf.join("big")).unwrap(), expected);
}

#[test]
fn an_in_place_rewrite_after_the_pull_is_caught_by_the_next_pull_or_the_read() {
    let (staging, mut state, mut vfs) = project(64 * 1024);
    let leaf = staging.path().join("p");
    fs::write(leaf.join("fp"), vec![1u8; 100_000]).unwrap();
    settle();
    pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert!(vfs.node("/p/fp").unwrap().is_lazy_unread());
    let pinned = vfs.clone();
    // The session pins what a clone holds before the push that precedes a run.
    assert_eq!(vfs.materialize_shared_lazy(), 1);
    // The "tool" rewrites it in place (cargo's fingerprints: O_TRUNC + write).
    sh(&leaf, "printf rewritten > fp");
    // The next pull replaces the node; the clone keeps the old bytes.
    let report = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    assert_eq!(report.files_written, 1, "{report:?}");
    assert_eq!(&vfs.read_file("/p/fp").unwrap()[..], b"rewritten");
    assert_eq!(
        &pinned.read_file("/p/fp").unwrap()[..],
        &vec![1u8; 100_000][..]
    );

    // Without a pin, a reader of the old node gets a typed error, not the new bytes.
    fs::write(leaf.join("fp2"), vec![3u8; 100_000]).unwrap();
    settle();
    pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap();
    let unpinned = vfs.clone();
    sh(&leaf, "sleep 0.02; printf rewritten > fp2");
    let err = unpinned.read_file("/p/fp2").unwrap_err();
    assert!(
        matches!(&err, devshell_vm_vfs::VfsError::ContentChanged { path, .. } if path == "/p/fp2"),
        "{err:?}"
    );
}

#[test]
fn the_workspace_budget_counts_deferred_files() {
    let (staging, mut state, mut vfs) = project(64 * 1024);
    let leaf = staging.path().join("p");
    fs::write(leaf.join("big"), vec![0u8; 500_000]).unwrap();
    settle();
    state.set_max_workspace_bytes(300_000);
    let err = pull_workspace_to_vfs(&mut state, "/p", &mut vfs).unwrap_err();
    assert!(
        matches!(err, devshell_vm_sync::VmSyncError::WorkspaceTooLarge { .. }),
        "{err:?}"
    );
    assert!(!vfs.exists("/p/big"), "the VFS is unchanged");
}
