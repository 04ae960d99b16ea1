//! File content read on demand from an open host file ([`LazyContent`]).
//!
//! A pull that finds a large changed file in the staging directory does not have to read
//! it: it can hand the VFS a [`LazyContent`], an open read-only descriptor of the host
//! inode plus the identity the inode had when it was pulled (device, inode, size and
//! mtime in nanoseconds). The bytes are read the first time anyone reads the file
//! ([`Vfs::read_file`](crate::Vfs::read_file), a walk's
//! [`NodeRef::content`](crate::NodeRef::content), an image save, `copy_tree_to_host`,
//! ...), then kept and the descriptor closed. Size and metadata queries never read.
//!
//! # Why a descriptor, and what can go wrong
//! A descriptor, not a path: the staging directory is deleted when a session ends, a
//! tool may rename or delete the file, and an open descriptor keeps the inode readable
//! through all of that. What it cannot survive is the inode being *changed in place*
//! (`open(O_TRUNC)` + write, as cargo does with its fingerprint files): the bytes the
//! pull saw are gone. The read therefore `fstat`s the descriptor before and after
//! reading the whole file (`pread`) and compares with the recorded identity; any
//! difference gives [`VfsError::ContentChanged`](crate::VfsError::ContentChanged)
//! instead of bytes other than those of the pulled version.
//!
//! The ctime is deliberately *not* part of the identity: unlinking the file (the
//! staging directory removed at session end, `cargo clean`), renaming it or hard-linking
//! it (rustc's incremental session directories) moves the ctime without touching a
//! byte, and such a file must stay readable. What the check therefore cannot see is a
//! rewrite in place that keeps the exact length and then sets the mtime back to the
//! same nanosecond (`utimensat`), or one within the same clock tick as the pull's
//! `fstat`; the sync crate only makes a file lazy when its mtime is older than the pull's
//! start (the "racy git" rule), which rules out the second.
//!
//! In the session flow this cannot happen for the session's own tree: a tool only runs
//! after a push, and the pull after the run replaces every node whose file changed
//! before anyone reads it. A [`Vfs`](crate::Vfs) *clone* may outlive that pull, so
//! [`Vfs::materialize_shared_lazy`](crate::Vfs::materialize_shared_lazy) reads every
//! lazy content that another clone also holds; the session layer calls it before every
//! push, so a tool never changes bytes a clone still refers to.
//!
//! # Bounded descriptors
//! Every unread [`LazyContent`] holds one descriptor. A process-wide cap
//! ([`lazy_fd_limit`]: a quarter of the `RLIMIT_NOFILE` soft limit, between 16 and
//! 4,096) bounds them: [`LazySlot::reserve`] fails once the cap is reached, and a caller
//! then reads the file eagerly instead. A read closes the descriptor and frees its slot;
//! dropping an unread content closes it on a background thread (the close of a deleted
//! file frees its blocks, which would otherwise cost the caller milliseconds), and the
//! slot is freed once it is closed.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::Content;

/// Descriptors held by unread [`LazyContent`]s in this process.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The cap in force (0: not computed yet).
static LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Smallest and largest default cap.
const MIN_LIMIT: usize = 16;
const MAX_LIMIT: usize = 4096;

/// The process-wide cap on descriptors held by unread lazy contents: set by
/// [`set_lazy_fd_limit`], else a quarter of the `RLIMIT_NOFILE` soft limit clamped to
/// 16..=4,096 (the rest stays for the tools, sockets and the sync's own directory
/// descriptors).
#[must_use]
pub fn lazy_fd_limit() -> usize {
    match LIMIT.load(Ordering::Relaxed) {
        0 => {
            let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft);
            let limit = usize::try_from(soft / 4)
                .unwrap_or(MAX_LIMIT)
                .clamp(MIN_LIMIT, MAX_LIMIT);
            // A concurrent `set_lazy_fd_limit` wins.
            match LIMIT.compare_exchange(0, limit, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => limit,
                Err(set) => set,
            }
        }
        limit => limit,
    }
}

/// Sets the process-wide cap of [`lazy_fd_limit`] (at least 1; lazy contents already
/// open keep their descriptors). Tests use it to reach the cap quickly.
pub fn set_lazy_fd_limit(limit: usize) {
    LIMIT.store(limit.max(1), Ordering::Relaxed);
}

/// Lowers the process-wide cap to `limit` (at least 1) if it is higher: what a caller
/// does when `open` reported `EMFILE`/`ENFILE`, so that later files are read eagerly
/// instead of running the process out of descriptors again.
pub fn lower_lazy_fd_limit(limit: usize) {
    let limit = limit.max(1);
    let current = lazy_fd_limit();
    if limit < current {
        let _ = LIMIT.compare_exchange(current, limit, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Descriptors currently held by unread lazy contents in this process.
#[must_use]
pub fn open_lazy_fds() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// One reserved place under [`lazy_fd_limit`]; released when dropped (or when the
/// [`LazyContent`] that owns it is read or dropped).
#[derive(Debug)]
pub struct LazySlot(());

impl LazySlot {
    /// Reserves a place, or `None` when the cap is reached (read eagerly then).
    #[must_use]
    pub fn reserve() -> Option<Self> {
        let limit = lazy_fd_limit();
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
            (open < limit).then_some(open + 1)
        })
        .ok()
        .map(|_| Self(()))
    }
}

impl Drop for LazySlot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What identifies one version of a host file: if any field differs, the bytes may
/// differ (see the [module docs](self) for why the ctime is not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device of the filesystem.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

impl FileIdentity {
    /// The identity in `meta` (from `fstat`/`lstat`).
    #[must_use]
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |sec: i64, nsec: i64| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// Why a [`LazyContent`] could not be read (turned into a [`VfsError`](crate::VfsError)
/// naming the VFS path by the tree).
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The inode no longer has the recorded identity.
    Changed,
    /// `pread`/`fstat` failed.
    Io(io::Error),
}

/// File content not read yet: an open read-only descriptor of the host inode, the
/// identity it had when it was recorded, and the bytes once read (see the
/// [module docs](self)).
pub struct LazyContent {
    /// The descriptor and its slot until the first successful read.
    file: Mutex<Option<(File, LazySlot)>>,
    bytes: OnceLock<Content>,
    identity: FileIdentity,
    /// Host path the file was opened at (for messages only; it may be gone).
    origin: PathBuf,
    /// VFS path the file was recorded for (for messages from a bare
    /// [`NodeRef`](crate::NodeRef), which does not know its path).
    vfs_path: String,
}

impl LazyContent {
    /// Wraps `file` (opened read-only, close-on-exec) with the identity `fstat` gives
    /// now. `origin` (the host path) and `vfs_path` only appear in error messages.
    ///
    /// # Errors
    /// `fstat` failing, or `InvalidInput` when `file` is not a regular file.
    pub fn new(
        file: File,
        slot: LazySlot,
        origin: impl Into<PathBuf>,
        vfs_path: impl Into<String>,
    ) -> io::Result<Self> {
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lazy content must be a regular file",
            ));
        }
        Ok(Self {
            identity: FileIdentity::of(&meta),
            file: Mutex::new(Some((file, slot))),
            bytes: OnceLock::new(),
            origin: origin.into(),
            vfs_path: vfs_path.into(),
        })
    }

    /// The identity the file had when this content was recorded.
    #[must_use]
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// The content's length (no read).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.identity.size
    }

    /// `true` for an empty file.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.identity.size == 0
    }

    /// `true` once the bytes were read (the descriptor is then closed).
    #[must_use]
    pub fn is_loaded(&self) -> bool {
        self.bytes.get().is_some()
    }

    /// The bytes if they were read already (never reads).
    #[must_use]
    pub fn loaded(&self) -> Option<&Content> {
        self.bytes.get()
    }

    /// The host path the file was opened at (it may no longer exist).
    #[must_use]
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The VFS path the content was recorded for.
    #[must_use]
    pub fn recorded_vfs_path(&self) -> &str {
        &self.vfs_path
    }

    /// The bytes, reading them on first use (which closes the descriptor).
    ///
    /// # Errors
    /// [`VfsError::ContentChanged`](crate::VfsError::ContentChanged) naming the VFS path
    /// it was recorded at, or [`VfsError::Io`](crate::VfsError::Io) naming the host file.
    pub fn content(&self) -> Result<&Content, crate::VfsError> {
        self.load().map_err(|err| match err {
            LoadError::Changed => crate::VfsError::ContentChanged {
                path: self.vfs_path.clone(),
                origin: self.origin.clone(),
            },
            LoadError::Io(source) => crate::VfsError::Io {
                path: self.origin.clone(),
                source,
            },
        })
    }

    /// Feeds the bytes to `visit` in pieces of at most 128 KiB without keeping them: for
    /// a caller that only hashes or forwards them (a sidecar hashing a tool's output and
    /// sending it on), which then costs no buffer the size of the file and leaves the
    /// content unread (its descriptor stays open). Bytes already loaded are fed from
    /// memory. The file's identity is checked before the first piece and after the
    /// last, as for a full read.
    ///
    /// The outer result is the file's: [`VfsError::ContentChanged`](crate::VfsError::ContentChanged)
    /// when the inode changed (pieces already fed may then be of the changed file: the
    /// caller must discard what it made of them) or [`VfsError::Io`](crate::VfsError::Io).
    /// The inner one is `visit`'s first error, which stops the reading.
    ///
    /// # Errors
    /// As above.
    pub fn for_each_chunk<E>(
        &self,
        mut visit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, crate::VfsError> {
        const PIECE: usize = 128 * 1024;
        let changed = || crate::VfsError::ContentChanged {
            path: self.vfs_path.clone(),
            origin: self.origin.clone(),
        };
        let io = |source| crate::VfsError::Io {
            path: self.origin.clone(),
            source,
        };
        if let Some(bytes) = self.bytes.get() {
            return Ok(feed(bytes, PIECE, &mut visit));
        }
        let guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bytes) = self.bytes.get() {
            return Ok(feed(bytes, PIECE, &mut visit));
        }
        let Some((file, _)) = guard.as_ref() else {
            return Err(changed());
        };
        if FileIdentity::of(&file.metadata().map_err(io)?) != self.identity {
            return Err(changed());
        }
        let size = self.identity.size;
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(PIECE).clamp(1, PIECE)];
        if size == 0 {
            return Ok(visit(&[]));
        }
        let mut offset = 0u64;
        while offset < size {
            let take = usize::try_from(size - offset)
                .unwrap_or(PIECE)
                .min(buf.len());
            match file.read_exact_at(&mut buf[..take], offset) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
                Err(err) => return Err(io(err)),
            }
            if let Err(err) = visit(&buf[..take]) {
                return Ok(Err(err));
            }
            offset += take as u64;
        }
        if FileIdentity::of(&file.metadata().map_err(io)?) != self.identity {
            return Err(changed());
        }
        Ok(Ok(()))
    }

    /// The bytes, reading them on first use.
    pub(crate) fn load(&self) -> Result<&Content, LoadError> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes);
        }
        let mut guard = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes);
        }
        let Some((file, _)) = guard.as_ref() else {
            // The descriptor goes only after the bytes were stored.
            return Err(LoadError::Changed);
        };
        let bytes = self.read(file)?;
        let bytes = self.bytes.get_or_init(|| bytes);
        // Bytes kept: the descriptor and its slot are no longer needed.
        *guard = None;
        Ok(bytes)
    }

    fn read(&self, file: &File) -> Result<Content, LoadError> {
        let before = FileIdentity::of(&file.metadata().map_err(LoadError::Io)?);
        if before != self.identity {
            return Err(LoadError::Changed);
        }
        let len = usize::try_from(self.identity.size)
            .map_err(|_| LoadError::Io(io::Error::from(io::ErrorKind::OutOfMemory)))?;
        let mut content: Content = std::iter::repeat_n(0u8, len).collect();
        let Some(buf) = std::sync::Arc::get_mut(&mut content) else {
            unreachable!("a freshly collected Arc is unique")
        };
        match file.read_exact_at(buf, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(LoadError::Changed);
            }
            Err(err) => return Err(LoadError::Io(err)),
        }
        let after = FileIdentity::of(&file.metadata().map_err(LoadError::Io)?);
        if after != self.identity {
            return Err(LoadError::Changed);
        }
        Ok(content)
    }
}

impl Drop for LazyContent {
    fn drop(&mut self) {
        let open = self
            .file
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(open) = open {
            close_later(open);
        }
    }
}

/// Feeds `bytes` to `visit` in pieces of at most `piece` bytes (an empty content: one
/// empty piece, so a caller always sees the end).
fn feed<E>(
    bytes: &[u8],
    piece: usize,
    visit: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    if bytes.is_empty() {
        return visit(bytes);
    }
    for chunk in bytes.chunks(piece) {
        visit(chunk)?;
    }
    Ok(())
}

/// An unread content's descriptor and its slot.
type Open = (File, LazySlot);

/// Closes an unread content's descriptor on a background thread. The descriptor is
/// often the last reference to an inode the tool already deleted (rustc removes the
/// previous incremental session, which the next pull replaces in the VFS): its `close`
/// then frees the file's blocks and page cache — about 0.1 ms per MiB on ext4 here,
/// milliseconds for a `cargo check`'s caches — which must not land in the pull that
/// dropped the node. The slot is released once the descriptor is really closed. If
/// the thread cannot be started the descriptor is closed right here.
fn close_later(open: Open) {
    static CLOSER: OnceLock<Option<Mutex<std::sync::mpsc::Sender<Open>>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Open>();
        std::thread::Builder::new()
            .name("devshell-vm-lazy-close".to_owned())
            .spawn(move || {
                for open in receiver {
                    drop(open);
                }
            })
            .ok()
            .map(|_| Mutex::new(sender))
    });
    if let Some(sender) = closer {
        let sent = sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(open);
        // A send only fails when the thread is gone: close here then.
        drop(sent);
    }
}

impl fmt::Debug for LazyContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyContent")
            .field("identity", &self.identity)
            .field("origin", &self.origin)
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}
