//! `copy_tree_to_host`: the only place (besides the image module) that does host I/O.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;

use crate::VfsError;
use crate::node::{Node, NodeData};
use crate::path::split_parent;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VfsError + '_ {
    move |source| VfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `node` (at canonical VFS path `norm`) to the host with the leaf layout.
pub(crate) fn copy_to_host(node: &Node, norm: &str, host_dir: &Path) -> Result<(), VfsError> {
    if norm == "/" {
        fs::create_dir_all(host_dir).map_err(io_err(host_dir))?;
        let NodeData::Dir(children) = &node.data else {
            unreachable!("the root is a directory");
        };
        for (name, child) in children.0.iter() {
            copy_node(child, format!("/{name}"), &host_dir.join(name))?;
        }
        return Ok(());
    }
    let name = split_parent(norm).1;
    copy_node(node, norm.to_owned(), &host_dir.join(name))
}

/// Removes whatever is at `dest` unless it is a directory and `keep_dir` is set.
/// Returns `true` when a directory was kept.
fn clear_destination(dest: &Path, keep_dir: bool) -> Result<bool, VfsError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() && keep_dir => Ok(true),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(dest)
            .map(|()| false)
            .map_err(io_err(dest)),
        Ok(_) => fs::remove_file(dest).map(|()| false).map_err(io_err(dest)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(io_err(dest)(err)),
    }
}

/// Copies one node and its subtree (iteratively: deep trees cannot overflow the stack).
/// Directory modes and mtimes are applied after their children are written.
fn copy_node(node: &Node, vfs_path: String, dest: &Path) -> Result<(), VfsError> {
    enum Step<'a> {
        Enter(&'a Node, String, PathBuf),
        Finish(&'a Node, PathBuf),
    }
    let mut steps = vec![Step::Enter(node, vfs_path, dest.to_path_buf())];
    while let Some(step) = steps.pop() {
        match step {
            Step::Enter(node, vfs_path, dest) => match &node.data {
                NodeData::Dir(children) => {
                    if !clear_destination(&dest, true)? {
                        fs::create_dir(&dest).map_err(io_err(&dest))?;
                    }
                    // Owner needs rwx while filling; the real mode is set afterwards.
                    fs::set_permissions(&dest, Permissions::from_mode(0o700))
                        .map_err(io_err(&dest))?;
                    let children_steps: Vec<Step<'_>> = children
                        .0
                        .iter()
                        .rev()
                        .map(|(name, child)| {
                            Step::Enter(child, format!("{vfs_path}/{name}"), dest.join(name))
                        })
                        .collect();
                    steps.push(Step::Finish(node, dest));
                    steps.extend(children_steps);
                }
                NodeData::File(content) => {
                    // A lazy content is read before anything at `dest` is replaced
                    // (`dest` may be the very file it reads from).
                    let bytes = content.get(&vfs_path)?;
                    write_file(node, bytes, &dest)?;
                }
                NodeData::Symlink(target) => {
                    clear_destination(&dest, false)?;
                    std::os::unix::fs::symlink(target, &dest).map_err(io_err(&dest))?;
                    let mtime = FileTime::from_system_time(node.mtime);
                    filetime::set_symlink_file_times(&dest, mtime, mtime).map_err(io_err(&dest))?;
                }
            },
            Step::Finish(node, dest) => {
                fs::set_permissions(&dest, Permissions::from_mode(node.mode))
                    .map_err(io_err(&dest))?;
                filetime::set_file_mtime(&dest, FileTime::from_system_time(node.mtime))
                    .map_err(io_err(&dest))?;
            }
        }
    }
    Ok(())
}

fn write_file(node: &Node, content: &[u8], dest: &Path) -> Result<(), VfsError> {
    clear_destination(dest, false)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(io_err(dest))?;
    file.write_all(content).map_err(io_err(dest))?;
    file.set_permissions(Permissions::from_mode(node.mode))
        .map_err(io_err(dest))?;
    filetime::set_file_handle_times(&file, None, Some(FileTime::from_system_time(node.mtime)))
        .map_err(io_err(dest))
}
