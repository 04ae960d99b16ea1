//! Placeholder so the workspace manifest parses; the owning engineer replaces it.
fn main() {}
