//! `ProgramCache`: remembers what a `PATH` search found, and never answers with a file
//! that is gone or no longer executable.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use devshell_vm_exec::{ExecError, ProgramCache};

fn tool(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\n").expect("write tool");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn a_found_program_is_reused_until_it_stops_being_executable() {
    let first = tempfile::tempdir().expect("tempdir");
    let second = tempfile::tempdir().expect("tempdir");
    let path_var = std::env::join_paths([first.path(), second.path()]).expect("join");
    let mut cache = ProgramCache::new(Some(&path_var));
    let cwd = std::env::temp_dir();

    let in_second = tool(second.path(), "t");
    assert_eq!(cache.resolve("t", &cwd).expect("found"), in_second);
    // Installed earlier on PATH later: like a shell's command hash, the remembered one
    // stays in use while it is still an executable file...
    let in_first = tool(first.path(), "t");
    assert_eq!(cache.resolve("t", &cwd).expect("cached"), in_second);
    // ...and once it is not, the search runs again and finds the new one.
    std::fs::set_permissions(&in_second, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(cache.resolve("t", &cwd).expect("searched again"), in_first);
    std::fs::remove_file(&in_first).expect("rm");
    assert!(matches!(
        cache.resolve("t", &cwd),
        Err(ExecError::ProgramNotFound { .. })
    ));
}

#[test]
fn relative_search_paths_and_paths_with_slashes_are_never_remembered() {
    let cwd_one = tempfile::tempdir().expect("tempdir");
    let cwd_two = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(cwd_one.path().join("bin")).expect("mkdir");
    std::fs::create_dir(cwd_two.path().join("bin")).expect("mkdir");
    let one = tool(&cwd_one.path().join("bin"), "t");
    let two = tool(&cwd_two.path().join("bin"), "t");
    let mut cache = ProgramCache::new(Some(std::ffi::OsStr::new("bin")));
    // `bin` means something else in each working directory.
    assert_eq!(
        cache
            .resolve("t", cwd_one.path())
            .expect("one")
            .canonicalize()
            .ok(),
        one.canonicalize().ok()
    );
    assert_eq!(
        cache
            .resolve("t", cwd_two.path())
            .expect("two")
            .canonicalize()
            .ok(),
        two.canonicalize().ok()
    );
    let mut absolute = ProgramCache::new(Some(std::ffi::OsStr::new("/nonexistent")));
    assert_eq!(
        absolute
            .resolve("bin/t", cwd_one.path())
            .expect("relative path"),
        cwd_one.path().join("bin/t")
    );
    assert_eq!(
        absolute
            .resolve("bin/t", cwd_two.path())
            .expect("relative path"),
        cwd_two.path().join("bin/t")
    );
}
