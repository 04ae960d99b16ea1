//! Host backend benchmarks (`cargo xtask bench host`), figures in `docs/bench/host.md`.
//!
//! 1. Session overhead: `true` run through a warm [`HostSandboxSession`] (incremental
//!    push, spawn, pull) on trees T1/T2/T3, next to spawning `true` directly. Export base
//!    on tmpfs (`/dev/shm`) and on disk (`/var/tmp`). Target: ≤ 2 ms over the bare spawn
//!    on T2 (the earlier project: 233 ms).
//! 2. A second `cargo build` of an unchanged hello crate through the session vs a direct
//!    `cargo build` in a normal directory (both no-op builds). Target ratio ≤ 1.2.
//!
//! 3. A run that changes one file in T2 (`sh` appending a line), through the session and
//!    as a bare spawn of the same `sh` in a normal directory, interleaved; the pull's own
//!    time beside it (change-tracked: it lists only the changed directory). Targets:
//!    ≤ 1 ms over the bare spawn, pull ≤ 0.5 ms.
//! 4. The edit–check loop on a real application crate, `just` 1.59.0 from crates.io (its
//!    ~100 dependencies, fetched by the bench with `cargo fetch`): after a first
//!    `cargo check`, rounds of "append a line to `src/lib.rs`, `cargo check`" through the
//!    session (change-tracked pull, then the same round with tracking off: the full scan
//!    of the same `target/`) and directly in a normal directory, interleaved. Targets:
//!    tracked pull ≤ 2 ms, session / direct ≤ 1.03.
//! 5. Isolation: a confined run of `true` (namespaces, the session's init forks it) next
//!    to a bare spawn of `true` and to `bwrap` with an equivalent policy (new user, mount,
//!    pid, net, ipc, uts namespaces, read-only system dirs, the project read-write, a
//!    private /tmp, /proc and /dev, die-with-parent, new session). Targets: ≤ 3 ms over
//!    the bare spawn and no slower than bwrap. And the second `cargo build` of an
//!    unchanged crate through the session with isolation on (namespaces) vs off. Target
//!    ratio ≤ 1.1. Prerequisite: `bwrap` (Debian package `bubblewrap`).
//!
//! Pass `quick` after `--` for fewer samples (`cargo xtask bench host -- quick`), and
//! `overhead`, `cargo`, `change`, `loop` or `isolated` to run only that part (several may be
//! given); `rounds=N` sets the edit–check loop's rounds (default 21, `quick` 3: each
//! round is three `cargo check`s, ~1.5 s each when quiet, and the check's own spread
//! needs many rounds to settle a 3 % ratio).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_config::VmConfig;
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_test_support::bench::{fmt_duration, report, sample, scratch_dirs};
use devshell_vm_vfs::Vfs;

/// One benchmark tree: its name and the function that writes it into a VFS at `/t`.
struct Tree {
    name: &'static str,
    build: fn(&mut Vfs),
}

/// T1: 1,000 files × 1 KiB in 50 dirs.
fn t1(vfs: &mut Vfs) {
    uniform(vfs, 50, 20, 1024);
}

/// T2: 10,000 files × 1 KiB in 500 dirs.
fn t2(vfs: &mut Vfs) {
    uniform(vfs, 500, 20, 1024);
}

/// T3: a cargo-like tree, ~2,200 files, ~200 MiB: 200 small sources plus a `target/`
/// with 2,000 artifacts, 20 of them large (8 to 20 MiB).
fn t3(vfs: &mut Vfs) {
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    vfs.mkdir("/t").expect("mkdir");
    vfs.write_file_with(
        "/t/Cargo.toml",
        b"[package]\nname = \"t\"\n".to_vec(),
        0o644,
        mtime,
    )
    .expect("write");
    for d in 0..20 {
        let dir = format!("/t/src/m{d}");
        vfs.mkdir(&dir).expect("mkdir");
        for f in 0..10 {
            let body = vec![b'x'; 4 * 1024];
            vfs.write_file_with(&format!("{dir}/f{f}.rs"), body, 0o644, mtime)
                .expect("write");
        }
    }
    let mut total = 0usize;
    for d in 0..100 {
        let dir = format!("/t/target/debug/deps/d{d}");
        vfs.mkdir(&dir).expect("mkdir");
        for f in 0..20 {
            let index = d * 20 + f;
            // 20 large artifacts (one of 20 MiB, the others 8 MiB), the rest 20 KiB.
            let size = match index {
                0 => 20 * 1024 * 1024,
                i if i % 100 == 0 => 8 * 1024 * 1024,
                _ => 20 * 1024,
            };
            total += size;
            let body = vec![u8::try_from(index % 251).expect("< 256"); size];
            vfs.write_file_with(&format!("{dir}/a{f}.rlib"), body, 0o644, mtime)
                .expect("write");
        }
    }
    assert!(
        (190 * 1024 * 1024..230 * 1024 * 1024).contains(&total),
        "T3 is ~200 MiB ({total} bytes)"
    );
}

fn uniform(vfs: &mut Vfs, dirs: usize, per_dir: usize, size: usize) {
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for d in 0..dirs {
        let dir = format!("/t/d{:02}/s{d}", d % 10);
        vfs.mkdir(&dir).expect("mkdir");
        for f in 0..per_dir {
            let body = vec![u8::try_from((d + f) % 251).expect("< 256"); size];
            vfs.write_file_with(&format!("{dir}/f{f}.txt"), body, 0o644, mtime)
                .expect("write");
        }
    }
}

fn host_config(export_base: &Path) -> VmConfig {
    VmConfig {
        export_base: Some(export_base.to_path_buf()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    let parts = ["overhead", "cargo", "change", "loop", "isolated"];
    let picked: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| args.iter().any(|a| a == p))
        .collect();
    let run_part = |part: &str| picked.is_empty() || picked.contains(&part);
    let runs = if quick { 5 } else { 41 };
    println!("host bench ({runs} samples per case)");

    let trees = [
        Tree {
            name: "T1",
            build: t1,
        },
        Tree {
            name: "T2",
            build: t2,
        },
        Tree {
            name: "T3",
            build: t3,
        },
    ];
    if run_part("isolated") {
        isolated(runs);
        // As many samples as the `true` case: a no-op build's spread on a busy machine
        // is wide, and 21 samples left the median ratio swinging by ±0.3.
        isolated_cargo(runs);
    }
    if run_part("overhead") {
        overhead(runs, &trees);
    }
    if run_part("cargo") {
        cargo_rebuild(runs.min(21));
    }
    if run_part("change") {
        one_change(runs);
    }
    if run_part("loop") {
        let rounds = args
            .iter()
            .find_map(|a| a.strip_prefix("rounds="))
            .map_or(if quick { 3 } else { 21 }, |n| {
                n.parse().expect("rounds=N takes a number")
            });
        edit_check_loop(rounds);
    }
}

/// A run that appends one line to one file of T2, through the session and as a bare
/// spawn of the same `sh` in a normal directory, interleaved.
fn one_change(runs: usize) {
    let config = host_config(Path::new("/var/tmp"));
    for (medium, scratch) in scratch_dirs("devshell-host-bench-change-") {
        let plain = scratch.path().join("plain");
        std::fs::create_dir_all(plain.join("d00/s0")).expect("mkdir");
        std::fs::write(plain.join("d00/s0/f0.txt"), "x\n").expect("write");
        let sh = devshell_vm_exec::resolve_program("sh", config.path.as_deref(), &plain)
            .expect("sh on PATH");
        let request = ToolRequest::new("sh", ["-c", "echo x >> d00/s0/f0.txt"]);
        let bare_spawn = || {
            let outcome =
                devshell_vm_exec::run(&sh, &request, &plain, &mut |_, _| {}, None).expect("spawn");
            assert_eq!(outcome.termination, Termination::Exited(0));
        };
        let mut vfs = Vfs::new();
        t2(&mut vfs);
        let mut session = HostSandboxSession::new(&host_config(&scratch.path().join("s")));
        let _ = session
            .run_tool(&mut vfs, "/t", &request)
            .expect("first run");
        let (mut bare, mut through, mut pull, mut scanned) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..runs {
            bare.extend(sample(1, || (), |()| bare_spawn()));
            let started = Instant::now();
            let outcome = session.run_tool(&mut vfs, "/t", &request).expect("run");
            through.push(started.elapsed());
            let report = outcome.pull.expect("pulled");
            assert_eq!(report.files_written, 1, "{report:?}");
            assert!(
                !report.full_scan,
                "change tracking must scope the pull: {report:?}"
            );
            scanned = scanned.max(report.dirs_scanned);
            pull.push(report.duration);
        }
        bare.sort();
        through.sort();
        pull.sort();
        let label = format!("host/{medium}/T2 one changed file");
        let bare = report(&format!("{label}: bare spawn of the same sh"), &bare);
        let through = report(&format!("{label}: session run"), &through);
        let _ = report(
            &format!("{label}: pull (tracked, ≤ {scanned} dirs listed)"),
            &pull,
        );
        println!(
            "{label}: overhead over bare spawn (difference of medians) {}",
            fmt_duration(through.saturating_sub(bare))
        );
        session.shutdown().expect("shutdown");
    }
}

/// The crate the edit–check loop builds: an application from crates.io with ~100
/// dependencies.
const LOOP_CRATE: &str = "just";
const LOOP_VERSION: &str = "1.59.0";

/// Fetches [`LOOP_CRATE`] with `cargo fetch` (through a throwaway manifest that depends
/// on it) and returns its unpacked source directory in cargo's registry cache.
fn fetch_loop_crate(scratch: &Path) -> std::path::PathBuf {
    let probe = scratch.join("fetch-probe");
    std::fs::create_dir_all(probe.join("src")).expect("mkdir");
    std::fs::write(
        probe.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch-probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\n{LOOP_CRATE} = \"={LOOP_VERSION}\"\n"
        ),
    )
    .expect("write");
    std::fs::write(probe.join("src/main.rs"), "fn main() {}\n").expect("write");
    let status = Command::new("cargo")
        .arg("fetch")
        .current_dir(&probe)
        .status()
        .expect("cargo fetch runs");
    assert!(
        status.success(),
        "cargo fetch of {LOOP_CRATE} {LOOP_VERSION} failed (network?)"
    );
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(&probe)
        .output()
        .expect("cargo metadata runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("{LOOP_CRATE}-{LOOP_VERSION}/Cargo.toml");
    let manifest = text
        .split('"')
        .find(|s| s.ends_with(&needle))
        .unwrap_or_else(|| panic!("{needle} not in cargo metadata"));
    Path::new(manifest)
        .parent()
        .expect("crate dir")
        .to_path_buf()
}

/// Loads a directory tree into the VFS at `at` (files with their modes and mtimes).
fn load_tree(vfs: &mut Vfs, from: &Path, at: &str) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut count = 0;
    vfs.mkdir(at).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let name = entry.file_name().into_string().expect("UTF-8 name");
        let path = entry.path();
        let target = format!("{at}/{name}");
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            count += load_tree(vfs, &path, &target);
        } else if meta.is_file() {
            vfs.write_file_with(
                &target,
                std::fs::read(&path).expect("read"),
                meta.permissions().mode() & 0o7777,
                meta.modified().expect("mtime"),
            )
            .expect("write");
            count += 1;
        }
    }
    count
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// The edit–check loop on a real crate: through the session (tracked and full-scan
/// pulls) and directly, interleaved.
#[allow(clippy::too_many_lines, reason = "one benchmark, read top to bottom")]
fn edit_check_loop(rounds: usize) {
    let disk = devshell_vm_test_support::bench::disk_scratch_parent();
    let scratch = tempfile::Builder::new()
        .prefix("devshell-host-bench-loop-")
        .tempdir_in(&disk)
        .expect("scratch dir");
    let source = fetch_loop_crate(scratch.path());
    let check = ["check", "--quiet", "--offline", "--locked"];

    let direct_dir = scratch.path().join("direct");
    copy_tree(&source, &direct_dir);
    let direct_check = || {
        let out = Command::new("cargo")
            .args(check)
            .current_dir(&direct_dir)
            .env("CARGO_TARGET_DIR", direct_dir.join("target"))
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let mut vfs = Vfs::new();
    let files = load_tree(&mut vfs, &source, "/app");
    let mut session = HostSandboxSession::new(&host_config(&scratch.path().join("s")));
    let request = ToolRequest::new("cargo", check)
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Capture);
    println!(
        "host/loop: {LOOP_CRATE} {LOOP_VERSION}: {files} source files; first cargo check (both sides)…"
    );
    let started = Instant::now();
    direct_check();
    println!(
        "host/loop: first cargo check direct {}",
        fmt_duration(started.elapsed())
    );
    let started = Instant::now();
    let first = session
        .run_tool(&mut vfs, "/app", &request)
        .expect("first check");
    assert_eq!(
        first.exec.termination,
        Termination::Exited(0),
        "{}",
        String::from_utf8_lossy(&first.exec.stderr)
    );
    let target_files = vfs.walk("/app/target").map_or(0, Iterator::count);
    println!(
        "host/loop: first cargo check through the session {} ({target_files} entries in target/)",
        fmt_duration(started.elapsed())
    );

    let (mut direct, mut tracked, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let (mut tracked_pull, mut full_pull) = (Vec::new(), Vec::new());
    let mut pulled = Vec::new();
    for round in 0..rounds {
        let line = format!("// edit {round}\n");
        // Direct: the same one-line edit, then cargo check.
        let lib = direct_dir.join("src/lib.rs");
        let mut text = std::fs::read_to_string(&lib).expect("read lib.rs");
        text.push_str(&line);
        std::fs::write(&lib, &text).expect("write lib.rs");
        direct.extend(sample(1, || (), |()| direct_check()));
        // Session, tracked and full scan in turn.
        for (tracking, times, pulls) in [
            (true, &mut tracked, &mut tracked_pull),
            (false, &mut full, &mut full_pull),
        ] {
            session.set_change_tracking(tracking);
            let mut text = String::from_utf8(vfs.read_file_vec("/app/src/lib.rs").expect("read"))
                .expect("UTF-8");
            text.push_str(&line);
            vfs.write_file("/app/src/lib.rs", text).expect("edit");
            let started = Instant::now();
            let outcome = session.run_tool(&mut vfs, "/app", &request).expect("check");
            times.push(started.elapsed());
            assert_eq!(
                outcome.exec.termination,
                Termination::Exited(0),
                "{}",
                String::from_utf8_lossy(&outcome.exec.stderr)
            );
            let report = outcome.pull.expect("pulled");
            assert_eq!(report.full_scan, !tracking, "{report:?}");
            pulls.push(report.duration);
            if tracking {
                pulled.push((
                    report.dirs_scanned,
                    report.files_read,
                    report.bytes_read,
                    report.files_deferred,
                    report.bytes_deferred,
                ));
            }
        }
    }
    for v in [
        &mut direct,
        &mut tracked,
        &mut full,
        &mut tracked_pull,
        &mut full_pull,
    ] {
        v.sort();
    }
    let direct = report("host/loop: edit + cargo check, direct", &direct);
    let tracked_t = report(
        "host/loop: edit + cargo check, session (tracked pull)",
        &tracked,
    );
    let _ = report(
        "host/loop: edit + cargo check, session (full-scan pull)",
        &full,
    );
    let _ = report("host/loop: pull after the check, tracked", &tracked_pull);
    pulled.sort_unstable();
    let (dirs, files, bytes, deferred, deferred_bytes) = pulled[pulled.len() / 2];
    println!(
        "host/loop: a tracked pull (median round) listed {dirs} dirs, read {files} files ({:.2} MiB) and deferred {deferred} files ({:.1} MiB, read on demand) of those the check wrote",
        mib(bytes),
        mib(deferred_bytes)
    );
    let _ = report(
        "host/loop: pull after the check, full scan of the same tree",
        &full_pull,
    );
    println!(
        "host/loop: session (tracked) / direct {:.3}; overhead {}",
        tracked_t.as_secs_f64() / direct.as_secs_f64(),
        fmt_duration(tracked_t.saturating_sub(direct))
    );
    session.shutdown().expect("shutdown");
}

/// `bwrap` arguments for a policy equivalent to the sandbox's namespaces mode.
fn bwrap_args(project: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    .map(String::from)
    .to_vec();
    for dir in devshell_vm_sandbox::SYSTEM_READ_ONLY {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(path).expect("readlink");
                args.extend([
                    "--symlink".into(),
                    target.display().to_string(),
                    (*dir).into(),
                ]);
            }
            Ok(_) => args.extend(["--ro-bind".into(), (*dir).into(), (*dir).into()]),
            Err(_) => {}
        }
    }
    for file in devshell_vm_sandbox::ETC_FILES {
        if Path::new(file).exists() {
            args.extend(["--ro-bind".into(), (*file).into(), (*file).into()]);
        }
    }
    let project = project.display().to_string();
    args.extend(
        [
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/home/sandbox",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--bind",
            &project,
            &project,
            "--chdir",
            &project,
            "/usr/bin/true",
        ]
        .map(String::from),
    );
    args
}

/// Confined `true` vs bare `true` vs `bwrap … true`, samples interleaved.
fn isolated(runs: usize) {
    use devshell_vm_sandbox::{Isolation, Limits, Net, Policy, Sandbox};
    let bwrap = which_bwrap();
    let scratch = tempfile::tempdir().expect("scratch");
    let project = scratch.path().join("project");
    std::fs::create_dir_all(&project).expect("mkdir");
    let policy = Policy::new(
        Isolation::Namespaces,
        Net::None,
        Limits::default(),
        &project,
        scratch.path(),
    );
    let started = Instant::now();
    let mut sandbox = Sandbox::start(policy).expect("namespaces sandbox");
    println!(
        "host/isolated/sandbox start (namespaces, once per session): {}",
        fmt_duration(started.elapsed())
    );
    println!("host/isolated/mechanisms: {}", sandbox.mechanisms());
    let request = ToolRequest::new("true", Vec::<String>::new())
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Null);
    let truth = Path::new("/usr/bin/true");
    let bwrap_args = bwrap_args(&project);
    // One warm-up run each (the sandbox's first run joins its cgroups: a one-time cost
    // of the session, like the start above).
    let started = Instant::now();
    let outcome = sandbox
        .run(truth, &request, &project, &mut |_, _| {}, None)
        .expect("confined true");
    assert!(outcome.exec.success());
    println!(
        "host/isolated/first confined run (joins the cgroups, once per session): {}",
        fmt_duration(started.elapsed())
    );
    let _ = devshell_vm_exec::run(truth, &request, &project, &mut |_, _| {}, None);
    let _ = Command::new(&bwrap).args(&bwrap_args).status();
    let (mut bare, mut confined, mut wrapped) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        bare.extend(sample(
            1,
            || (),
            |()| {
                let outcome =
                    devshell_vm_exec::run(truth, &request, &project, &mut |_, _| {}, None)
                        .expect("bare true");
                assert!(outcome.success());
            },
        ));
        confined.extend(sample(
            1,
            || (),
            |()| {
                let outcome = sandbox
                    .run(truth, &request, &project, &mut |_, _| {}, None)
                    .expect("confined true");
                assert!(outcome.exec.success());
            },
        ));
        wrapped.extend(sample(
            1,
            || (),
            |()| {
                let status = Command::new(&bwrap)
                    .args(&bwrap_args)
                    .status()
                    .expect("bwrap runs");
                assert!(status.success(), "bwrap {bwrap_args:?}");
            },
        ));
    }
    for v in [&mut bare, &mut confined, &mut wrapped] {
        v.sort();
    }
    let bare = report("host/isolated/true bare spawn (exec runner)", &bare);
    let confined = report(
        "host/isolated/true confined (sandbox init, namespaces)",
        &confined,
    );
    let wrapped = report("host/isolated/true bwrap (equivalent policy)", &wrapped);
    println!(
        "host/isolated/overhead over bare spawn: confined {} (target <= 3 ms), bwrap {}",
        fmt_duration(confined.saturating_sub(bare)),
        fmt_duration(wrapped.saturating_sub(bare)),
    );
}

fn which_bwrap() -> std::path::PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let candidate = Path::new(dir).join("bwrap");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("the isolated bench needs `bwrap` (apt-get install bubblewrap)");
}

/// Second `cargo build` of an unchanged crate through the session, isolation namespaces
/// vs off, samples interleaved.
fn isolated_cargo(runs: usize) {
    use devshell_vm_config::Isolation;
    let scratch = tempfile::tempdir_in("/var/tmp").expect("scratch");
    let mut sessions = Vec::new();
    for isolation in [Isolation::Off, Isolation::Namespaces] {
        let config = VmConfig {
            isolation,
            ..host_config(&scratch.path().join(isolation.as_str()))
        };
        let mut session = HostSandboxSession::new(&config);
        let mut vfs = Vfs::new();
        vfs.mkdir("/hello/src").expect("mkdir");
        vfs.write_file("/hello/Cargo.toml", HELLO_TOML.as_bytes().to_vec())
            .expect("write");
        vfs.write_file("/hello/src/main.rs", HELLO_MAIN.as_bytes().to_vec())
            .expect("write");
        sessions.push((
            isolation,
            session_build(&mut session, &mut vfs),
            session,
            vfs,
        ));
    }
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, (_, _, session, vfs)) in sessions.iter_mut().enumerate() {
            times[i].extend(sample(
                1,
                || (),
                |()| {
                    let _ = session_build(session, vfs);
                },
            ));
        }
    }
    let mut medians = Vec::new();
    for (i, (isolation, _, session, _)) in sessions.iter().enumerate() {
        times[i].sort();
        let stats = session.stats();
        medians.push(report(
            &format!(
                "host/isolated/cargo build (no-op) through the session, isolation {isolation} \
                 (pulls skipped {} of {})",
                stats.pulls_skipped, stats.runs
            ),
            &times[i],
        ));
    }
    println!(
        "host/isolated/cargo no-op rebuild ratio confined/direct: {:.2} (target <= 1.1); \
         fastest runs: {:.2}",
        medians[1].as_secs_f64() / medians[0].as_secs_f64(),
        times[1][0].as_secs_f64() / times[0][0].as_secs_f64()
    );
}

fn session_build(session: &mut HostSandboxSession, vfs: &mut Vfs) -> Duration {
    let request = ToolRequest::new("cargo", ["build", "--quiet"])
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Capture);
    let started = Instant::now();
    let outcome = session.run_tool(vfs, "/hello", &request).expect("build");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "{}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    started.elapsed()
}

/// Session run of `true` vs a bare spawn of `true` through the same exec runner, samples
/// alternating so load changes on the shared machine hit both alike. Also reports the
/// session's own work per run: its wall time minus the tool's (push, pull, bookkeeping).
fn overhead(runs: usize, trees: &[Tree]) {
    let config = host_config(Path::new("/var/tmp"));
    let cwd = std::env::temp_dir();
    let program = devshell_vm_exec::resolve_program("true", config.path.as_deref(), &cwd)
        .expect("`true` on PATH");
    let request = ToolRequest::new("true", Vec::<String>::new());
    let bare_spawn = || {
        let outcome =
            devshell_vm_exec::run(&program, &request, &cwd, &mut |_, _| {}, None).expect("spawn");
        assert_eq!(outcome.termination, Termination::Exited(0));
    };
    for (medium, scratch) in scratch_dirs("devshell-host-bench-") {
        for tree in trees {
            let mut vfs = Vfs::new();
            (tree.build)(&mut vfs);
            let mut session = HostSandboxSession::new(&host_config(scratch.path()));
            // Warm-up: the first run pushes the whole tree.
            let first = session
                .run_tool(&mut vfs, "/t", &request)
                .expect("first run");
            println!(
                "host/{medium}/{}: first run (full push {} files, {:.1} MiB) {}",
                tree.name,
                first.push.files_written,
                mib(first.push.bytes_written),
                fmt_duration(first.push.duration + first.exec.duration)
            );
            let mut bare = Vec::with_capacity(runs);
            let mut through = Vec::with_capacity(runs);
            let mut own_work = Vec::with_capacity(runs);
            for _ in 0..runs {
                bare.extend(sample(1, || (), |()| bare_spawn()));
                let started = Instant::now();
                let outcome = session.run_tool(&mut vfs, "/t", &request).expect("run");
                let total = started.elapsed();
                assert_eq!(outcome.exec.termination, Termination::Exited(0));
                assert!(outcome.push.is_noop());
                through.push(total);
                own_work.push(total.saturating_sub(outcome.exec.duration));
            }
            bare.sort();
            through.sort();
            own_work.sort();
            let label = format!("host/{medium}/{}", tree.name);
            let bare = report(&format!("{label}: bare spawn of true"), &bare);
            let through = report(&format!("{label}: session run of true"), &through);
            let own = report(
                &format!("{label}: session's own work per run (total - tool)"),
                &own_work,
            );
            println!(
                "{label}: overhead over bare spawn (difference of medians) {}; own work {}; \
                 pulls skipped {} of {}",
                fmt_duration(through.saturating_sub(bare)),
                fmt_duration(own),
                session.stats().pulls_skipped,
                session.stats().runs,
            );
            session.shutdown().expect("shutdown");
        }
    }
}

fn mib(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64 / (1024.0 * 1024.0);
    value
}

const HELLO_TOML: &str = "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
const HELLO_MAIN: &str = "fn main() { println!(\"hello\"); }\n";

/// Second (no-op) `cargo build` of a hello crate: session vs a normal directory.
/// Samples alternate (direct, session, direct, …) so load changes on the shared machine
/// hit both sides alike.
fn cargo_rebuild(runs: usize) {
    for (medium, scratch) in scratch_dirs("devshell-host-bench-cargo-") {
        // Direct: a normal directory, its own target dir.
        let direct_dir = scratch.path().join("direct/hello");
        std::fs::create_dir_all(direct_dir.join("src")).expect("mkdir");
        std::fs::write(direct_dir.join("Cargo.toml"), HELLO_TOML).expect("write");
        std::fs::write(direct_dir.join("src/main.rs"), HELLO_MAIN).expect("write");
        let direct_build = || {
            let status = Command::new("cargo")
                .args(["build", "--quiet", "--offline"])
                .current_dir(&direct_dir)
                .env("CARGO_TARGET_DIR", direct_dir.join("target"))
                .status()
                .expect("cargo runs");
            assert!(status.success());
        };
        direct_build();

        // Through the session.
        let base = scratch.path().join("session");
        let mut session = HostSandboxSession::new(&host_config(&base));
        let mut vfs = Vfs::new();
        vfs.mkdir("/hello/src").expect("mkdir");
        vfs.write_file("/hello/Cargo.toml", HELLO_TOML.as_bytes().to_vec())
            .expect("write");
        vfs.write_file("/hello/src/main.rs", HELLO_MAIN.as_bytes().to_vec())
            .expect("write");
        let request = ToolRequest::new("cargo", ["build", "--quiet", "--offline"])
            .stdout(OutputMode::Null)
            .stderr(OutputMode::Capture);
        let first = session
            .run_tool(&mut vfs, "/hello", &request)
            .expect("first build");
        assert_eq!(first.exec.termination, Termination::Exited(0));

        let mut direct = Vec::with_capacity(runs);
        let mut through = Vec::with_capacity(runs);
        let mut pulled_files = 0;
        for _ in 0..runs {
            direct.extend(sample(1, || (), |()| direct_build()));
            through.extend(sample(
                1,
                || (),
                |()| {
                    let outcome = session
                        .run_tool(&mut vfs, "/hello", &request)
                        .expect("build");
                    assert_eq!(outcome.exec.termination, Termination::Exited(0));
                    pulled_files += outcome.pull.map_or(0, |p| p.files_written);
                },
            ));
        }
        direct.sort();
        through.sort();
        let direct = report(
            &format!("host/{medium}/cargo build (no-op) in a normal dir"),
            &direct,
        );
        let through = report(
            &format!("host/{medium}/cargo build (no-op) through the session"),
            &through,
        );
        println!(
            "host/{medium}/cargo no-op rebuild ratio session/direct: {:.2} \
             (pulls skipped {} of {}, files pulled {pulled_files})",
            through.as_secs_f64() / direct.as_secs_f64(),
            session.stats().pulls_skipped,
            session.stats().runs,
        );
        session.shutdown().expect("shutdown");
    }
}
