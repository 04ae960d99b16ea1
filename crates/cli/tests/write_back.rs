//! `run --write-back`: the tool's changes applied to `--dir` — `cargo fmt` on a badly
//! formatted crate, refusal (nothing written) when the directory changed during the run,
//! symlinks pointing out of the directory never followed, ignored paths and failed runs
//! not written.

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use common::{devshell, shell_quote, show, text, write_crate, write_tree};

fn write_back(dir: &Path, tool: &[&str]) -> std::process::Output {
    write_back_with(dir, tool, "auto")
}

/// [`write_back`] with `DEVSHELL_VM_ISOLATION=isolation`: `off` when the tool stands in
/// for a person changing the real directory during the run.
fn write_back_with(dir: &Path, tool: &[&str], isolation: &str) -> std::process::Output {
    let base = tempfile::tempdir().expect("tempdir");
    devshell(base.path())
        .env("DEVSHELL_VM_ISOLATION", isolation)
        .args(["run", "--write-back", "--dir"])
        .arg(dir)
        .arg("--")
        .args(tool)
        .output()
        .expect("run")
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|err| panic!("{}: {err}", path.as_ref().display()))
}

const UGLY_MAIN: &str = "mod util;\nfn main(){let x=util::two( );println!(\"{}\",x);}\n";
const UGLY_UTIL: &str = "pub fn two()->u32{ 2 }\n";
const NICE_MAIN: &str =
    "mod util;\nfn main() {\n    let x = util::two();\n    println!(\"{}\", x);\n}\n";
const NICE_UTIL: &str = "pub fn two() -> u32 {\n    2\n}\n";

#[test]
fn cargo_fmt_formats_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_crate(dir.path(), "ugly", UGLY_MAIN);
    write_tree(
        dir.path(),
        &[("src/util.rs", UGLY_UTIL), ("target/debug/stale", "x")],
    );
    let manifest_inode = std::fs::metadata(dir.path().join("Cargo.toml"))
        .expect("stat")
        .ino();

    let output = write_back(dir.path(), &["cargo", "fmt"]);
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(read(dir.path().join("src/main.rs")), NICE_MAIN);
    assert_eq!(read(dir.path().join("src/util.rs")), NICE_UTIL);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("write-back: wrote   src/main.rs"),
        "{stderr}"
    );
    assert!(
        stderr.contains("write-back: wrote   src/util.rs"),
        "{stderr}"
    );
    // Unchanged files are not rewritten; the ignored target/ is untouched.
    assert_eq!(
        std::fs::metadata(dir.path().join("Cargo.toml"))
            .expect("stat")
            .ino(),
        manifest_inode
    );
    assert_eq!(read(dir.path().join("target/debug/stale")), "x");
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("src"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Formatting again changes nothing and says so.
    let again = write_back(dir.path(), &["cargo", "fmt"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert!(
        text(&again.stderr).contains("nothing to write"),
        "{}",
        show(&again)
    );
}

#[test]
fn an_edit_during_the_run_refuses_the_write_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_crate(dir.path(), "ugly", UGLY_MAIN);
    write_tree(dir.path(), &[("src/util.rs", UGLY_UTIL)]);
    // With isolation off the host backend runs the tool as the caller, so the tool itself
    // can stand in for a person editing the real directory while the run is under way
    // (a confined tool cannot reach it: that is the point of isolation).
    let util = dir.path().join("src/util.rs");
    let edit = format!(
        "printf '// edited meanwhile\\n' >> {} && cargo fmt",
        shell_quote(&util.display().to_string())
    );
    let base = tempfile::tempdir().expect("tempdir");
    let report = base.path().join("r.json");
    let output = devshell(base.path())
        .env("DEVSHELL_VM_ISOLATION", "off")
        .args(["run", "--write-back", "--report"])
        .arg(&report)
        .arg("--dir")
        .arg(dir.path())
        .args(["--", "sh", "-c", &edit])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(70), "{}", show(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("src/util.rs"),
        "{stderr}"
    );
    assert!(!stderr.contains("write-back: wrote"), "{stderr}");
    // Nothing written: main.rs is still unformatted, util.rs has only the edit.
    assert_eq!(read(dir.path().join("src/main.rs")), UGLY_MAIN);
    assert_eq!(read(&util), format!("{UGLY_UTIL}// edited meanwhile\n"));

    let report: serde_json::Value = serde_json::from_str(&read(&report)).expect("report is JSON");
    assert_eq!(report["write_back"]["status"], "refused", "{report:#}");
    assert_eq!(
        report["write_back"]["conflicts"][0]["path"], "src/util.rs",
        "{report:#}"
    );
    assert_eq!(report["outcome"]["code"], 0, "the tool itself succeeded");
}

#[test]
fn a_symlink_out_of_the_directory_is_never_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    write_tree(outside.path(), &[("victim.txt", "original")]);
    write_tree(dir.path(), &[("a.txt", "a")]);
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("victim.txt"),
        dir.path().join("file_link"),
    )
    .expect("symlink");

    // In the workspace the tool replaces both links by real entries of the same names.
    let output = write_back(
        dir.path(),
        &[
            "sh",
            "-c",
            "rm escape file_link && mkdir escape && echo new > escape/victim.txt \
             && echo new > file_link",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(read(outside.path().join("victim.txt")), "original");
    let names: Vec<_> = std::fs::read_dir(outside.path()).expect("ls").collect();
    assert_eq!(names.len(), 1, "nothing was added outside: {names:?}");
    let escape = std::fs::symlink_metadata(dir.path().join("escape")).expect("lstat");
    assert!(escape.is_dir(), "the link was replaced by a directory");
    assert_eq!(read(dir.path().join("escape/victim.txt")), "new\n");
    let file_link = std::fs::symlink_metadata(dir.path().join("file_link")).expect("lstat");
    assert!(file_link.is_file());
    assert_eq!(read(dir.path().join("file_link")), "new\n");
}

#[test]
fn a_directory_swapped_for_a_symlink_during_the_run_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("sub/f.txt", "old")]);
    // The "user" moves sub away and puts a link to another directory in its place
    // while the tool edits sub/f.txt in the workspace (the tool plays the user, so it
    // runs unconfined).
    let sub = dir.path().join("sub");
    let swap = format!(
        "mv {sub} {sub}.moved && ln -s {out} {sub} && echo new > sub/f.txt && echo n > sub/g.txt",
        sub = shell_quote(&sub.display().to_string()),
        out = shell_quote(&outside.path().display().to_string())
    );
    let output = write_back_with(dir.path(), &["sh", "-c", &swap], "off");
    assert_eq!(output.status.code(), Some(70), "{}", show(&output));
    assert!(
        text(&output.stderr).contains("refused"),
        "{}",
        show(&output)
    );
    let names: Vec<_> = std::fs::read_dir(outside.path()).expect("ls").collect();
    assert!(names.is_empty(), "written through the link: {names:?}");
    assert_eq!(read(dir.path().join("sub.moved/f.txt")), "old");
}

#[test]
fn ignored_paths_and_failed_runs_are_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[(".gitignore", "target/\n*.log\n"), ("a.txt", "a")],
    );
    let output = write_back(
        dir.path(),
        &[
            "sh",
            "-c",
            "mkdir -p target gen && echo x > target/out && echo l > run.log \
             && echo g > gen/code.rs && rm a.txt",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(!dir.path().join("target").exists(), "{}", show(&output));
    assert!(!dir.path().join("run.log").exists());
    assert_eq!(read(dir.path().join("gen/code.rs")), "g\n");
    assert!(
        !dir.path().join("a.txt").exists(),
        "the deletion was written back"
    );

    let failed = write_back(dir.path(), &["sh", "-c", "echo n > new.txt; exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{}", show(&failed));
    assert!(!dir.path().join("new.txt").exists());
    assert!(
        text(&failed.stderr).contains("write-back: skipped"),
        "{}",
        show(&failed)
    );
}

#[test]
fn write_back_needs_a_directory() {
    let base = tempfile::tempdir().expect("tempdir");
    let output = devshell(base.path())
        .args(["run", "--write-back", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
}
