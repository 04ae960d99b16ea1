//! Fuzzes the workspace image loader: any input must give `Ok` or an `ImageError`,
//! never a panic, an abort or a huge allocation; an accepted image must re-encode to
//! the same bytes and load to the same tree.
//!
//! The checksum would reject almost every mutation before the parser runs, so inputs
//! are also tried with a repaired header (correct length and CRC) to reach the parser.
//!
//! Run: `cd crates/vfs/fuzz && cargo +nightly fuzz run image_load -- -max_total_time=60`

#![no_main]

use devshell_vm_vfs::image::{self, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(vfs) = image::from_bytes(bytes) {
        let again = image::to_bytes(&vfs);
        assert_eq!(again, bytes, "an accepted image re-encodes differently");
        let reloaded = image::from_bytes(&again).expect("a re-encoded image loads");
        assert!(reloaded.same_tree(&vfs));
        assert_eq!(reloaded.cwd(), vfs.cwd());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The same bytes as a payload behind a valid header.
    let mut repaired = Vec::with_capacity(32 + data.len());
    repaired.extend_from_slice(&MAGIC);
    repaired.extend_from_slice(&VERSION.to_le_bytes());
    repaired.extend_from_slice(&0u32.to_le_bytes());
    repaired.extend_from_slice(&(data.len() as u64).to_le_bytes());
    repaired.extend_from_slice(&crc32fast_hash(data).to_le_bytes());
    repaired.extend_from_slice(&0u32.to_le_bytes());
    repaired.extend_from_slice(data);
    check(&repaired);
});

/// CRC-32 (IEEE), bitwise: the fuzz crate avoids extra dependencies.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
