//! Image save/load: round trips, corruption, bounds, atomicity.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: panics are failures

mod common;

use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use devshell_vm_vfs::image::{self, MAGIC, VERSION};
use devshell_vm_vfs::{ImageError, Vfs};
use proptest::prelude::*;

fn sample() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj/src").unwrap();
    vfs.write_file_with(
        "/proj/run.sh",
        b"#!/bin/sh\necho hi\n".to_vec(),
        0o755,
        UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
    )
    .unwrap();
    vfs.write_file("/proj/src/lib.rs", b"pub fn f() {}".to_vec())
        .unwrap();
    vfs.write_file("/proj/empty", Vec::new()).unwrap();
    vfs.symlink("../run.sh", "/proj/src/link").unwrap();
    vfs.set_mode("/proj/src", 0o700).unwrap();
    vfs.set_mtime("/proj", UNIX_EPOCH - Duration::new(5, 1))
        .unwrap();
    vfs.set_cwd("/proj/src").unwrap();
    vfs
}

/// Builds an image around a hand-made payload with a correct header and checksum.
fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn record(kind: u8, name: &str) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&0o755u32.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

fn payload_start(cwd: &str, count: u64) -> Vec<u8> {
    let mut out = (cwd.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(cwd.as_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out
}

#[test]
fn round_trip_sample_in_memory_and_on_disk() {
    let vfs = sample();
    let loaded = image::from_bytes(&image::to_bytes(&vfs).unwrap()).unwrap();
    assert!(vfs.same_tree(&loaded));
    assert_eq!(loaded.cwd(), "/proj/src");
    assert_eq!(loaded.oldest_answerable_generation(), loaded.generation());
    assert!(matches!(
        loaded.changes_since("/", vfs.generation()),
        Err(devshell_vm_vfs::VfsError::HistoryUnavailable { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.img");
    image::save(&vfs, &path).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        image::to_bytes(&vfs).unwrap(),
        "streamed save = to_bytes"
    );
    let from_file = image::load(&path).unwrap();
    assert!(vfs.same_tree(&from_file));
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left behind"
    );
}

#[test]
fn every_truncation_and_bit_flip_is_an_error() {
    let bytes = image::to_bytes(&sample()).unwrap();
    for len in 0..bytes.len() {
        assert!(
            image::from_bytes(&bytes[..len]).is_err(),
            "truncated to {len} bytes was accepted"
        );
    }
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        assert!(
            image::from_bytes(&flipped).is_err(),
            "flip at byte {at} was accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(image::from_bytes(&longer).is_err());
}

#[test]
fn header_errors_are_specific() {
    assert!(matches!(
        image::from_bytes(b"DEVS\x01"),
        Err(ImageError::BadMagic)
    ));
    let mut bytes = image::to_bytes(&sample()).unwrap();
    bytes[8] = 9;
    assert!(matches!(
        image::from_bytes(&bytes),
        Err(ImageError::UnsupportedVersion { version: 9 })
    ));
    let mut bytes = image::to_bytes(&sample()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(matches!(
        image::from_bytes(&bytes),
        Err(ImageError::ChecksumMismatch { .. })
    ));
}

#[test]
fn crafted_huge_lengths_do_not_allocate() {
    // A file record announcing 2^44 bytes (the seed's crash), with a valid checksum.
    let mut payload = payload_start("/", 2);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend(record(1, "big"));
    payload.extend_from_slice(&(1u64 << 44).to_le_bytes());
    assert!(
        matches!(image::from_bytes(&with_header(&payload)), Err(ImageError::Truncated { needed, .. }) if needed == 1 << 44)
    );

    // u64::MAX content length.
    let mut payload = payload_start("/", 2);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend(record(1, "big"));
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(image::from_bytes(&with_header(&payload)).is_err());

    // A name length of 4 GiB.
    let mut payload = payload_start("/", 1);
    payload.push(0);
    payload.extend_from_slice(&0o755u32.to_le_bytes());
    payload.extend_from_slice(&[0; 12]);
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    payload.extend_from_slice(&[0; 64]);
    assert!(matches!(
        image::from_bytes(&with_header(&payload)),
        Err(ImageError::Truncated { .. })
    ));

    // A node count far beyond what the input can hold, and a directory claiming 2^32-1 children.
    let mut payload = payload_start("/", u64::MAX);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        image::from_bytes(&with_header(&payload)),
        Err(ImageError::Corrupt { .. })
    ));
    let mut payload = payload_start("/", 1);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(image::from_bytes(&with_header(&payload)).is_err());
}

#[test]
fn crafted_structure_errors() {
    let dir_with = |names: &[&str]| {
        let mut payload = payload_start("/", 1 + names.len() as u64);
        payload.extend(record(0, ""));
        payload.extend_from_slice(&(names.len() as u32).to_le_bytes());
        for name in names {
            payload.extend(record(2, name));
            payload.extend_from_slice(&1u32.to_le_bytes());
            payload.push(b't');
        }
        with_header(&payload)
    };
    assert!(image::from_bytes(&dir_with(&["a", "b"])).is_ok());
    for bad in [
        &["b", "a"][..],
        &["a", "a"],
        &[""],
        &["."],
        &[".."],
        &["a/b"],
        &["a\0"],
    ] {
        assert!(
            matches!(
                image::from_bytes(&dir_with(bad)),
                Err(ImageError::Corrupt { .. })
            ),
            "names {bad:?} accepted"
        );
    }
    // cwd must name a directory of the tree
    let mut payload = payload_start("/nope", 1);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        image::from_bytes(&with_header(&payload)),
        Err(ImageError::Corrupt { .. })
    ));
    // unknown kind
    let mut payload = payload_start("/", 2);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend(record(7, "x"));
    assert!(matches!(
        image::from_bytes(&with_header(&payload)),
        Err(ImageError::Corrupt { .. })
    ));
}

#[test]
fn depth_is_bounded() {
    let chain = |depth: usize| {
        let mut payload = payload_start("/", depth as u64 + 1);
        payload.extend(record(0, ""));
        payload.extend_from_slice(&1u32.to_le_bytes());
        for level in 0..depth {
            payload.extend(record(0, "d"));
            let children = u32::from(level + 1 != depth);
            payload.extend_from_slice(&children.to_le_bytes());
        }
        with_header(&payload)
    };
    let deepest = image::from_bytes(&chain(devshell_vm_vfs::MAX_DEPTH)).unwrap();
    assert_eq!(deepest.node_count(), devshell_vm_vfs::MAX_DEPTH + 1);
    assert!(matches!(
        image::from_bytes(&chain(devshell_vm_vfs::MAX_DEPTH + 1)),
        Err(ImageError::Corrupt { .. })
    ));
    // A million-deep chain fails fast without recursion.
    assert!(image::from_bytes(&chain(1_000_000)).is_err());
}

#[test]
fn failed_load_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.img");
    let mut bytes = image::to_bytes(&sample()).unwrap();
    bytes[40] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    let err = image::load(&path).unwrap_err();
    assert!(
        matches!(&err, ImageError::Invalid { path: p, source } if p == &path && matches!(**source, ImageError::ChecksumMismatch { .. }))
    );
    assert!(err.to_string().contains("ws.img"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);
    assert!(matches!(
        image::load(&dir.path().join("missing")),
        Err(ImageError::Io { .. })
    ));
}

#[test]
fn failed_save_keeps_the_old_image_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    // The destination is a non-empty directory: the final rename must fail.
    let blocked = dir.path().join("blocked.img");
    fs::create_dir(&blocked).unwrap();
    fs::write(blocked.join("keep"), b"k").unwrap();
    assert!(matches!(
        image::save(&sample(), &blocked),
        Err(ImageError::Io { .. })
    ));
    assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"k");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["blocked.img"], "temp file left behind");
    // Missing parent directory.
    assert!(matches!(
        image::save(&sample(), &dir.path().join("no/such/ws.img")),
        Err(ImageError::Io { .. })
    ));
    assert!(matches!(
        image::save(&sample(), std::path::Path::new("/")),
        Err(ImageError::InvalidPath { .. })
    ));

    // Replacing an existing image works and the new content is complete.
    let path = dir.path().join("ws.img");
    image::save(&Vfs::new(), &path).unwrap();
    let tree = sample();
    image::save(&tree, &path).unwrap();
    assert!(image::load(&path).unwrap().same_tree(&tree));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_trees_round_trip(vfs in common::tree()) {
        let bytes = image::to_bytes(&vfs).unwrap();
        let loaded = image::from_bytes(&bytes).unwrap();
        prop_assert!(vfs.same_tree(&loaded));
        prop_assert_eq!(common::signature(&vfs, "/"), common::signature(&loaded, "/"));
        prop_assert_eq!(vfs.cwd(), loaded.cwd());
        prop_assert_eq!(image::to_bytes(&loaded).unwrap(), bytes, "encoding is deterministic");
    }

    #[test]
    fn random_truncations_never_panic(vfs in common::tree(), cut in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()) {
        let bytes = image::to_bytes(&vfs).unwrap();
        let len = cut.index(bytes.len());
        prop_assert!(image::from_bytes(&bytes[..len]).is_err());
        let mut flipped = bytes.clone();
        let at = flip.index(bytes.len());
        flipped[at] = flipped[at].wrapping_add(1);
        prop_assert!(image::from_bytes(&flipped).is_err());
    }
}

#[test]
fn save_load_through_files_for_random_trees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.img");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(16));
    runner
        .run(&common::tree(), |vfs| {
            image::save(&vfs, &path).unwrap();
            prop_assert_eq!(fs::read(&path).unwrap(), image::to_bytes(&vfs).unwrap());
            prop_assert!(image::load(&path).unwrap().same_tree(&vfs));
            Ok(())
        })
        .unwrap();
}

/// Writes `bytes` to a file and loads it.
fn load_bytes(dir: &std::path::Path, bytes: &[u8]) -> Result<Vfs, ImageError> {
    let path = dir.join("probe.img");
    fs::write(&path, bytes).unwrap();
    image::load(&path)
}

#[test]
fn streamed_load_rejects_every_truncation_and_bit_flip() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = image::to_bytes(&sample()).unwrap();
    for len in 0..bytes.len() {
        let err = load_bytes(dir.path(), &bytes[..len]).unwrap_err();
        assert!(
            matches!(err, ImageError::Invalid { .. }),
            "truncated to {len}: {err}"
        );
    }
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x04;
        assert!(
            load_bytes(dir.path(), &flipped).is_err(),
            "flip at byte {at} was accepted"
        );
    }
    // A crafted 2^44-byte file record behind a valid header: bounded, typed error.
    let mut payload = payload_start("/", 2);
    payload.extend(record(0, ""));
    payload.extend_from_slice(&1u32.to_le_bytes());
    payload.extend(record(1, "big"));
    payload.extend_from_slice(&(1u64 << 44).to_le_bytes());
    let err = load_bytes(dir.path(), &with_header(&payload)).unwrap_err();
    assert!(
        matches!(&err, ImageError::Invalid { source, .. } if matches!(**source, ImageError::Truncated { .. })),
        "{err}"
    );
}

#[test]
fn streamed_load_handles_contents_larger_than_and_across_the_buffer() {
    let mut vfs = Vfs::new();
    vfs.mkdir("/big").unwrap();
    // 3 MiB (larger than the 1 MiB read buffer), then files that straddle buffer ends.
    let large: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i % 253) as u8)
        .collect();
    vfs.write_file("/big/a-large", large).unwrap();
    for i in 0..40u32 {
        let content: Vec<u8> = (0..100_003 + i).map(|j| (j * 7 + i) as u8).collect();
        vfs.write_file(&format!("/big/f{i:02}"), content).unwrap();
    }
    vfs.write_file("/big/z-last", b"end".to_vec()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.img");
    image::save(&vfs, &path).unwrap();
    let loaded = image::load(&path).unwrap();
    assert!(loaded.same_tree(&vfs));
    // Corruption deep inside a large content is still caught by the checksum.
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    let err = load_bytes(dir.path(), &bytes).unwrap_err();
    assert!(
        matches!(&err, ImageError::Invalid { source, .. } if matches!(**source, ImageError::ChecksumMismatch { .. })),
        "{err}"
    );
}
