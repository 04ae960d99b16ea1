//! The host workspace parent that the Lima instance mounts at the guest workspace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use devshell_vm_config::VmConfig;

/// Host directory for the workspace of the configured Lima instance:
///
/// 1. `DEVSHELL_VM_WORKSPACE_PARENT` ([`VmConfig::workspace_parent`]) when set;
/// 2. with `DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT` on (the default), the `workspace_root`
///    that `cargo metadata --format-version 1 --no-deps` reports for the process's
///    current directory — run **once per process and directory** (the earlier project ran
///    it several times per start-up), with `cargo` looked up on the configured `PATH`;
/// 3. else [`VmConfig::default_vm_workspace_cache_dir`]
///    (`<export base>/vm-workspace/<sanitised instance>`).
#[must_use]
pub fn workspace_parent_for_instance(config: &VmConfig) -> PathBuf {
    if let Some(parent) = &config.workspace_parent {
        return parent.clone();
    }
    if config.workspace_use_cargo_root
        && let Some(root) = std::env::current_dir()
            .ok()
            .and_then(|cwd| cargo_workspace_root(&cwd, config.path.as_deref()))
    {
        return root;
    }
    config.default_vm_workspace_cache_dir()
}

/// `cargo metadata`'s `workspace_root` for `dir`, memoised per process.
fn cargo_workspace_root(dir: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    static CACHE: Mutex<Option<HashMap<PathBuf, Option<PathBuf>>>> = Mutex::new(None);
    let mut guard = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some(hit) = cache.get(dir) {
        return hit.clone();
    }
    let root = run_cargo_metadata(dir, path_var);
    cache.insert(dir.to_path_buf(), root.clone());
    root
}

fn run_cargo_metadata(dir: &Path, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let cargo = devshell_vm_exec::resolve_program("cargo", path_var, dir).ok()?;
    let mut command = Command::new(cargo);
    command
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    if let Some(path) = path_var {
        command.env("PATH", path);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    value
        .get("workspace_root")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_parent_wins_then_cache_dir() {
        let config = VmConfig {
            workspace_parent: Some(PathBuf::from("/srv/ws")),
            ..VmConfig::disabled()
        };
        assert_eq!(
            workspace_parent_for_instance(&config),
            PathBuf::from("/srv/ws")
        );
        let config = VmConfig {
            workspace_use_cargo_root: false,
            export_base: Some(PathBuf::from("/cache")),
            lima_instance: "a.b".to_owned(),
            ..VmConfig::disabled()
        };
        assert_eq!(
            workspace_parent_for_instance(&config),
            PathBuf::from("/cache/vm-workspace/a_b")
        );
    }

    #[test]
    fn cargo_metadata_finds_the_workspace_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("m/src")).expect("mkdir");
        std::fs::write(
            ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"m\"]\nresolver = \"2\"\n",
        )
        .expect("write");
        std::fs::write(
            ws.join("m/Cargo.toml"),
            "[package]\nname = \"m\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .expect("write");
        std::fs::write(ws.join("m/src/lib.rs"), "").expect("write");
        let path = std::ffi::OsString::from(format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            std::path::Path::new(env!("CARGO"))
                .parent()
                .expect("cargo has a parent dir")
                .display()
        ));
        let root =
            run_cargo_metadata(&ws.join("m/src"), Some(&path)).expect("cargo metadata works");
        assert_eq!(
            root.canonicalize().expect("canon"),
            ws.canonicalize().expect("canon")
        );
        assert_eq!(run_cargo_metadata(dir.path(), Some(&path)), None);
    }
}
