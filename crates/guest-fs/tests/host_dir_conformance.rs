//! A real-file reference implementation (tests/common) passes the main suite and the
//! symlink-escape suite: evidence that the suite is satisfiable by real files and that
//! the symlink hooks work end to end.

mod common;

devshell_vm_guest_fs::guest_fs_conformance_tests!(common::fresh_host_ops);
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(|| common::symlink_fixture(true));
