//! Special files (FIFOs, devices) in the backing store: `write_file` onto one must be
//! refused or replace it with a regular file, and never write into it.

use crate::{GuestFsOps, GuestKind};

use super::__run_named;

// ---------------------------------------------------------------------------------
// special files (FIFOs, devices) in the backing store

/// A special file the checks ask an implementation's backing store to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    /// A named pipe, with a reader holding it open (so a write would not fail on its
    /// own: without a reader, opening a FIFO for writing fails with `ENXIO`).
    Fifo,
    /// A character device that swallows writes (the null device's numbers, 1:3).
    NullDevice,
}

/// Drains what arrived through a planted special file since it was planted (for a
/// FIFO: the bytes its reader can read; for a device: nothing is observable, return
/// an empty vector).
pub type SpecialProbe = Box<dyn FnMut() -> std::io::Result<Vec<u8>>>;

/// Creates a special file at `path` (relative to the mount, parents exist) on the
/// backing store, bypassing the implementation.
pub type PlantSpecial = Box<dyn Fn(&str, SpecialKind) -> std::io::Result<SpecialProbe>>;

/// What the special-file checks need from an implementation with real files.
pub struct SpecialFileFixture {
    /// A fresh implementation whose mount is an empty directory.
    pub ops: Box<dyn GuestFsOps>,
    /// Plants a FIFO or a device in the mount.
    pub plant: PlantSpecial,
    /// Anything that must live as long as the fixture.
    pub guard: Box<dyn std::any::Any>,
}

/// `write_file` onto a special file must be refused (an error, nothing written into
/// the node) or replace the node with a regular file holding exactly the data; it must
/// never write into the node and report success.
fn write_onto_special(mut fx: SpecialFileFixture, kind: SpecialKind) {
    let mount = fx.ops.mount().to_owned();
    let path = format!("{mount}/special");
    let mut probe = (fx.plant)("special", kind)
        .unwrap_or_else(|e| panic!("special-file fixture: cannot plant a {kind:?}: {e}"));
    let payload = b"devshell-vm payload that must not reach a pipe or a device\n";
    let result = fx.ops.write_file(&path, payload);
    let leaked = probe().unwrap_or_else(|e| panic!("special-file probe failed: {e}"));
    assert!(
        leaked.is_empty(),
        "write_file({path}) onto a {kind:?} wrote {} bytes into it (result {result:?})",
        leaked.len()
    );
    // An error is a refusal; success must mean the node was replaced.
    if result.is_ok() {
        let read = fx.ops.read_file(&path);
        assert!(
            read.as_deref().is_ok_and(|data| data == payload),
            "write_file({path}) onto a {kind:?} reported success, but the path does not hold the data as a regular file: read_file = {read:?}"
        );
        let stat = fx.ops.stat(&path);
        assert!(
            stat.as_ref().is_ok_and(|m| m.kind == GuestKind::File),
            "write_file({path}) onto a {kind:?} reported success, stat = {stat:?}"
        );
    }
    drop(fx.guard);
}

/// `write_file` onto a FIFO that has a reader.
pub fn write_file_onto_fifo_is_refused_or_replaced<F: FnOnce() -> SpecialFileFixture>(factory: F) {
    write_onto_special(factory(), SpecialKind::Fifo);
}

/// `write_file` onto a character device.
pub fn write_file_onto_char_device_is_refused_or_replaced<F: FnOnce() -> SpecialFileFixture>(
    factory: F,
) {
    write_onto_special(factory(), SpecialKind::NullDevice);
}

/// Calls every special-file check, each with a fresh fixture.
///
/// # Panics
/// On the first check the implementation fails, with a message naming the check.
pub fn run_special_file_all<F: FnMut() -> SpecialFileFixture>(mut factory: F) {
    __run_named("write_file_onto_fifo_is_refused_or_replaced", || {
        write_file_onto_fifo_is_refused_or_replaced(&mut factory);
    });
    __run_named("write_file_onto_char_device_is_refused_or_replaced", || {
        write_file_onto_char_device_is_refused_or_replaced(&mut factory);
    });
}
