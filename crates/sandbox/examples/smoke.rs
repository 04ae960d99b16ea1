//! Manual smoke run: `cargo run -p devshell-vm-sandbox --example smoke -- MODE CMD`.
use devshell_vm_exec::{OutputMode, ToolRequest};
use devshell_vm_sandbox::{Isolation, Limits, Net, Policy, Sandbox};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: Isolation = args[0].parse().expect("mode");
    let dir = std::env::temp_dir().join("smoke-project");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut policy = Policy::new(
        mode,
        Net::None,
        Limits::default(),
        &dir,
        &std::env::temp_dir(),
    );
    policy.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    let t = std::time::Instant::now();
    let mut sandbox = Sandbox::start(policy).expect("start");
    eprintln!("start {:?} degraded {:?}", t.elapsed(), sandbox.degraded());
    let request = ToolRequest::new("sh", ["-c", &args[1]])
        .stdout(OutputMode::Capture)
        .stderr(OutputMode::Capture);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let out = sandbox
            .run(Path::new("/bin/sh"), &request, &dir, &mut |_, _| {}, None)
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
