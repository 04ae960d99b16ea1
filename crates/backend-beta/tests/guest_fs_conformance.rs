//! The guest-fs conformance suite (main checks, symlink escapes and special files) against a Mode P
//! `BetaSession` talking to a real `devshell-vm-sidecar` process, over a Unix socket
//! and over stdio. Each check gets its own sidecar and an empty staging directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{Dirs, SidecarProcess, config, sidecar_bin, unix_sidecar};
use devshell_vm_backend_beta::BetaSession;
use devshell_vm_guest_fs::conformance::{SpecialFileFixture, SpecialKind, SymlinkFixture};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestMetadata};

/// A Mode P session plus what must outlive it (its sidecar, its temp dirs).
struct Fixture {
    session: BetaSession,
    _sidecar: Option<SidecarProcess>,
    dirs: Dirs,
}

impl Fixture {
    /// Fresh sidecar on a Unix socket (or, with `stdio`, spawned by the session) and an
    /// empty staging dir mounted at `/workspace`; returns the staging path too.
    fn new(stdio: bool) -> (Self, PathBuf) {
        let dirs = Dirs::new();
        let staging = dirs.staging("mount");
        std::fs::create_dir(&staging).expect("mkdir staging");
        let bin = sidecar_bin();
        let (sidecar, socket) = if stdio {
            (None, "stdio".to_owned())
        } else {
            let (sidecar, socket) = unix_sidecar(&dirs.root);
            (Some(sidecar), socket)
        };
        let session = BetaSession::new(&config(&[
            ("DEVSHELL_VM_SOCKET", &socket),
            ("DEVSHELL_VM_SIDECAR_BIN", bin.to_str().unwrap()),
            ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
            ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
        ]))
        .expect("session");
        (
            Self {
                session,
                _sidecar: sidecar,
                dirs,
            },
            PathBuf::from(staging),
        )
    }

    fn boxed(stdio: bool) -> Box<dyn GuestFsOps> {
        Box::new(Self::new(stdio).0)
    }

    fn special_fixture(stdio: bool) -> SpecialFileFixture {
        let (fixture, staging) = Self::new(stdio);
        SpecialFileFixture {
            ops: Box::new(fixture),
            plant: Box::new(move |rel: &str, kind: SpecialKind| {
                devshell_vm_test_support::special::plant(
                    &staging.join(rel),
                    kind == SpecialKind::Fifo,
                )
            }),
            guard: Box::new(()),
        }
    }

    fn symlink_fixture(stdio: bool) -> SymlinkFixture {
        let (fixture, staging) = Self::new(stdio);
        let sentinel = fixture.dirs.tmp.path().join("sentinel");
        std::fs::create_dir(&sentinel).expect("mkdir sentinel");
        let plant_root = staging.clone();
        SymlinkFixture {
            ops: Box::new(fixture),
            plant_symlink: Box::new(move |link, target| {
                std::os::unix::fs::symlink(target, plant_root.join(link))
            }),
            sentinel,
            guard: Box::new(()),
        }
    }
}

impl GuestFsOps for Fixture {
    fn mount(&self) -> &str {
        self.session.mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        self.session.list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        self.session.read_file(path)
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        self.session.write_file(path, data)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.session.mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.session.remove(path)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        self.session.stat(path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        self.session.exists(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        self.session.rename(from, to)
    }
}

devshell_vm_guest_fs::guest_fs_conformance_tests!(mod over_unix_socket, || Fixture::boxed(false));
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(mod symlinks_over_unix_socket, || {
    Fixture::symlink_fixture(false)
});
devshell_vm_guest_fs::guest_fs_special_file_tests!(mod special_files_over_unix_socket, || {
    Fixture::special_fixture(false)
});

/// The whole main suite once more over stdio (one test: each check spawns a sidecar).
#[test]
fn whole_suite_over_stdio() {
    devshell_vm_guest_fs::conformance::run_all(|| Fixture::boxed(true));
}

/// A Mode P session whose sidecar is gone (its socket path has no listener): every
/// operation must fail as a transport error — never `Ok`, never `NotFound` — while
/// escapes are still refused locally.
#[test]
fn unreachable_sidecar_fails_loudly() {
    devshell_vm_guest_fs::conformance::unreachable_backend_fails_loudly(|| {
        let dirs = Dirs::new();
        let staging = dirs.staging("mount");
        std::fs::create_dir(&staging).expect("mkdir staging");
        let dead_socket = dirs.socket.join("nobody-listens.sock");
        let session = BetaSession::new(&config(&[
            ("DEVSHELL_VM_SOCKET", dead_socket.to_str().unwrap()),
            ("DEVSHELL_VM_WORKSPACE_MODE", "guest"),
            ("DEVSHELL_VM_BETA_SESSION_STAGING", &staging),
        ]))
        .expect("a session is created without connecting");
        Box::new(Fixture {
            session,
            _sidecar: None,
            dirs,
        }) as Box<dyn GuestFsOps>
    });
}
