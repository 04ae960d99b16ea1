//! Guest file operations (Mode P): over the channel, else one `limactl shell` each.

use std::ffi::OsString;

use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestMetadata, check_guest_path};
use devshell_vm_protocol::GuestFsOperation;

use crate::channel::metadata_from;
use crate::guest_ops;
use crate::limactl::{shell_argv, status_text};

use super::GammaSession;

impl GammaSession {
    // ------------------------------------------------------------------ guest fs

    pub(super) fn fs_ready(&mut self, path: &str) -> Result<String, GuestFsError> {
        let normalized = check_guest_path(&self.mount, path)?;
        self.ensure_running().map_err(|e| GuestFsError::Transport {
            message: e.to_string(),
        })?;
        Ok(normalized)
    }

    /// One operation over the channel; `None` when there is no channel (or it broke).
    pub(super) fn fs_channel(
        &mut self,
        op: GuestFsOperation,
        path: &str,
        content: Option<&[u8]>,
        to: Option<&str>,
    ) -> Option<Result<devshell_vm_protocol::GuestFsOk, GuestFsError>> {
        let v2 = op.is_v2();
        let channel = self.channel_mut()?;
        if v2 && !channel.has_guest_fs_v2() {
            return None;
        }
        match channel.guest_fs(op, path, content, to) {
            Ok(ok) => Some(Ok(ok)),
            Err(Ok(err)) => Some(Err(err)),
            Err(Err(broken)) => {
                self.channel_broke(&broken);
                None
            }
        }
    }

    /// One operation through its own `limactl shell` (the fallback).
    pub(super) fn fs_shell(
        &mut self,
        op: &str,
        path: &str,
        to: Option<&str>,
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, GuestFsError> {
        // Framed: the script first prints a marker line, and only what follows it is the
        // operation's output; whatever the guest's login profile printed before (`limactl
        // shell` runs `$SHELL --login`) is skipped.
        let mut args = vec![
            "-c".to_owned(),
            format!("printf '%s\\n' '{FRAME}'\n{}", guest_ops::SCRIPT),
            "devshell-vm-op".to_owned(),
            self.mount.clone(),
            op.to_owned(),
            path.to_owned(),
        ];
        if let Some(to) = to {
            args.push(to.to_owned());
        }
        let shell: Vec<OsString> = shell_argv("/", &self.instance, &[], "/bin/sh", &args);
        let out = self
            .limactl
            .output(&shell, Some(input.unwrap_or_default()))
            .map_err(|e| GuestFsError::Transport {
                message: e.to_string(),
            })?;
        match out.status.code() {
            Some(0) => {
                let (payload, stray) = unframe(&out.stdout).ok_or_else(|| GuestFsError::Transport {
                    message: format!(
                        "`limactl shell` for {op} {path:?} exited 0 without the operation's output frame (the guest shell never ran it?): {:?}",
                        String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(200)])
                    ),
                })?;
                if stray > 0 {
                    self.diagnose(format!(
                        "the guest login profile printed {stray} byte(s) to stdout (skipped in guest file operations; they also reach the stdout of tools run through `limactl shell`)"
                    ));
                }
                Ok(payload)
            }
            Some(255) => Err(GuestFsError::Transport {
                message: format!(
                    "cannot reach Lima instance {:?} over ssh (exit 255): {}",
                    self.instance,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
            Some(code) => Err(guest_ops::error_for(code, path, to, &out.stderr)),
            None => Err(GuestFsError::Transport {
                message: format!("limactl shell ended by {}", status_text(out.status)),
            }),
        }
    }
}

impl GuestFsOps for GammaSession {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::ListDir, &path, None, None) {
            let mut names = result?.names.unwrap_or_default();
            names.sort();
            return Ok(names);
        }
        Ok(guest_ops::parse_names(
            &self.fs_shell("list_dir", &path, None, None)?,
        ))
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::ReadFile, &path, None, None) {
            return result?
                .content()
                .map(Option::unwrap_or_default)
                .map_err(|e| GuestFsError::Internal {
                    message: format!("read_file {path:?}: {e}"),
                });
        }
        self.fs_shell("read_file", &path, None, None)
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::WriteFile, &path, Some(data), None)
        {
            return result.map(|_| ());
        }
        self.fs_shell("write_file", &path, None, Some(data))
            .map(|_| ())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::Mkdir, &path, None, None) {
            return result.map(|_| ());
        }
        self.fs_shell("mkdir", &path, None, None).map(|_| ())
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let path = self.fs_ready(path)?;
        if path == self.mount {
            return Err(GuestFsError::invalid_path(
                path,
                "the guest mount itself cannot be removed",
            ));
        }
        if let Some(result) = self.fs_channel(GuestFsOperation::Remove, &path, None, None) {
            return result.map(|_| ());
        }
        self.fs_shell("remove", &path, None, None).map(|_| ())
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let path = self.fs_ready(path)?;
        if let Some(result) = self.fs_channel(GuestFsOperation::Stat, &path, None, None) {
            return metadata_from(&result?, &path);
        }
        guest_ops::parse_stat(&self.fs_shell("stat", &path, None, None)?, &path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        let from = self.fs_ready(from)?;
        let to = check_guest_path(&self.mount, to)?;
        if from == self.mount {
            return Err(GuestFsError::invalid_path(
                from,
                "the guest mount itself cannot be moved",
            ));
        }
        if to == self.mount {
            return Err(GuestFsError::IsADirectory { path: to });
        }
        if let Some(result) = self.fs_channel(GuestFsOperation::Rename, &from, None, Some(&to)) {
            return result.map(|_| ());
        }
        self.fs_shell("rename", &from, Some(&to), None).map(|_| ())
    }
}

/// The marker line that starts a fallback operation's output.
const FRAME: &str = "\u{1e}devshell-vm-guest-op\u{1e}";

/// The output after the first marker line, and how many stray bytes came before it.
fn unframe(stdout: &[u8]) -> Option<(Vec<u8>, usize)> {
    let marker = format!("{FRAME}\n");
    let marker = marker.as_bytes();
    let at = stdout.windows(marker.len()).position(|w| w == marker)?;
    Some((stdout[at + marker.len()..].to_vec(), at))
}

#[cfg(test)]
mod tests {
    use super::{FRAME, unframe};

    #[test]
    fn unframe_skips_stray_output_and_needs_the_marker() {
        let framed = format!("Welcome!\n{FRAME}\npayload\n{FRAME}\n");
        let (payload, stray) = unframe(framed.as_bytes()).expect("framed");
        assert_eq!(payload, format!("payload\n{FRAME}\n").as_bytes());
        assert_eq!(stray, "Welcome!\n".len());
        assert!(unframe(b"no marker").is_none());
    }
}
