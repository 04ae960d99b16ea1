//! The project-root rule against cargo itself: real directory layouts, and for every
//! cwd the answer of `cargo locate-project --workspace` must equal ours — on the host
//! file system ([`host_project_root`]) and on a VFS holding the same tree
//! ([`project_root`]).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::path::{Path, PathBuf};
use std::process::Command;

use devshell_vm_session::{host_project_root, project_root};
use devshell_vm_vfs::Vfs;

fn package(name: &str) -> String {
    format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
}

/// (manifest path relative to the layout root, manifest text). Every package gets a
/// `src/lib.rs`.
fn layout() -> Vec<(&'static str, String)> {
    vec![
        // A package outside any workspace.
        ("solo/Cargo.toml", package("solo")),
        // A virtual workspace with a glob member.
        (
            "ws/Cargo.toml",
            "[workspace]\nmembers = [\"crates/*\"]\nresolver = \"2\"\n".to_owned(),
        ),
        ("ws/crates/a/Cargo.toml", package("a")),
        ("ws/crates/b/Cargo.toml", package("b")),
        // Nested workspaces: the nearest enclosing one wins.
        (
            "outer/Cargo.toml",
            "[workspace]\nmembers = [\"top\"]\nexclude = [\"inner\"]\nresolver = \"2\"\n"
                .to_owned(),
        ),
        ("outer/top/Cargo.toml", package("top")),
        (
            "outer/inner/Cargo.toml",
            "[workspace]\nmembers = [\"m\"]\nresolver = \"2\"\n".to_owned(),
        ),
        ("outer/inner/m/Cargo.toml", package("m")),
        // Excluded members are their own roots unless listed explicitly.
        (
            "ex/Cargo.toml",
            "[workspace]\nmembers = [\"crates/keep\"]\nexclude = [\"crates\"]\nresolver = \"2\"\n"
                .to_owned(),
        ),
        ("ex/crates/keep/Cargo.toml", package("keep")),
        ("ex/crates/other/Cargo.toml", package("other")),
        // A root package that is also the workspace root, with an inline-table member.
        (
            "rootpkg/Cargo.toml",
            format!("{}\n[workspace]\nmembers = [\"sub\"]\n", package("rootpkg")),
        ),
        ("rootpkg/sub/Cargo.toml", package("sub")),
        // `package.workspace` points at a root that is not an ancestor-with-members scan.
        (
            "ptr/Cargo.toml",
            "workspace = { members = [\"deep/p\"], resolver = \"2\" }\n".to_owned(),
        ),
        (
            "ptr/deep/p/Cargo.toml",
            format!("{}workspace = \"../..\"\n", package("p")),
        ),
    ]
}

/// Directories (relative to the layout root) to ask from.
const CWDS: &[&str] = &[
    "solo",
    "solo/src",
    "ws",
    "ws/crates",
    "ws/crates/a",
    "ws/crates/b/src",
    "outer",
    "outer/top/src",
    "outer/inner",
    "outer/inner/m/src",
    "ex/crates/keep",
    "ex/crates/other/src",
    "rootpkg/src",
    "rootpkg/sub/src",
    "ptr/deep/p/src",
];

fn build(root: &Path) -> Vfs {
    let mut vfs = Vfs::new();
    for (manifest, text) in layout() {
        let path = root.join(manifest);
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, &text).unwrap();
        let vfs_dir = format!("/{}", Path::new(manifest).parent().unwrap().display());
        vfs.mkdir(&vfs_dir).unwrap();
        vfs.write_file(&format!("/{manifest}"), &text).unwrap();
        if text.contains("[package]") {
            std::fs::create_dir_all(dir.join("src")).unwrap();
            std::fs::write(dir.join("src/lib.rs"), "").unwrap();
            vfs.mkdir(&format!("{vfs_dir}/src")).unwrap();
            vfs.write_file(&format!("{vfs_dir}/src/lib.rs"), "")
                .unwrap();
        }
    }
    vfs.mkdir("/ws/crates").unwrap();
    vfs
}

fn cargo_says(cwd: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "locate-project",
            "--workspace",
            "--message-format",
            "plain",
            "--offline",
        ])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo locate-project failed in {}: {}",
        cwd.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    manifest.parent().unwrap().to_path_buf()
}

#[test]
fn our_rule_matches_cargo_locate_project_on_real_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let vfs = build(&root);
    for cwd in CWDS {
        let host_cwd = root.join(cwd);
        let cargo = cargo_says(&host_cwd);
        let ours =
            host_project_root(&host_cwd).unwrap_or_else(|| panic!("no root found for {cwd}"));
        assert_eq!(ours, cargo, "host rule for {cwd}");
        let in_vfs = project_root(&vfs, &format!("/{cwd}")).unwrap();
        let expected = format!("/{}", cargo.strip_prefix(&root).unwrap().display());
        let expected = expected.trim_end_matches('/');
        assert_eq!(in_vfs, expected, "VFS rule for {cwd}");
    }
}

#[test]
fn outside_any_project_there_is_no_host_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plain/dir")).unwrap();
    assert_eq!(host_project_root(&dir.path().join("plain/dir")), None);
}
