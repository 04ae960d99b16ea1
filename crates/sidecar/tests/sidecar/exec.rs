//! exec deadlines, hang-ups, concurrency and shutdown, with real processes.
//!
//! These tests watch the tool's processes by pid from the outside, which only works when
//! the tool shares our pid namespace: they run the sidecar with `--isolation off` and
//! test the process-group discipline of `devshell-vm-exec`. The same guarantees under
//! confinement (the default) — timeout, client gone, nothing outliving an exec — are in
//! `escape.rs`, watched by command line instead of pid.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Client, alive, assert_error, staging, stream_text, wait_until};

/// A builder rooted at `root`, running tools unconfined (see the module docs).
fn builder(root: &std::path::Path) -> devshell_vm_test_support::sidecar::SidecarBuilder {
    crate::common::builder(root).arg("--isolation").arg("off")
}

/// Reads `exec_output` frames until the stdout text holds two pids; returns them.
fn read_two_pids(client: &mut Client) -> (u32, u32) {
    let mut text = String::new();
    loop {
        let frame = client.recv();
        assert_eq!(
            frame["op"], "exec_output",
            "expected output with pids, got {frame}"
        );
        text.push_str(&stream_text(&[frame], "stdout"));
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if text.ends_with('\n') && pids.len() == 2 {
            return (pids[0], pids[1]);
        }
    }
}

#[test]
fn timeout_is_honoured_while_a_grandchild_holds_the_pipes() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let started = Instant::now();
    let (_, reply) = client.exec(
        &["sh", "-c", "sleep 30 & sleep 30"],
        &json!({"timeout_ms": 200}),
    );
    let elapsed = started.elapsed();
    assert_error(&reply, "error", "exec_timeout");
    // Correctness bound, not a speed figure: the earlier sidecar waited for the
    // grandchild's pipes; the reply must come before its 30 s sleep could end.
    assert!(
        elapsed < Duration::from_secs(30),
        "reply only after {elapsed:?}"
    );
    // The connection goes on.
    let (_, r) = client.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0);
}

#[test]
fn default_timeout_comes_from_devshell_vm_exec_timeout_ms() {
    let st = staging();
    let sidecar = builder(st.root.path())
        .env("DEVSHELL_VM_EXEC_TIMEOUT_MS", "300")
        .start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let (_, reply) = client.exec(&["sleep", "30"], &json!({}));
    let message = assert_error(&reply, "error", "exec_timeout");
    assert!(message.contains("300 ms"), "{message}");
    // An explicit 0 means no deadline.
    let (_, reply) = client.exec(
        &["sh", "-c", "sleep 0.5; exit 4"],
        &json!({"timeout_ms": 0}),
    );
    assert_eq!(reply["exit_code"], 4, "{reply}");
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 300 & echo $! $$; wait"],"env":{},"timeout_ms":1500}),
    );
    let (grandchild, child) = read_two_pids(&mut client);
    assert_error(&client.recv(), "error", "exec_timeout");
    wait_until(
        "the timed-out group is gone",
        Duration::from_secs(10),
        || !alive(grandchild) && !alive(child),
    );
}

#[test]
fn client_killed_mid_exec_leaves_no_process_behind() {
    let st = staging();
    client_gone_kills_the_group(&st, &builder(st.root.path()).start_unix(), None);
}

#[test]
fn tcp_client_killed_mid_exec_leaves_no_process_behind() {
    let st = staging();
    let sidecar = builder(st.root.path()).token("t0ken").start_tcp();
    client_gone_kills_the_group(&st, &sidecar, Some("t0ken"));
}

fn client_gone_kills_the_group(
    st: &crate::common::Staging,
    sidecar: &devshell_vm_test_support::sidecar::SidecarProcess,
    token: Option<&str>,
) {
    let mut client = Client::of(sidecar);
    assert_eq!(
        client.handshake(Some(&["exec-stream"]), token)["op"],
        "handshake_ok"
    );
    assert_eq!(client.session(&st.dir)["op"], "session_ok");
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 300 & echo $! $$; wait"],"env":{}}),
    );
    let (grandchild, child) = read_two_pids(&mut client);
    assert!(alive(grandchild) && alive(child));
    drop(client);
    wait_until(
        "the abandoned exec's group is killed",
        Duration::from_secs(10),
        || !alive(grandchild) && !alive(child),
    );
    wait_until(
        "the sidecar logs the hang-up",
        Duration::from_secs(10),
        || sidecar.logs().contains("client went away"),
    );
    // The server goes on.
    let mut next = Client::of(sidecar);
    assert_eq!(
        next.handshake(Some(&["exec-stream"]), token)["op"],
        "handshake_ok"
    );
    assert_eq!(next.session(&st.dir)["op"], "session_ok");
    let (_, r) = next.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0);
}

#[test]
fn stdio_client_gone_mid_exec_leaves_no_process_behind() {
    let st = staging();
    let mut client = Client::stdio(builder(st.root.path()).stdio_command());
    client.ready(&st.dir);
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 300 & echo $! $$; wait"],"env":{}}),
    );
    let (grandchild, child) = read_two_pids(&mut client);
    // The client goes away: it closes both pipes (the sidecar itself is not killed).
    let mut sidecar = client.detach();
    wait_until("the exec's group is gone", Duration::from_secs(10), || {
        !alive(grandchild) && !alive(child)
    });
    // With nobody left to answer, the sidecar ends by itself.
    let status = sidecar.wait().unwrap();
    assert!(status.success(), "stdio sidecar exit: {status}");
}

#[test]
fn fifty_concurrent_clients_each_run_exec() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let socket = sidecar.socket_path().unwrap().to_owned();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let socket = socket.clone();
            let dir = st.dir.clone();
            std::thread::spawn(move || {
                let mut client = Client::unix(&socket);
                client.ready(&dir);
                let (outputs, result) =
                    client.exec(&["sh", "-c", "echo client-$0", &i.to_string()], &json!({}));
                assert_eq!(result["exit_code"], 0, "client {i}: {result}");
                assert_eq!(stream_text(&outputs, "stdout"), format!("client-{i}\n"));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn sigterm_kills_running_execs_and_removes_the_socket() {
    let st = staging();
    let mut sidecar = builder(st.root.path()).start_unix();
    let socket = sidecar.socket_path().unwrap().to_owned();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 300 & echo $! $$; wait"],"env":{}}),
    );
    let (grandchild, child) = read_two_pids(&mut client);
    let status = sidecar.terminate();
    assert!(status.success(), "SIGTERM exit status: {status}");
    assert_error(&client.recv(), "error", "shutdown");
    wait_until("the exec's group is gone", Duration::from_secs(10), || {
        !alive(grandchild) && !alive(child)
    });
    assert!(!socket.exists(), "socket file left behind");
}

/// Sends an `exec` of a tool that floods stdout (streamed with `exec-stream`) and that
/// the client never reads, with a quiet grandchild beside it (only a kill of the whole
/// group ends that one); returns both pids once they run.
fn start_unread_flood(
    client: &mut Client,
    st: &crate::common::Staging,
    timeout_ms: Option<u64>,
) -> [u32; 2] {
    let mut frame = json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","sleep 300 & echo $! $$ > flood.pid; exec yes flood-line"],"env":{}});
    if let Some(ms) = timeout_ms {
        frame["timeout_ms"] = json!(ms);
    }
    client.send(&frame);
    let pid_file = st.dir.join("flood.pid");
    wait_until("the flooding tool started", Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).is_ok_and(|text| text.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let pids: Vec<u32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    [pids[0], pids[1]]
}

#[test]
fn timeout_is_honoured_while_the_client_does_not_read_the_stream() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let pids = start_unread_flood(&mut client, &st, Some(300));
    // Nothing is read: the socket and the queue fill up, and the run must still end at
    // its deadline (the bound only turns "never" into a failure).
    wait_until(
        "the unread tool is killed at its deadline",
        Duration::from_secs(20),
        || !pids.iter().any(|&pid| alive(pid)),
    );
    // Reading now: the queued output, then exec_timeout; the connection goes on.
    loop {
        let reply = client.recv();
        if reply["op"] != "exec_output" {
            assert_error(&reply, "error", "exec_timeout");
            break;
        }
    }
    let (_, r) = client.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn sigterm_kills_an_exec_whose_client_does_not_read() {
    let st = staging();
    let mut sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let pids = start_unread_flood(&mut client, &st, None);
    let status = sidecar.terminate();
    assert!(status.success(), "SIGTERM exit status: {status}");
    wait_until("the unread tool is gone", Duration::from_secs(10), || {
        !pids.iter().any(|&pid| alive(pid))
    });
    drop(client);
}

#[test]
fn client_process_killed_mid_exec_leaves_no_process_behind() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    // A separate client process (perl), killed with SIGKILL while its exec runs.
    let script = r#"
        use IO::Socket::UNIX;
        $| = 1;
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or die "connect: $!";
        $s->autoflush(1);
        print $s qq({"op":"handshake","version":1,"client":"perl","client_version":"0","capabilities":["exec-stream"]}\n);
        print scalar <$s>;
        print $s qq({"op":"session_start","session_id":"pid-1","staging_dir":"$ARGV[1]","guest_workspace":"/workspace","backend":"x","backend_config":{}}\n);
        print scalar <$s>;
        print $s qq({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace","argv":["sh","-c","sleep 300 & echo \$! \$\$; wait"],"env":{}}\n);
        while (my $l = <$s>) { print $l }
    "#;
    let mut client = Command::new("perl")
        .arg("-e")
        .arg(script)
        .arg(sidecar.socket_path().unwrap())
        .arg(&st.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl runs (perl-base is part of every Debian system)");
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let mut replies = Vec::new();
    let mut text = String::new();
    let pids: Vec<u32> = loop {
        let line = lines
            .next()
            .expect("the perl client ended early")
            .expect("read the perl client's output");
        let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
        replies.push(reply["op"].as_str().unwrap().to_owned());
        if reply["op"] == "exec_output" {
            text.push_str(&stream_text(&[reply], "stdout"));
            let pids: Vec<u32> = text
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if text.ends_with('\n') && pids.len() == 2 {
                break pids;
            }
        }
    };
    assert_eq!(replies[..2], ["handshake_ok", "session_ok"]);
    assert!(pids.iter().all(|&pid| alive(pid)));
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until(
        "the killed client's exec group is gone",
        Duration::from_secs(10),
        || !pids.iter().any(|&pid| alive(pid)),
    );
    // The server goes on.
    let mut next = Client::of(&sidecar);
    next.ready(&st.dir);
    let (_, r) = next.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0, "{r}");
}
