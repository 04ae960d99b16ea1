//! Lazy (read-on-demand) file contents, on real files.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use devshell_vm_vfs::{LazyContent, LazySlot, Vfs, VfsError, image};

/// A lazy content of the host file at `path`, recorded as VFS path `vfs_path`.
fn lazy(path: &std::path::Path, vfs_path: &str) -> Arc<LazyContent> {
    let slot = LazySlot::reserve().expect("the default cap is far from reached in this test");
    let file = File::open(path).unwrap();
    Arc::new(LazyContent::new(file, slot, path, vfs_path).unwrap())
}

fn mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
}

/// Rewrites `path` in place (same inode, `O_TRUNC`), as cargo does with fingerprints.
fn rewrite_in_place(path: &std::path::Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn reads_on_demand_and_survives_the_staging_dir() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("big.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(&host, &bytes).unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file_lazy("/p/big.bin", lazy(&host, "/p/big.bin"), 0o640, mtime())
        .unwrap();
    // Metadata comes from the recorded identity: nothing read.
    let meta = vfs.stat("/p/big.bin").unwrap();
    assert_eq!(meta.size, bytes.len() as u64);
    assert_eq!(meta.mode, 0o640);
    assert_eq!(meta.mtime, mtime());
    assert!(vfs.node("/p/big.bin").unwrap().is_lazy_unread());
    assert_eq!(vfs.unread_lazy_count(), 1);
    // The staging directory goes away (session end): the descriptor keeps the inode.
    drop(dir);
    assert_eq!(&vfs.read_file("/p/big.bin").unwrap()[..], &bytes[..]);
    assert!(!vfs.node("/p/big.bin").unwrap().is_lazy_unread());
    assert_eq!(vfs.unread_lazy_count(), 0);
    // Read once: the same allocation afterwards.
    let a = vfs.read_file("/p/big.bin").unwrap();
    let b = vfs.read_file("/p/big.bin").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn in_place_change_before_the_read_is_a_typed_error_not_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("fingerprint");
    fs::write(&host, b"old fingerprint 0123456789").unwrap();
    let mut vfs = Vfs::new();
    vfs.write_file_lazy("/fingerprint", lazy(&host, "/fingerprint"), 0o644, mtime())
        .unwrap();
    // Same length: only the mtime tells.
    std::thread::sleep(Duration::from_millis(20));
    rewrite_in_place(&host, b"new fingerprint 9876543210");
    let err = vfs.read_file("/fingerprint").unwrap_err();
    assert!(
        matches!(&err, VfsError::ContentChanged { path, origin } if path == "/fingerprint" && origin == &host),
        "{err:?}"
    );
    assert!(err.to_string().contains("/fingerprint"), "{err}");
    // Every reader says the same: the walk, the bare node, same_tree, the image.
    let walked = vfs
        .walk("/")
        .unwrap()
        .find(|e| e.path == "/fingerprint")
        .unwrap();
    assert!(matches!(
        walked.content(),
        Err(VfsError::ContentChanged { .. })
    ));
    assert!(matches!(
        vfs.node("/fingerprint").unwrap().content(),
        Err(VfsError::ContentChanged { path, .. }) if path == "/fingerprint"
    ));
    let mut eager = Vfs::new();
    eager
        .write_file_with(
            "/fingerprint",
            b"old fingerprint 0123456789".to_vec(),
            0o644,
            mtime(),
        )
        .unwrap();
    eager.set_mtime("/", vfs.stat("/").unwrap().mtime).unwrap();
    assert!(
        !vfs.same_tree(&eager),
        "an unreadable content is not known to be the same"
    );
    assert!(
        vfs.same_tree(&vfs.clone()),
        "one shared content is the same unread"
    );
    assert!(matches!(
        image::to_bytes(&vfs),
        Err(image::ImageError::Content(VfsError::ContentChanged { .. }))
    ));
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        vfs.copy_tree_to_host("/", out.path()),
        Err(VfsError::ContentChanged { .. })
    ));
}

#[test]
fn a_clone_pinned_before_an_in_place_rewrite_keeps_the_old_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("lib.rmeta");
    fs::write(&host, vec![7u8; 100_000]).unwrap();
    let mut vfs = Vfs::new();
    vfs.write_file_lazy("/lib.rmeta", lazy(&host, "/lib.rmeta"), 0o644, mtime())
        .unwrap();
    // Nobody else holds it: nothing to pin, nothing read.
    assert_eq!(vfs.materialize_shared_lazy(), 0);
    assert!(vfs.node("/lib.rmeta").unwrap().is_lazy_unread());
    let snapshot = vfs.clone();
    // The session pins before every push (a tool may run after it).
    assert_eq!(vfs.materialize_shared_lazy(), 1);
    assert_eq!(vfs.materialize_shared_lazy(), 0, "already read");
    rewrite_in_place(&host, &[9u8; 50]);
    assert_eq!(
        &snapshot.read_file("/lib.rmeta").unwrap()[..],
        &vec![7u8; 100_000][..]
    );
    // The original shares the pinned bytes until a pull replaces its node.
    assert_eq!(
        &vfs.read_file("/lib.rmeta").unwrap()[..],
        &vec![7u8; 100_000][..]
    );
}

#[test]
fn a_replaced_node_still_held_by_a_clone_is_pinned_too() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("a");
    fs::write(&host, b"first version").unwrap();
    let mut vfs = Vfs::new();
    vfs.write_file_lazy("/a", lazy(&host, "/a"), 0o644, mtime())
        .unwrap();
    let snapshot = vfs.clone();
    // The session's tree moves on (a pull replaced the node) before the next push.
    vfs.write_file("/a", b"in memory".to_vec()).unwrap();
    assert_eq!(vfs.materialize_shared_lazy(), 1);
    rewrite_in_place(&host, b"second version!!");
    assert_eq!(&snapshot.read_file("/a").unwrap()[..], b"first version");
}

#[test]
fn image_save_and_copy_to_host_read_lazy_contents() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("data");
    let bytes = vec![42u8; 70_000];
    fs::write(&host, &bytes).unwrap();
    let mut lazy_tree = Vfs::new();
    lazy_tree.mkdir("/p").unwrap();
    lazy_tree
        .write_file_lazy("/p/data", lazy(&host, "/p/data"), 0o600, mtime())
        .unwrap();
    let mut eager_tree = Vfs::new();
    eager_tree.mkdir("/p").unwrap();
    eager_tree
        .write_file_with("/p/data", bytes.clone(), 0o600, mtime())
        .unwrap();
    // Both have the same root dir mtime for the comparison.
    for tree in [&mut lazy_tree, &mut eager_tree] {
        tree.set_mtime("/", mtime()).unwrap();
        tree.set_mtime("/p", mtime()).unwrap();
    }
    assert!(lazy_tree.same_tree(&eager_tree));
    let image_path = dir.path().join("ws.img");
    image::save(&lazy_tree, &image_path).unwrap();
    let loaded = image::load(&image_path).unwrap();
    assert!(loaded.same_tree(&eager_tree));
    assert_eq!(
        image::to_bytes(&lazy_tree).unwrap(),
        image::to_bytes(&eager_tree).unwrap()
    );
    // Copying onto the very file the content is read from: read first, then replaced.
    let fresh = tempfile::tempdir().unwrap();
    let src = fresh.path().join("p/data");
    fs::create_dir(fresh.path().join("p")).unwrap();
    fs::write(&src, &bytes).unwrap();
    let mut onto_itself = Vfs::new();
    onto_itself.mkdir("/p").unwrap();
    onto_itself
        .write_file_lazy("/p/data", lazy(&src, "/p/data"), 0o600, mtime())
        .unwrap();
    onto_itself.copy_tree_to_host("/", fresh.path()).unwrap();
    assert_eq!(fs::read(&src).unwrap(), bytes);
}

#[test]
fn chunks_are_fed_without_reading_the_content_and_a_change_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("out.rlib");
    // Three and a bit pieces of 128 KiB.
    let bytes: Vec<u8> = (0..400_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(&host, &bytes).unwrap();
    let content = lazy(&host, "/p/out.rlib");
    let mut seen = Vec::new();
    let mut pieces = 0;
    content
        .for_each_chunk(|piece| {
            assert!(piece.len() <= 128 * 1024, "piece of {} bytes", piece.len());
            pieces += 1;
            seen.extend_from_slice(piece);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(seen, bytes);
    assert_eq!(pieces, 4);
    // Streaming keeps nothing: the content is still unread, its descriptor open.
    assert!(!content.is_loaded());
    // The visitor's error stops the reading and comes back as the inner result.
    let mut calls = 0;
    let stopped = content
        .for_each_chunk(|_| {
            calls += 1;
            Err("socket closed")
        })
        .unwrap();
    assert_eq!(stopped, Err("socket closed"));
    assert_eq!(calls, 1);
    // Once loaded, the pieces come from memory: the same bytes.
    assert_eq!(&content.content().unwrap()[..], &bytes[..]);
    let mut again = Vec::new();
    content
        .for_each_chunk(|piece| {
            again.extend_from_slice(piece);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(again, bytes);
    // Changed in place before streaming: a typed error naming the VFS path.
    let other = dir.path().join("fingerprint");
    fs::write(&other, b"old fingerprint 0123456789").unwrap();
    let changed = lazy(&other, "/p/fingerprint");
    std::thread::sleep(Duration::from_millis(20));
    rewrite_in_place(&other, b"new fingerprint 9876543210");
    let err = changed.for_each_chunk(|_| Ok::<(), ()>(())).unwrap_err();
    assert!(
        matches!(&err, VfsError::ContentChanged { path, .. } if path == "/p/fingerprint"),
        "{err:?}"
    );
    // An empty file: one empty piece, so the caller sees the end.
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    let mut empties = 0;
    lazy(&empty, "/p/empty")
        .for_each_chunk(|piece| {
            assert!(piece.is_empty());
            empties += 1;
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(empties, 1);
}

#[test]
fn keeping_a_file_on_disk_is_not_a_change_and_leaves_clones_alone() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..150_000u32).map(|i| (i % 249) as u8).collect();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file("/p/out.bin", bytes.clone()).unwrap();
    vfs.set_mode("/p/out.bin", 0o755).unwrap();
    let before = vfs.stat("/p/out.bin").unwrap();
    let generation = vfs.generation();
    let clone = vfs.clone();
    // The caller wrote the same bytes to a host file.
    let host = dir.path().join("out.bin");
    fs::write(&host, &bytes).unwrap();
    vfs.keep_on_disk("/p/out.bin", lazy(&host, "/p/out.bin"))
        .unwrap();
    assert!(vfs.node("/p/out.bin").unwrap().is_lazy_unread());
    assert_eq!(vfs.generation(), generation, "not a change");
    assert!(vfs.changes_since("/", generation).unwrap().is_empty());
    let after = vfs.stat("/p/out.bin").unwrap();
    assert_eq!(
        (after.size, after.mode, after.mtime),
        (before.size, before.mode, before.mtime)
    );
    // The clone taken before still holds the bytes in memory.
    assert!(!clone.node("/p/out.bin").unwrap().is_lazy_unread());
    assert_eq!(&vfs.read_file("/p/out.bin").unwrap()[..], &bytes[..]);
    // A host file of another length is refused; directories and symlinks too.
    let short = dir.path().join("short.bin");
    fs::write(&short, &bytes[..10]).unwrap();
    vfs.write_file("/p/other.bin", bytes.clone()).unwrap();
    let err = vfs
        .keep_on_disk("/p/other.bin", lazy(&short, "/p/other.bin"))
        .unwrap_err();
    assert!(
        matches!(&err, VfsError::ContentChanged { origin, .. } if origin == &short),
        "{err:?}"
    );
    assert!(!vfs.node("/p/other.bin").unwrap().is_lazy_unread());
    assert!(matches!(
        vfs.keep_on_disk("/p", lazy(&host, "/p")),
        Err(VfsError::IsADirectory { .. })
    ));
    assert!(matches!(
        vfs.keep_on_disk("/p/missing", lazy(&host, "/p/missing")),
        Err(VfsError::NotFound { .. })
    ));
}
