//! VFS path syntax: normalisation and splitting of canonical paths.

use crate::VfsError;

/// Deepest path (in components) the VFS accepts. Keeps every traversal, clone and
/// image load bounded; real Linux paths (`PATH_MAX` 4096 bytes) rarely come close.
pub const MAX_DEPTH: usize = 1024;

fn invalid(path: &str, reason: &str) -> VfsError {
    VfsError::InvalidName {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Normalises `path` against the canonical absolute `cwd`: absolute or cwd-relative,
/// empty and `.` segments dropped, `..` pops and clamps at `/`.
pub(crate) fn normalize_with(cwd: &str, path: &str) -> Result<String, VfsError> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path.contains('\0') {
        return Err(invalid(path, "contains a NUL byte"));
    }
    if path.starts_with('/') && is_canonical(path) {
        return Ok(path.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.extend(components(cwd));
    }
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    if parts.len() > MAX_DEPTH {
        return Err(invalid(path, "deeper than 1024 components"));
    }
    if parts.is_empty() {
        return Ok("/".to_owned());
    }
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        out.push('/');
        out.push_str(part);
    }
    Ok(out)
}

/// Like [`normalize_with`] for a path that is to name a new file or symlink: its last
/// segment must be a name, so `a/`, `a/.` and `a/..` are refused instead of silently
/// meaning `a`, the parent, or the grandparent (POSIX `open("a/", O_CREAT)` fails too).
pub(crate) fn normalize_entry_with(cwd: &str, path: &str) -> Result<String, VfsError> {
    let norm = normalize_with(cwd, path)?;
    // The root is left to the caller, which has a more precise error for it.
    let last = path.rsplit('/').next().unwrap_or(path);
    if norm != "/" && matches!(last, "" | "." | "..") {
        return Err(invalid(
            path,
            "names a directory (ends in `/`, `.` or `..`), not a file or symlink",
        ));
    }
    Ok(norm)
}

/// `true` when an absolute path is already canonical (fast path of normalisation).
fn is_canonical(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    if path.ends_with('/') {
        return false;
    }
    let mut depth = 0;
    for segment in path[1..].split('/') {
        if matches!(segment, "" | "." | "..") {
            return false;
        }
        depth += 1;
    }
    depth <= MAX_DEPTH
}

/// Components of a canonical path (none for `/`).
pub(crate) fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|segment| !segment.is_empty())
}

/// Number of components of a canonical path.
pub(crate) fn depth(path: &str) -> usize {
    components(path).count()
}

/// Splits a canonical non-root path into its parent and last component.
pub(crate) fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((parent, name)) => (parent, name),
        None => ("/", path),
    }
}

/// `true` when canonical `path` is `base` or lies below it.
pub(crate) fn is_within(path: &str, base: &str) -> bool {
    if base == "/" {
        return true;
    }
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Checks one name as stored in a directory (used by the image loader).
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    match name {
        "" => Err("empty name"),
        "." | ".." => Err("`.` and `..` are not names"),
        _ if name.contains('/') => Err("name contains `/`"),
        _ if name.contains('\0') => Err("name contains a NUL byte"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_must_end_in_a_name() {
        for path in ["/a/", "/a/.", "/a/b/..", "a/", ".", "/w/x/"] {
            let err = normalize_entry_with("/w", path).expect_err(path);
            assert!(
                matches!(&err, VfsError::InvalidName { path: p, .. } if p == path),
                "{path}: {err}"
            );
        }
        assert_eq!(normalize_entry_with("/w", "a/./b").expect("name"), "/w/a/b");
        assert_eq!(normalize_entry_with("/w", "../x").expect("name"), "/x");
        assert!(normalize_entry_with("/w", "").is_err());
        assert_eq!(normalize_entry_with("/w", "/").expect("root"), "/");
    }

    #[test]
    fn normalizes_relative_and_dots() {
        assert_eq!(normalize_with("/a/b", "c").unwrap(), "/a/b/c");
        assert_eq!(normalize_with("/a/b", "../c").unwrap(), "/a/c");
        assert_eq!(normalize_with("/a/b", "../../../../x").unwrap(), "/x");
        assert_eq!(normalize_with("/", "./x/./y/").unwrap(), "/x/y");
        assert_eq!(normalize_with("/", "//x//y").unwrap(), "/x/y");
        assert_eq!(normalize_with("/a", "/..").unwrap(), "/");
        assert_eq!(normalize_with("/a", ".").unwrap(), "/a");
        assert_eq!(normalize_with("/", "/a b/\\c").unwrap(), "/a b/\\c");
    }

    #[test]
    fn rejects_nul_and_empty() {
        let err = normalize_with("/", "a\0b").unwrap_err();
        assert!(matches!(err, VfsError::InvalidName { ref path, .. } if path == "a\0b"));
        assert!(matches!(
            normalize_with("/", ""),
            Err(VfsError::InvalidName { .. })
        ));
    }

    #[test]
    fn rejects_too_deep() {
        let deep = "/a".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            normalize_with("/", &deep),
            Err(VfsError::InvalidName { .. })
        ));
        assert!(normalize_with("/", &"/a".repeat(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(split_parent("/a"), ("/", "a"));
        assert_eq!(split_parent("/a/b"), ("/a", "b"));
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(!is_within("/ab", "/a"));
        assert!(is_within("/x", "/"));
        assert!(check_name("ok").is_ok());
        assert!(check_name("..").is_err());
    }
}
