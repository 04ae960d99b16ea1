//! A two-crate cargo workspace held in the VFS, built, tested, edited and cleaned with real
//! `cargo` through one host session (one session for all steps keeps the run short).

use devshell_vm::Termination;
use devshell_vm::Vfs;
use devshell_vm_tests::{
    assert_success, cargo, compiled_crates, host_config, host_session, snapshot_sources, write_tree,
};

const WORKSPACE: &[(&str, &str)] = &[
    (
        "/ws/Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"core\"]\nresolver = \"2\"\n",
    ),
    (
        "/ws/core/Cargo.toml",
        "[package]\nname = \"core_lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    (
        "/ws/core/src/lib.rs",
        "pub fn answer() -> u32 { 42 }\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn answers() { assert_eq!(super::answer(), 42); }\n}\n",
    ),
    (
        "/ws/app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ncore_lib = { path = \"../core\" }\n",
    ),
    (
        "/ws/app/src/main.rs",
        "fn main() { println!(\"answer={}\", core_lib::answer()); }\n",
    ),
];

#[test]
fn workspace_build_test_edit_subdir_fail_and_clean() {
    let base = tempfile::tempdir().expect("tempdir");
    let config = host_config(base.path());
    let mut session = host_session(&config);
    let mut vfs = Vfs::new();
    write_tree(&mut vfs, WORKSPACE);

    // 1. Build: the path dependency and the binary both compile; the binary comes back.
    let build = cargo(&mut session, &mut vfs, "/ws", &["build"]);
    assert_success(&build, "first cargo build");
    let mut compiled = compiled_crates(&build);
    compiled.sort();
    assert_eq!(compiled, ["app", "core_lib"]);
    let binary = vfs
        .read_file("/ws/target/debug/app")
        .expect("binary pulled into the VFS");
    assert!(binary.starts_with(b"\x7fELF"), "not an ELF binary");
    let mode = vfs.stat("/ws/target/debug/app").expect("stat").mode;
    assert_ne!(mode & 0o111, 0, "binary lost its execute bits: {mode:o}");
    assert!(
        vfs.exists("/ws/Cargo.lock"),
        "Cargo.lock written by cargo is pulled"
    );

    // 2. No edit: everything is fresh.
    let again = cargo(&mut session, &mut vfs, "/ws", &["build"]);
    assert_success(&again, "second cargo build");
    assert_eq!(compiled_crates(&again), Vec::<String>::new());
    assert!(
        String::from_utf8_lossy(&again.exec.stderr).contains("Finished"),
        "{}",
        String::from_utf8_lossy(&again.exec.stderr)
    );

    // 3. cargo test runs the library's unit test.
    let test = cargo(&mut session, &mut vfs, "/ws", &["test"]);
    assert_success(&test, "cargo test");
    let stdout = String::from_utf8_lossy(&test.exec.stdout);
    assert!(stdout.contains("test tests::answers ... ok"), "{stdout}");

    // 4. Edit one file in the VFS: exactly that crate recompiles.
    vfs.write_file(
        "/ws/app/src/main.rs",
        b"fn main() { println!(\"answer is {}\", core_lib::answer()); }\n".to_vec(),
    )
    .expect("edit");
    let edited = cargo(&mut session, &mut vfs, "/ws", &["build"]);
    assert_success(&edited, "cargo build after editing app");
    assert_eq!(compiled_crates(&edited), ["app"]);

    // 5. From a subdirectory of a member: the whole workspace is visible, the tool runs
    //    in the cwd's image, and the new output shows the edit took effect.
    let run = cargo(&mut session, &mut vfs, "/ws/app/src", &["run", "--quiet"]);
    assert_success(&run, "cargo run from /ws/app/src");
    assert_eq!(String::from_utf8_lossy(&run.exec.stdout), "answer is 42\n");
    let pwd = devshell_vm::ToolRequest::new("sh", ["-c", "pwd > where.txt"]);
    let outcome = session
        .run_tool(&mut vfs, "/ws/core/src", &pwd)
        .expect("sh runs");
    assert_eq!(outcome.exec.termination, Termination::Exited(0));
    let here = vfs
        .read_file("/ws/core/src/where.txt")
        .expect("written in the cwd's image");
    assert!(
        String::from_utf8_lossy(&here)
            .trim_end()
            .ends_with("/ws/core/src"),
        "{}",
        String::from_utf8_lossy(&here)
    );
    vfs.remove("/ws/core/src/where.txt").expect("remove");

    // 6. A failing build returns its status and leaves the VFS sources untouched.
    vfs.write_file(
        "/ws/core/src/lib.rs",
        b"pub fn answer() -> u32 { oops }\n".to_vec(),
    )
    .expect("break core");
    let before = snapshot_sources(&vfs, "/ws");
    let failed = cargo(&mut session, &mut vfs, "/ws", &["build"]);
    assert!(
        matches!(failed.exec.termination, Termination::Exited(code) if code != 0),
        "{:?}",
        failed.exec.termination
    );
    assert!(String::from_utf8_lossy(&failed.exec.stderr).contains("error"));
    assert!(
        failed.pull.is_some(),
        "the session pulls after a failed run too"
    );
    assert_eq!(snapshot_sources(&vfs, "/ws"), before);
    let exit = session
        .run_rust_tool(
            &mut vfs,
            "/ws",
            "cargo",
            &["build".to_owned(), "--quiet".to_owned()],
        )
        .expect("run_rust_tool reports the failure as a status, not an error");
    assert!(!exit.success());

    // 7. cargo clean through the session removes target/ from the VFS.
    assert!(vfs.exists("/ws/target"));
    let clean = cargo(&mut session, &mut vfs, "/ws", &["clean"]);
    assert_success(&clean, "cargo clean");
    assert!(
        !vfs.exists("/ws/target"),
        "target/ still in the VFS after cargo clean"
    );
    assert!(vfs.exists("/ws/core/src/lib.rs"));

    session.shutdown(&mut vfs, "/ws").expect("shutdown");
    let leftovers: Vec<_> = std::fs::read_dir(base.path())
        .expect("export base exists")
        .collect();
    assert!(leftovers.is_empty(), "staging not removed: {leftovers:?}");
}
