//! The guest-fs conformance suite (main checks and symlink escapes) against a real
//! sidecar process, through a minimal raw-protocol `GuestFsOps` adapter. This holds
//! the sidecar's error codes to the one meaning every `GuestFsOps` shares; the beta
//! client runs the same suite through `BetaSession`.

use std::path::PathBuf;

use devshell_vm_guest_fs::conformance::{SpecialFileFixture, SpecialKind, SymlinkFixture};
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestKind, GuestMetadata};
use devshell_vm_protocol::{decode_base64, encode_base64};
use devshell_vm_test_support::sidecar::SidecarProcess;
use serde_json::{Value, json};

use crate::common::{Client, builder};

const MOUNT: &str = "/workspace";

/// A sidecar of its own for each check (it starts in milliseconds), owned by the
/// check's `GuestFsOps`, so the process and its directories end with the check: the
/// connection closes first, then the sidecar is killed and reaped, then the root
/// directory is removed (fields drop in declaration order). No `static`: a static is
/// never dropped, and an earlier shared sidecar outlived every test run.
struct RawOps {
    client: Client,
    _sidecar: SidecarProcess,
    _root: tempfile::TempDir,
}

impl RawOps {
    /// A fresh sidecar whose root holds one empty staging directory, and a client in a
    /// session on it; returns the staging path for fixtures that plant files.
    fn start() -> (Self, PathBuf) {
        let root = tempfile::Builder::new()
            .prefix("sidecar-conformance-")
            .tempdir()
            .unwrap();
        let canonical = std::fs::canonicalize(root.path()).unwrap();
        let staging = canonical.join("ops");
        std::fs::create_dir(&staging).unwrap();
        let sidecar = builder(&canonical).start_unix();
        let mut client = Client::of(&sidecar);
        client.ready(&staging);
        let ops = Self {
            client,
            _sidecar: sidecar,
            _root: root,
        };
        (ops, staging)
    }

    fn request(
        &mut self,
        operation: &str,
        path: &str,
        extra: &Value,
    ) -> Result<Value, GuestFsError> {
        // The client-side contract: check paths before anything is sent.
        devshell_vm_guest_fs::check_guest_path(MOUNT, path)?;
        let reply = self.client.fs(operation, path, extra);
        match reply["op"].as_str() {
            Some("guest_fs_ok") => Ok(reply),
            Some("guest_fs_error") => {
                // guest-fs-v2 names the path the error is about (rename: from or to).
                let about = reply["path"].as_str().unwrap_or(path).to_owned();
                let normalized =
                    devshell_vm_guest_fs::normalize_guest_path(&about).unwrap_or(about.clone());
                let message = reply["message"].as_str().unwrap_or_default().to_owned();
                Err(match reply["code"].as_str().unwrap_or_default() {
                    "not_found" => GuestFsError::NotFound { path: normalized },
                    "not_a_directory" => GuestFsError::NotADirectory { path: normalized },
                    "is_a_directory" => GuestFsError::IsADirectory { path: normalized },
                    "invalid_path" => GuestFsError::InvalidPath {
                        path: about,
                        reason: message,
                    },
                    other => GuestFsError::Internal {
                        message: format!("{other}: {message}"),
                    },
                })
            }
            _ => Err(GuestFsError::Transport {
                message: reply.to_string(),
            }),
        }
    }
}

impl GuestFsOps for RawOps {
    fn mount(&self) -> &str {
        MOUNT
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let r = self.request("list_dir", path, &json!({}))?;
        Ok(serde_json::from_value(r["names"].clone()).unwrap())
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let r = self.request("read_file", path, &json!({}))?;
        Ok(decode_base64("content_base64", r["content_base64"].as_str().unwrap()).unwrap())
    }
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        self.request(
            "write_file",
            path,
            &json!({"content_base64": encode_base64(data)}),
        )
        .map(drop)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.request("mkdir", path, &json!({})).map(drop)
    }
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        self.request("remove", path, &json!({})).map(drop)
    }
    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let r = self.request("stat", path, &json!({}))?;
        let kind = match r["stat"]["kind"].as_str() {
            Some("dir") => GuestKind::Dir,
            Some("symlink") => GuestKind::Symlink,
            _ => GuestKind::File,
        };
        Ok(GuestMetadata {
            kind,
            size: r["stat"]["size"].as_u64().unwrap(),
        })
    }
    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        let r = self.request("exists", path, &json!({}))?;
        Ok(r["exists"].as_bool().unwrap())
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        devshell_vm_guest_fs::check_guest_path(MOUNT, to)?;
        self.request("rename", from, &json!({"to_path": to}))
            .map(drop)
    }
}

fn factory() -> Box<dyn GuestFsOps> {
    Box::new(RawOps::start().0)
}

fn symlink_factory() -> SymlinkFixture {
    let (ops, staging) = RawOps::start();
    let sentinel = tempfile::tempdir().unwrap();
    let plant_root = staging;
    SymlinkFixture {
        ops: Box::new(ops),
        plant_symlink: Box::new(move |link: &str, target: &str| {
            let at = plant_root.join(link);
            if let Some(parent) = at.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::os::unix::fs::symlink(target, at)
        }),
        sentinel: sentinel.path().to_owned(),
        guard: Box::new(sentinel),
    }
}

fn special_factory() -> SpecialFileFixture {
    let (ops, root) = RawOps::start();
    SpecialFileFixture {
        ops: Box::new(ops),
        plant: Box::new(move |rel: &str, kind: SpecialKind| {
            devshell_vm_test_support::special::plant(&root.join(rel), kind == SpecialKind::Fifo)
        }),
        guard: Box::new(()),
    }
}

devshell_vm_guest_fs::guest_fs_conformance_tests!(mod main_suite, factory);
devshell_vm_guest_fs::guest_fs_special_file_tests!(mod special_suite, special_factory);
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(mod symlink_suite, symlink_factory);
