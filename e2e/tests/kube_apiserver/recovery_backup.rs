//! Quorum loss rebuilt from a backup on the real node: a three-member
//! cluster with `spec.recovery.mode: FromLatestBackup` is backed up to a
//! PVC (`EtcdBackup`), gets more writes, then loses every member pod and
//! every member PVC at once. The operator rebuilds it from the backup, its
//! own pod deleted once the rebuild is recorded: 3/3 again with every key
//! of the backup and none written after it.

use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{condition, host_address_for_pods, text, wait_for, Node};
use ferrocd_e2e::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use serde_json::Value;

use super::{IMAGE_REPOSITORY, IMAGE_TAG};

const NAME: &str = "ferrocd-rb";
const BACKUP: &str = "ferrocd-rb-1";
const BUCKET: &str = "rb-backups";
const CREDENTIALS: &str = "ferrocd-rb-s3";
const KEYS: usize = 20;

/// Returns how long after the loss the cluster was 3/3 again.
pub fn quorum_loss_is_rebuilt_from_the_latest_backup(node: &Node) -> Duration {
    let Some(s3) = S3Server::start("0.0.0.0") else {
        return Duration::ZERO;
    };
    std::fs::create_dir_all(s3.root.join(BUCKET)).unwrap();
    let s3_endpoint = format!("http://{}:{}", host_address_for_pods(), s3.port);
    let manifest = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {CREDENTIALS}}}
stringData: {{accessKeyID: {ACCESS_KEY}, secretAccessKey: {SECRET_KEY}}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata:
  name: {NAME}
spec:
  replicas: 3
  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}
  storage:
    size: 256Mi
  recovery:
    mode: FromLatestBackup
    gracePeriodSeconds: 10
"
    );
    apply(node, &manifest);
    let endpoint = wait_ready(
        node,
        "the cluster 3/3 ready",
        Duration::from_secs(120),
        |_| true,
    );
    let before: Vec<String> = (0..KEYS).map(|i| format!("rb/before/{i:03}")).collect();
    for key in &before {
        let put = etcdctl(&endpoint, &["put", key, &format!("v-{key}")], None);
        assert!(put.status.success(), "put {key}: {}", text(&put));
    }
    apply(
        node,
        &format!(
            "apiVersion: ferrocd.io/v1alpha1
kind: EtcdBackup
metadata: {{name: {BACKUP}}}
spec:
  clusterName: {NAME}
  destination:
    s3: {{endpoint: \"{s3_endpoint}\", bucket: {BUCKET}, prefix: rb/, credentialsSecret: {CREDENTIALS}}}
"
        ),
    );
    let backup_revision = wait_for(
        "the backup succeeded",
        Duration::from_secs(120),
        || {
            let out = node.kubectl(&["get", "etcdbackup", BACKUP, "-o", "json"]);
            let backup: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let status = &backup["status"];
            assert_ne!(status["phase"], "Failed", "{backup}");
            (status["phase"] == "Succeeded").then(|| status["revision"].as_i64().unwrap())
        },
        || describe(node),
    );
    let after: Vec<String> = (0..KEYS / 2).map(|i| format!("rb/after/{i:03}")).collect();
    for key in &after {
        let put = etcdctl(&endpoint, &["put", key, "lost"], None);
        assert!(put.status.success(), "put {key}: {}", text(&put));
    }

    let lost_at = Instant::now();
    let pvcs: Vec<String> = (0..3).map(|i| format!("data-{NAME}-{i}")).collect();
    let mut delete_pvcs = vec!["delete", "pvc", "--wait=false"];
    delete_pvcs.extend(pvcs.iter().map(String::as_str));
    node.kubectl_ok(&delete_pvcs);
    let pods: Vec<String> = (0..3).map(|i| format!("{NAME}-{i}")).collect();
    let mut delete_pods = vec!["delete", "pod", "--wait=true"];
    delete_pods.extend(pods.iter().map(String::as_str));
    node.kubectl_ok(&delete_pods);
    // The operator's pod is deleted once the rebuild is recorded: the
    // next operator must carry on with the same backup.
    let mut milestones = Milestones::starting_at(lost_at);
    let endpoint = wait_ready(
        node,
        "3/3 ready again, rebuilt from the backup",
        Duration::from_secs(300),
        |status| {
            milestones.observe(node, status);
            status["recovery"]["lastRebuild"]["backupName"] == BACKUP
        },
    );
    let took = lost_at.elapsed();
    milestones.lap("3/3 ready, writes taken");
    eprintln!(
        "rebuild from {BACKUP}, counted from the loss:\n{}",
        milestones.report()
    );

    for key in &before {
        let get = etcdctl(&endpoint, &["get", key, "--print-value-only"], None);
        assert_eq!(
            text(&get).trim(),
            format!("v-{key}"),
            "{key} after the rebuild"
        );
    }
    let later = etcdctl(
        &endpoint,
        &["get", "rb/after/", "--prefix", "--keys-only"],
        None,
    );
    assert!(later.status.success(), "{}", text(&later));
    assert_eq!(
        text(&later).trim(),
        "",
        "keys written after the backup came back"
    );
    let status = status(node);
    assert_eq!(
        condition(&status, "QuorumLost")["status"],
        "False",
        "{status}"
    );
    let recovering = condition(&status, "Recovering");
    assert_eq!(recovering["reason"], "Recovered", "{status}");
    assert!(
        recovering["message"]
            .as_str()
            .unwrap_or_default()
            .contains(BACKUP),
        "{status}"
    );
    let rebuild = &status["recovery"];
    assert!(rebuild["rebuild"].is_null(), "record not cleared: {status}");
    assert_eq!(
        rebuild["lastRebuild"]["revision"], backup_revision,
        "{status}"
    );
    assert_eq!(rebuild["lastRebuild"]["phase"], "Restored", "{status}");
    let events = node.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={NAME}"),
    ]);
    assert!(events.contains("QuorumRecoveryStarted"), "{events}");
    assert!(events.contains("QuorumRecovered"), "{events}");
    assert!(
        milestones.operator_restarted,
        "the operator was restarted mid-rebuild"
    );
    eprintln!(
        "quorum loss (all pods and PVCs): rebuilt from {BACKUP} (revision {backup_revision}), 3/3 ready again in {took:.1?}"
    );
    node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        NAME,
        "--type=merge",
        "-p",
        r#"{"spec":{"storage":{"retainOnDelete":false}}}"#,
    ]);
    node.kubectl_ok(&["delete", "etcdcluster", NAME, "--wait=false"]);
    node.kubectl_ok(&["delete", "etcdbackup", BACKUP, "--wait=false"]);
    node.kubectl_ok(&["delete", "secret", CREDENTIALS, "--wait=false"]);
    took
}

/// When each step of the rebuild was first seen in the status, counted
/// from the loss; deletes the operator's pod once the rebuild is recorded.
struct Milestones {
    start: Instant,
    seen: Vec<(String, Duration)>,
    operator_restarted: bool,
    /// The Lease holder when the operator's pod was deleted.
    holder: String,
    took_over: bool,
}

impl Milestones {
    fn starting_at(start: Instant) -> Milestones {
        Milestones {
            start,
            seen: Vec::new(),
            operator_restarted: false,
            holder: String::new(),
            took_over: false,
        }
    }

    /// Whether the last step seen is the deletion.
    fn deleting(&self) -> bool {
        self.seen
            .iter()
            .any(|(what, _)| what.ends_with("phase Deleting"))
            && self
                .seen
                .iter()
                .all(|(what, _)| !what.ends_with("phase Restoring"))
    }

    fn lap(&mut self, what: &str) {
        if self.seen.iter().all(|(w, _)| w != what) {
            self.seen.push((what.to_string(), self.start.elapsed()));
        }
    }

    fn observe(&mut self, node: &Node, status: &Value) {
        let lost = condition(status, "QuorumLost");
        if lost["status"] == "True" {
            self.lap(&format!("QuorumLost=True ({})", lost["reason"]));
        }
        if let Some(phase) = status["recovery"]["rebuild"]["phase"].as_str() {
            self.lap(&format!("rebuild recorded, phase {phase}"));
            if !self.operator_restarted {
                self.holder = lease_holder(node);
                node.kubectl_ok(&[
                    "delete",
                    "pod",
                    "-n",
                    super::OPERATOR_NAMESPACE,
                    "-l",
                    "app.kubernetes.io/name=ferrocd-operator",
                    "--wait=false",
                ]);
                self.operator_restarted = true;
                self.lap("operator pod deleted");
            }
        }
        if self.operator_restarted && !self.took_over {
            let holder = lease_holder(node);
            if !holder.is_empty() && holder != self.holder {
                self.took_over = true;
                self.lap("another operator holds the Lease");
            }
        }
        if self.deleting() {
            // Each pod with its grace period and phase, then the PVCs.
            let left = node.kubectl_ok(&[
                "get",
                "pods,pvc",
                "-l",
                &format!("app.kubernetes.io/instance={NAME}"),
                "-o",
                "jsonpath={range .items[*]}{.kind}/{.metadata.name}:{.metadata.deletionGracePeriodSeconds}:{.status.phase} {end}",
            ]);
            self.lap(&format!("left: [{}]", left.trim()));
        }
        if status["recovery"]["lastRebuild"]["phase"] == "Restored" {
            self.lap("rebuild done (lastRebuild)");
        }
    }

    fn report(&self) -> String {
        self.seen
            .iter()
            .map(|(what, at)| format!("  {:>6.1}s  {what}", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn lease_holder(node: &Node) -> String {
    let out = node.kubectl(&[
        "get",
        "lease",
        "-n",
        super::OPERATOR_NAMESPACE,
        "ferrocd-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn apply(node: &Node, manifest: &str) {
    let out = node.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
}

/// Waits until the status shows three ready voters, `also` holds and the
/// client Service takes a write; its endpoint.
fn wait_ready(
    node: &Node,
    what: &str,
    limit: Duration,
    also: impl FnMut(&Value) -> bool,
) -> String {
    super::three_ready_voters(node, NAME, "rb-probe", what, limit, also, || describe(node))
}

fn status(node: &Node) -> Value {
    node.etcdcluster_status(NAME)
}

fn describe(node: &Node) -> String {
    let get = |args: &[&str]| text(&node.kubectl(args));
    format!(
        "--- EtcdCluster ---\n{}\n--- EtcdBackup ---\n{}\n--- pods, PVCs ---\n{}\n--- events ---\n{}\n--- operator log ---\n{}\n--- member logs ---\n{}",
        get(&["get", "etcdcluster", NAME, "-o", "yaml"]),
        get(&["get", "etcdbackup", BACKUP, "-o", "yaml"]),
        get(&["get", "pods,pvc", "-o", "wide"]),
        get(&["get", "events", "--sort-by=.lastTimestamp"]),
        get(&["logs", "-n", super::OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=40"]),
        (0..3)
            .map(|i| get(&["logs", &format!("{NAME}-{i}"), "--all-containers", "--tail=15"]))
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
}
