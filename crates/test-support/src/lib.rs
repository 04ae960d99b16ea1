//! Test and benchmark helpers shared by devshell-vm crates (not shipped).
