//! `limactl-standin`: **test support, not shipped.** A stand-in for Lima's `limactl`
//! that follows Lima's documented contract closely enough to test
//! `devshell-vm-backend-lima` on machines that cannot run VMs.
//!
//! Implemented: `list` (`--json` / `--format json`, one JSON object per line),
//! `start`, `stop`, `shell [--workdir D] [--shell S] INSTANCE [--] CMD…` and
//! `copy [-r] SRC… DST` (guest paths as `INSTANCE:PATH`) and `--version`; the global
//! flags `--tty[=B]`, `-y`/`--yes`, `--debug` and `--log-level L` are accepted before
//! the subcommand (and, for `shell`, before the instance name only: everything after it
//! is the command, untouched, as with Lima's `SetInterspersed(false)`).
//!
//! Modes that show how real Lima behaves (each cites Lima's source where it is
//! implemented; the list with file and line is in `docs/arch/lima.md`):
//! * **Guest processes outlive a killed `limactl`**: the command runs in a session of its
//!   own behind pipes this process relays ([`guest::relay`]); a signal death exits 255.
//! * **Terminals**: with a terminal on stdout the command gets a pty (util-linux
//!   `script`), so its stderr arrives merged into stdout with `\r\n`.
//! * **Releases**: `DEVSHELL_LIMA_STANDIN_VERSION=X.Y.Z` or `$LIMA_HOME/standin-version`
//!   selects what `shell` does on a stopped instance and whether an unknown name in
//!   `list` exits 1.
//! * **Broken instances**: `yaml_error` (status `Unknown`, no `config`) and `status:
//!   "Broken"` with `errors`.
//! * **Boot delay**: `ready_after_ms`: `Running` at once, ssh's 255 until ready.
//! * **Root**: `$LIMA_HOME/standin-as-root` (or root with
//!   `DEVSHELL_LIMA_STANDIN_ROOT=refuse`) refuses like `limactl` run by root; without
//!   root the stand-in uses a user namespace.
//!
//! State lives under `$LIMA_HOME` (like Lima): `$LIMA_HOME/<instance>/standin.json`
//! holds the instance (status, arch, mounts `location → mountPoint`, the guest user's
//! shell and home, extra guest environment, and the failures to simulate). Every
//! invocation appends its argv as one JSON line to `$LIMA_HOME/invocations.log`, so tests
//! can count `limactl` spawns.
//!
//! `shell` builds the remote script exactly like Lima's `cmd/limactl/shell.go`:
//! `cd <workdir> || exit 1 ; exec "$SHELL" --login -c '<args>'`, where leading
//! `NAME=value` arguments keep their name unquoted and get their value quoted, and every
//! other argument is quoted with `shellescape.Quote` rules. The script runs the way sshd
//! runs a remote command (`$SHELL -c script`, a clean ssh-like environment), inside a
//! **private mount namespace** (`unshare --mount --propagation private`) and a guest root
//! of its own (a tmpfs with binds of the host's top-level entries, see [`guest_entry`]),
//! in which each configured mount's host `location` is bind-mounted at its guest
//! `mountPoint` and the `location` itself is covered by an empty read-only tmpfs. So a
//! command sees the guest path (e.g. `/workspace`), never the host path, and tests catch
//! any host/guest path mix-up; mount points are created only inside that root, never in
//! the host's `/`, and parallel tests do not see each other's mounts. A simulated ssh
//! failure exits 255 like `ssh` does.

#![allow(
    clippy::struct_field_names,
    reason = "field names follow Lima's JSON (`mountPoint`)"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a limactl stand-in reads LIMA_HOME, HOME and PATH from its environment like limactl does"
)]

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde::{Deserialize, Serialize};

mod guest;
use guest::{guest_entry, relay, which_unshare};

/// One configured mount of an instance (Lima's `mounts:` entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mount {
    location: String,
    #[serde(
        rename = "mountPoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    mount_point: Option<String>,
    #[serde(default)]
    writable: bool,
    /// reverse-sshfs options (`{"cache": bool}`), passed through to `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sshfs: Option<serde_json::Value>,
}

impl Mount {
    /// The host location with a leading `~` expanded to `$HOME` (as Lima does).
    fn host_location(&self) -> String {
        match self.location.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                format!("{}{rest}", default_home())
            }
            _ => self.location.clone(),
        }
    }

    /// The guest mount point (Lima's default: the expanded location).
    fn guest_point(&self) -> String {
        self.mount_point
            .clone()
            .unwrap_or_else(|| self.host_location())
    }
}

/// The stand-in's per-instance state (`standin.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Instance {
    status: String,
    #[serde(default = "default_arch")]
    arch: String,
    #[serde(default)]
    mounts: Vec<Mount>,
    /// The guest user's login shell (`$SHELL` in the guest).
    #[serde(default = "default_shell")]
    shell: String,
    /// The guest user's home directory.
    #[serde(default = "default_home")]
    home: String,
    /// Extra variables of the guest environment (as if set by the guest's sshd / PAM).
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `mountType` as `list` reports it: QEMU's default is `9p`
    /// (`pkg/driver/qemu/qemu_driver.go` L244-L245 of v2.2.0), vz's `virtiofs`
    /// (`pkg/driver/vz/vz_driver_darwin.go` L172-L173). The stand-in's mounts are bind
    /// mounts, coherent like 9p with `cache: mmap`.
    #[serde(default = "default_mount_type")]
    mount_type: String,
    /// When set, `start` fails, appending this text to `ha.stderr.log`.
    #[serde(default)]
    start_failure: Option<String>,
    /// When true, `shell` and `copy` fail like an unreachable sshd (exit 255).
    #[serde(default)]
    ssh_failure: bool,
    /// Lima's `errors` of the instance (with status `Broken`: e.g. a missing host agent
    /// PID file, `pkg/store/instance.go` L65-L68 of v2.2.0).
    #[serde(default)]
    errors: Vec<String>,
    /// When set, `lima.yaml` fails to load: `list` reports status `Unknown`, no `config`,
    /// this text in `errors` (`pkg/store/instance.go` L51-L58 of v2.2.0).
    #[serde(default)]
    yaml_error: Option<String>,
    /// Boot delay: after `start`, ssh (and so the mount) answers only this many
    /// milliseconds later; until then `shell`/`copy` exit 255 like ssh does while the
    /// status already says `Running` (the host agent's PID file exists).
    #[serde(default)]
    ready_after_ms: Option<u64>,
    /// When the instance was started (ms since the epoch), for `ready_after_ms`.
    #[serde(default)]
    started_at_ms: Option<u64>,
}

impl Instance {
    /// Lima's status as `list` reports it.
    fn reported_status(&self) -> &str {
        if self.yaml_error.is_some() {
            "Unknown"
        } else {
            &self.status
        }
    }

    /// `true` while a `ready_after_ms` boot is still going on.
    fn booting(&self) -> bool {
        match (self.ready_after_ms, self.started_at_ms) {
            (Some(delay), Some(at)) => now_ms() < at.saturating_add(delay),
            _ => false,
        }
    }

    /// All of Lima's errors for this instance.
    fn all_errors(&self) -> Vec<String> {
        self.yaml_error
            .iter()
            .cloned()
            .chain(self.errors.iter().cloned())
            .collect()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The Lima release the stand-in behaves like: `DEVSHELL_LIMA_STANDIN_VERSION`
/// (`MAJOR.MINOR.PATCH`), default 2.2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u32, u32, u32);

impl Version {
    /// `DEVSHELL_LIMA_STANDIN_VERSION`, else the file `$LIMA_HOME/standin-version` (so
    /// parallel tests with their own `LIMA_HOME` can differ), else 2.2.0.
    fn current() -> Self {
        std::env::var("DEVSHELL_LIMA_STANDIN_VERSION")
            .ok()
            .or_else(|| std::fs::read_to_string(lima_home().join("standin-version")).ok())
            .and_then(|v| Self::parse(&v))
            .unwrap_or(Self(2, 2, 0))
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().trim_start_matches('v').split('.');
        let mut next = || parts.next().and_then(|p| p.parse().ok());
        Some(Self(next()?, next()?, next().unwrap_or(0)))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

fn default_arch() -> String {
    std::env::consts::ARCH.to_owned()
}
fn default_mount_type() -> String {
    "9p".to_owned()
}
fn default_shell() -> String {
    "/bin/bash".to_owned()
}
fn default_home() -> String {
    std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__guest") {
        return guest_entry(&args[1..]);
    }
    // `limactl` refuses to run as root (`cmd/limactl/main.go` L35-L38 of v2.2.0: prints
    // "limactl: must not run as the root user", exit 1; a cobra error with the same
    // words since v0.23.0, L92). The stand-in has to run as root where user namespaces
    // are missing, so it refuses only when asked to: `DEVSHELL_LIMA_STANDIN_ROOT=refuse`
    // (when run by root) or the file `$LIMA_HOME/standin-as-root` (always).
    let refuse_root = std::env::var("DEVSHELL_LIMA_STANDIN_ROOT").as_deref() == Ok("refuse");
    // `$LIMA_HOME/standin-as-root`: behave as a real limactl started by root, whoever runs
    // the stand-in (so the backend's handling is tested without being root).
    let as_root = lima_home().join("standin-as-root").exists();
    if as_root || (nix::unistd::geteuid().is_root() && refuse_root) {
        eprintln!("limactl: must not run as the root user");
        return ExitCode::from(1);
    }
    let home = lima_home();
    log_invocation(&home, &args);
    match run(&home, &args) {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            // Lima logs fatal errors through logrus: `level=fatal msg="..."`.
            eprintln!("time=\"standin\" level=fatal msg={message:?}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    code: u8,
    message: String,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

fn lima_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("LIMA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    PathBuf::from(default_home()).join(".lima")
}

fn log_invocation(home: &Path, args: &[String]) {
    let _ = std::fs::create_dir_all(home);
    let line = serde_json::to_string(args).unwrap_or_default();
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("invocations.log"))
    {
        let _ = writeln!(file, "{line}");
    }
}

fn run(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    // Global flags may precede the subcommand.
    let mut rest = args;
    while let Some(first) = rest.first() {
        if is_global_flag(first) {
            rest = &rest[1..];
        } else if first == "--log-level" {
            rest = rest.get(2..).unwrap_or_default();
        } else {
            break;
        }
    }
    let Some((command, rest)) = rest.split_first() else {
        return Err(fail("limactl-standin: a subcommand is required"));
    };
    if command == "--version" || command == "-v" {
        // cobra's version template with `Version: strings.TrimPrefix(version.Version, "v")`
        // (`cmd/limactl/main.go` L105 of v2.2.0).
        println!("limactl version {}", Version::current());
        return Ok(ExitCode::SUCCESS);
    }
    if command == "shell" {
        // `shellCmd.Flags().SetInterspersed(false)` (`cmd/limactl/shell.go` L67 of
        // v2.2.0): flags end at the instance name, everything after it is the command.
        return shell(home, rest);
    }
    let rest: Vec<String> = rest
        .iter()
        .filter(|a| !is_global_flag(a))
        .cloned()
        .collect();
    match command.as_str() {
        "list" | "ls" => list(home, &rest),
        "start" => start(home, &rest),
        "stop" => stop(home, &rest),
        "copy" | "cp" => copy(home, &rest),
        other => Err(fail(format!("unknown command {other:?} for \"limactl\""))),
    }
}

fn is_global_flag(arg: &str) -> bool {
    matches!(arg, "-y" | "--yes" | "--debug" | "--tty") || arg.starts_with("--tty=")
}

fn instance_dir(home: &Path, name: &str) -> PathBuf {
    home.join(name)
}

fn load(home: &Path, name: &str) -> Result<Option<Instance>, Failure> {
    let path = instance_dir(home, name).join("standin.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| fail(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(format!("{}: {e}", path.display()))),
    }
}

fn save(home: &Path, name: &str, inst: &Instance) -> Result<(), Failure> {
    let path = instance_dir(home, name).join("standin.json");
    let text = serde_json::to_string_pretty(inst).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn require(home: &Path, name: &str) -> Result<Instance, Failure> {
    load(home, name)?.ok_or_else(|| {
        fail(format!(
            "instance {name:?} does not exist, run `limactl create {name}` to create a new instance"
        ))
    })
}

fn instance_names(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("standin.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn list(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    let mut json = false;
    let mut wanted = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--json" => json = true,
            "--format" | "-f" => {
                i += 1;
                json = args.get(i).map(String::as_str) == Some("json");
            }
            a if a.starts_with("--format=") => json = a == "--format=json",
            a => wanted.push(a.to_owned()),
        }
        i += 1;
    }
    let all = instance_names(home);
    let mut unmatched = false;
    let names = if wanted.is_empty() {
        if all.is_empty() {
            eprintln!(
                "time=\"standin\" level=warning msg=\"No instance found. Run `limactl create` to create an instance.\""
            );
        }
        all
    } else {
        let mut names = Vec::new();
        for w in wanted {
            if all.contains(&w) {
                names.push(w);
            } else {
                eprintln!("time=\"standin\" level=warning msg=\"No instance matching {w} found.\"");
                unmatched = true;
            }
        }
        names
    };
    let mut out = std::io::stdout().lock();
    for name in &names {
        let inst = require(home, name)?;
        let dir = instance_dir(home, name);
        if json {
            let mounts: Vec<serde_json::Value> = inst
                .mounts
                .iter()
                .map(|m| {
                    let mut mount = serde_json::json!({
                        "location": m.location,
                        "mountPoint": m.guest_point(),
                        "writable": m.writable,
                    });
                    if let Some(sshfs) = &m.sshfs {
                        mount["sshfs"] = sshfs.clone();
                    }
                    mount
                })
                .collect();
            let mut object = serde_json::json!({
                "name": name,
                "hostname": format!("lima-{name}"),
                "status": inst.reported_status(),
                "dir": dir.to_string_lossy(),
                "vmType": "qemu",
                "arch": inst.arch,
                "cpus": 4,
                "memory": 4_294_967_296_u64,
                "disk": 107_374_182_400_u64,
                "config": {
                    "arch": inst.arch,
                    "vmType": "qemu",
                    "mountType": inst.mount_type,
                    "mounts": mounts,
                },
                "protected": false,
                "limaVersion": "standin",
            });
            if inst.status == "Running" {
                object["sshLocalPort"] = serde_json::json!(60022);
                object["sshAddress"] = serde_json::json!("127.0.0.1");
            }
            // `Config *LimaYAML `json:"config,omitempty"`` and `Errors []error
            // `json:"errors,omitempty"`` (`pkg/limatype/lima_instance.go` L44-L45 of
            // v2.2.0): a YAML that fails to load leaves `config` out.
            if let Some(map) = object.as_object_mut() {
                if inst.yaml_error.is_some() {
                    map.remove("config");
                    map.remove("arch");
                    map.remove("vmType");
                }
                let errors = inst.all_errors();
                if !errors.is_empty() {
                    map.insert("errors".to_owned(), serde_json::json!(errors));
                }
            }
            let _ = writeln!(out, "{object}");
        } else {
            let _ = writeln!(out, "{name} {} {}", inst.reported_status(), dir.display());
        }
    }
    // `unmatchedInstancesError` (exit 1) exists since v0.23.0 (`cmd/limactl/list.go`
    // L164 of v0.23.0); before, an unmatched name only warned and exited 0.
    Ok(if unmatched && Version::current() >= Version(0, 23, 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn single_instance(args: &[String], what: &str) -> Result<String, Failure> {
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    match names.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(fail(format!(
            "limactl {what}: expected one instance name, got {args:?}"
        ))),
    }
}

fn start(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    let name = single_instance(args, "start")?;
    // Real Lima would create a missing instance from its default template (which lacks
    // the workspace mount); the backend never asks for that, and the stand-in refuses.
    let mut inst = load(home, &name)?.ok_or_else(|| {
        fail(format!(
            "instance {name:?} does not exist (limactl-standin cannot create instances from templates)"
        ))
    })?;
    if inst.status == "Running" {
        eprintln!(
            "time=\"standin\" level=info msg=\"The instance {name:?} is already running. Run `limactl shell {name}` to open the shell.\""
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(message) = &inst.start_failure {
        let log = instance_dir(home, &name).join("ha.stderr.log");
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            let _ = writeln!(file, "{{\"level\":\"info\",\"msg\":\"Starting QEMU\"}}");
            let _ = writeln!(file, "{{\"level\":\"fatal\",\"msg\":{message:?}}}");
        }
        return Err(fail(format!(
            "exiting, status={{Running:false Degraded:false Exiting:true Errors:[] SSHLocalPort:0}} (hint: see \"{}\")",
            log.display()
        )));
    }
    "Running".clone_into(&mut inst.status);
    inst.started_at_ms = Some(now_ms());
    save(home, &name, &inst)?;
    // The host agent's PID file exists from here on: a concurrent `list` says
    // `Running` while ssh and the mounts are not up yet (`pkg/store/instance.go` L62-L68
    // of v2.2.0 decides the status from the PID files alone); `start` itself waits
    // for READY.
    if let Some(delay) = inst.ready_after_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    eprintln!(
        "time=\"standin\" level=info msg=\"READY. Run `limactl shell {name}` to open the shell.\""
    );
    Ok(ExitCode::SUCCESS)
}

fn stop(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    let name = single_instance(args, "stop")?;
    let mut inst = require(home, &name)?;
    if inst.status != "Running" {
        return Err(fail(format!(
            "expected status \"Running\", got {:?}",
            inst.status
        )));
    }
    "Stopped".clone_into(&mut inst.status);
    save(home, &name, &inst)?;
    Ok(ExitCode::SUCCESS)
}

/// `shellescape.Quote` (al.essio.dev/pkg/shellescape), which Lima uses: empty → `''`;
/// only safe characters → as is; else single-quoted with `'` written as `'"'"'`.
fn quote(s: &str) -> String {
    if s.is_empty() {
        return "''".to_owned();
    }
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// Lima's `isEnv`: more than one part when split at `=`.
fn is_env(arg: &str) -> bool {
    arg.contains('=')
}

/// Lima's `quoteEnv`: the name stays as is, the value is quoted.
fn quote_env(arg: &str) -> String {
    let (name, value) = arg.split_once('=').unwrap_or((arg, ""));
    format!("{name}={}", quote(value))
}

/// What `limactl shell` does with a stopped instance, by release (Lima's source):
/// * before 1.1.0: error, exit 1 (`cmd/limactl/shell.go` L80-L82 of v1.0.7);
/// * 1.1.0 – 1.2.x: always asks (`askWhetherToStart`, L85-L93 of v1.2.3); on a
///   non-terminal the prompt fails (exit 1), answering no exits 0;
/// * 2.0.0 – 2.0.2: asks unless `--start` was given (L97-L112 of v2.0.2);
/// * 2.0.3: asks only when `tty` (the global `--tty`, default: stdout is a terminal,
///   `cmd/limactl/main.go` L126) and `--start` was not given; otherwise `startNow` is
///   `--start` (false): `return nil`, **exit 0 having run nothing** (L107-L121 of
///   v2.0.3);
/// * 2.1.0 on: the same, but not starting is an error, exit 1 (L137-L151 of v2.1.0).
enum StoppedShell {
    Fail,
    ExitZero,
    Start,
}

fn stopped_shell(
    version: Version,
    tty: bool,
    start_flag: Option<bool>,
) -> Result<StoppedShell, Failure> {
    let ask = |always: bool| -> Result<bool, Failure> {
        if !always && !tty {
            return Ok(false);
        }
        if !std::io::stdin().is_terminal() {
            // survey's prompt needs a terminal.
            return Err(fail("prompt: stdin is not a terminal"));
        }
        eprint!("? Do you want to start the instance now? (Y/n) ");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        Ok(!line.trim().eq_ignore_ascii_case("n") && !line.trim().eq_ignore_ascii_case("no"))
    };
    let decision = if version < Version(1, 1, 0) {
        return Ok(StoppedShell::Fail);
    } else if version < Version(2, 0, 0) {
        ask(true)?
    } else if version < Version(2, 0, 3) {
        match start_flag {
            Some(flag) => flag,
            None => ask(true)?,
        }
    } else {
        match start_flag {
            Some(flag) => flag,
            None => ask(false)?,
        }
    };
    Ok(if decision {
        StoppedShell::Start
    } else if version >= Version(2, 1, 0) {
        StoppedShell::Fail
    } else {
        StoppedShell::ExitZero
    })
}

fn parse_bool_flag(flag: &str, value: &str) -> Result<bool, Failure> {
    match value {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        other => Err(fail(format!(
            "invalid argument {other:?} for {flag:?} flag"
        ))),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one function follows Lima's shellAction step by step"
)]
fn shell(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    let mut workdir: Option<String> = None;
    let mut shell_flag: Option<String> = None;
    let mut tty = std::io::stdout().is_terminal();
    let mut start_flag: Option<bool> = None;
    let mut i = 0;
    // `SetInterspersed(false)`: flags (the shell's own and the global ones) stop at the
    // first positional argument, the instance name; nothing after it is looked at.
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--workdir" || a == "--shell" || a == "--log-level" {
            let value = args
                .get(i + 1)
                .cloned()
                .ok_or_else(|| fail(format!("flag needs an argument: {a}")))?;
            if a == "--workdir" {
                workdir = Some(value);
            } else if a == "--shell" {
                shell_flag = Some(value);
            }
            i += 2;
        } else if let Some(v) = a.strip_prefix("--workdir=") {
            workdir = Some(v.to_owned());
            i += 1;
        } else if let Some(v) = a.strip_prefix("--shell=") {
            shell_flag = Some(v.to_owned());
            i += 1;
        } else if a == "--tty" {
            tty = true;
            i += 1;
        } else if let Some(v) = a.strip_prefix("--tty=") {
            tty = parse_bool_flag("tty", v)?;
            i += 1;
        } else if a == "--start" {
            start_flag = Some(true);
            i += 1;
        } else if let Some(v) = a.strip_prefix("--start=") {
            start_flag = Some(parse_bool_flag("start", v)?);
            i += 1;
        } else if matches!(
            a,
            "--reconnect" | "--preserve-env" | "-y" | "--yes" | "--debug"
        ) || a.starts_with("--log-level=")
        {
            i += 1;
        } else if a.starts_with('-') && a != "--" {
            return Err(fail(format!("unknown flag: {a}")));
        } else {
            break;
        }
    }
    let mut positional: Vec<String> = args[i..].to_vec();
    if positional.first().map(String::as_str) == Some("--") {
        positional.remove(0);
    }
    // "simulate the behavior of double dash" (`cmd/limactl/shell.go` L108-L114 of v2.2.0)
    if positional.len() >= 2 && positional[1] == "--" {
        positional.remove(1);
    }
    let Some((name, command)) = positional.split_first() else {
        return Err(fail("requires instance name as first argument"));
    };
    let mut inst = require(home, name)?;
    let errors = inst.all_errors();
    if !errors.is_empty() {
        // `cmd/limactl/shell.go` L131-L133 of v2.2.0: logged, not fatal.
        eprintln!(
            "time=\"standin\" level=error msg=\"Instance `{name}` has configuration errors\" error={:?}",
            errors.join("\n")
        );
    }
    if inst.status == "Stopped" && inst.yaml_error.is_none() {
        match stopped_shell(Version::current(), tty, start_flag)? {
            StoppedShell::Fail => {
                return Err(fail(format!(
                    "instance {name:?} is stopped, run `limactl start {name}` to start the instance"
                )));
            }
            StoppedShell::ExitZero => return Ok(ExitCode::SUCCESS),
            StoppedShell::Start => {
                "Running".clone_into(&mut inst.status);
                inst.started_at_ms = Some(now_ms());
                save(home, name, &inst)?;
            }
        }
    }
    if inst.ssh_failure || inst.booting() || inst.yaml_error.is_some() || inst.status != "Running" {
        // No sshd answering (yet): ssh's own exit status, 255.
        eprintln!("ssh: connect to host 127.0.0.1 port 60022: Connection refused");
        return Ok(ExitCode::from(255));
    }
    let change_dir = match &workdir {
        Some(dir) if !dir.is_empty() => format!("cd {} || exit 1", quote(dir)),
        _ => {
            let cwd = std::env::current_dir()
                .map_or_else(|_| "/".to_owned(), |p| p.to_string_lossy().into_owned());
            format!("cd {} || cd {}", quote(&cwd), quote(&inst.home))
        }
    };
    let login_shell = shell_flag.map_or_else(|| "\"$SHELL\"".to_owned(), |s| quote(&s));
    let mut script = format!("{change_dir} ; exec {login_shell} --login");
    if !command.is_empty() {
        let mut parsing_env = true;
        let quoted: Vec<String> = command
            .iter()
            .map(|arg| {
                if parsing_env && is_env(arg) {
                    quote_env(arg)
                } else {
                    parsing_env = false;
                    quote(arg)
                }
            })
            .collect();
        script.push_str(" -c ");
        script.push_str(&quote(&quoted.join(" ")));
    }
    let me = std::env::current_exe().map_err(|e| fail(format!("current_exe: {e}")))?;
    let config = instance_dir(home, name).join("standin.json");
    let unshare = which_unshare().ok_or_else(|| Failure {
        code: 125,
        message: "limactl-standin: `unshare` (util-linux) is required to run guest commands in a private mount namespace; install util-linux".to_owned(),
    })?;
    let mut guest = Command::new(unshare);
    if !nix::unistd::geteuid().is_root() {
        // Real `limactl` refuses root; without root the stand-in gets its mount
        // namespace inside a user namespace of its own.
        guest.args(["--user", "--map-root-user"]);
    }
    guest
        .args(["--mount", "--propagation", "private", "--"])
        .arg(me)
        .arg("__guest")
        .arg(config)
        .arg(script)
        .arg(if tty { "tty" } else { "notty" });
    relay(guest)
}

fn copy(home: &Path, args: &[String]) -> Result<ExitCode, Failure> {
    let mut recursive = false;
    let mut paths = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-r" | "--recursive" => recursive = true,
            "--backend" => i += 1,
            a if a.starts_with("--backend=") => {}
            "-v" | "--verbose" => {}
            a => paths.push(a.to_owned()),
        }
        i += 1;
    }
    if paths.len() < 2 {
        return Err(fail("requires at least 2 arguments: SOURCE DEST"));
    }
    let resolve = |arg: &str| -> Result<PathBuf, Failure> {
        let parts: Vec<&str> = arg.split(':').collect();
        match parts.as_slice() {
            [_] => Ok(PathBuf::from(arg)),
            [name, path] => {
                let inst = require(home, name)?;
                if inst.status != "Running" {
                    return Err(fail(format!(
                        "instance {name:?} is stopped, run `limactl start {name}` to start the instance"
                    )));
                }
                if inst.ssh_failure || inst.booting() || inst.yaml_error.is_some() {
                    return Err(Failure {
                        code: 255,
                        message: "ssh: connect to host 127.0.0.1 port 60022: Connection refused"
                            .to_owned(),
                    });
                }
                Ok(guest_to_host(&inst, path))
            }
            _ => Err(fail(format!("path {arg:?} contains multiple colons"))),
        }
    };
    let (target, sources) = paths.split_last().expect("at least two paths");
    let target = resolve(target)?;
    for source in sources {
        let source = resolve(source)?;
        let dest = if target.is_dir() {
            target.join(source.file_name().unwrap_or_default())
        } else {
            target.clone()
        };
        copy_path(&source, &dest, recursive).map_err(|e| {
            fail(format!(
                "copy {} -> {}: {e}",
                source.display(),
                dest.display()
            ))
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A guest path as seen from the host: under a mount point it is the mount's location.
fn guest_to_host(inst: &Instance, path: &str) -> PathBuf {
    for m in &inst.mounts {
        let point = m.guest_point();
        if path == point {
            return PathBuf::from(m.host_location());
        }
        if let Some(rest) = path.strip_prefix(&point).and_then(|r| r.strip_prefix('/')) {
            return Path::new(&m.host_location()).join(rest);
        }
    }
    PathBuf::from(path)
}

fn copy_path(source: &Path, dest: &Path, recursive: bool) -> std::io::Result<()> {
    let meta = std::fs::metadata(source)?;
    if meta.is_dir() {
        if !recursive {
            return Err(std::io::Error::other("is a directory (use -r)"));
        }
        std::fs::create_dir_all(dest)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            copy_path(&entry.path(), &dest.join(entry.file_name()), true)?;
        }
        Ok(())
    } else {
        std::fs::copy(source, dest).map(|_| ())
    }
}
