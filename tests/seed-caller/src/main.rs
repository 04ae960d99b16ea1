//! A program written the way the earlier library's callers wrote theirs (its REPL and
//! its tests): `use` the `vm` and `vfs` names, build a tree with byte literals and
//! strings, get a session from the environment with the host fall-back, run `cargo`,
//! read the results back. Lines that differ from the earlier library carry a
//! `// MIGRATION:` comment quoting docs/MIGRATION.md; nothing else was changed.
//!
//! Usage: `seed-caller` (builds and runs a small crate held in memory; exit 0 when the
//! built binary printed what it should).

// The earlier library's callers wrote `use crate::devshell::vm::…` and
// `use crate::devshell::vfs::Vfs`; the crate's modules carry the same names.
use devshell_vm as vm;
use devshell_vm::vfs::{Vfs, normalize_path};

use std::io::Write;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "seed-caller: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut vfs = Vfs::new();
    vfs.mkdir("/app/src").map_err(|e| e.to_string())?;
    vfs.write_file(
        "/app/Cargo.toml",
        b"[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )
    .map_err(|e| e.to_string())?;
    vfs.write_file(
        "/app/src/main.rs",
        "fn main() {\n    println!(\"hello from the seed caller\");\n}\n",
    )
    .map_err(|e| e.to_string())?;
    let cwd = normalize_path("/app/./src/..");
    vfs.set_cwd(&cwd).map_err(|e| e.to_string())?;

    let mut stderr = std::io::stderr();
    let session = vm::try_session_rc_or_host(&mut stderr);
    let cwd = vfs.cwd().to_string();
    let status = session
        .borrow_mut()
        .run_rust_tool(
            &mut vfs,
            &cwd,
            "cargo",
            &["build".to_string(), "--quiet".to_string()],
        )
        .map_err(|e| vm::error_chain(&e))?; // MIGRATION: print the chain (each cause once)
    if !status.success() {
        return Err(format!("cargo build failed: {status}"));
    }
    // MIGRATION: `read_file` returns shared bytes; `read_file_vec` is the `Vec<u8>` form.
    let binary: Vec<u8> = vfs
        .read_file_vec("/app/target/debug/app")
        .map_err(|e| e.to_string())?;
    if !binary.starts_with(b"\x7fELF") {
        return Err("the built binary is not an ELF file".to_string());
    }
    let status = session
        .borrow_mut()
        .run_rust_tool(
            &mut vfs,
            &cwd,
            "cargo",
            &["run".to_string(), "--quiet".to_string()],
        )
        .map_err(|e| vm::error_chain(&e))?;
    if !status.success() {
        return Err(format!("cargo run failed: {status}"));
    }
    let is_host = session.borrow().is_host_only();
    session
        .borrow_mut()
        .shutdown(&mut vfs, &cwd)
        .map_err(|e| vm::error_chain(&e))?;
    println!(
        "built and ran through the {} session",
        if is_host { "host" } else { "configured" }
    );
    Ok(())
}
