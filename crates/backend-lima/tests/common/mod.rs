//! Test fixture: a `LIMA_HOME` with one stand-in instance that mounts a fresh host
//! workspace parent at `/workspace`, and the `VmConfig` that points a session at it.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a different part of the fixture"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use devshell_vm_config::VmConfig;
use serde_json::json;

/// Instance name used by every fixture (each fixture has its own `LIMA_HOME`).
pub const INSTANCE: &str = "devshell-test";
/// Guest mount point.
pub const MOUNT: &str = "/workspace";

/// The stand-in binary, built on first use.
pub fn standin() -> PathBuf {
    assert!(
        ["/usr/bin/unshare", "/bin/unshare"]
            .iter()
            .any(|p| Path::new(p).is_file()),
        "these tests need `unshare` (util-linux) to run guest commands in a private mount namespace; install util-linux (.ci/run does)"
    );
    devshell_vm_test_support::cargo_bin("devshell-vm-limactl-standin", "limactl-standin")
}

/// The sidecar binary, built on first use.
pub fn sidecar() -> PathBuf {
    devshell_vm_test_support::cargo_bin("devshell-vm-sidecar", "devshell-vm-sidecar")
}

/// One stand-in instance and its workspace parent.
pub struct Fixture {
    pub lima_home: tempfile::TempDir,
    pub parent: tempfile::TempDir,
    pub guest_home: tempfile::TempDir,
    pub standin: PathBuf,
}

impl Fixture {
    /// A fixture whose instance has `status` (`Running` / `Stopped`) and mounts the
    /// workspace parent at `/workspace`.
    pub fn new(status: &str) -> Self {
        let fixture = Self {
            lima_home: tempfile::tempdir().expect("lima home"),
            parent: tempfile::tempdir().expect("workspace parent"),
            guest_home: tempfile::tempdir().expect("guest home"),
            standin: standin(),
        };
        fixture.write_profile();
        let mounts =
            json!([{ "location": fixture.parent_path(), "mountPoint": MOUNT, "writable": true }]);
        fixture.set_instance(json!({ "status": status, "mounts": mounts }));
        fixture
    }

    pub fn parent_path(&self) -> String {
        self.parent
            .path()
            .to_str()
            .expect("utf8 temp path")
            .to_owned()
    }

    /// The guest user's login profile puts the toolchain that builds these tests on
    /// `PATH`, like a guest set up with rustup (or the host toolchain mounted).
    fn write_profile(&self) {
        let cargo = Path::new(env!("CARGO"));
        let bin = cargo.parent().expect("cargo dir");
        let mut profile = format!(
            "export PATH='{}':/usr/local/bin:/usr/bin:/bin\n",
            bin.display()
        );
        if let Some(home) = option_env!("RUSTUP_HOME") {
            let _ = writeln!(profile, "export RUSTUP_HOME='{home}'");
        }
        if let Some(home) = option_env!("CARGO_HOME") {
            let _ = writeln!(profile, "export CARGO_HOME='{home}'");
        }
        if let Some(toolchain) = option_env!("RUSTUP_TOOLCHAIN") {
            let _ = writeln!(profile, "export RUSTUP_TOOLCHAIN='{toolchain}'");
        }
        std::fs::write(self.guest_home.path().join(".profile"), profile).expect("write .profile");
    }

    /// Writes the instance state (`standin.json`), filling in the guest home.
    pub fn set_instance(&self, mut state: serde_json::Value) {
        let dir = self.lima_home.path().join(INSTANCE);
        std::fs::create_dir_all(&dir).expect("instance dir");
        if state.get("home").is_none() {
            state["home"] = json!(self.guest_home.path());
        }
        std::fs::write(dir.join("standin.json"), state.to_string()).expect("write instance");
    }

    /// The instance state as the stand-in left it.
    pub fn instance(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.lima_home.path().join(INSTANCE).join("standin.json"))
                .expect("instance state");
        serde_json::from_str(&text).expect("json")
    }

    /// Every `limactl` invocation so far (argv after `limactl`).
    pub fn invocations(&self) -> Vec<Vec<String>> {
        match std::fs::read_to_string(self.lima_home.path().join("invocations.log")) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).expect("log line is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The subcommands invoked so far (`list`, `shell`, ...).
    pub fn subcommands(&self) -> Vec<String> {
        self.invocations()
            .into_iter()
            .map(|argv| argv[0].clone())
            .collect()
    }

    /// A config for a Lima session on this fixture (Mode S unless `guest_mode`).
    pub fn config(&self, guest_mode: bool) -> VmConfig {
        let mut env = BTreeMap::new();
        env.insert("DEVSHELL_VM".to_owned(), "1".to_owned());
        env.insert("DEVSHELL_VM_BACKEND".to_owned(), "lima".to_owned());
        env.insert("DEVSHELL_VM_LIMA_INSTANCE".to_owned(), INSTANCE.to_owned());
        env.insert(
            "DEVSHELL_VM_LIMACTL".to_owned(),
            self.standin.to_str().expect("utf8").to_owned(),
        );
        env.insert(
            "LIMA_HOME".to_owned(),
            self.lima_home.path().to_str().expect("utf8").to_owned(),
        );
        env.insert(
            "DEVSHELL_VM_WORKSPACE_PARENT".to_owned(),
            self.parent_path(),
        );
        env.insert(
            "DEVSHELL_VM_AUTO_BUILD_ESSENTIAL".to_owned(),
            "0".to_owned(),
        );
        env.insert("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned());
        if guest_mode {
            env.insert("DEVSHELL_VM_WORKSPACE_MODE".to_owned(), "guest".to_owned());
        }
        VmConfig::from_source(&env).expect("valid config")
    }
}

/// A notice writer whose text the test can read afterwards.
#[derive(Clone, Default)]
pub struct Notices(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Notices {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Notices {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}
