//! `run --dir` loads what ripgrep would search: `.gitignore` (nested, negated),
//! `.ignore`, `.git/info/exclude`, `target/`, `.git` left out; `--no-ignore` loads all;
//! `--exclude` applies on top; the summary counts what was left out. The tool lists
//! the files it sees, so the test checks what really reached the session.

mod common;

use std::path::Path;

use common::{devshell, show, text, write_tree};

/// The tree used by every case. Comments say whether ripgrep (and so the load) keeps
/// each file.
fn sample(root: &Path) {
    write_tree(
        root,
        &[
            (
                ".gitignore",
                "target/\n*.log\n!keep.log\nlogs/\n!logs/important.txt\ncache/*\n!cache/keep.txt\n",
            ), // kept
            ("src/main.rs", "fn main() {}\n"),      // kept
            ("target/debug/app", "binary"),         // target/
            ("target/debug/deps/lib.rlib", "rlib"), // target/
            ("app.log", "log"),                     // *.log
            ("keep.log", "kept"),                   // !keep.log
            ("logs/important.txt", "inside an ignored directory"), // logs/ wins
            ("cache/a.bin", "cached"),              // cache/*
            ("cache/keep.txt", "kept"),             // !cache/keep.txt
            ("sub/.gitignore", "local.txt\nother.txt\n"), // kept
            ("sub/.ignore", "!local.txt\n"),        // kept; beats .gitignore
            ("sub/local.txt", "kept by .ignore"),   // kept
            ("sub/other.txt", "ignored by the nested .gitignore"),
            ("sub/deeper/target/x", "target/ at any depth"),
            ("sub/deeper/app.log", "*.log from the root at any depth"),
            (".git/info/exclude", "secret.txt\n"), // .git is left out
            (".git/HEAD", "ref: refs/heads/main\n"), // .git is left out
            ("secret.txt", "excluded by .git/info/exclude"),
            (".cargo/config.toml", "[build]\n"), // hidden files are kept
        ],
    );
}

/// Runs `find` in the session and returns the sorted files it saw, plus stderr.
fn files_seen(dir: &Path, extra: &[&str]) -> (Vec<String>, String) {
    let base = tempfile::tempdir().expect("tempdir");
    let output = devshell(base.path())
        .args(["run", "--dir"])
        .arg(dir)
        .args(extra)
        .args(["--", "sh", "-c", "find . -type f -o -type l | sort"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", show(&output));
    let files = text(&output.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_owned())
        .collect();
    (files, text(&output.stderr))
}

const KEPT: [&str; 9] = [
    ".cargo/config.toml",
    ".gitignore",
    "cache/keep.txt",
    "keep.log",
    "src/main.rs",
    "sub/.gitignore",
    "sub/.ignore",
    "sub/local.txt",
    // (sub/deeper holds only ignored files)
    "",
];

fn kept() -> Vec<String> {
    KEPT.iter()
        .filter(|f| !f.is_empty())
        .map(|f| (*f).to_owned())
        .collect()
}

#[test]
fn ignore_files_are_honoured_like_ripgrep() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path());
    let (files, stderr) = files_seen(dir.path(), &[]);
    assert_eq!(files, kept(), "{stderr}");
    // 19 files in the tree, 8 loaded: 11 left out (target x3, logs x3, cache, other,
    // .git x2, secret).
    assert!(
        stderr.contains("(8 files,") && stderr.contains("left out 11 files"),
        "{stderr}"
    );
}

#[test]
fn no_ignore_loads_everything_and_exclude_still_applies() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path());
    let (files, stderr) = files_seen(dir.path(), &["--no-ignore"]);
    assert_eq!(files.len(), 19, "{files:?}\n{stderr}");
    assert!(files.contains(&"target/debug/app".to_owned()));
    assert!(files.contains(&".git/HEAD".to_owned()));
    assert!(!stderr.contains("left out"), "{stderr}");

    let (files, stderr) = files_seen(dir.path(), &["--no-ignore", "--exclude", "target/"]);
    assert_eq!(files.len(), 16, "{files:?}\n{stderr}");
    assert!(!files.iter().any(|f| f.contains("target/")), "{files:?}");
    assert!(stderr.contains("left out 3 files"), "{stderr}");
}

#[test]
fn exclude_works_on_top_of_the_ignore_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path());
    let (files, stderr) = files_seen(dir.path(), &["--exclude", "src/", "--exclude", "*.toml"]);
    let mut expected = kept();
    expected
        .retain(|f| !f.starts_with("src/") && Path::new(f).extension().is_none_or(|e| e != "toml"));
    assert_eq!(files, expected, "{stderr}");
    assert!(stderr.contains("left out 13 files"), "{stderr}");
}

#[test]
fn symlinks_are_loaded_as_links_and_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    write_tree(outside.path(), &[("secret.txt", "outside")]);
    write_tree(dir.path(), &[("a.txt", "a")]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
    let base = tempfile::tempdir().expect("tempdir");
    let output = devshell(base.path())
        .args(["run", "--dir"])
        .arg(dir.path())
        .args(["--", "sh", "-c", "find . | sort; readlink out"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", show(&output));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("./out\n"), "{stdout}");
    assert!(
        !stdout.contains("secret.txt"),
        "the link was followed:\n{stdout}"
    );
    assert!(
        stdout.contains(&outside.path().display().to_string()),
        "{stdout}"
    );
}

#[test]
fn names_that_are_not_utf8_and_special_files_are_skipped_with_a_note() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("ok.txt", "ok")]);
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    std::fs::write(dir.path().join(bad), "x").expect("write");
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    let base = tempfile::tempdir().expect("tempdir");
    let report = base.path().join("r.json");
    let output = devshell(base.path())
        .args(["run", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(dir.path())
        .args(["--", "sh", "-c", "ls"])
        .output()
        .expect("run");
    assert!(output.status.success(), "{}", show(&output));
    assert_eq!(text(&output.stdout), "ok.txt\n");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    assert!(
        stderr.contains("pipe: not a file, directory or symlink"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(report["load"]["files"], 1);
    assert_eq!(
        report["load"]["skipped"].as_array().map(Vec::len),
        Some(2),
        "{report:#}"
    );
    assert_eq!(
        report["load"]["left_out_files"], 0,
        "skipped is not left out: {report:#}"
    );
}
