//! One first push into `<dir>/staging` — a driver for `strace -c -f` / `perf`
//! comparisons of the per-file cost. Trees: `t2` (default) 10,000 × 1 KiB files in 500
//! directories; `big` 900 files of 40–270 KiB plus five binaries of 12–20 MiB (the
//! large-file part of the bench's T3). Usage: `first_push <dir> [threads] [t2|big]`.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    reason = "a small measuring driver"
)]

use std::time::{Duration, UNIX_EPOCH};

use devshell_vm_sync::{SyncState, push_full};
use devshell_vm_vfs::Vfs;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: first_push <dir> [threads]");
    let threads: usize = args.next().map_or(2, |t| t.parse().expect("threads"));
    let tree = args.next().unwrap_or_else(|| "t2".to_owned());
    let mut vfs = Vfs::new();
    if tree == "big" {
        vfs.mkdir("/proj/deps").unwrap();
        for c in 0..900usize {
            let len = 40_000 + (c % 7) * 40_000;
            vfs.write_file_with(
                &format!("/proj/deps/f{c:03}"),
                vec![u8::try_from(c % 251).unwrap(); len],
                0o644,
                UNIX_EPOCH,
            )
            .unwrap();
        }
        for b in 0..5usize {
            vfs.write_file_with(
                &format!("/proj/deps/app{b}"),
                vec![u8::try_from(b).unwrap(); if b == 4 { 12 << 20 } else { 20 << 20 }],
                0o755,
                UNIX_EPOCH,
            )
            .unwrap();
        }
    }
    for d in 0..if tree == "big" { 0 } else { 500 } {
        vfs.mkdir(&format!("/proj/d{d:03}")).unwrap();
        for f in 0..20u64 {
            vfs.write_file_with(
                &format!("/proj/d{d:03}/f{f:02}.rs"),
                vec![b'x'; 1024],
                0o644,
                UNIX_EPOCH + Duration::from_secs(1_700_000_000 + f),
            )
            .unwrap();
        }
    }
    let mut state = SyncState::new(format!("{dir}/staging"));
    state.set_threads(threads);
    let report = push_full(&vfs, "/proj", &mut state).unwrap();
    println!("{report}");
}
