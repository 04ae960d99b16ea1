//! Fault injection against the β backend over `wire-sync` (issue 15), on top of the
//! connection faults in `main.rs` (cut, sidecar killed, a flipped byte, a full tmpfs):
//!
//! * EIO mid-walk on the sidecar: while the tool runs, the sidecar's `/proc/PID/mem` (a
//!   read at offset 0 fails with `EIO`) is bind-mounted over a file of its output
//!   inside the sidecar's private mount namespace (`nsenter`), so the sidecar's pull
//!   meets a real `EIO`;
//! * files changing and vanishing in the sidecar's copy while it pulls: a churning
//!   writer started in the sidecar's mount namespace (`nsenter`);
//! * SIGKILL of the *client* process (the one running the `BetaSession`) mid-push and
//!   mid-pull, at points picked from its own markers, over many iterations.
//!
//! After each: the VFS is unchanged or what the last successful run says, the next run
//! makes the sidecar's copy equal to the VFS, and the failure was a typed error.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use devshell_vm_backend_beta::{BetaError, BetaSession};
use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
use devshell_vm_session::Backend as _;
use devshell_vm_test_support::chain;
use devshell_vm_test_support::kill_loop::{Landed, child_rounds, kill_in_phases, versioned};
use devshell_vm_vfs::Vfs;

use super::support::{RemoteSidecar, session};
use super::{run_ok, sh};

/// Names the child's job.
const CHILD_ENV: &str = "DEVSHELL_VM_BETA_FAULT_CHILD";
/// The directory the child keeps its VFS image in.
const DIR_ENV: &str = "DEVSHELL_VM_BETA_FAULT_DIR";
/// The sidecar's address and token file, for the child.
const ADDR_ENV: &str = "DEVSHELL_VM_BETA_FAULT_ADDR";
const TOKEN_ENV: &str = "DEVSHELL_VM_BETA_FAULT_TOKEN";

/// Every regular file under the project, as the tool sees it on the sidecar: relative
/// path → SHA-256 (`b3sum` is not in the guest; `sha256sum` is), compared with the VFS;
/// the churner's temporary files (excluded from pulls) are left out.
fn sidecar_tree(session: &mut BetaSession, vfs: &mut Vfs, root: &str) -> BTreeMap<String, String> {
    let out = run_ok(
        session,
        vfs,
        root,
        "find . -type f ! -path './churn/.t*' -exec sha256sum {} + | sort -k2",
    );
    out.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(sum, path)| (path.trim_start_matches("./").to_owned(), sum.to_owned()))
        .collect()
}

fn vfs_tree(vfs: &Vfs, root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in vfs.walk(root).unwrap() {
        if let Some(content) = entry.content().unwrap() {
            let rel = entry.path[root.len() + 1..].to_owned();
            let sum = Command::new("sha256sum")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    child.stdin.take().unwrap().write_all(content)?;
                    child.wait_with_output()
                })
                .unwrap();
            let text = String::from_utf8_lossy(&sum.stdout);
            out.insert(rel, text.split_whitespace().next().unwrap().to_owned());
        }
    }
    out
}

/// The sidecar's copy of `root` holds exactly the VFS's files.
fn assert_copy_is_the_vfs(session: &mut BetaSession, vfs: &mut Vfs, root: &str, what: &str) {
    let before = vfs.clone();
    let remote = sidecar_tree(session, vfs, root);
    assert!(
        vfs.same_tree(&before),
        "{what}: the listing run changed the VFS"
    );
    assert_eq!(
        remote,
        vfs_tree(vfs, root),
        "{what}: the sidecar's copy differs"
    );
}

// ---------------------------------------------------------------------------------
// EIO mid-walk on the sidecar.

#[test]
fn eio_in_the_sidecars_copy_is_a_typed_error_and_the_next_run_repairs() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = Vfs::new();
    vfs.mkdir("/e/sub").unwrap();
    vfs.write_file("/e/sub/a.txt", b"a".to_vec()).unwrap();
    vfs.write_file("/e/b.txt", b"b".to_vec()).unwrap();
    run_ok(&mut session, &mut vfs, "/e", "true");
    let before = vfs.clone();
    let guest_dir = run_ok(&mut session, &mut vfs, "/e", "pwd")
        .trim()
        .to_owned();
    let pid = sidecar.pid().to_string();
    let mem = format!("/proc/{pid}/mem");
    // While the tool runs (tools run confined), the file system under the sidecar's
    // copy starts failing: `nsenter` into the sidecar's mount namespace, bind-mount.
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "echo changed > b.txt && echo data > sub/eio.bin && echo ready && sleep 1",
        ],
    )
    .stdout(OutputMode::Stream)
    .stderr(OutputMode::Capture);
    let mut mounted = false;
    let err = session
        .run_tool_with(
            &mut vfs,
            "/e",
            &request,
            &mut |_, bytes| {
                if !mounted && String::from_utf8_lossy(bytes).contains("ready") {
                    let status = Command::new("nsenter")
                        .args(["--target", &pid, "--mount", "--", "mount", "--bind", &mem])
                        .arg(format!("{guest_dir}/sub/eio.bin"))
                        .status()
                        .unwrap();
                    assert!(
                        status.success(),
                        "nsenter + mount --bind failed: {status:?}"
                    );
                    mounted = true;
                }
            },
            None,
        )
        .expect_err("the sidecar cannot read sub/eio.bin");
    assert!(mounted, "the tool never said it was ready");
    let text = chain(&err);
    assert!(
        matches!(&err, BetaError::Remote { code, .. } | BetaError::Exec { code, .. } if code == "wire_io")
            || matches!(&err, BetaError::Wire { .. }),
        "expected a typed wire error, got {err:?}"
    );
    println!("EIO mid-pull reported as: {text}");
    assert!(
        text.contains("Input/output error") && text.contains("eio.bin"),
        "the error names EIO and the file: {text}"
    );
    assert!(
        vfs.same_tree(&before),
        "the VFS changed after a failed pull"
    );
    // The file system heals (the mount goes); the next run brings a consistent tree.
    let status = Command::new("nsenter")
        .args(["--target", &pid, "--mount", "--", "umount"])
        .arg(format!("{guest_dir}/sub/eio.bin"))
        .status()
        .unwrap();
    assert!(status.success(), "umount failed: {status:?}");
    assert_copy_is_the_vfs(&mut session, &mut vfs, "/e", "after the EIO");
    assert_eq!(
        &vfs.read_file("/e/b.txt").unwrap()[..],
        b"b",
        "the VFS is authoritative"
    );
    // Repaired in place: a failed scan does not cost the copy (the next push took in
    // what the tool had changed, then put back what the VFS holds).
    super::wait_for_log(&sidecar, "wire-sync: pull failed, copy kept");
    let logs = sidecar.logs();
    assert!(
        !logs.contains("resetting the copy"),
        "the copy was recreated after one failed scan:\n{logs}"
    );
}

// ---------------------------------------------------------------------------------
// Churn in the sidecar's copy while it pulls.

#[test]
fn files_churning_in_the_sidecars_copy_never_tear_the_vfs() {
    churn(1000, "small files");
}

/// As above with files of 70–130 KB: above the 64 KiB from which a pull's scan leaves a
/// file unread on disk, so the sidecar hashes and sends them piece by piece from the
/// file — and a rewrite in place between its hashing and its sending must break the
/// pull off, never reach the VFS.
#[test]
fn large_files_churning_in_the_sidecars_copy_never_tear_the_vfs() {
    churn(70_000, "large files");
}

/// The churn writer's process group, killed when stopped or dropped (a failed assertion
/// must not leave it writing forever).
struct Churner(std::process::Child);

impl Churner {
    /// Kills the whole group (a `head | tr` still writing a file would change the copy
    /// after the test's last run) and reaps the shell.
    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.0.wait().unwrap()
    }
}

impl Drop for Churner {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// A writer in the sidecar's namespace, rewriting, replacing and deleting files in
/// `guest_dir/churn` in a loop until killed (see [`churn`]).
fn start_churner(sidecar: &RemoteSidecar, guest_dir: &str, base: u32) -> std::process::Child {
    // In place in 4 KiB steps, so a reader can see a part. Paths are absolute: should
    // the sidecar ever recreate the copy, the writer goes on in the new tree (a
    // relative path would write into the removed one, unseen).
    let script = r#"cd "$1/churn" || exit 1
exec 2>/dev/null
d="$1/churn"
b="$2"
i=0
while :; do
  i=$((i + 1)); f=f$((i % 12))
  case $((i % 3)) in
    0) n=$((b + (i * 7919) % 60000)); { printf 'v%s:%s:' $i $n; head -c $((n - ${#i} - ${#n} - 3)) /dev/zero | tr '\0' "$((i % 10))"; } > "$d/$f" ;;
    1) rm -f "$d/$f" ;;
    2) n=$((b + (i * 7919) % 60000)); { printf 'v%s:%s:' $i $n; head -c $((n - ${#i} - ${#n} - 3)) /dev/zero | tr '\0' "$((i % 10))"; } > "$d/.t$f" && mv -f "$d/.t$f" "$d/$f" ;;
  esac
done"#;
    Command::new("nsenter")
        .args([
            "--target",
            &sidecar.pid().to_string(),
            "--mount",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(guest_dir)
        .arg(base.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Whether `content` is what the churn script writes — `v{i}:{n}:` then digit `i % 10`
/// up to `n` bytes — or a prefix of it (a torn read or write); empty counts as a prefix.
fn is_a_churned_version_or_prefix(content: &[u8]) -> bool {
    let text = String::from_utf8_lossy(content);
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let [version, len, _] = parts[..] else {
        // Cut inside the header: `v`, digits, at most one `:`, digits.
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        return match parts[..] {
            [""] => true,
            [v] => v.strip_prefix('v').is_some_and(digits),
            [v, n] => v.strip_prefix('v').is_some_and(digits) && digits(n),
            _ => false,
        };
    };
    let (Some(version), Ok(len)) = (
        version
            .strip_prefix('v')
            .and_then(|v| v.parse::<u64>().ok()),
        len.parse::<usize>(),
    ) else {
        return false;
    };
    let mut expected = format!("v{version}:{len}:").into_bytes();
    expected.resize(len, b'0' + u8::try_from(version % 10).unwrap_or(0));
    expected.starts_with(content)
}

/// A writer in the copy rewrites, replaces and deletes files of `base` to `base` + 60 KB
/// while the client runs `true` in a loop.
fn churn(base: u32, label: &str) {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let mut session = session(sidecar.addr, &sidecar.token_file);
    let mut vfs = Vfs::new();
    vfs.mkdir("/c").unwrap();
    vfs.write_file("/c/keep.txt", b"keep".to_vec()).unwrap();
    let pwd = run_ok(&mut session, &mut vfs, "/c", "mkdir -p churn && pwd");
    let guest_dir = pwd.trim().to_owned();
    let mut churner = Churner(start_churner(&sidecar, &guest_dir, base));
    session.set_pull_excludes(&["churn/.t*"]).unwrap();
    let (mut ok, mut failed) = (0_u32, 0_u32);
    let mut versions = std::collections::BTreeSet::new();
    let start = Instant::now();
    while ok + failed < 60 && start.elapsed() < Duration::from_mins(1) {
        let before = vfs.clone();
        match session.run_tool(&mut vfs, "/c", &sh("true")) {
            Ok(outcome) => {
                assert_eq!(outcome.exec.termination, Termination::Exited(0));
                ok += 1;
                for entry in vfs.list_dir("/c/churn").unwrap() {
                    let path = format!("/c/churn/{}", entry.name);
                    if let Ok(content) = vfs.read_file(&path) {
                        assert!(
                            is_a_churned_version_or_prefix(&content),
                            "{path}: torn content ({} bytes)",
                            content.len()
                        );
                        versions.insert(content[..content.len().min(12)].to_vec());
                    }
                }
            }
            Err(err) => {
                // A large output rewritten between its hashing and its sending: the
                // sidecar cannot finish the blob it announced and breaks the connection
                // off (its log says why); the next run reconnects.
                let broken_off = base > 64 * 1024
                    && matches!(&err, BetaError::ConnectionLost { during, .. } if during == "wire_pull");
                assert!(
                    broken_off || matches!(err, BetaError::Wire { .. } | BetaError::Remote { .. }),
                    "unexpected error under churn: {err:?}"
                );
                assert!(
                    vfs.same_tree(&before),
                    "a failed run changed the VFS: {err}"
                );
                failed += 1;
            }
        }
    }
    // The whole group: a `head | tr` still writing a file would change the copy after
    // the quiet run below.
    let status = churner.stop();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        status.code().is_none(),
        "the churner ended on its own ({status:?}): is nsenter available?"
    );
    println!(
        "churn of {label} over wire-sync: {ok} runs pulled, {failed} failed with a typed error, {} versions seen",
        versions.len()
    );
    assert!(ok > 0, "no run succeeded under churn ({failed} failed)");
    if base > 64 * 1024 {
        // The path under test ran: pulls sent files from the copy's disk.
        let logs = sidecar.logs();
        assert!(
            logs.lines().any(|line| line.contains("wire-sync: pull of")
                && !line.contains(", 0 sent from disk")
                && line.contains(" sent from disk")),
            "no pull sent a file from disk:\n{logs}"
        );
    }
    assert!(
        versions.len() > 10,
        "the churn never reached the VFS: {versions:?}"
    );
    // Quiet again: one run brings the churner's last state, then the copy is the VFS.
    run_ok(&mut session, &mut vfs, "/c", "true");
    assert_copy_is_the_vfs(&mut session, &mut vfs, "/c", "after the churn");
}

// ---------------------------------------------------------------------------------
// SIGKILL of the client mid-push and mid-pull.

/// Files the loop rewrites per round (the push) and the tool writes (the pull).
const FILES_PER_ROUND: u32 = 80;

/// Not a test on its own: the client loop the SIGKILL test starts and kills.
#[test]
#[ignore = "run by sigkill_of_the_client_mid_push_and_mid_pull_leaves_the_last_good_vfs"]
#[allow(
    clippy::disallowed_methods,
    reason = "the child's job comes from its parent test, not from user configuration"
)]
fn beta_fault_child() {
    let job = std::env::var(CHILD_ENV).expect("started by a fault test with its job");
    assert_eq!(job, "client-loop");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("the image directory"));
    let addr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    let token = PathBuf::from(std::env::var_os(TOKEN_ENV).unwrap());
    client_loop(&dir, addr, &token);
}

/// Markers on stdout for [`kill_in_phases`]: `push`, `tool-start`/`tool-end` (from the
/// tool), `pulled`, `saved N`.
fn client_loop(dir: &Path, addr: std::net::SocketAddr, token: &Path) {
    const ROOT: &str = "/k";
    let mut session = session(addr, token);
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "echo tool-start; r=$(cat round); rm -f out/*; for f in in/*; do tr 0-9 a-j < \"$f\" > out/${f#in/}; done; echo \"$r\" > out/round; echo tool-end",
        ],
    )
    .stdout(OutputMode::Stream)
    .stderr(OutputMode::Capture);
    child_rounds(
        &dir.join("vfs.img"),
        ROOT,
        &[],
        FILES_PER_ROUND,
        |vfs, marker| {
            session
                .run_tool_with(vfs, ROOT, &request, &mut |_, bytes| marker(bytes), None)
                .map(|outcome| outcome.exec)
                .map_err(|err| chain(&err))
        },
    )
}

/// `tr 0-9 a-j` of `data`, as the tool writes it.
fn shifted(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|&b| {
            if b.is_ascii_digit() {
                b - b'0' + b'a'
            } else {
                b
            }
        })
        .collect()
}

/// The image is one whole round: the output is the tool's copy of the same round's input.
fn assert_image_is_one_round(vfs: &Vfs, what: &str) -> u32 {
    let round: u32 = std::str::from_utf8(&vfs.read_file("/k/round").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    if round == 0 {
        return 0;
    }
    assert_eq!(
        String::from_utf8_lossy(&vfs.read_file("/k/out/round").unwrap()).trim(),
        round.to_string(),
        "{what}: the output is of another round"
    );
    for f in 0..FILES_PER_ROUND {
        let input = versioned(round * 1000 + f);
        assert_eq!(
            &vfs.read_file(&format!("/k/in/f{f}")).unwrap()[..],
            &input[..],
            "{what}: in/f{f}"
        );
        assert_eq!(
            &vfs.read_file(&format!("/k/out/f{f}")).unwrap()[..],
            &shifted(&input)[..],
            "{what}: out/f{f} is not round {round}'s"
        );
    }
    round
}

#[test]
fn sigkill_of_the_client_mid_push_and_mid_pull_leaves_the_last_good_vfs() {
    let sidecar = RemoteSidecar::start("256m", &[]);
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("vfs.img");
    let exe = std::env::current_exe().unwrap();
    let mut last_round = 0;
    let landed = kill_in_phases(
        16,
        || {
            let mut command = Command::new(&exe);
            command
                .args([
                    "--ignored",
                    "--exact",
                    "faults::beta_fault_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "client-loop")
                .env(DIR_ENV, dir.path())
                .env(ADDR_ENV, sidecar.addr.to_string())
                .env(TOKEN_ENV, &sidecar.token_file);
            command
        },
        |iteration| {
            let vfs = devshell_vm_vfs::image::load(&image)
                .unwrap_or_else(|e| panic!("iteration {iteration}: torn image: {e}"));
            let round = assert_image_is_one_round(&vfs, &format!("iteration {iteration}"));
            assert!(
                round >= last_round,
                "iteration {iteration}: the VFS went back"
            );
            last_round = round;
        },
    );
    println!("client kills landed: {landed:?}; last saved round {last_round}");
    assert!(
        landed.get(&Landed::Push).copied().unwrap_or(0) >= 2
            && landed.get(&Landed::Pull).copied().unwrap_or(0) >= 2,
        "too few kills inside a push or a pull: {landed:?}"
    );
    // A new client: its first run makes the sidecar's copy the VFS again (the killed
    // clients' half-done pushes and pulls are resolved in the VFS's favour).
    let mut vfs = devshell_vm_vfs::image::load(&image).unwrap();
    let mut session = session(sidecar.addr, &sidecar.token_file);
    assert_copy_is_the_vfs(&mut session, &mut vfs, "/k", "after the client kills");
    assert_image_is_one_round(&vfs, "after the client kills");
}
