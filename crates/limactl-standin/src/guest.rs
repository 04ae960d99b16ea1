//! The guest side of `limactl shell`: the relay standing in for ssh/sshd, and the
//! guest root (private mount namespace, binds, `chroot`) the command runs in.

use std::ffi::OsString;
use std::io::{Read as _, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::{Failure, Instance, fail};

/// Runs the guest side the way sshd does and relays its stdio the way ssh does.
///
/// * The guest command runs in a session of its own (`setsid` in [`guest_entry`], as
///   sshd does for a session's command), so killing `limactl`'s process group does not
///   reach it: it sees its stdin close and keeps running — what happens to a guest command under a real
///   `limactl shell` (ssh without a pty, `cmd/limactl/shell.go` L442-L445 of v2.2.0).
/// * Its stdin, stdout and stderr are pipes relayed by this process (standing in for
///   ssh and sshd): when this process dies the guest's stdin reaches end of file.
/// * A guest command killed by a signal sends no exit status: ssh exits 255.
pub(super) fn relay(mut guest: Command) -> Result<ExitCode, Failure> {
    use std::os::unix::process::ExitStatusExt;
    guest
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = guest.spawn().map_err(|e| Failure {
        code: 125,
        message: format!("limactl-standin: cannot run unshare: {e}"),
    })?;
    if let Some(mut to_guest) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_guest);
            // ssh sends EOF on the channel when its stdin ends.
        });
    }
    let copier = |from: Option<Box<dyn std::io::Read + Send>>, stdout: bool| {
        std::thread::spawn(move || {
            if let Some(mut from) = from {
                let mut buf = [0_u8; 8192];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let written = if stdout {
                                let mut out = std::io::stdout().lock();
                                out.write_all(&buf[..n]).and_then(|()| out.flush())
                            } else {
                                std::io::stderr().lock().write_all(&buf[..n])
                            };
                            if written.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        })
    };
    let out = copier(
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        true,
    );
    let err = copier(
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        false,
    );
    let status = child
        .wait()
        .map_err(|e| fail(format!("waiting for the guest: {e}")))?;
    let _ = out.join();
    let _ = err.join();
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        // No `exit-status` from sshd, only `exit-signal`: OpenSSH's client exits 255.
        _ => ExitCode::from(255),
    })
}

pub(super) fn which_unshare() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|dir| dir.join("unshare"))
        .find(|p| p.is_file())
}

/// Inside the private mount namespace: build the guest's root, bind every mount, hide
/// the mounts' host locations, then run the script the way sshd runs a remote command
/// (`$SHELL -c script`) with a clean ssh-like environment.
///
/// The guest root is a tmpfs (on `<instance dir>/rootfs`, mounted only in this
/// namespace) holding a recursive bind of every top-level entry of `/` (symlinks
/// recreated), plus the mount points: so a mount point such as `/workspace` exists only
/// in the namespace and nothing is created in the host's `/`. (A mount point below an
/// existing top-level directory, e.g. `/srv/ws`, is created on the host: it lies inside a
/// bind of that directory.) Each mount's host `location` is then covered by an empty
/// read-only tmpfs in the guest root, so a command that uses a host path instead of the
/// guest path finds nothing there.
pub(super) fn guest_entry(args: &[String]) -> ExitCode {
    let [config, script, tty] = args else {
        eprintln!("limactl-standin __guest: expected CONFIG SCRIPT tty|notty");
        return ExitCode::from(125);
    };
    let inst: Instance = match std::fs::read_to_string(config)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(inst) => inst,
        Err(e) => {
            eprintln!("limactl-standin __guest: {config}: {e}");
            return ExitCode::from(125);
        }
    };
    // sshd runs a session's command as the leader of a new session; this process is a
    // child of the stand-in (not a group leader), so `setsid` succeeds.
    if let Err(e) = nix::unistd::setsid() {
        eprintln!("limactl-standin __guest: setsid: {e}");
        return ExitCode::from(125);
    }
    let root = Path::new(config).with_file_name("rootfs");
    if let Err(e) = prepare_guest_root(&inst, &root) {
        eprintln!(
            "limactl-standin: {e}; the stand-in needs root (CAP_SYS_ADMIN) for its private mount namespace"
        );
        return ExitCode::from(125);
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned());
    let mut command = if tty == "tty" {
        // `ssh -t` when limactl's stdout is a terminal (`cmd/limactl/shell.go` L442-L445
        // of v2.2.0): sshd gives the command a pty, so stderr arrives merged into stdout
        // with `\r\n` line ends. util-linux `script` allocates that pty here and runs
        // `$SHELL -c script` in it.
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-f", "-c"])
            .arg(script)
            .arg("/dev/null");
        c
    } else {
        let mut c = Command::new(&inst.shell);
        c.arg("-c").arg(script);
        c
    };
    let err = command
        .env_clear()
        .env("HOME", &inst.home)
        .env("USER", &user)
        .env("LOGNAME", &user)
        .env("SHELL", &inst.shell)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
        .envs(&inst.env)
        .current_dir(&inst.home)
        .exec();
    eprintln!(
        "limactl-standin: cannot run the guest shell {}: {err}",
        inst.shell
    );
    ExitCode::from(127)
}

/// `path` (absolute) inside `root`.
fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn mount_err(what: String) -> impl FnOnce(nix::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Builds the guest root at `root` and enters it (`chroot`, cwd `/`).
fn prepare_guest_root(inst: &Instance, root: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    std::fs::create_dir_all(root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
    mount(
        Some("devshell-standin-root"),
        root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=755"),
    )
    .map_err(mount_err(format!("mount tmpfs on {}", root.display())))?;
    let entries = std::fs::read_dir("/").map_err(|e| format!("read_dir /: {e}"))?;
    for entry in entries.flatten() {
        let host = entry.path();
        let target = root.join(entry.file_name());
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            let link = std::fs::read_link(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| format!("symlink {}: {e}", target.display()))?;
        } else if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| format!("mkdir {}: {e}", target.display()))?;
            mount(
                Some(&host),
                &target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(mount_err(format!(
                "bind {} at {}",
                host.display(),
                target.display()
            )))?;
        } else if kind.is_file() {
            std::fs::write(&target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
            mount(Some(&host), &target, none, MsFlags::MS_BIND, none)
                .map_err(mount_err(format!("bind {}", host.display())))?;
        }
    }
    for m in &inst.mounts {
        let point = m.guest_point();
        let location = m.host_location();
        let target = in_root(root, &point);
        std::fs::create_dir_all(&target)
            .map_err(|e| format!("cannot create mount point {point}: {e}"))?;
        mount(
            Some(location.as_str()),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(mount_err(format!("bind {location} at {point}")))?;
        if !m.writable {
            mount(
                none,
                &target,
                none,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                none,
            )
            .map_err(mount_err(format!("remount {point} read-only")))?;
        }
    }
    // Hide each location that is not itself a guest path (and holds neither a mount
    // point nor the guest home): a host path used in the guest then finds nothing.
    for m in &inst.mounts {
        let host_location = m.host_location();
        let location = Path::new(&host_location);
        let shadows = |other: &str| {
            let other = Path::new(other);
            other.starts_with(location) || location.starts_with(other)
        };
        let keep = inst.mounts.iter().any(|o| shadows(&o.guest_point()))
            || Path::new(&inst.home).starts_with(location);
        if keep {
            continue;
        }
        let target = in_root(root, &host_location);
        if target.is_dir() {
            mount(
                Some("devshell-standin-hidden"),
                &target,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("mode=555"),
            )
            .map_err(mount_err(format!("hide {host_location}")))?;
        }
    }
    std::os::unix::fs::chroot(root).map_err(|e| format!("chroot {}: {e}", root.display()))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}
