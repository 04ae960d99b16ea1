//! The escape suite through the sidecar: tools `exec` runs are confined (isolation
//! `auto`, the default; here namespaces), so a client of a shared sidecar does not get
//! the sidecar's machine.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::{Client, builder, staging, stream_text, wait_until};

fn run(client: &mut Client, script: &str) -> String {
    let (outputs, reply) = client.exec(&["sh", "-c", script], &json!({"timeout_ms": 60_000}));
    assert_eq!(reply["op"], "exec_result", "{reply}");
    format!(
        "{}{}",
        stream_text(&outputs, "stdout"),
        stream_text(&outputs, "stderr")
    )
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn exec_cannot_read_secrets_write_outside_staging_or_reach_host_processes() {
    let st = staging();
    let secret = st.root.path().join("secret.txt");
    std::fs::write(&secret, "SIDECAR-SENTINEL\n").unwrap();
    let outside = st.root.path().join("escaped");
    let mut sentinel = Command::new("sleep")
        .arg("3143")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    std::os::unix::fs::symlink(&secret, st.dir.join("leak")).unwrap();
    let out = run(
        &mut client,
        &format!(
            "cat {} ; cat leak ; ls -a /root ; echo x > {} ; echo x > /tmp/sidecar-escape ; kill -9 {} ; mount -t tmpfs none . && echo MOUNTED ; echo inside > ok.txt",
            secret.display(),
            outside.display(),
            sentinel.id()
        ),
    );
    assert!(!out.contains("SIDECAR-SENTINEL"), "{out}");
    assert!(!out.contains("MOUNTED"), "{out}");
    assert!(!outside.exists(), "wrote outside staging: {out}");
    assert!(
        !std::path::Path::new("/tmp/sidecar-escape").exists(),
        "{out}"
    );
    assert!(
        sentinel.try_wait().unwrap().is_none(),
        "killed a host process: {out}"
    );
    assert_eq!(
        std::fs::read_to_string(st.dir.join("ok.txt")).unwrap(),
        "inside\n"
    );
    sentinel.kill().unwrap();
    sentinel.wait().unwrap();
}

#[test]
fn nothing_an_exec_started_outlives_it() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let out = run(
        &mut client,
        "setsid sh -c '(sleep 1414 &) ; sleep 1414' >/dev/null 2>&1 & echo started",
    );
    assert!(out.contains("started"));
    wait_until("no sleep 1414 left", Duration::from_secs(5), || {
        processes_with("sleep 1414").is_empty()
    });
    // The session still works.
    assert!(run(&mut client, "echo again").contains("again"));
}

#[test]
fn isolation_off_is_accepted_and_an_unknown_mode_is_refused_at_start() {
    let st = staging();
    let sidecar = builder(st.root.path())
        .arg("--isolation")
        .arg("off")
        .start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    assert!(run(&mut client, "echo plain").contains("plain"));
    let output = Command::new(crate::common::bin())
        .args(["--serve-stdio", "--isolation", "chroot"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DEVSHELL_VM_ISOLATION") && stderr.contains("chroot"),
        "{stderr}"
    );
}

#[test]
fn a_timeout_kills_everything_the_confined_exec_started() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let started = std::time::Instant::now();
    let (_, reply) = client.exec(
        &["sh", "-c", "setsid sleep 1515 & sleep 1515 & sleep 1515"],
        &json!({"timeout_ms": 500}),
    );
    assert_eq!(reply["code"], "exec_timeout", "{reply}");
    assert!(started.elapsed() < Duration::from_secs(20));
    wait_until("no sleep 1515 left", Duration::from_secs(5), || {
        processes_with("sleep 1515").is_empty()
    });
    assert!(run(&mut client, "echo again").contains("again"));
}

#[test]
fn a_client_gone_mid_exec_leaves_no_confined_process_behind() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    client.send(
        &json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace",
        "argv":["sh","-c","setsid sleep 1616 & echo go; sleep 1616"],"env":{}}),
    );
    wait_until("the exec started", Duration::from_secs(20), || {
        processes_with("sleep 1616").len() >= 2
    });
    drop(client);
    wait_until("no sleep 1616 left", Duration::from_secs(10), || {
        processes_with("sleep 1616").is_empty()
    });
}
