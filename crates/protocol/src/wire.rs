//! `wire-sync`: Mode S over the connection itself (no shared file system).
//!
//! The JSON messages ([`WireStart`], [`WirePush`], ...) travel as ordinary lines. File
//! contents travel as **bulk frames** (see [`write_blob`] and
//! [`LineReader::read_blob`](crate::LineReader::read_blob)): a 6-byte header — the marker
//! byte [`BULK_MARKER`] (`0xFF`, which never occurs in UTF-8 and therefore never starts
//! a JSON line), a type byte ([`FRAME_DATA`] or [`FRAME_LAST`]) and a big-endian `u32`
//! payload length of at most [`MAX_CHUNK`] — followed by the payload. Bulk frames only
//! ever follow a JSON header (`wire_blobs`, `wire_changes`) that lists the blobs, in
//! order, with their BLAKE3 digest and size, so a receiver always knows whether the next
//! byte starts a line or a frame. The full specification is `docs/arch/wire-sync.md`.
//!
//! [`Manifest`] is the shared model of a synced tree (relative path → [`WireEntry`]) and
//! [`Manifest::tree_digest`] the digest both sides compare after every exchange.
//!
//! ```
//! use devshell_vm_protocol::{BlobRef, LineReader, Manifest, WireEntry, WireKind, digest_hex, write_blob};
//!
//! let data = b"fn main() {}\n";
//! let blob = BlobRef { digest: digest_hex(data), size: data.len() as u64 };
//! let mut wire = Vec::new();
//! write_blob(&mut wire, data)?;
//! let mut reader = LineReader::new(&wire[..]);
//! assert_eq!(reader.read_blob(&blob, 1 << 20)?, data);
//!
//! let mut manifest = Manifest::default();
//! manifest.upsert(WireEntry::file("src/main.rs", 0o644, 0, data.len() as u64, blob.digest.clone()));
//! assert_eq!(manifest.tree_digest().len(), 64);
//! # Ok::<(), devshell_vm_protocol::ProtocolError>(())
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::codec::LineReader;
use crate::error::ProtocolError;

/// First byte of every bulk frame. `0xFF` is not valid anywhere in UTF-8, so a bulk frame
/// can never be mistaken for (or begin) a JSON line, and a line reader that meets one
/// reports a non-UTF-8 line instead of misparsing it.
pub const BULK_MARKER: u8 = 0xFF;
/// Frame type: a chunk of the current blob; more frames of the same blob follow.
pub const FRAME_DATA: u8 = 0x01;
/// Frame type: the final chunk of the current blob (possibly empty).
pub const FRAME_LAST: u8 = 0x02;
/// Largest payload of one bulk frame (1 MiB).
pub const MAX_CHUNK: usize = 1 << 20;
/// Bytes of a bulk frame header: marker, type, `u32` big-endian length.
pub const FRAME_HEADER_LEN: usize = 6;

/// The BLAKE3 digest of `data` as 64 lowercase hex digits.
#[must_use]
pub fn digest_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// `true` when `text` is 64 lowercase hex digits (the only digest spelling on the wire).
#[must_use]
pub fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `data` as one blob: `DATA` frames of [`MAX_CHUNK`] bytes, then one `LAST`
/// frame with the remainder (an empty blob is a single empty `LAST` frame). Does not
/// flush.
///
/// # Errors
/// [`ProtocolError::Io`] when the transport fails.
pub fn write_blob<W: Write + ?Sized>(writer: &mut W, data: &[u8]) -> Result<(), ProtocolError> {
    let mut rest = data;
    loop {
        let take = rest.len().min(MAX_CHUNK);
        let last = take == rest.len();
        let (chunk, tail) = rest.split_at(take);
        write_blob_piece(writer, chunk, last)?;
        if last {
            return Ok(());
        }
        rest = tail;
    }
}

/// Writes one bulk frame of a blob that the caller produces piece by piece (read from a
/// file as it goes): `last` marks the blob's final frame. The caller writes exactly the
/// announced size over all pieces, ends with `last` (an empty blob: one empty last
/// piece), and keeps every piece within [`MAX_CHUNK`] (a longer one is an error, nothing
/// written).
///
/// # Errors
/// [`ProtocolError::BulkFrame`] for a piece over [`MAX_CHUNK`], [`ProtocolError::Io`]
/// when writing fails.
pub fn write_blob_piece<W: Write + ?Sized>(
    writer: &mut W,
    chunk: &[u8],
    last: bool,
) -> Result<(), ProtocolError> {
    if chunk.len() > MAX_CHUNK {
        return Err(ProtocolError::BulkFrame {
            message: format!(
                "bulk frame of {} bytes exceeds the limit of {MAX_CHUNK}",
                chunk.len()
            ),
        });
    }
    let io = |source| ProtocolError::Io {
        context: "writing a bulk frame",
        source,
    };
    let len = u32::try_from(chunk.len()).map_err(|_| {
        io(io::Error::other(
            "bulk chunk longer than u32 (cannot happen)",
        ))
    })?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[0] = BULK_MARKER;
    header[1] = if last { FRAME_LAST } else { FRAME_DATA };
    header[2..].copy_from_slice(&len.to_be_bytes());
    writer.write_all(&header).map_err(io)?;
    writer.write_all(chunk).map_err(io)
}

/// Checks that `data` hashes (BLAKE3) to `blob.digest`.
///
/// # Errors
/// [`ProtocolError::BlobDigest`] with both digests.
pub fn verify_blob(blob: &BlobRef, data: &[u8]) -> Result<(), ProtocolError> {
    let actual = blake3::hash(data);
    if actual.to_hex().as_str() != blob.digest {
        return Err(ProtocolError::BlobDigest {
            expected: blob.digest.clone(),
            actual: actual.to_hex().to_string(),
        });
    }
    Ok(())
}

impl<R: Read> LineReader<R> {
    /// Reads the bulk frames of one blob announced as `blob`, checks that their lengths
    /// add up to `blob.size` and that the bytes hash to `blob.digest`, and returns them.
    ///
    /// `max_size` bounds what the caller accepts (checked before anything is read).
    ///
    /// # Errors
    /// [`ProtocolError::BulkFrame`] for a bad marker, type or length (the stream cannot
    /// be resynchronised: drop the connection), [`ProtocolError::BlobDigest`] when the
    /// bytes do not match the digest, [`ProtocolError::Io`] when the transport fails.
    pub fn read_blob(&mut self, blob: &BlobRef, max_size: u64) -> Result<Vec<u8>, ProtocolError> {
        let data = self.read_blob_unverified(blob, max_size)?;
        verify_blob(blob, &data)?;
        Ok(data)
    }

    /// [`LineReader::read_blob`] without the digest check: every framing and length rule
    /// is enforced, but the caller must still call [`verify_blob`] on the bytes before
    /// using them (the sidecar does so on another thread while it reads the next blob).
    ///
    /// # Errors
    /// As [`LineReader::read_blob`], except [`ProtocolError::BlobDigest`].
    pub fn read_blob_unverified(
        &mut self,
        blob: &BlobRef,
        max_size: u64,
    ) -> Result<Vec<u8>, ProtocolError> {
        check_announced(blob, max_size)?;
        self.read_vec(blob)
    }

    /// Reads the frames of an announced (already checked) blob into a growing buffer
    /// (at most [`PREALLOCATE_MAX`] allocated before the bytes arrive).
    fn read_vec(&mut self, blob: &BlobRef) -> Result<Vec<u8>, ProtocolError> {
        let capacity = usize::try_from(blob.size)
            .unwrap_or(usize::MAX)
            .min(PREALLOCATE_MAX);
        let mut data = Vec::with_capacity(capacity);
        self.read_frames(blob, &mut data)?;
        Ok(data)
    }

    /// [`LineReader::read_blob_unverified`] into shared memory: a blob of at most 64 MiB
    /// is read straight into its final `Arc<[u8]>` (no copy from a growing buffer); a
    /// larger one is read as a `Vec` and copied in. The caller must
    /// still call [`verify_blob`].
    ///
    /// # Errors
    /// As [`LineReader::read_blob_unverified`].
    pub fn read_blob_shared_unverified(
        &mut self,
        blob: &BlobRef,
        max_size: u64,
    ) -> Result<std::sync::Arc<[u8]>, ProtocolError> {
        check_announced(blob, max_size)?;
        self.read_shared(blob)
    }

    /// [`LineReader::read_blob_shared_unverified`] for a blob that may be announced
    /// without a digest (an empty `digest`: a streamed `wire_push` without digests,
    /// whose reader hashes what arrives). Its size is checked as for any blob.
    ///
    /// # Errors
    /// As [`LineReader::read_blob_unverified`].
    pub fn read_blob_shared_undigested(
        &mut self,
        blob: &BlobRef,
        max_size: u64,
    ) -> Result<std::sync::Arc<[u8]>, ProtocolError> {
        if blob.digest.is_empty() {
            check_size(blob, max_size)?;
        } else {
            check_announced(blob, max_size)?;
        }
        self.read_shared(blob)
    }

    /// Reads the frames of an announced (already checked) blob into shared memory.
    fn read_shared(&mut self, blob: &BlobRef) -> Result<std::sync::Arc<[u8]>, ProtocolError> {
        let size = usize::try_from(blob.size).unwrap_or(usize::MAX);
        if size > PREALLOCATE_MAX {
            return self.read_vec(blob).map(Into::into);
        }
        // Allocated once, in place (a trusted-length iterator), then filled by the reads.
        let mut data: std::sync::Arc<[u8]> = std::iter::repeat_n(0u8, size).collect();
        let Some(buf) = std::sync::Arc::get_mut(&mut data) else {
            return Err(ProtocolError::BulkFrame {
                message: "a fresh blob buffer was shared (cannot happen)".to_owned(),
            });
        };
        let mut sink = Filled { buf, filled: 0 };
        self.read_frames(blob, &mut sink)?;
        Ok(data)
    }

    /// Reads the frames of one blob into `sink`, enforcing every framing rule.
    fn read_frames(
        &mut self,
        blob: &BlobRef,
        sink: &mut dyn FrameSink,
    ) -> Result<(), ProtocolError> {
        loop {
            let mut header = [0u8; FRAME_HEADER_LEN];
            self.read_exact_raw(&mut header)?;
            if header[0] != BULK_MARKER {
                return Err(ProtocolError::BulkFrame {
                    message: format!(
                        "expected a bulk frame (0xFF) for blob {}, found byte {:#04x}",
                        blob.digest, header[0]
                    ),
                });
            }
            let kind = header[1];
            if kind != FRAME_DATA && kind != FRAME_LAST {
                return Err(ProtocolError::BulkFrame {
                    message: format!("unknown bulk frame type {kind:#04x}"),
                });
            }
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            if len > MAX_CHUNK {
                return Err(ProtocolError::BulkFrame {
                    message: format!("bulk frame of {len} bytes exceeds the limit of {MAX_CHUNK}"),
                });
            }
            let have = sink.filled() as u64;
            if have + len as u64 > blob.size {
                return Err(ProtocolError::BulkFrame {
                    message: format!(
                        "blob {} is longer than its announced {} bytes",
                        blob.digest, blob.size
                    ),
                });
            }
            self.read_exact_raw(sink.next(len))?;
            if kind == FRAME_LAST {
                break;
            }
        }
        if sink.filled() as u64 != blob.size {
            return Err(ProtocolError::BulkFrame {
                message: format!(
                    "blob {} ended after {} of its announced {} bytes",
                    blob.digest,
                    sink.filled(),
                    blob.size
                ),
            });
        }
        Ok(())
    }

    fn read_exact_raw(&mut self, buf: &mut [u8]) -> Result<(), ProtocolError> {
        let mut filled = 0;
        while filled < buf.len() {
            // `BufReader::read` copies what it holds and, once empty, reads a large
            // request straight into `buf` (no second copy through its buffer).
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(ProtocolError::Io {
                        context: "reading a bulk frame",
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection inside a bulk frame",
                        ),
                    });
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ProtocolError::Io {
                        context: "reading a bulk frame",
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

/// A blob read by [`read_blobs_hashed`]: its index in the list read, its bytes, and the
/// digest of its bytes (64 lowercase hex digits).
pub type HashedBlob = (usize, std::sync::Arc<[u8]>, String);

/// Reads the bulk frames of `blobs` in order and hashes them on a second thread while
/// the next ones are read (hashing is most of the receiving work; on a loopback or fast
/// link it would otherwise stall the socket). A blob announced with a digest must match
/// it ([`ProtocolError::BlobDigest`]); with `undigested`, a blob announced with an empty
/// digest (a streamed push without digests) is taken and gets the digest of its bytes.
/// `before_each` runs on this thread before each blob is read (a transport deadline);
/// `on_hashed` sees the blobs, in order and in batches, on the hashing thread. The first
/// framing error or mismatch is the error; frames after a mismatch are not read.
///
/// # Errors
/// As [`LineReader::read_blob`].
pub fn read_blobs_hashed<R: Read>(
    reader: &mut LineReader<R>,
    blobs: &[BlobRef],
    max_size: u64,
    undigested: bool,
    mut before_each: impl FnMut(&mut LineReader<R>),
    mut on_hashed: impl FnMut(Vec<HashedBlob>) + Send,
) -> Result<(), ProtocolError> {
    /// Blobs handed to the hashing thread at once (fewer wake-ups for many small files).
    const BATCH_BYTES: u64 = 1 << 20;
    const BATCH_BLOBS: usize = 256;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(usize, std::sync::Arc<[u8]>)>>(8);
        let hasher = scope.spawn(move || -> Result<(), ProtocolError> {
            for batch in rx {
                let mut done = Vec::with_capacity(batch.len());
                for (index, data) in batch {
                    let expected = &blobs[index].digest;
                    let actual = blake3::hash(&data).to_hex();
                    if !expected.is_empty() && actual.as_str() != expected {
                        return Err(ProtocolError::BlobDigest {
                            expected: expected.clone(),
                            actual: actual.to_string(),
                        });
                    }
                    done.push((index, data, actual.to_string()));
                }
                on_hashed(done);
            }
            Ok(())
        });
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut read_error = None;
        for (index, blob) in blobs.iter().enumerate() {
            before_each(reader);
            let read = if undigested {
                reader.read_blob_shared_undigested(blob, max_size)
            } else {
                reader.read_blob_shared_unverified(blob, max_size)
            };
            let data = match read {
                Ok(data) => data,
                Err(err) => {
                    read_error = Some(err);
                    break;
                }
            };
            batch_bytes += blob.size;
            batch.push((index, data));
            if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_BLOBS {
                batch_bytes = 0;
                // A closed channel: the hashing thread stopped at a mismatch.
                if tx.send(std::mem::take(&mut batch)).is_err() {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        drop(tx);
        let checked = hasher.join().unwrap_or_else(|_| {
            Err(ProtocolError::BulkFrame {
                message: "the digest verifier panicked".to_owned(),
            })
        });
        match (checked, read_error) {
            (Err(err), _) | (Ok(()), Some(err)) => Err(err),
            (Ok(()), None) => Ok(()),
        }
    })
}

/// Largest blob buffer allocated from an announced size before its bytes arrive.
const PREALLOCATE_MAX: usize = 64 << 20;

/// Checks an announced blob's digest spelling and size before anything is read.
fn check_announced(blob: &BlobRef, max_size: u64) -> Result<(), ProtocolError> {
    if !is_digest_hex(&blob.digest) {
        return Err(ProtocolError::BulkFrame {
            message: format!(
                "announced digest {:?} is not 64 lowercase hex digits",
                blob.digest
            ),
        });
    }
    check_size(blob, max_size)
}

/// Checks an announced blob's size against what the caller accepts.
fn check_size(blob: &BlobRef, max_size: u64) -> Result<(), ProtocolError> {
    if blob.size > max_size {
        return Err(ProtocolError::BulkFrame {
            message: format!(
                "blob {} announced with {} bytes, over the limit of {max_size}",
                blob.digest, blob.size
            ),
        });
    }
    Ok(())
}

/// Where the payloads of one blob's frames go.
trait FrameSink {
    /// Bytes received so far.
    fn filled(&self) -> usize;
    /// The next `len` bytes to fill (the caller checked them against the blob's size).
    fn next(&mut self, len: usize) -> &mut [u8];
}

impl FrameSink for Vec<u8> {
    fn filled(&self) -> usize {
        self.len()
    }

    fn next(&mut self, len: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + len, 0);
        &mut self[start..]
    }
}

/// A buffer of exactly the blob's announced size.
struct Filled<'a> {
    buf: &'a mut [u8],
    filled: usize,
}

impl FrameSink for Filled<'_> {
    fn filled(&self) -> usize {
        self.filled
    }

    fn next(&mut self, len: usize) -> &mut [u8] {
        let start = self.filled;
        self.filled += len;
        &mut self.buf[start..start + len]
    }
}

// ---------------------------------------------------------------- tree model

/// Kind of a [`WireEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireKind {
    /// A directory.
    Dir,
    /// A regular file (content by `digest`).
    File,
    /// A symbolic link (`target`).
    Symlink,
}

impl WireKind {
    fn tag(self) -> u8 {
        match self {
            Self::Dir => b'd',
            Self::File => b'f',
            Self::Symlink => b'l',
        }
    }
}

/// One node of a synced tree, named by its path relative to the project root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// `/`-separated relative path; each component non-empty, not `.` or `..`, no NUL.
    pub path: String,
    /// Directory, file or symlink.
    pub kind: WireKind,
    /// Permission bits (`& 0o7777`; symlinks `0o777`).
    pub mode: u32,
    /// Modification time in nanoseconds since the Unix epoch (negative before 1970).
    pub mtime_ns: i64,
    /// Bytes of a file, of a symlink's target; 0 for a directory.
    pub size: u64,
    /// Files: BLAKE3 of the content, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Symlinks: the target text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl WireEntry {
    /// A file entry.
    #[must_use]
    pub fn file(path: &str, mode: u32, mtime_ns: i64, size: u64, digest: String) -> Self {
        Self {
            path: path.to_owned(),
            kind: WireKind::File,
            mode: mode & 0o7777,
            mtime_ns,
            size,
            digest: Some(digest),
            target: None,
        }
    }

    /// A directory entry.
    #[must_use]
    pub fn dir(path: &str, mode: u32, mtime_ns: i64) -> Self {
        Self {
            path: path.to_owned(),
            kind: WireKind::Dir,
            mode: mode & 0o7777,
            mtime_ns,
            size: 0,
            digest: None,
            target: None,
        }
    }

    /// A symlink entry.
    #[must_use]
    pub fn symlink(path: &str, mtime_ns: i64, target: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: WireKind::Symlink,
            mode: 0o777,
            mtime_ns,
            size: target.len() as u64,
            digest: None,
            target: Some(target.to_owned()),
        }
    }

    /// Checks the path and the kind-specific fields (a digest for files, a non-empty
    /// NUL-free target for symlinks).
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn validate(&self) -> Result<(), String> {
        check_relative_path(&self.path)?;
        match self.kind {
            WireKind::File => match &self.digest {
                Some(d) if is_digest_hex(d) => Ok(()),
                _ => Err(format!("file {:?} has no valid digest", self.path)),
            },
            WireKind::Symlink => match &self.target {
                Some(t) if !t.is_empty() && !t.contains('\0') => Ok(()),
                _ => Err(format!("symlink {:?} has no valid target", self.path)),
            },
            WireKind::Dir => Ok(()),
        }
    }
}

impl WireEntry {
    /// As [`WireEntry::validate`], except that a file may come without its digest: in a
    /// streamed push without digests (`wire-sync-stream`) the sidecar computes them from
    /// the blobs.
    ///
    /// # Errors
    /// A description of the first problem.
    pub fn validate_streamed(&self) -> Result<(), String> {
        if self.kind == WireKind::File && self.digest.is_none() {
            return check_relative_path(&self.path);
        }
        self.validate()
    }
}

/// Checks a relative wire path: non-empty, `/`-separated, every component non-empty and
/// neither `.` nor `..`, no NUL, no leading or trailing `/`.
///
/// # Errors
/// A description naming the path.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".to_owned());
    }
    if path.contains('\0') {
        return Err(format!("path {path:?} contains NUL"));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "path {path:?} has an empty, `.` or `..` component (or a leading or trailing `/`)"
            ));
        }
    }
    Ok(())
}

/// A synced tree: relative path → entry, sorted by the path's bytes.
///
/// The sum of file sizes is kept up to date on every change and the tree digest is
/// computed once per state (cached until the next change), so asking for either on an
/// unchanged manifest — every no-op round trip does — costs O(1), not O(entries).
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    entries: BTreeMap<String, WireEntry>,
    /// Sum of the sizes of the file entries.
    file_bytes: u64,
    /// The tree digest of `entries`, once computed (reset by every change).
    digest: std::sync::OnceLock<String>,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Manifest {}

fn file_size(entry: &WireEntry) -> u64 {
    if entry.kind == WireKind::File {
        entry.size
    } else {
        0
    }
}

impl Manifest {
    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` without entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&WireEntry> {
        self.entries.get(path)
    }

    /// Every entry in path order.
    pub fn iter(&self) -> impl Iterator<Item = &WireEntry> {
        self.entries.values()
    }

    /// Inserts or replaces the entry at its path. A non-directory replacing a directory
    /// drops the directory's subtree.
    pub fn upsert(&mut self, entry: WireEntry) {
        if entry.kind != WireKind::Dir
            && self
                .entries
                .get(&entry.path)
                .is_some_and(|old| old.kind == WireKind::Dir)
        {
            self.remove_subtree(&entry.path);
        }
        self.digest = std::sync::OnceLock::new();
        self.file_bytes = self.file_bytes.saturating_add(file_size(&entry));
        if let Some(old) = self.entries.insert(entry.path.clone(), entry) {
            self.file_bytes = self.file_bytes.saturating_sub(file_size(&old));
        }
    }

    /// Removes `path` and everything below it; returns how many entries went.
    pub fn remove_subtree(&mut self, path: &str) -> usize {
        let mut gone = 0;
        if let Some(old) = self.entries.remove(path) {
            gone += 1;
            self.file_bytes = self.file_bytes.saturating_sub(file_size(&old));
        }
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            if let Some(old) = self.entries.remove(&p) {
                self.file_bytes = self.file_bytes.saturating_sub(file_size(&old));
            }
            gone += 1;
        }
        if gone > 0 {
            self.digest = std::sync::OnceLock::new();
        }
        gone
    }

    /// Sum of file sizes (kept up to date by every change: O(1)).
    #[must_use]
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// The tree digest (64 hex digits): BLAKE3 over every entry in path order, each
    /// encoded as `path` bytes, `0x00`, kind tag (`d`, `f`, `l`), `mode` (`u32` LE),
    /// `mtime_ns` (`i64` LE), `size` (`u64` LE), then for a file the 32 raw digest bytes
    /// and for a symlink the target bytes followed by `0x00`. The empty tree hashes no
    /// bytes.
    ///
    /// Computed once per state of the manifest: asking again before the next change
    /// returns the cached value.
    #[must_use]
    pub fn tree_digest(&self) -> String {
        self.digest
            .get_or_init(|| self.compute_tree_digest())
            .clone()
    }

    fn compute_tree_digest(&self) -> String {
        /// The serialisation is hashed in pieces this large: BLAKE3 hashes the chunks
        /// of one large update in parallel lanes (SIMD), while thousands of updates of
        /// a few bytes each go one chunk at a time. The bytes hashed are the same.
        const PIECE: usize = 64 * 1024;
        let mut hasher = blake3::Hasher::new();
        let mut buf: Vec<u8> = Vec::with_capacity(PIECE + 4096);
        for entry in self.entries.values() {
            encode_for_digest(entry, &mut buf);
            if buf.len() >= PIECE {
                hasher.update(&buf);
                buf.clear();
            }
        }
        hasher.update(&buf);
        hasher.finalize().to_hex().to_string()
    }
}

/// Appends the bytes of one entry as the tree digest hashes them (wire-sync.md §3).
fn encode_for_digest(entry: &WireEntry, buf: &mut Vec<u8>) {
    buf.extend_from_slice(entry.path.as_bytes());
    buf.extend_from_slice(&[0, entry.kind.tag()]);
    buf.extend_from_slice(&entry.mode.to_le_bytes());
    buf.extend_from_slice(&entry.mtime_ns.to_le_bytes());
    buf.extend_from_slice(&entry.size.to_le_bytes());
    match entry.kind {
        WireKind::File => {
            let raw = entry
                .digest
                .as_deref()
                .and_then(|d| blake3::Hash::from_hex(d).ok())
                .map_or([0u8; 32], |h| *h.as_bytes());
            buf.extend_from_slice(&raw);
        }
        WireKind::Symlink => {
            buf.extend_from_slice(entry.target.as_deref().unwrap_or_default().as_bytes());
            buf.push(0);
        }
        WireKind::Dir => {}
    }
}

// ---------------------------------------------------------------- messages

/// A blob announced in a `wire_blobs` or `wire_changes` header, in frame order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// BLAKE3 of the content, 64 lowercase hex digits.
    pub digest: String,
    /// Content length in bytes.
    pub size: u64,
}

/// `wire_start` (request): start a session whose staging the sidecar keeps itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStart {
    /// Client-chosen session id.
    #[serde(default)]
    pub session_id: String,
    /// Stable id of the client (host and user); with the token it selects the
    /// sidecar's per-client store, reused by the next session of the same client.
    pub client_id: String,
    /// Where staging appears to tools (default `/workspace`).
    #[serde(default = "default_mount")]
    pub guest_workspace: String,
}

fn default_mount() -> String {
    "/workspace".to_owned()
}

/// `wire_started` (reply to `wire_start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStarted {
    /// The session id.
    #[serde(default)]
    pub session_id: String,
    /// Short hex name of the per-client store (for logs).
    #[serde(default)]
    pub store: String,
}

/// `wire_project` (request): open (or reuse) the sidecar's copy of one project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireProject {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// The project's root path in the client's VFS (identifies the project).
    pub project: String,
    /// Paths the sidecar's pulls leave out (and its writes never touch), as globs
    /// relative to the project root with the sync crate's rules (`target/`, `*.o`,
    /// `/anchored`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

/// `wire_project_ok` (reply): the sidecar's state of the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireProjectOk {
    /// The project as sent.
    pub project: String,
    /// Guest path of the project's root (tools run below it).
    pub guest_dir: String,
    /// The `epoch` of the last push or pull that completed (`null`: none, full push).
    #[serde(default)]
    pub epoch: Option<String>,
    /// The client generation acknowledged with that epoch.
    #[serde(default)]
    pub generation: Option<u64>,
    /// [`Manifest::tree_digest`] of the sidecar's copy.
    pub tree_digest: String,
    /// Entries in the sidecar's copy.
    #[serde(default)]
    pub entries: u64,
}

/// `wire_push` (request): what changed in the client's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePush {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// The project (as in `wire_project`).
    pub project: String,
    /// `true`: `entries` is the whole tree (anything else is deleted). `false`: a delta
    /// on top of the state named by `base_epoch`/`base_generation`.
    #[serde(default)]
    pub full: bool,
    /// Delta pushes: the epoch the delta applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_epoch: Option<String>,
    /// Delta pushes: the generation the delta applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_generation: Option<u64>,
    /// The client's epoch (stable for the life of its tree's history).
    pub epoch: String,
    /// The client generation this push brings the copy to.
    pub generation: u64,
    /// Delta pushes: paths removed (with their subtrees), applied first.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Created or changed entries, parents before children.
    #[serde(default)]
    pub entries: Vec<WireEntry>,
    /// Only with `full` and the `wire-sync-stream` capability: the line is followed at
    /// once by bulk frames (sizes as the entries say); no `wire_need` is answered. When
    /// every file entry has its digest, one blob per distinct digest, in order of first
    /// appearance; when no file entry has one, one blob per file entry, in order, and
    /// the sidecar computes the digests (the client checks the tree digest it answers).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

/// `wire_need` (reply to `wire_push`): the digests the sidecar lacks; the client sends
/// them in one `wire_blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireNeed {
    /// Missing digests (each once).
    pub digests: Vec<String>,
}

/// `wire_blobs` (request from the client, or reply from the sidecar to `wire_want`): a
/// header announcing bulk frames that follow at once, blob after blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBlobs {
    /// The session (requests only; empty in replies).
    #[serde(default)]
    pub session_id: String,
    /// The blobs in frame order.
    pub blobs: Vec<BlobRef>,
}

/// `wire_push_ok` (reply): the push is applied to the sidecar's staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePushOk {
    /// The generation now acknowledged.
    pub generation: u64,
    /// [`Manifest::tree_digest`] of the sidecar's copy after the push.
    pub tree_digest: String,
}

/// `wire_pull` (request): find what the tool changed in the project's staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePull {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// The project.
    pub project: String,
}

/// `wire_changes` (reply to `wire_pull`): the changes, followed at once by the bulk
/// frames of `blobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChanges {
    /// The project.
    pub project: String,
    /// Paths removed (subtree roots), applied first.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Created or changed entries, parents before children.
    #[serde(default)]
    pub entries: Vec<WireEntry>,
    /// Contents that follow as bulk frames (those the sidecar does not know the client
    /// has); other digests of `entries` the client finds in its own tree or asks for
    /// with `wire_want`.
    #[serde(default)]
    pub blobs: Vec<BlobRef>,
    /// [`Manifest::tree_digest`] of the sidecar's copy after the changes.
    pub tree_digest: String,
}

/// `wire_want` (request): contents of a pull the client lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireWant {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// The project.
    pub project: String,
    /// The digests.
    pub digests: Vec<String>,
}

/// `wire_pull_done` (request): the client applied the pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePullDone {
    /// The session.
    #[serde(default)]
    pub session_id: String,
    /// The project.
    pub project: String,
    /// The client's epoch.
    pub epoch: String,
    /// The client generation that holds the pulled changes.
    pub generation: u64,
    /// The client's tree digest after applying (must equal the sidecar's).
    pub tree_digest: String,
}

/// `wire_pull_ok` (reply to `wire_pull_done`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePullOk {
    /// The generation now acknowledged.
    pub generation: u64,
}

/// `health` (request): a cheap liveness check, answered before authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {}

/// `health_ok` (reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthOk {
    /// `ok` while the sidecar accepts work, `stopping` during shutdown.
    pub status: String,
    /// Open connections.
    #[serde(default)]
    pub connections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree digest as the spec words it: one BLAKE3 over each entry's fields in
    /// path order, fed field by field.
    fn spec_digest(m: &Manifest) -> String {
        let mut hasher = blake3::Hasher::new();
        for entry in m.iter() {
            hasher.update(entry.path.as_bytes());
            hasher.update(&[0, entry.kind.tag()]);
            hasher.update(&entry.mode.to_le_bytes());
            hasher.update(&entry.mtime_ns.to_le_bytes());
            hasher.update(&entry.size.to_le_bytes());
            match entry.kind {
                WireKind::File => {
                    let raw = blake3::Hash::from_hex(entry.digest.as_deref().unwrap_or_default())
                        .map_or([0u8; 32], |h| *h.as_bytes());
                    hasher.update(&raw);
                }
                WireKind::Symlink => {
                    hasher.update(entry.target.as_deref().unwrap_or_default().as_bytes());
                    hasher.update(&[0]);
                }
                WireKind::Dir => {}
            }
        }
        hasher.finalize().to_hex().to_string()
    }

    /// A blob written piece by piece reads back as the same blob, whatever the pieces;
    /// a piece over the frame limit is refused before anything is written.
    #[test]
    fn a_blob_written_in_pieces_reads_back_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let blob = BlobRef {
            digest: digest_hex(&data),
            size: data.len() as u64,
        };
        let mut wire = Vec::new();
        let pieces: Vec<&[u8]> = data.chunks(70_000).collect();
        for (i, piece) in pieces.iter().enumerate() {
            write_blob_piece(&mut wire, piece, i + 1 == pieces.len()).unwrap();
        }
        // An empty blob: one empty last piece.
        let empty = BlobRef {
            digest: digest_hex(b""),
            size: 0,
        };
        write_blob_piece(&mut wire, b"", true).unwrap();
        let mut reader = LineReader::new(&wire[..]);
        assert_eq!(reader.read_blob(&blob, 1 << 20).unwrap(), data);
        assert!(reader.read_blob(&empty, 1 << 20).unwrap().is_empty());
        let too_long = vec![0u8; MAX_CHUNK + 1];
        let mut out = Vec::new();
        assert!(matches!(
            write_blob_piece(&mut out, &too_long, true),
            Err(ProtocolError::BulkFrame { .. })
        ));
        assert!(out.is_empty());
    }

    /// A blob announced without a digest is read only by the reader that hashes it
    /// (a streamed push without digests); its size is still bounded up front.
    #[test]
    fn only_the_undigested_reader_takes_a_blob_without_digest() {
        let mut wire = Vec::new();
        write_blob(&mut wire, b"hello").unwrap();
        let bare = BlobRef {
            digest: String::new(),
            size: 5,
        };
        let mut reader = LineReader::new(&wire[..]);
        assert!(matches!(
            reader.read_blob_shared_unverified(&bare, 100),
            Err(ProtocolError::BulkFrame { .. })
        ));
        assert!(matches!(
            reader.read_blob_shared_undigested(&bare, 4),
            Err(ProtocolError::BulkFrame { .. })
        ));
        let data = reader.read_blob_shared_undigested(&bare, 100).unwrap();
        assert_eq!(&data[..], b"hello");
        let mut reader = LineReader::new(&wire[..]);
        let bad = BlobRef {
            digest: "xyz".to_owned(),
            size: 5,
        };
        assert!(matches!(
            reader.read_blob_shared_undigested(&bad, 100),
            Err(ProtocolError::BulkFrame { .. })
        ));
    }

    /// Hashing the serialisation in large pieces gives the digest the spec defines, for
    /// trees smaller and larger than one piece.
    #[test]
    fn the_tree_digest_is_the_specified_one() {
        let mut m = Manifest::default();
        assert_eq!(m.tree_digest(), spec_digest(&m));
        for i in 0..3_000u32 {
            let dir = format!("some/longer/directory-name-{:03}", i % 97);
            m.upsert(WireEntry::dir(&dir, 0o755, i64::from(i)));
            m.upsert(WireEntry::file(
                &format!("{dir}/file-{i}.rs"),
                0o644,
                -i64::from(i),
                u64::from(i),
                digest_hex(&i.to_le_bytes()),
            ));
            if i % 500 == 0 {
                m.upsert(WireEntry::symlink(&format!("{dir}/link-{i}"), 3, "../x"));
                assert_eq!(m.tree_digest(), spec_digest(&m), "at {i}");
            }
        }
        assert_eq!(m.tree_digest(), spec_digest(&m));
    }

    fn blob_of(data: &[u8]) -> BlobRef {
        BlobRef {
            digest: digest_hex(data),
            size: data.len() as u64,
        }
    }

    /// The cached sum of sizes and tree digest always equal a fresh computation over the
    /// entries, through upserts, kind changes and subtree removals.
    #[test]
    fn cached_file_bytes_and_digest_follow_every_change() {
        let fresh = |m: &Manifest| {
            let mut copy = Manifest::default();
            for entry in m.iter() {
                copy.entries.insert(entry.path.clone(), entry.clone());
            }
            let bytes: u64 = m.iter().map(file_size).sum();
            (bytes, copy.compute_tree_digest())
        };
        let mut m = Manifest::default();
        let check = |m: &Manifest| assert_eq!((m.file_bytes(), m.tree_digest()), fresh(m));
        check(&m);
        m.upsert(WireEntry::dir("d", 0o755, 1));
        m.upsert(WireEntry::file("d/a", 0o644, 2, 10, digest_hex(b"a")));
        m.upsert(WireEntry::file("d/b", 0o644, 3, 20, digest_hex(b"b")));
        check(&m);
        let before = m.tree_digest();
        // Same path, new size: the old size leaves the sum.
        m.upsert(WireEntry::file("d/a", 0o644, 4, 5, digest_hex(b"c")));
        check(&m);
        assert_ne!(m.tree_digest(), before);
        // A file where a directory was removes the directory's files.
        m.upsert(WireEntry::file("d", 0o600, 5, 7, digest_hex(b"d")));
        check(&m);
        assert_eq!(m.file_bytes(), 7);
        m.upsert(WireEntry::symlink("l", 6, "d"));
        assert_eq!(m.remove_subtree("d"), 1);
        check(&m);
        assert_eq!(m.remove_subtree("nothing"), 0);
        check(&m);
    }

    /// The bulky wire messages take a direct parse; it must agree with the tagged enum,
    /// whatever the key order, and bad lines still get the general parser's errors.
    #[test]
    fn bulky_wire_messages_parse_like_the_tagged_enum() {
        use crate::{ProtocolError, Reply, Request, encode_reply, encode_request};
        let push = Request::WirePush(WirePush {
            session_id: "s".into(),
            project: "/p".into(),
            full: true,
            base_epoch: None,
            base_generation: None,
            epoch: "e".into(),
            generation: 3,
            deleted: vec!["gone".into()],
            entries: vec![
                WireEntry::dir("d", 0o755, 1),
                WireEntry::file("d/a", 0o644, 2, 1, digest_hex(b"a")),
            ],
            stream: false,
        });
        let line = encode_request(&push);
        assert!(!line.contains("stream"), "absent unless set: {line}");
        assert!(line.starts_with("{\"op\":\"wire_push\""), "{line}");
        assert_eq!(crate::parse_request(&line).unwrap(), push);
        // `op` not first: the general parser, same result.
        let moved = format!(
            "{{\"session_id\":\"s\",{}",
            &line[1..].replace("\"session_id\":\"s\",", "")
        );
        assert_eq!(crate::parse_request(&moved).unwrap(), push);
        // A missing field: the general parser's error, naming the op.
        let bad = "{\"op\":\"wire_push\",\"project\":\"/p\"}";
        assert!(matches!(
            crate::parse_request(bad),
            Err(ProtocolError::InvalidFields { op, .. }) if op == "wire_push"
        ));
        let need = Reply::WireNeed(WireNeed {
            digests: vec![digest_hex(b"x")],
        });
        assert_eq!(crate::parse_reply(&encode_reply(&need)).unwrap(), need);
        let blobs = WireBlobs {
            session_id: "s".into(),
            blobs: vec![BlobRef {
                digest: digest_hex(b"x"),
                size: 1,
            }],
        };
        let request = Request::WireBlobs(blobs.clone());
        assert_eq!(
            crate::parse_request(&encode_request(&request)).unwrap(),
            request
        );
        let reply = Reply::WireBlobs(blobs);
        assert_eq!(crate::parse_reply(&encode_reply(&reply)).unwrap(), reply);
    }

    #[test]
    fn blobs_round_trip_across_chunk_boundaries() {
        for size in [
            0,
            1,
            MAX_CHUNK - 1,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            2 * MAX_CHUNK + 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect();
            let mut wire = Vec::new();
            write_blob(&mut wire, &data).unwrap();
            wire.extend_from_slice(b"{\"op\":\"next\"}\n");
            let mut reader = LineReader::new(&wire[..]);
            assert_eq!(reader.read_blob(&blob_of(&data), u64::MAX).unwrap(), data);
            // The line after the frames is intact.
            assert_eq!(reader.read_line().unwrap().unwrap(), "{\"op\":\"next\"}");
        }
    }

    #[test]
    fn wrong_digest_is_refused() {
        let mut wire = Vec::new();
        write_blob(&mut wire, b"hello").unwrap();
        let mut reader = LineReader::new(&wire[..]);
        let claimed = BlobRef {
            digest: digest_hex(b"hellO"),
            size: 5,
        };
        let err = reader.read_blob(&claimed, 100).unwrap_err();
        assert!(matches!(err, ProtocolError::BlobDigest { .. }), "{err}");
    }

    #[test]
    fn wrong_lengths_and_markers_are_refused() {
        let data = b"0123456789";
        // Announced shorter than sent.
        let mut wire = Vec::new();
        write_blob(&mut wire, data).unwrap();
        let short = BlobRef {
            digest: digest_hex(data),
            size: 4,
        };
        let err = LineReader::new(&wire[..])
            .read_blob(&short, 100)
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        // Announced longer than sent.
        let long = BlobRef {
            digest: digest_hex(data),
            size: 11,
        };
        let err = LineReader::new(&wire[..])
            .read_blob(&long, 100)
            .unwrap_err();
        assert!(err.to_string().contains("ended after 10"), "{err}");
        // A frame length over the cap is refused before reading it.
        let mut bad = vec![BULK_MARKER, FRAME_LAST];
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        let huge = BlobRef {
            digest: digest_hex(b""),
            size: u64::MAX,
        };
        let err = LineReader::new(&bad[..])
            .read_blob(&huge, u64::MAX)
            .unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // A JSON line where a frame is expected.
        let err = LineReader::new(&b"{\"op\":\"x\"}\n"[..])
            .read_blob(&blob_of(b""), 100)
            .unwrap_err();
        assert!(err.to_string().contains("found byte 0x7b"), "{err}");
        // Over the receiver's limit: refused before reading.
        let err = LineReader::new(&wire[..])
            .read_blob(&blob_of(data), 9)
            .unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
        // Truncated stream.
        let err = LineReader::new(&wire[..8])
            .read_blob(&blob_of(data), 100)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::Io { .. }), "{err}");
    }

    #[test]
    fn a_bulk_frame_read_as_a_line_is_a_non_utf8_error() {
        let mut wire = Vec::new();
        write_blob(&mut wire, b"{\"op\":\"handshake\"}").unwrap();
        let err = LineReader::new(&wire[..]).read_line().unwrap_err();
        assert_eq!(err.error_code().as_str(), "parse");
    }

    #[test]
    fn manifest_subtree_removal_and_digest() {
        let mut m = Manifest::default();
        let empty = m.tree_digest();
        m.upsert(WireEntry::dir("a", 0o755, 1));
        m.upsert(WireEntry::file("a/x", 0o644, 2, 1, digest_hex(b"x")));
        m.upsert(WireEntry::file("a-b", 0o644, 2, 1, digest_hex(b"y")));
        m.upsert(WireEntry::symlink("l", 3, "a/x"));
        let full = m.tree_digest();
        assert_ne!(full, empty);
        assert_eq!(m.remove_subtree("a"), 2);
        assert!(m.get("a-b").is_some(), "a sibling sharing the prefix stays");
        m.upsert(WireEntry::dir("a", 0o755, 1));
        m.upsert(WireEntry::file("a/x", 0o644, 2, 1, digest_hex(b"x")));
        assert_eq!(m.tree_digest(), full);
        // Mode, mtime and content all count.
        m.upsert(WireEntry::file("a/x", 0o755, 2, 1, digest_hex(b"x")));
        assert_ne!(m.tree_digest(), full);
        // A file replacing a directory drops the subtree.
        m.upsert(WireEntry::file("a", 0o644, 2, 1, digest_hex(b"z")));
        assert!(m.get("a/x").is_none());
    }

    #[test]
    fn relative_paths_are_checked() {
        for bad in ["", "/a", "a/", "a//b", "./a", "a/..", "..", "a\0b"] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b", ".hidden/x", "a..b"] {
            assert!(check_relative_path(good).is_ok(), "{good:?}");
        }
    }
}
