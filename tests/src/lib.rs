//! End-to-end tests across devshell-vm crates with real cargo.
//!
//! The tests live in `tests/*.rs`; this library holds their shared helpers: a host
//! session configuration with a private export base, writing a tree into the VFS,
//! running cargo with captured output, and reading cargo's `Compiling` lines.
//!
//! Everything is real: real `cargo`, real processes, real files; nothing is mocked and
//! nothing needs the network (the test crates have path dependencies only and cargo
//! runs with `CARGO_NET_OFFLINE=true`).

use std::path::Path;
use std::time::SystemTime;

use devshell_vm::vfs::NodeKind;
use devshell_vm::{
    Backend, OutputMode, SessionHolder, Termination, ToolOutcome, ToolRequest, Vfs, VmConfig,
};

/// A host-backend configuration read from the process environment (for `PATH`, `HOME`
/// and the like — never modified) with its own export base, so each test has private
/// staging directories.
///
/// # Panics
/// When the process environment holds an invalid `DEVSHELL_VM*` value.
#[must_use]
pub fn host_config(export_base: &Path) -> VmConfig {
    VmConfig {
        enabled: true,
        backend: Backend::Host,
        export_base: Some(export_base.to_path_buf()),
        ..VmConfig::from_env().expect("the test environment's DEVSHELL_VM* variables parse")
    }
}

/// A host session for `config`.
///
/// # Panics
/// When the session cannot be built (the host backend always can).
#[must_use]
pub fn host_session(config: &VmConfig) -> SessionHolder {
    let session = SessionHolder::try_from_config(config).expect("host session");
    assert!(session.is_host_only());
    session
}

/// Writes `files` (absolute VFS path, text) into `vfs`, creating parent directories.
///
/// # Panics
/// When a path is invalid.
pub fn write_tree(vfs: &mut Vfs, files: &[(&str, &str)]) {
    for (path, text) in files {
        let parent = &path[..path.rfind('/').expect("absolute path")];
        if !parent.is_empty() {
            vfs.mkdir(parent).expect("mkdir");
        }
        vfs.write_file(path, text.as_bytes().to_vec())
            .expect("write_file");
    }
}

/// Runs `cargo args…` from `cwd` with stdout and stderr captured and the network off.
///
/// # Panics
/// On an infrastructure error (the tool itself may fail: see the outcome).
pub fn cargo(session: &mut SessionHolder, vfs: &mut Vfs, cwd: &str, args: &[&str]) -> ToolOutcome {
    let request = ToolRequest::new("cargo", args.iter().copied())
        .env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_TERM_COLOR", "never")
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    session
        .run_tool(vfs, cwd, &request)
        .unwrap_or_else(|err| panic!("cargo {args:?} in {cwd}: infrastructure error: {err}"))
}

/// Asserts that the tool exited 0, showing its output otherwise.
///
/// # Panics
/// When it did not.
pub fn assert_success(outcome: &ToolOutcome, what: &str) {
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "{what} failed\n--- stderr\n{}\n--- stdout\n{}",
        String::from_utf8_lossy(&outcome.exec.stderr),
        String::from_utf8_lossy(&outcome.exec.stdout)
    );
}

/// Crate names from cargo's `Compiling <name> v<version> (…)` lines, in order.
#[must_use]
pub fn compiled_crates(outcome: &ToolOutcome) -> Vec<String> {
    String::from_utf8_lossy(&outcome.exec.stderr)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("Compiling "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// One file or symlink of a snapshot: path, kind, mode, mtime, content (or link target).
pub type SnapshotEntry = (String, NodeKind, u32, SystemTime, Vec<u8>);

/// Every node under `root` except those under `root/target`, with metadata and content.
///
/// # Panics
/// When `root` does not exist.
#[must_use]
pub fn snapshot_sources(vfs: &Vfs, root: &str) -> Vec<SnapshotEntry> {
    let target = format!("{root}/target");
    vfs.walk(root)
        .expect("walk")
        .filter(|entry| entry.path != target && !entry.path.starts_with(&format!("{target}/")))
        .map(|entry| {
            let meta = entry.node.metadata();
            let body = match meta.kind {
                NodeKind::File => entry
                    .content()
                    .expect("file content readable")
                    .map(|c| c.to_vec())
                    .unwrap_or_default(),
                NodeKind::Symlink => entry
                    .node
                    .link_target()
                    .map(|t| t.as_bytes().to_vec())
                    .unwrap_or_default(),
                NodeKind::Dir => Vec::new(),
            };
            let mtime = if meta.kind == NodeKind::Dir {
                // Directory mtimes legitimately move when cargo adds Cargo.lock / target/.
                SystemTime::UNIX_EPOCH
            } else {
                meta.mtime
            };
            (entry.path.clone(), meta.kind, meta.mode, mtime, body)
        })
        .collect()
}
