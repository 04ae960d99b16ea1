//! `devshell-vm run`: one tool on a loaded workspace.

use std::process::ExitCode;

use devshell_vm::{Termination, ToolRequest, Vfs, VmError};

use crate::{CliError, EXIT_INFRA, EXIT_TIMEOUT, RunArgs, load, load_config, open_session, report};

/// Runs the command; `Ok` carries the tool's exit code (or the timeout code).
pub(crate) fn run(args: &RunArgs) -> Result<ExitCode, CliError> {
    let config = load_config(args.backend)?;
    let mut vfs = if let Some(dir) = &args.dir {
        let (vfs, loaded) = load::load_dir(dir, &args.exclude)?;
        eprintln!(
            "devshell-vm: loaded {} ({} files, {}) in {}",
            dir.display(),
            loaded.files_written,
            report::bytes(loaded.bytes_written),
            report::duration(loaded.duration)
        );
        for skipped in &loaded.skipped {
            eprintln!(
                "devshell-vm: skipped {}: {}",
                skipped.path.display(),
                skipped.reason
            );
        }
        vfs
    } else if let Some(image) = &args.image {
        load::load_image(image)?
    } else {
        Vfs::new()
    };

    let mut session = open_session(&config, args.backend.is_some())?;
    session.set_sync_observer(report::progress_observer());
    let (program, tool_args) = args
        .command
        .split_first()
        .expect("clap requires at least the tool name");
    let request = ToolRequest::interactive(program.as_str(), tool_args.iter().cloned());

    let outcome = session.run_tool(&mut vfs, &args.cwd, &request);
    let shutdown = session.shutdown(&mut vfs, &args.cwd);
    let outcome = outcome?;
    report::print_skipped(&outcome);
    eprintln!(
        "devshell-vm: [{}] {} {} in {} — {}; {}",
        session.backend_name(),
        program,
        report::termination(outcome.exec.termination),
        report::duration(outcome.exec.duration),
        report::push_summary(&outcome.push),
        report::pull_summary(outcome.pull.as_ref()),
    );
    if let Some(save) = &args.save {
        load::save_image(&vfs, save)?;
        eprintln!("devshell-vm: saved workspace image {}", save.display());
    }
    if let Err(err) = shutdown {
        eprintln!("devshell-vm: warning: {err}");
    }

    Ok(match outcome.exec.termination {
        Termination::Exited(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_INFRA)),
        Termination::Signaled(signal) => {
            ExitCode::from(u8::try_from(128 + signal).unwrap_or(EXIT_INFRA))
        }
        Termination::TimedOut => {
            let timeout = request.timeout.or(config.exec_timeout).unwrap_or_default();
            eprintln!(
                "devshell-vm: error: {}",
                VmError::Timeout {
                    program: program.clone(),
                    timeout
                }
            );
            ExitCode::from(EXIT_TIMEOUT)
        }
        Termination::Cancelled => ExitCode::from(EXIT_INFRA),
    })
}
