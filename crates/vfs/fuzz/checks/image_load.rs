//! The image loader check, shared by the `image_load` fuzz target and the stable test
//! that replays its seeds and corpus: any input must give `Ok` or an `ImageError`,
//! never a panic, an abort or a huge allocation; an accepted image must re-encode to
//! the same bytes and load to the same tree. Each input is also tried behind a repaired
//! header (correct length and CRC), which the checksum would otherwise stop.

use devshell_vm_vfs::image;

#[path = "../fuzz_targets/repaired.rs"]
mod repaired;

fn check_one(bytes: &[u8]) {
    if let Ok(vfs) = image::from_bytes(bytes) {
        let again = image::to_bytes(&vfs).expect("a loaded image holds no lazy content");
        assert_eq!(again, bytes, "an accepted image re-encodes differently");
        let reloaded = image::from_bytes(&again).expect("a re-encoded image loads");
        assert!(reloaded.same_tree(&vfs));
        assert_eq!(reloaded.cwd(), vfs.cwd());
    }
}

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    check_one(data);
    check_one(&repaired::with_valid_header(data));
}
