//! `devshell-vm demo`: the main job, end to end, in under a minute on a fresh clone.
//!
//! A two-crate workspace is created in memory (`greet`, a library with a unit test, and
//! `app`, a binary using it). Through the configured session (host when nothing else is
//! configured or available) the demo runs `cargo build`, `cargo test`, `cargo run`, then
//! edits `app/src/main.rs` in memory and builds again: cargo's own output shows that only
//! `app` recompiles. Every step prints what was pushed and pulled and how long it took.

use std::process::ExitCode;
use std::time::Instant;

use devshell_vm::{OutputMode, SessionHolder, Termination, ToolOutcome, ToolRequest, Vfs};

use crate::progress::SyncBars;
use crate::{BackendArg, CliError, Ui, load_config, open_session, report};

/// VFS path of the demo workspace.
const ROOT: &str = "/demo";

const WORKSPACE_TOML: &str = "[workspace]\nmembers = [\"app\", \"greet\"]\nresolver = \"2\"\n";
const GREET_TOML: &str = "[package]\nname = \"greet\"\nversion = \"0.1.0\"\nedition = \"2021\"\n";
const GREET_LIB: &str = r#"//! Greetings.

/// A greeting for `name`.
pub fn greeting(name: &str) -> String {
    format!("Hello, {name}!")
}

#[cfg(test)]
mod tests {
    #[test]
    fn greets_by_name() {
        assert_eq!(super::greeting("VFS"), "Hello, VFS!");
    }
}
"#;
const APP_TOML: &str = "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                        [dependencies]\ngreet = { path = \"../greet\" }\n";
const APP_MAIN: &str =
    "fn main() {\n    println!(\"{}\", greet::greeting(\"in-memory workspace\"));\n}\n";
const APP_MAIN_EDITED: &str = "fn main() {\n    println!(\"{} (edited in memory)\", greet::greeting(\"in-memory workspace\"));\n}\n";

/// Runs the demo; a failing step ends it after its report with a [`CliError::Demo`]
/// (exit code 70, like every failure of the command itself).
pub(crate) fn demo(backend: Option<BackendArg>, ui: &Ui) -> Result<ExitCode, CliError> {
    let config = load_config(backend, ui)?;
    let mut session = open_session(&config, backend.is_some(), ui)?;
    let bars = ui.progress.sync();
    session.set_sync_observer(bars.observer());
    println!(
        "devshell-vm demo — backend: {}, staging under {}",
        session.backend_name(),
        config.export_base_dir().display()
    );

    let mut vfs = Vfs::new();
    let file_count = create_workspace(&mut vfs)?;
    println!("created {ROOT} in memory: {file_count} files (crates `greet` and `app`)\n");

    let result = steps(&mut session, &mut vfs, &bars);
    let shutdown = session.shutdown(&mut vfs, ROOT);
    result?;
    shutdown?;
    println!(
        "\ndemo finished: every step ran through the session; the workspace stayed in memory."
    );
    Ok(ExitCode::SUCCESS)
}

fn steps(session: &mut SessionHolder, vfs: &mut Vfs, bars: &SyncBars) -> Result<(), CliError> {
    let total = Instant::now();

    let build = step(session, vfs, bars, "/demo", "cargo build", &["build"])?;
    let compiled = compiled_crates(&build);
    println!("    compiled: {}", compiled.join(", "));
    let binary = vfs
        .read_file("/demo/target/debug/app")
        .map_err(|err| CliError::Demo {
            step: "cargo build".to_owned(),
            reason: format!("the binary is not in memory after the build: {err}"),
        })?;
    println!(
        "    binary /demo/target/debug/app is in memory: {}",
        report::bytes(binary.len() as u64)
    );

    let test = step(session, vfs, bars, "/demo", "cargo test", &["test"])?;
    // The unit test's own line and the summary of the test binary that ran it (the
    // other binaries and doc tests report "0 passed").
    for line in String::from_utf8_lossy(&test.exec.stdout).lines() {
        let is_test = line.starts_with("test ") && !line.starts_with("test result:");
        let is_summary = line.starts_with("test result:") && !line.contains(" 0 passed");
        if is_test || is_summary {
            println!("    {line}");
        }
    }

    let run = step(
        session,
        vfs,
        bars,
        "/demo/app",
        "cargo run",
        &["run", "--quiet"],
    )?;
    print_stdout(&run);

    vfs.write_file("/demo/app/src/main.rs", APP_MAIN_EDITED.as_bytes().to_vec())
        .map_err(|err| CliError::Demo {
            step: "edit".to_owned(),
            reason: err.to_string(),
        })?;
    println!("\n  edit  /demo/app/src/main.rs changed in memory");

    let rebuild = step(session, vfs, bars, "/demo", "cargo build", &["build"])?;
    let recompiled = compiled_crates(&rebuild);
    println!(
        "    recompiled: {} (greet stayed fresh: {})",
        if recompiled.is_empty() {
            "nothing".to_owned()
        } else {
            recompiled.join(", ")
        },
        if recompiled.iter().any(|c| c == "greet") {
            "no"
        } else {
            "yes"
        }
    );
    if recompiled != ["app"] {
        return Err(CliError::Demo {
            step: "cargo build after the edit".to_owned(),
            reason: format!("expected only `app` to recompile, cargo compiled {recompiled:?}"),
        });
    }

    let rerun = step(
        session,
        vfs,
        bars,
        "/demo/app",
        "cargo run",
        &["run", "--quiet"],
    )?;
    print_stdout(&rerun);

    println!("\n  total {}", report::duration(total.elapsed()));
    Ok(())
}

/// Writes the demo workspace into the VFS; returns how many files it has.
fn create_workspace(vfs: &mut Vfs) -> Result<usize, CliError> {
    let files = [
        ("/demo/Cargo.toml", WORKSPACE_TOML),
        ("/demo/greet/Cargo.toml", GREET_TOML),
        ("/demo/greet/src/lib.rs", GREET_LIB),
        ("/demo/app/Cargo.toml", APP_TOML),
        ("/demo/app/src/main.rs", APP_MAIN),
    ];
    let fail = |err: devshell_vm::vfs::VfsError| CliError::Demo {
        step: "create workspace".to_owned(),
        reason: err.to_string(),
    };
    vfs.mkdir("/demo/greet/src").map_err(fail)?;
    vfs.mkdir("/demo/app/src").map_err(fail)?;
    for (path, text) in files {
        vfs.write_file(path, text.as_bytes().to_vec())
            .map_err(fail)?;
    }
    Ok(files.len())
}

/// Runs one cargo step with captured output and prints its report line. A failing step
/// shows cargo's output and becomes an error.
fn step(
    session: &mut SessionHolder,
    vfs: &mut Vfs,
    bars: &SyncBars,
    cwd: &str,
    label: &str,
    args: &[&str],
) -> Result<ToolOutcome, CliError> {
    // Plain `Compiling` lines whatever the user's cargo colour setting: the report reads
    // them to show what recompiled.
    let request = ToolRequest::new("cargo", args.iter().copied())
        .env("CARGO_TERM_COLOR", "never")
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture)
        .forward_interrupts(true);
    bars.begin_run(0);
    let outcome = session.run_tool(vfs, cwd, &request);
    bars.end_run();
    // A degrade of isolation `auto` is a warning: printed even with --quiet.
    if let Some(note) = session.take_isolation_note() {
        eprintln!("devshell-vm: note: {note}");
    }
    let outcome = outcome?;
    report::print_skipped(&outcome);
    println!(
        "  {label:<12} {:<4} {:>8}   {}; {}",
        report::termination(outcome.exec.termination),
        report::duration(outcome.exec.duration),
        report::push_summary(&outcome.push),
        report::pull_summary(outcome.pull.as_ref()),
    );
    if outcome.exec.termination != Termination::Exited(0) {
        eprint!("{}", String::from_utf8_lossy(&outcome.exec.stderr));
        eprint!("{}", String::from_utf8_lossy(&outcome.exec.stdout));
        return Err(CliError::Demo {
            step: label.to_owned(),
            reason: report::termination(outcome.exec.termination),
        });
    }
    Ok(outcome)
}

/// Crate names from cargo's `Compiling <name> v<version>` lines.
fn compiled_crates(outcome: &ToolOutcome) -> Vec<String> {
    String::from_utf8_lossy(&outcome.exec.stderr)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("Compiling "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn print_stdout(outcome: &ToolOutcome) {
    for line in String::from_utf8_lossy(&outcome.exec.stdout).lines() {
        println!("    output: {line}");
    }
}
