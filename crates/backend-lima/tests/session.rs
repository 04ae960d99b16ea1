//! `GammaSession` against the limactl stand-in: lifecycle, exec quoting, error mapping,
//! Mode S with a real `cargo build` at the guest path.

mod common;

use common::{Fixture, INSTANCE, MOUNT, Notices};
use devshell_vm_backend_lima::Backend as _;
use devshell_vm_backend_lima::{GammaSession, LimaError};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_vfs::Vfs;
use serde_json::json;

fn open(fixture: &Fixture, guest_mode: bool) -> (GammaSession, Notices) {
    let mut session = GammaSession::new(&fixture.config(guest_mode)).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    (session, notices)
}

fn captured(program: &str, args: &[&str]) -> ToolRequest {
    ToolRequest::new(program, args.iter().copied())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
}

/// A VFS with `/p` (a project dir) for Mode P runs, whose guest image is `/workspace/p`.
fn vfs_with_dir(dir: &str) -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir(dir).expect("mkdir");
    vfs
}

#[test]
fn hostile_arguments_reach_the_tool_unchanged() {
    let fixture = Fixture::new("Running");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let (mut session, _) = open(&fixture, true);
    let hostile = [
        "plain",
        "with space",
        "it's",
        "double\"quote",
        "$HOME",
        "${PATH}",
        "`id`",
        "$(id)",
        "x=y",
        "A=B",
        "new\nline",
        "",
        " ",
        "*",
        "?",
        "[a]",
        "~",
        "--",
        "-n",
        ";",
        "&&",
        "|",
        ">out",
        "back\\slash",
        "tab\there",
        "ünï",
        "'",
        "\"",
    ];
    let mut vfs = vfs_with_dir("/p");
    let mut args = vec!["%s\\0"];
    args.extend(hostile);
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("printf", &args))
        .expect("run");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "{outcome:?}"
    );
    let got: Vec<&[u8]> = outcome.exec.stdout.split(|b| *b == 0).collect();
    let want: Vec<&[u8]> = hostile
        .iter()
        .map(|s| s.as_bytes())
        .chain([&b""[..]])
        .collect();
    assert_eq!(got, want);
    // The tool ran at the guest path, never the host path.
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("pwd", &[]))
        .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&outcome.exec.stdout),
        "/workspace/p\n"
    );
    // A program whose name looks like an assignment is still run as a program, and
    // hostile environment values arrive unchanged.
    let script = fixture.parent.path().join("p/a=b.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf '%s|%s' \"$1\" \"$HOSTILE\"\n").expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let request = captured("./a=b.sh", &["c=d"]).env("HOSTILE", "v 'q' $x\n=;");
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(0),
        "{outcome:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&outcome.exec.stdout),
        "c=d|v 'q' $x\n=;"
    );
    // An environment name that is not an identifier is refused before anything runs.
    let before = fixture.invocations().len();
    let bad = captured("true", &[]).env("A B", "x");
    assert!(matches!(
        session.run_tool(&mut vfs, "/p", &bad),
        Err(LimaError::InvalidRequest { .. })
    ));
    assert_eq!(fixture.invocations().len(), before);
}

#[test]
fn tool_statuses_are_kept_and_infrastructure_failures_are_errors() {
    let fixture = Fixture::new("Running");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    for code in ["1", "2", "127", "255"] {
        let outcome = session
            .run_tool(
                &mut vfs,
                "/p",
                &captured("sh", &["-c", &format!("exit {code}")]),
            )
            .expect("a tool's own status is not an error");
        assert_eq!(
            outcome.exec.termination,
            Termination::Exited(code.parse().expect("int")),
            "{outcome:?}"
        );
    }
    // Missing workdir: /q exists in the VFS but not in the guest.
    vfs.mkdir("/q").expect("mkdir");
    match session.run_tool(&mut vfs, "/q", &captured("true", &[])) {
        Err(LimaError::WorkdirMissing { workdir, instance }) => {
            assert_eq!(workdir, "/workspace/q");
            assert_eq!(instance, INSTANCE);
        }
        other => panic!("expected WorkdirMissing, got {other:?}"),
    }
    // Program missing in the guest (exit 127 from the guest shell).
    match session.run_tool(&mut vfs, "/p", &captured("no-such-tool-xyz", &[])) {
        Err(err @ LimaError::ProgramMissing { .. }) => {
            assert!(err.to_string().contains("no-such-tool-xyz"), "{err}");
        }
        other => panic!("expected ProgramMissing, got {other:?}"),
    }
    // ssh failure (255) is an error, not the tool's status.
    let mut state = fixture.instance();
    state["ssh_failure"] = json!(true);
    fixture.set_instance(state);
    match session.run_tool(&mut vfs, "/p", &captured("true", &[])) {
        Err(err @ LimaError::Ssh { .. }) => assert!(err.to_string().contains("255"), "{err}"),
        other => panic!("expected Ssh, got {other:?}"),
    }
}

#[test]
fn a_tool_that_removes_its_own_workdir_keeps_its_exit_status() {
    // Lima's `cd <workdir> || exit 1` and a tool that deletes its own working directory
    // and exits 1 both leave exit 1 and no workdir: the session tells them apart by the
    // workdir's host image (present before the run, gone after → the tool ran).
    let fixture = Fixture::new("Running");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(
            &mut vfs,
            "/p",
            &captured("sh", &["-c", "cd / && rm -rf /workspace/p && exit 1"]),
        )
        .expect("the tool's own exit 1 is not an infrastructure error");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(1),
        "{outcome:?}"
    );
    assert!(!fixture.parent.path().join("p").exists());
    // The same status with the workdir missing before the run is still Lima's `cd`.
    match session.run_tool(&mut vfs, "/p", &captured("true", &[])) {
        Err(LimaError::WorkdirMissing { workdir, .. }) => assert_eq!(workdir, "/workspace/p"),
        other => panic!("expected WorkdirMissing, got {other:?}"),
    }

    // Mode S: the tool removes its cwd below the project root; its status comes back and
    // the pull removes the directory from the VFS.
    let (mut session, _) = open(&fixture, false);
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj/sub").expect("mkdir");
    vfs.write_file("/proj/Cargo.toml", b"[workspace]\n".to_vec())
        .expect("write");
    let outcome = session
        .run_tool(
            &mut vfs,
            "/proj/sub",
            &captured("sh", &["-c", "cd .. && rm -rf sub && exit 1"]),
        )
        .expect("the tool's own exit 1 is not an infrastructure error");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(1),
        "{outcome:?}"
    );
    assert!(
        !vfs.exists("/proj/sub"),
        "the pull brought the removal back"
    );
    assert!(vfs.exists("/proj/Cargo.toml"));
}

#[test]
fn a_tool_found_through_the_requests_path_keeps_its_exit_127() {
    // The 127 probe looks the program up with the request's environment, as the run did:
    // a tool on the request's own PATH (not the guest profile's) that exits 127 is not
    // "not installed".
    let fixture = Fixture::new("Running");
    let tools = fixture.parent.path().join("p/tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let tool = tools.join("exits-127");
    std::fs::write(&tool, "#!/bin/sh\nexit 127\n").expect("write");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (mut session, _) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    let request = captured("exits-127", &[]).env("PATH", format!("{MOUNT}/p/tools:/usr/bin:/bin"));
    let outcome = session
        .run_tool(&mut vfs, "/p", &request)
        .expect("the tool's own 127 is a status");
    assert_eq!(
        outcome.exec.termination,
        Termination::Exited(127),
        "{outcome:?}"
    );
    // Without that PATH the same name is missing in the guest.
    match session.run_tool(&mut vfs, "/p", &captured("exits-127", &[])) {
        Err(LimaError::ProgramMissing { program, .. }) => assert_eq!(program, "exits-127"),
        other => panic!("expected ProgramMissing, got {other:?}"),
    }
}

#[test]
fn stopped_instance_is_started_on_demand_and_stopped_on_exit() {
    let fixture = Fixture::new("Stopped");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let mut config = fixture.config(true);
    config.stop_on_exit = true;
    let mut session = GammaSession::new(&config).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    assert_eq!(
        fixture.invocations().len(),
        0,
        "nothing runs before first use"
    );
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("true", &[]))
        .expect("run");
    assert!(outcome.exec.success());
    assert_eq!(fixture.instance()["status"], "Running");
    let invocations = fixture.invocations();
    assert_eq!(invocations[0], ["--version"]);
    assert_eq!(invocations[1][..2], ["list", "--format"]);
    assert_eq!(invocations[2], ["start", "--tty=false", INSTANCE]);
    assert!(
        notices.text().contains("starting Lima instance"),
        "{}",
        notices.text()
    );
    session.shutdown().expect("shutdown");
    assert_eq!(fixture.instance()["status"], "Stopped");
    assert!(
        notices.text().contains("stopping Lima instance"),
        "{}",
        notices.text()
    );
}

#[test]
fn eager_start_starts_at_construction() {
    let fixture = Fixture::new("Stopped");
    let mut config = fixture.config(false);
    config.eager_start = true;
    let _session = GammaSession::new(&config).expect("session");
    assert_eq!(fixture.instance()["status"], "Running");
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "start", "shell"]
    );
}

#[test]
fn missing_instance_missing_mount_and_failed_start_are_specific_errors() {
    let fixture = Fixture::new("Running");
    let mut config = fixture.config(true);
    config.lima_instance = "no-such-instance".to_owned();
    let mut session = GammaSession::new(&config).expect("session");
    match session.ensure_running() {
        Err(err @ LimaError::InstanceMissing { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("no-such-instance") && text.contains(MOUNT),
                "{text}"
            );
        }
        other => panic!("expected InstanceMissing, got {other:?}"),
    }

    let fixture = Fixture::new("Running");
    fixture.set_instance(json!({
        "status": "Running",
        "mounts": [{ "location": "/tmp", "mountPoint": "/tmp/lima", "writable": true }]
    }));
    let (mut session, _) = open(&fixture, false);
    match session.ensure_running() {
        Err(err @ LimaError::MountMissing { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains(&fixture.parent_path()) && text.contains("/tmp → /tmp/lima"),
                "{text}"
            );
        }
        other => panic!("expected MountMissing, got {other:?}"),
    }
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list"],
        "no start or shell after a mount mismatch"
    );

    let fixture = Fixture::new("Stopped");
    let mut state = fixture.instance();
    state["start_failure"] = json!("failed to open /dev/kvm: permission denied");
    fixture.set_instance(state);
    let (mut session, _) = open(&fixture, false);
    match session.ensure_running() {
        Err(err @ LimaError::StartFailed { .. }) => {
            let text = err.to_string();
            assert!(text.contains("/dev/kvm: permission denied"), "{text}");
            assert!(text.contains("ha.stderr.log"), "{text}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
}

#[test]
fn mode_s_builds_a_real_crate_at_the_guest_path() {
    let fixture = Fixture::new("Running");
    // The user's own files in the workspace parent (often their repository), including
    // a directory named like the project: Mode S must never touch them.
    std::fs::create_dir(fixture.parent.path().join("hello")).expect("mkdir");
    std::fs::write(fixture.parent.path().join("hello/mine.txt"), "keep").expect("write");
    std::fs::write(fixture.parent.path().join("keep.txt"), "keep").expect("write");
    let (mut session, _) = open(&fixture, false);
    let mut vfs = Vfs::new();
    vfs.mkdir("/hello/src").expect("mkdir");
    vfs.write_file(
        "/hello/Cargo.toml",
        b"[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
            .to_vec(),
    )
    .expect("write");
    vfs.write_file(
        "/hello/src/main.rs",
        b"fn main() { println!(\"built in {}\", env!(\"CARGO_MANIFEST_DIR\")); }\n".to_vec(),
    )
    .expect("write");
    let build = captured("cargo", &["build", "--quiet", "--offline"]);
    let outcome = session
        .run_tool(&mut vfs, "/hello/src", &build)
        .expect("build");
    assert!(
        outcome.exec.success(),
        "cargo build failed: {}",
        String::from_utf8_lossy(&outcome.exec.stderr)
    );
    // The binary came back into the VFS, and was built at the guest path.
    let binary = vfs
        .read_file("/hello/target/debug/hello")
        .expect("binary in the VFS");
    assert!(binary.starts_with(b"\x7fELF"));
    let run = session
        .run_tool(&mut vfs, "/hello", &captured("./target/debug/hello", &[]))
        .expect("run");
    // Built at the guest path of the session's staging dir inside the mount.
    let staging = session.staging_dir().expect("staging").to_path_buf();
    let rel = staging
        .strip_prefix(fixture.parent.path())
        .expect("staging under the parent");
    assert!(rel.starts_with(".devshell-vm"), "{}", rel.display());
    assert_eq!(
        String::from_utf8_lossy(&run.exec.stdout),
        format!("built in /workspace/{}/0/hello\n", rel.display())
    );
    // A failing build still pulls what the tool wrote, and is a status, not an error.
    vfs.write_file("/hello/src/main.rs", b"fn main() { nope }\n".to_vec())
        .expect("write");
    let outcome = session
        .run_tool(&mut vfs, "/hello", &build)
        .expect("failed build is Ok");
    assert!(!outcome.exec.success());
    // One list, then one `limactl shell` per run: no probes on the happy path.
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "shell", "shell", "shell"]
    );
    session.shutdown().expect("shutdown");
    assert!(!staging.exists(), "shutdown removes the staging dir");
    let mut user_files = walk(fixture.parent.path());
    user_files.sort();
    assert_eq!(
        user_files,
        [
            ".devshell-vm",
            ".devshell-vm/.gitignore",
            "hello",
            "hello/mine.txt",
            "keep.txt"
        ]
    );
}

/// Relative paths of everything under `root`.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            out.push(
                path.strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    out
}

#[test]
fn timeouts_kill_the_run_and_are_reported() {
    let fixture = Fixture::new("Running");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let mut config = fixture.config(true);
    config.exec_timeout = Some(std::time::Duration::from_millis(300));
    let mut session = GammaSession::new(&config).expect("session");
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("sleep", &["5"]))
        .expect("a timeout is an outcome of run_tool");
    assert_eq!(outcome.exec.termination, Termination::TimedOut);
    assert!(outcome.exec.duration < std::time::Duration::from_secs(5));
    match session.run_rust_tool(&mut vfs, "/p", "sleep", &["5".to_owned()]) {
        Err(LimaError::Session(devshell_vm_backend_lima::SessionError::Timeout {
            program,
            ..
        })) => assert_eq!(program, "sleep"),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[test]
fn build_essential_probe_honours_its_knob() {
    let fixture = Fixture::new("Running");
    let vfs = Vfs::new();
    // Off (the fixture's default): ensure_ready only reads the version, lists and
    // checks the mount answers.
    let (mut session, _) = open(&fixture, true);
    session.ensure_ready(&vfs, "/").expect("ready");
    assert_eq!(fixture.subcommands(), ["--version", "list", "shell"]);
    // On: one probe in the guest; gcc is there, so nothing is installed and nothing said.
    let mut config = fixture.config(true);
    config.auto_build_essential = true;
    let mut session = GammaSession::new(&config).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    session.ensure_ready(&vfs, "/").expect("ready");
    session.ensure_ready(&vfs, "/").expect("ready twice");
    assert_eq!(
        fixture.subcommands(),
        [
            "--version",
            "list",
            "shell",
            "--version",
            "list",
            "shell",
            "shell"
        ],
        "one probe per session"
    );
    assert!(
        !notices.text().contains("build-essential"),
        "{}",
        notices.text()
    );
}

#[test]
fn interactive_shell_starts_in_the_guest_image_of_the_host_cwd() {
    let fixture = Fixture::new("Running");
    let (session, _) = open(&fixture, false);
    let inside = fixture.parent.path().join("proj/src");
    std::fs::create_dir_all(&inside).expect("mkdir");
    assert_eq!(session.interactive_workdir(&inside), "/workspace/proj/src");
    assert_eq!(
        session.interactive_workdir(std::path::Path::new("/")),
        MOUNT
    );
    let command = session.interactive_shell_command();
    let args: Vec<_> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(args[0], "shell");
    assert_eq!(args[1], "--workdir");
    assert_eq!(args.last().map(String::as_str), Some(INSTANCE));
}

#[test]
fn an_instance_stopped_mid_session_is_started_again_before_the_run() {
    let fixture = Fixture::new("Running");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let (mut session, notices) = open(&fixture, true);
    let mut vfs = vfs_with_dir("/p");
    assert!(
        session
            .run_tool(&mut vfs, "/p", &captured("true", &[]))
            .expect("run")
            .exec
            .success()
    );
    // Someone stops the VM behind the session's back.
    let mut state = fixture.instance();
    state["status"] = json!("Stopped");
    fixture.set_instance(state);
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("sh", &["-c", "echo again"]))
        .expect("restarted and ran");
    assert_eq!(outcome.exec.stdout, b"again\n");
    assert_eq!(fixture.instance()["status"], "Running");
    assert!(
        notices.text().contains("stopped during the session"),
        "{}",
        notices.text()
    );
}

#[test]
fn mode_s_captured_runs_use_the_channel_when_the_sidecar_is_reachable() {
    let fixture = Fixture::new("Running");
    let mut config = fixture.config(false);
    config.sidecar_bin = Some(common::sidecar());
    let mut session = GammaSession::new(&config).expect("session");
    session.set_notice_writer(Box::new(std::io::sink()));
    let mut vfs = Vfs::new();
    vfs.mkdir("/proj").expect("mkdir");
    for round in 0..3 {
        vfs.write_file("/proj/in.txt", format!("round {round}").into_bytes())
            .expect("write");
        let request = captured("sh", &["-c", "cat in.txt; cat in.txt > out.txt"]);
        let outcome = session.run_tool(&mut vfs, "/proj", &request).expect("run");
        assert_eq!(outcome.exec.stdout, format!("round {round}").as_bytes());
        assert_eq!(
            &*vfs.read_file("/proj/out.txt").expect("pulled"),
            format!("round {round}").as_bytes()
        );
    }
    assert_eq!(
        session.channel_state(),
        &devshell_vm_backend_lima::ChannelState::Open
    );
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "copy", "shell"]
    );
}

/// The stand-in follows Lima's rule that leading `NAME=value` arguments are environment
/// assignments — the hazard `shell_argv`'s `command --` guard exists for.
#[test]
fn standin_treats_leading_assignments_as_environment_like_lima() {
    let fixture = Fixture::new("Running");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&fixture.standin)
            .env("LIMA_HOME", fixture.lima_home.path())
            .args(["shell", "--workdir", MOUNT, INSTANCE, "--"])
            .args(args)
            .output()
            .expect("stand-in runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(
        run(&["A=x 'y'", "sh", "-c", "printf '%s' \"$A\""]),
        (Some(0), "x 'y'".to_owned())
    );
    // Unguarded, a program name with `=` is swallowed as an assignment and its first
    // argument runs as the program instead (`ran`: not found, 127, nothing printed).
    assert_eq!(run(&["echo=1", "ran"]), (Some(127), String::new()));
    // Guarded as the backend does it, it is a program (here: not found, 127 from the shell).
    assert_eq!(run(&["command", "--", "echo=1"]).0, Some(127));
    // The guest sees the mount point, not the host path.
    assert_eq!(run(&["pwd"]), (Some(0), "/workspace\n".to_owned()));
    // A missing workdir is Lima's `cd … || exit 1`.
    let out = std::process::Command::new(&fixture.standin)
        .env("LIMA_HOME", fixture.lima_home.path())
        .args(["shell", "--workdir", "/workspace/nope", INSTANCE, "true"])
        .output()
        .expect("stand-in runs");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn standin_guest_sees_only_the_guest_path_and_leaves_the_host_root_alone() {
    // A mount point whose top-level directory does not exist on this machine: it exists
    // in the guest (the stand-in's own root), and nothing is created in the host's `/`.
    let fixture = Fixture::new("Running");
    let unique = format!(
        "/devshell-standin-test-{}-{}",
        std::process::id(),
        fixture
            .lima_home
            .path()
            .file_name()
            .expect("temp name")
            .to_string_lossy()
    );
    let point = format!("{unique}/ws");
    assert!(!std::path::Path::new(&unique).exists(), "{unique} is fresh");
    let mounts =
        json!([{ "location": fixture.parent_path(), "mountPoint": point, "writable": true }]);
    fixture.set_instance(json!({ "status": "Running", "mounts": mounts }));
    std::fs::write(fixture.parent.path().join("marker"), "m").expect("write");
    let out = std::process::Command::new(&fixture.standin)
        .env("LIMA_HOME", fixture.lima_home.path())
        .args(["shell", "--workdir", &point, INSTANCE, "--", "sh", "-c"])
        .arg(
            "pwd; cat marker; echo new > made; \
             if test -e \"$1/marker\"; then echo host-path-visible; fi; \
             if echo x > \"$1/leak\"; then echo host-path-writable; fi",
        )
        .args(["sh", &fixture.parent_path()])
        .output()
        .expect("stand-in runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{point}\nm"),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(fixture.parent.path().join("made"))
            .expect("written through the mount"),
        "new\n"
    );
    assert!(!fixture.parent.path().join("leak").exists());
    assert!(
        !std::path::Path::new(&unique).exists(),
        "the stand-in created {unique} on the host"
    );
}

#[test]
fn build_essential_install_is_announced_and_runs_in_the_guest() {
    // A guest without gcc but with apt-get (stubs that log what they are asked to do):
    // the login profile's PATH holds only the stubs and `sh`.
    let fixture = Fixture::new("Running");
    let bin = fixture.guest_home.path().join("stub-bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let log = fixture.guest_home.path().join("apt.log");
    let stubs = [
        (
            "sudo",
            "#!/bin/sh\n[ \"$1\" = -n ] && shift\nexec \"$@\"\n".to_owned(),
        ),
        (
            "apt-get",
            format!("#!/bin/sh\necho \"apt-get $*\" >> '{}'\n", log.display()),
        ),
    ];
    for (name, text) in stubs {
        let path = bin.join(name);
        std::fs::write(&path, text).expect("write stub");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).expect("symlink sh");
    std::fs::write(
        fixture.guest_home.path().join(".profile"),
        format!("export PATH='{}'\n", bin.display()),
    )
    .expect("profile");
    let mut config = fixture.config(true);
    config.auto_build_essential = true;
    let mut session = GammaSession::new(&config).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    session.ensure_ready(&Vfs::new(), "/").expect("ready");
    let text = notices.text();
    assert!(
        text.contains("installing build-essential")
            && text.contains("DEVSHELL_VM_AUTO_BUILD_ESSENTIAL=0"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).expect("apt-get ran in the guest"),
        "apt-get update\napt-get install -y build-essential\n"
    );
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "shell", "shell"]
    );
    // Once per session.
    session.ensure_ready(&Vfs::new(), "/").expect("ready twice");
    assert_eq!(fixture.subcommands().len(), 5);
}

#[test]
fn interactive_shell_command_runs_the_guest_login_shell_at_the_guest_path() {
    let fixture = Fixture::new("Running");
    let (session, _) = open(&fixture, false);
    // The test's cwd is not under the workspace parent: the shell starts at the mount.
    let mut command = session.interactive_shell_command();
    let out = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(b"pwd; echo \"$0\"\n")?;
            child.wait_with_output()
        })
        .expect("limactl shell runs");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{MOUNT}\n/bin/bash\n"),
        "the guest user's login shell ($SHELL) read the commands"
    );
}

#[test]
fn limactl_comes_from_the_setting_else_path_else_a_clear_error() {
    let fixture = Fixture::new("Running");
    let bin = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(&fixture.standin, bin.path().join("limactl")).expect("symlink");
    let mut config = fixture.config(true);
    config.limactl = None;
    config.path = Some(format!("/nonexistent:{}", bin.path().display()).into());
    let session = GammaSession::new(&config).expect("limactl found on PATH");
    assert_eq!(session.limactl_path(), bin.path().join("limactl"));
    config.path = Some("/nonexistent-a:/nonexistent-b".into());
    match GammaSession::new(&config) {
        Err(err @ LimaError::LimactlNotFound { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("/nonexistent-a:/nonexistent-b")
                    && text.contains("DEVSHELL_VM_LIMACTL"),
                "{text}"
            );
        }
        other => panic!("expected LimactlNotFound, got {other:?}"),
    }
    // The setting wins over PATH.
    config.limactl = Some(fixture.standin.clone());
    let session = GammaSession::new(&config).expect("configured limactl");
    assert_eq!(session.limactl_path(), fixture.standin);
    assert_eq!(session.lima_instance_name(), INSTANCE);
}

#[test]
fn shutdown_without_stop_on_exit_leaves_the_instance_running() {
    let fixture = Fixture::new("Stopped");
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let config = fixture.config(true);
    assert!(
        !config.stop_on_exit,
        "DEVSHELL_VM_STOP_ON_EXIT is off by default"
    );
    let mut session = GammaSession::new(&config).expect("session");
    let notices = Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    let mut vfs = vfs_with_dir("/p");
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("true", &[]))
        .expect("run");
    assert!(outcome.exec.success(), "{outcome:?}");
    session.shutdown().expect("shutdown");
    assert_eq!(fixture.instance()["status"], "Running");
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "start", "shell", "shell"]
    );
    assert!(!notices.text().contains("stopping"), "{}", notices.text());
}

#[test]
fn mode_s_removes_staging_whose_owner_is_gone_and_keeps_a_held_one() {
    let fixture = Fixture::new("Running");
    let base = fixture.parent.path().join(".devshell-vm");
    std::fs::create_dir_all(&base).expect("mkdir base");
    // A session of another pid namespace (or of a reused pid) that died: the pid in the
    // name runs (it is ours), but its lock is free.
    let other_ns = base.join(format!("s-{}-1-999", std::process::id()));
    std::fs::create_dir_all(other_ns.join("0/p/target")).expect("mkdir");
    std::fs::write(
        base.join(format!("s-{}-1-999.lock", std::process::id())),
        b"",
    )
    .expect("free lock");
    // A directory of an earlier version (no lock file) whose pid cannot run.
    let legacy = base.join("s-2147483600-0");
    std::fs::create_dir_all(legacy.join("0/p")).expect("mkdir");
    // A live session of this process holds its own lock.
    let (mut live, _) = open(&fixture, false);
    let mut vfs = vfs_with_dir("/p");
    let outcome = live
        .run_tool(&mut vfs, "/p", &captured("true", &[]))
        .expect("run");
    assert!(outcome.exec.success());
    let live_dir = live.staging_dir().expect("staging").to_path_buf();

    let (mut session, _) = open(&fixture, false);
    let outcome = session
        .run_tool(&mut vfs, "/p", &captured("true", &[]))
        .expect("run");
    assert!(outcome.exec.success());
    assert!(
        !other_ns.exists(),
        "a staging dir with a free lock survived"
    );
    assert!(
        !legacy.exists(),
        "a lock-less staging dir of a dead pid survived"
    );
    assert!(live_dir.is_dir(), "a held staging dir was removed");
    let own = session.staging_dir().expect("staging").to_path_buf();
    assert!(own.is_dir());
    session.shutdown().expect("shutdown");
    live.shutdown().expect("shutdown");
    let mut left: Vec<String> = std::fs::read_dir(&base)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [".gitignore"],
        "staging dirs and lock files are all gone"
    );
}

#[test]
fn mode_s_pulls_only_what_the_guest_changed() {
    // The stand-in's guest writes into the host staging directory through the same
    // kernel, as the host-side server of a real mount (9p, virtiofsd, sftp-server) does.
    let fixture = Fixture::new("Running");
    let (mut session, _) = open(&fixture, false);
    let mut vfs = Vfs::new();
    for d in 0..20 {
        vfs.mkdir(&format!("/proj/d{d}")).expect("mkdir");
        vfs.write_file(&format!("/proj/d{d}/f.txt"), "x")
            .expect("write");
    }
    let first = session
        .run_tool(&mut vfs, "/proj", &captured("true", &[]))
        .expect("first run");
    assert!(first.exec.success());
    let write = captured("sh", &["-c", "echo built > d7/out.txt"]);
    let outcome = session.run_tool(&mut vfs, "/proj", &write).expect("run");
    assert!(outcome.exec.success(), "{outcome:?}");
    let pull = outcome.pull.expect("pulled");
    assert!(!pull.full_scan, "a tracked pull: {pull:?}");
    assert!(
        pull.dirs_scanned <= 2,
        "only d7 (and the leaf, whose listing holds d7's mtime): {pull:?}"
    );
    assert_eq!(
        &vfs.read_file("/proj/d7/out.txt").expect("pulled")[..],
        b"built\n"
    );
    // Nothing changed: nothing listed.
    let idle = session
        .run_tool(&mut vfs, "/proj", &captured("true", &[]))
        .expect("idle run");
    assert_eq!(idle.pull.map_or(0, |p| p.dirs_scanned), 0);
    session.shutdown().expect("shutdown");
}
