//! The devshell-vm-sidecar daemon: serves the beta protocol over Unix socket, TCP or stdio.

fn main() {}
