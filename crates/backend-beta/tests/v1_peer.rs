//! `BetaSession` against a tiny in-test **v1** sidecar that replies exactly as
//! `protocol-v1.md` describes: no capabilities in `handshake_ok`, unknown fields ignored,
//! output never streamed, `guest_fs` with only the five v1 operations, every `list_dir`
//! error reported as `not_found`. Also: a peer that stops answering (read deadline),
//! exit statuses the v1 client used to clamp, the frame limit, and (the one non-v1 mode
//! of the peer) a `sync-verify` peer that does not see the staging directory.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_config::VmConfig;
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestKind};
use devshell_vm_protocol::{decode_base64, encode_base64};
use devshell_vm_vfs::Vfs;
use serde_json::{Value, json};

/// What the peer saw and how it behaves.
#[derive(Default)]
struct PeerState {
    /// Every request line received, in order.
    lines: Vec<String>,
    /// When set, the peer reads `guest_fs` requests and never answers them (once).
    swallow_next_guest_fs: bool,
    /// When set, the peer announces `sync-verify` (if asked) and reports every manifest
    /// entry of a push as missing: a staging directory that is not really shared.
    unshared_staging: bool,
}

struct V1Peer {
    socket: PathBuf,
    state: Arc<Mutex<PeerState>>,
    _dir: tempfile::TempDir,
    staging: PathBuf,
}

impl V1Peer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("v1.sock");
        let staging = dir.path().join("staging");
        let listener = UnixListener::bind(&socket).expect("bind");
        let state = Arc::new(Mutex::new(PeerState::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        Self {
            socket,
            state,
            _dir: dir,
            staging,
        }
    }

    fn config(&self, mode: &str) -> VmConfig {
        let env = BTreeMap::from([
            ("DEVSHELL_VM_BACKEND".to_owned(), "beta".to_owned()),
            (
                "DEVSHELL_VM_SOCKET".to_owned(),
                self.socket.to_str().unwrap().to_owned(),
            ),
            ("DEVSHELL_VM_WORKSPACE_MODE".to_owned(), mode.to_owned()),
            (
                "DEVSHELL_VM_BETA_SESSION_STAGING".to_owned(),
                self.staging.to_str().unwrap().to_owned(),
            ),
        ]);
        VmConfig::from_source(&env).expect("config")
    }

    fn requests(&self) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// One v1 connection: strict request → reply, state per connection.
fn serve(stream: UnixStream, shared: &Mutex<PeerState>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut staging: Option<PathBuf> = None;
    let mut mount = String::from("/workspace");
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let unshared = shared.lock().unwrap().unshared_staging;
        let swallow = {
            let mut state = shared.lock().unwrap();
            state.lines.push(line.clone());
            let is_fs = line.contains("\"guest_fs\"");
            let swallow = is_fs && state.swallow_next_guest_fs;
            if swallow {
                state.swallow_next_guest_fs = false;
            }
            swallow
        };
        if swallow {
            continue;
        }
        let req: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                reply(
                    &mut writer,
                    &json!({"op":"error","code":"parse","message":e.to_string()}),
                );
                continue;
            }
        };
        let sid = req["session_id"].as_str().unwrap_or_default().to_owned();
        let answer = match req["op"].as_str().unwrap_or_default() {
            // A newer peer (only for the sync-verify test): answers with the capability.
            "handshake" if unshared => {
                json!({"op":"handshake_ok","version":1,"server":"fake","server_version":"0","capabilities":["sync-verify"]})
            }
            // v1 ignores `capabilities` and `token` and never sends capabilities back.
            "handshake" => {
                json!({"op":"handshake_ok","version":1,"server":"devshell-vm","server_version":"0.0.0"})
            }
            "session_start" => {
                staging = Some(PathBuf::from(req["staging_dir"].as_str().unwrap()));
                req["guest_workspace"]
                    .as_str()
                    .unwrap()
                    .clone_into(&mut mount);
                json!({"op":"session_ok","session_id":sid})
            }
            "sync_request" if unshared => {
                let mismatches: Vec<Value> = req["manifest"]
                    .as_array()
                    .map(|entries| {
                        entries
                            .iter()
                            .map(|e| json!({"path": e["path"], "problem": "missing", "expected_size": e["size"]}))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"op":"sync_ok","mismatches":mismatches})
            }
            "sync_request" => json!({"op":"sync_ok"}),
            "exec" => {
                let argv: Vec<&str> = req["argv"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                match argv.first().copied() {
                    Some("negative") => {
                        json!({"op":"exec_result","session_id":sid,"exit_code":-1,"signal":null})
                    }
                    Some("killed") => {
                        json!({"op":"exec_result","session_id":sid,"exit_code":137,"signal":9})
                    }
                    Some("slow") => json!({"op":"error","code":"exec_timeout","message":"timeout"}),
                    Some("missing") => {
                        json!({"op":"error","code":"exec_spawn","message":"No such file or directory"})
                    }
                    _ => json!({"op":"exec_result","session_id":sid,"exit_code":0,"signal":null}),
                }
            }
            "guest_fs" => match &staging {
                None => json!({"op":"error","code":"no_session","message":"no session"}),
                Some(dir) => guest_fs_v1(&req, dir, &mount, &sid),
            },
            "session_shutdown" => json!({"op":"shutdown_ok"}),
            other => json!({"op":"error","code":"unknown_op","message":other}),
        };
        reply(&mut writer, &answer);
    }
}

fn reply(writer: &mut UnixStream, value: &Value) {
    let mut line = serde_json::to_vec(value).unwrap();
    line.push(b'\n');
    let _ = writer.write_all(&line);
}

fn fs_err(code: &str, message: &str) -> Value {
    json!({"op":"guest_fs_error","code":code,"message":message})
}

/// The v1 `guest_fs` semantics (section 7 of earlier-project.md), on a real directory.
fn guest_fs_v1(req: &Value, staging: &Path, mount: &str, sid: &str) -> Value {
    let guest = req["guest_path"].as_str().unwrap_or_default();
    let Some(rel) = guest.strip_prefix(mount) else {
        return fs_err("invalid_path", guest);
    };
    let host = staging.join(rel.trim_start_matches('/'));
    match req["operation"].as_str().unwrap_or_default() {
        "list_dir" => match std::fs::read_dir(&host) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                json!({"op":"guest_fs_ok","session_id":sid,"names":names})
            }
            // v1: every list error is `not_found`.
            Err(e) => fs_err("not_found", &e.to_string()),
        },
        "read_file" => match std::fs::read(&host) {
            Ok(data) => {
                json!({"op":"guest_fs_ok","session_id":sid,"content_base64":encode_base64(&data)})
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs_err("not_found", &e.to_string())
            }
            Err(e) => fs_err("io_error", &e.to_string()),
        },
        "write_file" => {
            let data = match req["content_base64"].as_str() {
                None => Vec::new(),
                Some(text) => match decode_base64("content_base64", text) {
                    Ok(d) => d,
                    Err(e) => return fs_err("invalid_base64", &e.to_string()),
                },
            };
            if let Some(parent) = host.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            match std::fs::write(&host, data) {
                Ok(()) => json!({"op":"guest_fs_ok","session_id":sid}),
                Err(e) => fs_err("io_error", &e.to_string()),
            }
        }
        "mkdir" => match std::fs::create_dir_all(&host) {
            Ok(()) => json!({"op":"guest_fs_ok","session_id":sid}),
            Err(e) => fs_err("io_error", &e.to_string()),
        },
        "remove" => {
            let result = if host.is_dir() {
                std::fs::remove_dir_all(&host)
            } else {
                std::fs::remove_file(&host)
            };
            match result {
                Ok(()) => json!({"op":"guest_fs_ok","session_id":sid}),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    fs_err("not_found", &e.to_string())
                }
                Err(e) => fs_err("io_error", &e.to_string()),
            }
        }
        _ => fs_err("unknown", "unknown operation"),
    }
}

#[test]
fn handshake_offers_capabilities_and_a_v1_answer_means_none() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("guest")).expect("session");
    let caps = session.capabilities().expect("handshake with a v1 peer");
    assert!(
        !caps.exec_stream && !caps.guest_fs_v2 && !caps.sync_verify,
        "{caps:?}"
    );
    assert_eq!(
        session.server().unwrap(),
        ("devshell-vm".to_owned(), "0.0.0".to_owned())
    );
    let requests = peer.requests();
    assert_eq!(requests[0]["op"], "handshake");
    assert_eq!(requests[0]["version"], 1);
    assert_eq!(requests[0]["client"], "devshell-vm-backend-beta");
    assert_eq!(
        requests[0]["capabilities"],
        json!(["exec-stream", "guest-fs-v2", "sync-verify"])
    );
    assert!(
        requests[0].get("token").is_none(),
        "no token configured, none sent"
    );
    assert_eq!(requests[1]["op"], "session_start");
    assert_eq!(requests[1]["staging_dir"], peer.staging.to_str().unwrap());
    assert_eq!(requests[1]["guest_workspace"], "/workspace");
}

#[test]
fn guest_ops_work_with_only_v1_operations() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("guest")).expect("session");
    session
        .write_file("/workspace/d/f.txt", b"hello")
        .expect("write");
    assert_eq!(session.read_file("/workspace/d/f.txt").unwrap(), b"hello");
    assert_eq!(session.list_dir("/workspace/d").unwrap(), ["f.txt"]);
    // stat from list_dir/read_file, since a v1 peer has no `stat`.
    let file = session.stat("/workspace/d/f.txt").unwrap();
    assert_eq!((file.kind, file.size), (GuestKind::File, 5));
    assert_eq!(session.stat("/workspace/d").unwrap().kind, GuestKind::Dir);
    assert!(matches!(
        session.stat("/workspace/missing"),
        Err(GuestFsError::NotFound { .. })
    ));
    assert!(session.exists("/workspace/d/f.txt").unwrap());
    assert!(!session.exists("/workspace/missing").unwrap());
    // rename by copy + remove.
    session
        .rename("/workspace/d", "/workspace/e")
        .expect("rename through v1 ops");
    assert_eq!(session.read_file("/workspace/e/f.txt").unwrap(), b"hello");
    assert!(!session.exists("/workspace/d").unwrap());
    session.remove("/workspace/e").unwrap();
    assert!(session.list_dir("/workspace").unwrap().is_empty());
    // No v2 operation was ever sent to the v1 peer.
    for request in peer.requests() {
        if request["op"] == "guest_fs" {
            let op = request["operation"].as_str().unwrap();
            assert!(
                ["list_dir", "read_file", "write_file", "mkdir", "remove"].contains(&op),
                "sent {op} to a v1 peer"
            );
        }
    }
}

#[test]
fn exit_statuses_are_never_clamped() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("guest")).expect("session");
    let mut vfs = Vfs::new();
    let run = |session: &mut BetaSession, vfs: &mut Vfs, program: &str| {
        session
            .run_tool(
                vfs,
                "/",
                &ToolRequest::new(program, Vec::<String>::new()).stdout(OutputMode::Capture),
            )
            .map(|o| o.exec)
    };
    // The v1 client turned a negative code into success; here it stays a failure.
    let negative = run(&mut session, &mut vfs, "negative").unwrap();
    assert_eq!(negative.termination, Termination::Exited(-1));
    assert!(!negative.success());
    let status = session
        .run_rust_tool(&mut vfs, "/", "negative", &[])
        .expect("status");
    assert!(!status.success(), "negative exit code reported as success");
    assert_eq!(status.code(), Some(255));
    // Signal: kept as a signal, not folded into 128 + n.
    let killed = run(&mut session, &mut vfs, "killed").unwrap();
    assert_eq!(killed.termination, Termination::Signaled(9));
    assert_eq!(killed.exit_status().unwrap().code(), None);
    // exec_timeout error frame → TimedOut.
    assert_eq!(
        run(&mut session, &mut vfs, "slow").unwrap().termination,
        Termination::TimedOut
    );
    // exec_spawn → an error, not a status.
    let err = run(&mut session, &mut vfs, "missing").unwrap_err();
    assert!(
        matches!(&err, BetaError::Exec { code, .. } if code == "exec_spawn"),
        "{err:?}"
    );
    // Without exec-stream nothing comes back to capture (v1 writes to its own stderr).
    let ok = run(&mut session, &mut vfs, "true").unwrap();
    assert_eq!(ok.termination, Termination::Exited(0));
    assert!(ok.stdout.is_empty());
    assert_eq!(session.connections_opened(), 1);
}

#[test]
fn mode_s_cycle_against_v1_sends_push_exec_pull_in_order() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("sync")).expect("session");
    let mut vfs = Vfs::new();
    vfs.mkdir("/p/src").unwrap();
    vfs.write_file("/p/src/a.txt", b"abc".to_vec()).unwrap();
    // A manifest makes /p the project root for a run from /p/src.
    let cargo_toml: &[u8] = b"[package]\nname = \"p\"\n";
    vfs.write_file("/p/Cargo.toml", cargo_toml.to_vec())
        .unwrap();
    let outcome = session
        .run_tool(
            &mut vfs,
            "/p/src",
            &ToolRequest::new("true", Vec::<String>::new()),
        )
        .expect("run");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
    assert!(outcome.pull.is_some());
    // The push really went to the shared staging dir (project 0, leaf `p`).
    assert_eq!(
        std::fs::read(peer.staging.join("0/p/src/a.txt")).unwrap(),
        b"abc"
    );
    let ops: Vec<Value> = peer
        .requests()
        .into_iter()
        .filter(|r| r["op"] != "handshake" && r["op"] != "session_start")
        .collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert_eq!(ops[0]["op"], "sync_request");
    assert_eq!(ops[0]["direction"], "push_to_guest");
    assert_eq!(ops[0]["vfs_cwd_leaf"], "p");
    let manifest: Vec<(String, String, u64)> = ops[0]["manifest"]
        .as_array()
        .expect("push carries a manifest")
        .iter()
        .map(|e| {
            assert!(e["mtime_unix_ms"].as_i64().is_some_and(|ms| ms > 0), "{e}");
            (
                e["path"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        manifest,
        [
            (
                "0/p/Cargo.toml".to_owned(),
                "upsert".to_owned(),
                cargo_toml.len() as u64
            ),
            ("0/p/src/a.txt".to_owned(), "upsert".to_owned(), 3),
        ]
    );
    assert_eq!(ops[1]["op"], "exec");
    assert_eq!(ops[1]["guest_cwd"], "/workspace/0/p/src");
    assert_eq!(ops[1]["argv"], json!(["true"]));
    assert_eq!(ops[1]["env"]["CARGO_TARGET_DIR"], "../target");
    assert_eq!(ops[2]["op"], "sync_request");
    assert_eq!(ops[2]["direction"], "pull_from_guest");
}

#[test]
fn silent_peer_times_out_once_then_the_session_reconnects() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("guest")).expect("session");
    session.set_io_timeout(Duration::from_millis(300));
    session.write_file("/workspace/f", b"x").expect("write");
    peer.state.lock().unwrap().swallow_next_guest_fs = true;
    let err = session.read_file("/workspace/f").expect_err("no answer");
    assert!(
        matches!(&err, GuestFsError::Transport { message } if message.contains("did not answer")),
        "{err:?}"
    );
    assert!(!session.is_connected());
    // Next call: new connection, handshake, session_start, and the answer.
    assert_eq!(session.read_file("/workspace/f").unwrap(), b"x");
    assert_eq!(session.connections_opened(), 2);
    let handshakes = peer
        .requests()
        .iter()
        .filter(|r| r["op"] == "handshake")
        .count();
    assert_eq!(handshakes, 2);
}

#[test]
fn a_frame_over_the_limit_is_refused_locally_and_the_connection_stays() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("guest")).expect("session");
    session
        .write_file("/workspace/small", b"ok")
        .expect("write");
    // 49 MiB becomes more than 64 MiB of base64: refused before anything is sent.
    let big = vec![0u8; 49 * 1024 * 1024];
    let err = session
        .write_file("/workspace/big", &big)
        .expect_err("too large for one frame");
    assert!(
        matches!(&err, GuestFsError::Internal { message } if message.contains("frame limit")),
        "{err:?}"
    );
    assert!(!peer.staging.join("big").exists());
    assert_eq!(session.read_file("/workspace/small").unwrap(), b"ok");
    assert_eq!(session.connections_opened(), 1);
}

#[test]
fn sync_verify_mismatch_stops_the_run_before_exec() {
    let peer = V1Peer::start();
    peer.state.lock().unwrap().unshared_staging = true;
    let mut session = BetaSession::new(&peer.config("sync")).expect("session");
    assert!(session.capabilities().unwrap().sync_verify);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").unwrap();
    vfs.write_file("/p/a.txt", b"abc".to_vec()).unwrap();
    let err = session
        .run_tool(
            &mut vfs,
            "/p",
            &ToolRequest::new("true", Vec::<String>::new()),
        )
        .expect_err("staging is not shared");
    match &err {
        BetaError::SyncMismatch { count, first } => {
            assert_eq!(*count, 1);
            assert!(
                first.contains("0/p/a.txt") && first.contains("missing"),
                "{first}"
            );
        }
        other => panic!("expected SyncMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("shared"), "{err}");
    assert!(
        !peer.requests().iter().any(|r| r["op"] == "exec"),
        "the tool must not run on a staging dir the sidecar does not see"
    );
    // The VFS lost nothing.
    assert_eq!(&vfs.read_file("/p/a.txt").unwrap()[..], b"abc");
}

#[test]
fn two_projects_with_the_same_leaf_name_get_separate_staging_dirs() {
    let peer = V1Peer::start();
    let mut session = BetaSession::new(&peer.config("sync")).expect("session");
    let mut vfs = Vfs::new();
    for dir in ["/a/app", "/b/app"] {
        vfs.mkdir(dir).unwrap();
        vfs.write_file(&format!("{dir}/Cargo.toml"), dir.as_bytes().to_vec())
            .unwrap();
        let outcome = session
            .run_tool(
                &mut vfs,
                dir,
                &ToolRequest::new("true", Vec::<String>::new()),
            )
            .expect("run");
        assert_eq!(outcome.exec.termination, Termination::Exited(0));
    }
    assert_eq!(
        std::fs::read(peer.staging.join("0/app/Cargo.toml")).unwrap(),
        b"/a/app"
    );
    assert_eq!(
        std::fs::read(peer.staging.join("1/app/Cargo.toml")).unwrap(),
        b"/b/app"
    );
    let cwds: Vec<Value> = peer
        .requests()
        .into_iter()
        .filter(|r| r["op"] == "exec")
        .map(|r| r["guest_cwd"].clone())
        .collect();
    assert_eq!(cwds, [json!("/workspace/0/app"), json!("/workspace/1/app")]);
}
