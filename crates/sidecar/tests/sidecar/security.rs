//! Symlink confinement, TCP tokens, socket safety and the peer uid check.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::{Client, assert_error, bin, builder, staging};

#[test]
fn guest_fs_and_guest_cwd_cannot_escape_through_symlinks() {
    let st = staging();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, b"top secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), st.dir.join("abs-out")).unwrap();
    std::os::unix::fs::symlink("../..", st.dir.join("rel-out")).unwrap();
    std::os::unix::fs::symlink(&secret, st.dir.join("secret-link")).unwrap();
    std::fs::create_dir(st.dir.join("inside")).unwrap();
    std::os::unix::fs::symlink("inside", st.dir.join("in-link")).unwrap();
    std::os::unix::fs::symlink("/workspace/inside", st.dir.join("in-abs-link")).unwrap();

    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);

    for path in [
        "/workspace/abs-out/secret.txt",
        "/workspace/secret-link",
        "/workspace/rel-out/etc/passwd",
    ] {
        let r = client.fs("read_file", path, &json!({}));
        assert_error(&r, "guest_fs_error", "invalid_path");
    }
    for path in [
        "/workspace/abs-out/planted",
        "/workspace/secret-link",
        "/workspace/abs-out/new/dir/f",
    ] {
        let r = client.fs("write_file", path, &json!({"content_base64": "cHduZWQ="}));
        assert_error(&r, "guest_fs_error", "invalid_path");
    }
    assert_error(
        &client.fs("list_dir", "/workspace/abs-out", &json!({})),
        "guest_fs_error",
        "invalid_path",
    );
    assert_error(
        &client.fs("mkdir", "/workspace/abs-out/d", &json!({})),
        "guest_fs_error",
        "invalid_path",
    );
    assert_error(
        &client.fs("remove", "/workspace/abs-out/secret.txt", &json!({})),
        "guest_fs_error",
        "invalid_path",
    );
    let r = client.fs(
        "rename",
        "/workspace/abs-out/secret.txt",
        &json!({"to_path": "/workspace/stolen"}),
    );
    assert_error(&r, "guest_fs_error", "invalid_path");
    for cwd in ["/workspace/abs-out", "/workspace/rel-out"] {
        let (_, r) = client.exec(
            &["sh", "-c", "echo pwned > planted"],
            &json!({"guest_cwd": cwd}),
        );
        assert_error(&r, "error", "bad_guest_cwd");
    }
    // Outside is untouched.
    assert_eq!(std::fs::read(&secret).unwrap(), b"top secret");
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["secret.txt"]);

    // Links that stay inside work; removing a link removes only the link.
    let w = client.fs(
        "write_file",
        "/workspace/in-link/ok.txt",
        &json!({"content_base64": "b2s="}),
    );
    assert_eq!(w["op"], "guest_fs_ok", "{w}");
    let r = client.fs("read_file", "/workspace/in-abs-link/ok.txt", &json!({}));
    assert_eq!(r["content_base64"], "b2s=", "{r}");
    let (_, r) = client.exec(
        &["test", "-f", "ok.txt"],
        &json!({"guest_cwd": "/workspace/in-link"}),
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(
        client.fs("stat", "/workspace/abs-out", &json!({}))["stat"]["kind"],
        "symlink"
    );
    assert_eq!(
        client.fs("remove", "/workspace/abs-out", &json!({}))["op"],
        "guest_fs_ok"
    );
    assert!(secret.exists());
}

#[test]
fn tcp_requires_the_token() {
    let st = staging();
    let sidecar = builder(st.root.path()).token("s3cret-token").start_tcp();
    let mut client = Client::of(&sidecar);
    // Nothing before the handshake.
    assert_error(&client.session(&st.dir), "error", "unauthorized");
    assert_error(&client.handshake(None, None), "error", "unauthorized");
    assert_error(
        &client.handshake(None, Some("wrong")),
        "error",
        "unauthorized",
    );
    assert_error(
        &client.handshake(None, Some("s3cret-token-and-more")),
        "error",
        "unauthorized",
    );
    let (_, r) = client.exec(&["true"], &json!({}));
    assert_error(&r, "error", "unauthorized");
    // The same connection can still authenticate.
    let hs = client.handshake(Some(&["exec-stream"]), Some("s3cret-token"));
    assert_eq!(hs["op"], "handshake_ok", "{hs}");
    assert_eq!(client.session(&st.dir)["op"], "session_ok");
    crate::common::wait_until(
        "the sidecar logs the refused handshake",
        std::time::Duration::from_secs(10),
        || sidecar.logs().contains("(token required)"),
    );
    let logs = sidecar.logs();
    assert!(
        !logs.contains("s3cret-token"),
        "the token leaked into the log"
    );
}

#[test]
fn tcp_without_token_needs_explicit_insecure_loopback() {
    let st = staging();
    let out = Command::new(bin())
        .args(["--serve-tcp", "127.0.0.1:0", "--root"])
        .arg(st.root.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));

    let out = Command::new(bin())
        .args(["--serve-tcp", "0.0.0.0:0", "--insecure-no-auth", "--root"])
        .arg(st.root.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{out:?}"
    );

    let sidecar = builder(st.root.path()).insecure_no_auth().start_tcp();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let (_, r) = client.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0);
}

#[test]
fn unix_socket_is_private_and_never_replaces_a_non_socket() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let socket = sidecar.socket_path().unwrap();
    let meta = std::fs::symlink_metadata(socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());

    // A second sidecar on a live socket refuses (and leaves it alone).
    let out = Command::new(bin())
        .arg("--serve-socket")
        .arg(socket)
        .arg("--root")
        .arg(st.root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another server"),
        "{out:?}"
    );
    let mut client = Client::of(&sidecar);
    assert_eq!(client.handshake(None, None)["op"], "handshake_ok");

    // A regular file at the path is never unlinked.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let victim = dir.path().join("not-a-socket");
    std::fs::write(&victim, b"precious").unwrap();
    let out = Command::new(bin())
        .arg("--serve-socket")
        .arg(&victim)
        .arg("--root")
        .arg(st.root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // A directory group or others can write to is refused, and nothing is created in
    // it (a readable 0755 one is fine: see hardening.rs).
    for mode in [0o777, 0o775, 0o757] {
        let shared_dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(shared_dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new(bin())
            .arg("--serve-socket")
            .arg(shared_dir.path().join("s.sock"))
            .arg("--root")
            .arg(st.root.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "mode {mode:o}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("has mode {mode:o}")) && stderr.contains("others can write"),
            "mode {mode:o}: {stderr}"
        );
        assert_eq!(
            std::fs::read_dir(shared_dir.path()).unwrap().count(),
            0,
            "mode {mode:o}: a socket was created in a refused directory"
        );
    }

    // A missing directory is created 0700.
    let fresh = tempfile::tempdir().unwrap();
    let nested = fresh.path().join("run/devshell");
    let mut child = Command::new(bin())
        .arg("--serve-socket")
        .arg(nested.join("s.sock"))
        .arg("--root")
        .arg(st.root.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "sidecar exited before listening");
        if line.contains("listening on unix:") {
            break;
        }
    }
    let mode = std::fs::metadata(&nested).unwrap().mode() & 0o777;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(mode, 0o700, "created socket dir mode {mode:o}");
}

/// Connects to `socket` as uid/gid 65534 (`nobody`) with perl, sends a handshake,
/// and returns everything the server sent back (or the connect error).
fn connect_as_nobody(socket: &std::path::Path) -> String {
    use std::os::unix::process::CommandExt;
    let script = r#"
        use IO::Socket::UNIX;
        $SIG{PIPE} = 'IGNORE';
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0])
            or do { print "CONNECT-FAILED: $!\n"; exit 0 };
        print $s qq({"op":"handshake","version":1,"client":"nobody","client_version":"0"}\n);
        while (my $l = <$s>) { print $l }
        print "EOF\n";
    "#;
    let out = Command::new("perl")
        .arg("-e")
        .arg(script)
        .arg(socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("perl runs (perl-base is part of every Debian system)");
    assert!(out.status.success(), "perl client failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_peer_with_another_uid_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to uid 65534 and must run as root (as CI does)"
    );
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let socket = sidecar.socket_path().unwrap().to_owned();
    // Layer 0: the 0700 directory keeps other users away from the socket.
    let out = connect_as_nobody(&socket);
    assert!(
        out.starts_with("CONNECT-FAILED"),
        "nobody reached a socket in a 0700 directory: {out}"
    );
    // The sidecar checks the directory only at startup: open it up for the next layers.
    std::fs::set_permissions(
        socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // Layer 1: the 0600 socket file keeps other users out entirely.
    let out = connect_as_nobody(&socket);
    assert!(
        out.starts_with("CONNECT-FAILED"),
        "nobody connected to a 0600 socket: {out}"
    );
    // Layer 2: even when the file is opened up, SO_PEERCRED refuses the peer.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = connect_as_nobody(&socket);
    let mut lines = out.lines();
    let first: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let message = assert_error(&first, "error", "unauthorized");
    assert!(message.contains("65534"), "{message}");
    assert_eq!(
        lines.next(),
        Some("EOF"),
        "the connection must be closed after the refusal: {out}"
    );
    // The log line is read from the sidecar's stderr by another thread: wait for it.
    crate::common::wait_until(
        "the sidecar logs the refused peer",
        std::time::Duration::from_secs(10),
        || sidecar.logs().contains("refused peer uid 65534"),
    );
    // Our own uid is still served.
    let mut client = Client::of(&sidecar);
    assert_eq!(client.handshake(None, None)["op"], "handshake_ok");
}

#[test]
fn tcp_peers_without_the_token_are_dropped_after_the_handshake_deadline() {
    let st = staging();
    let sidecar = builder(st.root.path())
        .token("deadline-token")
        .arg("--auth-timeout-ms")
        .arg("300")
        .start_tcp();
    // Silent peer: closed by the server.
    let mut silent = Client::of(&sidecar);
    assert!(
        silent.try_recv().is_none(),
        "an unauthenticated idle peer must be closed"
    );
    // Wrong token: answered, then closed at the deadline.
    let mut wrong = Client::of(&sidecar);
    assert_error(
        &wrong.handshake(None, Some("nope")),
        "error",
        "unauthorized",
    );
    assert!(wrong.try_recv().is_none());
    // Authenticated: the deadline no longer applies (idle well past it, then served).
    let mut good = Client::of(&sidecar);
    assert_eq!(
        good.handshake(None, Some("deadline-token"))["op"],
        "handshake_ok"
    );
    std::thread::sleep(std::time::Duration::from_millis(900));
    assert_eq!(good.session(&st.dir)["op"], "session_ok");
}
