//! Getting a workspace into memory (a host directory or an image) and saving it back.
//!
//! A host directory is walked with ripgrep's walker (the `ignore` crate, in parallel):
//! `.gitignore`, `.ignore`, `.git/info/exclude` and the global git excludes are honoured
//! (also outside a git repository: a `.gitignore` in the directory is taken as written
//! for it, like `rg --no-require-git`), `.git` is left out, hidden files are loaded
//! (`.cargo/config.toml` matters to cargo), and `--exclude` globs apply on top;
//! `--no-ignore` loads everything but `--exclude`. Symlinks are loaded as links and
//! never followed; every file is opened one path component at a time with `O_NOFOLLOW`
//! from a descriptor of the directory ([`crate::safefs`]), so nothing outside it is read
//! even if the tree changes during the walk. Modes and mtimes are kept; names that are
//! not UTF-8 and special files are skipped with a report. The directory is only read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use devshell_vm::Vfs;
use devshell_vm::vfs::image;
use ignore::{WalkBuilder, WalkState};
use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};

use crate::CliError;
use crate::progress::{Progress, StepBar};
use crate::rules::{DirRules, IgnoreRules, exclude_matcher};
use crate::safefs::{self, Root, Stamp};

/// Largest file loaded (the VFS holds contents in memory; a sparse file can claim any
/// size). Same limit as the sync engine's default.
const MAX_FILE_SIZE: u64 = 4 << 30;

/// How a directory is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IgnoreMode {
    /// `.gitignore` & co. honoured, `.git` left out.
    Honour,
    /// `--no-ignore`: everything but `--exclude`.
    LoadAll,
}

/// What [`load_dir`] produced.
#[derive(Debug)]
pub(crate) struct LoadedDir {
    /// The tree, at `/`.
    pub(crate) vfs: Vfs,
    /// The canonical directory.
    pub(crate) root: PathBuf,
    /// Host metadata of every loaded entry, by relative path (`""` is the root).
    pub(crate) stamps: BTreeMap<String, Stamp>,
    /// The rules that chose what was loaded (for the write-back).
    pub(crate) rules: IgnoreRules,
    /// Files and symlinks loaded, and their bytes.
    pub(crate) files: u64,
    pub(crate) bytes: u64,
    /// Files and symlinks under the directory that were not loaded (ignored, excluded,
    /// `.git`), and their bytes.
    pub(crate) left_out_files: u64,
    pub(crate) left_out_bytes: u64,
    /// Entries skipped although not ignored (non-UTF-8 names, special files), with why.
    pub(crate) skipped: Vec<(PathBuf, String)>,
    pub(crate) duration: Duration,
}

/// One entry found by the walk.
enum Found {
    Dir {
        mode: u32,
        mtime: std::time::SystemTime,
        rules: Box<DirRules>,
    },
    File {
        content: Vec<u8>,
        mode: u32,
        mtime: std::time::SystemTime,
    },
    Link {
        target: String,
        mtime: std::time::SystemTime,
    },
}

/// Loads the tree of `dir` into a fresh VFS at `/`.
pub(crate) fn load_dir(
    dir: &Path,
    excludes: &[String],
    mode: IgnoreMode,
    progress: &Progress,
) -> Result<LoadedDir, CliError> {
    let started = Instant::now();
    let fail = |message: String| CliError::Workspace {
        context: format!("loading directory {}", dir.display()),
        message,
    };
    let root_path =
        std::fs::canonicalize(dir).map_err(|err| fail(devshell_vm::error_chain(&err)))?;
    if !root_path.is_dir() {
        return Err(fail("not a directory".to_owned()));
    }
    let root = Root::open(&root_path).map_err(|err| fail(err.desc().to_owned()))?;
    let honour = mode == IgnoreMode::Honour;
    let mut rules = IgnoreRules::new(
        &root_path,
        honour,
        exclude_matcher(&root_path, excludes).map_err(fail)?,
    );

    let bar = progress.step("loading", &root_path.display().to_string());
    let walked = walk(&root, &root_path, honour, excludes, &bar);
    bar.finish();
    let (found, skipped) = walked.map_err(fail)?;
    let (vfs, stamps, files, bytes) =
        build(found, &mut rules).map_err(|err| fail(devshell_vm::error_chain(&err)))?;

    let (all_files, all_bytes) = count_files(&root_path);
    Ok(LoadedDir {
        vfs,
        root: root_path,
        stamps,
        rules,
        files,
        bytes,
        left_out_files: all_files.saturating_sub(files + skipped.len() as u64),
        left_out_bytes: all_bytes.saturating_sub(bytes),
        skipped,
        duration: started.elapsed(),
    })
}

/// Entries found by [`walk`]: relative path, what it is, its host stamp.
type FoundEntries = Vec<(String, Found, Stamp)>;

/// Walks and reads the directory (in parallel); the entries sorted parents first, and
/// the skipped ones. The error names the path that failed.
fn walk(
    root: &Root,
    root_path: &Path,
    honour: bool,
    excludes: &[String],
    bar: &StepBar,
) -> Result<(FoundEntries, Vec<(PathBuf, String)>), String> {
    let found: Mutex<Vec<(String, Found, Stamp)>> = Mutex::new(Vec::new());
    let skipped: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
    let error: Mutex<Option<String>> = Mutex::new(None);

    let mut builder = WalkBuilder::new(root_path);
    builder
        .standard_filters(honour)
        .hidden(false)
        .follow_links(false)
        .require_git(false)
        .threads(crate::walk_threads());
    let filter_excludes = exclude_matcher(root_path, excludes)?;
    builder.filter_entry(move |entry| {
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        if honour && is_dir && entry.file_name() == ".git" {
            return false;
        }
        !filter_excludes.matched(entry.path(), is_dir).is_ignore()
    });
    let walker = builder.build_parallel();
    walker.run(|| {
        let found = &found;
        let skipped = &skipped;
        let error = &error;
        Box::new(move |entry| {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    *error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err.to_string());
                    return WalkState::Quit;
                }
            };
            let Ok(rel) = entry.path().strip_prefix(root_path) else {
                return WalkState::Continue;
            };
            let Some(rel) = rel.to_str().map(str::to_owned) else {
                skipped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((
                        entry.path().to_path_buf(),
                        "the name is not UTF-8".to_owned(),
                    ));
                return WalkState::Skip;
            };
            match load_entry(root, root_path, &rel) {
                Ok(Some((item, stamp))) => {
                    if let Found::File { content, .. } = &item {
                        bar.add(1, content.len() as u64);
                    } else if let Found::Link { .. } = &item {
                        bar.add(1, 0);
                    }
                    found
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((rel, item, stamp));
                    WalkState::Continue
                }
                Ok(None) => {
                    skipped
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((
                            entry.path().to_path_buf(),
                            "not a file, directory or symlink".to_owned(),
                        ));
                    WalkState::Continue
                }
                Err(message) => {
                    *error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
                    WalkState::Quit
                }
            }
        })
    });
    if let Some(message) = error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(message);
    }
    let mut found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Parents before children.
    found.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    let skipped = skipped
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok((found, skipped))
}

/// The VFS from the walked entries (directory modes and mtimes set last: adding
/// children moves them), the stamps, and the files and bytes loaded.
fn build(
    found: FoundEntries,
    rules: &mut IgnoreRules,
) -> Result<(Vfs, BTreeMap<String, Stamp>, u64, u64), devshell_vm::vfs::VfsError> {
    let mut vfs = Vfs::new();
    let mut stamps = BTreeMap::new();
    let mut dir_times = Vec::new();
    let (mut files, mut bytes) = (0, 0);
    for (rel, item, stamp) in found {
        let vfs_path = format!("/{rel}");
        let result = match item {
            Found::Dir {
                mode,
                mtime,
                rules: dir_rules,
            } => {
                rules.add_dir(rel.clone(), *dir_rules);
                let created = if rel.is_empty() {
                    Ok(())
                } else {
                    vfs.mkdir(&vfs_path)
                };
                dir_times.push((vfs_path, mode, mtime));
                created
            }
            Found::File {
                content,
                mode,
                mtime,
            } => {
                files += 1;
                bytes += content.len() as u64;
                vfs.write_file_with(&vfs_path, content, mode, mtime)
            }
            Found::Link { target, mtime } => {
                files += 1;
                vfs.symlink_with(&target, &vfs_path, mtime)
            }
        };
        result?;
        stamps.insert(rel, stamp);
    }
    // Directory metadata last: adding children moved the mtimes.
    for (path, mode, mtime) in dir_times.iter().rev() {
        vfs.set_mode(path, *mode)?;
        vfs.set_mtime(path, *mtime)?;
    }
    Ok((vfs, stamps, files, bytes))
}

/// Reads one entry; `Ok(None)` for special files.
fn load_entry(root: &Root, root_path: &Path, rel: &str) -> Result<Option<(Found, Stamp)>, String> {
    let describe = |err: Errno| format!("{}: {}", root_path.join(rel).display(), err.desc());
    if rel.is_empty() {
        let stat = nix::sys::stat::fstat(root.fd()).map_err(describe)?;
        let rules = dir_rules(root, root_path, "");
        return Ok(Some((dir_found(&stat, rules), Stamp::of(&stat))));
    }
    let Some(stat) = root.lstat(rel).map_err(describe)? else {
        return Err(describe(Errno::ENOENT));
    };
    if safefs::is_kind(&stat, SFlag::S_IFDIR) {
        let rules = dir_rules(root, root_path, rel);
        Ok(Some((dir_found(&stat, rules), Stamp::of(&stat))))
    } else if safefs::is_kind(&stat, SFlag::S_IFREG) {
        let (content, stat) = root
            .read_file(rel, MAX_FILE_SIZE)
            .map_err(|err| match err {
                Errno::EAGAIN => format!(
                    "{}: changed while it was read",
                    root_path.join(rel).display()
                ),
                Errno::EFBIG => format!(
                    "{}: larger than {} (the workspace is held in memory)",
                    root_path.join(rel).display(),
                    crate::report::bytes(MAX_FILE_SIZE)
                ),
                other => describe(other),
            })?;
        Ok(Some((
            Found::File {
                content,
                mode: safefs::mode_of(&stat),
                mtime: safefs::mtime_of(&stat),
            },
            Stamp::of(&stat),
        )))
    } else if safefs::is_kind(&stat, SFlag::S_IFLNK) {
        let target = root.read_link(rel).map_err(describe)?;
        let Some(target) = target.to_str().map(str::to_owned) else {
            return Ok(None);
        };
        Ok(Some((
            Found::Link {
                target,
                mtime: safefs::mtime_of(&stat),
            },
            Stamp::of(&stat),
        )))
    } else {
        Ok(None)
    }
}

fn dir_found(stat: &FileStat, rules: DirRules) -> Found {
    let rules = Box::new(rules);
    Found::Dir {
        mode: safefs::mode_of(stat),
        mtime: safefs::mtime_of(stat),
        rules,
    }
}

/// The ignore files of the directory `rel` (read safely; absent ones are `None`).
fn dir_rules(root: &Root, root_path: &Path, rel: &str) -> DirRules {
    let read = |name: &str| {
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        root.read_file(&path, 1 << 20)
            .ok()
            .and_then(|(content, _)| String::from_utf8(content).ok())
    };
    DirRules::from_texts(
        &root_path.join(rel),
        read(".ignore").as_deref(),
        read(".gitignore").as_deref(),
        read(".git/info/exclude").as_deref(),
    )
}

/// Files (everything but directories) under `root` and their bytes, nothing filtered:
/// the summary's "left out" is this minus what was loaded.
fn count_files(root: &Path) -> (u64, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let files = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .threads(crate::walk_threads())
        .build_parallel()
        .run(|| {
            let (files, bytes) = (&files, &bytes);
            Box::new(move |entry| {
                if let Ok(entry) = entry
                    && entry.file_type().is_some_and(|t| !t.is_dir())
                {
                    files.fetch_add(1, Ordering::Relaxed);
                    if entry.file_type().is_some_and(|t| t.is_file()) {
                        let size = entry.metadata().map_or(0, |m| m.len());
                        bytes.fetch_add(size, Ordering::Relaxed);
                    }
                }
                WalkState::Continue
            })
        });
    (files.into_inner(), bytes.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// The write-back's rules give the walker's answer for every path of a tree that
    /// exercises each rule: they must, or a write-back would write what a load leaves out.
    #[test]
    fn the_rules_agree_with_the_walker_on_every_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for (rel, text) in [
            (
                ".gitignore",
                "target/\n*.log\n!keep.log\nlogs/\n!logs/x.txt\ncache/*\n!cache/k\n/only-root.txt\n",
            ),
            (".ignore", "!forced.log\n"),
            ("src/main.rs", ""),
            ("target/debug/app", ""),
            ("a.log", ""),
            ("keep.log", ""),
            ("forced.log", ""),
            ("logs/x.txt", ""),
            ("cache/a", ""),
            ("cache/k", ""),
            ("only-root.txt", ""),
            ("sub/only-root.txt", ""),
            ("src/only-root.txt", ""),
            ("sub/.gitignore", "*.txt\n!keep.txt\n"),
            ("sub/keep.txt", ""),
            ("sub/drop.txt", ""),
            ("sub/deeper/drop.txt", ""),
            ("sub/deeper/.ignore", "!drop.txt\n"),
            ("sub/deeper/target/y", ""),
            (".git/info/exclude", "secret\n"),
            ("secret", ""),
            ("x.tmp", ""),
        ] {
            write(root, rel, text);
        }
        let progress = Progress::for_stderr(true, Duration::ZERO);
        let loaded =
            load_dir(root, &["*.tmp".to_owned()], IgnoreMode::Honour, &progress).expect("load");
        let walk = walkdir_all(&loaded.root);
        assert!(walk.len() > 20, "{walk:?}");
        for (rel, is_dir) in walk {
            let was_loaded = loaded.stamps.contains_key(&rel);
            assert_eq!(
                was_loaded,
                !loaded.rules.leaves_out(&rel, is_dir),
                "{rel} (dir: {is_dir}): loaded {was_loaded}"
            );
        }
        // Spot checks of the verdicts themselves.
        for (rel, expected) in [
            ("forced.log", true),
            ("src/only-root.txt", true),
            ("sub/only-root.txt", false),
            ("only-root.txt", false),
            ("sub/keep.txt", true),
            ("sub/drop.txt", false),
            ("sub/deeper/drop.txt", true),
            ("x.tmp", false),
        ] {
            assert_eq!(loaded.stamps.contains_key(rel), expected, "{rel}");
        }
    }

    /// Every path under `root` (relative) with whether it is a directory.
    fn walkdir_all(root: &Path) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("ls") {
                let entry = entry.expect("entry");
                let path = entry.path();
                let is_dir = entry.file_type().expect("type").is_dir();
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_str()
                    .expect("utf-8")
                    .to_owned();
                out.push((rel, is_dir));
                if is_dir {
                    stack.push(path);
                }
            }
        }
        out
    }
}
