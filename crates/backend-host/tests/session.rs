//! `HostSandboxSession` with real processes and real files: staging lifecycle, the sync
//! cycle around each run (including the inotify-based skip of no-op pulls), errors, and
//! the environment the tool sees.

mod common;

use common::{config, find_file, sh, sh_out};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use devshell_vm_backend_host::Backend as _;
use devshell_vm_backend_host::SessionError;
use devshell_vm_backend_host::{HostError, HostSandboxSession, STAGING_PREFIX};
use devshell_vm_config::VmConfig;
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_vfs::Vfs;

#[test]
fn staging_is_private_reused_and_removed() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    assert!(
        session.staging_dir().is_none(),
        "nothing on disk before first use"
    );
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");

    sh(&mut session, &mut vfs, "/p", "echo one > one.txt");
    let staging = session
        .staging_dir()
        .expect("created on first use")
        .to_path_buf();
    assert!(staging.starts_with(base.path()));
    let name = staging
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    assert!(
        name.starts_with(&format!("{STAGING_PREFIX}{}-", std::process::id())),
        "{name}"
    );
    let mode = std::fs::metadata(&staging)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o700);

    sh(&mut session, &mut vfs, "/p", "echo two > two.txt");
    assert_eq!(session.staging_dir(), Some(staging.as_path()), "reused");
    assert!(
        find_file(&staging, "one.txt").is_some(),
        "the first run's files are still there"
    );

    session.shutdown().expect("shutdown");
    assert!(!staging.exists(), "removed at shutdown");

    // Still usable: a new staging dir, pushed in full again.
    let again = sh_out(
        &mut session,
        &mut vfs,
        "/p",
        "cat one.txt two.txt > both.txt",
    );
    assert_eq!(again.push.files_written, 2);
    assert_eq!(
        &*vfs.read_file("/p/both.txt").expect("pulled"),
        b"one\ntwo\n"
    );
    let second = session.staging_dir().expect("new staging").to_path_buf();
    assert_ne!(second, staging);
    drop(session);
    assert!(!second.exists(), "removed on drop");
}

#[test]
fn failing_tools_are_statuses_and_their_writes_are_pulled() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    let status = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".into(), "echo partial > out.txt; exit 7".into()],
        )
        .expect("a failing tool is not an infrastructure error");
    assert_eq!(status.code(), Some(7));
    assert_eq!(&*vfs.read_file("/p/out.txt").expect("pulled"), b"partial\n");
}

#[test]
fn missing_program_and_bad_cwd_are_typed_errors() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    vfs.write_file("/p/file", b"x".to_vec()).expect("write");

    let err = session
        .run_rust_tool(&mut vfs, "/p", "no-such-tool-devshell", &[])
        .expect_err("missing program");
    assert!(matches!(&err, HostError::Exec { program, .. } if program == "no-such-tool-devshell"));
    let message = devshell_vm_test_support::assert_causes_once(&err);
    assert!(
        message.contains("no-such-tool-devshell") && message.contains("PATH"),
        "{message}"
    );
    assert!(std::error::Error::source(&err).is_some());

    for cwd in ["/missing", "/p/file", "bad\0path"] {
        let err = session
            .run_rust_tool(&mut vfs, cwd, "true", &[])
            .expect_err("bad cwd");
        assert!(
            matches!(&err, HostError::Session(SessionError::Cwd { cwd: c, .. }) if c == cwd),
            "{err:?}"
        );
    }
    assert_eq!(&*vfs.read_file("/p/file").expect("untouched"), b"x");
}

#[test]
fn the_tool_sees_its_cwd_image_and_a_private_target_dir() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/ws/member/src").expect("mkdir");
    vfs.write_file(
        "/ws/Cargo.toml",
        b"[workspace]\nmembers = [\"member\"]\n".to_vec(),
    )
    .expect("write");
    vfs.write_file(
        "/ws/member/Cargo.toml",
        b"[package]\nname = \"member\"\n".to_vec(),
    )
    .expect("write");

    let out = sh_out(
        &mut session,
        &mut vfs,
        "/ws/member/src",
        "pwd; echo \"$CARGO_TARGET_DIR\"; ls ../../Cargo.toml",
    );
    let stdout = String::from_utf8(out.exec.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    let staging = session
        .staging_dir()
        .expect("staging")
        .canonicalize()
        .expect("canon");
    let pwd = Path::new(lines[0]).canonicalize().expect("pwd exists");
    assert!(
        pwd.starts_with(&staging) && pwd.ends_with("ws/member/src"),
        "{stdout}"
    );
    let target = Path::new(lines[1]);
    assert!(target.ends_with("ws/target"), "{stdout}");
    assert!(
        lines[2].ends_with("Cargo.toml"),
        "the workspace manifest is visible: {stdout}"
    );

    // A caller's CARGO_TARGET_DIR in the request wins.
    let request = ToolRequest::new("sh", ["-c", "echo \"$CARGO_TARGET_DIR\""])
        .env("CARGO_TARGET_DIR", "/elsewhere")
        .stdout(OutputMode::Capture);
    let out = session.run_tool(&mut vfs, "/ws", &request).expect("run");
    assert_eq!(out.exec.stdout, b"/elsewhere\n");
}

#[test]
fn projects_with_the_same_leaf_name_do_not_collide() {
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/a/app").expect("mkdir");
    vfs.mkdir("/b/app").expect("mkdir");
    vfs.write_file("/a/app/Cargo.toml", b"[package]\nname = \"a\"\n".to_vec())
        .expect("write");
    vfs.write_file("/b/app/Cargo.toml", b"[package]\nname = \"b\"\n".to_vec())
        .expect("write");
    sh(&mut session, &mut vfs, "/a/app", "echo from-a > mark");
    sh(&mut session, &mut vfs, "/b/app", "echo from-b > mark");
    sh(&mut session, &mut vfs, "/a/app", "cat mark > again");
    assert_eq!(&*vfs.read_file("/a/app/again").expect("read"), b"from-a\n");
    assert_eq!(&*vfs.read_file("/b/app/mark").expect("read"), b"from-b\n");
    assert_eq!(
        &*vfs.read_file("/a/app/Cargo.toml").expect("read"),
        b"[package]\nname = \"a\"\n"
    );
}

#[test]
fn first_use_removes_staging_dirs_of_dead_processes_only() {
    let base = tempfile::tempdir().expect("tempdir");
    // Pids above the kernel's pid_max limit (4194304) cannot belong to a live process.
    let dead = base.path().join(format!("{STAGING_PREFIX}2147483600-1-0"));
    std::fs::create_dir_all(dead.join("0/p/target")).expect("mkdir dead");
    std::fs::write(dead.join("0/p/target/big"), b"left by a crash").expect("write");
    let live = base
        .path()
        .join(format!("{STAGING_PREFIX}{}-1-0", std::process::id()));
    std::fs::create_dir(&live).expect("mkdir live");

    let mut session = HostSandboxSession::new(&config(base.path()));
    assert!(dead.exists(), "nothing is cleaned before first use");
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    sh(&mut session, &mut vfs, "/p", "true");
    assert!(!dead.exists(), "stale staging of a dead pid survived");
    assert!(live.is_dir(), "a live process's staging was removed");
    session.shutdown().expect("shutdown");
}

#[test]
fn staging_location_follows_the_export_base_rule() {
    let root = tempfile::tempdir().expect("tempdir");
    let xdg = root.path().join("xdg");
    let home = root.path().join("home");
    let explicit = root.path().join("explicit");
    let base_config = VmConfig {
        export_base: None,
        xdg_cache_home: Some(xdg.clone()),
        home: Some(home.clone()),
        ..config(root.path())
    };
    let cases = [
        (
            VmConfig {
                export_base: Some(explicit.clone()),
                ..base_config.clone()
            },
            explicit,
        ),
        (base_config.clone(), xdg.join("cargo-devshell-exports")),
        (
            VmConfig {
                xdg_cache_home: None,
                ..base_config.clone()
            },
            home.join(".cache/cargo-devshell-exports"),
        ),
    ];
    for (config, expected_parent) in cases {
        let mut session = HostSandboxSession::new(&config);
        let mut vfs = Vfs::new();
        vfs.mkdir("/p").expect("mkdir");
        sh(&mut session, &mut vfs, "/p", "true");
        let staging = session.staging_dir().expect("staging").to_path_buf();
        assert_eq!(staging.parent(), Some(expected_parent.as_path()));
        let mode = std::fs::metadata(&staging)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o700, "{}", staging.display());
        session.shutdown().expect("shutdown");
    }
    // Neither DEVSHELL_EXPORT_BASE, XDG_CACHE_HOME nor HOME: the temp dir.
    let tmp = root.path().join("tmp");
    let bare = VmConfig {
        xdg_cache_home: None,
        home: None,
        tmpdir: Some(tmp.clone()),
        ..base_config
    };
    let mut session = HostSandboxSession::new(&bare);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    sh(&mut session, &mut vfs, "/p", "true");
    let staging = session.staging_dir().expect("staging").to_path_buf();
    assert_eq!(
        staging.parent(),
        Some(tmp.join("cargo-devshell-exports").as_path())
    );
    session.shutdown().expect("shutdown");
}

#[test]
fn infrastructure_failures_are_error_values_naming_the_path() {
    // The export base is a regular file: the staging directory cannot be created.
    let root = tempfile::tempdir().expect("tempdir");
    let blocker = root.path().join("not-a-dir");
    std::fs::write(&blocker, b"file").expect("write");
    let mut session = HostSandboxSession::new(&config(&blocker));
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    vfs.write_file("/p/keep.txt", b"keep".to_vec())
        .expect("write");
    let err = session
        .run_rust_tool(&mut vfs, "/p", "true", &[])
        .expect_err("no staging directory possible");
    assert!(
        matches!(&err, HostError::StagingCreate { path, .. } if path.starts_with(&blocker)),
        "{err:?}"
    );
    let message = devshell_vm_test_support::assert_causes_once(&err);
    assert!(message.contains("not-a-dir"), "{message}");
    assert_eq!(&*vfs.read_file("/p/keep.txt").expect("untouched"), b"keep");

    // The tool removes its own working tree: the pull after the run cannot happen, and
    // that is an error carrying how the tool ended — not an exit status.
    let base = tempfile::tempdir().expect("tempdir");
    let mut session = HostSandboxSession::new(&config(base.path()));
    let err = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "rm -rf \"$PWD\"; exit 3".to_owned()],
        )
        .expect_err("the pull must fail");
    assert!(
        matches!(&err, HostError::Session(SessionError::PullAfterRun { program, termination, vfs_path, .. })
            if program == "sh" && termination.to_string() == "exit code 3" && vfs_path == "/p"),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(&*vfs.read_file("/p/keep.txt").expect("untouched"), b"keep");
}

/// `DEVSHELL_VM_WORKSPACE_MAX_BYTES` reaches the session's pulls: a tool that writes past
/// the budget gets an error naming it, and the VFS keeps what it held.
#[test]
fn the_workspace_budget_from_the_config_bounds_pulls() {
    let base = tempfile::tempdir().expect("tempdir");
    let env = [
        ("DEVSHELL_VM_WORKSPACE_MAX_BYTES", "4096"),
        ("DEVSHELL_EXPORT_BASE", base.path().to_str().expect("UTF-8")),
    ];
    let config = VmConfig {
        path: config(base.path()).path,
        ..VmConfig::from_source(&env).expect("valid config")
    };
    assert_eq!(config.workspace_max_bytes, Some(4096));
    let mut session = HostSandboxSession::new(&config);
    let mut vfs = Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    vfs.write_file("/p/keep.txt", "keep").expect("write");
    let err = session
        .run_rust_tool(
            &mut vfs,
            "/p",
            "sh",
            &["-c".to_owned(), "head -c 20000 /dev/zero > big".to_owned()],
        )
        .expect_err("past the budget");
    assert!(
        matches!(
            &err,
            HostError::Session(SessionError::PullAfterRun { source, .. })
                if matches!(**source, devshell_vm_sync::VmSyncError::WorkspaceTooLarge { limit: 4096, .. })
        ),
        "{err:?}"
    );
    assert!(!vfs.exists("/p/big"));
    assert_eq!(&*vfs.read_file("/p/keep.txt").expect("kept"), b"keep");
}
