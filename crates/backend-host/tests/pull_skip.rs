//! The pull after a run is skipped exactly when inotify saw no host change, and every kind
//! of host change is still pulled.
//!
//! Its own test binary, with one test: a process that spawns children on other threads
//! while this session writes files can hand the last reference of a just-written file to
//! a child between its fork and exec, so the file's close event arrives late and causes
//! an extra (harmless, still correct) pull. Counting skipped pulls exactly needs a process
//! where nothing else spawns concurrently.

mod common;

use common::{config, find_file, sh, sh_out};
use std::time::{Duration, SystemTime};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_vfs::Vfs;

#[test]
fn a_run_that_changes_nothing_skips_the_pull_and_every_change_is_seen() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/p/src").expect("mkdir");
    vfs.write_file("/p/src/a.txt", b"aaaa".to_vec())
        .expect("write");
    vfs.write_file("/p/src/b.txt", b"bbbb".to_vec())
        .expect("write");
    session.ensure_ready(&vfs, "/p").expect("ready");

    // Only reads: no host change, the pull is skipped and the VFS is as it was.
    let read_only = sh_out(
        &mut session,
        &mut vfs,
        "/p",
        "cat src/a.txt > /dev/null; ls -R > /dev/null",
    );
    assert_eq!(
        session.stats().unwatched_runs,
        0,
        "inotify is unavailable to this process (fs.inotify.max_user_instances or \
         max_user_watches reached?): the pull-skip under test cannot work"
    );
    assert_eq!(
        read_only.push.files_written, 0,
        "ensure_ready pushed already"
    );
    assert!(
        read_only
            .pull
            .as_ref()
            .is_some_and(devshell_vm_sync::SyncReport::is_noop),
        "{:?}",
        read_only.pull
    );
    assert_eq!(session.stats().pulls_skipped, 1);

    // Same-size in-place overwrite.
    sh(&mut session, &mut vfs, "/p", "printf AAAA > src/a.txt");
    assert_eq!(&*vfs.read_file("/p/src/a.txt").expect("read"), b"AAAA");
    // Mode only.
    sh(&mut session, &mut vfs, "/p", "chmod 755 src/b.txt");
    assert_eq!(vfs.stat("/p/src/b.txt").expect("stat").mode & 0o777, 0o755);
    // Mtime only.
    sh(&mut session, &mut vfs, "/p", "touch -d @1000000 src/b.txt");
    assert_eq!(
        vfs.stat("/p/src/b.txt").expect("stat").mtime,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    );
    // New nested directories, then a write inside them in a later run (needs new watches).
    sh(
        &mut session,
        &mut vfs,
        "/p",
        "mkdir -p x/y/z && echo 1 > x/y/z/f",
    );
    assert_eq!(&*vfs.read_file("/p/x/y/z/f").expect("read"), b"1\n");
    sh(&mut session, &mut vfs, "/p", "echo 2 > x/y/z/f");
    assert_eq!(&*vfs.read_file("/p/x/y/z/f").expect("read"), b"2\n");
    // Rename and delete.
    sh(
        &mut session,
        &mut vfs,
        "/p",
        "mv src/a.txt src/renamed.txt && rm -r x",
    );
    assert!(!vfs.exists("/p/src/a.txt"));
    assert!(!vfs.exists("/p/x"));
    assert_eq!(
        &*vfs.read_file("/p/src/renamed.txt").expect("read"),
        b"AAAA"
    );
    assert_eq!(
        session.stats().pulls_skipped,
        1,
        "every changing run pulled"
    );

    // A host change made outside any run (a stray background process) is pulled by the
    // next run even though that run itself changes nothing.
    let staging = session.staging_dir().expect("staging").to_path_buf();
    let b = find_file(&staging, "b.txt").expect("b.txt in staging");
    std::fs::write(&b, b"stray").expect("stray write");
    sh(&mut session, &mut vfs, "/p", "true");
    assert_eq!(&*vfs.read_file("/p/src/b.txt").expect("read"), b"stray");
    assert_eq!(session.stats().pulls_skipped, 1);

    // And the next no-op run skips again.
    sh(&mut session, &mut vfs, "/p", "true");
    assert_eq!(session.stats().pulls_skipped, 2);
    assert_eq!(session.stats().runs, 9);
}
