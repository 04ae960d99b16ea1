//! `guest_fs` operations on a session's staging dir, with one meaning per error code
//! (the table of `devshell_vm_guest_fs::GuestFsOps`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use devshell_vm_protocol::{
    GuestFs, GuestFsErrorCode, GuestFsErrorReply, GuestFsOk, GuestFsOperation, GuestKindWire,
    GuestStat, Reply, encode_base64,
};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::confine::{
    Denied, Resolved, Staging, guest_components, guest_display, kind_of, open_dir_at,
};

/// A failed operation: code, message, and the normalised guest path it is about.
type Failure = (GuestFsErrorCode, String, String);

struct Op<'a> {
    staging: &'a Staging,
    /// Normalised guest path for messages.
    shown: String,
}

impl Op<'_> {
    #[allow(
        clippy::needless_pass_by_value,
        reason = "callers pass fresh values from map_err"
    )]
    fn fail(&self, denied: Denied) -> Failure {
        let code = match &denied {
            Denied::InvalidPath(_) => GuestFsErrorCode::InvalidPath,
            Denied::NotFound => GuestFsErrorCode::NotFound,
            Denied::NotADirectory => GuestFsErrorCode::NotADirectory,
            Denied::Io(_) => GuestFsErrorCode::IoError,
        };
        self.code(code, &denied.describe())
    }

    fn code(&self, code: GuestFsErrorCode, detail: &str) -> Failure {
        (
            code,
            format!("{}: {detail}", self.shown),
            self.shown.clone(),
        )
    }
}

/// Handles one `guest_fs` request; `v2` says whether `guest-fs-v2` was negotiated,
/// `max_frame_bytes` bounds the size of a `read_file` reply.
pub(crate) fn handle(
    staging: &Staging,
    request: &GuestFs,
    v2: bool,
    max_frame_bytes: usize,
) -> Reply {
    let ok = GuestFsOk {
        session_id: request.session_id.clone(),
        ..GuestFsOk::default()
    };
    match run(staging, request, v2, max_frame_bytes, ok) {
        Ok(ok) => Reply::GuestFsOk(ok),
        Err((code, message, path)) => Reply::GuestFsError(GuestFsErrorReply {
            code,
            message,
            // A v1 peer never sees fields it does not know.
            path: v2.then_some(path),
        }),
    }
}

fn run(
    staging: &Staging,
    request: &GuestFs,
    v2: bool,
    max_frame_bytes: usize,
    mut ok: GuestFsOk,
) -> Result<GuestFsOk, Failure> {
    if request.operation.is_v2() && !v2 {
        return Err((
            GuestFsErrorCode::Unknown,
            format!(
                "operation {} needs the guest-fs-v2 capability (not negotiated)",
                request.operation
            ),
            request.guest_path.clone(),
        ));
    }
    let mount = staging.mount();
    let components = guest_components(mount, &request.guest_path).map_err(|reason| {
        (
            GuestFsErrorCode::InvalidPath,
            format!("{}: {reason}", request.guest_path),
            request.guest_path.clone(),
        )
    })?;
    let op = Op {
        staging,
        shown: guest_display(mount, &components),
    };
    match &request.operation {
        GuestFsOperation::ListDir => ok.names = Some(list_dir(&op, &components)?),
        GuestFsOperation::ReadFile => {
            ok.content_base64 = Some(read_file(&op, &components, max_frame_bytes)?);
        }
        GuestFsOperation::WriteFile => {
            let data = request
                .content()
                .map_err(|err| op.code(GuestFsErrorCode::InvalidBase64, &err.to_string()))?;
            write_file(&op, &components, &data)?;
        }
        GuestFsOperation::Mkdir => mkdir(&op, &components)?,
        GuestFsOperation::Remove => remove(&op, &components)?,
        GuestFsOperation::Stat => ok.stat = Some(stat(&op, &components)?),
        GuestFsOperation::Exists => {
            ok.exists = Some(match stat(&op, &components) {
                Ok(_) => true,
                Err((GuestFsErrorCode::NotFound | GuestFsErrorCode::NotADirectory, _, _)) => false,
                Err(other) => return Err(other),
            });
        }
        GuestFsOperation::Rename => {
            let Some(to_path) = &request.to_path else {
                return Err(op.code(GuestFsErrorCode::InvalidPath, "rename needs to_path"));
            };
            let to = guest_components(mount, to_path).map_err(|reason| {
                (
                    GuestFsErrorCode::InvalidPath,
                    format!("{to_path}: {reason}"),
                    to_path.clone(),
                )
            })?;
            rename(&op, &components, &to)?;
        }
        GuestFsOperation::Other(name) => {
            return Err((
                GuestFsErrorCode::Unknown,
                format!("unknown guest_fs operation {name:?}"),
                request.guest_path.clone(),
            ));
        }
    }
    Ok(ok)
}

fn list_dir(op: &Op<'_>, components: &[String]) -> Result<Vec<String>, Failure> {
    let resolved = op
        .staging
        .resolve(components, true, false)
        .map_err(|d| op.fail(d))?;
    let dir = open_resolved_dir(op, resolved)?;
    let mut dir = Dir::from_fd(dir).map_err(|e| op.fail(e.into()))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| op.fail(Denied::Io(e)))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    names.sort();
    Ok(names)
}

/// Opens the directory a resolution names (following rules of `list_dir`).
fn open_resolved_dir(op: &Op<'_>, resolved: Resolved) -> Result<OwnedFd, Failure> {
    let Some(name) = resolved.name else {
        // A fresh open file description: `resolved.dir` may be a dup of the session's
        // staging fd, whose directory offset must not move.
        return open_dir_at(&resolved.dir, OsStr::new(".")).map_err(|e| op.fail(e.into()));
    };
    let Some(stat) = resolved.stat else {
        return Err(op.fail(Denied::NotFound));
    };
    if kind_of(&stat) != SFlag::S_IFDIR {
        return Err(op.fail(Denied::NotADirectory));
    }
    open_dir_at(&resolved.dir, &name).map_err(|e| op.fail(e.into()))
}

fn read_file(
    op: &Op<'_>,
    components: &[String],
    max_frame_bytes: usize,
) -> Result<String, Failure> {
    let resolved = op
        .staging
        .resolve(components, true, false)
        .map_err(|d| op.fail(d))?;
    let Some(name) = resolved.name else {
        return Err(op.code(GuestFsErrorCode::IsADirectory, "is a directory"));
    };
    match resolved.stat.as_ref().map(kind_of) {
        None => return Err(op.fail(Denied::NotFound)),
        Some(SFlag::S_IFDIR) => {
            return Err(op.code(GuestFsErrorCode::IsADirectory, "is a directory"));
        }
        Some(_) => {}
    }
    let fd = openat(
        &resolved.dir,
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| op.fail(e.into()))?;
    let stat = fstat(&fd).map_err(|e| op.fail(e.into()))?;
    if kind_of(&stat) != SFlag::S_IFREG {
        return Err(op.code(GuestFsErrorCode::IoError, "not a regular file"));
    }
    let size = usize::try_from(stat.st_size).unwrap_or(usize::MAX);
    // base64 grows 4/3; leave room for the JSON around it.
    if size.div_ceil(3).saturating_mul(4).saturating_add(4096) > max_frame_bytes {
        return Err(op.code(
            GuestFsErrorCode::IoError,
            &format!(
                "file of {size} bytes does not fit in one frame (limit {max_frame_bytes} bytes)"
            ),
        ));
    }
    let mut data = Vec::with_capacity(size);
    File::from(fd)
        .read_to_end(&mut data)
        .map_err(|e| op.code(GuestFsErrorCode::IoError, &e.to_string()))?;
    Ok(encode_base64(&data))
}

/// Why `write_file` refuses an existing FIFO, socket or device.
const NOT_REGULAR: &str = "not a regular file (FIFO, socket or device): refusing to write into it";

fn write_file(op: &Op<'_>, components: &[String], data: &[u8]) -> Result<(), Failure> {
    let resolved = op
        .staging
        .resolve(components, true, true)
        .map_err(|d| op.fail(d))?;
    let Some(name) = resolved.name else {
        return Err(op.code(GuestFsErrorCode::IsADirectory, "is a directory"));
    };
    if let Some(stat) = &resolved.stat {
        match kind_of(stat) {
            SFlag::S_IFDIR => return Err(op.code(GuestFsErrorCode::IsADirectory, "is a directory")),
            // A hard link shared with a file elsewhere: replace the name instead of
            // truncating the shared inode.
            SFlag::S_IFREG if stat.st_nlink > 1 => {
                unlinkat(&resolved.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| op.fail(e.into()))?;
            }
            SFlag::S_IFREG => {}
            // A FIFO, socket or device: writing "into" it would feed a reader or a
            // device, not store a file (read_file refuses them the same way).
            _ => return Err(op.code(GuestFsErrorCode::IoError, NOT_REGULAR)),
        }
    }
    let fd = openat(
        &resolved.dir,
        name.as_os_str(),
        OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_TRUNC
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| match e {
        Errno::EISDIR => op.code(GuestFsErrorCode::IsADirectory, "is a directory"),
        other => op.fail(other.into()),
    })?;
    // The node may have been swapped for a special file since the check above; O_NONBLOCK
    // kept the open from waiting on a FIFO, and nothing is written unless it is a
    // regular file.
    let stat = fstat(&fd).map_err(|e| op.fail(e.into()))?;
    if kind_of(&stat) != SFlag::S_IFREG {
        return Err(op.code(GuestFsErrorCode::IoError, NOT_REGULAR));
    }
    let mut file = File::from(fd);
    file.write_all(data)
        .map_err(|e| op.code(GuestFsErrorCode::IoError, &e.to_string()))?;
    Ok(())
}

fn mkdir(op: &Op<'_>, components: &[String]) -> Result<(), Failure> {
    let resolved = op
        .staging
        .resolve(components, true, true)
        .map_err(|d| op.fail(d))?;
    let Some(name) = resolved.name else {
        return Ok(());
    };
    match resolved.stat.as_ref().map(kind_of) {
        Some(SFlag::S_IFDIR) => Ok(()),
        Some(_) => Err(op.fail(Denied::NotADirectory)),
        None => match mkdirat(
            &resolved.dir,
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => match fstatat(
                &resolved.dir,
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) if kind_of(&stat) == SFlag::S_IFDIR => Ok(()),
                _ => Err(op.fail(Denied::NotADirectory)),
            },
            Err(other) => Err(op.fail(other.into())),
        },
    }
}

fn remove(op: &Op<'_>, components: &[String]) -> Result<(), Failure> {
    let resolved = op
        .staging
        .resolve(components, false, false)
        .map_err(|d| op.fail(d))?;
    let Some(name) = resolved.name else {
        return Err(op.code(
            GuestFsErrorCode::InvalidPath,
            "the guest mount itself cannot be removed",
        ));
    };
    match resolved.stat.as_ref().map(kind_of) {
        None => Err(op.fail(Denied::NotFound)),
        Some(SFlag::S_IFDIR) => remove_tree(&resolved.dir, &name).map_err(|e| op.fail(e.into())),
        Some(_) => unlinkat(&resolved.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|e| op.fail(e.into())),
    }
}

/// `rm -r` of directory `name` in `parent`, never following a symlink.
pub(crate) fn remove_tree(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let fd = open_dir_at(parent, name)?;
    let entries: Vec<(std::ffi::OsString, Option<Type>)> = {
        let mut dir = Dir::from_fd(fd.try_clone().map_err(|_| Errno::EMFILE)?)?;
        let mut entries = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            entries.push((
                <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes).to_owned(),
                entry.file_type(),
            ));
        }
        entries
    };
    for (entry, file_type) in entries {
        let is_dir = match file_type {
            Some(Type::Directory) => true,
            Some(_) => false,
            None => {
                kind_of(&fstatat(
                    &fd,
                    entry.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?) == SFlag::S_IFDIR
            }
        };
        if is_dir {
            remove_tree(&fd, &entry)?;
        } else {
            match unlinkat(&fd, entry.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(errno) => return Err(errno),
            }
        }
    }
    unlinkat(parent, name, UnlinkatFlags::RemoveDir)
}

fn stat_to_wire(stat: &FileStat) -> GuestStat {
    let kind = match kind_of(stat) {
        SFlag::S_IFDIR => GuestKindWire::Dir,
        SFlag::S_IFLNK => GuestKindWire::Symlink,
        _ => GuestKindWire::File,
    };
    GuestStat {
        kind,
        size: u64::try_from(stat.st_size).unwrap_or(0),
        mode: Some(stat.st_mode & 0o7777),
        mtime_unix_ms: Some(
            stat.st_mtime
                .saturating_mul(1000)
                .saturating_add(stat.st_mtime_nsec / 1_000_000),
        ),
    }
}

fn stat(op: &Op<'_>, components: &[String]) -> Result<GuestStat, Failure> {
    let resolved = op
        .staging
        .resolve(components, false, false)
        .map_err(|d| op.fail(d))?;
    match (&resolved.name, &resolved.stat) {
        (None, _) => fstat(&resolved.dir)
            .map(|s| stat_to_wire(&s))
            .map_err(|e| op.fail(e.into())),
        (Some(_), None) => Err(op.fail(Denied::NotFound)),
        (Some(_), Some(stat)) => Ok(stat_to_wire(stat)),
    }
}

fn rename(op: &Op<'_>, from: &[String], to: &[String]) -> Result<(), Failure> {
    let to_op = Op {
        staging: op.staging,
        shown: guest_display(op.staging.mount(), to),
    };
    if from.is_empty() {
        return Err(op.code(
            GuestFsErrorCode::InvalidPath,
            "the guest mount itself cannot be renamed",
        ));
    }
    let source = op
        .staging
        .resolve(from, false, false)
        .map_err(|d| op.fail(d))?;
    let (Some(from_name), Some(from_stat)) = (&source.name, &source.stat) else {
        return Err(op.fail(Denied::NotFound));
    };
    if from == to {
        return Ok(());
    }
    if to.len() > from.len() && to[..from.len()] == from[..] {
        return Err(to_op.code(
            GuestFsErrorCode::InvalidPath,
            &format!("cannot move {} into its own subtree", op.shown),
        ));
    }
    let target = op
        .staging
        .resolve(to, false, true)
        .map_err(|d| to_op.fail(d))?;
    let Some(to_name) = &target.name else {
        return Err(to_op.code(GuestFsErrorCode::IsADirectory, "is a directory"));
    };
    let from_is_dir = kind_of(from_stat) == SFlag::S_IFDIR;
    if let Some(to_stat) = &target.stat {
        let same = to_stat.st_dev == from_stat.st_dev && to_stat.st_ino == from_stat.st_ino;
        if same {
            return Ok(());
        }
        if kind_of(to_stat) == SFlag::S_IFDIR {
            return Err(to_op.code(GuestFsErrorCode::IsADirectory, "is a directory"));
        }
        if from_is_dir {
            return Err(to_op.code(GuestFsErrorCode::NotADirectory, "not a directory"));
        }
    }
    renameat(
        &source.dir,
        from_name.as_os_str(),
        &target.dir,
        to_name.as_os_str(),
    )
    .map_err(|e| match e {
        Errno::EINVAL => to_op.code(
            GuestFsErrorCode::InvalidPath,
            &format!("cannot move {} into its own subtree", op.shown),
        ),
        Errno::EISDIR => to_op.code(GuestFsErrorCode::IsADirectory, "is a directory"),
        Errno::ENOTDIR => to_op.fail(Denied::NotADirectory),
        Errno::ENOENT => op.fail(Denied::NotFound),
        other => to_op.fail(Denied::Io(other)),
    })
}
