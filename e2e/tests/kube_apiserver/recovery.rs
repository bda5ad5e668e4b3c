//! Quorum loss on the real node: a three-member cluster with
//! `spec.recovery.mode: FromSurvivor` loses two members' pods and volumes
//! at once; the operator restarts the survivor with `--force-new-cluster`
//! and grows the cluster back to three through learners, with every
//! acknowledged key.

use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{condition, text, wait_for, Node};
use ferrocd_e2e::writer::{Route, Writer};
use serde_json::Value;

use super::{IMAGE_REPOSITORY, IMAGE_TAG};

const NAME: &str = "ferrocd-rec";
const KEYS: usize = 20;

/// Returns how long writes through the client Service failed.
pub fn quorum_loss_is_rebuilt_from_the_survivor(node: &Node) -> Duration {
    let manifest = format!(
        "apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: {NAME}
spec:
  replicas: 3
  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}
  storage:
    size: 256Mi
  recovery:
    mode: FromSurvivor
    gracePeriodSeconds: 10
"
    );
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
    let endpoint = wait_ready(
        node,
        "the recovery cluster 3/3 ready",
        Duration::from_secs(120),
    );
    let keys: Vec<String> = (0..KEYS).map(|i| format!("rec/{i:03}")).collect();
    for key in &keys {
        let put = etcdctl(&endpoint, &["put", key, "v"], None);
        assert!(put.status.success(), "put {key}: {}", text(&put));
    }
    // The survivor must hold every acknowledged key: all members apply
    // the last one before the loss.
    let last = keys.last().unwrap();
    wait_for(
        "every member has the last key",
        Duration::from_secs(30),
        || {
            (0..3)
                .all(|i| {
                    let got = etcdctl(
                        &member_endpoint(node, i),
                        &["get", last, "--consistency=s", "--print-value-only"],
                        None,
                    );
                    text(&got).trim() == "v"
                })
                .then_some(())
        },
        || describe(node),
    );

    let writer = Writer::start(
        vec![Route::plain(&endpoint)],
        "rec-writer/",
        Duration::from_millis(200),
    );
    let lost_at = Instant::now();
    for i in [1, 2] {
        node.kubectl_ok(&["delete", "pvc", &format!("data-{NAME}-{i}"), "--wait=false"]);
    }
    node.kubectl_ok(&[
        "delete",
        "pod",
        &format!("{NAME}-1"),
        &format!("{NAME}-2"),
        "--wait=true",
    ]);
    let endpoint = wait_ready(
        node,
        "3/3 ready again after the quorum loss",
        Duration::from_secs(300),
    );
    let took = lost_at.elapsed();
    let outage = writer.stop().longest_outage;
    for key in &keys {
        let get = etcdctl(&endpoint, &["get", key, "--print-value-only"], None);
        assert_eq!(text(&get).trim(), "v", "{key} after the recovery");
    }
    let status = status(node);
    assert_eq!(
        condition(&status, "QuorumLost")["status"],
        "False",
        "{status}"
    );
    assert_eq!(
        condition(&status, "Recovering")["reason"],
        "Recovered",
        "{status}"
    );
    let events = node.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={NAME}"),
    ]);
    assert!(events.contains("QuorumRecoveryStarted"), "{events}");
    assert!(events.contains("QuorumRecovered"), "{events}");
    eprintln!("quorum loss: 3/3 ready again in {took:.1?}; no write acknowledged for {outage:.1?}");
    node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        NAME,
        "--type=merge",
        "-p",
        r#"{"spec":{"storage":{"retainOnDelete":false}}}"#,
    ]);
    node.kubectl_ok(&["delete", "etcdcluster", NAME, "--wait=false"]);
    outage
}

/// Waits until the status shows three ready voters and the client Service
/// answers; its endpoint.
fn wait_ready(node: &Node, what: &str, limit: Duration) -> String {
    super::three_ready_voters(
        node,
        NAME,
        "rec/probe",
        what,
        limit,
        |_| true,
        || describe(node),
    )
}

fn member_endpoint(node: &Node, ordinal: usize) -> String {
    let ip = node.kubectl_ok(&[
        "get",
        "pod",
        &format!("{NAME}-{ordinal}"),
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    format!("{}:2379", ip.trim())
}

fn status(node: &Node) -> Value {
    node.etcdcluster_status(NAME)
}

fn describe(node: &Node) -> String {
    let get = |args: &[&str]| text(&node.kubectl(args));
    format!(
        "--- EtcdCluster ---\n{}\n--- pods, PVCs ---\n{}\n--- events ---\n{}\n--- operator log ---\n{}\n--- member logs ---\n{}",
        get(&["get", "etcdcluster", NAME, "-o", "yaml"]),
        get(&["get", "pods,pvc", "-o", "wide"]),
        get(&["get", "events", "--sort-by=.lastTimestamp"]),
        get(&["logs", "-n", super::OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=40"]),
        (0..3)
            .map(|i| get(&["logs", &format!("{NAME}-{i}"), "--tail=15"]))
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
}
