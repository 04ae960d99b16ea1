//! Bad input of every kind gets an error frame; the same connection and other
//! connections keep working, and the server stays up.

use serde_json::json;

use crate::common::{Client, assert_error, builder, staging};

/// The connection still answers a real request after an abuse case.
#[track_caller]
fn still_works(client: &mut Client) {
    let hs = client.handshake(None, None);
    assert_eq!(
        hs["op"], "handshake_ok",
        "connection broken after abuse: {hs}"
    );
}

#[test]
fn bad_frames_get_error_frames_and_the_connection_survives() {
    let st = staging();
    let sidecar = builder(st.root.path()).max_frame_bytes(4096).start_unix();
    let mut client = Client::of(&sidecar);

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json\n".to_vec(), "parse"),
        (b"[1,2,3]\n".to_vec(), "parse"),
        (b"{\"no_op\":true}\n".to_vec(), "parse"),
        (b"\xff\xfe\xfd invalid utf-8 \xc3\x28\n".to_vec(), "parse"),
        (b"\n".to_vec(), "empty"),
        (b"   \t \r\n".to_vec(), "empty"),
        (b"{\"op\":\"teleport\"}\n".to_vec(), "unknown_op"),
        (
            b"{\"op\":\"exec\",\"session_id\":\"pid-1\",\"argv\":\"not a list\"}\n".to_vec(),
            "invalid_request",
        ),
        (
            {
                let mut big = b"{\"op\":\"handshake\",\"client\":\"".to_vec();
                big.extend(std::iter::repeat_n(b'x', 100_000));
                big.extend_from_slice(b"\"}\n");
                big
            },
            "frame_too_large",
        ),
    ];
    for (line, code) in &cases {
        client.send_raw(line);
        let reply = client.recv();
        let message = assert_error(&reply, "error", code);
        assert!(!message.is_empty(), "error without message: {reply}");
        still_works(&mut client);
    }
    // Another connection is unaffected, and the server is still up.
    let mut other = Client::of(&sidecar);
    still_works(&mut other);
    crate::common::wait_until(
        "the abuse is logged",
        std::time::Duration::from_secs(10),
        || sidecar.logs().contains("bad frame"),
    );
}

#[test]
fn requests_before_session_start_get_no_session_never_canned_data() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    still_works(&mut client);
    for frame in [
        json!({"op":"exec","session_id":"pid-1","guest_cwd":"/workspace","argv":["true"],"env":{}}),
        json!({"op":"guest_fs","session_id":"pid-1","operation":"list_dir","guest_path":"/workspace"}),
        json!({"op":"guest_fs","session_id":"pid-1","operation":"read_file","guest_path":"/workspace/x"}),
        json!({"op":"guest_fs","session_id":"pid-1","operation":"write_file","guest_path":"/workspace/x","content_base64":""}),
        json!({"op":"sync_request","session_id":"pid-1","direction":"push_to_guest","vfs_cwd_leaf":"x"}),
        json!({"op":"session_shutdown","session_id":"pid-1","stop_vm":false}),
    ] {
        let reply = client.call(&frame);
        assert_error(&reply, "error", "no_session");
    }
    still_works(&mut client);
}

#[test]
fn bad_requests_in_a_session_get_precise_codes() {
    let st = staging();
    std::fs::write(st.dir.join("file"), b"x").unwrap();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    client.ready(&st.dir);

    let (_, r) = client.exec(&[], &json!({}));
    assert_error(&r, "error", "exec");
    let (_, r) = client.exec(&["true"], &json!({"env": {"LD_PRELOAD": "/tmp/evil.so"}}));
    assert_error(&r, "error", "forbidden_env");
    let (_, r) = client.exec(&["true"], &json!({"env": {"LD_LIBRARY_PATH": "/tmp"}}));
    assert_error(&r, "error", "forbidden_env");
    let (_, r) = client.exec(&["true"], &json!({"env": {"GLIBC_TUNABLES": "x"}}));
    assert_error(&r, "error", "forbidden_env");
    let (_, r) = client.exec(&["true"], &json!({"env": {"BAD=NAME": "x"}}));
    assert_error(&r, "error", "invalid_request");
    let (_, r) = client.exec(&["definitely-not-a-program-xyz"], &json!({}));
    assert_error(&r, "error", "exec_spawn");
    for cwd in [
        "/elsewhere",
        "/workspace/../etc",
        "/workspace/missing",
        "/workspace/file",
        "relative",
    ] {
        let (_, r) = client.exec(&["true"], &json!({"guest_cwd": cwd}));
        assert_error(&r, "error", "bad_guest_cwd");
    }
    let (_, r) = client.exec(&["true"], &json!({"session_id": "pid-other"}));
    assert_error(&r, "error", "wrong_session");
    let r = client.call(&json!({"op":"handshake","version":2,"client":"x","client_version":"0"}));
    assert_error(&r, "error", "version_mismatch");
    let r = client.fs(
        "write_file",
        "/workspace/y",
        &json!({"content_base64":"***"}),
    );
    assert_error(&r, "guest_fs_error", "invalid_base64");
    let r = client.fs("chmod", "/workspace/y", &json!({}));
    assert_error(&r, "guest_fs_error", "unknown");
    // After all that, the session still works.
    let (_, r) = client.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0, "{r}");
}

#[test]
fn staging_dir_outside_the_roots_is_refused() {
    let st = staging();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), st.dir.join("link-out")).unwrap();
    std::fs::write(st.dir.join("a-file"), b"").unwrap();
    let sidecar = builder(st.root.path()).start_unix();
    let mut client = Client::of(&sidecar);
    let link_out = st.dir.join("link-out");
    let dotdot = format!("{}/../..", st.dir.display());
    let a_file = st.dir.join("a-file");
    for dir in [
        "/",
        "/etc",
        outside.path().to_str().unwrap(),
        link_out.to_str().unwrap(),
        dotdot.as_str(),
        "relative/dir",
        "/no/such/dir",
        a_file.to_str().unwrap(),
    ] {
        let reply = client.session(std::path::Path::new(dir));
        assert_error(&reply, "error", "bad_staging_dir");
        // Still no session.
        let (_, r) = client.exec(&["true"], &json!({}));
        assert_error(&r, "error", "no_session");
    }
    // The root itself and a subdirectory are accepted.
    assert_eq!(client.session(st.root.path())["op"], "session_ok");
    assert_eq!(client.session(&st.dir)["op"], "session_ok");
}

#[test]
fn root_is_repeatable_and_defaults_to_the_current_directory() {
    let first = staging();
    let second = staging();
    let outside = staging();
    let sidecar = builder(first.root.path())
        .root(second.root.path())
        .start_unix();
    let mut client = Client::of(&sidecar);
    assert_eq!(client.session(&first.dir)["op"], "session_ok");
    assert_eq!(client.session(&second.dir)["op"], "session_ok");
    let message = assert_error(&client.session(&outside.dir), "error", "bad_staging_dir");
    assert!(
        message.contains(&outside.dir.display().to_string()),
        "the message names the refused dir: {message}"
    );
    // The refusal cleared nothing and broke nothing: a new session still starts.
    assert_eq!(client.session(&second.dir)["op"], "session_ok");

    // Without --root the only root is the sidecar's current directory.
    let mut command =
        devshell_vm_test_support::sidecar::SidecarProcess::builder(crate::common::bin())
            .stdio_command();
    command.current_dir(&first.dir);
    let mut cwd_only = Client::stdio(command);
    assert_eq!(cwd_only.handshake(None, None)["op"], "handshake_ok");
    let inner = first.dir.join("inner");
    std::fs::create_dir(&inner).unwrap();
    assert_eq!(cwd_only.session(&first.dir)["op"], "session_ok");
    assert_eq!(cwd_only.session(&inner)["op"], "session_ok");
    for refused in [first.root.path(), second.dir.as_path()] {
        assert_error(&cwd_only.session(refused), "error", "bad_staging_dir");
    }
}

#[test]
fn one_connection_dying_mid_frame_does_not_affect_others() {
    let st = staging();
    let sidecar = builder(st.root.path()).start_unix();
    let mut steady = Client::of(&sidecar);
    steady.ready(&st.dir);
    for _ in 0..5 {
        let mut rude = Client::of(&sidecar);
        rude.send_raw(b"{\"op\":\"handshake\",\"vers");
        drop(rude);
    }
    let (_, r) = steady.exec(&["true"], &json!({}));
    assert_eq!(r["exit_code"], 0, "{r}");
    let mut fresh = Client::of(&sidecar);
    still_works(&mut fresh);
}

#[test]
fn connections_over_the_limit_get_busy_and_the_rest_keep_working() {
    let st = staging();
    let sidecar = builder(st.root.path())
        .arg("--max-connections")
        .arg("2")
        .start_unix();
    let mut first = Client::of(&sidecar);
    let mut second = Client::of(&sidecar);
    still_works(&mut first);
    still_works(&mut second);
    let mut third = Client::of(&sidecar);
    assert_error(&third.recv(), "error", "busy");
    assert!(third.try_recv().is_none(), "a refused connection is closed");
    still_works(&mut first);
    drop(second);
    // The slot is released when the server notices the close (connection ids are
    // given in accept order: `second` is conn 2).
    crate::common::wait_until(
        "the server saw the second connection close",
        std::time::Duration::from_secs(10),
        || sidecar.logs().contains("[conn 2]: closed by peer"),
    );
    let mut fresh = Client::of(&sidecar);
    still_works(&mut fresh);
}
