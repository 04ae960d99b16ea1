//! Helpers shared by the sync integration tests: tree snapshots of both sides.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    reason = "shared test helpers; each test uses a subset"
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devshell_vm_vfs::{NodeKind, Vfs};

/// One node of a snapshot: kind, mode (not for symlinks), mtime (not for dirs unless
/// asked), and content or link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snap {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: SystemTime,
        content: Vec<u8>,
    },
    Symlink {
        target: String,
    },
}

/// Relative path → node, for the subtree at `vfs_path` (the root itself excluded).
pub fn vfs_snapshot(vfs: &Vfs, vfs_path: &str) -> BTreeMap<String, Snap> {
    let root = vfs.normalize(vfs_path).unwrap();
    let mut out = BTreeMap::new();
    for entry in vfs.walk(&root).unwrap().skip(1) {
        let rel = if root == "/" {
            entry.path[1..].to_owned()
        } else {
            entry.path[root.len() + 1..].to_owned()
        };
        let meta = entry.node.metadata();
        let snap = match meta.kind {
            NodeKind::Dir => Snap::Dir { mode: meta.mode },
            NodeKind::File => Snap::File {
                mode: meta.mode,
                mtime: meta.mtime,
                content: entry.content().unwrap().unwrap().to_vec(),
            },
            NodeKind::Symlink => Snap::Symlink {
                target: entry.node.link_target().unwrap().to_owned(),
            },
        };
        out.insert(rel, snap);
    }
    out
}

/// Host time from metadata, with nanoseconds.
pub fn host_mtime(meta: &fs::Metadata) -> SystemTime {
    let secs = meta.mtime();
    let nanos = u32::try_from(meta.mtime_nsec()).unwrap();
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// Relative path → node for a host directory (never follows symlinks).
pub fn host_snapshot(dir: &Path) -> BTreeMap<String, Snap> {
    let mut out = BTreeMap::new();
    walk_host(dir, "", &mut out);
    out
}

fn walk_host(dir: &Path, rel: &str, out: &mut BTreeMap<String, Snap>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(Result::unwrap).collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let name = entry
            .file_name()
            .into_string()
            .expect("test trees use UTF-8 names");
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path())
                .unwrap()
                .into_os_string()
                .into_string()
                .unwrap();
            out.insert(child_rel, Snap::Symlink { target });
        } else if meta.is_dir() {
            out.insert(
                child_rel.clone(),
                Snap::Dir {
                    mode: meta.permissions().mode() & 0o7777,
                },
            );
            walk_host(&entry.path(), &child_rel, out);
        } else {
            out.insert(
                child_rel,
                Snap::File {
                    mode: meta.permissions().mode() & 0o7777,
                    mtime: host_mtime(&meta),
                    content: fs::read(entry.path()).unwrap(),
                },
            );
        }
    }
}

/// Asserts two snapshots are equal, printing the first difference.
pub fn assert_same(left: &BTreeMap<String, Snap>, right: &BTreeMap<String, Snap>, what: &str) {
    for (path, l) in left {
        match right.get(path) {
            None => panic!("{what}: {path} only on the left: {l:?}"),
            Some(r) if r != l => panic!("{what}: {path} differs:\n  left:  {l:?}\n  right: {r:?}"),
            Some(_) => {}
        }
    }
    for (path, r) in right {
        assert!(
            left.contains_key(path),
            "{what}: {path} only on the right: {r:?}"
        );
    }
}

/// A fixed, old mtime (so test files never count as just-written).
pub fn old_time(offset_secs: u64) -> SystemTime {
    UNIX_EPOCH
        + Duration::from_secs(1_600_000_000 + offset_secs)
        + Duration::from_nanos(123_456_789)
}
