//! Ctrl-C while a tool runs: the interrupt reaches the tool's process group, this process
//! survives, and the session still pulls what the tool wrote before it stopped.
//!
//! Its own test binary: the signal goes to the whole test process, so no other test may
//! run tools at the same time.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::VmConfig;
use devshell_vm_vfs::Vfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if entry.file_name() == name {
            return Some(path);
        }
        if entry.file_type().ok()?.is_dir()
            && let Some(found) = find(&path, name)
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn ctrl_c_stops_the_tool_and_the_session_still_pulls() {
    let base = tempfile::tempdir().expect("tempdir");
    let config = VmConfig {
        export_base: Some(base.path().to_path_buf()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    };
    let mut session = HostSandboxSession::new(&config);
    // The caller asks for forwarding (the CLI does); a library caller that does not ask
    // keeps its own signal handlers (tests/signals_untouched.rs).
    session.set_forward_interrupts(true);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    session.ensure_ready(&vfs, "/p").expect("ready");
    let staging = session
        .staging_dir()
        .expect("staging created")
        .to_path_buf();

    let interrupter = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline {
            if find(&staging, "started.txt").is_some() {
                kill(Pid::this(), Signal::SIGINT).expect("send SIGINT to this process");
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });

    let status = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &[
                "-c".to_owned(),
                "echo started > started.txt; sleep 60; echo late > late.txt".to_owned(),
            ],
        )
        .expect("an interrupted tool is a status, not an infrastructure error");
    assert!(
        interrupter.join().expect("thread"),
        "the tool never started"
    );
    assert_eq!(status.signal(), Some(libc_sigint()), "{status:?}");
    assert_eq!(
        &*vfs.read_file("/p/started.txt").expect("pulled"),
        b"started\n"
    );
    assert!(!vfs.exists("/p/late.txt"));
    session.shutdown().expect("shutdown");
}

fn libc_sigint() -> i32 {
    Signal::SIGINT as i32
}
