//! Session staging directories under a shared base: creation with an owner lock, and
//! removal of the ones whose owner is gone.
//!
//! A staging directory is `<base>/<prefix><pid>-<unix nanos>-<counter>`, next to a lock
//! file `<same name>.lock` that its owner holds (`flock`, exclusive) for as long as the
//! [`StagingDir`] lives. The kernel drops the lock however the owner ends (`kill -9`
//! included), and every process that opens the file sees the lock — also one in another
//! pid namespace sharing the base (a sidecar in a container) and one running after the
//! owner's pid was reused, where a `kill(pid, 0)` probe of the pid in the name is blind.
//! The pid in the name is only consulted for a directory without a lock file (made by an
//! earlier version of this crate).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::kill;
use nix::unistd::{Pid, geteuid};

use crate::VmSyncError;

/// Suffix of the lock file beside each staging directory.
const LOCK_SUFFIX: &str = ".lock";

/// Age from which a lock file without its directory is an orphan, not a lock whose
/// owner is still between creating and locking it.
const ORPHAN_LOCK_AGE: Duration = Duration::from_mins(1);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A private (0700) staging directory owned by this process while the value lives; on
/// drop the directory and its lock file are removed (best effort: whatever is left is
/// removed by the next [`clean_stale_staging`] of the same base).
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held, never read: closing it releases the owner lock.
    _lock: Flock<File>,
    /// Set by [`StagingDir::remove`] so that drop does not try again.
    removed: bool,
}

impl StagingDir {
    /// Creates `base` if needed, then a fresh staging directory named `<prefix><pid>-…`.
    /// The lock is taken before the directory exists, so a concurrent
    /// [`clean_stale_staging`] never sees the directory unowned.
    ///
    /// # Errors
    /// [`VmSyncError::Io`] naming the base, lock file or directory that could not be
    /// created.
    pub fn create(base: &Path, prefix: &str) -> Result<Self, VmSyncError> {
        std::fs::create_dir_all(base).map_err(|err| VmSyncError::io(base, err))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{prefix}{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = base.join(&name);
        let lock_path = base.join(format!("{name}{LOCK_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(&lock_path)
            .map_err(|err| VmSyncError::io(&lock_path, err))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            let _ = std::fs::remove_file(&lock_path);
            VmSyncError::errno(&lock_path, errno)
        })?;
        if let Err(err) = make_private_dir(&path) {
            let _ = std::fs::remove_file(&lock_path);
            return Err(VmSyncError::io(&path, err));
        }
        Ok(Self {
            path,
            lock_path,
            _lock: lock,
            removed: false,
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory tree and then its lock file now, reporting what failed
    /// (dropping the value does the same and ignores failures).
    ///
    /// # Errors
    /// [`VmSyncError::Io`] naming the directory or lock file that could not be removed.
    pub fn remove(mut self) -> Result<(), VmSyncError> {
        self.removed = true;
        remove_tree_then_lock(&self.path, &self.lock_path)
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_tree_then_lock(&self.path, &self.lock_path);
        }
    }
}

/// Removes `dir` (a missing one is fine), then its lock file. The lock file goes last:
/// while it exists and is locked, nobody else treats the directory as stale.
fn remove_tree_then_lock(dir: &Path, lock_path: &Path) -> Result<(), VmSyncError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(VmSyncError::io(dir, err)),
    }
    match std::fs::remove_file(lock_path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(VmSyncError::io(lock_path, err)),
    }
}

/// Creates one directory with mode exactly 0700 (the umask can only remove bits); fails
/// if it exists.
fn make_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// What the owner lock of a staging directory says.
enum Owner {
    /// Someone holds the lock.
    Alive,
    /// The lock file exists and we now hold its lock: the owner is gone.
    Gone(Flock<File>),
    /// No lock file (an earlier version's directory, or a crash between the removal of
    /// the tree and of its lock file).
    NoLockFile,
    /// The lock file could not be opened or locked for another reason: leave it alone.
    Unknown,
}

fn owner_of(lock_path: &Path) -> Owner {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(lock_path);
    match file {
        Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Owner::Gone(lock),
            Err((_, Errno::EWOULDBLOCK)) => Owner::Alive,
            Err(_) => Owner::Unknown,
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => Owner::NoLockFile,
        Err(_) => Owner::Unknown,
    }
}

/// Removes the staging directories named `<prefix>…` under `base` (and their lock files)
/// whose owner is gone: the owner lock is free, or — for a directory without a lock
/// file — the pid in its name is not running. Only real directories owned by the current
/// user are touched (a symlink with such a name is never followed); lock files left
/// without their directory are removed when unlocked and over a minute old. Failures to remove one entry are
/// skipped (another process may be removing it at the same time); a missing base
/// removes nothing. Returns how many directories were removed.
#[must_use = "the count says whether anything was cleaned"]
pub fn clean_stale_staging(base: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let me = geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.uid() != me {
            continue;
        }
        if let Some(dir_name) = name.strip_suffix(LOCK_SUFFIX) {
            // A lock file whose directory is gone: remove it once nobody holds it. A
            // young one may belong to an owner between creating and locking it.
            let old = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= ORPHAN_LOCK_AGE);
            if meta.is_file()
                && old
                && !base.join(dir_name).exists()
                && let Owner::Gone(_lock) = owner_of(&path)
            {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        let lock_path = base.join(format!("{name}{LOCK_SUFFIX}"));
        let stale = match owner_of(&lock_path) {
            Owner::Gone(_lock) => remove_tree_then_lock(&path, &lock_path).is_ok(),
            Owner::NoLockFile => {
                owner_pid(&name[prefix.len()..]).is_some_and(|pid| !process_alive(pid))
                    && std::fs::remove_dir_all(&path).is_ok()
            }
            Owner::Alive | Owner::Unknown => false,
        };
        if stale {
            removed += 1;
        }
    }
    removed
}

/// The pid at the start of `<pid>-<nanos>-<counter>`.
fn owner_pid(rest: &str) -> Option<i32> {
    rest.split('-')
        .next()?
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
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

    const PREFIX: &str = "devshell-test-";

    fn lock_of(dir: &Path) -> PathBuf {
        let mut name = dir.file_name().expect("name").to_owned();
        name.push(LOCK_SUFFIX);
        dir.with_file_name(name)
    }

    #[test]
    fn created_dir_is_private_unique_and_locked() {
        let base = tempfile::tempdir().expect("tempdir");
        let nested = base.path().join("nested/base");
        let a = StagingDir::create(&nested, PREFIX).expect("create a");
        let b = StagingDir::create(&nested, PREFIX).expect("create b");
        assert_ne!(a.path(), b.path());
        let mode = std::fs::metadata(a.path())
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o700);
        let name = a.path().file_name().and_then(|n| n.to_str()).expect("utf8");
        assert!(name.starts_with(&format!("{PREFIX}{}-", std::process::id())));
        // Another open file description cannot take the lock while `a` lives.
        assert!(matches!(owner_of(&lock_of(a.path())), Owner::Alive));
        assert_eq!(clean_stale_staging(&nested, PREFIX), 0);
        assert!(a.path().is_dir() && b.path().is_dir());
    }

    #[test]
    fn drop_and_remove_take_the_tree_and_the_lock_file() {
        let base = tempfile::tempdir().expect("tempdir");
        let dropped = StagingDir::create(base.path(), PREFIX).expect("create");
        let (dir, lock) = (dropped.path().to_path_buf(), lock_of(dropped.path()));
        std::fs::create_dir_all(dir.join("proj/target")).expect("mkdir");
        std::fs::write(dir.join("proj/target/x"), b"x").expect("write");
        drop(dropped);
        assert!(!dir.exists() && !lock.exists());

        let removed = StagingDir::create(base.path(), PREFIX).expect("create");
        let (dir, lock) = (removed.path().to_path_buf(), lock_of(removed.path()));
        removed.remove().expect("remove");
        assert!(!dir.exists() && !lock.exists());
        assert_eq!(std::fs::read_dir(base.path()).expect("list").count(), 0);
    }

    #[test]
    fn a_free_lock_means_stale_even_when_the_pid_in_the_name_runs() {
        // What another pid namespace, or a reused pid, looks like from here: the name
        // carries a pid that is running (ours), but nobody holds the lock.
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base
            .path()
            .join(format!("{PREFIX}{}-1-999", std::process::id()));
        std::fs::create_dir_all(dir.join("proj")).expect("mkdir");
        std::fs::write(dir.join("proj/f"), b"x").expect("write");
        std::fs::write(lock_of(&dir), b"").expect("lock file");
        assert_eq!(clean_stale_staging(base.path(), PREFIX), 1);
        assert!(!dir.exists() && !lock_of(&dir).exists());
    }

    #[test]
    fn without_a_lock_file_the_pid_decides() {
        let base = tempfile::tempdir().expect("tempdir");
        // A pid above the kernel's pid_max (4194304) cannot run.
        let dead = base.path().join(format!("{PREFIX}2147483600-1-0"));
        std::fs::create_dir_all(dead.join("proj/target")).expect("mkdir dead");
        let mine = base
            .path()
            .join(format!("{PREFIX}{}-1-0", std::process::id()));
        std::fs::create_dir(&mine).expect("mkdir mine");
        let init = base.path().join(format!("{PREFIX}1-1-0"));
        std::fs::create_dir(&init).expect("mkdir init");
        assert_eq!(clean_stale_staging(base.path(), PREFIX), 1);
        assert!(!dead.exists());
        assert!(mine.is_dir() && init.is_dir());
    }

    #[test]
    fn symlinks_other_names_and_young_orphan_locks_are_left_alone() {
        let base = tempfile::tempdir().expect("tempdir");
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir victim");
        std::fs::write(victim.join("keep"), b"keep").expect("write keep");
        let link = base.path().join(format!("{PREFIX}2147483601-1-0"));
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        std::fs::write(lock_of(&link), b"").expect("lock beside the link");
        let unrelated = base.path().join("something-else-2147483600");
        std::fs::create_dir(&unrelated).expect("mkdir unrelated");
        // A lock file whose directory does not exist yet: its owner may be about to lock
        // it and create the directory.
        let young = base
            .path()
            .join(format!("{PREFIX}2147483602-1-0{LOCK_SUFFIX}"));
        std::fs::write(&young, b"").expect("young lock");
        assert_eq!(clean_stale_staging(base.path(), PREFIX), 0);
        assert!(victim.join("keep").is_file());
        assert!(link.symlink_metadata().is_ok());
        assert!(unrelated.is_dir());
        assert!(young.exists());
    }

    #[test]
    fn old_orphan_lock_files_are_removed_held_ones_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        let orphan = base
            .path()
            .join(format!("{PREFIX}2147483603-1-0{LOCK_SUFFIX}"));
        let held = base
            .path()
            .join(format!("{PREFIX}2147483604-1-0{LOCK_SUFFIX}"));
        let long_ago = SystemTime::now() - Duration::from_hours(1);
        for path in [&orphan, &held] {
            let file = File::create(path).expect("lock file");
            file.set_modified(long_ago).expect("age it");
        }
        let holder = Flock::lock(
            File::open(&held).expect("open"),
            FlockArg::LockExclusiveNonblock,
        )
        .expect("hold");
        assert_eq!(
            clean_stale_staging(base.path(), PREFIX),
            0,
            "counts directories"
        );
        assert!(!orphan.exists());
        assert!(held.exists());
        drop(holder);
    }

    #[test]
    fn missing_base_cleans_nothing_and_a_file_as_base_is_an_error() {
        let base = tempfile::tempdir().expect("tempdir");
        assert_eq!(clean_stale_staging(&base.path().join("absent"), PREFIX), 0);
        let file = base.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = StagingDir::create(&file, PREFIX).expect_err("a file is no base");
        assert!(err.to_string().contains("file"), "{err}");
    }
}
