//! Property tests: every request and reply survives JSON encoding and parsing unchanged,
//! and the line codec splits arbitrary input the same way a plain split does.

use std::collections::BTreeMap;

use devshell_vm_protocol::{
    Direction, ErrorCode, ErrorReply, Exec, ExecOutput, ExecResult, GuestFs, GuestFsErrorCode,
    GuestFsErrorReply, GuestFsOk, GuestFsOperation, GuestKindWire, GuestStat, Handshake,
    HandshakeOk, LineReader, ManifestAction, ManifestEntry, OutputStream, Reply, Request,
    SessionOk, SessionShutdown, SessionStart, ShutdownOk, SyncMismatch, SyncOk, SyncRequest,
    encode_base64, encode_reply, encode_request, parse_reply, parse_request,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    // Includes quotes, backslashes, newlines, control characters and non-ASCII.
    prop_oneof![
        "[a-zA-Z0-9_./-]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(16).collect()),
        Just("line\nbreak \"quoted\" \\ \u{0} é 😀".to_owned()),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            btree_map(text(), inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        proptest::sample::select(ErrorCode::KNOWN).prop_map(ErrorCode::from),
        "[a-z_]{1,10}".prop_map(ErrorCode::from),
    ]
}

fn guest_fs_code() -> impl Strategy<Value = GuestFsErrorCode> {
    prop_oneof![
        proptest::sample::select(GuestFsErrorCode::KNOWN).prop_map(GuestFsErrorCode::from),
        "[a-z_]{1,10}".prop_map(GuestFsErrorCode::from),
    ]
}

fn operation() -> impl Strategy<Value = GuestFsOperation> {
    prop_oneof![
        Just(GuestFsOperation::ListDir),
        Just(GuestFsOperation::ReadFile),
        Just(GuestFsOperation::WriteFile),
        Just(GuestFsOperation::Mkdir),
        Just(GuestFsOperation::Remove),
        Just(GuestFsOperation::Stat),
        Just(GuestFsOperation::Exists),
        Just(GuestFsOperation::Rename),
        "[a-z_]{1,10}".prop_map(GuestFsOperation::from),
    ]
}

fn base64_blob() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 0..64).prop_map(|b| encode_base64(&b))
}

fn manifest_entry() -> impl Strategy<Value = ManifestEntry> {
    (
        text(),
        prop_oneof![Just(ManifestAction::Upsert), Just(ManifestAction::Delete)],
        option::of(any::<u64>()),
        option::of(any::<i64>()),
    )
        .prop_map(|(path, action, size, mtime_unix_ms)| ManifestEntry {
            path,
            action,
            size,
            mtime_unix_ms,
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u32>(),
            text(),
            text(),
            option::of(vec(text(), 0..4)),
            option::of(text())
        )
            .prop_map(|(version, client, client_version, capabilities, token)| {
                Request::Handshake(Handshake {
                    version,
                    client,
                    client_version,
                    capabilities,
                    token,
                })
            }),
        (text(), text(), text(), text(), json_value()).prop_map(
            |(session_id, staging_dir, guest_workspace, backend, backend_config)| {
                Request::SessionStart(SessionStart {
                    session_id,
                    staging_dir,
                    guest_workspace,
                    backend,
                    backend_config,
                })
            }
        ),
        (
            text(),
            prop_oneof![Just(Direction::PushToGuest), Just(Direction::PullFromGuest)],
            text(),
            option::of(vec(manifest_entry(), 0..4))
        )
            .prop_map(|(session_id, direction, vfs_cwd_leaf, manifest)| {
                Request::SyncRequest(SyncRequest {
                    session_id,
                    direction,
                    vfs_cwd_leaf,
                    manifest,
                })
            }),
        (
            text(),
            option::of(text()),
            vec(text(), 0..5),
            btree_map(text(), text(), 0..4),
            option::of(any::<u64>())
        )
            .prop_map(|(session_id, guest_cwd, argv, env, timeout_ms)| {
                Request::Exec(Exec {
                    session_id,
                    guest_cwd,
                    argv,
                    env: env.into_iter().collect::<BTreeMap<_, _>>(),
                    timeout_ms,
                })
            }),
        (
            text(),
            operation(),
            text(),
            option::of(base64_blob()),
            option::of(text())
        )
            .prop_map(
                |(session_id, operation, guest_path, content_base64, to_path)| {
                    Request::GuestFs(GuestFs {
                        session_id,
                        operation,
                        guest_path,
                        content_base64,
                        to_path,
                    })
                }
            ),
        (text(), any::<bool>()).prop_map(|(session_id, stop_vm)| {
            Request::SessionShutdown(SessionShutdown {
                session_id,
                stop_vm,
            })
        }),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    let kind = prop_oneof![
        Just(GuestKindWire::Dir),
        Just(GuestKindWire::File),
        Just(GuestKindWire::Symlink)
    ];
    let stat = (
        kind,
        any::<u64>(),
        option::of(0u32..0o10000),
        option::of(any::<i64>()),
    )
        .prop_map(|(kind, size, mode, mtime_unix_ms)| GuestStat {
            kind,
            size,
            mode,
            mtime_unix_ms,
        });
    let mismatch = (
        text(),
        text(),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(|(path, problem, expected_size, actual_size)| SyncMismatch {
            path,
            problem,
            expected_size,
            actual_size,
        });
    prop_oneof![
        (any::<u32>(), text(), text(), option::of(vec(text(), 0..4))).prop_map(
            |(version, server, server_version, capabilities)| Reply::HandshakeOk(HandshakeOk {
                version,
                server,
                server_version,
                capabilities
            })
        ),
        text().prop_map(|session_id| Reply::SessionOk(SessionOk { session_id })),
        option::of(vec(mismatch, 0..3)).prop_map(|mismatches| Reply::SyncOk(SyncOk { mismatches })),
        (
            text(),
            prop_oneof![Just(OutputStream::Stdout), Just(OutputStream::Stderr)],
            base64_blob()
        )
            .prop_map(
                |(session_id, stream, data_base64)| Reply::ExecOutput(ExecOutput {
                    session_id,
                    stream,
                    data_base64
                })
            ),
        (text(), any::<i32>(), option::of(1i32..65)).prop_map(|(session_id, exit_code, signal)| {
            Reply::ExecResult(ExecResult {
                session_id,
                exit_code,
                signal,
            })
        }),
        (
            text(),
            option::of(vec(text(), 0..5)),
            option::of(base64_blob()),
            option::of(stat),
            option::of(any::<bool>())
        )
            .prop_map(|(session_id, names, content_base64, stat, exists)| {
                Reply::GuestFsOk(GuestFsOk {
                    session_id,
                    names,
                    content_base64,
                    stat,
                    exists,
                })
            }),
        (guest_fs_code(), text(), option::of(text())).prop_map(|(code, message, path)| {
            Reply::GuestFsError(GuestFsErrorReply {
                code,
                message,
                path,
            })
        }),
        Just(Reply::ShutdownOk(ShutdownOk {})),
        (error_code(), text())
            .prop_map(|(code, message)| Reply::Error(ErrorReply { code, message })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_request_round_trips(req in request()) {
        let line = encode_request(&req);
        prop_assert!(!line.contains('\n'), "a frame must be one line: {line}");
        prop_assert_eq!(parse_request(&line).unwrap(), req);
    }

    #[test]
    fn every_reply_round_trips(rep in reply()) {
        let line = encode_reply(&rep);
        prop_assert!(!line.contains('\n'), "a frame must be one line: {line}");
        prop_assert_eq!(parse_reply(&line).unwrap(), rep);
    }

    #[test]
    fn requests_survive_the_line_codec(reqs in vec(request(), 0..6)) {
        let mut wire = Vec::new();
        for r in &reqs {
            devshell_vm_protocol::write_frame(&mut wire, r).unwrap();
        }
        let mut reader = LineReader::new(wire.as_slice());
        let mut back = Vec::new();
        while let Some(line) = reader.read_line().unwrap() {
            back.push(parse_request(&line).unwrap());
        }
        prop_assert_eq!(back, reqs);
    }

    #[test]
    fn line_reader_matches_a_plain_split(input in vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(0xff_u8), any::<u8>()], 0..400), max in 0usize..20) {
        let mut reader = LineReader::with_max_frame_bytes(input.as_slice(), max);
        let mut got = Vec::new();
        loop {
            match reader.read_line() {
                Ok(None) => break,
                Ok(Some(line)) => got.push(Ok(line)),
                Err(err) => {
                    prop_assert!(err.is_recoverable());
                    got.push(Err(err.error_code().to_string()));
                }
            }
        }
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if input.last() == Some(&b'\n') || input.is_empty() {
            parts.pop();
        }
        let expected: Vec<Result<String, String>> = parts
            .into_iter()
            .map(|p| {
                if p.len() > max {
                    Err("frame_too_large".to_owned())
                } else {
                    String::from_utf8(p.to_vec()).map_err(|_| "parse".to_owned())
                }
            })
            .collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn unknown_fields_are_ignored_in_every_message(
        req in request(),
        rep in reply(),
        extra in json_value(),
        name in "x_future_[a-z]{1,8}",
    ) {
        // A newer peer adds fields (any JSON) to any frame: both sides still read it.
        let mut value: serde_json::Value = serde_json::from_str(&encode_request(&req)).unwrap();
        value[name.as_str()] = extra.clone();
        prop_assert_eq!(parse_request(&value.to_string()).unwrap(), req);
        let mut value: serde_json::Value = serde_json::from_str(&encode_reply(&rep)).unwrap();
        value[name.as_str()] = extra;
        prop_assert_eq!(parse_reply(&value.to_string()).unwrap(), rep);
    }

    #[test]
    fn parse_request_never_panics(line in any::<String>()) {
        let _ = parse_request(&line);
        let _ = parse_reply(&line);
    }
}
