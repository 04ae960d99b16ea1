//! The [`Vfs`] tree and its operations.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use std::sync::{Arc, Weak};

use crate::lazy::LazyContent;
use crate::node::{
    Children, DIR_MODE, FILE_MODE, FileData, Node, NodeData, NodeRef, Walk, WalkEntry,
};
use crate::path::{self, MAX_DEPTH, components, split_parent};
use crate::{Content, DirEntry, IntoContent, Metadata, NodeKind, VfsError};

/// Source of all generations in the process (see [`Vfs::generation`]).
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

fn fresh_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1
}

/// Default bound of the change log, in entries (see [`Vfs::set_history_limit`]).
pub const DEFAULT_HISTORY_LIMIT: usize = 1 << 17;

/// What changed under a path since a generation; see [`Vfs::changes_since`].
///
/// Apply `deleted` first (removing a missing path is a no-op), then `upserted` in order
/// (parents come before children). Renames appear as a deletion of the old path plus
/// upserts of the whole subtree at the new path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Absolute paths under the queried path removed (or replaced by another kind)
    /// since the generation: subtree roots only, sorted.
    pub deleted: Vec<String>,
    /// Absolute paths created or changed (content, mode, mtime, kind) since the
    /// generation, in pre-order (parents before children, children sorted by name).
    pub upserted: Vec<String>,
    /// The current generation: pass it to the next `changes_since` call.
    pub generation: u64,
}

impl Changes {
    /// `true` when nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty() && self.upserted.is_empty()
    }
}

/// What one change-log entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Logged {
    /// The path (and everything below it) was removed or replaced by another kind.
    Deleted,
    /// The node at the path was created or changed (not its children).
    Node,
    /// The subtree at the path was moved there (every node in it is new there).
    Tree,
}

/// One entry of the change log.
#[derive(Clone)]
struct LogEntry {
    generation: u64,
    what: Logged,
    path: String,
}

/// The in-memory workspace tree.
///
/// Cloning costs O(1) in the tree's size (plus its change log): directories are shared
/// copy on write, so a change to either tree afterwards copies only the directory maps on
/// its path; file contents are shared ([`Content`] is an `Arc`). The trees stay
/// independent values.
#[derive(Clone)]
pub struct Vfs {
    pub(crate) root: Node,
    pub(crate) cwd: String,
    generation: u64,
    /// Every change since `history_floor`, in generation order.
    log: Vec<LogEntry>,
    /// `changes_since(g)` is answerable only for `g >= history_floor`.
    history_floor: u64,
    history_limit: usize,
    /// Every lazy content put in this tree (or inherited by a clone) and not known to
    /// be read or dropped: what [`Vfs::materialize_shared_lazy`] looks at. Pruned when
    /// it doubles, so its length stays proportional to the live lazy nodes.
    lazy: Vec<(Weak<LazyContent>, String)>,
    lazy_prune_at: usize,
}

/// The lazy registry is pruned when it reaches this length (then twice what survived).
const LAZY_PRUNE_MIN: usize = 64;

impl Default for Vfs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Vfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vfs")
            .field("cwd", &self.cwd)
            .field("generation", &self.generation)
            .field(
                "root_entries",
                &self.root.children().map_or(0, |c| c.0.len()),
            )
            .finish_non_exhaustive()
    }
}

/// Error helpers.
fn not_found(path: &str) -> VfsError {
    VfsError::NotFound {
        path: path.to_owned(),
    }
}

fn not_a_dir(path: &str) -> VfsError {
    VfsError::NotADirectory {
        path: path.to_owned(),
    }
}

/// Walks `norm` from `root` (changes nothing on the way).
fn walk_mut<'a>(root: &'a mut Node, norm: &str) -> Result<&'a mut Node, VfsError> {
    let mut node = root;
    let mut prefix_len = 0;
    for name in components(norm) {
        let NodeData::Dir(children) = &mut node.data else {
            return Err(not_a_dir(&norm[..prefix_len]));
        };
        node = children
            .map_mut()
            .get_mut(name)
            .ok_or_else(|| not_found(norm))?;
        prefix_len += 1 + name.len();
    }
    Ok(node)
}

/// `true` when a proper ancestor of canonical `path` is in `set`.
fn has_ancestor_in(path: &str, set: &std::collections::BTreeSet<&str>) -> bool {
    let mut current = path;
    while current != "/" {
        current = split_parent(current).0;
        if set.contains(current) {
            return true;
        }
    }
    false
}

/// Pre-order of canonical paths: a parent before its children, siblings by name
/// (the order of [`Walk`] and of `BTreeMap<String, _>` keys).
fn preorder(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

fn walk_ref<'a>(root: &'a Node, norm: &str) -> Result<&'a Node, VfsError> {
    let mut node = root;
    let mut prefix_len = 0;
    for name in components(norm) {
        let NodeData::Dir(children) = &node.data else {
            return Err(not_a_dir(&norm[..prefix_len]));
        };
        node = children.0.get(name).ok_or_else(|| not_found(norm))?;
        crate::node::count_visit();
        prefix_len += 1 + name.len();
    }
    Ok(node)
}

/// Whether a directory map on the way to `norm` (the root's included) is shared with
/// another tree (a clone): then so is the node at `norm`.
fn path_is_shared(root: &Node, norm: &str) -> bool {
    let mut node = root;
    for name in components(norm) {
        let NodeData::Dir(children) = &node.data else {
            return false;
        };
        if Arc::strong_count(&children.0) > 1 {
            return true;
        }
        let Some(next) = children.0.get(name) else {
            return false;
        };
        node = next;
    }
    false
}

impl Vfs {
    /// An empty tree: root `/` (mode `0o755`), cwd `/`. Its history starts at a fresh
    /// [`generation`](Vfs::generation) (see there).
    #[must_use]
    pub fn new() -> Self {
        let start = fresh_generation();
        Self {
            root: Node::new_dir(DIR_MODE, SystemTime::now(), 0),
            cwd: "/".to_owned(),
            generation: start,
            log: Vec::new(),
            history_floor: start,
            history_limit: DEFAULT_HISTORY_LIMIT,
            lazy: Vec::new(),
            lazy_prune_at: LAZY_PRUNE_MIN,
        }
    }

    pub(crate) fn from_root(root: Node, cwd: String) -> Self {
        Self {
            root,
            cwd,
            ..Self::new()
        }
    }

    /// Canonical absolute form of `path` (absolute, or relative to the cwd): `.` dropped,
    /// `..` pops and clamps at `/`. Fails on an empty path, a NUL byte, or more than
    /// [`MAX_DEPTH`] components.
    ///
    /// # Errors
    /// [`VfsError::InvalidName`] naming the path.
    pub fn normalize(&self, path: &str) -> Result<String, VfsError> {
        path::normalize_with(&self.cwd, path)
    }

    /// The current directory (canonical absolute path).
    #[must_use]
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Changes the current directory; it must be an existing directory. (If that
    /// directory is removed later, the cwd keeps naming it and relative paths resolve
    /// below a missing directory until the cwd is set again.)
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn set_cwd(&mut self, path: &str) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        match walk_ref(&self.root, &norm)?.data {
            NodeData::Dir(_) => {
                self.cwd = norm;
                Ok(())
            }
            _ => Err(not_a_dir(&norm)),
        }
    }

    /// The current generation: advanced by every successful mutation (a failed one
    /// changes nothing). Generations come from one process-wide counter, so a value
    /// never means two different states: a generation taken from another tree (an
    /// earlier tree replaced by a loaded image, say) is older than this tree's history or
    /// newer than its present, and `changes_since` answers `HistoryUnavailable` instead
    /// of a wrong "nothing changed". (A clone shares the history up to the clone; after
    /// both change, generations of one must not be used with the other.)
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bounds the change log (one entry per created, changed, moved or removed path) to
    /// about `limit` entries (at least 1). When it overflows,
    /// the oldest half is dropped and `changes_since` for older generations returns
    /// [`VfsError::HistoryUnavailable`].
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit.max(1);
        self.trim_history();
    }

    /// Drops the whole change log: from now on `changes_since` answers only for the
    /// current generation and later ones. For an owner that never asks about the past
    /// (the sidecar's mirror, synchronised after every change): a clone of the tree
    /// then copies no history.
    pub fn forget_history(&mut self) {
        self.log = Vec::new();
        self.history_floor = self.generation;
    }

    /// Entries in the change log (tests check that failed operations log nothing).
    #[cfg(test)]
    pub(crate) fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Oldest generation `changes_since` can still answer for.
    #[must_use]
    pub fn oldest_answerable_generation(&self) -> u64 {
        self.history_floor
    }

    /// A generation for the next mutation (committed only if it succeeds).
    #[allow(clippy::unused_self)] // keeps call sites reading as "this tree's next generation"
    fn next_generation(&self) -> u64 {
        fresh_generation()
    }

    fn commit(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Records one change of a committed mutation in the change log.
    fn log(&mut self, generation: u64, what: Logged, path: String) {
        self.log.push(LogEntry {
            generation,
            what,
            path,
        });
        if self.log.len() > self.history_limit {
            self.trim_history();
        }
    }

    fn trim_history(&mut self) {
        if self.log.len() <= self.history_limit {
            return;
        }
        // Drop whole generations so that every remaining generation is complete.
        let cut = self.log[self.log.len() / 2].generation;
        let keep_from = self.log.partition_point(|t| t.generation <= cut);
        self.log.drain(..keep_from);
        self.history_floor = self.history_floor.max(cut);
    }

    /// Borrowed view of the node at `path`.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory` (a parent is not a directory), `InvalidName`.
    pub fn node(&self, path: &str) -> Result<NodeRef<'_>, VfsError> {
        let norm = self.normalize(path)?;
        Ok(NodeRef {
            node: walk_ref(&self.root, &norm)?,
        })
    }

    /// Creates a directory and any missing parents (like `mkdir -p`), mode `0o755`.
    /// An existing directory is fine and changes nothing.
    ///
    /// # Errors
    /// `NotADirectory` naming the component that is a file or symlink,
    /// `AlreadyExists` when the path itself is a file or symlink, `InvalidName`.
    pub fn mkdir(&mut self, path: &str) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        // Validate first: find the first missing component.
        let mut node = &self.root;
        let mut prefix_len = 0;
        let mut existing = 0;
        let mut missing = false;
        for name in components(&norm) {
            let NodeData::Dir(children) = &node.data else {
                return Err(not_a_dir(&norm[..prefix_len]));
            };
            prefix_len += 1 + name.len();
            if let Some(child) = children.0.get(name) {
                node = child;
                existing += 1;
            } else {
                missing = true;
                break;
            }
        }
        if !missing {
            return match node.data {
                NodeData::Dir(_) => Ok(()),
                _ => Err(VfsError::AlreadyExists { path: norm }),
            };
        }
        let generation = self.next_generation();
        let now = SystemTime::now();
        let mut node = &mut self.root;
        let mut created = Vec::new();
        let mut prefix_len = 0;
        for (index, name) in components(&norm).enumerate() {
            let NodeData::Dir(children) = &mut node.data else {
                unreachable!("validated above: every existing component is a directory");
            };
            prefix_len += 1 + name.len();
            if index >= existing {
                created.push(norm[..prefix_len].to_owned());
            }
            node = children
                .map_mut()
                .entry(name.to_owned())
                .or_insert_with(|| Node::new_dir(DIR_MODE, now, generation));
        }
        for path in created {
            self.log(generation, Logged::Node, path);
        }
        self.commit(generation);
        Ok(())
    }

    /// Creates or replaces a file with `content`; mtime becomes now. A new file gets
    /// mode `0o644`, a replaced file keeps its mode. The parent must exist. A symlink at
    /// the path is replaced by the file (never written through).
    ///
    /// # Errors
    /// `NotFound` (parent missing), `NotADirectory`, `IsADirectory`, `InvalidName` (also
    /// for a path ending in `/`, `.` or `..`, which names a directory, not a file).
    pub fn write_file(&mut self, path: &str, content: impl IntoContent) -> Result<(), VfsError> {
        let norm = path::normalize_entry_with(&self.cwd, path)?;
        self.put_file(
            &norm,
            FileData::Loaded(content.into_content()),
            None,
            SystemTime::now(),
        )
    }

    /// Like [`Vfs::write_file`] with an explicit mode (`& 0o7777`) and mtime.
    ///
    /// # Errors
    /// As [`Vfs::write_file`].
    pub fn write_file_with(
        &mut self,
        path: &str,
        content: impl IntoContent,
        mode: u32,
        mtime: SystemTime,
    ) -> Result<(), VfsError> {
        let norm = path::normalize_entry_with(&self.cwd, path)?;
        self.put_file(
            &norm,
            FileData::Loaded(content.into_content()),
            Some(mode),
            mtime,
        )
    }

    /// Like [`Vfs::write_file_with`] with content read on demand from a host file (see
    /// [`lazy`](crate::lazy)): nothing is read now; [`Vfs::stat`] reports
    /// [`LazyContent::len`], and the first read of the file reads the host file.
    ///
    /// # Errors
    /// As [`Vfs::write_file`].
    pub fn write_file_lazy(
        &mut self,
        path: &str,
        content: Arc<LazyContent>,
        mode: u32,
        mtime: SystemTime,
    ) -> Result<(), VfsError> {
        let norm = path::normalize_entry_with(&self.cwd, path)?;
        let weak = Arc::downgrade(&content);
        self.put_file(&norm, FileData::Lazy(content), Some(mode), mtime)?;
        self.register_lazy(weak, norm);
        Ok(())
    }

    /// Lets the file at `path` keep its bytes on disk: its in-memory content is replaced
    /// by `content`, a lazy content of a host file the caller has just written those very
    /// bytes to (a sidecar's copy, which then holds a descriptor instead of the bytes).
    /// This is not a change of the tree: no new generation, no history entry, mode and
    /// mtime kept, clones unaffected. The bytes are not compared (that would read the
    /// file): the caller vouches for them; only the lengths must agree. A file already
    /// lazy is left as it is.
    ///
    /// # Errors
    /// [`VfsError::NotFound`], [`VfsError::IsADirectory`] or [`VfsError::IsASymlink`]
    /// when `path` is not a file; [`VfsError::ContentChanged`] naming the host file
    /// when its length differs from the node's.
    pub fn keep_on_disk(&mut self, path: &str, content: Arc<LazyContent>) -> Result<(), VfsError> {
        let norm = path::normalize_entry_with(&self.cwd, path)?;
        let node = walk_mut(&mut self.root, &norm)?;
        let data = match &mut node.data {
            NodeData::File(data) => data,
            NodeData::Dir(_) => return Err(VfsError::IsADirectory { path: norm }),
            NodeData::Symlink(_) => return Err(VfsError::IsASymlink { path: norm }),
        };
        match data {
            FileData::Lazy(_) => return Ok(()),
            FileData::Loaded(bytes) if bytes.len() as u64 != content.len() => {
                return Err(VfsError::ContentChanged {
                    path: norm,
                    origin: content.origin().to_path_buf(),
                });
            }
            FileData::Loaded(_) => {}
        }
        let weak = Arc::downgrade(&content);
        *data = FileData::Lazy(content);
        self.register_lazy(weak, norm);
        Ok(())
    }

    /// Records a lazy content put at `norm` (for [`Self::materialize_shared_lazy`]).
    fn register_lazy(&mut self, weak: std::sync::Weak<LazyContent>, norm: String) {
        if self.lazy.len() >= self.lazy_prune_at {
            self.lazy
                .retain(|(weak, _)| weak.upgrade().is_some_and(|lazy| !lazy.is_loaded()));
            self.lazy_prune_at = (self.lazy.len() * 2).max(LAZY_PRUNE_MIN);
        }
        self.lazy.push((weak, norm));
    }

    /// Reads every lazy content put in this tree that someone else holds too (a clone of
    /// this [`Vfs`] sharing the node, or a clone holding a node this tree replaced since),
    /// so that a later in-place change of the host file cannot take its bytes from the
    /// other holder. Contents only this tree holds stay unread: the next pull replaces
    /// them if a tool changes their files. Costs one path lookup per lazy node registered
    /// (plus the reads), not a walk of the tree. Returns how many were read.
    ///
    /// A content that can no longer be read (its host file was already changed in
    /// place) stays unread and keeps answering [`VfsError::ContentChanged`]: its bytes
    /// are gone, and this call cannot bring them back.
    #[allow(
        clippy::must_use_candidate,
        reason = "called for its effect; the count is for tests and reports"
    )]
    pub fn materialize_shared_lazy(&self) -> usize {
        let mut read = 0;
        for (weak, path) in &self.lazy {
            let holders = weak.strong_count();
            if holders == 0 {
                continue;
            }
            // A tree holds one lazy content in one node at most, at the path it was
            // put at unless it moved since (then it is counted as held elsewhere, which
            // only reads it early).
            let held_here = walk_ref(&self.root, path).is_ok_and(|node| {
                matches!(&node.data, NodeData::File(FileData::Lazy(here))
                    if std::ptr::eq(Arc::as_ptr(here), weak.as_ptr()))
            });
            // A clone shares directory maps until either tree changes them: a node in a
            // shared map is held by the other tree too, with no extra count on its
            // content.
            if holders <= usize::from(held_here) && !path_is_shared(&self.root, path) {
                continue;
            }
            if let Some(lazy) = weak.upgrade()
                && !lazy.is_loaded()
                && lazy.load().is_ok()
            {
                read += 1;
            }
        }
        read
    }

    /// Reads every unread lazy content of the tree now (a walk of the whole tree).
    ///
    /// # Errors
    /// The first failure: [`VfsError::ContentChanged`] or [`VfsError::Io`].
    pub fn materialize_all(&self) -> Result<usize, VfsError> {
        let mut read = 0;
        for entry in self.walk("/")? {
            if entry.node.is_lazy_unread() {
                entry.content()?;
                read += 1;
            }
        }
        Ok(read)
    }

    /// Lazy contents registered and still unread (tests and diagnostics).
    #[must_use]
    pub fn unread_lazy_count(&self) -> usize {
        self.lazy
            .iter()
            .filter_map(|(weak, _)| weak.upgrade())
            .filter(|lazy| !lazy.is_loaded())
            .count()
    }

    fn put_file(
        &mut self,
        norm: &str,
        content: FileData,
        mode: Option<u32>,
        mtime: SystemTime,
    ) -> Result<(), VfsError> {
        if norm == "/" {
            return Err(VfsError::IsADirectory {
                path: norm.to_owned(),
            });
        }
        let (parent, name) = split_parent(norm);
        let generation = self.next_generation();
        let dir = walk_mut(&mut self.root, parent)?;
        let NodeData::Dir(children) = &mut dir.data else {
            return Err(not_a_dir(parent));
        };
        let mut replaced_kind = false;
        if let Some(existing) = children.map_mut().get_mut(name) {
            match &existing.data {
                NodeData::Dir(_) => {
                    return Err(VfsError::IsADirectory {
                        path: norm.to_owned(),
                    });
                }
                NodeData::File(_) => {
                    existing.data = NodeData::File(content);
                    existing.mode = mode.map_or(existing.mode, |m| m & 0o7777);
                    existing.mtime = mtime;
                    existing.generation = generation;
                }
                NodeData::Symlink(_) => {
                    *existing = Node::with_data(
                        NodeData::File(content),
                        mode.unwrap_or(FILE_MODE),
                        mtime,
                        generation,
                    );
                    replaced_kind = true;
                }
            }
        } else {
            children.map_mut().insert(
                name.to_owned(),
                Node::with_data(
                    NodeData::File(content),
                    mode.unwrap_or(FILE_MODE),
                    mtime,
                    generation,
                ),
            );
        }
        if replaced_kind {
            self.log(generation, Logged::Deleted, norm.to_owned());
        }
        self.log(generation, Logged::Node, norm.to_owned());
        self.commit(generation);
        Ok(())
    }

    /// The content of a file (a reference-count bump, no copy; a lazy content is read
    /// from its host file the first time, see [`lazy`](crate::lazy)).
    ///
    /// # Errors
    /// `NotFound`, `IsADirectory`, `IsASymlink`, `NotADirectory`, `InvalidName`; for
    /// lazy content `ContentChanged` (the host file was changed in place since the
    /// pull) or `Io` naming the host file.
    pub fn read_file(&self, path: &str) -> Result<Content, VfsError> {
        let norm = self.normalize(path)?;
        match &walk_ref(&self.root, &norm)?.data {
            NodeData::File(content) => content.get(&norm).map(Content::clone),
            NodeData::Dir(_) => Err(VfsError::IsADirectory { path: norm }),
            NodeData::Symlink(_) => Err(VfsError::IsASymlink { path: norm }),
        }
    }

    /// Entries of a directory, sorted by name.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, VfsError> {
        let norm = self.normalize(path)?;
        match &walk_ref(&self.root, &norm)?.data {
            NodeData::Dir(children) => Ok(children
                .0
                .iter()
                .map(|(name, node)| DirEntry {
                    name: name.clone(),
                    metadata: node.metadata(),
                })
                .collect()),
            _ => Err(not_a_dir(&norm)),
        }
    }

    /// Metadata of a node; never follows symlinks.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn stat(&self, path: &str) -> Result<Metadata, VfsError> {
        let norm = self.normalize(path)?;
        Ok(walk_ref(&self.root, &norm)?.metadata())
    }

    /// `true` when a node exists at `path` (an invalid path does not exist).
    #[must_use]
    pub fn exists(&self, path: &str) -> bool {
        self.normalize(path)
            .is_ok_and(|norm| walk_ref(&self.root, &norm).is_ok())
    }

    /// Removes a file, symlink, or directory with everything below it.
    ///
    /// # Errors
    /// `RootNotRemovable`, `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn remove(&mut self, path: &str) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        if norm == "/" {
            return Err(VfsError::RootNotRemovable);
        }
        let (parent, name) = split_parent(&norm);
        walk_ref(&self.root, &norm)?;
        let generation = self.next_generation();
        let dir = walk_mut(&mut self.root, parent)?;
        let NodeData::Dir(children) = &mut dir.data else {
            return Err(not_a_dir(parent));
        };
        let removed = children.map_mut().remove(name);
        debug_assert!(removed.is_some(), "existence checked above");
        self.log(generation, Logged::Deleted, norm);
        self.commit(generation);
        Ok(())
    }

    /// Moves a node (and its subtree) to `to`. An existing `to` is replaced when both
    /// are non-directories, or both are directories and `to` is empty.
    ///
    /// # Errors
    /// `RootNotRemovable`, `InvalidRename` (into its own subtree, onto `/`), `NotFound`,
    /// `NotADirectory`, `IsADirectory`, `DirectoryNotEmpty`, `InvalidName`.
    ///
    /// # Panics
    /// Never (the `expect` guards an invariant checked just before).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), VfsError> {
        let from = self.normalize(from)?;
        let to = self.normalize(to)?;
        if from == "/" {
            return Err(VfsError::RootNotRemovable);
        }
        let source = walk_ref(&self.root, &from)?;
        if from == to {
            return Ok(());
        }
        if to == "/" {
            return Err(VfsError::InvalidRename {
                from,
                to,
                reason: "the destination is the root",
            });
        }
        if path::is_within(&to, &from) {
            return Err(VfsError::InvalidRename {
                from,
                to,
                reason: "the destination lies inside the source",
            });
        }
        if path::depth(&to) + source.height() > MAX_DEPTH {
            return Err(VfsError::InvalidName {
                path: to,
                reason: format!("the moved tree would be deeper than {MAX_DEPTH} components"),
            });
        }
        let source_is_dir = matches!(source.data, NodeData::Dir(_));
        let (to_parent, to_name) = split_parent(&to);
        let target_parent = walk_ref(&self.root, to_parent)?;
        let Some(target_children) = target_parent.children() else {
            return Err(not_a_dir(to_parent));
        };
        let replaces = match target_children.0.get(to_name) {
            None => false,
            Some(existing) => match (&existing.data, source_is_dir) {
                (NodeData::Dir(children), true) if children.0.is_empty() => true,
                (NodeData::Dir(_), true) => return Err(VfsError::DirectoryNotEmpty { path: to }),
                (NodeData::Dir(_), false) => return Err(VfsError::IsADirectory { path: to }),
                (_, true) => return Err(not_a_dir(&to)),
                (_, false) => true,
            },
        };
        let generation = self.next_generation();
        let (from_parent, from_name) = split_parent(&from);
        let NodeData::Dir(children) = &mut walk_mut(&mut self.root, from_parent)?.data else {
            unreachable!("the source exists, so its parent is a directory");
        };
        let mut moved = children
            .map_mut()
            .remove(from_name)
            .expect("the source exists (checked above)");
        moved.restamp_subtree(generation);
        let NodeData::Dir(children) = &mut walk_mut(&mut self.root, to_parent)?.data else {
            unreachable!("the destination parent is a directory (checked above)");
        };
        children.map_mut().insert(to_name.to_owned(), moved);
        self.log(generation, Logged::Deleted, from);
        if replaces {
            self.log(generation, Logged::Deleted, to.clone());
        }
        self.log(generation, Logged::Tree, to);
        self.commit(generation);
        Ok(())
    }

    /// Creates an empty file (mode `0o644`) if nothing exists at `path`; otherwise only
    /// sets the node's mtime to now. Never truncates.
    ///
    /// # Errors
    /// `NotFound` (parent missing), `NotADirectory`, `InvalidName` (also for a path
    /// ending in `/`, `.` or `..` when nothing exists there to touch).
    pub fn touch(&mut self, path: &str) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        let now = SystemTime::now();
        if walk_ref(&self.root, &norm).is_ok() {
            return self.update(&norm, |node| node.mtime = now);
        }
        // Only an existing node may be named with a trailing `/` (as `touch dir/` does).
        path::normalize_entry_with(&self.cwd, path)?;
        self.put_file(&norm, FileData::Loaded(Content::from(&[][..])), None, now)
    }

    /// Sets the permission bits (`mode & 0o7777`). Symlinks have no mode of their own
    /// (always `0o777`); setting one is a no-op.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn set_mode(&mut self, path: &str, mode: u32) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        let node = walk_ref(&self.root, &norm)?;
        if node.kind() == NodeKind::Symlink || node.mode == mode & 0o7777 {
            return Ok(());
        }
        self.update(&norm, |node| node.mode = mode & 0o7777)
    }

    /// Sets the modification time of any node.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn set_mtime(&mut self, path: &str, mtime: SystemTime) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        if walk_ref(&self.root, &norm)?.mtime == mtime {
            return Ok(());
        }
        self.update(&norm, |node| node.mtime = mtime)
    }

    /// Applies a metadata change to an existing node as one mutation.
    fn update(&mut self, norm: &str, change: impl FnOnce(&mut Node)) -> Result<(), VfsError> {
        let generation = self.next_generation();
        let node = walk_mut(&mut self.root, norm)?;
        change(node);
        node.generation = generation;
        self.log(generation, Logged::Node, norm.to_owned());
        self.commit(generation);
        Ok(())
    }

    /// Creates a symlink at `link_path` pointing to `target` (stored as text, never
    /// followed), mtime now.
    ///
    /// # Errors
    /// `AlreadyExists`, `NotFound` (parent missing), `NotADirectory`, `InvalidName`
    /// (also for an empty target or one containing NUL, and for a link path ending in
    /// `/`, `.` or `..`).
    pub fn symlink(&mut self, target: &str, link_path: &str) -> Result<(), VfsError> {
        self.symlink_with(target, link_path, SystemTime::now())
    }

    /// Like [`Vfs::symlink`] with an explicit mtime.
    ///
    /// # Errors
    /// As [`Vfs::symlink`].
    pub fn symlink_with(
        &mut self,
        target: &str,
        link_path: &str,
        mtime: SystemTime,
    ) -> Result<(), VfsError> {
        if target.is_empty() || target.contains('\0') {
            return Err(VfsError::InvalidName {
                path: target.to_owned(),
                reason: "a symlink target must be non-empty and free of NUL bytes".to_owned(),
            });
        }
        let norm = path::normalize_entry_with(&self.cwd, link_path)?;
        if walk_ref(&self.root, &norm).is_ok() {
            return Err(VfsError::AlreadyExists { path: norm });
        }
        let (parent, name) = split_parent(&norm);
        let generation = self.next_generation();
        let NodeData::Dir(children) = &mut walk_mut(&mut self.root, parent)?.data else {
            return Err(not_a_dir(parent));
        };
        children.map_mut().insert(
            name.to_owned(),
            Node::with_data(
                NodeData::Symlink(target.to_owned()),
                0o777,
                mtime,
                generation,
            ),
        );
        self.log(generation, Logged::Node, norm);
        self.commit(generation);
        Ok(())
    }

    /// The target of a symlink.
    ///
    /// # Errors
    /// `NotASymlink`, `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn read_link(&self, path: &str) -> Result<String, VfsError> {
        let norm = self.normalize(path)?;
        match &walk_ref(&self.root, &norm)?.data {
            NodeData::Symlink(target) => Ok(target.clone()),
            _ => Err(VfsError::NotASymlink { path: norm }),
        }
    }

    /// Borrowed pre-order walk of the subtree at `path`, the node itself first, children
    /// sorted by name.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`.
    pub fn walk(&self, path: &str) -> Result<Walk<'_>, VfsError> {
        let norm = self.normalize(path)?;
        let node = walk_ref(&self.root, &norm)?;
        Ok(Walk {
            stack: vec![WalkEntry {
                path: norm,
                node: NodeRef { node },
            }],
        })
    }

    /// Writes the subtree at `path` to the host: the node becomes `host_dir/<last
    /// segment>`; the root writes its children straight into `host_dir` (created if
    /// missing). Keeps modes, mtimes and symlinks. Anything in the way at a destination
    /// is replaced (never written through); extra host entries are left alone.
    ///
    /// # Errors
    /// `NotFound`, `NotADirectory`, `InvalidName`, `Io` naming the host path.
    pub fn copy_tree_to_host(&self, path: &str, host_dir: &Path) -> Result<(), VfsError> {
        let norm = self.normalize(path)?;
        let node = walk_ref(&self.root, &norm)?;
        crate::host::copy_to_host(node, &norm, host_dir)
    }

    /// What changed under `path` since `generation` (see [`Changes`]). Reads only the
    /// change-log entries newer than `generation` (binary search) and looks each changed
    /// path up in the tree: time proportional to the number of changes since then times
    /// the depth (plus the size of subtrees moved since then, which are all changes),
    /// never to the tree size or to a directory's fan-out.
    ///
    /// # Errors
    /// `HistoryUnavailable` when `generation` is older than the kept change history or
    /// newer than the current generation (not from this tree: do a full sync),
    /// `NotFound` when `path` does not exist now, `NotADirectory`, `InvalidName`.
    pub fn changes_since(&self, path: &str, generation: u64) -> Result<Changes, VfsError> {
        if generation < self.history_floor || generation > self.generation {
            return Err(VfsError::HistoryUnavailable { since: generation });
        }
        let norm = self.normalize(path)?;
        walk_ref(&self.root, &norm)?;

        let first = self.log.partition_point(|t| t.generation <= generation);
        let mut deleted: Vec<String> = Vec::new();
        let mut changed: Vec<&str> = Vec::new();
        let mut moved: Vec<&str> = Vec::new();
        for entry in &self.log[first..] {
            let below = path::is_within(&entry.path, &norm);
            match entry.what {
                Logged::Deleted if below => deleted.push(entry.path.clone()),
                // An ancestor was removed (and the path re-created): everything old goes.
                Logged::Deleted if path::is_within(&norm, &entry.path) => {
                    deleted.push(norm.clone());
                }
                Logged::Node if below => changed.push(&entry.path),
                Logged::Tree if below => moved.push(&entry.path),
                // An ancestor was moved here: the whole queried subtree is new.
                Logged::Tree if path::is_within(&norm, &entry.path) => moved.push(&norm),
                Logged::Deleted | Logged::Node | Logged::Tree => {}
            }
        }
        deleted.sort_unstable();
        deleted.dedup();
        if deleted.len() > 1 {
            let all: std::collections::BTreeSet<&str> =
                deleted.iter().map(String::as_str).collect();
            let roots: Vec<String> = deleted
                .iter()
                .filter(|p| !has_ancestor_in(p, &all))
                .cloned()
                .collect();
            deleted = roots;
        }

        // Moved subtrees: every node in them changed; walk each outermost one once.
        moved.sort_unstable_by(|a, b| preorder(a, b));
        moved.dedup();
        let mut outermost: Vec<&str> = Vec::new();
        for root in moved {
            if outermost
                .last()
                .is_none_or(|last| !path::is_within(root, last))
            {
                outermost.push(root);
            }
        }
        let mut upserted: Vec<String> = Vec::new();
        for root in &outermost {
            // The subtree may have been removed (or a path inside it replaced) later.
            if let Ok(node) = walk_ref(&self.root, root) {
                let walk = Walk {
                    stack: vec![WalkEntry {
                        path: (*root).to_owned(),
                        node: NodeRef { node },
                    }],
                };
                upserted.extend(
                    walk.filter(|entry| entry.node.node.generation > generation)
                        .map(|entry| entry.path),
                );
            }
        }
        // Single nodes: still there and changed since (a later removal or replacement
        // is then covered by its own entries).
        let in_moved = |p: &str| {
            let index = outermost.partition_point(|root| preorder(root, p).is_le());
            index > 0 && path::is_within(p, outermost[index - 1])
        };
        changed.sort_unstable_by(|a, b| preorder(a, b));
        changed.dedup();
        for node_path in changed {
            if in_moved(node_path) {
                continue;
            }
            if walk_ref(&self.root, node_path).is_ok_and(|node| node.generation > generation) {
                upserted.push(node_path.to_owned());
            }
        }
        upserted.sort_unstable_by(|a, b| preorder(a, b));
        Ok(Changes {
            deleted,
            upserted,
            generation: self.generation,
        })
    }

    /// `true` when both trees hold the same nodes with the same kinds, metadata,
    /// contents and link targets (generations and cwd are not compared). Lazy contents
    /// are read to compare them, unless both sides hold the same one; one that cannot
    /// be read (`ContentChanged`) makes the trees not known to be the same: `false`.
    #[must_use]
    pub fn same_tree(&self, other: &Self) -> bool {
        let mut left = Walk {
            stack: vec![WalkEntry {
                path: "/".to_owned(),
                node: NodeRef { node: &self.root },
            }],
        };
        let mut right = Walk {
            stack: vec![WalkEntry {
                path: "/".to_owned(),
                node: NodeRef { node: &other.root },
            }],
        };
        loop {
            match (left.next(), right.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) => {
                    if a.path != b.path
                        || a.node.metadata() != b.node.metadata()
                        || a.node.link_target() != b.node.link_target()
                    {
                        return false;
                    }
                    if let (NodeData::File(x), NodeData::File(y)) =
                        (&a.node.node.data, &b.node.node.data)
                        && !x.same_source(y)
                    {
                        match (x.get(&a.path), y.get(&b.path)) {
                            (Ok(x), Ok(y)) if x[..] == y[..] => {}
                            _ => return false,
                        }
                    }
                }
                _ => return false,
            }
        }
    }

    /// Number of nodes in the tree, the root included.
    #[must_use]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<&Children> = Vec::new();
        count += 1;
        if let Some(children) = self.root.children() {
            stack.push(children);
        }
        while let Some(children) = stack.pop() {
            count += children.0.len();
            stack.extend(children.0.values().filter_map(Node::children));
        }
        count
    }
}
