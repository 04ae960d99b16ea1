//! Beta backend: client for the devshell-vm-sidecar daemon.
