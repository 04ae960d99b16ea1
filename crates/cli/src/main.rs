//! The `devshell-vm` command: run `cargo` (or any tool) on a workspace held in memory,
//! in an isolated session.
//!
//! * `devshell-vm demo` — builds, tests, runs and incrementally rebuilds a small
//!   workspace created in memory, reporting what each step synced and how long it took.
//! * `devshell-vm run [--dir DIR | --image FILE] [--save FILE] -- TOOL ARGS…` — loads a
//!   host directory (honouring `.gitignore` like ripgrep) or a saved workspace image into
//!   memory, runs the tool through the session, prints the sync report and optionally
//!   saves the resulting image, writes a JSON report (`--report`) and applies the tool's
//!   changes back to the directory (`--write-back`).
//! * `devshell-vm completions SHELL`, `devshell-vm man` — shell completions and the man
//!   page, generated from the same definitions as `--help`.
//!
//! Exit status: the tool's own exit code (128 + signal when it was killed by a signal);
//! [`EXIT_TIMEOUT`] when the exec timeout killed it; [`EXIT_INFRA`] for infrastructure
//! failures (bad configuration, sync or spawn errors, unreadable input) and a refused
//! or failed write-back, with a message on stderr; 2 for usage errors.
//!
//! Modules: [`load`] (the ignore-aware, symlink-safe loader), [`rules`] (the ignore
//! rules a write-back asks about paths that do not exist yet), [`safefs`] (file
//! operations confined to one directory), [`changes`] (what a tool changed),
//! [`writeback`], [`record`] (the JSON report), [`progress`] (the bars), [`report`]
//! (human-readable summaries).

mod changes;
mod demo;
mod load;
mod progress;
mod record;
mod report;
mod rules;
mod run;
mod safefs;
mod writeback;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use devshell_vm::{Backend, SessionHolder, VmConfig, VmError};

use crate::progress::Progress;

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
    /// Print only errors (no summaries, notes or progress bars).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print details as well (such as where `limactl` was looked for).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Milliseconds a step runs before its progress bar appears (for tests).
    #[arg(long, global = true, hide = true, value_name = "MS")]
    progress_delay_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a small workspace in memory, then build, test and run it, edit one file
    /// and rebuild: a report per step shows what was synced and what recompiled.
    Demo(DemoArgs),
    /// Load a host directory or a workspace image into memory and run one tool on it.
    Run(RunArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff; `devshell-vm man run | man -l -`): `devshell-vm(1)`, or
    /// `devshell-vm-SUBCOMMAND(1)` for a subcommand.
    Man {
        /// The subcommand whose page to print (`run`, `demo`, ...).
        subcommand: Option<String>,
    },
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
    could not happen (configuration, loading, sync, missing program) or the write-back \
    was refused; 2 for usage errors.\n\
    Examples:\n  devshell-vm run --dir . -- cargo build\n  \
    devshell-vm run --dir . --write-back -- cargo fmt\n  \
    devshell-vm run --dir . --report run.json -- cargo test"
)]
struct RunArgs {
    /// Backend to use (default: `DEVSHELL_VM_BACKEND`, falling back to host when the
    /// configured VM backend is unavailable; an explicit choice never falls back).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// Host directory loaded into the in-memory workspace root `/`. Honours
    /// `.gitignore`, `.ignore` and `.git/info/exclude` as ripgrep does and leaves `.git`
    /// out. The directory is only read, unless `--write-back` is given.
    #[arg(long, value_name = "HOST_DIR")]
    dir: Option<PathBuf>,
    /// Workspace image (made with `--save`) loaded as the in-memory workspace.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Leave paths matching this glob (gitignore syntax, relative to `--dir`) out when
    /// loading, on top of the ignore files; repeatable.
    #[arg(long, value_name = "GLOB", requires = "dir")]
    exclude: Vec<String>,
    /// Load everything under `--dir` (ignore files and `.git` included); `--exclude`
    /// still applies.
    #[arg(long, requires = "dir")]
    no_ignore: bool,
    /// Save the in-memory workspace, with the tool's changes, to this image file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Write a JSON report of the run (schema 1, see the README) to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// After a successful run (exit 0), apply the tool's changes to `--dir`: each file
    /// replaced atomically, ignored paths left alone, refused before anything is written
    /// when the directory changed since it was loaded.
    #[arg(long, requires = "dir")]
    write_back: bool,
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
    Vm(Box<VmError>),
    /// Loading or saving the workspace failed.
    #[error("{context}: {message}")]
    Workspace {
        /// What was being done (names the file or directory).
        context: String,
        /// The underlying error's message.
        message: String,
    },
    /// The write-back was refused: the directory changed since it was loaded. Nothing
    /// was written.
    #[error(
        "write-back to {} refused (nothing was written): the directory changed while the tool ran: {}",
        dir.display(),
        conflicts.iter().map(|c| format!("{} {}", c.path, c.reason)).collect::<Vec<_>>().join("; ")
    )]
    WriteBackRefused {
        /// The directory.
        dir: PathBuf,
        /// Each path that changed, and how.
        conflicts: Vec<writeback::PathReason>,
    },
    /// Writing one path back failed (the paths before it were written).
    #[error("write-back of {} failed: {message}", path.display())]
    WriteBack {
        /// The host path.
        path: PathBuf,
        /// What failed.
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

/// How much the command prints on stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ui {
    /// `--quiet`: only errors.
    pub(crate) quiet: bool,
    /// `--verbose`: details too.
    pub(crate) verbose: bool,
    /// Progress bars (off when quiet or when stderr is not a terminal).
    pub(crate) progress: Progress,
}

impl Ui {
    /// `devshell-vm: LINE` on stderr unless quiet.
    pub(crate) fn note(&self, line: &str) {
        if !self.quiet {
            eprintln!("devshell-vm: {line}");
        }
    }
}

/// Threads for directory walks: the machine's parallelism, at most 8.
pub(crate) fn walk_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui {
        quiet: cli.quiet,
        verbose: cli.verbose,
        progress: Progress::for_stderr(
            cli.quiet,
            cli.progress_delay_ms
                .map_or(progress::DEFAULT_DELAY, Duration::from_millis),
        ),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::demo(args.backend, &ui),
        Command::Run(args) => run::run(&args, &ui),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "devshell-vm",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { subcommand } => man(subcommand.as_deref()),
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
            ExitCode::from(exit_code_of(&err))
        }
    }
}

impl From<VmError> for CliError {
    fn from(err: VmError) -> Self {
        // Boxed: `VmError` is large and every CLI function returns this type.
        Self::Vm(Box::new(err))
    }
}

/// The exit status for a failure of the command itself.
pub(crate) fn exit_code_of(err: &CliError) -> u8 {
    match err {
        CliError::Vm(err) if matches!(**err, VmError::Timeout { .. }) => EXIT_TIMEOUT,
        _ => EXIT_INFRA,
    }
}

/// Writes the man page of the command, or of one subcommand, to stdout.
fn man(subcommand: Option<&str>) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    if let Some(name) = subcommand {
        let Some(sub) = command.find_subcommand(name).cloned() else {
            return Err(CliError::Workspace {
                context: "writing the man page".to_owned(),
                message: format!("no subcommand `{name}`"),
            });
        };
        command = sub
            .display_name(format!("devshell-vm-{name}"))
            .bin_name(format!("devshell-vm {name}"))
            .version(env!("CARGO_PKG_VERSION"));
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page))
        .map_err(|err| CliError::Workspace {
            context: "writing the man page".to_owned(),
            message: err.to_string(),
        })?;
    Ok(ExitCode::SUCCESS)
}

/// The configuration from the environment, with `backend` overriding the backend.
fn load_config(backend: Option<BackendArg>, ui: &Ui) -> Result<VmConfig, CliError> {
    let mut config = VmConfig::from_env().map_err(VmError::from)?;
    for name in &config.ignored_variables {
        ui.note(&format!(
            "note: {name} is set but has no effect in this version"
        ));
    }
    if let Some(backend) = backend {
        config.enabled = true;
        config.backend = backend.into();
    }
    Ok(config)
}

/// Opens the session `config` asks for. With an explicit `--backend` a failure is an
/// error; otherwise an unavailable VM backend falls back to host with a one-line note
/// (its details with `--verbose`).
fn open_session(config: &VmConfig, explicit: bool, ui: &Ui) -> Result<SessionHolder, CliError> {
    if explicit {
        return Ok(SessionHolder::try_from_config(config)?);
    }
    let (session, notice) = SessionHolder::from_config_or_host(config);
    if let Some(notice) = notice {
        ui.note(&notice.summary());
        if ui.verbose
            && let Some(detail) = notice.detail()
        {
            ui.note(&detail);
        }
    }
    Ok(session)
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
