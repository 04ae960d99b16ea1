//! `devshell-vm run` at a real terminal (a pseudo-terminal made by util-linux `script`):
//! a tool that reads the terminal gets its input instead of being stopped by `SIGTTIN`,
//! and Ctrl-C stops the tool while the session still pulls and saves what it wrote.
//!
//! `script` is required; a missing `script` fails the tests with a message (they never
//! skip silently).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_devshell-vm");

/// `script -q -e -c COMMAND /dev/null`: runs COMMAND as a session leader on a new
/// pseudo-terminal; what we write to its stdin is typed at that terminal.
fn in_terminal(command_line: &str, export_base: &Path) -> Command {
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c", command_line, "/dev/null"])
        .env("DEVSHELL_VM_BACKEND", "host")
        .env("DEVSHELL_EXPORT_BASE", export_base)
        // A regression (the tool stopped by SIGTTIN) ends as a timeout, not a hang.
        .env("DEVSHELL_VM_EXEC_TIMEOUT_MS", "20000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn spawn(mut command: Command) -> std::process::Child {
    command.spawn().unwrap_or_else(|err| {
        panic!("cannot run util-linux `script` (needed for a pseudo-terminal): {err}")
    })
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[test]
fn a_tool_can_read_the_terminal() {
    let base = tempfile::tempdir().expect("tempdir");
    let line = format!("{} run -- sh -c 'read x; echo got:$x'", shell_quote(BIN));
    let mut child = spawn(in_terminal(&line, base.path()));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(b"hello\n")
        .expect("type at the terminal");
    let output = child.wait_with_output().expect("script finishes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("got:hello"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}");
}

/// `(ppid, comm)` of a process, from `/proc/<pid>/stat`.
fn parent_and_name(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let parent = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((parent, name))
}

/// A `sleep` process descending from `ancestor`, if one runs.
fn sleeping_descendant(ancestor: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((mut parent, name)) = parent_and_name(pid) else {
            continue;
        };
        if name != "sleep" {
            continue;
        }
        while parent > 1 {
            if parent == ancestor {
                return Some(pid);
            }
            parent = parent_and_name(parent).map_or(0, |(p, _)| p);
        }
    }
    None
}

#[test]
fn ctrl_c_stops_the_tool_and_its_writes_are_saved() {
    let base = tempfile::tempdir().expect("tempdir");
    let image = base.path().join("ws.img");
    // The shell writes a file, then *becomes* `sleep` (exec), so the process that gets
    // Ctrl-C is the one whose death ends the tool (a shell waiting for a child defers
    // SIGINT until the child ends: that is shell semantics, not the session's).
    let line = format!(
        "{} run --save {} -- sh -c 'echo started > s.txt; exec sleep 60'",
        shell_quote(BIN),
        shell_quote(image.to_str().expect("utf-8 temp path"))
    );
    let mut child = spawn(in_terminal(&line, base.path().join("exports").as_path()));
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");

    // Type Ctrl-C once the tool is `sleep`.
    let deadline = Instant::now() + Duration::from_mins(1);
    let sleeper = loop {
        if let Some(pid) = sleeping_descendant(child.id()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the tool never reached `sleep`");
        std::thread::sleep(Duration::from_millis(20));
    };
    stdin.write_all(b"\x03").expect("type Ctrl-C");
    let mut seen = Vec::new();
    stdout.read_to_end(&mut seen).expect("read the terminal");
    let status = child.wait().expect("script finishes");
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(
        status.code(),
        Some(130),
        "exit 128 + SIGINT expected (sleep pid {sleeper}):\n{text}"
    );
    assert!(text.contains("killed by signal 2"), "{text}");

    let vfs = devshell_vm::vfs::image::load(&image).expect("the image was saved after Ctrl-C");
    assert_eq!(&*vfs.read_file("/s.txt").expect("pulled"), b"started\n");
}

/// Runs `line` in a pseudo-terminal and returns everything the terminal showed.
fn terminal_output(line: &str, export_base: &Path) -> String {
    let child = spawn(in_terminal(line, export_base));
    let output = child.wait_with_output().expect("script finishes");
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{shown}");
    shown
}

/// A directory with a few files, and the `run` arguments that load it, run a tool that
/// writes one file (so the pull moves something) and save an image.
fn progress_case(work: &Path) -> String {
    let dir = work.join("src");
    for index in 0..20 {
        let path = dir.join(format!("d{}/f{index}.txt", index % 4));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "content\n").expect("write");
    }
    format!(
        "run --dir {} --save {} -- sh -c 'echo x > out.txt'",
        shell_quote(dir.to_str().expect("utf-8")),
        shell_quote(work.join("ws.img").to_str().expect("utf-8"))
    )
}

#[test]
fn progress_bars_appear_on_a_terminal_and_never_in_a_pipe() {
    let work = tempfile::tempdir().expect("tempdir");
    let args = progress_case(work.path());
    // Delay 0: every step gets its bar (the half-second threshold is a unit test).
    let shown = terminal_output(
        &format!("{} --progress-delay-ms 0 {args}", shell_quote(BIN)),
        &work.path().join("exports"),
    );
    for bar in ["loading", "pushing", "pulling", "saving"] {
        assert!(
            shown.contains(bar),
            "no {bar} bar on the terminal:\n{shown:?}"
        );
    }
    assert!(
        shown.contains("\x1b["),
        "bars are drawn and cleared with escapes"
    );
    assert!(shown.contains("devshell-vm: loaded"), "{shown:?}");

    // The same run with stderr in a pipe: the summary lines only, no bar, no escape.
    let output = Command::new(BIN)
        .args(["--progress-delay-ms", "0"])
        .args(shell_words(&args))
        .env("DEVSHELL_VM_BACKEND", "host")
        .env("DEVSHELL_EXPORT_BASE", work.path().join("exports"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("devshell-vm: loaded"), "{stderr}");
    for bar in ["loading", "pushing", "pulling", "saving", "\x1b["] {
        assert!(!stderr.contains(bar), "{bar:?} in a pipe:\n{stderr}");
    }

    // --quiet on a terminal: nothing but the tool's own output (none here).
    let shown = terminal_output(
        &format!("{} --quiet --progress-delay-ms 0 {args}", shell_quote(BIN)),
        &work.path().join("exports"),
    );
    assert!(shown.trim().is_empty(), "--quiet printed:\n{shown:?}");
}

/// Splits the single-quoted arguments built by [`progress_case`] back into words.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '\\' if !quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            other => word.push(other),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}
