//! [`LimaError`]: every failure of the Lima backend, each with what to do about it.

use std::path::PathBuf;

use devshell_vm_guest_fs::GuestFsError;
use devshell_vm_session::SessionError;

/// Errors of the Lima (γ) backend.
///
/// Infrastructure failures only: a tool that runs in the guest and exits non-zero is an
/// exit status, never a `LimaError`. Messages name the instance, the path or the value
/// that failed and, where one exists, the command that fixes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimaError {
    /// `limactl` is neither configured (`DEVSHELL_VM_LIMACTL`) nor on `PATH`.
    #[error(
        "limactl not found (searched PATH: {searched}); install Lima (https://lima-vm.io) or set DEVSHELL_VM_LIMACTL to its path, or use DEVSHELL_VM_BACKEND=host"
    )]
    LimactlNotFound {
        /// The search path that was used.
        searched: String,
    },
    /// `limactl` (or the sidecar) could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Lima instance does not exist.
    #[error(
        "Lima instance {instance:?} does not exist; create it with a writable mount of {workspace_parent} at {mount}, e.g. `limactl create --name={instance} --set '.mounts += [{{\"location\":\"{workspace_parent}\",\"mountPoint\":\"{mount}\",\"writable\":true}}]' template:default`, or choose another instance with DEVSHELL_VM_LIMA_INSTANCE"
    )]
    InstanceMissing {
        /// The instance name.
        instance: String,
        /// The host workspace parent the instance must mount.
        workspace_parent: String,
        /// The guest mount point.
        mount: String,
    },
    /// `limactl start` failed.
    #[error(
        "`limactl start {instance}` failed ({status}); last lines of {log}:\n{log_tail}\nhint: check virtualization support (KVM permissions on Linux) and the instance's lima.yaml, then run `limactl start {instance}` by hand"
    )]
    StartFailed {
        /// The instance name.
        instance: String,
        /// How `limactl start` ended.
        status: String,
        /// The host agent's log (`<instance dir>/ha.stderr.log`).
        log: PathBuf,
        /// Its last lines (or why they could not be read).
        log_tail: String,
    },
    /// The instance does not mount the workspace parent at the guest mount point.
    #[error(
        "Lima instance {instance:?} does not mount {workspace_parent} at {mount} (its mounts: {configured}); add `- location: \"{workspace_parent}\"` with `mountPoint: \"{mount}\"` and `writable: true` to the mounts of {instance}'s lima.yaml (`limactl edit {instance}`), or set DEVSHELL_VM_WORKSPACE_PARENT / DEVSHELL_VM_GUEST_WORKSPACE to a mount it has"
    )]
    MountMissing {
        /// The instance name.
        instance: String,
        /// The host workspace parent.
        workspace_parent: String,
        /// The guest mount point.
        mount: String,
        /// The instance's mounts as `location → mountPoint`.
        configured: String,
    },
    /// The program is not installed in the guest (the guest shell exited 127).
    #[error(
        "`{program}` is not installed in Lima instance {instance:?} (exit 127: command not found); install it in the guest (for Rust: `limactl shell {instance} -- sh -c 'curl --proto =https -sSf https://sh.rustup.rs | sh -s -- -y'`) or mount the host toolchain and put it on the guest PATH"
    )]
    ProgramMissing {
        /// The program.
        program: String,
        /// The instance name.
        instance: String,
    },
    /// The guest working directory does not exist (Lima's `cd <workdir> || exit 1` failed).
    #[error(
        "guest working directory {workdir} does not exist in Lima instance {instance:?}; is the workspace mounted at the right place?"
    )]
    WorkdirMissing {
        /// The guest directory.
        workdir: String,
        /// The instance name.
        instance: String,
    },
    /// `limactl shell` could not reach the guest (ssh exited 255).
    #[error(
        "cannot reach Lima instance {instance:?} over ssh (exit 255) while {context}; try `limactl shell {instance} true`, or restart it with `limactl stop {instance} && limactl start {instance}`"
    )]
    Ssh {
        /// The instance name.
        instance: String,
        /// What the session was doing.
        context: String,
    },
    /// `limactl list` reports the instance with Lima's `errors` (status `Broken`, or
    /// `Unknown` when its `lima.yaml` does not load and `config` is left out).
    #[error(
        "Lima instance {instance:?} is {status}: {errors}; see `limactl list {instance}` and fix the instance (or `limactl delete {instance}` and create it again)"
    )]
    InstanceBroken {
        /// Instance name.
        instance: String,
        /// The status `limactl list` reported.
        status: String,
        /// Lima's `errors`, joined with `; `.
        errors: String,
    },
    /// `limactl` refuses to run as root (`limactl: must not run as the root user`).
    #[error(
        "`{program}` refuses to run as root (Lima's VMs belong to a normal user): run devshell-vm as the user who owns the Lima instance, not as root or through sudo"
    )]
    LimactlRefusesRoot {
        /// The `limactl` binary.
        program: std::path::PathBuf,
    },
    /// Mode S needs a writable mount; Lima mounts are read-only unless configured.
    #[error(
        "the mount of {workspace_parent} at {mount} in Lima instance {instance:?} is read-only (Lima's default, `writable: false`), and Mode S writes the workspace there: set `writable: true` on that entry of `mounts:` in the instance's lima.yaml (`limactl edit {instance}`), then restart the instance"
    )]
    MountReadOnly {
        /// Instance name.
        instance: String,
        /// Host workspace parent.
        workspace_parent: String,
        /// Guest mount point.
        mount: String,
    },
    /// The instance runs but ssh or the mount did not answer in time.
    #[error(
        "Lima instance {instance:?} runs but `test -d {mount}` did not succeed in the guest within {} s (last: {last}); check `limactl list` and the instance's ha.stderr.log",
        waited.as_secs()
    )]
    NotReady {
        /// Instance name.
        instance: String,
        /// Guest mount point.
        mount: String,
        /// How long the session waited.
        waited: std::time::Duration,
        /// The last probe's status and stderr.
        last: String,
    },
    /// A `limactl` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Limactl {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// `limactl list --format json` printed something that is not Lima's JSON.
    #[error("cannot parse `limactl list --format json` output {line:?}")]
    ListParse {
        /// The offending line.
        line: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The instance reports a status the backend cannot work with.
    #[error(
        "Lima instance {instance:?} is {status:?}; run `limactl start {instance}` by hand to see why"
    )]
    UnexpectedStatus {
        /// The instance name.
        instance: String,
        /// The reported status.
        status: String,
    },
    /// The request cannot be passed to the guest safely (e.g. an invalid environment name).
    #[error("invalid guest request: {reason}")]
    InvalidRequest {
        /// Why.
        reason: String,
    },
    /// The workspace parent could not be created.
    #[error("workspace parent {path}")]
    WorkspaceParent {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The long-lived channel to the guest sidecar failed.
    #[error("channel to the sidecar in Lima instance {instance:?}: {message}")]
    Channel {
        /// The instance name.
        instance: String,
        /// What went wrong.
        message: String,
    },
    /// A guest file operation failed.
    #[error(transparent)]
    GuestFs(#[from] GuestFsError),
    /// What every backend shares: the cwd, project directories, excludes, the sync
    /// around a run, timeouts and cancellations.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Local I/O failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
