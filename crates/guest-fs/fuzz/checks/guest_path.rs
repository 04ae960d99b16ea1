//! The guest path check, shared by the `guest_path` fuzz target and the stable corpus
//! test. The input is split at the first NUL-free newline into a mount and a path.
//! Normalisation must never panic, be idempotent, give an absolute path without `.`,
//! `..` or empty segments; the mount check must agree with `guest_path_is_under_mount`
//! and return a path under the mount.

use devshell_vm_guest_fs::{check_guest_path, guest_path_is_under_mount, normalize_guest_path};

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (mount, path) = text
        .split_once('\n')
        .unwrap_or(("/workspace", text.as_ref()));
    for input in [mount, path] {
        if let Ok(norm) = normalize_guest_path(input) {
            assert!(
                norm.starts_with('/'),
                "{input:?} -> {norm:?} is not absolute"
            );
            assert!(
                norm == "/"
                    || norm[1..]
                        .split('/')
                        .all(|s| !s.is_empty() && s != "." && s != ".."),
                "{input:?} -> {norm:?} has an empty, `.` or `..` segment"
            );
            assert_eq!(
                normalize_guest_path(&norm).as_deref(),
                Ok(norm.as_str()),
                "not idempotent on {input:?}"
            );
        }
    }
    let under = guest_path_is_under_mount(mount, path);
    match check_guest_path(mount, path) {
        Ok(checked) => {
            let norm_mount = normalize_guest_path(mount).expect("an accepted mount normalises");
            assert!(
                under,
                "check_guest_path accepted {path:?} under {mount:?} but is_under says no"
            );
            assert!(
                checked == norm_mount
                    || norm_mount == "/"
                    || checked.starts_with(&format!("{norm_mount}/")),
                "{path:?} checked to {checked:?}, outside {norm_mount:?}"
            );
        }
        Err(err) => {
            let _ = err.to_string();
            if normalize_guest_path(mount).is_ok_and(|m| m != "/") {
                assert!(
                    !under,
                    "check_guest_path refused {path:?} under {mount:?}: {err}"
                );
            }
        }
    }
}
