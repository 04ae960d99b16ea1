//! What a tool changed in the workspace: paths created, modified and deleted, from the
//! VFS before the run (a clone: contents are shared, so it costs the tree structure
//! only) and after it.
//!
//! The candidates come from the VFS change journal (`changes_since` the generation taken
//! before the run: proportional to what changed, not to the tree); when the journal no
//! longer reaches back that far (a tool that wrote more than the journal keeps), both
//! trees are walked instead. Each candidate is then compared before/after: a path is
//! *modified* when its kind, content, mode or link target differs (a file rewritten with
//! the same bytes, or only touched, is not a change; a directory is listed only when
//! created or deleted).

use std::collections::BTreeSet;

use devshell_vm::Vfs;
use devshell_vm::vfs::NodeKind;

/// The kind of a changed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
}

impl From<NodeKind> for Kind {
    fn from(kind: NodeKind) -> Self {
        match kind {
            NodeKind::File => Self::File,
            NodeKind::Dir => Self::Dir,
            NodeKind::Symlink => Self::Symlink,
        }
    }
}

/// One changed path (absolute VFS path) and its kind (the new kind for a created or
/// modified path, the old one for a deleted path).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Change {
    pub(crate) path: String,
    pub(crate) kind: Kind,
}

/// Every change of one run, each list sorted by path (parents before children).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ChangeSet {
    pub(crate) created: Vec<Change>,
    pub(crate) modified: Vec<Change>,
    pub(crate) deleted: Vec<Change>,
}

impl ChangeSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.created.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

/// The changes from `before` (taken at generation `since` of `after`'s history) to
/// `after`.
pub(crate) fn diff(before: &Vfs, after: &Vfs, since: u64) -> ChangeSet {
    let mut candidates: BTreeSet<String> = BTreeSet::new();
    match after.changes_since("/", since) {
        Ok(changes) => {
            for root in changes.deleted {
                // Everything that was below a removed path.
                if let Ok(walk) = before.walk(&root) {
                    candidates.extend(walk.map(|entry| entry.path));
                }
            }
            candidates.extend(changes.upserted);
        }
        Err(_) => {
            for tree in [before, after] {
                if let Ok(walk) = tree.walk("/") {
                    candidates.extend(walk.map(|entry| entry.path));
                }
            }
        }
    }
    let mut set = ChangeSet::default();
    for path in candidates {
        if path == "/" {
            continue;
        }
        let old = before.node(&path).ok();
        let new = after.node(&path).ok();
        match (old, new) {
            (None, Some(new)) => set.created.push(Change {
                path,
                kind: new.kind().into(),
            }),
            (Some(old), None) => set.deleted.push(Change {
                path,
                kind: old.kind().into(),
            }),
            (Some(old), Some(new)) => {
                let (a, b) = (old.metadata(), new.metadata());
                let differs = a.kind != b.kind
                    || match a.kind {
                        NodeKind::Dir => false,
                        NodeKind::File => {
                            // A content that cannot be read (a lazy one changed on the
                            // host) is not known to be the same: reported as modified.
                            a.mode != b.mode
                                || match (old.content(), new.content()) {
                                    (Ok(x), Ok(y)) => x.map(|c| &c[..]) != y.map(|c| &c[..]),
                                    _ => true,
                                }
                        }
                        NodeKind::Symlink => old.link_target() != new.link_target(),
                    };
                if differs {
                    set.modified.push(Change {
                        path,
                        kind: new.kind().into(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: Kind) -> Change {
        Change {
            path: path.to_owned(),
            kind,
        }
    }

    fn sample() -> Vfs {
        let mut vfs = Vfs::new();
        vfs.mkdir("/src/old").expect("mkdir");
        vfs.write_file("/src/lib.rs", b"fn a(){}".to_vec())
            .expect("write");
        vfs.write_file("/src/same.rs", b"same".to_vec())
            .expect("write");
        vfs.write_file("/src/old/x.rs", b"x".to_vec())
            .expect("write");
        vfs.symlink("lib.rs", "/src/link").expect("link");
        vfs
    }

    fn apply(vfs: &mut Vfs) {
        vfs.write_file("/src/lib.rs", b"fn a() {}\n".to_vec())
            .expect("write");
        vfs.write_file("/src/same.rs", b"same".to_vec())
            .expect("same bytes");
        vfs.remove("/src/old").expect("rm");
        vfs.mkdir("/gen").expect("mkdir");
        vfs.write_file("/gen/out.rs", b"//".to_vec())
            .expect("write");
        vfs.remove("/src/link").expect("rm");
        vfs.mkdir("/src/link").expect("dir where the link was");
    }

    fn expected() -> ChangeSet {
        ChangeSet {
            created: vec![change("/gen", Kind::Dir), change("/gen/out.rs", Kind::File)],
            modified: vec![
                change("/src/lib.rs", Kind::File),
                change("/src/link", Kind::Dir),
            ],
            deleted: vec![
                change("/src/old", Kind::Dir),
                change("/src/old/x.rs", Kind::File),
            ],
        }
    }

    #[test]
    fn created_modified_and_deleted_from_the_journal() {
        let mut vfs = sample();
        let before = vfs.clone();
        let since = vfs.generation();
        apply(&mut vfs);
        assert_eq!(diff(&before, &vfs, since), expected());
    }

    #[test]
    fn the_same_answer_when_the_journal_does_not_reach_back() {
        let mut vfs = sample();
        let before = vfs.clone();
        let since = vfs.generation();
        vfs.set_history_limit(1);
        apply(&mut vfs);
        assert!(vfs.changes_since("/", since).is_err(), "journal overflowed");
        assert_eq!(diff(&before, &vfs, since), expected());
    }
}
