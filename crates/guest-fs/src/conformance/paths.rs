//! The main suite's path checks: non-canonical paths inside the mount, malformed
//! paths, escapes, and an unreachable backend.

#[allow(
    clippy::wildcard_imports,
    reason = "one module split in files: the checks use the parent's helpers as before"
)]
use super::*;

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
