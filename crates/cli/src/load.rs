//! Getting a workspace into memory (a host directory or an image) and saving it back.
//!
//! A host directory is loaded with the sync engine's pull, treating the directory as the
//! "staging leaf" of the VFS root: the same code that brings a tool's output back, so
//! modes, mtimes and symlinks (as links, never followed) are kept, non-UTF-8 names are
//! skipped with a report, and the directory itself is only read.

use std::path::Path;

use devshell_vm::sync::SyncState;
use devshell_vm::vfs::image;
use devshell_vm::{SyncReport, Vfs};

use crate::CliError;

/// Loads the tree of `dir` into a fresh VFS at `/`, leaving out paths matching `excludes`.
pub(crate) fn load_dir(dir: &Path, excludes: &[String]) -> Result<(Vfs, SyncReport), CliError> {
    let fail = |message: String| CliError::Workspace {
        context: format!("loading directory {}", dir.display()),
        message,
    };
    let meta = std::fs::metadata(dir).map_err(|err| fail(err.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".to_owned()));
    }
    let mut state = SyncState::new(dir);
    if !excludes.is_empty() {
        let globs: Vec<&str> = excludes.iter().map(String::as_str).collect();
        state
            .set_excludes(&globs)
            .map_err(|err| fail(err.to_string()))?;
    }
    // A large directory gets the same progress line as a long sync.
    let progress = crate::report::progress_observer();
    state.set_observer(Box::new(move |done| progress(done)));
    let mut vfs = Vfs::new();
    let report = devshell_vm::pull_workspace_to_vfs(&mut state, "/", &mut vfs)
        .map_err(|err| fail(err.to_string()))?;
    Ok((vfs, report))
}

/// Loads a workspace image file.
pub(crate) fn load_image(path: &Path) -> Result<Vfs, CliError> {
    image::load(path).map_err(|err| CliError::Workspace {
        context: format!("loading image {}", path.display()),
        message: devshell_vm::error_chain(&err),
    })
}

/// Saves the workspace to an image file.
pub(crate) fn save_image(vfs: &Vfs, path: &Path) -> Result<(), CliError> {
    image::save(vfs, path).map_err(|err| CliError::Workspace {
        context: format!("saving image {}", path.display()),
        message: devshell_vm::error_chain(&err),
    })
}
