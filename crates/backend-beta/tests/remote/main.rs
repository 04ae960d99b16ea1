//! "Remote" made honest on one machine: the sidecar runs in its own mount namespace with
//! a private tmpfs as `--root`, over loopback TCP with a token, so client and sidecar
//! share no file: everything travels through `wire-sync`.

#![allow(clippy::unwrap_used)]

mod faults;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_protocol::{
    BlobRef, Handshake, KNOWN_CAPABILITIES, Reply, Request, WireBlobs, WireEntry, WireProject,
    WirePush, WireStart, digest_hex, encode_request, parse_reply, write_blob,
};
use devshell_vm_session::Backend as _;
use devshell_vm_vfs::Vfs;

use support::{Dir, Fault, Proxy, RemoteSidecar, TOKEN, session};

fn sh(cmd: &str) -> ToolRequest {
    ToolRequest::new("sh", ["-c".to_owned(), cmd.to_owned()])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

fn run_ok(session: &mut BetaSession, vfs: &mut Vfs, cwd: &str, cmd: &str) -> String {
    let outcome = session
        .run_tool(vfs, cwd, &sh(cmd))
        .unwrap_or_else(|err| panic!("`{cmd}` failed to run: {err}"));
    let stdout = String::from_utf8_lossy(&outcome.exec.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&outcome.exec.stderr).into_owned();
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "`{cmd}`: stdout {stdout}\nstderr {stderr}"
    );
    stdout + &stderr
}

/// A two-crate workspace: library `alpha`, binary `beta_app` using it.
fn write_workspace(vfs: &mut Vfs, root: &str) {
    vfs.mkdir(&format!("{root}/alpha/src")).unwrap();
    vfs.mkdir(&format!("{root}/app/src")).unwrap();
    vfs.write_file(
        &format!("{root}/Cargo.toml"),
        b"[workspace]\nmembers = [\"alpha\", \"app\"]\nresolver = \"2\"\n".to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{root}/alpha/Cargo.toml"),
        b"[package]\nname = \"alpha\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{root}/alpha/src/lib.rs"),
        b"pub fn answer() -> u32 { 42 }\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn answers() { assert_eq!(super::answer(), 42); }\n}\n".to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{root}/app/Cargo.toml"),
        b"[package]\nname = \"beta_app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nalpha = { path = \"../alpha\" }\n".to_vec(),
    )
    .unwrap();
    vfs.write_file(
        &format!("{root}/app/src/main.rs"),
        b"fn main() { println!(\"answer {}\", alpha::answer()); }\n".to_vec(),
    )
    .unwrap();
}

#[test]
fn cargo_build_test_and_an_incremental_rebuild_over_the_wire() {
    let sidecar = RemoteSidecar::start("1g", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    assert!(
        session.uses_wire_sync().unwrap(),
        "nothing is shared: auto must pick wire"
    );
    let mut vfs = Vfs::new();
    write_workspace(&mut vfs, "/ws");

    let out = run_ok(&mut session, &mut vfs, "/ws", "cargo build --offline 2>&1");
    assert!(
        out.contains("Compiling alpha") && out.contains("Compiling beta_app"),
        "{out}"
    );
    assert!(
        vfs.exists("/ws/target/debug/beta_app"),
        "build output pulled into the VFS"
    );
    let out = run_ok(&mut session, &mut vfs, "/ws", "cargo test --offline 2>&1");
    assert!(out.contains("test tests::answers ... ok"), "{out}");

    // Edit the binary only: only it recompiles.
    vfs.write_file(
        "/ws/app/src/main.rs",
        b"fn main() { println!(\"answer is {}\", alpha::answer()); }\n".to_vec(),
    )
    .unwrap();
    let out = run_ok(&mut session, &mut vfs, "/ws", "cargo build --offline 2>&1");
    assert!(out.contains("Compiling beta_app"), "{out}");
    assert!(
        !out.contains("Compiling alpha"),
        "alpha must not recompile:\n{out}"
    );
    let out = run_ok(&mut session, &mut vfs, "/ws", "./target/debug/beta_app");
    assert_eq!(out, "answer is 42\n");
    // The sidecar's files are invisible here: its root is a private tmpfs.
    assert_eq!(std::fs::read_dir(sidecar.root()).unwrap().count(), 0);
}

fn ns(t: SystemTime) -> i128 {
    i128::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

#[test]
fn deletions_renames_symlinks_modes_and_mtimes_round_trip_exactly() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = Vfs::new();
    let t = UNIX_EPOCH + Duration::new(1_650_000_000, 123_456_789);
    vfs.mkdir("/p/orig/sub").unwrap();
    vfs.mkdir("/p/dir").unwrap();
    vfs.write_file_with("/p/orig/run.sh", b"#!/bin/sh\necho hi\n".to_vec(), 0o755, t)
        .unwrap();
    vfs.write_file_with(
        "/p/orig/sub/data",
        b"data".to_vec(),
        0o600,
        t + Duration::new(1, 1),
    )
    .unwrap();
    vfs.symlink_with("sub/data", "/p/orig/link", t + Duration::new(2, 7))
        .unwrap();
    vfs.set_mtime("/p/orig/sub", t + Duration::new(3, 3))
        .unwrap();
    vfs.write_file("/p/dir/keep", b"k".to_vec()).unwrap();
    vfs.write_file("/p/gone", b"g".to_vec()).unwrap();
    run_ok(&mut session, &mut vfs, "/p", "true");

    // Client-side changes travel: a deletion, a renamed directory.
    vfs.remove("/p/gone").unwrap();
    vfs.rename("/p/dir", "/p/moved").unwrap();
    let listing = run_ok(
        &mut session,
        &mut vfs,
        "/p",
        "find . -path ./target -prune -o -print | sort",
    );
    assert!(!listing.contains("./gone"), "{listing}");
    assert!(!listing.contains("./dir"), "{listing}");
    assert!(listing.contains("./moved/keep"), "{listing}");

    // `cp -a` on the sidecar copies exactly what was pushed; the pull brings the copy
    // back: equal metadata proves both directions keep mode and mtime to the nanosecond.
    run_ok(&mut session, &mut vfs, "/p", "cp -a orig copy");
    for name in ["run.sh", "sub", "sub/data", "link"] {
        let a = vfs.stat(&format!("/p/orig/{name}")).unwrap();
        let b = vfs.stat(&format!("/p/copy/{name}")).unwrap();
        assert_eq!(
            (a.kind, a.mode, ns(a.mtime)),
            (b.kind, b.mode, ns(b.mtime)),
            "{name}"
        );
    }
    assert_eq!(ns(vfs.stat("/p/copy/run.sh").unwrap().mtime), ns(t));
    assert_eq!(vfs.stat("/p/copy/run.sh").unwrap().mode, 0o755);
    assert_eq!(vfs.read_link("/p/copy/link").unwrap(), "sub/data");

    // Tool-side changes travel back: delete, rename a directory, symlink, chmod, touch.
    run_ok(
        &mut session,
        &mut vfs,
        "/p",
        "rm orig/sub/data && mv moved renamed && ln -s ../run.sh copy/l2 && chmod 0755 copy/sub/data && touch -d '2001-02-03 04:05:06.987654321 UTC' renamed/keep",
    );
    assert!(!vfs.exists("/p/orig/sub/data"));
    assert!(!vfs.exists("/p/moved"));
    assert_eq!(&vfs.read_file("/p/renamed/keep").unwrap()[..], b"k");
    assert_eq!(
        ns(vfs.stat("/p/renamed/keep").unwrap().mtime),
        981_173_106_987_654_321
    );
    assert_eq!(vfs.read_link("/p/copy/l2").unwrap(), "../run.sh");
    assert_eq!(vfs.stat("/p/copy/sub/data").unwrap().mode, 0o755);
    // And the script really is executable over there.
    assert_eq!(
        run_ok(&mut session, &mut vfs, "/p", "./copy/run.sh"),
        "hi\n"
    );
}

#[test]
fn a_new_session_reuses_the_copy_and_a_small_edit_costs_little() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let mut vfs = Vfs::new();
    vfs.mkdir("/t/files").unwrap();
    let file_count = 200;
    for i in 0..file_count {
        let body: Vec<u8> = (0..4096u32).map(|j| ((i * 7 + j) % 251) as u8).collect();
        vfs.write_file(&format!("/t/files/f{i:03}"), body).unwrap();
    }
    let content_bytes = file_count * 4096;
    let mut first = session(sidecar.addr, &sidecar.token_file);
    run_ok(&mut first, &mut vfs, "/t", "true");
    let (sent, _) = first.connection_bytes();
    assert!(
        sent > u64::from(content_bytes),
        "first push carries the contents: {sent}"
    );
    drop(first);

    // A new session (a new process, say): full manifest, no contents.
    let mut second = session(sidecar.addr, &sidecar.token_file);
    run_ok(&mut second, &mut vfs, "/t", "true");
    let (sent, _) = second.connection_bytes();
    assert!(
        sent < u64::from(content_bytes) / 8,
        "a reconnect must not resend the tree: {sent} bytes sent for {content_bytes} of content"
    );

    // One changed 1 KiB file: a few KiB both ways, the exec included.
    let mut small = vec![b'x'; 1024];
    small[0] = b'y';
    vfs.write_file("/t/files/f007", small).unwrap();
    let before = second.connection_bytes();
    run_ok(&mut second, &mut vfs, "/t", "true");
    let after = second.connection_bytes();
    let (up, down) = (after.0 - before.0, after.1 - before.1);
    assert!(
        up <= 4096 && down <= 4096,
        "one 1 KiB edit cost {up} up, {down} down"
    );
    // A no-op run: O(1) bytes.
    let before = second.connection_bytes();
    run_ok(&mut second, &mut vfs, "/t", "true");
    let after = second.connection_bytes();
    assert!(
        after.0 - before.0 < 1024 && after.1 - before.1 < 1024,
        "{before:?} {after:?}"
    );
}

/// Runs `cmd` through `proxy` with `fault` armed; the run must fail with a clear error
/// and leave the VFS exactly as it was.
fn faulted_run(session: &mut BetaSession, vfs: &mut Vfs, cmd: &str) -> BetaError {
    let before = vfs.clone();
    let err = match session.run_tool(vfs, "/f", &sh(cmd)) {
        Ok(outcome) => panic!(
            "the run should have failed; it ended {:?}",
            outcome.exec.termination
        ),
        Err(err) => err,
    };
    assert!(
        vfs.same_tree(&before),
        "the VFS changed after a failed run: {err}"
    );
    err
}

/// The request in flight when a connection failure happened.
fn err_during(err: &BetaError) -> String {
    match err {
        BetaError::ConnectionLost { during, .. }
        | BetaError::Timeout { during, .. }
        | BetaError::Protocol { during, .. } => during.clone(),
        other => panic!("not a connection failure: {other}"),
    }
}

fn fault_vfs() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/f").unwrap();
    vfs.write_file("/f/big", vec![7u8; 3 << 20]).unwrap();
    vfs.write_file("/f/small", b"s".to_vec()).unwrap();
    vfs
}

#[test]
fn connection_cut_mid_push_and_mid_pull_leaves_the_vfs_unchanged() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let proxy = Proxy::start(sidecar.addr);
    let mut session = session(proxy.addr, &sidecar.token_file);
    let mut vfs = fault_vfs();
    // Mid-push: cut after 1 MiB of the 3 MiB blob went up.
    session.capabilities().unwrap();
    proxy.arm(Dir::Up, 1 << 20, Fault::Cut);
    let err = faulted_run(&mut session, &mut vfs, "true");
    assert!(err.is_connection_failure(), "{err}");
    assert!(
        proxy.fired.load(std::sync::atomic::Ordering::SeqCst),
        "the cut happened"
    );
    // Mid-pull: the tool writes 2 MiB; cut after 100 KiB came down.
    run_ok(&mut session, &mut vfs, "/f", "true");
    proxy.arm(Dir::Down, 100 << 10, Fault::Cut);
    // The cut must land in the pull, not the exec: the exec reply is a few hundred bytes.
    let err = faulted_run(
        &mut session,
        &mut vfs,
        "head -c 2097152 /dev/urandom > out.bin",
    );
    assert!(err.is_connection_failure(), "{err}");
    assert_eq!(err_during(&err), "wire_pull", "the cut hit the pull: {err}");
    assert!(!vfs.exists("/f/out.bin"));
    // The next run resynchronises: the VFS is authoritative, so the output of the run
    // whose pull broke is dropped on the sidecar as well.
    run_ok(
        &mut session,
        &mut vfs,
        "/f",
        "! test -e out.bin && head -c 1000 /dev/zero > after.bin",
    );
    assert_eq!(vfs.read_file("/f/after.bin").unwrap().len(), 1000);
    assert_eq!(vfs.read_file("/f/big").unwrap().len(), 3 << 20);
}

#[test]
fn sidecar_killed_mid_push_and_mid_pull_leaves_the_vfs_unchanged() {
    let mut sidecar = RemoteSidecar::start("256m", &[]);
    let proxy = Proxy::start(sidecar.addr);
    let mut session = session(proxy.addr, &sidecar.token_file);
    let mut vfs = fault_vfs();
    session.capabilities().unwrap();
    proxy.arm(Dir::Up, 1 << 20, Fault::Kill(sidecar.pid()));
    let err = faulted_run(&mut session, &mut vfs, "true");
    assert!(err.is_connection_failure(), "{err}");
    // A first push into an empty copy streams its blobs right after the `wire_push`
    // line (`wire-sync-stream`), so the kill lands in that exchange.
    assert_eq!(
        err_during(&err),
        "wire_push",
        "the kill hit the push: {err}"
    );
    sidecar.restart();
    // Everything was lost with the tmpfs: the next run pushes it all again and works.
    run_ok(
        &mut session,
        &mut vfs,
        "/f",
        "test $(wc -c < big) = 3145728",
    );
    proxy.arm(Dir::Down, 100 << 10, Fault::Kill(sidecar.pid()));
    let err = faulted_run(
        &mut session,
        &mut vfs,
        "head -c 2097152 /dev/urandom > out.bin",
    );
    assert!(err.is_connection_failure(), "{err}");
    assert_eq!(
        err_during(&err),
        "wire_pull",
        "the kill hit the pull: {err}"
    );
    sidecar.restart();
    run_ok(&mut session, &mut vfs, "/f", "echo ok > ok.txt");
    assert_eq!(&vfs.read_file("/f/ok.txt").unwrap()[..], b"ok\n");
    assert!(
        !vfs.exists("/f/out.bin"),
        "the killed run's output died with its sidecar"
    );
}

#[test]
fn a_corrupted_pull_blob_is_refused_and_the_next_run_works() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let proxy = Proxy::start(sidecar.addr);
    let mut session = session(proxy.addr, &sidecar.token_file);
    let mut vfs = fault_vfs();
    run_ok(&mut session, &mut vfs, "/f", "true");
    // Flip one byte well inside the pulled blob (after the exec reply and the header).
    proxy.arm(Dir::Down, 64 << 10, Fault::Flip);
    let err = faulted_run(
        &mut session,
        &mut vfs,
        "head -c 1048576 /dev/urandom > out.bin",
    );
    assert!(proxy.fired.load(std::sync::atomic::Ordering::SeqCst));
    let text = err.to_string();
    assert!(
        text.contains("digest"),
        "the error names the digest mismatch: {text}"
    );
    // The next run resynchronises: the VFS is authoritative, so the failed run's
    // output is dropped on the sidecar too, and running the tool again brings it.
    run_ok(&mut session, &mut vfs, "/f", "! test -e out.bin");
    run_ok(
        &mut session,
        &mut vfs,
        "/f",
        "head -c 1048576 /dev/urandom > out.bin",
    );
    assert_eq!(vfs.read_file("/f/out.bin").unwrap().len(), 1 << 20);
}

#[test]
fn sidecar_out_of_disk_is_a_clear_error_and_the_next_run_works() {
    let sidecar = RemoteSidecar::start("2m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = fault_vfs(); // 3 MiB do not fit in 2 MiB
    let err = faulted_run(&mut session, &mut vfs, "true");
    let text = err.to_string();
    assert!(
        text.contains("wire_io") && text.contains("No space left"),
        "{text}"
    );
    vfs.remove("/f/big").unwrap();
    run_ok(
        &mut session,
        &mut vfs,
        "/f",
        "test -f small && ! test -e big",
    );
}

#[test]
fn the_quota_bounds_a_copy() {
    let sidecar = RemoteSidecar::start("256m", &["--wire-max-bytes", "1048576"]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = fault_vfs();
    let err = faulted_run(&mut session, &mut vfs, "true");
    assert!(err.to_string().contains("wire_quota"), "{err}");
    vfs.remove("/f/big").unwrap();
    run_ok(&mut session, &mut vfs, "/f", "true");
}

/// A raw client: handshake with `wire-sync`, `wire_start`, `wire_project`, then a push
/// of one file whose blob arrives with a wrong digest or a wrong length.
fn raw_push(addr: std::net::SocketAddr, announced: &BlobRef, sent: &[u8]) -> Vec<Reply> {
    raw_push_with(addr, announced, sent, None)
}

/// [`raw_push`], optionally announcing a second blob the push did not ask for.
fn raw_push_with(
    addr: std::net::SocketAddr,
    announced: &BlobRef,
    sent: &[u8],
    extra: Option<&[u8]>,
) -> Vec<Reply> {
    let (mut writer, mut reader) = raw_open(addr, "/raw");
    let need = raw_call(
        &Request::WirePush(WirePush {
            session_id: "s".into(),
            project: "/raw".into(),
            full: true,
            base_epoch: None,
            base_generation: None,
            epoch: "e".into(),
            generation: 1,
            deleted: Vec::new(),
            entries: vec![WireEntry::file(
                "x",
                0o644,
                0,
                announced.size,
                announced.digest.clone(),
            )],
            stream: false,
        }),
        &mut writer,
        &mut reader,
    );
    assert!(matches!(need, Reply::WireNeed(_)), "{need:?}");
    let mut blobs = vec![announced.clone()];
    if let Some(extra) = extra {
        blobs.push(BlobRef {
            digest: digest_hex(extra),
            size: extra.len() as u64,
        });
    }
    let header = Request::WireBlobs(WireBlobs {
        session_id: "s".into(),
        blobs,
    });
    writer
        .write_all(encode_request(&header).as_bytes())
        .unwrap();
    writer.write_all(b"\n").unwrap();
    write_blob(&mut writer, sent).unwrap();
    if let Some(extra) = extra {
        // May fail: the sidecar closes as soon as it refused the header.
        let _ = write_blob(&mut writer, extra);
    }
    let _ = writer.flush();
    read_until_closed(&mut reader)
}

/// Every reply line until the sidecar closes the connection.
fn read_until_closed(reader: &mut BufReader<TcpStream>) -> Vec<Reply> {
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => replies.push(parse_reply(&line).unwrap()),
        }
    }
    replies
}

/// One request line and its reply line.
fn raw_call(request: &Request, writer: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> Reply {
    writer
        .write_all(encode_request(request).as_bytes())
        .unwrap();
    writer.write_all(b"\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    parse_reply(&line).unwrap()
}

/// A raw connection with every capability, a `wire_start` and `project` opened.
fn raw_open(addr: std::net::SocketAddr, project: &str) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let call = |request: Request, writer: &mut TcpStream, reader: &mut BufReader<TcpStream>| {
        writer
            .write_all(encode_request(&request).as_bytes())
            .unwrap();
        writer.write_all(b"\n").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        parse_reply(&line).unwrap()
    };
    let caps = KNOWN_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    let hs = call(
        Request::Handshake(Handshake {
            client: "raw".into(),
            capabilities: Some(caps),
            token: Some(TOKEN.into()),
            ..Handshake::default()
        }),
        &mut writer,
        &mut reader,
    );
    assert!(matches!(hs, Reply::HandshakeOk(_)), "{hs:?}");
    let started = call(
        Request::WireStart(WireStart {
            session_id: "s".into(),
            client_id: "raw-client".into(),
            guest_workspace: "/workspace".into(),
        }),
        &mut writer,
        &mut reader,
    );
    assert!(matches!(started, Reply::WireStarted(_)), "{started:?}");
    // The previous connection of this client may still hold the copy for a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let opened = call(
            Request::WireProject(WireProject {
                session_id: "s".into(),
                project: project.into(),
                excludes: Vec::new(),
            }),
            &mut writer,
            &mut reader,
        );
        match opened {
            Reply::WireProjectOk(_) => return (writer, reader),
            Reply::Error(err)
                if err.code.as_str() == "wire_busy" && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A streamed full push (`wire-sync-stream`): the line, then `frames` at once.
fn raw_streamed_push(
    addr: std::net::SocketAddr,
    full: bool,
    entries: Vec<WireEntry>,
    frames: &[&[u8]],
) -> Vec<Reply> {
    let (mut writer, mut reader) = raw_open(addr, "/streamed");
    let push = Request::WirePush(WirePush {
        session_id: "s".into(),
        project: "/streamed".into(),
        full,
        base_epoch: None,
        base_generation: None,
        epoch: "e".into(),
        generation: 1,
        deleted: Vec::new(),
        entries,
        stream: true,
    });
    writer.write_all(encode_request(&push).as_bytes()).unwrap();
    writer.write_all(b"\n").unwrap();
    for frame in frames {
        // May fail: the sidecar closes as soon as it refused the push.
        let _ = write_blob(&mut writer, frame);
    }
    let _ = writer.flush();
    // A streamed push that succeeded leaves the connection open: stop after one reply.
    let mut line = String::new();
    let mut replies = Vec::new();
    if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        replies.push(parse_reply(&line).unwrap());
    }
    if matches!(replies.first(), Some(Reply::Error(_))) {
        // Refused before or while reading the frames: the sidecar closes at once. A
        // failure after them (a path listed twice) leaves the connection open.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        replies.extend(read_until_closed(&mut reader));
    }
    replies
}

/// One bad streamed push: the code expected, `full`, the entries, the frames sent.
type Case<'a> = (&'a str, bool, Vec<WireEntry>, Vec<&'a [u8]>);

/// A streamed first push with a bad blob, a bad entry or a delta is refused with a
/// clear code and the connection closed (its frames cannot be trusted); the copy is
/// left empty, and the next streamed push into it works.
#[test]
fn a_bad_streamed_push_is_refused_closes_the_connection_and_leaves_the_copy_empty() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let good = b"0123456789";
    let entry = |digest: String, size: u64| WireEntry::file("d/x", 0o644, 0, size, digest);
    let dir = WireEntry::dir("d", 0o755, 0);
    let cases: Vec<Case<'_>> = vec![
        (
            "wire_digest",
            true,
            vec![dir.clone(), entry(digest_hex(b"something else"), 10)],
            vec![good],
        ),
        (
            "wire_frame",
            true,
            vec![dir.clone(), entry(digest_hex(good), 4)],
            vec![good],
        ),
        (
            "wire_invalid",
            false,
            vec![dir.clone(), entry(digest_hex(good), 10)],
            vec![good],
        ),
        (
            "wire_invalid",
            true,
            vec![WireEntry::file("../x", 0o644, 0, 10, digest_hex(good))],
            vec![good],
        ),
        (
            "wire_invalid",
            true,
            vec![
                dir.clone(),
                entry(digest_hex(good), 10),
                entry(digest_hex(good), 10),
            ],
            vec![good],
        ),
        // Without digests (the sidecar computes them): a frame of the wrong length,
        // and a push mixing files with and without digests.
        (
            "wire_frame",
            true,
            vec![dir.clone(), undigested(entry(digest_hex(good), 4))],
            vec![good],
        ),
        (
            "wire_invalid",
            true,
            vec![
                dir.clone(),
                undigested(entry(digest_hex(good), 10)),
                WireEntry::file("d/y", 0o644, 0, 10, digest_hex(good)),
            ],
            vec![good, good],
        ),
    ];
    for (code, full, entries, frames) in cases {
        let replies = raw_streamed_push(sidecar.addr, full, entries, &frames);
        let [Reply::Error(err)] = &replies[..] else {
            panic!("{code}: {replies:?}\n{}", sidecar.logs())
        };
        assert_eq!(err.code.as_str(), code, "{err:?}");
        let left = copies_tree(&sidecar, "streamed");
        assert!(left.trim().is_empty(), "{code}: the copy holds {left:?}");
    }
    let replies = raw_streamed_push(
        sidecar.addr,
        true,
        vec![dir, entry(digest_hex(good), 10)],
        &[good],
    );
    assert!(matches!(replies[..], [Reply::WirePushOk(_)]), "{replies:?}");
    wait_for_log(
        &sidecar,
        "wire-sync: push of \"/streamed\" applied, streamed",
    );
    assert_eq!(copies_tree(&sidecar, "streamed").trim(), "d\nd/x");
}

/// A file entry of a streamed push without its digest (the sidecar computes it).
fn undigested(entry: WireEntry) -> WireEntry {
    WireEntry {
        digest: None,
        ..entry
    }
}

/// A streamed push without digests: one blob per file, in entry order (two files with
/// the same content send it twice); the sidecar computes the digests, and the tree
/// digest it answers is the one of the entries with their true digests.
#[test]
fn a_streamed_push_without_digests_is_hashed_by_the_sidecar() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let (a, b) = (&b"first file"[..], &b"second"[..]);
    let with_digests = vec![
        WireEntry::dir("d", 0o755, 5),
        WireEntry::file("d/a", 0o644, 7, a.len() as u64, digest_hex(a)),
        WireEntry::file("d/b", 0o600, 9, b.len() as u64, digest_hex(b)),
        WireEntry::file("d/c", 0o755, 11, a.len() as u64, digest_hex(a)),
        WireEntry::symlink("d/l", 13, "a"),
    ];
    let mut expected = devshell_vm_protocol::Manifest::default();
    for entry in &with_digests {
        expected.upsert(entry.clone());
    }
    let sent: Vec<WireEntry> = with_digests
        .into_iter()
        .map(|e| {
            if e.kind == devshell_vm_protocol::WireKind::File {
                undigested(e)
            } else {
                e
            }
        })
        .collect();
    let replies = raw_streamed_push(sidecar.addr, true, sent, &[a, b, a]);
    let [Reply::WirePushOk(ok)] = &replies[..] else {
        panic!("{replies:?}\n{}", sidecar.logs())
    };
    assert_eq!(ok.tree_digest, expected.tree_digest());
    wait_for_log(&sidecar, "applied, streamed, digests computed here");
    assert_eq!(
        copies_tree(&sidecar, "streamed").trim(),
        "d\nd/a\nd/b\nd/c\nd/l"
    );
    let modes = in_sidecar_namespace(
        &sidecar,
        &format!(
            "cd {}/.devshell-vm-wire/*/streamed-*/tree/d && stat -c '%n %a %s' a b c && cat a b c",
            sidecar.root().display()
        ),
    );
    assert_eq!(
        modes,
        "a 644 10\nb 600 6\nc 755 10\nfirst filesecondfirst file"
    );
}

/// Waits (up to 10 s) until the sidecar's log holds `needle`: the log arrives through a
/// pipe that a reader thread drains, so a line may trail the reply it precedes.
fn wait_for_log(sidecar: &RemoteSidecar, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sidecar.logs().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log within 10 s:\n{}",
            sidecar.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The paths under a project copy's tree (inside the sidecar's namespace), sorted.
fn copies_tree(sidecar: &RemoteSidecar, name: &str) -> String {
    in_sidecar_namespace(
        sidecar,
        &format!(
            "for t in {}/.devshell-vm-wire/*/{name}-*/tree; do cd \"$t\" && find . -mindepth 1 | sed 's|^./||' | sort; done",
            sidecar.root().display()
        ),
    )
}

#[test]
fn a_wrong_digest_or_length_from_a_client_is_refused_and_closes_the_connection() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let good = b"0123456789";
    let wrong_digest = BlobRef {
        digest: digest_hex(b"something else"),
        size: 10,
    };
    let replies = raw_push(sidecar.addr, &wrong_digest, good);
    let [Reply::Error(err)] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert_eq!(err.code.as_str(), "wire_digest", "{err:?}");
    let short = BlobRef {
        digest: digest_hex(good),
        size: 4,
    };
    let replies = raw_push(sidecar.addr, &short, good);
    let [Reply::Error(err)] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert_eq!(err.code.as_str(), "wire_frame", "{err:?}");
    // A blob the push did not ask for: refused before anything is read.
    let replies = raw_push_with(
        sidecar.addr,
        &BlobRef {
            digest: digest_hex(good),
            size: 10,
        },
        good,
        Some(b"not asked for"),
    );
    let [Reply::Error(err)] = &replies[..] else {
        panic!("{replies:?}\n{}", sidecar.logs())
    };
    assert_eq!(err.code.as_str(), "wire_invalid", "{err:?}");
    // The sidecar goes on serving.
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = fault_vfs();
    vfs.remove("/f/big").unwrap();
    run_ok(&mut session, &mut vfs, "/f", "cat small");
}

#[test]
fn a_file_the_sidecar_lost_is_detected_and_sent_again() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let mut vfs = fault_vfs();
    let mut first = session(sidecar.addr, &sidecar.token_file);
    run_ok(&mut first, &mut vfs, "/f", "true");
    drop(first);
    // Behind the sidecar's back (inside its namespace): its copy of `small` is gone and
    // `big` is altered, yet its mirror still lists both.
    let script = format!(
        "rm {root}/.devshell-vm-wire/*/*/tree/small && for f in {root}/.devshell-vm-wire/*/*/tree/big; do printf x >> \"$f\"; done",
        root = sidecar.root().display()
    );
    let status = std::process::Command::new("nsenter")
        .args([
            "--target",
            &sidecar.pid().to_string(),
            "--mount",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("nsenter");
    assert!(
        status.status.success(),
        "could not damage the sidecar's copy: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut second = session(sidecar.addr, &sidecar.token_file);
    run_ok(
        &mut second,
        &mut vfs,
        "/f",
        "test \"$(cat small)\" = s && test $(wc -c < big) = 3145728",
    );
    wait_for_log(&sidecar, "changed behind the sidecar's back");
    assert_eq!(
        vfs.read_file("/f/big").unwrap().len(),
        3 << 20,
        "the VFS kept its content"
    );
}

#[test]
fn pull_excludes_apply_over_the_wire() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    session.set_pull_excludes(&["*.o", "/cache/"]).unwrap();
    let mut vfs = Vfs::new();
    vfs.mkdir("/x").unwrap();
    run_ok(
        &mut session,
        &mut vfs,
        "/x",
        "mkdir -p cache sub && echo 1 > a.o && echo 2 > sub/b.o && echo 3 > keep.txt && echo 4 > cache/c",
    );
    assert!(vfs.exists("/x/keep.txt"));
    for excluded in ["/x/a.o", "/x/sub/b.o", "/x/cache"] {
        assert!(!vfs.exists(excluded), "{excluded} was pulled");
    }
}

/// The scan of the sidecar's `nth` wire pull (from 1), as its log reports it.
fn pull_scan(sidecar: &RemoteSidecar, nth: usize) -> String {
    // The log arrives through a pipe a reader thread drains, so the line of the pull
    // that just answered may not be there yet: wait for it (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs = sidecar.logs();
        let pulls: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("wire-sync: pull of"))
            .collect();
        if let Some(line) = pulls.get(nth - 1) {
            let start = line.find(" (").map_or(0, |i| i + 2);
            let end = line.find("): ").unwrap_or(line.len());
            return line[start..end].to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pull {nth} not logged within 10 s:\n{logs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The sidecar's pull costs what the tool changed: after a run that changed nothing it
/// scans nothing; after a run that wrote one file it lists only the directories that
/// saw events (inotify); every change still arrives. Before the change tracker the
/// sidecar scanned its whole copy on every pull.
#[test]
fn the_sidecar_pull_scans_only_what_the_tool_changed() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = Vfs::new();
    for d in 0..20 {
        vfs.mkdir(&format!("/w/d{d}")).unwrap();
        for f in 0..5 {
            vfs.write_file(&format!("/w/d{d}/f{f}"), vec![b'a'; 10])
                .unwrap();
        }
    }
    run_ok(&mut session, &mut vfs, "/w", "true");
    run_ok(&mut session, &mut vfs, "/w", "true");
    assert_eq!(pull_scan(&sidecar, 2), "no scan: nothing changed");
    run_ok(
        &mut session,
        &mut vfs,
        "/w",
        "echo new > d7/out && rm d3/f1",
    );
    let scan = pull_scan(&sidecar, 3);
    let listed: u64 = scan
        .strip_suffix(" directories scanned")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a scoped pull expected, got {scan:?}"));
    // d7 and d3 (and at most the project root, whose listing holds their metadata), not
    // the 21 directories of the copy.
    assert!((2..=3).contains(&listed), "{scan}");
    assert_eq!(&vfs.read_file("/w/d7/out").unwrap()[..], b"new\n");
    assert!(!vfs.exists("/w/d3/f1"));
    // A new directory with contents: scanned whole, everything arrives.
    run_ok(
        &mut session,
        &mut vfs,
        "/w",
        "mkdir -p n/m && echo deep > n/m/x",
    );
    assert_eq!(&vfs.read_file("/w/n/m/x").unwrap()[..], b"deep\n");
    // A client edit is pushed; its own writes are not mistaken for the tool's.
    vfs.write_file("/w/d0/f0", b"edited".to_vec()).unwrap();
    run_ok(&mut session, &mut vfs, "/w", "cat d0/f0 > /dev/null");
    assert_eq!(pull_scan(&sidecar, 5), "no scan: nothing changed");
    assert_eq!(&vfs.read_file("/w/d0/f0").unwrap()[..], b"edited");
}

/// Lists the project copies in the sidecar's store (inside its mount namespace).
fn copies(sidecar: &RemoteSidecar) -> String {
    in_sidecar_namespace(
        sidecar,
        &format!(
            "ls -d {}/.devshell-vm-wire/*/* 2>/dev/null || true",
            sidecar.root().display()
        ),
    )
}

/// The output of `sh -c script` run in the sidecar's mount namespace (it must succeed).
fn in_sidecar_namespace(sidecar: &RemoteSidecar, script: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .args([
            "--target",
            &sidecar.pid().to_string(),
            "--mount",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_idle_copy_is_removed_and_the_next_session_pushes_again() {
    let sidecar = RemoteSidecar::start("64m", &["--wire-idle-secs", "1"]);
    let mut vfs = fault_vfs();
    vfs.remove("/f/big").unwrap();
    let mut first = session(sidecar.addr, &sidecar.token_file);
    run_ok(&mut first, &mut vfs, "/f", "true");
    assert!(copies(&sidecar).contains("/f-"), "{}", copies(&sidecar));
    // Checked out while the session lives; idle once it is gone.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !copies(&sidecar).trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle copy was not removed: {}",
            copies(&sidecar)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_log(&sidecar, "removing idle copy");
    let mut second = session(sidecar.addr, &sidecar.token_file);
    run_ok(&mut second, &mut vfs, "/f", "test \"$(cat small)\" = s");
}

/// The large files of a first (streamed) push keep their bytes on disk, not in the
/// sidecar's memory — and still serve as the content of a later push that copies or
/// renames them (the sidecar reads them back from its copy, checked unchanged).
#[test]
fn large_files_of_a_first_push_stay_on_the_sidecars_disk_and_serve_later_pushes() {
    let sidecar = RemoteSidecar::start("64m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = Vfs::new();
    vfs.mkdir("/k").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 239) as u8).collect();
    vfs.write_file("/k/big.bin", big.clone()).unwrap();
    vfs.write_file("/k/small.txt", b"small".to_vec()).unwrap();
    run_ok(&mut session, &mut vfs, "/k", "true");
    wait_for_log(&sidecar, "1 kept on disk");
    // A copy and a rename of the large file: its digest is one the copy holds.
    vfs.write_file("/k/copy.bin", big.clone()).unwrap();
    vfs.rename("/k/big.bin", "/k/moved.bin").unwrap();
    let out = run_ok(
        &mut session,
        &mut vfs,
        "/k",
        "cmp moved.bin copy.bin && wc -c < copy.bin && test ! -e big.bin",
    );
    assert_eq!(out.trim(), "300000");
    assert_eq!(&vfs.read_file("/k/copy.bin").unwrap()[..], &big[..]);
    assert!(
        !sidecar.logs().contains("listed but lost"),
        "{}",
        sidecar.logs()
    );
}
