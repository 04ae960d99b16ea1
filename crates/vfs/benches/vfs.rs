//! VFS benchmark suite (`cargo xtask bench vfs`): tree build, list/read per call, walk,
//! `changes_since` with one change, image save/load on tmpfs and disk.
//!
//! Arguments after `--`: `--quick` for fewer repetitions; `tree` and/or `images` to run
//! only those sections.

#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)] // bench code

use std::hint::black_box;
use std::time::{Duration, Instant};

use devshell_vm_test_support::bench::{
    fmt_duration, mb_per_s, median, peak_rss_bytes, report, scratch_dirs,
};
use devshell_vm_vfs::{Content, Vfs, image};

const DIRS: usize = 1_000;
const FILES_PER_DIR: usize = 100;

fn file_path(dir: usize, file: usize) -> String {
    format!("/ws/d{dir:04}/f{file:03}.rs")
}

/// 100k files in 1k directories; `content(i)` gives each file its bytes.
fn build_with(mut content: impl FnMut() -> Content) -> Vfs {
    let mut vfs = Vfs::new();
    for dir in 0..DIRS {
        vfs.mkdir(&format!("/ws/d{dir:04}")).unwrap();
        for file in 0..FILES_PER_DIR {
            vfs.write_file(&file_path(dir, file), content()).unwrap();
        }
    }
    vfs
}

/// 100k files of `size` bytes, each with its own copy of the bytes.
fn build(size: usize) -> Vfs {
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    build_with(|| Content::from(&bytes[..]))
}

/// Time this thread has spent on a CPU (`/proc/thread-self/schedstat`, nanoseconds).
/// On a shared machine this shows what the work costs, apart from waiting for a core.
fn on_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Times `f` `runs` times (wall clock); each result is dropped outside the timed region.
fn timed<T>(runs: usize, f: impl FnMut() -> T) -> Vec<Duration> {
    timed_both(runs, f).0
}

/// Like [`timed`], also returning the sorted on-CPU times.
fn timed_both<T>(runs: usize, mut f: impl FnMut() -> T) -> (Vec<Duration>, Vec<Duration>) {
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let cpu_before = on_cpu();
        let started = Instant::now();
        let value = black_box(f());
        wall.push(started.elapsed());
        if let (Some(before), Some(after)) = (cpu_before, on_cpu()) {
            cpu.push(after.saturating_sub(before));
        }
        drop(value);
    }
    wall.sort();
    cpu.sort();
    (wall, cpu)
}

/// Times `per_batch` calls of `f` per sample; returns the per-call median.
fn per_call(label: &str, batches: usize, per_batch: usize, mut f: impl FnMut(usize)) {
    let mut samples = Vec::with_capacity(batches);
    let mut i = 0;
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..per_batch {
            f(i);
            i += 1;
        }
        samples.push(started.elapsed() / per_batch as u32);
    }
    samples.sort();
    let _ = report(label, &samples);
}

/// Reports the wall-clock median and, when available, the on-CPU median.
fn report_both(label: &str, (wall, cpu): &(Vec<Duration>, Vec<Duration>)) {
    let _ = report(label, wall);
    if !cpu.is_empty() {
        println!("    on-CPU median {}", fmt_duration(median(cpu)));
    }
}

fn bench_build(runs: usize) {
    report_both(
        "vfs/build 100k files x 1 KiB in 1k dirs",
        &timed_both(runs, || build(1024)),
    );
    let shared = Content::from(vec![7u8; 1024]);
    report_both(
        "vfs/build 100k files (one shared 1 KiB content)",
        &timed_both(runs, || build_with(|| Content::clone(&shared))),
    );
}

fn bench_reads(vfs: &Vfs, runs: usize) {
    per_call("vfs/list_dir (100 entries) per call", 21, 2_000, |i| {
        black_box(vfs.list_dir(&format!("/ws/d{:04}", i % DIRS)).unwrap());
    });
    per_call("vfs/list_dir (/ws: 1000 entries) per call", 21, 200, |_| {
        black_box(vfs.list_dir("/ws").unwrap());
    });
    per_call("vfs/read_file per call", 21, 20_000, |i| {
        let n = i.wrapping_mul(7919) % (DIRS * FILES_PER_DIR);
        black_box(
            vfs.read_file(&file_path(n / FILES_PER_DIR, n % FILES_PER_DIR))
                .unwrap(),
        );
    });
    per_call("vfs/stat per call", 21, 20_000, |i| {
        let n = i.wrapping_mul(7919) % (DIRS * FILES_PER_DIR);
        black_box(
            vfs.stat(&file_path(n / FILES_PER_DIR, n % FILES_PER_DIR))
                .unwrap(),
        );
    });
    let samples = timed(runs, || {
        let mut bytes = 0u64;
        let mut count = 0usize;
        for entry in vfs.walk("/").unwrap() {
            count += 1;
            bytes += entry.node.metadata().size;
        }
        assert_eq!(count, vfs.node_count());
        bytes
    });
    let _ = report("vfs/walk whole tree (101k nodes)", &samples);
    let _ = report(
        "vfs/clone of the 100k tree (contents shared)",
        &timed(runs, || vfs.clone()),
    );
}

fn bench_changes(vfs: &mut Vfs) {
    let since = vfs.generation();
    vfs.write_file(&file_path(517, 42), b"changed".to_vec())
        .unwrap();
    let changes = vfs.changes_since("/", since).unwrap();
    assert_eq!(changes.upserted, [file_path(517, 42)]);
    per_call(
        "vfs/changes_since(/) with 1 change in 100k",
        21,
        1_000,
        |_| {
            black_box(vfs.changes_since("/", since).unwrap());
        },
    );
    per_call(
        "vfs/changes_since(/ws/d0517) with 1 change",
        21,
        1_000,
        |_| {
            black_box(vfs.changes_since("/ws/d0517", since).unwrap());
        },
    );
    let since = vfs.generation();
    vfs.remove(&file_path(3, 3)).unwrap();
    vfs.write_file(&file_path(900, 1), b"x".to_vec()).unwrap();
    let changes = vfs.changes_since("/", since).unwrap();
    assert_eq!((changes.deleted.len(), changes.upserted.len()), (1, 1));
    per_call(
        "vfs/changes_since(/) with 1 delete + 1 write",
        21,
        1_000,
        |_| {
            black_box(vfs.changes_since("/", since).unwrap());
        },
    );
    let since = vfs.generation();
    per_call("vfs/changes_since(/) with no change", 21, 1_000, |_| {
        black_box(vfs.changes_since("/", since).unwrap());
    });
}

/// Images of a ~200 MiB tree: 100k files x 2 KiB.
fn bench_images(runs: usize) {
    let big = build(2048);
    let image_bytes = image::to_bytes(&big).unwrap();
    let size = image_bytes.len() as u64;
    println!(
        "vfs/image size: {:.1} MiB ({size} bytes)",
        size as f64 / 1_048_576.0
    );
    let throughput = |label: &str, (wall, cpu): (Vec<Duration>, Vec<Duration>)| {
        let med = report(label, &wall);
        print!("    -> {:.0} MB/s wall", mb_per_s(size, med));
        if cpu.is_empty() {
            println!();
        } else {
            let cpu_med = median(&cpu);
            println!(
                "; on-CPU median {} -> {:.0} MB/s",
                fmt_duration(cpu_med),
                mb_per_s(size, cpu_med)
            );
        }
    };
    throughput(
        "vfs/image to_bytes (memory)",
        timed_both(runs, || image::to_bytes(&big).unwrap()),
    );
    throughput(
        "vfs/image from_bytes (memory)",
        timed_both(runs, || image::from_bytes(&image_bytes).unwrap()),
    );
    drop(image_bytes);
    for (place, dir) in scratch_dirs("devshell-vm-vfs-bench") {
        let path = dir.path().join("ws.img");
        // One untimed round first, so every place starts with the same warm allocator
        // (a cold process additionally pays page faults: see the max of the first place).
        image::save(&big, &path).unwrap();
        drop(image::load(&path).unwrap());
        throughput(
            &format!("vfs/image save ({place}, incl. fsync)"),
            timed_both(runs, || image::save(&big, &path).unwrap()),
        );
        throughput(
            &format!("vfs/image load ({place}, warm page cache)"),
            timed_both(runs, || image::load(&path).unwrap()),
        );
        assert!(image::load(&path).unwrap().same_tree(&big));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs = if quick { 3 } else { 7 };
    // Optional section filter: `tree` and/or `images` (default: both).
    let sections: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| matches!(*a, "tree" | "images"))
        .collect();
    let wants = |section: &str| sections.is_empty() || sections.contains(&section);
    if wants("tree") {
        bench_build(runs);
        let mut vfs = build(1024);
        assert_eq!(vfs.node_count(), 1 + 1 + DIRS + DIRS * FILES_PER_DIR);
        bench_reads(&vfs, runs);
        bench_changes(&mut vfs);
    }
    if wants("images") {
        bench_images(runs);
    }
    if let Some(peak) = peak_rss_bytes() {
        println!("vfs/peak RSS: {:.0} MiB", peak as f64 / 1_048_576.0);
    }
}
