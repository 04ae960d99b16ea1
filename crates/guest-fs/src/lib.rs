//! Guest path rules, the GuestFsOps contract, a mock and a conformance suite.
