//! Unit tests of the tree operations and the journal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{NodeKind, Vfs, VfsError};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn new_tree_has_root_and_cwd() {
    let vfs = Vfs::new();
    assert_eq!(vfs.cwd(), "/");
    let meta = vfs.stat("/").unwrap();
    assert_eq!(meta.kind, NodeKind::Dir);
    assert_eq!(meta.mode, 0o755);
    assert_eq!(vfs.oldest_answerable_generation(), vfs.generation());
    assert!(vfs.changes_since("/", vfs.generation()).unwrap().is_empty());
    assert!(vfs.list_dir("/").unwrap().is_empty());
}

#[test]
fn mkdir_write_read_list() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/a/b/c").unwrap();
    vfs.write_file("/a/b/z.txt", b"zz".to_vec()).unwrap();
    vfs.write_file("/a/b/y.txt", b"y".to_vec()).unwrap();
    assert_eq!(&vfs.read_file("/a/b/z.txt").unwrap()[..], b"zz");
    let names: Vec<String> = vfs
        .list_dir("/a/b")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["c", "y.txt", "z.txt"]);
    let meta = vfs.stat("/a/b/z.txt").unwrap();
    assert_eq!(
        (meta.kind, meta.mode, meta.size),
        (NodeKind::File, 0o644, 2)
    );
    assert_eq!(vfs.stat("/a/b/c").unwrap().mode, 0o755);
    // mkdir -p on an existing dir changes nothing
    let generation = vfs.generation();
    vfs.mkdir("/a/b").unwrap();
    assert_eq!(vfs.generation(), generation);
}

#[test]
fn read_shares_content() {
    let mut vfs = Vfs::new();
    vfs.write_file("/f", b"abc".to_vec()).unwrap();
    let first = vfs.read_file("/f").unwrap();
    let second = vfs.read_file("/f").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
}

#[test]
fn errors_name_the_path() {
    let mut vfs = Vfs::new();
    vfs.write_file("/file", b"x".to_vec()).unwrap();
    match vfs.mkdir("/file/sub") {
        Err(VfsError::NotADirectory { path }) => assert_eq!(path, "/file"),
        other => panic!("expected NotADirectory, got {other:?}"),
    }
    assert!(matches!(vfs.mkdir("/file"), Err(VfsError::AlreadyExists { path }) if path == "/file"));
    assert!(
        matches!(vfs.write_file("/missing/x", b"".to_vec()), Err(VfsError::NotFound { path }) if path == "/missing")
    );
    assert!(matches!(vfs.read_file("/nope"), Err(VfsError::NotFound { path }) if path == "/nope"));
    assert!(matches!(
        vfs.read_file("/"),
        Err(VfsError::IsADirectory { .. })
    ));
    assert!(
        matches!(vfs.list_dir("/file"), Err(VfsError::NotADirectory { path }) if path == "/file")
    );
    assert!(matches!(vfs.remove("/"), Err(VfsError::RootNotRemovable)));
    assert!(matches!(
        vfs.write_file("/", b"".to_vec()),
        Err(VfsError::IsADirectory { .. })
    ));
    assert!(
        matches!(vfs.write_file("/bad\0name", b"".to_vec()), Err(VfsError::InvalidName { path, .. }) if path == "/bad\0name")
    );
    let message = vfs.read_file("/nope").unwrap_err().to_string();
    assert!(message.contains("/nope"), "{message}");
}

#[test]
fn cwd_relative_paths() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj/src").unwrap();
    vfs.set_cwd("/proj").unwrap();
    vfs.write_file("src/main.rs", b"fn main(){}".to_vec())
        .unwrap();
    assert!(vfs.exists("/proj/src/main.rs"));
    assert_eq!(vfs.normalize("../x/./y/..").unwrap(), "/x");
    assert_eq!(vfs.normalize("../../..").unwrap(), "/");
    vfs.set_cwd("src").unwrap();
    assert_eq!(vfs.cwd(), "/proj/src");
    assert!(matches!(
        vfs.set_cwd("main.rs"),
        Err(VfsError::NotADirectory { .. })
    ));
    assert!(matches!(
        vfs.set_cwd("/none"),
        Err(VfsError::NotFound { .. })
    ));
}

#[test]
fn touch_never_truncates() {
    let mut vfs = Vfs::new();
    vfs.write_file_with("/f", b"keep".to_vec(), 0o755, t(1000))
        .unwrap();
    vfs.touch("/f").unwrap();
    assert_eq!(&vfs.read_file("/f").unwrap()[..], b"keep");
    let meta = vfs.stat("/f").unwrap();
    assert_eq!(meta.mode, 0o755);
    assert!(meta.mtime > t(1000));
    vfs.touch("/new").unwrap();
    assert_eq!(vfs.stat("/new").unwrap().size, 0);
    assert_eq!(vfs.stat("/new").unwrap().mode, 0o644);
}

#[test]
fn replace_keeps_mode_and_sets_mtime() {
    let mut vfs = Vfs::new();
    vfs.write_file_with("/run.sh", b"#!/bin/sh".to_vec(), 0o100_755, t(5))
        .unwrap();
    assert_eq!(
        vfs.stat("/run.sh").unwrap().mode,
        0o755,
        "mode is masked to 0o7777"
    );
    vfs.write_file("/run.sh", b"#!/bin/bash".to_vec()).unwrap();
    let meta = vfs.stat("/run.sh").unwrap();
    assert_eq!(meta.mode, 0o755);
    assert!(meta.mtime > t(5));
    vfs.set_mode("/run.sh", 0o700).unwrap();
    vfs.set_mtime("/run.sh", t(7)).unwrap();
    let meta = vfs.stat("/run.sh").unwrap();
    assert_eq!((meta.mode, meta.mtime), (0o700, t(7)));
    let nanos = UNIX_EPOCH + Duration::new(7, 123_456_789);
    vfs.set_mtime("/run.sh", nanos).unwrap();
    assert_eq!(vfs.stat("/run.sh").unwrap().mtime, nanos);
}

#[test]
fn symlinks_are_not_followed() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/d").unwrap();
    vfs.symlink("/d", "/link").unwrap();
    assert_eq!(vfs.read_link("/link").unwrap(), "/d");
    let meta = vfs.stat("/link").unwrap();
    assert_eq!(
        (meta.kind, meta.size, meta.mode),
        (NodeKind::Symlink, 2, 0o777)
    );
    assert!(matches!(
        vfs.read_file("/link"),
        Err(VfsError::IsASymlink { .. })
    ));
    assert!(
        matches!(vfs.write_file("/link/x", b"".to_vec()), Err(VfsError::NotADirectory { path }) if path == "/link")
    );
    assert!(matches!(
        vfs.symlink("x", "/link"),
        Err(VfsError::AlreadyExists { .. })
    ));
    assert!(matches!(
        vfs.read_link("/d"),
        Err(VfsError::NotASymlink { .. })
    ));
    assert!(matches!(
        vfs.symlink("", "/l2"),
        Err(VfsError::InvalidName { .. })
    ));
    // writing a file over a symlink replaces the link, never writes through it
    vfs.write_file("/link", b"now a file".to_vec()).unwrap();
    assert_eq!(vfs.stat("/link").unwrap().kind, NodeKind::File);
    assert!(vfs.list_dir("/d").unwrap().is_empty());
}

#[test]
fn remove_and_rename() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/a/b").unwrap();
    vfs.write_file("/a/b/f", b"1".to_vec()).unwrap();
    vfs.rename("/a", "/c").unwrap();
    assert!(!vfs.exists("/a"));
    assert_eq!(&vfs.read_file("/c/b/f").unwrap()[..], b"1");
    assert!(matches!(
        vfs.rename("/c", "/c/b/x"),
        Err(VfsError::InvalidRename { .. })
    ));
    assert!(matches!(
        vfs.rename("/", "/x"),
        Err(VfsError::RootNotRemovable)
    ));
    vfs.write_file("/g", b"2".to_vec()).unwrap();
    assert!(matches!(
        vfs.rename("/g", "/c"),
        Err(VfsError::IsADirectory { .. })
    ));
    assert!(matches!(
        vfs.rename("/c", "/g"),
        Err(VfsError::NotADirectory { .. })
    ));
    vfs.mkdir("/empty").unwrap();
    assert!(matches!(
        vfs.rename("/empty", "/c"),
        Err(VfsError::DirectoryNotEmpty { .. })
    ));
    vfs.rename("/c", "/empty").unwrap();
    assert!(vfs.exists("/empty/b/f"));
    vfs.write_file("/h", b"3".to_vec()).unwrap();
    vfs.rename("/h", "/g").unwrap();
    assert_eq!(&vfs.read_file("/g").unwrap()[..], b"3");
    vfs.remove("/empty").unwrap();
    assert!(!vfs.exists("/empty/b/f"));
    assert!(matches!(
        vfs.remove("/empty"),
        Err(VfsError::NotFound { .. })
    ));
    vfs.rename("/g", "/g").unwrap();
}

#[test]
fn walk_is_preorder_sorted() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/b/y").unwrap();
    vfs.mkdir("/a").unwrap();
    vfs.write_file("/b/x", b"".to_vec()).unwrap();
    vfs.symlink("t", "/b/z").unwrap();
    let paths: Vec<String> = vfs.walk("/").unwrap().map(|e| e.path).collect();
    assert_eq!(paths, ["/", "/a", "/b", "/b/x", "/b/y", "/b/z"]);
    let sub: Vec<String> = vfs.walk("/b").unwrap().map(|e| e.path).collect();
    assert_eq!(sub, ["/b", "/b/x", "/b/y", "/b/z"]);
    let link = vfs.walk("/b/z").unwrap().next().unwrap();
    assert_eq!(link.node.link_target(), Some("t"));
}

#[test]
fn changes_since_reports_upserts_and_deletions() {
    let mut vfs = Vfs::new();
    let start = vfs.generation();
    vfs.mkdir("/p/src").unwrap();
    vfs.write_file("/p/src/a.rs", b"a".to_vec()).unwrap();
    vfs.write_file("/p/src/b.rs", b"b".to_vec()).unwrap();
    vfs.write_file("/q", b"q".to_vec()).unwrap();
    let all = vfs.changes_since("/p", start).unwrap();
    assert_eq!(all.upserted, ["/p", "/p/src", "/p/src/a.rs", "/p/src/b.rs"]);
    assert!(all.deleted.is_empty());
    let g = vfs.generation();
    assert!(vfs.changes_since("/p", g).unwrap().is_empty());

    vfs.write_file("/p/src/a.rs", b"a2".to_vec()).unwrap();
    vfs.remove("/p/src/b.rs").unwrap();
    vfs.write_file("/q", b"q2".to_vec()).unwrap();
    let changes = vfs.changes_since("/p", g).unwrap();
    assert_eq!(changes.upserted, ["/p/src/a.rs"]);
    assert_eq!(changes.deleted, ["/p/src/b.rs"]);
    assert_eq!(changes.generation, vfs.generation());

    // rename = delete + create of the subtree
    let g = vfs.generation();
    vfs.rename("/p/src", "/p/lib").unwrap();
    let changes = vfs.changes_since("/p", g).unwrap();
    assert_eq!(changes.deleted, ["/p/src"]);
    assert_eq!(changes.upserted, ["/p/lib", "/p/lib/a.rs"]);

    // deleted subtree roots only
    let g = vfs.generation();
    vfs.remove("/p/lib/a.rs").unwrap();
    vfs.remove("/p/lib").unwrap();
    assert_eq!(vfs.changes_since("/p", g).unwrap().deleted, ["/p/lib"]);

    // an ancestor of the queried path removed and re-created: the whole path is deleted
    let g = vfs.generation();
    vfs.remove("/p").unwrap();
    vfs.mkdir("/p").unwrap();
    let changes = vfs.changes_since("/p", g).unwrap();
    assert_eq!(changes.deleted, ["/p"]);
    assert_eq!(changes.upserted, ["/p"]);
}

#[test]
fn history_limit_reports_unavailable() {
    let mut vfs = Vfs::new();
    vfs.set_history_limit(4);
    for i in 0..10 {
        vfs.write_file(&format!("/f{i}"), b"x".to_vec()).unwrap();
        vfs.remove(&format!("/f{i}")).unwrap();
    }
    assert!(vfs.oldest_answerable_generation() > 0);
    assert!(matches!(
        vfs.changes_since("/", 0),
        Err(VfsError::HistoryUnavailable { since: 0 })
    ));
    let floor = vfs.oldest_answerable_generation();
    let changes = vfs.changes_since("/", floor).unwrap();
    assert!(!changes.deleted.is_empty());
}

#[test]
fn forgotten_history_answers_only_from_now() {
    let mut vfs = Vfs::new();
    vfs.write_file("/old", b"x".to_vec()).unwrap();
    let before = vfs.generation();
    vfs.write_file("/older", b"y".to_vec()).unwrap();
    vfs.forget_history();
    assert_eq!(vfs.log_len(), 0);
    let now = vfs.generation();
    assert_eq!(vfs.oldest_answerable_generation(), now);
    assert!(matches!(
        vfs.changes_since("/", before),
        Err(VfsError::HistoryUnavailable { .. })
    ));
    assert!(vfs.changes_since("/", now).unwrap().is_empty());
    vfs.write_file("/new", b"z".to_vec()).unwrap();
    assert_eq!(vfs.changes_since("/", now).unwrap().upserted, ["/new"]);
    // The tree itself is untouched.
    assert_eq!(&vfs.read_file("/old").unwrap()[..], b"x");
}

#[test]
fn clone_is_independent() {
    let mut vfs = Vfs::new();
    vfs.write_file("/f", b"1".to_vec()).unwrap();
    let snapshot = vfs.clone();
    vfs.write_file("/f", b"2".to_vec()).unwrap();
    assert_eq!(&snapshot.read_file("/f").unwrap()[..], b"1");
    assert!(!snapshot.same_tree(&vfs));
}

#[test]
fn deep_tree_is_bounded_and_drops() {
    let mut vfs = Vfs::new();
    let start = vfs.generation();
    let deep = "/d".repeat(crate::MAX_DEPTH);
    vfs.mkdir(&deep).unwrap();
    assert!(matches!(
        vfs.mkdir(&format!("{deep}/x")),
        Err(VfsError::InvalidName { .. })
    ));
    vfs.mkdir("/e").unwrap();
    assert!(matches!(
        vfs.rename("/d", "/e/d"),
        Err(VfsError::InvalidName { .. })
    ));
    // Everything that traverses the tree copes with the deepest one (2 MiB test stack).
    let copy = vfs.clone();
    assert!(copy.same_tree(&vfs));
    let image = crate::image::to_bytes(&vfs).unwrap();
    assert!(crate::image::from_bytes(&image).unwrap().same_tree(&vfs));
    let changes = vfs.changes_since("/", start).unwrap();
    assert_eq!(changes.upserted.len(), crate::MAX_DEPTH + 1);
    let dir = tempfile::tempdir().unwrap();
    // (a 200-level subtree: host path resolution makes deeper copies slow, not unsafe)
    vfs.copy_tree_to_host(&"/d".repeat(crate::MAX_DEPTH - 200), dir.path())
        .unwrap();
    assert!(dir.path().join("d/".repeat(200)).is_dir());
    drop(copy);
    drop(vfs);
}

#[test]
fn copy_tree_to_host_keeps_layout_modes_mtimes_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/ws/proj/src").unwrap();
    vfs.write_file_with(
        "/ws/proj/run.sh",
        b"#!/bin/sh\n".to_vec(),
        0o755,
        UNIX_EPOCH + Duration::new(1_000_000, 5),
    )
    .unwrap();
    vfs.write_file_with("/ws/proj/src/lib.rs", b"".to_vec(), 0o600, t(2_000_000))
        .unwrap();
    vfs.symlink("src/lib.rs", "/ws/proj/link").unwrap();
    vfs.set_mode("/ws/proj/src", 0o750).unwrap();
    vfs.set_mtime("/ws/proj/src", t(3_000_000)).unwrap();

    vfs.copy_tree_to_host("/ws/proj", dir.path()).unwrap();
    let leaf = dir.path().join("proj");
    let run = std::fs::metadata(leaf.join("run.sh")).unwrap();
    assert_eq!(run.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        run.modified().unwrap(),
        UNIX_EPOCH + Duration::new(1_000_000, 5)
    );
    let lib = std::fs::metadata(leaf.join("src/lib.rs")).unwrap();
    assert_eq!(lib.permissions().mode() & 0o7777, 0o600);
    let src = std::fs::metadata(leaf.join("src")).unwrap();
    assert_eq!(src.permissions().mode() & 0o7777, 0o750);
    assert_eq!(src.modified().unwrap(), t(3_000_000));
    assert_eq!(
        std::fs::read_link(leaf.join("link")).unwrap().to_str(),
        Some("src/lib.rs")
    );

    // a second copy replaces what is in the way, never writing through a host symlink
    std::fs::remove_file(leaf.join("run.sh")).unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"untouched").unwrap();
    std::os::unix::fs::symlink(&outside, leaf.join("run.sh")).unwrap();
    vfs.copy_tree_to_host("/ws/proj", dir.path()).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"untouched");
    assert_eq!(std::fs::read(leaf.join("run.sh")).unwrap(), b"#!/bin/sh\n");

    // root writes into host_dir itself
    let root_dir = dir.path().join("root");
    vfs.copy_tree_to_host("/", &root_dir).unwrap();
    assert!(root_dir.join("ws/proj/src/lib.rs").is_file());
}

#[test]
fn changes_since_under_a_recreated_ancestor_deletes_the_queried_path() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/a/b").unwrap();
    vfs.write_file("/a/b/old", b"o".to_vec()).unwrap();
    let g = vfs.generation();
    vfs.remove("/a").unwrap();
    vfs.mkdir("/a/b").unwrap();
    let changes = vfs.changes_since("/a/b", g).unwrap();
    assert_eq!(changes.deleted, ["/a/b"]);
    assert_eq!(changes.upserted, ["/a/b"]);
    // a sibling's removal is not reported under /a/b
    let g = vfs.generation();
    vfs.write_file("/a/c", b"".to_vec()).unwrap();
    vfs.remove("/a/c").unwrap();
    assert!(vfs.changes_since("/a/b", g).unwrap().is_empty());
}

#[test]
fn rename_over_an_existing_node_records_both_deletions() {
    let mut vfs = Vfs::new();
    vfs.write_file("/f", b"file".to_vec()).unwrap();
    vfs.symlink("target", "/l").unwrap();
    let g = vfs.generation();
    vfs.rename("/l", "/f").unwrap();
    let changes = vfs.changes_since("/", g).unwrap();
    assert_eq!(changes.deleted, ["/f", "/l"]);
    assert_eq!(changes.upserted, ["/f"]);
    assert_eq!(vfs.read_link("/f").unwrap(), "target");
}

#[test]
fn failed_operations_change_nothing() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/d").unwrap();
    vfs.write_file("/d/f", b"x".to_vec()).unwrap();
    let g = vfs.generation();
    let snapshot = vfs.clone();
    assert!(vfs.write_file("/d/f/x", b"".to_vec()).is_err());
    assert!(vfs.mkdir("/d/f/x").is_err());
    assert!(vfs.rename("/d", "/d/sub").is_err());
    assert!(vfs.remove("/nope").is_err());
    assert!(vfs.symlink("t", "/d/f").is_err());
    assert!(vfs.touch("/none/x").is_err());
    assert!(vfs.symlink("t", "/none/l").is_err());
    assert!(vfs.write_file("/d", b"".to_vec()).is_err());
    assert!(vfs.rename("/nope", "/x").is_err());
    assert_eq!(vfs.log_len(), snapshot.log_len(), "a failed op was logged");
    assert_eq!(vfs.generation(), g);
    assert!(vfs.same_tree(&snapshot));
    assert!(vfs.changes_since("/", g).unwrap().is_empty());
}

#[test]
fn generations_from_another_tree_are_refused() {
    let mut old = Vfs::new();
    old.write_file("/f", b"1".to_vec()).unwrap();
    let synced = old.generation();
    // The tree is replaced (e.g. by a loaded image) and edited: the old generation must
    // not read as "nothing changed".
    let mut replaced = crate::image::from_bytes(&crate::image::to_bytes(&old).unwrap()).unwrap();
    assert!(matches!(
        replaced.changes_since("/", synced),
        Err(VfsError::HistoryUnavailable { since }) if since == synced
    ));
    for i in 0..5 {
        replaced
            .write_file(&format!("/g{i}"), b"2".to_vec())
            .unwrap();
    }
    assert!(matches!(
        replaced.changes_since("/", synced),
        Err(VfsError::HistoryUnavailable { .. })
    ));
    // A generation from the future is refused as well.
    let later = Vfs::new();
    assert!(matches!(
        old.changes_since("/", later.generation()),
        Err(VfsError::HistoryUnavailable { .. })
    ));
    // Its own generations work.
    let own = replaced.generation();
    replaced.write_file("/h", b"3".to_vec()).unwrap();
    assert_eq!(replaced.changes_since("/", own).unwrap().upserted, ["/h"]);
}

/// Nodes looked at (path lookup steps and walk steps) while `f` runs.
fn visits_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = crate::node::VISITS.with(std::cell::Cell::get);
    let result = f();
    (
        result,
        crate::node::VISITS.with(std::cell::Cell::get) - before,
    )
}

#[test]
fn changes_since_work_is_bounded_by_the_changes_not_the_tree_or_fan_out() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/big").unwrap();
    for i in 0..3000 {
        vfs.write_file(&format!("/big/f{i:04}"), b"x".to_vec())
            .unwrap();
    }
    for d in 0..30 {
        vfs.mkdir(&format!("/deep/d{d:02}")).unwrap();
        for i in 0..30 {
            vfs.write_file(&format!("/deep/d{d:02}/f{i:02}"), b"y".to_vec())
                .unwrap();
        }
    }
    let g = vfs.generation();
    let (nothing, visits) = visits_during(|| vfs.changes_since("/", g).unwrap());
    assert!(nothing.is_empty());
    assert_eq!(visits, 0, "no change must cost no tree visits");

    // One change in a directory of 3000 entries: a lookup, not a scan.
    vfs.write_file("/big/f1500", b"changed".to_vec()).unwrap();
    let (changes, visits) = visits_during(|| vfs.changes_since("/", g).unwrap());
    assert_eq!(changes.upserted, ["/big/f1500"]);
    assert!(visits <= 4, "one change cost {visits} visits");
    let (changes, visits) = visits_during(|| vfs.changes_since("/big", g).unwrap());
    assert_eq!(changes.upserted, ["/big/f1500"]);
    assert!(visits <= 4, "one change under /big cost {visits} visits");

    // A moved subtree costs its own size (every node in it is a change), nothing more.
    let g = vfs.generation();
    vfs.rename("/deep/d07", "/big/moved").unwrap();
    let (changes, visits) = visits_during(|| vfs.changes_since("/", g).unwrap());
    assert_eq!(changes.deleted, ["/deep/d07"]);
    assert_eq!(changes.upserted.len(), 31);
    assert_eq!(changes.upserted[0], "/big/moved");
    assert!(visits <= 31 + 4, "a 31-node move cost {visits} visits");
}

#[test]
fn journal_orders_parents_first_and_skips_later_removed_paths() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/x").unwrap();
    vfs.mkdir("/a").unwrap();
    vfs.write_file("/a/f", b"f".to_vec()).unwrap();
    let g = vfs.generation();
    vfs.mkdir("/x/y/z").unwrap();
    vfs.set_mode("/a/f", 0o600).unwrap();
    vfs.rename("/a", "/b").unwrap();
    vfs.write_file("/b/g", b"g".to_vec()).unwrap();
    vfs.rename("/b/g", "/c").unwrap();
    vfs.write_file("/x/y/tmp", b"t".to_vec()).unwrap();
    vfs.remove("/x/y/tmp").unwrap();
    let changes = vfs.changes_since("/", g).unwrap();
    assert_eq!(changes.upserted, ["/b", "/b/f", "/c", "/x/y", "/x/y/z"]);
    assert_eq!(changes.deleted, ["/a", "/b/g", "/x/y/tmp"]);
    // A query inside a moved subtree: the whole queried subtree is new.
    let changes = vfs.changes_since("/b/f", g).unwrap();
    assert_eq!(changes.upserted, ["/b/f"]);
    assert!(changes.deleted.is_empty());
    // Names that sort differently as strings and as path components.
    let g = vfs.generation();
    vfs.mkdir("/p/a").unwrap();
    vfs.write_file("/p/a/z", b"".to_vec()).unwrap();
    vfs.write_file("/p/a-b", b"".to_vec()).unwrap();
    vfs.write_file("/p/a.c", b"".to_vec()).unwrap();
    let walked: Vec<String> = vfs.walk("/p").unwrap().map(|e| e.path).collect();
    assert_eq!(vfs.changes_since("/", g).unwrap().upserted, walked);
}

#[test]
fn copy_tree_to_host_copies_a_single_file_and_a_symlink_as_leaves() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/w").unwrap();
    vfs.write_file_with("/w/tool.sh", b"echo".to_vec(), 0o750, t(7_000))
        .unwrap();
    vfs.symlink_with("../elsewhere", "/w/link", t(8_000))
        .unwrap();
    vfs.copy_tree_to_host("/w/tool.sh", dir.path()).unwrap();
    vfs.copy_tree_to_host("/w/link", dir.path()).unwrap();
    let file = dir.path().join("tool.sh");
    assert_eq!(std::fs::read(&file).unwrap(), b"echo");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(meta.modified().unwrap(), t(7_000));
    let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(link.modified().unwrap(), t(8_000));
    assert_eq!(
        std::fs::read_link(dir.path().join("link")).unwrap(),
        std::path::Path::new("../elsewhere")
    );
    assert!(matches!(
        vfs.copy_tree_to_host("/w/none", dir.path()),
        Err(VfsError::NotFound { path }) if path == "/w/none"
    ));
}

#[test]
fn file_and_link_paths_that_end_in_a_directory_name_are_refused() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/d").unwrap();
    vfs.write_file("/d/a", b"keep".to_vec()).unwrap();
    let before = vfs.generation();
    for path in ["/d/", "/new/", "/d/a/", "/d/.", "/d/x/..", "d/"] {
        let refused = |result: Result<(), VfsError>| matches!(result, Err(VfsError::InvalidName { path: p, .. }) if p == path);
        assert!(
            refused(vfs.write_file(path, b"x".to_vec())),
            "write_file {path}"
        );
        assert!(
            refused(vfs.write_file_with(path, b"x".to_vec(), 0o600, SystemTime::UNIX_EPOCH)),
            "write_file_with {path}"
        );
        assert!(refused(vfs.symlink("/t", path)), "symlink {path}");
    }
    assert!(
        vfs.touch("/new/").is_err(),
        "touch must not create `new` from `new/`"
    );
    assert_eq!(vfs.generation(), before, "a refused call changes nothing");
    assert!(!vfs.exists("/new"));
    assert_eq!(&*vfs.read_file("/d/a").unwrap(), b"keep");
    assert_eq!(vfs.stat("/d").unwrap().kind, NodeKind::Dir);
    vfs.touch("/d/").unwrap();
    assert!(
        vfs.generation() > before,
        "touch of an existing dir/ still updates it"
    );
}

/// The address of the children map of directory `path` (to see what two trees share).
fn dir_map(vfs: &Vfs, path: &str) -> *const std::collections::BTreeMap<String, crate::node::Node> {
    let mut node = &vfs.root;
    for name in path.split('/').filter(|n| !n.is_empty()) {
        node = node.children().unwrap().0.get(name).unwrap();
    }
    std::sync::Arc::as_ptr(&node.children().unwrap().0)
}

#[test]
fn a_clone_shares_directories_until_either_side_changes_them() {
    let mut vfs = Vfs::new();
    for d in 0..3 {
        vfs.mkdir(&format!("/d{d}/sub")).unwrap();
        for f in 0..3 {
            vfs.write_file(&format!("/d{d}/sub/f{f}"), format!("{d}{f}").into_bytes())
                .unwrap();
        }
    }
    let mut copy = vfs.clone();
    assert_eq!(dir_map(&vfs, "/"), dir_map(&copy, "/"));
    copy.write_file("/d1/sub/f0", b"new".to_vec()).unwrap();
    // Only the maps on the changed path were copied.
    for path in ["/", "/d1", "/d1/sub"] {
        assert_ne!(dir_map(&vfs, path), dir_map(&copy, path), "{path}");
    }
    for path in ["/d0", "/d0/sub", "/d2/sub"] {
        assert_eq!(dir_map(&vfs, path), dir_map(&copy, path), "{path}");
    }
    assert_eq!(&vfs.read_file("/d1/sub/f0").unwrap()[..], b"10");
    assert_eq!(&copy.read_file("/d1/sub/f0").unwrap()[..], b"new");
    // A change to the original after the clone is not seen by the copy either.
    vfs.remove("/d2").unwrap();
    vfs.set_mode("/d0/sub/f1", 0o600).unwrap();
    assert_eq!(&copy.read_file("/d2/sub/f2").unwrap()[..], b"22");
    assert_eq!(copy.stat("/d0/sub/f1").unwrap().mode, 0o644);
    // Dropping one tree leaves the other whole.
    drop(vfs);
    assert_eq!(copy.walk("/").unwrap().count(), 1 + 3 * (2 + 3));
}
