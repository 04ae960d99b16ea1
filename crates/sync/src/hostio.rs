//! Host I/O that never leaves the staging leaf.
//!
//! Every operation works relative to an open directory descriptor and names exactly one
//! entry of it, so a path is resolved one component at a time by the caller
//! ([`open_dir_at`] with `O_NOFOLLOW | O_DIRECTORY`). Nothing here follows a symlink:
//! directories are opened with `O_NOFOLLOW`, files are opened with `O_NOFOLLOW` (a
//! symlink gives `ELOOP`), metadata comes from `fstatat(AT_SYMLINK_NOFOLLOW)`, and
//! writes never reuse an existing inode: the old entry (file, symlink, hard link or
//! whole directory) is unlinked and a new file is created with `O_CREAT | O_EXCL`, so a
//! planted symlink or hard link can never redirect a write outside the leaf.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devshell_vm_vfs::Content;
use nix::NixPath;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FileStat, Mode, SFlag, UtimensatFlags, fchmod, fstat, fstatat, futimens, mkdirat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

/// Flags for opening a directory without following a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Mode a directory is created with while it is being filled (its real mode is set
/// afterwards, so a read-only directory can still be populated).
pub(crate) const FILLING_DIR_MODE: u32 = 0o700;

/// A point in time as the kernel stores it (seconds and nanoseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Ts {
    /// Seconds since the Unix epoch (negative before it).
    pub(crate) sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub(crate) nsec: u32,
}

impl Ts {
    /// Converts a [`SystemTime`], saturating at the `i64` seconds range.
    pub(crate) fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self {
                sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                nsec: after.subsec_nanos(),
            },
            Err(err) => {
                let before = err.duration();
                let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                if before.subsec_nanos() == 0 {
                    Self {
                        sec: -secs,
                        nsec: 0,
                    }
                } else {
                    Self {
                        sec: -secs - 1,
                        nsec: 1_000_000_000 - before.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// Converts back to a [`SystemTime`].
    pub(crate) fn to_system_time(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nsec));
        if self.sec >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.sec.unsigned_abs()) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.sec.unsigned_abs()) + nanos
        }
    }

    fn from_parts(sec: i64, nsec: i64) -> Self {
        Self {
            sec,
            nsec: u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0),
        }
    }

    fn to_timespec(self) -> TimeSpec {
        TimeSpec::new(self.sec, i64::from(self.nsec))
    }

    /// The kernel's coarse real-time clock: file timestamps are taken from it, so a
    /// file changed after this instant gets an mtime `>=` the returned value.
    pub(crate) fn coarse_now() -> Self {
        if let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME_COARSE) {
            Self::from_parts(now.tv_sec(), now.tv_nsec())
        } else {
            // Without a coarse clock the precise one is a safe stand-in minus a margin
            // larger than any timestamp granularity.
            let now = Self::from_system_time(SystemTime::now());
            Self {
                sec: now.sec - 1,
                nsec: now.nsec,
            }
        }
    }
}

/// The kind of a host entry as `lstat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HostKind {
    Dir,
    File,
    Symlink,
    /// FIFO, socket, device: never synced.
    Other,
}

/// What the manifest remembers of one host entry: enough to tell, without reading it,
/// whether anything about the entry changed since it was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct HostMeta {
    pub(crate) kind: HostKind,
    /// Permission bits (`& 0o7777`).
    pub(crate) mode: u32,
    pub(crate) size: u64,
    pub(crate) mtime: Ts,
    /// Status-change time: moves on every write, chmod, utime or rename, and cannot be
    /// set by a tool, so it catches edits that restore the old mtime.
    pub(crate) ctime: Ts,
    pub(crate) ino: u64,
    pub(crate) dev: u64,
}

impl HostMeta {
    /// Extracts the fields from an `lstat`/`fstat` result.
    #[allow(clippy::unnecessary_cast, clippy::cast_sign_loss)] // field widths vary per platform
    pub(crate) fn from_stat(stat: &FileStat) -> Self {
        let fmt = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        let kind = if fmt == SFlag::S_IFDIR {
            HostKind::Dir
        } else if fmt == SFlag::S_IFREG {
            HostKind::File
        } else if fmt == SFlag::S_IFLNK {
            HostKind::Symlink
        } else {
            HostKind::Other
        };
        Self {
            kind,
            mode: (stat.st_mode as u32) & 0o7777,
            size: stat.st_size as u64,
            mtime: Ts::from_parts(stat.st_mtime as i64, stat.st_mtime_nsec as i64),
            ctime: Ts::from_parts(stat.st_ctime as i64, stat.st_ctime_nsec as i64),
            ino: stat.st_ino as u64,
            dev: stat.st_dev as u64,
        }
    }
}

/// Opens the directory entry `name` of `parent` without following a symlink: a symlink
/// gives `ELOOP`, anything else that is not a directory `ENOTDIR`.
pub(crate) fn open_dir_at<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
) -> nix::Result<OwnedFd> {
    openat(parent, name, DIR_FLAGS, Mode::empty())
}

/// `lstat` of one entry of `parent`.
pub(crate) fn lstat_at<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
) -> nix::Result<HostMeta> {
    fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map(|stat| HostMeta::from_stat(&stat))
}

/// `fstat` of an open descriptor.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> nix::Result<HostMeta> {
    fstat(fd).map(|stat| HostMeta::from_stat(&stat))
}

/// Creates directory `name` in `parent` (mode [`FILLING_DIR_MODE`]) and opens it.
pub(crate) fn create_dir_at(parent: BorrowedFd<'_>, name: &str) -> nix::Result<OwnedFd> {
    mkdirat(parent, name, Mode::from_bits_truncate(FILLING_DIR_MODE))?;
    open_dir_at(parent, name)
}

/// Opens directory `name` in `parent`, creating it when missing and replacing whatever
/// non-directory (file, symlink, special file) is in its place. Returns the descriptor
/// and whether the directory was created (so it is known to be empty), plus how many
/// entries were removed to make room.
pub(crate) fn ensure_dir_at(
    parent: BorrowedFd<'_>,
    name: &str,
) -> nix::Result<(OwnedFd, bool, u64)> {
    match open_dir_at(parent, name) {
        Ok(fd) => Ok((fd, false, 0)),
        Err(Errno::ENOENT) => Ok((create_dir_at(parent, name)?, true, 0)),
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            let removed = remove_at(parent, name)?;
            Ok((create_dir_at(parent, name)?, true, removed))
        }
        Err(err) => Err(err),
    }
}

/// One level of [`remove_at`]'s iterative walk.
struct Frame {
    dir: Dir,
    name: Option<CString>,
    pending: Vec<CString>,
}

/// Opens a [`Frame`]: lists the directory's entries up front.
fn frame(dir: OwnedFd, name: Option<CString>) -> nix::Result<Frame> {
    let mut dir = Dir::from_fd(dir)?;
    let mut pending = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        if !is_dot_or_dotdot(entry.file_name()) {
            pending.push(entry.file_name().to_owned());
        }
    }
    Ok(Frame { dir, name, pending })
}

/// Removes entry `name` of `parent` whatever it is, directories recursively; never
/// follows a symlink (a symlink is unlinked itself). Returns the number of entries
/// removed (0 when nothing was there).
pub(crate) fn remove_at<P: ?Sized + NixPath>(parent: BorrowedFd<'_>, name: &P) -> nix::Result<u64> {
    match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(1),
        Err(Errno::ENOENT) => return Ok(0),
        // Linux says EISDIR for a directory, POSIX allows EPERM.
        Err(Errno::EISDIR | Errno::EPERM) => {}
        Err(err) => return Err(err),
    }
    let top = match open_dir_at(parent, name) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(0),
        Err(err) => return Err(err),
    };
    // Iterative depth-first removal: one frame (open directory, its own name, the
    // entries still to remove) per level, so depth costs heap, not stack.
    let mut removed = 0;
    let mut stack: Vec<Frame> = vec![frame(top, None)?];
    while let Some(current) = stack.last_mut() {
        if let Some(entry_name) = current.pending.pop() {
            match unlinkat(
                current.dir.as_fd(),
                entry_name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) => removed += 1,
                Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR | Errno::EPERM) => {
                    let child = open_dir_at(current.dir.as_fd(), entry_name.as_c_str())?;
                    let next = frame(child, Some(entry_name))?;
                    stack.push(next);
                }
                Err(err) => return Err(err),
            }
            continue;
        }
        // This directory is empty now: remove it from its parent.
        let done = stack.pop().expect("stack is non-empty inside the loop");
        drop(done.dir);
        match (done.name, stack.last()) {
            (Some(own_name), Some(up)) => {
                unlinkat(
                    up.dir.as_fd(),
                    own_name.as_c_str(),
                    UnlinkatFlags::RemoveDir,
                )?;
            }
            _ => unlinkat(parent, name, UnlinkatFlags::RemoveDir)?,
        }
        removed += 1;
    }
    Ok(removed)
}

/// `true` for the `.` and `..` entries of a directory listing.
pub(crate) fn is_dot_or_dotdot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

/// Creates a new regular file `name` in `parent` with permission bits `mode`, replacing
/// whatever was there (the old inode is unlinked, never written through). The count
/// returned is what a report calls deleted: a replaced file or link is an overwrite
/// (0); a directory in the way is a type change and its whole subtree counts.
/// `readable` opens it for reading too (a descriptor the caller keeps to read it back).
pub(crate) fn create_file_at(
    parent: BorrowedFd<'_>,
    name: &str,
    mode: u32,
    readable: bool,
) -> nix::Result<(File, u64)> {
    let access = if readable {
        OFlag::O_RDWR
    } else {
        OFlag::O_WRONLY
    };
    let flags = access | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let create_mode = Mode::from_bits_truncate(mode & 0o777);
    match openat(parent, name, flags, create_mode) {
        Ok(fd) => Ok((File::from(fd), 0)),
        Err(Errno::EEXIST) => {
            let removed = match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => 0,
                Err(Errno::EISDIR | Errno::EPERM) => remove_at(parent, name)?,
                Err(err) => return Err(err),
            };
            Ok((
                File::from(openat(parent, name, flags, create_mode)?),
                removed,
            ))
        }
        Err(err) => Err(err),
    }
}

/// Writes `content` to a freshly created file and gives it `mode` and `mtime`; returns
/// the file's metadata afterwards. `umask_bits` are the bits the process umask removed
/// at creation (a `chmod` is only needed when the mode lost bits or has special bits).
pub(crate) fn finish_file(
    file: &mut File,
    content: &[u8],
    mode: u32,
    mtime: Ts,
    umask_bits: u32,
) -> io::Result<HostMeta> {
    if !content.is_empty() {
        file.write_all(content)?;
    }
    if mode & umask_bits != 0 || mode & 0o7000 != 0 {
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode & 0o7777))?;
    }
    futimens(file.as_fd(), &TimeSpec::UTIME_OMIT, &mtime.to_timespec())?;
    Ok(stat_fd(file.as_fd())?)
}

/// Sets mode and mtime of an open directory and returns its metadata afterwards.
pub(crate) fn finish_dir(fd: BorrowedFd<'_>, mode: u32, mtime: Ts) -> nix::Result<HostMeta> {
    fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))?;
    futimens(fd, &TimeSpec::UTIME_OMIT, &mtime.to_timespec())?;
    stat_fd(fd)
}

/// Sets only the mtime of an open directory (after entries were added or removed) and
/// returns its metadata afterwards.
pub(crate) fn restore_dir_mtime(fd: BorrowedFd<'_>, mtime: Ts) -> nix::Result<HostMeta> {
    futimens(fd, &TimeSpec::UTIME_OMIT, &mtime.to_timespec())?;
    stat_fd(fd)
}

/// Creates symlink `name` → `target` in `parent` (replacing whatever was there) with the
/// given mtime, and returns its metadata.
pub(crate) fn create_symlink_at(
    parent: BorrowedFd<'_>,
    name: &str,
    target: &str,
    mtime: Ts,
) -> nix::Result<(HostMeta, u64)> {
    let removed = match symlinkat(target, parent, name) {
        Ok(()) => 0,
        Err(Errno::EEXIST) => {
            let removed = remove_at(parent, name)?;
            symlinkat(target, parent, name)?;
            removed
        }
        Err(err) => return Err(err),
    };
    utimensat(
        parent,
        name,
        &TimeSpec::UTIME_OMIT,
        &mtime.to_timespec(),
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok((lstat_at(parent, name)?, removed))
}

/// Reads the target of symlink `name` in `parent`.
pub(crate) fn read_link_at<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
) -> nix::Result<OsString> {
    nix::fcntl::readlinkat(parent, name)
}

/// Opens regular file `name` of `parent` read-only (never through a symlink: `ELOOP`;
/// never blocking on a FIFO; close-on-exec) without reading it.
pub(crate) fn open_file_at<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty()).map(File::from)
}

/// Why [`read_file_at`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The system call failed.
    Io(io::Error),
    /// The entry is no longer a regular file, or its length changed while reading.
    Changed,
}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<Errno> for ReadError {
    fn from(err: Errno) -> Self {
        Self::Io(err.into())
    }
}

/// Reads regular file `name` of `parent` (never through a symlink, never blocking on a
/// FIFO) into one exactly sized shared buffer, and returns its metadata as seen by the
/// open descriptor. A file bigger than `max_len` by then counts as changed (nothing is
/// allocated for it).
pub(crate) fn read_file_at<P: ?Sized + NixPath>(
    parent: BorrowedFd<'_>,
    name: &P,
    max_len: u64,
) -> Result<(HostMeta, Content), ReadError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(ReadError::Changed),
        Err(err) => return Err(err.into()),
    };
    let meta = stat_fd(fd.as_fd())?;
    if meta.kind != HostKind::File || meta.size > max_len {
        return Err(ReadError::Changed);
    }
    let len = usize::try_from(meta.size)
        .map_err(|_| ReadError::Io(io::Error::from(io::ErrorKind::OutOfMemory)))?;
    let mut file = File::from(fd);
    // One allocation of exactly the right size: the bytes land where the VFS keeps them.
    let mut content: Content = std::iter::repeat_n(0u8, len).collect();
    let buf = Arc::get_mut(&mut content).expect("a freshly collected Arc is unique");
    match file.read_exact(buf) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::Changed),
        Err(err) => return Err(err.into()),
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe)? != 0 {
        return Err(ReadError::Changed);
    }
    Ok((meta, content))
}

/// The bits the process umask removes from new files, read without changing the umask
/// (Linux `/proc/self/status`); when unknown, all bits, so modes are always set
/// explicitly.
pub(crate) fn umask_bits() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// A host name as UTF-8, or `None` when it is not valid UTF-8.
pub(crate) fn utf8_name(name: &CStr) -> Option<&str> {
    std::str::from_utf8(name.to_bytes()).ok()
}
