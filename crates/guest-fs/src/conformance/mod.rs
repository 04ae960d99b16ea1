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
//! **Special files** (a FIFO with a reader, a character device) also need real files:
//! [`SpecialFileFixture`], [`run_special_file_all`] and
//! [`guest_fs_special_file_tests!`](crate::guest_fs_special_file_tests) check that
//! `write_file` onto one is refused or replaces it with a regular file, and never
//! writes into it.
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

// The checks live in one file per seam; their public functions are re-exported here,
// so every check is `conformance::<name>` (the macros rely on it).
mod operations;
mod paths;
mod special;
mod symlink;

pub use operations::*;
pub use paths::*;
pub use special::*;
pub use symlink::*;

/// Calls every check of the main suite, in order, each with a fresh instance.
///
/// # Panics
/// On the first check the implementation fails, with a message naming the check.
pub fn run_all<F: FnMut() -> Box<dyn GuestFsOps>>(mut factory: F) {
    crate::__guest_fs_for_each_check!(@run_all factory);
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
