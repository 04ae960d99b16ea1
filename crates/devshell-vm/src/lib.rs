//! devshell-vm facade: one session object to run cargo on an in-memory workspace in isolation.
