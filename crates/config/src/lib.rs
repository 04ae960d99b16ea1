//! Typed devshell-vm configuration read from DEVSHELL_VM* environment variables.
