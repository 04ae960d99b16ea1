//! Where variables come from: the [`EnvSource`] trait, its implementations for
//! maps, slices and closures, and the one reader of the process environment.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;

/// A read-only view of environment variables.
///
/// Implemented for `HashMap<String, String>`, `BTreeMap<String, String>`,
/// arrays and vectors of `(&str, &str)` pairs and vectors of `(String, String)`
/// pairs (the last pair with a name wins), and closures `Fn(&str) -> Option<String>`, so tests build a
/// [`VmConfig`](crate::VmConfig) from a map and never touch the process env.
///
/// ```
/// use devshell_vm_config::{EnvSource, VmConfig, Backend};
/// let cfg = VmConfig::from_source(&[("DEVSHELL_VM_BACKEND", "host")]).expect("valid");
/// assert_eq!(cfg.backend, Backend::Host);
/// let closure = |name: &str| (name == "DEVSHELL_VM").then(|| "off".to_string());
/// assert!(!VmConfig::from_source(&closure).expect("valid").enabled);
/// ```
pub trait EnvSource {
    /// The value of `name` as UTF-8, or `None` when unset (or not valid UTF-8,
    /// for sources that can hold such values; see [`EnvSource::get_os`]).
    fn get(&self, name: &str) -> Option<String>;

    /// The raw value of `name`. The default converts [`EnvSource::get`]; the
    /// process-environment source overrides it so non-UTF-8 values are seen
    /// (and rejected with a [`ConfigError`](crate::ConfigError) where text is
    /// required, or kept verbatim for paths).
    fn get_os(&self, name: &str) -> Option<OsString> {
        self.get(name).map(OsString::from)
    }
}

impl<S: std::hash::BuildHasher> EnvSource for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        last_match(self.iter().map(|(k, v)| (*k, *v)), name)
    }
}

impl EnvSource for Vec<(&str, &str)> {
    fn get(&self, name: &str) -> Option<String> {
        last_match(self.iter().map(|(k, v)| (*k, *v)), name)
    }
}

impl EnvSource for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        last_match(self.iter().map(|(k, v)| (k.as_str(), v.as_str())), name)
    }
}

/// The value of the last pair named `name` (like a later `export` overriding an earlier one).
fn last_match<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>, name: &str) -> Option<String> {
    pairs
        .filter(|(k, _)| *k == name)
        .last()
        .map(|(_, v)| v.to_string())
}

impl<F: Fn(&str) -> Option<String>> EnvSource for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The process environment. Private on purpose: the rest of the workspace reads
/// configuration through [`VmConfig::from_env`](crate::VmConfig::from_env) and the
/// `*_from_env` functions, never by name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.get_os(name).and_then(|v| v.into_string().ok())
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the single place in the workspace that reads the process environment"
    )]
    fn get_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// The process's `PATH` (read here, the one module allowed to read the environment).
pub(crate) fn process_path() -> Option<OsString> {
    ProcessEnv.get_os("PATH")
}

/// The whole process environment, as a tool started by this process inherits it (the
/// confined runs of the sandbox crate start from it). Read here, the one module allowed
/// to read the environment.
#[must_use]
#[allow(
    clippy::disallowed_methods,
    reason = "the config crate's single read site"
)]
pub fn inherited_environment() -> Vec<(OsString, OsString)> {
    std::env::vars_os().collect()
}

/// The process's `HOME` when absolute (fallback for the cargo and rustup homes of a
/// configuration built without an environment).
pub(crate) fn process_home() -> Option<std::path::PathBuf> {
    ProcessEnv
        .get_os("HOME")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
}
