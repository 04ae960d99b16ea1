//! The connection check, shared by the `sidecar_conn` fuzz target and the stable corpus
//! test: bytes fed to the sidecar's connection handler over an in-memory stream
//! (`serve_bytes_without_exec`: every request type, but `exec` never runs a tool).
//!
//! Unless the first byte is odd, a handshake (every capability) and a session come
//! first, so the fuzzer reaches the requests of a session: a `session_start` on a
//! scratch staging dir (first byte `% 4 == 0`: guest-fs, sync and exec), or a
//! `wire_start` and a `wire_project` (`% 4 == 2`: the `wire-sync` requests, with their
//! bulk frames, in a store under the root). The handler must never panic, every byte
//! it writes must be well-formed reply lines and the bulk frames those replies announce
//! (read back with the client's decoder: the right sizes and BLAKE3 digests), and
//! nothing outside the staging root may change.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use devshell_vm_protocol::{LineReader, Reply, parse_reply};
use devshell_vm_sidecar::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_WIRE_IDLE_SECS, DEFAULT_WIRE_MAX_BYTES, IsolationOptions,
    Listen, Options, serve_bytes_without_exec,
};

struct Scratch {
    base: PathBuf,
    root: PathBuf,
    staging: PathBuf,
    sentinel: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("sidecar-conn-fuzz-{}", std::process::id()));
        let root = base.join("root");
        let staging = root.join("staging");
        std::fs::create_dir_all(&staging).expect("create the fuzz staging dir");
        let sentinel = base.join("sentinel.txt");
        std::fs::write(&sentinel, b"outside the root").expect("write the sentinel");
        Scratch {
            base: base.clone(),
            root: std::fs::canonicalize(&root).expect("canonical root"),
            staging: std::fs::canonicalize(&staging).expect("canonical staging"),
            sentinel,
        }
    })
}

fn options(root: &Path) -> Options {
    Options {
        listen: Listen::Stdio,
        roots: vec![root.to_owned()],
        token: None,
        insecure_no_auth: false,
        max_frame_bytes: 64 * 1024,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        max_unauthenticated: 1,
        auth_timeout: std::time::Duration::from_secs(1),
        default_timeout: None,
        path_var: None,
        wire_max_bytes: DEFAULT_WIRE_MAX_BYTES,
        wire_idle: std::time::Duration::from_secs(DEFAULT_WIRE_IDLE_SECS),
        // `exec` is disabled in this harness: nothing is ever confined.
        isolation: IsolationOptions::off(),
    }
}

/// Removes the scratch directory (the replay test calls it at the end; a fuzzing
/// process keeps it for its whole life).
#[allow(dead_code, reason = "the fuzz target never cleans up")]
pub(crate) fn cleanup() {
    let _ = std::fs::remove_dir_all(&scratch().base);
}

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let scratch = scratch();
    let mut input = Vec::with_capacity(data.len() + 512);
    let first = data.first().copied().unwrap_or(0);
    if first % 4 == 2 {
        input.extend_from_slice(
            br#"{"op":"handshake","version":1,"client":"fuzz","client_version":"0","capabilities":["exec-stream","guest-fs-v2","sync-verify","wire-sync","wire-sync-stream"]}"#,
        );
        input.push(b'\n');
        input.extend_from_slice(
            br#"{"op":"wire_start","session_id":"w-1","client_id":"fuzz","guest_workspace":"/workspace"}"#,
        );
        input.push(b'\n');
        input.extend_from_slice(br#"{"op":"wire_project","session_id":"w-1","project":"/p"}"#);
        input.push(b'\n');
    } else if first % 2 == 0 {
        input.extend_from_slice(
            br#"{"op":"handshake","version":1,"client":"fuzz","client_version":"0","capabilities":["exec-stream","guest-fs-v2","sync-verify"]}"#,
        );
        input.push(b'\n');
        input.extend_from_slice(
            format!(
                r#"{{"op":"session_start","session_id":"pid-1","staging_dir":"{}","guest_workspace":"/workspace","backend":"fuzz","backend_config":{{}}}}"#,
                scratch.staging.display()
            )
            .as_bytes(),
        );
        input.push(b'\n');
    }
    input.extend_from_slice(data.get(1..).unwrap_or_default());
    let output = serve_bytes_without_exec(options(&scratch.root), &input);
    check_output(&output);
    assert_eq!(
        std::fs::read(&scratch.sentinel).expect("the sentinel is still there"),
        b"outside the root",
        "something outside the root changed"
    );
}

/// The server's bytes are reply lines, each ending in a newline, and after a reply that
/// announces blobs (`wire_blobs`, `wire_changes`) exactly those blobs as bulk frames.
fn check_output(output: &[u8]) {
    let mut reader = LineReader::with_max_frame_bytes(output, usize::MAX);
    loop {
        let at = output.len() - reader.get_ref().len() - reader.buffered();
        let line = match reader.read_line() {
            Ok(None) => break,
            Ok(Some(line)) => line,
            Err(err) => {
                panic!("the server wrote bytes that are not a reply line at offset {at} ({err})")
            }
        };
        let end = output.len() - reader.get_ref().len() - reader.buffered();
        assert_eq!(
            output[end - 1],
            b'\n',
            "a reply without its newline: {line:?}"
        );
        let reply = parse_reply(&line).unwrap_or_else(|err| {
            panic!("the server wrote a line that is not a reply ({err}): {line:?}")
        });
        let blobs = match reply {
            Reply::WireBlobs(header) => header.blobs,
            Reply::WireChanges(changes) => changes.blobs,
            _ => Vec::new(),
        };
        for blob in &blobs {
            if let Err(err) = reader.read_blob(blob, u64::MAX) {
                panic!("the server's bulk frames for {blob:?} do not decode: {err}");
            }
        }
    }
}
