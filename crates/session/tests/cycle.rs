//! The Mode S cycle on a real directory: push, run in the leaf, always pull; errors keep
//! their kind; a gate can skip the pull only when it says nothing changed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::fs;
use std::path::Path;
use std::time::Duration;

use devshell_vm_exec::{ExecOutcome, Termination};
use devshell_vm_session::{CycleError, ProjectTable, PullGate, SessionError, run_cycle};
use devshell_vm_sync::VmSyncError;
use devshell_vm_vfs::Vfs;

fn exited(code: i32) -> ExecOutcome {
    ExecOutcome {
        termination: Termination::Exited(code),
        stdout: Vec::new(),
        stderr: Vec::new(),
        duration: Duration::ZERO,
    }
}

fn sample() -> Vfs {
    let mut vfs = Vfs::new();
    vfs.mkdir("/w/app/src").unwrap();
    vfs.write_file("/w/app/Cargo.toml", "[package]\nname = \"app\"\n")
        .unwrap();
    vfs.write_file("/w/app/src/main.rs", "fn main() {}\n")
        .unwrap();
    vfs
}

#[test]
fn pushes_runs_in_the_leaf_and_always_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = sample();
    let mut table: ProjectTable<()> = ProjectTable::new();
    let at = table
        .project_for::<SessionError>(&vfs, "/w/app/src", || Ok(dir.path().to_path_buf()), || ())
        .unwrap();
    assert_eq!(at.relative_cwd, "src");
    let project = table.get_mut(at.index);
    let cycle = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        assert_eq!(
            fs::read(leaf.join("src/main.rs")).unwrap(),
            b"fn main() {}\n"
        );
        fs::write(leaf.join("out.txt"), "partial").unwrap();
        Ok::<_, std::io::Error>(exited(101))
    })
    .unwrap();
    assert_eq!(cycle.outcome.exec.termination, Termination::Exited(101));
    assert_eq!(cycle.outcome.push.files_written, 2);
    assert_eq!(cycle.outcome.pull.as_ref().unwrap().files_written, 1);
    assert!(!cycle.pull_skipped);
    assert_eq!(&vfs.read_file("/w/app/out.txt").unwrap()[..], b"partial");

    let err = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        fs::write(leaf.join("before-crash.txt"), "x").unwrap();
        Err::<ExecOutcome, _>(std::io::Error::other("transport broke"))
    })
    .unwrap_err();
    assert!(matches!(&err, CycleError::Run(e) if e.to_string() == "transport broke"));
    assert!(
        vfs.exists("/w/app/before-crash.txt"),
        "pulled after a runner error"
    );

    project.state.set_max_file_size(16);
    let err = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        fs::write(leaf.join("huge"), vec![1u8; 4096]).unwrap();
        Ok::<_, std::io::Error>(exited(0))
    })
    .unwrap_err();
    match err {
        CycleError::Session(SessionError::PullAfterRun {
            source,
            termination,
            ..
        }) => {
            assert!(
                matches!(*source, VmSyncError::FileTooLarge { .. }),
                "{source}"
            );
            assert_eq!(termination, Termination::Exited(0));
        }
        other => panic!("expected a pull error, got {other:?}"),
    }
    assert!(!vfs.exists("/w/app/huge"), "a failed pull changes nothing");
}

#[test]
fn a_failed_push_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = sample();
    let mut table: ProjectTable<()> = ProjectTable::new();
    let at = table
        .project_for::<SessionError>(&vfs, "/w/app", || Ok(dir.path().to_path_buf()), || ())
        .unwrap();
    vfs.remove("/w/app").unwrap();
    let err = run_cycle(
        table.get_mut(at.index),
        &mut vfs,
        "tool",
        |_: &Path| -> Result<ExecOutcome, std::io::Error> {
            panic!("must not run after a failed push")
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, CycleError::Session(SessionError::Push { .. })),
        "{err:?}"
    );
}

/// A gate that claims "nothing changed" when told to.
#[derive(Default)]
struct Claim {
    unchanged: bool,
    pushes: usize,
    pulls: Vec<bool>,
}

impl PullGate for Claim {
    fn after_push(&mut self, leaf: &Path, _: &devshell_vm_sync::SyncReport) {
        assert!(leaf.is_dir());
        self.pushes += 1;
    }
    fn pull_scope(&mut self) -> devshell_vm_sync::PullScope {
        if self.unchanged {
            devshell_vm_sync::PullScope::Dirs(std::collections::BTreeSet::new())
        } else {
            devshell_vm_sync::PullScope::Full
        }
    }
    fn after_pull(&mut self, ok: bool) {
        self.pulls.push(ok);
    }
}

#[test]
fn the_gate_decides_whether_to_pull_and_hears_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = sample();
    let mut table: ProjectTable<Claim> = ProjectTable::new();
    let at = table
        .project_for::<SessionError>(
            &vfs,
            "/w/app",
            || Ok(dir.path().to_path_buf()),
            Claim::default,
        )
        .unwrap();
    let project = table.get_mut(at.index);
    project.extra.unchanged = true;
    let cycle = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        fs::write(leaf.join("unseen.txt"), "x").unwrap();
        Ok::<_, std::io::Error>(exited(0))
    })
    .unwrap();
    assert!(cycle.pull_skipped);
    assert!(
        !vfs.exists("/w/app/unseen.txt"),
        "a gate that lies loses the write"
    );
    project.extra.unchanged = false;
    let cycle = run_cycle(project, &mut vfs, "tool", |_: &Path| {
        Ok::<_, std::io::Error>(exited(0))
    })
    .unwrap();
    assert!(!cycle.pull_skipped);
    assert!(vfs.exists("/w/app/unseen.txt"));
    assert_eq!(project.extra.pushes, 2);
    assert_eq!(project.extra.pulls, [true, true]);
}

#[test]
fn project_dirs_are_private_and_excludes_apply_to_new_projects() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = sample();
    vfs.mkdir("/other").unwrap();
    let mut table: ProjectTable<()> = ProjectTable::new();
    assert!(matches!(
        table.set_excludes(&["[bad"]),
        Err(SessionError::Exclude { .. })
    ));
    table.set_excludes(&["target/**"]).unwrap();
    let a = table
        .project_for::<SessionError>(&vfs, "/w/app", || Ok(dir.path().to_path_buf()), || ())
        .unwrap();
    let b = table
        .project_for::<SessionError>(&vfs, "/other", || Ok(dir.path().to_path_buf()), || ())
        .unwrap();
    assert_ne!(a.index, b.index);
    for index in [a.index, b.index] {
        let mode = fs::metadata(dir.path().join(index.to_string()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
    let project = table.get_mut(a.index);
    let _pulled = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        fs::create_dir_all(leaf.join("target/debug")).unwrap();
        fs::write(leaf.join("target/debug/app"), "bin").unwrap();
        Ok::<_, std::io::Error>(exited(0))
    })
    .unwrap();
    assert!(
        !vfs.exists("/w/app/target/debug/app"),
        "excluded from the pull"
    );
    let err = table
        .project_for::<SessionError>(&vfs, "/missing", || Ok(dir.path().to_path_buf()), || ())
        .unwrap_err();
    assert!(matches!(err, SessionError::Cwd { .. }), "{err}");
}

/// The workspace size budget set on the table reaches every project, present and
/// future: a tool that writes past it gets a failed pull and the VFS keeps its files.
#[test]
fn the_tables_workspace_budget_reaches_every_pull() {
    let dir = tempfile::tempdir().unwrap();
    let mut vfs = sample();
    let mut table: ProjectTable<()> = ProjectTable::new();
    table.set_max_workspace_bytes(Some(4096));
    let at = table
        .project_for::<SessionError>(&vfs, "/w/app/src", || Ok(dir.path().to_path_buf()), || ())
        .unwrap();
    let project = table.get_mut(at.index);
    assert_eq!(project.state.max_workspace_bytes(), 4096);
    let err = run_cycle(project, &mut vfs, "tool", |leaf: &Path| {
        fs::write(leaf.join("big.bin"), vec![0u8; 10_000]).unwrap();
        Ok::<_, std::io::Error>(exited(0))
    })
    .unwrap_err();
    let CycleError::Session(err) = err else {
        panic!("the runner did not fail: {err:?}")
    };
    let shown =
        std::error::Error::source(&err).map_or_else(|| err.to_string(), ToString::to_string);
    assert!(
        format!("{err} {shown}").contains("workspace size budget"),
        "{err}: {shown}"
    );
    assert!(!vfs.exists("/w/app/big.bin"));
    assert_eq!(
        &vfs.read_file("/w/app/src/main.rs").unwrap()[..],
        b"fn main() {}\n"
    );
    // Raising it later reaches the existing project.
    table.set_max_workspace_bytes(None);
    assert_eq!(
        table.get_mut(at.index).state.max_workspace_bytes(),
        devshell_vm_sync::DEFAULT_MAX_WORKSPACE_BYTES
    );
}
