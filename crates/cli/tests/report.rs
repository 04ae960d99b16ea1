//! `run --report FILE`: the JSON report parsed and checked against what happened, for a
//! successful build, a failing build, a timeout, a tool that deletes a file, and a tool
//! that cannot be started.

mod common;

use std::path::Path;

use common::{devshell, show, write_crate, write_tree};
use serde_json::Value;

/// Runs `devshell-vm run --dir DIR --report R [env] -- TOOL…` and returns the exit code
/// and the parsed report.
fn run_with_report(dir: &Path, env: &[(&str, &str)], tool: &[&str]) -> (Option<i32>, Value) {
    let base = tempfile::tempdir().expect("tempdir");
    let report = base.path().join("report.json");
    let mut command = devshell(base.path());
    command
        .args(["run", "--dir"])
        .arg(dir)
        .arg("--report")
        .arg(&report)
        .arg("--")
        .args(tool);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("run");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|err| panic!("no report ({err}):\n{}", show(&output)));
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("report is not JSON ({err}):\n{text}"));
    assert_eq!(value["schema"], 1, "{text}");
    assert_eq!(
        value["exit_code"].as_i64(),
        output.status.code().map(i64::from),
        "the report's exit code is the command's\n{text}\n{}",
        show(&output)
    );
    (output.status.code(), value)
}

fn paths(report: &Value, list: &str) -> Vec<String> {
    report["changes"][list]
        .as_array()
        .unwrap_or_else(|| panic!("changes.{list} is not an array: {report}"))
        .iter()
        .map(|c| c["path"].as_str().expect("path").to_owned())
        .collect()
}

#[test]
fn a_successful_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_crate(dir.path(), "hello", "fn main() { println!(\"hi\"); }\n");
    // A stale build directory on the host is ignored (/target), so not loaded.
    write_tree(dir.path(), &[("target/old", "stale")]);
    let (code, report) = run_with_report(dir.path(), &[], &["cargo", "build", "--quiet"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["command"],
        serde_json::json!(["cargo", "build", "--quiet"])
    );
    assert_eq!(report["backend"], "host");
    // The host backend confines the run and says how (the mode in force on this machine).
    let isolation = report["isolation"].as_str().expect("isolation reported");
    assert!(isolation.starts_with("isolation "), "{isolation}");
    eprintln!("isolation in force: {isolation}");
    assert!(
        report["isolation_note"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    assert_eq!(
        report["outcome"],
        serde_json::json!({"kind": "exited", "code": 0})
    );
    assert_eq!(report["input"]["kind"], "dir");
    assert_eq!(report["load"]["files"], 3, "{report:#}");
    assert_eq!(report["load"]["left_out_files"], 1, "{report:#}");
    assert_eq!(report["push"]["files"], 3, "{report:#}");
    assert!(
        report["pull"]["files"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
    assert!(
        report["pull"]["bytes"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
    for step in ["load", "push", "run", "pull", "total"] {
        assert!(
            report["durations_ms"][step]
                .as_f64()
                .is_some_and(|ms| ms >= 0.0),
            "durations_ms.{step}: {report:#}"
        );
    }
    assert!(report["durations_ms"]["save"].is_null());
    let created = paths(&report, "created");
    assert!(
        created.contains(&"/target/debug/hello".to_owned()),
        "{created:?}"
    );
    assert!(created.contains(&"/Cargo.lock".to_owned()), "{created:?}");
    assert!(paths(&report, "modified").is_empty(), "{report:#}");
    assert!(paths(&report, "deleted").is_empty(), "{report:#}");
    assert!(report["error"].is_null());
}

#[test]
fn a_failing_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_crate(dir.path(), "broken", "fn main() { let x: u32 = \"no\"; }\n");
    let (code, report) = run_with_report(dir.path(), &[], &["cargo", "build", "--quiet"]);
    assert_eq!(code, Some(101), "{report:#}");
    assert_eq!(
        report["outcome"],
        serde_json::json!({"kind": "exited", "code": 101})
    );
    // cargo wrote its lock file and target/ before the compiler failed; no binary.
    let created = paths(&report, "created");
    assert!(
        !created.contains(&"/target/debug/broken".to_owned()),
        "{created:?}"
    );
    assert!(paths(&report, "modified").is_empty(), "{report:#}");
    assert!(
        report["error"].is_null(),
        "a failing tool is not an error of the command"
    );
}

#[test]
fn a_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("a.txt", "a")]);
    let (code, report) = run_with_report(
        dir.path(),
        &[("DEVSHELL_VM_EXEC_TIMEOUT_MS", "300")],
        &["sh", "-c", "echo started > s.txt; exec sleep 30"],
    );
    assert_eq!(code, Some(124), "{report:#}");
    assert_eq!(
        report["outcome"],
        serde_json::json!({"kind": "timed_out", "timeout_ms": 300})
    );
    // What the tool wrote before it was killed came back.
    assert_eq!(paths(&report, "created"), ["/s.txt"], "{report:#}");
}

#[test]
fn a_tool_that_deletes_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[("a.txt", "a"), ("keep/b.txt", "b"), ("gone/c.txt", "c")],
    );
    let (code, report) = run_with_report(
        dir.path(),
        &[],
        &[
            "sh",
            "-c",
            "rm a.txt && rm -r gone && echo changed > keep/b.txt",
        ],
    );
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        report["changes"]["deleted"],
        serde_json::json!([
            {"path": "/a.txt", "kind": "file"},
            {"path": "/gone", "kind": "dir"},
            {"path": "/gone/c.txt", "kind": "file"},
        ]),
        "{report:#}"
    );
    assert_eq!(
        report["changes"]["modified"],
        serde_json::json!([{"path": "/keep/b.txt", "kind": "file"}])
    );
    assert!(paths(&report, "created").is_empty(), "{report:#}");
    assert_eq!(report["pull"]["deleted"], 2, "{report:#}");
    assert!(
        dir.path().join("a.txt").exists(),
        "without --write-back the directory is only read"
    );
}

#[test]
fn a_tool_that_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("a.txt", "a")]);
    let (code, report) = run_with_report(dir.path(), &[], &["no-such-tool-devshell"]);
    assert_eq!(code, Some(70), "{report:#}");
    assert_eq!(report["outcome"], serde_json::json!({"kind": "not_run"}));
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("no-such-tool-devshell")),
        "{report:#}"
    );
    assert_eq!(report["load"]["files"], 1);
}

#[test]
fn the_readme_documents_every_field_of_a_real_report() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let section = readme
        .split("### JSON report")
        .nth(1)
        .expect("README has a `### JSON report` section");
    let example = section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a json block in the section");
    let example: Value = serde_json::from_str(example).expect("the README example parses");

    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("a.txt", "a")]);
    let (_, real) = run_with_report(dir.path(), &[], &["rm", "a.txt"]);
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&example),
        keys(&real),
        "README example vs a real report"
    );
    for object in ["durations_ms", "load", "push", "input"] {
        assert_eq!(keys(&example[object]), keys(&real[object]), "{object}");
    }
    for key in keys(&real) {
        assert!(
            section.contains(&format!("| `{key}`")) || section.contains(&format!(", `{key}`")),
            "the README's field table lacks `{key}`"
        );
    }
}
