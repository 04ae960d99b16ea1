//! One first push of a T2-like tree (10,000 × 1 KiB files in 500 directories) into
//! `<dir>/staging` — a driver for `strace -c -f` / `perf stat` comparisons of the
//! per-file cost. Usage: `first_push <dir> [threads]`.

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
    let mut vfs = Vfs::new();
    for d in 0..500 {
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
