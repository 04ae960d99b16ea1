//! The mock passes the whole main conformance suite (it has no symlinks, so the
//! symlink-escape suite runs against a real-file implementation in `host_dir_conformance.rs`).

use devshell_vm_guest_fs::{GuestFsOps, MockGuestFsOps, guest_fs_conformance_tests};

guest_fs_conformance_tests!(|| {
    Box::new(MockGuestFsOps::new("/workspace").expect("valid mount")) as Box<dyn GuestFsOps>
});

guest_fs_conformance_tests!(mod deep_mount, || {
    Box::new(MockGuestFsOps::new("/home/user/.cache/devshell ws/mount").expect("valid mount"))
        as Box<dyn GuestFsOps>
});
