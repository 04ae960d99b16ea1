//! Every variable name, and a table describing each one.
//!
//! The names keep the earlier project's spelling and meaning. [`VARIABLES`] is the
//! single description of all of them; the README's variable table is checked against it by
//! a unit test.

/// Master switch. Boolean; unset means **on** (the facade falls back to the host
/// sandbox when no VM is available).
pub const ENV_DEVSHELL_VM: &str = "DEVSHELL_VM";
/// Backend: `host`, `auto`, `lima` or `beta`. Unset means `lima` on Unix, `host` elsewhere.
pub const ENV_DEVSHELL_VM_BACKEND: &str = "DEVSHELL_VM_BACKEND";
/// Boolean: start the VM session eagerly when a session is created. Default off.
pub const ENV_DEVSHELL_VM_EAGER: &str = "DEVSHELL_VM_EAGER";
/// Lima instance name (default `devshell-rust`); also names the cache workspace dir.
pub const ENV_DEVSHELL_VM_LIMA_INSTANCE: &str = "DEVSHELL_VM_LIMA_INSTANCE";
/// Requested workspace mode: `sync` (Mode S, default) or `guest` (Mode P).
pub const ENV_DEVSHELL_VM_WORKSPACE_MODE: &str = "DEVSHELL_VM_WORKSPACE_MODE";
/// Positive integer: default timeout in milliseconds for one tool run in the guest.
pub const ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS: &str = "DEVSHELL_VM_EXEC_TIMEOUT_MS";
/// Positive byte count (`K`, `M`, `G` suffixes: powers of 1024): the most file content a
/// pull may bring into the in-memory workspace.
pub const ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES: &str = "DEVSHELL_VM_WORKSPACE_MAX_BYTES";
/// β transport: an absolute Unix socket path, `tcp:HOST:PORT`, `tcp://HOST:PORT` or `stdio`.
pub const ENV_DEVSHELL_VM_SOCKET: &str = "DEVSHELL_VM_SOCKET";
/// Absolute guest path where the workspace is mounted (default `/workspace`).
pub const ENV_DEVSHELL_VM_GUEST_WORKSPACE: &str = "DEVSHELL_VM_GUEST_WORKSPACE";
/// Absolute host path overriding the workspace root shared with the guest.
pub const ENV_DEVSHELL_VM_WORKSPACE_PARENT: &str = "DEVSHELL_VM_WORKSPACE_PARENT";
/// Boolean (default on): without an explicit parent, use the cargo workspace root of the cwd.
pub const ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT: &str = "DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT";
/// Overrides the `staging_dir` the β client sends in `session_start`.
pub const ENV_DEVSHELL_VM_BETA_SESSION_STAGING: &str = "DEVSHELL_VM_BETA_SESSION_STAGING";
/// How β Mode S moves files: `auto` (default), `shared` (a staging directory both sides
/// see) or `wire` (over the connection, `wire-sync`).
pub const ENV_DEVSHELL_VM_BETA_SYNC: &str = "DEVSHELL_VM_BETA_SYNC";
/// Path of the `limactl` binary (default: looked up on `PATH`).
pub const ENV_DEVSHELL_VM_LIMACTL: &str = "DEVSHELL_VM_LIMACTL";
/// Boolean (default off): `limactl stop <instance>` when the session shuts down.
pub const ENV_DEVSHELL_VM_STOP_ON_EXIT: &str = "DEVSHELL_VM_STOP_ON_EXIT";
/// Boolean (default on): print Lima diagnostic hints on failures.
pub const ENV_DEVSHELL_VM_LIMA_HINTS: &str = "DEVSHELL_VM_LIMA_HINTS";
/// Boolean (default on): install `build-essential` in the guest when `gcc` is missing.
pub const ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL: &str = "DEVSHELL_VM_AUTO_BUILD_ESSENTIAL";
/// Boolean (default off): stop an interactive shell from `exec`-ing into `limactl shell`.
pub const ENV_DEVSHELL_VM_INTERNAL_REPL: &str = "DEVSHELL_VM_INTERNAL_REPL";
/// Path of the sidecar executable the β client spawns for the `stdio` transport.
pub const ENV_DEVSHELL_VM_SIDECAR_BIN: &str = "DEVSHELL_VM_SIDECAR_BIN";
/// Path of a file holding the token the β client sends over TCP.
pub const ENV_DEVSHELL_VM_TOKEN_FILE: &str = "DEVSHELL_VM_TOKEN_FILE";
/// How tools are confined: `auto`, `namespaces`, `landlock` or `off`. Default `auto`.
pub const ENV_DEVSHELL_VM_ISOLATION: &str = "DEVSHELL_VM_ISOLATION";
/// Network of a confined tool: `off`, `fetch` or `on`. Default `fetch`.
pub const ENV_DEVSHELL_VM_NETWORK: &str = "DEVSHELL_VM_NETWORK";
/// Memory limit of one confined run (`4G`, `512M`, `unlimited`). Default 4 GiB.
pub const ENV_DEVSHELL_VM_LIMIT_MEMORY: &str = "DEVSHELL_VM_LIMIT_MEMORY";
/// Process limit of one confined run. Default 1024.
pub const ENV_DEVSHELL_VM_LIMIT_PIDS: &str = "DEVSHELL_VM_LIMIT_PIDS";
/// CPU seconds per process of a confined run. Default 3600.
pub const ENV_DEVSHELL_VM_LIMIT_CPU_SECS: &str = "DEVSHELL_VM_LIMIT_CPU_SECS";
/// Bytes one confined run may write into the workspace (all its processes and files), also
/// the largest single file and the size of its private `/tmp` and `HOME`. Default 8 GiB.
pub const ENV_DEVSHELL_VM_LIMIT_WRITE: &str = "DEVSHELL_VM_LIMIT_WRITE";
/// Absolute host path: parent of host-sandbox staging dirs and of `vm-workspace/`.
pub const ENV_DEVSHELL_EXPORT_BASE: &str = "DEVSHELL_EXPORT_BASE";
/// Alias of [`ENV_DEVSHELL_EXPORT_BASE`] under the earlier project's sandbox name.
pub const ENV_EXPORT_BASE: &str = ENV_DEVSHELL_EXPORT_BASE;

/// Earlier project (todo-specific): prepend the guest `todo` build to `PATH`.
/// Accepted and ignored: it has no effect in devshell-vm.
pub const ENV_DEVSHELL_VM_AUTO_TODO_PATH: &str = "DEVSHELL_VM_AUTO_TODO_PATH";
/// Earlier project (todo-specific): probe the guest for `todo` and print hints.
/// Accepted and ignored: it has no effect in devshell-vm.
pub const ENV_DEVSHELL_VM_GUEST_TODO_HINT: &str = "DEVSHELL_VM_GUEST_TODO_HINT";
/// Earlier project (todo-specific): build `todo` inside the guest.
/// Accepted and ignored: it has no effect in devshell-vm.
pub const ENV_DEVSHELL_VM_AUTO_BUILD_TODO_GUEST: &str = "DEVSHELL_VM_AUTO_BUILD_TODO_GUEST";
/// Earlier project (todo-specific): guest `$HOME/<name>` symlink to the project.
/// Accepted and ignored: it has no effect in devshell-vm.
pub const ENV_DEVSHELL_VM_GUEST_HOST_DIR: &str = "DEVSHELL_VM_GUEST_HOST_DIR";

/// Windows only in the earlier project: skip podman bootstrap.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP: &str = "DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP";
/// Windows only in the earlier project: Linux sidecar ELF for the machine-ssh transport.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_LINUX_BINARY: &str = "DEVSHELL_VM_LINUX_BINARY";
/// Windows only in the earlier project: extra repository root to find the sidecar in.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_REPO_ROOT: &str = "DEVSHELL_VM_REPO_ROOT";
/// Windows only in the earlier project: OCI image for the podman fallback.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_CONTAINER_IMAGE: &str = "DEVSHELL_VM_CONTAINER_IMAGE";
/// Windows only in the earlier project: seconds per `podman pull` attempt.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_PULL_TIMEOUT_SECS: &str = "DEVSHELL_VM_PULL_TIMEOUT_SECS";
/// Windows only in the earlier project: `auto`, `machine-ssh` or `podman-run`.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_STDIO_TRANSPORT: &str = "DEVSHELL_VM_STDIO_TRANSPORT";
/// Windows only in the earlier project: stop redirecting `USERPROFILE`/`HOME` for podman.
/// Accepted and ignored on every platform devshell-vm supports.
pub const ENV_DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME: &str = "DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME";

/// Whether a variable changes behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarStatus {
    /// Parsed and validated into a [`VmConfig`](crate::VmConfig) field.
    Used,
    /// Kept for compatibility with the earlier project; never parsed, no effect.
    /// [`VmConfig::ignored_variables`](crate::VmConfig::ignored_variables) lists
    /// the ones that are set so a front end can say so.
    Ignored,
}

/// One row of the variables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarDoc {
    /// The variable's name.
    pub name: &'static str,
    /// What it accepts.
    pub accepted: &'static str,
    /// The value used when it is unset (or empty).
    pub default: &'static str,
    /// What it does.
    pub effect: &'static str,
    /// Used or ignored.
    pub status: VarStatus,
}

/// Accepted boolean spellings, shared by every flag.
pub const BOOL_ACCEPTED: &str =
    "1, true, yes, on / 0, false, no, off (trimmed, any case; empty = unset)";

const fn used(
    name: &'static str,
    accepted: &'static str,
    default: &'static str,
    effect: &'static str,
) -> VarDoc {
    VarDoc {
        name,
        accepted,
        default,
        effect,
        status: VarStatus::Used,
    }
}

const fn ignored(name: &'static str, effect: &'static str) -> VarDoc {
    VarDoc {
        name,
        accepted: "anything (not parsed)",
        default: "unset",
        effect,
        status: VarStatus::Ignored,
    }
}

/// Every variable this crate knows, in documentation order.
pub const VARIABLES: &[VarDoc] = &[
    used(
        ENV_DEVSHELL_VM,
        "boolean",
        "on",
        "Master switch. Off: every session uses the host sandbox.",
    ),
    used(
        ENV_DEVSHELL_VM_BACKEND,
        "`host`, `auto`, `lima`, `beta` (trimmed, any case)",
        "`lima` on Unix, `host` elsewhere",
        "Backend. `host` and `auto` use the host sandbox; `lima` drives a Lima VM via `limactl`; `beta` talks to the sidecar over `DEVSHELL_VM_SOCKET`.",
    ),
    used(
        ENV_DEVSHELL_VM_EAGER,
        "boolean",
        "off",
        "Start the VM session when the session is created instead of on the first tool run.",
    ),
    used(
        ENV_DEVSHELL_VM_LIMA_INSTANCE,
        "1-76 chars of `A-Z a-z 0-9 . _ -`, starting with a letter or digit",
        "`devshell-rust`",
        "Lima instance name; its sanitised form (`[A-Za-z0-9_-]`, others become `_`) names the cache workspace `<export base>/vm-workspace/<name>`.",
    ),
    used(
        ENV_DEVSHELL_VM_WORKSPACE_MODE,
        "`sync`, `guest` (trimmed, any case)",
        "`sync`",
        "Requested mode. `guest` (Mode P: the guest tree is authoritative) takes effect only with the VM on and backend `lima` or `beta`; otherwise Mode S (VFS authoritative, push/pull around each tool).",
    ),
    used(
        ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
        "positive integer (milliseconds)",
        "no timeout",
        "Timeout for one tool run; sent as β `exec.timeout_ms`, and the sidecar's default.",
    ),
    used(
        ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
        "positive integer of bytes, optionally with `K`, `M` or `G` (powers of 1024)",
        "`8G`",
        "Workspace size budget: a pull whose synced tree would hold more file content fails with an error naming the budget before reading anything past it; the in-memory workspace is left unchanged.",
    ),
    used(
        ENV_DEVSHELL_VM_SOCKET,
        "`stdio`, `tcp:HOST:PORT`, `tcp://HOST:PORT` (port 1-65535, IPv6 host in brackets), or an absolute Unix socket path",
        "unset (β needs it)",
        "β transport. `stdio` spawns the sidecar (`DEVSHELL_VM_SIDECAR_BIN`) and talks over its pipes.",
    ),
    used(
        ENV_DEVSHELL_VM_GUEST_WORKSPACE,
        "absolute guest path other than `/`, without `..`",
        "`/workspace`",
        "Where the workspace is mounted in the guest (Lima and β).",
    ),
    used(
        ENV_DEVSHELL_VM_WORKSPACE_PARENT,
        "absolute host path",
        "unset",
        "Host workspace root shared with the guest; overrides the cargo-root and cache-dir choices.",
    ),
    used(
        ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT,
        "boolean",
        "on",
        "Without `DEVSHELL_VM_WORKSPACE_PARENT`: use the cargo workspace root of the process cwd, else `<export base>/vm-workspace/<instance>`.",
    ),
    used(
        ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
        "any non-empty UTF-8 text",
        "unset (the workspace parent)",
        "Overrides `staging_dir` in the β `session_start` request.",
    ),
    used(
        ENV_DEVSHELL_VM_BETA_SYNC,
        "`auto`, `shared`, `wire` (trimmed, any case)",
        "`auto`",
        "How β Mode S moves files. `shared`: through the staging directory both sides see. `wire`: over the connection (the sidecar's `wire-sync`; no shared file system). `auto`: shared when the sidecar sees this host's staging directory, else wire when the sidecar offers it.",
    ),
    used(
        ENV_DEVSHELL_VM_LIMACTL,
        "path",
        "`limactl` looked up on `PATH`",
        "The `limactl` binary to run.",
    ),
    used(
        ENV_DEVSHELL_VM_STOP_ON_EXIT,
        "boolean",
        "off",
        "Stop the Lima instance when the session shuts down.",
    ),
    used(
        ENV_DEVSHELL_VM_LIMA_HINTS,
        "boolean",
        "on",
        "Print Lima diagnostic hints when something fails.",
    ),
    used(
        ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL,
        "boolean",
        "on",
        "Install `build-essential` in the guest when `gcc` is missing.",
    ),
    used(
        ENV_DEVSHELL_VM_INTERNAL_REPL,
        "boolean",
        "off",
        "Keep an interactive shell in-process instead of `exec`-ing into `limactl shell`.",
    ),
    used(
        ENV_DEVSHELL_VM_SIDECAR_BIN,
        "path",
        "unset",
        "Sidecar executable the β client spawns with `--serve-stdio` for `DEVSHELL_VM_SOCKET=stdio`.",
    ),
    used(
        ENV_DEVSHELL_VM_TOKEN_FILE,
        "path",
        "unset",
        "File holding the token the β client sends in `handshake` over TCP.",
    ),
    used(
        ENV_DEVSHELL_VM_ISOLATION,
        "`auto`, `namespaces`, `landlock`, `off` (trimmed, any case)",
        "`auto`",
        "How tools run confined (host backend and sidecar). `auto`: the strongest this kernel and user allow (namespaces, else Landlock, else none), a degrade reported once per session; `namespaces`/`landlock`: exactly that or an error naming the mode and the reason; `off`: the tool runs as the caller. See `docs/arch/isolation.md`.",
    ),
    used(
        ENV_DEVSHELL_VM_NETWORK,
        "`off`, `fetch`, `on` (trimmed, any case)",
        "`fetch`",
        "Network of a confined tool. `fetch`: before a cargo command a `cargo fetch` phase runs with network (no project code), then the tool runs with only a private loopback and `CARGO_NET_OFFLINE=true`; `off`: never any network; `on`: the host network for the tool itself, so build scripts, proc-macros and tests of the project can reach anything the host reaches.",
    ),
    used(
        ENV_DEVSHELL_VM_LIMIT_MEMORY,
        "positive byte count with optional `K`/`M`/`G`/`T` suffix (powers of 1024), or `unlimited`",
        "`4G`",
        "Memory of one confined run: a memory cgroup where writable (the run is killed, the outcome says `memory`), else `RLIMIT_DATA` per process.",
    ),
    used(
        ENV_DEVSHELL_VM_LIMIT_PIDS,
        "positive integer, or `unlimited`",
        "`1024`",
        "Processes and threads of one confined run: a pids cgroup where writable, else `RLIMIT_NPROC` (per user; per user namespace with namespaces).",
    ),
    used(
        ENV_DEVSHELL_VM_LIMIT_CPU_SECS,
        "positive integer (seconds), or `unlimited`",
        "`3600`",
        "CPU seconds of each process of a confined run (`RLIMIT_CPU`; the outcome says `cpu`).",
    ),
    used(
        ENV_DEVSHELL_VM_LIMIT_WRITE,
        "positive byte count with optional `K`/`M`/`G`/`T` suffix (powers of 1024), or `unlimited`",
        "`8G`",
        "Bytes one confined run may write into the workspace (disk-backed files, all its processes together: summed from `/proc/<pid>/io` every 50 ms, the run is killed past it and the outcome says `write`); also the largest single file (`RLIMIT_FSIZE`) and the size of its private `/tmp` and `HOME`.",
    ),
    used(
        ENV_DEVSHELL_EXPORT_BASE,
        "absolute host path",
        "`$XDG_CACHE_HOME/cargo-devshell-exports`, else `$HOME/.cache/cargo-devshell-exports`, else `<temp dir>/cargo-devshell-exports`",
        "Parent of host-sandbox staging dirs and of the `vm-workspace/` cache (kept off a possibly `noexec` `/tmp`).",
    ),
    ignored(
        ENV_DEVSHELL_VM_AUTO_TODO_PATH,
        "Earlier project, todo-specific. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_GUEST_TODO_HINT,
        "Earlier project, todo-specific. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_AUTO_BUILD_TODO_GUEST,
        "Earlier project, todo-specific. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_GUEST_HOST_DIR,
        "Earlier project, todo-specific. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_LINUX_BINARY,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_REPO_ROOT,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_CONTAINER_IMAGE,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_PULL_TIMEOUT_SECS,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_STDIO_TRANSPORT,
        "Earlier project, Windows only. No effect.",
    ),
    ignored(
        ENV_DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME,
        "Earlier project, Windows only. No effect.",
    ),
];
