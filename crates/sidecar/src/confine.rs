//! Confinement of guest paths to a session's staging directory.
//!
//! Guest paths are normalised lexically (`.` dropped, `..` pops) and must lie
//! under the session's guest mount; the rest is resolved **component by
//! component from a directory file descriptor** of the staging dir, with
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, `readlinkat` and `openat(O_NOFOLLOW)`. A
//! symlink is followed only while its target stays inside the staging dir: a
//! relative target is resolved from the link's directory (its `..` may not
//! climb above the staging dir), an absolute target is read as a guest path and
//! must lie under the mount. Anything else is an escape. Because every step is
//! relative to an open directory and never follows a link implicitly, renaming
//! or replacing components concurrently cannot redirect an operation outside.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};

/// Symlinks followed in one resolution before giving up (as Linux's `MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;

/// Why a path could not be resolved inside the staging dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The path is malformed or names something outside the mount or staging dir.
    InvalidPath(String),
    /// The path or one of its parents is missing.
    NotFound,
    /// A parent component is not a directory.
    NotADirectory,
    /// Another system error.
    Io(Errno),
}

impl Denied {
    /// A human-readable reason.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::InvalidPath(reason) => reason.clone(),
            Self::NotFound => "no such file or directory".into(),
            Self::NotADirectory => "a path component is not a directory".into(),
            Self::Io(errno) => errno.desc().into(),
        }
    }
}

impl From<Errno> for Denied {
    fn from(errno: Errno) -> Self {
        match errno {
            Errno::ENOENT => Self::NotFound,
            Errno::ENOTDIR => Self::NotADirectory,
            Errno::ELOOP => Self::InvalidPath(
                "a path component was replaced by a symlink while resolving".into(),
            ),
            other => Self::Io(other),
        }
    }
}

/// Kind of a `FileStat`.
pub(crate) fn kind_of(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// The outcome of a resolution: the directory holding the final component.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// Directory containing `name`, or the resolved directory itself when `name` is `None`.
    pub dir: OwnedFd,
    /// Final component, or `None` when the path resolved to a directory by itself
    /// (the staging root, or a trailing `..`).
    pub name: Option<OsString>,
    /// `lstat` of `name` (`None` when missing or when `name` is `None`).
    pub stat: Option<FileStat>,
}

/// Normalises `path` lexically and returns its components below `mount`.
///
/// `mount` must already be normalised (see [`normalize_mount`]).
pub(crate) fn guest_components(mount: &str, path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains('\0') {
        return Err("path contains NUL".into());
    }
    if !path.starts_with('/') {
        return Err("not an absolute guest path".into());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mount_parts: Vec<&str> = mount.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < mount_parts.len() || parts[..mount_parts.len()] != mount_parts[..] {
        return Err(format!("outside the guest mount {mount}"));
    }
    Ok(parts[mount_parts.len()..]
        .iter()
        .map(|p| (*p).to_owned())
        .collect())
}

/// The normalised form of a guest mount (`/workspace/`, `/workspace/.` → `/workspace`).
pub(crate) fn normalize_mount(mount: &str) -> Result<String, String> {
    let rest = guest_components("/", mount)?;
    Ok(format!("/{}", rest.join("/")))
}

/// The normalised guest path of `components` under `mount` (for messages).
pub(crate) fn guest_display(mount: &str, components: &[String]) -> String {
    if components.is_empty() {
        return mount.to_owned();
    }
    let base = mount.trim_end_matches('/');
    format!("{base}/{}", components.join("/"))
}

/// A session's staging directory, held open.
#[derive(Debug)]
pub(crate) struct Staging {
    root: OwnedFd,
    host_path: std::path::PathBuf,
    mount: String,
}

impl Staging {
    /// Opens `host_path` (already canonical and checked against the roots) for guest `mount`.
    pub(crate) fn open(host_path: &Path, mount: String) -> Result<Self, Errno> {
        let root = nix::fcntl::open(
            host_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            host_path: host_path.to_owned(),
            mount,
        })
    }

    /// The open staging directory.
    pub(crate) fn root_fd(&self) -> &OwnedFd {
        &self.root
    }

    /// The canonical host path of the staging directory.
    pub(crate) fn host_path(&self) -> &Path {
        &self.host_path
    }

    /// The normalised guest mount.
    pub(crate) fn mount(&self) -> &str {
        &self.mount
    }

    /// Resolves `components` (below the staging dir) without leaving it.
    ///
    /// `follow_last`: a final symlink is followed (inside) instead of returned.
    /// `create_dirs`: missing intermediate directories are created (mode 0755).
    /// The components a symlink `component` in `dir` stands for, and whether they
    /// start from the staging root (an absolute target under the mount).
    fn expand_link(
        &self,
        dir: &OwnedFd,
        component: &OsStr,
    ) -> Result<(Vec<OsString>, bool), Denied> {
        let target = readlinkat(dir, component)?;
        let target_bytes = target.as_bytes();
        if target_bytes.first() == Some(&b'/') {
            let escape = || {
                Denied::InvalidPath(format!(
                    "symlink {} points to {} outside the guest mount {}",
                    component.to_string_lossy(),
                    target.to_string_lossy(),
                    self.mount
                ))
            };
            let text = target.to_str().ok_or_else(escape)?;
            let inside = guest_components(&self.mount, text).map_err(|_| escape())?;
            return Ok((inside.into_iter().map(OsString::from).collect(), true));
        }
        let relative = target_bytes
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .map(|p| OsStr::from_bytes(p).to_owned())
            .collect();
        Ok((relative, false))
    }

    pub(crate) fn resolve(
        &self,
        components: &[String],
        follow_last: bool,
        create_dirs: bool,
    ) -> Result<Resolved, Denied> {
        let mut stack: Vec<OwnedFd> = vec![
            self.root
                .try_clone()
                .map_err(|e| Denied::Io(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?,
        ];
        let mut queue: VecDeque<OsString> = components.iter().map(OsString::from).collect();
        let mut links = 0u32;
        while let Some(component) = queue.pop_front() {
            let bytes = component.as_bytes();
            if bytes.is_empty() || bytes == b"." {
                continue;
            }
            if bytes == b".." {
                if stack.len() == 1 {
                    return Err(Denied::InvalidPath(
                        "a symlink's `..` leaves the staging directory".into(),
                    ));
                }
                stack.pop();
                continue;
            }
            let last = queue.is_empty();
            let top = stack
                .last()
                .expect("the stack always holds the staging root");
            let stat = match fstatat(top, component.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::ENOENT) => {
                    if last {
                        return Ok(Resolved {
                            dir: pop(&mut stack),
                            name: Some(component),
                            stat: None,
                        });
                    }
                    if !create_dirs {
                        return Err(Denied::NotFound);
                    }
                    match mkdirat(top, component.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(errno.into()),
                    }
                    queue.push_front(component);
                    continue;
                }
                Err(errno) => return Err(errno.into()),
            };
            let kind = kind_of(&stat);
            if kind == SFlag::S_IFLNK {
                if last && !follow_last {
                    return Ok(Resolved {
                        dir: pop(&mut stack),
                        name: Some(component),
                        stat: Some(stat),
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Denied::InvalidPath(
                        "too many levels of symbolic links".into(),
                    ));
                }
                let (expanded, from_root) = self.expand_link(top, &component)?;
                if from_root {
                    stack.truncate(1);
                }
                for part in expanded.into_iter().rev() {
                    queue.push_front(part);
                }
                continue;
            }
            if last {
                return Ok(Resolved {
                    dir: pop(&mut stack),
                    name: Some(component),
                    stat: Some(stat),
                });
            }
            if kind != SFlag::S_IFDIR {
                return Err(Denied::NotADirectory);
            }
            let dir = open_dir_at(top, component.as_os_str())?;
            stack.push(dir);
        }
        Ok(Resolved {
            dir: pop(&mut stack),
            name: None,
            stat: None,
        })
    }
}

fn pop(stack: &mut Vec<OwnedFd>) -> OwnedFd {
    stack
        .pop()
        .expect("the stack always holds the staging root")
}

/// Opens directory `name` in `dir` without following a symlink.
pub(crate) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(mount: &str, path: &str) -> Result<Vec<String>, String> {
        guest_components(mount, path)
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            comps("/workspace", "/workspace").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            comps("/workspace", "/workspace/a/./b/../c/").unwrap(),
            ["a", "c"]
        );
        assert_eq!(comps("/", "/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert!(comps("/workspace", "/workspace/../etc").is_err());
        assert!(comps("/workspace", "/workspacex").is_err());
        assert!(comps("/workspace", "workspace/a").is_err());
        assert!(comps("/workspace", "").is_err());
        assert!(comps("/workspace", "/workspace/a\0b").is_err());
        assert_eq!(normalize_mount("/workspace/./").unwrap(), "/workspace");
        assert_eq!(normalize_mount("/").unwrap(), "/");
        assert_eq!(guest_display("/", &["a".into()]), "/a");
        assert_eq!(guest_display("/w", &[]), "/w");
    }

    fn staging() -> (tempfile::TempDir, Staging) {
        let dir = tempfile::tempdir().unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        let staging = Staging::open(&canonical, "/workspace".into()).unwrap();
        (dir, staging)
    }

    fn v(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn follows_links_inside_and_refuses_links_out() {
        let (dir, staging) = staging();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("a/b", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/workspace/a", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out_abs")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("a/up2")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("a/b/up3")).unwrap();
        std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();

        let r = staging.resolve(&v(&["rel", "f"]), true, false).unwrap();
        assert_eq!(r.name.as_deref(), Some(OsStr::new("f")));
        assert!(r.stat.is_some());
        let r = staging
            .resolve(&v(&["abs", "b", "f"]), true, false)
            .unwrap();
        assert!(r.stat.is_some());
        assert!(matches!(
            staging.resolve(&v(&["out_abs", "passwd"]), true, false),
            Err(Denied::InvalidPath(_))
        ));
        assert!(matches!(
            staging.resolve(&v(&["a", "up2", "x"]), true, false),
            Err(Denied::InvalidPath(_))
        ));
        // a/b/up3 -> ../../.. climbs one level above the root.
        assert!(matches!(
            staging.resolve(&v(&["a", "b", "up3"]), true, false),
            Err(Denied::InvalidPath(_))
        ));
        // Not following the last component returns the link itself.
        let r = staging.resolve(&v(&["out_abs"]), false, false).unwrap();
        assert_eq!(kind_of(&r.stat.unwrap()), SFlag::S_IFLNK);
        assert!(matches!(
            staging.resolve(&v(&["loop1"]), true, false),
            Err(Denied::InvalidPath(_))
        ));
        assert_eq!(
            staging
                .resolve(&v(&["a", "b", "f", "g"]), true, false)
                .unwrap_err(),
            Denied::NotADirectory
        );
        assert_eq!(
            staging
                .resolve(&v(&["nope", "g"]), true, false)
                .unwrap_err(),
            Denied::NotFound
        );
        let r = staging
            .resolve(&v(&["new", "deep", "file"]), true, true)
            .unwrap();
        assert!(r.stat.is_none());
        assert!(root.join("new/deep").is_dir());
        let r = staging.resolve(&[], true, false).unwrap();
        assert!(r.name.is_none());
    }
}
