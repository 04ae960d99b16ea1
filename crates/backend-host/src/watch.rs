//! Change detection for a staging leaf with inotify, so a run that changed nothing on the
//! host skips the pull (the cost that dominates a no-op run on a large tree: the pull
//! must `lstat` every entry to find out that nothing moved).
//!
//! One inotify instance serves the whole process (see `Shared`); every directory of the
//! leaf is watched for anything that changes content, metadata
//! or structure (`IN_MODIFY`, `IN_ATTRIB`, `IN_CLOSE_WRITE`, create, delete, move, and
//! the watched directory's own deletion or move). Reads are not watched, so `true`, or a
//! tool that only reads, produces no event. Any event — or a queue overflow — means
//! "pull". When a watch cannot be added (the per-user watch limit), the watcher declares
//! itself unusable and every run pulls, exactly as without it.
//!
//! Known blind spot, shared by every inotify user: a write to a staging file through a
//! hard link that lives outside the staging directory. The staging directory is private
//! (0700), so only the session's own user could set that up. A second one, documented in
//! inotify(7): writes through a shared `mmap` of a file raise no `IN_MODIFY`; they are
//! seen only through the `IN_CLOSE_WRITE` (or create) of the descriptor that mapped the
//! file, so a tool that closes that descriptor first and writes through the mapping
//! afterwards, on a file that already existed, goes unseen. Linkers write their output
//! into a freshly created file, which is seen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// What the watched tree went through since the last [`TreeWatch::take_activity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Activity {
    /// No change at all.
    None,
    /// Files changed (content, metadata, created, deleted) but no directory appeared,
    /// disappeared or moved: the existing watches still cover the tree.
    Files,
    /// Directories appeared, disappeared or moved, or events were lost: the watches
    /// must be renewed after the pull.
    Structure,
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
    /// Which tree owns each watch.
    owner_of: HashMap<WatchDescriptor, u64>,
    /// Activity collected per tree since it last asked.
    pending: HashMap<u64, Activity>,
    next_id: u64,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

fn shared() -> MutexGuard<'static, Option<Shared>> {
    SHARED.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Reads every queued event into `pending`. A lost-events marker (queue overflow)
    /// or a read error marks every tree as changed.
    fn drain(&mut self) {
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.mark_all(Activity::Structure);
                            continue;
                        }
                        let Some(&owner) = self.owner_of.get(&event.wd) else {
                            continue;
                        };
                        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                            self.owner_of.remove(&event.wd);
                        }
                        let slot = self.pending.entry(owner).or_insert(Activity::None);
                        *slot = (*slot).max(classify(event.mask));
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    self.mark_all(Activity::Structure);
                    return;
                }
            }
        }
    }

    fn mark_all(&mut self, activity: Activity) {
        for slot in self.pending.values_mut() {
            *slot = (*slot).max(activity);
        }
    }
}

/// inotify watches on every directory of one staging leaf (on the process-wide instance).
#[derive(Debug)]
pub(crate) struct TreeWatch {
    id: u64,
    root: PathBuf,
    usable: bool,
}

impl TreeWatch {
    /// A watcher for the tree at `root` (no watches yet: call [`Self::rewatch`]).
    /// `None` when inotify is unavailable (for example the per-user instance limit is
    /// reached and this process has no instance yet).
    pub(crate) fn new(root: &Path) -> Option<Self> {
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
        let shared = guard.as_mut().expect("initialised just above");
        let id = shared.next_id;
        shared.next_id += 1;
        shared.pending.insert(id, Activity::None);
        Some(Self {
            id,
            root: root.to_path_buf(),
            usable: true,
        })
    }

    /// `true` while every directory of the tree is known to be watched.
    pub(crate) fn usable(&self) -> bool {
        self.usable
    }

    /// Adds a watch on every directory of the tree (re-adding an existing one is a cheap
    /// no-op for the kernel). Symlinks are never followed. On failure the watcher becomes
    /// unusable for good.
    pub(crate) fn rewatch(&mut self) {
        if !self.usable {
            return;
        }
        let mut guard = shared();
        let Some(shared) = guard.as_mut() else {
            self.usable = false;
            return;
        };
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            match shared.inotify.add_watch(dir.as_path(), MASK) {
                Ok(wd) => {
                    shared.owner_of.insert(wd, self.id);
                }
                // Vanished or replaced by a non-directory since it was listed: a later
                // event (or the pull) covers it.
                Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
                Err(_) => {
                    self.usable = false;
                    return;
                }
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }

    /// Drains the event queue and says what happened to this tree since the previous call.
    pub(crate) fn take_activity(&mut self) -> Activity {
        let mut guard = shared();
        let Some(shared) = guard.as_mut() else {
            self.usable = false;
            return Activity::Structure;
        };
        shared.drain();
        shared
            .pending
            .insert(self.id, Activity::None)
            .unwrap_or(Activity::Structure)
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
            .filter(|(_, owner)| **owner == self.id)
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

fn classify(mask: AddWatchFlags) -> Activity {
    let structural = AddWatchFlags::IN_Q_OVERFLOW
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_UNMOUNT;
    let dir_change = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO;
    if mask.intersects(structural)
        || (mask.contains(AddWatchFlags::IN_ISDIR) && mask.intersects(dir_change))
    {
        Activity::Structure
    } else {
        Activity::Files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(root: &Path) -> TreeWatch {
        let mut watch = TreeWatch::new(root).expect("inotify available on Linux");
        watch.rewatch();
        assert!(watch.usable());
        assert_eq!(watch.take_activity(), Activity::None);
        watch
    }

    #[test]
    fn reads_are_silent_writes_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), b"x").expect("write");
        let mut watch = watched(dir.path());

        let _ = std::fs::read(dir.path().join("a/b/f")).expect("read");
        let _ = std::fs::read_dir(dir.path().join("a"))
            .expect("list")
            .count();
        assert_eq!(watch.take_activity(), Activity::None);

        std::fs::write(dir.path().join("a/b/f"), b"y").expect("rewrite");
        assert_eq!(watch.take_activity(), Activity::Files);
        assert_eq!(watch.take_activity(), Activity::None, "drained");

        std::fs::create_dir(dir.path().join("a/b/new")).expect("mkdir");
        assert_eq!(watch.take_activity(), Activity::Structure);
        watch.rewatch();
        std::fs::write(dir.path().join("a/b/new/g"), b"z").expect("write in new dir");
        assert_eq!(watch.take_activity(), Activity::Files);
    }

    #[test]
    fn trees_do_not_see_each_others_events() {
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        let mut watch_one = watched(one.path());
        let mut watch_two = watched(two.path());
        std::fs::write(one.path().join("f"), b"x").expect("write");
        assert_eq!(watch_two.take_activity(), Activity::None);
        assert_eq!(watch_one.take_activity(), Activity::Files);
        drop(watch_one);
        std::fs::write(two.path().join("g"), b"y").expect("write");
        assert_eq!(watch_two.take_activity(), Activity::Files);
    }

    #[test]
    fn metadata_only_changes_are_seen() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let mut watch = watched(dir.path());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(watch.take_activity(), Activity::Files);
        filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1_000_000, 0))
            .expect("utime");
        assert_eq!(watch.take_activity(), Activity::Files);
    }
}
