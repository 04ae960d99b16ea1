//! Fuzzes the workspace image loader: any input must give `Ok` or an `ImageError`,
//! never a panic, an abort or a huge allocation; an accepted image must re-encode to
//! the same bytes and load to the same tree.
//!
//! The checksum would reject almost every mutation before the parser runs, so inputs
//! are also tried with a repaired header (correct length and CRC) to reach the parser.
//!
//! Run: `cd crates/vfs/fuzz && cargo +nightly fuzz run image_load -- -max_total_time=60`

#![no_main]

use devshell_vm_vfs::image;
use libfuzzer_sys::fuzz_target;

mod repaired;

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
    check(&repaired::with_valid_header(data));
});
