//! Lifecycle scenarios of the real-node suite: the operator's pod deleted
//! in the middle of a scale-up (leader election hands over and the new
//! operator finishes the step), the single-member emptyDir cluster of
//! `examples/etcdcluster-dev.yaml` outliving its pod, and deleting
//! clusters with and without `spec.storage.retainOnDelete`.

use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{text, wait_for, Node};
use serde_json::Value;

use super::{apply_example, Cluster, CLUSTER, OPERATOR_NAMESPACE};

/// Name of the EtcdCluster in examples/etcdcluster-dev.yaml.
const DEV: &str = "ferrocd-dev";
/// Name of the EtcdCluster in examples/etcdcluster-tls.yaml.
const TLS: &str = "ferrocd-tls";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=ferrocd-operator";

/// Scales the cluster 3 -> 4, deletes the operator's pod once the learner
/// is in the member list, and waits for the new operator to promote it;
/// then scales back to 3.
pub fn operator_restarted_mid_scale_up_completes_it(cluster: &Cluster<'_>) {
    cluster.wait_ready("3 ready voters before the scale-up", |_| true);
    let node = cluster.node;
    let holder_before = lease_holder(node);
    set_replicas(node, 4);
    wait_for(
        "a learner in the member list",
        Duration::from_secs(60),
        || {
            let members = status(node, CLUSTER)["members"].as_array().cloned()?;
            members.iter().any(|m| m["isLearner"] == true).then_some(())
        },
        || cluster.describe(),
    );
    let killed = Instant::now();
    node.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        OPERATOR_SELECTOR,
        "--wait=false",
    ]);
    wait_for(
        "4 ready voters after the operator's pod was deleted mid-step",
        Duration::from_secs(120),
        || {
            let status = status(node, CLUSTER);
            let members = status["members"].as_array()?;
            let voters = members
                .iter()
                .all(|m| m["healthy"] == true && m["isLearner"] != true);
            (status["readyReplicas"] == 4 && members.len() == 4 && voters).then_some(())
        },
        || cluster.describe(),
    );
    let holder_after = lease_holder(node);
    eprintln!(
        "operator restarted mid scale-up: Lease {holder_before:?} -> {holder_after:?}, learner promoted {:.1?} after the pod was deleted",
        killed.elapsed()
    );
    assert_ne!(
        holder_before, holder_after,
        "another operator pod took over"
    );
    set_replicas(node, 3);
    cluster.wait_ready("back to 3 ready voters", |_| true);
}

/// The single-member emptyDir cluster: its pod deleted, the new pod starts
/// a cluster anew on the empty volume instead of crash-looping.
pub fn lone_empty_dir_member_survives_its_pod(node: &Node) {
    apply_example(node, "etcdcluster-dev.yaml");
    let endpoint = wait_ready_alone(node, "the dev cluster ready");
    let put = etcdctl(&endpoint, &["put", "dev/k", "v"], None);
    assert!(put.status.success(), "put: {}", text(&put));
    let deleted = Instant::now();
    node.kubectl_ok(&["delete", "pod", &format!("{DEV}-0"), "--wait=true"]);
    let endpoint = wait_ready_alone(node, "the dev cluster ready again on a new pod");
    let put = etcdctl(&endpoint, &["put", "dev/k", "again"], None);
    assert!(
        put.status.success(),
        "put after the new pod: {}",
        text(&put)
    );
    eprintln!(
        "dev cluster: a new pod served {:.1?} after the old one was deleted",
        deleted.elapsed()
    );
}

/// Deletes the PVC cluster (`retainOnDelete` defaults to true: its PVCs
/// stay) and the TLS one with `retainOnDelete: false` (its PVCs go).
pub fn deletion_keeps_or_removes_volumes(node: &Node) {
    node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        TLS,
        "--type=merge",
        "-p",
        r#"{"spec":{"storage":{"retainOnDelete":false}}}"#,
    ]);
    let started = Instant::now();
    for name in [CLUSTER, TLS, DEV] {
        node.kubectl_ok(&["delete", "etcdcluster", name, "--wait=false"]);
    }
    wait_for(
        "the clusters and their pods gone, only the retained PVCs left",
        Duration::from_secs(120),
        || {
            // Other scenarios' clusters may still be on their way out.
            let clusters = node.kubectl_ok(&["get", "etcdclusters", "-o", "name"]);
            let clusters_gone = [CLUSTER, TLS, DEV].iter().all(|name| {
                !clusters
                    .lines()
                    .any(|l| l.trim().ends_with(&format!("/{name}")))
            });
            let pods = node.kubectl_ok(&["get", "pods", "-o", "name"]);
            let member_pod = |pod: &str| {
                [CLUSTER, TLS, DEV].iter().any(|name| {
                    pod.trim()
                        .strip_prefix(&format!("pod/{name}-"))
                        .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
                })
            };
            let pods_gone = !pods.lines().any(member_pod);
            let pvcs = pvcs(node);
            let retained = (0..3).all(|i| pvcs.contains(&format!("data-{CLUSTER}-{i}")));
            let removed = !pvcs.iter().any(|p| p.starts_with(&format!("data-{TLS}-")));
            (clusters_gone && pods_gone && retained && removed).then_some(())
        },
        || text(&node.kubectl(&["get", "etcdclusters,pods,pvc", "-o", "wide"])),
    );
    eprintln!(
        "deletion: {CLUSTER} kept its PVCs, {TLS} (retainOnDelete false) lost them, in {:.1?}",
        started.elapsed()
    );
}

/// `kubectl scale`, through the EtcdCluster's scale subresource.
fn set_replicas(node: &Node, replicas: i32) {
    node.kubectl_ok(&[
        "scale",
        "etcdcluster",
        CLUSTER,
        &format!("--replicas={replicas}"),
    ]);
}

fn status(node: &Node, name: &str) -> Value {
    node.etcdcluster_status(name)
}

fn lease_holder(node: &Node) -> String {
    node.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        OPERATOR_NAMESPACE,
        "ferrocd-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .trim()
    .to_string()
}

/// The dev cluster's client Service endpoint once it reports one ready
/// member that takes a write.
fn wait_ready_alone(node: &Node, what: &str) -> String {
    wait_for(
        what,
        Duration::from_secs(90),
        || {
            if status(node, DEV)["readyReplicas"] != 1 {
                return None;
            }
            let ip = node.kubectl_ok(&["get", "service", DEV, "-o", "jsonpath={.spec.clusterIP}"]);
            let endpoint = format!("{}:2379", ip.trim());
            etcdctl(&endpoint, &["endpoint", "health"], None)
                .status
                .success()
                .then_some(endpoint)
        },
        || {
            text(&node.kubectl(&["get", "etcdcluster", DEV, "-o", "yaml"]))
                + &text(&node.kubectl(&["logs", &format!("{DEV}-0"), "--tail=20"]))
        },
    )
}

fn pvcs(node: &Node) -> Vec<String> {
    node.kubectl_ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(String::from)
        .collect()
}
