//! The seed-style caller builds and runs a real crate through the facade with the
//! environment the earlier library's callers had: `DEVSHELL_VM=off` (the host session),
//! and the default (`lima`, which falls back to the host backend where `limactl` is
//! missing, as on CI machines).

use std::process::Command;

#[test]
fn the_seed_style_caller_builds_and_runs_a_real_crate() {
    let program = devshell_vm_test_support::cargo_bin("devshell-vm-seed-caller", "seed-caller");
    let base = tempfile::tempdir().expect("tempdir");
    for vm in ["off", ""] {
        let out = Command::new(&program)
            .env("DEVSHELL_VM", vm)
            .env("DEVSHELL_VM_LIMACTL", "")
            .env("DEVSHELL_EXPORT_BASE", base.path())
            .output()
            .expect("run the seed caller");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "DEVSHELL_VM={vm:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        assert!(stdout.contains("hello from the seed caller"), "{stdout}");
        assert!(
            stdout.contains("built and ran through the host session"),
            "{stdout}"
        );
    }
}
