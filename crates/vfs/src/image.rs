//! Workspace images: a versioned, checksummed binary snapshot of a [`Vfs`].
//!
//! # Format (version 1, all integers little-endian)
//! ```text
//! header (32 bytes):
//!   magic "DSVMVFS\0" | version u32 = 1 | flags u32 = 0 | payload_len u64 | crc32 u32 (of the payload) | reserved u32 = 0
//! payload:
//!   cwd_len u32 | cwd bytes (UTF-8, canonical absolute, must name a directory)
//!   node_count u64 (root included)
//!   nodes in pre-order, children sorted by name, each:
//!     kind u8 (0 dir, 1 file, 2 symlink) | mode u32 | mtime_secs i64 | mtime_nanos u32 (< 10^9)
//!     name_len u32 | name bytes (empty for the root only)
//!     dir: child_count u32 | file: len u64 + bytes | symlink: len u32 + bytes
//! ```
//! The file is exactly header + payload. Loading checks the magic, version, flags and
//! exact length first; while parsing, every length is checked against the remaining
//! input before anything is allocated, the depth is bounded by
//! [`MAX_DEPTH`], the node count by the input size, names are
//! validated and must be strictly sorted, and the cwd must name a directory. The
//! checksum is verified before a tree is returned ([`from_bytes`] checks it before
//! parsing; [`load`] streams the file through a 1 MiB buffer and checks it over
//! everything read, reporting corruption as [`ImageError::ChecksumMismatch`] even when
//! the parser stumbled first). A loaded tree starts at a fresh generation with an
//! empty change history (generations of any earlier tree are refused by
//! `changes_since`).
//!
//! Saving is atomic: the image is streamed into a temporary file in the same directory
//! (header written last), fsynced, then renamed over the destination, and the directory
//! fsynced. A failed save or load leaves an existing image untouched.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::{Children, FileData, Node, NodeData};
use crate::path::{MAX_DEPTH, check_name};
use crate::{Content, Vfs};

/// Magic bytes at the start of every image.
pub const MAGIC: [u8; 8] = *b"DSVMVFS\0";
/// The format version this crate writes (and the only one it reads).
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
/// Smallest possible node record (a root directory with an empty name).
const MIN_RECORD: usize = 1 + 4 + 8 + 4 + 4 + 4;

const KIND_DIR: u8 = 0;
const KIND_FILE: u8 = 1;
const KIND_SYMLINK: u8 = 2;

/// Errors of image save and load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("workspace image I/O error at {}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The destination path has no file name (e.g. `/` or `..`).
    #[error("not a usable image path: {}", path.display())]
    InvalidPath {
        /// The path given.
        path: PathBuf,
    },
    /// A file's content is not a valid image; wraps the format error.
    #[error("invalid workspace image {}", path.display())]
    Invalid {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<ImageError>,
    },
    /// A lazy file content could not be read for the image.
    #[error(transparent)]
    Content(#[from] crate::VfsError),
    /// The input does not start with [`MAGIC`].
    #[error("not a devshell-vm workspace image (bad magic)")]
    BadMagic,
    /// The image was written by an unknown format version.
    #[error("unsupported workspace image version {version} (this build reads version {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The input ends before a field it announces.
    #[error(
        "workspace image truncated at byte {offset}: need {needed} more bytes, {available} left"
    )]
    Truncated {
        /// Byte offset of the field.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// The payload checksum does not match.
    #[error("workspace image checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the payload read.
        computed: u32,
    },
    /// A field holds an impossible value.
    #[error("corrupt workspace image at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset of the field.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

fn corrupt(offset: usize, reason: impl Into<String>) -> ImageError {
    ImageError::Corrupt {
        offset: offset as u64,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Writing

/// Serialises `vfs` (tree, metadata, cwd) to image bytes. Lazy file contents (see
/// [`lazy`](crate::lazy)) are read first: an image holds every byte.
///
/// # Errors
/// [`ImageError::Content`] when a lazy content cannot be read (changed on the host
/// since the pull, or an I/O error).
///
/// # Panics
/// Only if a directory holds 2^32 entries or more, or a name, symlink target or the
/// cwd is 4 GiB long or more (which the tree cannot hold in practice).
pub fn to_bytes(vfs: &Vfs) -> Result<Vec<u8>, ImageError> {
    vfs.materialize_all()?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload_size(vfs));
    out.extend_from_slice(&[0; HEADER_LEN]);
    write_payload(vfs, &mut out)
        .expect("writing to a Vec cannot fail, and every lazy content was read above");
    let header = header(out.len() - HEADER_LEN, crc32fast::hash(&out[HEADER_LEN..]));
    out[..HEADER_LEN].copy_from_slice(&header);
    Ok(out)
}

/// The header for a payload of `payload_len` bytes with checksum `crc`.
fn header(payload_len: usize, crc: u32) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&0u32.to_le_bytes());
    header[16..24].copy_from_slice(&(payload_len as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Exact payload size (used to size the output buffer).
fn payload_size(vfs: &Vfs) -> usize {
    let mut size = 4 + vfs.cwd.len() + 8;
    let mut stack: Vec<(&str, &Node)> = vec![("", &vfs.root)];
    while let Some((name, node)) = stack.pop() {
        size += MIN_RECORD - 4 + name.len();
        size += match &node.data {
            NodeData::Dir(children) => {
                stack.extend(children.0.iter().map(|(n, c)| (n.as_str(), c)));
                4
            }
            NodeData::File(content) => 8 + usize::try_from(content.len()).unwrap_or(usize::MAX),
            NodeData::Symlink(target) => 4 + target.len(),
        };
    }
    size
}

/// Writes the payload (cwd, node count, nodes in pre-order) to `out`.
fn write_payload(vfs: &Vfs, out: &mut impl Write) -> io::Result<()> {
    put_bytes32(out, vfs.cwd.as_bytes())?;
    out.write_all(&(vfs.node_count() as u64).to_le_bytes())?;
    let mut stack: Vec<(&str, &Node)> = vec![("", &vfs.root)];
    while let Some((name, node)) = stack.pop() {
        let kind = match node.data {
            NodeData::Dir(_) => KIND_DIR,
            NodeData::File(_) => KIND_FILE,
            NodeData::Symlink(_) => KIND_SYMLINK,
        };
        // Fixed part of the record in one write.
        let mut fixed = [0u8; 1 + 4 + 8 + 4 + 4];
        fixed[0] = kind;
        fixed[1..5].copy_from_slice(&node.mode.to_le_bytes());
        let (secs, nanos) = encode_time(node.mtime);
        fixed[5..13].copy_from_slice(&secs.to_le_bytes());
        fixed[13..17].copy_from_slice(&nanos.to_le_bytes());
        fixed[17..21].copy_from_slice(&len32(name.len()).to_le_bytes());
        out.write_all(&fixed)?;
        out.write_all(name.as_bytes())?;
        match &node.data {
            NodeData::Dir(children) => {
                out.write_all(&len32(children.0.len()).to_le_bytes())?;
                stack.extend(
                    children
                        .0
                        .iter()
                        .rev()
                        .map(|(name, child)| (name.as_str(), child)),
                );
            }
            NodeData::File(content) => {
                // `to_bytes`/`save` read every lazy content before writing.
                let bytes = content.loaded().ok_or_else(|| {
                    io::Error::other("a lazy file content was not read before the image write")
                })?;
                out.write_all(&(bytes.len() as u64).to_le_bytes())?;
                out.write_all(bytes)?;
            }
            NodeData::Symlink(target) => put_bytes32(out, target.as_bytes())?,
        }
    }
    Ok(())
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("names, targets, the cwd and directories stay below 2^32")
}

fn put_bytes32(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&len32(bytes.len()).to_le_bytes())?;
    out.write_all(bytes)
}

fn encode_time(time: SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() == 0 {
                (-secs, 0)
            } else {
                (-secs - 1, 1_000_000_000 - before.subsec_nanos())
            }
        }
    }
}

fn decode_time(secs: i64, nanos: u32) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Checksums and counts what passes through to the file (below the buffer, so the
/// checksum runs over large chunks).
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: usize,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.len += written;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Saves `vfs` to `path` atomically: the image is streamed into a temporary file in the
/// same directory, its header written last, the file fsynced, then renamed over `path`
/// and the directory fsynced.
///
/// # Errors
/// [`ImageError::InvalidPath`] when `path` has no file name, [`ImageError::Io`] naming
/// the file that failed, [`ImageError::Content`] when a lazy file content (see
/// [`lazy`](crate::lazy)) cannot be read. On error the destination is unchanged and the
/// temp file removed.
///
/// # Panics
/// As [`to_bytes`].
pub fn save(vfs: &Vfs, path: &Path) -> Result<(), ImageError> {
    let Some(file_name) = path.file_name() else {
        return Err(ImageError::InvalidPath {
            path: path.to_path_buf(),
        });
    };
    // Every byte goes into the image: read lazy contents before creating anything.
    vfs.materialize_all()?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp.{}.{nanos}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temp)
        .map_err(|source| ImageError::Io {
            path: temp.clone(),
            source,
        })?;
    let written = write_file(vfs, file).map_err(|source| ImageError::Io {
        path: temp.clone(),
        source,
    });
    let renamed = written.and_then(|()| {
        fs::rename(&temp, path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if let Err(err) = renamed {
        // Best effort: the temp file is ours; the destination was never touched.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    // Make the rename durable. Some filesystems refuse to fsync a directory; the image
    // itself is complete and synced either way.
    if let Ok(dir_handle) = File::open(&dir) {
        match dir_handle.sync_all() {
            Err(err) if err.kind() != io::ErrorKind::InvalidInput => {
                return Err(ImageError::Io {
                    path: dir,
                    source: err,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Streams the image into `file` (header last) and fsyncs it.
fn write_file(vfs: &Vfs, mut file: File) -> io::Result<()> {
    file.write_all(&[0; HEADER_LEN])?;
    let mut buffered = BufWriter::with_capacity(
        1 << 20,
        CrcWriter {
            inner: file,
            hasher: crc32fast::Hasher::new(),
            len: 0,
        },
    );
    write_payload(vfs, &mut buffered)?;
    let crc_writer = buffered
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    let mut file = crc_writer.inner;
    let header = header(crc_writer.len, crc_writer.hasher.finalize());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_all()
}

// ---------------------------------------------------------------------------------------
// Reading

/// Loads an image file. The file is only read; it is streamed through a 1 MiB buffer
/// (no whole-file copy), every length is checked against the file size before anything
/// is allocated, and the checksum is verified before the tree is returned.
///
/// # Errors
/// [`ImageError::Io`] when it cannot be read, [`ImageError::Invalid`] (naming the file
/// and wrapping the format error) when its content is not a valid image.
///
/// # Panics
/// Never on any input (the `expect`s inside guard internal invariants only).
pub fn load(path: &Path) -> Result<Vfs, ImageError> {
    let io_error = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let total = file.metadata().map_err(io_error)?.len();
    let mut header = [0u8; HEADER_LEN];
    let header_len = read_up_to(&mut file, &mut header).map_err(io_error)?;
    let invalid = |err| ImageError::Invalid {
        path: path.to_path_buf(),
        source: Box::new(err),
    };
    let stored = check_header(&header[..header_len], total).map_err(invalid)?;
    let mut input = StreamInput {
        file,
        buf: vec![0; STREAM_BUFFER],
        start: 0,
        end: 0,
        hashed: 0,
        pos: HEADER_LEN,
        total: usize::try_from(total)
            .map_err(|_| invalid(corrupt(16, "image larger than memory")))?,
        hasher: crc32fast::Hasher::new(),
        error: None,
    };
    let parsed = parse_payload(&mut input);
    if let Some(source) = input.error.take() {
        return Err(io_error(source));
    }
    // Hash whatever the parser did not consume, so corruption is reported as such.
    let computed = input.finish_hash().map_err(io_error)?;
    if computed != stored {
        return Err(invalid(ImageError::ChecksumMismatch { stored, computed }));
    }
    parsed.map_err(invalid)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Parses image bytes into a tree (generation 0, empty history).
///
/// # Errors
/// A format error ([`ImageError::BadMagic`], [`ImageError::UnsupportedVersion`],
/// [`ImageError::Truncated`], [`ImageError::ChecksumMismatch`], [`ImageError::Corrupt`]);
/// never allocates more than the input justifies.
///
/// # Panics
/// Never on any input (the `expect`s inside guard internal invariants only).
pub fn from_bytes(bytes: &[u8]) -> Result<Vfs, ImageError> {
    let stored = check_header(bytes, bytes.len() as u64)?;
    let computed = crc32fast::hash(&bytes[HEADER_LEN..]);
    if stored != computed {
        return Err(ImageError::ChecksumMismatch { stored, computed });
    }
    parse_payload(&mut SliceInput {
        bytes,
        pos: HEADER_LEN,
    })
}

/// Checks magic, version, flags, reserved field and that the payload length matches
/// `total` (the whole input's size); returns the stored checksum. `bytes` holds at
/// least the header when the input is long enough.
fn check_header(bytes: &[u8], total: u64) -> Result<u32, ImageError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(ImageError::BadMagic);
    }
    let mut header = SliceInput {
        bytes: &bytes[..bytes.len().min(HEADER_LEN)],
        pos: MAGIC.len(),
    };
    let version = header.u32()?;
    if version != VERSION {
        return Err(ImageError::UnsupportedVersion { version });
    }
    let flags = header.u32()?;
    if flags != 0 {
        return Err(corrupt(12, format!("unknown flags {flags:#x}")));
    }
    let payload_len = header.u64()?;
    let stored = header.u32()?;
    let reserved = header.u32()?;
    if reserved != 0 {
        return Err(corrupt(28, "reserved header field is not zero"));
    }
    let actual = total
        .checked_sub(HEADER_LEN as u64)
        .ok_or_else(|| corrupt(0, "input shorter than the header"))?;
    if payload_len != actual {
        return Err(corrupt(
            16,
            format!("header announces {payload_len} payload bytes, the input has {actual}"),
        ));
    }
    Ok(stored)
}

/// Where the parser reads from: bounds-checked, little-endian.
trait Input {
    /// Offset of the next byte in the whole image.
    fn pos(&self) -> usize;
    /// Bytes left in the image.
    fn remaining(&self) -> usize;
    /// Hands the next `len` bytes to `f`; `len` is checked against the remaining input
    /// before anything is read or allocated.
    fn with<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, ImageError>;

    fn truncated(&self, len: usize) -> ImageError {
        ImageError::Truncated {
            offset: self.pos() as u64,
            needed: len as u64,
            available: self.remaining() as u64,
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        self.with(N, |bytes| {
            bytes.try_into().expect("`with` hands over exactly N bytes")
        })
    }

    fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, ImageError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed UTF-8 string.
    fn utf8(&mut self, what: &str) -> Result<String, ImageError> {
        let len = self.u32()? as usize;
        let at = self.pos();
        self.with(len, |bytes| std::str::from_utf8(bytes).map(str::to_owned))?
            .map_err(|_| corrupt(at, format!("{what} is not UTF-8")))
    }

    /// File content of `len` bytes.
    fn content(&mut self, len: u64) -> Result<Content, ImageError> {
        let at = self.pos();
        let len = usize::try_from(len).map_err(|_| corrupt(at, "length does not fit in memory"))?;
        self.with(len, |bytes| Content::from(bytes))
    }
}

/// Input from a byte slice.
struct SliceInput<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Input for SliceInput<'_> {
    fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn with<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, ImageError> {
        if len > self.remaining() {
            return Err(self.truncated(len));
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(f(slice))
    }
}

/// Read buffer of [`StreamInput`].
const STREAM_BUFFER: usize = 1 << 20;

/// Input streamed from a file of known size, checksummed in large chunks as it is consumed.
struct StreamInput {
    file: File,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[..hashed]` has gone through the hasher.
    hashed: usize,
    pos: usize,
    total: usize,
    hasher: crc32fast::Hasher,
    /// The first I/O error (reported as such by `load`, not as a format error).
    error: Option<io::Error>,
}

impl StreamInput {
    /// Moves the unconsumed bytes to the front (hashing what was consumed) and reads
    /// until `len` bytes are buffered. `len` must fit in the buffer.
    fn fill(&mut self, len: usize) -> Result<(), ImageError> {
        self.hasher.update(&self.buf[self.hashed..self.start]);
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.hashed = 0;
        while self.end < len {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err(self.truncated(len)),
                Ok(n) => self.end += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    let truncated = self.truncated(len);
                    self.error = Some(err);
                    return Err(truncated);
                }
            }
        }
        Ok(())
    }

    /// Hashes the rest of the file (consumed or not) and returns the checksum.
    fn finish_hash(mut self) -> io::Result<u32> {
        self.hasher.update(&self.buf[self.hashed..self.end]);
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => return Ok(self.hasher.finalize()),
                Ok(n) => self.hasher.update(&self.buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
}

impl Input for StreamInput {
    fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.total.saturating_sub(self.pos)
    }

    fn with<R>(&mut self, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R, ImageError> {
        if len > self.remaining() {
            return Err(self.truncated(len));
        }
        if len > self.buf.len() {
            // Large content: read it straight into its own allocation (bounded above).
            let mut owned = Vec::with_capacity(len);
            self.hasher.update(&self.buf[self.hashed..self.start]);
            owned.extend_from_slice(&self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
            self.hashed = 0;
            let want = (len - owned.len()) as u64;
            match (&mut self.file).take(want).read_to_end(&mut owned) {
                Ok(_) if owned.len() == len => {}
                Ok(_) => return Err(self.truncated(len)),
                Err(err) => {
                    let truncated = self.truncated(len);
                    self.error = Some(err);
                    return Err(truncated);
                }
            }
            self.hasher.update(&owned);
            self.pos += len;
            return Ok(f(&owned));
        }
        if self.end - self.start < len {
            self.fill(len)?;
        }
        let value = f(&self.buf[self.start..self.start + len]);
        self.start += len;
        self.pos += len;
        Ok(value)
    }
}

/// One node record (before its children are read).
struct Record {
    offset: usize,
    name: String,
    mode: u32,
    mtime: SystemTime,
    body: Body,
}

enum Body {
    Dir(u32),
    File(Content),
    Symlink(String),
}

fn read_record(input: &mut impl Input) -> Result<Record, ImageError> {
    let offset = input.pos();
    let kind = input.u8()?;
    let mode = input.u32()?;
    if mode & !0o7777 != 0 {
        return Err(corrupt(
            offset,
            format!("mode {mode:#o} has bits outside 0o7777"),
        ));
    }
    let secs = input.i64()?;
    let nanos = input.u32()?;
    let mtime = decode_time(secs, nanos).ok_or_else(|| corrupt(offset, "mtime out of range"))?;
    let name = input.utf8("a name")?;
    let body = match kind {
        KIND_DIR => Body::Dir(input.u32()?),
        KIND_FILE => {
            let len = input.u64()?;
            Body::File(input.content(len)?)
        }
        KIND_SYMLINK => {
            let target = input.utf8("a symlink target")?;
            if target.is_empty() || target.contains('\0') {
                return Err(corrupt(offset, "symlink target empty or containing NUL"));
            }
            Body::Symlink(target)
        }
        other => return Err(corrupt(offset, format!("unknown node kind {other}"))),
    };
    Ok(Record {
        offset,
        name,
        mode,
        mtime,
        body,
    })
}

/// A directory being filled while loading.
struct Frame {
    name: String,
    mode: u32,
    mtime: SystemTime,
    children: BTreeMap<String, Node>,
    remaining: u32,
}

impl Frame {
    fn into_node(self) -> Node {
        Node::with_data(
            NodeData::Dir(Children(std::sync::Arc::new(self.children))),
            self.mode,
            self.mtime,
            0,
        )
    }
}

/// Parses the payload: cwd, node count, tree; checks that nothing trails and that the
/// cwd names a directory.
fn parse_payload(input: &mut impl Input) -> Result<Vfs, ImageError> {
    let cwd_at = input.pos();
    let cwd = input.utf8("the cwd")?;
    let root_node = read_tree(input)?;
    if input.remaining() != 0 {
        return Err(corrupt(input.pos(), "trailing bytes after the tree"));
    }
    let mut vfs = Vfs::from_root(root_node, "/".to_owned());
    if !cwd.starts_with('/') || vfs.normalize(&cwd).ok().as_deref() != Some(cwd.as_str()) {
        return Err(corrupt(
            cwd_at,
            format!("cwd {cwd:?} is not a canonical absolute path"),
        ));
    }
    vfs.set_cwd(&cwd).map_err(|err| {
        corrupt(
            cwd_at,
            format!("cwd {cwd:?} is not a directory of the tree: {err}"),
        )
    })?;
    Ok(vfs)
}

/// Reads the node count and the nodes (iteratively, depth-bounded).
fn read_tree(input: &mut impl Input) -> Result<Node, ImageError> {
    let count_at = input.pos();
    let declared = input.u64()?;
    if declared == 0 || declared > (input.remaining() / MIN_RECORD) as u64 {
        return Err(corrupt(
            count_at,
            format!("node count {declared} impossible for the input size"),
        ));
    }

    let root = read_record(input)?;
    let Body::Dir(root_children) = root.body else {
        return Err(corrupt(root.offset, "the root is not a directory"));
    };
    if !root.name.is_empty() {
        return Err(corrupt(root.offset, "the root has a name"));
    }
    let mut read: u64 = 1;
    let mut stack = vec![Frame {
        name: String::new(),
        mode: root.mode,
        mtime: root.mtime,
        children: BTreeMap::new(),
        remaining: root_children,
    }];
    let root_node = loop {
        let depth = stack.len();
        let top = stack
            .last_mut()
            .expect("the stack holds at least the root until it is done");
        if top.remaining == 0 {
            let mut done = stack.pop().expect("checked non-empty");
            let name = std::mem::take(&mut done.name);
            let node = done.into_node();
            match stack.last_mut() {
                None => break node,
                Some(parent) => {
                    parent.children.insert(name, node);
                    continue;
                }
            }
        }
        top.remaining -= 1;
        let record = read_record(input)?;
        read += 1;
        if depth > MAX_DEPTH {
            return Err(corrupt(
                record.offset,
                format!("tree deeper than {MAX_DEPTH}"),
            ));
        }
        if read > declared {
            return Err(corrupt(record.offset, "more nodes than the declared count"));
        }
        check_name(&record.name).map_err(|reason| {
            corrupt(record.offset, format!("name {:?}: {reason}", record.name))
        })?;
        if top
            .children
            .last_key_value()
            .is_some_and(|(last, _)| *last >= record.name)
        {
            return Err(corrupt(
                record.offset,
                format!("name {:?} out of order or duplicated", record.name),
            ));
        }
        let leaf = match record.body {
            Body::Dir(remaining) => {
                stack.push(Frame {
                    name: record.name,
                    mode: record.mode,
                    mtime: record.mtime,
                    children: BTreeMap::new(),
                    remaining,
                });
                continue;
            }
            Body::File(content) => NodeData::File(FileData::Loaded(content)),
            Body::Symlink(target) => NodeData::Symlink(target),
        };
        top.children.insert(
            record.name,
            Node::with_data(leaf, record.mode, record.mtime, 0),
        );
    };
    if read != declared {
        return Err(corrupt(
            count_at,
            format!("declared {declared} nodes, found {read}"),
        ));
    }
    Ok(root_node)
}
