//! β benchmarks (filled in below).
fn main() {}
