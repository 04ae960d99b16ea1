//! Change detection for a staging leaf with inotify, so a run that changed nothing on the
//! host skips the pull (the cost that dominates a no-op run on a large tree: the pull
//! must `lstat` every entry to find out that nothing moved).
//!
//! Every directory of the leaf is watched for anything that changes content, metadata
//! or structure (`IN_MODIFY`, `IN_ATTRIB`, `IN_CLOSE_WRITE`, create, delete, move, and
//! the watched directory's own deletion or move). Reads are not watched, so `true`, or a
//! tool that only reads, produces no event. Any event — or a queue overflow — means
//! "pull". When a watch cannot be added (the per-user watch limit), the watcher declares
//! itself unusable and every run pulls, exactly as without it.
//!
//! Known blind spot, shared by every inotify user: a write to a staging file through a
//! hard link that lives outside the staging directory. The staging directory is private
//! (0700), so only the session's own user could set that up.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

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

/// inotify watches on every directory of one staging leaf.
#[derive(Debug)]
pub(crate) struct TreeWatch {
    inotify: Inotify,
    root: PathBuf,
    usable: bool,
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

impl TreeWatch {
    /// An inotify instance for the tree at `root` (no watches yet: call
    /// [`Self::rewatch`]). `None` when inotify is unavailable.
    pub(crate) fn new(root: &Path) -> Option<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        Some(Self {
            inotify,
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
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            match self.inotify.add_watch(dir.as_path(), MASK) {
                Ok(_) => {}
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

    /// Drains the event queue and says what happened since the previous call.
    pub(crate) fn take_activity(&mut self) -> Activity {
        let mut activity = Activity::None;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return activity,
                Ok(events) => {
                    for event in events {
                        activity = activity.max(classify(event.mask));
                    }
                }
                Err(Errno::EAGAIN) => return activity,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    self.usable = false;
                    return Activity::Structure;
                }
            }
        }
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
