//! End-to-end tests across devshell-vm crates with real cargo.
