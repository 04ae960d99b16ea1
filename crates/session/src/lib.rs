//! What every devshell-vm backend shares, once: cargo's project-root rule, the
//! per-project sync table, the Mode S cycle around a tool run, and the [`Backend`]
//! trait the host, Lima and β sessions implement.
//!
//! The backends differ in where a tool runs (a staging directory on this machine, a
//! Lima guest, a sidecar daemon); they do not differ in which VFS subtree a run syncs,
//! how a project gets its staging subdirectory, which files a pull leaves out, how a
//! run that timed out is reported, or how a progress observer is attached. Those live
//! here so the three cannot drift apart:
//!
//! * [`project_root`] / [`host_project_root`] — cargo's rule (`cargo locate-project
//!   --workspace`), with manifests parsed as TOML, for the VFS and for host directories;
//! * [`ProjectTable`] — project root → staging subdirectory (`0700`) + [`SyncState`] +
//!   the backend's per-project state, with the observer and pull excludes every new
//!   project inherits;
//! * [`run_cycle`] — push, run, always pull, with a [`PullGate`] that may prove a pull
//!   unnecessary (the host backend's inotify watch);
//! * [`Backend`] — one required method (`run_tool_with`), with `run_tool` and
//!   `run_rust_tool` provided.
//!
//! ```
//! use devshell_vm_session::{Backend, ProjectTable, SessionError, run_cycle};
//! use devshell_vm_exec::{ExecOutcome, Termination};
//! use devshell_vm_vfs::Vfs;
//!
//! let staging = tempfile::tempdir()?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/app/src")?;
//! vfs.write_file("/app/Cargo.toml", "[package]\nname = \"app\"\n")?;
//! let mut table: ProjectTable<()> = ProjectTable::new();
//! let at = table.project_for::<SessionError>(&vfs, "/app/src", || Ok(staging.path().to_path_buf()), || ())?;
//! assert_eq!(at.relative_cwd, "src");
//! let project = table.get_mut(at.index);
//! let cycle = run_cycle(project, &mut vfs, "touch", |leaf| {
//!     std::fs::write(leaf.join("out.txt"), "made by the tool")?;
//!     Ok::<_, std::io::Error>(ExecOutcome {
//!         termination: Termination::Exited(0),
//!         stdout: Vec::new(),
//!         stderr: Vec::new(),
//!         duration: std::time::Duration::ZERO,
//!     })
//! }).map_err(|e| e.into_error::<Box<dyn std::error::Error>>())?;
//! assert_eq!(cycle.outcome.pull.map(|p| p.files_written), Some(1));
//! assert_eq!(&*vfs.read_file("/app/out.txt")?, b"made by the tool");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Boundary: no process spawning and no backend knowledge here; the backend passes the
//! runner. Dependencies: the VFS, the sync engine, exec's request/outcome types, and the
//! `toml` crate for manifests.
//!
//! [`SyncState`]: devshell_vm_sync::SyncState

#![cfg(unix)]

mod backend;
mod cycle;
mod error;
mod root;
mod table;

pub use backend::{Backend, stopped};
pub use cycle::{CycleError, CycleOutcome, PullGate, run_cycle};
pub use error::SessionError;
pub use root::{
    HostFs, MANIFEST, ManifestInfo, ManifestSource, WorkspaceTable, cargo_project_root,
    find_cargo_root, host_project_root, join_slash, normalize, project_root, relative_to,
    workspace_parent_for,
};
pub use table::{
    Located, Project, ProjectTable, SyncObserver, locate, locate_guest_primary, make_private_dir,
};

/// Environment variable every backend points at the project's own `target/`.
pub const CARGO_TARGET_DIR: &str = "CARGO_TARGET_DIR";

/// `request` with `CARGO_TARGET_DIR` set to `dir` unless the request sets it already:
/// a `CARGO_TARGET_DIR` in the caller's (or the sidecar's, or the guest's) environment
/// must not send the build output out of the synced tree.
#[must_use]
pub fn with_cargo_target_dir(
    request: &devshell_vm_exec::ToolRequest,
    dir: impl Into<String>,
) -> devshell_vm_exec::ToolRequest {
    let mut request = request.clone();
    if !request.env.iter().any(|(name, _)| name == CARGO_TARGET_DIR) {
        request
            .env
            .insert(0, (CARGO_TARGET_DIR.to_owned(), dir.into()));
    }
    request
}

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
