//! Differential fuzzing of the two loaders: `image::load` (streamed from a file) and
//! `image::from_bytes` (from memory) must agree on every input: both accept with the same
//! tree, or both reject.
//!
//! Run: `cd crates/vfs/fuzz && cargo +nightly fuzz run image_load_file -- -max_total_time=60`

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use devshell_vm_vfs::image;
use libfuzzer_sys::fuzz_target;

mod repaired;

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
    compare(&repaired::with_valid_header(data));
});
