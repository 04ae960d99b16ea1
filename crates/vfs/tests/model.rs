//! Model-based property tests: every operation is applied to the VFS and to a real
//! temporary directory (the model, written with `lstat`-style checks so it never
//! follows symlinks, like the VFS). Paths are absolute or cwd-relative with `.`/`..`
//! (the model resolves them with its own lexical code and tracks its own cwd); reads and
//! listings are compared on the spot. Results must agree op by op and the trees must be
//! equal at the end. The journal is checked on the same runs: replaying
//! `changes_since(G)` onto a snapshot taken at G gives the current tree.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: panics are failures

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use devshell_vm_vfs::{NodeKind, Vfs, VfsError};
use filetime::FileTime;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Mkdir(String),
    Write(String, Vec<u8>),
    WriteWith(String, Vec<u8>, u32, SystemTime),
    Remove(String),
    Rename(String, String),
    Touch(String),
    SetMode(String, u32),
    SetMtime(String, SystemTime),
    Symlink(String, String),
    SetCwd(String),
    /// Compared with the model on the spot: content, or the failure.
    Read(String),
    /// Compared with the model on the spot: sorted names, or the failure.
    List(String),
    /// Take the journal snapshot here (the first one wins).
    Snapshot,
}

/// A path as a caller writes it: mostly absolute, sometimes relative to the cwd with
/// `.` and `..` segments (resolved lexically, `..` clamping at `/`).
fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => common::rel_path(),
        1 => (
            prop::sample::select(&["", "./", "../", "../../../", "a/../", "./b/./../"][..]),
            prop::collection::vec(common::name(), 1..=2),
        )
            .prop_map(|(prefix, names)| format!("{prefix}{}", names.join("/"))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    use common::{content, mode, mtime};
    let rel_path = any_path;
    prop_oneof![
        3 => rel_path().prop_map(Op::Mkdir),
        3 => (rel_path(), content()).prop_map(|(p, c)| Op::Write(p, c)),
        3 => (rel_path(), content(), mode(), mtime()).prop_map(|(p, c, m, t)| Op::WriteWith(p, c, m, t)),
        2 => rel_path().prop_map(Op::Remove),
        2 => (rel_path(), rel_path()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => rel_path().prop_map(Op::Touch),
        1 => (rel_path(), mode()).prop_map(|(p, m)| Op::SetMode(p, m)),
        1 => (rel_path(), mtime()).prop_map(|(p, t)| Op::SetMtime(p, t)),
        // Targets never resolve inside the model dir (no name contains `~`).
        1 => (prop::sample::select(&["~t", "~/x", "/~abs/target", "../~up"][..]), rel_path())
            .prop_map(|(t, p)| Op::Symlink(t.to_owned(), p)),
        1 => rel_path().prop_map(Op::SetCwd),
        1 => rel_path().prop_map(Op::Read),
        1 => rel_path().prop_map(Op::List),
        1 => Just(Op::Snapshot),
    ]
}

/// The model: a real directory standing for `/`.
struct Model {
    root: PathBuf,
    /// The model's own cwd (absolute, canonical).
    cwd: std::cell::RefCell<String>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Kind {
    Missing,
    Dir,
    File,
    Link,
}

impl Model {
    /// Lexical resolution, written independently of the VFS: relative to the cwd, `.`
    /// dropped, `..` pops and clamps at `/`.
    fn abs(&self, path: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !path.starts_with('/') {
            parts.extend(
                self.cwd
                    .borrow()
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name.to_owned()),
            }
        }
        format!("/{}", parts.join("/"))
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn kind(&self, path: &str) -> Kind {
        match fs::symlink_metadata(self.host(path)) {
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(m) if m.file_type().is_symlink() => Kind::Link,
            Ok(_) => Kind::File,
            Err(_) => Kind::Missing,
        }
    }

    /// Kind check of every ancestor: all must be directories.
    fn parent_ok(&self, path: &str) -> bool {
        let mut current = String::new();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            current.push('/');
            current.push_str(part);
            if self.kind(&current) != Kind::Dir {
                return false;
            }
        }
        true
    }

    fn mkdir(&self, path: &str) -> bool {
        let mut current = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            current.push('/');
            current.push_str(part);
            match self.kind(&current) {
                Kind::Dir => {}
                Kind::Missing => fs::create_dir(self.host(&current)).unwrap(),
                _ => return false,
            }
        }
        true
    }

    fn write(&self, path: &str, content: &[u8], mode: Option<u32>, mtime: SystemTime) -> bool {
        if !self.parent_ok(path) {
            return false;
        }
        let host = self.host(path);
        let mode = match self.kind(path) {
            Kind::Dir => return false,
            Kind::Link | Kind::Missing => {
                if self.kind(path) == Kind::Link {
                    fs::remove_file(&host).unwrap();
                }
                mode.unwrap_or(0o644)
            }
            Kind::File => {
                mode.unwrap_or_else(|| fs::metadata(&host).unwrap().permissions().mode() & 0o7777)
            }
        };
        fs::write(&host, content).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
        filetime::set_file_mtime(&host, FileTime::from_system_time(mtime)).unwrap();
        true
    }

    fn remove(&self, path: &str) -> bool {
        let host = self.host(path);
        match self.kind(path) {
            Kind::Missing => false,
            Kind::Dir => {
                fs::remove_dir_all(host).unwrap();
                true
            }
            _ => {
                fs::remove_file(host).unwrap();
                true
            }
        }
    }

    fn set_mtime(&self, path: &str, mtime: SystemTime) -> bool {
        let time = FileTime::from_system_time(mtime);
        match self.kind(path) {
            Kind::Missing => false,
            Kind::Link => {
                filetime::set_symlink_file_times(self.host(path), time, time).unwrap();
                true
            }
            _ => {
                filetime::set_file_mtime(self.host(path), time).unwrap();
                true
            }
        }
    }

    fn set_mode(&self, path: &str, mode: u32) -> bool {
        match self.kind(path) {
            Kind::Missing => false,
            Kind::Link => true,
            _ => {
                fs::set_permissions(self.host(path), fs::Permissions::from_mode(mode)).unwrap();
                true
            }
        }
    }

    fn symlink(&self, target: &str, path: &str) -> bool {
        if !self.parent_ok(path) || self.kind(path) != Kind::Missing {
            return false;
        }
        std::os::unix::fs::symlink(target, self.host(path)).unwrap();
        true
    }

    fn rename(&self, from: &str, to: &str) -> bool {
        // POSIX rename(2) is the model; it never follows symlinks at either end.
        fs::rename(self.host(from), self.host(to)).is_ok()
    }

    /// Everything observable, in the VFS walk order (pre-order, sorted names).
    fn signature(&self) -> Vec<common::Seen> {
        let mut out = Vec::new();
        let mut stack = vec![("/".to_owned(), self.root.clone())];
        while let Some((vpath, host)) = stack.pop() {
            let meta = fs::symlink_metadata(&host).unwrap();
            let kind = if meta.is_dir() {
                NodeKind::Dir
            } else if meta.file_type().is_symlink() {
                NodeKind::Symlink
            } else {
                NodeKind::File
            };
            let target = (kind == NodeKind::Symlink)
                .then(|| fs::read_link(&host).unwrap().to_str().unwrap().to_owned());
            out.push(common::Seen {
                path: vpath.trim_start_matches('/').to_owned(),
                metadata: devshell_vm_vfs::Metadata {
                    kind,
                    mode: if kind == NodeKind::Symlink {
                        0o777
                    } else {
                        meta.permissions().mode() & 0o7777
                    },
                    mtime: meta.modified().unwrap(),
                    size: if kind == NodeKind::Dir { 0 } else { meta.len() },
                },
                content: (kind == NodeKind::File).then(|| fs::read(&host).unwrap()),
                target,
            });
            if kind == NodeKind::Dir {
                let mut names: Vec<String> = fs::read_dir(&host)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                for name in names.into_iter().rev() {
                    let child = if vpath == "/" {
                        format!("/{name}")
                    } else {
                        format!("{vpath}/{name}")
                    };
                    stack.push((child, host.join(name)));
                }
            }
        }
        out
    }
}

/// Applies `op` to the VFS; returns whether it succeeded.
fn apply_vfs(vfs: &mut Vfs, op: &Op) -> Result<(), VfsError> {
    match op {
        Op::Mkdir(p) => vfs.mkdir(p),
        Op::Write(p, c) => vfs.write_file(p, c.clone()),
        Op::WriteWith(p, c, m, t) => vfs.write_file_with(p, c.clone(), *m, *t),
        Op::Remove(p) => vfs.remove(p),
        Op::Rename(a, b) => vfs.rename(a, b),
        Op::Touch(p) => vfs.touch(p),
        Op::SetMode(p, m) => vfs.set_mode(p, *m),
        Op::SetMtime(p, t) => vfs.set_mtime(p, *t),
        Op::Symlink(t, p) => vfs.symlink(t, p),
        Op::SetCwd(p) => vfs.set_cwd(p),
        Op::Read(p) => vfs.read_file(p).map(drop),
        Op::List(p) => vfs.list_dir(p).map(drop),
        Op::Snapshot => Ok(()),
    }
}

/// Applies `op` to the model. Operations that take "now" read it from the VFS result so
/// both sides hold the same clock reading.
fn apply_model(model: &Model, vfs: &Vfs, op: &Op) -> bool {
    let now_of = |p: &str| vfs.stat(p).map_or_else(|_| SystemTime::now(), |m| m.mtime);
    // Every path goes through the model's own resolution; `now_of` reads the VFS with
    // the absolute path so that both sides agree on it.
    match op {
        Op::Mkdir(p) => model.mkdir(&model.abs(p)),
        Op::Write(p, c) => {
            let p = model.abs(p);
            model.write(&p, c, None, now_of(&p))
        }
        Op::WriteWith(p, c, m, t) => model.write(&model.abs(p), c, Some(*m), *t),
        Op::Remove(p) => model.remove(&model.abs(p)),
        Op::Rename(a, b) => model.rename(&model.abs(a), &model.abs(b)),
        Op::Touch(p) => {
            let p = model.abs(p);
            match model.kind(&p) {
                Kind::Missing => model.write(&p, &[], None, now_of(&p)),
                _ => model.set_mtime(&p, now_of(&p)),
            }
        }
        Op::SetMode(p, m) => model.set_mode(&model.abs(p), *m),
        Op::SetMtime(p, t) => model.set_mtime(&model.abs(p), *t),
        Op::Symlink(t, p) => {
            let p = model.abs(p);
            model.symlink(t, &p) && model.set_mtime(&p, now_of(&p))
        }
        Op::SetCwd(p) => {
            let p = model.abs(p);
            let ok = p == "/" || (model.parent_ok(&p) && model.kind(&p) == Kind::Dir);
            if ok {
                *model.cwd.borrow_mut() = p;
            }
            ok
        }
        // Read-only: compared in `check_read`.
        Op::Read(p) => {
            let p = model.abs(p);
            model.parent_ok(&p) && model.kind(&p) == Kind::File
        }
        Op::List(p) => {
            let p = model.abs(p);
            p == "/" || (model.parent_ok(&p) && model.kind(&p) == Kind::Dir)
        }
        Op::Snapshot => true,
    }
}

/// For read-only ops: the VFS answer must equal what the model holds.
fn check_read(model: &Model, vfs: &Vfs, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Read(p) => {
            if let Ok(content) = vfs.read_file(p) {
                let host = fs::read(model.host(&model.abs(p))).unwrap();
                prop_assert_eq!(&content[..], &host[..], "read_file({})", p);
            }
        }
        Op::List(p) => {
            if let Ok(entries) = vfs.list_dir(p) {
                let mut names: Vec<String> = fs::read_dir(model.host(&model.abs(p)))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                let listed: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                prop_assert_eq!(listed, names, "list_dir({})", p);
            }
        }
        Op::SetCwd(_) => {
            let model_cwd = model.cwd.borrow().clone();
            prop_assert_eq!(vfs.cwd(), model_cwd.as_str(), "cwd after {:?}", op);
        }
        _ => {}
    }
    Ok(())
}

/// Replays a journal onto `target` so that `path` matches `source`.
fn replay(target: &mut Vfs, source: &Vfs, path: &str, since: u64) {
    let changes = source.changes_since(path, since).unwrap();
    for deleted in &changes.deleted {
        if target.exists(deleted) {
            target.remove(deleted).unwrap();
        }
    }
    for (index, upserted) in changes.upserted.iter().enumerate() {
        let node = source.node(upserted).unwrap();
        let meta = node.metadata();
        if index == 0 && upserted != "/" {
            // Only the queried subtree is replayed: its parents may be newer than the snapshot.
            // (The caller's root stands in for the ancestors, whatever they were at G.)
            let mut ancestor = String::new();
            for part in upserted
                .split('/')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .split_last()
                .unwrap()
                .1
            {
                ancestor.push('/');
                ancestor.push_str(part);
                if target.exists(&ancestor) && target.stat(&ancestor).unwrap().kind != NodeKind::Dir
                {
                    target.remove(&ancestor).unwrap();
                }
                target.mkdir(&ancestor).unwrap();
            }
        }
        match meta.kind {
            NodeKind::Dir => {
                assert!(
                    !target.exists(upserted)
                        || target.stat(upserted).unwrap().kind == NodeKind::Dir,
                    "{upserted}: kind changed without a deletion in the journal"
                );
                target.mkdir(upserted).unwrap();
                target.set_mode(upserted, meta.mode).unwrap();
                target.set_mtime(upserted, meta.mtime).unwrap();
            }
            NodeKind::File => target
                .write_file_with(
                    upserted,
                    node.content().unwrap().unwrap().clone(),
                    meta.mode,
                    meta.mtime,
                )
                .unwrap(),
            NodeKind::Symlink => {
                if target.exists(upserted) {
                    assert_eq!(
                        target.stat(upserted).unwrap().kind,
                        NodeKind::Symlink,
                        "{upserted}: kind changed without a deletion"
                    );
                    target.remove(upserted).unwrap();
                }
                target
                    .symlink_with(node.link_target().unwrap(), upserted, meta.mtime)
                    .unwrap();
            }
        }
    }
}

fn run(ops: &[Op], query: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let model = Model {
        root: dir.path().to_path_buf(),
        cwd: std::cell::RefCell::new("/".to_owned()),
    };
    let mut vfs = Vfs::new();
    let initial = (vfs.clone(), vfs.generation());
    let mut snapshot: Option<(Vfs, u64)> = None;
    for op in ops {
        if matches!(op, Op::Snapshot) && snapshot.is_none() {
            snapshot = Some((vfs.clone(), vfs.generation()));
        }
        let before = vfs.generation();
        let vfs_result = apply_vfs(&mut vfs, op);
        let model_ok = apply_model(&model, &vfs, op);
        prop_assert_eq!(
            vfs_result.is_ok(),
            model_ok,
            "op {:?}: vfs said {:?}",
            op,
            vfs_result
        );
        check_read(&model, &vfs, op)?;
        if vfs_result.is_err() {
            prop_assert_eq!(
                vfs.generation(),
                before,
                "a failed op advanced the generation"
            );
        }
    }
    // Directory mtimes differ by design (the VFS does not bump them for child changes).
    let strip = |mut seen: Vec<common::Seen>| {
        for entry in &mut seen {
            if entry.metadata.kind == NodeKind::Dir {
                entry.metadata.mtime = SystemTime::UNIX_EPOCH;
            }
        }
        seen
    };
    prop_assert_eq!(
        strip(common::signature(&vfs, "/")),
        strip(model.signature())
    );

    let (at_g, since) = snapshot.unwrap_or(initial);
    let mut whole = at_g.clone();
    replay(&mut whole, &vfs, "/", since);
    prop_assert!(
        whole.same_tree(&vfs),
        "replaying changes since {} onto the snapshot differs",
        since
    );
    // Every existing node as the queried path, plus the random one.
    let mut queries: Vec<String> = vfs.walk("/").unwrap().map(|entry| entry.path).collect();
    queries.push(query.to_owned());
    for path in queries.iter().filter(|p| vfs.exists(p)) {
        let mut partial = at_g.clone();
        replay(&mut partial, &vfs, path, since);
        prop_assert_eq!(
            common::signature(&partial, path),
            common::signature(&vfs, path),
            "replaying changes under {} since {}",
            path,
            since
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn vfs_matches_a_real_directory_and_journal_replays(
        ops in prop::collection::vec(op(), 1..48),
        query in common::rel_path(),
    ) {
        run(&ops, &query)?;
    }
}

#[test]
fn journal_replay_across_many_snapshots() {
    // Dense check on one longer sequence: every generation is a snapshot point.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(8));
    runner
        .run(&prop::collection::vec(op(), 1..80), |ops| {
            let mut vfs = Vfs::new();
            let mut snapshots = vec![(vfs.clone(), vfs.generation())];
            for op in &ops {
                let _ = apply_vfs(&mut vfs, op);
                snapshots.push((vfs.clone(), vfs.generation()));
            }
            for (snapshot, since) in snapshots {
                let mut replayed = snapshot;
                replay(&mut replayed, &vfs, "/", since);
                prop_assert!(replayed.same_tree(&vfs), "replay since {} differs", since);
            }
            Ok(())
        })
        .unwrap();
}
