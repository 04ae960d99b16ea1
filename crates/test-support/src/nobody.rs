//! Running a program as `nobody` with root's Rust toolchain reachable, for tests that
//! must hold for an unprivileged user too (the isolation escape suite, the CLI's demo).
//!
//! Root's toolchain usually lives under `/root` (mode 0700), which `nobody` cannot
//! traverse. [`run_as_nobody_with_toolchain`] (as root) starts the program in a private
//! mount namespace where `/root` is a traversable tmpfs with the real rustup and cargo
//! homes bound read-only at their own paths (rustup's toolchain links are absolute),
//! then drops to `nobody` with `runuser`. Nothing changes outside that namespace.

use std::path::Path;
use std::process::{Command, Output};

/// Where the toolchain is, and where `nobody` may write.
#[derive(Debug, Clone, Copy)]
pub struct NobodyRun<'a> {
    /// Root's rustup home (under `/root`).
    pub rustup_home: &'a Path,
    /// Root's cargo home (under `/root`); its `bin` is put on `nobody`'s `PATH`.
    pub cargo_home: &'a Path,
    /// A scratch directory `nobody` can traverse (mode 0777 or 1777): `nobody`'s `HOME`
    /// and cargo home (`home/cargo`, the toolchain's `bin` linked in) are made in it.
    pub scratch: &'a Path,
}

/// Runs `program args` as `nobody` with a clean environment: `HOME`, `RUSTUP_HOME`,
/// `CARGO_HOME` (`nobody`'s own, for registry caches), `PATH` (the toolchain's `bin`
/// first), `TMPDIR` (this process's temp dir, which must be usable by `nobody`) and
/// `env`.
///
/// # Panics
/// When run as another user than root, when a home is not under `/root`, or when
/// `unshare`, `runuser` or `chown` (util-linux, coreutils) are missing — each with a
/// message saying so.
#[must_use]
pub fn run_as_nobody_with_toolchain(
    run: NobodyRun<'_>,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    assert!(
        nix::unistd::geteuid().is_root(),
        "run_as_nobody_with_toolchain needs root (it mounts in a private namespace)"
    );
    let stash = run.scratch.join("stash");
    let home = run.scratch.join("home");
    let cargo = home.join("cargo");
    std::fs::create_dir_all(&cargo).expect("create nobody's cargo home");
    std::os::unix::fs::symlink(run.cargo_home.join("bin"), cargo.join("bin"))
        .expect("link the toolchain's bin");
    let chown = Command::new("chown")
        .args(["-R", "-h", "nobody"])
        .arg(&home)
        .status()
        .expect("chown (coreutils) must be installed");
    assert!(chown.success(), "chown -R nobody {}", home.display());
    // Binds of the real homes first (the tmpfs on /root hides them), then the tmpfs.
    let script = r#"set -e
for dir in "$RUSTUP" "$CARGO"; do
  case "$dir" in /root/*) ;; *) echo "toolchain not under /root: $dir" >&2; exit 2;; esac
done
mkdir -p "$STASH/rustup" "$STASH/cargo"
mount --bind "$RUSTUP" "$STASH/rustup"
mount --bind "$CARGO" "$STASH/cargo"
mount -t tmpfs -o mode=0755,size=1m devshell-test-root /root
mkdir -p "$RUSTUP" "$CARGO"
mount --bind -o ro "$STASH/rustup" "$RUSTUP"
mount --bind -o ro "$STASH/cargo" "$CARGO"
exec runuser -u nobody -- env -i HOME="$NOBODY_HOME" RUSTUP_HOME="$RUSTUP" \
  CARGO_HOME="$NOBODY_CARGO" PATH="$CARGO/bin:/usr/local/bin:/usr/bin:/bin" \
  TMPDIR="$NOBODY_TMP" "$@"
"#;
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
        ])
        .arg("sh")
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg(program)
        .args(args)
        .env("STASH", &stash)
        .env("RUSTUP", run.rustup_home)
        .env("CARGO", run.cargo_home)
        .env("NOBODY_HOME", &home)
        .env("NOBODY_CARGO", &cargo)
        .env("NOBODY_TMP", std::env::temp_dir());
    command
        .output()
        .expect("unshare and runuser (util-linux) must be installed")
}
