//! `deploy/`: the Kubernetes manifests and the container build file hold what
//! docs/DEPLOY.md promises. Parsed with a YAML parser; nothing here runs a container
//! (containers cannot run on the CI machines — see DEPLOY.md).

#![allow(clippy::unwrap_used)]

use clap::Parser as _;
use serde::Deserialize as _;
use serde_yaml_ng::Value;

fn manifests() -> Vec<Value> {
    let path = devshell_vm_test_support::workspace_root().join("deploy/kubernetes/sidecar.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
        })
        .collect()
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing"));
    &args[i + 1]
}

#[test]
fn deployment_service_and_secret_hold_what_the_docs_promise() {
    let docs = manifests();
    let secret = of_kind(&docs, "Secret");
    let deployment = of_kind(&docs, "Deployment");
    let service = of_kind(&docs, "Service");

    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "several replicas");
    let labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in spec["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&labels[key], value, "the selector matches the pod labels");
    }
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects the pods");
    }

    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !c["resources"][kind][resource].is_null(),
                "resources.{kind}.{resource} is set"
            );
        }
    }

    // The arguments are ones the sidecar accepts.
    let args = strings(&c["args"]);
    let mut command_line = vec!["devshell-vm-sidecar".to_owned()];
    command_line.extend(args.iter().cloned());
    let cli = devshell_vm_sidecar::Cli::try_parse_from(&command_line).unwrap();
    let listen = cli.serve_tcp.expect("serves TCP");
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(!cli.insecure_no_auth, "a token is required");

    // The port is the container port the Service targets.
    let ports = c["ports"].as_sequence().unwrap();
    let named = ports
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(u64::from(port)))
        .expect("the served port is a container port");
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        *target == named["name"] || target.as_u64() == Some(u64::from(port)),
        "the Service targets the sidecar's port"
    );

    // Probes run the cheap health check against the served port.
    for probe in ["readinessProbe", "livenessProbe"] {
        let command = strings(&c[probe]["exec"]["command"]);
        assert!(
            command[0].ends_with("devshell-vm-sidecar"),
            "{probe}: {command:?}"
        );
        assert_eq!(command[1], "--check");
        assert!(
            command[2].ends_with(&format!(":{port}")),
            "{probe}: {command:?}"
        );
    }

    // The token file comes from the Secret; --root is a writable volume.
    let token_file = arg_after(&args, "--token-file");
    let (token_dir, token_name) = token_file.rsplit_once('/').unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let volumes = pod["volumes"].as_sequence().unwrap();
    let volume_at = |dir: &str| {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
            .clone()
    };
    let token_volume = volume_at(token_dir);
    let secret_name = &secret["metadata"]["name"];
    assert_eq!(&token_volume["secret"]["secretName"], secret_name);
    let item = &token_volume["secret"]["items"][0];
    assert_eq!(item["path"], token_name);
    assert!(!secret["stringData"][item["key"].as_str().unwrap()].is_null());
    let root = arg_after(&args, "--root");
    assert!(
        !volume_at(root)["emptyDir"].is_null(),
        "--root is a writable volume"
    );
    assert!(pod["securityContext"]["fsGroup"].as_u64().is_some());
}

#[test]
fn the_container_build_is_multi_stage_non_root_with_the_sidecar_as_entrypoint() {
    let path = devshell_vm_test_support::workspace_root().join("deploy/Dockerfile");
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(
        froms.last().unwrap().starts_with("FROM rust:"),
        "the runtime image has the toolchain"
    );
    assert!(lines.iter().any(|l| l.starts_with("COPY --from=build")));
    let user = lines
        .iter()
        .rfind(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    let entry = lines
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entry.contains("devshell-vm-sidecar"), "{entry}");
    let cmd = lines.iter().find(|l| l.starts_with("CMD")).expect("CMD");
    let argv: Vec<String> = serde_yaml_ng::from_str(cmd.trim_start_matches("CMD").trim()).unwrap();
    let mut full = vec!["devshell-vm-sidecar".to_owned()];
    full.extend(argv);
    let cli = devshell_vm_sidecar::Cli::try_parse_from(&full).unwrap();
    assert!(
        cli.token_file.is_some(),
        "the default command requires a token"
    );
}
