//! Cargo's project-root rule, once, for the VFS and for host directories.
//!
//! A tool such as `cargo` run from `/ws/app/src` needs more than `src`: it reads the
//! manifest above it and, in a workspace, the workspace root and every member. Every
//! backend syncs the **project root** of the cwd, and the Lima backend mounts the
//! project root of the process's cwd; both answer with this one rule, which is cargo's
//! own (`cargo locate-project --workspace`, `Workspace::find_root` in cargo's
//! `core/workspace.rs`):
//!
//! 1. the **package manifest** is the nearest `Cargo.toml` (a regular file) in the cwd
//!    or one of its ancestors; with none, the project root is the cwd itself;
//! 2. if that manifest has a `[workspace]` table, its directory is the root;
//! 3. if it names its workspace (`package.workspace = "../.."`), that directory is the
//!    root;
//! 4. otherwise the **nearest** ancestor above it whose manifest has a `[workspace]`
//!    table that does not exclude the package (`workspace.exclude` entries are path
//!    prefixes; a `workspace.members` entry that is a prefix of the package wins over
//!    an exclude, exactly as cargo's `is_excluded`), or whose manifest points to a
//!    workspace with `package.workspace`, is the root;
//! 5. with no such ancestor, the package's own directory is the root.
//!
//! Manifests are parsed as TOML (the `toml` crate); one that does not parse is treated
//! as a package manifest without a workspace (cargo will report the parse error itself
//! when it runs in the synced tree). A workspace root whose `members` do not list the
//! package is still its root, as in cargo, which then reports "current package believes
//! it's in a workspace when it's not" — the run shows the same error it would show on
//! the user's machine.
//!
//! Paths here are `/`-separated absolute strings; `..` in a pointer is resolved
//! lexically (cargo does the same with `paths::normalize_path`).

use std::path::Path;

use devshell_vm_sync::VmSyncError;
use devshell_vm_vfs::{NodeKind, Vfs, VfsError};

/// File name cargo looks for in each directory.
pub const MANIFEST: &str = "Cargo.toml";

/// What the root rule needs to know about one manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// `Some` when the manifest has a `[workspace]` table (or any `workspace.*` key).
    pub workspace: Option<WorkspaceTable>,
    /// `package.workspace`: the path (relative to the manifest's directory) of the
    /// workspace this package belongs to.
    pub workspace_pointer: Option<String>,
}

/// The parts of a `[workspace]` table that decide membership.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkspaceTable {
    /// `workspace.members`, as written (`None` when absent).
    pub members: Option<Vec<String>>,
    /// `workspace.exclude`, as written.
    pub exclude: Vec<String>,
}

impl ManifestInfo {
    /// Parses manifest text. Text that is not valid TOML gives the default (a package
    /// without workspace information).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Self::default();
        };
        let strings = |value: Option<&toml::Value>| -> Option<Vec<String>> {
            value.and_then(toml::Value::as_array).map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
        };
        let workspace = table
            .get("workspace")
            .and_then(toml::Value::as_table)
            .map(|ws| WorkspaceTable {
                members: strings(ws.get("members")),
                exclude: strings(ws.get("exclude")).unwrap_or_default(),
            });
        let workspace_pointer = table
            .get("package")
            .and_then(toml::Value::as_table)
            .and_then(|package| package.get("workspace"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        Self {
            workspace,
            workspace_pointer,
        }
    }
}

/// Where manifests are read from: the VFS, a host directory tree, or a test's map.
pub trait ManifestSource {
    /// The error of a failed read.
    type Error;

    /// The text of `dir/Cargo.toml` when it is a regular file; `None` when it is
    /// missing or not a regular file (cargo ignores a directory or a dangling link named
    /// `Cargo.toml`).
    ///
    /// # Errors
    /// A read failure other than "missing".
    fn manifest_text(&self, dir: &str) -> Result<Option<String>, Self::Error>;
}

impl ManifestSource for Vfs {
    type Error = VfsError;

    fn manifest_text(&self, dir: &str) -> Result<Option<String>, VfsError> {
        let path = join(dir, MANIFEST);
        match self.stat(&path) {
            Ok(meta) if meta.kind == NodeKind::File => {
                let bytes = self.read_file(&path)?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Ok(_) | Err(VfsError::NotFound { .. } | VfsError::NotADirectory { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

/// The host file system (follows symlinks, as cargo does).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

impl ManifestSource for HostFs {
    type Error = std::io::Error;

    fn manifest_text(&self, dir: &str) -> Result<Option<String>, std::io::Error> {
        let path = Path::new(dir).join(MANIFEST);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => std::fs::read_to_string(&path).map(Some),
            Ok(_) => Ok(None),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }
}

/// The project root (see the module docs) for `cwd`, an absolute `/`-separated path
/// that `source` knows to be a directory.
///
/// # Errors
/// A manifest read failure from `source`.
pub fn cargo_project_root<S: ManifestSource>(source: &S, cwd: &str) -> Result<String, S::Error> {
    Ok(find_cargo_root(source, cwd)?.unwrap_or_else(|| cwd.to_owned()))
}

/// [`cargo_project_root`], but `None` when no manifest exists in `cwd` or above it (the
/// cwd is no cargo project).
///
/// # Errors
/// A manifest read failure from `source`.
pub fn find_cargo_root<S: ManifestSource>(
    source: &S,
    cwd: &str,
) -> Result<Option<String>, S::Error> {
    // 1. The nearest manifest.
    let mut package = None;
    for dir in ancestors(cwd) {
        if let Some(text) = source.manifest_text(dir)? {
            package = Some((dir, ManifestInfo::parse(&text)));
            break;
        }
    }
    let Some((package_dir, info)) = package else {
        return Ok(None);
    };
    // 2. and 3.: the package manifest is a root, or points to one.
    if info.workspace.is_some() {
        return Ok(Some(package_dir.to_owned()));
    }
    if let Some(pointer) = &info.workspace_pointer {
        return Ok(Some(resolve_pointer(package_dir, pointer)));
    }
    // 4. The nearest ancestor root that does not exclude the package.
    let package_manifest = join(package_dir, MANIFEST);
    for dir in ancestors(package_dir).skip(1) {
        let Some(text) = source.manifest_text(dir)? else {
            continue;
        };
        let ancestor = ManifestInfo::parse(&text);
        if let Some(ws) = &ancestor.workspace {
            if !is_excluded(dir, ws, &package_manifest) {
                return Ok(Some(dir.to_owned()));
            }
        } else if let Some(pointer) = &ancestor.workspace_pointer {
            return Ok(Some(resolve_pointer(dir, pointer)));
        }
    }
    // 5.
    Ok(Some(package_dir.to_owned()))
}

/// [`cargo_project_root`] on the VFS: `cwd` may be relative to the VFS cwd and must be
/// an existing directory; the result is canonical.
///
/// # Errors
/// [`VmSyncError::Vfs`] when `cwd` is invalid, missing or not a directory, or a manifest
/// cannot be read.
pub fn project_root(vfs: &Vfs, cwd: &str) -> Result<String, VmSyncError> {
    let cwd = vfs.normalize(cwd).map_err(VmSyncError::Vfs)?;
    let meta = vfs.stat(&cwd).map_err(VmSyncError::Vfs)?;
    if meta.kind != NodeKind::Dir {
        return Err(VmSyncError::Vfs(VfsError::NotADirectory { path: cwd }));
    }
    cargo_project_root(vfs, &cwd).map_err(VmSyncError::Vfs)
}

/// The cargo project root ([`find_cargo_root`]) of host directory `dir` (made absolute
/// and lexically normalised; symlinks are not resolved). `None` when there is no
/// manifest in `dir` or above it, when `dir` is not UTF-8, or when a manifest cannot be
/// read.
#[must_use]
pub fn host_project_root(dir: &Path) -> Option<std::path::PathBuf> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    let text = normalize(dir.to_str()?);
    find_cargo_root(&HostFs, &text)
        .ok()
        .flatten()
        .map(std::path::PathBuf::from)
}

/// The host directory a Lima instance mounts at the guest workspace (and the one the
/// facade reports as `DEVSHELL_WORKSPACE_ROOT`), the same with every set of cargo
/// features:
///
/// 1. `DEVSHELL_VM_WORKSPACE_PARENT` ([`VmConfig::workspace_parent`]) when set;
/// 2. with `DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT` on (the default), the cargo project
///    root ([`host_project_root`]) of the process's current directory, when it is in a
///    cargo project;
/// 3. else `<export base>/vm-workspace/<instance with [^A-Za-z0-9_-] → _>`.
///
/// [`VmConfig::workspace_parent`]: devshell_vm_config::VmConfig::workspace_parent
#[must_use]
pub fn workspace_parent_for(
    config: &devshell_vm_config::VmConfig,
    instance: &str,
) -> std::path::PathBuf {
    if let Some(parent) = &config.workspace_parent {
        return parent.clone();
    }
    if config.workspace_use_cargo_root
        && let Some(root) = std::env::current_dir()
            .ok()
            .and_then(|cwd| host_project_root(&cwd))
    {
        return root;
    }
    config
        .export_base_dir()
        .join("vm-workspace")
        .join(devshell_vm_config::sanitize_instance_dir_name(instance))
}

/// cargo's `WorkspaceRootConfig::is_excluded`: excluded by a path prefix and not an
/// explicit member by a path prefix.
fn is_excluded(root: &str, ws: &WorkspaceTable, manifest: &str) -> bool {
    let under = |entry: &String| path_starts_with(manifest, &normalize(&join(root, entry)));
    let excluded = ws.exclude.iter().any(under);
    let explicit_member = ws.members.as_ref().is_some_and(|m| m.iter().any(under));
    !explicit_member && excluded
}

/// The directory a `package.workspace` pointer names (a pointer may name the directory
/// or its `Cargo.toml`).
fn resolve_pointer(dir: &str, pointer: &str) -> String {
    let target = if pointer.starts_with('/') {
        normalize(pointer)
    } else {
        normalize(&join(dir, pointer))
    };
    match target.strip_suffix(MANIFEST) {
        Some(parent) if parent.ends_with('/') => normalize(parent),
        _ => target,
    }
}

/// Component-wise prefix test (`/a/bc` does not start with `/a/b`).
fn path_starts_with(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Lexical normalisation of an absolute path: `.` and empty segments dropped, `..` pops
/// (clamped at `/`).
#[must_use]
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `/a/b/c` → `/a/b/c`, `/a/b`, `/a`, `/` (nearest first). Input is canonical and absolute.
pub(crate) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
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

/// `dir/name` for a canonical directory.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `cwd` relative to `root` (both canonical, `cwd` inside `root`): `""` for the root
/// itself, `src/bin` for `/p/src/bin` under `/p`.
#[must_use]
pub fn relative_to(root: &str, cwd: &str) -> String {
    let rest = if root == "/" {
        cwd
    } else {
        cwd.strip_prefix(root).unwrap_or_default()
    };
    rest.trim_start_matches('/').to_owned()
}

/// `base/rel` for `/`-separated paths (guest paths, staging-relative paths): `rel`
/// empty gives `base`; no doubled `/`.
#[must_use]
pub fn join_slash(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
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
    fn parse_reads_tables_not_lines() {
        let info = ManifestInfo::parse("workspace = { members = [\"a\"] }\n");
        assert_eq!(
            info.workspace.expect("inline table").members,
            Some(vec!["a".to_owned()])
        );
        let info = ManifestInfo::parse("[package]\nname = \"x\"\nworkspace = \"..\"\n");
        assert!(info.workspace.is_none());
        assert_eq!(info.workspace_pointer.as_deref(), Some(".."));
        assert!(
            ManifestInfo::parse("# [workspace]\n[package]\n")
                .workspace
                .is_none()
        );
        assert!(
            ManifestInfo::parse("[workspace.package]\nversion = \"1\"\n")
                .workspace
                .is_some()
        );
        assert_eq!(ManifestInfo::parse("not [valid"), ManifestInfo::default());
    }

    #[test]
    fn nearest_enclosing_workspace_wins() {
        let vfs = vfs_with(&[
            ("/outer/Cargo.toml", "[workspace]\n"),
            (
                "/outer/inner/Cargo.toml",
                "[workspace]\nmembers = [\"m\"]\n",
            ),
            ("/outer/inner/m/Cargo.toml", "[package]\nname = \"m\"\n"),
            ("/outer/inner/m/src/main.rs", ""),
        ]);
        assert_eq!(
            project_root(&vfs, "/outer/inner/m/src").expect("root"),
            "/outer/inner"
        );
    }

    #[test]
    fn excluded_member_is_its_own_root_unless_listed() {
        let vfs = vfs_with(&[
            (
                "/ws/Cargo.toml",
                "[workspace]\nmembers = [\"crates/keep\"]\nexclude = [\"crates\"]\n",
            ),
            ("/ws/crates/x/Cargo.toml", "[package]\nname = \"x\"\n"),
            ("/ws/crates/keep/Cargo.toml", "[package]\nname = \"keep\"\n"),
        ]);
        assert_eq!(
            project_root(&vfs, "/ws/crates/x").expect("root"),
            "/ws/crates/x"
        );
        assert_eq!(project_root(&vfs, "/ws/crates/keep").expect("root"), "/ws");
    }

    #[test]
    fn pointer_and_fallbacks() {
        let mut vfs = vfs_with(&[
            ("/a/Cargo.toml", "[workspace]\nmembers = [\"deep/p\"]\n"),
            (
                "/a/deep/p/Cargo.toml",
                "[package]\nname = \"p\"\nworkspace = \"../..\"\n",
            ),
            ("/solo/Cargo.toml", "[package]\nname = \"solo\"\n"),
        ]);
        vfs.mkdir("/plain/dir").expect("mkdir");
        vfs.mkdir("/q/Cargo.toml")
            .expect("a directory named like a manifest");
        vfs.mkdir("/q/sub").expect("mkdir");
        assert_eq!(project_root(&vfs, "/a/deep/p").expect("root"), "/a");
        assert_eq!(project_root(&vfs, "/solo").expect("root"), "/solo");
        assert_eq!(
            project_root(&vfs, "/plain/dir").expect("root"),
            "/plain/dir"
        );
        assert_eq!(project_root(&vfs, "/q/sub").expect("root"), "/q/sub");
        assert_eq!(project_root(&vfs, "/").expect("root"), "/");
    }

    #[test]
    fn cwd_errors() {
        let vfs = vfs_with(&[("/p/Cargo.toml", "[package]\n")]);
        assert!(matches!(
            project_root(&vfs, "/nope"),
            Err(VmSyncError::Vfs(VfsError::NotFound { .. }))
        ));
        assert!(matches!(
            project_root(&vfs, "/p/Cargo.toml"),
            Err(VmSyncError::Vfs(VfsError::NotADirectory { .. }))
        ));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(relative_to("/", "/"), "");
        assert_eq!(relative_to("/", "/a/b"), "a/b");
        assert_eq!(relative_to("/p", "/p"), "");
        assert_eq!(relative_to("/p", "/p/src/x"), "src/x");
        assert!(path_starts_with("/a/b/Cargo.toml", "/a/b"));
        assert!(!path_starts_with("/a/bc/Cargo.toml", "/a/b"));
        assert_eq!(normalize("/a/./b/../c/"), "/a/c");
        assert_eq!(join_slash("/workspace", ""), "/workspace");
        assert_eq!(join_slash("/workspace", "0/app"), "/workspace/0/app");
        assert_eq!(join_slash("/", "x"), "/x");
        assert_eq!(normalize("/../x"), "/x");
        assert_eq!(resolve_pointer("/a/b", "../Cargo.toml"), "/a");
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
    }
}
