//! The `VmExecutionSession` conformance suite on the VM backends compiled in: β against a
//! real `devshell-vm-sidecar` on a Unix socket, γ against the `limactl` stand-in (guest
//! commands in a private mount namespace with the workspace bound at `/workspace`). The
//! host backend runs the same suite in `host_conformance.rs`.

#![allow(clippy::unwrap_used)]

#[cfg(feature = "beta")]
mod beta {
    use std::collections::BTreeMap;

    use devshell_vm::SessionHolder;
    use devshell_vm_config::VmConfig;
    use devshell_vm_test_support::sidecar::{SidecarProcess, sidecar_bin};

    devshell_vm::vm_session_conformance_tests!({
        let root = tempfile::tempdir().unwrap();
        let sidecar = SidecarProcess::builder(sidecar_bin())
            .root(root.path())
            .start_unix();
        let mut sessions = 0;
        // The closure owns the sidecar and its root, so they outlive the check.
        move || {
            sessions += 1;
            let staging = root.path().join(format!("staging{sessions}"));
            let env = BTreeMap::from([
                ("DEVSHELL_VM_BACKEND".to_owned(), "beta".to_owned()),
                (
                    "DEVSHELL_VM_SOCKET".to_owned(),
                    sidecar.socket_path().unwrap().to_str().unwrap().to_owned(),
                ),
                (
                    "DEVSHELL_VM_BETA_SESSION_STAGING".to_owned(),
                    staging.to_str().unwrap().to_owned(),
                ),
            ]);
            let session =
                SessionHolder::try_from_config(&VmConfig::from_source(&env).unwrap()).unwrap();
            assert_eq!(session.backend_name(), "beta");
            session
        }
    });
}

#[cfg(all(unix, feature = "lima"))]
mod lima {
    use std::collections::BTreeMap;

    use devshell_vm::SessionHolder;
    use devshell_vm_config::VmConfig;

    devshell_vm::vm_session_conformance_tests!({
        let standin =
            devshell_vm_test_support::cargo_bin("devshell-vm-limactl-standin", "limactl-standin");
        // With the sidecar channel, as a Lima user with the sidecar installed runs: a
        // guest command killed by a signal is then reported as a signal. Through
        // `limactl shell` alone it arrives as ssh's 255, as with real Lima (tested in
        // crates/backend-lima/tests/lima_behaviour.rs).
        let sidecar =
            devshell_vm_test_support::cargo_bin("devshell-vm-sidecar", "devshell-vm-sidecar");
        let mut dirs = Vec::new();
        // The closure owns every instance's directories, so they outlive the check.
        move || {
            let (home, parent) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            std::fs::create_dir_all(home.path().join("t")).unwrap();
            let state = format!(
                r#"{{"status":"Running","mounts":[{{"location":{:?},"mountPoint":"/workspace","writable":true}}],"home":{:?}}}"#,
                parent.path().to_str().unwrap(),
                home.path().to_str().unwrap()
            );
            std::fs::write(home.path().join("t/standin.json"), state).unwrap();
            let env = BTreeMap::from([
                ("DEVSHELL_VM_BACKEND".to_owned(), "lima".to_owned()),
                ("DEVSHELL_VM_LIMA_INSTANCE".to_owned(), "t".to_owned()),
                (
                    "DEVSHELL_VM_LIMACTL".to_owned(),
                    standin.to_str().unwrap().to_owned(),
                ),
                (
                    "LIMA_HOME".to_owned(),
                    home.path().to_str().unwrap().to_owned(),
                ),
                (
                    "DEVSHELL_VM_WORKSPACE_PARENT".to_owned(),
                    parent.path().to_str().unwrap().to_owned(),
                ),
                ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
                (
                    "DEVSHELL_VM_SIDECAR_BIN".to_owned(),
                    sidecar.to_str().unwrap().to_owned(),
                ),
            ]);
            dirs.push((home, parent));
            let session =
                SessionHolder::try_from_config(&VmConfig::from_source(&env).unwrap()).unwrap();
            assert_eq!(session.backend_name(), "lima");
            session
        }
    });
}
