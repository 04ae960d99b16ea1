//! The session's private staging directory: naming, creation, stale cleanup.
//!
//! Name: `<export base>/devshell-host-<pid>-<unix nanos>-<counter>`, held with an owner
//! lock beside it (see [`devshell_vm_sync::StagingDir`]): a later session removes
//! directories whose owner died without cleaning up (crash, `kill -9`), also when that
//! owner ran in another pid namespace sharing the export base.

use std::path::Path;

use devshell_vm_sync::StagingDir;

use crate::HostError;

/// Prefix of every staging directory this backend creates.
pub const STAGING_PREFIX: &str = "devshell-host-";

/// Creates a fresh 0700 staging directory under `export_base` (creating the base too);
/// dropping the value removes it.
pub(crate) fn create(export_base: &Path) -> Result<StagingDir, HostError> {
    StagingDir::create(export_base, STAGING_PREFIX).map_err(|err| {
        let (path, source) = err.into_io_parts(export_base.to_path_buf());
        HostError::StagingCreate { path, source }
    })
}

/// Removes staging directories under `export_base` whose owner is gone: its lock is free,
/// or (a directory made before owner locks existed) the pid in its name is not running.
///
/// Only directories named by this backend and owned by the current user are touched; a
/// symlink with such a name is never followed. Returns how many were removed. Failures
/// to remove one directory are skipped (another session may be removing it at the same
/// time); a missing export base removes nothing.
#[must_use = "the count says whether anything was cleaned"]
pub fn clean_stale(export_base: &Path) -> usize {
    devshell_vm_sync::clean_stale_staging(export_base, STAGING_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_dir_carries_the_prefix_and_pid_and_goes_on_drop() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = create(&base.path().join("nested/base")).expect("create");
        let mode = std::fs::metadata(dir.path())
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o700);
        assert!(
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{STAGING_PREFIX}{}-", std::process::id())))
        );
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_as_export_base_is_a_staging_create_error_naming_it() {
        let base = tempfile::tempdir().expect("tempdir");
        let file = base.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        match create(&file) {
            Err(HostError::StagingCreate { path, .. }) => assert_eq!(path, file),
            other => panic!("expected StagingCreate, got {other:?}"),
        }
    }
}
