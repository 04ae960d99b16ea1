//! `wire-sync` helpers shared by the client and the sidecar: the wire entry of a VFS
//! node, and applying a set of wire changes to a VFS subtree.
//!
//! Both ends of a `wire-sync` connection keep a [`Vfs`] of the project (the client its
//! workspace, the sidecar a mirror of it) and a [`Manifest`] of what the other end has;
//! these functions are the one definition of how a [`WireEntry`] maps onto the tree.
//!
//! ```
//! use std::collections::HashMap;
//! use devshell_vm_protocol::{Manifest, WireEntry, digest_hex};
//! use devshell_vm_sync::wire::{apply_changes, entry_of};
//! use devshell_vm_vfs::{Content, Vfs};
//!
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/p")?;
//! let data = Content::from(&b"hi"[..]);
//! let entry = WireEntry::file("a/x", 0o755, 1_000_000_123, 2, digest_hex(&data));
//! let contents = HashMap::from([(digest_hex(&data), data)]);
//! let mut manifest = Manifest::default();
//! apply_changes(&mut vfs, "/p", &mut manifest, &[], &[WireEntry::dir("a", 0o700, 5), entry.clone()], &contents)?;
//! assert_eq!(entry_of(&vfs, "/p/a/x", "a/x")?.0, entry);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devshell_vm_protocol::{Manifest, WireEntry, WireKind, digest_hex};
use devshell_vm_vfs::{Content, LazyContent, NodeKind, NodeRef, Vfs, VfsError};

use crate::VmSyncError;

/// Nanoseconds since the Unix epoch (negative before it; saturating).
#[must_use]
pub fn time_to_ns(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

/// The time `ns` nanoseconds after (or before) the Unix epoch.
#[must_use]
pub fn ns_to_time(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// `root/rel` as a VFS path.
#[must_use]
pub fn join(root: &str, rel: &str) -> String {
    if root == "/" {
        format!("/{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

/// `path` relative to `root` (`None` for the root itself or a path outside it).
#[must_use]
pub fn relative<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let rest = if root == "/" {
        path.strip_prefix('/')?
    } else {
        path.strip_prefix(root)?.strip_prefix('/')?
    };
    (!rest.is_empty()).then_some(rest)
}

/// The wire entry of the node at VFS path `path` (named `rel` on the wire) and, for a
/// file, its content. Hashes the content (BLAKE3).
///
/// # Errors
/// The VFS lookup's error.
pub fn entry_of(
    vfs: &Vfs,
    path: &str,
    rel: &str,
) -> Result<(WireEntry, Option<Content>), VfsError> {
    entry_of_node(vfs.node(path)?, rel)
}

/// [`entry_of`] for a node already at hand (from [`Vfs::walk`]): no path lookup.
///
/// # Errors
/// Reading a lazy content failed.
pub fn entry_of_node(
    node: NodeRef<'_>,
    rel: &str,
) -> Result<(WireEntry, Option<Content>), VfsError> {
    let (mut entry, content) = entry_of_node_unhashed(node, rel)?;
    if let Some(content) = &content {
        entry.digest = Some(digest_hex(content));
    }
    Ok((entry, content))
}

/// As [`entry_of_node`], but a file's entry has no digest (for a streamed push
/// without digests, where hashing is done while the bytes travel).
///
/// # Errors
/// Reading a lazy content failed.
pub fn entry_of_node_unhashed(
    node: NodeRef<'_>,
    rel: &str,
) -> Result<(WireEntry, Option<Content>), VfsError> {
    let meta = node.metadata();
    let mtime = time_to_ns(meta.mtime);
    Ok(match meta.kind {
        NodeKind::Dir => (WireEntry::dir(rel, meta.mode, mtime), None),
        NodeKind::Symlink => (
            WireEntry::symlink(rel, mtime, node.link_target().unwrap_or_default()),
            None,
        ),
        NodeKind::File => {
            let content = node
                .content()?
                .map_or_else(|| Content::from(&[][..]), Content::clone);
            let mut entry = file_entry(node, rel, content.len() as u64, String::new());
            entry.digest = None;
            (entry, Some(content))
        }
    })
}

/// The entry of the file at `node` with the given size and digest.
fn file_entry(node: NodeRef<'_>, rel: &str, size: u64, digest: String) -> WireEntry {
    let meta = node.metadata();
    WireEntry::file(rel, meta.mode, time_to_ns(meta.mtime), size, digest)
}

/// For a file whose content is still unread on disk (a [`LazyContent`] a pull left in
/// the VFS), its entry with the digest of its bytes, hashed piece by piece from the
/// host file without loading them, and the content (still unread) to send from the same
/// file later; `None` for any other node. So a sidecar hashes and forwards a tool's
/// large outputs without a buffer the size of each file and without keeping them in
/// memory.
///
/// # Errors
/// [`VfsError::ContentChanged`] when the host file changed since the pull recorded it,
/// [`VfsError::Io`] when reading it failed.
pub fn entry_of_unread(
    node: NodeRef<'_>,
    rel: &str,
) -> Result<Option<(WireEntry, std::sync::Arc<LazyContent>)>, VfsError> {
    let Some(lazy) = node.lazy().filter(|lazy| !lazy.is_loaded()) else {
        return Ok(None);
    };
    let mut hasher = blake3::Hasher::new();
    let fed = lazy.for_each_chunk(|piece| {
        hasher.update(piece);
        Ok::<(), std::convert::Infallible>(())
    })?;
    let Ok(()) = fed;
    let digest = hasher.finalize().to_hex().to_string();
    Ok(Some((
        file_entry(node, rel, lazy.len(), digest),
        std::sync::Arc::clone(lazy),
    )))
}

/// A listed entry and its content, or `None` for an index that lists nothing.
pub type Listed = Option<(WireEntry, Option<Content>)>;

/// Runs `entry(i)` for every `i < count` on up to one thread per core (at most 8, and
/// one more thread only per `per_thread` indices), each index taken by the next free
/// thread, and returns what it gave (`None`: nothing for that index) in index order.
/// Hashing is most of the work of listing files for the wire (a full push's manifest, a
/// pull's changed files), so this is how both sides share it out; a few large files
/// never wait behind each other on one thread. The first error is returned.
///
/// # Errors
/// An error of `entry`, or a note that a thread panicked.
pub fn entries_in_parallel<T: Send>(
    count: usize,
    per_thread: usize,
    entry: impl Fn(usize) -> Result<Option<T>, String> + Sync,
) -> Result<Vec<T>, String> {
    type Found<T> = Result<Vec<(usize, T)>, String>;
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 8)
        .min(count / per_thread.max(1) + 1)
        .min(count.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> Found<T> {
        let mut found = Vec::new();
        loop {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if index >= count {
                return Ok(found);
            }
            if let Some(item) = entry(index)? {
                found.push((index, item));
            }
        }
    };
    let parts: Vec<Found<T>> = if threads <= 1 {
        vec![work()]
    } else {
        std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut parts = vec![work()];
            for handle in others {
                parts.push(
                    handle
                        .join()
                        .unwrap_or_else(|_| Err("a hashing thread panicked".to_owned())),
                );
            }
            parts
        })
    };
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    all.sort_unstable_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, item)| item).collect())
}

/// Applies `deleted` (subtree roots, missing ones ignored), then `entries` (parents
/// before children) to the subtree at `root` and to `manifest`. `contents` holds every
/// file entry's content by digest. Apply to a clone when the caller needs all or
/// nothing: a failure leaves `vfs` part-way.
///
/// # Errors
/// [`VmSyncError::WireApply`] naming the entry.
pub fn apply_changes<S: std::hash::BuildHasher>(
    vfs: &mut Vfs,
    root: &str,
    manifest: &mut Manifest,
    deleted: &[String],
    entries: &[WireEntry],
    contents: &HashMap<String, Content, S>,
) -> Result<(), VmSyncError> {
    for rel in deleted {
        if let Err(reason) = devshell_vm_protocol::check_relative_path(rel) {
            return Err(VmSyncError::WireApply {
                path: rel.clone(),
                reason,
            });
        }
        match vfs.remove(&join(root, rel)) {
            Ok(()) | Err(VfsError::NotFound { .. }) => {}
            Err(err) => {
                return Err(VmSyncError::WireApply {
                    path: rel.clone(),
                    reason: err.to_string(),
                });
            }
        }
        manifest.remove_subtree(rel);
    }
    for entry in entries {
        apply_entry(
            vfs,
            root,
            manifest,
            entry,
            contents.get(entry.digest.as_deref().unwrap_or_default()),
        )?;
        manifest.upsert(entry.clone());
    }
    Ok(())
}

/// Applies one wire entry to the subtree at `root` (replacing a node of another kind, and
/// dropping its subtree from `manifest`), with `content` for a file. The entry is not
/// added to `manifest`: [`apply_changes`] does that, and a caller building a manifest
/// of its own (the sidecar's streamed push) does not need it.
///
/// # Errors
/// [`VmSyncError::WireApply`] naming the entry: an invalid entry, a file without content
/// or with content of another size, a VFS refusal.
pub fn apply_entry(
    vfs: &mut Vfs,
    root: &str,
    manifest: &mut Manifest,
    entry: &WireEntry,
    content: Option<&Content>,
) -> Result<(), VmSyncError> {
    let fail = |err: VfsError| VmSyncError::WireApply {
        path: entry.path.clone(),
        reason: err.to_string(),
    };
    if let Err(reason) = entry.validate() {
        return Err(VmSyncError::WireApply {
            path: entry.path.clone(),
            reason,
        });
    }
    let path = join(root, &entry.path);
    let existing = vfs.stat(&path).ok().map(|m| m.kind);
    let wanted = match entry.kind {
        WireKind::Dir => NodeKind::Dir,
        WireKind::File => NodeKind::File,
        WireKind::Symlink => NodeKind::Symlink,
    };
    if existing.is_some_and(|kind| kind != wanted || kind == NodeKind::Symlink) {
        vfs.remove(&path).map_err(fail)?;
        manifest.remove_subtree(&entry.path);
    }
    let mtime = ns_to_time(entry.mtime_ns);
    match entry.kind {
        WireKind::Dir => {
            if existing != Some(NodeKind::Dir) {
                vfs.mkdir(&path).map_err(fail)?;
            }
            vfs.set_mode(&path, entry.mode).map_err(fail)?;
            vfs.set_mtime(&path, mtime).map_err(fail)?;
        }
        WireKind::File => {
            let digest = entry.digest.as_deref().unwrap_or_default();
            let content = content.ok_or_else(|| VmSyncError::WireApply {
                path: entry.path.clone(),
                reason: format!("no content for digest {digest}"),
            })?;
            if content.len() as u64 != entry.size {
                return Err(VmSyncError::WireApply {
                    path: entry.path.clone(),
                    reason: format!(
                        "the entry says {} bytes but its content has {}",
                        entry.size,
                        content.len()
                    ),
                });
            }
            vfs.write_file_with(&path, Content::clone(content), entry.mode, mtime)
                .map_err(fail)?;
        }
        WireKind::Symlink => {
            vfs.symlink_with(entry.target.as_deref().unwrap_or_default(), &path, mtime)
                .map_err(fail)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_nanosecond() {
        for ns in [0, 1, -1, 1_700_000_000_123_456_789, -86_400_000_000_001] {
            assert_eq!(time_to_ns(ns_to_time(ns)), ns);
        }
    }

    #[test]
    fn apply_replaces_kinds_and_deletes_subtrees() {
        let mut vfs = Vfs::new();
        vfs.mkdir("/p/d/e").unwrap();
        vfs.write_file("/p/d/e/f", b"x".to_vec()).unwrap();
        let mut manifest = Manifest::default();
        let data = Content::from(&b"new"[..]);
        let contents = HashMap::from([(digest_hex(&data), data.clone())]);
        let entries = [
            WireEntry::file("d", 0o600, 7, 3, digest_hex(&data)),
            WireEntry::symlink("l", 9, "d"),
        ];
        apply_changes(&mut vfs, "/p", &mut manifest, &[], &entries, &contents).unwrap();
        assert_eq!(&vfs.read_file("/p/d").unwrap()[..], b"new");
        assert_eq!(vfs.read_link("/p/l").unwrap(), "d");
        assert_eq!(manifest.len(), 2);
        apply_changes(
            &mut vfs,
            "/p",
            &mut manifest,
            &["d".to_owned()],
            &[],
            &contents,
        )
        .unwrap();
        assert!(!vfs.exists("/p/d"));
        assert_eq!(manifest.len(), 1);
        // A deletion that climbs out of the root is refused.
        let err = apply_changes(
            &mut vfs,
            "/p",
            &mut manifest,
            &["../q".to_owned()],
            &[],
            &contents,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"../q\""), "{err}");
        // Missing content is an error naming the path.
        let bad = [WireEntry::file("z", 0o644, 0, 1, digest_hex(b"q"))];
        let err = apply_changes(&mut vfs, "/p", &mut manifest, &[], &bad, &contents).unwrap_err();
        assert!(err.to_string().contains("\"z\""), "{err}");
    }

    #[test]
    fn relative_and_join_agree() {
        assert_eq!(relative("/p", "/p/a/b"), Some("a/b"));
        assert_eq!(relative("/p", "/p"), None);
        assert_eq!(relative("/p", "/pq/a"), None);
        assert_eq!(relative("/", "/a"), Some("a"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/p", "a"), "/p/a");
    }
}
