//! The host workspace directory shared with a Lima guest, and `DEVSHELL_WORKSPACE_ROOT`.

use std::path::PathBuf;

use devshell_vm_config::VmConfig;

use crate::VmError;

/// Name of the variable a front end exports to child processes with the canonical
/// workspace root (see [`export_devshell_workspace_root_env`]).
pub const ENV_DEVSHELL_WORKSPACE_ROOT: &str = "DEVSHELL_WORKSPACE_ROOT";

/// Host directory for the workspace of Lima instance `instance`, from the process
/// environment (see [`workspace_parent_for_config`]). If the environment does not parse,
/// [`VmConfig::host_fallback_from_env`] applies.
#[must_use]
pub fn workspace_parent_for_instance(instance: &str) -> PathBuf {
    let config = VmConfig::from_env().unwrap_or_else(|_| VmConfig::host_fallback_from_env());
    workspace_parent_for_config(&config, instance)
}

/// Host directory for the workspace of Lima instance `instance`: the one rule of
/// [`devshell_vm_session::workspace_parent_for`], the same with and without the `lima`
/// feature —
///
/// 1. `DEVSHELL_VM_WORKSPACE_PARENT` when set;
/// 2. with `DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT` on (the default), the cargo project
///    root of the process's current directory (cargo's rule, manifests parsed as TOML:
///    the nearest enclosing workspace that includes the package, else the package);
/// 3. else `<export base>/vm-workspace/<instance with [^A-Za-z0-9_-] → _>`.
#[must_use]
pub fn workspace_parent_for_config(config: &VmConfig, instance: &str) -> PathBuf {
    devshell_vm_session::workspace_parent_for(config, instance)
}

/// Host directory that Lima mounts at the guest workspace (e.g. `/workspace`), for the
/// configured instance.
#[must_use]
pub fn vm_workspace_host_root() -> PathBuf {
    let config = VmConfig::from_env().unwrap_or_else(|_| VmConfig::host_fallback_from_env());
    workspace_parent_for_config(&config, &config.lima_instance)
}

/// The `DEVSHELL_WORKSPACE_ROOT` value for the configured instance: the workspace parent,
/// created if missing and canonicalised. Returns the `(name, value)` pair to export.
///
/// Deviation from the seed: the seed called `std::env::set_var` itself. Mutating the
/// process environment is unsound with threads and banned in this workspace, so the
/// caller exports the pair where it spawns children (`Command::env(name, value)`), or
/// writes it out for a shell (`export NAME=value`).
///
/// # Errors
/// [`VmError::Config`] when the environment does not parse, [`VmError::WorkspaceRoot`]
/// when the directory cannot be created or resolved.
pub fn export_devshell_workspace_root_env() -> Result<(&'static str, PathBuf), VmError> {
    let config = VmConfig::from_env()?;
    workspace_root_env_for(&config)
}

/// [`export_devshell_workspace_root_env`] for an explicit config.
///
/// # Errors
/// [`VmError::WorkspaceRoot`] when the directory cannot be created or resolved.
pub fn workspace_root_env_for(config: &VmConfig) -> Result<(&'static str, PathBuf), VmError> {
    let parent = workspace_parent_for_config(config, &config.lima_instance);
    let err = |source| VmError::WorkspaceRoot {
        path: parent.clone(),
        source,
    };
    std::fs::create_dir_all(&parent).map_err(err)?;
    let canonical = parent.canonicalize().map_err(err)?;
    Ok((ENV_DEVSHELL_WORKSPACE_ROOT, canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_parent_wins() {
        let config = VmConfig {
            workspace_parent: Some(PathBuf::from("/srv/ws")),
            ..VmConfig::disabled()
        };
        assert_eq!(
            workspace_parent_for_config(&config, "x"),
            PathBuf::from("/srv/ws")
        );
    }

    #[test]
    fn cache_dir_uses_the_sanitised_instance() {
        let config = VmConfig {
            workspace_use_cargo_root: false,
            export_base: Some(PathBuf::from("/cache/base")),
            ..VmConfig::disabled()
        };
        assert_eq!(
            workspace_parent_for_config(&config, "my inst.1"),
            PathBuf::from("/cache/base/vm-workspace/my_inst_1")
        );
    }

    #[test]
    fn workspace_root_env_creates_and_canonicalises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parent = dir.path().join("a/../b");
        let config = VmConfig {
            workspace_parent: Some(parent),
            ..VmConfig::disabled()
        };
        let (name, value) = workspace_root_env_for(&config).expect("root");
        assert_eq!(name, "DEVSHELL_WORKSPACE_ROOT");
        assert_eq!(value, dir.path().canonicalize().expect("canon").join("b"));
        assert!(value.is_dir());
    }
}
