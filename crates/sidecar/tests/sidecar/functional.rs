//! Every request over every transport, and v1 compatibility.

use serde_json::{Value, json};

use crate::common::{Client, assert_error, builder, staging, stream_text};

/// `handshake` → `session_start` → `exec` (streamed) → `guest_fs` → sync → shutdown on one connection.
fn full_cycle(client: &mut Client, st: &crate::common::Staging, token: Option<&str>) {
    let hs = client.handshake(Some(&["exec-stream", "guest-fs-v2", "sync-verify"]), token);
    assert_eq!(hs["op"], "handshake_ok", "{hs}");
    assert_eq!(client.session(&st.dir)["op"], "session_ok");

    let (outputs, result) = client.exec(
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; pwd; echo \"$GREETING\"; exit 7",
        ],
        &json!({"env": {"GREETING": "hello from env"}}),
    );
    assert_eq!(
        result,
        json!({"op":"exec_result","session_id":"pid-1","exit_code":7,"signal":null})
    );
    let stdout = stream_text(&outputs, "stdout");
    assert_eq!(
        stdout,
        format!("out1\nout2\n{}\nhello from env\n", st.dir.display())
    );
    assert_eq!(stream_text(&outputs, "stderr"), "err1\n");

    // guest_fs v1 operations.
    let w = client.fs(
        "write_file",
        "/workspace/p/src/main.rs",
        &json!({"content_base64": "Zm4gbWFpbigpIHt9Cg=="}),
    );
    assert_eq!(w, json!({"op":"guest_fs_ok","session_id":"pid-1"}));
    assert_eq!(
        std::fs::read(st.dir.join("p/src/main.rs")).unwrap(),
        b"fn main() {}\n"
    );
    let r = client.fs("read_file", "/workspace/p/src/main.rs", &json!({}));
    assert_eq!(r["content_base64"], "Zm4gbWFpbigpIHt9Cg==");
    assert_eq!(
        client.fs("mkdir", "/workspace/p/a/b", &json!({}))["op"],
        "guest_fs_ok"
    );
    std::fs::write(st.dir.join("p/.hidden"), b"").unwrap();
    let l = client.fs("list_dir", "/workspace/p", &json!({}));
    assert_eq!(l["names"], json!([".hidden", "a", "src"]));
    assert_eq!(
        client.fs("remove", "/workspace/p/a", &json!({}))["op"],
        "guest_fs_ok"
    );
    assert!(!st.dir.join("p/a").exists());

    // guest-fs-v2 operations.
    let s = client.fs("stat", "/workspace/p/src/main.rs", &json!({}));
    assert_eq!(s["stat"]["kind"], "file");
    assert_eq!(s["stat"]["size"], 13);
    assert_eq!(
        client.fs("stat", "/workspace/p", &json!({}))["stat"]["kind"],
        "dir"
    );
    assert_eq!(
        client.fs("exists", "/workspace/p/nope", &json!({}))["exists"],
        false
    );
    assert_eq!(
        client.fs("exists", "/workspace/p/src", &json!({}))["exists"],
        true
    );
    let mv = client.fs(
        "rename",
        "/workspace/p/src/main.rs",
        &json!({"to_path": "/workspace/q/lib.rs"}),
    );
    assert_eq!(mv["op"], "guest_fs_ok", "{mv}");
    assert_eq!(
        std::fs::read(st.dir.join("q/lib.rs")).unwrap(),
        b"fn main() {}\n"
    );

    check_sync(client);

    // shutdown ends the session; later requests get no_session.
    let bye = client.call(&json!({"op":"session_shutdown","session_id":"pid-1","stop_vm":false}));
    assert_eq!(bye, json!({"op":"shutdown_ok"}));
    let (_, after) = client.exec(&["true"], &json!({}));
    assert_error(&after, "error", "no_session");
}

/// `sync_request`: plain acknowledgement, then a verified manifest (expects `q/lib.rs`, 13 bytes).
fn check_sync(client: &mut Client) {
    let plain = client.call(&json!({"op":"sync_request","session_id":"pid-1","direction":"push_to_guest","vfs_cwd_leaf":"q"}));
    assert_eq!(plain, json!({"op":"sync_ok"}));
    let verified = client.call(&json!({
        "op":"sync_request","session_id":"pid-1","direction":"push_to_guest","vfs_cwd_leaf":"q",
        "manifest":[
            {"path":"q/lib.rs","action":"upsert","size":13,"mtime_unix_ms":0},
            {"path":"/workspace/q/lib.rs","action":"upsert","size":13},
            {"path":"q/lib.rs","action":"delete"},
            {"path":"q/missing.rs","action":"upsert","size":1},
            {"path":"q/lib.rs","action":"upsert","size":99},
            {"path":"q/gone.rs","action":"delete"},
            {"path":"../outside","action":"upsert","size":1}
        ]
    }));
    assert_eq!(verified["op"], "sync_ok", "{verified}");
    let problems: Vec<(String, String)> = verified["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_owned(),
                m["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        [
            ("q/lib.rs".to_owned(), "not_deleted".to_owned()),
            ("q/missing.rs".to_owned(), "missing".to_owned()),
            ("q/lib.rs".to_owned(), "size".to_owned()),
            ("../outside".to_owned(), "invalid_path".to_owned()),
        ]
    );
    assert_eq!(verified["mismatches"][2]["actual_size"], 13);
}

#[test]
fn full_cycle_over_unix_socket() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    full_cycle(&mut client, &st, None);
}

#[test]
fn full_cycle_over_tcp_with_token() {
    let st = staging();
    let sidecar = builder(st.root.path()).token("tcp-secret-1").start_tcp();
    let mut client = Client::of(&sidecar);
    full_cycle(&mut client, &st, Some("tcp-secret-1"));
}

#[test]
fn full_cycle_over_stdio() {
    let st = staging();
    let mut client = Client::stdio(builder(st.root.path()).stdio_command());
    full_cycle(&mut client, &st, None);
    // A child reading stdin gets /dev/null and cannot eat the next request.
    client.ready(&st.dir);
    let (_, result) = client.exec(
        &["sh", "-c", "cat; read line; echo \"read:$line\""],
        &json!({}),
    );
    assert_eq!(result["exit_code"], 0, "{result}");
    let next = client.handshake(None, None);
    assert_eq!(
        next["op"], "handshake_ok",
        "the request after exec was consumed: {next}"
    );
    // End of input ends the sidecar cleanly.
    client.close_input();
    let status = client.child().unwrap().wait().unwrap();
    assert!(status.success(), "stdio sidecar exit: {status}");
}

#[test]
fn v1_client_gets_only_v1_frames() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    // Exactly what the earlier client sends.
    client.send_raw(b"{\"op\":\"handshake\",\"version\":1,\"client\":\"cargo-devshell\",\"client_version\":\"0.3.1\"}\n");
    let hs = client.recv();
    let keys: Vec<&str> = hs.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["op", "server", "server_version", "version"], "{hs}");
    let s = client.session(&st.dir);
    assert_eq!(s, json!({"op":"session_ok","session_id":"pid-1"}));

    // Output goes to the sidecar's stderr, never as exec_output frames.
    let (outputs, result) = client.exec(
        &["sh", "-c", "echo v1-marker-out; echo v1-marker-err >&2"],
        &json!({}),
    );
    assert!(
        outputs.is_empty(),
        "v1 client got exec_output frames: {outputs:?}"
    );
    assert_eq!(
        result,
        json!({"op":"exec_result","session_id":"pid-1","exit_code":0,"signal":null})
    );
    crate::common::wait_until(
        "the child's output reaches the sidecar log",
        std::time::Duration::from_secs(10),
        || {
            let logs = sidecar.logs();
            logs.contains("v1-marker-out") && logs.contains("v1-marker-err")
        },
    );

    // guest-fs-v2 operations were not negotiated.
    let stat = client.fs("stat", "/workspace", &json!({}));
    assert_error(&stat, "guest_fs_error", "unknown");
    // A manifest is verified but mismatches are not sent to a v1 client.
    let sync = client.call(&json!({"op":"sync_request","session_id":"pid-1","direction":"pull_from_guest","vfs_cwd_leaf":"x",
        "manifest":[{"path":"x/missing","action":"upsert","size":3,"mtime_unix_ms":0}]}));
    assert_eq!(sync, json!({"op":"sync_ok"}));
    // v1 guest_fs shapes.
    let w = client.fs(
        "write_file",
        "/workspace/f.txt",
        &json!({"content_base64":"YQ=="}),
    );
    assert_eq!(w, json!({"op":"guest_fs_ok","session_id":"pid-1"}));
    let l = client.fs("list_dir", "/workspace", &json!({}));
    assert_eq!(
        l,
        json!({"op":"guest_fs_ok","session_id":"pid-1","names":["f.txt"]})
    );
    // v1 allowed an empty staging_dir to clear the session.
    let cleared = client.call(&json!({"op":"session_start","session_id":"pid-1","staging_dir":"","guest_workspace":"/workspace","backend":"beta-stub","backend_config":{}}));
    assert_eq!(cleared["op"], "session_ok");
    assert_error(
        &client.fs("list_dir", "/workspace", &json!({})),
        "error",
        "no_session",
    );
}

#[test]
fn unknown_capabilities_are_not_echoed() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    let hs = client.handshake(Some(&["exec-stream", "teleport", "exec-stream"]), None);
    assert_eq!(hs["capabilities"], json!(["exec-stream"]));
    let hs = client.handshake(Some(&[]), None);
    assert_eq!(hs["capabilities"], json!([]));
    // Re-handshaking without exec-stream turns streaming off again.
    client.session(&st.dir);
    let (outputs, result) = client.exec(&["echo", "x"], &json!({}));
    assert!(outputs.is_empty());
    assert_eq!(result["exit_code"], 0);
}

#[test]
fn exit_codes_and_signals_as_v1() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let cases: [(&str, Value); 4] = [
        ("exit 0", json!([0, null])),
        ("exit 255", json!([255, null])),
        ("kill -KILL $$", json!([137, 9])),
        ("kill -TERM $$", json!([143, 15])),
    ];
    for (script, expected) in cases {
        let (_, result) = client.exec(&["sh", "-c", script], &json!({}));
        assert_eq!(result["op"], "exec_result", "{script}: {result}");
        assert_eq!(
            json!([result["exit_code"], result["signal"]]),
            expected,
            "{script}"
        );
    }
}

#[test]
fn exec_runs_in_guest_cwd_with_path_from_env() {
    let st = staging();
    std::fs::create_dir_all(st.dir.join("proj/sub")).unwrap();
    let bin_dir = st.dir.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let tool = bin_dir.join("my-tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool-ran-in \"$(pwd)\"\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let (outputs, result) = client.exec(
        &["my-tool"],
        &json!({"guest_cwd": "/workspace/proj/./sub", "env": {"PATH": path}}),
    );
    assert_eq!(result["exit_code"], 0, "{result}");
    assert_eq!(
        stream_text(&outputs, "stdout"),
        format!("tool-ran-in {}\n", st.dir.join("proj/sub").display())
    );
}
