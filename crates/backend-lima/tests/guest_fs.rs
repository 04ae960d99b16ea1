//! `GammaSession`'s `GuestFsOps` against the limactl stand-in: the guest-fs conformance
//! suites over the long-lived sidecar channel and over one `limactl shell` per operation,
//! and the number of `limactl` spawns each way.

mod common;

use common::{Fixture, MOUNT};
use devshell_vm_backend_lima::Backend as _;
use devshell_vm_backend_lima::{ChannelState, GammaSession};
use devshell_vm_guest_fs::conformance::{SpecialFileFixture, SpecialKind, SymlinkFixture};
use devshell_vm_guest_fs::{GuestFsOps, GuestKind};

/// A Mode P session on a fresh fixture, with or without the sidecar channel. The fixture
/// is kept alive by the returned guard.
fn session(channel: bool) -> (GammaSession, Fixture) {
    let fixture = Fixture::new("Running");
    let mut config = fixture.config(true);
    if channel {
        config.sidecar_bin = Some(common::sidecar());
    }
    let mut session = GammaSession::new(&config).expect("session");
    session.set_notice_writer(Box::new(std::io::sink()));
    session.set_channel_enabled(channel);
    (session, fixture)
}

/// Keeps the fixture (temp dirs) alive as long as the ops.
struct Held {
    session: GammaSession,
    _fixture: Fixture,
}

impl GuestFsOps for Held {
    fn mount(&self) -> &str {
        self.session.mount()
    }
    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, devshell_vm_guest_fs::GuestFsError> {
        self.session.list_dir(path)
    }
    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, devshell_vm_guest_fs::GuestFsError> {
        self.session.read_file(path)
    }
    fn write_file(
        &mut self,
        path: &str,
        data: &[u8],
    ) -> Result<(), devshell_vm_guest_fs::GuestFsError> {
        self.session.write_file(path, data)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), devshell_vm_guest_fs::GuestFsError> {
        self.session.mkdir(path)
    }
    fn remove(&mut self, path: &str) -> Result<(), devshell_vm_guest_fs::GuestFsError> {
        self.session.remove(path)
    }
    fn stat(
        &mut self,
        path: &str,
    ) -> Result<devshell_vm_guest_fs::GuestMetadata, devshell_vm_guest_fs::GuestFsError> {
        self.session.stat(path)
    }
    fn exists(&mut self, path: &str) -> Result<bool, devshell_vm_guest_fs::GuestFsError> {
        self.session.exists(path)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), devshell_vm_guest_fs::GuestFsError> {
        self.session.rename(from, to)
    }
}

fn held(channel: bool) -> Box<dyn GuestFsOps> {
    let (session, fixture) = session(channel);
    Box::new(Held {
        session,
        _fixture: fixture,
    })
}

fn symlink_fixture(channel: bool) -> SymlinkFixture {
    let (session, fixture) = session(channel);
    let parent = fixture.parent.path().to_path_buf();
    let sentinel = tempfile::tempdir().expect("sentinel");
    SymlinkFixture {
        ops: Box::new(session),
        plant_symlink: Box::new(move |link, target| {
            std::os::unix::fs::symlink(target, parent.join(link))
        }),
        sentinel: sentinel.path().to_path_buf(),
        guard: Box::new((fixture, sentinel)),
    }
}

/// Finding 5 of issue 15: `write_file` onto a FIFO or a device planted in the guest's
/// workspace is refused (or the node replaced), over the channel and per operation.
fn special_fixture(channel: bool) -> SpecialFileFixture {
    let (session, fixture) = session(channel);
    let parent = fixture.parent.path().to_path_buf();
    SpecialFileFixture {
        ops: Box::new(session),
        plant: Box::new(move |rel: &str, kind: SpecialKind| {
            devshell_vm_test_support::special::plant(&parent.join(rel), kind == SpecialKind::Fifo)
        }),
        guard: Box::new(fixture),
    }
}

devshell_vm_guest_fs::guest_fs_conformance_tests!(mod per_op_shell, || held(false));
devshell_vm_guest_fs::guest_fs_special_file_tests!(mod per_op_shell_special_files, || special_fixture(false));
devshell_vm_guest_fs::guest_fs_special_file_tests!(mod sidecar_channel_special_files, || special_fixture(true));
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(mod per_op_shell_symlinks, || symlink_fixture(false));
devshell_vm_guest_fs::guest_fs_conformance_tests!(mod sidecar_channel, || held(true));
devshell_vm_guest_fs::guest_fs_symlink_escape_tests!(mod sidecar_channel_symlinks, || symlink_fixture(true));

#[test]
fn one_limactl_shell_carries_every_operation_when_the_sidecar_is_reachable() {
    let (mut session, fixture) = session(true);
    for i in 0..20 {
        session
            .write_file(
                &format!("{MOUNT}/d/f{i}"),
                format!("content {i}").as_bytes(),
            )
            .expect("write");
    }
    for i in 0..20 {
        assert_eq!(
            session.read_file(&format!("{MOUNT}/d/f{i}")).expect("read"),
            format!("content {i}").as_bytes()
        );
    }
    assert_eq!(
        session.list_dir(&format!("{MOUNT}/d")).expect("list").len(),
        20
    );
    assert_eq!(
        session.stat(&format!("{MOUNT}/d")).expect("stat").kind,
        GuestKind::Dir
    );
    assert_eq!(session.channel_state(), &ChannelState::Open);
    // The files are really in the host workspace parent (the guest mount's location).
    assert_eq!(
        std::fs::read(fixture.parent.path().join("d/f7")).expect("host file"),
        b"content 7"
    );
    // Once per session `--version`, `list` and the readiness probe (`shell … test -d
    // <mount>`); then one `copy` (the sidecar lies outside the workspace) and one `shell`
    // for the channel — not one per operation.
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "copy", "shell"]
    );
    assert_eq!(session.limactl_spawns(), 5);
}

#[test]
fn without_the_sidecar_each_operation_is_one_limactl_shell() {
    let (mut session, fixture) = session(false);
    session
        .write_file(&format!("{MOUNT}/a"), b"x")
        .expect("write");
    assert_eq!(
        session.read_file(&format!("{MOUNT}/a")).expect("read"),
        b"x"
    );
    assert!(session.exists(&format!("{MOUNT}/a")).expect("exists"));
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "shell", "shell", "shell"]
    );
}

#[test]
fn captured_tool_runs_go_over_the_channel_too() {
    use devshell_vm_exec::{OutputMode, Termination, ToolRequest};
    let (mut session, fixture) = session(true);
    std::fs::create_dir(fixture.parent.path().join("p")).expect("mkdir");
    let mut vfs = devshell_vm_vfs::Vfs::new();
    vfs.mkdir("/p").expect("mkdir");
    let request = ToolRequest::new(
        "sh",
        [
            "-c",
            "pwd; printf '%s' \"$1\" >&2; exit 3",
            "sh",
            "a 'b' $c",
        ],
    )
    .stdout(OutputMode::Capture)
    .stderr(OutputMode::Capture);
    let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
    assert_eq!(outcome.exec.termination, Termination::Exited(3));
    assert_eq!(outcome.exec.stdout, b"/workspace/p\n");
    assert_eq!(outcome.exec.stderr, b"a 'b' $c");
    // A timeout kills it at the deadline.
    let slow = ToolRequest::new("sleep", ["5"])
        .stdout(OutputMode::Capture)
        .timeout(Some(std::time::Duration::from_millis(200)));
    let outcome = session.run_tool(&mut vfs, "/p", &slow).expect("run");
    assert_eq!(outcome.exec.termination, Termination::TimedOut);
    // Missing workdir and missing program are errors, not statuses.
    vfs.mkdir("/q").expect("mkdir");
    assert!(matches!(
        session.run_tool(
            &mut vfs,
            "/q",
            &ToolRequest::new("true", Vec::<String>::new())
                .stdout(OutputMode::Null)
                .stderr(OutputMode::Null)
        ),
        Err(devshell_vm_backend_lima::LimaError::WorkdirMissing { .. })
    ));
    assert!(matches!(
        session.run_tool(
            &mut vfs,
            "/p",
            &ToolRequest::new("no-such-tool-xyz", Vec::<String>::new())
                .stdout(OutputMode::Capture)
                .stderr(OutputMode::Capture)
        ),
        Err(devshell_vm_backend_lima::LimaError::ProgramMissing { program, .. }) if program == "no-such-tool-xyz"
    ));
    // The tool's own 1, 127 and 255 stay statuses over the channel too.
    for code in [1, 127, 255] {
        let request = ToolRequest::new("sh", ["-c".to_owned(), format!("exit {code}")])
            .stdout(OutputMode::Capture)
            .stderr(OutputMode::Capture);
        let outcome = session.run_tool(&mut vfs, "/p", &request).expect("run");
        assert_eq!(outcome.exec.termination, Termination::Exited(code));
    }
    assert_eq!(session.channel_state(), &ChannelState::Open);
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "copy", "shell"],
        "no extra limactl spawn"
    );
}

#[test]
fn a_sidecar_that_does_not_answer_falls_back_to_one_shell_per_operation() {
    let fixture = Fixture::new("Running");
    let mut config = fixture.config(true);
    // Exists and runs, but is no sidecar: the handshake gets end of input.
    config.sidecar_bin = Some(std::path::PathBuf::from("/bin/true"));
    let mut session = GammaSession::new(&config).expect("session");
    let notices = common::Notices::default();
    session.set_notice_writer(Box::new(notices.clone()));
    session
        .write_file(&format!("{MOUNT}/x"), b"1")
        .expect("write");
    assert_eq!(
        session.read_file(&format!("{MOUNT}/x")).expect("read"),
        b"1"
    );
    assert!(
        matches!(session.channel_state(), ChannelState::Fallback(reason) if reason.contains("closed")),
        "{:?}",
        session.channel_state()
    );
    assert!(
        notices.text().contains("one `limactl shell` per operation"),
        "{}",
        notices.text()
    );
    assert_eq!(
        fixture.subcommands(),
        [
            "--version",
            "list",
            "shell",
            "copy",
            "shell",
            "shell",
            "shell"
        ]
    );
}

#[test]
fn a_sidecar_under_the_workspace_parent_reaches_the_guest_through_the_mount() {
    // No `limactl copy`: the guest runs the binary at its guest path (the host path is
    // hidden in the stand-in's guest, so a host path here would fail to start).
    let fixture = Fixture::new("Running");
    let tools = fixture.parent.path().join("tools");
    std::fs::create_dir(&tools).expect("mkdir");
    let sidecar = tools.join("devshell-vm-sidecar");
    std::fs::copy(common::sidecar(), &sidecar).expect("copy the sidecar into the workspace");
    let mut config = fixture.config(true);
    config.sidecar_bin = Some(sidecar);
    let mut session = GammaSession::new(&config).expect("session");
    session.set_notice_writer(Box::new(std::io::sink()));
    session
        .write_file(&format!("{MOUNT}/x"), b"via mount")
        .expect("write");
    assert_eq!(
        session.read_file(&format!("{MOUNT}/x")).expect("read"),
        b"via mount"
    );
    assert_eq!(session.channel_state(), &ChannelState::Open);
    assert_eq!(
        fixture.subcommands(),
        ["--version", "list", "shell", "shell"]
    );
    let shell = &fixture.invocations()[3];
    assert!(
        shell
            .iter()
            .any(|a| a == &format!("{MOUNT}/tools/devshell-vm-sidecar")),
        "the channel runs the sidecar at its guest path: {shell:?}"
    );
}

/// A session whose instance was deleted behind its back (`limactl delete` from another
/// shell) after the session was made: it cannot be started again, so every operation
/// fails with a transport-kind error, and bad paths are still refused locally. (A merely
/// stopped instance is started again by the session, so it is not unreachable.)
fn deleted_behind_its_back(channel: bool) -> Box<dyn GuestFsOps> {
    let (session, fixture) = session(channel);
    std::fs::remove_dir_all(fixture.lima_home.path().join(common::INSTANCE))
        .expect("delete the instance");
    Box::new(Held {
        session,
        _fixture: fixture,
    })
}

#[test]
fn a_deleted_instance_fails_loudly_per_op_shell() {
    devshell_vm_guest_fs::conformance::unreachable_backend_fails_loudly(|| {
        deleted_behind_its_back(false)
    });
}

#[test]
fn a_deleted_instance_fails_loudly_over_the_channel() {
    devshell_vm_guest_fs::conformance::unreachable_backend_fails_loudly(|| {
        deleted_behind_its_back(true)
    });
}
