//! `e2e/kind/walkthrough.sh` runs only where docker and kind do, so what can
//! be checked without them is checked here: the script parses and passes
//! shellcheck, every repository path it names exists, and its default
//! names agree with the example, the CRD and the chart they refer to.

use std::collections::BTreeMap;
use std::process::Command;

use serde_yaml::Value;

use super::{at, documents, helm, kind, of_kind, read, root, seq_at, str_at, CHART};

const SCRIPT: &str = "e2e/kind/walkthrough.sh";
const GUIDE: &str = "e2e/kind/README.md";
/// Top-level directories whose paths the script may name.
const REPO_DIRS: &[&str] = &["charts/", "crds/", "e2e/", "examples/", "scripts/"];

/// The script's settings: `NAME="${NAME:-default}"` lines, name to default.
fn settings(script: &str) -> BTreeMap<String, String> {
    script
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once("=\"${")?;
            let default = rest.strip_prefix(name)?.strip_prefix(":-")?;
            let default = default.strip_suffix("}\"")?;
            Some((name.to_string(), default.to_string()))
        })
        .collect()
}

fn setting<'a>(settings: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    settings
        .get(name)
        .unwrap_or_else(|| panic!("{SCRIPT} has no {name}=\"${{{name}:-...}}\" setting"))
}

/// Words of `text` that start with one of the repository's directories,
/// cut at the first character a path here never contains. A `-` may
/// precede one (`${EXAMPLE:-examples/...}`); a word character or `/` may
/// not (`ghcr.io/...`).
fn repo_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._/-".contains(c);
    let mut paths = Vec::new();
    for (start, _) in text.char_indices() {
        let rest = &text[start..];
        let after_boundary = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || "._/".contains(c)));
        if after_boundary && REPO_DIRS.iter().any(|d| rest.starts_with(d)) {
            let end = rest.find(|c| !is_path_char(c)).unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches('.').to_string());
        }
    }
    paths
}

/// The one document of an example manifest.
fn example(path: &str) -> Value {
    let mut docs = documents(&read(path));
    assert_eq!(docs.len(), 1, "{path} holds one object");
    docs.remove(0)
}

#[test]
fn kind_walkthrough_is_valid_bash() {
    let output = Command::new("bash")
        .args(["-n", SCRIPT])
        .current_dir(root())
        .output()
        .expect("running bash");
    assert!(
        output.status.success(),
        "bash -n {SCRIPT}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let script = read(SCRIPT);
    assert!(script.starts_with("#!/usr/bin/env bash\n"));
    assert!(script.contains("\nset -euo pipefail\n"));
}

#[test]
fn kind_walkthrough_passes_shellcheck() {
    if !ferrocd_e2e::require_tool("shellcheck") {
        return;
    }
    let output = Command::new("shellcheck")
        .args(["--shell=bash", SCRIPT])
        .current_dir(root())
        .output()
        .expect("running shellcheck");
    assert!(
        output.status.success(),
        "shellcheck {SCRIPT}:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn kind_walkthrough_paths_exist() {
    let script = read(SCRIPT);
    // The script works from the repository root, two levels above it.
    assert!(script.contains("cd \"$(dirname \"$0\")/../..\""));
    assert!(root().join("Dockerfile").is_file());
    assert!(script.contains("docker build -t \"$image\" ."));

    let paths = repo_paths(&script);
    let settings = settings(&script);
    for expected in [setting(&settings, "EXAMPLE"), setting(&settings, "CHART")] {
        assert!(paths.iter().any(|p| p == expected), "{expected} not found");
    }
    for path in &paths {
        assert!(
            root().join(path).exists(),
            "{SCRIPT} names {path}, which does not exist"
        );
    }
    assert_eq!(setting(&settings, "CHART"), CHART);
    assert!(root().join(CHART).join("Chart.yaml").is_file());

    for path in repo_paths(&read(GUIDE)) {
        assert!(
            root().join(&path).exists(),
            "{GUIDE} names {path}, which does not exist"
        );
    }
}

#[test]
fn kind_walkthrough_names_match_example_and_crd() {
    let settings = settings(&read(SCRIPT));
    let example_path = setting(&settings, "EXAMPLE");
    let doc = example(example_path);
    assert_eq!(kind(&doc), "EtcdCluster");
    assert_eq!(
        str_at(&doc, &["metadata", "name"]),
        setting(&settings, "CLUSTER"),
        "CLUSTER must be metadata.name of {example_path}"
    );
    // The script puts the cluster in NAMESPACE with `apply -n`, which fails
    // on a manifest that names another namespace.
    assert!(
        at(&doc, &["metadata", "namespace"]).is_none(),
        "{example_path} must leave the namespace to kubectl -n"
    );

    // The guide promises 3 -> 5 -> 3: odd sizes, each within the CRD's 1..=9.
    let replicas = doc["spec"]["replicas"].as_i64().expect("spec.replicas");
    let scale_to: i64 = setting(&settings, "SCALE_TO").parse().expect("SCALE_TO");
    assert_eq!((replicas, scale_to), (3, 5));

    let crd = documents(&read("crds/ferrocd.io_etcdclusters.yaml")).remove(0);
    assert_eq!(
        str_at(&crd, &["metadata", "name"]),
        setting(&settings, "CRD")
    );
    assert_eq!(str_at(&crd, &["spec", "names", "kind"]), kind(&doc));
    let columns: Vec<&str> = seq_at(&crd, &["spec", "versions"])[0]["additionalPrinterColumns"]
        .as_sequence()
        .expect("printer columns")
        .iter()
        .map(|c| str_at(c, &["jsonPath"]))
        .collect();
    for waited_on in [".status.replicas", ".status.readyReplicas", ".status.phase"] {
        assert!(
            columns.contains(&waited_on),
            "{waited_on} not in {columns:?}"
        );
    }
}

#[test]
fn kind_guide_commands_pair_examples_with_their_names() {
    // Every `EXAMPLE=... CLUSTER=...` the guide suggests must name the
    // cluster the example creates, or the script stops at its name check.
    let guide = read(GUIDE);
    let mut pairs = 0;
    for line in guide.lines().filter(|l| l.contains("EXAMPLE=")) {
        let value = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(|v| v.trim_matches('`'))
        };
        let (Some(path), Some(cluster)) = (value("EXAMPLE="), value("CLUSTER=")) else {
            panic!("{GUIDE}: {line:?} sets EXAMPLE without CLUSTER");
        };
        assert_eq!(
            str_at(&example(path), &["metadata", "name"]),
            cluster,
            "{line}"
        );
        pairs += 1;
    }
    assert!(pairs > 0, "{GUIDE} shows how to run another example");
}

#[test]
fn kind_walkthrough_installs_the_local_image() {
    if !ferrocd_e2e::require_tool("helm") {
        return;
    }
    let script = read(SCRIPT);
    let settings = settings(&script);
    for flag in [
        "image.repository=$IMAGE_REPOSITORY",
        "image.tag=$IMAGE_TAG",
        "image.pullPolicy=IfNotPresent",
        "\"deployment/$RELEASE\"",
    ] {
        assert!(script.contains(flag), "{SCRIPT} does not use {flag}");
    }
    let (repository, tag) = (
        setting(&settings, "IMAGE_REPOSITORY"),
        setting(&settings, "IMAGE_TAG"),
    );
    let docs = documents(&helm(&[
        "template",
        setting(&settings, "RELEASE"),
        CHART,
        "--namespace",
        setting(&settings, "OPERATOR_NAMESPACE"),
        "--set",
        &format!("image.repository={repository}"),
        "--set",
        &format!("image.tag={tag}"),
        "--set",
        "image.pullPolicy=IfNotPresent",
    ]));
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    // The script waits on deployment/$RELEASE.
    assert_eq!(
        str_at(deployments[0], &["metadata", "name"]),
        setting(&settings, "RELEASE")
    );
    let container = &seq_at(deployments[0], &["spec", "template", "spec", "containers"])[0];
    assert_eq!(str_at(container, &["image"]), format!("{repository}:{tag}"));
    assert_eq!(str_at(container, &["imagePullPolicy"]), "IfNotPresent");
}
