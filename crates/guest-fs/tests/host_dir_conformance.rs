//! A real-file reference implementation (tests/common) passes the main suite and the
//! symlink-escape suite: evidence that the suite is satisfiable by real files and that
//! the symlink hooks work end to end.

mod common;

devshell_vm_guest_fs::guest_fs_conformance_tests!(common::fresh_host_ops);
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(|| common::symlink_fixture(true));
devshell_vm_guest_fs::guest_fs_special_file_tests!(common::special_fixture);

/// The default rename (`rename_by_copy`) cannot recreate a symlink: a tree holding one
/// (or a link itself) is refused with `Internal` before anything is copied, and both
/// sides are left exactly as they were.
#[test]
fn rename_by_copy_refuses_symlinks_without_changing_anything() {
    use devshell_vm_guest_fs::{GuestFsErrorKind, GuestFsOps, GuestKind, rename_by_copy};

    let (_tmp, mount, _sentinel) = common::temp_layout();
    let mut ops = common::HostDirOps::new(&mount, true);
    let m = ops.mount().to_owned();
    ops.write_file(&format!("{m}/tree/a/file"), b"data")
        .expect("write");
    ops.write_file(&format!("{m}/tree/z"), b"last")
        .expect("write");
    std::os::unix::fs::symlink("file", mount.join("tree/a/link")).expect("plant link");
    std::os::unix::fs::symlink("tree", mount.join("top-link")).expect("plant link");

    for (from, to) in [("tree", "moved"), ("top-link", "moved-link")] {
        let err = rename_by_copy(&mut ops, &format!("{m}/{from}"), &format!("{m}/{to}"))
            .expect_err("a symlink cannot be moved by copying");
        assert_eq!(err.kind(), GuestFsErrorKind::Internal, "{from}: {err}");
        assert!(err.to_string().contains("symlink"), "{from}: {err}");
        assert!(
            !ops.exists(&format!("{m}/{to}")).expect("exists"),
            "{from}: nothing may be written at the destination"
        );
    }
    assert_eq!(
        ops.list_dir(&m).expect("list"),
        ["top-link", "tree"],
        "mount unchanged"
    );
    assert_eq!(
        ops.list_dir(&format!("{m}/tree/a")).expect("list"),
        ["file", "link"]
    );
    assert_eq!(
        ops.read_file(&format!("{m}/tree/a/file")).expect("read"),
        b"data"
    );
    assert_eq!(
        ops.read_file(&format!("{m}/tree/z")).expect("read"),
        b"last"
    );
    assert_eq!(
        ops.stat(&format!("{m}/tree/a/link")).expect("stat").kind,
        GuestKind::Symlink
    );
}
