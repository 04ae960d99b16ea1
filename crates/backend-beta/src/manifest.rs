//! The `sync_request` manifest of a push: which staging paths should now hold which
//! file sizes, and which should be gone, so a sidecar with `sync-verify` can tell that
//! it really shares the staging directory with us.
//!
//! Built from the VFS before the push: the files changed since the generation staging
//! last matched (all files the first time, or when the VFS no longer keeps that much
//! history) and the deleted subtree roots. Directories and symlinks carry no size and
//! are left out. Paths are relative to the staging directory (`0/app/src/main.rs`).

use std::path::Path;
use std::time::UNIX_EPOCH;

use devshell_vm_protocol::{ManifestAction, ManifestEntry};
use devshell_vm_sync::SyncState;
use devshell_vm_vfs::{Metadata, NodeKind, Vfs};

/// At most this many entries per manifest (a first push of a huge tree is verified in
/// part rather than sent as one enormous frame).
pub(crate) const MANIFEST_LIMIT: usize = 20_000;

/// The manifest for pushing VFS subtree `root` through `state` (see the module docs).
/// Empty when the layout cannot be expressed relative to `staging`.
pub(crate) fn entries(
    vfs: &Vfs,
    root: &str,
    state: &SyncState,
    staging: &Path,
    synced_generation: Option<u64>,
) -> Vec<ManifestEntry> {
    let Some(leaf_rel) = state
        .leaf_dir(root)
        .ok()
        .and_then(|leaf| leaf.strip_prefix(staging).ok().map(Path::to_path_buf))
        .and_then(|rel| rel.to_str().map(str::to_owned))
    else {
        return Vec::new();
    };
    let staging_path = |vfs_path: &str| -> String {
        let rest = if root == "/" {
            vfs_path.trim_start_matches('/')
        } else {
            vfs_path
                .strip_prefix(root)
                .unwrap_or_default()
                .trim_start_matches('/')
        };
        match (leaf_rel.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_owned(),
            (false, true) => leaf_rel.clone(),
            (false, false) => format!("{leaf_rel}/{rest}"),
        }
    };

    let mut out = Vec::new();
    let changes = synced_generation.and_then(|g| vfs.changes_since(root, g).ok());
    match changes {
        Some(changes) => {
            for path in &changes.upserted {
                if out.len() >= MANIFEST_LIMIT {
                    break;
                }
                if let Ok(meta) = vfs.stat(path)
                    && meta.kind == NodeKind::File
                {
                    out.push(upsert(staging_path(path), &meta));
                }
            }
            for path in &changes.deleted {
                if out.len() >= MANIFEST_LIMIT {
                    break;
                }
                // Deleted and created again since: the upsert (if a file) says it all.
                if vfs.exists(path) {
                    continue;
                }
                out.push(ManifestEntry {
                    path: staging_path(path),
                    action: ManifestAction::Delete,
                    size: None,
                    mtime_unix_ms: None,
                });
            }
        }
        None => {
            if let Ok(walk) = vfs.walk(root) {
                for entry in walk {
                    if out.len() >= MANIFEST_LIMIT {
                        break;
                    }
                    let meta = entry.node.metadata();
                    if meta.kind == NodeKind::File {
                        out.push(upsert(staging_path(&entry.path), &meta));
                    }
                }
            }
        }
    }
    out
}

fn upsert(path: String, meta: &Metadata) -> ManifestEntry {
    ManifestEntry {
        path,
        action: ManifestAction::Upsert,
        size: Some(meta.size),
        mtime_unix_ms: meta
            .mtime
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(entries: &[ManifestEntry]) -> Vec<(String, ManifestAction, Option<u64>)> {
        entries
            .iter()
            .map(|e| (e.path.clone(), e.action, e.size))
            .collect()
    }

    #[test]
    fn first_push_lists_every_file_under_the_leaf_then_only_changes() {
        let staging = tempfile::tempdir().unwrap();
        let project = staging.path().join("0");
        let state = SyncState::new(&project);
        let mut vfs = Vfs::new();
        vfs.mkdir("/w/app/src").unwrap();
        vfs.write_file("/w/app/Cargo.toml", b"toml".to_vec())
            .unwrap();
        vfs.write_file("/w/app/src/main.rs", b"fn main(){}".to_vec())
            .unwrap();
        vfs.write_file("/w/app/gone.txt", b"x".to_vec()).unwrap();
        vfs.symlink("src", "/w/app/link").unwrap();
        let first = entries(&vfs, "/w/app", &state, staging.path(), None);
        assert_eq!(
            paths(&first),
            [
                (
                    "0/app/Cargo.toml".to_owned(),
                    ManifestAction::Upsert,
                    Some(4)
                ),
                ("0/app/gone.txt".to_owned(), ManifestAction::Upsert, Some(1)),
                (
                    "0/app/src/main.rs".to_owned(),
                    ManifestAction::Upsert,
                    Some(11)
                ),
            ]
        );
        assert!(
            first
                .iter()
                .all(|e| e.mtime_unix_ms.is_some_and(|ms| ms > 0))
        );

        let synced = vfs.generation();
        vfs.write_file("/w/app/src/main.rs", b"fn main() {}\n".to_vec())
            .unwrap();
        vfs.remove("/w/app/gone.txt").unwrap();
        // Deleted and created again: only the upsert.
        vfs.remove("/w/app/Cargo.toml").unwrap();
        vfs.write_file("/w/app/Cargo.toml", b"toml2".to_vec())
            .unwrap();
        let mut next = paths(&entries(
            &vfs,
            "/w/app",
            &state,
            staging.path(),
            Some(synced),
        ));
        next.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            next,
            [
                (
                    "0/app/Cargo.toml".to_owned(),
                    ManifestAction::Upsert,
                    Some(5)
                ),
                ("0/app/gone.txt".to_owned(), ManifestAction::Delete, None),
                (
                    "0/app/src/main.rs".to_owned(),
                    ManifestAction::Upsert,
                    Some(13)
                ),
            ]
        );
    }

    #[test]
    fn root_project_maps_to_the_project_dir_itself() {
        let staging = tempfile::tempdir().unwrap();
        let state = SyncState::new(staging.path().join("3"));
        let mut vfs = Vfs::new();
        vfs.write_file("/a.txt", b"abc".to_vec()).unwrap();
        let all = entries(&vfs, "/", &state, staging.path(), None);
        assert_eq!(
            paths(&all),
            [("3/a.txt".to_owned(), ManifestAction::Upsert, Some(3))]
        );
    }
}
