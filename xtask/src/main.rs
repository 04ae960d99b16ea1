//! Project automation, one binary for every project script (matklad's cargo-xtask).
//!
//! * `cargo xtask ci` — formatting, clippy (all features and no default features),
//!   rustdoc with `-D warnings`, every test, the facade's tests with no default features
//!   and with each backend feature alone, the publishability check of every crate
//!   (metadata and `cargo package --workspace`), and at the end a check that no process
//!   or temporary file the run started outlived it. CI and people run exactly this.
//! * `cargo xtask package` — only the publishability checks of `ci`.
//! * `cargo xtask bench [SUITE…] [-- ARGS]` — the repository benchmarks
//!   (`vfs`, `sync`, `host`, `beta`, `lima`); figures go to `docs/BENCHMARKS.md`.
//! * `cargo xtask fuzz <TARGET> [--secs N] [--runs N]` — one cargo-fuzz campaign (nightly and
//!   `cargo-fuzz` needed) on the target's stored corpus, which it grows; see
//!   `docs/FUZZING.md`. `cargo xtask fuzz --list` names the targets.
//!
//! Workspace members are read from `cargo metadata`, never listed here, so a new crate
//! is packaged and checked without touching this file.

mod leftovers;
mod metadata;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Benchmark suites: (suite name, package, bench target).
const BENCH_SUITES: &[(&str, &str, &str)] = &[
    ("vfs", "devshell-vm-vfs", "vfs"),
    ("sync", "devshell-vm-sync", "sync"),
    ("host", "devshell-vm-backend-host", "host"),
    ("beta", "devshell-vm-backend-beta", "beta"),
    ("lima", "devshell-vm-backend-lima", "lima"),
];

/// The environment variable every process a CI run starts inherits (value: the run's
/// id), so the leftover check can find them even after they were re-parented.
pub(crate) const RUN_MARKER: &str = "DEVSHELL_VM_CI_RUN";

/// Fuzz targets: (target name, crate directory holding `fuzz/`).
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("line_parser", "crates/protocol"),
    ("requests", "crates/protocol"),
    ("wire_frames", "crates/protocol"),
    ("image_load", "crates/vfs"),
    ("sidecar_conn", "crates/sidecar"),
    ("guest_path", "crates/guest-fs"),
    ("config_env", "crates/config"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("package") => package_only(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
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
         ci                      fmt, clippy, rustdoc -D warnings, all tests, facade feature tests,\n                          \
         cargo package --workspace, leftover-process and temp-file check\n  \
         package                 only the publishability checks (metadata, cargo package --workspace)\n  \
         bench [SUITE…] [-- ARGS] run benchmarks (suites: vfs sync host beta lima; default: all)\n  \
         fuzz TARGET [--secs N] [--runs N]  run one fuzz campaign (default 300 s; `fuzz --list` names the targets)"
    );
}

/// One CI run: its id (the marker value), its private temporary directory, and the
/// failure reports of its test steps (printed again at the end of the run).
struct CiRun {
    id: String,
    tmp: PathBuf,
    failures: std::sync::Mutex<Vec<String>>,
}

impl CiRun {
    fn new() -> Result<Self, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = format!("{}-{nanos}", std::process::id());
        // Short and under /tmp: Unix socket paths of the tests must stay below 108 bytes.
        let tmp = PathBuf::from(format!("/tmp/devshell-vm-ci-{id}"));
        std::fs::create_dir(&tmp)
            .map_err(|err| format!("cannot create {}: {err}", tmp.display()))?;
        // Like /tmp itself (sticky, everyone may create): tests run some of their
        // children as another user (`runuser -u nobody`), and those make temp dirs too.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
                .map_err(|err| format!("cannot set the mode of {}: {err}", tmp.display()))?;
        }
        Ok(Self {
            id,
            tmp,
            failures: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Runs one cargo step with the run's marker and `TMPDIR`, echoing it first so a CI
    /// log shows what failed.
    fn cargo(&self, step_args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        let shown_env = env.iter().fold(String::new(), |mut text, (k, v)| {
            let _ = write!(text, "{k}=\"{v}\" ");
            text
        });
        let shown = format!("{shown_env}cargo {}", step_args.join(" "));
        println!("==> {shown}");
        let started = Instant::now();
        let mut command = Command::new("cargo");
        command
            .args(step_args)
            .envs(env.iter().copied())
            .env(RUN_MARKER, &self.id)
            .env("TMPDIR", &self.tmp);
        let status = if step_args.first() == Some(&"test") {
            // Echo the tests' output and keep what each failing test printed: a CI log
            // is often read from its end only, where the recap goes.
            command.stdout(std::process::Stdio::piped());
            let mut child = command
                .spawn()
                .map_err(|err| format!("could not run `{shown}`: {err}"))?;
            if let Some(stdout) = child.stdout.take() {
                let reports =
                    failure_reports(std::io::BufReader::new(stdout), &mut std::io::stdout());
                self.failures
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(reports);
            }
            child.wait()
        } else {
            command.status()
        }
        .map_err(|err| format!("could not run `{shown}`: {err}"))?;
        println!("    ({shown}: {:.1}s)", started.elapsed().as_secs_f64());
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{shown}` failed with {status}"))
        }
    }
}

/// What needs root today, said before anything runs (and in the README).
fn announce_privileges() {
    let root = nix::unistd::geteuid().is_root();
    println!(
        "xtask ci: running as {}.\n  \
         Needs root: the sidecar test a_peer_with_another_uid_is_refused (its client\n  \
         switches to uid 65534). The Lima stand-in builds its guest in a user namespace\n  \
         when not root. Everything else is meant to run as any user.",
        if root { "root" } else { "a non-root user" }
    );
    if !root {
        println!(
            "  Not root: that test will FAIL (they never skip); every other step is\n  \
             meaningful. Run as root for a full CI run."
        );
    }
}

fn ci() -> Result<(), String> {
    announce_privileges();
    // Orphans of anything this run starts are re-parented to us, so the leftover check
    // can see them even after their parent exited.
    if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
        println!(
            "xtask ci: cannot become a child subreaper ({errno}); leftover detection falls back to the {RUN_MARKER} marker only"
        );
    }
    let run = CiRun::new()?;
    println!(
        "xtask ci: run {} (TMPDIR={}, {RUN_MARKER} set for every step)",
        run.id,
        run.tmp.display()
    );
    let started = Instant::now();
    let steps = steps(&run);
    let leftovers = leftovers::check(&run.id, &run.tmp);
    print_recap(&run);
    println!(
        "xtask ci: {:.1} min in all",
        started.elapsed().as_secs_f64() / 60.0
    );
    match (steps, leftovers) {
        (Ok(()), Ok(())) => {
            println!("xtask ci: all steps passed");
            Ok(())
        }
        (Err(step), Ok(())) => Err(step),
        (Ok(()), Err(left)) => Err(left),
        (Err(step), Err(left)) => Err(format!("{step}\nxtask: {left}")),
    }
}

/// Most lines of one failing test binary's report kept for the recap.
const RECAP_LINES: usize = 120;

/// Copies `stdout` of a `cargo test` to ours line by line and returns the `failures:`
/// section of every test binary that failed (its first [`RECAP_LINES`] lines).
fn failure_reports(stdout: impl std::io::BufRead, echo: &mut impl std::io::Write) -> Vec<String> {
    let mut reports = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in stdout.split(b'\n') {
        let Ok(line) = line else { break };
        let _ = echo.write_all(&line);
        let _ = echo.write_all(b"\n");
        let _ = echo.flush();
        let text = String::from_utf8_lossy(&line).into_owned();
        if current.is_none() && text == "failures:" {
            current = Some(Vec::new());
        }
        let Some(report) = current.as_mut() else {
            continue;
        };
        if text.starts_with("test result:") {
            report.push(text);
            reports.push(report.join("\n"));
            current = None;
        } else if report.len() < RECAP_LINES {
            report.push(text);
        } else if report.len() == RECAP_LINES {
            report.push("    [… cut; the whole report is above]".to_owned());
        }
    }
    if let Some(report) = current {
        reports.push(report.join("\n"));
    }
    reports
}

/// The failure reports of the run's test steps, once more at its end.
fn print_recap(run: &CiRun) {
    let failures = run
        .failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if failures.is_empty() {
        return;
    }
    println!("==> recap: what the failing tests printed");
    for report in failures.iter() {
        println!("{report}\n");
    }
}

/// `cargo xtask package`: the publishability steps of `ci` alone.
fn package_only() -> Result<(), String> {
    let run = CiRun::new()?;
    let members = metadata::Workspace::load()?;
    let result = members
        .check_publishable()
        .and_then(|()| package(&run, &members));
    let _ = std::fs::remove_dir_all(&run.tmp);
    result
}

fn steps(run: &CiRun) -> Result<(), String> {
    run.cargo(&["fmt", "--all", "--", "--check"], &[])?;
    let members = metadata::Workspace::load()?;
    members.check_publishable()?;
    run.cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    run.cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--no-default-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // Rustdoc as users (default features) and docs.rs (all features) see it.
    let deny = [("RUSTDOCFLAGS", "-D warnings")];
    run.cargo(&["doc", "--workspace", "--no-deps"], &deny)?;
    run.cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &deny,
    )?;
    run.cargo(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &[],
    )?;
    // The facade's `cfg(not(feature = …))` paths: no backend feature, then each alone
    // (backends are additive). Its own tests enable `conformance` through a self
    // dev-dependency, nothing else.
    run.cargo(
        &["test", "--package", "devshell-vm", "--no-default-features"],
        &[],
    )?;
    for feature in ["lima", "beta"] {
        run.cargo(
            &[
                "test",
                "--package",
                "devshell-vm",
                "--no-default-features",
                "--features",
                feature,
            ],
            &[],
        )?;
    }
    package(run, &members)
}

/// `cargo package --workspace`: every publishable member, in dependency order, each
/// verified by building it from its `.crate` file against the others' `.crate` files
/// (cargo resolves the workspace's unpublished path dependencies from a local overlay of
/// the packages it just made, so nothing needs to be on crates.io yet). A crate that
/// stops being packageable — a file outside it, a dev-dependency on an unpublished
/// crate with a version, a missing README — fails here.
fn package(run: &CiRun, members: &metadata::Workspace) -> Result<(), String> {
    println!(
        "xtask ci: packaging {} publishable crates: {}",
        members.publishable.len(),
        members
            .publishable
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Its own target directory: cargo treats the packaged crates as registry crates,
    // whose builds it never re-checks against their sources, so their fingerprints are
    // cleared before each run (here they cannot slow down the workspace's own builds).
    let verify_dir = members.target_directory.join("package-verify");
    forget_earlier_packages(members, &verify_dir);
    let verify_arg = verify_dir.to_string_lossy().into_owned();
    // `cargo package` does not skip `publish = false` members by itself.
    let mut args = vec![
        "package",
        "--workspace",
        "--locked",
        "--allow-dirty",
        "--target-dir",
        verify_arg.as_str(),
    ];
    for name in &members.unpublished {
        args.extend(["--exclude", name.as_str()]);
    }
    run.cargo(&args, &[])
}

/// Removes what earlier runs left of this workspace's packages: cargo's unpacked copies
/// and their build fingerprints.
///
/// The verification unpacks each `.crate` of the temporary registry into
/// `$CARGO_HOME/registry/src/-<hash of the registry path>/<name>-<version>/` and reuses
/// an existing directory without comparing contents, and it reuses a registry crate's
/// build without looking at its sources; so a second run in the same clone would build a
/// crate against a *stale* copy of its workspace dependency (seen here:
/// `devshell-vm-session` verified against a `devshell-vm-sync` from before an API change).
/// Local registries are the `-<hash>` directories; only our names and versions go.
fn forget_earlier_packages(members: &metadata::Workspace, verify_dir: &Path) {
    for profile in ["debug", "release"] {
        let fingerprints = verify_dir.join(profile).join(".fingerprint");
        let Ok(entries) = std::fs::read_dir(&fingerprints) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = members.publishable.iter().any(|m| {
                name.strip_prefix(m.name.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| hash.chars().all(|c| c.is_ascii_hexdigit()))
            });
            if ours {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let Some(home) = cargo_home() else {
        println!("xtask ci: no CARGO_HOME or HOME; cannot clear stale unpacked packages");
        return;
    };
    let Ok(registries) = std::fs::read_dir(home.join("registry/src")) else {
        return;
    };
    for registry in registries.filter_map(Result::ok) {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for member in &members.publishable {
            let unpacked = registry
                .path()
                .join(format!("{}-{}", member.name, member.version()));
            if unpacked.exists()
                && let Err(err) = std::fs::remove_dir_all(&unpacked)
            {
                println!(
                    "xtask ci: cannot remove the stale {}: {err}",
                    unpacked.display()
                );
            }
        }
    }
}

/// Cargo's home, found as cargo finds it.
#[allow(
    clippy::disallowed_methods,
    reason = "xtask drives cargo and locates cargo's home the way cargo does; it is no library"
)]
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
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
        let shown = format!("cargo {}", step.join(" "));
        println!("==> {shown}");
        let status = Command::new("cargo")
            .args(&step)
            .status()
            .map_err(|err| format!("could not run `{shown}`: {err}"))?;
        if !status.success() {
            return Err(format!("`{shown}` failed with {status}"));
        }
    }
    Ok(())
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

/// `cargo xtask fuzz TARGET [--secs N] [--runs N] [--nice N]`: runs cargo-fuzz on the target's
/// stored corpus (`<crate>/fuzz/corpus/<target>`, grown in place), with libFuzzer's own output,
/// at a low priority by default (`nice -n 19`: the machine is shared); `--nice 0` for a
/// campaign on a quiet machine that should get a whole core.
fn fuzz(args: &[String]) -> Result<(), String> {
    let names: Vec<&str> = FUZZ_TARGETS.iter().map(|t| t.0).collect();
    let Some(target) = args.first() else {
        return Err(format!("fuzz needs a target: {}", names.join(", ")));
    };
    if target == "--list" {
        for (name, dir) in FUZZ_TARGETS {
            println!("{name}\t{dir}/fuzz");
        }
        return Ok(());
    }
    let Some((_, dir)) = FUZZ_TARGETS.iter().find(|t| t.0 == target) else {
        return Err(format!(
            "unknown fuzz target `{target}` (known: {})",
            names.join(", ")
        ));
    };
    let mut secs: u64 = 300;
    let mut runs: Option<u64> = None;
    let mut niceness: i32 = 19;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--secs" => {
                secs = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .ok_or("--secs needs a positive number of seconds")?;
            }
            "--runs" => {
                runs = Some(
                    rest.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|&v| v > 0)
                        .ok_or("--runs needs a positive number of executions")?,
                );
            }
            "--nice" => {
                niceness = rest
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|v| (0..=19).contains(v))
                    .ok_or("--nice needs a niceness from 0 to 19")?;
            }
            other => return Err(format!("unknown fuzz option `{other}`")),
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("xtask has no parent directory")?;
    let crate_dir = root.join(dir);
    let corpus = format!("fuzz/corpus/{target}");
    std::fs::create_dir_all(crate_dir.join(&corpus))
        .map_err(|err| format!("creating {}/{corpus}: {err}", crate_dir.display()))?;
    // Seeds (hand-made inputs, never rewritten) are read too when a target has them.
    let seeds = format!("fuzz/seeds/{target}");
    let mut dirs = vec![corpus.clone()];
    if crate_dir.join(&seeds).is_dir() {
        dirs.push(seeds);
    }
    let mut limits = vec![format!("-max_total_time={secs}")];
    if let Some(runs) = runs {
        limits.push(format!("-runs={runs}"));
    }
    let shown = format!(
        "(cd {dir} && nice -n {niceness} cargo +nightly fuzz run {target} {} -- {} -close_fd_mask=2 -print_final_stats=1)",
        dirs.join(" "),
        limits.join(" ")
    );
    println!("==> {shown}");
    let status = Command::new("nice")
        .args(["-n", &niceness.to_string(), "cargo", "+nightly", "fuzz", "run", target])
        .args(&dirs)
        .arg("--")
        .args(&limits)
        .args(["-close_fd_mask=2", "-print_final_stats=1"])
        .current_dir(&crate_dir)
        .status()
        .map_err(|err| format!("could not run `{shown}` (is cargo-fuzz installed? `cargo install cargo-fuzz`): {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{shown}` failed with {status} (a crash input is under {dir}/fuzz/artifacts/{target}/)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recap keeps each failing binary's `failures:` section through its result
    /// line, and nothing of a passing binary.
    #[test]
    fn the_recap_keeps_each_failure_section() {
        let output = "\
running 2 tests
test a ... ok
test b ... FAILED

failures:

---- b stdout ----
thread 'b' panicked at src/lib.rs:1:1:
boom

failures:
    b

test result: FAILED. 1 passed; 1 failed

running 1 test
test c ... ok

test result: ok. 1 passed; 0 failed
";
        let mut echoed = Vec::new();
        let reports = failure_reports(output.as_bytes(), &mut echoed);
        assert_eq!(echoed, output.as_bytes(), "every line is passed on");
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].starts_with("failures:\n\n---- b stdout ----"));
        assert!(reports[0].contains("boom"));
        assert!(reports[0].ends_with("test result: FAILED. 1 passed; 1 failed"));
        let long = format!(
            "failures:\n{}test result: FAILED. 0 passed; 1 failed\n",
            "x\n".repeat(500)
        );
        let reports = failure_reports(long.as_bytes(), &mut Vec::new());
        assert_eq!(
            reports[0].lines().count(),
            RECAP_LINES + 2,
            "cut, noted, result kept"
        );
    }
}
