//! The host workspace parent that the Lima instance mounts at the guest workspace.

use std::path::PathBuf;

use devshell_vm_config::VmConfig;

/// Host directory for the workspace of the configured Lima instance: the one rule of
/// [`devshell_vm_session::workspace_parent_for`] (explicit `DEVSHELL_VM_WORKSPACE_PARENT`,
/// else the cargo project root of the process's current directory — found by reading
/// manifests with cargo's rule, no `cargo metadata` spawn — else the per-instance cache
/// directory [`VmConfig::default_vm_workspace_cache_dir`]).
#[must_use]
pub fn workspace_parent_for_instance(config: &VmConfig) -> PathBuf {
    devshell_vm_session::workspace_parent_for(config, &config.lima_instance)
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
        assert_eq!(
            config.default_vm_workspace_cache_dir(),
            workspace_parent_for_instance(&config)
        );
    }
}
