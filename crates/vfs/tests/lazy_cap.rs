//! The process-wide cap on descriptors held by unread lazy contents (its own test
//! binary: the cap is process-wide).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failure")]

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use devshell_vm_vfs::lazy::{open_lazy_fds, set_lazy_fd_limit};
use devshell_vm_vfs::{LazyContent, LazySlot, Vfs};

#[test]
fn slots_stop_at_the_cap_and_a_read_frees_one() {
    set_lazy_fd_limit(3);
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = Vfs::new();
    for i in 0..3 {
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, format!("file {i}")).unwrap();
        let slot = LazySlot::reserve().expect("below the cap");
        let lazy = LazyContent::new(File::open(&path).unwrap(), slot, &path, format!("/f{i}"));
        vfs.write_file_lazy(
            &format!("/f{i}"),
            Arc::new(lazy.unwrap()),
            0o644,
            SystemTime::now(),
        )
        .unwrap();
    }
    assert_eq!(open_lazy_fds(), 3);
    assert!(LazySlot::reserve().is_none(), "the cap is reached");
    // Reading a content closes its descriptor and frees its slot.
    assert_eq!(&vfs.read_file("/f1").unwrap()[..], b"file 1");
    assert_eq!(open_lazy_fds(), 2);
    let slot = LazySlot::reserve().expect("a slot was freed");
    drop(slot);
    // Dropping the tree frees the rest (closed on a background thread).
    drop(vfs);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_lazy_fds() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(open_lazy_fds(), 0);
}
