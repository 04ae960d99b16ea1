//! [`GuestFsOps`] for [`BetaSession`]: Mode P file operations as `guest_fs` requests.
//!
//! Every path is checked against the mount first ([`check_guest_path`]); nothing that
//! fails the check is sent. `stat`, `exists` and `rename` use the sidecar's native
//! operations when it offers `guest-fs-v2`. Against a v1 sidecar, `stat` is built from
//! `list_dir` (a directory) and `read_file` (a file and its size) — a v1 sidecar cannot
//! report symlinks — and `rename` is the trait's copy-based default.

use devshell_vm_guest_fs::{
    GuestFsError, GuestFsOps, GuestKind, GuestMetadata, check_guest_path, rename_by_copy,
};
use devshell_vm_protocol::{
    GuestFs, GuestFsOk, GuestFsOperation, GuestKindWire, Reply, Request, encode_base64,
};

use crate::{BetaError, BetaSession};

/// Maps a session error to the guest-fs error it means for a file operation.
fn to_guest_error(err: BetaError) -> GuestFsError {
    match err {
        BetaError::Remote { .. } | BetaError::FrameTooLarge { .. } => GuestFsError::Internal {
            message: err.to_string(),
        },
        other => GuestFsError::Transport {
            message: other.to_string(),
        },
    }
}

impl BetaSession {
    /// One `guest_fs` exchange on already-checked paths; `error_path` is the path a
    /// `guest_fs_error` is reported for.
    fn guest_fs(
        &mut self,
        operation: GuestFsOperation,
        path: &str,
        content: Option<&[u8]>,
        to_path: Option<&str>,
        error_path: &str,
    ) -> Result<GuestFsOk, GuestFsError> {
        let op_name = operation.as_str().to_owned();
        let reply = self
            .link
            .call(|session_id| {
                Request::GuestFs(GuestFs {
                    session_id,
                    operation,
                    guest_path: path.to_owned(),
                    content_base64: content.map(encode_base64),
                    to_path: to_path.map(str::to_owned),
                })
            })
            .map_err(to_guest_error)?;
        match reply {
            Reply::GuestFsOk(ok) => Ok(ok),
            Reply::GuestFsError(err) => Err(GuestFsError::from_wire(
                err.code.as_str(),
                error_path,
                &err.message,
            )),
            Reply::Error(err) => Err(GuestFsError::Internal {
                message: format!(
                    "sidecar refused guest_fs {op_name} {path:?}: {}: {}",
                    err.code, err.message
                ),
            }),
            other => Err(to_guest_error(
                self.link.unexpected(&format!("guest_fs {op_name}"), &other),
            )),
        }
    }

    fn checked(&self, path: &str) -> Result<String, GuestFsError> {
        check_guest_path(&self.link.mount, path)
    }

    fn has_v2(&mut self) -> Result<bool, GuestFsError> {
        Ok(self
            .link
            .capabilities()
            .map_err(to_guest_error)?
            .guest_fs_v2)
    }

    /// `stat` from v1 operations: a listable path is a directory, a readable one a file.
    fn stat_v1(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        match self.guest_fs(GuestFsOperation::ListDir, path, None, None, path) {
            Ok(_) => {
                return Ok(GuestMetadata {
                    kind: GuestKind::Dir,
                    size: 0,
                });
            }
            Err(GuestFsError::Transport { message }) => {
                return Err(GuestFsError::Transport { message });
            }
            Err(_) => {}
        }
        match self.guest_fs(GuestFsOperation::ReadFile, path, None, None, path) {
            Ok(ok) => {
                let data = ok.content().map_err(|err| GuestFsError::Internal {
                    message: format!("bad content_base64 for {path:?}: {err}"),
                })?;
                Ok(GuestMetadata {
                    kind: GuestKind::File,
                    size: data.map_or(0, |d| d.len() as u64),
                })
            }
            Err(GuestFsError::IsADirectory { .. }) => Ok(GuestMetadata {
                kind: GuestKind::Dir,
                size: 0,
            }),
            Err(err) => Err(err),
        }
    }
}

impl GuestFsOps for BetaSession {
    fn mount(&self) -> &str {
        &self.link.mount
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let path = self.checked(path)?;
        let ok = self.guest_fs(GuestFsOperation::ListDir, &path, None, None, &path)?;
        let mut names = ok.names.ok_or_else(|| GuestFsError::Internal {
            message: format!("guest_fs_ok for list_dir {path:?} carries no names"),
        })?;
        // The contract is byte order; do not rely on the peer for it.
        names.sort();
        Ok(names)
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let path = self.checked(path)?;
        let ok = self.guest_fs(GuestFsOperation::ReadFile, &path, None, None, &path)?;
        ok.content()
            .map_err(|err| GuestFsError::Internal {
                message: format!("bad content_base64 for {path:?}: {err}"),
            })?
            .ok_or_else(|| GuestFsError::Internal {
                message: format!("guest_fs_ok for read_file {path:?} carries no content"),
            })
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let path = self.checked(path)?;
        self.guest_fs(GuestFsOperation::WriteFile, &path, Some(data), None, &path)?;
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.checked(path)?;
        self.guest_fs(GuestFsOperation::Mkdir, &path, None, None, &path)?;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.checked(path)?;
        if path == self.link.mount {
            return Err(GuestFsError::invalid_path(
                path,
                "cannot remove the guest mount root",
            ));
        }
        self.guest_fs(GuestFsOperation::Remove, &path, None, None, &path)?;
        Ok(())
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let path = self.checked(path)?;
        if !self.has_v2()? {
            return self.stat_v1(&path);
        }
        let ok = self.guest_fs(GuestFsOperation::Stat, &path, None, None, &path)?;
        let stat = ok.stat.ok_or_else(|| GuestFsError::Internal {
            message: format!("guest_fs_ok for stat {path:?} carries no stat"),
        })?;
        Ok(GuestMetadata {
            kind: match stat.kind {
                GuestKindWire::Dir => GuestKind::Dir,
                GuestKindWire::File => GuestKind::File,
                GuestKindWire::Symlink => GuestKind::Symlink,
            },
            size: stat.size,
        })
    }

    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        let path = self.checked(path)?;
        if !self.has_v2()? {
            return match self.stat_v1(&path) {
                Ok(_) => Ok(true),
                Err(GuestFsError::NotFound { .. } | GuestFsError::NotADirectory { .. }) => {
                    Ok(false)
                }
                Err(err) => Err(err),
            };
        }
        let ok = self.guest_fs(GuestFsOperation::Exists, &path, None, None, &path)?;
        ok.exists.ok_or_else(|| GuestFsError::Internal {
            message: format!("guest_fs_ok for exists {path:?} carries no answer"),
        })
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        if !self.has_v2()? {
            return rename_by_copy(self, from, to);
        }
        let mount = self.link.mount.clone();
        let from_n = check_guest_path(&mount, from)?;
        let to_n = check_guest_path(&mount, to)?;
        if from_n == mount {
            return Err(GuestFsError::invalid_path(
                from,
                "cannot rename the guest mount root",
            ));
        }
        if to_n == mount {
            return Err(GuestFsError::IsADirectory { path: to_n });
        }
        if to_n
            .strip_prefix(from_n.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Err(GuestFsError::invalid_path(
                to,
                format!("cannot move {from_n:?} into its own subtree"),
            ));
        }
        // Errors about the source name the source; everything the rename itself reports
        // afterwards is about the destination.
        self.stat(&from_n)?;
        self.guest_fs(GuestFsOperation::Rename, &from_n, None, Some(&to_n), &to_n)?;
        Ok(())
    }
}
