//! Special files for the guest-fs conformance suite's special-file checks: a FIFO with
//! a reader held open, or a character device, planted on a backing store.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Drains what arrived through the planted node (see
/// `devshell_vm_guest_fs::conformance::SpecialProbe`).
pub type Probe = Box<dyn FnMut() -> io::Result<Vec<u8>>>;

/// Plants a FIFO at `path` and opens a non-blocking reader on it (kept in the probe),
/// so a writer could open it; the probe returns every byte written into it so far.
///
/// # Errors
/// When the FIFO cannot be created or opened.
pub fn plant_fifo(path: &Path) -> io::Result<Probe> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644))?;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    Ok(Box::new(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }))
}

/// Plants a character device with the null device's numbers (1:3) at `path` (needs
/// `CAP_MKNOD`: the tests run as root). Writes into it vanish, so the probe has nothing
/// to report.
///
/// # Errors
/// When `mknod` fails.
pub fn plant_null_device(path: &Path) -> io::Result<Probe> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .map_err(|e| io::Error::other(format!("mknod {} (needs root): {e}", path.display())))?;
    Ok(Box::new(|| Ok(Vec::new())))
}

/// [`plant_fifo`] when `fifo`, else [`plant_null_device`].
///
/// # Errors
/// As those.
pub fn plant(path: &Path, fifo: bool) -> io::Result<Probe> {
    if fifo {
        plant_fifo(path)
    } else {
        plant_null_device(path)
    }
}
