//! Applying the gathered changes to the VFS, all or nothing.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the parts share the parent's imports and types"
)]
use super::*;

/// Removes whatever is at `path` in the VFS (nothing there is fine).
fn remove_if_present(vfs: &mut Vfs, path: &str) -> Result<bool, VfsError> {
    match vfs.remove(path) {
        Ok(()) => Ok(true),
        Err(VfsError::NotFound { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Makes sure the parent directory of `path` exists in the VFS (it can be missing when
/// the VFS was edited since the last push).
fn ensure_parent(vfs: &mut Vfs, path: &str) -> Result<(), VfsError> {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((parent, _)) => parent,
    };
    match vfs.stat(parent) {
        Ok(meta) if meta.kind == NodeKind::Dir => Ok(()),
        Ok(_) => {
            vfs.remove(parent)?;
            vfs.mkdir(parent)
        }
        Err(VfsError::NotFound { .. }) => vfs.mkdir(parent),
        Err(err) => Err(err),
    }
}

/// Applies gathered changes to the VFS.
pub(super) fn apply(
    vfs: &mut Vfs,
    root: &str,
    ops: Vec<PullOp>,
    report: &mut SyncReport,
) -> Result<(), VmSyncError> {
    for op in ops {
        match op {
            PullOp::Remove { rel } => {
                if !rel.is_empty() && remove_if_present(vfs, &vfs_join(root, &rel))? {
                    report.deleted += 1;
                }
            }
            PullOp::Mkdir { rel, mode, mtime } => {
                let path = vfs_join(root, &rel);
                match vfs.stat(&path) {
                    Ok(meta) if meta.kind == NodeKind::Dir => {}
                    Ok(_) => {
                        vfs.remove(&path)?;
                        report.deleted += 1;
                        vfs.mkdir(&path)?;
                        report.dirs_created += 1;
                    }
                    Err(VfsError::NotFound { .. }) => {
                        vfs.mkdir(&path)?;
                        report.dirs_created += 1;
                    }
                    Err(err) => return Err(err.into()),
                }
                set_dir_meta(vfs, &path, mode, mtime)?;
            }
            PullOp::DirMeta { rel, mode, mtime } => {
                let path = vfs_join(root, &rel);
                match vfs.stat(&path) {
                    Ok(meta) if meta.kind == NodeKind::Dir => {}
                    Ok(_) => {
                        vfs.remove(&path)?;
                        vfs.mkdir(&path)?;
                    }
                    Err(VfsError::NotFound { .. }) => vfs.mkdir(&path)?,
                    Err(err) => return Err(err.into()),
                }
                set_dir_meta(vfs, &path, mode, mtime)?;
            }
            PullOp::File {
                rel,
                content,
                mode,
                mtime,
            } => {
                let path = vfs_join(root, &rel);
                ensure_parent(vfs, &path)?;
                if vfs.stat(&path).is_ok_and(|meta| meta.kind == NodeKind::Dir) {
                    vfs.remove(&path)?;
                    report.deleted += 1;
                }
                report.bytes_written += content.len();
                match content {
                    Pulled::Read(content) => vfs.write_file_with(&path, content, mode, mtime)?,
                    Pulled::Lazy(lazy) => vfs.write_file_lazy(&path, lazy, mode, mtime)?,
                }
                report.files_written += 1;
            }
            PullOp::Symlink { rel, target, mtime } => {
                let path = vfs_join(root, &rel);
                ensure_parent(vfs, &path)?;
                remove_if_present(vfs, &path)?;
                vfs.symlink_with(&target, &path, mtime)?;
                report.files_written += 1;
            }
        }
    }
    Ok(())
}

/// Sets mode and mtime of a VFS directory when they differ.
fn set_dir_meta(vfs: &mut Vfs, path: &str, mode: u32, mtime: SystemTime) -> Result<(), VfsError> {
    let meta = vfs.stat(path)?;
    if meta.mode != mode {
        vfs.set_mode(path, mode)?;
    }
    if meta.mtime != mtime {
        vfs.set_mtime(path, mtime)?;
    }
    Ok(())
}
