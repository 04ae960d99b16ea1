//! The `wire-sync` bulk-frame check, shared by the `wire_frames` fuzz target and the
//! stable test that replays its corpus (`tests/fuzz_corpus.rs`). It uses only the public
//! decoding API (`LineReader::read_line`, `LineReader::read_blob`, `parse_request`,
//! `parse_reply`, `write_blob`, `WireEntry::validate`, `Manifest`), the same calls the
//! sidecar and the β client make, so it holds whatever their buffering does.
//!
//! The first byte picks a mode:
//!
//! * **stream** (`% 4 == 0`): the rest is a connection's byte stream. Lines are parsed
//!   as requests and replies; after a `wire_blobs` (request or reply) or a
//!   `wire_changes` reply the announced blobs are read as bulk frames, as the receivers
//!   do. Entries are validated and folded into a [`Manifest`].
//! * **announced** (`% 4 == 1`): the rest is raw frames for one blob, announced with
//!   the digest and size of what a lenient reading of those frames would give (so
//!   mutations of the framing reach the digest-checked success path), optionally
//!   off by one in size or digest (byte 2).
//! * **round trip** (`% 4 == 2`): the rest is blob content. `write_blob` then
//!   `read_blob` must give it back and leave the reader at the next line; flipping any
//!   one byte of the frames, or cutting them short, must be refused.
//! * **raw** (`% 4 == 3`): bytes 1..3 pick the announced size (and the limit), the rest
//!   are frames for an arbitrary announced digest.
//!
//! What must hold in every mode: no panic; an accepted blob has exactly the announced
//! size and digest and never exceeds the caller's limit; every refusal is a
//! `BulkFrame`, `BlobDigest` or `Io` error (a stream error, never a parse error), and a
//! blob bigger than the limit is refused before any frame is read.

use devshell_vm_protocol::{
    BULK_MARKER, BlobRef, FRAME_DATA, FRAME_HEADER_LEN, FRAME_LAST, LineReader, MAX_CHUNK,
    Manifest, ProtocolError, Reply, Request, WireEntry, digest_hex, parse_reply, parse_request,
    write_blob,
};

/// Limit on one blob handed to `read_blob` (small, so the over-limit path is reached).
const LIMIT: u64 = 1 << 16;
/// Line cap for the stream mode.
const MAX_LINE: usize = 16 << 10;

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => stream(rest),
        1 => announced(rest),
        2 => round_trip(rest),
        _ => raw(rest),
    }
}

/// Reads one blob and checks what `read_blob` promises, whatever the bytes were.
fn read_checked(reader: &mut LineReader<&[u8]>, blob: &BlobRef, limit: u64) -> Option<Vec<u8>> {
    let before = reader.get_ref().len() + reader.buffered();
    match reader.read_blob(blob, limit) {
        Ok(content) => {
            assert_eq!(
                content.len() as u64,
                blob.size,
                "accepted blob of the wrong size"
            );
            assert!(blob.size <= limit, "accepted a blob over the limit");
            assert_eq!(
                digest_hex(&content),
                blob.digest,
                "accepted blob with the wrong digest"
            );
            Some(content)
        }
        Err(err) => {
            assert!(
                matches!(
                    err,
                    ProtocolError::BulkFrame { .. }
                        | ProtocolError::BlobDigest { .. }
                        | ProtocolError::Io { .. }
                ),
                "read_blob failed with a non-stream error: {err:?}"
            );
            if blob.size > limit || !devshell_vm_protocol::is_digest_hex(&blob.digest) {
                assert!(
                    matches!(err, ProtocolError::BulkFrame { .. }),
                    "an over-limit or malformed announcement must be a BulkFrame error: {err:?}"
                );
                let after = reader.get_ref().len() + reader.buffered();
                assert_eq!(before, after, "bytes consumed for a blob refused up front");
            }
            None
        }
    }
}

fn fold_entries(manifest: &mut Manifest, entries: &[WireEntry]) {
    for entry in entries {
        if entry.validate().is_ok() {
            manifest.upsert(entry.clone());
        }
    }
    let digest = manifest.tree_digest();
    assert!(
        devshell_vm_protocol::is_digest_hex(&digest),
        "tree digest {digest:?}"
    );
}

/// A connection's byte stream: lines, and the frames of the blobs they announce.
fn stream(bytes: &[u8]) {
    let mut reader = LineReader::with_max_frame_bytes(bytes, MAX_LINE);
    let mut manifest = Manifest::default();
    for _ in 0..64 {
        let line = match reader.read_line() {
            Ok(None) => return,
            Ok(Some(line)) => line,
            Err(err) if err.is_recoverable() => continue,
            Err(err) => panic!("unrecoverable line error on in-memory input: {err}"),
        };
        let mut blobs = Vec::new();
        if let Ok(request) = parse_request(&line) {
            match request {
                Request::WireBlobs(header) => blobs = header.blobs,
                Request::WirePush(push) => {
                    if push.full {
                        manifest = Manifest::default();
                    }
                    for gone in &push.deleted {
                        if devshell_vm_protocol::check_relative_path(gone).is_ok() {
                            manifest.remove_subtree(gone);
                        }
                    }
                    fold_entries(&mut manifest, &push.entries);
                }
                _ => {}
            }
        } else if let Ok(reply) = parse_reply(&line) {
            match reply {
                Reply::WireBlobs(header) => blobs = header.blobs,
                Reply::WireChanges(changes) => {
                    fold_entries(&mut manifest, &changes.entries);
                    blobs = changes.blobs;
                }
                _ => {}
            }
        }
        for blob in &blobs {
            if read_checked(&mut reader, blob, LIMIT).is_none() {
                // A frame error leaves the stream unsynchronised: the receivers drop the
                // connection here, and so does this check.
                return;
            }
        }
    }
}

/// What a lenient reader would take from `frames` as one blob's content: payloads of
/// well-marked frames up to the first `LAST` (or the end of the input).
fn lenient_content(frames: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    let mut rest = frames;
    while rest.len() >= FRAME_HEADER_LEN && rest[0] == BULK_MARKER {
        let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        let end = FRAME_HEADER_LEN.saturating_add(len).min(rest.len());
        content.extend_from_slice(&rest[FRAME_HEADER_LEN..end]);
        if rest[1] == FRAME_LAST {
            break;
        }
        rest = &rest[end..];
    }
    content
}

fn announced(bytes: &[u8]) {
    let Some((&tweak, frames)) = bytes.split_first() else {
        return;
    };
    let content = lenient_content(frames);
    let mut blob = BlobRef {
        digest: digest_hex(&content),
        size: content.len() as u64,
    };
    match tweak % 4 {
        1 => blob.size += 1,
        2 => blob.size = blob.size.saturating_sub(1),
        3 => blob.digest = digest_hex(&[tweak]),
        _ => {}
    }
    let mut reader = LineReader::new(frames);
    if let Some(got) = read_checked(&mut reader, &blob, LIMIT) {
        assert_eq!(
            got, content,
            "accepted content differs from the frames' payloads"
        );
    }
}

fn round_trip(content: &[u8]) {
    let blob = BlobRef {
        digest: digest_hex(content),
        size: content.len() as u64,
    };
    if content.len() > MAX_CHUNK {
        return;
    }
    let mut wire = Vec::new();
    write_blob(&mut wire, content).expect("writing to a Vec");
    assert_eq!(
        wire.len(),
        FRAME_HEADER_LEN + content.len(),
        "one LAST frame"
    );
    assert_eq!(wire[..2], [BULK_MARKER, FRAME_LAST]);
    let frames_len = wire.len();
    wire.extend_from_slice(b"{\"op\":\"health\"}\n");

    let mut reader = LineReader::new(&wire[..]);
    assert_eq!(
        reader
            .read_blob(&blob, LIMIT.max(blob.size))
            .expect("round trip"),
        content
    );
    assert_eq!(
        reader
            .read_line()
            .expect("the line after the blob")
            .as_deref(),
        Some("{\"op\":\"health\"}"),
        "read_blob consumed more or less than its frames"
    );

    // Any one flipped byte of the frames, or any cut, must be refused.
    let pick = content.first().map_or(0, |&b| usize::from(b)) % frames_len;
    for at in [0, 1, 2, 5, pick, frames_len - 1] {
        let mut bad = wire[..frames_len].to_vec();
        bad[at] ^= content.get(1).copied().unwrap_or(0x5a) | 1;
        let mut reader = LineReader::new(&bad[..]);
        assert!(
            reader.read_blob(&blob, LIMIT.max(blob.size)).is_err(),
            "a frame with byte {at} flipped was accepted"
        );
    }
    for cut in [
        0,
        1,
        FRAME_HEADER_LEN - 1,
        FRAME_HEADER_LEN,
        pick,
        frames_len - 1,
    ] {
        if cut >= frames_len {
            continue;
        }
        let mut reader = LineReader::new(&wire[..cut]);
        assert!(
            reader.read_blob(&blob, LIMIT.max(blob.size)).is_err(),
            "frames cut at {cut} of {frames_len} were accepted"
        );
    }
    // A DATA frame split: the same content as two frames must read back the same.
    if !content.is_empty() {
        let half = content.len() / 2;
        let mut split = Vec::new();
        for (kind, part) in [
            (FRAME_DATA, &content[..half]),
            (FRAME_LAST, &content[half..]),
        ] {
            split.push(BULK_MARKER);
            split.push(kind);
            split.extend_from_slice(&u32::try_from(part.len()).expect("short").to_be_bytes());
            split.extend_from_slice(part);
        }
        let mut reader = LineReader::new(&split[..]);
        assert_eq!(
            reader
                .read_blob(&blob, LIMIT.max(blob.size))
                .expect("split"),
            content
        );
    }
}

fn raw(bytes: &[u8]) {
    if bytes.len() < 4 {
        return;
    }
    let size = u64::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    let limit = u64::from(bytes[2]) << 8;
    let digest = match bytes[3] % 3 {
        0 => digest_hex(&bytes[4..]),
        1 => String::from_utf8_lossy(&bytes[4..bytes.len().min(68)]).into_owned(),
        _ => "0".repeat(64),
    };
    let blob = BlobRef { digest, size };
    let mut reader = LineReader::new(&bytes[4..]);
    read_checked(&mut reader, &blob, limit);
}
