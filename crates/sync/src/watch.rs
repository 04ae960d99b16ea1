//! Change tracking for a staging leaf with inotify (Linux), so a pull costs what changed:
//! a run that changed nothing skips the pull, and a run that changed something pulls only
//! the directories that saw events ([`PullScope::Dirs`]) instead
//! of `lstat`ing every entry of the tree (a real `target/` holds tens of thousands).
//!
//! [`ChangeTracker`] is what a runner of tools uses around each run (the host backend
//! through the session layer's cycle, the sidecar around its wire-sync runs): tell it
//! about the push, ask it for the pull's scope after the tool, tell it how the pull went.
//! [`TreeWatch`] is the watch itself, for callers with a protocol of their own.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use devshell_vm_sync::watch::ChangeTracker;
//! use devshell_vm_sync::{SyncState, pull_workspace_to_vfs_scoped, push_incremental};
//! use devshell_vm_vfs::Vfs;
//!
//! let staging = tempfile::tempdir()?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/proj")?;
//! let mut state = SyncState::new(staging.path());
//! let mut tracker = ChangeTracker::new();
//! tracker.before_push();
//! let pushed = push_incremental(&vfs, "/proj", &mut state)?;
//! tracker.after_push(&staging.path().join("proj"), !pushed.is_noop());
//! std::fs::write(staging.path().join("proj/out.txt"), "built")?; // the tool
//! let scope = tracker.pull_scope(); // only the leaf's top directory changed
//! let pulled = pull_workspace_to_vfs_scoped(&mut state, "/proj", &mut vfs, &scope);
//! tracker.after_pull(pulled.is_ok());
//! # Ok(()) }
//! ```
//!
//! One inotify instance serves the whole process (see `Shared`); every directory of the
//! leaf is watched for anything that changes content, metadata or structure
//! (`IN_MODIFY`, `IN_ATTRIB`, `IN_CLOSE_WRITE`, create, delete, move, and the watched
//! directory's own deletion or move). Reads are not watched, so `true`, or a tool that
//! only reads, produces no event. Each watch descriptor maps to its directory
//! (leaf-relative); an event marks that directory (an event on a directory itself marks
//! its parent, whose listing holds its metadata). A directory created or moved in is
//! recorded as new: the pull scans it whole (the manifest does not know it) and
//! [`TreeWatch::watch_new`] adds watches below it, before the pull, so a write after its
//! scan is an event for the next one.
//!
//! Doubt means a full scan: a queue overflow (`IN_Q_OVERFLOW`), an unmount, a read error
//! of the queue, or a watch that could not be added — `ENOSPC` is the per-user watch limit
//! (`/proc/sys/user/max_inotify_watches`, `fs.inotify.max_user_watches`): the watcher then
//! declares itself unusable and every pull scans in full, exactly as without it.
//!
//! Why not the `notify` crate: its events reach the caller through a background thread
//! and a channel, with no way to know that every event caused before "now" has arrived;
//! deciding "nothing changed, skip the pull" needs exactly that barrier. Reading the
//! inotify descriptor here, after the tool has exited, is the barrier: the kernel queues
//! an event within the system call that caused it. On macOS (`FSEvents`, which coalesces
//! and delivers late) this backend does not watch at all and every pull is a full scan.
//!
//! Known blind spot, shared by every inotify user: a write to a staging file through a
//! hard link that lives outside the staging directory. The staging directory is private
//! (0700), so only the session's own user could set that up. A second one, documented in
//! inotify(7): writes through a shared `mmap` of a file raise no `IN_MODIFY`; they are
//! seen only through the `IN_CLOSE_WRITE` (or create) of the descriptor that mapped the
//! file, so a tool that closes that descriptor first and writes through the mapping
//! afterwards, on a file that already existed, goes unseen. Linkers write their output
//! into a freshly created file, which is seen.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::PullScope;

/// What the watched tree went through since the last [`TreeWatch::take_changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Events may have been lost: only a full scan is safe.
    pub doubt: bool,
    /// Leaf-relative directories in which entries changed (`""`: the leaf itself).
    pub dirs: BTreeSet<String>,
    /// Leaf-relative directories that appeared (created or moved in): not watched yet.
    pub new_dirs: BTreeSet<String>,
    /// Directories disappeared or moved: watch paths may be stale until re-walked.
    pub structure: bool,
}

impl Changes {
    /// No change at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.doubt && self.dirs.is_empty() && self.new_dirs.is_empty() && !self.structure
    }

    /// Adds `other` to these changes.
    pub fn merge(&mut self, other: Changes) {
        self.doubt |= other.doubt;
        self.structure |= other.structure;
        self.dirs.extend(other.dirs);
        self.new_dirs.extend(other.new_dirs);
    }
}

const MASK: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

/// One inotify instance for the whole process, shared by every watched tree: the kernel
/// allows a user only a few instances (`fs.inotify.max_user_instances`, often 128),
/// so a process with many sessions must not spend one per tree. Events are routed to
/// their tree by watch descriptor and kept until that tree asks.
struct Shared {
    inotify: Inotify,
    /// Which tree owns each watch, and the watched directory (leaf-relative).
    owner_of: HashMap<WatchDescriptor, (u64, String)>,
    /// Changes collected per tree since it last asked.
    pending: HashMap<u64, Changes>,
    next_id: u64,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

fn shared() -> MutexGuard<'static, Option<Shared>> {
    SHARED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `a/b` → `a`, `a` → `""`, `""` → `""`.
fn parent_rel(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

impl Shared {
    /// Reads every queued event into `pending`. A lost-events marker (queue overflow)
    /// or a read error puts every tree in doubt.
    fn drain(&mut self) {
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.doubt_all();
                            continue;
                        }
                        let Some((owner, dir)) = self.owner_of.get(&event.wd).cloned() else {
                            continue;
                        };
                        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                            self.owner_of.remove(&event.wd);
                        }
                        let changes = self.pending.entry(owner).or_default();
                        record(changes, event.mask, &dir, event.name.as_deref());
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    self.doubt_all();
                    return;
                }
            }
        }
    }

    fn doubt_all(&mut self) {
        for changes in self.pending.values_mut() {
            changes.doubt = true;
        }
    }
}

/// Adds one event on watched directory `dir` (entry `name`, if any) to `changes`.
fn record(changes: &mut Changes, mask: AddWatchFlags, dir: &str, name: Option<&std::ffi::OsStr>) {
    if mask.contains(AddWatchFlags::IN_UNMOUNT) {
        changes.doubt = true;
        return;
    }
    let self_event =
        AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED;
    if mask.intersects(self_event) {
        // The directory itself went away or moved: its parent's listing shows it.
        changes.dirs.insert(parent_rel(dir).to_owned());
        changes.structure = true;
        return;
    }
    let Some(name) = name
        .and_then(std::ffi::OsStr::to_str)
        .filter(|n| !n.is_empty())
    else {
        // An event on the watched directory itself (its mode or mtime): the entry that
        // carries its metadata is in the parent's listing. A name that is not UTF-8 is
        // never synced; its directory is still looked at.
        changes.dirs.insert(parent_rel(dir).to_owned());
        changes.dirs.insert(dir.to_owned());
        return;
    };
    // The entry changed in `dir`; creating, removing or renaming it also moves `dir`'s
    // own mtime, which its parent's listing holds.
    changes.dirs.insert(dir.to_owned());
    if mask.intersects(
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO,
    ) {
        changes.dirs.insert(parent_rel(dir).to_owned());
    }
    if mask.contains(AddWatchFlags::IN_ISDIR) {
        if mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
            changes.new_dirs.insert(join_rel(dir, name));
        }
        if mask.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
            changes.structure = true;
        }
    }
}

/// inotify watches on every directory of one staging leaf (on the process-wide instance).
#[derive(Debug)]
pub struct TreeWatch {
    id: u64,
    root: PathBuf,
    usable: bool,
}

impl TreeWatch {
    /// A watcher for the tree at `root` (no watches yet: call [`Self::rewatch`]).
    /// `None` when inotify is unavailable (for example the per-user instance limit is
    /// reached and this process has no instance yet).
    #[must_use]
    pub fn new(root: &Path) -> Option<Self> {
        let mut guard = shared();
        if guard.is_none() {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            *guard = Some(Shared {
                inotify,
                owner_of: HashMap::new(),
                pending: HashMap::new(),
                next_id: 0,
            });
        }
        let shared = guard.as_mut()?;
        let id = shared.next_id;
        shared.next_id += 1;
        shared.pending.insert(id, Changes::default());
        Some(Self {
            id,
            root: root.to_path_buf(),
            usable: true,
        })
    }

    /// `true` while every directory of the tree is known to be watched.
    #[must_use]
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Adds a watch on every directory of the tree (re-adding an existing one is a cheap
    /// no-op for the kernel that also refreshes its recorded path). Symlinks are never
    /// followed. On failure (the watch limit) the watcher becomes unusable for good.
    pub fn rewatch(&mut self) {
        self.watch_dirs(vec![String::new()], true);
    }

    /// Adds watches on the directories in `new` and everything below them (leaf-
    /// relative), e.g. the directories a run created or moved in.
    pub fn watch_new(&mut self, new: &BTreeSet<String>) {
        self.watch_dirs(new.iter().cloned().collect(), true);
    }

    /// Adds a watch on each listed directory (leaf-relative, `""` the leaf itself)
    /// without reading any directory: for a tree whose every directory the caller has
    /// just created itself (a directory it did not list is not watched; one created
    /// later in a watched directory is an event, as always).
    pub fn watch_listed<'a>(&mut self, dirs: impl IntoIterator<Item = &'a str>) {
        self.watch_dirs(dirs.into_iter().map(str::to_owned).collect(), false);
    }

    /// Watches each directory of `stack` and, with `below`, every directory under it.
    fn watch_dirs(&mut self, mut stack: Vec<String>, below: bool) {
        if !self.usable {
            return;
        }
        let mut guard = shared();
        let Some(shared) = guard.as_mut() else {
            self.usable = false;
            return;
        };
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel)
            };
            match shared.inotify.add_watch(dir.as_path(), MASK) {
                Ok(wd) => {
                    shared.owner_of.insert(wd, (self.id, rel.clone()));
                }
                // Vanished or replaced by a non-directory since it was listed: a later
                // event (or the pull) covers it.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                // ENOSPC: the watch limit; anything else: no longer trustworthy.
                Err(_) => {
                    self.usable = false;
                    return;
                }
            }
            if !below {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(name) = entry.file_name().to_str()
                {
                    stack.push(join_rel(&rel, name));
                }
            }
        }
    }

    /// Drains the event queue and says what happened to this tree since the previous call.
    pub fn take_changes(&mut self) -> Changes {
        let mut guard = shared();
        let Some(shared) = guard.as_mut() else {
            self.usable = false;
            return Changes {
                doubt: true,
                ..Changes::default()
            };
        };
        shared.drain();
        shared
            .pending
            .insert(self.id, Changes::default())
            .unwrap_or(Changes {
                doubt: true,
                ..Changes::default()
            })
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        let mut guard = shared();
        let Some(shared) = guard.as_mut() else {
            return;
        };
        let owned: Vec<WatchDescriptor> = shared
            .owner_of
            .iter()
            .filter(|(_, (owner, _))| *owner == self.id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in owned {
            shared.owner_of.remove(&wd);
            // Already gone when the directory was deleted; nothing to do then.
            let _ = shared.inotify.rm_watch(wd);
        }
        shared.pending.remove(&self.id);
    }
}

/// The change tracking around tool runs on one staging leaf: which directories a run
/// changed, so the pull after it scans only those ([`PullScope::Dirs`]; an empty set
/// skips it), with any doubt (lost events, the watch limit, no inotify) answering
/// [`PullScope::Full`]. Changes no successful pull has covered are kept, so a failed pull
/// loses nothing and a change between runs is not lost to a skipped pull.
///
/// Call order per run: [`Self::before_push`], the push, [`Self::after_push`], the tool,
/// [`Self::pull_scope`], the pull, [`Self::after_pull`].
#[derive(Debug, Default)]
pub struct ChangeTracker {
    /// Created after the first push; `None` before that or when inotify is unavailable.
    watch: Option<TreeWatch>,
    /// Changes no successful pull has covered yet (kept across a failed pull).
    unseen: Changes,
    /// The last pull was a full scan because of doubt: re-walk every watch after it.
    rewalk: bool,
    /// The last run had no usable watch.
    unwatched: bool,
    /// Tracking switched off: every pull scans in full.
    off: bool,
}

impl ChangeTracker {
    /// A tracker with no watch yet (it starts watching after the first push).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Switches tracking on (the default) or off (every pull scans in full: for
    /// benchmarks, and for file systems where inotify does not see every write).
    pub fn set_enabled(&mut self, enabled: bool) {
        self.off = !enabled;
    }

    /// Whether the last [`Self::pull_scope`] had no usable watch (inotify unavailable or
    /// its limits reached), so that pull was a full scan.
    #[must_use]
    pub fn unwatched(&self) -> bool {
        self.unwatched
    }

    /// Before the push: changes between runs (a process that outlived its run, the
    /// caller's own writes into staging) must not be lost by the push that follows.
    pub fn before_push(&mut self) {
        if let Some(watch) = &mut self.watch {
            let changes = watch.take_changes();
            self.unseen.merge(changes);
        }
    }

    /// After a successful push into `leaf`; `wrote` tells whether the push changed
    /// anything there (its own events are then dropped: the manifest knows what it wrote,
    /// and directories it created get watches). The first call starts watching.
    pub fn after_push(&mut self, leaf: &Path, wrote: bool) {
        match &mut self.watch {
            None => {
                self.watch = TreeWatch::new(leaf);
                if let Some(watch) = &mut self.watch {
                    watch.rewatch();
                }
            }
            // A push that wrote nothing caused no event: nothing to drop (an event that
            // arrived meanwhile is someone else's and stays for the pull to see).
            Some(_) if !wrote => {}
            Some(watch) => {
                let own = watch.take_changes();
                if own.doubt {
                    watch.rewatch();
                } else if !own.new_dirs.is_empty() {
                    watch.watch_new(&own.new_dirs);
                }
            }
        }
    }

    /// [`Self::after_push`] for a push that built the tree at `leaf` from nothing and
    /// created exactly the directories `dirs` (leaf-relative, the leaf itself left
    /// out): the first watches go on those, without listing the tree again.
    pub fn after_fresh_push<'a>(&mut self, leaf: &Path, dirs: impl IntoIterator<Item = &'a str>) {
        if self.watch.is_some() {
            self.after_push(leaf, true);
            return;
        }
        self.watch = TreeWatch::new(leaf);
        if let Some(watch) = &mut self.watch {
            watch.watch_listed(std::iter::once("").chain(dirs));
        }
    }

    /// After the tool: what the pull must look at.
    pub fn pull_scope(&mut self) -> PullScope {
        if self.off {
            // Keep the queue drained; the full scan covers everything.
            if let Some(watch) = &mut self.watch {
                let _ = watch.take_changes();
            }
            self.rewalk = true;
            return PullScope::Full;
        }
        let Some(watch) = self.watch.as_mut().filter(|w| w.usable()) else {
            self.unwatched = true;
            return PullScope::Full;
        };
        self.unwatched = false;
        let changes = watch.take_changes();
        self.unseen.merge(changes);
        if !self.unseen.new_dirs.is_empty() {
            // Watched before the scan, so a write after the scan is an event next time.
            watch.watch_new(&self.unseen.new_dirs);
        }
        if self.unseen.doubt || !watch.usable() {
            self.rewalk = true;
            return PullScope::Full;
        }
        let mut dirs = self.unseen.dirs.clone();
        dirs.extend(self.unseen.new_dirs.iter().cloned());
        PullScope::Dirs(dirs)
    }

    /// After the pull (or a skipped one); `ok` tells whether it succeeded. A failed pull
    /// keeps every change for the next one.
    pub fn after_pull(&mut self, ok: bool) {
        if !ok {
            return;
        }
        self.unseen = Changes::default();
        if std::mem::take(&mut self.rewalk)
            && let Some(watch) = &mut self.watch
        {
            watch.rewatch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(root: &Path) -> TreeWatch {
        let mut watch = TreeWatch::new(root).expect("inotify available on Linux");
        watch.rewatch();
        assert!(watch.usable());
        assert!(watch.take_changes().is_empty());
        watch
    }

    fn dirs(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|d| (*d).to_owned()).collect()
    }

    #[test]
    fn reads_are_silent_writes_name_their_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), b"x").expect("write");
        let mut watch = watched(dir.path());

        let _ = std::fs::read(dir.path().join("a/b/f")).expect("read");
        let _ = std::fs::read_dir(dir.path().join("a"))
            .expect("list")
            .count();
        assert!(watch.take_changes().is_empty());

        std::fs::write(dir.path().join("a/b/f"), b"y").expect("rewrite");
        let changes = watch.take_changes();
        assert_eq!(changes.dirs, dirs(&["a/b"]));
        assert!(!changes.doubt && !changes.structure && changes.new_dirs.is_empty());
        assert!(watch.take_changes().is_empty(), "drained");

        std::fs::create_dir(dir.path().join("a/b/new")).expect("mkdir");
        let changes = watch.take_changes();
        assert_eq!(
            changes.dirs,
            dirs(&["a", "a/b"]),
            "a/b's own mtime is in a's listing"
        );
        assert_eq!(changes.new_dirs, dirs(&["a/b/new"]));
        watch.watch_new(&changes.new_dirs);
        std::fs::write(dir.path().join("a/b/new/g"), b"z").expect("write in new dir");
        assert_eq!(watch.take_changes().dirs, dirs(&["a/b", "a/b/new"]));
    }

    #[test]
    fn moves_and_deletions_of_directories_name_both_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/m/deep")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("b")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("gone/x")).expect("mkdir");
        let mut watch = watched(dir.path());
        std::fs::rename(dir.path().join("a/m"), dir.path().join("b/m2")).expect("mv");
        std::fs::remove_dir_all(dir.path().join("gone")).expect("rm");
        let changes = watch.take_changes();
        assert!(
            changes.dirs.is_superset(&dirs(&["a", "b", ""])),
            "{changes:?}"
        );
        assert_eq!(changes.new_dirs, dirs(&["b/m2"]));
        assert!(changes.structure);
        // Re-walking the moved subtree refreshes the paths of its existing watches.
        watch.watch_new(&changes.new_dirs);
        std::fs::write(dir.path().join("b/m2/deep/f"), b"x").expect("write");
        assert_eq!(watch.take_changes().dirs, dirs(&["b/m2", "b/m2/deep"]));
    }

    #[test]
    fn trees_do_not_see_each_others_events() {
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        let mut watch_one = watched(one.path());
        let mut watch_two = watched(two.path());
        std::fs::write(one.path().join("f"), b"x").expect("write");
        assert!(watch_two.take_changes().is_empty());
        assert_eq!(watch_one.take_changes().dirs, dirs(&[""]));
        drop(watch_one);
        std::fs::write(two.path().join("g"), b"y").expect("write");
        assert_eq!(watch_two.take_changes().dirs, dirs(&[""]));
        std::fs::write(two.path().join("g"), b"z").expect("rewrite");
        assert_eq!(watch_two.take_changes().dirs, dirs(&[""]));
    }

    #[test]
    fn metadata_only_changes_are_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        let file = dir.path().join("d/f");
        std::fs::write(&file, b"x").expect("write");
        let mut watch = watched(dir.path());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(watch.take_changes().dirs, dirs(&["d"]));
        filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1_000_000, 0))
            .expect("utime");
        assert_eq!(watch.take_changes().dirs, dirs(&["d"]));
        // A directory's own mode: its parent's listing holds it.
        std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod dir");
        assert!(watch.take_changes().dirs.contains(""));
    }

    /// A tracker started by a fresh push watches exactly the directories it was given,
    /// without listing the tree: a write in a listed directory is scoped to it, a
    /// directory left out (the caller did not create it) is not watched.
    #[test]
    fn a_fresh_push_watches_the_listed_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["a/b", "c", "unlisted"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let mut tracker = ChangeTracker::new();
        tracker.before_push();
        tracker.after_fresh_push(dir.path(), ["a", "a/b", "c"]);
        std::fs::write(dir.path().join("a/b/f"), b"x").expect("write");
        std::fs::write(dir.path().join("unlisted/g"), b"y").expect("write");
        // Creating a file also moves its directory's mtime, which the parent lists.
        assert_eq!(tracker.pull_scope(), PullScope::Dirs(dirs(&["a", "a/b"])));
        tracker.after_pull(true);
        std::fs::write(dir.path().join("top"), b"z").expect("write");
        assert_eq!(tracker.pull_scope(), PullScope::Dirs(dirs(&[""])));
        tracker.after_pull(true);
        // Once watching, a later fresh push is an ordinary push: its own events are
        // dropped and the directories it created are watched.
        tracker.before_push();
        std::fs::create_dir(dir.path().join("c/new")).expect("mkdir");
        tracker.after_fresh_push(dir.path(), ["c/new"]);
        std::fs::write(dir.path().join("c/new/h"), b"w").expect("write");
        assert_eq!(tracker.pull_scope(), PullScope::Dirs(dirs(&["c", "c/new"])));
    }
}
