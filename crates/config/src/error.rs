//! The crate's one error type.

/// A variable held a value this crate does not accept.
///
/// It names the variable, the value exactly as found (lossily converted to UTF-8
/// when the raw value was not UTF-8), what went wrong and what would have been
/// accepted, so the message alone tells a person how to fix their environment.
///
/// The message quotes at most [`MAX_QUOTED_CHARS`] characters of the value; a longer
/// one is cut with a note of its length (the field keeps it whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {variable}={}: {problem} (accepted: {accepted})",
    quoted(value)
)]
#[non_exhaustive]
pub struct ConfigError {
    /// The environment variable that held the value, e.g. `DEVSHELL_VM_BACKEND`.
    pub variable: &'static str,
    /// The value as found (not trimmed).
    pub value: String,
    /// What is wrong with it, e.g. `port 0 is out of range`.
    pub problem: String,
    /// What the variable accepts.
    pub accepted: &'static str,
}

impl ConfigError {
    /// Builds an error for `variable` holding `value`.
    #[must_use]
    pub fn new(
        variable: &'static str,
        value: impl Into<String>,
        problem: impl Into<String>,
        accepted: &'static str,
    ) -> Self {
        Self {
            variable,
            value: value.into(),
            problem: problem.into(),
            accepted,
        }
    }
}

/// Characters of a bad value an error message quotes before cutting it.
pub const MAX_QUOTED_CHARS: usize = 120;

/// `value` in quotes (Rust debug escaping), cut after [`MAX_QUOTED_CHARS`] characters
/// with a note of the whole length.
pub(crate) fn quoted(value: &str) -> String {
    let total = value.chars().count();
    if total <= MAX_QUOTED_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(MAX_QUOTED_CHARS).collect();
    format!("{head:?}... (cut: {total} characters in all)")
}
