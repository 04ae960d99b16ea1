//! The request check, shared by the `requests` fuzz target and the stable corpus test:
//! the first byte picks one request type (`op`), the rest is the body of its JSON
//! object, so every request type's parser is reached with mostly well-formed JSON.
//! Parsing must never panic; a parsed request must re-encode and re-parse to itself
//! and name its own op; an error must be recoverable and carry an error code.

use devshell_vm_protocol::{Request, encode_request, parse_request};

/// Runs the check on one input; panics on a violation.
pub(crate) fn check(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let ops = Request::OPS;
    let op = ops[usize::from(pick) % ops.len()];
    let rest = String::from_utf8_lossy(rest);
    let line = format!("{{\"op\":\"{op}\",{rest}");
    for candidate in [line.as_str(), rest.as_ref()] {
        match parse_request(candidate) {
            Ok(request) => {
                let encoded = encode_request(&request);
                let again = parse_request(&encoded).expect("a re-encoded request parses");
                assert_eq!(again, request, "round trip of {encoded}");
                assert!(
                    Request::OPS.contains(&request.op()),
                    "parsed request names an unknown op {}",
                    request.op()
                );
            }
            Err(err) => {
                assert!(err.is_recoverable(), "unrecoverable parse error: {err}");
                let _ = err.error_code();
            }
        }
    }
}
