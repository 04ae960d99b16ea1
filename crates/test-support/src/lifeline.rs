//! Child daemons tied to the test process: [`spawn_tied`] starts a process that gets
//! `SIGTERM` when the test process ends, however it ends (a panic that skips a `Drop`,
//! `SIGKILL`, a harness that exits with a `static` still holding the handle), so no
//! test leaves a daemon behind.
//!
//! Linux delivers the parent-death signal (`PR_SET_PDEATHSIG`) when the *thread* that
//! forked the child exits, not the process. Test harness threads end with each test,
//! so every tied child is forked by one spawner thread that lives as long as the
//! process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::sys::signal::Signal;

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that it receives `SIGTERM` when this process exits (SIGTERM, not
/// SIGKILL, so a sidecar still kills its tools' process groups and removes its socket).
///
/// # Errors
/// When the process cannot be spawned, or this process is already exiting.
pub fn spawn_tied(mut command: Command) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid) without allocating. std's
    // `pre_exec` is the only hook between fork and exec; nix provides the prctl call
    // but no safe way to run it in the child.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from)?;
            // The parent may have died between fork and prctl: then no signal comes.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("the test process exited during spawn"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((command, reply_tx))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread did not answer"))?
}

/// The one long-lived thread that forks tied children.
fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("tied-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    /// A tied child dies with its parent: a helper process (this test binary re-run
    /// as `sh`) spawns a tied `sleep` through a thread that exits at once, then is
    /// killed; the sleep must be gone.
    #[test]
    fn child_outlives_the_spawning_thread_but_not_the_process() {
        // The spawning test thread ends here; the child must survive that.
        let mut child = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("30").stdin(Stdio::null());
            spawn_tied(command).expect("spawn sleep")
        })
        .join()
        .expect("thread");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "a tied child died with the thread that asked for it"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    /// The process-death half: a helper process (this test binary, re-run with a
    /// filter selecting the ignored helper below) spawns a tied `sleep` and prints its
    /// pid; the helper is killed with SIGKILL (no destructor runs), the sleep must exit.
    #[test]
    fn child_gets_sigterm_when_the_parent_process_dies() {
        use std::io::{BufRead, BufReader};
        let exe = std::env::current_exe().expect("current_exe");
        let mut parent = Command::new(exe)
            .args([
                "--exact",
                "lifeline::tests::helper_spawns_tied_sleep",
                "--ignored",
                "--nocapture",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start helper");
        let stdout = parent.stdout.take().expect("piped");
        let pid: i32 = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("TIED-PID ")
                    .and_then(|p| p.trim().parse().ok())
            })
            .expect("the helper printed the tied child's pid");
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let state = s
                    .rfind(')')
                    .and_then(|i| s[i + 1..].split_whitespace().next());
                !matches!(state, Some("Z" | "X"))
            })
        };
        assert!(alive(pid), "the tied sleep {pid} is not running");
        parent.kill().expect("kill helper");
        parent.wait().expect("wait helper");
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "tied child {pid} outlived its parent process");
    }

    /// Helper process of the test above: spawns a tied `sleep`, prints its pid and
    /// waits to be killed (the sleep dies with it when run on its own).
    #[test]
    #[ignore = "helper process of child_gets_sigterm_when_the_parent_process_dies"]
    fn helper_spawns_tied_sleep() {
        let mut command = Command::new("sleep");
        command.arg("60").stdin(Stdio::null());
        let mut child = spawn_tied(command).expect("spawn");
        println!("TIED-PID {}", child.id());
        std::thread::sleep(Duration::from_mins(1));
        let _ = child.kill();
        let _ = child.wait();
    }
}
