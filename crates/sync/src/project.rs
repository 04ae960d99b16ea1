//! Project root: which VFS subtree a backend syncs for a tool run from a given cwd.
//!
//! A tool such as `cargo` run from `/ws/app/src` needs more than `src`: it reads the
//! manifest above it and, in a workspace, every member and path dependency. The earlier
//! project exported only the cwd's subtree, so `cargo` in a subdirectory failed (ENOENT)
//! or found an unrelated manifest. The rule here is cargo's own lookup, done on the VFS:
//!
//! 1. the **outermost** ancestor of the cwd (the cwd included) whose `Cargo.toml` declares a
//!    workspace (`[workspace]` or any `[workspace.*]` table), else
//! 2. the **nearest** ancestor (the cwd included) that has a `Cargo.toml`, else
//! 3. the cwd itself.
//!
//! Only VFS reads happen here: no host I/O, no process spawning. The manifest test is
//! lexical (a TOML table header line, comments ignored), which is all cargo needs to decide
//! that a manifest is a workspace root; no TOML parser is pulled in for it.

use devshell_vm_vfs::{NodeKind, Vfs};

use crate::VmSyncError;

/// File name cargo looks for in each ancestor directory.
const MANIFEST: &str = "Cargo.toml";

/// Returns the VFS path of the project root for a tool run from `cwd` (see the module docs
/// for the rule). `cwd` may be relative to the VFS cwd; the result is absolute and canonical.
///
/// # Errors
/// [`VmSyncError::Vfs`] when `cwd` is not a valid path, does not exist, is not a directory,
/// or a manifest on the way up cannot be read.
pub fn project_root(vfs: &Vfs, cwd: &str) -> Result<String, VmSyncError> {
    let cwd = vfs.normalize(cwd).map_err(VmSyncError::Vfs)?;
    let meta = vfs.stat(&cwd).map_err(VmSyncError::Vfs)?;
    if meta.kind != NodeKind::Dir {
        return Err(VmSyncError::Vfs(devshell_vm_vfs::VfsError::NotADirectory {
            path: cwd,
        }));
    }

    let mut nearest_manifest_dir: Option<String> = None;
    let mut outermost_workspace: Option<String> = None;
    for dir in ancestors(&cwd) {
        let manifest = join(dir, MANIFEST);
        let Some(text) = read_manifest(vfs, &manifest)? else {
            continue;
        };
        if nearest_manifest_dir.is_none() {
            nearest_manifest_dir = Some(dir.to_owned());
        }
        if manifest_declares_workspace(&text) {
            outermost_workspace = Some(dir.to_owned());
        }
    }
    Ok(outermost_workspace.or(nearest_manifest_dir).unwrap_or(cwd))
}

/// Reads `path` when it is a regular file; `None` when it is missing or not a file (cargo
/// ignores a directory or a dangling link named `Cargo.toml` the same way: it is no manifest).
fn read_manifest(vfs: &Vfs, path: &str) -> Result<Option<String>, VmSyncError> {
    match vfs.stat(path) {
        Ok(meta) if meta.kind == NodeKind::File => {
            let bytes = vfs.read_file(path).map_err(VmSyncError::Vfs)?;
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        }
        Ok(_) | Err(devshell_vm_vfs::VfsError::NotFound { .. }) => Ok(None),
        Err(other) => Err(VmSyncError::Vfs(other)),
    }
}

/// `true` when the manifest text has a `[workspace]` table or a `[workspace.<key>]` table
/// header (either makes the manifest a workspace root for cargo). Lexical: comments are
/// ignored, no TOML parsing. Shared with host-side lookups of the same rule.
#[must_use]
pub fn manifest_declares_workspace(manifest: &str) -> bool {
    manifest.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
            return false;
        };
        // `[[workspace]]` is not a valid cargo table, so only single brackets count.
        if inner.starts_with('[') {
            return false;
        }
        let inner = inner.trim();
        inner == "workspace"
            || inner
                .strip_prefix("workspace")
                .is_some_and(|rest| rest.trim_start().starts_with('.'))
    })
}

/// `/a/b/c` → `/a/b/c`, `/a/b`, `/a`, `/` (nearest first). Input is canonical and absolute.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(path);
    std::iter::from_fn(move || {
        let current = next?;
        next = if current == "/" {
            None
        } else {
            match current.rfind('/') {
                Some(0) => Some("/"),
                Some(index) => Some(&current[..index]),
                None => None,
            }
        };
        Some(current)
    })
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vfs_with(files: &[(&str, &str)]) -> Vfs {
        let mut vfs = Vfs::new();
        for (path, text) in files {
            let parent = &path[..path.rfind('/').expect("absolute test path")];
            if !parent.is_empty() {
                vfs.mkdir(parent).expect("mkdir parent");
            }
            vfs.write_file(path, text.as_bytes().to_vec())
                .expect("write test file");
        }
        vfs
    }

    #[test]
    fn ancestors_walk_up_to_root() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a/b/c", "/a/b", "/a", "/"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn workspace_header_detection() {
        assert!(manifest_declares_workspace("[workspace]\nmembers = []\n"));
        assert!(manifest_declares_workspace("  [ workspace ]  # root\n"));
        assert!(manifest_declares_workspace(
            "[workspace.package]\nversion = \"1\"\n"
        ));
        assert!(manifest_declares_workspace("[workspace.dependencies]\n"));
        assert!(!manifest_declares_workspace(
            "[package]\nname = \"workspace\"\n"
        ));
        assert!(!manifest_declares_workspace("# [workspace]\n[package]\n"));
        assert!(!manifest_declares_workspace("[workspaces]\n"));
        assert!(!manifest_declares_workspace("[[workspace]]\n"));
        assert!(!manifest_declares_workspace(
            "[dependencies]\nworkspace = \"1\"\n"
        ));
    }

    #[test]
    fn subdirectory_of_a_package_maps_to_the_package() {
        let mut vfs = vfs_with(&[
            ("/proj/app/Cargo.toml", "[package]\nname = \"app\"\n"),
            ("/proj/app/src/main.rs", "fn main() {}\n"),
        ]);
        vfs.mkdir("/proj/app/src/deep").expect("mkdir");
        assert_eq!(
            project_root(&vfs, "/proj/app/src/deep").expect("root"),
            "/proj/app"
        );
        assert_eq!(project_root(&vfs, "/proj/app").expect("root"), "/proj/app");
    }

    #[test]
    fn member_of_a_workspace_maps_to_the_outermost_workspace() {
        let vfs = vfs_with(&[
            ("/ws/Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"),
            ("/ws/crates/a/Cargo.toml", "[package]\nname = \"a\"\n"),
            ("/ws/crates/a/src/lib.rs", ""),
            ("/Cargo.toml", "[package]\nname = \"top\"\n"),
        ]);
        assert_eq!(project_root(&vfs, "/ws/crates/a/src").expect("root"), "/ws");
        assert_eq!(project_root(&vfs, "/ws/crates").expect("root"), "/ws");
    }

    #[test]
    fn nested_workspaces_pick_the_outermost() {
        let vfs = vfs_with(&[
            ("/outer/Cargo.toml", "[workspace]\n"),
            (
                "/outer/inner/Cargo.toml",
                "[workspace]\n[package]\nname = \"i\"\n",
            ),
            ("/outer/inner/src/main.rs", ""),
        ]);
        assert_eq!(
            project_root(&vfs, "/outer/inner/src").expect("root"),
            "/outer"
        );
    }

    #[test]
    fn no_manifest_means_the_cwd_itself() {
        let mut vfs = Vfs::new();
        vfs.mkdir("/plain/dir").expect("mkdir");
        assert_eq!(
            project_root(&vfs, "/plain/dir").expect("root"),
            "/plain/dir"
        );
        assert_eq!(project_root(&vfs, "/").expect("root"), "/");
    }

    #[test]
    fn manifest_at_root_maps_to_root() {
        let vfs = vfs_with(&[("/Cargo.toml", "[package]\n"), ("/src/main.rs", "")]);
        assert_eq!(project_root(&vfs, "/src").expect("root"), "/");
    }

    #[test]
    fn a_directory_named_cargo_toml_is_not_a_manifest() {
        let mut vfs = Vfs::new();
        vfs.mkdir("/p/Cargo.toml").expect("mkdir");
        vfs.mkdir("/p/sub").expect("mkdir");
        assert_eq!(project_root(&vfs, "/p/sub").expect("root"), "/p/sub");
    }

    #[test]
    fn relative_cwd_resolves_against_the_vfs_cwd() {
        let mut vfs = vfs_with(&[("/p/Cargo.toml", "[package]\n"), ("/p/src/lib.rs", "")]);
        vfs.set_cwd("/p").expect("cd");
        assert_eq!(project_root(&vfs, "src").expect("root"), "/p");
    }

    #[test]
    fn missing_or_file_cwd_is_an_error() {
        let vfs = vfs_with(&[("/p/Cargo.toml", "[package]\n")]);
        assert!(matches!(
            project_root(&vfs, "/nope"),
            Err(VmSyncError::Vfs(devshell_vm_vfs::VfsError::NotFound { .. }))
        ));
        assert!(matches!(
            project_root(&vfs, "/p/Cargo.toml"),
            Err(VmSyncError::Vfs(
                devshell_vm_vfs::VfsError::NotADirectory { .. }
            ))
        ));
    }
}
