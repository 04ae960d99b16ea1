//! A real-file `GuestFsOps` over a host directory (test-only reference
//! implementation): the guest path *is* the host path, so the symlink-escape suite can
//! plant links with absolute host targets. `confine: false` gives a naive variant that
//! follows every symlink, used to prove the symlink checks catch escapes.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use devshell_vm_guest_fs::conformance::{SpecialFileFixture, SpecialKind, SymlinkFixture};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestKind, GuestMetadata, check_guest_path};

/// Host-directory implementation.
pub(crate) struct HostDirOps {
    mount: String,
    confine: bool,
}

/// A resolved path: host location and what is there (no link followed at the end
/// unless asked).
struct Resolved {
    host: PathBuf,
    meta: Option<fs::Metadata>,
}

fn internal(context: &str, path: &Path, e: &io::Error) -> GuestFsError {
    GuestFsError::Internal {
        message: format!("{context} {}: {e}", path.display()),
    }
}

impl HostDirOps {
    pub(crate) fn new(mount: &Path, confine: bool) -> Self {
        let mount = mount.to_str().expect("utf-8 temp path").to_owned();
        Self { mount, confine }
    }

    /// Walks `path` (normalised, under the mount) component by component. Symlinks are
    /// followed (except a final one when `follow_last` is false) only while they stay
    /// inside the mount; missing parents are created when `create` is set.
    fn resolve(
        &self,
        path: &str,
        follow_last: bool,
        create: bool,
    ) -> Result<Resolved, GuestFsError> {
        let escape = || {
            GuestFsError::invalid_path(path, "resolves outside the guest mount through a symlink")
        };
        let not_dir = || GuestFsError::NotADirectory {
            path: path.to_owned(),
        };
        let rel = path.strip_prefix(self.mount.as_str()).unwrap_or_default();
        let mut queue: VecDeque<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mount = PathBuf::from(&self.mount);
        let mut cur = mount.clone();
        let mut hops = 0;
        if !self.confine {
            return Self::resolve_naive(path, follow_last, create);
        }
        while let Some(seg) = queue.pop_front() {
            match seg.as_str() {
                "" | "." => continue,
                ".." => {
                    if cur == mount {
                        return Err(escape());
                    }
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            let next = cur.join(&seg);
            let last = queue.is_empty();
            match fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() && (!last || follow_last) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(GuestFsError::invalid_path(path, "too many symlinks"));
                    }
                    let target =
                        fs::read_link(&next).map_err(|e| internal("read_link", &next, &e))?;
                    let target = target.to_str().ok_or_else(escape)?.to_owned();
                    let mut parts: Vec<String> = if target.starts_with('/') {
                        let inside =
                            check_guest_path(&self.mount, &target).map_err(|_| escape())?;
                        cur.clone_from(&mount);
                        inside[self.mount.len()..]
                            .split('/')
                            .map(str::to_owned)
                            .collect()
                    } else {
                        target.split('/').map(str::to_owned).collect()
                    };
                    while let Some(p) = parts.pop() {
                        queue.push_front(p);
                    }
                }
                Ok(meta) => {
                    if !last && !meta.is_dir() {
                        return Err(not_dir());
                    }
                    cur = next;
                    if last {
                        return Ok(Resolved {
                            host: cur,
                            meta: Some(meta),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if last {
                        return Ok(Resolved {
                            host: next,
                            meta: None,
                        });
                    }
                    if !create {
                        return Err(GuestFsError::NotFound {
                            path: path.to_owned(),
                        });
                    }
                    fs::create_dir(&next).map_err(|e| internal("mkdir", &next, &e))?;
                    cur = next;
                }
                Err(e) => return Err(internal("stat", &next, &e)),
            }
        }
        let meta = fs::symlink_metadata(&cur).map_err(|e| internal("stat", &cur, &e))?;
        Ok(Resolved {
            host: cur,
            meta: Some(meta),
        })
    }

    /// The naive variant: the guest path is used as the host path, links followed.
    fn resolve_naive(
        path: &str,
        follow_last: bool,
        create: bool,
    ) -> Result<Resolved, GuestFsError> {
        let host = PathBuf::from(path);
        let meta = if follow_last {
            fs::metadata(&host)
        } else {
            fs::symlink_metadata(&host)
        }
        .ok();
        if let Some(parent) = host.parent().filter(|_| create) {
            fs::create_dir_all(parent).map_err(|e| internal("create parents", parent, &e))?;
        }
        Ok(Resolved { host, meta })
    }

    fn check(&self, path: &str) -> Result<String, GuestFsError> {
        check_guest_path(&self.mount, path)
    }
}

impl GuestFsOps for HostDirOps {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let p = self.check(path)?;
        let r = self.resolve(&p, true, false)?;
        match r.meta {
            None => Err(GuestFsError::NotFound { path: p }),
            Some(m) if !m.is_dir() => Err(GuestFsError::NotADirectory { path: p }),
            Some(_) => {
                let mut names = Vec::new();
                for entry in fs::read_dir(&r.host).map_err(|e| internal("read_dir", &r.host, &e))? {
                    let entry = entry.map_err(|e| internal("read_dir", &r.host, &e))?;
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Ok(names)
            }
        }
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let p = self.check(path)?;
        let r = self.resolve(&p, true, false)?;
        match r.meta {
            None => Err(GuestFsError::NotFound { path: p }),
            Some(m) if m.is_dir() => Err(GuestFsError::IsADirectory { path: p }),
            Some(_) => fs::read(&r.host).map_err(|e| internal("read", &r.host, &e)),
        }
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        let r = self.resolve(&p, true, true)?;
        match r.meta {
            Some(m) if m.is_dir() => Err(GuestFsError::IsADirectory { path: p }),
            // A FIFO or device: writing would feed it, not store a file.
            Some(m) if !m.is_file() && !m.file_type().is_symlink() => Err(GuestFsError::Internal {
                message: format!("{p}: not a regular file (FIFO, socket or device)"),
            }),
            _ => fs::write(&r.host, data).map_err(|e| internal("write", &r.host, &e)),
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        let r = self.resolve(&p, true, true)?;
        match r.meta {
            Some(m) if m.is_dir() => Ok(()),
            Some(_) => Err(GuestFsError::NotADirectory { path: p }),
            None => fs::create_dir(&r.host).map_err(|e| internal("mkdir", &r.host, &e)),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        if p == self.mount {
            return Err(GuestFsError::invalid_path(
                path,
                "cannot remove the guest mount root",
            ));
        }
        let r = self.resolve(&p, false, false)?;
        match r.meta {
            None => Err(GuestFsError::NotFound { path: p }),
            Some(m) if m.is_dir() => {
                fs::remove_dir_all(&r.host).map_err(|e| internal("rm -r", &r.host, &e))
            }
            Some(_) => fs::remove_file(&r.host).map_err(|e| internal("rm", &r.host, &e)),
        }
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let p = self.check(path)?;
        let r = self.resolve(&p, false, false)?;
        let m = r.meta.ok_or(GuestFsError::NotFound { path: p })?;
        let kind = if m.file_type().is_symlink() {
            GuestKind::Symlink
        } else if m.is_dir() {
            GuestKind::Dir
        } else {
            GuestKind::File
        };
        Ok(GuestMetadata {
            kind,
            size: m.len(),
        })
    }

    /// Native rename (after the contract's checks), so trees holding symlinks move too.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        let f = self.check(from)?;
        let t = self.check(to)?;
        if f == self.mount {
            return Err(GuestFsError::invalid_path(
                from,
                "cannot rename the guest mount root",
            ));
        }
        let src = self.stat(&f)?;
        if f == t {
            return Ok(());
        }
        if t.strip_prefix(f.as_str())
            .is_some_and(|r| r.starts_with('/'))
        {
            return Err(GuestFsError::invalid_path(to, "into its own subtree"));
        }
        match self.stat(&t) {
            Ok(m) if m.kind == GuestKind::Dir => {
                return Err(GuestFsError::IsADirectory { path: t });
            }
            Ok(_) if src.kind == GuestKind::Dir => {
                return Err(GuestFsError::NotADirectory { path: t });
            }
            Ok(_) | Err(GuestFsError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let from_r = self.resolve(&f, false, false)?;
        let to_r = self.resolve(&t, false, true)?;
        fs::rename(&from_r.host, &to_r.host).map_err(|e| internal("rename", &from_r.host, &e))
    }
}

/// A fresh temp dir holding `mount/` (empty) and `sentinel/` (empty) side by side.
pub(crate) fn temp_layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().canonicalize().expect("canonical temp dir");
    let mount = root.join("mount");
    let sentinel = root.join("sentinel");
    fs::create_dir(&mount).expect("mkdir mount");
    fs::create_dir(&sentinel).expect("mkdir sentinel");
    (tmp, mount, sentinel)
}

/// A boxed confined implementation over a fresh temp mount (kept alive by a leak-free
/// wrapper that owns the temp dir).
pub(crate) fn fresh_host_ops() -> Box<dyn GuestFsOps> {
    let (tmp, mount, _sentinel) = temp_layout();
    Box::new(Owning {
        ops: HostDirOps::new(&mount, true),
        _tmp: tmp,
    })
}

/// The symlink fixture for a host-dir implementation (`confine` selects the variant).
pub(crate) fn symlink_fixture(confine: bool) -> SymlinkFixture {
    let (tmp, mount, sentinel) = temp_layout();
    let link_root = mount.clone();
    SymlinkFixture {
        ops: Box::new(HostDirOps::new(&mount, confine)),
        plant_symlink: Box::new(move |link: &str, target: &str| {
            std::os::unix::fs::symlink(target, link_root.join(link))
        }),
        sentinel,
        guard: Box::new(tmp),
    }
}

pub(crate) fn special_fixture() -> SpecialFileFixture {
    let (tmp, mount, _sentinel) = temp_layout();
    let root = mount.clone();
    SpecialFileFixture {
        ops: Box::new(HostDirOps::new(&mount, true)),
        plant: Box::new(move |rel: &str, kind: SpecialKind| {
            devshell_vm_test_support::special::plant(&root.join(rel), kind == SpecialKind::Fifo)
        }),
        guard: Box::new(tmp),
    }
}

/// Ops plus the temp dir they live in.
struct Owning {
    ops: HostDirOps,
    _tmp: tempfile::TempDir,
}

impl GuestFsOps for Owning {
    fn mount(&self) -> &str {
        self.ops.mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        self.ops.list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        self.ops.read_file(path)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        self.ops.write_file(path, data)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.ops.mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.ops.remove(path)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        self.ops.stat(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        self.ops.rename(from, to)
    }
}
