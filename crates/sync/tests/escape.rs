//! Escape suite: symlinks planted in the staging leaf (to outside files and
//! directories, dangling, looping), hard links, `..`, type swaps and a replaced leaf.
//! A sentinel directory beside the staging directory must stay exactly as it was
//! (content, mode, mtime, ctime, inode, link count, listing: every write, chmod, utime,
//! link or unlink changes one of them), nothing may appear outside the staging
//! directory, and no sentinel content may reach the VFS (it would mean a read).

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use devshell_vm_sync::{
    SyncState, VmSyncError, pull_workspace_to_vfs, push_full, push_incremental,
};
use devshell_vm_vfs::{NodeKind, Vfs};
use support::old_time;

const SECRET: &[u8] = b"SENTINEL-SECRET-7f3a";

/// `base/` holds `staging/` and `sentinel/` side by side.
struct World {
    base: tempfile::TempDir,
    before: BTreeMap<String, String>,
    base_listing: Vec<String>,
}

fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path).unwrap();
    let body = if meta.file_type().is_symlink() {
        format!("link:{}", fs::read_link(path).unwrap().display())
    } else if meta.is_dir() {
        let mut names: Vec<String> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        format!("dir:{names:?}")
    } else {
        format!("file:{:?}", fs::read(path).unwrap())
    };
    format!(
        "{body} mode={:o} mtime={}.{} ctime={}.{} ino={} nlink={}",
        meta.mode(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.ino(),
        meta.nlink()
    )
}

fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        out.insert(rel, describe(&path));
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl World {
    fn new() -> Self {
        let base = tempfile::tempdir().unwrap();
        let sentinel = base.path().join("sentinel");
        fs::create_dir_all(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("secret"), SECRET).unwrap();
        fs::write(sentinel.join("old.rs"), SECRET).unwrap();
        fs::write(sentinel.join("main.rs"), SECRET).unwrap();
        fs::write(sentinel.join("sub/deep"), SECRET).unwrap();
        fs::create_dir(base.path().join("staging")).unwrap();
        let before = snapshot(&sentinel);
        let base_listing = listing(base.path());
        Self {
            base,
            before,
            base_listing,
        }
    }

    fn staging(&self) -> PathBuf {
        self.base.path().join("staging")
    }

    fn sentinel(&self) -> PathBuf {
        self.base.path().join("sentinel")
    }

    fn leaf(&self) -> PathBuf {
        self.staging().join("app")
    }

    /// The sentinel is byte-for-byte and stat-for-stat unchanged, nothing new appeared
    /// beside the staging directory, and no sentinel content is in the VFS.
    fn check(&self, vfs: &Vfs, step: &str) {
        let after = snapshot(&self.sentinel());
        assert_eq!(self.before, after, "{step}: the sentinel changed");
        assert_eq!(
            self.base_listing,
            listing(self.base.path()),
            "{step}: something was created outside staging"
        );
        for entry in vfs.walk("/").unwrap() {
            if let Some(content) = entry.content().unwrap() {
                assert!(
                    !content.windows(SECRET.len()).any(|w| w == SECRET),
                    "{step}: sentinel content was read into the VFS at {}",
                    entry.path
                );
            }
        }
    }
}

fn project() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/p/app/src").unwrap();
    vfs.write_file_with(
        "/p/app/Cargo.toml",
        b"[package]".to_vec(),
        0o644,
        old_time(1),
    )
    .unwrap();
    vfs.write_file_with(
        "/p/app/src/main.rs",
        b"fn main() {}".to_vec(),
        0o644,
        old_time(2),
    )
    .unwrap();
    vfs.write_file_with("/p/app/src/old.rs", b"old".to_vec(), 0o644, old_time(3))
        .unwrap();
    vfs
}

#[test]
fn planted_symlinks_are_pulled_as_links_and_replaced_on_push() {
    let world = World::new();
    let mut vfs = project();
    let mut state = SyncState::new(world.staging());
    push_full(&vfs, "/p/app", &mut state).unwrap();
    let leaf = world.leaf();
    symlink(world.sentinel().join("secret"), leaf.join("out-file")).unwrap();
    symlink("../../sentinel", leaf.join("out-dir")).unwrap();
    symlink("../../sentinel/sub", leaf.join("src/out-rel")).unwrap();
    symlink("/nonexistent/target", leaf.join("dangling")).unwrap();
    symlink("loop-b", leaf.join("loop-a")).unwrap();
    symlink("loop-a", leaf.join("loop-b")).unwrap();
    symlink("self", leaf.join("self")).unwrap();
    let report = pull_workspace_to_vfs(&mut state, "/p/app", &mut vfs).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    for (name, target) in [
        ("/p/app/out-dir", "../../sentinel"),
        ("/p/app/dangling", "/nonexistent/target"),
        ("/p/app/loop-a", "loop-b"),
        ("/p/app/self", "self"),
    ] {
        assert_eq!(vfs.stat(name).unwrap().kind, NodeKind::Symlink, "{name}");
        assert_eq!(vfs.read_link(name).unwrap(), target);
    }
    world.check(&vfs, "pull of planted links");

    // The VFS now writes where the links are: the links are replaced, never followed.
    vfs.remove("/p/app/out-file").unwrap();
    vfs.write_file("/p/app/out-file", b"mine".to_vec()).unwrap();
    vfs.remove("/p/app/out-dir").unwrap();
    vfs.mkdir("/p/app/out-dir/sub").unwrap();
    vfs.write_file("/p/app/out-dir/secret", b"mine".to_vec())
        .unwrap();
    vfs.write_file("/p/app/out-dir/sub/deep", b"mine".to_vec())
        .unwrap();
    vfs.remove("/p/app/src/out-rel").unwrap();
    vfs.write_file("/p/app/src/out-rel", b"mine".to_vec())
        .unwrap();
    push_incremental(&vfs, "/p/app", &mut state).unwrap();
    assert_eq!(fs::read(leaf.join("out-dir/secret")).unwrap(), b"mine");
    assert!(
        !fs::symlink_metadata(leaf.join("out-dir"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    world.check(&vfs, "push over pulled links");
}

#[test]
fn links_planted_after_a_pull_are_never_written_through() {
    let world = World::new();
    let mut vfs = project();
    let mut state = SyncState::new(world.staging());
    push_full(&vfs, "/p/app", &mut state).unwrap();
    let leaf = world.leaf();
    // Behind the sync's back: src becomes a link to the sentinel, Cargo.toml a link to
    // the secret, and a hard link to the secret appears.
    fs::remove_dir_all(leaf.join("src")).unwrap();
    symlink(world.sentinel(), leaf.join("src")).unwrap();
    fs::remove_file(leaf.join("Cargo.toml")).unwrap();
    symlink(world.sentinel().join("secret"), leaf.join("Cargo.toml")).unwrap();
    let hard = world.base.path().join("hard-src");
    fs::write(&hard, b"hard").unwrap();
    fs::hard_link(&hard, leaf.join("hard")).unwrap();
    // Unlinking our name of it lowers its link count (and so its ctime); its content
    // and mtime must not move.
    let hard_view = |p: &Path| {
        let meta = fs::metadata(p).unwrap();
        (
            fs::read(p).unwrap(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino(),
        )
    };
    let hard_before = hard_view(&hard);

    vfs.write_file("/p/app/src/main.rs", b"fn main() { edited() }".to_vec())
        .unwrap();
    vfs.remove("/p/app/src/old.rs").unwrap();
    vfs.write_file("/p/app/Cargo.toml", b"[package] edited".to_vec())
        .unwrap();
    vfs.write_file("/p/app/hard", b"overwritten".to_vec())
        .unwrap();
    push_incremental(&vfs, "/p/app", &mut state).unwrap();
    assert_eq!(
        fs::read(leaf.join("src/main.rs")).unwrap(),
        b"fn main() { edited() }"
    );
    assert_eq!(fs::read(leaf.join("hard")).unwrap(), b"overwritten");
    assert_eq!(
        hard_view(&hard),
        hard_before,
        "a write went through a hard link"
    );
    fs::remove_file(&hard).unwrap();
    world.check(&vfs, "incremental push");

    // A full push over links to outside directories unlinks them, never recursing.
    fs::remove_dir_all(leaf.join("src")).unwrap();
    symlink(world.sentinel(), leaf.join("src")).unwrap();
    symlink(world.sentinel(), leaf.join("extra-link")).unwrap();
    push_full(&vfs, "/p/app", &mut state).unwrap();
    assert!(!leaf.join("extra-link").exists());
    assert!(fs::symlink_metadata(leaf.join("src")).unwrap().is_dir());
    world.check(&vfs, "full push");
}

#[test]
fn a_leaf_replaced_by_a_symlink_is_refused_by_pull_and_replaced_by_push() {
    let world = World::new();
    let mut vfs = project();
    let mut state = SyncState::new(world.staging());
    push_full(&vfs, "/p/app", &mut state).unwrap();
    fs::remove_dir_all(world.leaf()).unwrap();
    symlink(world.sentinel(), world.leaf()).unwrap();
    let before = vfs.clone();
    let err = pull_workspace_to_vfs(&mut state, "/p/app", &mut vfs).unwrap_err();
    assert!(
        matches!(&err, VmSyncError::Escape { path } if *path == world.leaf()),
        "{err}"
    );
    assert!(vfs.same_tree(&before));
    world.check(&vfs, "pull through a leaf link");

    vfs.write_file("/p/app/src/main.rs", b"edited".to_vec())
        .unwrap();
    push_incremental(&vfs, "/p/app", &mut state).unwrap();
    assert!(fs::symlink_metadata(world.leaf()).unwrap().is_dir());
    world.check(&vfs, "push over a leaf link");

    // A leaf replaced by a plain file.
    fs::remove_dir_all(world.leaf()).unwrap();
    fs::write(world.leaf(), "file").unwrap();
    let err = pull_workspace_to_vfs(&mut state, "/p/app", &mut vfs).unwrap_err();
    assert!(
        matches!(err, VmSyncError::LeafNotADirectory { .. }),
        "{err}"
    );
    world.check(&vfs, "pull of a file leaf");
}

#[test]
fn type_swaps_to_links_mirror_links_and_read_nothing_outside() {
    let world = World::new();
    let mut vfs = project();
    let mut state = SyncState::new(world.staging());
    push_full(&vfs, "/p/app", &mut state).unwrap();
    let leaf = world.leaf();
    fs::remove_dir_all(leaf.join("src")).unwrap();
    symlink("../../sentinel", leaf.join("src")).unwrap(); // dir -> link to outside dir
    fs::remove_file(leaf.join("Cargo.toml")).unwrap();
    symlink("../../sentinel/secret", leaf.join("Cargo.toml")).unwrap(); // file -> link
    pull_workspace_to_vfs(&mut state, "/p/app", &mut vfs).unwrap();
    assert_eq!(vfs.read_link("/p/app/src").unwrap(), "../../sentinel");
    assert_eq!(
        vfs.read_link("/p/app/Cargo.toml").unwrap(),
        "../../sentinel/secret"
    );
    assert!(!vfs.exists("/p/app/src/main.rs"));
    world.check(&vfs, "pull of type swaps");
    // And back: the links become a file and a directory again.
    vfs.remove("/p/app/src").unwrap();
    vfs.mkdir("/p/app/src").unwrap();
    vfs.write_file("/p/app/src/main.rs", b"x".to_vec()).unwrap();
    vfs.remove("/p/app/Cargo.toml").unwrap();
    vfs.write_file("/p/app/Cargo.toml", b"y".to_vec()).unwrap();
    push_incremental(&vfs, "/p/app", &mut state).unwrap();
    assert_eq!(fs::read(leaf.join("src/main.rs")).unwrap(), b"x");
    world.check(&vfs, "push back over type swaps");
}

#[test]
fn dot_dot_never_leaves_the_staging_directory() {
    let world = World::new();
    let state = SyncState::new(world.staging());
    assert_eq!(state.leaf_dir("/../../..").unwrap(), world.staging());
    assert_eq!(
        state.leaf_dir("/a/../../sentinel").unwrap(),
        world.staging().join("sentinel")
    );
    let mut vfs = Vfs::new();
    assert!(vfs.mkdir("/p/..").is_ok(), "the VFS clamps `..` lexically");
    assert!(vfs.write_file("/p/a\0b", b"x".to_vec()).is_err());
    // A push of `/p/../sentinel` is the VFS path `/sentinel`: leaf staging/sentinel.
    vfs.mkdir("/sentinel").unwrap();
    vfs.write_file("/sentinel/secret", b"overwrite?".to_vec())
        .unwrap();
    let mut state = SyncState::new(world.staging());
    push_full(&vfs, "/p/../sentinel", &mut state).unwrap();
    assert_eq!(
        fs::read(world.staging().join("sentinel/secret")).unwrap(),
        b"overwrite?"
    );
    for bad in ["../x", "a/../../b", "/../y"] {
        assert!(state.set_excludes(&[bad]).is_err(), "{bad} accepted");
    }
    let after = snapshot(&world.sentinel());
    assert_eq!(world.before, after, "the real sentinel changed");
}
