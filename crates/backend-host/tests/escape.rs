//! The escape suite: real programs run through a host session with isolation on (the
//! default, `auto`) try to get out, and every attempt must be held — and the session must
//! stay usable afterwards. Run as root by `cargo test`, and every case also as `nobody`:
//! the shell cases through `runuser -u nobody` (`every_shell_case_is_held_as_nobody`),
//! the cargo cases (build script cut off from the network, a registry dependency built
//! under `fetch`, `cargo run` and `cargo test` confined) in a private mount namespace
//! where `nobody` can reach the toolchain root installed under `/root`
//! (`every_cargo_case_is_held_as_nobody`).

mod common;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::{Limits, NetworkPolicy, VmConfig};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_sandbox::{Effective, LimitHit};
use devshell_vm_sync::ToolOutcome;
use devshell_vm_vfs::Vfs;

/// A world-traversable scratch directory (so `nobody` can use it as its export base).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("devshell-escape-")
        .tempdir()
        .expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

fn config(base: &Path, limits: Limits) -> VmConfig {
    VmConfig {
        limits,
        ..common::config(base)
    }
}

fn project(vfs: &mut Vfs) {
    vfs.mkdir("/p").expect("mkdir");
    vfs.write_file("/p/README", "project\n").expect("write");
}

fn sh(session: &mut HostSandboxSession, vfs: &mut Vfs, script: &str) -> ToolOutcome {
    let request = ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .timeout(Some(Duration::from_mins(1)));
    session
        .run_tool(vfs, "/p", &request)
        .unwrap_or_else(|err| panic!("sh -c {script:?}: {err}"))
}

fn text(outcome: &ToolOutcome) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&outcome.exec.stdout),
        String::from_utf8_lossy(&outcome.exec.stderr)
    )
}

/// The session still runs a tool and syncs its output back.
fn still_usable(session: &mut HostSandboxSession, vfs: &mut Vfs) {
    let outcome = sh(session, vfs, "echo fine > after.txt");
    assert!(
        outcome.exec.success(),
        "session unusable: {}",
        text(&outcome)
    );
    assert_eq!(
        vfs.read_file("/p/after.txt").expect("pulled").as_ref(),
        b"fine\n"
    );
}

fn confined(session: &HostSandboxSession) -> Effective {
    session
        .last_run()
        .expect("a run happened")
        .mechanisms
        .isolation
}

/// Host processes whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("pgrep") {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

fn wait_until_gone(marker: &str) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = host_processes_with(marker);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- cases without a toolchain (root and nobody) -------------------------------------

fn secrets_are_unreadable(base: &Path) {
    let home = base.join("caller-home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    let ssh_secret = home.join(".ssh/id_sentinel");
    std::fs::write(&ssh_secret, "SENTINEL-SSH-SECRET\n").expect("write");
    let root_secret = PathBuf::from(format!("/root/devshell-sentinel-{}", std::process::id()));
    let root_secret_written = std::fs::write(&root_secret, "SENTINEL-ROOT-SECRET\n").is_ok();
    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    vfs.symlink(ssh_secret.to_str().expect("utf-8"), "/p/leak")
        .expect("symlink");
    vfs.symlink(root_secret.to_str().expect("utf-8"), "/p/leak-root")
        .expect("symlink");
    let outcome = sh(
        &mut session,
        &mut vfs,
        &format!(
            "cat {} ; cat {} ; cat leak ; cat leak-root ; ls -a /root ; ls {}",
            ssh_secret.display(),
            root_secret.display(),
            home.display()
        ),
    );
    let out = text(&outcome);
    assert!(!out.contains("SENTINEL"), "a secret leaked: {out}");
    assert_ne!(confined(&session), Effective::Off);
    still_usable(&mut session, &mut vfs);
    if root_secret_written {
        std::fs::remove_file(&root_secret).expect("cleanup");
    }
}

fn writes_stay_in_staging(base: &Path) {
    let home = base.join("caller-home-w");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut other = HostSandboxSession::new(&config(base, Limits::default()));
    let mut other_vfs = Vfs::new();
    project(&mut other_vfs);
    let _ = sh(&mut other, &mut other_vfs, "true");
    let other_staging = other.staging_dir().expect("other staging").to_path_buf();

    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let marker = format!("escape-{}", std::process::id());
    let targets = [
        PathBuf::from("/tmp").join(&marker),
        home.join(&marker),
        other_staging.join(&marker),
        base.join(&marker),
    ];
    let script = targets
        .iter()
        .map(|t| format!("echo x > {}", t.display()))
        .collect::<Vec<_>>()
        .join(" ; ");
    let outcome = sh(&mut session, &mut vfs, &script);
    for target in &targets {
        assert!(
            !target.exists(),
            "the tool wrote {} outside its staging tree ({})",
            target.display(),
            text(&outcome)
        );
    }
    still_usable(&mut session, &mut vfs);
}

fn host_processes_are_out_of_reach(base: &Path) {
    let mut sentinel = Command::new("sleep")
        .arg("3141")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sentinel");
    let pid = sentinel.id();
    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let outcome = sh(
        &mut session,
        &mut vfs,
        &format!("kill -9 {pid}; kill -9 -1; ls /proc; cat /proc/{pid}/environ; echo done"),
    );
    let out = text(&outcome);
    assert!(
        sentinel.try_wait().expect("wait").is_none(),
        "the tool killed a host process: {out}"
    );
    if confined(&session) == Effective::Namespaces {
        let listed = out.lines().any(|l| l.trim() == pid.to_string());
        assert!(
            !listed,
            "host pid {pid} visible in the sandbox's /proc: {out}"
        );
    }
    still_usable(&mut session, &mut vfs);
    sentinel.kill().expect("kill sentinel");
    sentinel.wait().expect("reap sentinel");
}

fn mount_is_refused(base: &Path) {
    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let outcome = sh(
        &mut session,
        &mut vfs,
        "mkdir -p m && mount -t tmpfs none m && echo MOUNTED; mount --bind / m && echo MOUNTED; grep -c . /proc/self/status >/dev/null",
    );
    let out = text(&outcome);
    assert!(
        !out.contains("MOUNTED"),
        "the tool mounted something: {out}"
    );
    still_usable(&mut session, &mut vfs);
}

fn nothing_outlives_the_run(base: &Path) {
    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let marker = "2718";
    let outcome = sh(
        &mut session,
        &mut vfs,
        &format!(
            "setsid sh -c '(sleep {marker} &) ; sleep {marker}' >/dev/null 2>&1 & (sleep {marker} &) ; echo started"
        ),
    );
    assert!(text(&outcome).contains("started"));
    let left = wait_until_gone(&format!("sleep {marker}"));
    assert!(left.is_empty(), "processes outlived the run: {left:?}");
    still_usable(&mut session, &mut vfs);
}

fn fork_bomb_is_held(base: &Path) {
    let limits = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    let mut session = HostSandboxSession::new(&config(base, limits));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let request = ToolRequest::new("sh", ["-c", "b() { b & b & wait; }; b"])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .timeout(Some(Duration::from_secs(5)));
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("ran");
    let report = session.last_run().expect("report");
    if report.mechanisms.pids == devshell_vm_sandbox::Enforcement::Cgroup {
        assert_eq!(
            report.limit,
            Some(LimitHit::Pids),
            "{:?}",
            outcome.exec.termination
        );
    }
    assert!(wait_until_gone("b() { b & b & wait; }").is_empty());
    still_usable(&mut session, &mut vfs);
}

fn memory_bomb_is_held(base: &Path) {
    let limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    let mut session = HostSandboxSession::new(&config(base, limits));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let outcome = sh(
        &mut session,
        &mut vfs,
        "perl -e '$x = \"a\" x (1 << 30); print length($x), \"\\n\"'",
    );
    assert!(
        !outcome.exec.success(),
        "a 1 GiB allocation succeeded under 64 MiB: {}",
        text(&outcome)
    );
    let report = session.last_run().expect("report");
    if report.mechanisms.memory == devshell_vm_sandbox::Enforcement::Cgroup {
        assert_eq!(report.limit, Some(LimitHit::Memory), "{}", text(&outcome));
    }
    still_usable(&mut session, &mut vfs);
}

fn endless_writer_is_held(base: &Path) {
    let limits = Limits {
        write: Some(1 << 20),
        ..Limits::default()
    };
    let mut session = HostSandboxSession::new(&config(base, limits));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let request = ToolRequest::new("sh", ["-c", "exec yes > big"])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .timeout(Some(Duration::from_secs(30)));
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("ran");
    assert_eq!(
        outcome.exec.termination,
        Termination::Signaled(libc_sigxfsz())
    );
    assert_eq!(
        session.last_run().expect("report").limit,
        Some(LimitHit::FileSize)
    );
    let size = vfs.read_file("/p/big").expect("pulled").len();
    assert!(size <= 1 << 20, "wrote {size} bytes past a 1 MiB limit");
    still_usable(&mut session, &mut vfs);
}

/// A tool writing without end across many small files (each far below the per-file
/// cap) is stopped by the write limit on the run's total, and the outcome names it.
fn endless_writer_across_files_is_held(base: &Path) {
    // The limit counts writes to disk-backed files; on a tmpfs export base the staging
    // tree's writes are bounded by the memory limit instead (docs/arch/isolation.md).
    let fs = nix::sys::statfs::statfs(base).expect("statfs of the scratch dir");
    assert_ne!(
        fs.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "this case needs a disk-backed TMPDIR ({} is tmpfs)",
        base.display()
    );
    let limit = 4 << 20;
    let limits = Limits {
        write: Some(limit),
        ..Limits::default()
    };
    let mut session = HostSandboxSession::new(&config(base, limits));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let script = "i=0; while :; do head -c 65536 /dev/zero > f$i || exit 3; i=$((i+1)); done";
    let request = ToolRequest::new("sh", ["-c", script])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .timeout(Some(Duration::from_mins(2)));
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("ran");
    assert_eq!(
        outcome.exec.termination,
        Termination::Signaled(nix::sys::signal::Signal::SIGKILL as i32),
        "{}",
        text(&outcome)
    );
    let report = session.last_run().expect("report");
    assert_eq!(report.limit, Some(LimitHit::Written));
    assert_eq!(
        report.mechanisms.write,
        devshell_vm_sandbox::Enforcement::Watched
    );
    let files = vfs.list_dir("/p").expect("listed");
    let written: usize = files
        .iter()
        .filter(|entry| entry.name.starts_with('f'))
        .map(|entry| {
            let path = format!("/p/{}", entry.name);
            vfs.read_file(&path).expect("pulled").len()
        })
        .sum();
    assert!(
        written > 1 << 20,
        "only {written} bytes in {} files before the stop",
        files.len()
    );
    println!(
        "write limit {limit}: stopped after {written} bytes in {} files",
        files.len()
    );
    still_usable(&mut session, &mut vfs);
}

fn libc_sigxfsz() -> i32 {
    nix::sys::signal::Signal::SIGXFSZ as i32
}

fn ptrace_is_refused(base: &Path) {
    let mut sentinel = Command::new("sleep")
        .arg("3142")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sentinel");
    let pid = sentinel.id();
    let mut session = HostSandboxSession::new(&config(base, Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    vfs.write_file(
        "/p/trace.c",
        "#include <stdio.h>\n#include <stdlib.h>\n#include <sys/ptrace.h>\nint main(int c, char **v) { long r = ptrace(PTRACE_ATTACH, atoi(v[1]), 0, 0); printf(r == 0 ? \"ATTACHED\\n\" : \"refused\\n\"); return 0; }\n",
    )
    .expect("write");
    let outcome = sh(
        &mut session,
        &mut vfs,
        &format!("cc -o trace trace.c && ./trace {pid} && ./trace 1"),
    );
    let out = text(&outcome);
    assert!(out.contains("refused"), "the tracer did not run: {out}");
    if confined(&session) == Effective::Landlock {
        assert!(!out.contains("ATTACHED"), "ptrace attached: {out}");
    } else {
        // Pid 1 is our init; the host pid does not exist in the namespace.
        assert!(
            !out.starts_with("ATTACHED"),
            "ptrace of the host pid attached: {out}"
        );
    }
    still_usable(&mut session, &mut vfs);
    sentinel.kill().expect("kill sentinel");
    sentinel.wait().expect("reap sentinel");
}

fn shell_cases(base: &Path) {
    secrets_are_unreadable(base);
    writes_stay_in_staging(base);
    host_processes_are_out_of_reach(base);
    mount_is_refused(base);
    nothing_outlives_the_run(base);
    fork_bomb_is_held(base);
    memory_bomb_is_held(base);
    endless_writer_is_held(base);
    endless_writer_across_files_is_held(base);
    ptrace_is_refused(base);
    kill_9_leaves_nothing(base);
}

#[test]
fn secrets_in_home_ssh_and_root_and_symlinks_to_them_are_unreadable() {
    secrets_are_unreadable(scratch().path());
}

#[test]
fn writes_outside_staging_tmp_home_and_other_sessions_are_held() {
    writes_stay_in_staging(scratch().path());
}

#[test]
fn host_processes_can_be_neither_listed_nor_killed() {
    host_processes_are_out_of_reach(scratch().path());
}

#[test]
fn mount_is_refused_inside_the_sandbox() {
    mount_is_refused(scratch().path());
}

#[test]
fn setsid_and_double_fork_do_not_outlive_the_run() {
    nothing_outlives_the_run(scratch().path());
}

#[test]
fn a_fork_bomb_is_held_by_the_pids_limit() {
    fork_bomb_is_held(scratch().path());
}

#[test]
fn a_memory_bomb_is_held_by_the_memory_limit() {
    memory_bomb_is_held(scratch().path());
}

#[test]
fn an_endless_writer_is_stopped_by_the_write_limit() {
    endless_writer_is_held(scratch().path());
}

#[test]
fn an_endless_writer_across_many_files_is_stopped_by_the_write_total() {
    endless_writer_across_files_is_held(scratch().path());
}

#[test]
fn ptrace_of_a_host_process_is_refused() {
    ptrace_is_refused(scratch().path());
}

/// Run by [`every_shell_case_is_held_as_nobody`] as `nobody` (not on its own).
#[test]
#[ignore = "runs as nobody, started by every_shell_case_is_held_as_nobody"]
fn nobody_suite() {
    assert!(
        !nix::unistd::geteuid().is_root(),
        "started as root: this suite must run as nobody"
    );
    let base = scratch();
    shell_cases(base.path());
}

#[test]
fn every_shell_case_is_held_as_nobody() {
    let base = scratch();
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&exe)
        .args([
            "--ignored",
            "--exact",
            "nobody_suite",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOME", base.path())
        .output()
        .expect("runuser -u nobody (util-linux) must be installed");
    assert_suite_passed(&output, "nobody_suite");
}

/// The ignored `suite` ran (as `nobody`) and passed; its log is printed.
fn assert_suite_passed(output: &std::process::Output, suite: &str) {
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{suite} as nobody: {log}");
    assert!(log.contains("1 passed"), "{suite} did not run: {log}");
    println!("{log}");
}

// --- kill -9 of the embedding process -----------------------------------------------

/// The sleep length that marks the killed embedder's tool processes: one as root, another
/// as `nobody`, so the two runs of the case never count each other's processes.
fn kill_marker_seconds() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        "1618"
    } else {
        "1619"
    }
}

/// Started by [`kill_9_leaves_nothing`] as a separate process.
#[test]
#[ignore = "an embedding process, killed with -9 by kill_9_of_the_embedding_process_leaves_nothing"]
fn embedder_to_be_killed() {
    let marker = kill_marker_seconds();
    let base = scratch();
    let mut session = HostSandboxSession::new(&config(base.path(), Limits::default()));
    let mut vfs = Vfs::new();
    project(&mut vfs);
    let _ = sh(
        &mut session,
        &mut vfs,
        &format!("setsid sh -c 'sleep {marker} & sleep {marker}' & sleep {marker}"),
    );
}

fn kill_9_leaves_nothing(base: &Path) {
    let seconds = kill_marker_seconds();
    let marker = format!("sleep {seconds}");
    let exe = std::env::current_exe().expect("test binary");
    // The killed embedder cannot remove its own temp dirs: they go in one of ours.
    let embedder_tmp = base.join("embedder-tmp");
    std::fs::create_dir(&embedder_tmp).expect("mkdir");
    let mut embedder = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "embedder_to_be_killed",
            "--nocapture",
        ])
        .env("TMPDIR", &embedder_tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("embedder");
    let until = Instant::now() + Duration::from_secs(30);
    while host_processes_with(&marker).len() < 3 {
        assert!(Instant::now() < until, "the tool never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    embedder.kill().expect("kill -9");
    embedder.wait().expect("reap");
    let left = wait_until_gone(&marker);
    assert!(
        left.is_empty(),
        "tool processes survived kill -9 of the embedder: {left:?}"
    );
}

#[test]
fn kill_9_of_the_embedding_process_leaves_nothing() {
    kill_9_leaves_nothing(scratch().path());
}

// --- cargo: build.rs, network, registry dependencies (as root, and as nobody below)

fn cargo_project(vfs: &mut Vfs, build_rs: &str, deps: &str) {
    vfs.mkdir("/c/src").expect("mkdir");
    vfs.write_file(
        "/c/Cargo.toml",
        format!("[package]\nname = \"c\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n{deps}"),
    )
    .expect("write");
    vfs.write_file("/c/build.rs", build_rs).expect("write");
    vfs.write_file(
        "/c/src/main.rs",
        "fn main() { println!(\"built and ran\"); }\n",
    )
    .expect("write");
}

fn cargo(session: &mut HostSandboxSession, vfs: &mut Vfs, args: &[&str]) -> ToolOutcome {
    let request = ToolRequest::new("cargo", args.iter().copied())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .timeout(Some(Duration::from_mins(10)));
    session
        .run_tool(vfs, "/c", &request)
        .unwrap_or_else(|err| panic!("cargo {args:?}: {err}"))
}

fn build_rs_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let build_rs = format!(
        r#"use std::net::{{TcpStream, ToSocketAddrs}};
fn main() {{
    let host = TcpStream::connect(("127.0.0.1", {port})).is_ok();
    let net = ("index.crates.io", 443).to_socket_addrs().ok()
        .and_then(|mut a| a.next())
        .map(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok())
        .unwrap_or(false);
    println!("cargo::warning=host-loopback={{host}} network={{net}}");
}}
"#
    );
    let base = scratch();
    let cfg = VmConfig {
        network: NetworkPolicy::Fetch,
        ..config(base.path(), Limits::default())
    };
    let mut session = HostSandboxSession::new(&cfg);
    let mut vfs = Vfs::new();
    cargo_project(&mut vfs, &build_rs, "");
    let outcome = cargo(&mut session, &mut vfs, &["run"]);
    let out = text(&outcome);
    assert!(outcome.exec.success(), "{out}");
    assert!(out.contains("host-loopback=false network=false"), "{out}");
    assert!(out.contains("built and ran"), "{out}");
    match listener.accept() {
        Err(err) if err.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the build script reached the host's loopback listener: {other:?}"),
    }
    assert_eq!(confined(&session), Effective::Namespaces);
}

/// A sparse cargo registry served on the host's loopback (no network needed): one crate,
/// `dvreg 0.1.0`, packed with `tar` and checksummed with `sha256sum`.
struct LocalRegistry {
    port: u16,
    _dir: tempfile::TempDir,
}

fn http_reply(stream: &mut std::net::TcpStream, status: &str, body: &[u8]) {
    use std::io::Write;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

impl LocalRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("dvreg-0.1.0");
        std::fs::create_dir_all(src.join("src")).expect("mkdir");
        std::fs::write(
            src.join("Cargo.toml"),
            "[package]\nname = \"dvreg\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .expect("write");
        std::fs::write(src.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n").expect("write");
        let crate_file = dir.path().join("dvreg-0.1.0.crate");
        let status = Command::new("tar")
            .arg("czf")
            .arg(&crate_file)
            .arg("-C")
            .arg(dir.path())
            .arg("dvreg-0.1.0")
            .status()
            .expect("tar must be installed");
        assert!(status.success());
        let sum = Command::new("sha256sum")
            .arg(&crate_file)
            .output()
            .expect("sha256sum (coreutils)");
        let cksum = String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .expect("a checksum")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("registry listener");
        let port = listener.local_addr().expect("addr").port();
        let config = format!("{{\"dl\":\"http://127.0.0.1:{port}/dl\"}}");
        let entry = format!(
            "{{\"name\":\"dvreg\",\"vers\":\"0.1.0\",\"deps\":[],\"cksum\":\"{cksum}\",\"features\":{{}},\"yanked\":false}}\n"
        );
        let body = std::fs::read(&crate_file).expect("crate");
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                        break;
                    }
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                match path.as_str() {
                    "/index/config.json" => http_reply(&mut stream, "200 OK", config.as_bytes()),
                    "/index/dv/re/dvreg" => http_reply(&mut stream, "200 OK", entry.as_bytes()),
                    "/dl/dvreg/0.1.0/download" => http_reply(&mut stream, "200 OK", &body),
                    _ => http_reply(&mut stream, "404 Not Found", b""),
                }
            }
        });
        Self { port, _dir: dir }
    }
}

fn registry_dependency_builds() {
    let registry = LocalRegistry::start();
    let base = scratch();
    // A cargo home of its own (the toolchain's bin linked in), so the test registry's
    // cache does not land in the caller's.
    let real = VmConfig::from_env()
        .expect("config")
        .cargo_home_dir()
        .expect("a cargo home");
    let cargo_home = base.path().join("cargo-home");
    std::fs::create_dir_all(cargo_home.join("registry")).expect("mkdir");
    std::os::unix::fs::symlink(real.join("bin"), cargo_home.join("bin")).expect("link");
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        cargo_home.join("bin").display()
    );
    let cfg = VmConfig {
        network: NetworkPolicy::Fetch,
        cargo_home: Some(cargo_home.clone()),
        path: Some(path.into()),
        ..config(base.path(), Limits::default())
    };
    let mut session = HostSandboxSession::new(&cfg);
    let mut vfs = Vfs::new();
    cargo_project(
        &mut vfs,
        "fn main() {}\n",
        "dvreg = { version = \"0.1\", registry = \"dvlocal\" }\n",
    );
    vfs.write_file(
        "/c/src/main.rs",
        "fn main() { println!(\"answer {}\", dvreg::answer()); }\n#[test]\nfn t() { assert_eq!(dvreg::answer(), 42); }\n",
    )
    .expect("write");
    let index = format!("sparse+http://127.0.0.1:{}/index/", registry.port);
    let cargo_with_registry = |session: &mut HostSandboxSession, vfs: &mut Vfs, sub: &str| {
        let request = ToolRequest::new("cargo", [sub])
            .env("CARGO_REGISTRIES_DVLOCAL_INDEX", index.clone())
            .stdout(OutputMode::Capture)
            .stderr(OutputMode::Capture)
            .timeout(Some(Duration::from_mins(10)));
        session
            .run_tool(vfs, "/c", &request)
            .unwrap_or_else(|err| panic!("cargo {sub}: {err}"))
    };
    let outcome = cargo_with_registry(&mut session, &mut vfs, "run");
    assert!(outcome.exec.success(), "{}", text(&outcome));
    assert!(String::from_utf8_lossy(&outcome.exec.stdout).contains("answer 42"));
    assert!(
        vfs.exists("/c/Cargo.lock"),
        "the fetch phase's lockfile came back"
    );
    let outcome = cargo_with_registry(&mut session, &mut vfs, "test");
    assert!(outcome.exec.success(), "{}", text(&outcome));
    assert_eq!(confined(&session), Effective::Namespaces);
    assert!(
        cargo_home.join("registry/cache").exists(),
        "the fetch phase filled the registry cache"
    );
}

fn offline_failure_is_clear() {
    let base = scratch();
    let cfg = VmConfig {
        network: NetworkPolicy::Off,
        ..config(base.path(), Limits::default())
    };
    let mut session = HostSandboxSession::new(&cfg);
    let mut vfs = Vfs::new();
    cargo_project(
        &mut vfs,
        "fn main() {}\n",
        "not-a-crate-devshell-xyz = \"1\"\n",
    );
    let outcome = cargo(&mut session, &mut vfs, &["build"]);
    assert!(!outcome.exec.success());
    assert!(text(&outcome).contains("offline"), "{}", text(&outcome));
}

fn failing_fetch_names_the_phase() {
    let registry = LocalRegistry::start();
    let base = scratch();
    let cfg = VmConfig {
        network: NetworkPolicy::Fetch,
        ..config(base.path(), Limits::default())
    };
    let mut session = HostSandboxSession::new(&cfg);
    let mut vfs = Vfs::new();
    cargo_project(
        &mut vfs,
        "fn main() {}\n",
        "not-in-the-registry = { version = \"1\", registry = \"dvlocal\" }\n",
    );
    let request = ToolRequest::new("cargo", ["build"])
        .env(
            "CARGO_REGISTRIES_DVLOCAL_INDEX",
            format!("sparse+http://127.0.0.1:{}/index/", registry.port),
        )
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    let err = session
        .run_tool(&mut vfs, "/c", &request)
        .expect_err("fetch must fail");
    let chain = devshell_vm_test_support::chain(&err);
    assert!(chain.contains("fetch phase"), "{chain}");
    assert!(chain.contains("not-in-the-registry"), "{chain}");
    still_usable_cargo(&mut session, &mut vfs);
}

/// After a failed fetch the session still runs tools.
fn still_usable_cargo(session: &mut HostSandboxSession, vfs: &mut Vfs) {
    let request = ToolRequest::new("sh", ["-c", "echo ok"])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    let outcome = session.run_tool(vfs, "/c", &request).expect("runs");
    assert!(outcome.exec.success());
}

fn cargo_cases() {
    build_rs_is_cut_off();
    registry_dependency_builds();
    offline_failure_is_clear();
    failing_fetch_names_the_phase();
}

#[test]
fn build_rs_reaches_neither_host_loopback_nor_the_network_under_fetch() {
    build_rs_is_cut_off();
}

#[test]
fn a_registry_dependency_builds_under_fetch_and_tests_run_confined() {
    registry_dependency_builds();
}

#[test]
fn under_network_off_a_registry_dependency_is_a_clear_offline_failure() {
    offline_failure_is_clear();
}

#[test]
fn a_failing_fetch_phase_is_an_error_naming_the_phase() {
    failing_fetch_names_the_phase();
}

/// Run by [`every_cargo_case_is_held_as_nobody`] as `nobody` (not on its own).
#[test]
#[ignore = "runs as nobody, started by every_cargo_case_is_held_as_nobody"]
fn nobody_cargo_suite() {
    assert!(
        !nix::unistd::geteuid().is_root(),
        "started as root: this suite must run as nobody"
    );
    cargo_cases();
}

/// The cargo cases as `nobody`, with root's toolchain reachable through a private mount
/// namespace (`devshell_vm_test_support::nobody`); `nobody` gets a cargo home of its own
/// for the fetch phase's registry cache.
#[test]
fn every_cargo_case_is_held_as_nobody() {
    let config = VmConfig::from_env().expect("config");
    let rustup_home = config.rustup_home_dir().expect("a rustup home");
    let cargo_home = config.cargo_home_dir().expect("a cargo home");
    let base = scratch();
    let exe = std::env::current_exe().expect("test binary");
    let output = devshell_vm_test_support::nobody::run_as_nobody_with_toolchain(
        devshell_vm_test_support::nobody::NobodyRun {
            rustup_home: &rustup_home,
            cargo_home: &cargo_home,
            scratch: base.path(),
        },
        &exe,
        &[
            "--ignored",
            "--exact",
            "nobody_cargo_suite",
            "--nocapture",
            "--test-threads=1",
        ],
        &[],
    );
    assert_suite_passed(&output, "nobody_cargo_suite");
}
