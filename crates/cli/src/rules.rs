//! Which paths under `--dir` are left out: `.gitignore`, `.ignore`, `.git/info/exclude`
//! and the global git excludes (ripgrep's rules, through the `ignore` crate's walker
//! when loading), `.git` itself, and `--exclude` globs on top.
//!
//! Loading uses [`ignore::WalkBuilder`]; the walker does not answer "would this path be
//! ignored?" for a path that does not exist yet, which is what a write-back must ask for
//! the files a tool created. [`IgnoreRules`] answers it with the same matchers and the
//! same precedence as the walker (`ignore`'s `dir.rs`): for each kind of file the
//! deepest directory with a match decides; `.ignore` beats `.gitignore`, which beats
//! `.git/info/exclude`, which beats the global excludes; a path inside an ignored
//! directory is ignored (the walker never descends into one).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The ignore files of one directory.
#[derive(Debug, Default)]
pub(crate) struct DirRules {
    /// `.ignore`.
    pub(crate) ignore: Option<Gitignore>,
    /// `.gitignore`.
    pub(crate) gitignore: Option<Gitignore>,
    /// `.git/info/exclude` (directories holding a `.git`).
    pub(crate) exclude: Option<Gitignore>,
}

impl DirRules {
    /// The rules of host directory `dir` given the texts of its ignore files.
    pub(crate) fn from_texts(
        dir: &Path,
        ignore: Option<&str>,
        gitignore: Option<&str>,
        exclude: Option<&str>,
    ) -> Self {
        Self {
            ignore: ignore.map(|text| matcher(dir, text)),
            gitignore: gitignore.map(|text| matcher(dir, text)),
            exclude: exclude.map(|text| matcher(dir, text)),
        }
    }

    /// The rules of a host directory outside `--dir` (read with plain `std::fs`).
    fn read(dir: &Path) -> Self {
        let read = |path: PathBuf| std::fs::read_to_string(path).ok();
        Self::from_texts(
            dir,
            read(dir.join(".ignore")).as_deref(),
            read(dir.join(".gitignore")).as_deref(),
            read(dir.join(".git/info/exclude")).as_deref(),
        )
    }

    fn is_empty(&self) -> bool {
        self.ignore.is_none() && self.gitignore.is_none() && self.exclude.is_none()
    }
}

/// A gitignore matcher rooted at `dir` from the text of one file (lines that do not
/// parse are left out, as git and ripgrep do).
fn matcher(dir: &Path, text: &str) -> Gitignore {
    let mut builder = GitignoreBuilder::new(dir);
    for line in text.lines() {
        let _ = builder.add_line(None, line);
    }
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}

/// The `--exclude` globs as one gitignore matcher rooted at `--dir` (`target/`, `*.o`,
/// `/only-at-the-root`, `a/b`; `!` re-includes).
///
/// # Errors
/// The first pattern that does not parse, with the reason.
pub(crate) fn exclude_matcher(root: &Path, globs: &[String]) -> Result<Gitignore, String> {
    let mut builder = GitignoreBuilder::new(root);
    for glob in globs {
        builder
            .add_line(None, glob)
            .map_err(|err| format!("--exclude {glob:?}: {err}"))?;
    }
    builder
        .build()
        .map_err(|err| format!("--exclude patterns: {err}"))
}

/// Every rule that decides whether a path under `--dir` is loaded or written back.
#[derive(Debug)]
pub(crate) struct IgnoreRules {
    root: PathBuf,
    /// `false` with `--no-ignore`: only `--exclude` applies.
    honour_ignore_files: bool,
    /// Rules of directories inside `--dir`, by relative path (`""` for `--dir`).
    dirs: HashMap<String, DirRules>,
    /// Rules of the ancestors of `--dir`, nearest first.
    parents: Vec<(PathBuf, DirRules)>,
    global: Gitignore,
    excludes: Gitignore,
}

impl IgnoreRules {
    /// Rules for `root` (canonical); `dirs` are filled in while loading.
    pub(crate) fn new(root: &Path, honour_ignore_files: bool, excludes: Gitignore) -> Self {
        let mut parents = Vec::new();
        if honour_ignore_files {
            let mut dir = root.parent();
            while let Some(parent) = dir {
                let rules = DirRules::read(parent);
                if !rules.is_empty() {
                    parents.push((parent.to_path_buf(), rules));
                }
                dir = parent.parent();
            }
        }
        Self {
            root: root.to_path_buf(),
            honour_ignore_files,
            dirs: HashMap::new(),
            parents,
            global: if honour_ignore_files {
                Gitignore::global().0
            } else {
                Gitignore::empty()
            },
            excludes,
        }
    }

    /// Records the ignore files of the loaded directory `rel_dir`.
    pub(crate) fn add_dir(&mut self, rel_dir: String, rules: DirRules) {
        if self.honour_ignore_files && !rules.is_empty() {
            self.dirs.insert(rel_dir, rules);
        }
    }

    /// `true` when `--exclude` leaves out `rel` itself (ancestors are not looked at:
    /// the walker asks for each entry on its way down).
    pub(crate) fn excluded(&self, rel: &str, is_dir: bool) -> bool {
        self.excludes
            .matched(self.root.join(rel), is_dir)
            .is_ignore()
    }

    /// `true` when the walker would leave `rel` out: it or one of its ancestors is
    /// ignored, is `.git`, or is excluded.
    pub(crate) fn leaves_out(&self, rel: &str, is_dir: bool) -> bool {
        let mut prefix_end = 0;
        let parts: Vec<&str> = rel.split('/').collect();
        for (index, part) in parts.iter().enumerate() {
            prefix_end += part.len() + usize::from(index > 0);
            let prefix = &rel[..prefix_end];
            let last = index + 1 == parts.len();
            let dir = !last || is_dir;
            if self.excluded(prefix, dir)
                || (self.honour_ignore_files && (*part == ".git" || self.ignored(prefix, dir)))
            {
                return true;
            }
        }
        false
    }

    /// The ignore files' verdict on `rel` alone (its directory's rules and those above).
    fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        let path = self.root.join(rel);
        // The rules that apply, nearest first: the entry's directory up to --dir, then
        // the ancestors of --dir.
        let mut chain: Vec<&DirRules> = Vec::new();
        let mut dir = rel;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            chain.extend(self.dirs.get(parent));
            dir = parent;
        }
        chain.extend(self.dirs.get(""));
        chain.extend(self.parents.iter().map(|(_, rules)| rules));
        // Per kind of file the nearest match decides; the kinds in ripgrep's order.
        let nearest = |pick: fn(&DirRules) -> Option<&Gitignore>| -> Match<()> {
            chain
                .iter()
                .filter_map(|rules| pick(rules))
                .map(|matcher| matcher.matched(&path, is_dir).map(|_| ()))
                .find(|matched| !matched.is_none())
                .unwrap_or(Match::None)
        };
        nearest(|r| r.ignore.as_ref())
            .or(nearest(|r| r.gitignore.as_ref()))
            .or(nearest(|r| r.exclude.as_ref()))
            .or(self.global.matched(&path, is_dir).map(|_| ()))
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(root: &Path, dirs: &[(&str, Option<&str>, Option<&str>)]) -> IgnoreRules {
        let mut rules = IgnoreRules::new(
            root,
            true,
            exclude_matcher(root, &["*.tmp".to_owned()]).expect("globs"),
        );
        rules.parents.clear(); // whatever the machine has above the temp dir
        rules.global = Gitignore::empty();
        for (dir, ignore, gitignore) in dirs {
            rules.add_dir(
                (*dir).to_owned(),
                DirRules::from_texts(&root.join(dir), *ignore, *gitignore, None),
            );
        }
        rules
    }

    #[test]
    fn precedence_follows_ripgrep() {
        let root = Path::new("/work/proj");
        let rules = rules(
            root,
            &[
                (
                    "",
                    None,
                    Some("target/\n*.log\n!keep.log\nlogs/\ncache/*\n!cache/keep\n"),
                ),
                ("sub", Some("!local.txt\n"), Some("local.txt\nother.txt\n")),
            ],
        );
        assert!(rules.leaves_out("target", true));
        assert!(rules.leaves_out("target/debug/app", false));
        assert!(rules.leaves_out("sub/target/x", false));
        assert!(
            !rules.leaves_out("target", false),
            "target/ matches directories only"
        );
        assert!(rules.leaves_out("a.log", false));
        assert!(!rules.leaves_out("keep.log", false));
        assert!(
            rules.leaves_out("logs/important.txt", false),
            "inside an ignored dir"
        );
        assert!(rules.leaves_out("cache/a", false));
        assert!(!rules.leaves_out("cache/keep", false));
        assert!(
            !rules.leaves_out("sub/local.txt", false),
            ".ignore beats .gitignore"
        );
        assert!(rules.leaves_out("sub/other.txt", false));
        assert!(
            !rules.leaves_out("other.txt", false),
            "sub's rules stay in sub"
        );
        assert!(rules.leaves_out("x.tmp", false), "--exclude on top");
        assert!(rules.leaves_out(".git/config", false));
        assert!(!rules.leaves_out("src/main.rs", false));
    }
}
