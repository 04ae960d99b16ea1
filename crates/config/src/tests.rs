//! Data-driven tests: every variable, good and bad values.
#![allow(
    clippy::unnecessary_wraps,
    clippy::too_many_lines,
    clippy::type_complexity,
    reason = "test tables: helpers build Option fields, the case table is long by design"
)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::*;

/// A source holding raw (possibly non-UTF-8) values, like the process env.
struct OsSource(Vec<(String, OsString)>);

impl EnvSource for OsSource {
    fn get(&self, name: &str) -> Option<String> {
        self.get_os(name).and_then(|v| v.into_string().ok())
    }
    fn get_os(&self, name: &str) -> Option<OsString> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn non_utf8() -> OsString {
    OsString::from_vec(b"/bad\xff".to_vec())
}

/// One observable field of a [`VmConfig`].
#[derive(Debug, Clone, PartialEq)]
enum F {
    Enabled(bool),
    BetaSync(BetaSync),
    Backend(Backend),
    Mode(WorkspaceMode),
    Eager(bool),
    Instance(&'static str),
    Limactl(Option<PathBuf>),
    GuestWs(&'static str),
    Parent(Option<PathBuf>),
    CargoRoot(bool),
    Timeout(Option<Duration>),
    WorkspaceMax(Option<u64>),
    Socket(Option<Transport>),
    Staging(Option<&'static str>),
    StopOnExit(bool),
    Hints(bool),
    BuildEssential(bool),
    InternalRepl(bool),
    ExportBase(Option<PathBuf>),
    SidecarBin(Option<PathBuf>),
    TokenFile(Option<PathBuf>),
    Isolation(Isolation),
    Network(NetworkPolicy),
    Limits(Limits),
}

/// Reads from `cfg` the field that `like` names.
fn field(cfg: &VmConfig, like: &F) -> F {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    match like {
        F::Enabled(_) => F::Enabled(cfg.enabled),
        F::Backend(_) => F::Backend(cfg.backend),
        F::Mode(_) => F::Mode(cfg.workspace_mode),
        F::BetaSync(_) => F::BetaSync(cfg.beta_sync),
        F::Eager(_) => F::Eager(cfg.eager_start),
        F::Instance(_) => F::Instance(leak(&cfg.lima_instance)),
        F::Limactl(_) => F::Limactl(cfg.limactl.clone()),
        F::GuestWs(_) => F::GuestWs(leak(&cfg.guest_workspace)),
        F::Parent(_) => F::Parent(cfg.workspace_parent.clone()),
        F::CargoRoot(_) => F::CargoRoot(cfg.workspace_use_cargo_root),
        F::Timeout(_) => F::Timeout(cfg.exec_timeout),
        F::WorkspaceMax(_) => F::WorkspaceMax(cfg.workspace_max_bytes),
        F::Socket(_) => F::Socket(cfg.socket.clone()),
        F::Staging(_) => F::Staging(cfg.beta_session_staging.as_deref().map(leak)),
        F::StopOnExit(_) => F::StopOnExit(cfg.stop_on_exit),
        F::Hints(_) => F::Hints(cfg.lima_hints),
        F::BuildEssential(_) => F::BuildEssential(cfg.auto_build_essential),
        F::InternalRepl(_) => F::InternalRepl(cfg.internal_repl),
        F::ExportBase(_) => F::ExportBase(cfg.export_base.clone()),
        F::SidecarBin(_) => F::SidecarBin(cfg.sidecar_bin.clone()),
        F::TokenFile(_) => F::TokenFile(cfg.token_file.clone()),
        F::Isolation(_) => F::Isolation(cfg.isolation),
        F::Network(_) => F::Network(cfg.network),
        F::Limits(_) => F::Limits(cfg.limits),
    }
}

/// A case: set `var` to `value`; expect `Ok(field)` or an error naming `var` and `value`.
struct Case {
    var: &'static str,
    value: OsString,
    expect: Option<F>,
}

fn ok(var: &'static str, value: &str, f: F) -> Case {
    Case {
        var,
        value: value.into(),
        expect: Some(f),
    }
}

fn bad(var: &'static str, value: &str) -> Case {
    Case {
        var,
        value: value.into(),
        expect: None,
    }
}

fn p(s: &str) -> Option<PathBuf> {
    Some(PathBuf::from(s))
}

fn tcp(host: &str, port: u16) -> Option<Transport> {
    Some(Transport::Tcp {
        host: host.into(),
        port,
    })
}

/// Boolean variables with their field constructor.
const BOOL_VARS: &[(&str, fn(bool) -> F)] = &[
    (ENV_DEVSHELL_VM, F::Enabled),
    (ENV_DEVSHELL_VM_EAGER, F::Eager),
    (ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT, F::CargoRoot),
    (ENV_DEVSHELL_VM_STOP_ON_EXIT, F::StopOnExit),
    (ENV_DEVSHELL_VM_LIMA_HINTS, F::Hints),
    (ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL, F::BuildEssential),
    (ENV_DEVSHELL_VM_INTERNAL_REPL, F::InternalRepl),
];

fn cases() -> Vec<Case> {
    use Backend as B;
    let mut c = Vec::new();
    for &(var, mk) in BOOL_VARS {
        for v in ["1", "true", "yes", "on", "TRUE", " Yes ", "On\n", "\t1"] {
            c.push(ok(var, v, mk(true)));
        }
        for v in ["0", "false", "no", "off", "FALSE", " No ", "OFF\t", " 0"] {
            c.push(ok(var, v, mk(false)));
        }
        for v in ["2", "y", "n", "enable", "truee", "-1", "on off", "ja"] {
            c.push(bad(var, v));
        }
    }
    let more = vec![
        ok(ENV_DEVSHELL_VM_BACKEND, "host", F::Backend(B::Host)),
        ok(ENV_DEVSHELL_VM_BACKEND, "auto", F::Backend(B::Auto)),
        ok(ENV_DEVSHELL_VM_BACKEND, "lima", F::Backend(B::Lima)),
        ok(ENV_DEVSHELL_VM_BACKEND, "beta", F::Backend(B::Beta)),
        ok(ENV_DEVSHELL_VM_BACKEND, " LIMA ", F::Backend(B::Lima)),
        ok(ENV_DEVSHELL_VM_BACKEND, "Beta", F::Backend(B::Beta)),
        bad(ENV_DEVSHELL_VM_BACKEND, "qemu"),
        bad(ENV_DEVSHELL_VM_BACKEND, "lima2"),
        bad(ENV_DEVSHELL_VM_BACKEND, "gamma"),
        bad(ENV_DEVSHELL_VM_BACKEND, "host,lima"),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MODE,
            "sync",
            F::Mode(WorkspaceMode::Sync),
        ),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MODE,
            "guest",
            F::Mode(WorkspaceMode::Guest),
        ),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MODE,
            " GUEST ",
            F::Mode(WorkspaceMode::Guest),
        ),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MODE, "p"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MODE, "guests"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MODE, "mode-p"),
        ok(
            ENV_DEVSHELL_VM_BETA_SYNC,
            "auto",
            F::BetaSync(BetaSync::Auto),
        ),
        ok(
            ENV_DEVSHELL_VM_BETA_SYNC,
            " WIRE ",
            F::BetaSync(BetaSync::Wire),
        ),
        ok(
            ENV_DEVSHELL_VM_BETA_SYNC,
            "shared",
            F::BetaSync(BetaSync::Shared),
        ),
        bad(ENV_DEVSHELL_VM_BETA_SYNC, "rsync"),
        bad(ENV_DEVSHELL_VM_BETA_SYNC, "wire,shared"),
        ok(
            ENV_DEVSHELL_VM_LIMA_INSTANCE,
            "devshell-rust",
            F::Instance("devshell-rust"),
        ),
        ok(ENV_DEVSHELL_VM_LIMA_INSTANCE, "a", F::Instance("a")),
        ok(
            ENV_DEVSHELL_VM_LIMA_INSTANCE,
            "9vm.dev_1-x",
            F::Instance("9vm.dev_1-x"),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMA_INSTANCE,
            &"a".repeat(76),
            F::Instance(Box::leak("a".repeat(76).into_boxed_str())),
        ),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, &"a".repeat(77)),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, "-x"),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, ".x"),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, "a b"),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, "a/b"),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, ".."),
        bad(ENV_DEVSHELL_VM_LIMA_INSTANCE, "vmé"),
        ok(
            ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            "1",
            F::Timeout(Some(Duration::from_millis(1))),
        ),
        ok(
            ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            " 250 ",
            F::Timeout(Some(Duration::from_millis(250))),
        ),
        ok(
            ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            "18446744073709551615",
            F::Timeout(Some(Duration::from_millis(u64::MAX))),
        ),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
            "4096",
            F::WorkspaceMax(Some(4096)),
        ),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
            " 3G ",
            F::WorkspaceMax(Some(3 << 30)),
        ),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES,
            "512k",
            F::WorkspaceMax(Some(512 << 10)),
        ),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "0"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "0M"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "G"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "-1"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "1.5G"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "1T"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "99999999999999999999"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_MAX_BYTES, "17179869184G"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "0"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "000"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "-5"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "+5"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "1.5"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "10s"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "abc"),
        bad(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "18446744073709551616"),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "/run/devshell/s.sock",
            F::Socket(Some(Transport::Unix("/run/devshell/s.sock".into()))),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "stdio",
            F::Socket(Some(Transport::Stdio)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            " STDIO ",
            F::Socket(Some(Transport::Stdio)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "tcp:127.0.0.1:9847",
            F::Socket(tcp("127.0.0.1", 9847)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "tcp://localhost:1",
            F::Socket(tcp("localhost", 1)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "TCP://vm.local:65535",
            F::Socket(tcp("vm.local", 65535)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "tcp://[::1]:9847",
            F::Socket(tcp("::1", 9847)),
        ),
        ok(
            ENV_DEVSHELL_VM_SOCKET,
            "tcp:[fe80::1]:80",
            F::Socket(tcp("fe80::1", 80)),
        ),
        bad(ENV_DEVSHELL_VM_SOCKET, "devshell.sock"),
        bad(ENV_DEVSHELL_VM_SOCKET, "./devshell.sock"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp:"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host:"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host:0"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host:65536"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host:-1"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://host:http"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://::1:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://[::1]9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://[::1:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://[]:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://a/b:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "tcp://a b:9847"),
        bad(ENV_DEVSHELL_VM_SOCKET, "stdio:"),
        ok(
            ENV_DEVSHELL_VM_GUEST_WORKSPACE,
            "/workspace",
            F::GuestWs("/workspace"),
        ),
        ok(
            ENV_DEVSHELL_VM_GUEST_WORKSPACE,
            "/home/u/ws/",
            F::GuestWs("/home/u/ws/"),
        ),
        ok(
            ENV_DEVSHELL_VM_GUEST_WORKSPACE,
            "/a/..b",
            F::GuestWs("/a/..b"),
        ),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, "workspace"),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, " /workspace"),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, "/a/../b"),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, "/.."),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, "/"),
        bad(ENV_DEVSHELL_VM_GUEST_WORKSPACE, "//./"),
        ok(
            ENV_DEVSHELL_VM_WORKSPACE_PARENT,
            "/srv/ws",
            F::Parent(p("/srv/ws")),
        ),
        bad(ENV_DEVSHELL_VM_WORKSPACE_PARENT, "srv/ws"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_PARENT, "./ws"),
        bad(ENV_DEVSHELL_VM_WORKSPACE_PARENT, "~/ws"),
        ok(
            ENV_DEVSHELL_EXPORT_BASE,
            "/var/cache/x",
            F::ExportBase(p("/var/cache/x")),
        ),
        bad(ENV_DEVSHELL_EXPORT_BASE, "cache"),
        bad(ENV_DEVSHELL_EXPORT_BASE, "$HOME/cache"),
        ok(
            ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
            "/stage",
            F::Staging(Some("/stage")),
        ),
        ok(
            ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
            "C:\\stage",
            F::Staging(Some("C:\\stage")),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMACTL,
            "/opt/lima/bin/limactl",
            F::Limactl(p("/opt/lima/bin/limactl")),
        ),
        ok(ENV_DEVSHELL_VM_LIMACTL, "limactl", F::Limactl(p("limactl"))),
        ok(
            ENV_DEVSHELL_VM_SIDECAR_BIN,
            "/usr/bin/devshell-vm-sidecar",
            F::SidecarBin(p("/usr/bin/devshell-vm-sidecar")),
        ),
        ok(
            ENV_DEVSHELL_VM_SIDECAR_BIN,
            "target/debug/devshell-vm-sidecar",
            F::SidecarBin(p("target/debug/devshell-vm-sidecar")),
        ),
        ok(
            ENV_DEVSHELL_VM_TOKEN_FILE,
            "/run/user/1000/devshell.token",
            F::TokenFile(p("/run/user/1000/devshell.token")),
        ),
        ok(
            ENV_DEVSHELL_VM_TOKEN_FILE,
            "token.txt",
            F::TokenFile(p("token.txt")),
        ),
    ];
    c.extend(more);
    c.extend(isolation_cases());
    // Non-UTF-8: an error for every text variable, kept verbatim for path variables.
    for v in VARIABLES.iter().filter(|v| v.status == VarStatus::Used) {
        let path_like = [
            ENV_DEVSHELL_VM_LIMACTL,
            ENV_DEVSHELL_VM_SIDECAR_BIN,
            ENV_DEVSHELL_VM_TOKEN_FILE,
            ENV_DEVSHELL_VM_WORKSPACE_PARENT,
            ENV_DEVSHELL_EXPORT_BASE,
        ];
        if !path_like.contains(&v.name) {
            c.push(Case {
                var: v.name,
                value: non_utf8(),
                expect: None,
            });
        }
    }
    // A NUL byte (only a map or closure source can hold one): an error for every
    // variable, paths included, never a value carried on to a syscall or a guest command.
    for v in VARIABLES.iter().filter(|v| v.status == VarStatus::Used) {
        for value in ["/a\0b", "1\0", "\0"] {
            c.push(bad(v.name, value));
        }
    }
    let raw = PathBuf::from(non_utf8());
    c.push(Case {
        var: ENV_DEVSHELL_VM_LIMACTL,
        value: non_utf8(),
        expect: Some(F::Limactl(Some(raw.clone()))),
    });
    c.push(Case {
        var: ENV_DEVSHELL_VM_WORKSPACE_PARENT,
        value: non_utf8(),
        expect: Some(F::Parent(Some(raw))),
    });
    c
}

#[test]
fn every_case_parses_to_its_field_or_names_variable_and_value() {
    let mut failures = Vec::new();
    for case in cases() {
        let src = OsSource(vec![(case.var.to_string(), case.value.clone())]);
        let got = VmConfig::from_source(&src);
        match (&case.expect, got) {
            (Some(want), Ok(cfg)) => {
                let have = field(&cfg, want);
                if &have != want {
                    failures.push(format!(
                        "{}={:?}: want {want:?}, got {have:?}",
                        case.var, case.value
                    ));
                }
            }
            (Some(want), Err(e)) => {
                failures.push(format!(
                    "{}={:?}: want {want:?}, got error {e}",
                    case.var, case.value
                ));
            }
            (None, Ok(cfg)) => {
                failures.push(format!(
                    "{}={:?}: want an error, got {cfg:?}",
                    case.var, case.value
                ));
            }
            (None, Err(e)) => {
                let value = case.value.to_string_lossy();
                if e.variable != case.var
                    || e.value != value
                    || e.accepted.is_empty()
                    || e.problem.is_empty()
                {
                    failures.push(format!(
                        "{}={:?}: wrong error fields {e:?}",
                        case.var, case.value
                    ));
                }
                let shown = e.to_string();
                if !shown.contains(case.var) || !shown.contains(&format!("{value:?}")) {
                    failures.push(format!("message does not name variable and value: {shown}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_used_variable_has_good_and_bad_cases() {
    let cases = cases();
    for v in VARIABLES.iter().filter(|v| v.status == VarStatus::Used) {
        assert!(
            cases.iter().any(|c| c.var == v.name && c.expect.is_some()),
            "no good-value case for {}",
            v.name
        );
        assert!(
            cases.iter().any(|c| c.var == v.name && c.expect.is_none()),
            "no bad-value case for {}",
            v.name
        );
    }
}

#[test]
fn unset_and_blank_give_the_same_defaults_in_every_build() {
    let empty = VmConfig::from_source(&[]).expect("empty env is valid");
    let want = VmConfig {
        enabled: true,
        backend: Backend::PLATFORM_DEFAULT,
        ..VmConfig::disabled()
    };
    assert_eq!(empty, want);
    assert_eq!(
        Backend::PLATFORM_DEFAULT,
        Backend::Lima,
        "Unix default backend is lima"
    );
    assert_eq!(empty.lima_instance, "devshell-rust");
    assert_eq!(empty.guest_workspace, "/workspace");
    assert!(empty.workspace_use_cargo_root && empty.lima_hints && empty.auto_build_essential);
    assert!(!empty.eager_start && !empty.stop_on_exit && !empty.internal_repl);
    for v in VARIABLES {
        for blank in ["", "   ", "\t\n"] {
            let cfg = VmConfig::from_source(&[(v.name, blank)])
                .unwrap_or_else(|e| panic!("{}={blank:?} should count as unset: {e}", v.name));
            assert_eq!(cfg, want, "{}={blank:?} should count as unset", v.name);
        }
    }
}

#[test]
fn ignored_variables_are_listed_and_change_nothing() {
    let ignored: Vec<_> = VARIABLES
        .iter()
        .filter(|v| v.status == VarStatus::Ignored)
        .collect();
    assert_eq!(ignored.len(), 11);
    for v in &ignored {
        let cfg = VmConfig::from_source(&[(v.name, "garbage value")]).expect("ignored never fails");
        assert_eq!(cfg.ignored_variables, vec![v.name]);
        let cfg = VmConfig {
            ignored_variables: vec![],
            ..cfg
        };
        assert_eq!(cfg, VmConfig::from_source(&[]).expect("valid"));
    }
}

#[test]
fn first_bad_variable_in_table_order_is_reported() {
    let env = [(ENV_DEVSHELL_VM_SOCKET, "nope"), (ENV_DEVSHELL_VM, "maybe")];
    let e = VmConfig::from_source(&env).expect_err("two bad values");
    assert_eq!((e.variable, e.value.as_str()), (ENV_DEVSHELL_VM, "maybe"));
}

#[test]
fn sources_agree() {
    let pairs = [
        (ENV_DEVSHELL_VM_BACKEND, "beta"),
        (ENV_DEVSHELL_VM_SOCKET, "stdio"),
        (ENV_DEVSHELL_VM_EAGER, "on"),
        (ENV_DEVSHELL_VM_EAGER, "off"),
    ];
    let from_array = VmConfig::from_source(&pairs).expect("valid");
    assert!(!from_array.eager_start, "the last pair wins");
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let hash: HashMap<String, String> = owned.iter().cloned().collect();
    let btree: BTreeMap<String, String> = owned.iter().cloned().collect();
    let closure = |name: &str| btree.get(name).cloned();
    assert_eq!(VmConfig::from_source(&owned).expect("valid"), from_array);
    assert_eq!(VmConfig::from_source(&hash).expect("valid"), from_array);
    assert_eq!(VmConfig::from_source(&btree).expect("valid"), from_array);
    assert_eq!(VmConfig::from_source(&closure).expect("valid"), from_array);
    assert_eq!(
        VmConfig::from_source(&pairs.to_vec()).expect("valid"),
        from_array
    );
}

#[test]
fn effective_workspace_mode_follows_the_fallback_rule() {
    use Backend as B;
    use WorkspaceMode::{Guest, Sync};
    let table = [
        (true, B::Lima, Guest, Guest),
        (true, B::Beta, Guest, Guest),
        (true, B::Host, Guest, Sync),
        (true, B::Auto, Guest, Sync),
        (false, B::Lima, Guest, Sync),
        (false, B::Beta, Guest, Sync),
        (true, B::Lima, Sync, Sync),
        (false, B::Host, Sync, Sync),
    ];
    for (enabled, backend, requested, want) in table {
        let cfg = VmConfig {
            enabled,
            backend,
            workspace_mode: requested,
            ..VmConfig::disabled()
        };
        assert_eq!(
            cfg.workspace_mode_effective(),
            want,
            "{enabled} {backend} {requested}"
        );
        let fell_back = requested == Guest && want == Sync;
        assert_eq!(
            cfg.workspace_mode_fallback_reason().is_some(),
            fell_back,
            "{enabled} {backend}"
        );
    }
}

#[test]
fn host_sandbox_predicate() {
    use Backend as B;
    for (enabled, backend, want) in [
        (true, B::Host, true),
        (true, B::Auto, true),
        (true, B::Lima, false),
        (true, B::Beta, false),
        (false, B::Lima, true),
        (false, B::Beta, true),
    ] {
        let cfg = VmConfig {
            enabled,
            backend,
            ..VmConfig::disabled()
        };
        assert_eq!(cfg.use_host_sandbox(), want, "{enabled} {backend}");
    }
    assert!(VmConfig::host_only().use_host_sandbox());
    assert_eq!(VmConfig::host_only(), VmConfig::default());
}

#[test]
fn export_base_dir_fallback_chain() {
    let table: [(&[(&str, &str)], &str); 7] = [
        (
            &[
                (ENV_DEVSHELL_EXPORT_BASE, "/e"),
                (ENV_XDG_CACHE_HOME, "/x"),
                (ENV_HOME, "/h"),
            ],
            "/e",
        ),
        (
            &[(ENV_XDG_CACHE_HOME, "/x"), (ENV_HOME, "/h")],
            "/x/cargo-devshell-exports",
        ),
        (
            &[(ENV_XDG_CACHE_HOME, "rel"), (ENV_HOME, "/h")],
            "/h/.cache/cargo-devshell-exports",
        ),
        (
            &[(ENV_HOME, "/h"), (ENV_TMPDIR, "/t")],
            "/h/.cache/cargo-devshell-exports",
        ),
        (
            &[(ENV_HOME, "rel"), (ENV_TMPDIR, "/t")],
            "/t/cargo-devshell-exports",
        ),
        (&[(ENV_TMPDIR, "t")], "/tmp/cargo-devshell-exports"),
        (&[], "/tmp/cargo-devshell-exports"),
    ];
    for (env, want) in table {
        let cfg = VmConfig::from_source(&env.to_vec()).expect("valid");
        assert_eq!(cfg.export_base_dir(), PathBuf::from(want), "{env:?}");
    }
    let cfg = VmConfig::from_source(&[(ENV_HOME, "/h"), (ENV_DEVSHELL_VM_LIMA_INSTANCE, "my.vm")])
        .expect("valid");
    assert_eq!(
        cfg.default_vm_workspace_cache_dir(),
        PathBuf::from("/h/.cache/cargo-devshell-exports/vm-workspace/my_vm")
    );
}

#[test]
fn sanitized_instance_dir_names() {
    for (name, want) in [
        ("devshell-rust", "devshell-rust"),
        ("my.vm_1", "my_vm_1"),
        ("..", "__"),
        (".", "_"),
        ("", "_"),
        ("a/b c", "a_b_c"),
        ("vmé", "vm_"),
    ] {
        assert_eq!(sanitize_instance_dir_name(name), want, "{name:?}");
    }
    let cfg = VmConfig {
        lima_instance: "x.y".into(),
        ..VmConfig::disabled()
    };
    assert_eq!(cfg.sanitized_instance_dir_name(), "x_y");
}

#[test]
fn transport_display_round_trips() {
    for s in [
        "stdio",
        "/run/s.sock",
        "tcp://127.0.0.1:9847",
        "tcp://[::1]:1",
        "tcp://vm.local:65535",
    ] {
        let t: Transport = s.parse().expect("valid");
        assert_eq!(t.to_string(), s);
        assert_eq!(t.to_string().parse::<Transport>().expect("round trip"), t);
    }
    assert_eq!(
        "tcp:h:2".parse::<Transport>().expect("valid").to_string(),
        "tcp://h:2"
    );
}

#[test]
fn enum_display_and_from_str_round_trip() {
    for b in Backend::ALL {
        assert_eq!(b.to_string().parse::<Backend>().expect("round trip"), b);
        assert_eq!(
            b.to_string()
                .to_uppercase()
                .parse::<Backend>()
                .expect("any case"),
            b
        );
    }
    assert!(Backend::Lima.is_vm() && Backend::Beta.is_vm());
    assert!(!Backend::Host.is_vm() && !Backend::Auto.is_vm());
    for m in [WorkspaceMode::Sync, WorkspaceMode::Guest] {
        assert_eq!(
            m.to_string().parse::<WorkspaceMode>().expect("round trip"),
            m
        );
    }
    let e = "".parse::<Backend>().expect_err("empty is not a backend");
    assert_eq!(e.variable, ENV_DEVSHELL_VM_BACKEND);
    let e = "x".parse::<WorkspaceMode>().expect_err("not a mode");
    assert_eq!(e.variable, ENV_DEVSHELL_VM_WORKSPACE_MODE);
    let e = ""
        .parse::<Transport>()
        .expect_err("empty is not a transport");
    assert_eq!(e.variable, ENV_DEVSHELL_VM_SOCKET);
}

#[test]
fn free_functions_match_the_config() {
    let env = [
        (ENV_DEVSHELL_VM_WORKSPACE_MODE, "guest"),
        (ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "1500"),
    ];
    assert_eq!(workspace_mode_from_source(&env), Ok(WorkspaceMode::Guest));
    assert_eq!(exec_timeout_ms_from_source(&env), Ok(Some(1500)));
    let cfg = VmConfig::from_source(&env).expect("valid");
    assert_eq!(cfg.exec_timeout_ms(), Some(1500));
    assert_eq!(workspace_mode_from_source(&[]), Ok(WorkspaceMode::Sync));
    assert_eq!(exec_timeout_ms_from_source(&[]), Ok(None));
    let e =
        exec_timeout_ms_from_source(&[(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "0")]).expect_err("zero");
    assert_eq!(
        (e.variable, e.value.as_str()),
        (ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, "0")
    );
    let e = parse_bool("X", "").expect_err("empty is not a boolean");
    assert_eq!((e.variable, e.value.as_str()), ("X", ""));
}

/// `from_env` reads the real process environment (never mutated here) and must
/// agree with `from_source` over a snapshot of that same environment.
#[test]
fn from_env_agrees_with_a_snapshot_of_the_process_env() {
    #[allow(
        clippy::disallowed_methods,
        reason = "reads (never mutates) the real env to check from_env"
    )]
    let snapshot: Vec<(String, OsString)> = std::env::vars_os()
        .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
        .collect();
    let from_snapshot = VmConfig::from_source(&OsSource(snapshot.clone()));
    assert_eq!(VmConfig::from_env(), from_snapshot);
    assert_eq!(
        workspace_mode_from_env(),
        workspace_mode_from_source(&OsSource(snapshot.clone()))
    );
    assert_eq!(
        exec_timeout_ms_from_env(),
        exec_timeout_ms_from_source(&OsSource(snapshot.clone()))
    );
    assert_eq!(
        VmConfig::host_fallback_from_env(),
        VmConfig::host_fallback_from_source(&OsSource(snapshot))
    );
    // `PATH` is set for any cargo test run; seeing it proves the process env was read
    // (through the fallback, which reads it even when a DEVSHELL_VM* value is bad).
    assert!(
        VmConfig::host_fallback_from_env().path.is_some(),
        "PATH not seen in the process environment"
    );
    if let Ok(cfg) = from_snapshot {
        assert!(cfg.path.is_some(), "PATH not seen by from_env");
    }
}

/// Every `ENV_DEVSHELL_VM*` name the seed's `devshell::vm` module exports (plus the
/// sandbox's `ENV_EXPORT_BASE` and the `DEVSHELL_VM_INTERNAL_REPL` it reads by name) is
/// a constant here, spelled as its variable, and described in [`VARIABLES`]. The list
/// is copied from the seed; this test stops compiling when a constant goes missing.
#[test]
fn every_seed_name_is_exported_and_described() {
    let seed: [(&str, &str); 27] = [
        (ENV_DEVSHELL_VM, "DEVSHELL_VM"),
        (ENV_DEVSHELL_VM_BACKEND, "DEVSHELL_VM_BACKEND"),
        (
            ENV_DEVSHELL_VM_BETA_SESSION_STAGING,
            "DEVSHELL_VM_BETA_SESSION_STAGING",
        ),
        (
            ENV_DEVSHELL_VM_CONTAINER_IMAGE,
            "DEVSHELL_VM_CONTAINER_IMAGE",
        ),
        (
            ENV_DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME,
            "DEVSHELL_VM_DISABLE_PODMAN_SSH_HOME",
        ),
        (ENV_DEVSHELL_VM_EAGER, "DEVSHELL_VM_EAGER"),
        (
            ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
            "DEVSHELL_VM_EXEC_TIMEOUT_MS",
        ),
        (ENV_DEVSHELL_VM_LIMA_INSTANCE, "DEVSHELL_VM_LIMA_INSTANCE"),
        (ENV_DEVSHELL_VM_LINUX_BINARY, "DEVSHELL_VM_LINUX_BINARY"),
        (ENV_DEVSHELL_VM_REPO_ROOT, "DEVSHELL_VM_REPO_ROOT"),
        (
            ENV_DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP,
            "DEVSHELL_VM_SKIP_PODMAN_BOOTSTRAP",
        ),
        (ENV_DEVSHELL_VM_SOCKET, "DEVSHELL_VM_SOCKET"),
        (
            ENV_DEVSHELL_VM_STDIO_TRANSPORT,
            "DEVSHELL_VM_STDIO_TRANSPORT",
        ),
        (ENV_DEVSHELL_VM_WORKSPACE_MODE, "DEVSHELL_VM_WORKSPACE_MODE"),
        (ENV_DEVSHELL_VM_LIMA_HINTS, "DEVSHELL_VM_LIMA_HINTS"),
        (
            ENV_DEVSHELL_VM_AUTO_BUILD_ESSENTIAL,
            "DEVSHELL_VM_AUTO_BUILD_ESSENTIAL",
        ),
        (
            ENV_DEVSHELL_VM_AUTO_BUILD_TODO_GUEST,
            "DEVSHELL_VM_AUTO_BUILD_TODO_GUEST",
        ),
        (ENV_DEVSHELL_VM_AUTO_TODO_PATH, "DEVSHELL_VM_AUTO_TODO_PATH"),
        (ENV_DEVSHELL_VM_GUEST_HOST_DIR, "DEVSHELL_VM_GUEST_HOST_DIR"),
        (
            ENV_DEVSHELL_VM_GUEST_TODO_HINT,
            "DEVSHELL_VM_GUEST_TODO_HINT",
        ),
        (
            ENV_DEVSHELL_VM_GUEST_WORKSPACE,
            "DEVSHELL_VM_GUEST_WORKSPACE",
        ),
        (ENV_DEVSHELL_VM_LIMACTL, "DEVSHELL_VM_LIMACTL"),
        (ENV_DEVSHELL_VM_STOP_ON_EXIT, "DEVSHELL_VM_STOP_ON_EXIT"),
        (
            ENV_DEVSHELL_VM_WORKSPACE_PARENT,
            "DEVSHELL_VM_WORKSPACE_PARENT",
        ),
        (
            ENV_DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT,
            "DEVSHELL_VM_WORKSPACE_USE_CARGO_ROOT",
        ),
        (ENV_DEVSHELL_VM_INTERNAL_REPL, "DEVSHELL_VM_INTERNAL_REPL"),
        (ENV_EXPORT_BASE, "DEVSHELL_EXPORT_BASE"),
    ];
    for (constant, name) in seed {
        assert_eq!(constant, name, "constant for {name} is misspelled");
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is not described in VARIABLES"
        );
    }
    // And nothing in VARIABLES is described twice.
    for (i, v) in VARIABLES.iter().enumerate() {
        assert!(
            VARIABLES[i + 1..].iter().all(|w| w.name != v.name),
            "{} is described twice",
            v.name
        );
    }
}

/// The row the README's variable table must hold for `v`.
fn doc_row(v: &VarDoc) -> String {
    format!(
        "| `{}` | {} | {} | {} |",
        v.name, v.accepted, v.default, v.effect
    )
}

/// The README's "Environment variables" section has exactly one row per variable, in
/// the table's order, and each row is the one [`VARIABLES`] describes (accepted values,
/// default and effect), so the document cannot drift from the code.
#[test]
fn readme_variable_rows_are_the_table() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let doc = std::fs::read_to_string(doc_path).unwrap_or_else(|e| panic!("read {doc_path}: {e}"));
    let section = doc.split_once("\n## Environment variables\n").map_or_else(
        || panic!("{doc_path} has no '## Environment variables' section"),
        |(_, rest)| rest,
    );
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| `DEVSHELL_"))
        .collect();
    let want: Vec<String> = VARIABLES.iter().map(doc_row).collect();
    assert_eq!(
        rows.len(),
        want.len(),
        "{doc_path} has {} variable rows, VARIABLES has {}",
        rows.len(),
        want.len()
    );
    for (row, want) in rows.iter().zip(&want) {
        assert_eq!(*row, want.as_str(), "{doc_path} row differs from VARIABLES");
    }
}

#[test]
fn host_fallback_keeps_system_variables_and_ignores_bad_devshell_values() {
    let env: BTreeMap<String, String> = [
        ("DEVSHELL_VM", "maybe"),
        ("DEVSHELL_VM_BACKEND", "qemu"),
        ("DEVSHELL_VM_EXEC_TIMEOUT_MS", "soon"),
        ("DEVSHELL_EXPORT_BASE", "/srv/exports"),
        ("PATH", "/opt/bin:/usr/bin"),
        ("HOME", "/home/u"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert!(
        VmConfig::from_source(&env).is_err(),
        "the strict parse must fail"
    );
    let fallback = VmConfig::host_fallback_from_source(&env);
    assert!(!fallback.enabled);
    assert!(fallback.use_host_sandbox());
    assert_eq!(fallback.exec_timeout, None);
    assert_eq!(fallback.path, Some(OsString::from("/opt/bin:/usr/bin")));
    assert_eq!(fallback.home, Some(PathBuf::from("/home/u")));
    assert_eq!(fallback.export_base_dir(), PathBuf::from("/srv/exports"));

    // A bad export base is dropped, not used.
    let bad_base: BTreeMap<String, String> =
        [("DEVSHELL_EXPORT_BASE".to_owned(), "relative/dir".to_owned())]
            .into_iter()
            .collect();
    assert_eq!(
        VmConfig::host_fallback_from_source(&bad_base).export_base,
        None
    );
}

fn isolation_cases() -> Vec<Case> {
    let lim = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        F::Limits(l)
    };
    vec![
        ok(
            ENV_DEVSHELL_VM_ISOLATION,
            "auto",
            F::Isolation(Isolation::Auto),
        ),
        ok(
            ENV_DEVSHELL_VM_ISOLATION,
            " Namespaces ",
            F::Isolation(Isolation::Namespaces),
        ),
        ok(
            ENV_DEVSHELL_VM_ISOLATION,
            "LANDLOCK",
            F::Isolation(Isolation::Landlock),
        ),
        ok(
            ENV_DEVSHELL_VM_ISOLATION,
            "off",
            F::Isolation(Isolation::Off),
        ),
        bad(ENV_DEVSHELL_VM_ISOLATION, "seccomp"),
        bad(ENV_DEVSHELL_VM_ISOLATION, "none"),
        ok(
            ENV_DEVSHELL_VM_NETWORK,
            "off",
            F::Network(NetworkPolicy::Off),
        ),
        ok(
            ENV_DEVSHELL_VM_NETWORK,
            "Fetch",
            F::Network(NetworkPolicy::Fetch),
        ),
        ok(
            ENV_DEVSHELL_VM_NETWORK,
            " on",
            F::Network(NetworkPolicy::On),
        ),
        bad(ENV_DEVSHELL_VM_NETWORK, "host"),
        bad(ENV_DEVSHELL_VM_NETWORK, "1"),
        ok(
            ENV_DEVSHELL_VM_LIMIT_MEMORY,
            "512M",
            lim(|l| l.memory = Some(512 << 20)),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_MEMORY,
            "2GiB",
            lim(|l| l.memory = Some(2 << 30)),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_MEMORY,
            "1048576",
            lim(|l| l.memory = Some(1 << 20)),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_MEMORY,
            "64k",
            lim(|l| l.memory = Some(64 << 10)),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_MEMORY,
            "Unlimited",
            lim(|l| l.memory = None),
        ),
        bad(ENV_DEVSHELL_VM_LIMIT_MEMORY, "0"),
        bad(ENV_DEVSHELL_VM_LIMIT_MEMORY, "-1G"),
        bad(ENV_DEVSHELL_VM_LIMIT_MEMORY, "G"),
        bad(ENV_DEVSHELL_VM_LIMIT_MEMORY, "1.5G"),
        bad(ENV_DEVSHELL_VM_LIMIT_MEMORY, "99999999999T"),
        ok(ENV_DEVSHELL_VM_LIMIT_PIDS, "64", lim(|l| l.pids = Some(64))),
        ok(
            ENV_DEVSHELL_VM_LIMIT_PIDS,
            "unlimited",
            lim(|l| l.pids = None),
        ),
        bad(ENV_DEVSHELL_VM_LIMIT_PIDS, "0"),
        bad(ENV_DEVSHELL_VM_LIMIT_PIDS, "1k"),
        bad(ENV_DEVSHELL_VM_LIMIT_PIDS, "99999999999999999999999"),
        ok(
            ENV_DEVSHELL_VM_LIMIT_CPU_SECS,
            "30",
            lim(|l| l.cpu_time = Some(Duration::from_secs(30))),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_CPU_SECS,
            "none",
            lim(|l| l.cpu_time = None),
        ),
        bad(ENV_DEVSHELL_VM_LIMIT_CPU_SECS, "1h"),
        bad(ENV_DEVSHELL_VM_LIMIT_CPU_SECS, "0"),
        ok(
            ENV_DEVSHELL_VM_LIMIT_WRITE,
            "1T",
            lim(|l| l.write = Some(1 << 40)),
        ),
        ok(
            ENV_DEVSHELL_VM_LIMIT_WRITE,
            "100MB",
            lim(|l| l.write = Some(100 << 20)),
        ),
        bad(ENV_DEVSHELL_VM_LIMIT_WRITE, "lots"),
    ]
}

#[test]
fn isolation_defaults_are_auto_fetch_and_limited() {
    let cfg = VmConfig::from_source(&[]).expect("empty env is valid");
    assert_eq!(cfg.isolation, Isolation::Auto);
    assert_eq!(cfg.network, NetworkPolicy::Fetch);
    assert_eq!(cfg.limits.memory, Some(4 << 30));
    assert_eq!(cfg.limits.pids, Some(1024));
    assert_eq!(cfg.limits.cpu_time, Some(Duration::from_hours(1)));
    assert_eq!(cfg.limits.write, Some(8 << 30));
    assert_eq!(VmConfig::disabled().isolation, Isolation::Auto);
}

/// Issue 15, finding 10: a long bad value is quoted cut, with its length; the field keeps
/// it whole.
#[test]
fn long_values_are_cut_in_messages() {
    let long = "7".repeat(100_000) + "z";
    let env: BTreeMap<String, String> =
        [(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS.to_owned(), long.clone())]
            .into_iter()
            .collect();
    let err = VmConfig::from_source(&env).expect_err("not a number");
    assert_eq!(err.value, long, "the field keeps the value whole");
    let shown = err.to_string();
    assert!(shown.len() < 600, "{} bytes: {shown}", shown.len());
    assert!(shown.contains("100001 characters in all"), "{shown}");
    assert!(
        shown.starts_with(&format!("invalid {ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS}=\"777")),
        "{shown}"
    );
    // Short values are quoted whole, as before.
    let short = ConfigError::new(
        ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS,
        "soon",
        "not a number",
        "ms",
    );
    assert!(short.to_string().contains("=\"soon\":"), "{short}");
    // Cutting counts characters, never splits one.
    let wide = "é".repeat(MAX_QUOTED_CHARS + 5);
    let cut = ConfigError::new(ENV_DEVSHELL_VM_EXEC_TIMEOUT_MS, wide, "x", "y").to_string();
    assert!(
        cut.contains(&format!("{} characters in all", MAX_QUOTED_CHARS + 5)),
        "{cut}"
    );
}
