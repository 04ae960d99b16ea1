//! The symlink-escape suite, for implementations with real files.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the checks use the parent's helpers as before"
)]
use super::*;

// ---------------------------------------------------------------------------------
// symlink escapes

/// Plants a symlink on the backing store of an implementation: `link` is the link's
/// path relative to the mount (e.g. `"out"` or `"d/out"`, parents exist), `target` is
/// written into the link verbatim (an absolute host path or a relative path).
pub type PlantSymlink = Box<dyn Fn(&str, &str) -> std::io::Result<()>>;

/// What the symlink checks need from an implementation with real files.
pub struct SymlinkFixture {
    /// A fresh implementation whose mount is an empty directory.
    pub ops: Box<dyn GuestFsOps>,
    /// Creates a symlink inside the mount, bypassing `ops`.
    pub plant_symlink: PlantSymlink,
    /// An existing, empty directory outside the mount, in the namespace symlink targets
    /// resolve in (for a local implementation: a host directory). The checks fill it and
    /// verify nothing in it is read, written or removed through a link.
    pub sentinel: PathBuf,
    /// Anything that must live as long as the fixture (temporary directories, a
    /// server); dropped after the check.
    pub guard: Box<dyn std::any::Any>,
}

/// Marker text of the sentinel's files: must never come back through `read_file`.
pub const SENTINEL_SECRET: &[u8] =
    b"devshell-vm sentinel secret: must never be read through the guest fs\n";

/// Sentinel snapshot: relative path → `Some(content)` for files, `None` for dirs/links.
type Snapshot = BTreeMap<String, Option<Vec<u8>>>;

/// Fills the sentinel with `secret.txt`, `inner/secret2.txt` and `inner/empty/`.
fn seed_sentinel(sentinel: &Path) -> Snapshot {
    let io = |what: &str, r: std::io::Result<()>| {
        if let Err(e) = r {
            panic!(
                "symlink fixture: cannot {what} in sentinel {}: {e}",
                sentinel.display()
            );
        }
    };
    io(
        "create inner/empty",
        std::fs::create_dir_all(sentinel.join("inner/empty")),
    );
    io(
        "write secret.txt",
        std::fs::write(sentinel.join("secret.txt"), SENTINEL_SECRET),
    );
    io(
        "write inner/secret2.txt",
        std::fs::write(sentinel.join("inner/secret2.txt"), SENTINEL_SECRET),
    );
    snapshot(sentinel)
}

/// Reads the sentinel tree without following links.
fn snapshot(sentinel: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = sentinel.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => panic!(
                "symlink fixture: cannot list sentinel dir {}: {e}",
                dir.display()
            ),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => panic!(
                    "symlink fixture: cannot read entry in {}: {e}",
                    dir.display()
                ),
            };
            let child_rel = rel.join(entry.file_name());
            let key = child_rel.to_string_lossy().into_owned();
            let meta = match std::fs::symlink_metadata(entry.path()) {
                Ok(m) => m,
                Err(e) => panic!(
                    "symlink fixture: cannot stat {}: {e}",
                    entry.path().display()
                ),
            };
            if meta.is_dir() {
                out.insert(key, None);
                pending.push(child_rel);
            } else if meta.is_file() {
                let data = match std::fs::read(entry.path()) {
                    Ok(d) => d,
                    Err(e) => panic!(
                        "symlink fixture: cannot read {}: {e}",
                        entry.path().display()
                    ),
                };
                out.insert(key, Some(data));
            } else {
                out.insert(format!("{key} (link)"), None);
            }
        }
    }
    out
}

/// State of one symlink check.
struct Escape {
    ops: Box<dyn GuestFsOps>,
    plant: PlantSymlink,
    sentinel: PathBuf,
    before: Snapshot,
    mount: String,
    _guard: Box<dyn std::any::Any>,
}

impl Escape {
    /// Builds the fixture, checks the empty mount, seeds the sentinel.
    fn new<F: FnMut() -> SymlinkFixture>(factory: &mut F) -> Self {
        let SymlinkFixture {
            mut ops,
            plant_symlink,
            sentinel,
            guard,
        } = factory();
        let mount = ops.mount().to_owned();
        match ops.list_dir(&mount) {
            Ok(names) if names.is_empty() => {}
            other => panic!(
                "symlink fixture: the mount {mount:?} must be an empty directory; list_dir gave {other:?}"
            ),
        }
        let before = seed_sentinel(&sentinel);
        Self {
            ops,
            plant: plant_symlink,
            sentinel,
            before,
            mount,
            _guard: guard,
        }
    }

    /// `mount/rel`.
    fn at(&self, rel: &str) -> String {
        at(&self.mount, rel)
    }

    /// `assert_content` on `mount/rel`.
    #[track_caller]
    fn content(&mut self, rel: &str, want: &[u8]) {
        let p = self.at(rel);
        assert_content(self.ops.as_mut(), &p, want);
    }

    /// `assert_exists` on `mount/rel`.
    #[track_caller]
    fn exists(&mut self, rel: &str, want: bool) {
        let p = self.at(rel);
        assert_exists(self.ops.as_mut(), &p, want);
    }

    /// `assert_kind` on `mount/rel`.
    #[track_caller]
    fn kind(&mut self, rel: &str, kind: GuestKind, size: Option<u64>) {
        let p = self.at(rel);
        assert_kind(self.ops.as_mut(), &p, kind, size);
    }

    /// `assert_listing` on `mount/rel`.
    #[track_caller]
    fn listing(&mut self, rel: &str, want: &[&str]) {
        let p = self.at(rel);
        assert_listing(self.ops.as_mut(), &p, want);
    }

    /// Plants `link` → `target`.
    fn plant(&self, link: &str, target: &str) {
        if let Err(e) = (self.plant)(link, target) {
            panic!("symlink fixture: planting {link:?} -> {target:?} failed: {e}");
        }
    }

    /// The sentinel's absolute path as a string (UTF-8 required).
    fn sentinel_str(&self) -> String {
        match self.sentinel.to_str() {
            Some(s) => s.to_owned(),
            None => panic!(
                "symlink fixture: sentinel path {} is not UTF-8",
                self.sentinel.display()
            ),
        }
    }

    /// A relative link target that climbs to `/` from any depth and then descends to
    /// `abs`.
    fn climbing_target(abs: &str) -> String {
        format!("{}{}", "../".repeat(64), abs.trim_start_matches('/'))
    }

    /// Asserts the sentinel is unchanged.
    #[track_caller]
    fn assert_sentinel_intact(&self, after_what: &str) {
        let now = snapshot(&self.sentinel);
        assert!(
            now == self.before,
            "after {after_what}: the sentinel outside the mount changed: before {:?}, now {:?}",
            self.before.keys().collect::<Vec<_>>(),
            now.keys().collect::<Vec<_>>()
        );
    }

    /// Asserts `result` is an error of kind `InvalidPath` or `NotFound`, then that the
    /// sentinel is intact.
    #[track_caller]
    fn refused<T: Debug>(&self, what: &str, result: Result<T, GuestFsError>) {
        match result {
            Ok(v) => panic!(
                "{what}: went through a symlink out of the mount and succeeded with {}",
                short_debug(&v)
            ),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    GuestFsErrorKind::InvalidPath | GuestFsErrorKind::NotFound
                ),
                "{what}: expected InvalidPath (or NotFound), got Err({e}) [{e:?}]"
            ),
        }
        self.assert_sentinel_intact(what);
    }

    /// Every operation *through* the link at `link_rel` (a link to the sentinel dir) is
    /// refused; operations on the link itself work; removing it leaves the sentinel.
    fn probe_dir_link(&mut self, link_rel: &str) {
        let link = self.at(link_rel);
        let through = format!("{link}/secret.txt");
        let inner = format!("{link}/inner");
        ok(
            "write inside.txt",
            self.ops.write_file(&self.at("inside.txt"), b"inside"),
        );
        let r = self.ops.read_file(&through);
        self.refused(&format!("read_file({through:?})"), r);
        let r = self.ops.read_file(&format!("{inner}/secret2.txt"));
        self.refused("read_file(link/inner/secret2.txt)", r);
        let r = self.ops.list_dir(&link);
        self.refused(&format!("list_dir({link:?})"), r);
        let r = self.ops.list_dir(&inner);
        self.refused(&format!("list_dir({inner:?})"), r);
        let r = self.ops.write_file(&through, b"overwritten");
        self.refused(&format!("write_file({through:?})"), r);
        let r = self
            .ops
            .write_file(&format!("{link}/planted.txt"), b"planted");
        self.refused("write_file(link/planted.txt)", r);
        let r = self
            .ops
            .write_file(&format!("{link}/newdir/planted.txt"), b"planted");
        self.refused("write_file(link/newdir/planted.txt)", r);
        let r = self.ops.mkdir(&format!("{link}/planted-dir"));
        self.refused("mkdir(link/planted-dir)", r);
        let r = self.ops.remove(&through);
        self.refused(&format!("remove({through:?})"), r);
        let r = self.ops.remove(&inner);
        self.refused(&format!("remove({inner:?})"), r);
        let r = self.ops.stat(&through);
        self.refused(&format!("stat({through:?})"), r);
        // `exists` may say "no" (links resolved as if the mount were the root) or refuse,
        // but must never confirm a file outside the mount.
        match self.ops.exists(&through) {
            Ok(true) => panic!(
                "exists({through:?}) went through a symlink out of the mount and found the outside file"
            ),
            Ok(false) => self.assert_sentinel_intact("exists(link/secret.txt)"),
            Err(e) => self.refused(&format!("exists({through:?})"), Err::<(), _>(e)),
        }
        let r = self.ops.rename(&through, &self.at("stolen.txt"));
        self.refused("rename(link/secret.txt, stolen.txt)", r);
        let r = self
            .ops
            .rename(&self.at("inside.txt"), &format!("{link}/planted.txt"));
        self.refused("rename(inside.txt, link/planted.txt)", r);
        self.exists("stolen.txt", false);
        self.content("inside.txt", b"inside");
        // The link itself: stat does not follow, it is listed, and remove deletes only it.
        assert_kind(self.ops.as_mut(), &link, GuestKind::Symlink, None);
        assert_exists(self.ops.as_mut(), &link, true);
        let parent = link
            .rsplit_once('/')
            .map_or(self.mount.clone(), |(p, _)| p.to_owned());
        let name = link.rsplit('/').next().unwrap_or_default().to_owned();
        let names = ok("list_dir(link parent)", self.ops.list_dir(&parent));
        assert!(
            names.contains(&name),
            "list_dir({parent:?}) must list the symlink {name:?}, got {names:?}"
        );
        ok(
            &format!("remove({link:?}) (the link itself)"),
            self.ops.remove(&link),
        );
        assert_exists(self.ops.as_mut(), &link, false);
        self.assert_sentinel_intact("remove(link)");
    }
}

/// A link inside the mount pointing (absolute target) to the sentinel directory: nothing
/// goes through it.
pub fn symlink_dir_escape_absolute<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    let target = fx.sentinel_str();
    fx.plant("out", &target);
    fx.probe_dir_link("out");
}

/// A link whose relative target climbs out of the mount (`../../…/sentinel`): nothing
/// goes through it.
pub fn symlink_dir_escape_relative<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    let target = Escape::climbing_target(&fx.sentinel_str());
    fx.plant("up", &target);
    fx.probe_dir_link("up");
}

/// An escaping link deep in a tree, and a chain of links (inside → inside → out):
/// nothing goes through either.
pub fn symlink_nested_and_chained_escape<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    ok("mkdir d/deeper", fx.ops.mkdir(&fx.at("d/deeper")));
    let target = fx.sentinel_str();
    fx.plant("d/deeper/out", &target);
    fx.probe_dir_link("d/deeper/out");
    fx.plant("hop2", &target);
    fx.plant("hop1", "hop2");
    fx.probe_dir_link("hop1");
}

/// A link to a file outside: reading and writing it are refused; the target is not
/// changed; removing the link leaves the target.
pub fn symlink_file_escape<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    let secret = format!("{}/secret.txt", fx.sentinel_str());
    fx.plant("f", &secret);
    fx.plant(
        "g",
        &Escape::climbing_target(&format!("{}/inner/secret2.txt", fx.sentinel_str())),
    );
    for name in ["f", "g"] {
        let link = fx.at(name);
        let r = fx.ops.read_file(&link);
        fx.refused(&format!("read_file({link:?})"), r);
        let r = fx.ops.write_file(&link, b"overwritten");
        fx.refused(&format!("write_file({link:?})"), r);
        let r = fx.ops.list_dir(&link);
        match r {
            Ok(v) => {
                panic!("list_dir({link:?}) through a link to an outside file succeeded: {v:?}")
            }
            Err(_) => fx.assert_sentinel_intact("list_dir(file link)"),
        }
        assert_kind(fx.ops.as_mut(), &link, GuestKind::Symlink, None);
    }
    assert_listing(fx.ops.as_mut(), &fx.mount.clone(), &["f", "g"]);
    ok("remove(f)", fx.ops.remove(&fx.at("f")));
    ok("remove(g)", fx.ops.remove(&fx.at("g")));
    assert_listing(fx.ops.as_mut(), &fx.mount.clone(), &[]);
    fx.assert_sentinel_intact("remove(file links)");
}

/// Removing (recursively) or renaming a directory that contains an escaping link never
/// descends through it, and never copies outside content in.
pub fn symlink_recursive_ops_do_not_descend<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    let target = fx.sentinel_str();
    ok(
        "write tree/file",
        fx.ops.write_file(&fx.at("tree/file"), b"t"),
    );
    fx.plant("tree/out", &target);
    ok(
        "write tree2/file",
        fx.ops.write_file(&fx.at("tree2/file"), b"t"),
    );
    fx.plant("tree2/out", &target);
    // rename of a tree holding an escaping link: may succeed (native rename moves the
    // link) or fail; either way nothing outside is touched or copied in.
    let renamed = fx.ops.rename(&fx.at("tree2"), &fx.at("tree3"));
    fx.assert_sentinel_intact("rename(tree2, tree3)");
    if renamed.is_ok() {
        let r = fx.ops.read_file(&fx.at("tree3/out/secret.txt"));
        fx.refused("read_file(tree3/out/secret.txt) after rename", r);
        let names = ok("list_dir(tree3)", fx.ops.list_dir(&fx.at("tree3")));
        assert!(
            names == ["file", "out"],
            "list_dir(tree3) after rename: {names:?}"
        );
        fx.kind("tree3/out", GuestKind::Symlink, None);
    }
    ok("remove(tree)", fx.ops.remove(&fx.at("tree")));
    fx.assert_sentinel_intact("remove(tree) holding an escaping link");
    fx.exists("tree", false);
}

/// Links whose target stays inside the mount are followed by reads, writes and
/// listings (relative targets, to a directory and to a file).
pub fn symlink_inside_mount_is_followed<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    let mut fx = Escape::new(&mut factory);
    ok(
        "write real/f",
        fx.ops.write_file(&fx.at("real/f"), b"inside"),
    );
    fx.plant("alias", "real");
    fx.plant("falias", "real/f");
    fx.plant("real/up", "../real/f");
    fx.content("alias/f", b"inside");
    fx.content("falias", b"inside");
    fx.content("real/up", b"inside");
    ok(
        "write through alias",
        fx.ops.write_file(&fx.at("alias/g"), b"via alias"),
    );
    fx.content("real/g", b"via alias");
    fx.listing("alias", &["f", "g", "up"]);
    ok(
        "write through file alias",
        fx.ops.write_file(&fx.at("falias"), b"changed"),
    );
    fx.content("real/f", b"changed");
    fx.kind("falias", GuestKind::Symlink, None);
    ok("remove(alias)", fx.ops.remove(&fx.at("alias")));
    fx.listing("real", &["f", "g", "up"]);
    fx.assert_sentinel_intact("inside links");
}

/// Calls every symlink check, in order, each with a fresh fixture.
///
/// # Panics
/// On the first check the implementation fails, with a message naming the check.
pub fn run_symlink_escape_all<F: FnMut() -> SymlinkFixture>(mut factory: F) {
    crate::__guest_fs_for_each_check!(@run_symlink_all factory);
}
