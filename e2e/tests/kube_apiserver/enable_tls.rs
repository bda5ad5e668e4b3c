//! Turning TLS on for a running cluster: a 3-member plain-text
//! `EtcdCluster` gets `spec.tls.auto` while a writer puts keys through the
//! client Service (in plain text, and with the client Secret once the
//! operator has issued it, on the TLS side port 2381 or on 2379). The cluster must end 3/3 ready serving mutual
//! TLS alone, with every key kept, and writes may fail only briefly.

use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{text, wait_for, Node};
use ferrocd_e2e::writer::{Route, Writer};
use serde_json::Value;

use super::tls_scenario::decode_base64;
use super::{IMAGE_REPOSITORY, IMAGE_TAG, OPERATOR_NAMESPACE};

const NAME: &str = "enable-tls";
/// Longest time without an acknowledged write while TLS comes on.
const MAX_OUTAGE: Duration = Duration::from_secs(8);

/// Runs the scenario on `node`, where the operator is installed; returns
/// the longest time writes failed.
pub fn plain_cluster_turns_tls_on_under_writes(node: &Node) -> Duration {
    let manifest = format!(
        "apiVersion: ferrocd.io/v1alpha1\nkind: EtcdCluster\nmetadata:\n  name: {NAME}\nspec:\n  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}\n  replicas: 3\n  storage:\n    size: 100Mi\n"
    );
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
    wait_for(
        "the plain-text cluster has 3 ready members",
        Duration::from_secs(120),
        || (ready(node) == Some(3)).then_some(()),
        || describe(node),
    );
    let ip = node.kubectl_ok(&["get", "service", NAME, "-o", "jsonpath={.spec.clusterIP}"]);
    let ip = ip.trim().to_string();
    let plain = format!("{ip}:2379");
    let before: Vec<String> = (0..20).map(|i| format!("before/{i:02}")).collect();
    for key in &before {
        let put = etcdctl(&plain, &["put", key, key], None);
        assert!(put.status.success(), "put {key}: {}", text(&put));
    }

    let files = tempfile::tempdir().unwrap();
    let flags = vec![
        format!("--cacert={}", files.path().join("ca.crt").display()),
        format!("--cert={}", files.path().join("tls.crt").display()),
        format!("--key={}", files.path().join("tls.key").display()),
    ];
    // A TLS client may use the side port while TLS comes on: it speaks TLS
    // on every pod from the first roll on, where 2379 is plain on some pods
    // and TLS on others while the main ports switch.
    let secure_endpoints = format!("https://{ip}:2381,https://{ip}:2379");
    let writer = Writer::start(
        vec![
            Route::plain(&plain),
            Route::with_flags(&secure_endpoints, flags.clone()).once_present(
                ["ca.crt", "tls.crt", "tls.key"]
                    .iter()
                    .map(|f| files.path().join(f))
                    .collect(),
            ),
        ],
        "during/",
        Duration::from_millis(50),
    );
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        NAME,
        "--type=merge",
        "-p",
        r#"{"spec":{"tls":{"auto":{}}}}"#,
    ]);
    wait_for(
        "the operator issued the client Secret",
        Duration::from_secs(60),
        || write_client_files(node, files.path()),
        || describe(node),
    );
    wait_for(
        "TLS on: EnablingTLS=False/Enabled and 3 ready members",
        Duration::from_secs(480),
        || (enabled(node) && ready(node) == Some(3)).then_some(()),
        || describe(node),
    );
    let took = started.elapsed();
    let report = writer.stop();
    eprintln!(
        "TLS turned on in {took:.1?}: {} writes ok, {} attempts failed, longest failure window {:.1?}; first errors: {:?}",
        report.acknowledged.len(),
        report.failed,
        report.longest_outage,
        report.errors
    );
    assert!(
        report.longest_outage < MAX_OUTAGE,
        "no write acknowledged for {:?}",
        report.longest_outage
    );

    let secure = format!("https://{ip}:2379");
    let with_tls = |args: &[&str]| {
        let all: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        etcdctl(&secure, &all, None)
    };
    let keys = with_tls(&["get", "", "--prefix", "--keys-only"]);
    let keys = String::from_utf8_lossy(&keys.stdout).to_string();
    let have: std::collections::HashSet<&str> = keys.lines().collect();
    let missing: Vec<&String> = before
        .iter()
        .chain(&report.acknowledged)
        .filter(|k| !have.contains(k.as_str()))
        .collect();
    assert!(missing.is_empty(), "keys lost: {missing:?}");
    let refused = etcdctl(
        &plain,
        &["--dial-timeout=2s", "--command-timeout=3s", "put", "k", "v"],
        None,
    );
    assert!(
        !refused.status.success(),
        "a plain-text client still writes"
    );
    let list = with_tls(&["member", "list", "-w", "json"]);
    let list: Value = serde_json::from_slice(&list.stdout).expect("member list");
    let peer_urls: Vec<&str> = list["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["peerURLs"][0].as_str())
        .collect();
    assert_eq!(peer_urls.len(), 3, "{list}");
    assert!(
        peer_urls
            .iter()
            .all(|u| u.starts_with("https://") && u.ends_with(":2380")),
        "{peer_urls:?}"
    );
    node.kubectl_ok(&[
        "delete",
        "etcdcluster",
        NAME,
        "--wait=true",
        "--timeout=60s",
    ]);
    // Its volumes are kept by default; later scenarios count PVCs.
    node.kubectl_ok(&[
        "delete",
        "pvc",
        "-l",
        &format!("app.kubernetes.io/instance={NAME}"),
        "--wait=false",
    ]);
    report.longest_outage
}

fn cluster(node: &Node) -> Option<Value> {
    let out = node.kubectl(&["get", "etcdcluster", NAME, "-o", "json"]);
    serde_json::from_slice(&out.stdout).ok()
}

fn ready(node: &Node) -> Option<i64> {
    let status = cluster(node)?["status"].clone();
    let healthy = status["members"]
        .as_array()?
        .iter()
        .all(|m| m["healthy"].as_bool() == Some(true));
    status["readyReplicas"].as_i64().filter(|_| healthy)
}

fn enabled(node: &Node) -> bool {
    cluster(node).is_some_and(|c| {
        c["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "EnablingTLS" && c["status"] == "False" && c["reason"] == "Enabled"
            })
        })
    })
}

/// Writes the client Secret's files into `dir` once the status names it.
fn write_client_files(node: &Node, dir: &std::path::Path) -> Option<()> {
    let name = cluster(node)?["status"]["clientSecret"]
        .as_str()?
        .to_string();
    let out = node.kubectl(&["get", "secret", &name, "-o", "json"]);
    let secret: Value = serde_json::from_slice(&out.stdout).ok()?;
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let encoded = secret["data"][key].as_str()?;
        std::fs::write(dir.join(key), decode_base64(encoded)).ok()?;
    }
    Some(())
}

fn describe(node: &Node) -> String {
    let get = |args: &[&str]| text(&node.kubectl(args));
    format!(
        "--- EtcdCluster ---\n{}\n--- pods ---\n{}\n--- events ---\n{}\n--- operator log ---\n{}\n--- member logs ---\n{}",
        get(&["get", "etcdcluster", NAME, "-o", "yaml"]),
        get(&["get", "pods", "-o", "wide"]),
        get(&["get", "events", "--sort-by=.lastTimestamp"]),
        get(&["logs", "-n", OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=40"]),
        (0..3)
            .map(|i| get(&["logs", &format!("{NAME}-{i}"), "--tail=15"]))
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
}
