//! Property tests of the guest path rules, against a separate model written here.

use devshell_vm_guest_fs::{
    GuestFsErrorKind, check_guest_path, guest_path_is_under_mount, logical_to_guest,
    normalize_guest_path,
};
use proptest::prelude::*;

/// Segments that stress normalisation: dots, empties, look-alike names, specials.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("...".to_owned()),
        Just("workspace".to_owned()),
        Just("workspace2".to_owned()),
        Just("w".to_owned()),
        Just("app".to_owned()),
        Just(".hidden".to_owned()),
        Just("a b".to_owned()),
        Just("ü$'\n".to_owned()),
        "[a-z.]{1,4}",
    ]
}

/// Paths built from those segments, absolute or not.
fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(segment(), 0..8)).prop_map(|(absolute, segs)| {
        let body = segs.join("/");
        if absolute { format!("/{body}") } else { body }
    })
}

/// Absolute paths (for mounts and roots).
fn abs_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..5).prop_map(|segs| format!("/{}", segs.join("/")))
}

/// The model: segments of the normalised form, by a stack walk.
fn model_segments(p: &str) -> Vec<&str> {
    let mut stack = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    stack
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalised_is_absolute_clean_and_idempotent(p in prop_oneof![path(), any::<String>()]) {
        match normalize_guest_path(&p) {
            Ok(n) => {
                prop_assert!(p.starts_with('/') && !p.contains('\0'));
                prop_assert!(n.starts_with('/'), "{n:?} not absolute");
                if n != "/" {
                    prop_assert!(!n.ends_with('/'), "{n:?} has a trailing slash");
                    for seg in n[1..].split('/') {
                        prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{n:?} has segment {seg:?}");
                    }
                }
                prop_assert_eq!(normalize_guest_path(&n).ok(), Some(n.clone()), "not idempotent");
                prop_assert_eq!(model_segments(&n), model_segments(&p));
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), GuestFsErrorKind::InvalidPath);
                prop_assert!(p.is_empty() || p.contains('\0') || !p.starts_with('/'), "refused {p:?}");
            }
        }
    }

    #[test]
    fn under_mount_never_accepts_an_escape(mount in abs_path(), p in path()) {
        let accepted = guest_path_is_under_mount(&mount, &p);
        let expected = p.starts_with('/') && model_segments(&p).starts_with(&model_segments(&mount));
        prop_assert_eq!(accepted, expected, "mount {:?} path {:?}", mount, p);
        match check_guest_path(&mount, &p) {
            Ok(n) => {
                prop_assert!(accepted);
                prop_assert!(model_segments(&n).starts_with(&model_segments(&mount)));
            }
            Err(e) => {
                prop_assert!(!accepted);
                prop_assert_eq!(e.kind(), GuestFsErrorKind::InvalidPath);
            }
        }
    }

    #[test]
    fn tails_without_dotdot_stay_under_the_mount(
        mount in abs_path(), tail in prop::collection::vec(segment(), 0..8)
    ) {
        let tail: Vec<String> = tail.into_iter().filter(|s| s != "..").collect();
        let p = format!("{mount}/{}", tail.join("/"));
        prop_assert!(guest_path_is_under_mount(&mount, &p), "{p:?} should stay under {mount:?}");
        prop_assert!(check_guest_path(&mount, &p).is_ok());
    }

    #[test]
    fn one_dotdot_too_many_leaves_a_non_root_mount(
        mount in abs_path(), tail in prop::collection::vec(segment(), 0..6)
    ) {
        let depth = model_segments(&mount).len();
        prop_assume!(depth > 0);
        // Climb out of the mount (one `..` more than the tail descends), then descend
        // into a name that cannot be the mount's leaf.
        let named: Vec<&String> = tail.iter().filter(|s| !matches!(s.as_str(), "" | "." | "..")).collect();
        let mut p = mount.clone();
        for s in &named { p.push('/'); p.push_str(s); }
        for _ in 0..=named.len() { p.push_str("/.."); }
        p.push_str("/devshell-vm-not-the-mount");
        prop_assert!(!guest_path_is_under_mount(&mount, &p), "{p:?} accepted under {mount:?}");
        prop_assert_eq!(check_guest_path(&mount, &p).map_err(|e| e.kind()), Err(GuestFsErrorKind::InvalidPath));
    }

    #[test]
    fn logical_to_guest_stays_under_the_mount(mount in abs_path(), root in abs_path(), logical in path()) {
        match logical_to_guest(&mount, &root, &logical) {
            Ok(g) => {
                prop_assert!(guest_path_is_under_mount(&mount, &g), "{g:?} not under {mount:?}");
                prop_assert!(model_segments(&logical).starts_with(&model_segments(&root)));
                let rel = model_segments(&logical)[model_segments(&root).len()..].to_vec();
                prop_assert!(model_segments(&g).ends_with(&rel));
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), GuestFsErrorKind::InvalidPath);
                prop_assert!(
                    !logical.starts_with('/')
                        || !model_segments(&logical).starts_with(&model_segments(&root)),
                    "refused {logical:?} under root {root:?}"
                );
            }
        }
    }
}
