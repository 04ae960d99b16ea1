//! Guest path rules, the [`GuestFsOps`] contract, an in-memory mock and one conformance
//! suite for every implementation.
//!
//! In Mode P (`DEVSHELL_VM_WORKSPACE_MODE=guest`) the guest tree — inside a Lima VM or
//! behind the β sidecar — is the source of truth, and file operations go straight to it
//! through [`GuestFsOps`]. This crate owns what every backend must agree on:
//!
//! - **Paths** ([`normalize_guest_path`], [`guest_path_is_under_mount`],
//!   [`check_guest_path`], [`guest_project_dir_on_guest`], [`logical_to_guest`]):
//!   lexical, pure, and strict (empty, NUL and relative input are errors).
//! - **The contract** ([`GuestFsOps`]): five operations from the earlier project
//!   (`list_dir`, `read_file`, `write_file`, `mkdir`, `remove`) plus `stat`, `exists`
//!   and `rename`, with **one** error meaning for all implementations (a missing path is
//!   always [`GuestFsError::NotFound`], `write_file` always creates missing parents,
//!   `list_dir` is always sorted and shows dotfiles). The table is on the trait.
//! - **A mock** ([`MockGuestFsOps`]) for callers' unit tests; it can also play an
//!   unreachable backend ([`MockGuestFsOps::set_unreachable`]).
//! - **The conformance suite**, behind the cargo feature `conformance` (off by default,
//!   so it is not compiled into users' builds; implementers of [`GuestFsOps`] enable it
//!   in their `[dev-dependencies]`): the `conformance` module and the
//!   `guest_fs_conformance_tests!` and `guest_fs_symlink_escape_tests!` macros that the
//!   mock, the Lima ops, the sidecar and the β client all run, plus
//!   `conformance::unreachable_backend_fails_loudly` for an instance whose backend is
//!   down (the failure kinds `Transport`/`GuestCommand`/`Internal`, never `NotFound`).
//!
//! ```toml
//! [dev-dependencies]
//! devshell-vm-guest-fs = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! ```
//! use devshell_vm_guest_fs::{logical_to_guest, GuestFsError, GuestFsOps, MockGuestFsOps};
//!
//! let mut fs = MockGuestFsOps::new("/workspace")?;
//! // The project at VFS path /a/app lives at /workspace/app on the guest.
//! let main_rs = logical_to_guest("/workspace", "/a/app", "/a/app/src/main.rs")?;
//! assert_eq!(main_rs, "/workspace/app/src/main.rs");
//! fs.write_file(&main_rs, b"fn main() {}\n")?;            // parents are created
//! assert_eq!(fs.list_dir("/workspace/app")?, ["src"]);
//! assert!(!fs.exists("/workspace/app/Cargo.toml")?);      // missing: Ok(false)
//! assert!(matches!(fs.read_file("/workspace/app/Cargo.toml"),
//!                  Err(GuestFsError::NotFound { .. })));
//! assert!(matches!(fs.read_file("/workspace/../etc/passwd"),
//!                  Err(GuestFsError::InvalidPath { .. })));
//! # Ok::<(), GuestFsError>(())
//! ```

mod error;
mod mock;
mod ops;
mod path;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{GuestFsError, GuestFsErrorKind};
pub use mock::MockGuestFsOps;
pub use ops::{GuestFsOps, GuestKind, GuestMetadata, rename_by_copy};
pub use path::{
    check_guest_path, guest_path_is_under_mount, guest_project_dir_on_guest, logical_to_guest,
    normalize_guest_path,
};

/// One `#[test]` per check of the main conformance suite, for an implementation
/// (feature `conformance`).
///
/// The argument is a factory expression: a closure returning a fresh
/// `Box<dyn GuestFsOps>` whose mount (not `/`) is an existing empty directory. It is
/// evaluated once per test. Use the `mod name, factory` form to instantiate the suite
/// more than once in one file.
///
/// ```
/// // crates/<backend>/tests/guest_fs_conformance.rs (here with the mock)
/// use devshell_vm_guest_fs::{guest_fs_conformance_tests, GuestFsOps, MockGuestFsOps};
/// guest_fs_conformance_tests!(|| {
///     Box::new(MockGuestFsOps::new("/workspace").expect("mount")) as Box<dyn GuestFsOps>
/// });
/// // or, several in one file:
/// guest_fs_conformance_tests!(mod deep, || {
///     Box::new(MockGuestFsOps::new("/srv/ws").expect("mount")) as Box<dyn GuestFsOps>
/// });
/// # fn main() {}
/// ```
#[cfg(feature = "conformance")]
#[macro_export]
macro_rules! guest_fs_conformance_tests {
    (mod $name:ident, $factory:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__guest_fs_for_each_check!(@tests $factory);
        }
    };
    ($factory:expr $(,)?) => {
        $crate::__guest_fs_for_each_check!(@tests $factory);
    };
}

/// One `#[test]` per symlink-escape check, for an implementation with real files
/// (feature `conformance`).
///
/// The argument is a factory expression returning a fresh
/// [`conformance::SymlinkFixture`]. Same `mod name, factory` form as
/// [`guest_fs_conformance_tests!`].
#[cfg(feature = "conformance")]
#[macro_export]
macro_rules! guest_fs_symlink_escape_tests {
    (mod $name:ident, $factory:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::__guest_fs_for_each_check!(@symlink_tests $factory);
        }
    };
    ($factory:expr $(,)?) => {
        $crate::__guest_fs_for_each_check!(@symlink_tests $factory);
    };
}

/// One `#[test]` per special-file check (`write_file` onto a FIFO or a device), for an
/// implementation with real files.
///
/// The argument is a factory expression returning a fresh
/// [`conformance::SpecialFileFixture`]. Same `mod name, factory` form as
/// [`guest_fs_conformance_tests!`].
#[cfg(feature = "conformance")]
#[macro_export]
macro_rules! guest_fs_special_file_tests {
    (mod $name:ident, $factory:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::guest_fs_special_file_tests!($factory);
        }
    };
    ($factory:expr $(,)?) => {
        #[test]
        fn write_file_onto_fifo_is_refused_or_replaced() {
            $crate::conformance::write_file_onto_fifo_is_refused_or_replaced($factory);
        }
        #[test]
        fn write_file_onto_char_device_is_refused_or_replaced() {
            $crate::conformance::write_file_onto_char_device_is_refused_or_replaced($factory);
        }
    };
}

/// The single list of checks, expanded into tests or into `run_all` (internal).
#[doc(hidden)]
#[cfg(feature = "conformance")]
#[macro_export]
macro_rules! __guest_fs_for_each_check {
    (@@expand tests ($factory:expr) [$($main:ident),* $(,)?] [$($sym:ident),* $(,)?]) => {
        $(
            #[test]
            fn $main() {
                $crate::conformance::$main($factory);
            }
        )*
    };
    (@@expand symlink_tests ($factory:expr) [$($main:ident),* $(,)?] [$($sym:ident),* $(,)?]) => {
        $(
            #[test]
            fn $sym() {
                $crate::conformance::$sym($factory);
            }
        )*
    };
    (@@expand run_all ($factory:ident) [$($main:ident),* $(,)?] [$($sym:ident),* $(,)?]) => {
        $(
            $crate::conformance::__run_named(stringify!($main), || {
                $crate::conformance::$main(&mut $factory);
            });
        )*
    };
    (@@expand run_symlink_all ($factory:ident) [$($main:ident),* $(,)?] [$($sym:ident),* $(,)?]) => {
        $(
            $crate::conformance::__run_named(stringify!($sym), || {
                $crate::conformance::$sym(&mut $factory);
            });
        )*
    };
    (@$mode:ident $($args:tt)*) => {
        $crate::__guest_fs_for_each_check!(@@expand $mode ($($args)*)
            [
                fresh_instance_has_empty_mount,
                write_read_roundtrip_nested,
                write_creates_missing_parents,
                write_replaces_and_truncates,
                empty_file_roundtrip,
                binary_content_all_byte_values,
                large_file_8_mib,
                special_names_roundtrip,
                list_dir_sorted_names_with_dotfiles,
                list_dir_errors,
                read_file_errors,
                write_file_errors,
                file_as_path_component_is_not_a_directory,
                mkdir_is_recursive_and_idempotent,
                mkdir_over_file_is_not_a_directory,
                remove_file_and_recursive_dir,
                remove_errors,
                stat_kinds_and_sizes,
                exists_reports_presence,
                rename_file,
                rename_dir_recursive,
                rename_errors,
                non_canonical_paths_inside_mount_are_accepted,
                malformed_paths_are_invalid_path,
                escape_attempts_are_invalid_path,
            ]
            [
                symlink_dir_escape_absolute,
                symlink_dir_escape_relative,
                symlink_nested_and_chained_escape,
                symlink_file_escape,
                symlink_recursive_ops_do_not_descend,
                symlink_inside_mount_is_followed,
            ]
        );
    };
}

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
