//! β benchmarks (`cargo xtask bench beta`): `exec true` round trip over a Unix socket
//! against spawning `true` directly, `guest_fs` read/write throughput (1 MiB, 16 MiB;
//! staging on tmpfs and on disk), handshake + `session_start` latency, and 50 concurrent
//! clients each running `exec true` on its own connection.
//!
//! Everything runs against a real `devshell-vm-sidecar` process (release build).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
mod wire;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{SidecarProcess, config, unix_sidecar};
use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::BetaSession;
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_guest_fs::GuestFsOps;
use devshell_vm_test_support::bench::{
    fmt_duration, mb_per_s, median, report, sample, scratch_dirs,
};
use devshell_vm_vfs::Vfs;

const MIB: usize = 1024 * 1024;

/// A private socket dir and a staging root under `parent`, with a sidecar serving it.
struct Setup {
    _dir: tempfile::TempDir,
    socket: String,
    staging: String,
    sidecar: SidecarProcess,
}

impl Setup {
    fn new(parent: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("beta-bench-")
            .tempdir_in(parent)
            .expect("scratch dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let (sidecar, socket) = unix_sidecar(&root);
        let staging = root.join("staging");
        std::fs::create_dir(&staging).unwrap();
        Self {
            socket,
            staging: staging.to_str().unwrap().to_owned(),
            _dir: dir,
            sidecar,
        }
    }

    fn session(&self) -> BetaSession {
        BetaSession::new(&config(&[
            ("DEVSHELL_VM_SOCKET", &self.socket),
            ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
            ("DEVSHELL_VM_BETA_SESSION_STAGING", &self.staging),
        ]))
        .expect("session")
    }
}

fn exec_true(session: &mut BetaSession, vfs: &mut Vfs) {
    let request = ToolRequest::new("true", Vec::<String>::new())
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Null);
    let outcome = session.run_tool(vfs, "/", &request).expect("exec true");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
}

/// Direct spawns and β round trips alternate, so both see the same machine load; the
/// overhead is also given as the median of the per-pair differences.
fn bench_exec_round_trip(setup: &Setup) {
    const RUNS: usize = 300;
    let true_path = which_true();
    let mut session = setup.session();
    let mut vfs = Vfs::new();
    exec_true(&mut session, &mut vfs); // connect + handshake outside the measurement
    let (mut direct, mut beta, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let status = Command::new(&true_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn true");
        let d = started.elapsed();
        assert!(status.success());
        let started = Instant::now();
        exec_true(&mut session, &mut vfs);
        let b = started.elapsed();
        direct.push(d);
        beta.push(b);
        diffs.push(b.saturating_sub(d));
    }
    direct.sort();
    beta.sort();
    diffs.sort();
    let d = report("beta/spawn true directly", &direct);
    let b = report("beta/exec true over unix socket (round trip)", &beta);
    let paired = median(&diffs);
    println!(
        "beta/exec overhead vs direct spawn: {} (difference of medians; ratio {:.2}x), \
         median paired difference {} (target <= 1 ms)",
        fmt_duration(b.saturating_sub(d)),
        b.as_secs_f64() / d.as_secs_f64().max(1e-12),
        fmt_duration(paired),
    );
}

fn which_true() -> std::path::PathBuf {
    for candidate in ["/usr/bin/true", "/bin/true"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    panic!("no `true` binary in /usr/bin or /bin");
}

/// User + system CPU time of process `pid` so far (`/proc/<pid>/stat`, `USER_HZ` = 100).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').expect("comm field") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time of this process and the sidecar while `f` runs.
fn with_cpu(sidecar: u32, f: impl FnOnce()) -> Duration {
    let me = std::process::id();
    let before = cpu_time(me) + cpu_time(sidecar);
    f();
    (cpu_time(me) + cpu_time(sidecar)).saturating_sub(before)
}

fn bench_guest_fs(label: &str, setup: &Setup) {
    let mut session = setup.session();
    session.mkdir("/workspace").expect("connect");
    let sidecar = setup.sidecar.pid();
    for (size, runs) in [(MIB, 30), (16 * MIB, 8)] {
        let data: Vec<u8> = (0..=250u8).cycle().take(size).collect();
        let path = format!("/workspace/blob-{size}");
        let mut writes = Vec::new();
        let write_cpu = with_cpu(sidecar, || {
            writes = sample(
                runs,
                || (),
                |()| session.write_file(&path, &data).expect("write"),
            );
        });
        let mut reads = Vec::new();
        let read_cpu = with_cpu(sidecar, || {
            reads = sample(
                runs,
                || (),
                |()| {
                    let back = session.read_file(&path).expect("read");
                    assert_eq!(back.len(), size);
                },
            );
        });
        let mib = size / MIB;
        let w = report(&format!("beta/guest_fs write {mib} MiB ({label})"), &writes);
        let r = report(&format!("beta/guest_fs read {mib} MiB ({label})"), &reads);
        let runs32 = u32::try_from(runs).unwrap();
        let (wc, rc) = (write_cpu / runs32, read_cpu / runs32);
        println!(
            "beta/guest_fs {mib} MiB ({label}): write {:.0} MB/s, read {:.0} MB/s (wall medians); \
             CPU per op, client + sidecar: write {} ({:.0} MB/s of CPU), read {} ({:.0} MB/s of CPU)",
            mb_per_s(size as u64, w),
            mb_per_s(size as u64, r),
            fmt_duration(wc),
            mb_per_s(size as u64, wc),
            fmt_duration(rc),
            mb_per_s(size as u64, rc),
        );
    }
}

fn bench_handshake(setup: &Setup) {
    let samples = sample(
        100,
        || setup.session(),
        |mut session| {
            session
                .capabilities()
                .expect("connect + handshake + session_start");
        },
    );
    let _ = report("beta/connect + handshake + session_start (unix)", &samples);
}

fn bench_concurrent(setup: &Setup) {
    const CLIENTS: usize = 50;
    let mut totals = Vec::new();
    for _ in 0..7 {
        let barrier = Arc::new(Barrier::new(CLIENTS + 1));
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let mut session = setup.session();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut vfs = Vfs::new();
                    barrier.wait();
                    exec_true(&mut session, &mut vfs);
                })
            })
            .collect();
        let started = Instant::now();
        barrier.wait();
        for handle in handles {
            handle.join().expect("client thread");
        }
        totals.push(started.elapsed());
    }
    totals.sort();
    let total = report(
        "beta/50 concurrent clients (connect + handshake + session_start + exec true each), total",
        &totals,
    );
    println!(
        "beta/50 concurrent clients: {} per client on average",
        fmt_duration(total / u32::try_from(CLIENTS).unwrap())
    );
}

/// Sections to run: every non-flag argument is a substring filter on the section names
/// `exec`, `handshake`, `guest_fs`, `concurrent`, `wire-push-t2`, `wire-push-cargo200`,
/// `wire-roundtrip`, `wire-rebuild` (none: all; `wire` selects every `wire-*`,
/// `wire-push` both first pushes), e.g.
/// `cargo xtask bench beta -- guest_fs`.
fn wanted(section: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()))
}

fn main() {
    let dirs = scratch_dirs("beta-bench");
    let setups: Vec<(&str, Setup)> = dirs
        .iter()
        .map(|(label, dir)| (*label, Setup::new(dir.path())))
        .collect();
    let (_, tmpfs) = &setups[0];
    if wanted("exec") {
        bench_exec_round_trip(tmpfs);
    }
    if wanted("handshake") {
        bench_handshake(tmpfs);
    }
    if wanted("guest_fs") {
        for (label, setup) in &setups {
            bench_guest_fs(label, setup);
        }
    }
    if wanted("concurrent") {
        bench_concurrent(tmpfs);
    }
    if [
        "wire-push-t2",
        "wire-push-cargo200",
        "wire-roundtrip",
        "wire-rebuild",
    ]
    .iter()
    .any(|section| wanted(section))
    {
        wire::bench_wire(dirs[0].1.path(), wanted);
    }
}
