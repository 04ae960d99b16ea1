//! The devshell-vm command line tool.

fn main() {}
