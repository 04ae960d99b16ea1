//! The config check, shared by the `config_env` fuzz target and the stable corpus
//! test. The input is read as lines `INDEX=VALUE` (INDEX picks one of `VARIABLES`, so
//! every variable's parser is reached; values keep their bytes, NUL included) or
//! `NAME=VALUE`. Parsing must never panic, and an error must name its variable and
//! stay short however long the value is (long values are cut).

use std::collections::BTreeMap;

use devshell_vm_config::{MAX_QUOTED_CHARS, VARIABLES, VmConfig};

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let name = match key.parse::<usize>() {
            Ok(index) => VARIABLES[index % VARIABLES.len()].name.to_owned(),
            Err(_) => key.to_owned(),
        };
        env.insert(name, value.to_owned());
    }
    match VmConfig::from_source(&env) {
        Ok(config) => {
            let _ = config.use_host_sandbox();
            let _ = config.export_base_dir();
        }
        Err(err) => {
            let shown = err.to_string();
            assert!(
                shown.contains(err.variable),
                "{shown:?} does not name {}",
                err.variable
            );
            // The value is quoted cut (at most MAX_QUOTED_CHARS characters, each
            // escaped to at most 10): the message stays short whatever the input.
            let bound = 10 * MAX_QUOTED_CHARS + err.problem.len() + err.accepted.len() + 200;
            assert!(
                shown.len() <= bound,
                "message of {} bytes (bound {bound}) for a value of {} characters",
                shown.len(),
                err.value.chars().count()
            );
        }
    }
    let fallback = VmConfig::host_fallback_from_source(&env);
    assert!(fallback.use_host_sandbox());
}
