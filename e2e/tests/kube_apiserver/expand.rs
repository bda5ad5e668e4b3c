//! Volume expansion on the real node: a 1-member cluster on a
//! StorageClass that allows expansion grows `spec.storage.size` from
//! 256Mi to 512Mi; the operator raises the member's PVC and renews the
//! StatefulSet's claim template without restarting the pod (same UID,
//! data kept). The node's provisioner makes hostPath volumes, which no
//! resizer grows, so the claim's capacity stays and `VolumeExpansion`
//! reports it as waiting for the storage provider. A smaller size then
//! changes nothing, and says so. The main cluster's default class
//! (`local`) does not allow expansion: asked to grow, the operator says
//! the API server refused it, and its StatefulSet keeps applying.

use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{condition, text, wait_for, Node};
use serde_json::Value;

use super::{IMAGE_REPOSITORY, IMAGE_TAG};

const NAME: &str = "ferrocd-grow";
const CLASS: &str = "ferrocd-e2e-expandable";

fn jsonpath(node: &Node, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let path = format!("jsonpath={path}");
    all.extend(["-o", &path]);
    node.kubectl_ok(&all).trim().to_string()
}

fn pod_uid(node: &Node) -> String {
    jsonpath(
        node,
        &["get", "pod", &format!("{NAME}-0")],
        "{.metadata.uid}",
    )
}

fn template_size(node: &Node, sts: &str) -> String {
    jsonpath(
        node,
        &["get", "statefulset", sts],
        "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}",
    )
}

fn set_size(node: &Node, cluster: &str, size: &str) {
    node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        cluster,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"storage":{{"size":"{size}"}}}}}}"#),
    ]);
}

/// Waits for `cluster`'s VolumeExpansion condition to have `reason`.
fn wait_reason(node: &Node, cluster: &str, reason: &str) -> Value {
    wait_for(
        &format!("{cluster}: VolumeExpansion {reason}"),
        Duration::from_secs(60),
        || {
            let c = condition(&node.etcdcluster_status(cluster), "VolumeExpansion");
            (c["reason"] == reason).then_some(c)
        },
        || describe(node, cluster),
    )
}

pub fn volumes_grow_without_a_restart(node: &Node, main_cluster: &str) {
    let started = Instant::now();
    let class = format!(
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {CLASS}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
allowVolumeExpansion: true
"
    );
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&class));
    assert!(apply.status.success(), "StorageClass: {}", text(&apply));
    let manifest = format!(
        "apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: {NAME}
spec:
  replicas: 1
  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}
  storage:
    size: 256Mi
    storageClassName: {CLASS}
    retainOnDelete: false
"
    );
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
    let endpoint = wait_for(
        "the 1-member cluster ready",
        Duration::from_secs(90),
        || {
            if node.etcdcluster_status(NAME)["readyReplicas"] != 1 {
                return None;
            }
            let ip = jsonpath(node, &["get", "service", NAME], "{.spec.clusterIP}");
            let endpoint = format!("{ip}:2379");
            etcdctl(&endpoint, &["put", "grow/k", "v"], None)
                .status
                .success()
                .then_some(endpoint)
        },
        || describe(node, NAME),
    );
    let uid = pod_uid(node);

    let asked = Instant::now();
    set_size(node, NAME, "512Mi");
    let resizing = wait_reason(node, NAME, "Resizing");
    assert_eq!(resizing["status"], "True", "{resizing}");
    let pvc = format!("data-{NAME}-0");
    assert_eq!(
        jsonpath(
            node,
            &["get", "pvc", &pvc],
            "{.spec.resources.requests.storage}"
        ),
        "512Mi"
    );
    wait_for(
        "the StatefulSet renewed with a 512Mi claim template",
        Duration::from_secs(30),
        || (template_size(node, NAME) == "512Mi").then_some(()),
        || describe(node, NAME),
    );
    assert!(
        resizing["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{pvc} has 256Mi"))),
        "{resizing}"
    );
    // The same pod, adopted by the new StatefulSet, still serving the data.
    assert_eq!(pod_uid(node), uid, "the member's pod was restarted");
    let owner = jsonpath(
        node,
        &["get", "pod", &format!("{NAME}-0")],
        "{.metadata.ownerReferences[0].kind}",
    );
    assert_eq!(owner, "StatefulSet");
    let get = etcdctl(&endpoint, &["get", "grow/k", "--print-value-only"], None);
    assert_eq!(text(&get).trim(), "v", "{}", text(&get));
    let grown = asked.elapsed();

    set_size(node, NAME, "256Mi");
    let shrink = wait_reason(node, NAME, "CannotShrink");
    assert_eq!(shrink["status"], "False", "{shrink}");
    assert_eq!(template_size(node, NAME), "512Mi");

    // The node's default class does not allow expansion.
    let main_template = template_size(node, main_cluster);
    set_size(node, main_cluster, "4Gi");
    let refused = wait_reason(node, main_cluster, "NotSupported");
    assert_eq!(refused["status"], "False", "{refused}");
    assert_eq!(template_size(node, main_cluster), main_template);
    set_size(node, main_cluster, &main_template);
    wait_reason(node, main_cluster, "Expanded");

    node.kubectl_ok(&["delete", "etcdcluster", NAME, "--wait=false"]);
    eprintln!(
        "volume expansion: claim raised and StatefulSet renewed in {grown:.1?} without a restart; shrink and a class without expansion refused, {:.1?} in all",
        started.elapsed()
    );
}

fn describe(node: &Node, cluster: &str) -> String {
    let get = |args: &[&str]| text(&node.kubectl(args));
    format!(
        "--- EtcdCluster ---\n{}\n--- pods, PVCs, StatefulSets ---\n{}\n--- operator log ---\n{}",
        get(&["get", "etcdcluster", cluster, "-o", "yaml"]),
        get(&["get", "pods,pvc,statefulsets", "-o", "wide"]),
        get(&[
            "logs",
            "-n",
            super::OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=ferrocd-operator",
            "--tail=30"
        ]),
    )
}
