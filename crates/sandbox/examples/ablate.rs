//! Diagnostic: `cargo run --release -p devshell-vm-sandbox --example ablate -- DIR RUNS PROGRAM ARGS...`
//! runs PROGRAM in DIR interleaved across variants (direct spawn, sandbox off,
//! namespaces with and without a network namespace, Landlock) and prints each variant's
//! median and min–max wall time, to find where a confined run's extra time goes.
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_sandbox::{Isolation, Limits, Net, Policy, Sandbox};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(&args[0]);
    let runs: usize = args[1].parse().expect("runs");
    let config = devshell_vm_config::VmConfig::from_env().expect("config");
    let policy = |mode, net, limits| {
        let mut policy = Policy::new(mode, net, limits, &dir, &std::env::temp_dir());
        policy.env = devshell_vm_config::inherited_environment();
        policy.cargo_home = config.cargo_home_dir();
        policy.rustup_home = config.rustup_home_dir();
        policy.add_search_path(config.path.as_deref());
        policy
    };
    let variants: Vec<(&str, Option<Sandbox>)> = vec![
        ("direct (exec::run)", None),
        (
            "sandbox off",
            Some(
                Sandbox::start(policy(Isolation::Off, Net::None, Limits::default())).expect("off"),
            ),
        ),
        (
            "namespaces, no net",
            Some(
                Sandbox::start(policy(Isolation::Namespaces, Net::None, Limits::default()))
                    .expect("ns"),
            ),
        ),
        (
            "namespaces, host net",
            Some(
                Sandbox::start(policy(Isolation::Namespaces, Net::Host, Limits::default()))
                    .expect("ns"),
            ),
        ),
        (
            "landlock, no net",
            Some(
                Sandbox::start(policy(Isolation::Landlock, Net::None, Limits::default()))
                    .expect("landlock"),
            ),
        ),
    ];
    let program = devshell_vm_sandbox::resolve_program(&args[2], config.path.as_deref(), &dir)
        .expect("program");
    let request = ToolRequest::new(args[2].clone(), args[3..].to_vec())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    let mut variants = variants;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..=runs {
        for (i, (name, sandbox)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            let out = match sandbox {
                Some(sandbox) => {
                    sandbox
                        .run(&program, &request, Path::new(&dir), &mut |_, _| {}, None)
                        .expect("run")
                        .exec
                }
                None => devshell_vm_exec::run(&program, &request, &dir, &mut |_, _| {}, None)
                    .expect("run"),
            };
            assert!(
                out.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if round > 0 {
                times[i].push(t.elapsed());
            }
        }
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        let t = &mut times[i];
        t.sort();
        println!(
            "{name:24} median {:7.2} ms (min {:6.2}, max {:7.2}, n={})",
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[0].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3,
            t.len()
        );
    }
}
