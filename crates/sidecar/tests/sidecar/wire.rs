//! `health`, `--check`, and `wire-sync` negotiation and refusals at the line level
//! (the full push/pull cycle is tested from the client in `backend-beta/tests/remote`).

use std::process::Command;

use serde_json::json;

use crate::common::{Client, bin, builder};

#[test]
fn health_is_answered_before_authentication_and_check_uses_it() {
    let root = tempfile::tempdir().unwrap();
    let sidecar = builder(root.path()).token("s3cret").start_tcp();
    let addr = sidecar.tcp_addr().unwrap();
    let mut client = Client::tcp(addr);
    let reply = client.call(&json!({"op": "health"}));
    assert_eq!(reply["op"], "health_ok", "{reply}");
    assert_eq!(reply["status"], "ok");
    // Anything else still needs the token.
    let reply = client.call(&json!({"op": "session_start", "staging_dir": "/tmp"}));
    assert_eq!(reply["code"], "unauthorized", "{reply}");

    let ok = Command::new(bin())
        .args(["--check", &addr.to_string()])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": ok ("));
    drop(sidecar);
    let down = Command::new(bin())
        .args(["--check", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("health check of"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}

#[test]
fn wire_ops_need_the_capability_and_a_wire_session() {
    let root = tempfile::tempdir().unwrap();
    let sidecar = builder(root.path()).start_unix();
    // Without the capability a wire op is unknown, as for a v1 sidecar.
    let mut v1 = Client::of(&sidecar);
    let reply =
        v1.call(&json!({"op": "handshake", "version": 1, "client": "t", "client_version": "0"}));
    assert_eq!(reply["op"], "handshake_ok");
    assert!(
        reply.get("capabilities").is_none(),
        "no list for a v1 client: {reply}"
    );
    let reply = v1.call(&json!({"op": "wire_start", "client_id": "c"}));
    assert_eq!(reply["code"], "unknown_op", "{reply}");

    let mut client = Client::of(&sidecar);
    let reply = client.call(&json!({"op": "handshake", "version": 1, "client": "t",
        "client_version": "0", "capabilities": ["wire-sync"]}));
    assert_eq!(reply["capabilities"], json!(["wire-sync"]), "{reply}");
    let reply = client.call(&json!({"op": "wire_project", "session_id": "s", "project": "/p"}));
    assert_eq!(reply["code"], "no_session", "{reply}");
    let reply = client.call(&json!({"op": "wire_start", "session_id": "s", "client_id": "c"}));
    assert_eq!(reply["op"], "wire_started", "{reply}");
    let reply = client.call(&json!({"op": "wire_pull", "session_id": "s", "project": "/p"}));
    assert_eq!(reply["code"], "wire_sequence", "{reply}");
    let reply = client.call(&json!({"op": "wire_project", "session_id": "s", "project": "/p"}));
    assert_eq!(reply["op"], "wire_project_ok", "{reply}");
    assert_eq!(reply["epoch"], json!(null));
    // A path that climbs out is refused before anything is applied.
    let reply = client.call(
        &json!({"op": "wire_push", "session_id": "s", "project": "/p",
        "full": true, "epoch": "e", "generation": 1,
        "entries": [{"path": "../x", "kind": "dir", "mode": 493, "mtime_ns": 0, "size": 0}]}),
    );
    assert_eq!(reply["code"], "wire_invalid", "{reply}");
    // A delta on a base the copy is not at.
    let reply = client.call(
        &json!({"op": "wire_push", "session_id": "s", "project": "/p",
        "full": false, "base_epoch": "old", "base_generation": 3, "epoch": "e", "generation": 4}),
    );
    assert_eq!(reply["code"], "wire_stale", "{reply}");
    // A push of a directory and a symlink needs no blob and applies at once.
    let reply = client.call(&json!({"op": "wire_push", "session_id": "s", "project": "/p",
        "full": true, "epoch": "e", "generation": 1, "entries": [
            {"path": "d", "kind": "dir", "mode": 448, "mtime_ns": 1_000_000_007, "size": 0},
            {"path": "d/l", "kind": "symlink", "mode": 511, "mtime_ns": 5, "size": 3, "target": "../"}]}));
    assert_eq!(reply["op"], "wire_push_ok", "{reply}");
    // A v1 session_start cannot reach into the wire stores.
    let store = root.path().join(".devshell-vm-wire");
    let reply = v1.call(&json!({"op": "session_start", "session_id": "x",
        "staging_dir": store.to_str().unwrap()}));
    assert_eq!(reply["code"], "bad_staging_dir", "{reply}");
}
