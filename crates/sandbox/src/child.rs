//! Everything that runs in a forked child of the embedding process.
//!
//! The embedding process may have many threads (a test harness, a server). After
//! `fork` only the calling thread exists, and a lock another thread held at that moment
//! (the allocator's, stdout's, the environment's) stays locked forever in the child. So
//! the code here follows the async-signal-safe rule: **no allocation, no std locks, no
//! formatting** — only system calls on data computed before the fork ([`Plan`],
//! [`Buffers`]). That is why some calls go straight to `libc` even where `nix` has a
//! wrapper: the `nix` wrappers for `recvmsg` control messages, `execve` and `readdir`
//! allocate.
//!
//! Why fork without exec (and not exec a helper binary)? The init must live as long as
//! the session, serve many runs and receive file descriptors; a helper binary would have
//! to be found on disk next to every embedding program (tests, the CLI, the sidecar, a
//! library user's program), which is a deployment problem this crate cannot solve for
//! its users. The price is this discipline, kept in this one module.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::fd::RawFd;

/// Largest request (program, cwd, arguments and environment) the init accepts.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;
/// Most arguments plus environment entries in one request.
pub(crate) const MAX_POINTERS: usize = 32 * 1024;
/// Most file descriptors in one request (stdin, stdout, stderr and cgroup files).
pub(crate) const MAX_FDS: usize = 8;

/// Request kinds (embedder → init).
pub(crate) const MSG_RUN: u8 = b'R';
pub(crate) const MSG_SIGNAL: u8 = b'S';
pub(crate) const MSG_KILL: u8 = b'K';
/// Reply kinds (init → embedder).
pub(crate) const REPLY_READY: u8 = b'Y';
pub(crate) const REPLY_SETUP_FAILED: u8 = b'F';
pub(crate) const REPLY_EXEC_FAILED: u8 = b'E';
pub(crate) const REPLY_DONE: u8 = b'D';

/// Setup steps before the mount operations, as reported in `REPLY_SETUP_FAILED`.
pub(crate) const STEP_NAMES: [&str; 13] = [
    "unshare the user, mount, pid, ipc and uts namespaces",
    "deny setgroups in the new user namespace",
    "write the uid map",
    "write the gid map",
    "fork the init into the new pid namespace",
    "make the mount tree private",
    "mount the tmpfs base",
    "switch to the tmpfs base (pivot_root)",
    "switch to the new root (pivot_root)",
    "remount the new root read-only",
    "bring up the loopback interface",
    "apply the Landlock ruleset",
    "apply the seccomp filter (non-Unix sockets refused)",
];
const STEP_UNSHARE: u32 = 0;
const STEP_SETGROUPS: u32 = 1;
const STEP_UID_MAP: u32 = 2;
const STEP_GID_MAP: u32 = 3;
const STEP_FORK: u32 = 4;
const STEP_PRIVATE: u32 = 5;
const STEP_BASE: u32 = 6;
const STEP_PIVOT_BASE: u32 = 7;
const STEP_PIVOT_ROOT: u32 = 8;
const STEP_RO_ROOT: u32 = 9;
const STEP_LOOPBACK: u32 = 10;
/// Step number of the Landlock restriction.
pub(crate) const STEP_LANDLOCK: u32 = 11;
const STEP_SECCOMP: u32 = 12;
/// Mount operation `i` is reported as step `OPS_BASE + i`.
pub(crate) const OPS_BASE: u32 = 100;

/// One mount-tree operation, paths already prefixed with `/oldroot` (sources) and
/// `/newroot` (destinations).
#[derive(Debug)]
pub(crate) enum Op {
    MkDir(CString),
    Touch(CString),
    Bind {
        src: CString,
        dst: CString,
        readonly: bool,
    },
    Tmpfs {
        dst: CString,
        data: CString,
    },
    Proc(CString),
    Symlink {
        target: CString,
        dst: CString,
    },
}

/// Everything the namespace child needs, computed before the fork.
#[derive(Debug)]
pub(crate) struct NsPlan {
    pub flags: c_int,
    pub uid_map: CString,
    pub gid_map: CString,
    pub ops: Vec<Op>,
    pub loopback: bool,
}

/// How the init makes sure nothing outlives a run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reaper {
    /// Pid 1 of its own pid namespace: `kill(-1, SIGKILL)` ends every other process.
    PidNamespace,
    /// A child subreaper: orphans are re-parented to it; it kills its children until none
    /// is left (`/proc/self/task/<pid>/children`).
    Subreaper,
}

/// Buffers the init uses, allocated before the fork.
pub(crate) struct Buffers {
    pub message: Vec<u8>,
    pub pointers: Vec<*const c_char>,
    pub scratch: Vec<u8>,
    /// The stack a tool's child runs on between `clone` and `execve` (see [`start`]).
    pub stack: Vec<u8>,
}

/// Bytes of the tool child's stack: it makes a few system calls on data prepared
/// before the `clone` (glibc's `posix_spawn` gets by with less).
const TOOL_STACK: usize = 256 * 1024;

impl Buffers {
    pub(crate) fn new() -> Self {
        Self {
            message: vec![0; MAX_MESSAGE],
            pointers: vec![std::ptr::null(); MAX_POINTERS + 4],
            scratch: vec![0; 64 * 1024],
            stack: vec![0; TOOL_STACK],
        }
    }
}

/// The Landlock ruleset to apply in the child, if any.
pub(crate) type LandlockRules = Option<landlock::RulesetCreated>;

// ---------------------------------------------------------------------------------------
// Small syscall helpers (no allocation).

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn send_bytes(sock: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is a valid slice for the duration of the call.
    unsafe {
        libc::send(sock, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL);
    }
}

fn report_setup_failure(sock: RawFd, step: u32, err: i32) -> ! {
    let mut reply = [0_u8; 9];
    reply[0] = REPLY_SETUP_FAILED;
    reply[1..5].copy_from_slice(&step.to_le_bytes());
    reply[5..9].copy_from_slice(&err.to_le_bytes());
    send_bytes(sock, &reply);
    exit(1)
}

fn exit(code: c_int) -> ! {
    // SAFETY: `_exit` ends the process without running atexit handlers or destructors,
    // which is what a forked child of a multi-threaded process must do.
    unsafe { libc::_exit(code) }
}

fn check(sock: RawFd, step: u32, result: c_int) {
    if result < 0 {
        report_setup_failure(sock, step, errno());
    }
}

fn write_file(path: &CStr, contents: &CStr) -> c_int {
    // SAFETY: `path` and `contents` are NUL-terminated and live across the calls; the
    // descriptor is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let bytes = contents.to_bytes();
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let saved = errno();
        libc::close(fd);
        if written < 0 {
            *libc::__errno_location() = saved;
            return -1;
        }
        0
    }
}

fn mount(
    src: Option<&CStr>,
    dst: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> c_int {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is either null or a NUL-terminated string alive for the call.
    unsafe { libc::mount(ptr(src), dst.as_ptr(), ptr(fstype), flags, ptr(data).cast()) }
}

/// Keeps `keep` (moved to 3, 4, ...) and `/dev/null` on 0-2; closes everything else, so
/// the long-lived init holds no copy of a descriptor another thread of the embedder had
/// open at the fork (a pipe whose reader would then never see end-of-file).
fn sanitize_fds(keep: &mut [RawFd]) {
    // SAFETY: plain descriptor calls on integers; failures leave descriptors as they are.
    unsafe {
        for (i, fd) in keep.iter_mut().enumerate() {
            let target = 3 + c_int::try_from(i).unwrap_or(0);
            if *fd != target {
                // Move the descriptor above every wanted slot first, then into place.
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
                libc::dup3(high, target, libc::O_CLOEXEC);
                libc::close(high);
                *fd = target;
            }
        }
        let first_free = 3 + u32::try_from(keep.len()).unwrap_or(0);
        libc::syscall(libc::SYS_close_range, first_free, u32::MAX, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for target in 0..3 {
                libc::dup2(null, target);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

/// Drops every capability from the bounding set, so no `execve` (not even of a setuid
/// or file-capability binary, not even as uid 0 in the namespace) gives one back, and
/// sets `no_new_privs`.
fn drop_privileges() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        let mut cap = 0;
        while libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 || errno() != libc::EINVAL {
            cap += 1;
            if cap > 127 {
                break;
            }
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

fn set_parent_death_signal() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
}

// ---------------------------------------------------------------------------------------
// Entry points (called right after fork in the child).

/// The namespace child: unshare, map ids, fork the init into the new pid namespace and
/// wait for it. Never returns.
pub(crate) fn namespace_child(
    sock: RawFd,
    parent: libc::pid_t,
    plan: &NsPlan,
    bufs: &mut Buffers,
) -> ! {
    set_parent_death_signal();
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        exit(1);
    }
    let mut keep = [sock];
    sanitize_fds(&mut keep);
    let sock = keep[0];
    // A process group of its own, so the terminal's job-control signals (Ctrl-C to the
    // foreground group) do not reach the init; not a session of its own, which would
    // put every tool in a scheduler autogroup other than the embedder's (see
    // `tool_child`). The embedder's controlling terminal stays out of reach: the
    // sandbox has no `/dev/tty`, and a tool handed the terminal starts a session.
    // SAFETY: setpgid and unshare take no pointers.
    unsafe {
        libc::setpgid(0, 0);
    }
    // SAFETY: as above.
    check(sock, STEP_UNSHARE, unsafe { libc::unshare(plan.flags) });
    check(
        sock,
        STEP_SETGROUPS,
        write_file(c"/proc/self/setgroups", c"deny"),
    );
    check(
        sock,
        STEP_UID_MAP,
        write_file(c"/proc/self/uid_map", &plan.uid_map),
    );
    check(
        sock,
        STEP_GID_MAP,
        write_file(c"/proc/self/gid_map", &plan.gid_map),
    );
    // SAFETY: this process is single-threaded (a fresh fork child), so forking again is
    // as safe as the first fork; the child continues with the same discipline.
    let init = unsafe { libc::fork() };
    if init < 0 {
        report_setup_failure(sock, STEP_FORK, errno());
    }
    if init == 0 {
        set_parent_death_signal();
        init_in_namespace(sock, plan, bufs);
    }
    // SAFETY: closing our copy of the socket: only the init talks to the embedder.
    unsafe {
        libc::close(sock);
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(init, &raw mut status, 0) };
        if r == init || (r < 0 && errno() != libc::EINTR) {
            break;
        }
    }
    exit(0)
}

/// The Landlock-mode child: a subreaper restricted by `rules`, serving runs. Never returns.
pub(crate) fn landlock_child(
    sock: RawFd,
    parent: libc::pid_t,
    rules: LandlockRules,
    sockets: Option<&seccompiler::BpfProgram>,
    bufs: &mut Buffers,
) -> ! {
    set_parent_death_signal();
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        exit(1);
    }
    // The ruleset descriptor is used (and closed) before the descriptor clean-up.
    if let Some(rules) = rules {
        match rules.restrict_self() {
            Ok(status) if status.ruleset != landlock::RulesetStatus::NotEnforced => {}
            Ok(_) => report_setup_failure(sock, STEP_LANDLOCK, libc::ENOSYS),
            Err(_) => report_setup_failure(sock, STEP_LANDLOCK, errno()),
        }
    }
    // Landlock covers TCP only: without network, a seccomp filter (compiled before the
    // fork; applying it only makes system calls) refuses every socket but Unix ones.
    if let Some(filter) = sockets
        && seccompiler::apply_filter(filter).is_err()
    {
        report_setup_failure(sock, STEP_SECCOMP, errno());
    }
    let mut keep = [sock];
    sanitize_fds(&mut keep);
    let sock = keep[0];
    // SAFETY: integer-only calls.
    unsafe {
        libc::setpgid(0, 0); // not setsid: see `namespace_child`
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    drop_privileges();
    serve(sock, Reaper::Subreaper, bufs)
}

fn init_in_namespace(sock: RawFd, plan: &NsPlan, bufs: &mut Buffers) -> ! {
    let flags = libc::MS_SLAVE | libc::MS_REC;
    check(sock, STEP_PRIVATE, mount(None, c"/", None, flags, None));
    check(
        sock,
        STEP_BASE,
        mount(
            Some(c"tmpfs"),
            c"/tmp",
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"mode=0755"),
        ),
    );
    // SAFETY: NUL-terminated literals; pivot_root through syscall(2) as glibc has no wrapper.
    unsafe {
        check(sock, STEP_PIVOT_BASE, libc::chdir(c"/tmp".as_ptr()));
        check(
            sock,
            STEP_PIVOT_BASE,
            libc::mkdir(c"newroot".as_ptr(), 0o755),
        );
        check(
            sock,
            STEP_PIVOT_BASE,
            libc::mkdir(c"oldroot".as_ptr(), 0o755),
        );
        let r = libc::syscall(
            libc::SYS_pivot_root,
            c"/tmp".as_ptr(),
            c"/tmp/oldroot".as_ptr(),
        );
        check(sock, STEP_PIVOT_BASE, -c_int::from(r < 0));
        check(sock, STEP_PIVOT_BASE, libc::chdir(c"/".as_ptr()));
    }
    check(
        sock,
        STEP_PIVOT_BASE,
        mount(
            Some(c"/newroot"),
            c"/newroot",
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        ),
    );
    for (i, op) in plan.ops.iter().enumerate() {
        let step = OPS_BASE + u32::try_from(i).unwrap_or(u32::MAX - OPS_BASE);
        check(sock, step, apply(op));
    }
    // SAFETY: NUL-terminated literals; pivot_root(".", ".") stacks the old root under the
    // new one, and the lazy unmount then removes it (and the tmpfs base) from view.
    unsafe {
        check(sock, STEP_PIVOT_ROOT, libc::chdir(c"/newroot".as_ptr()));
        let r = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
        check(sock, STEP_PIVOT_ROOT, -c_int::from(r < 0));
        check(
            sock,
            STEP_PIVOT_ROOT,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        );
        check(sock, STEP_PIVOT_ROOT, libc::chdir(c"/".as_ptr()));
    }
    check(
        sock,
        STEP_RO_ROOT,
        mount(
            None,
            c"/",
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        ),
    );
    // SAFETY: sethostname with a valid buffer and length.
    unsafe {
        let name = c"devshell-sandbox".to_bytes();
        libc::sethostname(name.as_ptr().cast(), name.len());
    }
    if plan.loopback {
        check(sock, STEP_LOOPBACK, loopback_up());
    }
    drop_privileges();
    serve(sock, Reaper::PidNamespace, bufs)
}

fn apply(op: &Op) -> c_int {
    match op {
        // SAFETY (both arms): NUL-terminated paths alive for the call.
        Op::MkDir(path) => unsafe {
            let r = libc::mkdir(path.as_ptr(), 0o755);
            if r < 0 && errno() == libc::EEXIST {
                0
            } else {
                r
            }
        },
        Op::Touch(path) => unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                0o644,
            );
            if fd < 0 {
                return -1;
            }
            libc::close(fd);
            0
        },
        Op::Bind { src, dst, readonly } => {
            let r = mount(Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None);
            if r < 0 || !readonly {
                return r;
            }
            remount_readonly(dst)
        }
        Op::Tmpfs { dst, data } => mount(
            Some(c"tmpfs"),
            dst,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(data),
        ),
        Op::Proc(dst) => mount(
            Some(c"proc"),
            dst,
            Some(c"proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        ),
        // SAFETY: NUL-terminated paths alive for the call.
        Op::Symlink { target, dst } => unsafe { libc::symlink(target.as_ptr(), dst.as_ptr()) },
    }
}

/// A read-only remount of a bind mount must keep the flags the kernel locked on the
/// original mount (nosuid, nodev, noexec, atime flags), or it fails with `EPERM` in a
/// user namespace.
fn remount_readonly(dst: &CStr) -> c_int {
    // SAFETY: `st` is a valid out-pointer; `dst` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(dst.as_ptr(), &raw mut st) } < 0 {
        return -1;
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    mount(None, dst, None, flags, None)
}

/// `ip link set lo up` with one ioctl pair.
fn loopback_up() -> c_int {
    // SAFETY: `ifreq` is zero-initialised and its name set within bounds; the socket is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return -1;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = c_char::try_from(*b).unwrap_or(0);
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &raw mut req);
        if r >= 0 {
            req.ifr_ifru.ifru_flags |= i16::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(0);
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &raw mut req);
        }
        let saved = errno();
        libc::close(fd);
        if r < 0 {
            *libc::__errno_location() = saved;
            return -1;
        }
        0
    }
}

// ---------------------------------------------------------------------------------------
// The init: serve runs until the embedder goes away.

struct Run {
    tool: libc::pid_t,
    killed: bool,
}

fn serve(sock: RawFd, reaper: Reaper, bufs: &mut Buffers) -> ! {
    // SAFETY: signal-mask calls on stack-allocated sets; the signalfd is ours.
    let sigfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        libc::signalfd(-1, &raw const set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    send_bytes(sock, &[REPLY_READY]);
    let mut joined = false;
    'serve: loop {
        let mut fds = [-1; MAX_FDS];
        let (len, nfds) = receive(sock, &mut bufs.message, &mut fds);
        if len == 0 {
            kill_all(reaper, 0);
            exit(0);
        }
        if bufs.message[0] != MSG_RUN {
            close_all(&fds[..nfds]);
            continue; // a signal or kill for a run that already ended
        }
        // The first run's cgroup descriptors: the init joins the sandbox's cgroups once
        // and every tool it forks is born in them. (Moving each tool instead costs a
        // cgroup migration per run — tens of milliseconds on a busy machine.)
        if !joined && nfds > 3 {
            for &fd in &fds[3..nfds] {
                // SAFETY: writing one byte from a static buffer to a received descriptor.
                if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } < 0 {
                    let mut reply = [0_u8; 5];
                    reply[0] = REPLY_EXEC_FAILED;
                    reply[1..5].copy_from_slice(&errno().to_le_bytes());
                    close_all(&fds[..nfds]);
                    send_bytes(sock, &reply);
                    continue 'serve;
                }
            }
            joined = true;
        }
        let started = start(
            &bufs.message[..len],
            &fds[..nfds],
            &mut bufs.pointers,
            &mut bufs.stack,
        );
        close_all(&fds[..nfds]);
        let mut run = match started {
            Ok(tool) => Run {
                tool,
                killed: false,
            },
            Err(err) => {
                let mut reply = [0_u8; 5];
                reply[0] = REPLY_EXEC_FAILED;
                reply[1..5].copy_from_slice(&err.to_le_bytes());
                kill_all(reaper, 0);
                send_bytes(sock, &reply);
                continue;
            }
        };
        let status = wait_run(sock, sigfd, reaper, &mut run, &mut bufs.scratch);
        kill_all(reaper, 0);
        let mut reply = [0_u8; 6];
        reply[0] = REPLY_DONE;
        reply[1..5].copy_from_slice(&status.to_le_bytes());
        reply[5] = u8::from(run.killed);
        send_bytes(sock, &reply);
    }
}

fn close_all(fds: &[RawFd]) {
    for &fd in fds {
        // SAFETY: closing descriptors received for this request.
        unsafe {
            libc::close(fd);
        }
    }
}

/// `recvmsg` with `SCM_RIGHTS`, into pre-allocated buffers. Returns (bytes, fds); 0 bytes
/// means the embedder closed its end (or died).
fn receive(sock: RawFd, buf: &mut [u8], fds: &mut [RawFd; MAX_FDS]) -> (usize, usize) {
    // Control buffer for MAX_FDS descriptors, aligned for cmsghdr.
    let mut control = [0_u64; 16];
    loop {
        // SAFETY: every pointer in `msg` points to a live local buffer of the stated size;
        // CMSG_* walk only within `control`.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(sock, &raw mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return (0, 0);
            }
            let mut count = 0;
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    // Read unaligned below: the data of a control message is byte-aligned.
                    #[allow(clippy::cast_ptr_alignment, reason = "read with read_unaligned")]
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let header = libc::CMSG_LEN(0) as usize;
                    let n_fds = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                    for i in 0..n_fds {
                        let fd = data.add(i).read_unaligned();
                        if count < MAX_FDS {
                            fds[count] = fd;
                            count += 1;
                        } else {
                            libc::close(fd);
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
            return (usize::try_from(n).unwrap_or(0), count);
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    let mut a = [0_u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Layout of a run request: see `crate::sandbox::encode_run`.
struct Request<'a> {
    argc: usize,
    envc: usize,
    limits: &'a [u8],
    strings: &'a [u8],
}

fn parse(message: &[u8]) -> Option<Request<'_>> {
    let argc = read_u32(message, 4)? as usize;
    let envc = read_u32(message, 8)? as usize;
    let nlimits = read_u32(message, 12)? as usize;
    let limits_end = 16 + nlimits.checked_mul(20)?;
    if argc + envc > MAX_POINTERS {
        return None;
    }
    Some(Request {
        argc,
        envc,
        limits: message.get(16..limits_end)?,
        strings: message.get(limits_end..)?,
    })
}

/// What the tool child needs, on the init's stack (the child shares the init's memory
/// until it execs).
struct ToolSpawn<'a> {
    err_pipe: RawFd,
    fds: &'a [RawFd],
    limits: &'a [u8],
    cwd: *const c_char,
    program: *const c_char,
    pointers: &'a [*const c_char],
    argc: usize,
}

/// The tool child's entry point after `clone`: never returns (it execs or exits).
extern "C" fn tool_entry(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the `ToolSpawn` that `start` passed to `clone`; the init is
    // suspended (`CLONE_VFORK`) until this child execs or exits, so it stays valid.
    let spawn = unsafe { &*arg.cast::<ToolSpawn<'_>>() };
    tool_child(
        spawn.err_pipe,
        spawn.fds,
        spawn.limits,
        spawn.cwd,
        spawn.program,
        spawn.pointers,
        spawn.argc,
    )
}

/// Starts the tool. Returns its pid, or an errno for a request that could not start.
///
/// The child is made with `clone(CLONE_VM | CLONE_VFORK)` on `stack`, as `posix_spawn`
/// does, not with `fork`: the init was forked from the embedding process and shares its
/// address space copy-on-write, so a `fork` here copied the page tables of everything
/// the embedder held (a sidecar with 700 MB of workspace copies: 40 ms per tool). The
/// child shares the init's memory until it execs, and the init waits meanwhile; the
/// child only makes system calls on data prepared here, with its own signal handlers,
/// descriptor table, limits and working directory (none of `CLONE_SIGHAND`,
/// `CLONE_FILES`, `CLONE_FS` is asked for).
fn start(
    message: &[u8],
    fds: &[RawFd],
    pointers: &mut [*const c_char],
    stack: &mut [u8],
) -> Result<libc::pid_t, i32> {
    let request = parse(message).ok_or(libc::E2BIG)?;
    if fds.len() < 3 {
        return Err(libc::EBADF);
    }
    // Strings: program, cwd, argv..., env..., each NUL-terminated.
    let wanted = 2 + request.argc + request.envc;
    let mut starts = 0;
    let mut at = 0;
    let strings = request.strings;
    let (mut program, mut cwd) = (std::ptr::null(), std::ptr::null());
    let mut argv_i = 0;
    let mut env_i = request.argc + 1;
    while starts < wanted {
        let rest = strings.get(at..).ok_or(libc::EINVAL)?;
        let len = rest.iter().position(|&b| b == 0).ok_or(libc::EINVAL)?;
        let ptr: *const c_char = rest.as_ptr().cast();
        match starts {
            0 => program = ptr,
            1 => cwd = ptr,
            n if n < 2 + request.argc => {
                pointers[argv_i] = ptr;
                argv_i += 1;
            }
            _ => {
                pointers[env_i] = ptr;
                env_i += 1;
            }
        }
        starts += 1;
        at += len + 1;
    }
    pointers[argv_i] = std::ptr::null();
    pointers[env_i] = std::ptr::null();

    let mut pipe = [-1; 2];
    // SAFETY: `pipe` is a valid two-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(errno());
    }
    let spawn = ToolSpawn {
        err_pipe: pipe[1],
        fds,
        limits: request.limits,
        cwd,
        program,
        pointers,
        argc: request.argc,
    };
    // The stack grows down: its top, aligned to 16 bytes.
    let top = stack.as_mut_ptr_range().end;
    let top = top.wrapping_sub(top as usize % 16);
    // SAFETY: the init is single-threaded; `tool_entry` runs on `stack` (unused by
    // anything else while the init is suspended by `CLONE_VFORK`), only makes system
    // calls on `spawn` and the data it points to, and then execs or `_exit`s.
    let pid = unsafe {
        libc::clone(
            tool_entry,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw const spawn).cast_mut().cast(),
        )
    };
    if pid < 0 {
        let err = errno();
        close_all(&pipe);
        return Err(err);
    }
    // SAFETY: reading at most 4 bytes into a local; the write end is closed first so the
    // read ends at the tool's exec (CLOEXEC) or exit.
    unsafe {
        libc::close(pipe[1]);
        let mut err = [0_u8; 4];
        let n = loop {
            let n = libc::read(pipe[0], err.as_mut_ptr().cast(), 4);
            if n >= 0 || errno() != libc::EINTR {
                break n;
            }
        };
        libc::close(pipe[0]);
        if n == 4 {
            let mut status = 0;
            libc::waitpid(pid, &raw mut status, 0);
            return Err(i32::from_le_bytes(err));
        }
    }
    Ok(pid)
}

fn tool_child(
    err_pipe: RawFd,
    fds: &[RawFd],
    limits: &[u8],
    cwd: *const c_char,
    program: *const c_char,
    pointers: &[*const c_char],
    argc: usize,
) -> ! {
    let fail = |err: i32| -> ! {
        let bytes = err.to_le_bytes();
        // SAFETY: writing 4 bytes from a local array.
        unsafe {
            libc::write(err_pipe, bytes.as_ptr().cast(), 4);
        }
        exit(127)
    };
    // SAFETY: integer and local-pointer system calls only, on descriptors received for
    // this run; `pointers` holds NUL-terminated strings and ends with null entries.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
        for signal in [
            libc::SIGPIPE,
            libc::SIGXFSZ,
            libc::SIGXCPU,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
        ] {
            libc::signal(signal, libc::SIG_DFL);
        }
        for (target, &fd) in fds.iter().take(3).enumerate() {
            if libc::dup2(fd, c_int::try_from(target).unwrap_or(0)) < 0 {
                fail(errno());
            }
        }
        // Its own process group (signals and the clean-up address the group). A new
        // session only when it was handed a terminal: then the terminal is not its
        // controlling one (no `TIOCSTI`, no `/dev/tty`, no job-control stops). Otherwise
        // it stays in the embedder's session and so in the embedder's scheduler
        // autogroup: a new session is a new autogroup, and a tool in another autogroup
        // than the process waiting for it waits for its own CPU turn after every wake-up
        // — on a loaded machine that made a no-op `cargo build` 25-40 ms slower
        // (`docs/arch/isolation.md`, "Scheduling").
        if (0..3).any(|fd| libc::isatty(fd) == 1) {
            libc::setsid();
        } else {
            libc::setpgid(0, 0);
        }
        let mut at = 0;
        while let (Some(resource), Some(soft), Some(hard)) = (
            read_u32(limits, at),
            read_u64(limits, at + 4),
            read_u64(limits, at + 12),
        ) {
            let mut current: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(resource as _, &raw mut current);
            let hard = hard.min(current.rlim_max);
            let limit = libc::rlimit {
                rlim_cur: soft.min(hard),
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &raw const limit) < 0 {
                fail(errno());
            }
            at += 20;
        }
        if libc::chdir(cwd) < 0 {
            fail(errno());
        }
        let arguments = pointers.as_ptr();
        let environment = pointers.as_ptr().add(argc + 1);
        libc::execve(program, arguments, environment);
        fail(errno())
    }
}

/// Waits for the tool (reaping every orphan on the way) while serving signal and kill
/// requests. Returns the tool's wait status.
fn wait_run(sock: RawFd, sigfd: RawFd, reaper: Reaper, run: &mut Run, scratch: &mut [u8]) -> i32 {
    loop {
        // Reap whatever has ended.
        loop {
            let mut status = 0;
            // SAFETY: valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
            if pid == run.tool {
                return status;
            }
            if pid < 0 && errno() == libc::ECHILD {
                // No child left at all: the tool is gone (reaped elsewhere).
                return libc::SIGKILL;
            }
            if pid <= 0 {
                break;
            }
        }
        let mut polls = [
            libc::pollfd {
                fd: sock,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `polls` is a valid array of two pollfd.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), 2, 1000) };
        if n <= 0 {
            continue;
        }
        if polls[1].revents != 0 {
            // Drain the signalfd; the reap loop above does the rest.
            // SAFETY: reading into the scratch buffer within its length.
            unsafe { while libc::read(sigfd, scratch.as_mut_ptr().cast(), 128 * 8) > 0 {} }
        }
        if polls[0].revents != 0 {
            let mut message = [0_u8; 8];
            // SAFETY: receiving at most 8 bytes into a local array.
            let n = unsafe { libc::recv(sock, message.as_mut_ptr().cast(), 8, 0) };
            if n <= 0 {
                kill_all(reaper, run.tool);
                exit(0);
            }
            match message[0] {
                MSG_KILL => {
                    run.killed = true;
                    if let Some(status) = kill_all(reaper, run.tool) {
                        return status;
                    }
                }
                MSG_SIGNAL => {
                    let signal =
                        read_u32(&message, 1).map_or(0, |s| c_int::try_from(s).unwrap_or(0));
                    // SAFETY: signalling the tool's process group (it called setsid).
                    unsafe {
                        libc::kill(-run.tool, signal);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Kills every process the runs left behind and reaps them; returns the wait status of
/// `tool` if it was among them.
fn kill_all(reaper: Reaper, tool: libc::pid_t) -> Option<i32> {
    match reaper {
        Reaper::PidNamespace => {
            let mut tool_status = None;
            // SAFETY: as pid 1 of the namespace, kill(-1) reaches every other process in
            // it (and nothing outside); then reap until no child is left.
            unsafe {
                libc::kill(-1, libc::SIGKILL);
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &raw mut status, 0);
                    if pid == tool && tool > 0 {
                        tool_status = Some(status);
                    }
                    if pid < 0 && errno() != libc::EINTR {
                        break;
                    }
                }
            }
            tool_status
        }
        Reaper::Subreaper => kill_children(tool),
    }
}

/// Subreaper clean-up: kill every child (orphans of the tool are re-parented to us),
/// reap, and repeat until no child is left.
fn kill_children(tool: libc::pid_t) -> Option<i32> {
    let mut tool_status = None;
    let mut path = [0_u8; 64];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut len = prefix.len() + write_decimal(&mut path[prefix.len()..], pid);
    let suffix = b"/children\0";
    path[len..len + suffix.len()].copy_from_slice(suffix);
    len += suffix.len();
    let _ = len;
    let mut buf = [0_u8; 4096];
    for _ in 0..10_000 {
        let mut any = false;
        // SAFETY: `path` is NUL-terminated; reads stay within `buf`.
        unsafe {
            let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                libc::close(fd);
                let n = usize::try_from(n).unwrap_or(0);
                let mut value: libc::pid_t = 0;
                let mut digits = false;
                for &b in &buf[..n] {
                    if b.is_ascii_digit() {
                        value = value * 10 + libc::pid_t::from(b - b'0');
                        digits = true;
                    } else if digits {
                        libc::kill(value, libc::SIGKILL);
                        any = true;
                        value = 0;
                        digits = false;
                    }
                }
                if digits {
                    libc::kill(value, libc::SIGKILL);
                    any = true;
                }
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(-1, &raw mut status, libc::WNOHANG);
                if r > 0 {
                    if r == tool && tool > 0 {
                        tool_status = Some(status);
                    }
                    any = true;
                    continue;
                }
                if r < 0 && errno() == libc::ECHILD && !any {
                    return tool_status;
                }
                break;
            }
            if any {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                };
                libc::nanosleep(&raw const pause, std::ptr::null_mut());
            } else {
                // Children exist but none listed and none reaped yet: wait for one.
                if libc::waitpid(-1, &raw mut status, 0) == tool && tool > 0 {
                    tool_status = Some(status);
                }
            }
        }
    }
    tool_status
}

fn write_decimal(out: &mut [u8], value: libc::pid_t) -> usize {
    let mut digits = [0_u8; 12];
    let mut n = 0;
    let mut v = value.unsigned_abs();
    loop {
        digits[n] = b'0' + u8::try_from(v % 10).unwrap_or(0);
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    n
}
