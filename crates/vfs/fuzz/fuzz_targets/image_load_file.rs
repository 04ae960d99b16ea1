//! Differential fuzzing of the two loaders: `image::load` (streamed from a file) and
//! `image::from_bytes` (from memory) must agree on every input: both accept with the same
//! tree, or both reject.
//!
//! Run: `cd crates/vfs/fuzz && cargo +nightly fuzz run image_load_file -- -max_total_time=60`

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use devshell_vm_vfs::image::{self, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("devshell-vm-vfs-fuzz-{}.img", std::process::id()))
    })
}

fn compare(bytes: &[u8]) {
    let path = scratch();
    std::fs::write(path, bytes).expect("scratch file is writable");
    let from_file = image::load(path);
    let from_memory = image::from_bytes(bytes);
    match (&from_file, &from_memory) {
        (Ok(a), Ok(b)) => assert!(
            a.same_tree(b) && a.cwd() == b.cwd(),
            "loaders disagree on the tree"
        ),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "loaders disagree: file {:?} memory {:?}",
            from_file.is_ok(),
            from_memory.is_ok()
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    compare(data);
    let mut repaired = Vec::with_capacity(32 + data.len());
    repaired.extend_from_slice(&MAGIC);
    repaired.extend_from_slice(&VERSION.to_le_bytes());
    repaired.extend_from_slice(&0u32.to_le_bytes());
    repaired.extend_from_slice(&(data.len() as u64).to_le_bytes());
    repaired.extend_from_slice(&crc32(data).to_le_bytes());
    repaired.extend_from_slice(&0u32.to_le_bytes());
    repaired.extend_from_slice(data);
    compare(&repaired);
});

/// CRC-32 (IEEE), bitwise: the fuzz crate avoids extra dependencies.
fn crc32(data: &[u8]) -> u32 {
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
