//! Tree nodes, metadata and the borrowed views handed out by [`Vfs`](crate::Vfs).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::VfsError;
use crate::lazy::{LazyContent, LoadError};

/// File content: shared, immutable bytes. Cloning is a reference-count bump.
pub type Content = Arc<[u8]>;

/// The kind of a node. The VFS stores symlinks as text and never follows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

/// Metadata of one node (what `lstat` would say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// What the node is.
    pub kind: NodeKind,
    /// Permission bits (`mode & 0o7777`); symlinks always report `0o777`.
    pub mode: u32,
    /// Last modification time, with nanoseconds.
    pub mtime: SystemTime,
    /// Content length for files, target length for symlinks, 0 for directories.
    pub size: u64,
}

/// One entry of [`Vfs::list_dir`](crate::Vfs::list_dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (one path component).
    pub name: String,
    /// Its metadata.
    pub metadata: Metadata,
}

/// Mode of new directories.
pub(crate) const DIR_MODE: u32 = 0o755;
/// Mode of new files.
pub(crate) const FILE_MODE: u32 = 0o644;
/// Mode reported for symlinks.
pub(crate) const SYMLINK_MODE: u32 = 0o777;

/// A node of the tree.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) data: NodeData,
    pub(crate) mode: u32,
    pub(crate) mtime: SystemTime,
    /// Generation of the last change to this node itself (creation, content, metadata,
    /// or a move of it or of an ancestor).
    pub(crate) generation: u64,
}

/// What a node holds.
#[derive(Clone)]
pub(crate) enum NodeData {
    Dir(Children),
    File(FileData),
    Symlink(String),
}

/// A file's content: bytes in memory, or read on demand from a host file.
#[derive(Clone)]
pub(crate) enum FileData {
    Loaded(Content),
    Lazy(Arc<LazyContent>),
}

impl FileData {
    /// The content's length (never reads).
    pub(crate) fn len(&self) -> u64 {
        match self {
            Self::Loaded(content) => content.len() as u64,
            Self::Lazy(lazy) => lazy.len(),
        }
    }

    /// The bytes (reading a lazy content on first use); errors name `path`.
    pub(crate) fn get(&self, path: &str) -> Result<&Content, VfsError> {
        match self {
            Self::Loaded(content) => Ok(content),
            Self::Lazy(lazy) => lazy.load().map_err(|err| match err {
                LoadError::Changed => VfsError::ContentChanged {
                    path: path.to_owned(),
                    origin: lazy.origin().to_path_buf(),
                },
                LoadError::Io(source) => VfsError::Io {
                    path: lazy.origin().to_path_buf(),
                    source,
                },
            }),
        }
    }

    /// The bytes when they are in memory (no read).
    pub(crate) fn loaded(&self) -> Option<&Content> {
        match self {
            Self::Loaded(content) => Some(content),
            Self::Lazy(lazy) => lazy.loaded(),
        }
    }

    /// `true` when both hold the same bytes for certain without reading (the same
    /// shared allocation or the same lazy content).
    pub(crate) fn same_source(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Loaded(a), Self::Loaded(b)) => Arc::ptr_eq(a, b),
            (Self::Lazy(a), Self::Lazy(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Children of a directory, sorted by name. The map is shared between clones of a
/// tree until one of them changes this directory (copy on write): cloning a tree costs
/// O(1), and a change after a clone copies only the maps on its path (each holding its
/// children's nodes, whose own maps stay shared). Dropped iteratively so that a deep
/// tree cannot overflow the stack.
#[derive(Default, Clone)]
pub(crate) struct Children(pub(crate) Arc<BTreeMap<String, Node>>);

impl Children {
    /// The map, to change: copied first if another tree shares it.
    pub(crate) fn map_mut(&mut self) -> &mut BTreeMap<String, Node> {
        Arc::make_mut(&mut self.0)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        // Only the last holder of a map takes it apart; a shared one is just released.
        let Some(map) = Arc::get_mut(&mut self.0) else {
            return;
        };
        if map.is_empty() {
            return;
        }
        let mut pending = vec![std::mem::take(map)];
        while let Some(map) = pending.pop() {
            for (_, mut node) in map {
                if let NodeData::Dir(children) = &mut node.data
                    && let Some(inner) = Arc::get_mut(&mut children.0)
                    && !inner.is_empty()
                {
                    pending.push(std::mem::take(inner));
                }
            }
        }
    }
}

impl Node {
    pub(crate) fn new_dir(mode: u32, mtime: SystemTime, generation: u64) -> Self {
        Self::with_data(NodeData::Dir(Children::default()), mode, mtime, generation)
    }

    pub(crate) fn with_data(data: NodeData, mode: u32, mtime: SystemTime, generation: u64) -> Self {
        Self {
            data,
            mode: mode & 0o7777,
            mtime,
            generation,
        }
    }

    pub(crate) fn kind(&self) -> NodeKind {
        match self.data {
            NodeData::Dir(_) => NodeKind::Dir,
            NodeData::File(_) => NodeKind::File,
            NodeData::Symlink(_) => NodeKind::Symlink,
        }
    }

    pub(crate) fn metadata(&self) -> Metadata {
        let (kind, size, mode) = match &self.data {
            NodeData::Dir(_) => (NodeKind::Dir, 0, self.mode),
            NodeData::File(content) => (NodeKind::File, content.len(), self.mode),
            NodeData::Symlink(target) => (NodeKind::Symlink, target.len() as u64, SYMLINK_MODE),
        };
        Metadata {
            kind,
            mode,
            mtime: self.mtime,
            size,
        }
    }

    pub(crate) fn children(&self) -> Option<&Children> {
        match &self.data {
            NodeData::Dir(children) => Some(children),
            _ => None,
        }
    }

    /// Marks this node and its whole subtree as changed at `generation` (used by rename).
    pub(crate) fn restamp_subtree(&mut self, generation: u64) {
        let mut stack: Vec<&mut Node> = vec![self];
        while let Some(node) = stack.pop() {
            node.generation = generation;
            if let NodeData::Dir(children) = &mut node.data {
                stack.extend(children.map_mut().values_mut());
            }
        }
    }

    /// Depth of the subtree below this node (a leaf has height 0).
    pub(crate) fn height(&self) -> usize {
        let mut max = 0;
        let mut stack: Vec<(&Node, usize)> = vec![(self, 0)];
        while let Some((node, depth)) = stack.pop() {
            max = max.max(depth);
            if let NodeData::Dir(children) = &node.data {
                stack.extend(children.0.values().map(|child| (child, depth + 1)));
            }
        }
        max
    }
}

#[cfg(test)]
thread_local! {
    /// Nodes looked at by path lookups and walks on this thread (tests bound the work of
    /// `changes_since` with it).
    pub(crate) static VISITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts one node looked at (tests only; nothing in normal builds).
#[inline]
pub(crate) fn count_visit() {
    #[cfg(test)]
    VISITS.with(|visits| visits.set(visits.get() + 1));
}

/// A borrowed view of one node, as yielded by [`Vfs::walk`](crate::Vfs::walk).
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    pub(crate) node: &'a Node,
}

impl<'a> NodeRef<'a> {
    /// The node's metadata.
    #[must_use]
    pub fn metadata(&self) -> Metadata {
        self.node.metadata()
    }

    /// The node's kind.
    #[must_use]
    pub fn kind(&self) -> NodeKind {
        self.node.kind()
    }

    /// File content (`None` for directories and symlinks). Content pulled lazily
    /// (see [`lazy`](crate::lazy)) is read here on first use.
    ///
    /// # Errors
    /// For lazy content only: [`VfsError::ContentChanged`] (naming the path the file
    /// was recorded at: a bare node does not know its path; [`WalkEntry::content`]
    /// names the walked path) when the host file was changed in place since, or
    /// [`VfsError::Io`] naming the host file.
    pub fn content(&self) -> Result<Option<&'a Content>, VfsError> {
        match &self.node.data {
            NodeData::File(FileData::Lazy(lazy)) => {
                self.file_content(lazy.recorded_vfs_path()).map(Some)
            }
            NodeData::File(file) => file.get("").map(Some),
            _ => Ok(None),
        }
    }

    /// File content with errors naming `path`.
    fn file_content(self, path: &str) -> Result<&'a Content, VfsError> {
        match &self.node.data {
            NodeData::File(file) => file.get(path),
            _ => Err(VfsError::IsADirectory {
                path: path.to_owned(),
            }),
        }
    }

    /// `true` for a file whose content has not been read from its host file yet.
    #[must_use]
    pub fn is_lazy_unread(&self) -> bool {
        matches!(&self.node.data, NodeData::File(FileData::Lazy(lazy)) if !lazy.is_loaded())
    }

    /// The lazy content of a file pulled without reading it (`None` for content held
    /// in memory from the start, directories and symlinks).
    #[must_use]
    pub fn lazy(&self) -> Option<&'a Arc<LazyContent>> {
        match &self.node.data {
            NodeData::File(FileData::Lazy(lazy)) => Some(lazy),
            _ => None,
        }
    }

    /// Symlink target (`None` for directories and files).
    #[must_use]
    pub fn link_target(&self) -> Option<&'a str> {
        match &self.node.data {
            NodeData::Symlink(target) => Some(target),
            _ => None,
        }
    }

    /// Generation of the last change to this node itself.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.node.generation
    }

    /// Number of children for a directory (`None` otherwise).
    #[must_use]
    pub fn child_count(&self) -> Option<usize> {
        self.node.children().map(|children| children.0.len())
    }
}

impl fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeRef")
            .field("metadata", &self.metadata())
            .field("generation", &self.node.generation)
            .finish_non_exhaustive()
    }
}

/// One item of a [`Walk`]: the canonical absolute path and a view of the node.
#[derive(Debug, Clone)]
pub struct WalkEntry<'a> {
    /// Canonical absolute path of the node.
    pub path: String,
    /// The node.
    pub node: NodeRef<'a>,
}

impl<'a> WalkEntry<'a> {
    /// [`NodeRef::content`] with errors naming this entry's path.
    ///
    /// # Errors
    /// As [`NodeRef::content`].
    pub fn content(&self) -> Result<Option<&'a Content>, VfsError> {
        match self.node.kind() {
            NodeKind::File => self.node.file_content(&self.path).map(Some),
            _ => Ok(None),
        }
    }
}

/// Borrowed pre-order iterator over a subtree (the start node first, children sorted by
/// name). Created by [`Vfs::walk`](crate::Vfs::walk).
#[derive(Debug)]
pub struct Walk<'a> {
    pub(crate) stack: Vec<WalkEntry<'a>>,
}

impl<'a> Iterator for Walk<'a> {
    type Item = WalkEntry<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.stack.pop()?;
        if let NodeData::Dir(children) = &entry.node.node.data {
            let base = if entry.path == "/" {
                ""
            } else {
                entry.path.as_str()
            };
            for (name, child) in children.0.iter().rev() {
                let mut path = String::with_capacity(base.len() + 1 + name.len());
                path.push_str(base);
                path.push('/');
                path.push_str(name);
                count_visit();
                self.stack.push(WalkEntry {
                    path,
                    node: NodeRef { node: child },
                });
            }
        }
        Some(entry)
    }
}
