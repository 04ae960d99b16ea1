//! When change tracking cannot be trusted the pull scans everything, and the result is
//! still exact: a queue overflow (more events than `max_queued_events` during one run),
//! and the watch limit (set low in a user namespace of its own, where
//! `/proc/sys/user/max_inotify_watches` belongs to the test).
//!
//! Its own test binary: the inotify instance is shared by the whole process, and another
//! test's session reading it in the middle of the burst would (correctly) drain the
//! queue before it overflows.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{config, sh_out};
use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_vfs::Vfs;

/// `rel → (is dir, content, mtime ns)` of a host tree, and the same of the VFS.
fn host_tree(root: &Path) -> BTreeMap<String, (bool, Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).expect("list").flatten() {
            let name = entry.file_name().into_string().expect("UTF-8");
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = std::fs::symlink_metadata(root.join(&child)).expect("lstat");
            let ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            if meta.is_dir() {
                stack.push(child.clone());
                out.insert(child, (true, Vec::new(), ns));
            } else {
                out.insert(
                    child.clone(),
                    (false, std::fs::read(root.join(&child)).expect("read"), ns),
                );
            }
        }
    }
    out
}

fn vfs_tree(vfs: &Vfs, root: &str) -> BTreeMap<String, (bool, Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    for item in vfs.walk(root).expect("walk") {
        let Some(rel) = item.path.strip_prefix(&format!("{root}/")) else {
            continue;
        };
        let meta = item.node.metadata();
        let ns = i64::try_from(
            meta.mtime
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch")
                .as_nanos(),
        )
        .expect("fits");
        let content = item.content().expect("readable").map(|c| c.to_vec());
        let not_file = content.is_none();
        out.insert(rel.to_owned(), (not_file, content.unwrap_or_default(), ns));
    }
    out
}

fn start(base: &Path, dirs: usize) -> (HostSandboxSession, Vfs) {
    let mut session = HostSandboxSession::new(&config(base));
    let mut vfs = Vfs::new();
    for i in 0..dirs {
        vfs.mkdir(&format!("/p/d{i}/sub")).expect("mkdir");
        vfs.write_file(&format!("/p/d{i}/sub/f"), format!("{i}"))
            .expect("write");
    }
    session.ensure_ready(&vfs, "/p").expect("ready");
    (session, vfs)
}

fn leaf(session: &HostSandboxSession) -> std::path::PathBuf {
    session.staging_dir().expect("staging").join("0/p")
}

#[test]
fn lost_events_fall_back_to_a_full_scan() {
    let base = tempfile::tempdir().expect("tempdir");
    let (mut session, mut vfs) = start(base.path(), 2);
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .expect("max_queued_events")
        .trim()
        .parse()
        .expect("a number");
    // Each file in a watched directory costs a create, a modify and a close-write.
    let files = limit / 2 + 100;
    let script =
        format!("cd d0 && i=0; while [ $i -lt {files} ]; do echo $i > n$i; i=$((i+1)); done");
    let pull = sh_out(&mut session, &mut vfs, "/p", &script)
        .pull
        .expect("pulled");
    assert!(
        pull.full_scan,
        "an overflowed queue must mean a full scan: {pull:?}"
    );
    assert_eq!(vfs.list_dir("/p/d0").expect("d0").len(), files + 1);
    assert_eq!(vfs_tree(&vfs, "/p"), host_tree(&leaf(&session)));
    // Afterwards tracking works again (every watch was re-walked).
    let pull = sh_out(&mut session, &mut vfs, "/p", "echo again > d0/n1")
        .pull
        .expect("pulled");
    assert!(!pull.full_scan, "{pull:?}");
    assert_eq!(&*vfs.read_file("/p/d0/n1").expect("read"), b"again\n");
    assert_eq!(session.stats().unwatched_runs, 0);
}

/// The low limit this test sets inside its own user namespace.
const LOW_LIMIT: &str = "8";

#[test]
fn the_watch_limit_falls_back_to_full_scans() {
    let current = std::fs::read_to_string("/proc/sys/user/max_inotify_watches")
        .expect("/proc/sys/user/max_inotify_watches (Linux >= 5.x user namespace limits)");
    if current.trim() != LOW_LIMIT {
        // Outside: run this very test again in a user namespace with a low limit.
        let exe = std::env::current_exe().expect("test binary");
        let script = format!(
            "echo {LOW_LIMIT} > /proc/sys/user/max_inotify_watches && exec \"$0\" --exact the_watch_limit_falls_back_to_full_scans --nocapture --test-threads 1"
        );
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "sh", "-c", &script])
            .arg(&exe)
            .output()
            .expect("unshare (util-linux) runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the test inside a user namespace failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
        return;
    }
    // Inside: more directories than the namespace may watch.
    let base = tempfile::tempdir().expect("tempdir");
    let (mut session, mut vfs) = start(base.path(), 10);
    let pull = sh_out(
        &mut session,
        &mut vfs,
        "/p",
        "echo x > d3/sub/f; mkdir d9/new; echo y > d9/new/g",
    )
    .pull
    .expect("pulled");
    assert!(pull.full_scan, "{pull:?}");
    assert!(session.stats().unwatched_runs >= 1, "{:?}", session.stats());
    assert_eq!(&*vfs.read_file("/p/d3/sub/f").expect("read"), b"x\n");
    assert_eq!(&*vfs.read_file("/p/d9/new/g").expect("read"), b"y\n");
    assert_eq!(vfs_tree(&vfs, "/p"), host_tree(&leaf(&session)));
}
