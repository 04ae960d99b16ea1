//! The mock passes the whole main conformance suite (it has no symlinks, so the
//! symlink-escape suite runs against a real-file implementation in `host_dir_conformance.rs`),
//! and, made unreachable, the unreachable-backend check.

use devshell_vm_guest_fs::{GuestFsOps, MockGuestFsOps, guest_fs_conformance_tests};

guest_fs_conformance_tests!(|| {
    Box::new(MockGuestFsOps::new("/workspace").expect("valid mount")) as Box<dyn GuestFsOps>
});

guest_fs_conformance_tests!(mod deep_mount, || {
    Box::new(MockGuestFsOps::new("/home/user/.cache/devshell ws/mount").expect("valid mount"))
        as Box<dyn GuestFsOps>
});

#[test]
fn unreachable_mock_fails_loudly() {
    devshell_vm_guest_fs::conformance::unreachable_backend_fails_loudly(|| {
        let mut m = MockGuestFsOps::new("/workspace").expect("valid mount");
        m.write_file("/workspace/d/f.txt", b"kept").expect("write");
        m.set_unreachable(Some("sidecar exited"));
        Box::new(m) as Box<dyn GuestFsOps>
    });
}

#[test]
fn unreachable_mock_changes_nothing_and_recovers() {
    let mut m = MockGuestFsOps::new("/workspace").expect("valid mount");
    m.write_file("/workspace/d/f.txt", b"kept").expect("write");
    let before = m.clone();
    m.set_unreachable(Some("vm stopped"));
    let e = m.remove("/workspace/d").expect_err("unreachable");
    assert!(e.to_string().contains("vm stopped"), "{e}");
    assert!(m.write_file("/workspace/d/f.txt", b"lost").is_err());
    m.set_unreachable(None);
    assert_eq!(m, before);
    assert_eq!(m.read_file("/workspace/d/f.txt").expect("read"), b"kept");
}
