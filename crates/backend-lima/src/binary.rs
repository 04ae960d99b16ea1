//! What a sidecar binary is, read from its header on the host before it is copied into
//! the guest: a Mach-O from a macOS host, an ELF for another architecture or one linked
//! against the build host's glibc cannot run in a Lima guest (or may not), and the
//! session should say so instead of falling back silently.

use std::io::Read;
use std::path::Path;

/// The format and target of a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryKind {
    /// A Linux ELF executable.
    Elf {
        /// Architecture in Lima's spelling (`x86_64`, `aarch64`, `riscv64`, `armv7l`,
        /// `i686`), or `machine <n>` for another `e_machine`.
        arch: String,
        /// `None` when statically linked; else the program interpreter
        /// (`/lib64/ld-linux-x86-64.so.2` for glibc, `/lib/ld-musl-….so.1` for musl).
        interpreter: Option<String>,
    },
    /// A Mach-O binary (macOS).
    MachO,
    /// A Windows PE binary.
    Pe,
    /// A script (`#!`).
    Script,
    /// Anything else.
    Unknown,
}

impl BinaryKind {
    /// One line for the session's diagnostics.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Elf {
                arch,
                interpreter: None,
            } => format!("static Linux ELF for {arch}"),
            Self::Elf {
                arch,
                interpreter: Some(interp),
            } if interp.contains("musl") => {
                format!("Linux ELF for {arch}, dynamically linked against musl ({interp})")
            }
            Self::Elf {
                arch,
                interpreter: Some(interp),
            } => format!(
                "Linux ELF for {arch}, dynamically linked against glibc ({interp}): the guest's glibc must be at least as new as the build host's"
            ),
            Self::MachO => "a Mach-O (macOS) binary".to_owned(),
            Self::Pe => "a Windows PE binary".to_owned(),
            Self::Script => "a script".to_owned(),
            Self::Unknown => "not an executable format the backend knows".to_owned(),
        }
    }
}

/// Reads the header of `path`.
///
/// # Errors
/// The file cannot be read.
pub(crate) fn inspect(path: &Path) -> std::io::Result<BinaryKind> {
    let mut file = std::fs::File::open(path)?;
    // The program headers of an executable sit near its start; 64 KiB covers them.
    let mut head = Vec::new();
    file.by_ref().take(64 * 1024).read_to_end(&mut head)?;
    Ok(classify(&head))
}

/// Classifies a binary from its first bytes.
#[must_use]
pub fn classify(head: &[u8]) -> BinaryKind {
    match head {
        [0x7f, b'E', b'L', b'F', ..] => elf(head).unwrap_or(BinaryKind::Unknown),
        [0xcf | 0xce, 0xfa, 0xed, 0xfe, ..]
        | [0xfe, 0xed, 0xfa, 0xcf | 0xce, ..]
        | [0xca, 0xfe, 0xba, 0xbe, ..] => BinaryKind::MachO,
        [b'M', b'Z', ..] => BinaryKind::Pe,
        [b'#', b'!', ..] => BinaryKind::Script,
        _ => BinaryKind::Unknown,
    }
}

fn elf(head: &[u8]) -> Option<BinaryKind> {
    let class64 = *head.get(4)? == 2;
    let little = *head.get(5)? == 1;
    let u16_at = |at: usize| -> Option<u64> {
        let b: [u8; 2] = head.get(at..at + 2)?.try_into().ok()?;
        Some(u64::from(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = head.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = head.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let arch = match u16_at(18)? {
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        243 => "riscv64".to_owned(),
        40 => "armv7l".to_owned(),
        3 => "i686".to_owned(),
        other => format!("machine {other}"),
    };
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32)?, u16_at(54)?, u16_at(56)?)
    } else {
        (u32_at(28)?, u16_at(42)?, u16_at(44)?)
    };
    let mut interpreter = None;
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize).ok()?;
        if u32_at(at)? != 3 {
            continue; // not PT_INTERP
        }
        let (offset, size) = if class64 {
            (u64_at(at + 8)?, u64_at(at + 32)?)
        } else {
            (u32_at(at + 4)?, u32_at(at + 16)?)
        };
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let bytes = head.get(start..end)?;
        interpreter = Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_owned(),
        );
    }
    Some(BinaryKind::Elf { arch, interpreter })
}

/// The Rust target of a static Linux build for a guest architecture.
#[must_use]
pub fn musl_target(arch: &str) -> Option<&'static str> {
    match arch {
        "x86_64" => Some("x86_64-unknown-linux-musl"),
        "aarch64" => Some("aarch64-unknown-linux-musl"),
        "riscv64" => Some("riscv64gc-unknown-linux-musl"),
        "armv7l" => Some("armv7-unknown-linux-musleabihf"),
        _ => None,
    }
}

/// How to get a sidecar the guest (`arch`) can run: build a static musl one when this
/// machine's Rust toolchain has the target installed, else what to install first.
#[must_use]
pub(crate) fn static_build_hint(arch: &str) -> String {
    let Some(target) = musl_target(arch) else {
        return format!(
            "build devshell-vm-sidecar for Linux {arch} and set DEVSHELL_VM_SIDECAR_BIN to it"
        );
    };
    let build = format!(
        "`cargo build --release -p devshell-vm-sidecar --target {target}` and set DEVSHELL_VM_SIDECAR_BIN=target/{target}/release/devshell-vm-sidecar"
    );
    if toolchain_has_target(target) {
        format!("a static musl build works in any Linux guest: {build}")
    } else {
        format!(
            "a static musl build works in any Linux guest: `rustup target add {target}` (plus a linker for it, e.g. Debian's `musl-tools` for the host's own architecture or a cross `{arch}-linux-musl-gcc`), then {build}"
        )
    }
}

/// `true` when `rustc`'s sysroot has the standard library for `target`.
fn toolchain_has_target(target: &str) -> bool {
    let Ok(out) = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib")
            .join(target)
            .join("lib")
            .is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_formats() {
        assert_eq!(classify(&[0xcf, 0xfa, 0xed, 0xfe, 7, 0]), BinaryKind::MachO);
        assert_eq!(classify(&[0xca, 0xfe, 0xba, 0xbe]), BinaryKind::MachO);
        assert_eq!(classify(b"MZ\x90\0"), BinaryKind::Pe);
        assert_eq!(classify(b"#!/bin/sh\n"), BinaryKind::Script);
        assert_eq!(classify(b"hello"), BinaryKind::Unknown);
        // A truncated ELF header is not a panic.
        assert_eq!(classify(b"\x7fELF\x02\x01"), BinaryKind::Unknown);
    }

    #[test]
    fn reads_this_test_binary() {
        let me = std::env::current_exe().expect("test binary");
        let BinaryKind::Elf { arch, .. } = inspect(&me).expect("readable") else {
            panic!("the test binary is an ELF");
        };
        assert_eq!(arch, std::env::consts::ARCH);
        if cfg!(target_env = "gnu") {
            let BinaryKind::Elf { interpreter, .. } = inspect(&me).expect("readable") else {
                unreachable!("checked above");
            };
            assert!(
                interpreter
                    .as_deref()
                    .is_some_and(|i| i.contains("ld-linux")),
                "{interpreter:?}"
            );
        }
    }

    #[test]
    fn musl_targets() {
        assert_eq!(musl_target("x86_64"), Some("x86_64-unknown-linux-musl"));
        assert_eq!(musl_target("aarch64"), Some("aarch64-unknown-linux-musl"));
        assert_eq!(musl_target("sparc"), None);
        assert!(static_build_hint("x86_64").contains("x86_64-unknown-linux-musl"));
    }
}
