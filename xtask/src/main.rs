//! Project automation, one binary for every project script (matklad's cargo-xtask).
//!
//! * `cargo xtask ci` — formatting, clippy (all features and no default features),
//!   per-feature checks of the facade, and every test. CI and people run exactly this.
//! * `cargo xtask bench [SUITE…] [-- ARGS]` — the repository benchmarks
//!   (`vfs`, `sync`, `host`, `beta`, `lima`); figures go to `docs/BENCHMARKS.md`.

use std::process::{Command, ExitCode};
use std::time::Instant;

/// Benchmark suites: (suite name, package, bench target).
const BENCH_SUITES: &[(&str, &str, &str)] = &[
    ("vfs", "devshell-vm-vfs", "vfs"),
    ("sync", "devshell-vm-sync", "sync"),
    ("host", "devshell-vm-backend-host", "host"),
    ("beta", "devshell-vm-backend-beta", "beta"),
    ("lima", "devshell-vm-backend-lima", "lima"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help") | None => {
            print_usage();
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown xtask command `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn print_usage() {
    println!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         ci                      fmt --check, clippy -D warnings (all / no default features), feature checks, all tests\n  \
         bench [SUITE…] [-- ARGS] run benchmarks (suites: vfs sync host beta lima; default: all)"
    );
}

/// Runs one cargo step, echoing it first so a CI log shows what failed.
fn cargo(step_args: &[&str]) -> Result<(), String> {
    let shown = format!("cargo {}", step_args.join(" "));
    println!("==> {shown}");
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(step_args)
        .status()
        .map_err(|err| format!("could not run `{shown}`: {err}"))?;
    println!("    ({shown}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed with {status}"))
    }
}

fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--no-default-features",
        "--",
        "-D",
        "warnings",
    ])?;
    // Each facade feature must build alone (backends are additive).
    for features in ["lima", "beta"] {
        cargo(&[
            "check",
            "--package",
            "devshell-vm",
            "--no-default-features",
            "--features",
            features,
        ])?;
    }
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    println!("xtask ci: all steps passed");
    Ok(())
}

/// Tools a bench suite compares against, checked before it builds: a missing one is a
/// clear error naming the package to install, not a panic halfway through.
fn bench_prerequisites(suite: &str) -> Result<(), String> {
    let needs: &[(&str, &str)] = match suite {
        // The isolated case runs `bwrap` with an equivalent policy side by side.
        "host" => &[("bwrap", "bubblewrap")],
        _ => &[],
    };
    for (tool, package) in needs {
        let found = ["/usr/bin", "/bin", "/usr/local/bin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(tool).is_file());
        if !found {
            return Err(format!(
                "bench suite `{suite}` needs `{tool}`: install it first (apt-get install -y {package})"
            ));
        }
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<(), String> {
    let (names, passthrough) = match args.iter().position(|a| a == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let selected: Vec<&(&str, &str, &str)> = if names.is_empty() {
        BENCH_SUITES.iter().collect()
    } else {
        names
            .iter()
            .map(|name| {
                BENCH_SUITES
                    .iter()
                    .find(|(suite, _, _)| suite == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = BENCH_SUITES.iter().map(|s| s.0).collect();
                        format!("unknown bench suite `{name}` (known: {})", known.join(", "))
                    })
            })
            .collect::<Result<_, _>>()?
    };
    for (suite, package, target) in selected {
        bench_prerequisites(suite)?;
        let mut step: Vec<&str> = vec!["bench", "--package", package, "--bench", target];
        if !passthrough.is_empty() {
            step.push("--");
            step.extend(passthrough.iter().map(String::as_str));
        }
        cargo(&step)?;
    }
    Ok(())
}
