//! `cargo xtask bench lima`: the Lima backend **against the limactl stand-in** (this
//! package's test-support binary; no VM), so the figures measure the backend's own
//! overhead and the cost of one `limactl shell` as the stand-in implements it (a
//! process, a private mount namespace, a login shell) — a real Lima adds an ssh session
//! per `limactl shell`.
//!
//! * 100 `guest_fs` reads through the long-lived sidecar channel vs one `limactl shell`
//!   per read: wall time and `limactl` spawns.
//! * Mode S overhead of running `true` (push + one `limactl shell` + pull, nothing
//!   changed) on T1 (1,000 files × 1 KiB in 50 dirs) and T2 (10,000 × 1 KiB in 500 dirs),
//!   next to one bare `limactl shell … true` and a bare spawn of `true`; once with one
//!   `limactl shell` per run and once with the run over the sidecar channel.
//!
//! Arguments after `--`: `--quick` (fewer repetitions).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Fixture, MOUNT};
use devshell_vm_backend_lima::Backend as _;
use devshell_vm_backend_lima::GammaSession;
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_guest_fs::GuestFsOps;
use devshell_vm_test_support::bench::{report, sample};
use devshell_vm_vfs::Vfs;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 7 };
    println!("lima bench (against limactl-standin, not a real Lima VM); runs={runs}");
    reads(runs);
    mode_s(runs);
    lifecycle_and_supervision(runs);
}

/// What issue 18 added: opening a session (`--version`, `list`, the readiness probe)
/// next to one bare `limactl shell true`, and a timed run (guest supervisor + lifeline
/// stdin) next to the same run untimed (plain `limactl shell`).
fn lifecycle_and_supervision(runs: usize) {
    let samples = sample(
        runs,
        || {
            let fixture = Fixture::new("Running");
            let session = session(&fixture, true, false);
            (fixture, session)
        },
        |(fixture, mut session)| {
            session.ensure_running().expect("ready");
            assert_eq!(session.limactl_spawns(), 3);
            drop(session);
            drop(fixture);
        },
    );
    let _ = report(
        "lima/session open (--version + list + readiness probe, 3 spawns)",
        &samples,
    );
    let fixture = Fixture::new("Running");
    std::fs::create_dir_all(fixture.parent.path().join("p")).expect("mkdir");
    let mut session = session(&fixture, true, false);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    for (label, timeout) in [
        ("untimed (plain limactl shell)", None),
        (
            "timed (guest supervisor + lifeline)",
            Some(std::time::Duration::from_mins(1)),
        ),
    ] {
        let request = ToolRequest::new("true", Vec::<String>::new())
            .stdout(OutputMode::Capture)
            .stderr(OutputMode::Capture)
            .timeout(timeout);
        let samples = sample(
            runs,
            || (),
            |()| {
                let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
                assert!(outcome.exec.success());
            },
        );
        let _ = report(&format!("lima/Mode P run of true, {label}"), &samples);
    }
}

fn session(fixture: &Fixture, guest_mode: bool, channel: bool) -> GammaSession {
    let mut config = fixture.config(guest_mode);
    if channel {
        config.sidecar_bin = Some(common::sidecar());
    }
    let mut session = GammaSession::new(&config).expect("session");
    session.set_notice_writer(Box::new(std::io::sink()));
    session.set_channel_enabled(channel);
    session
}

fn reads(runs: usize) {
    for (label, channel) in [("channel", true), ("shell-per-op", false)] {
        let mut spawns = 0;
        let samples = sample(
            runs,
            || {
                let fixture = Fixture::new("Running");
                std::fs::write(fixture.parent.path().join("f.txt"), vec![b'x'; 4096])
                    .expect("write");
                let mut session = session(&fixture, true, channel);
                // Open the session (and the channel) before timing.
                let _ = session.exists(&format!("{MOUNT}/f.txt")).expect("exists");
                (fixture, session)
            },
            |(fixture, mut session)| {
                let before = session.limactl_spawns();
                for _ in 0..100 {
                    let data = session.read_file(&format!("{MOUNT}/f.txt")).expect("read");
                    assert_eq!(data.len(), 4096);
                }
                spawns = session.limactl_spawns() - before;
                drop(session);
                drop(fixture);
            },
        );
        let median = report(&format!("lima/100 guest_fs reads via {label}"), &samples);
        println!(
            "lima/100 guest_fs reads via {label}: {spawns} limactl spawns, {:.2} ms per read",
            median.as_secs_f64() * 1e3 / 100.0
        );
    }
}

fn tree(vfs: &mut Vfs, files: usize, dirs: usize) {
    vfs.mkdir("/proj/src").expect("mkdir");
    vfs.write_file(
        "/proj/Cargo.toml",
        b"[package]\nname = \"proj\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_vec(),
    )
    .expect("write");
    for d in 0..dirs {
        vfs.mkdir(&format!("/proj/data/d{d}")).expect("mkdir");
    }
    let content = vec![b'a'; 1024];
    for f in 0..files {
        vfs.write_file(&format!("/proj/data/d{}/f{f}", f % dirs), content.clone())
            .expect("write");
    }
}

fn mode_s(runs: usize) {
    let truth = ToolRequest::new("true", Vec::<String>::new())
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Null);
    // Bare spawn of `true` and one bare `limactl shell … true` for reference.
    let samples = sample(
        runs,
        || (),
        |()| {
            let status = std::process::Command::new("true").status().expect("true");
            assert!(status.success());
        },
    );
    let _ = report("lima/bare spawn of true", &samples);
    let fixture = Fixture::new("Running");
    let samples = sample(
        runs,
        || (),
        |()| {
            let status = std::process::Command::new(&fixture.standin)
                .env("LIMA_HOME", fixture.lima_home.path())
                .args(["shell", "--workdir", MOUNT, common::INSTANCE, "--", "true"])
                .status()
                .expect("standin");
            assert!(status.success());
        },
    );
    let _ = report("lima/bare limactl-standin shell true", &samples);

    for (name, files, dirs, channel) in [
        ("T1", 1_000, 50, false),
        ("T2", 10_000, 500, false),
        ("T1", 1_000, 50, true),
        ("T2", 10_000, 500, true),
    ] {
        let fixture = Fixture::new("Running");
        let mut session = session(&fixture, false, channel);
        let via = if channel {
            "channel exec"
        } else {
            "limactl shell"
        };
        let mut vfs = Vfs::new();
        tree(&mut vfs, files, dirs);
        let started = Instant::now();
        let first = session
            .run_tool(&mut vfs, "/proj", &truth)
            .expect("first run");
        println!(
            "lima/Mode S first run of true on {name} via {via} (full push): {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        assert!(first.exec.success());
        let samples = sample(
            runs,
            || (),
            |()| {
                let outcome = session.run_tool(&mut vfs, "/proj", &truth).expect("run");
                assert!(outcome.exec.success());
            },
        );
        let _ = report(
            &format!("lima/Mode S run of true on {name} via {via} (nothing changed)"),
            &samples,
        );
    }
}
