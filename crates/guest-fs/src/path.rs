//! Guest path rules: lexical normalisation, the mount check, and the mapping from
//! logical (VFS) paths to guest paths.
//!
//! Every function here is pure and lexical: nothing is resolved on any filesystem.
//! Guest paths are absolute, `/`-separated UTF-8 strings. Empty input, input with a
//! NUL byte and relative input are refused with [`GuestFsError::InvalidPath`].

use crate::GuestFsError;

/// Lexically normalises an absolute guest path.
///
/// `.` and empty segments are dropped, `..` pops the previous segment and clamps at
/// `/` (`/..` is `/`). The result is absolute, has no trailing slash (except `/`
/// itself) and no `.`, `..` or empty segments; normalising it again returns it
/// unchanged.
///
/// # Errors
/// [`GuestFsError::InvalidPath`] when `path` is empty, contains a NUL byte or does not
/// start with `/`.
///
/// # Examples
/// ```
/// use devshell_vm_guest_fs::normalize_guest_path;
/// assert_eq!(normalize_guest_path("/workspace/./app//src/../Cargo.toml").unwrap(),
///            "/workspace/app/Cargo.toml");
/// assert_eq!(normalize_guest_path("/../..").unwrap(), "/");
/// assert!(normalize_guest_path("relative/path").is_err());
/// ```
pub fn normalize_guest_path(path: &str) -> Result<String, GuestFsError> {
    validate_raw(path)?;
    let mut stack: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            name => stack.push(name),
        }
    }
    let mut out = String::with_capacity(path.len());
    if stack.is_empty() {
        out.push('/');
    }
    for segment in stack {
        out.push('/');
        out.push_str(segment);
    }
    Ok(out)
}

/// Refuses empty, NUL-carrying and relative input.
fn validate_raw(path: &str) -> Result<(), GuestFsError> {
    if path.is_empty() {
        return Err(GuestFsError::invalid_path(path, "empty path"));
    }
    if path.contains('\0') {
        return Err(GuestFsError::invalid_path(path, "contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(GuestFsError::invalid_path(
            path,
            "not absolute (guest paths start with '/')",
        ));
    }
    Ok(())
}

/// `true` when `path` is `mount` itself or a strict descendant of it, both compared
/// after [`normalize_guest_path`]. Invalid input (empty, NUL, relative) on either side
/// gives `false`.
///
/// The comparison is by whole segments: `/workspace2` is not under `/workspace`.
///
/// # Examples
/// ```
/// use devshell_vm_guest_fs::guest_path_is_under_mount;
/// assert!(guest_path_is_under_mount("/workspace", "/workspace/app/src"));
/// assert!(guest_path_is_under_mount("/workspace", "/workspace"));
/// assert!(!guest_path_is_under_mount("/workspace", "/workspace/../etc/passwd"));
/// assert!(!guest_path_is_under_mount("/workspace", "/workspace2"));
/// ```
#[must_use]
pub fn guest_path_is_under_mount(mount: &str, path: &str) -> bool {
    match (normalize_guest_path(mount), normalize_guest_path(path)) {
        (Ok(m), Ok(p)) => is_under_normalised(&m, &p),
        _ => false,
    }
}

/// Mount check on already-normalised paths.
fn is_under_normalised(mount: &str, path: &str) -> bool {
    if mount == "/" {
        return true;
    }
    path == mount
        || path
            .strip_prefix(mount)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Normalises `path` and checks that it lies under `mount`: the check every
/// [`crate::GuestFsOps`] implementation runs on every path before doing anything.
///
/// Returns the normalised path, which is what an implementation should act on (so
/// `/workspace/a/../b` is sent as `/workspace/b`).
///
/// # Errors
/// [`GuestFsError::InvalidPath`] when `mount` or `path` is empty, contains NUL, is
/// relative, or when `path` normalises outside `mount`.
///
/// # Examples
/// ```
/// use devshell_vm_guest_fs::check_guest_path;
/// assert_eq!(check_guest_path("/workspace", "/workspace/a/../b").unwrap(), "/workspace/b");
/// assert!(check_guest_path("/workspace", "/workspace/../etc").is_err());
/// ```
pub fn check_guest_path(mount: &str, path: &str) -> Result<String, GuestFsError> {
    let m = normalize_guest_path(mount)
        .map_err(|e| GuestFsError::invalid_path(mount, format!("invalid guest mount: {e}")))?;
    let p = normalize_guest_path(path)?;
    if is_under_normalised(&m, &p) {
        Ok(p)
    } else {
        Err(GuestFsError::invalid_path(
            path,
            format!("outside the guest mount {m:?} (normalises to {p:?})"),
        ))
    }
}

/// Joins a normalised absolute directory and a relative `/`-separated tail.
fn join(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        dir.to_owned()
    } else if dir == "/" {
        format!("/{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

/// The guest directory that holds the project whose logical (VFS) directory is
/// `logical_cwd`: the mount itself for `/`, else the mount plus the last segment of the
/// normalised `logical_cwd` (`/a/app` → `<mount>/app`).
///
/// # Errors
/// [`GuestFsError::InvalidPath`] when `mount` or `logical_cwd` is empty, contains NUL
/// or is relative.
///
/// # Examples
/// ```
/// use devshell_vm_guest_fs::guest_project_dir_on_guest;
/// assert_eq!(guest_project_dir_on_guest("/workspace", "/").unwrap(), "/workspace");
/// assert_eq!(guest_project_dir_on_guest("/workspace", "/a/app/").unwrap(), "/workspace/app");
/// ```
pub fn guest_project_dir_on_guest(mount: &str, logical_cwd: &str) -> Result<String, GuestFsError> {
    let m = normalize_guest_path(mount)
        .map_err(|e| GuestFsError::invalid_path(mount, format!("invalid guest mount: {e}")))?;
    let cwd = normalize_guest_path(logical_cwd)?;
    let leaf = cwd.rsplit('/').next().unwrap_or_default();
    Ok(join(&m, leaf))
}

/// Maps a logical (VFS) path inside the project to its guest path.
///
/// The project whose logical root is `project_root` lives on the guest in
/// [`guest_project_dir_on_guest`]`(mount, project_root)`; `logical_path` maps to that
/// directory plus its path relative to `project_root`:
///
/// | mount | project root | logical path | guest path |
/// |---|---|---|---|
/// | `/workspace` | `/` | `/src/main.rs` | `/workspace/src/main.rs` |
/// | `/workspace` | `/a/app` | `/a/app` | `/workspace/app` |
/// | `/workspace` | `/a/app` | `/a/app/src/main.rs` | `/workspace/app/src/main.rs` |
/// | `/workspace` | `/a/app` | `/a/other` | error: outside the project root |
///
/// Both logical paths are normalised first (`..` is resolved lexically, so
/// `/a/app/src/../Cargo.toml` is fine and `/a/app/../x` is refused). The result is
/// always under the mount.
///
/// # Errors
/// [`GuestFsError::InvalidPath`] when any input is empty, contains NUL or is relative,
/// or when `logical_path` lies outside `project_root`.
///
/// # Examples
/// ```
/// use devshell_vm_guest_fs::logical_to_guest;
/// assert_eq!(logical_to_guest("/workspace", "/a/app", "/a/app/src/main.rs").unwrap(),
///            "/workspace/app/src/main.rs");
/// assert!(logical_to_guest("/workspace", "/a/app", "/a/app/../../etc").is_err());
/// ```
pub fn logical_to_guest(
    mount: &str,
    project_root: &str,
    logical_path: &str,
) -> Result<String, GuestFsError> {
    let root = normalize_guest_path(project_root)?;
    let logical = normalize_guest_path(logical_path)?;
    let rel = if logical == root {
        ""
    } else if root == "/" {
        &logical[1..]
    } else {
        match logical
            .strip_prefix(root.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(rel) => rel,
            None => {
                return Err(GuestFsError::invalid_path(
                    logical_path,
                    format!("outside the project root {root:?}"),
                ));
            }
        }
    };
    let dir = guest_project_dir_on_guest(mount, &root)?;
    let guest = join(&dir, rel);
    // Defensive: the construction cannot leave the mount, but the check is cheap and is
    // the invariant callers rely on.
    check_guest_path(mount, &guest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestFsErrorKind;

    #[test]
    fn normalises_dots_and_slashes() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/a/b/", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/..", "/"),
            ("/a/../../..", "/"),
            ("/workspace/../etc", "/etc"),
            ("/a//b///c", "/a/b/c"),
            ("/.../a", "/.../a"),
            ("/a b/$x/\n", "/a b/$x/\n"),
        ];
        for (input, want) in cases {
            assert_eq!(
                normalize_guest_path(input).unwrap(),
                want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn refuses_empty_nul_and_relative() {
        for input in ["", "a/b", ".", "..", "/a\0b", "\0"] {
            let err = normalize_guest_path(input).unwrap_err();
            assert_eq!(err.kind(), GuestFsErrorKind::InvalidPath, "input {input:?}");
            assert_eq!(err.path(), Some(input));
        }
    }

    #[test]
    fn under_mount_by_whole_segments() {
        assert!(guest_path_is_under_mount("/workspace", "/workspace"));
        assert!(guest_path_is_under_mount("/workspace/", "/workspace/x/"));
        assert!(guest_path_is_under_mount("/", "/anything"));
        assert!(!guest_path_is_under_mount("/workspace", "/workspace2/x"));
        assert!(!guest_path_is_under_mount(
            "/workspace",
            "/workspace/../etc"
        ));
        assert!(!guest_path_is_under_mount("/workspace", "/"));
        assert!(!guest_path_is_under_mount("/workspace", ""));
        assert!(!guest_path_is_under_mount("/workspace", "workspace/x"));
        assert!(!guest_path_is_under_mount("", "/workspace"));
    }

    #[test]
    fn check_returns_normalised_or_invalid_path() {
        assert_eq!(
            check_guest_path("/w", "/w/./a/../b/").unwrap(),
            "/w/b".to_owned()
        );
        let err = check_guest_path("/w", "/w/../x").unwrap_err();
        assert_eq!(err.kind(), GuestFsErrorKind::InvalidPath);
        assert_eq!(err.path(), Some("/w/../x"));
        let err = check_guest_path("rel", "/w").unwrap_err();
        assert_eq!(err.path(), Some("rel"));
    }

    #[test]
    fn project_dir_is_mount_plus_leaf() {
        assert_eq!(
            guest_project_dir_on_guest("/workspace", "/").unwrap(),
            "/workspace"
        );
        assert_eq!(
            guest_project_dir_on_guest("/workspace", "/a/app").unwrap(),
            "/workspace/app"
        );
        assert_eq!(guest_project_dir_on_guest("/", "/a/app").unwrap(), "/app");
        assert_eq!(
            guest_project_dir_on_guest("/w/", "/x/../y").unwrap(),
            "/w/y"
        );
        assert!(guest_project_dir_on_guest("/workspace", "a").is_err());
    }

    #[test]
    fn logical_mapping_table() {
        let ok = [
            ("/workspace", "/", "/", "/workspace"),
            ("/workspace", "/", "/src/main.rs", "/workspace/src/main.rs"),
            ("/workspace", "/a/app", "/a/app", "/workspace/app"),
            (
                "/workspace",
                "/a/app",
                "/a/app/src/main.rs",
                "/workspace/app/src/main.rs",
            ),
            (
                "/workspace",
                "/a/app/",
                "/a/app/src/../Cargo.toml",
                "/workspace/app/Cargo.toml",
            ),
            ("/", "/a/app", "/a/app/x", "/app/x"),
        ];
        for (mount, root, logical, want) in ok {
            assert_eq!(
                logical_to_guest(mount, root, logical).unwrap(),
                want,
                "{mount} {root} {logical}"
            );
        }
        for (mount, root, logical) in [
            ("/workspace", "/a/app", "/a/other"),
            ("/workspace", "/a/app", "/a/application"),
            ("/workspace", "/a/app", "/a/app/../x"),
            ("/workspace", "/a/app", "/"),
            ("/workspace", "/a/app", "relative"),
            ("/workspace", "/a/app", ""),
            ("", "/a/app", "/a/app"),
        ] {
            let err = logical_to_guest(mount, root, logical).unwrap_err();
            assert_eq!(
                err.kind(),
                GuestFsErrorKind::InvalidPath,
                "{mount} {root} {logical}"
            );
        }
    }
}
