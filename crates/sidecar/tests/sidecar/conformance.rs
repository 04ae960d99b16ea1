//! The guest-fs conformance suite (main checks and symlink escapes) against a real
//! sidecar process, through a minimal raw-protocol `GuestFsOps` adapter. This holds
//! the sidecar's error codes to the one meaning every `GuestFsOps` shares; the beta
//! client runs the same suite through `BetaSession`.

use std::path::PathBuf;
use std::sync::OnceLock;

use devshell_vm_guest_fs::conformance::SymlinkFixture;
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestKind, GuestMetadata};
use devshell_vm_protocol::{decode_base64, encode_base64};
use devshell_vm_test_support::sidecar::SidecarProcess;
use serde_json::{Value, json};

use crate::common::{Client, builder};

const MOUNT: &str = "/workspace";

/// One sidecar for every check; each check gets its own staging dir and connection.
struct Server {
    root: PathBuf,
    sidecar: SidecarProcess,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Leaked on purpose: lives for the whole test process.
        let root = tempfile::Builder::new()
            .prefix("sidecar-conformance-")
            .tempdir()
            .unwrap()
            .keep();
        let root = std::fs::canonicalize(root).unwrap();
        let sidecar = builder(&root).start_unix();
        Server { root, sidecar }
    })
}

struct RawOps {
    client: Client,
}

impl RawOps {
    fn new(staging: &std::path::Path) -> Self {
        let mut client = Client::of(&server().sidecar);
        client.ready(staging);
        Self { client }
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

fn fresh_staging() -> PathBuf {
    tempfile::Builder::new()
        .prefix("ops-")
        .tempdir_in(&server().root)
        .unwrap()
        .keep()
}

fn factory() -> Box<dyn GuestFsOps> {
    Box::new(RawOps::new(&fresh_staging()))
}

fn symlink_factory() -> SymlinkFixture {
    let staging = fresh_staging();
    let sentinel = tempfile::tempdir().unwrap();
    let plant_root = staging.clone();
    SymlinkFixture {
        ops: Box::new(RawOps::new(&staging)),
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

devshell_vm_guest_fs::guest_fs_conformance_tests!(mod main_suite, factory);
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(mod symlink_suite, symlink_factory);
