//! The devshell-vm-sidecar daemon: serves the beta protocol over Unix socket, TCP or stdio.
//!
//! Without arguments it prints its version on stdout and usage on stderr and exits 0
//! (as the v1 sidecar did). A usage error exits 2, a serve error 1.

use std::io::Write;

use clap::{CommandFactory, Parser};
use devshell_vm_sidecar::{Cli, Options, serve};

fn main() {
    if std::env::args_os().len() <= 1 {
        // Never `println!`: a closed pipe must not turn into a panic.
        let _ = writeln!(
            std::io::stdout(),
            "devshell-vm-sidecar {}",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(std::io::stderr(), "{}", Cli::command().render_usage());
        return;
    }
    let cli = Cli::parse();
    if let Some(address) = &cli.check {
        match devshell_vm_sidecar::check(address, std::time::Duration::from_secs(5)) {
            Ok(status) => {
                println!("devshell-vm-sidecar: {address}: {status}");
                return;
            }
            Err(err) => {
                eprintln!("devshell-vm-sidecar: {err}");
                std::process::exit(1);
            }
        }
    }
    let result = Options::from_cli(cli).and_then(serve);
    if let Err(err) = result {
        let _ = writeln!(std::io::stderr(), "devshell-vm-sidecar: {err}");
        std::process::exit(err.exit_code());
    }
}
