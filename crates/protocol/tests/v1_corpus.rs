//! A corpus of v1 frames as the earlier client and sidecar sent them (fields in any
//! order, extra fields present) must parse; bad lines get the documented codes.

use devshell_vm_protocol::{
    Direction, ErrorCode, GuestFsErrorCode, GuestFsOperation, ManifestAction, Reply, Request,
    encode_reply, parse_reply, parse_request,
};

#[test]
fn v1_requests_parse_in_any_field_order() {
    let corpus = [
        r#"{"op":"handshake","version":1,"client":"cargo-devshell","client_version":"0.3.1"}"#,
        r#"{"client_version":"0.3.1","client":"cargo-devshell","version":1,"op":"handshake"}"#,
        r#"{"op":"session_start","session_id":"pid-4242","staging_dir":"/tmp/st","guest_workspace":"/workspace","backend":"beta-stub","backend_config":{}}"#,
        r#"{"backend_config":{},"backend":"beta-stub","guest_workspace":"/workspace","staging_dir":"/tmp/st","session_id":"pid-4242","op":"session_start"}"#,
        r#"{"op":"sync_request","session_id":"pid-4242","direction":"push_to_guest","vfs_cwd_leaf":"proj"}"#,
        r#"{"vfs_cwd_leaf":"proj","direction":"pull_from_guest","session_id":"pid-4242","op":"sync_request"}"#,
        r#"{"op":"sync_request","session_id":"pid-1","direction":"push_to_guest","vfs_cwd_leaf":"p","manifest":[{"path":"p/a.rs","action":"upsert","size":3,"mtime_unix_ms":1700000000000},{"mtime_unix_ms":0,"size":0,"action":"delete","path":"p/old"}]}"#,
        r#"{"op":"exec","session_id":"pid-4242","guest_cwd":"/workspace/proj","argv":["cargo","build"],"env":{}}"#,
        r#"{"timeout_ms":200,"env":{"RUST_LOG":"info"},"argv":["sh","-c","true"],"guest_cwd":"/workspace","session_id":"pid-4242","op":"exec"}"#,
        r#"{"op":"guest_fs","session_id":"pid-4242","operation":"list_dir","guest_path":"/workspace"}"#,
        r#"{"op":"guest_fs","session_id":"pid-4242","operation":"read_file","guest_path":"/workspace/a.txt"}"#,
        r#"{"content_base64":"aGVsbG8K","guest_path":"/workspace/a.txt","operation":"write_file","session_id":"pid-4242","op":"guest_fs"}"#,
        r#"{"op":"guest_fs","session_id":"pid-4242","operation":"mkdir","guest_path":"/workspace/d/e"}"#,
        r#"{"op":"guest_fs","session_id":"pid-4242","operation":"remove","guest_path":"/workspace/d"}"#,
        r#"{"op":"session_shutdown","session_id":"pid-4242","stop_vm":false}"#,
        // Unknown extra fields are ignored.
        r#"{"op":"handshake","version":1,"client":"x","client_version":"1","future":{"a":[1,2]},"capabilities":["exec-stream","nope"],"token":"s3cret"}"#,
        // Whitespace and CRLF around a frame.
        "  {\"op\":\"session_shutdown\",\"session_id\":\"pid-1\",\"stop_vm\":true}\r",
    ];
    let parsed: Vec<Request> = corpus
        .iter()
        .map(|line| parse_request(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let ops: Vec<&str> = parsed.iter().map(Request::op).collect();
    assert_eq!(
        ops,
        [
            "handshake",
            "handshake",
            "session_start",
            "session_start",
            "sync_request",
            "sync_request",
            "sync_request",
            "exec",
            "exec",
            "guest_fs",
            "guest_fs",
            "guest_fs",
            "guest_fs",
            "guest_fs",
            "session_shutdown",
            "handshake",
            "session_shutdown",
        ]
    );
    assert_eq!(parsed[0], parsed[1], "field order must not matter");
    assert_eq!(parsed[2], parsed[3], "field order must not matter");
    let Request::SyncRequest(sync) = &parsed[5] else {
        unreachable!()
    };
    assert_eq!(sync.direction, Direction::PullFromGuest);
    assert_eq!(sync.manifest, None);
    let Request::SyncRequest(sync) = &parsed[6] else {
        unreachable!()
    };
    let manifest = sync.manifest.as_ref().unwrap();
    assert_eq!(manifest[0].size, Some(3));
    assert_eq!(manifest[1].action, ManifestAction::Delete);
    let Request::Exec(exec) = &parsed[8] else {
        unreachable!()
    };
    assert_eq!(exec.timeout_ms, Some(200));
    assert_eq!(exec.env["RUST_LOG"], "info");
    assert_eq!(exec.guest_cwd.as_deref(), Some("/workspace"));
    let Request::GuestFs(write) = &parsed[11] else {
        unreachable!()
    };
    assert_eq!(write.operation, GuestFsOperation::WriteFile);
    assert_eq!(write.content().unwrap(), b"hello\n");
    let Request::Handshake(hs) = &parsed[15] else {
        unreachable!()
    };
    assert_eq!(hs.token.as_deref(), Some("s3cret"));
    assert!(
        !format!("{hs:?}").contains("s3cret"),
        "Debug must redact the token"
    );
}

#[test]
fn v1_sidecar_replies_parse() {
    let corpus = [
        r#"{"op":"handshake_ok","version":1,"server":"devshell-vm","server_version":"0.0.0"}"#,
        r#"{"session_id":"pid-1","op":"session_ok"}"#,
        r#"{"op":"sync_ok"}"#,
        r#"{"op":"exec_result","session_id":"pid-1","exit_code":137,"signal":9}"#,
        r#"{"signal":null,"exit_code":0,"session_id":"pid-1","op":"exec_result"}"#,
        r#"{"op":"guest_fs_ok","session_id":"pid-1","names":[".hidden","a"]}"#,
        r#"{"op":"guest_fs_ok","session_id":"pid-1","content_base64":"YmV0YS1zdHViCg=="}"#,
        r#"{"op":"guest_fs_error","code":"not_found","message":"/workspace/x"}"#,
        r#"{"op":"shutdown_ok"}"#,
        r#"{"op":"error","code":"exec_timeout","message":"timed out after 200 ms"}"#,
        r#"{"op":"error","code":"some_future_code","message":"?"}"#,
    ];
    let parsed: Vec<Reply> = corpus
        .iter()
        .map(|line| parse_reply(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let Reply::ExecResult(r) = &parsed[3] else {
        unreachable!()
    };
    assert_eq!((r.exit_code, r.signal), (137, Some(9)));
    let Reply::GuestFsOk(ok) = &parsed[6] else {
        unreachable!()
    };
    assert_eq!(ok.content().unwrap().unwrap(), b"beta-stub\n");
    let Reply::GuestFsError(e) = &parsed[7] else {
        unreachable!()
    };
    assert_eq!(e.code, GuestFsErrorCode::NotFound);
    let Reply::Error(e) = &parsed[9] else {
        unreachable!()
    };
    assert_eq!(e.code, ErrorCode::ExecTimeout);
    let Reply::Error(e) = &parsed[10] else {
        unreachable!()
    };
    assert_eq!(e.code, ErrorCode::Other("some_future_code".into()));
    // Unknown codes survive a round trip verbatim.
    assert_eq!(encode_reply(&parsed[10]), corpus[10]);
}

#[test]
fn v1_reply_shapes_are_exact() {
    // A v1 client reads these fields; new optional fields must be absent by default.
    let hs = Reply::HandshakeOk(devshell_vm_protocol::HandshakeOk {
        version: 1,
        server: "devshell-vm-sidecar".into(),
        server_version: "0.1.0".into(),
        capabilities: None,
    });
    assert_eq!(
        encode_reply(&hs),
        r#"{"op":"handshake_ok","version":1,"server":"devshell-vm-sidecar","server_version":"0.1.0"}"#
    );
    assert_eq!(
        encode_reply(&Reply::SyncOk(devshell_vm_protocol::SyncOk::default())),
        r#"{"op":"sync_ok"}"#
    );
    assert_eq!(
        encode_reply(&Reply::GuestFsOk(devshell_vm_protocol::GuestFsOk {
            session_id: "s".into(),
            names: Some(vec!["a".into()]),
            ..Default::default()
        })),
        r#"{"op":"guest_fs_ok","session_id":"s","names":["a"]}"#
    );
}

#[test]
fn bad_lines_get_the_documented_codes() {
    let cases = [
        ("", ErrorCode::Empty),
        ("   \r", ErrorCode::Empty),
        ("{not json", ErrorCode::Parse),
        ("[1,2]", ErrorCode::Parse),
        (r#"{"no_op":1}"#, ErrorCode::Parse),
        (r#"{"op":5}"#, ErrorCode::Parse),
        (r#"{"op":"frobnicate"}"#, ErrorCode::UnknownOp),
        (
            r#"{"op":"exec","session_id":"s"}"#,
            ErrorCode::InvalidRequest,
        ),
        (r#"{"op":"exec","argv":[1,2]}"#, ErrorCode::InvalidRequest),
        (
            r#"{"op":"sync_request","direction":"sideways"}"#,
            ErrorCode::InvalidRequest,
        ),
    ];
    for (line, code) in cases {
        let err = parse_request(line).expect_err(line);
        assert_eq!(err.error_code(), code, "{line}: {err}");
        assert!(err.is_recoverable());
    }
    let err = parse_request(r#"{"op":"frobnicate"}"#).unwrap_err();
    assert!(err.to_string().contains("frobnicate"), "{err}");
}

#[test]
fn unknown_guest_fs_operation_parses_as_other() {
    let req = parse_request(
        r#"{"op":"guest_fs","session_id":"s","operation":"chmod","guest_path":"/workspace"}"#,
    )
    .unwrap();
    let Request::GuestFs(fs) = req else {
        unreachable!()
    };
    assert_eq!(fs.operation, GuestFsOperation::Other("chmod".into()));
}
