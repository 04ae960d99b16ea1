//! The conformance suite every [`GuestFsOps`] implementation must pass.
//!
//! Each check is a public function taking a *factory*: a closure returning a fresh
//! `Box<dyn GuestFsOps>` whose mount is an existing, **empty** directory (and not `/`,
//! so that "outside the mount" exists). A check calls the factory once and panics with a
//! message naming the operation, the path and the result when the implementation breaks
//! the contract documented on [`GuestFsOps`].
//!
//! Instantiate the whole suite as one `#[test]` per check with
//! [`guest_fs_conformance_tests!`](crate::guest_fs_conformance_tests), or run it in one
//! go with [`run_all`]:
//!
//! ```
//! use devshell_vm_guest_fs::{conformance, GuestFsOps, MockGuestFsOps};
//! conformance::run_all(|| {
//!     Box::new(MockGuestFsOps::new("/workspace").expect("valid mount")) as Box<dyn GuestFsOps>
//! });
//! ```
//!
//! ```
//! // tests/my_conformance.rs: one #[test] per check
//! use devshell_vm_guest_fs::{GuestFsOps, MockGuestFsOps};
//! devshell_vm_guest_fs::guest_fs_conformance_tests!(|| {
//!     Box::new(MockGuestFsOps::new("/workspace").expect("mount")) as Box<dyn GuestFsOps>
//! });
//! # fn main() {}
//! ```
//!
//! **Symlink escapes** need real files, so they have their own entry points:
//! [`SymlinkFixture`], [`run_symlink_escape_all`] and
//! [`guest_fs_symlink_escape_tests!`](crate::guest_fs_symlink_escape_tests). The fixture
//! carries a callback that plants a symlink on the backing store and a *sentinel*
//! directory outside the mount; the checks fill the sentinel and verify that no
//! operation through a link reads, writes or removes anything in it. The in-memory
//! [`crate::MockGuestFsOps`] has no symlinks and runs only the main suite.
//!
//! Safety of the probes: escape checks only *remove* paths that do not exist
//! (`…/devshell-vm-escape-probe…`), so a broken implementation fails the check without
//! deleting anything; writes and `mkdir`s outside the mount go to such probe names next
//! to the mount.

#![allow(
    clippy::missing_panics_doc,
    reason = "every check panics on a contract violation by design; the module docs say so"
)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::{GuestFsError, GuestFsErrorKind, GuestFsOps, GuestKind};

/// Size of the large-file check: 8 MiB.
pub const LARGE_FILE_SIZE: usize = 8 * 1024 * 1024;

/// Names the suite writes, lists, reads and removes: spaces, quotes, `$`, backticks,
/// newlines, tabs, glob and shell metacharacters, a leading dash, and non-ASCII.
pub const SPECIAL_NAMES: &[&str] = &[
    "with space",
    " leading space",
    "trailing space ",
    "single'quote",
    "double\"quote",
    "dollar$HOME",
    "$(echo pwned)",
    "back`tick`",
    "new\nline",
    "tab\there",
    "carriage\rreturn",
    "-leading-dash",
    "--rf",
    "*glob?[x]{a,b}",
    "semi;colon&amp|pipe>redirect<",
    "back\\slash",
    "~tilde",
    "#hash",
    "100%",
    "ünïcødé",
    "日本語のファイル",
    "emoji-🦀",
    ".hidden",
    "..dots",
    "...",
];

// ---------------------------------------------------------------------------------
// helpers

/// Calls the factory and checks the precondition: normalised mount, not `/`, an empty
/// directory.
fn fresh<F: FnMut() -> Box<dyn GuestFsOps>>(factory: &mut F) -> (Box<dyn GuestFsOps>, String) {
    let mut ops = factory();
    let mount = ops.mount().to_owned();
    match crate::normalize_guest_path(&mount) {
        Ok(n) if n == mount => {}
        other => {
            panic!("factory precondition: mount() must be normalised, got {mount:?} ({other:?})")
        }
    }
    assert!(
        mount != "/",
        "factory precondition: the mount must not be \"/\" (the suite needs paths outside it)"
    );
    match ops.list_dir(&mount) {
        Ok(names) if names.is_empty() => {}
        other => panic!(
            "factory precondition: the mount {mount:?} must be an existing empty directory; list_dir gave {other:?}"
        ),
    }
    (ops, mount)
}

/// `mount/rel`.
fn at(mount: &str, rel: &str) -> String {
    format!("{mount}/{rel}")
}

/// Unwraps an expected success.
#[track_caller]
fn ok<T>(what: &str, result: Result<T, GuestFsError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: expected success, got Err({e}) [{e:?}]"),
    }
}

/// Asserts an error of `kind`, and (when given) that it names `path`.
#[track_caller]
fn err<T: Debug>(
    what: &str,
    result: Result<T, GuestFsError>,
    kind: GuestFsErrorKind,
    path: Option<&str>,
) {
    match result {
        Ok(v) => panic!(
            "{what}: expected Err({kind:?}), got Ok({})",
            short_debug(&v)
        ),
        Err(e) => {
            assert!(
                e.kind() == kind,
                "{what}: expected Err({kind:?}), got Err({e}) [{e:?}]"
            );
            if let Some(p) = path {
                assert!(
                    e.path() == Some(p),
                    "{what}: the {kind:?} error must name the normalised path {p:?}, got {:?}",
                    e.path()
                );
            }
        }
    }
}

/// Debug text cut to a readable length (large reads would flood the message).
fn short_debug<T: Debug>(v: &T) -> String {
    let text = format!("{v:?}");
    if text.len() > 200 {
        format!(
            "{}… ({} chars)",
            &text[..text.floor_char_boundary(200)],
            text.len()
        )
    } else {
        text
    }
}

/// Asserts `read_file(path) == want`.
#[track_caller]
fn assert_content(ops: &mut dyn GuestFsOps, path: &str, want: &[u8]) {
    let got = ok(&format!("read_file({path:?})"), ops.read_file(path));
    assert!(
        got == want,
        "read_file({path:?}): content differs: got {} bytes {}, want {} bytes {}",
        got.len(),
        short_debug(&got),
        want.len(),
        short_debug(&want)
    );
}

/// Asserts `list_dir(path) == want` (in that order).
#[track_caller]
fn assert_listing(ops: &mut dyn GuestFsOps, path: &str, want: &[&str]) {
    let got = ok(&format!("list_dir({path:?})"), ops.list_dir(path));
    assert!(
        got == want,
        "list_dir({path:?}): got {got:?}, want {want:?}"
    );
}

/// Asserts the kind (and for files the size) of `path`.
#[track_caller]
fn assert_kind(ops: &mut dyn GuestFsOps, path: &str, kind: GuestKind, size: Option<u64>) {
    let meta = ok(&format!("stat({path:?})"), ops.stat(path));
    assert!(
        meta.kind == kind,
        "stat({path:?}): kind {:?}, want {kind:?}",
        meta.kind
    );
    if let Some(size) = size {
        assert!(
            meta.size == size,
            "stat({path:?}): size {}, want {size}",
            meta.size
        );
    }
}

/// Asserts `exists(path) == want`.
#[track_caller]
fn assert_exists(ops: &mut dyn GuestFsOps, path: &str, want: bool) {
    let got = ok(&format!("exists({path:?})"), ops.exists(path));
    assert!(got == want, "exists({path:?}): got {got}, want {want}");
}

/// Deterministic pseudo-random bytes (xorshift), so large-file corruption is visible.
fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------
// the checks

/// The factory gives a normalised mount (not `/`) that is an empty directory: `stat`
/// says `Dir`, `exists` is true, `list_dir` is empty, `mkdir` of it is a no-op.
pub fn fresh_instance_has_empty_mount<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    assert_kind(ops.as_mut(), &m, GuestKind::Dir, None);
    assert_exists(ops.as_mut(), &m, true);
    ok("mkdir(mount)", ops.mkdir(&m));
    assert_listing(ops.as_mut(), &m, &[]);
    assert_listing(ops.as_mut(), &format!("{m}/"), &[]);
}

/// A nested write reads back the same bytes; `stat` reports the file and its size.
pub fn write_read_roundtrip_nested<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let top = at(&m, "top.txt");
    let deep = at(&m, "a/b/c/d/deep.txt");
    ok("write_file top", ops.write_file(&top, b"top level\n"));
    ok("write_file deep", ops.write_file(&deep, b"deep\n"));
    assert_content(ops.as_mut(), &top, b"top level\n");
    assert_content(ops.as_mut(), &deep, b"deep\n");
    assert_kind(ops.as_mut(), &deep, GuestKind::File, Some(5));
    assert_listing(ops.as_mut(), &m, &["a", "top.txt"]);
    assert_listing(ops.as_mut(), &at(&m, "a/b/c/d"), &["deep.txt"]);
}

/// `write_file` creates every missing parent directory.
pub fn write_creates_missing_parents<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok(
        "write_file with missing parents",
        ops.write_file(&at(&m, "p/q/r/f"), b"x"),
    );
    for dir in ["p", "p/q", "p/q/r"] {
        assert_kind(ops.as_mut(), &at(&m, dir), GuestKind::Dir, None);
    }
    assert_content(ops.as_mut(), &at(&m, "p/q/r/f"), b"x");
}

/// Writing an existing file replaces its content entirely (shorter content truncates).
pub fn write_replaces_and_truncates<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let f = at(&m, "f.txt");
    ok(
        "first write",
        ops.write_file(&f, b"a much longer first content\n"),
    );
    ok("second write", ops.write_file(&f, b"short"));
    assert_content(ops.as_mut(), &f, b"short");
    assert_kind(ops.as_mut(), &f, GuestKind::File, Some(5));
    ok("third write (empty)", ops.write_file(&f, b""));
    assert_content(ops.as_mut(), &f, b"");
    assert_listing(ops.as_mut(), &m, &["f.txt"]);
}

/// Empty files exist, have size 0 and read back empty, at top level and nested.
pub fn empty_file_roundtrip<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    for rel in ["empty", "nested/dir/empty"] {
        let p = at(&m, rel);
        ok(&format!("write_file({p:?}, [])"), ops.write_file(&p, b""));
        assert_exists(ops.as_mut(), &p, true);
        assert_kind(ops.as_mut(), &p, GuestKind::File, Some(0));
        assert_content(ops.as_mut(), &p, b"");
    }
}

/// Every byte value survives, in every position mod 256, including NUL, `\r`, `\n` and
/// invalid UTF-8; a file of only NULs and one ending without a newline too.
pub fn binary_content_all_byte_values<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let mut all: Vec<u8> = (0..=255u8).collect();
    all.extend((0..=255u8).rev());
    let cases: [(&str, Vec<u8>); 4] = [
        ("all-bytes.bin", all),
        ("nuls.bin", vec![0; 1024]),
        ("crlf.bin", b"a\r\nb\r\n\r\n\n\r".to_vec()),
        ("no-newline", b"\xff\xfe\x00last".to_vec()),
    ];
    for (name, data) in &cases {
        let p = at(&m, name);
        ok(&format!("write_file({p:?})"), ops.write_file(&p, data));
    }
    for (name, data) in &cases {
        let p = at(&m, name);
        assert_content(ops.as_mut(), &p, data);
        assert_kind(ops.as_mut(), &p, GuestKind::File, Some(data.len() as u64));
    }
}

/// An 8 MiB file of pseudo-random bytes round-trips exactly.
pub fn large_file_8_mib<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let p = at(&m, "big/large.bin");
    let data = patterned(LARGE_FILE_SIZE, 0x5eed_1234_abcd_ef01);
    ok("write_file(8 MiB)", ops.write_file(&p, &data));
    assert_kind(
        ops.as_mut(),
        &p,
        GuestKind::File,
        Some(LARGE_FILE_SIZE as u64),
    );
    let got = ok("read_file(8 MiB)", ops.read_file(&p));
    assert!(
        got.len() == data.len(),
        "8 MiB read: got {} bytes, want {}",
        got.len(),
        data.len()
    );
    if let Some(i) = got.iter().zip(&data).position(|(a, b)| a != b) {
        panic!("8 MiB read: first difference at byte {i}");
    }
}

/// Files and directories whose names hold spaces, quotes, `$`, newlines, shell
/// metacharacters and non-ASCII: write, list (exact, sorted), stat, read, nest, remove.
pub fn special_names_roundtrip<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let files = at(&m, "files");
    let dirs = at(&m, "dirs");
    for name in SPECIAL_NAMES {
        let p = format!("{files}/{name}");
        ok(
            &format!("write_file({p:?})"),
            ops.write_file(&p, name.as_bytes()),
        );
        let d = format!("{dirs}/{name}");
        ok(&format!("mkdir({d:?})"), ops.mkdir(&d));
        let inner = format!("{d}/{name}");
        ok(
            &format!("write_file({inner:?})"),
            ops.write_file(&inner, b"inner"),
        );
    }
    let mut want: Vec<&str> = SPECIAL_NAMES.to_vec();
    want.sort_unstable();
    assert_listing(ops.as_mut(), &files, &want);
    assert_listing(ops.as_mut(), &dirs, &want);
    for name in SPECIAL_NAMES {
        let p = format!("{files}/{name}");
        assert_content(ops.as_mut(), &p, name.as_bytes());
        assert_kind(ops.as_mut(), &p, GuestKind::File, Some(name.len() as u64));
        let d = format!("{dirs}/{name}");
        assert_kind(ops.as_mut(), &d, GuestKind::Dir, None);
        assert_listing(ops.as_mut(), &d, &[name]);
        assert_content(ops.as_mut(), &format!("{d}/{name}"), b"inner");
    }
    for name in SPECIAL_NAMES {
        let p = format!("{files}/{name}");
        ok(&format!("remove({p:?})"), ops.remove(&p));
        assert_exists(ops.as_mut(), &p, false);
        let d = format!("{dirs}/{name}");
        ok(&format!("remove({d:?})"), ops.remove(&d));
        assert_exists(ops.as_mut(), &d, false);
    }
    assert_listing(ops.as_mut(), &files, &[]);
    assert_listing(ops.as_mut(), &dirs, &[]);
}

/// `list_dir` gives names only (no `/`, `.`, `..`), dotfiles included, sorted by byte
/// order, one level deep.
pub fn list_dir_sorted_names_with_dotfiles<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    for rel in [
        "b",
        ".a",
        "A",
        "a",
        "_u",
        "Z",
        ".git/HEAD",
        "sub/child",
        "sub/.inner",
        "10",
        "9",
    ] {
        ok(
            &format!("write_file({rel:?})"),
            ops.write_file(&at(&m, rel), rel.as_bytes()),
        );
    }
    ok("mkdir(empty-dir)", ops.mkdir(&at(&m, "empty-dir")));
    assert_listing(
        ops.as_mut(),
        &m,
        &[
            ".a",
            ".git",
            "10",
            "9",
            "A",
            "Z",
            "_u",
            "a",
            "b",
            "empty-dir",
            "sub",
        ],
    );
    assert_listing(ops.as_mut(), &at(&m, "sub"), &[".inner", "child"]);
    assert_listing(ops.as_mut(), &at(&m, "sub/"), &[".inner", "child"]);
    assert_listing(ops.as_mut(), &at(&m, "empty-dir"), &[]);
}

/// `list_dir` of a missing path is `NotFound`, of a file `NotADirectory`.
pub fn list_dir_errors<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let missing = at(&m, "missing");
    err(
        "list_dir(missing)",
        ops.list_dir(&missing),
        GuestFsErrorKind::NotFound,
        Some(&missing),
    );
    let deep_missing = at(&m, "missing/deeper");
    err(
        "list_dir(missing/deeper)",
        ops.list_dir(&deep_missing),
        GuestFsErrorKind::NotFound,
        Some(&deep_missing),
    );
    let f = at(&m, "file");
    ok("write_file", ops.write_file(&f, b"x"));
    err(
        "list_dir(file)",
        ops.list_dir(&f),
        GuestFsErrorKind::NotADirectory,
        Some(&f),
    );
}

/// `read_file` of a missing path is `NotFound`, of a directory or the mount
/// `IsADirectory`.
pub fn read_file_errors<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let missing = at(&m, "missing.txt");
    err(
        "read_file(missing)",
        ops.read_file(&missing),
        GuestFsErrorKind::NotFound,
        Some(&missing),
    );
    let deep_missing = at(&m, "no/such/dir/f");
    err(
        "read_file(missing parents)",
        ops.read_file(&deep_missing),
        GuestFsErrorKind::NotFound,
        Some(&deep_missing),
    );
    let d = at(&m, "dir");
    ok("mkdir", ops.mkdir(&d));
    err(
        "read_file(dir)",
        ops.read_file(&d),
        GuestFsErrorKind::IsADirectory,
        Some(&d),
    );
    err(
        "read_file(mount)",
        ops.read_file(&m),
        GuestFsErrorKind::IsADirectory,
        Some(&m),
    );
}

/// `write_file` over a directory (or the mount) is `IsADirectory` and leaves the
/// directory and its contents alone.
pub fn write_file_errors<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let d = at(&m, "dir");
    ok(
        "write_file(dir/keep)",
        ops.write_file(&at(&m, "dir/keep"), b"kept"),
    );
    err(
        "write_file(dir)",
        ops.write_file(&d, b"clobber"),
        GuestFsErrorKind::IsADirectory,
        Some(&d),
    );
    err(
        "write_file(mount)",
        ops.write_file(&m, b"clobber"),
        GuestFsErrorKind::IsADirectory,
        Some(&m),
    );
    assert_kind(ops.as_mut(), &d, GuestKind::Dir, None);
    assert_content(ops.as_mut(), &at(&m, "dir/keep"), b"kept");
    assert_listing(ops.as_mut(), &m, &["dir"]);
}

/// A file used as a directory in the middle of a path gives `NotADirectory` for every
/// operation (and `exists` is false); the file is left alone.
pub fn file_as_path_component_is_not_a_directory<F: FnMut() -> Box<dyn GuestFsOps>>(
    mut factory: F,
) {
    use GuestFsErrorKind::NotADirectory;
    let (mut ops, m) = fresh(&mut factory);
    let f = at(&m, "plain");
    ok("write_file", ops.write_file(&f, b"plain file"));
    for rel in ["plain/x", "plain/x/y"] {
        let p = at(&m, rel);
        let ps = Some(p.as_str());
        err(
            &format!("read_file({p:?})"),
            ops.read_file(&p),
            NotADirectory,
            ps,
        );
        err(
            &format!("list_dir({p:?})"),
            ops.list_dir(&p),
            NotADirectory,
            ps,
        );
        err(
            &format!("write_file({p:?})"),
            ops.write_file(&p, b"x"),
            NotADirectory,
            ps,
        );
        err(&format!("mkdir({p:?})"), ops.mkdir(&p), NotADirectory, ps);
        err(&format!("remove({p:?})"), ops.remove(&p), NotADirectory, ps);
        err(&format!("stat({p:?})"), ops.stat(&p), NotADirectory, ps);
        assert_exists(ops.as_mut(), &p, false);
    }
    assert_content(ops.as_mut(), &f, b"plain file");
    assert_listing(ops.as_mut(), &m, &["plain"]);
}

/// `mkdir` creates missing parents, is idempotent, keeps existing contents.
pub fn mkdir_is_recursive_and_idempotent<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let deep = at(&m, "x/y/z");
    ok("mkdir -p", ops.mkdir(&deep));
    for rel in ["x", "x/y", "x/y/z"] {
        assert_kind(ops.as_mut(), &at(&m, rel), GuestKind::Dir, None);
    }
    assert_listing(ops.as_mut(), &deep, &[]);
    ok(
        "write_file inside",
        ops.write_file(&at(&m, "x/y/z/f"), b"f"),
    );
    ok("mkdir again", ops.mkdir(&deep));
    ok("mkdir of an ancestor", ops.mkdir(&at(&m, "x")));
    assert_content(ops.as_mut(), &at(&m, "x/y/z/f"), b"f");
    assert_listing(ops.as_mut(), &deep, &["f"]);
}

/// `mkdir` where a file exists is `NotADirectory`; the file is kept.
pub fn mkdir_over_file_is_not_a_directory<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let f = at(&m, "f");
    ok("write_file", ops.write_file(&f, b"data"));
    err(
        "mkdir(file)",
        ops.mkdir(&f),
        GuestFsErrorKind::NotADirectory,
        Some(&f),
    );
    assert_kind(ops.as_mut(), &f, GuestKind::File, Some(4));
    assert_content(ops.as_mut(), &f, b"data");
}

/// `remove` deletes a file, an empty directory and a whole tree; siblings stay.
pub fn remove_file_and_recursive_dir<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    for rel in [
        "keep.txt",
        "gone.txt",
        "tree/a/b/c.txt",
        "tree/a/.hidden",
        "tree/d.txt",
        "treesibling/x",
    ] {
        ok(
            &format!("write_file({rel})"),
            ops.write_file(&at(&m, rel), rel.as_bytes()),
        );
    }
    ok("mkdir tree/empty", ops.mkdir(&at(&m, "tree/empty")));
    ok("mkdir emptydir", ops.mkdir(&at(&m, "emptydir")));
    ok("remove file", ops.remove(&at(&m, "gone.txt")));
    ok("remove empty dir", ops.remove(&at(&m, "emptydir")));
    ok("remove tree", ops.remove(&at(&m, "tree")));
    for rel in ["gone.txt", "emptydir", "tree", "tree/a", "tree/a/b/c.txt"] {
        assert_exists(ops.as_mut(), &at(&m, rel), false);
    }
    assert_listing(ops.as_mut(), &m, &["keep.txt", "treesibling"]);
    assert_content(ops.as_mut(), &at(&m, "treesibling/x"), b"treesibling/x");
    // A removed path can be created again, as the other kind.
    ok(
        "recreate tree as file",
        ops.write_file(&at(&m, "tree"), b"now a file"),
    );
    assert_content(ops.as_mut(), &at(&m, "tree"), b"now a file");
}

/// `remove` of a missing path is `NotFound`; of the mount `InvalidPath`, and the mount
/// keeps its contents.
pub fn remove_errors<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok("write_file", ops.write_file(&at(&m, "keep"), b"k"));
    let missing = at(&m, "missing");
    err(
        "remove(missing)",
        ops.remove(&missing),
        GuestFsErrorKind::NotFound,
        Some(&missing),
    );
    let missing_deep = at(&m, "missing/child");
    err(
        "remove(missing/child)",
        ops.remove(&missing_deep),
        GuestFsErrorKind::NotFound,
        Some(&missing_deep),
    );
    err(
        "remove(mount)",
        ops.remove(&m),
        GuestFsErrorKind::InvalidPath,
        None,
    );
    err(
        "remove(mount/)",
        ops.remove(&format!("{m}/")),
        GuestFsErrorKind::InvalidPath,
        None,
    );
    err(
        "remove(mount/x/..)",
        ops.remove(&format!("{m}/x/..")),
        GuestFsErrorKind::InvalidPath,
        None,
    );
    assert_kind(ops.as_mut(), &m, GuestKind::Dir, None);
    assert_listing(ops.as_mut(), &m, &["keep"]);
    assert_content(ops.as_mut(), &at(&m, "keep"), b"k");
}

/// `stat` reports kinds and file sizes; a missing path is `NotFound`.
pub fn stat_kinds_and_sizes<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok("write_file", ops.write_file(&at(&m, "d/f"), &[7u8; 1234]));
    assert_kind(ops.as_mut(), &at(&m, "d"), GuestKind::Dir, None);
    assert_kind(ops.as_mut(), &at(&m, "d/f"), GuestKind::File, Some(1234));
    let missing = at(&m, "d/missing");
    err(
        "stat(missing)",
        ops.stat(&missing),
        GuestFsErrorKind::NotFound,
        Some(&missing),
    );
    let missing_parent = at(&m, "nope/f");
    err(
        "stat(missing parent)",
        ops.stat(&missing_parent),
        GuestFsErrorKind::NotFound,
        Some(&missing_parent),
    );
}

/// `exists`: true for files, dirs and the mount; false for missing paths (also under a
/// missing parent); `InvalidPath` for paths outside the mount.
pub fn exists_reports_presence<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok("write_file", ops.write_file(&at(&m, "d/f"), b"f"));
    assert_exists(ops.as_mut(), &m, true);
    assert_exists(ops.as_mut(), &at(&m, "d"), true);
    assert_exists(ops.as_mut(), &at(&m, "d/f"), true);
    assert_exists(ops.as_mut(), &at(&m, "d/g"), false);
    assert_exists(ops.as_mut(), &at(&m, "nope/g"), false);
    err(
        "exists(outside)",
        ops.exists(&format!("{m}/../outside")),
        GuestFsErrorKind::InvalidPath,
        None,
    );
}

/// `rename` of a file: to a new name, into a missing directory (parents created), and
/// over an existing file (replaced).
pub fn rename_file<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let a = at(&m, "a.txt");
    ok("write a", ops.write_file(&a, b"A content"));
    let b = at(&m, "b.txt");
    ok("rename a -> b", ops.rename(&a, &b));
    assert_exists(ops.as_mut(), &a, false);
    assert_content(ops.as_mut(), &b, b"A content");
    let nested = at(&m, "new/parent/dirs/b.txt");
    ok("rename into missing parents", ops.rename(&b, &nested));
    assert_exists(ops.as_mut(), &b, false);
    assert_content(ops.as_mut(), &nested, b"A content");
    let other = at(&m, "other.txt");
    ok(
        "write other",
        ops.write_file(&other, b"other, longer content to be replaced"),
    );
    ok("rename over existing file", ops.rename(&nested, &other));
    assert_exists(ops.as_mut(), &nested, false);
    assert_content(ops.as_mut(), &other, b"A content");
    assert_listing(ops.as_mut(), &m, &["new", "other.txt"]);
}

/// `rename` of a directory tree moves everything (nested files, empty dirs, binary
/// content, dotfiles) and leaves nothing at the source.
pub fn rename_dir_recursive<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    let bin: Vec<u8> = (0..=255u8).collect();
    ok("write src/a", ops.write_file(&at(&m, "src/a"), b"a"));
    ok("write src/.dot", ops.write_file(&at(&m, "src/.dot"), b""));
    ok(
        "write src/sub/deep/bin",
        ops.write_file(&at(&m, "src/sub/deep/bin"), &bin),
    );
    ok("mkdir src/emptydir", ops.mkdir(&at(&m, "src/emptydir")));
    ok(
        "rename src -> moved/dst",
        ops.rename(&at(&m, "src"), &at(&m, "moved/dst")),
    );
    assert_exists(ops.as_mut(), &at(&m, "src"), false);
    assert_listing(ops.as_mut(), &m, &["moved"]);
    assert_listing(
        ops.as_mut(),
        &at(&m, "moved/dst"),
        &[".dot", "a", "emptydir", "sub"],
    );
    assert_content(ops.as_mut(), &at(&m, "moved/dst/a"), b"a");
    assert_content(ops.as_mut(), &at(&m, "moved/dst/.dot"), b"");
    assert_content(ops.as_mut(), &at(&m, "moved/dst/sub/deep/bin"), &bin);
    assert_listing(ops.as_mut(), &at(&m, "moved/dst/emptydir"), &[]);
}

/// `rename` errors: missing source `NotFound`; onto an existing directory
/// `IsADirectory`; a directory onto a file `NotADirectory`; into its own subtree, the
/// mount root, or outside the mount `InvalidPath`. Nothing changes on error; renaming a
/// path to itself is a no-op.
pub fn rename_errors<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    use GuestFsErrorKind::{InvalidPath, IsADirectory, NotADirectory, NotFound};
    let (mut ops, m) = fresh(&mut factory);
    let f = at(&m, "f");
    let d = at(&m, "d");
    let e = at(&m, "e");
    ok("write f", ops.write_file(&f, b"f"));
    ok("write d/x", ops.write_file(&at(&m, "d/x"), b"x"));
    ok("write e/y", ops.write_file(&at(&m, "e/y"), b"y"));
    let missing = at(&m, "missing");
    err(
        "rename(missing, ..)",
        ops.rename(&missing, &at(&m, "z")),
        NotFound,
        Some(&missing),
    );
    err(
        "rename(file, dir)",
        ops.rename(&f, &d),
        IsADirectory,
        Some(&d),
    );
    err(
        "rename(dir, dir)",
        ops.rename(&d, &e),
        IsADirectory,
        Some(&e),
    );
    err(
        "rename(dir, file)",
        ops.rename(&d, &f),
        NotADirectory,
        Some(&f),
    );
    err(
        "rename(dir, own subtree)",
        ops.rename(&d, &at(&m, "d/inner/d")),
        InvalidPath,
        None,
    );
    err(
        "rename(mount, ..)",
        ops.rename(&m, &at(&m, "z")),
        InvalidPath,
        None,
    );
    err(
        "rename(file, outside)",
        ops.rename(&f, &format!("{m}/../devshell-vm-escape-probe-rename")),
        InvalidPath,
        None,
    );
    err(
        "rename(outside, inside)",
        ops.rename(
            &format!("{m}/../devshell-vm-escape-probe-missing"),
            &at(&m, "z"),
        ),
        InvalidPath,
        None,
    );
    ok("rename(f, f)", ops.rename(&f, &f));
    ok("rename(f, f via ./)", ops.rename(&f, &format!("{m}/./f")));
    ok("rename(d, d)", ops.rename(&d, &d));
    assert_listing(ops.as_mut(), &m, &["d", "e", "f"]);
    assert_content(ops.as_mut(), &f, b"f");
    assert_content(ops.as_mut(), &at(&m, "d/x"), b"x");
    assert_content(ops.as_mut(), &at(&m, "e/y"), b"y");
    assert_listing(ops.as_mut(), &d, &["x"]);
    assert_listing(ops.as_mut(), &e, &["y"]);
}

/// Non-canonical paths inside the mount (`.`, `..` that stays inside, doubled and
/// trailing slashes) are accepted and act on the normalised path.
pub fn non_canonical_paths_inside_mount_are_accepted<F: FnMut() -> Box<dyn GuestFsOps>>(
    mut factory: F,
) {
    let (mut ops, m) = fresh(&mut factory);
    ok(
        "write via ./ and ..",
        ops.write_file(&format!("{m}/./a//b/../c.txt"), b"c"),
    );
    assert_listing(ops.as_mut(), &m, &["a"]);
    assert_listing(ops.as_mut(), &format!("{m}//a/"), &["c.txt"]);
    assert_content(ops.as_mut(), &at(&m, "a/c.txt"), b"c");
    assert_content(ops.as_mut(), &format!("{m}/a/./x/../c.txt"), b"c");
    ok("mkdir via ..", ops.mkdir(&format!("{m}/a/../b/./")));
    assert_kind(ops.as_mut(), &at(&m, "b"), GuestKind::Dir, None);
    ok("remove via ..", ops.remove(&format!("{m}/b/../a/c.txt")));
    assert_listing(ops.as_mut(), &at(&m, "a"), &[]);
    // `..` from the mount root itself, coming back in, stays inside.
    let leaf = m.rsplit('/').next().unwrap_or_default();
    ok(
        "write via ../<leaf>",
        ops.write_file(&format!("{m}/../{leaf}/back.txt"), b"back"),
    );
    assert_content(ops.as_mut(), &at(&m, "back.txt"), b"back");
}

/// Paths that are not guest paths at all (empty, NUL, relative) are `InvalidPath` for
/// every operation.
pub fn malformed_paths_are_invalid_path<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok("write keep", ops.write_file(&at(&m, "keep"), b"k"));
    let nul = format!("{m}/nul\0byte");
    let leaf = m.rsplit('/').next().unwrap_or_default().to_owned();
    let relative_leaf = format!("{leaf}/x");
    for p in [
        "",
        "relative",
        "./x",
        "../x",
        relative_leaf.as_str(),
        nul.as_str(),
    ] {
        check_refused(ops.as_mut(), &m, p, true);
    }
    assert_listing(ops.as_mut(), &m, &["keep"]);
}

/// Runs every operation on `p` and asserts `InvalidPath` for each. `p` must not name an
/// existing path outside the mount when `allow_remove` is set (remove is only probed on
/// names that do not exist).
#[track_caller]
fn check_refused(ops: &mut dyn GuestFsOps, m: &str, p: &str, allow_remove: bool) {
    use GuestFsErrorKind::InvalidPath;
    let inside = at(m, "keep");
    err(
        &format!("list_dir({p:?})"),
        ops.list_dir(p),
        InvalidPath,
        Some(p),
    );
    err(
        &format!("read_file({p:?})"),
        ops.read_file(p),
        InvalidPath,
        Some(p),
    );
    err(&format!("stat({p:?})"), ops.stat(p), InvalidPath, Some(p));
    err(
        &format!("exists({p:?})"),
        ops.exists(p),
        InvalidPath,
        Some(p),
    );
    err(
        &format!("write_file({p:?})"),
        ops.write_file(p, b"escaped"),
        InvalidPath,
        Some(p),
    );
    err(&format!("mkdir({p:?})"), ops.mkdir(p), InvalidPath, Some(p));
    err(
        &format!("rename({inside:?}, {p:?})"),
        ops.rename(&inside, p),
        InvalidPath,
        Some(p),
    );
    if allow_remove {
        err(
            &format!("remove({p:?})"),
            ops.remove(p),
            InvalidPath,
            Some(p),
        );
        err(
            &format!("rename({p:?}, {inside:?})"),
            ops.rename(p, &inside),
            InvalidPath,
            Some(p),
        );
    }
}

/// Every lexical escape is `InvalidPath` for every operation, and nothing inside the
/// mount changes: `..` out of the mount, `..` from a subdirectory, `..` clamped at `/`,
/// absolute paths elsewhere, the mount's parent and `/`, a sibling sharing the mount's
/// name as a prefix.
pub fn escape_attempts_are_invalid_path<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    let (mut ops, m) = fresh(&mut factory);
    ok("write keep", ops.write_file(&at(&m, "keep"), b"k"));
    ok("mkdir sub", ops.mkdir(&at(&m, "sub")));
    let probe = "devshell-vm-escape-probe";
    // Paths that may exist outside (never removed, never renamed away).
    let existing_outside = [
        format!("{m}/.."),
        format!("{m}/sub/../.."),
        "/".to_owned(),
        format!("{m}/../../../../../../../../.."),
    ];
    for p in &existing_outside {
        check_refused(ops.as_mut(), &m, p, false);
    }
    // Probe names that do not exist outside: every operation, remove included.
    let probes = [
        format!("{m}/../{probe}"),
        format!("{m}/sub/../../{probe}"),
        format!("{m}/./../{probe}/x"),
        format!("{m}/../../../../../../../../../../{probe}"),
        format!("{m}-{probe}"),
        format!("{m}-{probe}/x"),
        format!("{m}{probe}"),
        format!("/{probe}/x"),
        format!("/tmp/{probe}"),
    ];
    for p in &probes {
        check_refused(ops.as_mut(), &m, p, true);
    }
    assert_listing(ops.as_mut(), &m, &["keep", "sub"]);
    assert_content(ops.as_mut(), &at(&m, "keep"), b"k");
    assert_listing(ops.as_mut(), &at(&m, "sub"), &[]);
}

/// For an implementation whose backend cannot be reached (the factory returns an
/// instance after stopping its VM, killing its sidecar, or pointing it at a dead
/// socket): every operation on a valid path under the mount fails with
/// `Transport`, `GuestCommand` or `Internal` — never `Ok`, never `NotFound` (so
/// `exists` is an error, not `Ok(false)`: the earlier project's sidecar broke exactly
/// that), never another path error; and paths outside the mount or malformed are still
/// `InvalidPath`, showing the check runs locally before anything is sent.
///
/// Not part of [`run_all`] (its factory is different); call it from its own test.
pub fn unreachable_backend_fails_loudly<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    use GuestFsErrorKind::{GuestCommand, Internal, InvalidPath, Transport};
    let mut ops = factory();
    let m = ops.mount().to_owned();
    match crate::normalize_guest_path(&m) {
        Ok(n) if n == m && m != "/" => {}
        other => panic!(
            "factory precondition: mount() must be normalised and not \"/\", got {m:?} ({other:?})"
        ),
    }
    let failure = |what: &str, result: Result<String, GuestFsError>| match result {
        Ok(v) => {
            panic!("{what} on an unreachable backend: expected a transport-kind error, got Ok({v})")
        }
        Err(e) => assert!(
            matches!(e.kind(), Transport | GuestCommand | Internal),
            "{what} on an unreachable backend: expected Transport, GuestCommand or Internal, got Err({e}) [{e:?}]"
        ),
    };
    for p in [m.clone(), at(&m, "missing"), at(&m, "d/f.txt")] {
        failure(&format!("list_dir({p:?})"), dbg(ops.list_dir(&p)));
        failure(&format!("read_file({p:?})"), dbg(ops.read_file(&p)));
        failure(&format!("write_file({p:?})"), dbg(ops.write_file(&p, b"x")));
        failure(&format!("mkdir({p:?})"), dbg(ops.mkdir(&p)));
        failure(&format!("stat({p:?})"), dbg(ops.stat(&p)));
        failure(&format!("exists({p:?})"), dbg(ops.exists(&p)));
        if p != m {
            failure(&format!("remove({p:?})"), dbg(ops.remove(&p)));
            failure(
                &format!("rename({p:?}, ..)"),
                dbg(ops.rename(&p, &at(&m, "renamed"))),
            );
        }
    }
    let leaf = m.rsplit('/').next().unwrap_or_default().to_owned();
    let probe = format!("{m}/../devshell-vm-escape-probe");
    let nul = format!("{m}/nul\0byte");
    for p in [
        "",
        "relative",
        leaf.as_str(),
        probe.as_str(),
        nul.as_str(),
        "/",
    ] {
        err(
            &format!("list_dir({p:?})"),
            ops.list_dir(p),
            InvalidPath,
            Some(p),
        );
        err(
            &format!("read_file({p:?})"),
            ops.read_file(p),
            InvalidPath,
            Some(p),
        );
        err(
            &format!("write_file({p:?})"),
            ops.write_file(p, b"x"),
            InvalidPath,
            Some(p),
        );
        err(&format!("mkdir({p:?})"), ops.mkdir(p), InvalidPath, Some(p));
        err(&format!("stat({p:?})"), ops.stat(p), InvalidPath, Some(p));
        err(
            &format!("exists({p:?})"),
            ops.exists(p),
            InvalidPath,
            Some(p),
        );
        if p != "/" {
            err(
                &format!("remove({p:?})"),
                ops.remove(p),
                InvalidPath,
                Some(p),
            );
        }
    }
}

/// A result with its success value shown as text (for [`unreachable_backend_fails_loudly`]).
fn dbg<T: Debug>(result: Result<T, GuestFsError>) -> Result<String, GuestFsError> {
    result.map(|v| short_debug(&v))
}

/// Calls every check of the main suite, in order, each with a fresh instance.
///
/// # Panics
/// On the first check the implementation fails, with a message naming the check.
pub fn run_all<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    crate::__guest_fs_for_each_check!(@run_all factory);
}

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

/// Runs one named check, adding its name to a failure.
#[doc(hidden)]
pub fn __run_named<F>(name: &str, check: F)
where
    F: FnOnce(),
{
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(non-string panic)");
        panic!("guest-fs conformance check `{name}` failed: {message}");
    }
}
