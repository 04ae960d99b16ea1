//! `devshell-vm run --backend beta` against a sidecar over TCP with a token file, with no
//! directory shared between the two: the workspace travels with `wire-sync`.

use std::process::Command;

use devshell_vm_test_support::sidecar::{SidecarProcess, sidecar_bin};

const BIN: &str = env!("CARGO_BIN_EXE_devshell-vm");

#[test]
fn run_cargo_build_over_tcp_with_a_token_file_and_nothing_shared() {
    let sidecar_root = tempfile::tempdir().expect("tempdir");
    let client = tempfile::tempdir().expect("tempdir");
    let token = "cli-remote-token";
    let sidecar = SidecarProcess::builder(sidecar_bin())
        .root(sidecar_root.path())
        .token(token)
        .start_tcp();
    let addr = sidecar.tcp_addr().expect("tcp address");
    let token_file = client.path().join("token");
    std::fs::write(&token_file, token).expect("write token");
    let project = client.path().join("hello");
    std::fs::create_dir_all(project.join("src")).expect("mkdir");
    std::fs::write(
        project.join("Cargo.toml"),
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .expect("write");
    std::fs::write(
        project.join("src/main.rs"),
        "fn main() { println!(\"remote hello\"); }\n",
    )
    .expect("write");
    let export_base = client.path().join("export");
    std::fs::create_dir(&export_base).expect("mkdir");
    let output = Command::new(BIN)
        .args(["run", "--backend", "beta", "--dir"])
        .arg(&project)
        .args(["--", "cargo", "build", "--offline"])
        .env("DEVSHELL_VM_SOCKET", format!("tcp:{addr}"))
        .env("DEVSHELL_VM_TOKEN_FILE", &token_file)
        .env("DEVSHELL_EXPORT_BASE", &export_base)
        .env_remove("DEVSHELL_VM_BETA_SYNC")
        .env_remove("DEVSHELL_VM_WORKSPACE_MODE")
        .output()
        .expect("run devshell-vm");
    let logs = sidecar.logs();
    assert!(
        output.status.success(),
        "status {:?}\nstdout {}\nstderr {}\nsidecar:\n{logs}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        logs.contains("wire session") && logs.contains("wire-sync: push of"),
        "auto picked wire-sync: {logs}"
    );
    // The project directory is loaded read-only: nothing was built into it.
    assert!(!project.join("target").exists());
    // The build happened on the sidecar's side only.
    let built = walk_contains(sidecar_root.path(), "hello");
    assert!(built, "the sidecar's store holds the build");
}

fn walk_contains(dir: &std::path::Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        (path.file_name().is_some_and(|n| n == name)
            && path.parent().is_some_and(|p| p.ends_with("debug")))
            || (path.is_dir() && !path.is_symlink() && walk_contains(&path, name))
    })
}
