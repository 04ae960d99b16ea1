//! The `VmExecutionSession` conformance suite on the host backend, one test per check.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use devshell_vm::{Backend, SessionHolder, VmConfig};

/// One export base for the whole test binary (each session still gets its own staging
/// directory under it), kept for the life of the process.
fn export_base() -> PathBuf {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
        .to_path_buf()
}

fn host_config() -> VmConfig {
    VmConfig {
        enabled: true,
        backend: Backend::Host,
        export_base: Some(export_base()),
        ..VmConfig::from_env().expect("DEVSHELL_VM* variables parse")
    }
}

devshell_vm::vm_session_conformance_tests!(|| {
    SessionHolder::try_from_config(&host_config()).expect("host session")
});

#[test]
fn rust_tool_timeout_is_timeout_error() {
    let config = VmConfig {
        exec_timeout: Some(Duration::from_millis(800)),
        ..host_config()
    };
    devshell_vm::conformance::rust_tool_timeout_is_timeout_error(&mut || {
        SessionHolder::try_from_config(&config).expect("host session")
    });
}
