//! The network policy `fetch`: a `cargo fetch` phase with network before a cargo
//! command, then the tool without network. [`Confinement`] is what a backend keeps per
//! session: the tool sandbox, the fetch sandbox (started on first need) and the gate
//! that skips the fetch phase while no manifest changed.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use devshell_vm_exec::{CancelHandle, OutputMode, StreamKind, ToolRequest};

use crate::SandboxError;
use crate::policy::{Net, NetworkPolicy, Policy};
use crate::sandbox::{Sandbox, SandboxOutcome};

/// Cargo subcommands that may download dependencies (and so get a fetch phase).
const DOWNLOADING: &[&str] = &[
    "build",
    "b",
    "check",
    "c",
    "test",
    "t",
    "run",
    "r",
    "bench",
    "doc",
    "d",
    "clippy",
    "fix",
    "rustc",
    "rustdoc",
    "tree",
    "metadata",
    "package",
    "publish",
    "vendor",
    "update",
    "generate-lockfile",
    "fetch",
];

/// Whether running `program args` under the `fetch` policy gets a fetch phase: a cargo
/// command (by file name) whose subcommand may download.
#[must_use]
pub fn needs_fetch(program: &str, args: &[String]) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name != "cargo" {
        return false;
    }
    args.iter()
        .find(|a| !a.starts_with('-') && !a.starts_with('+'))
        .is_some_and(|sub| DOWNLOADING.contains(&sub.as_str()))
}

/// Remembers the manifests' state at the last successful fetch, so an unchanged project
/// skips the phase (a `cargo fetch` costs a process start and a resolution).
#[derive(Debug, Default, Clone)]
pub struct FetchGate {
    last: Option<(PathBuf, u64)>,
}

/// Files whose change may change what must be downloaded.
fn is_manifest(name: &str) -> bool {
    matches!(
        name,
        "Cargo.toml"
            | "Cargo.lock"
            | "config.toml"
            | "config"
            | "rust-toolchain"
            | "rust-toolchain.toml"
    )
}

/// A fingerprint (path, size, mtime) of every manifest under `root`, skipping `target/`
/// and hidden directories other than `.cargo`.
fn fingerprint(root: &Path) -> u64 {
    let mut hasher = DefaultHasher::new();
    let mut stack = vec![(root.to_path_buf(), 0_u32)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                let skip = name == "target" || (name.starts_with('.') && name != ".cargo");
                if !skip && depth < 32 {
                    stack.push((entry.path(), depth + 1));
                }
            } else if is_manifest(&name)
                && let Ok(meta) = entry.metadata()
            {
                entry.path().hash(&mut hasher);
                meta.len().hash(&mut hasher);
                meta.modified().ok().hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

impl FetchGate {
    /// Whether `root` changed since the last recorded fetch; returns the new fingerprint
    /// to [`FetchGate::record`] after a successful fetch.
    #[must_use]
    pub fn check(&self, root: &Path) -> (bool, u64) {
        let now = fingerprint(root);
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(r, f)| r == root && *f == now);
        (!fresh, now)
    }

    /// Records a successful fetch of `root` at `fingerprint`.
    pub fn record(&mut self, root: &Path, fingerprint: u64) {
        self.last = Some((root.to_path_buf(), fingerprint));
    }
}

/// A session's confinement: the tool sandbox, the fetch sandbox and the fetch gate.
#[derive(Debug)]
pub struct Confinement {
    template: Policy,
    network: NetworkPolicy,
    tool: Option<Sandbox>,
    fetch: Option<Sandbox>,
    gate: FetchGate,
    note: Option<String>,
    note_taken: bool,
}

impl Confinement {
    /// Confinement for `network` with `template` (its `network` and `registry_writable`
    /// are set per phase). Nothing starts until the first run.
    #[must_use]
    pub fn new(template: Policy, network: NetworkPolicy) -> Self {
        Self {
            template,
            network,
            tool: None,
            fetch: None,
            gate: FetchGate::default(),
            note: None,
            note_taken: false,
        }
    }

    /// The degrade note of `auto` isolation, the first time it is asked after the
    /// sandbox started (so a front end reports it once per session).
    pub fn take_degrade_note(&mut self) -> Option<String> {
        if self.note_taken {
            return None;
        }
        let note = self.note.clone()?;
        self.note_taken = true;
        Some(note)
    }

    /// The tool sandbox, started on first use.
    ///
    /// # Errors
    /// As [`Sandbox::start`].
    pub fn tool_sandbox(&mut self) -> Result<&mut Sandbox, SandboxError> {
        if self.tool.is_none() {
            let policy = Policy {
                network: if self.network == NetworkPolicy::On {
                    Net::Host
                } else {
                    Net::None
                },
                registry_writable: false,
                ..self.template.clone()
            };
            let sandbox = Sandbox::start(policy)?;
            if self.note.is_none() {
                self.note = sandbox.degraded().map(str::to_owned);
            }
            self.tool = Some(sandbox);
        }
        self.tool.as_mut().ok_or_else(|| SandboxError::Io {
            context: "starting the tool sandbox".into(),
            source: std::io::Error::other("no sandbox"),
        })
    }

    fn fetch_sandbox(&mut self) -> Result<&mut Sandbox, SandboxError> {
        if self.fetch.is_none() {
            let policy = Policy {
                network: Net::Host,
                registry_writable: true,
                ..self.template.clone()
            };
            self.fetch = Some(Sandbox::start(policy)?);
        }
        self.fetch.as_mut().ok_or_else(|| SandboxError::Io {
            context: "starting the fetch sandbox".into(),
            source: std::io::Error::other("no sandbox"),
        })
    }

    /// Runs `program` confined. Under `fetch`, a cargo command that may download first
    /// gets a `cargo fetch` in `project_root` with network (unless the manifests are
    /// unchanged since the last one); the tool itself then runs without network.
    ///
    /// # Errors
    /// [`SandboxError::Fetch`] when the fetch phase fails, else as [`Sandbox::run`].
    pub fn run(
        &mut self,
        program: &Path,
        request: &ToolRequest,
        cwd: &Path,
        project_root: &Path,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<SandboxOutcome, SandboxError> {
        if self.network == NetworkPolicy::Fetch
            && needs_fetch(&request.program, &request.args)
            && project_root.join("Cargo.toml").is_file()
        {
            let (changed, fingerprint) = self.gate.check(project_root);
            if changed {
                self.fetch_phase(program, request, project_root, cancel)?;
                let _ = fingerprint;
                self.gate
                    .record(project_root, fingerprint_after(project_root));
            }
        }
        self.tool_sandbox()?
            .run(program, request, cwd, on_output, cancel)
    }

    fn fetch_phase(
        &mut self,
        program: &Path,
        request: &ToolRequest,
        project_root: &Path,
        cancel: Option<&CancelHandle>,
    ) -> Result<(), SandboxError> {
        let mut fetch = ToolRequest::new(request.program.clone(), ["fetch", "--quiet"])
            .stdout(OutputMode::Capture)
            .stderr(OutputMode::Capture)
            .timeout(request.timeout);
        // A toolchain override (`cargo +nightly build`) applies to the fetch too.
        if let Some(toolchain) = request.args.iter().find(|a| a.starts_with('+')) {
            fetch.args.insert(0, toolchain.clone());
        }
        fetch.env.clone_from(&request.env);
        // No project-chosen wrapper runs with network.
        for var in [
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_RUSTC_WRAPPER",
        ] {
            fetch.env.push((var.into(), String::new()));
        }
        let outcome =
            self.fetch_sandbox()?
                .run(program, &fetch, project_root, &mut |_, _| {}, cancel)?;
        if outcome.exec.success() {
            Ok(())
        } else {
            Err(SandboxError::Fetch {
                status: outcome.exec.termination,
                stderr: String::from_utf8_lossy(&outcome.exec.stderr)
                    .trim()
                    .to_owned(),
            })
        }
    }
}

/// `cargo fetch` may write `Cargo.lock`: the fingerprint to remember is the one after it.
fn fingerprint_after(root: &Path) -> u64 {
    fingerprint(root)
}
