//! The main suite's checks of each operation: content, listings, errors, `mkdir`,
//! `remove`, `stat`, `exists`, `rename`.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the checks use the parent's helpers as before"
)]
use super::*;

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
