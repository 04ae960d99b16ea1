//! Sync benchmark: this crate against `rsync -a` and `cp -a`, side by side in one run,
//! on tmpfs (`/dev/shm`) and on the disk (the system temp directory).
//!
//! Trees: T1 1,000 files × 1 KiB in 50 dirs; T2 10,000 × 1 KiB in 500 dirs; T3 a
//! cargo-like tree of ~2,200 files and ~200 MiB (sources plus a `target/` with files up
//! to 20 MiB). Cases: first push into an empty dir; no-op push; push after 1 change;
//! no-op pull; pull after 1 host change; peak RSS of a T3 push+push+pull (measured in a
//! child process, `VmHWM`).
//!
//! Filesystems: `shm` = tmpfs `/dev/shm`; `disk` = the system temp directory (`TMPDIR`),
//! as it is; `ext4` = a fresh ext4 filesystem made by `mkfs.ext4` (its defaults, so with
//! a journal, apart from one inode per 4 KiB) in an image file in the temp directory,
//! loop-mounted for this run only and removed afterwards: a disk filesystem that no
//! earlier deletion has touched (needs root, `mkfs.ext4` and loop devices).
//!
//! Run: `cargo xtask bench sync` (or `cargo bench -p devshell-vm-sync --bench sync`).
//! Arguments after `--`: `--quick` (fewer repetitions), `--trees T1,T2` (subset),
//! `--fs shm,disk,ext4` (subset), `--threads N` (our writer/scanner threads instead of
//! the crate's default).
//! Needs `rsync` and `cp` on PATH (fails with a clear message otherwise).

#![allow(
    missing_docs,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::too_many_lines,
    reason = "benchmark driver: figures for display, byte arithmetic on small indices"
)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use devshell_vm_sync::{SyncState, pull_workspace_to_vfs, push_full, push_incremental};
use devshell_vm_vfs::{Content, Vfs};
use nix::sys::resource::{UsageWho, getrusage};

const ROOT: &str = "/bench/proj";

/// Small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `len` bytes in one exactly sized shared allocation (no intermediate buffer).
    fn content(&mut self, len: usize) -> Content {
        let mut word = 0u64;
        (0..len)
            .map(|i| {
                if i % 8 == 0 {
                    word = self.next();
                }
                let byte = (word & 0xff) as u8;
                word >>= 8;
                byte
            })
            .collect()
    }
}

fn mtime(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tree {
    T1,
    T2,
    T3,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Tree::T1 => "T1",
            Tree::T2 => "T2",
            Tree::T3 => "T3",
        }
    }
}

/// Builds a tree in a fresh VFS; returns it with its file count and content bytes.
fn build(tree: Tree) -> (Vfs, u64, u64) {
    let mut vfs = Vfs::new();
    vfs.set_history_limit(1 << 20);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut add = |vfs: &mut Vfs, path: String, len: usize, mode: u32| {
        let content = rng.content(len);
        files += 1;
        bytes += len as u64;
        vfs.write_file_with(&path, content, mode, mtime(files))
            .expect("bench tree write");
    };
    match tree {
        Tree::T1 | Tree::T2 => {
            let dirs = if tree == Tree::T1 { 50 } else { 500 };
            for d in 0..dirs {
                vfs.mkdir(&format!("{ROOT}/d{d:03}")).expect("mkdir");
                for f in 0..20 {
                    add(&mut vfs, format!("{ROOT}/d{d:03}/f{f:02}.rs"), 1024, 0o644);
                }
            }
        }
        Tree::T3 => {
            // Sources: 16 modules × 10 files of 2–30 KiB, plus manifests.
            vfs.mkdir(&format!("{ROOT}/src")).expect("mkdir");
            add(&mut vfs, format!("{ROOT}/Cargo.toml"), 900, 0o644);
            add(&mut vfs, format!("{ROOT}/Cargo.lock"), 40_000, 0o644);
            for m in 0..16 {
                vfs.mkdir(&format!("{ROOT}/src/mod{m:02}")).expect("mkdir");
                for f in 0..10 {
                    let len = 2048 + (m * 10 + f) * 180;
                    add(
                        &mut vfs,
                        format!("{ROOT}/src/mod{m:02}/file{f}.rs"),
                        len,
                        0o644,
                    );
                }
            }
            // target/: deps (rlib/rmeta/d), build scripts, incremental, and binaries.
            let deps = format!("{ROOT}/target/debug/deps");
            vfs.mkdir(&deps).expect("mkdir");
            for c in 0..300 {
                add(
                    &mut vfs,
                    format!("{deps}/libcrate{c:03}.rlib"),
                    150_000 + (c % 7) * 40_000,
                    0o644,
                );
                add(
                    &mut vfs,
                    format!("{deps}/libcrate{c:03}.rmeta"),
                    40_000 + (c % 5) * 10_000,
                    0o644,
                );
                add(&mut vfs, format!("{deps}/crate{c:03}.d"), 800, 0o644);
            }
            for b in 0..100 {
                let dir = format!("{ROOT}/target/debug/build/crate{b:03}-build");
                vfs.mkdir(&dir).expect("mkdir");
                add(&mut vfs, format!("{dir}/build-script-build"), 20_000, 0o755);
                add(&mut vfs, format!("{dir}/output"), 300, 0o644);
                add(&mut vfs, format!("{dir}/stderr"), 0, 0o644);
                add(&mut vfs, format!("{dir}/root-output"), 60, 0o644);
                add(&mut vfs, format!("{dir}/invoked.timestamp"), 0, 0o644);
                add(&mut vfs, format!("{dir}/build_script.d"), 400, 0o644);
            }
            for i in 0..60 {
                let dir = format!("{ROOT}/target/debug/incremental/unit{i:02}");
                vfs.mkdir(&dir).expect("mkdir");
                for f in 0..8 {
                    add(&mut vfs, format!("{dir}/part{f}.o"), 4_000 + f * 900, 0o644);
                }
            }
            let fingerprints = format!("{ROOT}/target/debug/.fingerprint");
            vfs.mkdir(&fingerprints).expect("mkdir");
            for c in 0..150 {
                add(
                    &mut vfs,
                    format!("{fingerprints}/crate{c:03}-lib"),
                    16,
                    0o644,
                );
            }
            for b in 0..4 {
                add(
                    &mut vfs,
                    format!("{ROOT}/target/debug/deps/app{b}-0123abcd"),
                    20 << 20,
                    0o755,
                );
            }
            add(
                &mut vfs,
                format!("{ROOT}/target/debug/app"),
                12 << 20,
                0o755,
            );
        }
    }
    (vfs, files, bytes)
}

/// CPU time (user + system) of this process (`RUSAGE_SELF`, all threads) or of its
/// waited-for children (`RUSAGE_CHILDREN`).
fn cpu(who: UsageWho) -> Duration {
    let usage = getrusage(who).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().unsigned_abs())
            + Duration::from_micros(t.tv_usec().unsigned_abs())
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

/// Runs `f` and returns its wall time and this process's CPU time for it.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let cpu0 = cpu(UsageWho::RUSAGE_SELF);
    let started = Instant::now();
    let value = f();
    let wall = started.elapsed();
    (value, wall, cpu(UsageWho::RUSAGE_SELF).saturating_sub(cpu0))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Runs a tool; returns its wall time and CPU time.
fn run_tool(program: &str, args: &[&str]) -> (Duration, Duration) {
    let cpu0 = cpu(UsageWho::RUSAGE_CHILDREN);
    let started = Instant::now();
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|err| {
            panic!("could not run {program}: {err} (install it, e.g. `apt-get install -y rsync`)")
        });
    let elapsed = started.elapsed();
    assert!(status.success(), "{program} {args:?} failed: {status}");
    (elapsed, cpu(UsageWho::RUSAGE_CHILDREN).saturating_sub(cpu0))
}

/// Wall and CPU samples of one contender.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Samples {
    fn add(&mut self, (wall, cpu): (Duration, Duration)) {
        self.wall.push(wall);
        self.cpu.push(cpu);
    }

    fn medians(self) -> (Duration, Duration) {
        (median(self.wall), median(self.cpu))
    }
}

/// Times one call of ours.
fn ours<T>(samples: &mut Samples, f: impl FnOnce() -> T) -> T {
    let (value, wall, cpu) = timed(f);
    samples.add((wall, cpu));
    value
}

fn remove(path: &Path) {
    if path.exists() {
        fs::remove_dir_all(path).expect("remove bench dir");
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `dir/` for rsync (copy contents).
fn slash(path: &Path) -> String {
    format!("{}/", path.display())
}

/// One table row: (wall, CPU) medians per contender.
struct Row {
    case: String,
    ours: (Duration, Duration),
    rsync: Option<(Duration, Duration)>,
    cp: Option<(Duration, Duration)>,
    note: String,
}

struct Reps {
    first: usize,
    noop: usize,
    one: usize,
    tool: usize,
    /// Writer/scanner threads of our side (`--threads N`); `None` = the crate's default.
    threads: Option<usize>,
}

fn edit_first_byte(content: &mut [u8], i: usize) {
    content[0] = content[0].wrapping_add(1 + (i % 200) as u8);
}

fn bench_tree(
    tree: Tree,
    fs_name: &str,
    defer_deletes: bool,
    base: &Path,
    reps: &Reps,
    rows: &mut Vec<Row>,
    checks: &mut Vec<String>,
) {
    let (mut vfs, files, bytes) = build(tree);
    let t = tree.name();
    let work = base.join(format!("{t}-{}", std::process::id()));
    remove(&work);
    fs::create_dir_all(&work).expect("bench dir");
    // A host copy of the tree as the source for rsync and cp.
    let src_staging = work.join("src-staging");
    let mut src_state = SyncState::new(&src_staging);
    push_full(&vfs, ROOT, &mut src_state).expect("source copy");
    let src = src_staging.join("proj");

    // 1. First push into an empty directory.
    let (mut o, mut r, mut c) = (Samples::default(), Samples::default(), Samples::default());
    // Every contender writes into a fresh directory, with no dirty data of the previous
    // one in flight (`sync`, not timed); deletions wait until the case is over, so one
    // tool's deletions do not slow the next one's file creations (ext4 without a journal
    // scans recently deleted inodes when allocating). The contenders take turns at going
    // first: what one leaves behind (freed memory the next one's page cache reuses, dirty
    // inode tables) must not favour the same one in every repetition.
    for rep in 0..reps.first {
        for turn in 0..3 {
            nix::unistd::sync();
            match (rep + turn) % 3 {
                0 => {
                    let mut state = SyncState::new(work.join(format!("first-ours-{rep}")));
                    if let Some(threads) = reps.threads {
                        state.set_threads(threads);
                    }
                    ours(&mut o, || {
                        push_full(&vfs, ROOT, &mut state).expect("first push")
                    });
                }
                1 => r.add(run_tool(
                    "rsync",
                    &[
                        "-a",
                        &slash(&src),
                        &p(&work.join(format!("first-rsync-{rep}"))),
                    ],
                )),
                _ => c.add(run_tool(
                    "cp",
                    &["-a", &p(&src), &p(&work.join(format!("first-cp-{rep}")))],
                )),
            }
        }
    }
    // On the disk nothing is deleted until the filesystem's whole run is over: ext4
    // without a journal skips inodes freed in the last 60 s (360 s while their table
    // block is dirty) when it allocates, scanning past each one, so deleting ~30,000
    // entries here would make every later case pay for this one's clean-up.
    if !defer_deletes {
        for rep in 0..reps.first {
            for tool in ["ours", "rsync", "cp"] {
                remove(&work.join(format!("first-{tool}-{rep}")));
            }
        }
    }
    nix::unistd::sync();
    let (o, c) = (o.medians(), c.medians());
    rows.push(Row {
        case: format!(
            "{t} first push ({files} files, {:.1} MiB)",
            bytes as f64 / 1_048_576.0
        ),
        ours: o,
        rsync: Some(r.medians()),
        cp: Some(c),
        note: String::new(),
    });
    if tree == Tree::T2 {
        let wall_ratio = c.0.as_secs_f64() / o.0.as_secs_f64();
        let cpu_ratio = c.1.as_secs_f64() / o.1.as_secs_f64();
        checks.push(format!(
            "[{}] {fs_name}: first push T2 {wall_ratio:.1}× faster than cp -a (wall), {cpu_ratio:.1}× less CPU (target ≥ 2.5× wall)",
            if wall_ratio >= 2.5 { "PASS" } else { "FAIL" },
        ));
    }

    // Steady state for the incremental cases: our staging, rsync's and cp's copies.
    let staging = work.join("ours");
    remove(&staging);
    let mut state = SyncState::new(&staging);
    if let Some(threads) = reps.threads {
        state.set_threads(threads);
    }
    push_full(&vfs, ROOT, &mut state).expect("push");
    let leaf = staging.join("proj");
    let rsync_dst = work.join("rsync");
    let cp_dst = work.join("cp");
    run_tool("rsync", &["-a", &slash(&src), &p(&rsync_dst)]);
    run_tool("cp", &["-a", &p(&src), &p(&cp_dst)]);
    // Let the coarse clock move past everything just written (racy-entry rule).
    std::thread::sleep(Duration::from_millis(20));
    let settle = pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).expect("settle pull");
    assert_eq!(
        settle.files_written, 0,
        "settle pull changed the VFS: {settle}"
    );

    // 2. No-op push.
    let (mut o, mut r, mut c) = (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..reps.noop {
        let report = ours(&mut o, || {
            push_incremental(&vfs, ROOT, &mut state).expect("noop push")
        });
        assert!(report.is_noop(), "{report}");
    }
    for _ in 0..reps.tool {
        r.add(run_tool("rsync", &["-a", &slash(&src), &slash(&rsync_dst)]));
        c.add(run_tool("cp", &["-a", "-u", "-T", &p(&src), &p(&cp_dst)]));
    }
    let o = o.medians();
    rows.push(Row {
        case: format!("{t} no-op push"),
        ours: o,
        rsync: Some(r.medians()),
        cp: Some(c.medians()),
        note: "cp is `cp -a -u`".into(),
    });
    if tree == Tree::T2 {
        checks.push(format!(
            "[{}] {fs_name}: no-op push T2 {} (target ≤ 0.5 ms)",
            if o.0 <= Duration::from_micros(500) {
                "PASS"
            } else {
                "FAIL"
            },
            fmt_dur(o.0)
        ));
    }

    // 3. Push after one change (a different small file each time).
    let small: Vec<String> = vfs
        .walk(ROOT)
        .expect("walk")
        .filter(|e| {
            e.node
                .content()
                .expect("bench trees hold no lazy content")
                .is_some_and(|c| !c.is_empty() && c.len() <= 64 * 1024)
        })
        .map(|e| e.path)
        .take(reps.one.max(reps.tool))
        .collect();
    let (mut o, mut r, mut c) = (Samples::default(), Samples::default(), Samples::default());
    for (i, path) in small.iter().take(reps.one).enumerate() {
        let mut content = vfs.read_file(path).expect("read").to_vec();
        edit_first_byte(&mut content, i);
        vfs.write_file(path, content).expect("edit");
        let report = ours(&mut o, || {
            push_incremental(&vfs, ROOT, &mut state).expect("1-change push")
        });
        assert_eq!(report.files_written, 1, "{report}");
    }
    for (i, path) in small.iter().take(reps.tool).enumerate() {
        let host = src.join(&path[ROOT.len() + 1..]);
        let mut content = fs::read(&host).expect("read");
        edit_first_byte(&mut content, i);
        fs::write(&host, content).expect("edit source");
        r.add(run_tool("rsync", &["-a", &slash(&src), &slash(&rsync_dst)]));
        c.add(run_tool("cp", &["-a", "-u", "-T", &p(&src), &p(&cp_dst)]));
    }
    let o = o.medians();
    rows.push(Row {
        case: format!("{t} push after 1 change"),
        ours: o,
        rsync: Some(r.medians()),
        cp: Some(c.medians()),
        note: "cp is `cp -a -u`".into(),
    });
    if tree == Tree::T2 {
        checks.push(format!(
            "[{}] {fs_name}: 1-change push T2 {} (target ≤ 1 ms)",
            if o.0 <= Duration::from_millis(1) {
                "PASS"
            } else {
                "FAIL"
            },
            fmt_dur(o.0)
        ));
    }

    // 4. No-op pull (rsync: staging → source direction, nothing changed).
    std::thread::sleep(Duration::from_millis(20));
    pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).expect("settle");
    let (mut o, mut r) = (Samples::default(), Samples::default());
    let mut read = 0;
    for _ in 0..reps.noop.min(41) {
        let report = ours(&mut o, || {
            pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).expect("noop pull")
        });
        read += report.bytes_read;
        assert_eq!(report.files_written, 0, "{report}");
    }
    for _ in 0..reps.tool {
        r.add(run_tool("rsync", &["-a", &slash(&rsync_dst), &slash(&src)]));
    }
    let o = o.medians();
    rows.push(Row {
        case: format!("{t} no-op pull"),
        ours: o,
        rsync: Some(r.medians()),
        cp: None,
        note: format!("file bytes read by ours: {read}"),
    });
    if tree == Tree::T2 {
        checks.push(format!(
            "[{}] {fs_name}: no-op pull T2 {} ({} CPU) with {read} file bytes read (target ≤ 15 ms, 0 bytes)",
            if o.0 <= Duration::from_millis(15) && read == 0 { "PASS" } else { "FAIL" },
            fmt_dur(o.0),
            fmt_dur(o.1)
        ));
    }

    // 5. Pull after one host change.
    let (mut o, mut r) = (Samples::default(), Samples::default());
    for (i, path) in small.iter().take(reps.one).enumerate() {
        let host = leaf.join(&path[ROOT.len() + 1..]);
        let mut content = fs::read(&host).expect("read");
        edit_first_byte(&mut content, i);
        fs::write(&host, content).expect("tool edit");
        let report = ours(&mut o, || {
            pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).expect("1-change pull")
        });
        assert!(report.files_written >= 1, "{report}");
    }
    for (i, path) in small.iter().take(reps.tool).enumerate() {
        let host = rsync_dst.join(&path[ROOT.len() + 1..]);
        let mut content = fs::read(&host).expect("read");
        edit_first_byte(&mut content, i);
        fs::write(&host, content).expect("tool edit");
        r.add(run_tool("rsync", &["-a", &slash(&rsync_dst), &slash(&src)]));
    }
    rows.push(Row {
        case: format!("{t} pull after 1 host change"),
        ours: o.medians(),
        rsync: Some(r.medians()),
        cp: None,
        note: String::new(),
    });
    if !defer_deletes {
        remove(&work);
    }
}

/// Child mode: T3 push + push (1 change) + pull (1 host change) in `dir`; prints
/// `content_bytes vmhwm_bytes`.
fn rss_child(dir: &Path) {
    let (mut vfs, _files, bytes) = build(Tree::T3);
    let mut state = SyncState::new(dir);
    push_full(&vfs, ROOT, &mut state).expect("push");
    let path = format!("{ROOT}/src/mod00/file0.rs");
    let mut content = vfs.read_file(&path).expect("read").to_vec();
    content[0] ^= 1;
    vfs.write_file(&path, content).expect("edit");
    push_incremental(&vfs, ROOT, &mut state).expect("push 2");
    fs::write(
        dir.join("proj/target/debug/new-artifact"),
        vec![1u8; 1 << 20],
    )
    .expect("host edit");
    let report = pull_workspace_to_vfs(&mut state, ROOT, &mut vfs).expect("pull");
    assert!(report.files_written >= 1);
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    println!("{} {}", bytes + (1 << 20), hwm_kib * 1024);
}

/// How long ext4 without a journal passes over a freed inode when it allocates:
/// `recently_deleted()` in `fs/ext4/ialloc.c` skips inodes freed in the last 60 s, and in
/// the last 60 + 300 s while their inode table block is dirty, which new allocations in
/// the same block make it again. Plus a margin.
const DISK_COOLDOWN: Duration = Duration::from_secs(370);

/// Marker whose mtime is the end of the last disk run's clean-up.
fn disk_cleanup_marker() -> PathBuf {
    std::env::temp_dir().join("devshell-sync-bench.cleaned")
}

/// Records when this run's disk clean-up was over.
fn mark_disk_cleanup() {
    nix::unistd::sync();
    fs::write(disk_cleanup_marker(), b"").expect("write the disk clean-up marker");
}

/// Waits until the previous run's deletions on the disk no longer slow down inode
/// allocation, so a run does not measure the one before it.
fn wait_for_disk_cooldown() {
    let Ok(meta) = fs::metadata(disk_cleanup_marker()) else {
        return;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(DISK_COOLDOWN);
    if let Some(rest) = DISK_COOLDOWN.checked_sub(age) {
        eprintln!(
            "bench sync: the last run deleted its disk trees {:.0} s ago; waiting {:.0} s so \
             ext4 no longer passes over those inodes when it allocates",
            age.as_secs_f64(),
            rest.as_secs_f64()
        );
        std::thread::sleep(rest);
    }
}

/// A fresh ext4 filesystem (mkfs defaults, so with a journal) in a sparse image file,
/// loop-mounted for one run; unmounted and removed on drop.
struct ScratchExt4 {
    image: PathBuf,
    mount_point: PathBuf,
}

impl ScratchExt4 {
    const HOW: &str = "`--fs ext4` makes an ext4 image with mkfs.ext4 and loop-mounts it: it \
                       needs root, e2fsprogs (`apt-get install -y e2fsprogs`) and loop \
                       devices; leave it out with `--fs shm,disk`";

    /// Fails with [`Self::HOW`] unless this process is root and `mkfs.ext4` runs.
    fn check_prerequisites() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "not running as root; {}",
            Self::HOW
        );
        let mkfs = Command::new("mkfs.ext4").arg("-V").output();
        assert!(
            mkfs.is_ok_and(|o| o.status.success()),
            "`mkfs.ext4 -V` did not run; {}",
            Self::HOW
        );
    }

    fn create() -> Self {
        let tmp = std::env::temp_dir();
        let image = tmp.join(format!("devshell-sync-bench-{}.ext4", std::process::id()));
        let mount_point = tmp.join(format!("devshell-sync-bench-{}.mnt", std::process::id()));
        let file = fs::File::create(&image).expect("create the ext4 image file");
        file.set_len(8 << 30).expect("size the ext4 image file");
        drop(file);
        let step = |program: &str, args: &[&str]| {
            let out = Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|err| panic!("could not run {program}: {err}; {}", Self::HOW));
            assert!(
                out.status.success(),
                "{program} {args:?} failed: {}; {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                Self::HOW
            );
        };
        // One inode per 4 KiB: T2's first-push repetitions create ~32,000 inodes each.
        // Inode tables and journal are initialised now, not by a kernel thread writing
        // in the background while we measure (as on any filesystem past its first hour).
        step(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-i",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &p(&image),
            ],
        );
        fs::create_dir_all(&mount_point).expect("create the mount point");
        let scratch = Self { image, mount_point };
        step(
            "mount",
            &["-o", "loop", &p(&scratch.image), &p(&scratch.mount_point)],
        );
        scratch
    }
}

impl Drop for ScratchExt4 {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|s| s.success());
        if unmounted {
            let _ = fs::remove_dir(&self.mount_point);
            let _ = fs::remove_file(&self.image);
        } else {
            eprintln!(
                "bench sync: could not unmount {}; remove it and {} by hand",
                self.mount_point.display(),
                self.image.display()
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(pos) = args.iter().position(|a| a == "--rss-child") {
        rss_child(Path::new(&args[pos + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let pick = |flag: &str, all: &str| -> Vec<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map_or(all, String::as_str)
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    let trees: Vec<Tree> = pick("--trees", "T1,T2,T3")
        .iter()
        .map(|t| match t.as_str() {
            "T1" => Tree::T1,
            "T2" => Tree::T2,
            "T3" => Tree::T3,
            other => panic!("unknown tree {other}"),
        })
        .collect();
    let filesystems = pick("--fs", "shm,disk,ext4");
    let threads: Option<usize> = args.iter().position(|a| a == "--threads").map(|i| {
        args.get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .expect("--threads takes a positive number")
    });
    for tool in ["rsync", "cp"] {
        assert!(
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "the sync benchmark compares against `{tool}`: install it (e.g. `apt-get install -y rsync`)"
        );
    }
    // Checked before any case runs, so a missing prerequisite costs no finished figures.
    if filesystems.iter().any(|f| f == "ext4") {
        ScratchExt4::check_prerequisites();
    }
    let mut report = String::new();
    let mut checks = Vec::new();
    for fs_name in &filesystems {
        // On the disk (an ext4 without a journal here) nothing is deleted until the
        // whole run is over, see `bench_tree`; tmpfs and the journalled scratch ext4
        // do not look at deleted inodes when they allocate, so they are cleaned as we go.
        let mut scratch = None;
        let (base, defer_deletes): (PathBuf, bool) = match fs_name.as_str() {
            "shm" => (PathBuf::from("/dev/shm/devshell-sync-bench"), false),
            "disk" => {
                wait_for_disk_cooldown();
                (std::env::temp_dir().join("devshell-sync-bench"), true)
            }
            "ext4" => {
                let fs = ScratchExt4::create();
                let base = fs.mount_point.join("devshell-sync-bench");
                scratch = Some(fs);
                (base, false)
            }
            other => panic!("unknown fs {other} (shm, disk, ext4)"),
        };
        fs::create_dir_all(&base).expect("bench base");
        let mut rows = Vec::new();
        for &tree in &trees {
            let reps = match (tree, quick) {
                (Tree::T3, true) => Reps {
                    first: 1,
                    noop: 21,
                    one: 11,
                    tool: 1,
                    threads,
                },
                (Tree::T3, false) | (_, true) => Reps {
                    first: 3,
                    noop: 51,
                    one: 21,
                    tool: 3,
                    threads,
                },
                (_, false) => Reps {
                    first: 7,
                    noop: 201,
                    one: 51,
                    tool: 7,
                    threads,
                },
            };
            eprintln!("bench sync: {} on {fs_name}…", tree.name());
            bench_tree(
                tree,
                fs_name,
                defer_deletes,
                &base,
                &reps,
                &mut rows,
                &mut checks,
            );
        }
        let _ = fs::remove_dir_all(&base);
        if fs_name == "disk" {
            mark_disk_cleanup();
        }
        drop(scratch);
        let _ = writeln!(report, "\n### {fs_name} (`{}`)\n", base.display());
        let _ = writeln!(
            report,
            "| case | ours wall | rsync -a wall | cp -a wall | rsync/ours | cp/ours | ours CPU | rsync CPU | cp CPU | note |"
        );
        let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for row in rows {
            let ratio = |other: Option<(Duration, Duration)>| {
                other.map_or("–".to_owned(), |d| {
                    format!("{:.1}×", d.0.as_secs_f64() / row.ours.0.as_secs_f64())
                })
            };
            let wall =
                |d: Option<(Duration, Duration)>| d.map_or("–".to_owned(), |d| fmt_dur(d.0));
            let cpu =
                |d: Option<(Duration, Duration)>| d.map_or("–".to_owned(), |d| fmt_dur(d.1));
            let _ = writeln!(
                report,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.case,
                fmt_dur(row.ours.0),
                wall(row.rsync),
                wall(row.cp),
                ratio(row.rsync),
                ratio(row.cp),
                fmt_dur(row.ours.1),
                cpu(row.rsync),
                cpu(row.cp),
                row.note
            );
        }
    }
    if trees.contains(&Tree::T3) {
        // Memory use does not depend on the filesystem's allocator: the scratch ext4 is
        // gone by now and the disk figure stands for it.
        for fs_name in filesystems.iter().filter(|f| *f != "ext4") {
            let base = if fs_name == "shm" {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!("devshell-sync-rss-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let out = Command::new(std::env::current_exe().expect("own path"))
                .args(["--rss-child", &dir.display().to_string()])
                .output()
                .expect("spawn RSS child");
            let _ = fs::remove_dir_all(&dir);
            assert!(
                out.status.success(),
                "RSS child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text
                .split_whitespace()
                .map(|v| v.parse::<u64>().expect("number"));
            let (content, hwm) = (parts.next().expect("content"), parts.next().expect("hwm"));
            let ratio = hwm as f64 / content as f64;
            let _ = writeln!(
                report,
                "\nPeak RSS of T3 push + push + pull on {fs_name}: {:.1} MiB for {:.1} MiB of content = {ratio:.2}×",
                hwm as f64 / 1_048_576.0,
                content as f64 / 1_048_576.0
            );
            checks.push(format!(
                "[{}] {fs_name}: peak RSS T3 {ratio:.2}× content (target ≤ 1.2×)",
                if ratio <= 1.2 { "PASS" } else { "FAIL" }
            ));
        }
    }
    println!("{report}");
    println!("\nTargets:");
    for check in checks {
        println!("- {check}");
    }
}
