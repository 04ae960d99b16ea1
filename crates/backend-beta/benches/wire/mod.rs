//! `wire-sync` benchmarks (`cargo xtask bench beta -- wire`), side by side in one run:
//!
//! - first push of T2 (10 000 × 1 KiB) and of a 200 MiB cargo-like tree: wire-sync over
//!   loopback TCP (with a token) vs `rsync -a` to an rsync daemon on loopback vs the
//!   local first push (`devshell_vm_sync::push_incremental` into a fresh staging dir);
//! - a no-op round trip (push + `exec true` + pull) vs `exec true` alone through the same
//!   sidecar (Mode P, no sync), with the bytes on the wire;
//! - one changed 1 KiB file: time and bytes on the wire both ways;
//! - a rebuild after a one-line edit of a real crate (the sources of `base64` 0.22 from
//!   the local cargo registry): `cargo build` over wire-sync vs through shared staging.
//!
//! Sections (substring filters after `--`): `wire-push-t2`, `wire-push-cargo200`,
//! `wire-roundtrip`, `wire-rebuild`; `wire-push` runs both pushes, `wire` everything.
//!
//! Both sides' trees live on tmpfs (the scratch dir); the sidecar is a release build.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devshell_vm_backend_beta::Backend as _;
use devshell_vm_backend_beta::BetaSession;
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_test_support::bench::{mb_per_s, report};
use devshell_vm_vfs::Vfs;

use crate::common::{SidecarProcess, config, sidecar_bin};

const TOKEN: &str = "wire-bench-token";

/// A token-protected TCP sidecar rooted in `parent`, and a token file for clients.
pub(crate) struct WireSetup {
    dir: tempfile::TempDir,
    sidecar: SidecarProcess,
    token_file: PathBuf,
}

impl WireSetup {
    pub(crate) fn new(parent: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wire-bench-")
            .tempdir_in(parent)
            .expect("scratch dir");
        let root = dir.path().join("sidecar-root");
        std::fs::create_dir(&root).unwrap();
        let sidecar = SidecarProcess::builder(sidecar_bin())
            .root(&root)
            .token(TOKEN)
            .start_tcp();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        Self {
            dir,
            sidecar,
            token_file,
        }
    }

    fn session(&self, mode: &str) -> BetaSession {
        self.session_with(mode, "wire")
    }

    /// A session in workspace `mode` with `DEVSHELL_VM_BETA_SYNC=sync`; with `shared`,
    /// staging is a directory under the sidecar's root (both see it).
    fn session_with(&self, mode: &str, sync: &str) -> BetaSession {
        let addr = self.sidecar.tcp_addr().expect("tcp");
        let export = self.dir.path().join("client-export");
        std::fs::create_dir_all(&export).unwrap();
        // Mode P (the baseline: exec without sync) needs a staging dir the sidecar accepts.
        let plain = self.dir.path().join("sidecar-root/plain");
        std::fs::create_dir_all(&plain).unwrap();
        let socket = format!("tcp:{addr}");
        let mut vars = vec![
            ("DEVSHELL_VM_SOCKET", socket.as_str()),
            ("DEVSHELL_VM_TOKEN_FILE", self.token_file.to_str().unwrap()),
            ("DEVSHELL_VM_WORKSPACE_MODE", mode),
            ("DEVSHELL_VM_BETA_SYNC", sync),
            ("DEVSHELL_EXPORT_BASE", export.to_str().unwrap()),
        ];
        let shared = self.dir.path().join("sidecar-root/shared");
        if sync == "shared" {
            std::fs::create_dir_all(&shared).unwrap();
            vars.push(("DEVSHELL_VM_BETA_SESSION_STAGING", shared.to_str().unwrap()));
        } else if mode == "guest" {
            vars.push(("DEVSHELL_VM_BETA_SESSION_STAGING", plain.to_str().unwrap()));
        }
        BetaSession::new(&config(&vars)).expect("session")
    }
}

/// An rsync daemon on a free loopback port with one writable module `bench`.
struct RsyncDaemon {
    child: Child,
    port: u16,
    dest: PathBuf,
}

impl RsyncDaemon {
    fn start(dir: &Path) -> Self {
        let rsync = Command::new("rsync").arg("--version").output();
        assert!(
            rsync.is_ok_and(|o| o.status.success()),
            "the wire bench compares with rsync: install it (apt-get install -y rsync)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dest = dir.join("rsync-dest");
        std::fs::create_dir_all(&dest).unwrap();
        let conf = dir.join("rsyncd.conf");
        let mut file = std::fs::File::create(&conf).unwrap();
        writeln!(
            file,
            "use chroot = false\nuid = 0\ngid = 0\npid file = {}\n[bench]\npath = {}\nread only = false\n",
            dir.join("rsyncd.pid").display(),
            dest.display()
        )
        .unwrap();
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rsync --daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rsync daemon did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dest }
    }

    /// `rsync -a SRC/ rsync://127.0.0.1:PORT/bench/NAME/`.
    fn push(&self, src: &Path, name: &str) -> Duration {
        let started = Instant::now();
        let status = Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(format!("rsync://127.0.0.1:{}/bench/{name}/", self.port))
            .status()
            .expect("run rsync");
        let took = started.elapsed();
        assert!(status.success(), "rsync failed");
        took
    }
}

impl Drop for RsyncDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dest);
    }
}

/// A deterministic body of `len` bytes, distinct for every `seed` (no two files share a
/// digest, so content addressing saves nothing on a first push — as for real sources).
fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// T2: 10 000 files of 1 KiB in 100 directories.
fn t2(vfs: &mut Vfs, root: &str) -> u64 {
    for d in 0..100u64 {
        vfs.mkdir(&format!("{root}/d{d:03}")).unwrap();
        for f in 0..100u64 {
            let body = body(d * 1000 + f, 1024);
            vfs.write_file(&format!("{root}/d{d:03}/f{f:03}.rs"), body)
                .unwrap();
        }
    }
    10_000 * 1024
}

/// A cargo-like tree of about 200 MiB: 2 000 sources of 4–12 KiB, 47 artefacts of 4 MiB
/// under `target/`.
fn cargo_like(vfs: &mut Vfs, root: &str) -> u64 {
    let mut total = 0u64;
    for c in 0..40u64 {
        vfs.mkdir(&format!("{root}/crates/c{c:02}/src")).unwrap();
        for f in 0..50u64 {
            let len = 4096 + usize::try_from(f % 3).unwrap() * 4096;
            let body = body(1_000_000 + c * 1000 + f, len);
            total += len as u64;
            vfs.write_file(&format!("{root}/crates/c{c:02}/src/m{f:02}.rs"), body)
                .unwrap();
        }
    }
    vfs.mkdir(&format!("{root}/target/debug/deps")).unwrap();
    for a in 0..47u64 {
        let body = body(2_000_000 + a, 4 << 20);
        total += body.len() as u64;
        vfs.write_file(&format!("{root}/target/debug/deps/libc{a:02}.rlib"), body)
            .unwrap();
    }
    total
}

fn exec_true_request() -> ToolRequest {
    ToolRequest::new("true", Vec::<String>::new())
        .stdout(OutputMode::Null)
        .stderr(OutputMode::Null)
}

fn first_push_case(
    name: &str,
    setup: &WireSetup,
    rsync: &RsyncDaemon,
    build: fn(&mut Vfs, &str) -> u64,
    runs: usize,
) {
    let mut vfs = Vfs::new();
    let bytes = build(&mut vfs, "/src");
    // The rsync source: the same tree on disk (tmpfs).
    let on_disk = setup.dir.path().join(format!("{name}-src"));
    std::fs::create_dir_all(&on_disk).unwrap();
    vfs.copy_tree_to_host("/src", &on_disk).unwrap();
    let source = on_disk.join("src");
    let mut wire = Vec::new();
    let mut rsync_times = Vec::new();
    let mut local = Vec::new();
    let mut wire_bytes = 0;
    for run in 0..runs {
        // Alternate the three so they see the same load. A new project path per run is
        // a copy the sidecar has never seen: a true first push.
        let mut copy = Vfs::new();
        copy.mkdir(&format!("/{name}{run}")).unwrap();
        for entry in vfs.walk("/src").unwrap().skip(1) {
            let rel = entry.path.strip_prefix("/src").unwrap();
            let target = format!("/{name}{run}{rel}");
            match entry.node.kind() {
                devshell_vm_vfs::NodeKind::Dir => copy.mkdir(&target).unwrap(),
                devshell_vm_vfs::NodeKind::File => {
                    let meta = entry.node.metadata();
                    copy.write_file_with(
                        &target,
                        std::sync::Arc::clone(entry.content().unwrap().unwrap()),
                        meta.mode,
                        meta.mtime,
                    )
                    .unwrap();
                }
                devshell_vm_vfs::NodeKind::Symlink => {}
            }
        }
        let mut session = setup.session("sync");
        session.capabilities().unwrap();
        let before = session.connection_bytes();
        let started = Instant::now();
        session
            .ensure_ready(&copy, &format!("/{name}{run}"))
            .expect("wire first push");
        wire.push(started.elapsed());
        wire_bytes = session.connection_bytes().0 - before.0;
        drop(session);

        rsync_times.push(rsync.push(&source, &format!("{name}{run}")));

        let staging = tempfile::Builder::new()
            .prefix("local-push-")
            .tempdir_in(setup.dir.path())
            .unwrap();
        let mut state = devshell_vm_sync::SyncState::new(staging.path());
        let started = Instant::now();
        devshell_vm_sync::push_incremental(&copy, &format!("/{name}{run}"), &mut state)
            .expect("local push");
        local.push(started.elapsed());
    }
    for samples in [&mut wire, &mut rsync_times, &mut local] {
        samples.sort();
    }
    let w = report(
        &format!("beta/wire first push {name} over loopback TCP"),
        &wire,
    );
    let r = report(
        &format!("beta/rsync -a {name} to rsync://127.0.0.1"),
        &rsync_times,
    );
    let l = report(
        &format!("beta/local first push {name} (sync crate, tmpfs)"),
        &local,
    );
    println!(
        "beta/{name}: {bytes} bytes of content, {wire_bytes} bytes sent by wire-sync; wire {:.0} MB/s, rsync {:.0} MB/s, local {:.0} MB/s; wire/rsync {:.2}, wire/local {:.2}",
        mb_per_s(bytes, w),
        mb_per_s(bytes, r),
        mb_per_s(bytes, l),
        w.as_secs_f64() / r.as_secs_f64(),
        w.as_secs_f64() / l.as_secs_f64(),
    );
    // The sidecar's own phase timings of these pushes (its log): where the wire time goes.
    print_profile(setup, &format!("\"/{name}"), name, usize::MAX);
    // The copies it now holds (these and the earlier cases'): their small files in
    // memory, large ones on disk.
    print_sidecar_memory(setup, name, &format!("after {runs} first pushes of {name}"));
}

/// Prints the last `last` push and pull lines of the sidecar's log about `project` (a
/// quoted prefix of the project path): the sidecar's own phase timings.
fn print_profile(setup: &WireSetup, project: &str, label: &str, last: usize) {
    let logs = setup.sidecar.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("wire-sync: p") && line.contains(project))
        .collect();
    for line in &lines[lines.len().saturating_sub(last)..] {
        println!("beta/{label} sidecar profile: {line}");
    }
}

/// The sidecar's resident and peak memory (`/proc/<pid>/status`), `what` says when.
fn print_sidecar_memory(setup: &WireSetup, label: &str, what: &str) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", setup.sidecar.pid()))
        .unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or_else(|| "?".to_owned(), |v| v.trim().to_owned())
    };
    println!(
        "beta/{label} sidecar memory {what}: VmRSS {}, VmHWM {}",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

fn round_trips(setup: &WireSetup) {
    const RUNS: usize = 200;
    let mut vfs = Vfs::new();
    vfs.mkdir("/rt").unwrap();
    t2(&mut vfs, "/rt");
    let mut synced = setup.session("sync");
    let request = exec_true_request();
    let _ = synced.run_tool(&mut vfs, "/rt", &request).unwrap();
    let mut plain = setup.session("guest");
    let mut empty = Vfs::new();
    let _ = plain.run_tool(&mut empty, "/", &request).unwrap();
    let (mut noop, mut bare) = (Vec::new(), Vec::new());
    let mut extra_ns: Vec<i128> = Vec::new();
    let mut noop_bytes = (0, 0);
    for _ in 0..RUNS {
        let before = synced.connection_bytes();
        let started = Instant::now();
        let outcome = synced.run_tool(&mut vfs, "/rt", &request).unwrap();
        noop.push(started.elapsed());
        assert_eq!(outcome.exec.termination, Termination::Exited(0));
        let after = synced.connection_bytes();
        noop_bytes = (after.0 - before.0, after.1 - before.1);
        let started = Instant::now();
        let _ = plain.run_tool(&mut empty, "/", &request).unwrap();
        bare.push(started.elapsed());
        extra_ns.push(
            i128::try_from(noop.last().unwrap().as_nanos()).unwrap()
                - i128::try_from(bare.last().unwrap().as_nanos()).unwrap(),
        );
    }
    extra_ns.sort_unstable();
    noop.sort();
    bare.sort();
    let n = report(
        "beta/wire no-op round trip (push + exec true + pull), T2 project",
        &noop,
    );
    let b = report("beta/exec true through the same sidecar (no sync)", &bare);
    println!(
        "beta/wire no-op: {:+.0} µs over exec alone (difference of medians), median of the paired differences {:+} µs (target <= +1000 µs); {} bytes up, {} bytes down per round trip",
        (n.as_secs_f64() - b.as_secs_f64()) * 1e6,
        extra_ns[extra_ns.len() / 2] / 1000,
        noop_bytes.0,
        noop_bytes.1
    );

    // One changed 1 KiB file.
    let mut edit = Vec::new();
    let mut edit_bytes = (0, 0);
    for i in 0..50u32 {
        vfs.write_file("/rt/d000/f000.rs", body(3_000_000 + u64::from(i), 1024))
            .unwrap();
        let before = synced.connection_bytes();
        let started = Instant::now();
        let _ = synced.run_tool(&mut vfs, "/rt", &request).unwrap();
        edit.push(started.elapsed());
        let after = synced.connection_bytes();
        edit_bytes = (after.0 - before.0, after.1 - before.1);
    }
    edit.sort();
    let _ = report("beta/wire round trip with one changed 1 KiB file", &edit);
    println!(
        "beta/wire one changed 1 KiB file: {} bytes up, {} bytes down (exec request and reply included)",
        edit_bytes.0, edit_bytes.1
    );
    // What the last of them cost the sidecar (its log).
    print_profile(setup, "\"/rt\"", "wire one changed file", 2);
}

/// Copies the host directory `from` into the VFS at `to`.
fn copy_into_vfs(vfs: &mut Vfs, from: &Path, to: &str) {
    vfs.mkdir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        let target = format!("{to}/{name}");
        if entry.file_type().unwrap().is_dir() {
            copy_into_vfs(vfs, &entry.path(), &target);
        } else {
            vfs.write_file(&target, std::fs::read(entry.path()).unwrap())
                .unwrap();
        }
    }
}

/// The sources of a real crate: `base64` 0.22, the version this workspace depends on,
/// found through `cargo metadata` (cargo's own registry checkout), with a minimal
/// manifest of our own (its published one names dev-dependencies and benches that are
/// not there).
fn real_crate(vfs: &mut Vfs, root: &str) -> String {
    let output = Command::new("cargo")
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["name"] == "base64"
                && p["version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("0.22."))
        })
        .and_then(|p| p["manifest_path"].as_str())
        .expect("the workspace depends on base64 0.22 (cargo metadata lists it)")
        .to_owned();
    let found = Path::new(&manifest).parent().unwrap().to_path_buf();
    assert!(
        found.join("src/lib.rs").is_file(),
        "base64's sources are not at {}: run `cargo fetch` first",
        found.display()
    );
    vfs.mkdir(root).unwrap();
    copy_into_vfs(vfs, &found.join("src"), &format!("{root}/src"));
    vfs.write_file(
        &format!("{root}/Cargo.toml"),
        b"[package]\nname = \"base64\"\nversion = \"0.22.1\"\nedition = \"2018\"\n\n[features]\ndefault = [\"std\"]\nalloc = []\nstd = [\"alloc\"]\n".to_vec(),
    )
    .unwrap();
    found.display().to_string()
}

/// `cargo build` after a one-line edit of a real crate: over wire-sync (TCP, nothing
/// shared but loopback) vs through shared staging (the same sidecar, `session_start`
/// on a directory both see). Runs alternate.
fn rebuild(setup: &WireSetup) {
    const RUNS: usize = 15;
    let build = ToolRequest::new(
        "cargo",
        ["build", "--offline", "--quiet"].map(String::from).to_vec(),
    )
    .stdout(OutputMode::Null)
    .stderr(OutputMode::Capture);
    let mut remote_vfs = Vfs::new();
    let source = real_crate(&mut remote_vfs, "/rebuild");
    let mut shared_vfs = remote_vfs.clone();
    let mut remote = setup.session_with("sync", "wire");
    let mut shared = setup.session_with("sync", "shared");
    assert!(remote.uses_wire_sync().unwrap(), "wire session expected");
    assert!(!shared.uses_wire_sync().unwrap(), "shared session expected");
    let run = |session: &mut BetaSession, vfs: &mut Vfs| {
        let started = Instant::now();
        let outcome = session
            .run_tool(vfs, "/rebuild", &build)
            .expect("cargo build");
        let took = started.elapsed();
        assert_eq!(
            outcome.exec.termination,
            Termination::Exited(0),
            "cargo build failed: {}",
            String::from_utf8_lossy(&outcome.exec.stderr)
        );
        // The session's own work: its push and its pull.
        let sync = outcome.push.duration + outcome.pull.map_or(Duration::ZERO, |p| p.duration);
        (took, sync)
    };
    // Cold builds (not measured).
    let _ = run(&mut remote, &mut remote_vfs);
    let _ = run(&mut shared, &mut shared_vfs);
    let (mut over_wire, mut through_shared) = (Vec::new(), Vec::new());
    let (mut wire_sync, mut shared_sync) = (Vec::new(), Vec::new());
    // Each round's own ratio: both arms ran back to back, so a slow spell of the machine
    // weighs on both.
    let mut paired = Vec::new();
    for i in 0..RUNS {
        // One line; documented, as the crate denies missing docs.
        let line = format!("#[doc = \"bench edit\"] pub const BENCH_EDIT_{i}: u32 = {i};\n");
        for vfs in [&mut remote_vfs, &mut shared_vfs] {
            let mut lib = vfs.read_file("/rebuild/src/lib.rs").unwrap().to_vec();
            lib.extend_from_slice(line.as_bytes());
            vfs.write_file("/rebuild/src/lib.rs", lib).unwrap();
        }
        // Alternate which arm builds first: the second build of a round may find
        // caches warmer.
        let (w, s) = if i % 2 == 0 {
            let w = run(&mut remote, &mut remote_vfs);
            (w, run(&mut shared, &mut shared_vfs))
        } else {
            let s = run(&mut shared, &mut shared_vfs);
            (run(&mut remote, &mut remote_vfs), s)
        };
        paired.push(w.0.as_secs_f64() / s.0.as_secs_f64());
        over_wire.push(w.0);
        wire_sync.push(w.1);
        through_shared.push(s.0);
        shared_sync.push(s.1);
    }
    paired.sort_by(f64::total_cmp);
    over_wire.sort();
    through_shared.sort();
    wire_sync.sort();
    shared_sync.sort();
    println!("beta/rebuild crate: {source}");
    let w = report(
        "beta/cargo build after a one-line edit, wire-sync over loopback TCP",
        &over_wire,
    );
    let s = report(
        "beta/cargo build after a one-line edit, shared staging",
        &through_shared,
    );
    println!(
        "beta/rebuild ratio remote/shared: {:.2} (target <= 1.1; median of the rounds' own ratios {:.2}, min {:.2}, max {:.2}); the session's push + pull per build, medians: wire {:.2} ms, shared staging {:.2} ms",
        w.as_secs_f64() / s.as_secs_f64(),
        paired[paired.len() / 2],
        paired[0],
        paired[paired.len() - 1],
        wire_sync[wire_sync.len() / 2].as_secs_f64() * 1e3,
        shared_sync[shared_sync.len() / 2].as_secs_f64() * 1e3,
    );
    // What the last rebuild moved over the wire (the sidecar's log).
    print_profile(setup, "\"/rebuild\"", "rebuild", 2);
    // What the sidecar holds after the rebuilds (its mirror of the wire copy: the tool's
    // large outputs stay on disk, unread).
    print_sidecar_memory(setup, "rebuild", &format!("after {} builds", 2 * RUNS + 2));
}

/// The `wire` sections, each run when `wanted(name)` says so. Each section gets a fresh
/// sidecar: the first pushes leave it holding eight copies (about 700 MB of mirrors),
/// and an `exec` on a sidecar that large costs tens of milliseconds more (its sandbox
/// helper is forked from it; see docs/BENCHMARKS.md), which would swamp the round
/// trip's sub-millisecond difference.
pub(crate) fn bench_wire(parent: &Path, wanted: impl Fn(&str) -> bool) {
    if wanted("wire-push-t2") || wanted("wire-push-cargo200") {
        let setup = WireSetup::new(parent);
        let rsync = RsyncDaemon::start(setup.dir.path());
        if wanted("wire-push-t2") {
            first_push_case("t2", &setup, &rsync, t2, 5);
        }
        if wanted("wire-push-cargo200") {
            first_push_case("cargo200", &setup, &rsync, cargo_like, 3);
        }
    }
    if wanted("wire-roundtrip") {
        round_trips(&WireSetup::new(parent));
    }
    if wanted("wire-rebuild") {
        rebuild(&WireSetup::new(parent));
    }
}
