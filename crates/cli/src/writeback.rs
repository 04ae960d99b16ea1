//! `--write-back`: the tool's changes under `--dir` applied to the directory itself.
//!
//! 1. **Plan.** Deleted and modified paths were loaded (they existed before the run);
//!    created paths are written only when the load would have taken them: not ignored
//!    (`.gitignore` & co.), not excluded, not under `.git` ([`IgnoreRules::leaves_out`]).
//!    So `cargo build --write-back` brings back nothing from `target/`.
//! 2. **Check, before touching anything.** Every entry recorded at load time must still
//!    be there with the same kind, device and inode, and (files and symlinks) the same
//!    size, mtime and ctime; every path to create must not exist. Any difference (an
//!    edit made during the run, a directory swapped for a symlink) refuses the whole
//!    write-back with the list of conflicting paths; nothing is written.
//! 3. **Apply.** Removals first (deepest first; a directory still holding entries that
//!    were not loaded is kept and reported), then directories, files and symlinks in
//!    path order. Each file is written to a temporary name in its directory (content,
//!    mode, mtime, fsync) and renamed over the old one, so a reader sees the old or the
//!    new file, never a mix. Every path is resolved below `--dir` one component at a
//!    time with `O_NOFOLLOW` ([`crate::safefs`]): no symlink is ever followed, in the
//!    middle of a path or at its end, so nothing outside `--dir` is touched.
//!
//! Between the check and the apply the directory is not locked: an edit landing in that
//! window (milliseconds) is overwritten by the rename, as with any editor's atomic save.

use std::collections::BTreeSet;
use std::time::SystemTime;

use devshell_vm::Vfs;
use devshell_vm::vfs::{Content, NodeKind};
use nix::errno::Errno;

use crate::CliError;
use crate::changes::{ChangeSet, Kind};
use crate::load::LoadedDir;
use crate::safefs::{Root, Stamp};

/// A path and why something happened (or did not) to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PathReason {
    pub(crate) path: String,
    pub(crate) reason: String,
}

/// What a write-back did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct WriteBackReport {
    /// Files, symlinks and directories created or replaced (relative to `--dir`,
    /// directories with a trailing `/`).
    pub(crate) written: Vec<String>,
    /// Paths removed.
    pub(crate) deleted: Vec<String>,
    /// Directories the tool deleted that still hold entries that were never loaded.
    pub(crate) kept: Vec<PathReason>,
    /// Changes not written, with why (ignored or excluded paths).
    pub(crate) not_written: Vec<PathReason>,
}

enum Op {
    Remove {
        rel: String,
        dir: bool,
    },
    Mkdir {
        rel: String,
        mode: u32,
    },
    File {
        rel: String,
        content: Content,
        mode: u32,
        mtime: SystemTime,
    },
    Link {
        rel: String,
        target: String,
    },
}

impl Op {
    fn rel(&self) -> &str {
        match self {
            Self::Remove { rel, .. }
            | Self::Mkdir { rel, .. }
            | Self::File { rel, .. }
            | Self::Link { rel, .. } => rel,
        }
    }
}

fn rel_of(vfs_path: &str) -> &str {
    vfs_path.trim_start_matches('/')
}

fn shown(rel: &str, dir: bool) -> String {
    if dir {
        format!("{rel}/")
    } else {
        rel.to_owned()
    }
}

/// Applies `changes` (from the run on `loaded`'s tree, now `after`) to the directory.
/// `print` gets one line per path written or deleted.
///
/// # Errors
/// [`CliError::WriteBackRefused`] (nothing written) when the directory changed since it
/// was loaded; [`CliError::WriteBack`] naming the path when an operation failed (paths
/// before it are written).
pub(crate) fn write_back(
    loaded: &LoadedDir,
    after: &Vfs,
    changes: &ChangeSet,
    print: &mut dyn FnMut(&str),
) -> Result<WriteBackReport, CliError> {
    let mut report = WriteBackReport::default();
    let (removals, creations) = plan(loaded, after, changes, &mut report)?;

    let root = Root::open(&loaded.root).map_err(|err| CliError::WriteBack {
        path: loaded.root.clone(),
        message: err.desc().to_owned(),
    })?;
    let conflicts = check(loaded, &root, &creations);
    if !conflicts.is_empty() {
        return Err(CliError::WriteBackRefused {
            dir: loaded.root.clone(),
            conflicts,
        });
    }

    let mut kept: BTreeSet<String> = BTreeSet::new();
    for op in removals.iter().chain(&creations) {
        let rel = op.rel();
        if kept
            .iter()
            .any(|k| rel == k || rel.starts_with(&format!("{k}/")))
        {
            report.not_written.push(PathReason {
                path: rel.to_owned(),
                reason: "its directory was kept (it holds entries that were not loaded)".to_owned(),
            });
            continue;
        }
        let result = match op {
            Op::Remove { rel, dir: true } => match root.remove_dir(rel) {
                Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                    kept.insert(rel.clone());
                    report.kept.push(PathReason {
                        path: shown(rel, true),
                        reason: "it holds entries that were not loaded".to_owned(),
                    });
                    print(&format!(
                        "kept    {} (holds entries that were not loaded)",
                        shown(rel, true)
                    ));
                    continue;
                }
                other => other,
            },
            Op::Remove { rel, dir: false } => root.remove_file(rel),
            Op::Mkdir { rel, mode } => root.mkdir(rel, *mode),
            Op::File {
                rel,
                content,
                mode,
                mtime,
            } => root.replace_file(rel, content, *mode, *mtime),
            Op::Link { rel, target } => root.replace_symlink(rel, target),
        };
        result.map_err(|err| CliError::WriteBack {
            path: loaded.root.join(rel),
            message: err.desc().to_owned(),
        })?;
        match op {
            Op::Remove { rel, dir } => {
                print(&format!("deleted {}", shown(rel, *dir)));
                report.deleted.push(shown(rel, *dir));
            }
            Op::Mkdir { rel, .. } => {
                print(&format!("created {}", shown(rel, true)));
                report.written.push(shown(rel, true));
            }
            Op::File { rel, .. } | Op::Link { rel, .. } => {
                let verb = if loaded.stamps.contains_key(rel) {
                    "wrote  "
                } else {
                    "created"
                };
                print(&format!("{verb} {rel}"));
                report.written.push(rel.clone());
            }
        }
    }
    Ok(report)
}

/// Removals (deepest first) and creations (parents first).
fn plan(
    loaded: &LoadedDir,
    after: &Vfs,
    changes: &ChangeSet,
    report: &mut WriteBackReport,
) -> Result<(Vec<Op>, Vec<Op>), CliError> {
    let mut removals = Vec::new();
    let mut creations = Vec::new();
    let mut create = |vfs_path: &str, report: &mut WriteBackReport| -> Result<(), CliError> {
        let rel = rel_of(vfs_path).to_owned();
        let fail = |err: devshell_vm::vfs::VfsError| CliError::WriteBack {
            path: loaded.root.join(&rel),
            message: devshell_vm::error_chain(&err),
        };
        let node = after.node(vfs_path).map_err(fail)?;
        let meta = node.metadata();
        if loaded.rules.leaves_out(&rel, meta.kind == NodeKind::Dir) {
            report.not_written.push(PathReason {
                path: shown(&rel, meta.kind == NodeKind::Dir),
                reason: "ignored or excluded (it would not have been loaded)".to_owned(),
            });
            return Ok(());
        }
        // Read before `rel` moves into the op (a lazy content may fail to read).
        let content = node.content().map_err(fail)?.cloned();
        creations.push(match meta.kind {
            NodeKind::Dir => Op::Mkdir {
                rel,
                mode: meta.mode,
            },
            NodeKind::File => Op::File {
                rel,
                content: content.unwrap_or_default(),
                mode: meta.mode,
                mtime: meta.mtime,
            },
            NodeKind::Symlink => Op::Link {
                rel,
                target: node.link_target().unwrap_or_default().to_owned(),
            },
        });
        Ok(())
    };
    for change in &changes.deleted {
        removals.push(Op::Remove {
            rel: rel_of(&change.path).to_owned(),
            dir: change.kind == Kind::Dir,
        });
    }
    for change in &changes.modified {
        let rel = rel_of(&change.path);
        let was_dir = loaded.stamps.get(rel).is_some_and(Stamp::is_dir);
        let is_dir = change.kind == Kind::Dir;
        if was_dir || is_dir {
            // A kind change: the old entry goes first (a file or symlink is replaced
            // by the rename anyway).
            removals.push(Op::Remove {
                rel: rel.to_owned(),
                dir: was_dir,
            });
        }
        create(&change.path, report)?;
    }
    for change in &changes.created {
        create(&change.path, report)?;
    }
    // Children before parents for removals; parents before children for creations.
    removals.sort_by(|a, b| b.rel().cmp(a.rel()));
    creations.sort_by(|a, b| a.rel().cmp(b.rel()));
    // A created entry under a path that will not be written is not written either.
    let mut skipped: Vec<String> = report
        .not_written
        .iter()
        .map(|p| p.path.trim_end_matches('/').to_owned())
        .collect();
    creations.retain(|op| {
        let rel = op.rel();
        let under = skipped.iter().any(|s| rel.starts_with(&format!("{s}/")));
        if under {
            skipped.push(rel.to_owned());
        }
        !under
    });
    Ok((removals, creations))
}

/// Every difference between the directory now and at load time, as `path: what`.
fn check(loaded: &LoadedDir, root: &Root, creations: &[Op]) -> Vec<PathReason> {
    let mut conflicts = Vec::new();
    let mut conflict = |path: &str, reason: String| {
        conflicts.push(PathReason {
            path: path.to_owned(),
            reason,
        });
    };
    for (rel, stamp) in &loaded.stamps {
        let now = if rel.is_empty() {
            nix::sys::stat::fstat(root.fd()).map(Some)
        } else {
            root.lstat(rel)
        };
        match now {
            Ok(Some(stat)) if Stamp::of(&stat) == *stamp => {}
            Ok(Some(stat)) if Stamp::of(&stat).kind != stamp.kind => {
                conflict(
                    rel,
                    "replaced by another kind of entry since it was loaded".to_owned(),
                );
            }
            Ok(Some(_)) => conflict(rel, "changed since it was loaded".to_owned()),
            Ok(None) => conflict(rel, "deleted since it was loaded".to_owned()),
            Err(err) => conflict(rel, format!("cannot be checked: {}", err.desc())),
        }
    }
    for op in creations {
        let rel = op.rel();
        if loaded.stamps.contains_key(rel) {
            continue;
        }
        match root.lstat(rel) {
            // Missing, or below an entry the plan replaces (a loaded file or symlink
            // that becomes a directory): every loaded ancestor was checked above.
            Ok(None) | Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {}
            Ok(Some(_)) => conflict(
                rel,
                "created in the directory since it was loaded".to_owned(),
            ),
            Err(err) => conflict(rel, format!("cannot be checked: {}", err.desc())),
        }
    }
    conflicts
}
