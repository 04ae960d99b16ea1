//! Round-trip property: random VFS trees, random edits on either side; after
//! push → (host edits) → pull the VFS equals the host tree (kinds, contents, modes,
//! file and directory mtimes, symlink targets), a push right after a pull writes
//! nothing, and after VFS edits a push makes the host equal the VFS again.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

mod support;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::SystemTime;

use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_incremental};
use devshell_vm_vfs::{NodeKind, Vfs};
use proptest::prelude::*;
use support::{Snap, assert_same, host_mtime, host_snapshot, old_time, vfs_snapshot};

const ROOT: &str = "/ws/proj";

#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Write(String, Vec<u8>, u32, u64),
    Remove(String),
    Rename(String, String),
    Chmod(String, u32),
    Touch(String, u64),
    Symlink(String, String),
}

fn rel_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "dd", "e.rs"]),
        1..=3,
    )
    .prop_map(|parts| parts.join("/"))
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444, 0o700]);
    let target = prop::sample::select(vec!["a", "b/c", "../outside", "/abs/target", "dd"]);
    prop_oneof![
        2 => rel_path().prop_map(Op::Mkdir),
        4 => (rel_path(), prop::collection::vec(any::<u8>(), 0..64), mode.clone(), 0u64..50)
            .prop_map(|(p, c, m, t)| Op::Write(p, c, m, t)),
        1 => rel_path().prop_map(Op::Remove),
        1 => (rel_path(), rel_path()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (rel_path(), mode).prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => (rel_path(), 0u64..50).prop_map(|(p, t)| Op::Touch(p, t)),
        1 => (rel_path(), target).prop_map(|(p, t)| Op::Symlink(p, t.to_owned())),
    ]
}

/// Applies an op to the VFS; ops that do not fit the current tree are ignored.
fn apply_vfs(vfs: &mut Vfs, op: &Op) {
    let at = |rel: &str| format!("{ROOT}/{rel}");
    let parent = |rel: &str| rel.rsplit_once('/').map_or(ROOT.to_owned(), |(p, _)| at(p));
    let _ = match op {
        Op::Mkdir(p) => vfs.mkdir(&at(p)),
        Op::Write(p, content, mode, t) => vfs
            .mkdir(&parent(p))
            .and_then(|()| vfs.write_file_with(&at(p), content.clone(), *mode, old_time(*t))),
        Op::Remove(p) => vfs.remove(&at(p)),
        Op::Rename(a, b) => vfs.rename(&at(a), &at(b)),
        Op::Chmod(p, m) => {
            if vfs.stat(&at(p)).is_ok_and(|s| s.kind == NodeKind::Dir) {
                vfs.set_mode(&at(p), m | 0o700)
            } else {
                vfs.set_mode(&at(p), *m)
            }
        }
        Op::Touch(p, t) => vfs.set_mtime(&at(p), old_time(*t)),
        Op::Symlink(p, target) => vfs.symlink_with(target, &at(p), old_time(7)),
    };
}

/// `true` when every existing component of `rel` below `leaf` (the last included) is a
/// real directory or missing; the test's own host edits never go through a symlink.
fn no_link_on_the_way(leaf: &Path, rel: &str, include_last: bool) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let upto = if include_last {
        parts.len()
    } else {
        parts.len() - 1
    };
    let mut path = leaf.to_path_buf();
    for part in &parts[..upto] {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return false,
            _ => {}
        }
    }
    true
}

fn set_host_mtime(path: &Path, time: SystemTime) {
    let file = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path));
    if let Ok(file) = file {
        let _ = file.set_modified(time);
    }
}

/// Applies an op to the host leaf the way a tool might (never through a symlink).
fn apply_host(leaf: &Path, op: &Op) {
    let at = |rel: &str| leaf.join(rel);
    match op {
        Op::Mkdir(p) if no_link_on_the_way(leaf, p, true) => {
            let _ = fs::create_dir_all(at(p));
        }
        Op::Write(p, content, mode, t) if no_link_on_the_way(leaf, p, true) => {
            if let Some(parent) = at(p).parent() {
                let _ = fs::create_dir_all(parent);
            }
            if fs::write(at(p), content).is_ok() {
                let _ = fs::set_permissions(at(p), fs::Permissions::from_mode(*mode));
                if t % 2 == 0 {
                    // Half the writes keep "now", the other half carry an old time.
                    set_host_mtime(&at(p), old_time(*t));
                }
            }
        }
        Op::Remove(p) if no_link_on_the_way(leaf, p, false) => {
            let path = at(p);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    let _ = fs::remove_dir_all(&path);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
        Op::Rename(a, b)
            if no_link_on_the_way(leaf, a, false) && no_link_on_the_way(leaf, b, false) =>
        {
            let _ = fs::rename(at(a), at(b));
        }
        Op::Chmod(p, m) if no_link_on_the_way(leaf, p, true) => {
            let mode = if fs::symlink_metadata(at(p)).is_ok_and(|meta| meta.is_dir()) {
                m | 0o700
            } else {
                *m
            };
            let _ = fs::set_permissions(at(p), fs::Permissions::from_mode(mode));
        }
        Op::Touch(p, t) if no_link_on_the_way(leaf, p, true) => {
            set_host_mtime(&at(p), old_time(*t));
        }
        Op::Symlink(p, target) if no_link_on_the_way(leaf, p, true) => {
            let _ = symlink(target, at(p));
        }
        _ => {}
    }
}

/// Snapshot with directory mtimes folded in (`Snap::Dir` carries only the mode).
fn with_dir_mtimes_vfs(vfs: &Vfs) -> Vec<(String, SystemTime)> {
    vfs.walk(ROOT)
        .unwrap()
        .filter(|e| e.node.kind() == NodeKind::Dir)
        .map(|e| (e.path.clone(), e.node.metadata().mtime))
        .collect()
}

fn with_dir_mtimes_host(leaf: &Path) -> Vec<(String, SystemTime)> {
    let mut out = vec![(
        ROOT.to_owned(),
        host_mtime(&fs::symlink_metadata(leaf).unwrap()),
    )];
    for (rel, snap) in host_snapshot(leaf) {
        if let Snap::Dir { .. } = snap {
            out.push((
                format!("{ROOT}/{rel}"),
                host_mtime(&fs::symlink_metadata(leaf.join(&rel)).unwrap()),
            ));
        }
    }
    out.sort();
    out
}

fn assert_equal_trees(vfs: &Vfs, leaf: &Path, step: &str) {
    assert_same(&vfs_snapshot(vfs, ROOT), &host_snapshot(leaf), step);
    let mut vfs_dirs = with_dir_mtimes_vfs(vfs);
    vfs_dirs.sort();
    assert_eq!(
        vfs_dirs,
        with_dir_mtimes_host(leaf),
        "{step}: directory mtimes"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn push_edit_pull_round_trips(
        initial in prop::collection::vec(op(), 1..30),
        vfs_edits in prop::collection::vec(op(), 0..12),
        host_edits in prop::collection::vec(op(), 0..12),
        more_vfs_edits in prop::collection::vec(op(), 0..8),
    ) {
        let staging = tempfile::tempdir().unwrap();
        let leaf = staging.path().join("proj");
        let mut vfs = Vfs::new();
        vfs.mkdir(ROOT).unwrap();
        vfs.set_mtime(ROOT, old_time(0)).unwrap();
        for op in &initial {
            apply_vfs(&mut vfs, op);
        }
        let mut state = SyncState::new(staging.path());
        push_incremental(&vfs, ROOT, &mut state).unwrap();
        assert_equal_trees(&vfs, &leaf, "first push");

        for op in &vfs_edits {
            apply_vfs(&mut vfs, op);
        }
        push_incremental(&vfs, ROOT, &mut state).unwrap();
        assert_equal_trees(&vfs, &leaf, "incremental push");

        for op in &host_edits {
            apply_host(&leaf, op);
        }
        // Host directory mtimes moved with the edits; the pull must carry them over.
        let pull = pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).unwrap();
        prop_assert!(pull.skipped.is_empty(), "{:?}", pull.skipped);
        assert_equal_trees(&vfs, &leaf, "pull");

        let push = push_incremental(&vfs, ROOT, &mut state).unwrap();
        prop_assert!(push.is_noop(), "pulled changes were pushed back: {}", push);

        for op in &more_vfs_edits {
            apply_vfs(&mut vfs, op);
        }
        push_incremental(&vfs, ROOT, &mut state).unwrap();
        assert_equal_trees(&vfs, &leaf, "push after pull");
        let pull = pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).unwrap();
        prop_assert_eq!(pull.files_written, 0, "{}", pull);
        assert_equal_trees(&vfs, &leaf, "final pull");
    }
}
