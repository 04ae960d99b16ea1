//! File operations confined to one host directory: every path is resolved one component
//! at a time with `openat(O_NOFOLLOW)` from a descriptor of the root, so no symlink is
//! ever followed (in the middle of a path or at its end) and `..` is refused. A directory
//! replaced by a symlink while we work makes the operation fail with `ELOOP`/`ENOTDIR`;
//! it never reaches outside the root.
//!
//! `openat2(RESOLVE_BENEATH)` would do the walk in one call, but is Linux-only; the
//! component walk works on every Unix the CLI builds for.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, futimens, mkdirat};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

/// Host metadata recorded for one entry at load time and compared before a write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// `S_IFMT` bits (file, directory, symlink, ...).
    pub(crate) kind: u32,
    /// Device and inode: a replaced entry has another.
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// Size, mtime and ctime (ns) for files and symlinks; `0` for directories, whose
    /// times move whenever an entry inside changes.
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) ctime_ns: i128,
}

impl Stamp {
    /// The stamp of `stat`.
    pub(crate) fn of(stat: &FileStat) -> Self {
        let kind = st_mode(stat) & SFlag::S_IFMT.bits();
        let is_dir = kind == SFlag::S_IFDIR.bits();
        let ns = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)] // widths differ by OS
        Self {
            kind,
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: if is_dir {
                0
            } else {
                u64::try_from(stat.st_size).unwrap_or(0)
            },
            mtime_ns: if is_dir {
                0
            } else {
                ns(stat.st_mtime.into(), stat.st_mtime_nsec.into())
            },
            ctime_ns: if is_dir {
                0
            } else {
                ns(stat.st_ctime.into(), stat.st_ctime_nsec.into())
            },
        }
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.kind == SFlag::S_IFDIR.bits()
    }
}

/// A host directory all operations stay inside.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
}

/// Components of a relative path (`a/b/c`), refusing empty, `.` and `..` ones.
fn components(rel: &str) -> Result<Vec<&str>, Errno> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(Errno::EINVAL);
    }
    Ok(parts)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl Root {
    /// Opens `dir` (which the caller has canonicalized; a symlink as the last component
    /// is refused).
    pub(crate) fn open(dir: &Path) -> Result<Self, Errno> {
        let fd = nix::fcntl::open(dir, dir_flags(), Mode::empty())?;
        Ok(Self { fd })
    }

    /// The directory `rel_dir` (`""` for the root) without following any symlink.
    pub(crate) fn dir(&self, rel_dir: &str) -> Result<OwnedFd, Errno> {
        let mut fd = self.fd.try_clone().map_err(|_| Errno::EMFILE)?;
        if rel_dir.is_empty() {
            return Ok(fd);
        }
        for part in components(rel_dir)? {
            fd = openat(fd.as_fd(), part, dir_flags(), Mode::empty())?;
        }
        Ok(fd)
    }

    /// The parent directory of `rel` and the last component.
    pub(crate) fn parent<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str), Errno> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        components(name)?;
        Ok((self.dir(parent)?, name))
    }

    /// `lstat` of `rel`; `None` when nothing is there.
    pub(crate) fn lstat(&self, rel: &str) -> Result<Option<FileStat>, Errno> {
        let parent = match self.parent(rel) {
            Ok(parent) => parent,
            Err(Errno::ENOENT) => return Ok(None),
            Err(err) => return Err(err),
        };
        match fstatat(parent.0.as_fd(), parent.1, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Reads the regular file `rel` (at most `limit` bytes); returns its content and the
    /// stamp taken when it was opened. A file that changed while being read is `EAGAIN`.
    pub(crate) fn read_file(&self, rel: &str, limit: u64) -> Result<(Vec<u8>, FileStat), Errno> {
        let (parent, name) = self.parent(rel)?;
        // O_NONBLOCK: a FIFO put there since the walk does not hang the load.
        let fd = openat(
            parent.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )?;
        let stat = fstat(fd.as_fd())?;
        if st_mode(&stat) & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
            return Err(Errno::EINVAL);
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > limit {
            return Err(Errno::EFBIG);
        }
        let mut file = std::fs::File::from(fd);
        let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        Read::by_ref(&mut file)
            .take(limit + 1)
            .read_to_end(&mut content)
            .map_err(|err| io_errno(&err))?;
        let after = fstat(file.as_fd())?;
        if Stamp::of(&after) != Stamp::of(&stat) || content.len() as u64 != size {
            return Err(Errno::EAGAIN);
        }
        Ok((content, stat))
    }

    /// The target of the symlink `rel`.
    pub(crate) fn read_link(&self, rel: &str) -> Result<std::ffi::OsString, Errno> {
        let (parent, name) = self.parent(rel)?;
        readlinkat(parent.as_fd(), name)
    }

    /// Replaces (or creates) the file `rel` atomically: a temporary file in the same
    /// directory gets the content, mode and mtime, then is renamed over the name.
    pub(crate) fn replace_file(
        &self,
        rel: &str,
        content: &[u8],
        mode: u32,
        mtime: SystemTime,
    ) -> Result<(), Errno> {
        let (parent, name) = self.parent(rel)?;
        let temp = temp_name(name);
        let fd = openat(
            parent.as_fd(),
            temp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        let result = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(content)
                .and_then(|()| file.sync_all())
                .map_err(|err| io_errno(&err))?;
            fchmod(file.as_fd(), Mode::from_bits_truncate(mode_bits(mode)))?;
            futimens(file.as_fd(), &TimeSpec::UTIME_OMIT, &timespec(mtime))?;
            renameat(parent.as_fd(), temp.as_str(), parent.as_fd(), name)
        })();
        if result.is_err() {
            let _ = unlinkat(parent.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Replaces (or creates) the symlink `rel` atomically (made under a temporary name,
    /// then renamed; the target is stored, never followed).
    pub(crate) fn replace_symlink(&self, rel: &str, target: &str) -> Result<(), Errno> {
        let (parent, name) = self.parent(rel)?;
        let temp = temp_name(name);
        symlinkat(target, parent.as_fd(), temp.as_str())?;
        renameat(parent.as_fd(), temp.as_str(), parent.as_fd(), name).inspect_err(|_| {
            let _ = unlinkat(parent.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
        })
    }

    /// Creates the directory `rel` with `mode`.
    pub(crate) fn mkdir(&self, rel: &str, mode: u32) -> Result<(), Errno> {
        let (parent, name) = self.parent(rel)?;
        mkdirat(
            parent.as_fd(),
            name,
            Mode::from_bits_truncate(mode_bits(mode)),
        )
    }

    /// Removes the file or symlink `rel` (a symlink itself, never its target).
    pub(crate) fn remove_file(&self, rel: &str) -> Result<(), Errno> {
        let (parent, name) = self.parent(rel)?;
        unlinkat(parent.as_fd(), name, UnlinkatFlags::NoRemoveDir)
    }

    /// Removes the empty directory `rel` (`ENOTEMPTY` when it holds anything).
    pub(crate) fn remove_dir(&self, rel: &str) -> Result<(), Errno> {
        let (parent, name) = self.parent(rel)?;
        unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir)
    }

    /// The root descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn io_errno(err: &std::io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

fn mode_bits(mode: u32) -> nix::sys::stat::mode_t {
    #[allow(clippy::useless_conversion, clippy::cast_possible_truncation)] // u16 on macOS
    let bits = (mode & 0o7777) as nix::sys::stat::mode_t;
    bits
}

fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}.devshell-vm-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn timespec(time: SystemTime) -> TimeSpec {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => TimeSpec::from_duration(since),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let nanos = i64::from(before.subsec_nanos());
            if nanos == 0 {
                TimeSpec::new(-secs, 0)
            } else {
                TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
            }
        }
    }
}

/// The mtime of `stat` as a [`SystemTime`].
pub(crate) fn mtime_of(stat: &FileStat) -> SystemTime {
    #[allow(clippy::useless_conversion)]
    let (secs, nanos): (i64, i64) = (stat.st_mtime.into(), stat.st_mtime_nsec.into());
    let nanos = u32::try_from(nanos).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    }
}

/// `st_mode` as `u32` (it is `u16` on macOS).
#[allow(clippy::useless_conversion)]
fn st_mode(stat: &FileStat) -> u32 {
    u32::from(stat.st_mode)
}

/// The permission bits of `stat`.
pub(crate) fn mode_of(stat: &FileStat) -> u32 {
    st_mode(stat) & 0o7777
}

/// `true` when `name` is the kind `stat` says.
pub(crate) fn is_kind(stat: &FileStat, kind: SFlag) -> bool {
    st_mode(stat) & SFlag::S_IFMT.bits() == kind.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_never_followed_and_dotdot_is_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("link");
        std::fs::create_dir(root.path().join("sub")).expect("mkdir");
        let dir = Root::open(root.path()).expect("open");

        assert_eq!(dir.read_file("link/secret", 10).err(), Some(Errno::ENOTDIR));
        assert!(dir.read_file("../x", 10).is_err());
        assert_eq!(dir.dir("link").err(), Some(Errno::ENOTDIR));
        assert!(
            dir.replace_file("link/new", b"x", 0o644, SystemTime::now())
                .is_err()
        );
        assert!(!outside.path().join("new").exists());

        // Replacing the link itself replaces the link, not the directory it points to.
        dir.replace_file("link", b"now a file", 0o640, SystemTime::now())
            .expect("replace");
        assert!(outside.path().join("secret").exists());
        assert_eq!(
            std::fs::read(root.path().join("link")).expect("read"),
            b"now a file"
        );
        let stat = dir.lstat("link").expect("lstat").expect("exists");
        assert_eq!(mode_of(&stat), 0o640);
        assert_eq!(dir.lstat("sub/missing").expect("lstat"), None);

        dir.replace_symlink("sub/l", "../../etc").expect("symlink");
        assert_eq!(dir.read_link("sub/l").expect("readlink"), "../../etc");
        dir.remove_file("sub/l").expect("unlink");
        assert_eq!(dir.remove_dir("sub"), Ok(()));
    }
}
