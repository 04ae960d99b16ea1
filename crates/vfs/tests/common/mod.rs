//! Shared helpers of the vfs integration tests: random trees and tree signatures.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devshell_vm_vfs::{Metadata, Vfs};
use proptest::prelude::*;

/// Names worth testing: plain, dotfiles, spaces, backslash, non-ASCII, `...`.
pub const NAMES: &[&str] = &["a", "b", ".h", "x y", "b\\s", "ü€", "..."];

/// A name from [`NAMES`].
pub fn name() -> impl Strategy<Value = String> {
    prop::sample::select(NAMES).prop_map(str::to_owned)
}

/// An absolute path of 1..=3 components from [`NAMES`].
pub fn rel_path() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::collection::vec(name(), 1..=1),
        3 => prop::collection::vec(name(), 2..=2),
        2 => prop::collection::vec(name(), 3..=3),
    ]
    .prop_map(|parts| format!("/{}", parts.join("/")))
}

/// An mtime with nanoseconds, before and after the epoch.
pub fn mtime() -> impl Strategy<Value = SystemTime> {
    (0u64..4_000_000_000, 0u32..1_000_000_000, any::<bool>()).prop_map(|(secs, nanos, after)| {
        if after {
            UNIX_EPOCH + Duration::new(secs, nanos)
        } else {
            UNIX_EPOCH - Duration::new(secs % 1_000_000, nanos)
        }
    })
}

/// Permission bits that keep the owner able to traverse directories.
pub fn mode() -> impl Strategy<Value = u32> {
    prop::sample::select(&[0o755u32, 0o700, 0o750, 0o777, 0o711, 0o4755, 0o1777][..])
}

/// Small file contents, sometimes empty.
pub fn content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

/// One step that builds a random tree.
#[derive(Debug, Clone)]
pub enum Build {
    Dir(String, u32, SystemTime),
    File(String, Vec<u8>, u32, SystemTime),
    Link(String, String, SystemTime),
}

fn build_step() -> impl Strategy<Value = Build> {
    prop_oneof![
        (rel_path(), mode(), mtime()).prop_map(|(p, m, t)| Build::Dir(p, m, t)),
        (rel_path(), content(), mode(), mtime()).prop_map(|(p, c, m, t)| Build::File(p, c, m, t)),
        (rel_path(), "[a-z./]{1,12}", mtime()).prop_map(|(p, target, t)| Build::Link(p, target, t)),
    ]
}

/// A random tree (steps that fail, e.g. a file in the way, are skipped).
pub fn tree() -> impl Strategy<Value = Vfs> {
    (
        prop::collection::vec(build_step(), 0..40),
        prop::option::of(rel_path()),
    )
        .prop_map(|(steps, cwd)| {
            let mut vfs = Vfs::new();
            for step in steps {
                let _ = match step {
                    Build::Dir(p, m, t) => vfs
                        .mkdir(&p)
                        .and_then(|()| vfs.set_mode(&p, m))
                        .and_then(|()| vfs.set_mtime(&p, t)),
                    Build::File(p, c, m, t) => {
                        parent(&mut vfs, &p).and_then(|()| vfs.write_file_with(&p, c, m, t))
                    }
                    Build::Link(p, target, t) => {
                        parent(&mut vfs, &p).and_then(|()| vfs.symlink_with(&target, &p, t))
                    }
                };
            }
            if let Some(cwd) = cwd {
                let _ = vfs.set_cwd(&cwd);
            }
            vfs
        })
}

fn parent(vfs: &mut Vfs, path: &str) -> Result<(), devshell_vm_vfs::VfsError> {
    match path.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => vfs.mkdir(dir),
        _ => Ok(()),
    }
}

/// Everything observable about one node, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub metadata: Metadata,
    pub content: Option<Vec<u8>>,
    pub target: Option<String>,
}

/// The observable state of the subtree at `path`, paths relative to it.
pub fn signature(vfs: &Vfs, path: &str) -> Vec<Seen> {
    let base = vfs.normalize(path).expect("valid path");
    vfs.walk(&base)
        .expect("subtree exists")
        .map(|entry| Seen {
            path: if base == "/" {
                entry.path.trim_start_matches('/').to_owned()
            } else {
                entry.path[base.len()..].trim_start_matches('/').to_owned()
            },
            metadata: entry.node.metadata(),
            content: entry.node.content().unwrap().map(|c| c.to_vec()),
            target: entry.node.link_target().map(str::to_owned),
        })
        .collect()
}
