//! Ctrl-C during a β run: the remote tool is cancelled, this process survives, and the
//! pull still brings back what the tool wrote. Its own test binary because it signals
//! this process.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Dirs, config, unix_sidecar};
use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_vfs::Vfs;
use nix::sys::signal::{Signal, raise};

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn ctrl_c_cancels_the_remote_tool_and_the_session_still_pulls() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_EXPORT_BASE", dirs.root.to_str().unwrap()),
    ]))
    .expect("session");
    // The caller asks for it (the CLI does); a library call leaves signals alone.
    session.set_forward_interrupts(true);
    let staging = session.staging_dir().to_path_buf();
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file("/p/keep.txt", b"kept".to_vec()).unwrap();

    let interrupter = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        while find_file(&staging, "partial.txt").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the tool never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        raise(Signal::SIGINT).expect("raise SIGINT");
    });
    let result = session.run_rust_tool(
        &mut vfs,
        "/p",
        "sh",
        &[
            "-c".to_owned(),
            "echo partial > partial.txt; exec sleep 30".to_owned(),
        ],
    );
    interrupter.join().expect("interrupter");
    assert!(
        matches!(
            result,
            Err(BetaError::Session(
                devshell_vm_backend_beta::SessionError::Cancelled { .. }
            ))
        ),
        "expected a cancelled run, got {result:?}"
    );
    assert_eq!(
        &*vfs.read_file("/p/partial.txt").expect("pulled"),
        b"partial\n"
    );
    assert_eq!(&*vfs.read_file("/p/keep.txt").expect("kept"), b"kept");
    // The session is still usable afterwards.
    let status = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .expect("next run reconnects");
    assert!(status.success());
}
