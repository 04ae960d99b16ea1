//! `StreamedPush`: a full push whose contents are fed while it runs must leave the same
//! tree, and the same sync state, as `push_full` from the finished VFS.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;

use devshell_vm_sync::{
    StreamEntry, StreamedPush, SyncState, VmSyncError, pull_workspace_to_vfs, push_incremental,
};
use devshell_vm_vfs::{Content, NodeKind, Vfs};
use support::{assert_same, host_mtime, host_snapshot, old_time, vfs_snapshot};

/// 12 directories of 30 files (enough for several writers), an empty directory, a
/// symlink, an executable and a few modes and mtimes.
fn tree() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/w").unwrap();
    for d in 0..12_u64 {
        vfs.mkdir(&format!("/w/d{d}/sub")).unwrap();
        for f in 0..30_u64 {
            let content = format!("file {d}/{f}\n").repeat(usize::try_from(f).unwrap() + 1);
            let mode = if f % 7 == 0 { 0o755 } else { 0o644 };
            vfs.write_file_with(
                &format!("/w/d{d}/f{f}.rs"),
                content.into_bytes(),
                mode,
                old_time(d * 100 + f),
            )
            .unwrap();
        }
        vfs.write_file_with(
            &format!("/w/d{d}/sub/empty"),
            Vec::new(),
            0o600,
            old_time(7),
        )
        .unwrap();
    }
    vfs.mkdir("/w/empty").unwrap();
    vfs.symlink("d0/f1.rs", "/w/link").unwrap();
    for dir in ["/w/d3", "/w/d3/sub", "/w/empty"] {
        vfs.set_mtime(dir, old_time(900)).unwrap();
    }
    vfs.set_mode("/w/d5", 0o700).unwrap();
    vfs
}

/// One entry: relative path, kind, mode, mtime, symlink target.
type Listed = (String, NodeKind, u32, std::time::SystemTime, Option<String>);

/// The entries of the subtree in pre-order, and the contents by entry index.
fn entries_of(vfs: &Vfs, root: &str) -> (Vec<Listed>, Vec<(usize, Content)>) {
    let mut entries = Vec::new();
    let mut contents = Vec::new();
    for entry in vfs.walk(root).unwrap().skip(1) {
        let rel = entry.path[root.len() + 1..].to_owned();
        let meta = entry.node.metadata();
        if meta.kind == NodeKind::File {
            contents.push((
                entries.len(),
                std::sync::Arc::clone(entry.content().unwrap().unwrap()),
            ));
        }
        entries.push((
            rel,
            meta.kind,
            meta.mode,
            meta.mtime,
            entry.node.link_target().map(str::to_owned),
        ));
    }
    (entries, contents)
}

fn stream_entries(list: &[Listed]) -> Vec<StreamEntry<'_>> {
    list.iter()
        .map(|(rel, kind, mode, mtime, target)| StreamEntry {
            rel,
            kind: *kind,
            mode: *mode,
            mtime: *mtime,
            target: target.as_deref(),
        })
        .collect()
}

/// Every directory's mode and mtime on the host equal the VFS's (the snapshot helper
/// compares only modes of directories).
fn assert_dir_times(vfs: &Vfs, root: &str, host: &std::path::Path) {
    for entry in vfs.walk(root).unwrap() {
        let meta = entry.node.metadata();
        if meta.kind != NodeKind::Dir {
            continue;
        }
        let rel = entry
            .path
            .strip_prefix(root)
            .unwrap()
            .trim_start_matches('/');
        let on_host = fs::symlink_metadata(host.join(rel)).unwrap();
        assert_eq!(host_mtime(&on_host), meta.mtime, "mtime of {rel:?}");
        assert_eq!(on_host.mode() & 0o7777, meta.mode, "mode of {rel:?}");
    }
}

#[test]
fn a_streamed_push_leaves_the_tree_and_state_of_a_full_push() {
    let vfs = tree();
    let (list, mut contents) = entries_of(&vfs, "/w");
    let staging = tempfile::tempdir().unwrap();
    let mut state = SyncState::new(staging.path());
    // Files of at least 200 bytes keep their descriptors (the default is 64 KiB).
    state.set_lazy_min_size(200);
    let push = StreamedPush::begin(&mut state, "/w", &stream_entries(&list))
        .unwrap()
        .expect("an empty leaf streams");
    let (kept_tx, kept_rx) = std::sync::mpsc::channel();
    push.send_kept_to(kept_tx);
    // Contents arrive in another order than the walk, in uneven batches, from another
    // thread than the one that finishes.
    contents.reverse();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for batch in contents.chunks(17) {
                assert!(push.feed(batch.to_vec()));
            }
        });
    });
    let (report, kept) = push.finish(&mut state, &vfs).unwrap();
    assert_eq!(report.files_written, 12 * 31 + 1, "{report:?}");
    // Exactly the files of at least 200 bytes are kept on disk, each unread and reading
    // back the bytes pushed.
    let mut large: Vec<String> = vfs
        .walk("/w")
        .unwrap()
        .filter(|e| e.node.kind() == NodeKind::File && e.node.metadata().size >= 200)
        .map(|e| e.path)
        .collect();
    let mut kept_paths: Vec<String> = kept.iter().map(|(path, _)| path.clone()).collect();
    large.sort();
    kept_paths.sort();
    assert!(!large.is_empty());
    assert_eq!(kept_paths, large);
    // Each was also sent as soon as it was written.
    let mut sent: Vec<String> = kept_rx.try_iter().map(|(path, _)| path).collect();
    sent.sort();
    assert_eq!(sent, large);
    let mut on_disk = vfs.clone();
    for (path, content) in kept {
        assert!(!content.is_loaded());
        assert_eq!(
            &content.content().unwrap()[..],
            &vfs.read_file(&path).unwrap()[..],
            "{path}"
        );
        on_disk.keep_on_disk(&path, content).unwrap();
    }
    assert!(on_disk.same_tree(&vfs));
    let leaf = staging.path().join("w");
    assert_same(
        &vfs_snapshot(&vfs, "/w"),
        &host_snapshot(&leaf),
        "streamed push",
    );
    assert_dir_times(&vfs, "/w", &leaf);

    // The state is that of a push: a pull reads nothing and changes nothing, and an
    // edit is pushed alone.
    let mut pulled = vfs.clone();
    let before = pulled.generation();
    let pull = pull_workspace_to_vfs(&mut state, "/w", &mut pulled).unwrap();
    assert_eq!((pull.files_read, pull.deleted), (0, 0), "{pull:?}");
    assert_eq!(pulled.generation(), before);
    let mut edited = vfs.clone();
    edited
        .write_file("/w/d4/f2.rs", b"edited".to_vec())
        .unwrap();
    let push = push_incremental(&edited, "/w", &mut state).unwrap();
    assert_eq!(push.files_written, 1, "{push:?}");
    assert_eq!(fs::read(leaf.join("d4/f2.rs")).unwrap(), b"edited");
    assert_same(
        &vfs_snapshot(&edited, "/w"),
        &host_snapshot(&leaf),
        "after an edit",
    );
}

#[test]
fn a_file_never_fed_fails_the_push_and_pulls_are_refused() {
    let vfs = tree();
    let (list, contents) = entries_of(&vfs, "/w");
    let staging = tempfile::tempdir().unwrap();
    let mut state = SyncState::new(staging.path());
    let push = StreamedPush::begin(&mut state, "/w", &stream_entries(&list))
        .unwrap()
        .unwrap();
    assert!(push.feed(contents[1..].to_vec()));
    let err = push.finish(&mut state, &vfs).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::WireApply { path, .. } if path == "d0/f0.rs"),
        "{err}"
    );
    let mut pulled = vfs.clone();
    let refused = pull_workspace_to_vfs(&mut state, "/w", &mut pulled).unwrap_err();
    assert!(
        matches!(refused, VmSyncError::IncompletePush { .. }),
        "{refused}"
    );
    // A full push repairs it.
    devshell_vm_sync::push_full(&vfs, "/w", &mut state).unwrap();
    assert_same(
        &vfs_snapshot(&vfs, "/w"),
        &host_snapshot(&staging.path().join("w")),
        "repaired",
    );
}

#[test]
fn a_leaf_with_contents_or_too_many_directories_is_not_streamed() {
    let vfs = tree();
    let (list, _) = entries_of(&vfs, "/w");
    let staging = tempfile::tempdir().unwrap();
    fs::create_dir_all(staging.path().join("w")).unwrap();
    fs::write(staging.path().join("w/stray"), b"x").unwrap();
    let mut state = SyncState::new(staging.path());
    assert!(
        StreamedPush::begin(&mut state, "/w", &stream_entries(&list))
            .unwrap()
            .is_none()
    );
    assert_eq!(fs::read(staging.path().join("w/stray")).unwrap(), b"x");

    let names: Vec<String> = (0..devshell_vm_sync::STREAM_MAX_DIRS)
        .map(|i| format!("d{i}"))
        .collect();
    let many: Vec<StreamEntry<'_>> = names
        .iter()
        .map(|rel| StreamEntry {
            rel,
            kind: NodeKind::Dir,
            mode: 0o755,
            mtime: old_time(1),
            target: None,
        })
        .collect();
    let empty = tempfile::tempdir().unwrap();
    let mut state = SyncState::new(empty.path());
    assert!(
        StreamedPush::begin(&mut state, "/w", &many)
            .unwrap()
            .is_none()
    );
    assert!(!empty.path().join("w").exists());
}

#[test]
fn excluded_entries_are_not_written_and_a_bad_order_is_refused() {
    let vfs = tree();
    let (list, contents) = entries_of(&vfs, "/w");
    let staging = tempfile::tempdir().unwrap();
    let mut state = SyncState::new(staging.path());
    state.set_excludes(&["d2/", "*.rs"]).unwrap();
    let push = StreamedPush::begin(&mut state, "/w", &stream_entries(&list))
        .unwrap()
        .unwrap();
    assert!(push.feed(contents));
    push.finish(&mut state, &vfs).unwrap();
    let host = host_snapshot(&staging.path().join("w"));
    assert!(
        !host.contains_key("d2"),
        "an excluded directory was written"
    );
    assert!(
        host.keys().all(|k| std::path::Path::new(k)
            .extension()
            .is_none_or(|e| e != "rs")),
        "{host:?}"
    );
    assert!(host.contains_key("d1/sub/empty"));

    let child_first = [
        StreamEntry {
            rel: "a/b",
            kind: NodeKind::File,
            mode: 0o644,
            mtime: old_time(1),
            target: None,
        },
        StreamEntry {
            rel: "a",
            kind: NodeKind::Dir,
            mode: 0o755,
            mtime: old_time(1),
            target: None,
        },
    ];
    let other = tempfile::tempdir().unwrap();
    let mut state = SyncState::new(other.path());
    let err = StreamedPush::begin(&mut state, "/w", &child_first).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::WireApply { path, .. } if path == "a/b"),
        "{err}"
    );
}
