//! [`SyncState`]: the per-staging-directory manifest, leaf bindings and excludes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::VmSyncError;
use crate::hostio::{HostKind, HostMeta, Ts};
use crate::report::SyncProgress;

/// One recorded host entry: its metadata when last synced, the VFS generation it was
/// synced at, and (for directories) its children.
#[derive(Debug, Clone)]
pub(crate) struct MEntry {
    pub(crate) meta: HostMeta,
    /// VFS generation at which this entry was last pushed or pulled.
    pub(crate) generation: u64,
    /// The entry's mtime was not older than the clock when it was recorded: an edit in
    /// the same clock tick could leave every stat field unchanged, so the next pull reads
    /// it anyway (the "racy git" rule).
    pub(crate) racy: bool,
    pub(crate) children: Option<HashMap<Box<str>, MEntry>>,
}

impl MEntry {
    pub(crate) fn new(meta: HostMeta, generation: u64, observed_at: Ts) -> Self {
        Self {
            meta,
            generation,
            racy: meta.mtime >= observed_at,
            children: (meta.kind == HostKind::Dir).then(HashMap::new),
        }
    }

    /// Updates the recorded metadata, keeping children.
    pub(crate) fn refresh(&mut self, meta: HostMeta, generation: u64, observed_at: Ts) {
        self.meta = meta;
        self.generation = generation;
        self.racy = meta.mtime >= observed_at;
        if meta.kind == HostKind::Dir {
            self.children.get_or_insert_with(HashMap::new);
        } else {
            self.children = None;
        }
    }

    /// The entry at `rel` (`""` is this entry).
    pub(crate) fn get(&self, rel: &str) -> Option<&MEntry> {
        let mut node = self;
        for name in rel_components(rel) {
            node = node.children.as_ref()?.get(name)?;
        }
        Some(node)
    }

    /// The entry at `rel`, mutably.
    pub(crate) fn get_mut(&mut self, rel: &str) -> Option<&mut MEntry> {
        let mut node = self;
        for name in rel_components(rel) {
            node = node.children.as_mut()?.get_mut(name)?;
        }
        Some(node)
    }

    /// Records `entry` at `rel` (not `""`), replacing what was there. Returns `false`
    /// when the parent is not recorded as a directory (the entry is then not recorded,
    /// which only costs a re-read later).
    pub(crate) fn insert(&mut self, rel: &str, entry: MEntry) -> bool {
        let (parent, name) = split_rel(rel);
        match self.get_mut(parent).and_then(|p| p.children.as_mut()) {
            Some(children) => {
                children.insert(name.into(), entry);
                true
            }
            None => false,
        }
    }

    /// Inserts or refreshes the entry at `rel` (keeping children of a directory).
    pub(crate) fn upsert(&mut self, rel: &str, meta: HostMeta, generation: u64, observed_at: Ts) {
        if rel.is_empty() {
            self.refresh(meta, generation, observed_at);
            return;
        }
        if let Some(existing) = self.get_mut(rel)
            && existing.meta.kind == meta.kind
        {
            existing.refresh(meta, generation, observed_at);
            return;
        }
        self.insert(rel, MEntry::new(meta, generation, observed_at));
    }

    /// Forgets the entry at `rel` (not `""`) and everything below it.
    pub(crate) fn remove(&mut self, rel: &str) {
        let (parent, name) = split_rel(rel);
        if let Some(children) = self.get_mut(parent).and_then(|p| p.children.as_mut()) {
            children.remove(name);
        }
    }

    /// Number of entries, this one included.
    pub(crate) fn len(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(entry) = stack.pop() {
            count += 1;
            if let Some(children) = &entry.children {
                stack.extend(children.values());
            }
        }
        count
    }
}

/// Checks every component of a leaf-relative path before it is used on the host: no
/// empty, `.`, `..` or NUL-containing component (so no absolute path either). The VFS
/// never produces such names; this is the host side's own guard.
pub(crate) fn check_rel(rel: &str) -> Result<(), VmSyncError> {
    for name in rel.split('/') {
        let reason = match name {
            "" => "empty component (absolute path or `//`)",
            "." | ".." => "`.` and `..` are not names",
            _ if name.contains('\0') => "contains a NUL byte",
            _ => continue,
        };
        return Err(VmSyncError::InvalidName {
            name: rel.to_owned(),
            reason,
        });
    }
    Ok(())
}

/// Components of a leaf-relative path (`""` has none).
pub(crate) fn rel_components(rel: &str) -> impl Iterator<Item = &str> {
    rel.split('/').filter(|c| !c.is_empty())
}

/// `("a/b", "c")` for `"a/b/c"`, `("", "c")` for `"c"`.
pub(crate) fn split_rel(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// `base/name`, or `name` when `base` is empty.
pub(crate) fn join_rel(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        let mut out = String::with_capacity(base.len() + 1 + name.len());
        out.push_str(base);
        out.push('/');
        out.push_str(name);
        out
    }
}

/// The VFS path of `rel` under the synced root `vfs_root`.
pub(crate) fn vfs_join(vfs_root: &str, rel: &str) -> String {
    if rel.is_empty() {
        vfs_root.to_owned()
    } else if vfs_root == "/" {
        format!("/{rel}")
    } else {
        format!("{vfs_root}/{rel}")
    }
}

/// The leaf-relative form of `vfs_path` under `vfs_root` (`None` when outside it).
pub(crate) fn rel_of<'a>(vfs_root: &str, vfs_path: &'a str) -> Option<&'a str> {
    if vfs_root == "/" {
        return vfs_path.strip_prefix('/');
    }
    let rest = vfs_path.strip_prefix(vfs_root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// What is known about one staging leaf.
#[derive(Debug)]
pub(crate) struct LeafState {
    /// The canonical VFS path bound to this leaf.
    pub(crate) vfs_path: String,
    /// The VFS generation the host leaf reflects (`None`: never synced, or unknown).
    pub(crate) synced_generation: Option<u64>,
    /// The host tree as last seen (`None`: unknown).
    pub(crate) manifest: Option<MEntry>,
    /// Entries in the manifest (decides whether a pull scans with several threads).
    pub(crate) entry_count: usize,
    /// The last push into this leaf failed: the host copy may hold half-written files,
    /// so pulls are refused until a push succeeds.
    pub(crate) push_incomplete: bool,
}

/// Compiled exclude patterns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Excludes {
    patterns: Vec<String>,
    any: Option<GlobSet>,
    dirs_only: Option<GlobSet>,
}

impl Excludes {
    fn compile(globs: &[&str]) -> Result<Self, VmSyncError> {
        let mut any = GlobSetBuilder::new();
        let mut dirs_only = GlobSetBuilder::new();
        let (mut n_any, mut n_dirs) = (0, 0);
        for &pattern in globs {
            let invalid = |reason: &str| VmSyncError::InvalidExclude {
                pattern: pattern.to_owned(),
                reason: reason.to_owned(),
            };
            if pattern.contains('\0') {
                return Err(invalid("contains a NUL byte"));
            }
            let anchored = pattern.starts_with('/');
            let body = pattern.trim_start_matches('/');
            let only_directories = body.ends_with('/');
            let body = body.trim_end_matches('/');
            if body.is_empty() {
                return Err(invalid("matches nothing (empty pattern)"));
            }
            if body
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
            {
                return Err(invalid(
                    "must be relative to the leaf, without `.`, `..` or empty components",
                ));
            }
            // gitignore-like: a pattern without an inner `/` matches a name at any depth.
            let glob = if anchored || body.contains('/') {
                body.to_owned()
            } else {
                format!("**/{body}")
            };
            let compiled = GlobBuilder::new(&glob)
                .literal_separator(true)
                .build()
                .map_err(|err| invalid(&err.to_string()))?;
            if only_directories {
                dirs_only.add(compiled);
                n_dirs += 1;
            } else {
                any.add(compiled);
                n_any += 1;
            }
        }
        let build =
            |builder: GlobSetBuilder, count: usize| -> Result<Option<GlobSet>, VmSyncError> {
                if count == 0 {
                    return Ok(None);
                }
                builder
                    .build()
                    .map(Some)
                    .map_err(|err| VmSyncError::InvalidExclude {
                        pattern: globs.join(", "),
                        reason: err.to_string(),
                    })
            };
        Ok(Self {
            patterns: globs.iter().map(|&g| g.to_owned()).collect(),
            any: build(any, n_any)?,
            dirs_only: build(dirs_only, n_dirs)?,
        })
    }

    /// `true` when no pattern is set.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `true` when the leaf-relative path `rel` (a directory when `is_dir`) is excluded.
    /// Callers do not descend into excluded directories, so a match on a directory
    /// excludes its whole subtree.
    pub(crate) fn matches(&self, rel: &str, is_dir: bool) -> bool {
        if rel.is_empty() {
            return false;
        }
        self.any.as_ref().is_some_and(|set| set.is_match(rel))
            || (is_dir && self.dirs_only.as_ref().is_some_and(|set| set.is_match(rel)))
    }

    /// `true` when `rel` or any of its ancestors is excluded (for paths that come from
    /// the VFS journal rather than from a walk that stops at excluded directories).
    pub(crate) fn covers(&self, rel: &str, is_dir: bool) -> bool {
        if self.is_empty() || rel.is_empty() {
            return false;
        }
        rel.match_indices('/')
            .any(|(index, _)| self.matches(&rel[..index], true))
            || self.matches(rel, is_dir)
    }
}

/// The sync manifest of one staging directory. It lives in memory with the session.
///
/// For every staging leaf (`staging/<last segment of the VFS path>`, or the staging
/// directory itself for `/`) it records which VFS path owns the leaf, the VFS generation
/// the host copy reflects, and for every synced entry the host metadata seen (kind,
/// size, mtime and ctime in nanoseconds, mode, inode) plus the VFS generation it was
/// synced at. A push records what it wrote; a pull compares a metadata-only scan with
/// it and reads only what moved. A state that lost its manifest (a new session) is
/// rebuilt by [`push_full`](crate::push_full) or by a pull (which then reads every host
/// file once and deletes nothing in the VFS).
pub struct SyncState {
    pub(crate) staging_dir: PathBuf,
    pub(crate) excludes: Excludes,
    pub(crate) observer: Option<ObserverBox>,
    pub(crate) leaves: BTreeMap<String, LeafState>,
    pub(crate) umask_bits: u32,
    pub(crate) max_file_size: u64,
    pub(crate) max_workspace_bytes: u64,
    pub(crate) lazy_min_size: u64,
    pub(crate) threads: usize,
}

/// A progress callback as stored in [`SyncState`].
pub(crate) type ObserverBox = Box<dyn FnMut(&SyncProgress) + Send>;

/// Default for [`SyncState::set_max_file_size`]: 4 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 << 30;

/// Default for [`SyncState::set_lazy_min_size`]: 64 KiB. Below it the read costs about
/// what the descriptor and the later `fstat`s would (tens of microseconds at ~3 GB/s),
/// and small files (sources, fingerprints, dep-info) are read anyway by the next tool.
pub const DEFAULT_LAZY_MIN_SIZE: u64 = 64 * 1024;

/// Default for [`SyncState::set_max_workspace_bytes`]: 8 GiB (the default of
/// `DEVSHELL_VM_WORKSPACE_MAX_BYTES`).
pub const DEFAULT_MAX_WORKSPACE_BYTES: u64 = 8 << 30;

impl fmt::Debug for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncState")
            .field("staging_dir", &self.staging_dir)
            .field("excludes", &self.excludes.patterns)
            .field("observer", &self.observer.is_some())
            .field("leaves", &self.leaves.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Lexical canonical form of an absolute VFS path (the same rules as the VFS: empty and
/// `.` segments dropped, `..` pops and clamps at `/`).
pub(crate) fn canonical_vfs_path(path: &str) -> Result<String, VmSyncError> {
    if path.contains('\0') {
        return Err(VmSyncError::InvalidName {
            name: path.to_owned(),
            reason: "contains a NUL byte",
        });
    }
    if !path.starts_with('/') {
        return Err(VmSyncError::InvalidName {
            name: path.to_owned(),
            reason: "a VFS path to sync must be absolute",
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

impl SyncState {
    /// A state for `staging_dir` with no leaves synced yet, no excludes, no observer.
    #[must_use]
    pub fn new(staging_dir: impl Into<PathBuf>) -> Self {
        Self {
            staging_dir: staging_dir.into(),
            excludes: Excludes::default(),
            observer: None,
            leaves: BTreeMap::new(),
            umask_bits: crate::hostio::umask_bits(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_workspace_bytes: DEFAULT_MAX_WORKSPACE_BYTES,
            lazy_min_size: DEFAULT_LAZY_MIN_SIZE,
            threads: default_threads(),
        }
    }

    /// The staging directory.
    #[must_use]
    pub fn staging_dir(&self) -> &Path {
        &self.staging_dir
    }

    /// Sets the paths a sync leaves out, as globs relative to the leaf (default none).
    /// A pattern without an inner `/` matches a name at any depth (`*.o`, `target/`);
    /// a leading `/` anchors it at the leaf; a trailing `/` matches directories only.
    /// Excluded host paths are never read by a pull and never deleted by a push;
    /// excluded VFS paths are not pushed.
    ///
    /// # Errors
    /// [`VmSyncError::InvalidExclude`] naming the pattern.
    pub fn set_excludes(&mut self, globs: &[&str]) -> Result<(), VmSyncError> {
        self.excludes = Excludes::compile(globs)?;
        Ok(())
    }

    /// Largest host file a pull reads into the VFS (default
    /// [`DEFAULT_MAX_FILE_SIZE`]); a larger one fails the pull with an error naming it
    /// (the VFS holds contents in memory, and a sparse file can claim any size).
    pub fn set_max_file_size(&mut self, bytes: u64) {
        self.max_file_size = bytes;
    }

    /// Workspace size budget (default [`DEFAULT_MAX_WORKSPACE_BYTES`]; a session takes
    /// it from `DEVSHELL_VM_WORKSPACE_MAX_BYTES`): the most file content the synced tree
    /// may hold after a pull, counting every regular file in the leaf (unchanged ones
    /// included, excluded paths not). A pull that would pass it fails with
    /// [`VmSyncError::WorkspaceTooLarge`] before reading the file that passes it, so the
    /// pull never allocates more than the budget, and the VFS is left unchanged.
    pub fn set_max_workspace_bytes(&mut self, bytes: u64) {
        self.max_workspace_bytes = bytes;
    }

    /// The workspace size budget in force.
    #[must_use]
    pub fn max_workspace_bytes(&self) -> u64 {
        self.max_workspace_bytes
    }

    /// Smallest new or changed host file a pull records without reading it (default
    /// [`DEFAULT_LAZY_MIN_SIZE`]; `u64::MAX` reads every file during the pull). Such a
    /// file enters the VFS as a [`LazyContent`](devshell_vm_vfs::LazyContent): an open
    /// descriptor of the staging inode, read when someone first reads the file (see
    /// [`devshell_vm_vfs::lazy`]). It still counts against the workspace budget. A file
    /// whose mtime is not older than the pull's start (it may still change within the
    /// same clock tick), and any file once the process-wide descriptor cap
    /// ([`devshell_vm_vfs::lazy::lazy_fd_limit`]) is reached or `open` reports
    /// `EMFILE`/`ENFILE`, is read during the pull as before.
    pub fn set_lazy_min_size(&mut self, bytes: u64) {
        self.lazy_min_size = bytes;
    }

    /// The lazy-content threshold in force (see [`Self::set_lazy_min_size`]).
    #[must_use]
    pub fn lazy_min_size(&self) -> u64 {
        self.lazy_min_size
    }

    /// How many threads a full push (file writes) and a large pull (the metadata
    /// scan) may use; default: one more than the available parallelism, from 2 to 5
    /// (creating files on a disk filesystem waits for inode-table reads, which an extra
    /// thread overlaps). `1` keeps every sync on the calling thread.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// The exclude patterns as given.
    #[must_use]
    pub fn excludes(&self) -> &[String] {
        &self.excludes.patterns
    }

    /// Sets a callback that receives progress during long syncs (after every batch of
    /// files, and once at the end of a call that moved any file).
    pub fn set_observer(&mut self, observer: ObserverBox) {
        self.observer = Some(observer);
    }

    /// Removes the progress callback.
    pub fn clear_observer(&mut self) {
        self.observer = None;
    }

    /// The observer, if any, for the length of one call.
    pub(crate) fn observer_mut(&mut self) -> Option<&mut (dyn FnMut(&SyncProgress) + Send)> {
        self.observer
            .as_deref_mut()
            .map(|o| o as &mut (dyn FnMut(&SyncProgress) + Send))
    }

    /// The host directory the VFS subtree at `vfs_path` is synced to:
    /// `staging/<last segment>`, or the staging directory itself for `/`.
    ///
    /// # Errors
    /// [`VmSyncError::InvalidName`] for a relative path or one containing NUL.
    pub fn leaf_dir(&self, vfs_path: &str) -> Result<PathBuf, VmSyncError> {
        let canonical = canonical_vfs_path(vfs_path)?;
        Ok(self.leaf_path(leaf_name(&canonical)))
    }

    pub(crate) fn leaf_path(&self, leaf: &str) -> PathBuf {
        if leaf.is_empty() {
            self.staging_dir.clone()
        } else {
            self.staging_dir.join(leaf)
        }
    }

    /// The VFS generation the host copy of `vfs_path` reflects (`None` when it was never
    /// synced or must be pushed in full).
    #[must_use]
    pub fn synced_generation(&self, vfs_path: &str) -> Option<u64> {
        let canonical = canonical_vfs_path(vfs_path).ok()?;
        self.leaves
            .get(leaf_name(&canonical))
            .filter(|leaf| leaf.vfs_path == canonical)
            .and_then(|leaf| leaf.synced_generation)
    }

    /// Number of host entries the manifest records for `vfs_path` (the leaf included;
    /// 0 when nothing is recorded).
    #[must_use]
    pub fn manifest_len(&self, vfs_path: &str) -> usize {
        canonical_vfs_path(vfs_path)
            .ok()
            .and_then(|canonical| {
                self.leaves
                    .get(leaf_name(&canonical))
                    .filter(|leaf| leaf.vfs_path == canonical)
                    .and_then(|leaf| leaf.manifest.as_ref().map(MEntry::len))
            })
            .unwrap_or(0)
    }

    /// Releases the binding of `vfs_path` to its leaf (the host files stay) so another
    /// VFS path may use that leaf. Returns `true` when a binding was removed.
    pub fn forget(&mut self, vfs_path: &str) -> bool {
        let Ok(canonical) = canonical_vfs_path(vfs_path) else {
            return false;
        };
        let leaf = leaf_name(&canonical).to_owned();
        if self
            .leaves
            .get(&leaf)
            .is_some_and(|l| l.vfs_path == canonical)
        {
            self.leaves.remove(&leaf);
            true
        } else {
            false
        }
    }

    /// The leaf state for canonical `vfs_path`, binding the leaf on first use.
    ///
    /// # Errors
    /// [`VmSyncError::LeafCollision`] when another VFS path owns the leaf (or the root
    /// and another path would nest).
    pub(crate) fn bind(&mut self, vfs_path: &str) -> Result<&mut LeafState, VmSyncError> {
        let leaf = leaf_name(vfs_path).to_owned();
        let collision = |existing: &str, leaf_path: PathBuf| VmSyncError::LeafCollision {
            leaf: leaf_path,
            existing: existing.to_owned(),
            requested: vfs_path.to_owned(),
        };
        if let Some(state) = self.leaves.get(&leaf)
            && state.vfs_path != vfs_path
        {
            return Err(collision(&state.vfs_path, self.leaf_path(&leaf)));
        }
        // The root's leaf is the staging directory itself: it contains every other leaf.
        if leaf.is_empty() {
            if let Some((_, other)) = self.leaves.iter().find(|(name, _)| !name.is_empty()) {
                return Err(collision(&other.vfs_path, self.leaf_path("")));
            }
        } else if let Some(root) = self.leaves.get("") {
            return Err(collision(&root.vfs_path, self.leaf_path("")));
        }
        Ok(self.leaves.entry(leaf).or_insert_with(|| LeafState {
            vfs_path: vfs_path.to_owned(),
            synced_generation: None,
            manifest: None,
            entry_count: 0,
            push_incomplete: false,
        }))
    }
}

/// Default for [`SyncState::set_threads`]: the cores plus one. On 2 vCPUs a T2 first
/// push onto ext4 took 126–140 ms with three writers against 141–196 ms with two
/// (alternating runs, `docs/bench/sync.md`), and the same on tmpfs; the cap keeps a
/// many-core machine from stacking writers on one filesystem's locks (not measured).
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_add(1)
        .clamp(2, 5)
}

/// Last segment of a canonical VFS path (`""` for the root).
pub(crate) fn leaf_name(canonical: &str) -> &str {
    canonical.rsplit('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_dir_uses_last_segment_and_root_is_staging() {
        let state = SyncState::new("/s");
        assert_eq!(state.leaf_dir("/a/app").unwrap(), PathBuf::from("/s/app"));
        assert_eq!(
            state.leaf_dir("/a/./b/../app/").unwrap(),
            PathBuf::from("/s/app")
        );
        assert_eq!(state.leaf_dir("/").unwrap(), PathBuf::from("/s"));
        assert_eq!(state.leaf_dir("/..").unwrap(), PathBuf::from("/s"));
        assert!(matches!(
            state.leaf_dir("rel"),
            Err(VmSyncError::InvalidName { .. })
        ));
        assert!(matches!(
            state.leaf_dir("/a\0b"),
            Err(VmSyncError::InvalidName { .. })
        ));
    }

    #[test]
    fn binding_refuses_collisions_and_nesting_with_root() {
        let mut state = SyncState::new("/s");
        state.bind("/a/app").unwrap();
        state.bind("/a/app").unwrap();
        state.bind("/a/lib").unwrap();
        let err = state.bind("/b/app").unwrap_err();
        assert!(
            matches!(&err, VmSyncError::LeafCollision { existing, requested, leaf }
                if existing == "/a/app" && requested == "/b/app" && leaf == Path::new("/s/app")),
            "{err}"
        );
        assert!(matches!(
            state.bind("/"),
            Err(VmSyncError::LeafCollision { .. })
        ));
        assert!(state.forget("/a/app"));
        assert!(state.forget("/a/lib"));
        state.bind("/").unwrap();
        assert!(matches!(
            state.bind("/x"),
            Err(VmSyncError::LeafCollision { .. })
        ));
    }

    #[test]
    fn excludes_follow_gitignore_like_rules() {
        let ex = Excludes::compile(&["target/", "*.o", "/top.txt", "docs/gen"]).unwrap();
        assert!(ex.matches("target", true));
        assert!(!ex.matches("target", false), "dir-only pattern on a file");
        assert!(ex.matches("sub/target", true));
        assert!(ex.matches("a.o", false));
        assert!(ex.matches("x/y/a.o", false));
        assert!(ex.matches("top.txt", false));
        assert!(!ex.matches("x/top.txt", false));
        assert!(ex.matches("docs/gen", true));
        assert!(!ex.matches("x/docs/gen", true));
        assert!(ex.covers("target/debug/foo", false));
        assert!(!ex.covers("src/main.rs", false));
        for bad in ["", "/", "../x", "a/../b", "a\0b", "a[", "./a"] {
            assert!(Excludes::compile(&[bad]).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn manifest_insert_get_remove() {
        let meta = |kind| HostMeta {
            kind,
            mode: 0o755,
            size: 0,
            mtime: Ts { sec: 1, nsec: 0 },
            ctime: Ts { sec: 1, nsec: 0 },
            ino: 1,
            dev: 1,
        };
        let now = Ts { sec: 10, nsec: 0 };
        let mut root = MEntry::new(meta(HostKind::Dir), 1, now);
        assert!(!root.racy);
        root.upsert("a", meta(HostKind::Dir), 2, now);
        root.upsert("a/b", meta(HostKind::File), 3, now);
        assert!(!root.insert("missing/c", MEntry::new(meta(HostKind::File), 1, now)));
        assert_eq!(root.len(), 3);
        assert_eq!(root.get("a/b").unwrap().generation, 3);
        root.remove("a");
        assert_eq!(root.len(), 1);
        assert!(MEntry::new(meta(HostKind::File), 1, Ts { sec: 1, nsec: 0 }).racy);
    }

    #[test]
    fn host_side_names_are_checked() {
        assert!(check_rel("a/b.rs").is_ok());
        for bad in ["/abs", "a//b", "..", "a/../b", ".", "a/./b", "nul\0x", ""] {
            assert!(
                matches!(check_rel(bad), Err(VmSyncError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn path_helpers() {
        assert_eq!(vfs_join("/", "a/b"), "/a/b");
        assert_eq!(vfs_join("/p", ""), "/p");
        assert_eq!(vfs_join("/p", "a"), "/p/a");
        assert_eq!(rel_of("/p", "/p/a/b"), Some("a/b"));
        assert_eq!(rel_of("/p", "/p"), Some(""));
        assert_eq!(rel_of("/p", "/pq"), None);
        assert_eq!(rel_of("/", "/x"), Some("x"));
        assert_eq!(split_rel("a/b/c"), ("a/b", "c"));
        assert_eq!(split_rel("c"), ("", "c"));
        assert_eq!(join_rel("", "c"), "c");
    }
}
