//! The `devshell-vm` binary end to end: `demo` on a fresh environment, `run` with a host
//! directory and images, exit statuses, and `--help`. Each invocation gets its own export
//! base through the child's environment (this process's environment is never changed).

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_devshell-vm");

/// A command with every `DEVSHELL_*` variable of this environment removed (a fresh
/// user's environment) and a private export base.
fn devshell(export_base: &Path) -> Command {
    let mut command = Command::new(BIN);
    for name in [
        "DEVSHELL_VM",
        "DEVSHELL_VM_BACKEND",
        "DEVSHELL_VM_EXEC_TIMEOUT_MS",
        "DEVSHELL_VM_SOCKET",
        "DEVSHELL_VM_WORKSPACE_MODE",
        "DEVSHELL_VM_LIMACTL",
    ] {
        command.env_remove(name);
    }
    command.env("DEVSHELL_EXPORT_BASE", export_base);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

#[test]
fn demo_works_without_configuration() {
    let base = tempfile::tempdir().expect("tempdir");
    // A user who forces cargo's colours still gets a correct "recompiled" report.
    let output = devshell(base.path())
        .arg("demo")
        .env("CARGO_TERM_COLOR", "always")
        .output()
        .expect("run demo");
    assert!(output.status.success(), "{}", show(&output));
    let stdout = text(&output.stdout);
    for expected in [
        "cargo build",
        "cargo test",
        "test tests::greets_by_name ... ok",
        "output: Hello, in-memory workspace!",
        "recompiled: app (greet stayed fresh: yes)",
        "output: Hello, in-memory workspace! (edited in memory)",
        "pushed",
        "pulled",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n{}",
            show(&output)
        );
    }
    let stderr = text(&output.stderr);
    if stdout.contains("backend: host") {
        // The default backend (lima) is not usable here: one line says so.
        let notes: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("using the host backend"))
            .collect();
        assert_eq!(notes.len(), 1, "{}", show(&output));
    }
    let leftovers: Vec<_> = std::fs::read_dir(base.path()).expect("base").collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

/// The demo (real `cargo build`, `test` and `run`, confined by default) also works for
/// an unprivileged user: as `nobody`, with root's toolchain reachable through a private
/// mount namespace (`devshell_vm_test_support::nobody`) and a clean environment.
#[test]
fn demo_works_as_nobody() {
    let config = devshell_vm::config::VmConfig::from_env().expect("config");
    let rustup_home = config.rustup_home_dir().expect("a rustup home");
    let cargo_home = config.cargo_home_dir().expect("a cargo home");
    let scratch = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let export_base = scratch.path().join("export");
    std::fs::create_dir(&export_base).expect("mkdir");
    std::fs::set_permissions(
        &export_base,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let export = export_base.to_string_lossy().into_owned();
    let output = devshell_vm_test_support::nobody::run_as_nobody_with_toolchain(
        devshell_vm_test_support::nobody::NobodyRun {
            rustup_home: &rustup_home,
            cargo_home: &cargo_home,
            scratch: scratch.path(),
        },
        Path::new(BIN),
        &["demo"],
        &[("DEVSHELL_EXPORT_BASE", export.as_str())],
    );
    assert!(output.status.success(), "{}", show(&output));
    let stdout = text(&output.stdout);
    for expected in [
        "test tests::greets_by_name ... ok",
        "output: Hello, in-memory workspace!",
        "recompiled: app (greet stayed fresh: yes)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n{}",
            show(&output)
        );
    }
    println!("{}", show(&output));
}

#[test]
fn run_loads_a_directory_keeps_it_intact_and_saves_the_result() {
    let base = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("proj/sub")).expect("mkdir");
    std::fs::write(src.join("proj/input.txt"), "in\n").expect("write");
    // A manifest makes /proj the project root, so a run from /proj/sub sees ../input.txt.
    std::fs::write(src.join("proj/Cargo.toml"), "[package]\nname = \"proj\"\n").expect("write");
    let image = work.path().join("ws.img");

    let output = devshell(base.path())
        .args(["run", "--backend", "host", "--dir"])
        .arg(&src)
        .args(["--cwd", "/proj/sub", "--save"])
        .arg(&image)
        .args([
            "--",
            "sh",
            "-c",
            "cat ../input.txt > out.txt; echo tool-ran; exit 3",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert_eq!(
        text(&output.stdout),
        "tool-ran\n",
        "the tool's stdout is the caller's"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("exit code 3") && stderr.contains("pulled"),
        "{stderr}"
    );
    assert!(
        !src.join("proj/sub/out.txt").exists(),
        "the host directory is only read"
    );

    let vfs = devshell_vm::vfs::image::load(&image).expect("saved image loads");
    assert_eq!(
        &*vfs
            .read_file("/proj/sub/out.txt")
            .expect("tool output saved"),
        b"in\n"
    );
    assert_eq!(
        &*vfs.read_file("/proj/input.txt").expect("input kept"),
        b"in\n"
    );

    // The image goes back in; a tool's success is exit 0.
    let output = devshell(base.path())
        .args(["run", "--backend", "host", "--image"])
        .arg(&image)
        .args(["--cwd", "/proj", "--", "cat", "sub/out.txt"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(text(&output.stdout), "in\n");
}

#[test]
fn infrastructure_failures_and_timeouts_have_their_own_exit_codes() {
    let base = tempfile::tempdir().expect("tempdir");
    let missing = devshell(base.path())
        .args(["run", "--backend", "host", "--", "no-such-tool-devshell"])
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(70), "{}", show(&missing));
    assert!(
        text(&missing.stderr).contains("no-such-tool-devshell"),
        "{}",
        show(&missing)
    );

    let bad_image = devshell(base.path())
        .args(["run", "--image", "/nonexistent/devshell.img", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(bad_image.status.code(), Some(70), "{}", show(&bad_image));
    assert!(text(&bad_image.stderr).contains("/nonexistent/devshell.img"));

    let slow = devshell(base.path())
        .env("DEVSHELL_VM_EXEC_TIMEOUT_MS", "300")
        .args(["run", "--backend", "host", "--", "sleep", "30"])
        .output()
        .expect("run");
    assert_eq!(slow.status.code(), Some(124), "{}", show(&slow));
    assert!(text(&slow.stderr).contains("timed out"), "{}", show(&slow));

    let bad_config = devshell(base.path())
        .env("DEVSHELL_VM", "maybe")
        .args(["run", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(bad_config.status.code(), Some(70), "{}", show(&bad_config));
    assert!(
        text(&bad_config.stderr).contains("DEVSHELL_VM"),
        "{}",
        show(&bad_config)
    );
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["demo", "--help"], &["run", "--help"]] {
        let output = Command::new(BIN).args(args).output().expect("help");
        assert!(output.status.success(), "{args:?}: {}", show(&output));
        assert!(
            text(&output.stdout).contains("Usage: devshell-vm"),
            "{args:?}"
        );
    }
    let usage = Command::new(BIN)
        .args(["run"])
        .output()
        .expect("usage error");
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn missing_lima_is_one_short_line_and_the_search_path_only_with_verbose() {
    let base = tempfile::tempdir().expect("tempdir");
    // A PATH that holds `true` and no `limactl`.
    let bin = tempfile::tempdir().expect("tempdir");
    let real_true = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a `true` binary in /usr/bin or /bin");
    std::os::unix::fs::symlink(real_true, bin.path().join("true")).expect("symlink");
    let search_path = bin.path().display().to_string();

    let quiet_run = devshell(base.path())
        .env("PATH", bin.path())
        .args(["run", "--", "true"])
        .output()
        .expect("run");
    assert!(quiet_run.status.success(), "{}", show(&quiet_run));
    assert_eq!(
        text(&quiet_run.stderr).lines().next(),
        Some(
            "devshell-vm: Lima not installed; using the host backend \
             (set DEVSHELL_VM_BACKEND=host to silence)"
        ),
        "{}",
        show(&quiet_run)
    );
    assert!(
        !text(&quiet_run.stderr).contains(&search_path),
        "{}",
        show(&quiet_run)
    );

    let verbose = devshell(base.path())
        .env("PATH", bin.path())
        .args(["run", "--verbose", "--", "true"])
        .output()
        .expect("run");
    assert!(verbose.status.success(), "{}", show(&verbose));
    assert!(
        text(&verbose.stderr).contains(&search_path),
        "{}",
        show(&verbose)
    );

    let silenced = devshell(base.path())
        .env("PATH", bin.path())
        .env("DEVSHELL_VM_BACKEND", "host")
        .args(["run", "--", "true"])
        .output()
        .expect("run");
    assert!(
        !text(&silenced.stderr).contains("Lima"),
        "{}",
        show(&silenced)
    );
}

#[test]
fn completions_load_in_bash_and_name_every_option() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(output.status.success(), "{shell}: {}", show(&output));
        let script = text(&output.stdout);
        // (fish spells options `-l write-back`, the others `--write-back`.)
        for option in ["write-back", "no-ignore", "report", "quiet"] {
            assert!(script.contains(option), "{shell} lacks {option}");
        }
    }
    // bash really loads the script and registers the completion.
    let check = format!("source <({BIN} completions bash) && complete -p devshell-vm");
    let output = Command::new("bash")
        .args(["-c", &check])
        .output()
        .expect("bash");
    assert!(output.status.success(), "{}", show(&output));
    assert!(
        text(&output.stdout).contains("devshell-vm"),
        "{}",
        show(&output)
    );
}

#[test]
fn man_pages_for_the_command_and_each_subcommand() {
    let page = Command::new(BIN).arg("man").output().expect("man");
    assert!(page.status.success(), "{}", show(&page));
    let roff = text(&page.stdout);
    assert!(roff.contains(".TH devshell-vm 1"), "{roff}");
    assert!(roff.contains("completions"), "{roff}");

    let run = Command::new(BIN)
        .args(["man", "run"])
        .output()
        .expect("man");
    assert!(run.status.success(), "{}", show(&run));
    let roff = text(&run.stdout);
    assert!(roff.contains(".TH devshell-vm-run 1"), "{roff}");
    for option in [r"\-\-write\-back", r"\-\-no\-ignore", r"\-\-report"] {
        assert!(roff.contains(option), "{option} missing:\n{roff}");
    }

    let unknown = Command::new(BIN)
        .args(["man", "nope"])
        .output()
        .expect("man");
    assert_eq!(unknown.status.code(), Some(70), "{}", show(&unknown));
    assert!(text(&unknown.stderr).contains("nope"));
}
