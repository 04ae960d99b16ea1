//! Issue 15: each finding of the independent probe, reproduced through the real binary.
//! Every test here failed against the sidecar before its fix (see docs/FUZZING.md's
//! companion table in the issue report).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Client, alive, assert_error, bin, builder, staging, wait_until};

/// A sidecar started by hand (so the test controls its stderr and its limits).
struct Manual {
    child: Child,
    logs: Arc<Mutex<String>>,
    listening: String,
}

impl Drop for Manual {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads stderr until the "listening on" line; returns the address text after it.
fn read_until_listening(stderr: &mut BufReader<ChildStderr>, logs: &Mutex<String>) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("read sidecar stderr");
        assert!(
            n > 0,
            "sidecar exited before listening; stderr:\n{}",
            logs.lock().unwrap_or_else(PoisonError::into_inner)
        );
        logs.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_str(&line);
        if let Some((_, rest)) = line.split_once("listening on ") {
            return rest.trim().to_owned();
        }
    }
}

/// Starts `command` (a sidecar command line) with stderr piped; returns it once it
/// listens, with the rest of stderr still piped (`keep_reading` drains it into `logs`,
/// otherwise the caller gets the pipe).
fn start_manual(mut command: Command, keep_reading: bool) -> (Manual, Option<ChildStderr>) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn sidecar");
    let logs = Arc::new(Mutex::new(String::new()));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let listening = read_until_listening(&mut stderr, &logs);
    let rest = if keep_reading {
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&line);
                line.clear();
            }
        });
        None
    } else {
        Some(stderr.into_inner())
    };
    (
        Manual {
            child,
            logs,
            listening,
        },
        rest,
    )
}

impl Manual {
    fn tcp_addr(&self) -> SocketAddr {
        let text = self.listening.strip_prefix("tcp:").expect("a tcp sidecar");
        text.split_whitespace()
            .next()
            .unwrap()
            .parse()
            .expect("address")
    }

    fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn term(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill -TERM");
    }

    /// Waits for the exit at most `limit`; `None` if still running then.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A token file the sidecar accepts (0600).
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let file = dir.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

fn tcp_command(root: &Path, token: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .args(["--serve-tcp", "127.0.0.1:0", "--root"])
        .arg(root)
        .arg("--token-file")
        .arg(token)
        .args(extra);
    command
}

/// Whether the server closed `stream` (EOF or reset) within `limit`, reading and
/// discarding any frames it sends.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Finding 1: a client that sends one byte before each per-read timeout is closed at
/// the deadline of the whole handshake.
#[test]
fn handshake_drip_feed_is_closed_at_the_whole_handshake_deadline() {
    let st = staging();
    let scratch = tempfile::tempdir().unwrap();
    let token = token_file(scratch.path(), "drip-token");
    let (sidecar, _) = start_manual(
        tcp_command(st.root.path(), &token, &["--auth-timeout-ms", "500"]),
        true,
    );
    let mut stream = TcpStream::connect(sidecar.tcp_addr()).unwrap();
    let start = Instant::now();
    let frame = br#"{"op":"handshake","version":1,"client":"drip","client_version":"0","token":"drip-token"}"#;
    let mut closed = false;
    // One byte every 200 ms (well inside the 500 ms per-read timeout), never a newline,
    // for up to 8 s: the handshake must be cut at about 500 ms.
    for &byte in frame.iter().cycle().take(40) {
        if stream.write_all(&[byte]).is_err()
            || closed_within(&mut stream, Duration::from_millis(200))
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a drip-fed handshake held its connection for {:?} (auth timeout 500 ms)",
        start.elapsed()
    );
}

/// Finding 1: unauthenticated connections have their own, smaller budget; idle ones
/// beyond it are answered `busy`, and authenticated clients keep the other slots.
#[test]
fn unauthenticated_connections_cannot_take_every_slot() {
    let st = staging();
    let scratch = tempfile::tempdir().unwrap();
    let token = token_file(scratch.path(), "budget-token");
    // Cap 8: unauthenticated budget 2 by default.
    let (sidecar, _) = start_manual(
        tcp_command(
            st.root.path(),
            &token,
            &["--max-connections", "8", "--auth-timeout-ms", "60000"],
        ),
        true,
    );
    let addr = sidecar.tcp_addr();
    let mut served = Client::tcp(addr);
    assert_eq!(
        served.handshake(None, Some("budget-token"))["op"],
        "handshake_ok"
    );
    // Twelve idle attackers that never authenticate.
    let mut busy = 0;
    let mut held = Vec::new();
    for _ in 0..12 {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let mut reply = String::new();
        let got = BufReader::new(stream.try_clone().unwrap()).read_line(&mut reply);
        if got.is_ok_and(|n| n > 0) {
            let frame: Value = serde_json::from_str(&reply).unwrap();
            assert_error(&frame, "error", "busy");
            busy += 1;
        } else {
            held.push(stream);
        }
    }
    assert_eq!(
        held.len(),
        2,
        "idle unauthenticated peers held {} slots (budget 2); {busy} got busy",
        held.len()
    );
    // The authenticated client is still served.
    assert_eq!(served.session(&st.dir)["op"], "session_ok");
    drop(held);
    // With the idle ones gone, a new client authenticates.
    wait_until(
        "an unauthenticated slot frees up",
        Duration::from_secs(20),
        || {
            let mut client = Client::tcp(addr);
            client.handshake(None, Some("budget-token"))["op"] == "handshake_ok"
        },
    );
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Finding 2: a client that stops reading `exec-stream` output must not make the
/// sidecar buffer what the tool prints.
#[test]
fn slow_exec_stream_reader_keeps_sidecar_memory_bounded() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let before = rss_kib(sidecar.pid());
    // 400 MB of output; the client reads nothing for 3 s.
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["head","-c","400000000","/dev/zero"],"env":{}}),
    );
    let mut peak = before;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_kib(sidecar.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grown_mib < 48,
        "the sidecar grew by {grown_mib} MiB while its client did not read (bounded: a few MiB)"
    );
    // Reading resumes: the output arrives in full, then the result.
    let mut bytes = 0_u64;
    loop {
        let frame = client.recv();
        if frame["op"] == "exec_output" {
            bytes += devshell_vm_protocol::decode_base64(
                "data_base64",
                frame["data_base64"].as_str().unwrap(),
            )
            .unwrap()
            .len() as u64;
        } else {
            assert_eq!(frame["op"], "exec_result", "{frame}");
            assert_eq!(frame["exit_code"], 0, "{frame}");
            break;
        }
    }
    assert_eq!(bytes, 400_000_000);
}

/// Finding 6: under a low descriptor limit the cap follows the budget and every extra
/// client is answered `busy`, never a closed socket.
#[test]
fn descriptor_budget_sets_the_cap_and_extra_clients_get_busy() {
    let st = staging();
    let mut command = Command::new("prlimit");
    command
        .arg("--nofile=160:160")
        .arg("--")
        .arg(bin())
        .args(["--serve-tcp", "127.0.0.1:0", "--insecure-no-auth", "--root"])
        .arg(st.root.path());
    let (sidecar, _) = start_manual(command, true);
    let addr = sidecar.tcp_addr();
    let mut open = Vec::new();
    let (mut ok, mut busy, mut dropped) = (0, 0, 0);
    for _ in 0..60 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"{\"op\":\"handshake\",\"version\":1,\"client\":\"fd\",\"client_version\":\"0\"}\n")
            .unwrap();
        let mut reply = String::new();
        match BufReader::new(stream.try_clone().unwrap()).read_line(&mut reply) {
            Ok(n) if n > 0 => {
                let frame: Value = serde_json::from_str(&reply).unwrap();
                match frame["op"].as_str() {
                    Some("handshake_ok") => ok += 1,
                    _ if frame["code"] == "busy" => busy += 1,
                    _ => panic!("unexpected reply {frame}"),
                }
            }
            _ => dropped += 1,
        }
        open.push(stream);
    }
    // (160 - 32 reserved - 40 for files kept on disk, a quarter of the limit) / 16 =
    // 5 connections.
    assert_eq!(
        (ok, busy, dropped),
        (5, 55, 0),
        "served / busy / dropped without an answer; logs:\n{}",
        sidecar.logs()
    );
    let logs = sidecar.logs();
    assert!(
        logs.contains("connection cap 5 (asked 512)")
            && logs.contains("(40 kept for files on disk)"),
        "the cap derived from the descriptor limit is logged:\n{logs}"
    );
}

fn run_with_token_file(file: &Path) -> (Option<i32>, String) {
    let st = staging();
    let mut child = Command::new(bin())
        .args(["--serve-tcp", "127.0.0.1:0", "--root"])
        .arg(st.root.path())
        .arg("--token-file")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if start.elapsed() > Duration::from_secs(3) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "--token-file {} did not end within 3 s (it must be refused at once)",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finding 7: the token file is read with a bound, only as a regular file, and only
/// when group and others cannot read it.
#[test]
fn token_file_must_be_small_regular_and_private() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o604, 0o660] {
        let shared = dir.path().join(format!("mode-{mode:o}"));
        std::fs::write(&shared, "t0ken\n").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, err) = run_with_token_file(&shared);
        assert_eq!(code, Some(1), "mode {mode:o}: {err}");
        assert!(
            err.contains("readable by others or writable by its group"),
            "{err}"
        );
    }

    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 10_000]).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = run_with_token_file(&big);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("at most 4096"), "{err}");

    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (code, err) = run_with_token_file(&fifo);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    let (code, err) = run_with_token_file(Path::new("/dev/zero"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    // A private token file is still accepted, and so is a group-readable one (a
    // Kubernetes Secret mounted with fsGroup is 0440).
    let st = staging();
    let good = token_file(dir.path(), "fine-token");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o440)).unwrap();
    let (sidecar, _) = start_manual(tcp_command(st.root.path(), &good, &[]), true);
    let mut client = Client::tcp(sidecar.tcp_addr());
    assert_eq!(
        client.handshake(None, Some("fine-token"))["op"],
        "handshake_ok"
    );
}

fn socket_command(socket: &Path, root: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("--serve-socket")
        .arg(socket)
        .arg("--root")
        .arg(root);
    command
}

/// Finding 8: a `0755` directory of ours (or root's) is accepted and the socket is
/// `0600`; a directory others can write to, or another user's, is refused.
#[test]
fn socket_directory_rule_accepts_service_manager_layouts() {
    let st = staging();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("side.sock");
    let (sidecar, _) = start_manual(socket_command(&socket, st.root.path()), true);
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    let mut client = Client::unix(&socket);
    assert_eq!(client.handshake(None, None)["op"], "handshake_ok");
    drop(sidecar);

    for mode in [0o775, 0o757, 0o1777] {
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let out = socket_command(&open.path().join("s.sock"), st.root.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "mode {mode:o}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("others can write"), "mode {mode:o}: {err}");
        assert_eq!(std::fs::read_dir(open.path()).unwrap().count(), 0);
    }

    // Another (non-root) user's directory.
    let theirs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(theirs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(theirs.path(), Some(nix::unistd::Uid::from_raw(65534)), None)
        .expect("chown to nobody (the tests run as root)");
    let out = socket_command(&theirs.path().join("s.sock"), st.root.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owned by uid 65534"),
        "{out:?}"
    );
}

/// Finding 9: with the log reader gone (EPIPE on stderr), the sidecar keeps serving,
/// and SIGTERM still ends it within the grace period, killing running tools as a group.
#[test]
fn sigterm_ends_the_sidecar_after_its_log_reader_went_away() {
    let st = staging();
    // The grandchild's pid is watched from here, so the tool must share our pid
    // namespace: isolation off (confined, the sandbox's init dies with the sidecar and
    // takes the namespace with it; the sandbox's own tests cover that).
    let mut command = socket_command(&st.root.path().join("run/s.sock"), st.root.path());
    command.args(["--isolation", "off"]);
    let (mut sidecar, stderr) = start_manual(command, false);
    drop(stderr); // the log collector goes away
    let socket = PathBuf::from(sidecar.listening.strip_prefix("unix:").unwrap());
    let mut client = Client::unix(&socket);
    client.ready(&st.dir);
    // Log lines now hit EPIPE; the connection must keep working.
    for _ in 0..20 {
        client.send_raw(b"{not json\n");
        assert_error(&client.recv(), "error", "parse");
    }
    let pid_file = st.dir.join("grandchild.pid");
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 1000 & echo $! > grandchild.pid; wait"],"env":{}}),
    );
    wait_until("the tool started", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let grandchild: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sidecar.term();
    let status = sidecar.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "the sidecar was still running 15 s after SIGTERM with its log reader gone"
    );
    assert_eq!(status.unwrap().code(), Some(0));
    wait_until(
        "the tool's group is killed",
        Duration::from_secs(10),
        || !alive(grandchild),
    );
}

/// Finding 9: a log pipe that is full (its reader stopped reading) blocks neither the
/// connections nor the shutdown.
#[test]
fn a_full_log_pipe_blocks_neither_requests_nor_shutdown() {
    let st = staging();
    let (mut sidecar, stderr) = start_manual(
        socket_command(&st.root.path().join("run/s.sock"), st.root.path()),
        false,
    );
    let _kept_unread = stderr; // open, never read: fills at 64 KiB
    let socket = PathBuf::from(sidecar.listening.strip_prefix("unix:").unwrap());
    let mut client = Client::unix(&socket);
    client.handshake(None, None);
    // Each bad frame logs a line of about 100 bytes: 3000 of them overflow the pipe.
    let line = format!("{{\"bad\": \"{}\"\n", "x".repeat(80));
    for _ in 0..3000 {
        client.send_raw(line.as_bytes());
        assert_error(&client.recv(), "error", "parse");
    }
    sidecar.term();
    assert!(
        sidecar.wait_exit(Duration::from_secs(15)).is_some(),
        "the sidecar did not exit within 15 s of SIGTERM with a full log pipe"
    );
}

/// Finding 10: `--max-connections 0` is refused instead of silently becoming 1.
#[test]
fn max_connections_zero_is_a_usage_error() {
    let st = staging();
    let mut child = Command::new(bin())
        .args([
            "--serve-tcp",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--max-connections",
            "0",
            "--root",
        ])
        .arg(st.root.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("--max-connections 0 was accepted: the sidecar started serving");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--max-connections 0"), "{err}");
}

/// Finding 10: a config error quotes a long value cut, with its length.
#[test]
fn config_errors_cut_long_values() {
    let st = staging();
    let long = "9".repeat(50_000) + "x";
    let out = Command::new(bin())
        .args(["--serve-socket"])
        .arg(st.root.path().join("run/s.sock"))
        .arg("--root")
        .arg(st.root.path())
        .env("DEVSHELL_VM_EXEC_TIMEOUT_MS", &long)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.len() < 1000, "{} bytes of error message", err.len());
    assert!(err.contains("50001 characters"), "{err}");
    assert!(err.contains("DEVSHELL_VM_EXEC_TIMEOUT_MS"), "{err}");
}

/// Finding 5: `write_file` onto a FIFO (with a reader) or a character device in the
/// staging dir is refused and nothing is written into the node.
#[test]
fn write_file_onto_a_fifo_or_device_is_refused() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let fifo = st.dir.join("pipe");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
    // A reader is waiting on the FIFO (the probe's setup: otherwise opening fails).
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open(&fifo)
        .unwrap();
    let reply = client.fs(
        "write_file",
        "/workspace/pipe",
        &json!({"content_base64": devshell_vm_protocol::encode_base64(b"smuggled")}),
    );
    let mut got = Vec::new();
    let _ = reader.read_to_end(&mut got);
    assert!(
        got.is_empty(),
        "{} bytes went into the FIFO ({reply})",
        got.len()
    );
    assert_ne!(
        reply["op"], "guest_fs_ok",
        "write into a FIFO reported success"
    );
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo_like()
    );

    // A character device (the null device's numbers: writes would vanish).
    let device = st.dir.join("null");
    mknod(
        &device,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod (the tests run as root)");
    let reply = client.fs(
        "write_file",
        "/workspace/null",
        &json!({"content_base64": devshell_vm_protocol::encode_base64(b"lost")}),
    );
    assert_ne!(
        reply["op"], "guest_fs_ok",
        "write into a device reported success"
    );
    // A regular file is still written.
    let reply = client.fs(
        "write_file",
        "/workspace/plain",
        &json!({"content_base64": devshell_vm_protocol::encode_base64(b"ok")}),
    );
    assert_eq!(reply["op"], "guest_fs_ok", "{reply}");
}

fn libc_o_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

use std::os::unix::fs::OpenOptionsExt;
