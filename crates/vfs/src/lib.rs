//! In-memory workspace tree with metadata, a change journal and workspace images.
//!
//! [`Vfs`] holds the project tree a caller edits in memory: directories, regular files
//! and symlinks (stored as text, never followed), each with Unix permission bits and a
//! nanosecond mtime. File contents are [`Content`] (`Arc<[u8]>`): reading returns a
//! reference-count bump, listing never clones a subtree.
//!
//! # Paths
//! Unix style, absolute or relative to [`Vfs::cwd`]; `.` and empty segments are dropped,
//! `..` pops and clamps at `/`. A name is any UTF-8 except empty, `.`, `..`, or one
//! containing `/` or NUL. Paths deeper than [`MAX_DEPTH`] components are refused.
//!
//! # Change journal
//! Every successful mutation advances [`Vfs::generation`] (process-wide unique values)
//! and appends the paths it created, changed, moved or removed to a bounded change log.
//! [`Vfs::changes_since`] answers "what changed under PATH since generation G" from the
//! log entries newer than G (found by binary search), looking each path up in the tree:
//! time proportional to the changes times the depth, never to the tree size or a
//! directory's fan-out. Renames are reported as delete + create. Directory mtimes are
//! not bumped by changes to their children.
//!
//! # I/O
//! The tree does no I/O except [`Vfs::copy_tree_to_host`], the [`image`] module
//! (versioned, checksummed, atomically saved workspace images) and reading [`lazy`]
//! contents.
//!
//! # Lazy content
//! A file can hold a [`LazyContent`] instead of bytes ([`Vfs::write_file_lazy`]): an
//! open descriptor of a host file, read on the first read of the file and checked
//! against the identity it had when recorded, so a sync pull need not read large build
//! outputs nobody looks at. Every reader returns the same [`Content`]; a host file
//! changed in place before the read gives [`VfsError::ContentChanged`], never other
//! bytes. Clones share lazy contents; [`Vfs::materialize_shared_lazy`] reads those a
//! clone holds before the host files may change. See the [`lazy`] module.
//!
//! ```
//! use std::sync::Arc;
//! use devshell_vm_vfs::{LazyContent, LazySlot, Vfs};
//!
//! let dir = tempfile::tempdir()?;
//! let host = dir.path().join("big.rmeta");
//! std::fs::write(&host, vec![7u8; 100_000])?;
//! let slot = LazySlot::reserve().expect("below the descriptor cap");
//! let lazy = LazyContent::new(std::fs::File::open(&host)?, slot, &host, "/p/big.rmeta")?;
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/p")?;
//! vfs.write_file_lazy("/p/big.rmeta", Arc::new(lazy), 0o644, std::time::SystemTime::now())?;
//! assert_eq!(vfs.stat("/p/big.rmeta")?.size, 100_000); // nothing read yet
//! drop(dir); // the host directory goes away; the descriptor keeps the file
//! assert_eq!(vfs.read_file("/p/big.rmeta")?.len(), 100_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use devshell_vm_vfs::Vfs;
//!
//! let mut vfs = Vfs::new();
//! vfs.mkdir("/proj/src")?;
//! vfs.write_file("/proj/src/main.rs", b"fn main() {}".to_vec())?;
//! let since = vfs.generation();
//! vfs.write_file("/proj/Cargo.toml", b"[package]".to_vec())?;
//! let changes = vfs.changes_since("/proj", since)?;
//! assert_eq!(changes.upserted, ["/proj/Cargo.toml"]);
//! # Ok::<(), devshell_vm_vfs::VfsError>(())
//! ```

mod compat;
mod error;
mod host;
pub mod image;
pub mod lazy;
mod node;
mod path;
mod vfs;

pub use compat::{IntoContent, Node, normalize_path, resolve_path_with_cwd};
pub use error::VfsError;
pub use image::ImageError;
pub use lazy::{FileIdentity, LazyContent, LazySlot};
pub use node::{Content, DirEntry, Metadata, NodeKind, NodeRef, Walk, WalkEntry};
pub use path::MAX_DEPTH;
pub use vfs::{Changes, DEFAULT_HISTORY_LIMIT, Vfs};

#[cfg(test)]
mod tests;

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
