//! The session's private staging directory: naming, creation, stale cleanup.
//!
//! Name: `<export base>/devshell-host-<pid>-<unix nanos>-<counter>`. The pid lets a later
//! session find directories whose owner died without cleaning up (crash, `kill -9`) and
//! remove them; the nanos and a per-process counter keep names unique when one process
//! opens several sessions.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Pid, geteuid};

use crate::HostError;

/// Prefix of every staging directory this backend creates.
pub const STAGING_PREFIX: &str = "devshell-host-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a fresh 0700 staging directory under `export_base` (creating the base too).
pub(crate) fn create(export_base: &Path) -> Result<PathBuf, HostError> {
    std::fs::create_dir_all(export_base).map_err(|source| HostError::StagingCreate {
        path: export_base.to_path_buf(),
        source,
    })?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{STAGING_PREFIX}{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = export_base.join(name);
    make_private_dir(&dir)?;
    Ok(dir)
}

/// Creates one private (0700) directory; fails if it exists.
pub(crate) fn make_private_dir(dir: &Path) -> Result<(), HostError> {
    let err = |source| HostError::StagingCreate {
        path: dir.to_path_buf(),
        source,
    };
    DirBuilder::new().mode(0o700).create(dir).map_err(err)?;
    // The umask can only remove bits; set the mode exactly so the owner can always use it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Removes staging directories under `export_base` left by processes that no longer run.
///
/// Only directories named by this backend, owned by the current user and whose pid is dead
/// are touched; a symlink with such a name is never followed. Returns how many were
/// removed. Failures to remove one directory are skipped (another session may be removing
/// it at the same time); a missing export base removes nothing.
pub fn clean_stale(export_base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(export_base) else {
        return 0;
    };
    let me = geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The pid encoded in a staging directory name, if the name is one of ours.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(STAGING_PREFIX)?;
    let pid = rest.split('-').next()?;
    pid.parse::<i32>().ok().filter(|pid| *pid > 0)
}

/// `kill(pid, 0)`: delivered or refused for permission means the process exists.
fn process_alive(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("devshell-host-1234-99-0"), Some(1234));
        assert_eq!(owner_pid("devshell-host-x-99-0"), None);
        assert_eq!(owner_pid("devshell-host--1-0"), None);
        assert_eq!(owner_pid("other-1234"), None);
    }

    #[test]
    fn created_dir_is_private_and_unique() {
        let base = tempfile::tempdir().expect("tempdir");
        let a = create(&base.path().join("nested/base")).expect("create a");
        let b = create(&base.path().join("nested/base")).expect("create b");
        assert_ne!(a, b);
        let mode = std::fs::metadata(&a).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert!(
            a.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{STAGING_PREFIX}{}-", std::process::id())))
        );
    }

    #[test]
    fn stale_dirs_of_dead_pids_are_removed_live_ones_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        // A pid that cannot exist: above the kernel's pid_max limit (4194304).
        let dead = base.path().join(format!("{STAGING_PREFIX}2147483600-1-0"));
        std::fs::create_dir_all(dead.join("proj/target")).expect("mkdir dead");
        std::fs::write(dead.join("proj/target/x"), b"x").expect("write");
        let mine = base
            .path()
            .join(format!("{STAGING_PREFIX}{}-1-0", std::process::id()));
        std::fs::create_dir(&mine).expect("mkdir mine");
        let init = base.path().join(format!("{STAGING_PREFIX}1-1-0"));
        std::fs::create_dir(&init).expect("mkdir init");
        let unrelated = base.path().join("something-else-2147483600");
        std::fs::create_dir(&unrelated).expect("mkdir unrelated");
        // A symlink with a stale-looking name pointing at a directory that must survive.
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir victim");
        std::fs::write(victim.join("keep"), b"keep").expect("write keep");
        let link = base.path().join(format!("{STAGING_PREFIX}2147483601-1-0"));
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");

        assert_eq!(clean_stale(base.path()), 1);
        assert!(!dead.exists());
        assert!(mine.is_dir());
        assert!(init.is_dir());
        assert!(unrelated.is_dir());
        assert!(victim.join("keep").is_file());
        assert!(link.symlink_metadata().is_ok());
    }

    #[test]
    fn missing_base_cleans_nothing() {
        let base = tempfile::tempdir().expect("tempdir");
        assert_eq!(clean_stale(&base.path().join("absent")), 0);
    }
}
