//! The embedder side: starting a sandbox, sending runs to its init, waiting for them.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use devshell_vm_exec::{
    CancelHandle, ExecOutcome, OutputMode, StdinMode, StreamEvent, StreamKind, Termination,
    ToolRequest,
};
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::SandboxError;
use crate::cgroup::{self, Hierarchy, RunCgroups};
use crate::child::{self, Buffers, NsPlan, Op};
use crate::policy::{
    ETC_FILES, Effective, Enforcement, Isolation, LimitHit, Mechanisms, Net, NetEnforcement,
    Policy, SANDBOX_HOME, SYSTEM_READ_ONLY,
};
use crate::written::{WRITE_POLL, WriteWatch};

static NEXT_SCRATCH: AtomicU64 = AtomicU64::new(0);

/// How long a new sandbox may take to report ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// After the tool ended, how long to keep reading output still buffered in the pipes.
const DRAIN_GRACE: Duration = Duration::from_millis(250);
/// How often the wait loop looks at cancel handles and forwarded interrupts.
const TICK: Duration = Duration::from_millis(20);

/// The result of one confined run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOutcome {
    /// How the tool ended, and its captured output.
    pub exec: ExecOutcome,
    /// The limit that stopped it, when one did and this can be told.
    pub limit: Option<LimitHit>,
    /// What was in force.
    pub mechanisms: Mechanisms,
}

/// A confined environment for the runs of one session: an init of ours that forks each
/// tool inside the namespaces (or the Landlock domain) created once, and kills
/// everything a run leaves behind when it ends. See the crate docs.
#[derive(Debug)]
pub struct Sandbox {
    policy: Policy,
    mechanisms: Mechanisms,
    degraded: Option<String>,
    inner: Inner,
    cgroups: Option<Hierarchy>,
    run_cgroups: Option<RunCgroups>,
    scratch: Option<PathBuf>,
    home: PathBuf,
    tmp: PathBuf,
}

#[derive(Debug)]
enum Inner {
    Off,
    Init { sock: OwnedFd, child: Pid },
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Inner::Init { sock, child } = std::mem::replace(&mut self.inner, Inner::Off) {
            drop(sock); // the init sees end-of-file, kills everything and exits
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn cstring(path: &Path) -> Result<CString, SandboxError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::BadPath {
        path: path.to_path_buf(),
    })
}

fn prefixed(prefix: &str, path: &Path) -> Result<CString, SandboxError> {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    CString::new(bytes).map_err(|_| SandboxError::BadPath {
        path: path.to_path_buf(),
    })
}

/// The mount plan, with a description of every operation for error messages.
struct Planner {
    ops: Vec<Op>,
    descriptions: Vec<String>,
    made: std::collections::BTreeSet<PathBuf>,
}

impl Planner {
    fn new() -> Self {
        Self {
            ops: Vec::new(),
            descriptions: Vec::new(),
            made: std::collections::BTreeSet::new(),
        }
    }

    fn push(&mut self, op: Op, description: String) {
        self.ops.push(op);
        self.descriptions.push(description);
    }

    fn mkdirs(&mut self, path: &Path) -> Result<(), SandboxError> {
        let mut current = PathBuf::from("/");
        for component in path.components().skip(1) {
            current.push(component);
            if self.made.insert(current.clone()) {
                let op = Op::MkDir(prefixed("/newroot", &current)?);
                self.push(op, format!("create directory {}", current.display()));
            }
        }
        Ok(())
    }

    /// Binds `path` at the same place. A symlink with a relative target (`/lib` →
    /// `usr/lib`) becomes the same symlink; any other symlink is bound as its target.
    fn bind(&mut self, path: &Path, readonly: bool) -> Result<(), SandboxError> {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(()); // absent: nothing to show
        };
        if meta.file_type().is_symlink() {
            if let Ok(target) = std::fs::read_link(path)
                && target.is_relative()
                && !target
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                && path.parent() == Some(Path::new("/"))
            {
                self.mkdirs(path.parent().unwrap_or(Path::new("/")))?;
                self.made.insert(path.to_path_buf());
                let op = Op::Symlink {
                    target: cstring(&target)?,
                    dst: prefixed("/newroot", path)?,
                };
                self.push(
                    op,
                    format!("symlink {} -> {}", path.display(), target.display()),
                );
                return Ok(());
            }
            let Ok(real) = std::fs::canonicalize(path) else {
                return Ok(());
            };
            return self.bind_as(&real, path, readonly);
        }
        self.bind_as(path, path, readonly)
    }

    fn bind_as(&mut self, src: &Path, dst: &Path, readonly: bool) -> Result<(), SandboxError> {
        let Ok(meta) = std::fs::metadata(src) else {
            return Ok(());
        };
        if meta.is_dir() {
            self.mkdirs(dst)?;
        } else {
            self.mkdirs(dst.parent().unwrap_or(Path::new("/")))?;
            if self.made.insert(dst.to_path_buf()) {
                self.push(
                    Op::Touch(prefixed("/newroot", dst)?),
                    format!("create mount point {}", dst.display()),
                );
            }
        }
        let op = Op::Bind {
            src: prefixed("/oldroot", src)?,
            dst: prefixed("/newroot", dst)?,
            readonly,
        };
        let how = if readonly { "read-only" } else { "read-write" };
        self.push(op, format!("bind {} {how}", dst.display()));
        Ok(())
    }

    fn tmpfs(&mut self, path: &Path, data: &str) -> Result<(), SandboxError> {
        self.mkdirs(path)?;
        let op = Op::Tmpfs {
            dst: prefixed("/newroot", path)?,
            data: CString::new(data).map_err(|_| SandboxError::BadPath {
                path: path.to_path_buf(),
            })?,
        };
        self.push(op, format!("mount a private tmpfs on {}", path.display()));
        Ok(())
    }

    fn symlink(&mut self, target: &Path, at: &Path) -> Result<(), SandboxError> {
        self.mkdirs(at.parent().unwrap_or(Path::new("/")))?;
        self.made.insert(at.to_path_buf());
        let op = Op::Symlink {
            target: cstring(target)?,
            dst: prefixed("/newroot", at)?,
        };
        self.push(
            op,
            format!("symlink {} -> {}", at.display(), target.display()),
        );
        Ok(())
    }
}

/// The tmpfs size option for the write limit.
fn tmpfs_data(mode: &str, policy: &Policy) -> String {
    match policy.limits.write {
        Some(bytes) => format!("mode={mode},size={bytes}"),
        None => format!("mode={mode}"),
    }
}

/// The cargo home entries shared with the tool (never `credentials.toml`).
const CARGO_HOME_SHARED: [(&str, bool); 5] = [
    ("bin", false),
    ("registry", true),
    ("git", true),
    ("config.toml", false),
    ("config", false),
];

fn ns_plan(policy: &Policy) -> Result<(Vec<Op>, Vec<String>), SandboxError> {
    let mut p = Planner::new();
    for dir in SYSTEM_READ_ONLY.iter().chain(ETC_FILES) {
        p.bind(Path::new(dir), true)?;
    }
    // The private /tmp and HOME first, so read-only or writable paths below /tmp (a
    // PATH entry, a project in a temp dir) are bound on top of them, not hidden.
    p.tmpfs(Path::new("/tmp"), &tmpfs_data("1777", policy))?;
    p.tmpfs(Path::new(SANDBOX_HOME), &tmpfs_data("0700", policy))?;
    for path in &policy.readable {
        p.bind(path, true)?;
    }
    if let Some(rustup) = &policy.rustup_home {
        p.bind(rustup, true)?;
    }
    if let Some(cargo_home) = &policy.cargo_home {
        for (entry, cache) in CARGO_HOME_SHARED {
            let real = cargo_home.join(entry);
            if real.exists() {
                p.bind(&real, !(cache && policy.registry_writable))?;
                p.symlink(&real, &Path::new(SANDBOX_HOME).join(".cargo").join(entry))?;
            }
        }
    }
    for path in &policy.writable {
        p.bind(path, false)?;
    }
    // A minimal /dev.
    p.tmpfs(Path::new("/dev"), "mode=0755")?;
    for node in ["null", "zero", "full", "random", "urandom"] {
        let path = Path::new("/dev").join(node);
        p.bind_as(&path, &path, false)?;
    }
    p.tmpfs(Path::new("/dev/shm"), &tmpfs_data("1777", policy))?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        p.symlink(Path::new(target), &Path::new("/dev").join(name))?;
    }
    p.mkdirs(Path::new("/proc"))?;
    p.push(
        Op::Proc(prefixed("/newroot", Path::new("/proc"))?),
        "mount a new /proc".into(),
    );
    Ok((p.ops, p.descriptions))
}

/// Reads one reply from the init, waiting at most `timeout`.
fn read_reply(sock: &OwnedFd, timeout: Duration) -> Result<Vec<u8>, String> {
    let mut fds = [nix::poll::PollFd::new(
        sock.as_fd_borrowed(),
        nix::poll::PollFlags::POLLIN,
    )];
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(millis)) {
        Ok(0) => return Err("no answer in time".into()),
        Ok(_) => {}
        Err(err) => return Err(err.to_string()),
    }
    let mut buf = [0_u8; 64];
    match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        Ok(0) => Err("the sandbox init exited".into()),
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(err) => Err(err.to_string()),
    }
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// Starts a child with `body` after fork; returns the socket to it and its pid.
fn fork_child(
    body: impl FnOnce(RawFd, libc::pid_t) -> std::convert::Infallible,
) -> Result<(OwnedFd, Pid), SandboxError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SandboxError::Start {
        what: "create the control socket".into(),
        source: e.into(),
    })?;
    let parent = nix::unistd::getpid().as_raw();
    // SAFETY: the child runs only `body`, which follows the post-fork discipline of the
    // `child` module (system calls on data prepared before the fork, then exec or _exit).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) =>
        {
            #[allow(unreachable_code, reason = "the child never returns")]
            match body(theirs.as_raw_fd(), parent) {}
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(theirs);
            Ok((ours, child))
        }
        Err(e) => Err(SandboxError::Start {
            what: "fork".into(),
            source: e.into(),
        }),
    }
}

fn landlock_rules(
    policy: &Policy,
    home: &Path,
    tmp: &Path,
) -> Result<landlock::RulesetCreated, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, Scope,
    };
    let abi = ABI::V6;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?
        .scope(Scope::from_all(abi))
        .map_err(|e| e.to_string())?;
    if policy.network == Net::None {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
    for dir in SYSTEM_READ_ONLY.iter().chain(ETC_FILES).chain(&["/proc"]) {
        rules.push((PathBuf::from(dir), read));
    }
    for path in policy.readable.iter().chain(&policy.rustup_home) {
        rules.push((path.clone(), read));
    }
    if let Some(cargo_home) = &policy.cargo_home {
        for (entry, cache) in CARGO_HOME_SHARED {
            let access = if cache && policy.registry_writable {
                all
            } else {
                read
            };
            rules.push((cargo_home.join(entry), access));
        }
    }
    for path in policy
        .writable
        .iter()
        .map(PathBuf::as_path)
        .chain([home, tmp])
    {
        rules.push((path.to_path_buf(), all));
    }
    for node in ["null", "zero", "full", "random", "urandom"] {
        rules.push((Path::new("/dev").join(node), all));
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    for (path, access) in rules {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // absent paths are simply not allowed
        };
        let access = if meta.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        let fd = PathFd::new(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(created)
}

/// A seccomp filter that refuses `socket(2)` for every family but `AF_UNIX` (`EACCES`):
/// the Landlock mode's network cut for UDP, raw and other sockets, which Landlock (TCP
/// only) does not cover. Built here, applied after the fork.
fn socket_filter() -> Result<seccompiler::BpfProgram, String> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    let fail = |e: &dyn std::fmt::Display| format!("building the seccomp socket filter: {e}");
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| fail(&e))?;
    let not_unix = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Ne,
        libc::AF_UNIX as u64,
    )
    .map_err(|e| fail(&e))?;
    let rule = SeccompRule::new(vec![not_unix]).map_err(|e| fail(&e))?;
    let filter = SeccompFilter::new(
        [(libc::SYS_socket, vec![rule])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )
    .map_err(|e| fail(&e))?;
    filter.try_into().map_err(|e| fail(&e))
}

/// Whether the kernel offers Landlock at all.
fn landlock_available() -> Result<(), String> {
    use landlock::{ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr};
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(Ruleset::create)
        .map(drop)
        .map_err(|e| format!("Landlock is not available: {e}"))
}

impl Sandbox {
    /// Starts a sandbox for `policy`: resolves the isolation mode (auto tries namespaces,
    /// then Landlock, then none, and records why in [`Sandbox::degraded`]), creates the
    /// namespaces or the Landlock domain once and starts the init in it.
    ///
    /// # Errors
    /// [`SandboxError::Unavailable`] when an explicitly requested mode cannot be had
    /// here (naming the mode and the reason); [`SandboxError::Start`] for other failures.
    pub fn start(policy: Policy) -> Result<Self, SandboxError> {
        let cgroups = if policy.isolation == Isolation::Off {
            None
        } else {
            cgroup::probe()
        };
        let mut sandbox = Self {
            mechanisms: Mechanisms {
                isolation: Effective::Off,
                network: NetEnforcement::Host,
                memory: Enforcement::Unlimited,
                pids: Enforcement::Unlimited,
                cpu: Enforcement::Unlimited,
                write: Enforcement::Unlimited,
            },
            degraded: None,
            inner: Inner::Off,
            cgroups,
            run_cgroups: None,
            scratch: None,
            home: PathBuf::from(SANDBOX_HOME),
            tmp: PathBuf::from("/tmp"),
            policy,
        };
        match sandbox.policy.isolation {
            Isolation::Off => {}
            Isolation::Namespaces => {
                sandbox
                    .start_namespaces()
                    .map_err(|reason| SandboxError::Unavailable {
                        mode: Isolation::Namespaces,
                        reason,
                    })?;
            }
            Isolation::Landlock => {
                sandbox
                    .start_landlock()
                    .map_err(|reason| SandboxError::Unavailable {
                        mode: Isolation::Landlock,
                        reason,
                    })?;
            }
            Isolation::Auto => {
                if let Err(ns_reason) = sandbox.start_namespaces() {
                    match sandbox.start_landlock() {
                        Ok(()) => {
                            sandbox.degraded = Some(format!(
                                "isolation auto: namespaces unavailable ({ns_reason}); using Landlock only (files and TCP; {})",
                                crate::LANDLOCK_GAPS
                            ));
                        }
                        Err(ll_reason) => {
                            sandbox.degraded = Some(format!(
                                "isolation auto: namespaces unavailable ({ns_reason}) and Landlock unavailable ({ll_reason}); tools run NOT confined"
                            ));
                        }
                    }
                }
            }
        }
        sandbox.fill_mechanisms();
        Ok(sandbox)
    }

    fn fill_mechanisms(&mut self) {
        let limits = self.policy.limits;
        let confined = !matches!(self.inner, Inner::Off);
        let via = |set: bool, cgroup: bool| match (set, confined, cgroup) {
            (false, _, _) | (_, false, _) => Enforcement::Unlimited,
            (true, true, true) => Enforcement::Cgroup,
            (true, true, false) => Enforcement::Rlimit,
        };
        let cg = self.cgroups.is_some();
        self.mechanisms.memory = via(limits.memory.is_some(), cg);
        self.mechanisms.pids = via(limits.pids.is_some(), cg);
        self.mechanisms.cpu = via(limits.cpu_time.is_some(), false);
        self.mechanisms.write = match via(limits.write.is_some(), false) {
            Enforcement::Rlimit => Enforcement::Watched,
            other => other,
        };
        self.mechanisms.network = match (self.mechanisms.isolation, self.policy.network) {
            (Effective::Namespaces, Net::None) => NetEnforcement::Namespace,
            (Effective::Landlock, Net::None) => NetEnforcement::LandlockSeccomp,
            _ => NetEnforcement::Host,
        };
    }

    /// The mechanisms in force for runs of this sandbox.
    #[must_use]
    pub fn mechanisms(&self) -> Mechanisms {
        self.mechanisms
    }

    /// Why `auto` settled for less than namespaces (reported once per session by the
    /// caller); `None` when it did not degrade or the mode was explicit.
    #[must_use]
    pub fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }

    /// The policy this sandbox was started with.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn start_namespaces(&mut self) -> Result<(), String> {
        let (ops, descriptions) = ns_plan(&self.policy).map_err(|e| e.to_string())?;
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if self.policy.network == Net::None {
            flags |= libc::CLONE_NEWNET;
        }
        let plan = NsPlan {
            flags,
            uid_map: CString::new(format!("{uid} {uid} 1\n")).map_err(|e| e.to_string())?,
            gid_map: CString::new(format!("{gid} {gid} 1\n")).map_err(|e| e.to_string())?,
            ops,
            loopback: self.policy.network == Net::None,
        };
        let mut buffers = Buffers::new();
        let (sock, child) =
            fork_child(|sock, parent| child::namespace_child(sock, parent, &plan, &mut buffers))
                .map_err(|e| e.to_string())?;
        self.await_ready(sock, child, &descriptions)?;
        self.mechanisms.isolation = Effective::Namespaces;
        self.home = PathBuf::from(SANDBOX_HOME);
        self.tmp = PathBuf::from("/tmp");
        Ok(())
    }

    fn start_landlock(&mut self) -> Result<(), String> {
        landlock_available()?;
        let scratch = self.policy.scratch_dir.join(format!(
            "sandbox-{}-{}",
            std::process::id(),
            NEXT_SCRATCH.fetch_add(1, Ordering::Relaxed)
        ));
        let home = scratch.join("home");
        let tmp = scratch.join("tmp");
        for dir in [&home, &tmp] {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        self.scratch = Some(scratch);
        if let Some(cargo_home) = &self.policy.cargo_home {
            let private = home.join(".cargo");
            std::fs::create_dir_all(&private)
                .map_err(|e| format!("creating {}: {e}", private.display()))?;
            for (entry, _) in CARGO_HOME_SHARED {
                let real = cargo_home.join(entry);
                if real.exists() {
                    symlink(&real, private.join(entry))
                        .map_err(|e| format!("linking {}: {e}", real.display()))?;
                }
            }
        }
        let rules = landlock_rules(&self.policy, &home, &tmp)?;
        let sockets = if self.policy.network == Net::None {
            Some(socket_filter()?)
        } else {
            None
        };
        let mut buffers = Buffers::new();
        let mut rules = Some(rules);
        let (sock, child) = fork_child(|sock, parent| {
            child::landlock_child(sock, parent, rules.take(), sockets.as_ref(), &mut buffers)
        })
        .map_err(|e| e.to_string())?;
        self.await_ready(sock, child, &[])?;
        self.mechanisms.isolation = Effective::Landlock;
        self.home = home;
        self.tmp = tmp;
        Ok(())
    }

    fn await_ready(&mut self, sock: OwnedFd, child: Pid, ops: &[String]) -> Result<(), String> {
        let reply = read_reply(&sock, START_TIMEOUT);
        let fail = |why: String| {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(child, None);
            why
        };
        match reply {
            Ok(r) if r.first() == Some(&child::REPLY_READY) => {
                self.inner = Inner::Init { sock, child };
                Ok(())
            }
            Ok(r) if r.first() == Some(&child::REPLY_SETUP_FAILED) && r.len() >= 9 => {
                let step = u32::from_le_bytes([r[1], r[2], r[3], r[4]]);
                let errno = i32::from_le_bytes([r[5], r[6], r[7], r[8]]);
                let what = if step >= child::OPS_BASE {
                    ops.get((step - child::OPS_BASE) as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("mount step {step}"))
                } else {
                    child::STEP_NAMES
                        .get(step as usize)
                        .map_or_else(|| format!("step {step}"), |s| (*s).to_owned())
                };
                Err(fail(format!(
                    "{what} failed: {}",
                    std::io::Error::from_raw_os_error(errno)
                )))
            }
            Ok(_) => Err(fail("the sandbox init sent an unexpected reply".into())),
            Err(why) => Err(fail(why)),
        }
    }

    /// Whether the init is still there (it dies with the thread that started it, through
    /// the parent-death signal, and with the embedding process).
    fn alive(&self) -> bool {
        match &self.inner {
            Inner::Off => true,
            Inner::Init { child, .. } => matches!(
                nix::sys::wait::waitpid(*child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
                Ok(nix::sys::wait::WaitStatus::StillAlive)
            ),
        }
    }

    /// Restarts the init when it is gone (for example because the thread that started it
    /// ended: the parent-death signal follows the thread).
    fn ensure_alive(&mut self) -> Result<(), SandboxError> {
        if self.alive() {
            return Ok(());
        }
        let policy = Policy {
            isolation: match self.mechanisms.isolation {
                Effective::Namespaces => Isolation::Namespaces,
                Effective::Landlock => Isolation::Landlock,
                Effective::Off => Isolation::Off,
            },
            ..self.policy.clone()
        };
        let degraded = self.degraded.take();
        let original = self.policy.isolation;
        *self = Self::start(policy)?;
        self.policy.isolation = original;
        self.degraded = degraded;
        Ok(())
    }

    /// The environment a tool starts with: the policy's, with `HOME`, `TMPDIR`,
    /// `CARGO_HOME`, `RUSTUP_HOME` replaced, `CARGO_NET_OFFLINE` without network, and the
    /// request's additions last.
    fn environment(&self, request: &ToolRequest) -> Vec<(OsString, OsString)> {
        let confined = !matches!(self.inner, Inner::Off);
        let mut env: Vec<(OsString, OsString)> = self.policy.env.clone();
        let mut set = |k: &str, v: OsString| {
            env.retain(|(name, _)| name != k);
            env.push((k.into(), v));
        };
        if confined {
            set("HOME", self.home.clone().into_os_string());
            set("TMPDIR", self.tmp.clone().into_os_string());
            if self.policy.cargo_home.is_some() {
                set("CARGO_HOME", self.home.join(".cargo").into_os_string());
            }
            if let Some(rustup) = &self.policy.rustup_home {
                set("RUSTUP_HOME", rustup.clone().into_os_string());
            }
            if self.policy.network == Net::None {
                set("CARGO_NET_OFFLINE", "true".into());
            }
        }
        for (k, v) in &request.env {
            set(k, v.into());
        }
        env
    }

    /// Runs `program` (an absolute path visible inside the sandbox) in `cwd` as `request`
    /// says, confined; streams or captures output like `devshell_vm_exec::run`; kills
    /// everything the run started when it ends (exit, timeout, cancel).
    ///
    /// # Errors
    /// [`SandboxError::Exec`] when the tool could not be started (missing program,
    /// bad working directory), [`SandboxError::Io`] when the sandbox failed.
    pub fn run(
        &mut self,
        program: &Path,
        request: &ToolRequest,
        cwd: &Path,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
    ) -> Result<SandboxOutcome, SandboxError> {
        if matches!(self.inner, Inner::Off) {
            // Unconfined: the tool inherits this process's live environment, plus the
            // request's additions — what `environment` would build from the policy's
            // snapshot of it, without copying (and lossily converting) every variable on
            // every run.
            let plain = request;
            let exec = devshell_vm_exec::run(program, plain, cwd, on_output, cancel)
                .map_err(SandboxError::Exec)?;
            return Ok(SandboxOutcome {
                exec,
                limit: None,
                mechanisms: self.mechanisms,
            });
        }
        self.ensure_alive()?;
        if self.run_cgroups.is_none()
            && let Some(hierarchy) = &self.cgroups
        {
            self.run_cgroups = Some(RunCgroups::create(hierarchy, &self.policy.limits).map_err(
                |source| SandboxError::Io {
                    context: "creating the sandbox's cgroups".into(),
                    source,
                },
            )?);
        }
        let before = self.run_cgroups.as_ref().map(RunCgroups::counters);
        let mut watch = match (&self.inner, self.policy.limits.write) {
            (Inner::Init { child, .. }, Some(limit)) => {
                Some(WriteWatch::start(child.as_raw(), limit))
            }
            _ => None,
        };
        let result = self.run_in_init(program, request, cwd, on_output, cancel, watch.as_mut());
        let after = self.run_cgroups.as_ref().map(RunCgroups::counters);
        let over_write_limit = watch.is_some_and(|w| w.tripped || w.exceeded());
        let limit_from_cgroup = match (before, after) {
            (Some((oom0, _)), Some((oom1, _))) if oom1 > oom0 => Some(LimitHit::Memory),
            (Some((_, max0)), Some((_, max1))) if max1 > max0 => Some(LimitHit::Pids),
            _ => None,
        };
        let exec = result?;
        // The limit that ended the tool first (a kernel signal of its own), else the
        // write total (the watcher's kill, or passed between two checks).
        let limit = limit_from_cgroup
            .or(match exec.termination {
                Termination::Signaled(s) if s == libc::SIGXCPU => Some(LimitHit::CpuTime),
                Termination::Signaled(s) if s == libc::SIGXFSZ => Some(LimitHit::FileSize),
                _ => None,
            })
            .or(over_write_limit.then_some(LimitHit::Written));
        Ok(SandboxOutcome {
            exec,
            limit,
            mechanisms: self.mechanisms,
        })
    }

    fn rlimits(&self) -> Vec<(u32, u64, u64)> {
        let limits = self.policy.limits;
        let mut out = Vec::new();
        if let Some(cpu) = limits.cpu_time {
            let secs = cpu.as_secs().max(1);
            out.push((libc::RLIMIT_CPU, secs, secs + 1));
        }
        if let Some(bytes) = limits.write {
            out.push((libc::RLIMIT_FSIZE, bytes, bytes));
        }
        if self.cgroups.is_none() {
            if let Some(bytes) = limits.memory {
                out.push((libc::RLIMIT_DATA, bytes, bytes));
            }
            if let Some(n) = limits.pids {
                out.push((libc::RLIMIT_NPROC, n, n));
            }
        }
        out
    }

    #[allow(clippy::too_many_lines, reason = "one wait loop, kept together")]
    fn run_in_init(
        &mut self,
        program: &Path,
        request: &ToolRequest,
        cwd: &Path,
        on_output: &mut dyn FnMut(StreamKind, &[u8]),
        cancel: Option<&CancelHandle>,
        mut watch: Option<&mut WriteWatch>,
    ) -> Result<ExecOutcome, SandboxError> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source: std::io::Error| SandboxError::Io { context, source }
        };
        let message = encode_run(
            program,
            cwd,
            request,
            &self.environment(request),
            &self.rlimits(),
        )?;
        let forward = if request.forward_interrupts {
            Some(
                devshell_vm_exec::InterruptForwarding::install()
                    .map_err(io("installing interrupt forwarding"))?,
            )
        } else {
            None
        };
        // Stdio for the tool.
        let null = || -> Result<OwnedFd, SandboxError> {
            Ok(std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(io("opening /dev/null"))?
                .into())
        };
        let stdin: OwnedFd = match request.stdin {
            StdinMode::Null => null()?,
            StdinMode::Inherit => std::io::stdin()
                .as_fd_owned()
                .map_err(io("duplicating stdin"))?,
        };
        // Bounded, as in `devshell_vm_exec::run`: a slow consumer blocks the readers, and
        // the tool on its pipe, instead of growing this process.
        let (sender, events) = mpsc::sync_channel(devshell_vm_exec::OUTPUT_QUEUE_EVENTS);
        let mut open_streams = 0;
        let mut out_fd = |mode: OutputMode, kind: StreamKind| -> Result<OwnedFd, SandboxError> {
            match mode {
                OutputMode::Inherit => match kind {
                    StreamKind::Stdout => std::io::stdout().as_fd_owned(),
                    StreamKind::Stderr => std::io::stderr().as_fd_owned(),
                }
                .map_err(io("duplicating an output stream")),
                OutputMode::Null => null(),
                OutputMode::Capture | OutputMode::Stream => {
                    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| io("creating a pipe")(e.into()))?;
                    open_streams += 1;
                    devshell_vm_exec::spawn_output_reader(
                        std::fs::File::from(read),
                        kind,
                        sender.clone(),
                    );
                    Ok(write)
                }
            }
        };
        let stdout = out_fd(request.stdout, StreamKind::Stdout)?;
        let stderr = out_fd(request.stderr, StreamKind::Stderr)?;
        let Inner::Init { sock, .. } = &self.inner else {
            return Err(SandboxError::Io {
                context: "running in the sandbox".into(),
                source: std::io::Error::other("no init"),
            });
        };
        let mut raw: Vec<RawFd> = vec![stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
        if let Some(cgroups) = &self.run_cgroups {
            raw.extend(cgroups.procs().iter().map(AsRawFd::as_raw_fd));
        }
        let started = Instant::now();
        let iov = [std::io::IoSlice::new(&message)];
        sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| io("sending the run to the sandbox init")(e.into()))?;
        drop((stdin, stdout, stderr));
        // A thread waits for the init's reply.
        let reply_sock = sock
            .try_clone()
            .map_err(io("duplicating the control socket"))?;
        let reply_sender = sender.clone();
        thread::spawn(move || {
            let mut buf = [0_u8; 64];
            let reply =
                match nix::sys::socket::recv(reply_sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(0) | Err(_) => Reply::Gone,
                    Ok(n) => Reply::Bytes(buf[..n].to_vec()),
                };
            let _ = reply_sender.send(Event::Reply(reply));
        });
        drop(sender);

        let deadline = request.timeout.map(|t| started + t);
        let mut stdout_buf = Vec::new();
        let mut stderr_buf = Vec::new();
        let mut forced: Option<Termination> = None;
        let mut ended: Option<Termination> = None;
        let mut drain_until: Option<Instant> = None;
        let mut next_write_check = started + WRITE_POLL;
        let send = |kind: u8, arg: i32| {
            let mut m = [0_u8; 5];
            m[0] = kind;
            m[1..5].copy_from_slice(&arg.to_le_bytes());
            let _ = nix::sys::socket::send(sock.as_raw_fd(), &m, MsgFlags::MSG_NOSIGNAL);
        };
        loop {
            if let Some(t) = ended
                && (open_streams == 0 || drain_until.is_some_and(|d| Instant::now() >= d))
            {
                drop(forward);
                return Ok(ExecOutcome {
                    termination: t,
                    stdout: stdout_buf,
                    stderr: stderr_buf,
                    duration: started.elapsed(),
                });
            }
            if ended.is_none() && forced.is_none() {
                if cancel.is_some_and(CancelHandle::is_cancelled) {
                    forced = Some(Termination::Cancelled);
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    forced = Some(Termination::TimedOut);
                }
                if forced.is_some() {
                    send(child::MSG_KILL, 0);
                    drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                if forward.is_some() {
                    for signal in devshell_vm_exec::take_pending_interrupts() {
                        send(child::MSG_SIGNAL, signal as i32);
                    }
                }
                if let Some(watch) = watch.as_deref_mut()
                    && !watch.tripped
                    && Instant::now() >= next_write_check
                {
                    next_write_check = Instant::now() + WRITE_POLL;
                    if watch.exceeded() {
                        // The tool's own end (SIGKILL) is reported; the limit names why.
                        watch.tripped = true;
                        send(child::MSG_KILL, 0);
                    }
                }
            }
            let now = Instant::now();
            let mut wake = if cancel.is_some() || forward.is_some() {
                TICK
            } else {
                Duration::from_hours(1)
            };
            if watch.as_ref().is_some_and(|w| !w.tripped) && ended.is_none() {
                wake = wake.min(next_write_check.saturating_duration_since(now));
            }
            for limit in [deadline.filter(|_| forced.is_none()), drain_until]
                .into_iter()
                .flatten()
            {
                wake = wake.min(limit.saturating_duration_since(now));
            }
            match events.recv_timeout(wake) {
                Ok(Event::Stream(StreamEvent::Output(kind, chunk))) => {
                    let mode = match kind {
                        StreamKind::Stdout => request.stdout,
                        StreamKind::Stderr => request.stderr,
                    };
                    match (mode, kind) {
                        (OutputMode::Capture, StreamKind::Stdout) => {
                            stdout_buf.extend_from_slice(&chunk);
                        }
                        (OutputMode::Capture, StreamKind::Stderr) => {
                            stderr_buf.extend_from_slice(&chunk);
                        }
                        (OutputMode::Stream, _) => on_output(kind, &chunk),
                        _ => {}
                    }
                }
                Ok(Event::Stream(StreamEvent::Closed)) => open_streams -= 1,
                Ok(Event::Reply(Reply::Bytes(r))) => match r.first() {
                    Some(&child::REPLY_DONE) if r.len() >= 6 => {
                        let status = i32::from_le_bytes([r[1], r[2], r[3], r[4]]);
                        ended = Some(forced.unwrap_or_else(|| termination_of(status)));
                        drain_until = Some(Instant::now() + DRAIN_GRACE);
                    }
                    Some(&child::REPLY_EXEC_FAILED) if r.len() >= 5 => {
                        let errno = i32::from_le_bytes([r[1], r[2], r[3], r[4]]);
                        return Err(SandboxError::Spawn {
                            program: program.to_path_buf(),
                            cwd: cwd.to_path_buf(),
                            source: std::io::Error::from_raw_os_error(errno),
                        });
                    }
                    _ => {
                        return Err(SandboxError::Io {
                            context: "reading the sandbox init's reply".into(),
                            source: std::io::Error::other("malformed reply"),
                        });
                    }
                },
                Ok(Event::Reply(Reply::Gone)) => {
                    return Err(SandboxError::Io {
                        context: format!("running `{}`", program.display()),
                        source: std::io::Error::other("the sandbox init exited during the run"),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    if forced.is_some()
                        && drain_until.is_some_and(|d| Instant::now() >= d)
                        && ended.is_none()
                    {
                        // The init answers a kill promptly; keep waiting for its reply.
                        drain_until = Some(Instant::now() + DRAIN_GRACE);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(SandboxError::Io {
                        context: format!("running `{}`", program.display()),
                        source: std::io::Error::other("lost the sandbox init"),
                    });
                }
            }
        }
    }
}

trait DupOwned {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}

impl<T: std::os::fd::AsFd> DupOwned for T {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

enum Reply {
    Bytes(Vec<u8>),
    Gone,
}

enum Event {
    Stream(StreamEvent),
    Reply(Reply),
}

impl From<StreamEvent> for Event {
    fn from(event: StreamEvent) -> Self {
        Self::Stream(event)
    }
}

fn termination_of(status: i32) -> Termination {
    if libc::WIFEXITED(status) {
        Termination::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Termination::Signaled(libc::WTERMSIG(status))
    } else {
        Termination::Exited(-1)
    }
}

/// The run request: header (kind, argc, envc, number of limits), limits (resource,
/// soft, hard), then NUL-terminated program, cwd, arguments and `KEY=VALUE` entries.
fn encode_run(
    program: &Path,
    cwd: &Path,
    request: &ToolRequest,
    env: &[(OsString, OsString)],
    limits: &[(u32, u64, u64)],
) -> Result<Vec<u8>, SandboxError> {
    let mut m = vec![child::MSG_RUN, 0, 0, 0];
    let argc = 1 + request.args.len();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    m.extend_from_slice(&count(argc).to_le_bytes());
    m.extend_from_slice(&count(env.len()).to_le_bytes());
    m.extend_from_slice(&count(limits.len()).to_le_bytes());
    for &(resource, soft, hard) in limits {
        m.extend_from_slice(&resource.to_le_bytes());
        m.extend_from_slice(&soft.to_le_bytes());
        m.extend_from_slice(&hard.to_le_bytes());
    }
    let mut string = |bytes: &[u8], what: &str| -> Result<(), SandboxError> {
        if bytes.contains(&0) {
            return Err(SandboxError::BadRequest {
                reason: format!("{what} contains a NUL byte"),
            });
        }
        m.extend_from_slice(bytes);
        m.push(0);
        Ok(())
    };
    string(program.as_os_str().as_bytes(), "the program path")?;
    string(cwd.as_os_str().as_bytes(), "the working directory")?;
    string(request.program.as_bytes(), "the program name")?;
    for arg in &request.args {
        string(arg.as_bytes(), "an argument")?;
    }
    for (k, v) in env {
        if k.as_bytes().contains(&b'=') || k.is_empty() {
            continue;
        }
        let mut entry = k.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        string(&entry, "an environment entry")?;
    }
    if m.len() > child::MAX_MESSAGE || argc + env.len() > child::MAX_POINTERS {
        return Err(SandboxError::BadRequest {
            reason: format!(
                "arguments and environment too large ({} bytes, {} entries; at most {} and {})",
                m.len(),
                argc + env.len(),
                child::MAX_MESSAGE,
                child::MAX_POINTERS
            ),
        });
    }
    Ok(m)
}

/// Resolves a program name the way the sandbox will see it: through `path_var`, to an
/// absolute path (paths are the same inside and outside).
///
/// # Errors
/// [`SandboxError::Exec`] when it is not found.
pub fn resolve_program(
    name: &str,
    path_var: Option<&OsStr>,
    cwd: &Path,
) -> Result<PathBuf, SandboxError> {
    devshell_vm_exec::resolve_program(name, path_var, cwd).map_err(SandboxError::Exec)
}
