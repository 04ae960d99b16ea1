//! The [`GuestFsOps`] trait: file operations on the guest tree in Mode P, and the one
//! behaviour every implementation shares.

use crate::{GuestFsError, check_guest_path};

/// What a guest path is. Symlinks are reported as such, never followed by [`GuestFsOps::stat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (its target is not inspected).
    Symlink,
}

/// Metadata of one guest path, as returned by [`GuestFsOps::stat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestMetadata {
    /// Directory, file or symlink.
    pub kind: GuestKind,
    /// Length in bytes for files; implementation-defined for directories and symlinks.
    pub size: u64,
}

/// File operations on the guest tree, addressed by absolute guest paths under
/// [`GuestFsOps::mount`].
///
/// # The contract (held by every implementation, checked by the `conformance` suite)
///
/// **Paths.** Every path argument is first passed through [`check_guest_path`]: it must
/// be non-empty, NUL-free, absolute, and normalise (lexically: `.` dropped, `..` pops)
/// to the mount or below it. Anything else fails with [`GuestFsError::InvalidPath`]
/// *before anything is sent to the guest*. The implementation then acts on the
/// normalised path. A path that would leave the mount through a symlink on the guest
/// fails with [`GuestFsError::InvalidPath`] (or [`GuestFsError::NotFound`] where the
/// implementation resolves links as if the mount were the root) and reads, writes or
/// removes nothing outside the mount. Symlinks whose target stays inside the mount are
/// followed by `list_dir`, `read_file`, `write_file` and `mkdir`; `stat`, `exists` and
/// `remove` act on the link itself, and `remove` never descends through a link.
///
/// **Errors: one meaning for all implementations.** Error paths are the normalised path
/// the caller asked for (see [`GuestFsError`]).
///
/// | situation | result |
/// |---|---|
/// | path empty, with NUL, relative, or outside the mount | `InvalidPath` |
/// | path (or a parent directory) missing: `list_dir`, `read_file`, `stat`, `remove`, `rename` source | `NotFound` |
/// | a parent component of the path is a file (any operation) | `NotADirectory` |
/// | `list_dir` of a file | `NotADirectory` |
/// | `mkdir` where the path is an existing file | `NotADirectory` |
/// | `read_file` of a directory (including the mount) | `IsADirectory` |
/// | `write_file` over a directory (including the mount) | `IsADirectory` |
/// | `remove` of the mount root | `InvalidPath` |
/// | `rename` of the mount root, or into its own subtree | `InvalidPath` |
/// | `rename` onto an existing directory | `IsADirectory` (path: `to`) |
/// | `rename` of a directory onto an existing file | `NotADirectory` (path: `to`) |
/// | guest command failed otherwise / transport down / bug | `GuestCommand` / `Transport` / `Internal` |
///
/// **Operations.**
/// - `list_dir`: names only (no `/`, no `.`/`..`), dotfiles included, sorted by byte
///   order (`str::cmp`), one level deep.
/// - `read_file`: the whole content.
/// - `write_file`: creates the file or truncates and replaces it; **creates missing
///   parent directories** (like `mkdir -p` on the parent). The mount itself always
///   exists.
/// - `mkdir`: like `mkdir -p`: creates missing parents, succeeds if the directory
///   already exists (including the mount), keeps existing contents.
/// - `remove`: like `rm -r` on one path: files, symlinks (the link, not its target) and
///   whole directory trees. Missing path → `NotFound`.
/// - `stat`: kind and size without following a final symlink.
/// - `exists`: `stat` succeeded; `NotFound` and `NotADirectory` (a parent is a file)
///   mean `Ok(false)`; other errors (including `InvalidPath`) are returned.
/// - `rename`: moves a file or a directory tree; creates missing parents of `to`;
///   replaces an existing *file* (or symlink) at `to`; `from == to` (after
///   normalisation) is a no-op when `from` exists. The default implementation is
///   [`rename_by_copy`]; implementations with a native rename should override it.
pub trait GuestFsOps {
    /// The guest mount: normalised absolute path of the directory every path must lie
    /// under. It always exists as a directory.
    fn mount(&self) -> &str;

    /// Names in directory `path`, sorted, dotfiles included.
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError>;

    /// The whole content of file `path`.
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError>;

    /// Creates or replaces file `path` with `data`, creating missing parent directories.
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError>;

    /// Creates directory `path` and missing parents (`mkdir -p`).
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError>;

    /// Removes `path`: a file, a symlink or a whole directory tree.
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError>;

    /// Kind and size of `path`, not following a final symlink.
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError>;

    /// Whether `path` exists (a dangling symlink exists).
    ///
    /// # Errors
    /// Every error of [`GuestFsOps::stat`] except `NotFound` and `NotADirectory`.
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        match self.stat(path) {
            Ok(_) => Ok(true),
            Err(GuestFsError::NotFound { .. } | GuestFsError::NotADirectory { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves `from` to `to` (see the contract on [`GuestFsOps`]).
    ///
    /// # Errors
    /// See the table on [`GuestFsOps`].
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        rename_by_copy(self, from, to)
    }
}

/// Forwarding impl so `&mut dyn GuestFsOps` and `&mut T` can be passed where an owned
/// implementation is expected.
impl<T: GuestFsOps + ?Sized> GuestFsOps for &mut T {
    fn mount(&self) -> &str {
        (**self).mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        (**self).list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        (**self).read_file(path)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        (**self).write_file(path, data)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        (**self).mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        (**self).remove(path)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        (**self).stat(path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        (**self).exists(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        (**self).rename(from, to)
    }
}

impl<T: GuestFsOps + ?Sized> GuestFsOps for Box<T> {
    fn mount(&self) -> &str {
        (**self).mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        (**self).list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        (**self).read_file(path)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        (**self).write_file(path, data)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        (**self).mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        (**self).remove(path)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        (**self).stat(path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        (**self).exists(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        (**self).rename(from, to)
    }
}

/// One entry of a copy plan: path relative to the source root and whether it is a dir.
struct PlanEntry {
    rel: String,
    dir: bool,
}

/// `rename` built from the other operations: the trait's default.
///
/// Checks both paths and the rename rules of the [`GuestFsOps`] contract, then copies
/// (`read_file`/`write_file`, `mkdir` for directories) and finally removes `from`. The
/// whole source tree is inspected before anything is written, so a tree this function
/// cannot move (it contains a symlink: there is no operation to recreate one) fails
/// with [`GuestFsError::Internal`] without changing anything. It is not atomic: a
/// failure in the middle of copying can leave part of the tree at `to` (the source
/// stays whole until the copy is complete).
///
/// # Errors
/// As [`GuestFsOps::rename`]; `Internal` for a symlink in the moved tree.
pub fn rename_by_copy<T: GuestFsOps + ?Sized>(
    ops: &mut T,
    from: &str,
    to: &str,
) -> Result<(), GuestFsError> {
    let mount = ops.mount().to_owned();
    let from_n = check_guest_path(&mount, from)?;
    let to_n = check_guest_path(&mount, to)?;
    if from_n == mount {
        return Err(GuestFsError::invalid_path(
            from,
            "cannot rename the guest mount root",
        ));
    }
    let meta = ops.stat(&from_n)?;
    if from_n == to_n {
        return Ok(());
    }
    if to_n
        .strip_prefix(from_n.as_str())
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return Err(GuestFsError::invalid_path(
            to,
            format!("cannot move {from_n:?} into its own subtree"),
        ));
    }
    let mut replace_link = false;
    match ops.stat(&to_n) {
        Ok(existing) => match (existing.kind, meta.kind) {
            (GuestKind::Dir, _) => return Err(GuestFsError::IsADirectory { path: to_n }),
            (_, GuestKind::Dir) => return Err(GuestFsError::NotADirectory { path: to_n }),
            (GuestKind::Symlink, _) => replace_link = true,
            (GuestKind::File, _) => {}
        },
        Err(GuestFsError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let plan = match meta.kind {
        GuestKind::Symlink => {
            return Err(GuestFsError::Internal {
                message: format!(
                    "rename_by_copy cannot move symlink {from_n:?}; the implementation must override rename"
                ),
            });
        }
        GuestKind::File => vec![PlanEntry {
            rel: String::new(),
            dir: false,
        }],
        GuestKind::Dir => plan_tree(ops, &from_n)?,
    };
    if replace_link {
        ops.remove(&to_n)?;
    }
    for entry in &plan {
        let src = join_rel(&from_n, &entry.rel);
        let dst = join_rel(&to_n, &entry.rel);
        if entry.dir {
            ops.mkdir(&dst)?;
        } else {
            let data = ops.read_file(&src)?;
            ops.write_file(&dst, &data)?;
        }
    }
    ops.remove(&from_n)
}

/// `base` or `base/rel`.
fn join_rel(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_owned()
    } else {
        format!("{base}/{rel}")
    }
}

/// Pre-order listing of a directory tree (the root itself first, with `rel` empty).
fn plan_tree<T: GuestFsOps + ?Sized>(
    ops: &mut T,
    root: &str,
) -> Result<Vec<PlanEntry>, GuestFsError> {
    let mut plan = vec![PlanEntry {
        rel: String::new(),
        dir: true,
    }];
    let mut pending = vec![String::new()];
    while let Some(rel_dir) = pending.pop() {
        let names = ops.list_dir(&join_rel(root, &rel_dir))?;
        for name in names {
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            let path = join_rel(root, &rel);
            match ops.stat(&path)?.kind {
                GuestKind::Dir => {
                    plan.push(PlanEntry {
                        rel: rel.clone(),
                        dir: true,
                    });
                    pending.push(rel);
                }
                GuestKind::File => plan.push(PlanEntry { rel, dir: false }),
                GuestKind::Symlink => {
                    return Err(GuestFsError::Internal {
                        message: format!(
                            "rename_by_copy cannot move {root:?}: it contains symlink {path:?}; the implementation must override rename"
                        ),
                    });
                }
            }
        }
    }
    Ok(plan)
}
