//! Lima (γ) backend: runs `cargo` (or any tool) for an in-memory workspace inside a Lima
//! VM, driven through the `limactl` CLI.
//!
//! A [`GammaSession`] owns one Lima instance (`DEVSHELL_VM_LIMA_INSTANCE`, default
//! `devshell-rust`) whose configuration mounts the host **workspace parent**
//! ([`workspace_parent_for_instance`]) writable at the **guest mount**
//! (`DEVSHELL_VM_GUEST_WORKSPACE`, default `/workspace`).
//!
//! * **Lifecycle.** The instance's state comes from `limactl list --format json`
//!   (once per session); a stopped instance is started non-interactively
//!   (`limactl start --tty=false`) on first use, or at construction with
//!   `DEVSHELL_VM_EAGER`; `DEVSHELL_VM_STOP_ON_EXIT` stops it in
//!   [`GammaSession::shutdown`]. A missing instance, a missing workspace mount, a failed
//!   start (with the tail of `ha.stderr.log`), a program missing in the guest (exit
//!   127), a missing guest workdir and an unreachable guest (ssh exit 255) each have
//!   their own [`LimaError`] that says how to fix it. Anything that changes the guest
//!   (starting it, installing `build-essential`) is announced first and has its knob.
//! * **Exec.** `limactl shell --workdir <guest dir> <instance> -- [NAME=value…] command --
//!   <program> <args…>` ([`shell_argv`]): Lima quotes every argument into
//!   `$SHELL --login -c '…'`, so spaces, quotes, `$`, `=` and newlines reach the tool
//!   unchanged; the `command --` guard keeps a program or argument with `=` from being
//!   taken for one of Lima's leading environment assignments.
//! * **Mode S** (`sync`): [`devshell_vm_session::run_cycle`] into the workspace parent —
//!   push what changed, run in the guest image of the cwd, pull (also after a failure) —
//!   with the same project-root rule as the host backend
//!   ([`devshell_vm_session::project_root`]) and `CARGO_TARGET_DIR` pointed at the
//!   project's own `target/` in the guest. On a Linux host the pull lists only the
//!   directories the run changed (host-side inotify on the staging directory, see
//!   `docs/arch/lima.md`); elsewhere it scans in full.
//! * **Mode P** (`guest`): no sync; [`GuestFsOps`](devshell_vm_guest_fs::GuestFsOps) on
//!   the guest tree.
//! * **One channel per session.** Guest file operations (and short probes) go over a
//!   long-lived channel when the sidecar binary is available (`DEVSHELL_VM_SIDECAR_BIN`
//!   or `devshell-vm-sidecar` on `PATH`): one `limactl shell` runs
//!   `devshell-vm-sidecar --serve-stdio --root <mount>` in the guest (the binary reaches
//!   the guest through the workspace mount, else `limactl copy`; the guest architecture
//!   is checked first) and the session speaks the β protocol to it. Without it, each
//!   operation is one `limactl shell` running a small POSIX script (the earlier
//!   project's cost per Tab completion).
//!
//! * **Lima as it really behaves** (each point cited to Lima's source in
//!   `docs/arch/lima.md`): timed and cancellable runs are wrapped in a guest supervisor
//!   with a lifeline stdin, so a kill stops the guest process too (a killed
//!   `limactl shell` does not); `limactl --version` is read once per session and the
//!   stopped-instance behaviour of each release handled (2.0.3 exits 0 having run
//!   nothing); after `list`/`start` the session waits (bounded) until the mount answers;
//!   broken instances report Lima's `errors`; a read-only mount is refused for Mode S;
//!   the sidecar binary's format and target are checked on the host before copying
//!   ([`GammaSession::diagnostics`]); login-profile output never corrupts guest file
//!   reads or the channel handshake; `limactl` refusing root is said plainly.
//!
//! Tests run against `limactl-standin` (the dev-only crate `crates/limactl-standin`,
//! not shipped), which follows Lima's source mode by mode and runs guest commands in a
//! private mount namespace where only the guest mount path exists; what needs a real
//! Lima is listed in `docs/arch/lima.md`.

#![cfg(unix)]
#![allow(
    clippy::result_large_err,
    reason = "errors are rare and carry the diagnostics a person needs; boxing them buys nothing"
)]

mod binary;
mod channel;
mod error;
mod guest_ops;
mod limactl;
mod session;
mod workspace;

pub use binary::{BinaryKind, classify as classify_binary, musl_target};
pub use devshell_vm_session::{Backend, SessionError, SyncObserver};
pub use error::LimaError;
pub use limactl::{
    InstanceConfig, InstanceInfo, LimaVersion, MountInfo, is_env_name, parse_list, shell_argv,
};
pub use session::{ChannelState, GammaSession, SIDECAR_BIN_NAME, STAGING_DIR_NAME};
pub use workspace::workspace_parent_for_instance;

// The README's examples are compiled and run as doctests, so the crate's front page on
// crates.io cannot drift from the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
