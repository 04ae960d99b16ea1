//! Driving the `limactl` CLI: `list --format json`, `start`, `stop`, `copy` and the argv
//! of `shell`. Every spawn is counted.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

use crate::LimaError;

/// What `limactl list --format json` says about one instance (unknown fields ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceInfo {
    /// Instance name.
    pub name: String,
    /// `Running`, `Stopped`, `Broken`, ...
    pub status: String,
    /// Instance directory (holds `lima.yaml`, `ha.stderr.log`).
    #[serde(default)]
    pub dir: String,
    /// Guest architecture (`x86_64`, `aarch64`).
    #[serde(default)]
    pub arch: String,
    /// The instance configuration (only `mounts` is read). Lima leaves it out when the
    /// instance's `lima.yaml` does not load (`omitempty`).
    #[serde(default)]
    pub config: InstanceConfig,
    /// Lima's `errors` for the instance (`Broken`, or a YAML that does not load).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// The part of an instance's configuration the backend reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InstanceConfig {
    /// Configured mounts.
    #[serde(default)]
    pub mounts: Vec<MountInfo>,
    /// `reverse-sshfs`, `9p` or `virtiofs` (`pkg/limatype/lima_yaml.go` L32, L94-L96 of
    /// v2.2.0).
    #[serde(rename = "mountType", default)]
    pub mount_type: Option<String>,
}

/// One configured mount: host `location` at guest `mountPoint` (default: the location).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MountInfo {
    /// Host directory (may start with `~`).
    pub location: String,
    /// Guest mount point.
    #[serde(rename = "mountPoint", default)]
    pub mount_point: Option<String>,
    /// Whether the guest may write.
    #[serde(default)]
    pub writable: Option<bool>,
    /// reverse-sshfs options (`cache`, default true: `pkg/limayaml/defaults.go` L785-L786
    /// of v2.2.0).
    #[serde(default)]
    pub sshfs: Option<SshfsOptions>,
}

/// A mount's `sshfs:` options (only `cache` is read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SshfsOptions {
    /// Whether sshfs caches attributes and directory entries.
    #[serde(default)]
    pub cache: Option<bool>,
}

impl MountInfo {
    /// The guest mount point (Lima's default is the host location itself).
    #[must_use]
    pub fn guest_point(&self) -> &str {
        self.mount_point.as_deref().unwrap_or(&self.location)
    }
}

/// Parses `limactl list --format json` output: one JSON object per line.
///
/// # Errors
/// [`LimaError::ListParse`] for a line that is not an instance object.
pub fn parse_list(stdout: &str) -> Result<Vec<InstanceInfo>, LimaError> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|source| LimaError::ListParse {
                line: line.to_owned(),
                source,
            })
        })
        .collect()
}

/// A Lima release (`MAJOR.MINOR.PATCH`), from `limactl --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LimaVersion(pub u32, pub u32, pub u32);

impl LimaVersion {
    /// Parses `limactl version 2.0.3` (or `2.0.3`, `v2.0.3-beta.0`, …).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let word = text.split_whitespace().last()?;
        let core = word.trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(str::parse::<u32>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some(Self(a, b, c)),
            (Some(Ok(a)), Some(Ok(b)), None) => Some(Self(a, b, 0)),
            _ => None,
        }
    }

    /// `limactl shell` on a stopped instance may exit 0 having run nothing: 2.0.3 does so
    /// without a terminal (`cmd/limactl/shell.go` L107-L121 of v2.0.3); 1.1.0 to 2.0.2
    /// prompt, and a "no" at a terminal exits 0 (L85-L93 of v1.2.3, L97-L112 of v2.0.2).
    #[must_use]
    pub fn shell_may_exit_0_without_running(self) -> bool {
        self >= Self(1, 1, 0) && self <= Self(2, 0, 3)
    }
}

impl std::fmt::Display for LimaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The `limactl` binary, its `LIMA_HOME`, and a spawn counter.
#[derive(Debug)]
pub(crate) struct Limactl {
    pub(crate) path: PathBuf,
    lima_home: Option<PathBuf>,
    pub(crate) spawns: u64,
}

impl Limactl {
    pub(crate) fn new(path: PathBuf, lima_home: Option<PathBuf>) -> Self {
        Self {
            path,
            lima_home,
            spawns: 0,
        }
    }

    /// A `limactl` command with `LIMA_HOME` set when the configuration names one. The
    /// spawn is counted by the caller through [`Self::spawned`].
    pub(crate) fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut command = Command::new(&self.path);
        command.args(args.into_iter().map(Into::into));
        if let Some(home) = &self.lima_home {
            command.env("LIMA_HOME", home);
        }
        command
    }

    pub(crate) fn spawned(&mut self) {
        self.spawns += 1;
    }

    /// Runs `limactl ARGS` with stdin `input` (or null) and captured output.
    pub(crate) fn output(
        &mut self,
        args: &[OsString],
        input: Option<&[u8]>,
    ) -> Result<Output, LimaError> {
        let mut command = self.command(args.iter().cloned());
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawned();
        let mut child = command.spawn().map_err(|source| LimaError::Spawn {
            program: self.path.clone(),
            source,
        })?;
        let writer = match (input, child.stdin.take()) {
            (Some(data), Some(mut stdin)) => {
                let data = data.to_vec();
                Some(std::thread::spawn(move || {
                    // A guest command that exits early closes the pipe: not an error here,
                    // its exit status tells.
                    let _ = stdin.write_all(&data);
                }))
            }
            _ => None,
        };
        let output = child.wait_with_output().map_err(|source| LimaError::Io {
            context: format!("waiting for {}", self.path.display()),
            source,
        })?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        Ok(output)
    }

    /// `limactl --version` (`limactl version 2.0.3`): the release, `None` when the
    /// output does not parse (then the session assumes the newest behaviour).
    ///
    /// # Errors
    /// [`LimaError::LimactlRefusesRoot`]; spawn failures.
    pub(crate) fn version(&mut self) -> Result<Option<LimaVersion>, LimaError> {
        let out = self.output(&[OsString::from("--version")], None)?;
        self.check_root(&out.stderr)?;
        Ok(LimaVersion::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Lima's refusal to run as root (`cmd/limactl/main.go` L35-L38 of v2.2.0,
    /// "limactl: must not run as the root user", exit 1).
    pub(crate) fn check_root(&self, stderr: &[u8]) -> Result<(), LimaError> {
        if String::from_utf8_lossy(stderr).contains("must not run as the root user") {
            return Err(LimaError::LimactlRefusesRoot {
                program: self.path.clone(),
            });
        }
        Ok(())
    }

    /// `limactl list --format json INSTANCE`: `None` when the instance does not exist
    /// (exit 1 and a "No instance matching" warning since v0.23.0, `cmd/limactl/list.go`
    /// L164 of v0.23.0; exit 0 and the warning before).
    pub(crate) fn list(&mut self, instance: &str) -> Result<Option<InstanceInfo>, LimaError> {
        let args: Vec<OsString> = ["list", "--format", "json", instance]
            .into_iter()
            .map(OsString::from)
            .collect();
        let out = self.output(&args, None)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        self.check_root(&out.stderr)?;
        let instances = parse_list(&stdout)?;
        if let Some(found) = instances.into_iter().find(|i| i.name == instance) {
            return Ok(Some(found));
        }
        if out.status.success() || stderr.contains("No instance matching") {
            return Ok(None);
        }
        Err(LimaError::Limactl {
            command: format!("limactl list --format json {instance}"),
            status: status_text(out.status),
            stderr: stderr.trim().to_owned(),
        })
    }

    /// `limactl start --tty=false INSTANCE` with stderr shown to the user (progress), its
    /// exit status returned.
    pub(crate) fn start(&mut self, instance: &str) -> Result<std::process::ExitStatus, LimaError> {
        let mut command = self.command(["start", "--tty=false", instance]);
        command.stdin(Stdio::null()).stdout(Stdio::null());
        self.spawned();
        command.status().map_err(|source| LimaError::Spawn {
            program: self.path.clone(),
            source,
        })
    }

    /// `limactl stop INSTANCE`, output captured.
    pub(crate) fn stop(&mut self, instance: &str) -> Result<Output, LimaError> {
        let args: Vec<OsString> = ["stop", instance].into_iter().map(OsString::from).collect();
        self.output(&args, None)
    }

    /// `limactl copy HOST INSTANCE:GUEST`.
    pub(crate) fn copy_to_guest(
        &mut self,
        host: &Path,
        instance: &str,
        guest: &str,
    ) -> Result<Output, LimaError> {
        let args = vec![
            OsString::from("copy"),
            host.as_os_str().to_owned(),
            OsString::from(format!("{instance}:{guest}")),
        ];
        self.output(&args, None)
    }
}

/// The argv (after `limactl`) that runs `program args…` in `workdir` of the guest, with
/// `env` assignments:
/// `shell --workdir WORKDIR INSTANCE -- [NAME=value…] command -- PROGRAM ARGS…`.
///
/// Lima joins the arguments into `$SHELL --login -c '…'`, quoting each one, but treats
/// every *leading* argument that contains `=` as an environment assignment whose name it
/// leaves unquoted. The assignments here come first on purpose (names are validated as
/// shell identifiers by the caller); then the shell builtin `command --` always follows,
/// so a program or first argument that contains `=` is quoted and run as a program, never
/// taken for an assignment (and shell functions or aliases of the guest are bypassed).
#[must_use]
pub fn shell_argv(
    workdir: &str,
    instance: &str,
    env: &[(String, String)],
    program: &str,
    args: &[String],
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "shell".into(),
        "--workdir".into(),
        workdir.into(),
        instance.into(),
        "--".into(),
    ];
    out.extend(env.iter().map(|(k, v)| OsString::from(format!("{k}={v}"))));
    out.push("command".into());
    out.push("--".into());
    out.push(program.into());
    out.extend(args.iter().map(OsString::from));
    out
}

/// `true` for a POSIX shell variable name (what may precede `=` in an assignment).
#[must_use]
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub(crate) fn status_text(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lima_json_lines_and_ignores_unknown_fields() {
        let out = concat!(
            r#"{"name":"a","hostname":"lima-a","status":"Running","dir":"/h/.lima/a","vmType":"qemu","arch":"x86_64","config":{"mounts":[{"location":"~","writable":false},{"location":"/w","mountPoint":"/workspace","writable":true}]},"protected":false,"limaVersion":"1.0.0"}"#,
            "\n",
            r#"{"name":"b","status":"Stopped","dir":"/h/.lima/b"}"#,
            "\n"
        );
        let list = parse_list(out).expect("parses");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].status, "Running");
        assert_eq!(list[0].config.mounts[0].guest_point(), "~");
        assert_eq!(list[0].config.mounts[1].guest_point(), "/workspace");
        assert_eq!(list[1].config.mounts, vec![]);
        assert!(matches!(
            parse_list("not json"),
            Err(LimaError::ListParse { .. })
        ));
    }

    #[test]
    fn shell_argv_puts_env_first_and_guards_the_program() {
        let argv = shell_argv(
            "/workspace/p",
            "inst",
            &[("A".into(), "x y".into())],
            "a=b",
            &["c=d".into()],
        );
        let argv: Vec<String> = argv
            .into_iter()
            .map(|a| a.into_string().expect("utf8"))
            .collect();
        assert_eq!(
            argv,
            [
                "shell",
                "--workdir",
                "/workspace/p",
                "inst",
                "--",
                "A=x y",
                "command",
                "--",
                "a=b",
                "c=d"
            ]
        );
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            LimaVersion::parse("limactl version 2.0.3\n"),
            Some(LimaVersion(2, 0, 3))
        );
        assert_eq!(
            LimaVersion::parse("v1.1.0-rc.1"),
            Some(LimaVersion(1, 1, 0))
        );
        assert_eq!(LimaVersion::parse("limactl version HEAD"), None);
        assert!(LimaVersion(2, 0, 3).shell_may_exit_0_without_running());
        assert!(LimaVersion(1, 1, 0).shell_may_exit_0_without_running());
        assert!(!LimaVersion(1, 0, 7).shell_may_exit_0_without_running());
        assert!(!LimaVersion(2, 1, 0).shell_may_exit_0_without_running());
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("CARGO_TARGET_DIR"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1x"));
        assert!(!is_env_name("a-b"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A B"));
    }
}
