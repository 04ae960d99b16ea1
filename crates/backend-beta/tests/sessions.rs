//! `BetaSession` against a real `devshell-vm-sidecar` process: Mode S with a real
//! `cargo build` over a Unix socket, TCP (with a token) and stdio; Mode P guest ops and
//! exec; exit statuses; timeouts; broken connection and reconnect.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Dirs, Sidecar, config, sidecar_bin, tcp_sidecar, unix_sidecar, write_hello_crate};
use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_exec::{OutputMode, StreamKind, Termination, ToolRequest};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestKind};
use devshell_vm_vfs::Vfs;

fn capture(program: &str, args: &[&str]) -> ToolRequest {
    ToolRequest::new(program, args.iter().copied())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

/// Builds the hello crate from `/work/hello/src` through `session` and checks that the
/// binary came back into the VFS, executable, and runs on the guest with its exit code.
fn mode_s_cargo_cycle(session: &mut BetaSession) {
    let mut vfs = Vfs::new();
    write_hello_crate(&mut vfs, "/work/hello");
    session
        .ensure_ready(&vfs, "/work/hello/src")
        .expect("ensure_ready");
    let outcome = session
        .run_tool(
            &mut vfs,
            "/work/hello/src",
            &capture("cargo", &["build", "--offline", "--quiet"]),
        )
        .expect("run cargo build");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "cargo build failed: {}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    let pull = outcome.pull.expect("Mode S pulls after the run");
    assert!(
        pull.files_written > 0,
        "the pull brought nothing back: {pull:?}"
    );
    let binary = vfs
        .read_file("/work/hello/target/debug/hello")
        .expect("the built binary is in the VFS");
    assert_eq!(&binary[..4], b"\x7fELF", "not an ELF binary");
    let meta = vfs.stat("/work/hello/target/debug/hello").expect("stat");
    assert_ne!(
        meta.mode & 0o111,
        0,
        "binary lost its exec bits: {:o}",
        meta.mode
    );

    // Run the built binary on the guest: output streams back, exit code kept.
    let outcome = session
        .run_tool(
            &mut vfs,
            "/work/hello",
            &capture("sh", &["-c", "./target/debug/hello"]),
        )
        .expect("run hello");
    assert_eq!(outcome.exec.termination, Termination::Exited(7));
    assert_eq!(outcome.exec.stdout, b"hello from beta\n");

    // A change in the VFS reaches the guest on the next run (incremental push).
    vfs.write_file(
        "/work/hello/src/main.rs",
        b"fn main() { println!(\"second\"); }\n".to_vec(),
    )
    .expect("edit");
    let outcome = session
        .run_tool(
            &mut vfs,
            "/work/hello",
            &capture("cargo", &["run", "--offline", "--quiet"]),
        )
        .expect("cargo run");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "cargo run failed: {}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    assert_eq!(outcome.exec.stdout, b"second\n");

    // A file the tool writes comes back; one it deletes goes away.
    let outcome = session
        .run_tool(
            &mut vfs,
            "/work/hello",
            &capture("sh", &["-c", "echo made > made.txt && rm Cargo.lock"]),
        )
        .expect("sh");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
    assert_eq!(
        &vfs.read_file("/work/hello/made.txt").expect("made.txt")[..],
        b"made\n"
    );
    assert!(!vfs.exists("/work/hello/Cargo.lock"));

    let status = session
        .run_rust_tool(
            &mut vfs,
            "/work/hello",
            "sh",
            &["-c".into(), "exit 3".into()],
        )
        .expect("run_rust_tool");
    assert_eq!(status.code(), Some(3));
    session.shutdown(&mut vfs, "/work/hello").expect("shutdown");
}

#[test]
fn mode_s_cargo_build_over_unix_socket() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let staging = dirs.staging("staging");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    assert!(session.syncs_vfs_with_host_workspace());
    let caps = session.capabilities().expect("connect");
    assert!(
        caps.exec_stream && caps.guest_fs_v2 && caps.sync_verify,
        "{caps:?}"
    );
    mode_s_cargo_cycle(&mut session);
    // The override staging dir is never removed by the session.
    assert!(std::path::Path::new(&staging).is_dir());
}

#[test]
fn mode_s_cargo_build_over_tcp_with_token() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = tcp_sidecar(&dirs.root, "s3cret-token");
    let token_file = dirs.tmp.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let staging = dirs.staging("staging");

    // Without the token the handshake is refused, with a typed error.
    let mut anonymous = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    match anonymous.capabilities() {
        Err(BetaError::Remote { during, code, .. }) => {
            assert_eq!(
                (during.as_str(), code.as_str()),
                ("handshake", "unauthorized")
            );
        }
        other => panic!("expected an unauthorized handshake, got {other:?}"),
    }
    // A wrong token too.
    let wrong = dirs.tmp.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let mut wrong_session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_TOKEN_FILE", wrong.to_str().unwrap()),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    assert!(matches!(
        wrong_session.capabilities(),
        Err(BetaError::Remote { ref code, .. }) if code == "unauthorized"
    ));

    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_TOKEN_FILE", token_file.to_str().unwrap()),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    mode_s_cargo_cycle(&mut session);
}

#[test]
fn mode_s_cargo_build_over_stdio_and_the_sidecar_is_reaped() {
    let dirs = Dirs::new();
    let staging = dirs.staging("staging");
    let bin = sidecar_bin();
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", "stdio"),
        ("DEVSHELL_VM_SIDECAR_BIN", bin.to_str().unwrap()),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    session.capabilities().expect("spawn + handshake");
    let pid = session.sidecar_pid().expect("stdio session owns a sidecar");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    mode_s_cargo_cycle(&mut session);
    // shutdown dropped the connection: the child was stopped and reaped.
    assert!(session.sidecar_pid().is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sidecar {pid} still exists (not reaped)"
    );
}

#[test]
fn stdio_without_a_sidecar_binary_is_a_clear_error() {
    let err = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", "stdio"),
        ("PATH", "/nonexistent-dir"),
    ]))
    .expect_err("no sidecar on PATH");
    assert!(matches!(err, BetaError::SidecarNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("DEVSHELL_VM_SIDECAR_BIN"), "{err}");
    let err = BetaSession::new(&config(&[])).expect_err("no socket");
    assert!(matches!(err, BetaError::NoTransport));
}

#[test]
fn default_staging_dir_is_private_and_removed_at_shutdown() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_EXPORT_BASE", dirs.root.to_str().unwrap()),
    ]))
    .expect("session");
    let staging = session.staging_dir().to_path_buf();
    assert!(staging.starts_with(&dirs.root));
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file("/p/a.txt", b"a".to_vec()).unwrap();
    let outcome = session
        .run_tool(&mut vfs, "/p", &capture("cat", &["a.txt"]))
        .expect("cat");
    assert_eq!(outcome.exec.stdout, b"a");
    let mode = std::fs::metadata(&staging).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "staging dir mode {mode:o}");
    session.shutdown(&mut vfs, "/p").expect("shutdown");
    assert!(!staging.exists(), "owned staging dir not removed");
}

#[test]
fn mode_p_guest_ops_and_exec_over_unix_socket() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let staging = dirs.staging("guest");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    assert!(!session.syncs_vfs_with_host_workspace());
    assert_eq!(session.guest_mount(), "/workspace");

    session
        .write_file("/workspace/app/src/main.rs", b"fn main() {}\n")
        .expect("write creates parents");
    // Really on the shared staging dir.
    assert_eq!(
        std::fs::read(format!("{staging}/app/src/main.rs")).unwrap(),
        b"fn main() {}\n"
    );
    assert_eq!(session.list_dir("/workspace/app").unwrap(), ["src"]);
    assert_eq!(
        session.stat("/workspace/app/src/main.rs").unwrap().kind,
        GuestKind::File
    );
    assert!(session.exists("/workspace/app").unwrap());
    assert!(!session.exists("/workspace/nope").unwrap());
    session
        .rename("/workspace/app/src/main.rs", "/workspace/app/src/lib.rs")
        .expect("rename");
    assert_eq!(session.list_dir("/workspace/app/src").unwrap(), ["lib.rs"]);
    assert!(matches!(
        session.read_file("/workspace/../etc/passwd"),
        Err(GuestFsError::InvalidPath { .. })
    ));
    assert!(matches!(
        session.read_file("/workspace/app/missing"),
        Err(GuestFsError::NotFound { .. })
    ));

    // exec in the guest image of the cwd: /app on the VFS side → /workspace/app.
    let mut vfs = Vfs::new();
    let mut streamed = Vec::new();
    let outcome = session
        .run_tool_with(
            &mut vfs,
            "/app",
            &ToolRequest::new("sh", ["-c", "ls src; echo err >&2"])
                .stdout(OutputMode::Stream)
                .stderr(OutputMode::Capture),
            &mut |kind, data| {
                assert_eq!(kind, StreamKind::Stdout);
                streamed.extend_from_slice(data);
            },
            None,
        )
        .expect("exec");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
    assert_eq!(streamed, b"lib.rs\n");
    assert_eq!(outcome.exec.stderr, b"err\n");
    assert!(outcome.pull.is_none(), "Mode P never syncs");
    assert!(
        vfs.walk("/").unwrap().count() == 1,
        "Mode P left the VFS alone"
    );
    session.shutdown(&mut vfs, "/app").expect("shutdown");
    // Mode P keeps the guest tree.
    assert!(std::path::Path::new(&format!("{staging}/app/src/lib.rs")).exists());
}

#[test]
fn exit_codes_and_signals_are_kept_apart_and_timeouts_are_typed() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let staging = dirs.staging("guest");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    let mut vfs = Vfs::new();
    let run = |session: &mut BetaSession, vfs: &mut Vfs, script: &str| {
        session
            .run_tool(vfs, "/", &capture("sh", &["-c", script]))
            .expect("exec")
            .exec
    };
    assert_eq!(
        run(&mut session, &mut vfs, "exit 0").termination,
        Termination::Exited(0)
    );
    assert_eq!(
        run(&mut session, &mut vfs, "exit 255").termination,
        Termination::Exited(255)
    );
    assert_eq!(
        run(&mut session, &mut vfs, "exit 1").termination,
        Termination::Exited(1)
    );
    let killed = run(&mut session, &mut vfs, "kill -TERM $$");
    assert_eq!(killed.termination, Termination::Signaled(15));
    assert!(!killed.success());
    let status = session
        .run_rust_tool(&mut vfs, "/", "sh", &["-c".into(), "kill -KILL $$".into()])
        .expect("signal is a status, not an error");
    assert_eq!(status.code(), None);
    assert!(!status.success());

    // Timeout: the exec_timeout frame becomes Termination::TimedOut (run_tool) and
    // ExecTimeout (run_rust_tool); the connection stays usable.
    let outcome = session
        .run_tool(
            &mut vfs,
            "/",
            &capture("sleep", &["30"]).timeout(Some(Duration::from_millis(200))),
        )
        .expect("timeout is an outcome");
    assert_eq!(outcome.exec.termination, Termination::TimedOut);
    let mut timed = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
        ("DEVSHELL_VM_EXEC_TIMEOUT_MS", "200"),
    ]))
    .expect("session");
    let err = timed
        .run_rust_tool(&mut vfs, "/", "sleep", &["30".into()])
        .expect_err("timeout");
    assert!(
        matches!(
            err,
            BetaError::Session(devshell_vm_backend_beta::SessionError::Timeout { .. })
        ),
        "{err:?}"
    );
    // A program the sidecar cannot start is an error, not an exit status.
    let err = session
        .run_tool(&mut vfs, "/", &capture("definitely-not-a-program-xyz", &[]))
        .expect_err("spawn failure");
    assert!(matches!(err, BetaError::Exec { .. }), "{err:?}");
    assert_eq!(
        session.connections_opened(),
        1,
        "errors above must not drop the connection"
    );
}

#[test]
fn broken_connection_is_reported_once_then_reconnects() {
    let dirs = Dirs::new();
    let mut sidecar = Sidecar::unix_at(&dirs.socket, &dirs.root);
    let staging = dirs.staging("guest");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", dirs.socket.to_str().unwrap()),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    session.write_file("/workspace/f", b"1").expect("write");
    assert_eq!(session.connections_opened(), 1);

    sidecar.kill();
    let err = session
        .read_file("/workspace/f")
        .expect_err("sidecar is gone");
    assert!(matches!(err, GuestFsError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("lost"), "{err}");
    assert!(!session.is_connected(), "a broken connection is dropped");
    // Nobody listening: the reconnect attempt fails with a connect error.
    let mut vfs = Vfs::new();
    let err = session
        .run_tool(&mut vfs, "/", &capture("true", &[]))
        .expect_err("no sidecar");
    assert!(matches!(err, BetaError::Connect { .. }), "{err:?}");

    // A new sidecar on the same socket path: the next call reconnects and handshakes.
    let _restarted = Sidecar::unix_at(&dirs.socket, &dirs.root);
    assert_eq!(
        session.read_file("/workspace/f").expect("reconnected"),
        b"1"
    );
    assert_eq!(session.connections_opened(), 2);
    let outcome = session
        .run_tool(&mut vfs, "/", &capture("true", &[]))
        .expect("exec after reconnect");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
}

#[test]
fn cancel_handle_stops_the_tool_and_the_session_reconnects() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let staging = dirs.staging("guest");
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("session");
    let cancel = devshell_vm_exec::CancelHandle::new();
    let mut vfs = Vfs::new();
    let trigger = cancel.clone();
    let outcome = session
        .run_tool_with(
            &mut vfs,
            "/",
            &ToolRequest::new("sh", ["-c", "echo started; exec sleep 30"])
                .stdout(OutputMode::Stream),
            // Cancel as soon as the tool is known to be running.
            &mut |_, _| trigger.cancel(),
            Some(&cancel),
        )
        .expect("cancelled run is an outcome");
    assert_eq!(outcome.exec.termination, Termination::Cancelled);
    let outcome = session
        .run_tool(&mut vfs, "/", &capture("echo", &["again"]))
        .expect("reconnects");
    assert_eq!(outcome.exec.stdout, b"again\n");
    assert_eq!(session.connections_opened(), 2);
}

#[test]
fn unix_connect_has_a_deadline_when_nothing_accepts() {
    use nix::errno::Errno;
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
    };
    use std::os::fd::AsRawFd;

    let dirs = Dirs::new();
    // A "sidecar" that listens but never accepts, its backlog filled up.
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let address = UnixAddr::new(&dirs.socket).unwrap();
    bind(listener.as_raw_fd(), &address).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => queued.push(fd),
            Err(Errno::EAGAIN) => break,
            Err(errno) => panic!("filling the backlog: {errno}"),
        }
        assert!(queued.len() < 10_000, "the backlog never filled up");
    }
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", dirs.socket.to_str().unwrap()),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &dirs.staging("guest")),
    ]))
    .expect("session");
    session.set_io_timeout(Duration::from_millis(300));
    match session.capabilities() {
        Err(BetaError::Connect { transport, source }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::TimedOut, "{source}");
            assert_eq!(transport, dirs.socket.to_str().unwrap());
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert!(!session.is_connected());
    drop(queued);
}

#[test]
fn stdio_sidecar_found_on_path_is_owned_and_reaped_on_drop() {
    let dirs = Dirs::new();
    let staging = dirs.staging("guest");
    let bin = sidecar_bin();
    let bin_dir = bin.parent().unwrap().to_str().unwrap().to_owned();
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", "stdio"),
        ("PATH", &format!("{bin_dir}:/usr/bin:/bin")),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
    ]))
    .expect("the sidecar is found on PATH");
    session
        .write_file("/workspace/f.txt", b"over stdio")
        .expect("write");
    assert_eq!(
        std::fs::read(format!("{staging}/f.txt")).unwrap(),
        b"over stdio"
    );
    let pid = session
        .sidecar_pid()
        .expect("the session spawned a sidecar");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        std::fs::canonicalize(&bin).unwrap(),
        "the PATH lookup found another binary"
    );
    drop(session);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sidecar {pid} outlived the session that owns it"
    );
}

#[test]
fn tcp_colon_form_and_tcp_url_form_both_connect() {
    let dirs = Dirs::new();
    let (sidecar, url) = tcp_sidecar(&dirs.root, "colon-token");
    let token_file = dirs.tmp.path().join("token");
    std::fs::write(&token_file, "colon-token").unwrap();
    let addr = sidecar.tcp_addr().unwrap();
    assert_eq!(url, format!("tcp://{addr}"));
    for (socket, name) in [(format!("tcp:{addr}"), "colon"), (url, "url")] {
        let staging = dirs.staging(name);
        let mut session = BetaSession::new(&config(&[
            ("DEVSHELL_VM_SOCKET", &socket),
            ("DEVSHELL_VM_TOKEN_FILE", token_file.to_str().unwrap()),
            ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
            ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
        ]))
        .expect("session");
        session.write_file("/workspace/x", name.as_bytes()).unwrap();
        assert_eq!(
            std::fs::read(format!("{staging}/x")).unwrap(),
            name.as_bytes()
        );
    }
}

#[test]
fn a_peer_that_stops_reading_hits_the_write_deadline() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    let dirs = Dirs::new();
    let listener = UnixListener::bind(&dirs.socket).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // A peer that answers the handshake and session_start, then never reads again.
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for reply in [
            r#"{"op":"handshake_ok","version":1,"server":"stuck","server_version":"0"}"#,
            r#"{"op":"session_ok","session_id":"x"}"#,
        ] {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            writer.write_all(format!("{reply}\n").as_bytes()).unwrap();
        }
        // Keep the connection open (unread) until the test is done with it.
        tx.send((reader, writer)).unwrap();
    });
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", dirs.socket.to_str().unwrap()),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &dirs.staging("guest")),
    ]))
    .expect("session");
    session.set_io_timeout(Duration::from_millis(300));
    assert!(!session.capabilities().unwrap().exec_stream);
    // Far more than a socket buffer holds: the write itself must give up.
    let err = session
        .write_file("/workspace/big", &vec![b'x'; 16 * 1024 * 1024])
        .expect_err("nobody reads");
    assert!(
        matches!(&err, GuestFsError::Transport { message } if message.contains("did not answer guest_fs within")),
        "{err:?}"
    );
    assert!(!session.is_connected(), "a timed-out connection is dropped");
    drop(rx.recv().unwrap());
}

/// Runs a tool with inherited output through a real sidecar. On its own it checks the
/// outcome; [`inherited_exec_output_reaches_the_callers_stdout_and_stderr`] runs it in a
/// child test process and checks what reached that process's stdout and stderr.
#[test]
fn exec_output_inherit_writes_to_this_process() {
    let dirs = Dirs::new();
    let (_sidecar, socket) = unix_sidecar(&dirs.root);
    let mut session = BetaSession::new(&config(&[
        ("DEVSHELL_VM_SOCKET", &socket),
        ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
        ("DEVSHELL_VM_BETA_SESSION_STAGING", &dirs.staging("guest")),
    ]))
    .expect("session");
    let mut vfs = Vfs::new();
    let outcome = session
        .run_tool(
            &mut vfs,
            "/",
            &ToolRequest::new("sh", ["-c", "echo inherit-out-7; echo inherit-err-7 >&2"])
                .stdout(OutputMode::Inherit)
                .stderr(OutputMode::Inherit),
        )
        .expect("exec");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
    assert!(outcome.exec.stdout.is_empty() && outcome.exec.stderr.is_empty());
}

#[test]
fn inherited_exec_output_reaches_the_callers_stdout_and_stderr() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "exec_output_inherit_writes_to_this_process",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .expect("run the helper test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helper failed: {stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the helper did not run: {stdout}"
    );
    // The sidecar's own stderr goes to the test's log pipe, so these lines can only have
    // come back as exec_output frames delivered to this process's streams.
    assert!(stdout.contains("inherit-out-7\n"), "stdout: {stdout}");
    assert!(stderr.contains("inherit-err-7\n"), "stderr: {stderr}");
    assert!(
        !stdout.contains("inherit-err-7"),
        "stderr went to stdout: {stdout}"
    );
    assert!(
        !stderr.contains("inherit-out-7"),
        "stdout went to stderr: {stderr}"
    );
}
