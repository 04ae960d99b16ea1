//! Change-tracked pulls give exactly what a full scan gives.
//!
//! A property test: random tool actions on disk — create, modify in place, truncate,
//! chmod, mtime changes, renames across directories (files and whole directories),
//! deletions of subtrees, symlinks, new nested directories — run as a real `sh` in the
//! session; after every run the VFS must equal the staging tree on disk (kinds, modes,
//! nanosecond mtimes, contents, link targets), which is what a full scan would import.
//! Some files are large enough (≥ 64 KiB) to be pulled as lazy content, so later
//! actions rewrite, truncate, rename and delete files the VFS holds by descriptor.
//! The fallback paths (queue overflow, watch limit) are in `tests/pull_fallback.rs`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{config, sh_out};
use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::HostSandboxSession;
use devshell_vm_vfs::{NodeKind, Vfs};
use proptest::prelude::*;

/// What a path holds, as both sides can tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir {
        mode: u32,
        mtime_ns: i128,
    },
    File {
        mode: u32,
        mtime_ns: i128,
        content: Vec<u8>,
    },
    Link {
        target: String,
    },
}

fn host_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        for entry in std::fs::read_dir(&dir).expect("list host dir").flatten() {
            let name = entry
                .file_name()
                .into_string()
                .expect("UTF-8 names in tests");
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = root.join(&child);
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            let mode = meta.permissions().mode() & 0o7777;
            let value = if meta.file_type().is_symlink() {
                Entry::Link {
                    target: std::fs::read_link(&path)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned(),
                }
            } else if meta.is_dir() {
                stack.push(child.clone());
                Entry::Dir { mode, mtime_ns }
            } else {
                Entry::File {
                    mode,
                    mtime_ns,
                    content: std::fs::read(&path).expect("read"),
                }
            };
            out.insert(child, value);
        }
    }
    out
}

fn vfs_tree(vfs: &Vfs, root: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for item in vfs.walk(root).expect("walk") {
        let path = item.path.clone();
        let Some(rel) = path.strip_prefix(&format!("{root}/")) else {
            continue;
        };
        let meta = item.node.metadata();
        let mtime = meta
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch");
        let mtime_ns = i128::try_from(mtime.as_nanos()).expect("fits");
        let value = match meta.kind {
            NodeKind::Dir => Entry::Dir {
                mode: meta.mode,
                mtime_ns,
            },
            NodeKind::File => Entry::File {
                mode: meta.mode,
                mtime_ns,
                content: item
                    .content()
                    .expect("readable")
                    .expect("file content")
                    .to_vec(),
            },
            NodeKind::Symlink => Entry::Link {
                target: item.node.link_target().expect("target").to_owned(),
            },
        };
        out.insert(rel.to_owned(), value);
    }
    out
}

/// Paths the actions pick from: a few directories (nested) and names.
const DIRS: &[&str] = &["", "a", "a/b", "a/b/c", "d", "d/e"];
const NAMES: &[&str] = &["f", "g", "h.rs"];

fn path(dir: usize, name: usize) -> String {
    let dir = DIRS[dir % DIRS.len()];
    let name = NAMES[name % NAMES.len()];
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn dir(dir: usize) -> &'static str {
    let d = DIRS[dir % DIRS.len()];
    if d.is_empty() { "." } else { d }
}

fn action() -> impl Strategy<Value = String> {
    let d = 0..DIRS.len();
    let n = 0..NAMES.len();
    prop_oneof![
        (d.clone(), n.clone(), "[a-z]{0,12}").prop_map(|(d, n, text)| {
            let p = path(d, n);
            format!("mkdir -p \"$(dirname {p})\" && printf '{text}' > {p}")
        }),
        (
            d.clone(),
            n.clone(),
            prop::sample::select(vec![2_u32, 65_540])
        )
            .prop_map(|(d, n, at)| {
                format!(
                    "printf Z | dd of={} bs=1 seek={at} conv=notrunc 2>/dev/null",
                    path(d, n)
                )
            }),
        (d.clone(), n.clone(), 0..6_u32)
            .prop_map(|(d, n, size)| format!("truncate -s {size} {}", path(d, n))),
        (
            d.clone(),
            n.clone(),
            prop::sample::select(vec!["600", "644", "755", "700"])
        )
            .prop_map(|(d, n, mode)| format!("chmod {mode} {}", path(d, n))),
        (d.clone(), n.clone(), 1_000_000_u32..2_000_000)
            .prop_map(|(d, n, t)| format!("touch -h -d @{t} {}", path(d, n))),
        (d.clone(), n.clone(), d.clone(), n.clone()).prop_map(|(d1, n1, d2, n2)| {
            let to = path(d2, n2);
            format!(
                "mkdir -p \"$(dirname {to})\" && mv -f {} {to}",
                path(d1, n1)
            )
        }),
        (1..DIRS.len(), d.clone()).prop_map(|(from, to)| {
            format!("mkdir -p {} && mv {} {}/moved", dir(to), dir(from), dir(to))
        }),
        (1..DIRS.len()).prop_map(|d| format!("rm -rf {}", dir(d))),
        (d.clone(), n.clone(), "[a-z./]{1,8}").prop_map(|(d, n, target)| {
            let p = path(d, n);
            format!("mkdir -p \"$(dirname {p})\" && ln -sfn '{target}' {p}")
        }),
        (d.clone(), "[a-z]{1,4}").prop_map(|(d, name)| format!(
            "mkdir -p {}/{name}/x/y && echo new > {}/{name}/x/y/z",
            dir(d),
            dir(d)
        )),
        (d.clone(), n.clone()).prop_map(|(d, n)| format!(
            "chmod 700 {} ; touch {}",
            dir(d),
            path(d, n)
        )),
        // Large enough to come back as lazy content (the sync crate's default threshold,
        // 64 KiB): the VFS then holds a descriptor on the staging file, which later
        // rounds rewrite in place, truncate, rename or delete.
        (d, n, "[a-z]{1,6}", 65_536_u32..70_000).prop_map(|(d, n, text, size)| {
            let p = path(d, n);
            format!("mkdir -p \"$(dirname {p})\" && yes {text} | head -c {size} > {p}")
        }),
    ]
}

fn start(base: &Path) -> (HostSandboxSession, Vfs) {
    let mut session = HostSandboxSession::new(&config(base));
    let mut vfs = Vfs::new();
    for d in ["/p/a/b/c", "/p/d/e"] {
        vfs.mkdir(d).expect("mkdir");
    }
    for (file, text) in [
        ("/p/f", "root"),
        ("/p/a/g", "ag"),
        ("/p/a/b/c/h.rs", "fn x() {}"),
        ("/p/d/e/f", "def"),
    ] {
        vfs.write_file(file, text).expect("write");
    }
    vfs.symlink("a/g", "/p/link").expect("symlink");
    session.ensure_ready(&vfs, "/p").expect("ready");
    (session, vfs)
}

fn leaf(session: &HostSandboxSession) -> std::path::PathBuf {
    session.staging_dir().expect("staging").join("0/p")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tracked_pulls_equal_the_tree_on_disk(rounds in prop::collection::vec(prop::collection::vec(action(), 1..8), 1..4)) {
        let base = tempfile::tempdir().expect("tempdir");
        let (mut session, mut vfs) = start(base.path());
        for script in &rounds {
            let script = format!("{} ; true", script.join(" ; "));
            let outcome = sh_out(&mut session, &mut vfs, "/p", &script);
            let host = host_tree(&leaf(&session));
            let mem = vfs_tree(&vfs, "/p");
            prop_assert_eq!(&mem, &host, "after `{}` (pull: {:?})", script, outcome.pull);
        }
        prop_assert_eq!(session.stats().unwatched_runs, 0);
        session.shutdown().expect("shutdown");
    }
}

#[test]
fn a_change_pulls_only_its_directories() {
    let base = tempfile::tempdir().expect("tempdir");
    let (mut session, mut vfs) = start(base.path());
    // Many directories that nothing touches.
    let many = "i=0; while [ $i -lt 200 ]; do mkdir -p wide/$i/x && echo $i > wide/$i/x/f; i=$((i+1)); done";
    let _ = sh_out(&mut session, &mut vfs, "/p", many);
    let outcome = sh_out(&mut session, &mut vfs, "/p", "echo edit >> a/b/c/h.rs");
    let pull = outcome.pull.expect("pulled");
    assert!(!pull.full_scan, "{pull:?}");
    assert!(
        pull.dirs_scanned <= 3,
        "only a/b/c and its parent: {pull:?}"
    );
    assert_eq!(pull.files_read, 1, "{pull:?}");
    assert_eq!(vfs_tree(&vfs, "/p"), host_tree(&leaf(&session)));
    assert!(session.stats().pulls_scoped >= 1);
}

/// A large output comes back as lazy content (nothing read), and later runs that
/// rewrite it in place, grow it or rename it are pulled exactly: the VFS never serves
/// bytes from a descriptor whose file changed behind it.
#[test]
fn large_outputs_are_deferred_and_later_changes_are_seen() {
    let base = tempfile::tempdir().expect("tempdir");
    let (mut session, mut vfs) = start(base.path());
    let outcome = sh_out(
        &mut session,
        &mut vfs,
        "/p",
        // Backdated: a file written in the pull's own clock tick is read at once (its
        // identity could still change unseen), and the test needs it deferred.
        "yes big | head -c 70000 > a/big && touch -d @1600000000 a/big",
    );
    let pull = outcome.pull.expect("pulled");
    assert_eq!(pull.files_deferred, 1, "{pull:?}");
    assert!(pull.bytes_read < 1000, "the big file is not read: {pull:?}");
    assert_eq!(vfs_tree(&vfs, "/p"), host_tree(&leaf(&session)));
    for script in [
        "printf Z | dd of=a/big bs=1 seek=65540 conv=notrunc 2>/dev/null",
        "yes more | head -c 80000 >> a/big",
        "mv a/big d/e/big",
        "truncate -s 10 d/e/big",
    ] {
        let _ = sh_out(&mut session, &mut vfs, "/p", script);
        assert_eq!(
            vfs_tree(&vfs, "/p"),
            host_tree(&leaf(&session)),
            "after `{script}`"
        );
    }
    session.shutdown().expect("shutdown");
}
