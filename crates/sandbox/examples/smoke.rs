//! Manual smoke run: `cargo run -p devshell-vm-sandbox --example smoke -- MODE DIR PROGRAM ARGS...`
//! runs PROGRAM three times confined in DIR (read-write) and prints the timings.
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_sandbox::{Isolation, Limits, Net, Policy, Sandbox};
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: Isolation = args[0].parse().expect("mode");
    let dir = PathBuf::from(&args[1]);
    let config = devshell_vm_config::VmConfig::from_env().expect("config");
    let mut policy = Policy::new(
        mode,
        Net::None,
        Limits::default(),
        &dir,
        &std::env::temp_dir(),
    );
    policy.env = devshell_vm_config::inherited_environment();
    policy.cargo_home = config.cargo_home_dir();
    policy.rustup_home = config.rustup_home_dir();
    let t = std::time::Instant::now();
    let mut sandbox = Sandbox::start(policy).expect("start");
    eprintln!("start {:?} degraded {:?}", t.elapsed(), sandbox.degraded());
    let program = devshell_vm_sandbox::resolve_program(&args[2], config.path.as_deref(), &dir)
        .expect("program");
    let request = ToolRequest::new(args[2].clone(), args[3..].to_vec())
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let out = sandbox
            .run(&program, &request, Path::new(&dir), &mut |_, _| {}, None)
            .expect("run");
        eprintln!(
            "run {:?}: {:?} limit {:?}",
            t.elapsed(),
            out.exec.termination,
            out.limit
        );
        print!("{}", String::from_utf8_lossy(&out.exec.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.exec.stderr));
    }
}
