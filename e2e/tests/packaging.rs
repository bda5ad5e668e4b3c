//! Packaging checks that need no cluster and no Docker engine: the
//! Dockerfile builds real workspace binaries from files that exist, the Helm
//! chart lints and renders least-privilege RBAC and a hardened Deployment,
//! the chart's CRD is the generated one, the examples fit the CRD, and the
//! kind walkthrough (`kind_walkthrough`) agrees with all of them.
//!
//! The Helm tests need `helm` (`scripts/install-helm.sh`), the shellcheck
//! test `shellcheck` (`scripts/test.sh` installs it): they are skipped
//! without them, and fail without them when CI=true.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = "charts/ferrocd-operator";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &str) -> String {
    let full = root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// Every YAML document of `text`, empty ones left out.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Follows `path` (mapping keys) from `value`.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{path:?} is not a string in {value:?}"))
}

fn seq_at<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{path:?} is not a list in {value:?}"))
}

fn kind(doc: &Value) -> &str {
    str_at(doc, &["kind"])
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

// ---------------------------------------------------------------- Dockerfile

/// Instructions of a Dockerfile: comments dropped, continuations joined.
fn dockerfile_instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    out
}

/// Binary names of a package manifest: its `[[bin]]` entries, plus the
/// package name when `src/main.rs` exists.
fn manifest_binaries(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("crate manifest");
    let mut bins = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let Some(name) = line
            .strip_prefix("name")
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
        else {
            continue;
        };
        if section == "[[bin]]" || (section == "[package]" && dir.join("src/main.rs").exists()) {
            bins.push(name);
        }
    }
    bins
}

fn workspace_binaries() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members"))
        .expect("workspace members");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .flat_map(|member| manifest_binaries(&root().join(member)))
        .collect()
}

#[test]
fn dockerfile_builds_workspace_binaries_from_existing_files() {
    let instructions = dockerfile_instructions(&read("Dockerfile"));
    let known = workspace_binaries();
    for bin in ["ferrocd", "ferrocd-operator", "crdgen"] {
        assert!(known.contains(bin), "{bin} missing from {known:?}");
    }

    let mut built = BTreeSet::new();
    for instruction in instructions.iter().filter(|i| i.starts_with("RUN ")) {
        let words: Vec<&str> = instruction.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "--bin" {
                built.insert(pair[1].trim_end_matches(';').to_string());
            }
        }
    }
    assert!(built.contains("ferrocd") && built.contains("ferrocd-operator"));
    for bin in &built {
        assert!(
            known.contains(bin),
            "Dockerfile builds unknown binary {bin}"
        );
    }

    let mut copies = 0;
    for instruction in instructions.iter().filter(|i| i.starts_with("COPY ")) {
        let args: Vec<&str> = instruction.split_whitespace().skip(1).collect();
        if args.iter().any(|a| a.starts_with("--from")) {
            continue;
        }
        let paths: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
        let (_dest, sources) = paths.split_last().expect("COPY has a destination");
        for source in sources {
            copies += 1;
            assert!(
                root().join(source).exists(),
                "COPY source {source} does not exist"
            );
        }
    }
    assert!(copies > 0, "no COPY from the build context");

    let stages = instructions
        .iter()
        .filter(|i| i.to_uppercase().starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage build expected");
    let runtime = instructions
        .iter()
        .rev()
        .take_while(|i| !i.to_uppercase().starts_with("FROM "))
        .collect::<Vec<_>>();
    let user = runtime
        .iter()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("runtime stage sets USER");
    let name = user.split(':').next().unwrap().trim();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "runtime stage runs as {user}"
    );
    assert!(runtime
        .iter()
        .any(|i| i.starts_with("EXPOSE ") && i.contains("2379") && i.contains("2380")));
}

#[test]
fn dockerignore_keeps_build_inputs() {
    let ignored = read(".dockerignore");
    let patterns: Vec<&str> = ignored
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(patterns.contains(&"target/"));
    assert!(patterns.contains(&".git/"));
    for needed in ["Cargo.toml", "Cargo.lock", "proto", "store", "operator"] {
        assert!(!patterns.contains(&needed), "{needed} is ignored");
    }
}

// --------------------------------------------------------------------- Helm

fn helm(args: &[&str]) -> String {
    let output = Command::new("helm")
        .args(args)
        .current_dir(root())
        .output()
        .expect("running helm");
    assert!(
        output.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "rel", CHART, "--namespace", "ops"];
    args.extend_from_slice(extra);
    documents(&helm(&args))
}

type Grant = (String, String, String);

/// What the operator's controller calls, in every namespace it reconciles.
fn reconcile_grants() -> BTreeSet<Grant> {
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            "ferrocd.io",
            &["etcdclusters"],
            &["get", "list", "watch", "patch", "update"],
        ),
        ("ferrocd.io", &["etcdclusters/status"], &["get", "patch"]),
        // The StatefulSet is deleted to rebuild a cluster from a backup,
        // and, leaving its pods, to take a larger claim template.
        (
            "apps",
            &["statefulsets"],
            &[
                "get", "list", "watch", "patch", "create", "update", "delete",
            ],
        ),
        (
            "",
            &["services", "configmaps"],
            &["get", "list", "watch", "patch", "create", "update"],
        ),
        (
            "policy",
            &["poddisruptionbudgets"],
            &[
                "get", "list", "watch", "patch", "create", "update", "delete",
            ],
        ),
        // Claims are raised when spec.storage.size grows.
        (
            "",
            &["persistentvolumeclaims"],
            &["get", "list", "watch", "patch", "delete"],
        ),
        // Member pods are annotated after a certificate rotation, and
        // deleted one at a time to move them onto a new image.
        ("", &["pods"], &["get", "list", "watch", "patch", "delete"]),
        // Certificate Secrets of TLS clusters.
        (
            "",
            &["secrets"],
            &["get", "list", "watch", "patch", "create"],
        ),
        // cert-manager Certificates of `tls.issuerRef` clusters, applied.
        ("cert-manager.io", &["certificates"], &["patch", "create"]),
        ("events.k8s.io", &["events"], &["create", "patch"]),
        // EtcdBackups and the Jobs that take them.
        (
            "ferrocd.io",
            &["etcdbackups"],
            &["get", "list", "watch", "patch", "create", "delete"],
        ),
        ("ferrocd.io", &["etcdbackups/status"], &["get", "patch"]),
        ("batch", &["jobs"], &["get", "list", "watch", "create"]),
    ];
    grants_of(table)
}

fn lease_grants() -> BTreeSet<Grant> {
    grants_of(&[(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )])
}

fn grants_of(table: &[(&str, &[&str], &[&str])]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (group, resources, verbs) in table {
        for resource in *resources {
            for verb in *verbs {
                out.insert((group.to_string(), resource.to_string(), verb.to_string()));
            }
        }
    }
    out
}

/// Every (group, resource, verb) a Role or ClusterRole grants; wildcards
/// and resourceNames-free rules only.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in seq_at(role, &["rules"]) {
        let list = |key: &str| -> Vec<String> {
            seq_at(rule, &[key])
                .iter()
                .map(|v| v.as_str().expect("string").to_string())
                .collect()
        };
        let (groups, resources, verbs) = (list("apiGroups"), list("resources"), list("verbs"));
        for item in groups.iter().chain(&resources).chain(&verbs) {
            assert!(!item.contains('*'), "wildcard in {rule:?}");
        }
        for g in &groups {
            for r in &resources {
                for v in &verbs {
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

fn namespace(doc: &Value) -> &str {
    at(doc, &["metadata", "namespace"])
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn container(deployment: &Value) -> &Value {
    let containers = seq_at(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn strings(values: &[Value]) -> Vec<&str> {
    values.iter().filter_map(Value::as_str).collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    seq_at(container, &["env"])
        .iter()
        .find(|e| str_at(e, &["name"]) == name)
}

/// Checks shared by every rendering: hardened pod, probes, env.
fn check_deployment(deployment: &Value) {
    let pod = at(deployment, &["spec", "template", "spec"]).unwrap();
    let c = container(deployment);
    assert_eq!(
        at(pod, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool),
        Some(true)
    );
    let sc = at(c, &["securityContext"]).expect("container securityContext");
    assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(seq_at(sc, &["capabilities", "drop"])), ["ALL"]);
    assert!(at(c, &["resources", "requests"]).is_some());

    assert_eq!(strings(seq_at(c, &["command"])), ["ferrocd-operator"]);
    let args = strings(seq_at(c, &["args"]));
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");
    let ports = seq_at(c, &["ports"]);
    assert!(ports.iter().any(
        |p| p["name"].as_str() == Some("metrics") && p["containerPort"].as_u64() == Some(8080)
    ));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(str_at(c, &[probe, "httpGet", "path"]), path);
        assert_eq!(str_at(c, &[probe, "httpGet", "port"]), "metrics");
    }
    let pod_namespace = env_value(c, "POD_NAMESPACE").expect("POD_NAMESPACE");
    assert_eq!(
        str_at(pod_namespace, &["valueFrom", "fieldRef", "fieldPath"]),
        "metadata.namespace"
    );
    assert!(env_value(c, "POD_NAME").is_some());
    assert_eq!(
        str_at(
            deployment,
            &["spec", "template", "spec", "serviceAccountName"]
        ),
        "rel-ferrocd-operator"
    );
}

#[test]
fn chart_lints_strictly() {
    if !ferrocd_e2e::require_tool("helm") {
        return;
    }
    helm(&["lint", "--strict", CHART]);
    helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "watchNamespaces={a,b}",
        "--set",
        "replicaCount=2",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "etcdCluster.create=true",
    ]);
}

#[test]
fn default_render_is_cluster_wide_and_least_privilege() {
    if !ferrocd_e2e::require_tool("helm") {
        return;
    }
    let docs = render(&[]);

    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(grants(cluster_roles[0]), reconcile_grants());
    let binding = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(binding.len(), 1);
    assert_eq!(
        str_at(binding[0], &["roleRef", "name"]),
        str_at(cluster_roles[0], &["metadata", "name"])
    );
    let subject = &seq_at(binding[0], &["subjects"])[0];
    assert_eq!(str_at(subject, &["kind"]), "ServiceAccount");
    assert_eq!(str_at(subject, &["namespace"]), "ops");

    // Only the leader-election Role, in the release namespace.
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 1);
    assert_eq!(namespace(roles[0]), "ops");
    assert_eq!(grants(roles[0]), lease_grants());
    assert_eq!(of_kind(&docs, "RoleBinding").len(), 1);
    assert_eq!(of_kind(&docs, "ServiceAccount").len(), 1);

    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let deployment = deployments[0];
    check_deployment(deployment);
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1));
    let c = container(deployment);
    assert!(env_value(c, "WATCH_NAMESPACE").is_none());
    let args = strings(seq_at(c, &["args"]));
    assert!(args.contains(&"--leader-election=true"), "{args:?}");
    assert!(args.contains(&"--leader-election-id=ferrocd-operator"));
    assert_eq!(
        str_at(c, &["image"]),
        "ghcr.io/ferrocd/ferrocd:0.1.0",
        "image tag defaults to appVersion"
    );

    let services = of_kind(&docs, "Service");
    assert_eq!(services.len(), 1);
    assert_eq!(
        str_at(&seq_at(services[0], &["spec", "ports"])[0], &["targetPort"]),
        "metrics"
    );
    assert!(of_kind(&docs, "ServiceMonitor").is_empty());
    assert!(of_kind(&docs, "EtcdCluster").is_empty());
    // The CRD lives in crds/, which `helm template` leaves out by default.
    assert!(of_kind(&docs, "CustomResourceDefinition").is_empty());
}

#[test]
fn namespaced_render_with_ha_and_service_monitor() {
    if !ferrocd_e2e::require_tool("helm") {
        return;
    }
    let docs = render(&[
        "--set",
        "watchNamespaces={a,b}",
        "--set",
        "replicaCount=2",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "etcdCluster.create=true",
    ]);

    assert!(of_kind(&docs, "ClusterRole").is_empty());
    assert!(of_kind(&docs, "ClusterRoleBinding").is_empty());
    for ns in ["a", "b"] {
        let roles: Vec<_> = of_kind(&docs, "Role")
            .into_iter()
            .filter(|r| namespace(r) == ns)
            .collect();
        assert_eq!(roles.len(), 1, "one Role in {ns}");
        assert_eq!(grants(roles[0]), reconcile_grants());
        let bindings: Vec<_> = of_kind(&docs, "RoleBinding")
            .into_iter()
            .filter(|r| namespace(r) == ns)
            .collect();
        assert_eq!(bindings.len(), 1, "one RoleBinding in {ns}");
        assert_eq!(
            str_at(bindings[0], &["roleRef", "name"]),
            str_at(roles[0], &["metadata", "name"])
        );
        assert_eq!(
            str_at(&seq_at(bindings[0], &["subjects"])[0], &["namespace"]),
            "ops"
        );
    }
    let lease_roles: Vec<_> = of_kind(&docs, "Role")
        .into_iter()
        .filter(|r| namespace(r) == "ops")
        .collect();
    assert_eq!(lease_roles.len(), 1);
    assert_eq!(grants(lease_roles[0]), lease_grants());

    // `--namespace` takes one namespace: one Deployment for each.
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 2);
    let mut watched = BTreeSet::new();
    let mut leases = BTreeSet::new();
    for deployment in deployments {
        check_deployment(deployment);
        assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
        let c = container(deployment);
        let watch = env_value(c, "WATCH_NAMESPACE").expect("WATCH_NAMESPACE");
        watched.insert(str_at(watch, &["value"]).to_string());
        let args = strings(seq_at(c, &["args"]));
        assert!(args.contains(&"--leader-election=true"), "{args:?}");
        leases.extend(
            args.iter()
                .filter_map(|a| a.strip_prefix("--leader-election-id="))
                .map(str::to_string),
        );
    }
    assert_eq!(watched, BTreeSet::from(["a".to_string(), "b".to_string()]));
    assert_eq!(leases.len(), 2, "each Deployment has its own Lease");

    let monitors = of_kind(&docs, "ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let endpoint = &seq_at(monitors[0], &["spec", "endpoints"])[0];
    assert_eq!(str_at(endpoint, &["port"]), "metrics");
    assert_eq!(str_at(endpoint, &["path"]), "/metrics");

    let clusters = of_kind(&docs, "EtcdCluster");
    assert_eq!(clusters.len(), 1);
    assert_eq!(str_at(clusters[0], &["apiVersion"]), "ferrocd.io/v1alpha1");
}

#[test]
fn chart_rejects_unsafe_values() {
    if !ferrocd_e2e::require_tool("helm") {
        return;
    }
    for values in [
        [
            "--set",
            "replicaCount=2",
            "--set",
            "leaderElection.enabled=false",
        ],
        ["--set", "replicaCount=1", "--set", "unknownKey=true"],
        [
            "--set",
            "replicaCount=1",
            "--set",
            "watchNamespaces={Bad_Name}",
        ],
    ] {
        let mut args = vec!["template", "rel", CHART];
        args.extend_from_slice(&values);
        let status = Command::new("helm")
            .args(&args)
            .current_dir(root())
            .output()
            .expect("running helm")
            .status;
        assert!(!status.success(), "helm accepted {values:?}");
    }
}

#[test]
fn chart_crd_is_the_generated_crd() {
    for file in [
        "ferrocd.io_etcdclusters.yaml",
        "ferrocd.io_etcdbackups.yaml",
    ] {
        let generated = read(&format!("crds/{file}"));
        let in_chart = read(&format!("{CHART}/crds/{file}"));
        assert!(
            generated == in_chart,
            "{CHART}/crds/ differs from crds/: cp crds/{file} {CHART}/crds/"
        );
    }
}

#[test]
fn chart_app_version_is_the_workspace_version() {
    let chart: Value = serde_yaml::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert_eq!(str_at(&chart, &["appVersion"]), env!("CARGO_PKG_VERSION"));
    let schema: serde_json::Value =
        serde_json::from_str(&read(&format!("{CHART}/values.schema.json"))).unwrap();
    assert_eq!(schema["type"], "object");
}

// ------------------------------------------------------------------ Examples

/// Checks that every key of `value` is declared in the `schema` node
/// (`properties`, `additionalProperties`, `items`), recursing into both. An
/// object schema without `properties` (embedded Kubernetes types the
/// generator leaves open) accepts any keys.
fn check_against_schema(value: &Value, schema: &Value, path: &str) {
    match value {
        Value::Mapping(map) => {
            let properties = schema.get("properties");
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let key = key.as_str().expect("string key");
                let child_path = format!("{path}.{key}");
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    check_against_schema(child, sub, &child_path);
                } else if let Some(sub) = additional.filter(|a| a.is_mapping()) {
                    check_against_schema(child, sub, &child_path);
                } else {
                    assert!(
                        properties.is_none(),
                        "{child_path} is not in the CRD schema"
                    );
                }
            }
        }
        Value::Sequence(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_against_schema(item, sub, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

#[test]
fn examples_fit_the_crd() {
    let crd = documents(&read("crds/ferrocd.io_etcdclusters.yaml"))
        .into_iter()
        .next()
        .expect("CRD document");
    let group = str_at(&crd, &["spec", "group"]);
    let kind_name = str_at(&crd, &["spec", "names", "kind"]);
    let versions = seq_at(&crd, &["spec", "versions"]);

    let mut dir: Vec<_> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    dir.sort();
    let names: Vec<_> = dir
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "etcdcluster-3.yaml",
        "etcdcluster-dev.yaml",
        "etcdcluster-5-anti-affinity.yaml",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing");
    }

    for path in &dir {
        let text = std::fs::read_to_string(path).unwrap();
        let docs = documents(&text);
        assert_eq!(docs.len(), 1, "{}", path.display());
        let doc = &docs[0];
        let (api_group, version) = str_at(doc, &["apiVersion"])
            .split_once('/')
            .expect("group/version");
        assert_eq!(api_group, group, "{}", path.display());
        assert_eq!(kind(doc), kind_name, "{}", path.display());
        let served = versions
            .iter()
            .find(|v| str_at(v, &["name"]) == version)
            .unwrap_or_else(|| panic!("{}: version {version} not in the CRD", path.display()));
        let schema = at(served, &["schema", "openAPIV3Schema"]).expect("schema");
        assert!(at(doc, &["metadata", "name"]).is_some());
        let spec = at(doc, &["spec"]).expect("spec");
        assert!(spec.is_mapping());
        check_against_schema(spec, &schema["properties"]["spec"], "spec");

        let replicas = spec["replicas"].as_i64().expect("replicas set");
        assert!((1..=9).contains(&replicas), "{}", path.display());
    }

    let read_example = |name: &str| documents(&read(&format!("examples/{name}"))).remove(0);
    assert_eq!(
        read_example("etcdcluster-3.yaml")["spec"]["replicas"].as_i64(),
        Some(3)
    );
    let dev = read_example("etcdcluster-dev.yaml");
    assert_eq!(dev["spec"]["replicas"].as_i64(), Some(1));
    assert!(at(&dev, &["spec", "storage", "emptyDir"]).is_some());
    let ha = read_example("etcdcluster-5-anti-affinity.yaml");
    assert_eq!(ha["spec"]["replicas"].as_i64(), Some(5));
    assert!(at(&ha, &["spec", "podTemplate", "affinity", "podAntiAffinity"]).is_some());

    let doc = read("examples/kube-apiserver.md");
    assert!(doc.contains("--etcd-servers") && doc.contains("status.clientEndpoint"));
}

// ------------------------------------------------------------ kind walkthrough

// A module of this test target, not a target of its own: it shares the
// helpers above.
#[path = "packaging/kind_walkthrough.rs"]
mod kind_walkthrough;
