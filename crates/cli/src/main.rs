//! The `devshell-vm` command: run `cargo` (or any tool) on a workspace held in memory,
//! in an isolated session.
//!
//! * `devshell-vm demo` — builds, tests, runs and incrementally rebuilds a small
//!   workspace created in memory, reporting what each step synced and how long it took.
//! * `devshell-vm run [--dir DIR | --image FILE] [--save FILE] -- TOOL ARGS…` — loads a
//!   host directory or a saved workspace image into memory, runs the tool through the
//!   session, prints the sync report and optionally saves the resulting image.
//!
//! Exit status: the tool's own exit code (128 + signal when it was killed by a signal);
//! [`EXIT_TIMEOUT`] when the exec timeout killed it; [`EXIT_INFRA`] for infrastructure
//! failures (bad configuration, sync or spawn errors, unreadable input), with a message
//! on stderr; 2 for usage errors.

mod demo;
mod load;
mod report;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use devshell_vm::{Backend, SessionHolder, VmConfig, VmError};

/// Exit code for infrastructure failures (`EX_SOFTWARE` from sysexits.h).
pub(crate) const EXIT_INFRA: u8 = 70;
/// Exit code when the tool was killed at the exec timeout (as `timeout(1)` does).
pub(crate) const EXIT_TIMEOUT: u8 = 124;

/// Run cargo on a workspace held in memory, in an isolated session
/// (host staging directory, Lima VM or sidecar).
#[derive(Debug, Parser)]
#[command(name = "devshell-vm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a small workspace in memory, then build, test and run it, edit one file
    /// and rebuild: a report per step shows what was synced and what recompiled.
    Demo(DemoArgs),
    /// Load a host directory or a workspace image into memory and run one tool on it.
    Run(RunArgs),
}

/// Arguments of `devshell-vm demo`.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Backend to use (default: `DEVSHELL_VM_BACKEND`, falling back to host when the
    /// configured VM backend is unavailable).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
}

/// Arguments of `devshell-vm run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["dir", "image"])))]
#[command(
    after_help = "Exit status: the tool's own (128 + N when signal N killed it); \
    124 when the exec timeout (DEVSHELL_VM_EXEC_TIMEOUT_MS) killed it; 70 when the run \
    could not happen (configuration, loading, sync, missing program); 2 for usage errors.\n\
    Example: devshell-vm run --dir . --cwd / -- cargo build"
)]
struct RunArgs {
    /// Backend to use (default: `DEVSHELL_VM_BACKEND`, falling back to host when the
    /// configured VM backend is unavailable; an explicit choice never falls back).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Host directory loaded into the in-memory workspace root `/` (read only: the
    /// directory itself is never modified).
    #[arg(long, value_name = "HOST_DIR")]
    dir: Option<std::path::PathBuf>,
    /// Workspace image (made with `--save`) loaded as the in-memory workspace.
    #[arg(long, value_name = "FILE")]
    image: Option<std::path::PathBuf>,
    /// Leave paths matching this glob (relative to `--dir`) out when loading; repeatable.
    #[arg(long, value_name = "GLOB", requires = "dir")]
    exclude: Vec<String>,
    /// Save the in-memory workspace, with the tool's changes, to this image file.
    #[arg(long, value_name = "FILE")]
    save: Option<std::path::PathBuf>,
    /// Working directory of the tool inside the in-memory workspace. The tool sees the
    /// project around it, found the way cargo finds it: the outermost directory whose
    /// `Cargo.toml` has `[workspace]`, else the nearest `Cargo.toml`, else this directory.
    #[arg(long, value_name = "VFS_PATH", default_value = "/")]
    cwd: String,
    /// The tool and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "TOOL ARGS")]
    command: Vec<String>,
}

/// Backends selectable on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// Private staging directory on this machine.
    Host,
    /// Lima VM through `limactl`.
    Lima,
    /// `devshell-vm-sidecar` daemon.
    Beta,
}

impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Host => Backend::Host,
            BackendArg::Lima => Backend::Lima,
            BackendArg::Beta => Backend::Beta,
        }
    }
}

/// A failure of the command itself (not of the tool it ran).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// Configuration or session failure.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Loading or saving the workspace failed.
    #[error("{context}: {message}")]
    Workspace {
        /// What was being done (names the file or directory).
        context: String,
        /// The underlying error's message.
        message: String,
    },
    /// A demo step did not do what it should.
    #[error("demo step `{step}` failed: {reason}")]
    Demo {
        /// The step.
        step: String,
        /// What went wrong.
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::demo(args.backend),
        Command::Run(args) => run::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("devshell-vm: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                // Every error in this workspace prints its own words once.
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(match err {
                CliError::Vm(VmError::Timeout { .. }) => EXIT_TIMEOUT,
                _ => EXIT_INFRA,
            })
        }
    }
}

/// The configuration from the environment, with `backend` overriding the backend.
fn load_config(backend: Option<BackendArg>) -> Result<VmConfig, CliError> {
    let mut config = VmConfig::from_env().map_err(VmError::from)?;
    for name in &config.ignored_variables {
        eprintln!("devshell-vm: note: {name} is set but has no effect in this version");
    }
    if let Some(backend) = backend {
        config.enabled = true;
        config.backend = backend.into();
    }
    Ok(config)
}

/// Opens the session `config` asks for. With an explicit `--backend` a failure is an
/// error; otherwise an unavailable VM backend falls back to host with a one-line note.
fn open_session(config: &VmConfig, explicit: bool) -> Result<SessionHolder, CliError> {
    match SessionHolder::try_from_config(config) {
        Ok(session) => Ok(session),
        Err(err) if !explicit => {
            eprintln!(
                "devshell-vm: {} — using the host backend instead",
                devshell_vm::error_chain(&err)
            );
            Ok(SessionHolder::new_host_with(config))
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_tool_after_double_dash() {
        let cli = Cli::try_parse_from([
            "devshell-vm",
            "run",
            "--dir",
            "/tmp/x",
            "--save",
            "out.img",
            "--",
            "cargo",
            "build",
            "--release",
        ])
        .expect("parse");
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.command, ["cargo", "build", "--release"]);
        assert_eq!(args.dir.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert_eq!(args.cwd, "/");
    }

    #[test]
    fn dir_and_image_are_exclusive_and_the_tool_is_required() {
        assert!(
            Cli::try_parse_from([
                "devshell-vm",
                "run",
                "--dir",
                "a",
                "--image",
                "b",
                "--",
                "x"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["devshell-vm", "run", "--dir", "a"]).is_err());
        assert!(
            Cli::try_parse_from(["devshell-vm", "run", "--exclude", "target", "--", "x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["devshell-vm", "run", "--backend", "qemu", "--", "x"]).is_err()
        );
    }
}
