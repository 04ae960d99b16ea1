//! Integration tests of the `devshell-vm-sidecar` binary: a real process on a real
//! Unix socket, TCP loopback and stdio, real files and real child processes.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod abuse;
mod common;
mod conformance;
mod escape;
mod exec;
mod functional;
mod hardening;
mod security;
mod wire;
