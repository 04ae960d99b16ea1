//! The suite is not vacuous: implementations with one seeded fault each (the faults the
//! earlier project actually had, and a few more) fail the check meant to catch them,
//! while the unmodified mock passes that same check.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use devshell_vm_guest_fs::conformance::{self, SymlinkFixture};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestMetadata, MockGuestFsOps};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Lima v1: `write_file` does not create parents.
    NoParents,
    /// Lima v1: a missing path surfaces as a failed command.
    NotFoundAsCommand,
    /// β v1: reading a directory is an I/O error.
    ReadDirAsIo,
    UnsortedList,
    HidesDotfiles,
    /// Escapes reported as "not found" instead of refused.
    EscapeAsNotFound,
    AppendingWrite,
    LossyUtf8Write,
    TruncatesLargeWrites,
    RemoveMountAllowed,
    MkdirOverFileSucceeds,
    RenameOverDirSucceeds,
}

struct Faulty {
    inner: MockGuestFsOps,
    fault: Fault,
}

impl Faulty {
    fn fix(&self, e: GuestFsError) -> GuestFsError {
        match (self.fault, e) {
            (Fault::NotFoundAsCommand, GuestFsError::NotFound { .. }) => {
                GuestFsError::GuestCommand {
                    status: 1,
                    stderr: "cd: no such file or directory".into(),
                }
            }
            (Fault::ReadDirAsIo, GuestFsError::IsADirectory { path }) => GuestFsError::Internal {
                message: format!("io error reading {path}"),
            },
            (Fault::EscapeAsNotFound, GuestFsError::InvalidPath { path, .. }) => {
                GuestFsError::NotFound { path }
            }
            (_, e) => e,
        }
    }
}

impl GuestFsOps for Faulty {
    fn mount(&self) -> &str {
        self.inner.mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let mut names = self.inner.list_dir(path).map_err(|e| self.fix(e))?;
        match self.fault {
            Fault::UnsortedList => names.reverse(),
            Fault::HidesDotfiles => names.retain(|n| !n.starts_with('.')),
            _ => {}
        }
        Ok(names)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        self.inner.read_file(path).map_err(|e| self.fix(e))
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        match self.fault {
            Fault::NoParents => {
                if let Some((parent, _)) = path.rsplit_once('/')
                    && !parent.is_empty()
                    && !self.inner.exists(parent).unwrap_or(false)
                {
                    return Err(GuestFsError::NotFound { path: path.into() });
                }
                self.inner.write_file(path, data)
            }
            Fault::AppendingWrite => {
                let mut old = self.inner.read_file(path).unwrap_or_default();
                old.extend_from_slice(data);
                self.inner.write_file(path, &old)
            }
            Fault::LossyUtf8Write => self
                .inner
                .write_file(path, String::from_utf8_lossy(data).as_bytes()),
            Fault::TruncatesLargeWrites => self
                .inner
                .write_file(path, &data[..data.len().min(4 << 20)]),
            _ => self.inner.write_file(path, data),
        }
        .map_err(|e| self.fix(e))
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        match (self.fault, self.inner.mkdir(path)) {
            (Fault::MkdirOverFileSucceeds, Err(GuestFsError::NotADirectory { .. })) => Ok(()),
            (_, r) => r.map_err(|e| self.fix(e)),
        }
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        if matches!(self.fault, Fault::RemoveMountAllowed) && path == self.inner.mount() {
            for name in self.inner.list_dir(path)? {
                self.inner.remove(&format!("{path}/{name}"))?;
            }
            return Ok(());
        }
        self.inner.remove(path).map_err(|e| self.fix(e))
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        self.inner.stat(path).map_err(|e| self.fix(e))
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        if matches!(self.fault, Fault::RenameOverDirSucceeds)
            && self
                .inner
                .stat(to)
                .is_ok_and(|m| m.kind == devshell_vm_guest_fs::GuestKind::Dir)
        {
            self.inner.remove(to)?;
        }
        devshell_vm_guest_fs::rename_by_copy(self, from, to)
    }
}

fn factory(fault: Fault) -> impl FnMut() -> Box<dyn GuestFsOps> {
    move || {
        Box::new(Faulty {
            inner: MockGuestFsOps::new("/workspace").expect("mount"),
            fault,
        }) as Box<dyn GuestFsOps>
    }
}

fn mock() -> Box<dyn GuestFsOps> {
    Box::new(MockGuestFsOps::new("/workspace").expect("mount"))
}

/// `check` passes for the mock and panics for the faulty implementation.
fn caught(fault: Fault, check: fn(&mut dyn FnMut() -> Box<dyn GuestFsOps>)) {
    check(&mut mock);
    let mut faulty = factory(fault);
    let result = catch_unwind(AssertUnwindSafe(|| check(&mut faulty)));
    assert!(result.is_err(), "the check did not catch fault {fault:?}");
}

#[test]
fn write_without_parents_is_caught() {
    caught(Fault::NoParents, |f| {
        conformance::write_creates_missing_parents(f);
    });
}

#[test]
fn not_found_as_command_failure_is_caught() {
    caught(Fault::NotFoundAsCommand, |f| {
        conformance::read_file_errors(f);
    });
    caught(Fault::NotFoundAsCommand, |f| {
        conformance::exists_reports_presence(f);
    });
    caught(Fault::NotFoundAsCommand, |f| {
        conformance::remove_errors(f);
    });
}

#[test]
fn read_dir_as_io_error_is_caught() {
    caught(Fault::ReadDirAsIo, |f| {
        conformance::read_file_errors(f);
    });
}

#[test]
fn unsorted_or_dotless_listing_is_caught() {
    caught(Fault::UnsortedList, |f| {
        conformance::list_dir_sorted_names_with_dotfiles(f);
    });
    caught(Fault::HidesDotfiles, |f| {
        conformance::list_dir_sorted_names_with_dotfiles(f);
    });
    caught(Fault::HidesDotfiles, |f| {
        conformance::rename_dir_recursive(f);
    });
}

#[test]
fn escape_reported_as_not_found_is_caught() {
    caught(Fault::EscapeAsNotFound, |f| {
        conformance::escape_attempts_are_invalid_path(f);
    });
    caught(Fault::EscapeAsNotFound, |f| {
        conformance::malformed_paths_are_invalid_path(f);
    });
}

#[test]
fn content_faults_are_caught() {
    caught(Fault::AppendingWrite, |f| {
        conformance::write_replaces_and_truncates(f);
    });
    caught(Fault::LossyUtf8Write, |f| {
        conformance::binary_content_all_byte_values(f);
    });
    caught(Fault::TruncatesLargeWrites, |f| {
        conformance::large_file_8_mib(f);
    });
}

#[test]
fn structural_faults_are_caught() {
    caught(Fault::RemoveMountAllowed, |f| {
        conformance::remove_errors(f);
    });
    caught(Fault::MkdirOverFileSucceeds, |f| {
        conformance::mkdir_over_file_is_not_a_directory(f);
    });
    caught(Fault::RenameOverDirSucceeds, |f| {
        conformance::rename_errors(f);
    });
}

#[test]
fn run_all_names_the_failing_check() {
    let result = catch_unwind(AssertUnwindSafe(|| {
        conformance::run_all(factory(Fault::TruncatesLargeWrites));
    }));
    let payload = result.expect_err("run_all must fail for a faulty implementation");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("`large_file_8_mib`"),
        "message should name the check: {message}"
    );
}

#[test]
fn factory_precondition_is_enforced() {
    let result = catch_unwind(|| {
        conformance::fresh_instance_has_empty_mount(|| {
            let mut m = MockGuestFsOps::new("/workspace").expect("mount");
            m.write_file("/workspace/leftover", b"x").expect("write");
            Box::new(m) as Box<dyn GuestFsOps>
        });
    });
    assert!(result.is_err(), "a non-empty mount must be refused");
    let result = catch_unwind(|| {
        conformance::fresh_instance_has_empty_mount(|| {
            Box::new(MockGuestFsOps::new("/").expect("mount")) as Box<dyn GuestFsOps>
        });
    });
    assert!(result.is_err(), "mount \"/\" must be refused");
}

type SymlinkCheck = fn(&mut dyn FnMut() -> SymlinkFixture);

/// The naive host implementation (follows every link) fails every escape check; the
/// confined one passes the same checks.
#[test]
fn symlink_escapes_are_caught() {
    let checks: [(&str, SymlinkCheck); 5] = [
        ("dir absolute", |f| {
            conformance::symlink_dir_escape_absolute(f);
        }),
        ("dir relative", |f| {
            conformance::symlink_dir_escape_relative(f);
        }),
        ("nested and chained", |f| {
            conformance::symlink_nested_and_chained_escape(f);
        }),
        ("file", |f| {
            conformance::symlink_file_escape(f);
        }),
        ("recursive ops", |f| {
            conformance::symlink_recursive_ops_do_not_descend(f);
        }),
    ];
    for (name, check) in checks {
        check(&mut || common::symlink_fixture(true));
        let result = catch_unwind(AssertUnwindSafe(|| {
            check(&mut || common::symlink_fixture(false));
        }));
        assert!(
            result.is_err(),
            "symlink check {name:?} did not catch the naive implementation"
        );
    }
}

/// A backend that is down: every operation fails. `check_first: false` sends before
/// checking the path (escapes come back as transport errors); `as_not_found` reports
/// the failure as `NotFound` (so `exists` says `Ok(false)`).
struct Dead {
    mount: String,
    check_first: bool,
    as_not_found: bool,
}

impl Dead {
    fn fail(&self, path: &str) -> GuestFsError {
        if self.check_first
            && let Err(e) = devshell_vm_guest_fs::check_guest_path(&self.mount, path)
        {
            return e;
        }
        if self.as_not_found {
            GuestFsError::NotFound { path: path.into() }
        } else {
            GuestFsError::Transport {
                message: "connection refused".into(),
            }
        }
    }
}

impl GuestFsOps for Dead {
    fn mount(&self) -> &str {
        &self.mount
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        Err(self.fail(path))
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        Err(self.fail(path))
    }
    fn write_file(&mut self, path: &str, _data: &[u8]) -> Result<(), GuestFsError> {
        Err(self.fail(path))
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        Err(self.fail(path))
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        Err(self.fail(path))
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        Err(self.fail(path))
    }
}

fn dead(check_first: bool, as_not_found: bool) -> impl FnMut() -> Box<dyn GuestFsOps> {
    move || {
        Box::new(Dead {
            mount: "/workspace".into(),
            check_first,
            as_not_found,
        }) as Box<dyn GuestFsOps>
    }
}

/// A correct dead backend passes the unreachable check; one that reports the failure
/// as `NotFound` (the earlier sidecar's broken `exists`), or that sends escapes to the
/// backend instead of refusing them locally, fails it.
#[test]
fn unreachable_backend_faults_are_caught() {
    conformance::unreachable_backend_fails_loudly(dead(true, false));
    for (check_first, as_not_found, fault) in [
        (true, true, "failure reported as NotFound"),
        (false, false, "paths sent before the mount check"),
    ] {
        let result = catch_unwind(AssertUnwindSafe(|| {
            conformance::unreachable_backend_fails_loudly(dead(check_first, as_not_found));
        }));
        assert!(result.is_err(), "the check did not catch: {fault}");
    }
    // A reachable implementation is not mistaken for an unreachable one.
    let result = catch_unwind(AssertUnwindSafe(|| {
        conformance::unreachable_backend_fails_loudly(mock);
    }));
    assert!(
        result.is_err(),
        "a healthy mock must fail the unreachable check"
    );
}

/// Writes with plain `std::fs::write`, following whatever node is there (the earlier
/// sidecar's `write_file`, which wrote into FIFOs and devices and reported success).
struct WritesIntoAnything {
    inner: common::HostDirOps,
    root: std::path::PathBuf,
}

impl GuestFsOps for WritesIntoAnything {
    fn mount(&self) -> &str {
        self.inner.mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        self.inner.list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        self.inner.read_file(path)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let rel = path
            .strip_prefix(self.inner.mount())
            .unwrap_or(path)
            .trim_start_matches('/');
        let host = self.root.join(rel);
        // O_NONBLOCK so the open of a FIFO does not wait; then write whatever it is.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(0o4000)
            .open(&host);
        std::io::Write::write_all(
            &mut file.map_err(|e| GuestFsError::Internal {
                message: e.to_string(),
            })?,
            data,
        )
        .map_err(|e| GuestFsError::Internal {
            message: e.to_string(),
        })
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.inner.mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.inner.remove(path)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        self.inner.stat(path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        self.inner.exists(path)
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// The special-file checks catch a `write_file` that writes into a FIFO or a device,
/// and pass the reference implementation that refuses.
#[test]
fn writing_into_special_files_is_caught() {
    conformance::run_special_file_all(common::special_fixture);
    for check in [
        conformance::write_file_onto_fifo_is_refused_or_replaced::<
            fn() -> conformance::SpecialFileFixture,
        >,
        conformance::write_file_onto_char_device_is_refused_or_replaced,
    ] {
        let result = catch_unwind(AssertUnwindSafe(|| {
            check(|| {
                let mut fx = common::special_fixture();
                let mount = std::path::PathBuf::from(fx.ops.mount());
                let inner = common::HostDirOps::new(&mount, true);
                fx.ops = Box::new(WritesIntoAnything { inner, root: mount });
                fx
            });
        }));
        assert!(
            result.is_err(),
            "the special-file check passed a write-through implementation"
        );
    }
}
