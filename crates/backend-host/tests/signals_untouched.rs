//! A library call does not take over the application's signals: without
//! `set_forward_interrupts(true)`, `run_rust_tool` registers no handler, and a `SIGTERM`
//! the application handles itself still reaches the application's own handler.
//!
//! Its own test binary: it inspects process-wide signal state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::VmConfig;
use devshell_vm_vfs::Vfs;

#[test]
fn run_rust_tool_leaves_signal_handlers_alone_unless_asked() {
    // The application's own handler, installed before any session exists.
    let seen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&seen))
        .expect("application handler");

    let base = tempfile::tempdir().expect("tempdir");
    let config = VmConfig {
        export_base: Some(base.path().to_path_buf()),
        ..VmConfig::disabled()
    };
    let mut session = HostSandboxSession::new(&config);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    // `VmConfig::disabled()` has no PATH: the process PATH finds `sh`.
    let status = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "echo ok > f".to_owned()],
        )
        .expect("run with the process PATH");
    assert!(status.success());
    assert!(
        !devshell_vm_exec::interrupt_handlers_installed(),
        "a library run without forwarding must not register signal handlers"
    );

    session.set_forward_interrupts(true);
    let status = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .expect("run with forwarding");
    assert!(status.success());
    assert!(devshell_vm_exec::interrupt_handlers_installed());

    // The application's handler still runs after the session's runs.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGUSR1).expect("raise");
    assert!(seen.load(Ordering::SeqCst));
    session.shutdown().expect("shutdown");
}
