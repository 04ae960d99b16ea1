//! The `VmExecutionSession` conformance suite on the host backend, one test per check.

use std::path::Path;
use std::time::Duration;

use devshell_vm::{Backend, SessionHolder, VmConfig};

/// A host configuration whose staging directories go under `export_base`.
fn host_config(export_base: &Path) -> VmConfig {
    VmConfig {
        enabled: true,
        backend: Backend::Host,
        export_base: Some(export_base.to_path_buf()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    }
}

// Each check gets its own export base, owned by the factory closure, so it is removed
// when the check ends (a `static` base would never be dropped and outlive the run).
devshell_vm::vm_session_conformance_tests!({
    let base = tempfile::tempdir().expect("tempdir");
    move || SessionHolder::try_from_config(&host_config(base.path())).expect("host session")
});

#[test]
fn rust_tool_timeout_is_timeout_error() {
    let base = tempfile::tempdir().expect("tempdir");
    let config = VmConfig {
        exec_timeout: Some(Duration::from_millis(800)),
        ..host_config(base.path())
    };
    devshell_vm::conformance::rust_tool_timeout_is_timeout_error(&mut || {
        SessionHolder::try_from_config(&config).expect("host session")
    });
}
