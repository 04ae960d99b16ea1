//! `devshell-vm run`: one tool on a loaded workspace, then the summary, the image, the
//! JSON report and the write-back.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use devshell_vm::{Termination, ToolRequest, Vfs, VmError, project_root};

use crate::changes::{self, ChangeSet};
use crate::load::{self, IgnoreMode, LoadedDir};
use crate::record::{self, Input, LoadStats, Outcome, Report, SyncStats, WriteBack};
use crate::writeback::{self, PathReason};
use crate::{CliError, EXIT_INFRA, EXIT_TIMEOUT, RunArgs, Ui, load_config, open_session, report};

/// Runs the command; `Ok` carries the tool's exit code (or the timeout code). With
/// `--report` the report is written whatever happened (an error included).
pub(crate) fn run(args: &RunArgs, ui: &Ui) -> Result<ExitCode, CliError> {
    let started = Instant::now();
    let input = if let Some(dir) = &args.dir {
        Input::Dir {
            path: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()),
            ignore_files: !args.no_ignore,
            excludes: args.exclude.clone(),
        }
    } else if let Some(image) = &args.image {
        Input::Image {
            path: image.clone(),
        }
    } else {
        Input::Empty
    };
    let mut report = Report::new(args.command.clone(), args.cwd.clone(), input);
    let result = run_steps(args, ui, &mut report);
    report.durations_ms.total = record::ms(started.elapsed());
    let Some(path) = &args.report else {
        return result.map(ExitCode::from);
    };
    match &result {
        Ok(code) => report.exit_code = *code,
        Err(err) => {
            report.exit_code = crate::exit_code_of(err);
            report.error = Some(err.to_string());
            if let CliError::WriteBackRefused { conflicts, .. } = err {
                report.write_back = Some(WriteBack::Refused {
                    conflicts: conflicts.clone(),
                });
            } else if let CliError::WriteBack { .. } = err {
                report.write_back = Some(WriteBack::Failed {
                    error: err.to_string(),
                });
            } else if args.write_back && report.write_back.is_none() {
                report.write_back = Some(WriteBack::Skipped {
                    reason: "the run did not complete".to_owned(),
                });
            }
        }
    }
    report.write(path)?;
    result.map(ExitCode::from)
}

/// The run itself; fills `report` as it goes. `Ok` is the exit code.
fn run_steps(args: &RunArgs, ui: &Ui, report: &mut Report) -> Result<u8, CliError> {
    let config = load_config(args.backend, ui)?;
    let (mut vfs, loaded) = load_input(args, ui, report)?;

    let mut session = open_session(&config, args.backend.is_some(), ui)?;
    report.backend = Some(session.backend_name());
    let bars = ui.progress.sync();
    session.set_sync_observer(bars.observer());
    let (program, tool_args) = args
        .command
        .split_first()
        .expect("clap requires at least the tool name");
    let request = ToolRequest::interactive(program.as_str(), tool_args.iter().cloned());

    let before = vfs.clone();
    let since = vfs.generation();
    bars.begin_run(push_total(&vfs, &args.cwd));
    let outcome = session.run_tool(&mut vfs, &args.cwd, &request);
    bars.end_run();
    if let Some(note) = session.take_isolation_note() {
        eprintln!("devshell-vm: note: {note}");
    }
    let shutdown = session.shutdown(&mut vfs, &args.cwd);
    let changes = changes::diff(&before, &vfs, since);
    drop(before);
    report.changes = Some(changes.clone());
    let outcome = outcome?;
    let timeout = request.timeout.or(config.exec_timeout);
    report.outcome = Outcome::of(outcome.exec.termination, timeout);
    if let Some((mechanisms, limit)) = session.last_run_confinement() {
        report.isolation = Some(mechanisms);
        if let Some(limit) = limit {
            report.outcome = Outcome::Limit {
                limit,
                termination: outcome.exec.termination.to_string(),
            };
        }
    }
    report.durations_ms.push = Some(record::ms(outcome.push.duration));
    report.durations_ms.run = Some(record::ms(outcome.exec.duration));
    report.durations_ms.pull = outcome.pull.as_ref().map(|p| record::ms(p.duration));
    report.push = Some(SyncStats::from(&outcome.push));
    report.pull = outcome.pull.as_ref().map(SyncStats::from);
    if !ui.quiet {
        report::print_skipped(&outcome);
    }
    ui.note(&format!(
        "[{}] {} {} in {} — {}; {}; {}",
        session.backend_name(),
        program,
        report::termination(outcome.exec.termination),
        report::duration(outcome.exec.duration),
        report::push_summary(&outcome.push),
        report::pull_summary(outcome.pull.as_ref()),
        change_summary(&changes),
    ));
    if let Some(save) = &args.save {
        let started = Instant::now();
        let bar = ui.progress.step("saving", &save.display().to_string());
        let saved = load::save_image(&vfs, save);
        bar.finish();
        saved?;
        report.durations_ms.save = Some(record::ms(started.elapsed()));
        ui.note(&format!("saved workspace image {}", save.display()));
    }
    if let Err(err) = shutdown {
        ui.note(&format!("warning: {err}"));
    }

    let code = match outcome.exec.termination {
        Termination::Exited(code) => u8::try_from(code).unwrap_or(EXIT_INFRA),
        Termination::Signaled(signal) => u8::try_from(128 + signal).unwrap_or(EXIT_INFRA),
        Termination::TimedOut => {
            eprintln!(
                "devshell-vm: error: {}",
                VmError::Timeout {
                    program: program.clone(),
                    timeout: timeout.unwrap_or_default(),
                }
            );
            EXIT_TIMEOUT
        }
        Termination::Cancelled => EXIT_INFRA,
    };

    if args.write_back
        && let Some(loaded) = &loaded
    {
        write_back(ui, loaded, &vfs, &changes, outcome.exec.termination, report)?;
    }
    Ok(code)
}

/// Files the first push of a fresh session writes: every file and symlink of the
/// project the tool's cwd belongs to (0 when that cannot be told).
fn push_total(vfs: &Vfs, cwd: &str) -> u64 {
    let Ok(root) = project_root(vfs, cwd) else {
        return 0;
    };
    vfs.walk(&root).map_or(0, |walk| {
        walk.filter(|entry| entry.node.kind() != devshell_vm::vfs::NodeKind::Dir)
            .count() as u64
    })
}

fn print_loaded(ui: &Ui, loaded: &LoadedDir) {
    let mut line = format!(
        "loaded {} ({} files, {}) in {}",
        loaded.root.display(),
        loaded.files,
        report::bytes(loaded.bytes),
        report::duration(loaded.duration)
    );
    if loaded.left_out_files > 0 {
        let _ = write!(
            line,
            "; left out {} files ({}) ignored or excluded",
            loaded.left_out_files,
            report::bytes(loaded.left_out_bytes)
        );
    }
    ui.note(&line);
    for (path, reason) in &loaded.skipped {
        ui.note(&format!("skipped {}: {reason}", path.display()));
    }
}

fn change_summary(changes: &ChangeSet) -> String {
    if changes.is_empty() {
        "no paths changed".to_owned()
    } else {
        format!(
            "{} created, {} modified, {} deleted",
            changes.created.len(),
            changes.modified.len(),
            changes.deleted.len()
        )
    }
}

/// Loads `--dir`, `--image` or nothing.
fn load_input(
    args: &RunArgs,
    ui: &Ui,
    report: &mut Report,
) -> Result<(Vfs, Option<LoadedDir>), CliError> {
    if let Some(dir) = &args.dir {
        let mode = if args.no_ignore {
            IgnoreMode::LoadAll
        } else {
            IgnoreMode::Honour
        };
        let mut dir_loaded = load::load_dir(dir, &args.exclude, mode, &ui.progress)?;
        report.durations_ms.load = Some(record::ms(dir_loaded.duration));
        print_loaded(ui, &dir_loaded);
        report.load = Some(LoadStats {
            files: dir_loaded.files,
            bytes: dir_loaded.bytes,
            left_out_files: dir_loaded.left_out_files,
            left_out_bytes: dir_loaded.left_out_bytes,
            skipped: dir_loaded
                .skipped
                .iter()
                .map(|(path, reason)| PathReason {
                    path: path.display().to_string(),
                    reason: reason.clone(),
                })
                .collect(),
        });
        let vfs = std::mem::take(&mut dir_loaded.vfs);
        Ok((vfs, Some(dir_loaded)))
    } else if let Some(image) = &args.image {
        let started = Instant::now();
        let bar = ui.progress.step("loading", &image.display().to_string());
        let vfs = load::load_image(image);
        bar.finish();
        report.durations_ms.load = Some(record::ms(started.elapsed()));
        Ok((vfs?, None))
    } else {
        Ok((Vfs::new(), None))
    }
}

/// `--write-back` after the run (only after a successful one).
fn write_back(
    ui: &Ui,
    loaded: &LoadedDir,
    vfs: &Vfs,
    changes: &ChangeSet,
    termination: Termination,
    report: &mut Report,
) -> Result<(), CliError> {
    if termination != Termination::Exited(0) {
        let reason = format!(
            "the tool did not succeed ({})",
            report::termination(termination)
        );
        ui.note(&format!(
            "write-back: skipped, {reason}; {} left as it was",
            loaded.root.display()
        ));
        report.write_back = Some(WriteBack::Skipped { reason });
        return Ok(());
    }
    let started = Instant::now();
    let mut print = |line: &str| ui.note(&format!("write-back: {line}"));
    let done = writeback::write_back(loaded, vfs, changes, &mut print)?;
    report.durations_ms.write_back = Some(record::ms(started.elapsed()));
    if done.written.is_empty() && done.deleted.is_empty() {
        ui.note(&format!(
            "write-back: nothing to write to {}",
            loaded.root.display()
        ));
    }
    if ui.verbose {
        for skipped in &done.not_written {
            ui.note(&format!(
                "write-back: not written {}: {}",
                skipped.path, skipped.reason
            ));
        }
    }
    report.write_back = Some(WriteBack::Done(done));
    Ok(())
}
